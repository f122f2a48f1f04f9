//! Pooling over NHWC: max, average and adaptive average (global average
//! pooling included), vectorized over the contiguous channels.
//!
//! For each output pixel the kernel keeps up to four vectors of channels in
//! registers and walks the window's taps, so every tap is a few contiguous
//! vector loads; channels that do not fill a vector use masked loads and
//! stores. The window of each output row and column is clipped once to the
//! input (padding and the ragged windows of `ceil_mode` simply have fewer
//! taps), following the reference's rules exactly:
//!
//! - **max**: padding counts as `-inf` (it never wins); a window with no tap
//!   inside the input gives `-inf`; a NaN anywhere in the window gives NaN.
//! - **average**: the sum runs over the taps inside the input; the divisor
//!   is the window clipped to the padded input (`count_include_pad`) or the
//!   number of taps inside the input (not); an empty window gives 0.
//! - **adaptive average**: output `i` averages input
//!   `floor(i·in/out) .. ceil((i+1)·in/out)`.
//!
//! Sums are `f32`, in window order (row by row); the reference sums in
//! `f64`, so averages differ from it by a few ulps. An activation may be
//! fused (applied before the store).
//!
//! Specs hold the per-sample geometry ([`Pool2dGeometry`] with `batch = 1`);
//! the batch is `run`'s argument. Work is split between threads by output
//! rows (of all samples together).
//!
//! **Planar (NCHW) max and average pooling.** A pooling that reads the
//! network's input can pool the caller's NCHW planes directly
//! ([`Layout::Nchw`]) and leave the layout change to its smaller output (or
//! skip it when the pooling is the whole network). Per output row of a
//! plane, in chunks of at most [`PLANAR_SPAN`] input columns: the window
//! rows are reduced into one padded row (`-inf` or 0 outside the input),
//! that row is reduced over the `kw` column taps at stride 1, and every
//! `stride`-th result is kept: all contiguous vector work, about twice the
//! needed column reductions at stride 2. Max pooling gives the same values
//! as the NHWC kernel (no arithmetic); average pooling sums rows first, so
//! its last bits may differ from the NHWC kernel's (both are `f32` sums of
//! the same taps, within the reference tolerance). Windows wider than
//! [`PLANAR_SPAN`]` / 2` columns are refused ([`planar_supported`]).

use core::ops::Range;

use super::elementwise::{activate, load_n, store_n, tier_table, total, SimdMath};
use crate::activation::Activation;
use crate::geometry::Pool2dGeometry;
use crate::ops::layout::Layout;
use crate::ops::{check_len, Context, OpError};
use crate::threads::{part, task_count, Disjoint};

/// Input columns a planar pooling reduces at a time (two stack rows of
/// this many floats per call).
pub const PLANAR_SPAN: usize = 512;

/// Whether a max or average pooling of `g` can run on NCHW planes: its
/// window spans at most [`PLANAR_SPAN`]` / 2` input columns.
pub fn planar_supported(g: &Pool2dGeometry) -> bool {
    g.kernel[1]
        .checked_sub(1)
        .and_then(|taps| taps.checked_mul(g.dilation[1]))
        .is_some_and(|reach| reach < PLANAR_SPAN / 2)
}

/// Max pooling (`MaxPool2d`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPoolSpec {
    /// Per-sample geometry (`batch` must be 1), output sizes resolved.
    pub geometry: Pool2dGeometry,
    /// Fused after the pooling ([`Activation::Identity`] for none).
    pub activation: Activation,
    /// How input and output samples are stored.
    pub layout: Layout,
}

/// Average pooling (`AvgPool2d`; `geometry.dilation` must be `[1, 1]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AvgPoolSpec {
    /// Per-sample geometry (`batch` must be 1), output sizes resolved.
    pub geometry: Pool2dGeometry,
    /// Divide by the window clipped to the padded input (PyTorch's default)
    /// rather than by the taps inside the input.
    pub count_include_pad: bool,
    /// Fused after the pooling.
    pub activation: Activation,
    /// How input and output samples are stored.
    pub layout: Layout,
}

/// Adaptive average pooling (`AdaptiveAvgPool2d`; `[1, 1]` output is
/// global average pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdaptiveAvgPoolSpec {
    /// Channels.
    pub channels: usize,
    /// Input `[h, w]`, at least 1 each.
    pub input: [usize; 2],
    /// Output `[h, w]`, at least 1 each (larger than the input is allowed).
    pub output: [usize; 2],
}

/// How the windows of one pooling are formed and reduced.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Max,
    Avg { count_include_pad: bool },
    Adaptive,
}

/// A checked pooling, the common form of the three operators.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pooling {
    g: Pool2dGeometry,
    mode: Mode,
    activation: Activation,
    layout: Layout,
    /// Elements of one sample's input and output.
    input_len: usize,
    output_len: usize,
}

impl Pooling {
    /// Checks that every size and index the kernels compute fits.
    fn new(
        g: Pool2dGeometry,
        mode: Mode,
        activation: Activation,
        layout: Layout,
    ) -> Result<Pooling, OpError> {
        let refuse = |why: &str| Err(OpError::Spec(format!("pooling {g:?}: {why}")));
        if g.batch != 1 {
            return refuse("the spec's geometry is per sample (batch 1)");
        }
        if g.kernel.contains(&0) || g.stride.contains(&0) || g.dilation.contains(&0) {
            return refuse("kernel, stride and dilation must be at least 1");
        }
        if matches!(mode, Mode::Avg { .. }) && g.dilation != [1, 1] {
            return refuse("average pooling has no dilation");
        }
        if layout == Layout::Nchw && (mode == Mode::Adaptive || !planar_supported(&g)) {
            return refuse(
                "planar pooling needs a max or average window of fewer than 256 columns",
            );
        }
        let lengths = [g.in_h, g.in_w, g.channels]
            .into_iter()
            .try_fold(1usize, usize::checked_mul)
            .zip(
                [g.out_h, g.out_w, g.channels]
                    .into_iter()
                    .try_fold(1usize, usize::checked_mul),
            );
        // The largest padded coordinate any window reaches, per axis.
        let reach = |out: usize, axis: usize| {
            out.saturating_sub(1)
                .checked_mul(g.stride[axis])?
                .checked_add((g.kernel[axis] - 1).checked_mul(g.dilation[axis])?)?
                .checked_add(1)
        };
        let padded = |len: usize, axis: usize| len.checked_add(g.padding[axis].checked_mul(2)?);
        match (
            lengths,
            reach(g.out_h, 0),
            reach(g.out_w, 1),
            padded(g.in_h, 0),
            padded(g.in_w, 1),
        ) {
            (Some((input_len, output_len)), Some(_), Some(_), Some(_), Some(_)) => Ok(Pooling {
                g,
                mode,
                activation,
                layout,
                input_len,
                output_len,
            }),
            _ => refuse("sizes overflow"),
        }
    }

    fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        check_len("pooling input", input.len(), total(batch, self.input_len)?)?;
        check_len(
            "pooling output",
            output.len(),
            total(batch, self.output_len)?,
        )?;
        let g = &self.g;
        let rows = batch * g.out_h;
        if rows == 0 || self.output_len == 0 {
            return Ok(());
        }
        let table = pool_tiers::table(ctx.kernels());
        match self.layout {
            // Row `oy` of sample `n` reads sample `n`.
            Layout::Nhwc => self.run_rows(
                ctx,
                (batch * g.out_h, self.input_len, g.out_w * g.channels),
                table.row,
                input,
                output,
            ),
            // Row `oy` of plane `n·C + c` reads that plane.
            Layout::Nchw => self.run_rows(
                ctx,
                (batch * g.channels * g.out_h, g.in_h * g.in_w, g.out_w),
                table.planar_row,
                input,
                output,
            ),
        }
        Ok(())
    }

    /// Runs `kernel` on `rows` output rows of `row_len` floats, split
    /// between tasks: row `r` is row `r % out_h` of block `r / out_h`,
    /// which reads input block `r / out_h` (`block_len` floats): a sample
    /// (NHWC) or a plane (NCHW). Lengths checked by [`Pooling::run`].
    fn run_rows(
        &self,
        ctx: &Context,
        (rows, block_len, row_len): (usize, usize, usize),
        kernel: unsafe fn(&RowArgs),
        input: &[f32],
        output: &mut [f32],
    ) {
        let g = &self.g;
        let work_per_row = row_len * g.kernel[0] * g.kernel[1];
        let tasks = task_count(ctx.threads(), rows * work_per_row, 1 << 16).min(rows);
        let output = Disjoint::new(output);
        ctx.parallel_for(tasks, |task| {
            for row in part(rows, tasks, 1, task) {
                let (block, oy) = (row / g.out_h, row % g.out_h);
                let block_input = &input[block * block_len..(block + 1) * block_len];
                // SAFETY: output row `row` belongs to this task only.
                let out = unsafe { output.part(row * row_len..(row + 1) * row_len) };
                let args = RowArgs {
                    input: block_input.as_ptr(),
                    output: out.as_mut_ptr(),
                    oy,
                    pooling: *self,
                };
                // SAFETY: `input` holds one sample (or plane) of the
                // checked geometry and `output` one output row of it; every
                // tap the kernel reads is clipped to the input. The table
                // is of a tier this CPU has.
                unsafe { kernel(&args) };
            }
        });
    }
}

/// Taps `k` in `0..kernel` whose coordinate `o·stride + k·dilation - pad`
/// lies in `0..len`: a contiguous range, since the coordinate grows with `k`.
fn valid_taps(
    o: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    kernel: usize,
    len: usize,
) -> Range<usize> {
    let base = o * stride;
    // The first k with base + k·d ≥ pad, and the first with base + k·d ≥ len + pad.
    let first = pad.saturating_sub(base).div_ceil(dilation);
    let end = (len + pad)
        .saturating_sub(base)
        .div_ceil(dilation)
        .min(kernel);
    first.min(end)..end
}

/// The average-pooling window of output `o` along one axis: the input
/// range it sums and its length clipped to the padded input (the
/// reference's `AvgWindow`).
fn avg_window(
    o: usize,
    stride: usize,
    kernel: usize,
    pad: usize,
    len: usize,
) -> (Range<usize>, usize) {
    let shifted_start = o * stride;
    let shifted_end = (shifted_start + kernel).min(len + 2 * pad);
    let padded_len = shifted_end.saturating_sub(shifted_start);
    let start = shifted_start.saturating_sub(pad).min(len);
    let end = shifted_end.saturating_sub(pad).min(len).max(start);
    (start..end, padded_len)
}

/// The adaptive window of output `o` along one axis.
fn adaptive_window(o: usize, len: usize, out: usize) -> Range<usize> {
    (o * len / out).min(len)..((o + 1) * len).div_ceil(out).min(len)
}

/// One output row of one sample: raw pointers to the sample's input and to
/// the output row (checked by [`Pooling::run`]).
struct RowArgs {
    input: *const f32,
    output: *mut f32,
    oy: usize,
    pooling: Pooling,
}

struct PoolKernels {
    row: unsafe fn(&RowArgs),
    planar_row: unsafe fn(&RowArgs),
}

tier_table! {
    mod pool_tiers for PoolKernels {
        row: pool_row::<V>(args: &RowArgs);
        planar_row: pool_planar_row::<V>(args: &RowArgs);
    }
}

/// The input positions of one output pixel's window.
#[derive(Clone)]
struct Window {
    /// Input rows.
    rows: Range<usize>,
    /// Input row step (the dilation; 1 for averages).
    row_step: usize,
    /// Input columns.
    cols: Range<usize>,
    /// Input column step.
    col_step: usize,
}

impl Window {
    fn taps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.rows
            .clone()
            .step_by(self.row_step)
            .flat_map(move |iy| {
                self.cols
                    .clone()
                    .step_by(self.col_step)
                    .map(move |ix| (iy, ix))
            })
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() || self.cols.is_empty()
    }
}

/// The input rows of output row `oy`'s windows (every `step`-th row of
/// the range) and the row part of the average's divisor: the window
/// clipped to the padded input (averages) or its length (adaptive).
fn window_rows(g: &Pool2dGeometry, mode: Mode, oy: usize) -> (Range<usize>, usize, usize) {
    match mode {
        Mode::Max => {
            let taps = valid_taps(
                oy,
                g.stride[0],
                g.dilation[0],
                g.padding[0],
                g.kernel[0],
                g.in_h,
            );
            let first =
                (oy * g.stride[0] + taps.start * g.dilation[0]).saturating_sub(g.padding[0]);
            (first..first + taps.len() * g.dilation[0], g.dilation[0], 0)
        }
        Mode::Avg { .. } => {
            let (rows, padded) = avg_window(oy, g.stride[0], g.kernel[0], g.padding[0], g.in_h);
            (rows, 1, padded)
        }
        Mode::Adaptive => {
            let rows = adaptive_window(oy, g.in_h, g.out_h);
            let len = rows.len();
            (rows, 1, len)
        }
    }
}

/// # Safety
/// `args` as [`Pooling::run`] builds it; the target-feature contract.
#[inline(always)]
unsafe fn pool_row<V: SimdMath>(args: &RowArgs) {
    let Pooling {
        g,
        mode,
        activation,
        ..
    } = args.pooling;
    let oy = args.oy;
    let (rows, row_step, row_divisor) = window_rows(&g, mode, oy);
    for ox in 0..g.out_w {
        let (cols, col_step, col_divisor) = match mode {
            Mode::Max => {
                let taps = valid_taps(
                    ox,
                    g.stride[1],
                    g.dilation[1],
                    g.padding[1],
                    g.kernel[1],
                    g.in_w,
                );
                let first =
                    (ox * g.stride[1] + taps.start * g.dilation[1]).saturating_sub(g.padding[1]);
                (first..first + taps.len() * g.dilation[1], g.dilation[1], 0)
            }
            Mode::Avg { .. } => {
                let (cols, padded) = avg_window(ox, g.stride[1], g.kernel[1], g.padding[1], g.in_w);
                (cols, 1, padded)
            }
            Mode::Adaptive => {
                let cols = adaptive_window(ox, g.in_w, g.out_w);
                let len = cols.len();
                (cols, 1, len)
            }
        };
        let window = Window {
            rows: rows.clone(),
            row_step,
            cols,
            col_step,
        };
        let divisor = match mode {
            Mode::Max => 0,
            Mode::Avg {
                count_include_pad: true,
            } => row_divisor * col_divisor,
            Mode::Avg { .. } | Mode::Adaptive => window.rows.len() * window.cols.len(),
        };
        let out = args.output.wrapping_add(ox * g.channels);
        // SAFETY: the window's taps lie inside the sample (clipped above),
        // the output pixel inside the row; the contract is the caller's.
        unsafe {
            let mut c = 0;
            while c + 4 * V::LANES <= g.channels {
                pixel::<V, 4>(
                    args.input,
                    &g,
                    &window,
                    c,
                    V::LANES,
                    mode,
                    divisor,
                    activation,
                    out.add(c),
                );
                c += 4 * V::LANES;
            }
            while c < g.channels {
                let n = (g.channels - c).min(V::LANES);
                pixel::<V, 1>(
                    args.input,
                    &g,
                    &window,
                    c,
                    n,
                    mode,
                    divisor,
                    activation,
                    out.add(c),
                );
                c += n;
            }
        }
    }
}

/// One output row of one NCHW plane (`args.input` the plane, `args.output`
/// the row): see the module documentation.
///
/// # Safety
/// `args` as [`Pooling::run_rows`] builds it for NCHW; the target-feature
/// contract.
#[inline(always)]
unsafe fn pool_planar_row<V: SimdMath>(args: &RowArgs) {
    let Pooling {
        g,
        mode,
        activation,
        ..
    } = args.pooling;
    let max = mode == Mode::Max;
    let outside = if max { f32::NEG_INFINITY } else { 0.0 };
    // The input rows of this output row's windows, and the row part of the
    // average's padded divisor.
    let (rows, row_step, row_padded) = window_rows(&g, mode, args.oy);
    let (stride, dilation) = (g.stride[1], g.dilation[1]);
    // Offset of a window's last column tap from its first.
    let reach = (g.kernel[1] - 1) * dilation;
    // Outputs per chunk: their windows span at most `PLANAR_SPAN` columns.
    let chunk = (PLANAR_SPAN - reach - 1) / stride + 1;
    // Written before read: no need to clear them on every row.
    let mut span = core::mem::MaybeUninit::<[f32; PLANAR_SPAN]>::uninit();
    let mut reduced = core::mem::MaybeUninit::<[f32; PLANAR_SPAN]>::uninit();
    let (span, reduced) = (
        span.as_mut_ptr().cast::<f32>(),
        reduced.as_mut_ptr().cast::<f32>(),
    );
    // SAFETY: input reads stay inside the plane's columns `0..in_w` of
    // rows `rows` (inside the plane); the buffers are read only where
    // written, below `len ≤ PLANAR_SPAN`; output writes stay inside the
    // row. The contract is the caller's.
    unsafe {
        let fill = |from: usize, to: usize| {
            for t in from..to {
                *span.add(t) = outside;
            }
        };
        let mut ox0 = 0;
        while ox0 < g.out_w {
            let n = chunk.min(g.out_w - ox0);
            let len = (n - 1) * stride + reach + 1;
            // Span column `t` is input column `x0 + t`.
            let x0 = (ox0 * stride) as isize - g.padding[1] as isize;
            let inside_start = (-x0).clamp(0, len as isize) as usize;
            let inside_end =
                (g.in_w as isize - x0).clamp(inside_start as isize, len as isize) as usize;
            fill(0, inside_start);
            fill(inside_end, len);
            if rows.is_empty() {
                fill(inside_start, inside_end);
            } else if inside_end > inside_start {
                // The window rows, reduced in registers, one vector of
                // columns at a time.
                let column = (x0 + inside_start as isize) as usize;
                let at = |iy: usize| args.input.add(iy * g.in_w + column);
                let mut t = 0;
                while t < inside_end - inside_start {
                    let lanes = (inside_end - inside_start - t).min(V::LANES);
                    let mut acc = load_n::<V>(at(rows.start).add(t), lanes);
                    for iy in rows.clone().step_by(row_step).skip(1) {
                        acc = reduce(acc, load_n::<V>(at(iy).add(t), lanes), max);
                    }
                    store_n(acc, span.add(inside_start + t), lanes);
                    t += lanes;
                }
            }
            // Every column tap at stride 1, then every `stride`-th result.
            let m = (n - 1) * stride + 1;
            let mut x = 0;
            while x < m {
                let lanes = (m - x).min(V::LANES);
                let mut acc = load_n::<V>(span.add(x), lanes);
                for kx in 1..g.kernel[1] {
                    acc = reduce(acc, load_n::<V>(span.add(x + kx * dilation), lanes), max);
                }
                store_n(acc, reduced.add(x), lanes);
                x += lanes;
            }
            // Every `stride`-th result, in vectors at stride 1 and 2.
            let out = args.output.add(ox0);
            let mut j = 0;
            if stride <= 2 {
                while j < n {
                    let lanes = (n - j).min(V::LANES);
                    let value = if stride == 1 {
                        load_n::<V>(reduced.add(j), lanes)
                    } else {
                        // Elements `2j .. 2j + 2·lanes - 1` were written.
                        let pair = 2 * lanes - 1;
                        let low = load_n::<V>(reduced.add(2 * j), pair);
                        let high = load_n::<V>(
                            reduced.add(2 * j + V::LANES),
                            pair.saturating_sub(V::LANES),
                        );
                        V::even_lanes(low, high)
                    };
                    store_n(value, out.add(j), lanes);
                    j += lanes;
                }
            } else {
                for j in 0..n {
                    *out.add(j) = *reduced.add(j * stride);
                }
            }
            if let Mode::Avg { count_include_pad } = mode {
                for j in 0..n {
                    let (cols, col_padded) =
                        avg_window(ox0 + j, stride, g.kernel[1], g.padding[1], g.in_w);
                    let divisor = if count_include_pad {
                        row_padded * col_padded
                    } else {
                        rows.len() * cols.len()
                    };
                    *out.add(j) = if rows.is_empty() || cols.is_empty() || divisor == 0 {
                        0.0
                    } else {
                        *out.add(j) / divisor as f32
                    };
                }
            }
            ox0 += n;
        }
        if activation != Activation::Identity {
            let mut x = 0;
            while x < g.out_w {
                let n = (g.out_w - x).min(V::LANES);
                let p = args.output.add(x);
                store_n(activate(load_n::<V>(p, n), activation), p, n);
                x += n;
            }
        }
    }
}

/// `max(acc, x)` with a NaN in either winning, or `acc + x`.
///
/// # Safety
/// The target-feature contract.
#[inline(always)]
unsafe fn reduce<V: SimdMath>(acc: V, x: V, max: bool) -> V {
    // SAFETY: register arithmetic under the caller's contract.
    unsafe {
        if max {
            // `max` returns `acc` if either is NaN: a NaN in `acc` stays,
            // and a NaN in `x` is taken by the select.
            V::select(x.is_nan(), x, x.max(acc))
        } else {
            acc.add(x)
        }
    }
}

/// Pools `NV` vectors of channels starting at `c` (the last vector holds
/// `last` valid lanes) over `window`, and stores them at `out`.
///
/// # Safety
/// The window's taps inside the input; channels `c .. c + (NV-1)·LANES +
/// last` inside `g.channels`; `out` valid for as many writes; the
/// target-feature contract.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pixel<V: SimdMath, const NV: usize>(
    input: *const f32,
    g: &Pool2dGeometry,
    window: &Window,
    c: usize,
    last: usize,
    mode: Mode,
    divisor: usize,
    activation: Activation,
    out: *mut f32,
) {
    let lanes = |v: usize| if v + 1 == NV { last } else { V::LANES };
    // SAFETY: every load is a tap inside the input at channels inside
    // `0..channels`; the contract is the caller's.
    unsafe {
        let mut acc: [V; NV];
        if mode == Mode::Max {
            acc = [V::splat(f32::NEG_INFINITY); NV];
            for (iy, ix) in window.taps() {
                let p = input.add((iy * g.in_w + ix) * g.channels + c);
                for (v, acc) in acc.iter_mut().enumerate() {
                    let x = load_n::<V>(p.add(v * V::LANES), lanes(v));
                    // `max` returns `acc` if either is NaN: a NaN in `acc`
                    // stays, and a NaN in `x` is taken by the select.
                    *acc = V::select(x.is_nan(), x, x.max(*acc));
                }
            }
        } else {
            acc = [V::zero(); NV];
            for (iy, ix) in window.taps() {
                let p = input.add((iy * g.in_w + ix) * g.channels + c);
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = acc.add(load_n::<V>(p.add(v * V::LANES), lanes(v)));
                }
            }
            if window.is_empty() || divisor == 0 {
                acc = [V::zero(); NV];
            } else {
                let d = V::splat(divisor as f32);
                for acc in acc.iter_mut() {
                    *acc = acc.div(d);
                }
            }
        }
        for (v, acc) in acc.into_iter().enumerate() {
            store_n(activate(acc, activation), out.add(v * V::LANES), lanes(v));
        }
    }
}

/// Max pooling: see [`MaxPoolSpec`].
#[derive(Clone, Debug)]
pub struct MaxPoolOp {
    spec: MaxPoolSpec,
    pooling: Pooling,
}

impl MaxPoolOp {
    /// The operator for `spec`; refused if the spec is inconsistent.
    pub fn new(spec: MaxPoolSpec) -> Result<MaxPoolOp, OpError> {
        let pooling = Pooling::new(spec.geometry, Mode::Max, spec.activation, spec.layout)?;
        Ok(MaxPoolOp { spec, pooling })
    }

    /// The spec.
    pub fn spec(&self) -> &MaxPoolSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// Pools `batch` samples stored as `spec.layout` says.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        self.pooling.run(ctx, batch, input, output)
    }
}

/// Average pooling: see [`AvgPoolSpec`].
#[derive(Clone, Debug)]
pub struct AvgPoolOp {
    spec: AvgPoolSpec,
    pooling: Pooling,
}

impl AvgPoolOp {
    /// The operator for `spec`; refused if the spec is inconsistent.
    pub fn new(spec: AvgPoolSpec) -> Result<AvgPoolOp, OpError> {
        let mode = Mode::Avg {
            count_include_pad: spec.count_include_pad,
        };
        let pooling = Pooling::new(spec.geometry, mode, spec.activation, spec.layout)?;
        Ok(AvgPoolOp { spec, pooling })
    }

    /// The spec.
    pub fn spec(&self) -> &AvgPoolSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// Pools `batch` samples stored as `spec.layout` says.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        self.pooling.run(ctx, batch, input, output)
    }
}

/// Adaptive average pooling: see [`AdaptiveAvgPoolSpec`].
#[derive(Clone, Debug)]
pub struct AdaptiveAvgPoolOp {
    spec: AdaptiveAvgPoolSpec,
    pooling: Pooling,
}

impl AdaptiveAvgPoolOp {
    /// The operator for `spec`; refused if a size is 0 or overflows.
    pub fn new(spec: AdaptiveAvgPoolSpec) -> Result<AdaptiveAvgPoolOp, OpError> {
        if spec.input.contains(&0) || spec.output.contains(&0) {
            return Err(OpError::Spec(format!(
                "adaptive pooling {spec:?}: sizes must be at least 1"
            )));
        }
        let [in_h, in_w] = spec.input;
        let [out_h, out_w] = spec.output;
        // The largest window (for the overflow checks of `Pooling::new`).
        let kernel = [in_h.div_ceil(out_h) + 1, in_w.div_ceil(out_w) + 1];
        let geometry = Pool2dGeometry {
            batch: 1,
            channels: spec.channels,
            in_h,
            in_w,
            out_h,
            out_w,
            kernel,
            stride: [in_h.div_ceil(out_h), in_w.div_ceil(out_w)],
            dilation: [1, 1],
            padding: [0, 0],
        };
        let pooling = Pooling::new(geometry, Mode::Adaptive, Activation::Identity, Layout::Nhwc)?;
        // `adaptive_window` multiplies `(o + 1) · len`.
        if out_h.checked_mul(in_h).is_none() || out_w.checked_mul(in_w).is_none() {
            return Err(OpError::Spec(format!(
                "adaptive pooling {spec:?}: sizes overflow"
            )));
        }
        Ok(AdaptiveAvgPoolOp { spec, pooling })
    }

    /// The spec.
    pub fn spec(&self) -> &AdaptiveAvgPoolSpec {
        &self.spec
    }

    /// Floats of scratch `run` needs: none.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        0
    }

    /// Pools `batch` samples stored as `spec.layout` says.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), OpError> {
        self.pooling.run(ctx, batch, input, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layout::testing::*;
    use crate::reference;
    use crate::tier::Kernels;

    /// Every combination the tests sweep: `(in, kernel, stride, pad, dilation, ceil_mode)`
    /// along one axis; output size by PyTorch's rule.
    fn out_len(
        len: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
        ceil_mode: bool,
    ) -> Option<usize> {
        let span = dilation * (kernel - 1) + 1;
        let padded = len + 2 * pad;
        if padded < span {
            return None;
        }
        let mut out = if ceil_mode {
            (padded - span).div_ceil(stride) + 1
        } else {
            (padded - span) / stride + 1
        };
        // PyTorch drops a last window that starts in the right padding.
        if ceil_mode && (out - 1) * stride >= len + pad {
            out -= 1;
        }
        Some(out)
    }

    fn geometry(
        channels: usize,
        input: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Option<Pool2dGeometry> {
        Some(Pool2dGeometry {
            batch: 1,
            channels,
            in_h: input[0],
            in_w: input[1],
            out_h: out_len(
                input[0],
                kernel[0],
                stride[0],
                pad[0],
                dilation[0],
                ceil_mode,
            )?,
            out_w: out_len(
                input[1],
                kernel[1],
                stride[1],
                pad[1],
                dilation[1],
                ceil_mode,
            )?,
            kernel,
            stride,
            dilation,
            padding: pad,
        })
    }

    /// Runs `op` on NHWC data made from the NCHW `x`, returns NCHW.
    fn run_nhwc(
        ctx: &Context,
        batch: usize,
        in_shape: [usize; 3],
        out_shape: [usize; 3],
        x: &[f32],
        run: impl Fn(&Context, &[f32], &mut [f32]) -> Result<(), OpError>,
    ) -> Vec<f32> {
        let input = to_nhwc(batch, in_shape, x);
        let mut output = vec![f32::NAN; batch * out_shape.iter().product::<usize>()];
        run(ctx, &input, &mut output).unwrap();
        to_nchw(batch, out_shape, &output)
    }

    fn check_geometry(kernels: &'static Kernels, g: Pool2dGeometry, batch: usize, x: &[f32]) {
        let in_shape = [g.channels, g.in_h, g.in_w];
        let out_shape = [g.channels, g.out_h, g.out_w];
        let full = Pool2dGeometry { batch, ..g };
        let ctx = Context::with(kernels, 1);
        let what = format!("{} {g:?} batch {batch}", kernels.tier());

        let max = MaxPoolOp::new(MaxPoolSpec {
            geometry: g,
            activation: Activation::Identity,
            layout: Layout::Nhwc,
        })
        .unwrap();
        let mut expected = vec![0.0; full.output_len()];
        reference::max_pool2d(&full, x, &mut expected);
        let actual = run_nhwc(&ctx, batch, in_shape, out_shape, x, |ctx, i, o| {
            max.run(ctx, batch, i, o)
        });
        // Max pooling does no arithmetic: exact, in either layout.
        let exact = |actual: &[f32]| {
            actual
                .iter()
                .zip(&expected)
                .all(|(a, e)| a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan()))
        };
        assert!(exact(&actual), "max {what}");
        let planar = planar_supported(&g).then(|| {
            MaxPoolOp::new(MaxPoolSpec {
                layout: Layout::Nchw,
                ..*max.spec()
            })
            .unwrap()
        });
        if let Some(planar) = &planar {
            let mut actual = vec![f32::NAN; expected.len()];
            planar.run(&ctx, batch, x, &mut actual).unwrap();
            assert!(exact(&actual), "planar max {what}");
        }

        if g.dilation == [1, 1] {
            for count_include_pad in [false, true] {
                let avg = AvgPoolOp::new(AvgPoolSpec {
                    geometry: g,
                    count_include_pad,
                    activation: Activation::Identity,
                    layout: Layout::Nhwc,
                })
                .unwrap();
                reference::avg_pool2d(&full, count_include_pad, x, &mut expected);
                let actual = run_nhwc(&ctx, batch, in_shape, out_shape, x, |ctx, i, o| {
                    avg.run(ctx, batch, i, o)
                });
                let window = (g.kernel[0] * g.kernel[1]) as f32;
                assert_close(
                    &actual,
                    &expected,
                    window * 1.2e-7,
                    &format!("avg pad {count_include_pad} {what}"),
                );
                let planar = AvgPoolOp::new(AvgPoolSpec {
                    layout: Layout::Nchw,
                    ..*avg.spec()
                })
                .unwrap();
                let mut actual = vec![f32::NAN; expected.len()];
                planar.run(&ctx, batch, x, &mut actual).unwrap();
                assert_close(
                    &actual,
                    &expected,
                    window * 1.2e-7,
                    &format!("planar avg pad {count_include_pad} {what}"),
                );
            }
        }
    }

    #[test]
    fn every_pooling_parameter_combination_matches_the_reference() {
        let mut cases = 0;
        for kernels in tiers() {
            for channels in [1, 3, 17, 33] {
                for (input, kernel, stride, pad, dilation) in [
                    ([7, 9], [3, 3], [2, 2], [1, 1], [1, 1]),
                    ([6, 6], [3, 3], [2, 2], [1, 1], [1, 1]),
                    ([5, 8], [2, 3], [2, 1], [0, 1], [1, 1]),
                    ([8, 7], [3, 2], [3, 2], [1, 1], [2, 1]),
                    ([9, 9], [3, 3], [1, 2], [1, 0], [2, 3]),
                    ([5, 6], [4, 3], [3, 3], [2, 1], [1, 1]),
                    ([1, 5], [1, 2], [1, 2], [0, 0], [1, 1]),
                    ([4, 4], [1, 1], [2, 2], [0, 0], [1, 1]),
                    ([3, 13], [2, 5], [2, 4], [1, 2], [1, 1]),
                    // Planar rows of several chunks of `PLANAR_SPAN` columns.
                    ([3, 1100], [3, 3], [2, 2], [1, 1], [1, 1]),
                    ([2, 700], [2, 7], [1, 1], [1, 3], [1, 40]),
                ] {
                    for ceil_mode in [false, true] {
                        let Some(g) =
                            geometry(channels, input, kernel, stride, pad, dilation, ceil_mode)
                        else {
                            continue;
                        };
                        for batch in [1, 3] {
                            let x = values(batch * channels * input[0] * input[1], cases as u64);
                            check_geometry(kernels, g, batch, &x);
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 100);
    }

    #[test]
    fn ceil_mode_clips_and_drops_windows_like_pytorch() {
        // PyTorch: avg_pool2d(ones(6, 6), 3, 2, 1, ceil_mode=True) has a
        // last window clipped to the padded input (divisor 6 at the edges,
        // 4 in the corner), and max_pool2d over a 1x5 row keeps a last
        // window of one element.
        let g = geometry(1, [6, 6], [3, 3], [2, 2], [1, 1], [1, 1], true).unwrap();
        assert_eq!((g.out_h, g.out_w), (4, 4));
        for kernels in tiers() {
            let ctx = Context::with(kernels, 1);
            let avg = AvgPoolOp::new(AvgPoolSpec {
                geometry: g,
                count_include_pad: true,
                activation: Activation::Identity,
                layout: Layout::Nhwc,
            })
            .unwrap();
            let mut out = [0.0; 16];
            avg.run(&ctx, 1, &[1.0; 36], &mut out).unwrap();
            assert_eq!(
                [out[0], out[3], out[12], out[15]],
                [4.0 / 9.0, 2.0 / 6.0, 2.0 / 6.0, 0.25]
            );
            let g = geometry(1, [1, 5], [1, 2], [1, 2], [0, 0], [1, 1], true).unwrap();
            let max = MaxPoolOp::new(MaxPoolSpec {
                geometry: g,
                activation: Activation::Identity,
                layout: Layout::Nhwc,
            })
            .unwrap();
            let mut out = [0.0; 3];
            max.run(&ctx, 1, &[1.0, 0.0, -1.0, -2.0, -9.0], &mut out)
                .unwrap();
            assert_eq!(out, [1.0, -1.0, -9.0]);
        }
    }

    #[test]
    fn max_pool_propagates_nan_and_ignores_padding() {
        // 2 channels over 1x4: channel 0 has a NaN first, channel 1 last;
        // windows of 2 with padding 1: [pad, x0], [x1, x2], [x3, pad].
        let g = geometry(2, [1, 4], [1, 2], [1, 2], [0, 1], [1, 1], false).unwrap();
        let input = [f32::NAN, -5.0, -1.0, -4.0, -2.0, -3.0, -7.0, f32::NAN];
        for kernels in tiers() {
            let max = MaxPoolOp::new(MaxPoolSpec {
                geometry: g,
                activation: Activation::Identity,
                layout: Layout::Nhwc,
            })
            .unwrap();
            let mut out = [0.0; 6];
            max.run(&Context::with(kernels, 1), 1, &input, &mut out)
                .unwrap();
            assert!(out[0].is_nan(), "{}", kernels.tier());
            assert_eq!(&out[1..5], &[-5.0, -1.0, -3.0, -7.0]);
            assert!(out[5].is_nan(), "{}", kernels.tier());
        }
    }

    #[test]
    fn adaptive_pooling_matches_the_reference() {
        for kernels in tiers() {
            for channels in [1, 3, 17, 33, 512] {
                for (input, output) in [
                    ([7, 7], [1, 1]),
                    ([5, 7], [3, 2]),
                    ([6, 6], [3, 3]),
                    ([2, 3], [3, 4]),
                    ([10, 1], [4, 1]),
                ] {
                    for batch in [1, 3] {
                        if channels == 512 && input != [7, 7] {
                            continue;
                        }
                        let x = values(batch * channels * input[0] * input[1], 7);
                        let spec = AdaptiveAvgPoolSpec {
                            channels,
                            input,
                            output,
                        };
                        let op = AdaptiveAvgPoolOp::new(spec).unwrap();
                        let mut expected = vec![0.0; batch * channels * output[0] * output[1]];
                        reference::adaptive_avg_pool2d(
                            [batch, channels, input[0], input[1]],
                            output,
                            &x,
                            &mut expected,
                        );
                        let in_shape = [channels, input[0], input[1]];
                        let out_shape = [channels, output[0], output[1]];
                        let actual = run_nhwc(
                            &Context::with(kernels, 1),
                            batch,
                            in_shape,
                            out_shape,
                            &x,
                            |ctx, i, o| op.run(ctx, batch, i, o),
                        );
                        let window =
                            (input[0].div_ceil(output[0]) + 1) * (input[1].div_ceil(output[1]) + 1);
                        assert_close(
                            &actual,
                            &expected,
                            window as f32 * 1.2e-7,
                            &format!("{} {spec:?}", kernels.tier()),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fused_activation_and_thread_counts_are_bit_identical() {
        let g = geometry(64, [23, 21], [3, 3], [2, 2], [1, 1], [1, 1], false).unwrap();
        let batch = 3;
        let x = values(batch * 64 * 23 * 21, 9);
        // Either layout: the NHWC kernel on reordered data, the planar one
        // on the NCHW planes.
        for (layout, input) in [
            (Layout::Nhwc, to_nhwc(batch, [64, 23, 21], &x)),
            (Layout::Nchw, x.clone()),
        ] {
            for kernels in tiers() {
                let max = MaxPoolOp::new(MaxPoolSpec {
                    geometry: g,
                    activation: Activation::Relu,
                    layout,
                })
                .unwrap();
                let avg = AvgPoolOp::new(AvgPoolSpec {
                    geometry: g,
                    count_include_pad: false,
                    activation: Activation::Sigmoid,
                    layout,
                })
                .unwrap();
                let mut plain = vec![0.0; batch * g.output_len()];
                AvgPoolOp::new(AvgPoolSpec {
                    activation: Activation::Identity,
                    layout,
                    ..*avg.spec()
                })
                .unwrap()
                .run(&Context::with(kernels, 1), batch, &input, &mut plain)
                .unwrap();
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for ctx in contexts(kernels) {
                    let (mut a, mut b) = (vec![0.0; plain.len()], vec![0.0; plain.len()]);
                    max.run(&ctx, batch, &input, &mut a).unwrap();
                    avg.run(&ctx, batch, &input, &mut b).unwrap();
                    assert!(a.iter().all(|&y| y >= 0.0));
                    let sigmoid: Vec<f32> = plain
                        .iter()
                        .map(|&y| reference::activation_value(Activation::Sigmoid, y))
                        .collect();
                    assert_close(&b, &sigmoid, 3e-7, "fused sigmoid");
                    match &first {
                        None => first = Some((a, b)),
                        Some((a0, b0)) => assert!(
                            a == *a0 && b == *b0,
                            "{layout:?} {} threads {}",
                            kernels.tier(),
                            ctx.threads()
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn bad_specs_and_lengths_are_errors() {
        let g = geometry(2, [4, 4], [2, 2], [2, 2], [0, 0], [1, 1], false).unwrap();
        let max = |g| {
            MaxPoolOp::new(MaxPoolSpec {
                geometry: g,
                activation: Activation::Identity,
                layout: Layout::Nhwc,
            })
        };
        assert!(max(Pool2dGeometry { batch: 2, ..g }).is_err());
        assert!(max(Pool2dGeometry {
            stride: [0, 1],
            ..g
        })
        .is_err());
        assert!(max(Pool2dGeometry {
            kernel: [1, 0],
            ..g
        })
        .is_err());
        assert!(max(Pool2dGeometry {
            channels: usize::MAX,
            ..g
        })
        .is_err());
        assert!(max(Pool2dGeometry {
            out_h: usize::MAX,
            ..g
        })
        .is_err());
        assert!(max(Pool2dGeometry {
            stride: [usize::MAX, 1],
            ..g
        })
        .is_err());
        let avg = AvgPoolOp::new(AvgPoolSpec {
            geometry: Pool2dGeometry {
                dilation: [2, 1],
                ..g
            },
            count_include_pad: true,
            activation: Activation::Identity,
            layout: Layout::Nhwc,
        });
        assert!(avg.is_err());
        assert!(AdaptiveAvgPoolOp::new(AdaptiveAvgPoolSpec {
            channels: 1,
            input: [0, 1],
            output: [1, 1]
        })
        .is_err());
        assert!(AdaptiveAvgPoolOp::new(AdaptiveAvgPoolSpec {
            channels: 1,
            input: [1, 1],
            output: [1, 0]
        })
        .is_err());
        let op = max(g).unwrap();
        let ctx = Context::with(crate::kernels(), 1);
        assert_eq!(
            op.run(&ctx, 1, &[0.0; 31], &mut [0.0; 8]),
            Err(OpError::Length {
                what: "pooling input",
                len: 31,
                expected: 32
            })
        );
        assert!(op.run(&ctx, 1, &[0.0; 32], &mut [0.0; 9]).is_err());
        // A geometry with windows wholly outside the input (not one PyTorch
        // makes) is still safe: -inf for max, 0 for average.
        let odd = Pool2dGeometry {
            out_h: 4,
            out_w: 4,
            ..g
        };
        let mut out = [0.0; 32];
        max(odd)
            .unwrap()
            .run(&ctx, 1, &[1.0; 32], &mut out)
            .unwrap();
        assert_eq!(out[31], f32::NEG_INFINITY);
        assert_eq!(out[0], 1.0);
    }

    #[test]
    fn window_helpers() {
        // o = 0, stride 2, dilation 2, pad 3, kernel 4, len 5: coordinates -3, -1, 1, 3.
        assert_eq!(valid_taps(0, 2, 2, 3, 4, 5), 2..4);
        // Past the end: o = 3, stride 2, pad 0, kernel 2, len 6: coordinates 6, 7.
        assert!(valid_taps(3, 2, 1, 0, 2, 6).is_empty());
        assert_eq!(valid_taps(1, 1, 1, 1, 3, 3), 0..3);
        assert_eq!(avg_window(3, 2, 3, 1, 6), (5..6, 2));
        assert_eq!(adaptive_window(1, 5, 3), 1..4);
        assert_eq!(adaptive_window(2, 2, 3), 1..2);
    }
}
