//! The Winograd transforms: the interpolation points, the filter matrix `G`
//! (applied once, in `f64`, when the weights are packed) and the input
//! (`Bᵀ d B`) and output (`Aᵀ m A`) transforms, written once over
//! [`Simd`] and instantiated per tier.
//!
//! ## The matrices
//!
//! For `F(m, 3)` on `n = m + 2` points `a_0 … a_{n-2}` and `∞`, the
//! Cook–Toom construction (the transposed form of Toom–Cook polynomial
//! multiplication, as in Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks") gives, for the 1-D correlation
//! `y_i = Σ_k d_{i+k}·g_k`, `y = Aᵀ [(G g) ⊙ (Bᵀ d)]` with
//!
//! - `Aᵀ[i][j] = a_jⁱ`, and the last column `[0, …, 0, 1]` (the point ∞);
//! - `Bᵀ` row `j` = the coefficients (lowest power first) of
//!   `N_j(x) = ∏_{l≠j} (x − a_l)`; the last row those of `∏_l (x − a_l)`;
//! - `G[j][k] = a_jᵏ / ∏_{l≠j} (a_j − a_l)`; the last row `[0, 0, 1]`.
//!
//! Every non-dyadic factor (1/3, 1/15, 2/9, 1/90, …) is in `G`, which is
//! applied in `f64` and rounded once; the entries of `Aᵀ` and `Bᵀ` are
//! small dyadic rationals, exact in `f32`, so the only rounding in the
//! `f32` transforms is that of the additions. 2-D: `Y = Aᵀ [(G g Gᵀ) ⊙
//! (Bᵀ d B)] A`.
//!
//! The points were chosen by measured error (`docs/KERNELS.md`, "Winograd"):
//! `F(4x4)` uses `{0, −1, 1, 1/2, −2}` (half the error of `{0, ±1, ±2}`),
//! `F(6x6)` uses `{0, ±1, ±2, ±1/2}`. The hand-written transforms below
//! exploit the structure of the matrices (pairs of opposite points share
//! their even and odd parts) and are tested against the construction,
//! which the tests regenerate from the points with exact rationals.

use crate::gemm::microkernel::activate;
use crate::gemm::simd::Simd;
use crate::Activation;

/// The finite interpolation points of `F(4x4, 3x3)` (the last point is ∞).
pub(crate) const POINTS_F4: [f64; 5] = [0.0, -1.0, 1.0, 0.5, -2.0];

/// The finite interpolation points of `F(6x6, 3x3)` (the last point is ∞).
pub(crate) const POINTS_F6: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];

/// The filter matrix `G` (`n × 3`, `n = points + 1`) of the Cook–Toom
/// construction, in `f64`: row `j` is `[1, a_j, a_j²] / ∏_{l≠j}(a_j − a_l)`,
/// the last row (the point ∞) `[0, 0, 1]`.
pub(crate) fn filter_matrix(points: &[f64]) -> Vec<[f64; 3]> {
    let mut g: Vec<[f64; 3]> = points
        .iter()
        .enumerate()
        .map(|(j, &a)| {
            let f: f64 = points
                .iter()
                .enumerate()
                .filter(|&(l, _)| l != j)
                .map(|(_, &b)| a - b)
                .product();
            [1.0 / f, a / f, a * a / f]
        })
        .collect();
    g.push([0.0, 0.0, 1.0]);
    g
}

/// The transforms of one variant, `n = N` input points, `m = M` outputs.
pub(crate) trait Transform<const N: usize, const M: usize> {
    /// `Bᵀ d` for one column (or row) of an input tile.
    ///
    /// # Safety
    /// The target-feature contract of [`Simd`].
    unsafe fn input<V: Simd>(d: [V; N]) -> [V; N];

    /// `Aᵀ m` for one column (or row) of a transformed output tile.
    ///
    /// # Safety
    /// The target-feature contract of [`Simd`].
    unsafe fn output<V: Simd>(m: [V; N]) -> [V; M];

    /// `Bᵀ d B` of one vector of channels of one tile: loads the vectors at
    /// `pixels[i][j] + c0` (the first `lanes`, the others zero), stores
    /// point `(i, j)` at `out + (i·N + j)·stride`.
    ///
    /// # Safety
    /// Every `pixels[i][j] + c0` valid for `min(lanes, LANES)` reads, `out`
    /// for `N²` vectors at stride `stride`; the target-feature contract.
    unsafe fn input_tile<V: Simd>(
        pixels: &[[*const f32; N]; N],
        c0: usize,
        lanes: usize,
        out: *mut f32,
        stride: usize,
    );

    /// `Aᵀ m A` of one vector of channels of one tile, point `(i, j)` read
    /// at `src + (i·N + j)·stride`.
    ///
    /// # Safety
    /// `src` valid for `N²` vectors at stride `stride`; the target-feature
    /// contract.
    unsafe fn output_tile<V: Simd>(src: *const f32, stride: usize) -> [[V; M]; M];
}

/// `[e(k₀), e(k₁), …]` for the literal indices `[k₀ k₁ …]`, with `k` bound to
/// each index in turn (a `usize` constant): a loop that is unrolled by
/// construction, so that arrays of vectors indexed by it stay in registers.
/// (`core::array::from_fn` is no substitute: its closure runs inside `core`
/// code compiled without the tier's target features, which cannot inline
/// it, and LLVM does not fully unroll the nested loops of a tile.)
macro_rules! unrolled {
    ([$($index:literal)*], |$k:ident| $e:expr) => {
        [$({
            let $k: usize = $index;
            $e
        }),*]
    };
}

/// The tile-level methods of [`Transform`] for `n` points and the literal
/// index lists `0..n` and `0..m`.
macro_rules! tile_methods {
    ($n:literal, $m:literal, $ns:tt, $ms:tt) => {
        #[inline(always)]
        unsafe fn input_tile<V: Simd>(
            pixels: &[[*const f32; $n]; $n],
            c0: usize,
            lanes: usize,
            out: *mut f32,
            stride: usize,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe {
                // columns[j] = Bᵀ · (column j of the tile)
                let columns: [[V; $n]; $n] = unrolled!($ns, |j| {
                    Self::input(unrolled!($ns, |i| load::<V>(pixels[i][j].add(c0), lanes)))
                });
                // rows[i] = Bᵀ · (row i of the column pass)
                let rows: [[V; $n]; $n] =
                    unrolled!($ns, |i| Self::input(unrolled!($ns, |j| columns[j][i])));
                unrolled!($ns, |i| unrolled!($ns, |j| rows[i][j]
                    .store(out.add((i * $n + j) * stride))));
            }
        }

        #[inline(always)]
        unsafe fn output_tile<V: Simd>(src: *const f32, stride: usize) -> [[V; $m]; $m] {
            // SAFETY: forwarded from the caller.
            unsafe {
                let columns: [[V; $m]; $n] = unrolled!($ns, |j| {
                    Self::output(unrolled!($ns, |i| V::load(src.add((i * $n + j) * stride))))
                });
                unrolled!($ms, |a| Self::output(unrolled!($ns, |j| columns[j][a])))
            }
        }
    };
}

/// `F(4x4, 3x3)` on 6x6 tiles, points `{0, −1, 1, 1/2, −2, ∞}`.
pub(crate) struct F4;

/// `F(6x6, 3x3)` on 8x8 tiles, points `{0, 1, −1, 2, −2, 1/2, −1/2, ∞}`.
pub(crate) struct F6;

impl Transform<6, 4> for F4 {
    /// ```text
    /// Bᵀ = [ 1  -3/2   -2   3/2   1  0 ]
    ///      [ 0     1 -5/2   1/2   1  0 ]
    ///      [ 0    -1  1/2   5/2   1  0 ]
    ///      [ 0    -2   -1     2   1  0 ]
    ///      [ 0   1/2   -1  -1/2   1  0 ]
    ///      [ 0     1 -3/2    -2 3/2  1 ]
    /// ```
    #[inline(always)]
    unsafe fn input<V: Simd>(d: [V; 6]) -> [V; 6] {
        // SAFETY: register arithmetic under the caller's contract.
        unsafe {
            let [d0, d1, d2, d3, d4, d5] = d;
            let c = |x: f32| V::splat(x);
            let s = d3.sub(d1);
            let e = d4.sub(d2);
            let r0 = c(1.5).mul_add(s, c(-2.0).mul_add(d2, d0.add(d4)));
            let r1 = c(0.5).mul_add(d3, c(-2.5).mul_add(d2, d1.add(d4)));
            let r2 = c(2.5).mul_add(d3, c(0.5).mul_add(d2, d4.sub(d1)));
            let r3 = c(2.0).mul_add(s, e);
            let r4 = c(-0.5).mul_add(s, e);
            let r5 = c(1.5).mul_add(e, c(-2.0).mul_add(d3, d1.add(d5)));
            [r0, r1, r2, r3, r4, r5]
        }
    }

    /// ```text
    /// Aᵀ = [ 1  1  1    1   1  0 ]
    ///      [ 0 -1  1  1/2  -2  0 ]
    ///      [ 0  1  1  1/4   4  0 ]
    ///      [ 0 -1  1  1/8  -8  1 ]
    /// ```
    #[inline(always)]
    unsafe fn output<V: Simd>(m: [V; 6]) -> [V; 4] {
        // SAFETY: register arithmetic under the caller's contract.
        unsafe {
            let [m0, m1, m2, m3, m4, m5] = m;
            let c = |x: f32| V::splat(x);
            let s = m2.add(m1);
            let t = m2.sub(m1);
            let r0 = m0.add(s).add(m3.add(m4));
            let r1 = c(-2.0).mul_add(m4, c(0.5).mul_add(m3, t));
            let r2 = c(4.0).mul_add(m4, c(0.25).mul_add(m3, s));
            let r3 = c(-8.0).mul_add(m4, c(0.125).mul_add(m3, t.add(m5)));
            [r0, r1, r2, r3]
        }
    }

    tile_methods!(6, 4, [0 1 2 3 4 5], [0 1 2 3]);
}

impl Transform<8, 6> for F6 {
    /// ```text
    /// Bᵀ = [ -1     0  21/4      0 -21/4      0  1  0 ]
    ///      [  0     1     1  -17/4 -17/4      1  1  0 ]
    ///      [  0    -1     1   17/4 -17/4     -1  1  0 ]
    ///      [  0   1/2   1/4   -5/2  -5/4      2  1  0 ]
    ///      [  0  -1/2   1/4    5/2  -5/4     -2  1  0 ]
    ///      [  0     2     4   -5/2    -5    1/2  1  0 ]
    ///      [  0    -2     4    5/2    -5   -1/2  1  0 ]
    ///      [  0    -1     0   21/4     0  -21/4  0  1 ]
    /// ```
    #[inline(always)]
    unsafe fn input<V: Simd>(d: [V; 8]) -> [V; 8] {
        // SAFETY: register arithmetic under the caller's contract.
        unsafe {
            let [d0, d1, d2, d3, d4, d5, d6, d7] = d;
            let c = |x: f32| V::splat(x);
            let r0 = c(5.25).mul_add(d2.sub(d4), d6.sub(d0));
            let r7 = c(5.25).mul_add(d3.sub(d5), d7.sub(d1));
            // Rows of opposite points: even part ± odd part.
            let even1 = c(-4.25).mul_add(d4, d2.add(d6));
            let odd1 = c(-4.25).mul_add(d3, d1.add(d5));
            let even2 = c(-1.25).mul_add(d4, c(0.25).mul_add(d2, d6));
            let odd2 = c(2.0).mul_add(d5, c(-2.5).mul_add(d3, d1.mul(c(0.5))));
            let even3 = c(-5.0).mul_add(d4, c(4.0).mul_add(d2, d6));
            let odd3 = c(0.5).mul_add(d5, c(-2.5).mul_add(d3, d1.mul(c(2.0))));
            [
                r0,
                even1.add(odd1),
                even1.sub(odd1),
                even2.add(odd2),
                even2.sub(odd2),
                even3.add(odd3),
                even3.sub(odd3),
                r7,
            ]
        }
    }

    /// ```text
    /// Aᵀ = [ 1  1  1   1    1     1     1  0 ]
    ///      [ 0  1 -1   2   -2   1/2  -1/2  0 ]
    ///      [ 0  1  1   4    4   1/4   1/4  0 ]
    ///      [ 0  1 -1   8   -8   1/8  -1/8  0 ]
    ///      [ 0  1  1  16   16  1/16  1/16  0 ]
    ///      [ 0  1 -1  32  -32  1/32 -1/32  1 ]
    /// ```
    #[inline(always)]
    unsafe fn output<V: Simd>(m: [V; 8]) -> [V; 6] {
        // SAFETY: register arithmetic under the caller's contract.
        unsafe {
            let [m0, m1, m2, m3, m4, m5, m6, m7] = m;
            let c = |x: f32| V::splat(x);
            let (s1, t1) = (m1.add(m2), m1.sub(m2));
            let (s2, t2) = (m3.add(m4), m3.sub(m4));
            let (s3, t3) = (m5.add(m6), m5.sub(m6));
            let r0 = m0.add(s1).add(s2.add(s3));
            let r1 = c(0.5).mul_add(t3, c(2.0).mul_add(t2, t1));
            let r2 = c(0.25).mul_add(s3, c(4.0).mul_add(s2, s1));
            let r3 = c(0.125).mul_add(t3, c(8.0).mul_add(t2, t1));
            let r4 = c(0.0625).mul_add(s3, c(16.0).mul_add(s2, s1));
            let r5 = c(0.03125).mul_add(t3, c(32.0).mul_add(t2, t1.add(m7)));
            [r0, r1, r2, r3, r4, r5]
        }
    }

    tile_methods!(8, 6, [0 1 2 3 4 5 6 7], [0 1 2 3 4 5]);
}

/// What the input transform of a run of tiles needs, as raw pointers and
/// sizes already checked by the caller (`WinogradConv::run`).
pub(crate) struct InputArgs {
    /// The whole NHWC input `[batch, h, w, c]`.
    pub input: *const f32,
    /// `c` zeros: what a tap in the padding reads.
    pub zeros: *const f32,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c: usize,
    /// Tiles per image along the height and the width.
    pub tiles: [usize; 2],
    /// Zero padding before the first row and column.
    pub pad: [usize; 2],
    /// The first tile (counted over the whole batch, row-major per image).
    pub first: usize,
    /// Number of tiles.
    pub count: usize,
    /// `[count][n·n][cpad]`: the transformed tiles, point-major per tile.
    pub v: *mut f32,
    /// Row length of `v` (`c` rounded up to 16).
    pub cpad: usize,
}

/// What the output transform of a run of tiles needs, as raw pointers and
/// sizes already checked by the caller.
pub(crate) struct OutputArgs {
    /// `[count][n·n][opad]`: the GEMM results, point-major per tile.
    pub m: *const f32,
    /// Row length of `m` (output channels rounded up to 16).
    pub opad: usize,
    /// The whole NHWC output `[batch, oh, ow, o]`.
    pub output: *mut f32,
    /// The residual, shaped like the output, or null.
    pub residual: *const f32,
    /// The bias padded to `opad`, or null.
    pub bias: *const f32,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Output channels.
    pub o: usize,
    /// Tiles per image along the height and the width.
    pub tiles: [usize; 2],
    /// The first tile (counted over the whole batch).
    pub first: usize,
    /// Number of tiles.
    pub count: usize,
    /// The channels to produce: `[start, end)`, `start` a multiple of 16.
    pub channels: [usize; 2],
    /// Applied last.
    pub activation: Activation,
}

/// Loads `LANES` values, or the first `lanes < LANES` and zeros.
///
/// # Safety
/// `p` valid for `min(lanes, LANES)` reads; the target-feature contract.
#[inline(always)]
unsafe fn load<V: Simd>(p: *const f32, lanes: usize) -> V {
    // SAFETY: forwarded from the caller.
    unsafe {
        if lanes >= V::LANES {
            V::load(p)
        } else {
            V::load_partial(p, lanes)
        }
    }
}

/// Stores `LANES` values, or the first `lanes < LANES`.
///
/// # Safety
/// `p` valid for `min(lanes, LANES)` writes; the target-feature contract.
#[inline(always)]
unsafe fn store<V: Simd>(x: V, p: *mut f32, lanes: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if lanes >= V::LANES {
            x.store(p)
        } else {
            x.store_partial(p, lanes)
        }
    }
}

/// The image, tile row and tile column of tile `tile` (counted over the
/// batch).
#[inline(always)]
fn locate(tile: usize, tiles: [usize; 2]) -> (usize, usize, usize) {
    let per_image = tiles[0] * tiles[1];
    let image = tile / per_image;
    let within = tile % per_image;
    (image, within / tiles[1], within % tiles[1])
}

/// Whether `start + offset` lies in `0..len` (`start` may be negative).
#[inline(always)]
fn inside(start: isize, offset: usize, len: usize) -> bool {
    let coordinate = start + offset as isize;
    coordinate >= 0 && (coordinate as usize) < len
}

/// `Bᵀ d B` for `args.count` tiles, all channels, one vector of channels at
/// a time: a column pass, then a row pass. Each tile first gets a table of
/// its `n²` pixel addresses, those in the padding pointing at the zeros,
/// so that the vector loop has no branch.
///
/// # Safety
/// `args` describes buffers that are valid (the input for
/// `batch·h·w·c` reads, with the tiles inside the batch; `zeros` for `c`
/// reads; `v` for `count·N²·cpad` writes, `cpad ≥ ⌈c/16⌉·16`); the
/// target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn input_tiles<V: Simd, T: Transform<N, M>, const N: usize, const M: usize>(
    args: &InputArgs,
) {
    let (h, w, c) = (args.h, args.w, args.c);
    let full = c - c % V::LANES;
    for local in 0..args.count {
        let (image, ty, tx) = locate(args.first + local, args.tiles);
        let y0 = (ty * M) as isize - args.pad[0] as isize;
        let x0 = (tx * M) as isize - args.pad[1] as isize;
        // SAFETY: a pixel address is formed only for a pixel inside the
        // image; every read through the table is of channels below `c` (of
        // a pixel, or of the zeros); the writes stay inside this tile's
        // `N²·cpad` floats of `v` (`c0 + LANES ≤ cpad`).
        unsafe {
            let image_base = args.input.add(image * h * w * c);
            let mut pixels = [[args.zeros; N]; N];
            for (i, row) in pixels.iter_mut().enumerate() {
                for (j, pixel) in row.iter_mut().enumerate() {
                    if inside(y0, i, h) && inside(x0, j, w) {
                        let y = (y0 + i as isize) as usize;
                        let x = (x0 + j as isize) as usize;
                        *pixel = image_base.add((y * w + x) * c);
                    }
                }
            }
            let out = args.v.add(local * N * N * args.cpad);
            let mut c0 = 0;
            while c0 < full {
                T::input_tile::<V>(&pixels, c0, V::LANES, out.add(c0), args.cpad);
                c0 += V::LANES;
            }
            if c0 < c {
                T::input_tile::<V>(&pixels, c0, c - c0, out.add(c0), args.cpad);
            }
        }
    }
}

/// `Aᵀ m A` for `args.count` tiles and the channel range, then bias,
/// residual and activation in registers, and the store of the tile's valid
/// part (tiles on the bottom and right edges are clipped).
///
/// # Safety
/// `args` describes valid buffers (`m` for `count·N²·opad` reads; output and
/// residual for `batch·oh·ow·o` elements, the tiles inside the batch; the
/// bias for `opad` reads; `channels` inside `0..o`, its start a multiple of
/// `LANES`); the target-feature contract of [`Simd`].
#[inline(always)]
pub(crate) unsafe fn output_tiles<V: Simd, T: Transform<N, M>, const N: usize, const M: usize>(
    args: &OutputArgs,
) {
    let (oh, ow, o) = (args.oh, args.ow, args.o);
    let [first_channel, end_channel] = args.channels;
    let full = end_channel - (end_channel - first_channel) % V::LANES;
    for local in 0..args.count {
        let (image, ty, tx) = locate(args.first + local, args.tiles);
        let (y0, x0) = (ty * M, tx * M);
        let tile = Placement {
            rows: (oh - y0).min(M),
            cols: (ow - x0).min(M),
            first: ((image * oh + y0) * ow + x0) * o,
            row_stride: ow * o,
            col_stride: o,
        };
        // SAFETY: reads of `m` stay inside this tile's `N²·opad` floats
        // (`o0 + LANES ≤ opad`); output and residual accesses are at the
        // tile's valid pixels and channels below `end_channel ≤ o`; the
        // bias is read below `opad`.
        unsafe {
            let src = args.m.add(local * N * N * args.opad);
            let mut o0 = first_channel;
            while o0 < full {
                output_vector::<V, T, N, M>(args, src.add(o0), &tile, o0, V::LANES);
                o0 += V::LANES;
            }
            if o0 < end_channel {
                output_vector::<V, T, N, M>(args, src.add(o0), &tile, o0, end_channel - o0);
            }
        }
    }
}

/// Where an output tile goes: its valid rows and columns and the offsets
/// of its first element and of its rows and columns in the NHWC output.
struct Placement {
    rows: usize,
    cols: usize,
    first: usize,
    row_stride: usize,
    col_stride: usize,
}

/// One vector of channels of one tile: loads, `Aᵀ m A`, the epilogue and
/// the store of the valid part.
///
/// # Safety
/// `src` valid for `N²` vector reads at stride `args.opad`; the tile's valid
/// pixels at channels `o0..o0 + lanes` inside the output (and residual);
/// the bias (if any) for `o0 + LANES` reads; the target-feature contract.
#[inline(always)]
unsafe fn output_vector<V: Simd, T: Transform<N, M>, const N: usize, const M: usize>(
    args: &OutputArgs,
    src: *const f32,
    tile: &Placement,
    o0: usize,
    lanes: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut y = T::output_tile::<V>(src, args.opad);
        if !args.bias.is_null() {
            let bias = V::load(args.bias.add(o0));
            for row in y.iter_mut() {
                for value in row.iter_mut() {
                    *value = value.add(bias);
                }
            }
        }
        let at = |a: usize, b: usize| tile.first + a * tile.row_stride + b * tile.col_stride + o0;
        let valid = |a: usize, b: usize| a < tile.rows && b < tile.cols;
        if !args.residual.is_null() {
            for (a, row) in y.iter_mut().enumerate() {
                for (b, value) in row.iter_mut().enumerate() {
                    if valid(a, b) {
                        *value = value.add(load::<V>(args.residual.add(at(a, b)), lanes));
                    }
                }
            }
        }
        activate_all(&mut y, args.activation);
        for (a, row) in y.iter().enumerate() {
            for (b, value) in row.iter().enumerate() {
                if valid(a, b) {
                    store(*value, args.output.add(at(a, b)), lanes);
                }
            }
        }
        if matches!(args.activation, Activation::Sigmoid | Activation::Tanh) {
            for a in 0..tile.rows {
                for b in 0..tile.cols {
                    let stored = core::slice::from_raw_parts_mut(args.output.add(at(a, b)), lanes);
                    for x in stored {
                        *x = args.activation.apply(*x);
                    }
                }
            }
        }
    }
}

/// The epilogue's activation on a whole tile, the `match` outside the
/// loops (each arm calls [`activate`] with a known variant, so its own
/// `match` folds away). Sigmoid and tanh are applied after the store by a
/// scalar pass, as in the GEMM.
///
/// # Safety
/// The target-feature contract of [`Simd`].
#[inline(always)]
unsafe fn activate_all<V: Simd, const M: usize>(y: &mut [[V; M]; M], activation: Activation) {
    let mut apply = |known: Activation| {
        for row in y.iter_mut() {
            for value in row.iter_mut() {
                // SAFETY: register arithmetic under the caller's contract.
                *value = unsafe { activate(*value, known) };
            }
        }
    };
    match activation {
        Activation::Relu => apply(Activation::Relu),
        Activation::Relu6 => apply(Activation::Relu6),
        Activation::LeakyRelu { negative_slope } => apply(Activation::LeakyRelu { negative_slope }),
        Activation::Hardswish => apply(Activation::Hardswish),
        Activation::Identity | Activation::Sigmoid | Activation::Tanh => {}
    }
}

/// One tier's transform entry points for one variant.
#[derive(Clone, Copy)]
pub(crate) struct TransformFns {
    /// [`input_tiles`].
    pub input: unsafe fn(&InputArgs),
    /// [`output_tiles`].
    pub output: unsafe fn(&OutputArgs),
}

/// Instantiates the entry points of one tier: `$vector` is its [`Simd`]
/// type, `$features` its `target_feature` list (`""` for none).
macro_rules! tier {
    ($module:ident, $vector:ty $(, $features:literal)?) => {
        pub(crate) mod $module {
            use super::*;

            /// The input transform of this tier.
            ///
            /// # Safety
            /// The CPU supports the tier (guaranteed by [`crate::tier`],
            /// the only source of the tier the caller dispatched on) and
            /// `args` satisfies [`input_tiles`]'s contract.
            $(#[target_feature(enable = $features)])?
            unsafe fn input<T: Transform<N, M>, const N: usize, const M: usize>(args: &InputArgs) {
                // SAFETY: forwarded from the caller.
                unsafe { input_tiles::<$vector, T, N, M>(args) }
            }

            /// The output transform of this tier.
            ///
            /// # Safety
            /// As [`input`], with [`output_tiles`]'s contract.
            $(#[target_feature(enable = $features)])?
            unsafe fn output<T: Transform<N, M>, const N: usize, const M: usize>(
                args: &OutputArgs,
            ) {
                // SAFETY: forwarded from the caller.
                unsafe { output_tiles::<$vector, T, N, M>(args) }
            }

            /// `F(4x4, 3x3)`.
            pub(crate) const F4: TransformFns = TransformFns {
                input: input::<super::F4, 6, 4>,
                output: output::<super::F4, 6, 4>,
            };

            /// `F(6x6, 3x3)`.
            pub(crate) const F6: TransformFns = TransformFns {
                input: input::<super::F6, 8, 6>,
                output: output::<super::F6, 8, 6>,
            };
        }
    };
}

tier!(reference, f32);
tier!(portable, wide::f32x8);
#[cfg(target_arch = "x86_64")]
tier!(avx2, core::arch::x86_64::__m256, "avx2,fma");
#[cfg(target_arch = "x86_64")]
tier!(avx512, core::arch::x86_64::__m512, "avx512f");
