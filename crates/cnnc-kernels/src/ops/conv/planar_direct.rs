//! [`Algorithm::PlanarDirect`](super::Algorithm::PlanarDirect): a
//! convolution of one group whose input and output are **NCHW planes** —
//! the form of a few-channel first layer (a 7x7/2 stem) whose output is
//! the network's, chosen by the execution plan (never by
//! [`Algorithm::choose`](super::Algorithm::choose)), so that the network
//! reorders neither its input nor its output (for the ResNet stem the
//! output reorder alone, 3.2 MB each way, was a fifth of the layer).
//!
//! **Phases.** The zero-padded input is split by the stride into
//! `sh · sw` phase planes per channel, `phase(a, b)[i][j] = x_pad[sh·i +
//! a][sw·j + b]`, each `PH × PW` with `PW = out_w + ⌊dw·(kw-1)/sw⌋` (and
//! `PH` alike). Then output pixel `(oy, ox)` reads tap `(c, ky, kx)` at
//! `oy·PW + ox + offset[c, ky, kx]` of the phase buffer: consecutive
//! output pixels of a row read consecutive floats, for every stride,
//! dilation and padding, and a dense convolution becomes a GEMM whose `A`
//! rows are plain vector loads.
//!
//! **Kernel.** A tile is `R` output channels × [`VECTORS`] vectors of
//! `LANES` consecutive pixels of a row (AVX-512: 8 × 3 × 16), each vector
//! from its own base pointer; the vectors of a row start at its columns
//! 0, 16, 32, … (a row's last may pass `out_w`: its extra lanes are
//! computed and not stored), and a tile may take vectors of two rows.
//! Per tap, [`VECTORS`] loads of input and `R` broadcast weights feed `R ·
//! VECTORS` FMAs. The tile starts from the bias and ends with the
//! activation. An earlier form ran the pixel index through the `PW -
//! out_w` columns of each phase row (3 of 115 for the stem, computed and
//! dropped) and stored vectors that crossed rows in pieces: 4% slower.
//! Output planes whose rows are whole cache lines (the stem's 112
//! columns) in a 64-byte aligned buffer take whole-line stores, 2% faster
//! than the same in an unaligned buffer.
//!
//! **Constants.** The weights in blocks of [`BLOCK`] output channels,
//! `[⌈Cout/8⌉][K][8]` with `K = (c, ky, kx)` as PyTorch's `[Cout, C, kh,
//! kw]` flattens it (zeros past `Cout`), then the bias padded alike.
//!
//! **Threads.** The phases are written plane-row by plane-row in parallel,
//! then the output rows are cut into runs; each element gets the same sum
//! whatever the cut.

use core::ops::Range;

use super::{too_large, OpError, RunArgs, Sizes, PARALLEL_MIN_MACS};
use crate::geometry::Conv2dGeometry;
use crate::ops::elementwise::{activate, load_n, store_n, tier_table, SimdMath};
use crate::threads::{part, Disjoint};
use crate::Activation;

/// Output channels per block of packed weights (the AVX-512 tile's rows).
const BLOCK: usize = 8;

/// Vectors of consecutive pixels per tile.
const VECTORS: usize = 3;

/// The most lanes of any tier (AVX-512).
const MAX_LANES: usize = 16;

/// Whether [`Algorithm::PlanarDirect`](super::Algorithm::PlanarDirect)
/// computes `g`: one group.
pub fn planar_direct_supported(g: &Conv2dGeometry) -> bool {
    g.groups == 1
}

/// Output channels rounded up to whole blocks: the rows of the packed
/// weights and of the padded bias.
fn padded_channels(out_channels: usize) -> usize {
    out_channels.div_ceil(BLOCK) * BLOCK
}

/// Floats of the constants.
pub(super) fn constants_len(
    g: &Conv2dGeometry,
    sizes: &Sizes,
    has_bias: bool,
) -> Result<usize, OpError> {
    padded_channels(g.out_channels)
        .checked_mul(sizes.k + usize::from(has_bias))
        .ok_or_else(too_large)
}

/// Packs the PyTorch weight `[Cout, C, kh, kw]` and the bias into `out`
/// ([`constants_len`] floats, zero-filled).
pub(super) fn pack(weight: &[f32], bias: Option<&[f32]>, k: usize, out: &mut [f32]) {
    let padded = padded_channels(weight.len() / k);
    for (o, row) in weight.chunks_exact(k).enumerate() {
        let block = &mut out[(o / BLOCK) * k * BLOCK..][..k * BLOCK];
        for (kk, &w) in row.iter().enumerate() {
            block[kk * BLOCK + o % BLOCK] = w;
        }
    }
    if let Some(bias) = bias {
        out[padded * k..][..bias.len()].copy_from_slice(bias);
    }
}

/// The phase buffer's shape and the taps' offsets in it, derived from the
/// geometry at construction.
#[derive(Debug)]
pub(super) struct Plan {
    /// Rows and columns of one phase plane (`PH`, `PW`).
    rows: usize,
    cols: usize,
    /// Floats of all phase planes (`C · sh · sw · PH · PW`).
    phases: usize,
    /// Floats of scratch: the phases and the zeros that the last tile
    /// reads past them.
    len: usize,
    /// Per tap `(c, ky, kx)`, its offset from the pixel index.
    offsets: Vec<usize>,
}

impl Plan {
    /// The plan of a checked geometry of one group.
    pub fn new(g: &Conv2dGeometry) -> Result<Plan, OpError> {
        let [sh, sw] = g.stride;
        let [dh, dw] = g.dilation;
        let [kh, kw] = g.kernel;
        let rows = g.out_h + dh * (kh - 1) / sh;
        let cols = g.out_w + dw * (kw - 1) / sw;
        let plane = rows.checked_mul(cols).ok_or_else(too_large)?;
        let planes = g
            .in_channels
            .checked_mul(sh)
            .and_then(|x| x.checked_mul(sw))
            .ok_or_else(too_large)?;
        let phases = planes.checked_mul(plane).ok_or_else(too_large)?;
        let mut offsets = Vec::with_capacity(g.in_channels * kh * kw);
        for c in 0..g.in_channels {
            for ky in 0..kh {
                for kx in 0..kw {
                    let (y, x) = (ky * dh, kx * dw);
                    let phase = (c * sh + y % sh) * sw + x % sw;
                    offsets.push(phase * plane + (y / sh) * cols + x / sw);
                }
            }
        }
        // The last vector of the last row reads from `(out_h - 1)·PW +
        // col` with `col + LANES ≤ out_w + LANES - 1 ≤ PW + MAX_LANES` on, up
        // to the largest offset further.
        let reach = offsets.iter().max().copied().unwrap_or(0);
        let len = (g.out_h * cols)
            .checked_add(MAX_LANES + reach)
            .ok_or_else(too_large)?
            .max(phases);
        Ok(Plan {
            rows,
            cols,
            phases,
            len,
            offsets,
        })
    }

    /// Floats of scratch `run` needs (one sample's phases, whatever the
    /// batch: samples run one after the other).
    pub fn scratch_len(&self) -> usize {
        self.len
    }

    /// Runs the layer on NCHW `args.input` into NCHW `output` (lengths
    /// checked by the caller; `args.residual` is `None`).
    pub fn run(
        &self,
        args: &RunArgs<'_>,
        output: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let kernels = planar_direct_tiers::table(args.ctx.kernels());
        let threads = args.ctx.threads();
        let row_units = g.in_channels * g.stride[0] * self.rows;
        let (phase_tasks, tile_tasks) = if threads <= 1 || sizes.macs < PARALLEL_MIN_MACS {
            (1, 1)
        } else {
            ((threads * 2).min(row_units), (threads * 4).min(g.out_h))
        };
        let padded = padded_channels(g.out_channels);
        let bias = args
            .spec
            .has_bias
            .then(|| &args.constants[padded * sizes.k..][..padded]);
        let scratch = &mut scratch[..self.len];
        scratch[self.phases..].fill(0.0);
        for sample in 0..args.batch {
            let input = &args.input[sample * sizes.input..][..sizes.input];
            let phases = Disjoint::new(&mut scratch[..self.phases]);
            args.ctx.parallel_for(phase_tasks, |task| {
                for unit in part(row_units, phase_tasks, 1, task) {
                    let rows = PhaseRows {
                        g,
                        input: input.as_ptr(),
                        // SAFETY: each unit's `sw` phase rows are written
                        // by the one task that has the unit.
                        phases: unsafe { phases.pointer() },
                        unit,
                        plan: self,
                    };
                    // SAFETY: the unit's rows are inside the phases; input
                    // reads are inside the sample. The table is of a tier
                    // this CPU has.
                    unsafe { (kernels.phase_rows)(&rows) };
                }
            });
            let out = Disjoint::new(&mut output[sample * sizes.output..][..sizes.output]);
            let scratch = &*scratch;
            args.ctx.parallel_for(tile_tasks, |task| {
                let tiles = TileArgs {
                    g,
                    phases: scratch.as_ptr(),
                    offsets: &self.offsets,
                    cols: self.cols,
                    weights: args.constants.as_ptr(),
                    bias,
                    activation: args.spec.activation,
                    // SAFETY: the tasks' row runs are disjoint, and so are
                    // the outputs they store.
                    output: unsafe { out.pointer() },
                    rows: part(g.out_h, tile_tasks, 1, task),
                };
                // SAFETY: `rows` below `out_h`; the reads stay inside the
                // scratch (`len`), the writes inside the sample's output.
                // The table is of a tier this CPU has.
                unsafe { (kernels.tiles)(&tiles) };
            });
        }
        Ok(())
    }
}

/// The `sw` phase rows `(c, a, ·, i)` of one plane-row unit `(c, a, i)`.
struct PhaseRows<'a> {
    g: &'a Conv2dGeometry,
    /// The sample's NCHW input.
    input: *const f32,
    /// The phase buffer (`plan.phases` floats).
    phases: *mut f32,
    unit: usize,
    plan: &'a Plan,
}

/// A run of tiles: the output rows `rows` of every output channel.
struct TileArgs<'a> {
    g: &'a Conv2dGeometry,
    phases: *const f32,
    offsets: &'a [usize],
    /// `PW`, the row length of the phases.
    cols: usize,
    /// The packed weights, bias after them.
    weights: *const f32,
    /// The bias, padded to whole blocks.
    bias: Option<&'a [f32]>,
    activation: Activation,
    /// The sample's NCHW output.
    output: *mut f32,
    rows: Range<usize>,
}

struct PlanarDirectKernels {
    phase_rows: unsafe fn(&PhaseRows<'_>),
    tiles: unsafe fn(&TileArgs<'_>),
}

tier_table! {
    mod planar_direct_tiers for PlanarDirectKernels {
        phase_rows: write_phase_rows::<V>(args: &PhaseRows<'_>);
        tiles: planar_direct_tiles::<V>(args: &TileArgs<'_>);
    }
}

/// Writes the phase rows of `args.unit`: input row `sh·i + a - top`
/// (zeros outside the input), split by column phase `b`: `x_pad[sw·j +
/// b]` to row `i` of phase `(c, a, b)`.
///
/// # Safety
/// As [`Plan::run`] builds `args`; the target-feature contract.
#[inline(always)]
unsafe fn write_phase_rows<V: SimdMath>(args: &PhaseRows<'_>) {
    let (g, plan) = (args.g, args.plan);
    let [sh, sw] = g.stride;
    let (rows, cols) = (plan.rows, plan.cols);
    let i = args.unit % rows;
    let (c, a) = (args.unit / rows / sh, args.unit / rows % sh);
    let y = (sh * i + a)
        .checked_sub(g.padding[0])
        .filter(|&y| y < g.in_h);
    let left = g.padding[1];
    for b in 0..sw {
        let phase = (c * sh + a) * sw + b;
        // SAFETY: row `i` of a phase plane is inside the phases; the
        // input row `y < in_h` of channel `c` inside the sample.
        unsafe {
            let to = args.phases.add((phase * rows + i) * cols);
            let Some(y) = y else {
                core::ptr::write_bytes(to, 0, cols);
                continue;
            };
            let from = args.input.add((c * g.in_h + y) * g.in_w);
            // Column `j` reads input column `sw·j + b - left`: inside for
            // `j` in `first..end`.
            let first = left.saturating_sub(b).div_ceil(sw).min(cols);
            let end = (g.in_w + left)
                .saturating_sub(b)
                .div_ceil(sw)
                .clamp(first, cols);
            core::ptr::write_bytes(to, 0, first);
            core::ptr::write_bytes(to.add(end), 0, cols - end);
            let at = |j: usize| from.add(sw * j + b - left);
            let mut j = first;
            match sw {
                1 => {
                    while j < end {
                        let n = (end - j).min(V::LANES);
                        store_n(load_n::<V>(at(j), n), to.add(j), n);
                        j += n;
                    }
                }
                2 => {
                    // Up to two vectors of input per vector of one phase:
                    // the `2n - 1` columns from the first, then their even
                    // lanes.
                    while j < end {
                        let n = (end - j).min(V::LANES);
                        let (p, span) = (at(j), 2 * n - 1);
                        let low = load_n::<V>(p, span);
                        let high = if span > V::LANES {
                            load_n::<V>(p.add(V::LANES), span - V::LANES)
                        } else {
                            V::zero()
                        };
                        store_n(V::even_lanes(low, high), to.add(j), n);
                        j += n;
                    }
                }
                _ => {}
            }
            for j in j..end {
                *to.add(j) = *at(j);
            }
        }
    }
}

/// The tile kernel of the tier: 8 channels on AVX-512, 4 elsewhere (the
/// 16 registers of AVX2 hold 4 × 3 accumulators, 3 inputs, 1 weight).
///
/// # Safety
/// As [`Plan::run`] builds `args`; the target-feature contract.
#[inline(always)]
unsafe fn planar_direct_tiles<V: SimdMath>(args: &TileArgs<'_>) {
    // SAFETY: forwarded.
    unsafe {
        if V::LANES >= 16 {
            tiles::<V, 8>(args)
        } else {
            tiles::<V, 4>(args)
        }
    }
}

/// Every tile of `args.rows` for every output channel, `R` channels at a
/// time.
///
/// # Safety
/// As [`planar_direct_tiles`]; `R` divides [`BLOCK`].
#[inline(always)]
unsafe fn tiles<V: SimdMath, const R: usize>(args: &TileArgs<'_>) {
    let g = args.g;
    let k = args.offsets.len();
    let plane = g.out_h * g.out_w;
    let per_row = g.out_w.div_ceil(V::LANES);
    let slots = args.rows.start * per_row..args.rows.end * per_row;
    for first in (0..g.out_channels).step_by(R) {
        let channels = R.min(g.out_channels - first);
        let block = (first / BLOCK) * k * BLOCK + first % BLOCK;
        let tile = Tile {
            // In the packed weights; the channels' planes in the output.
            weights: args.weights.wrapping_add(block),
            bias: core::array::from_fn(|r| args.bias.map_or(0.0, |bias| bias[first + r])),
            output: args.output.wrapping_add(first * plane),
            channels,
        };
        let mut slot = Slot::of(slots.start, per_row, V::LANES);
        let mut index = slots.start;
        while index < slots.end {
            // The tile's vectors; past the run, repeats of its first one
            // (stored again with the same values).
            let mut vectors = [slot; VECTORS];
            for v in 1..VECTORS.min(slots.end - index) {
                vectors[v] = vectors[v - 1].next(per_row, V::LANES);
            }
            // SAFETY: the caller's contract.
            unsafe { compute_tile::<V, R>(args, &tile, &vectors) };
            slot = vectors[VECTORS - 1].next(per_row, V::LANES);
            index += VECTORS;
        }
    }
}

/// One vector of a tile: `LANES` output columns of a row from `col` (the
/// row's last vector may pass `out_w`: its extra lanes are not stored).
#[derive(Clone, Copy)]
struct Slot {
    row: usize,
    col: usize,
}

impl Slot {
    /// Vector `index` of the rows' `per_row` vectors each.
    fn of(index: usize, per_row: usize, lanes: usize) -> Slot {
        Slot {
            row: index / per_row,
            col: index % per_row * lanes,
        }
    }

    /// The vector after this one.
    #[inline(always)]
    fn next(self, per_row: usize, lanes: usize) -> Slot {
        if self.col + lanes < per_row * lanes {
            Slot {
                col: self.col + lanes,
                ..self
            }
        } else {
            Slot {
                row: self.row + 1,
                col: 0,
            }
        }
    }
}

/// What the tiles of one group of `R` channels share.
struct Tile<const R: usize> {
    /// The group's first weight in its block (stride [`BLOCK`] per tap).
    weights: *const f32,
    bias: [f32; R],
    /// The group's first output plane.
    output: *mut f32,
    /// Channels of the group that exist (`≤ R`).
    channels: usize,
}

/// One tile: the vectors `vectors` of the group's channels.
///
/// # Safety
/// As [`tiles`].
#[inline(always)]
unsafe fn compute_tile<V: SimdMath, const R: usize>(
    args: &TileArgs<'_>,
    tile: &Tile<R>,
    vectors: &[Slot; VECTORS],
) {
    let g = args.g;
    // SAFETY: a vector of output row `row < out_h` from column `col <
    // out_w` reads the phases from `row · PW + col` up to `LANES - 1 +
    // the largest offset` on: below `len` (the plan's bound). Weights
    // inside the block; stores inside the planes of channels below
    // `out_channels`, at output pixels.
    unsafe {
        let mut acc: [[V; VECTORS]; R] =
            core::array::from_fn(|r| [V::splat(tile.bias[r]); VECTORS]);
        let bases: [*const f32; VECTORS] =
            core::array::from_fn(|v| args.phases.add(vectors[v].row * args.cols + vectors[v].col));
        for (kk, &offset) in args.offsets.iter().enumerate() {
            let x: [V; VECTORS] = core::array::from_fn(|v| V::load(bases[v].add(offset)));
            let w = tile.weights.add(kk * BLOCK);
            for (r, row) in acc.iter_mut().enumerate() {
                let w = V::splat(*w.add(r));
                for (sum, &x) in row.iter_mut().zip(&x) {
                    *sum = x.mul_add(w, *sum);
                }
            }
        }
        store_tile(g, args.activation, acc, vectors, tile);
    }
}

/// Activates and stores a tile's accumulators. They come by value:
/// indexing them here at run time indexes this copy, so the sums above
/// keep theirs in registers.
///
/// # Safety
/// As [`compute_tile`].
#[inline(always)]
unsafe fn store_tile<V: SimdMath, const R: usize>(
    g: &Conv2dGeometry,
    activation: Activation,
    mut acc: [[V; VECTORS]; R],
    vectors: &[Slot; VECTORS],
    tile: &Tile<R>,
) {
    activate_tile(&mut acc, activation);
    let plane = g.out_h * g.out_w;
    let whole = vectors
        .iter()
        .all(|vector| vector.col + V::LANES <= g.out_w);
    if whole && tile.channels == R {
        // The common tile: constant loops of whole vectors (1% faster).
        for (v, vector) in vectors.iter().enumerate() {
            let at = tile.output.wrapping_add(vector.row * g.out_w + vector.col);
            for (r, row) in acc.iter().enumerate() {
                // SAFETY: a whole vector of the row, in plane `r`.
                unsafe { row[v].store(at.add(r * plane)) };
            }
        }
        return;
    }
    for (v, vector) in vectors.iter().enumerate() {
        let n = (g.out_w - vector.col).min(V::LANES);
        let at = vector.row * g.out_w + vector.col;
        for (r, row) in acc.iter().enumerate().take(tile.channels) {
            // SAFETY: `n` pixels of the row from `col`, in plane `r`.
            unsafe { store_n(row[v], tile.output.add(r * plane + at), n) };
        }
    }
}

/// Applies the activation to every accumulator of a tile, with the choice
/// made once.
#[inline(always)]
fn activate_tile<V: SimdMath, const R: usize>(acc: &mut [[V; VECTORS]; R], activation: Activation) {
    #[inline(always)]
    fn apply<V: SimdMath, const R: usize>(acc: &mut [[V; VECTORS]; R], activation: Activation) {
        for sum in acc.iter_mut().flatten() {
            // SAFETY: register arithmetic under the caller's target
            // features.
            *sum = unsafe { activate(*sum, activation) };
        }
    }
    match activation {
        Activation::Identity => {}
        Activation::Relu => apply(acc, Activation::Relu),
        Activation::Relu6 => apply(acc, Activation::Relu6),
        other => apply(acc, other),
    }
}
