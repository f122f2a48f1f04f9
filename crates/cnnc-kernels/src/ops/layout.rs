//! Layout reorders between PyTorch's NCHW and the fast operators' NHWC.
//!
//! They run at the network's edges (the public input and output are NCHW)
//! and for `flatten`: a flatten of an NHWC value `[H, W, C]` must produce
//! PyTorch's `C, H, W` order, which is exactly [`Reorder::NhwcToNchw`] (for
//! `H = W = 1` both layouts coincide and the reorder is a copy).
//!
//! A reorder of one sample is the transpose of a row-major matrix: NCHW →
//! NHWC transposes `[C][H·W]` into `[H·W][C]`, and back. The transpose is
//! cache-blocked: it walks tiles of [`TILE`] elements along the contiguous
//! side and [`WIDE`] along the strided one (16 KiB of source and of
//! destination, in L1), reading rows of the source and writing rows of the
//! destination, so each cache line is fetched once instead of once per
//! element of a column, and each strided stream moves 512 bytes at a time
//! (with 32-element runs, 144 channels at 56x56 reordered at ~8 GB/s; with
//! 128, ~18 GB/s). A tile is moved in square blocks transposed in
//! registers: 16×16 on the AVX-512 tier (16 row loads, 64 shuffles, 16
//! full-line row stores), then 8×8 on the AVX2 and AVX-512 tiers (8 loads,
//! 24 shuffles, 8 stores); the rest, and the other tiers, element by
//! element. The 16×16 blocks made the edge reorders of the one-layer
//! benchmark networks 20-25% faster than 8×8 ones (144 channels at 56x56:
//! 0.24 → 0.18 ms each way, ~10 GB/s; these maps do not fit in L2 next to
//! their layer's input and output, and a copy of the same data from L3 runs
//! at ~14 GB/s). Streaming (non-temporal) stores for the output edge were
//! measured too and gave nothing. Pure data movement: every tier gives the
//! same result.

use crate::ops::elementwise::total;
use crate::ops::{check_len, Context, OpError};
use crate::threads::{part, task_count, Disjoint};
use crate::tier::Tier;

/// Side of the square tiles of the blocked transpose, in elements.
pub const TILE: usize = 32;

/// Length of the runs along the strided side of a transpose, in elements.
pub const WIDE: usize = 128;

/// How a `[C, H, W]` value is stored, per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[H, W, C]`: channels contiguous, the layout of every value inside
    /// a network.
    #[default]
    Nhwc,
    /// `[C, H, W]`: PyTorch's, the layout of the caller's input and output.
    Nchw,
}

/// The direction of a reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reorder {
    /// `[N, C, H, W]` → `[N, H, W, C]` (the network's input edge).
    NchwToNhwc,
    /// `[N, H, W, C]` → `[N, C, H, W]` (the output edge, and `flatten`).
    NhwcToNchw,
}

/// A reorder of `[channels, height, width]` samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReorderSpec {
    /// The direction.
    pub reorder: Reorder,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// A layout reorder: see [`ReorderSpec`].
#[derive(Clone, Debug)]
pub struct ReorderOp {
    spec: ReorderSpec,
    /// Elements per sample.
    len: usize,
}

impl ReorderOp {
    /// The operator for `spec`; refused if a sample's size overflows.
    pub fn new(spec: ReorderSpec) -> Result<ReorderOp, OpError> {
        let len = spec
            .channels
            .checked_mul(spec.height)
            .and_then(|len| len.checked_mul(spec.width))
            .ok_or_else(|| OpError::Spec(format!("reorder of {spec:?} overflows")))?;
        Ok(ReorderOp { spec, len })
    }

    /// The spec.
    pub fn spec(&self) -> &ReorderSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// Reorders `batch` samples from `input` into `output`.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let len = total(batch, self.len)?;
        check_len("reorder input", input.len(), len)?;
        check_len("reorder output", output.len(), len)?;
        let pixels = self.spec.height * self.spec.width;
        // Source rows × columns of one sample's matrix.
        let (rows, cols) = match self.spec.reorder {
            Reorder::NchwToNhwc => (self.spec.channels, pixels),
            Reorder::NhwcToNchw => (pixels, self.spec.channels),
        };
        if len == 0 {
            return Ok(());
        }
        // Tasks own bands of destination rows (source columns), whole tiles
        // wide, across the whole batch. With few source rows (an image's
        // 1-4 channels) a band is widened to about a tile's elements.
        // The strided side (source rows for NCHW → NHWC, destination rows
        // the other way) is read or written in runs of `WIDE` floats, so
        // that each of its streams moves whole cache lines in a row; the
        // contiguous side in tiles of `TILE`.
        let (band_cols, row_tile) = match self.spec.reorder {
            Reorder::NchwToNhwc => (WIDE, TILE),
            Reorder::NhwcToNchw => (TILE, WIDE),
        };
        // Register blocks, largest first, by what the CPU has.
        let blocks: &[usize] = match ctx.kernels().tier() {
            Tier::Avx512 => &[16, 8],
            Tier::Avx2 => &[8],
            Tier::Reference | Tier::Portable => &[],
        };
        let band_cols = band_cols * (TILE / rows.clamp(1, TILE));
        let bands = cols.div_ceil(band_cols);
        let units = batch * bands;
        let tasks = task_count(ctx.threads(), len, 1 << 15).min(units);
        let output = Disjoint::new(output);
        ctx.parallel_for(tasks, |task| {
            for unit in part(units, tasks, 1, task) {
                let (sample, band) = (unit / bands, unit % bands);
                let col_range = band * band_cols..((band + 1) * band_cols).min(cols);
                let source = &input[sample * self.len..(sample + 1) * self.len];
                let start = sample * self.len + col_range.start * rows;
                // SAFETY: destination rows `col_range` of this sample belong
                // to this unit only, and units are split between tasks.
                let destination = unsafe { output.part(start..start + col_range.len() * rows) };
                transpose_band(source, rows, cols, col_range, row_tile, destination, blocks);
            }
        });
        Ok(())
    }
}

/// Writes destination rows `col_range` (source columns) of the transpose of
/// the `rows × cols` matrix `source` into `destination`
/// (`col_range.len() × rows`), tile by tile, in square register blocks of
/// sides `blocks` (largest first: 16 needs AVX-512F, 8 AVX2) where they fit
/// and element by element elsewhere.
fn transpose_band(
    source: &[f32],
    rows: usize,
    cols: usize,
    col_range: core::ops::Range<usize>,
    row_tile: usize,
    destination: &mut [f32],
    blocks: &[usize],
) {
    let first_col = col_range.start;
    // Few rows or few columns (the 1-4 channels of an image, at either
    // edge): a plain interleave or de-interleave of whole rows, which the
    // compiler vectorizes, instead of tiles a few elements wide.
    match (rows, cols) {
        (1, _) | (_, 1) => {
            let start = if rows == 1 {
                first_col
            } else {
                first_col * rows
            };
            destination.copy_from_slice(&source[start..start + destination.len()]);
            return;
        }
        (2, _) => return interleave::<2>(source, cols, col_range, destination),
        (3, _) => return interleave::<3>(source, cols, col_range, destination),
        (4, _) => return interleave::<4>(source, cols, col_range, destination),
        (_, 2) if col_range == (0..2) => return deinterleave::<2>(source, rows, destination),
        (_, 3) if col_range == (0..3) => return deinterleave::<3>(source, rows, destination),
        (_, 4) if col_range == (0..4) => return deinterleave::<4>(source, rows, destination),
        _ => {}
    }
    let end_col = col_range.end;
    // Element by element: source columns `col_range` × rows `row_range`.
    let copy = |destination: &mut [f32],
                col_range: core::ops::Range<usize>,
                row_range: core::ops::Range<usize>| {
        for col in col_range {
            let out = &mut destination[(col - first_col) * rows..][row_range.clone()];
            for (offset, value) in out.iter_mut().enumerate() {
                *value = source[(row_range.start + offset) * cols + col];
            }
        }
    };
    // One `size`² block from source row `row`, column `col`.
    let block = |destination: &mut [f32], size: usize, row: usize, col: usize| {
        let from = row * cols + col;
        let to = (col - first_col) * rows + row;
        // The block's last elements: both inside their slices.
        let (last_from, last_to) = (from + (size - 1) * (cols + 1), to + (size - 1) * (rows + 1));
        if last_from >= source.len() || last_to >= destination.len() {
            return copy(destination, col..col + size, row..row + size);
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (from, to) = (source[from..].as_ptr(), destination[to..].as_mut_ptr());
            // SAFETY: the `size` rows of `size` floats read from `from`
            // (stride `cols`) and written from `to` (stride `rows`) end at
            // the indices checked above; `blocks` holds 16 only for a CPU
            // with AVX-512F and 8 only for one with AVX2.
            unsafe {
                if size == 16 {
                    transpose16x16(from, cols, to, rows);
                } else {
                    transpose8x8(from, cols, to, rows);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        copy(destination, col..col + size, row..row + size);
    };
    for row_start in (0..rows).step_by(row_tile) {
        let row_end = (row_start + row_tile).min(rows);
        let mut col = first_col;
        // Strips of 16 columns, then of 8, then single columns; down each
        // strip, blocks as wide as the strip, then 8 high, then elements.
        for &width in blocks {
            while col + width <= end_col {
                let mut row = row_start;
                for &size in blocks.iter().filter(|&&size| size <= width) {
                    while row + size <= row_end {
                        for strip_col in (col..col + width).step_by(size) {
                            block(destination, size, row, strip_col);
                        }
                        row += size;
                    }
                }
                copy(destination, col..col + width, row..row_end);
                col += width;
            }
        }
        copy(destination, col..end_col, row_start..row_end);
    }
}

/// Transposes the 16×16 block at `from` (rows `from_stride` apart) into the
/// block at `to` (rows `to_stride` apart): unpack pairs, shuffle quads,
/// then two rounds of 128-bit lane shuffles (64 shuffles for 256 floats,
/// against 96 for four 8×8 blocks).
///
/// # Safety
/// `from + r·from_stride .. + 16` readable and `to + r·to_stride .. + 16`
/// writable for `r < 16`, not overlapping; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16x16(from: *const f32, from_stride: usize, to: *mut f32, to_stride: usize) {
    use core::arch::x86_64::*;
    // SAFETY: the caller's contract covers every load and store.
    unsafe {
        let r: [__m512; 16] = core::array::from_fn(|i| _mm512_loadu_ps(from.add(i * from_stride)));
        // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved (low / high pairs of
        // each 128-bit lane).
        let t: [__m512; 16] = core::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4g + k]: in 128-bit lane l, column 4l + k of rows 4g..4g+4.
        let u: [__m512; 16] = core::array::from_fn(|i| {
            let (g, k) = (i / 4, i % 4);
            let (a, b) = (t[4 * g + k / 2], t[4 * g + 2 + k / 2]);
            if k % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        // v: lanes of row groups 0-1 and 2-3 paired (even / odd lanes).
        let v: [__m512; 16] = core::array::from_fn(|i| {
            let (half, odd, k) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * half + k], u[8 * half + 4 + k]);
            if odd == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        });
        // Row i of the result: column i of the source.
        let out: [__m512; 16] = core::array::from_fn(|i| {
            let (a, b) = (v[i % 8], v[8 + i % 8]);
            if i < 8 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        });
        for (i, row) in out.into_iter().enumerate() {
            _mm512_storeu_ps(to.add(i * to_stride), row);
        }
    }
}

/// Transposes the 8×8 block at `from` (rows `from_stride` apart) into the
/// block at `to` (rows `to_stride` apart): unpack pairs, shuffle quads,
/// swap 128-bit halves.
///
/// # Safety
/// `from + r·from_stride .. + 8` readable and `to + r·to_stride .. + 8`
/// writable for `r < 8`, not overlapping; the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(from: *const f32, from_stride: usize, to: *mut f32, to_stride: usize) {
    use core::arch::x86_64::*;
    // SAFETY: the caller's contract covers every load and store.
    unsafe {
        let r: [__m256; 8] = core::array::from_fn(|i| _mm256_loadu_ps(from.add(i * from_stride)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, row) in out.into_iter().enumerate() {
            _mm256_storeu_ps(to.add(i * to_stride), row);
        }
    }
}

/// The transpose of `R` source rows (`R × cols`), columns `col_range`:
/// `destination[p·R + r] = source[r·cols + col_range.start + p]`.
fn interleave<const R: usize>(
    source: &[f32],
    cols: usize,
    col_range: core::ops::Range<usize>,
    destination: &mut [f32],
) {
    let planes: [&[f32]; R] =
        core::array::from_fn(|r| &source[r * cols..(r + 1) * cols][col_range.clone()]);
    for (p, out) in destination.chunks_exact_mut(R).enumerate() {
        for (value, plane) in out.iter_mut().zip(&planes) {
            *value = plane[p];
        }
    }
}

/// The transpose of a `rows × C` source: `destination[c·rows + p] =
/// source[p·C + c]`.
fn deinterleave<const C: usize>(source: &[f32], rows: usize, destination: &mut [f32]) {
    let mut planes = destination.chunks_exact_mut(rows);
    let mut outs: [&mut [f32]; C] = core::array::from_fn(|_| planes.next().unwrap_or_default());
    for (p, pixel) in source[..rows * C].chunks_exact(C).enumerate() {
        for (out, &value) in outs.iter_mut().zip(pixel) {
            out[p] = value;
        }
    }
}

/// NCHW → NHWC of `batch` samples of `[channels, height, width]`.
pub fn nchw_to_nhwc(
    ctx: &Context,
    batch: usize,
    [channels, height, width]: [usize; 3],
    input: &[f32],
    output: &mut [f32],
) -> Result<(), OpError> {
    let spec = ReorderSpec {
        reorder: Reorder::NchwToNhwc,
        channels,
        height,
        width,
    };
    ReorderOp::new(spec)?.run(ctx, batch, input, output)
}

/// NHWC → NCHW of `batch` samples of `[channels, height, width]` (also the
/// flatten of an NHWC value into PyTorch's order).
pub fn nhwc_to_nchw(
    ctx: &Context,
    batch: usize,
    [channels, height, width]: [usize; 3],
    input: &[f32],
    output: &mut [f32],
) -> Result<(), OpError> {
    let spec = ReorderSpec {
        reorder: Reorder::NhwcToNchw,
        channels,
        height,
        width,
    };
    ReorderOp::new(spec)?.run(ctx, batch, input, output)
}

/// Helpers shared by the operators' tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::activation::Activation;
    use crate::ops::Context;
    use crate::tier::{kernels_for, Kernels, Tier};

    /// Every activation, with a non-default slope.
    pub const ACTIVATIONS: [Activation; 7] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu {
            negative_slope: 0.1,
        },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Hardswish,
    ];

    /// The tiers this machine can run.
    pub fn tiers() -> Vec<&'static Kernels> {
        Tier::ALL.into_iter().filter_map(kernels_for).collect()
    }

    /// Contexts of 1, 2, 3 and 4 threads.
    pub fn contexts(kernels: &'static Kernels) -> Vec<Context> {
        (1..=4)
            .map(|threads| Context::with(kernels, threads))
            .collect()
    }

    /// Deterministic pseudo-random values in `[-1, 1)` (xorshift).
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// Naive NCHW → NHWC.
    pub fn to_nhwc(batch: usize, [c, h, w]: [usize; 3], x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        for n in 0..batch {
            for ci in 0..c {
                for p in 0..h * w {
                    y[(n * h * w + p) * c + ci] = x[(n * c + ci) * h * w + p];
                }
            }
        }
        y
    }

    /// Naive NHWC → NCHW.
    pub fn to_nchw(batch: usize, [c, h, w]: [usize; 3], x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        for n in 0..batch {
            for ci in 0..c {
                for p in 0..h * w {
                    y[(n * c + ci) * h * w + p] = x[(n * h * w + p) * c + ci];
                }
            }
        }
        y
    }

    /// Asserts every element is within `tolerance · max(1, max|expected|)`
    /// of the expected one; NaN must match NaN and infinities must be equal.
    #[track_caller]
    pub fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
        let scale = expected
            .iter()
            .filter(|e| e.is_finite())
            .fold(1.0f32, |m, &e| m.max(e.abs()));
        for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            let ok = if e.is_nan() {
                a.is_nan()
            } else if e.is_infinite() {
                a == e
            } else {
                (a - e).abs() <= tolerance * scale
            };
            assert!(ok, "{what}: element {index}: got {a:e}, expected {e:e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn reorders_match_the_naive_loops_and_round_trip() {
        for shape in [
            [1, 1, 1],
            [3, 5, 7],
            [17, 4, 9],
            [33, 1, 40],
            [64, 8, 8],
            // 8x8 register blocks, with ragged rows and columns.
            [40, 9, 7],
            // 16x16 blocks, then 8x8 ones, then elements, both ways.
            [57, 5, 7],
            [16, 4, 4],
            [48, 6, 6],
            [25, 5, 5],
            [9, 8, 9],
            [100, 11, 13],
            // Several bands and row tiles of either direction.
            [50, 20, 15],
            [300, 3, 5],
            [3, 40, 37],
            [1, 33, 2],
            // The 1-4 channel fast paths, in bands wider than a tile.
            [2, 7, 50],
            [4, 30, 33],
            [3, 1, 700],
            [1, 20, 20],
            [2, 1, 1],
            [4, 1, 1],
        ] {
            for batch in [1, 3] {
                let len = batch * shape.iter().product::<usize>();
                let x = values(len, 11);
                for kernels in tiers() {
                    for ctx in contexts(kernels) {
                        let mut nhwc = vec![f32::NAN; len];
                        nchw_to_nhwc(&ctx, batch, shape, &x, &mut nhwc).unwrap();
                        assert_eq!(nhwc, to_nhwc(batch, shape, &x), "{shape:?} {batch}");
                        let mut back = vec![f32::NAN; len];
                        nhwc_to_nchw(&ctx, batch, shape, &nhwc, &mut back).unwrap();
                        assert_eq!(back, x, "{shape:?} {batch}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_reorders_split_between_threads_identically() {
        let shape = [3, 224, 224];
        let x = values(2 * 3 * 224 * 224, 4);
        let expected = to_nhwc(2, shape, &x);
        for ctx in contexts(crate::kernels()) {
            let mut nhwc = vec![0.0; x.len()];
            nchw_to_nhwc(&ctx, 2, shape, &x, &mut nhwc).unwrap();
            assert!(nhwc == expected, "{} threads", ctx.threads());
        }
    }

    #[test]
    fn flatten_of_nhwc_is_pytorch_order() {
        // [C=2, H=1, W=3] in NHWC: pixels (c0, c1) = (0, 10), (1, 11), (2, 12).
        let nhwc = [0.0, 10.0, 1.0, 11.0, 2.0, 12.0];
        let mut flat = [0.0; 6];
        nhwc_to_nchw(
            &Context::with(crate::kernels(), 1),
            1,
            [2, 1, 3],
            &nhwc,
            &mut flat,
        )
        .unwrap();
        assert_eq!(flat, [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    }

    #[test]
    fn wrong_lengths_and_overflow_are_errors() {
        let ctx = Context::with(crate::kernels(), 1);
        assert_eq!(
            nchw_to_nhwc(&ctx, 2, [2, 2, 2], &[0.0; 15], &mut [0.0; 16]),
            Err(OpError::Length {
                what: "reorder input",
                len: 15,
                expected: 16
            })
        );
        assert!(nchw_to_nhwc(&ctx, 1, [usize::MAX, 2, 2], &[], &mut []).is_err());
        assert!(nchw_to_nhwc(&ctx, usize::MAX, [2, 2, 2], &[], &mut []).is_err());
        // Empty samples are fine.
        assert_eq!(nchw_to_nhwc(&ctx, 4, [0, 3, 3], &[], &mut []), Ok(()));
    }
}
