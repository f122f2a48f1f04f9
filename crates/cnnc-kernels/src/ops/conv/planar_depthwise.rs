//! [`Algorithm::PlanarDepthwise`](super::Algorithm::PlanarDepthwise): a
//! depthwise convolution with channel multiplier 1 whose input and output
//! are **NCHW planes** — the form of a depthwise layer that reads the
//! network's input, chosen by the execution plan (never by
//! [`Algorithm::choose`](super::Algorithm::choose)), so that the network
//! need not reorder its input first; it has no residual.
//!
//! **Kernel.** Vectorized along output columns, accumulators in registers:
//! for a block of outputs whose every tap lies inside the input row, each
//! kernel row inside the input and each column tap adds `w · x` to the
//! block with a fused multiply-add, reading the input plane directly
//! (stride 1: one vector per tap; stride 2: the block's `2·lanes - 1`
//! stride-1 positions in two vectors, then their even lanes); the block
//! starts from the bias and ends with the activation. The few outputs
//! whose window crosses the left or right edge (and every output at a
//! stride above 2) take the same sums one at a time, skipping taps in the
//! padding.
//!
//! **Constants.** PyTorch's `[C, 1, kh, kw]` weights as they are, then the
//! `[C]` bias.
//!
//! **Threads.** Output rows of all planes of all samples are cut into runs.

use super::{OpError, RunArgs, Sizes, PARALLEL_MIN_MACS};
use crate::geometry::Conv2dGeometry;
use crate::ops::elementwise::{activate, load_n, store_n, tier_table, SimdMath};
use crate::threads::{part, Disjoint};
use crate::Activation;

/// Whether [`Algorithm::PlanarDepthwise`](super::Algorithm::PlanarDepthwise)
/// computes `g`: one input channel per output channel.
pub fn planar_depthwise_supported(g: &Conv2dGeometry) -> bool {
    g.groups == g.in_channels && g.out_channels == g.in_channels
}

/// Floats of the constants.
pub(super) fn constants_len(
    g: &Conv2dGeometry,
    sizes: &Sizes,
    has_bias: bool,
) -> Result<usize, OpError> {
    g.out_channels
        .checked_mul(sizes.taps + usize::from(has_bias))
        .ok_or_else(super::too_large)
}

/// Copies the PyTorch weight `[C, 1, kh, kw]` and the bias into `out`
/// ([`constants_len`] floats).
pub(super) fn pack(weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    out[..weight.len()].copy_from_slice(weight);
    if let Some(bias) = bias {
        out[weight.len()..][..bias.len()].copy_from_slice(bias);
    }
}

/// The planar layer (no state beyond the spec).
#[derive(Debug)]
pub(super) struct Plan;

/// One output row of one plane.
struct RowArgs<'a> {
    g: &'a Conv2dGeometry,
    /// The input plane.
    input: *const f32,
    /// The plane's `kh · kw` weights.
    weight: *const f32,
    bias: f32,
    activation: Activation,
    oy: usize,
    /// The output row (`out_w` floats).
    output: *mut f32,
}

struct PlanarKernels {
    plane: unsafe fn(&RowArgs<'_>),
}

tier_table! {
    mod planar_tiers for PlanarKernels {
        plane: planar_depthwise_plane::<V>(args: &RowArgs<'_>);
    }
}

/// Floats of the zero-padded copy of a plane (larger planes are padded row
/// by row, per output row).
const PLANE: usize = 8192;

impl Plan {
    /// Runs the layer on NCHW `args.input` into NCHW `output` (lengths
    /// checked by the caller; `args.residual` is `None`).
    pub fn run(&self, args: &RunArgs<'_>, output: &mut [f32]) -> Result<(), OpError> {
        // `check_spec` refused a residual and other geometries.
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let channels = g.out_channels;
        let (plane_len, out_len) = (g.in_h * g.in_w, g.out_h * g.out_w);
        let planes = args.batch * channels;
        let macs = sizes.macs.saturating_mul(args.batch as u64);
        let threads = args.ctx.threads();
        let tasks = if threads <= 1 || macs < PARALLEL_MIN_MACS / 4 {
            1
        } else {
            threads.saturating_mul(4).min(planes).max(1)
        };
        let bias = |c: usize| {
            if args.spec.has_bias {
                args.constants[channels * sizes.taps + c]
            } else {
                0.0
            }
        };
        let kernel = planar_tiers::table(args.ctx.kernels()).plane;
        let output = Disjoint::new(output);
        args.ctx.parallel_for(tasks, |task| {
            for plane in part(planes, tasks, 1, task) {
                let c = plane % channels;
                let input = &args.input[plane * plane_len..(plane + 1) * plane_len];
                let weight = &args.constants[c * sizes.taps..(c + 1) * sizes.taps];
                // SAFETY: output plane `plane` belongs to this task only.
                let out = unsafe { output.part(plane * out_len..(plane + 1) * out_len) };
                let plane_args = RowArgs {
                    g,
                    input: input.as_ptr(),
                    weight: weight.as_ptr(),
                    bias: bias(c),
                    activation: args.spec.activation,
                    oy: 0,
                    output: out.as_mut_ptr(),
                };
                // SAFETY: one plane, its weights and its output plane of
                // the checked geometry; the kernel reads only inside the
                // plane. The table is of a tier this CPU has.
                unsafe { kernel(&plane_args) };
            }
        });
        Ok(())
    }
}

/// Output vectors computed together: independent FMA chains that hide
/// the FMA latency (one chain ran at a quarter of the FMA rate).
const BLOCKS: usize = 4;

/// Kernel rows inside the input beyond which a row is computed output by
/// output ([`planar_depthwise_one`]).
const MAX_ROWS: usize = 8;

/// Floats of one zero-padded copy of an input row (wider rows are computed
/// output by output).
const EDGE: usize = 1024;

/// One plane (`args.output` the output plane, `args.oy` unused): padded
/// once into a stack copy when it fits, every output row then reads the
/// copy; else row by row.
///
/// # Safety
/// `args` as [`Plan::run`] builds it; the target-feature contract.
#[inline(always)]
unsafe fn planar_depthwise_plane<V: SimdMath>(args: &RowArgs<'_>) {
    let g = args.g;
    let stride = g.stride[1];
    let reach = (g.kernel[1] - 1) * g.dilation[1];
    let width = (g.out_w - 1) * stride + reach + 1;
    let row_args = |oy: usize| RowArgs {
        oy,
        // In the plane: `oy < out_h`.
        output: args.output.wrapping_add(oy * g.out_w),
        ..*args
    };
    if stride > 2 || g.kernel[0] > MAX_ROWS || g.in_h.saturating_mul(width) > PLANE {
        for oy in 0..g.out_h {
            // SAFETY: forwarded, one output row of the plane.
            unsafe { planar_depthwise_row::<V>(&row_args(oy)) };
        }
        return;
    }
    let mut padded = core::mem::MaybeUninit::<[f32; PLANE]>::uninit();
    let padded = padded.as_mut_ptr().cast::<f32>();
    // SAFETY: the copy's `in_h` rows of `width ≤ PLANE / in_h` floats are
    // written whole before the groups read them; input reads stay inside
    // the plane, output writes inside the output plane. The contract is
    // the caller's.
    unsafe {
        for iy in 0..g.in_h {
            pad_row::<V>(
                g,
                args.input.add(iy * g.in_w),
                padded.add(iy * width),
                width,
            );
        }
        for oy in 0..g.out_h {
            let mut rows = [(0usize, 0usize); MAX_ROWS];
            let mut starts = [core::ptr::null::<f32>(); MAX_ROWS];
            let mut count = 0;
            for ky in 0..g.kernel[0] {
                if let Some(iy) = g.input_row(oy, ky) {
                    rows[count] = (ky, iy);
                    starts[count] = padded.add(iy * width);
                    count += 1;
                }
            }
            planar_depthwise_padded_row::<V>(&row_args(oy), &rows[..count], &starts);
        }
    }
}

/// Writes input row `from` zero-padded into `to` (`width` floats): the
/// left padding, the input columns a window reaches, zeros to the width.
///
/// # Safety
/// `from` readable for `in_w` floats, `to` writable for `width`; the
/// target-feature contract.
#[inline(always)]
unsafe fn pad_row<V: SimdMath>(g: &Conv2dGeometry, from: *const f32, to: *mut f32, width: usize) {
    // Input columns `0..inside` land at `lead..`.
    let lead = g.padding[1].min(width);
    let inside = g.in_w.min(width - lead);
    // SAFETY: reads below `inside ≤ in_w`, writes below `width`.
    unsafe {
        for t in (0..lead).chain(lead + inside..width) {
            *to.add(t) = 0.0;
        }
        let mut x = 0;
        while x < inside {
            let n = (inside - x).min(V::LANES);
            store_n(load_n::<V>(from.add(x), n), to.add(lead + x), n);
            x += n;
        }
    }
}

/// One output row from padded input rows: `starts[i]` is kernel row
/// `rows[i]`'s padded input row, whose column 0 is the first output's
/// first tap; in groups of [`BLOCKS`] vectors.
///
/// # Safety
/// Every `starts[i]` readable for the padded width `(out_w - 1)·stride +
/// reach + 1`; stride 1 or 2; the target-feature contract.
#[inline(always)]
unsafe fn planar_depthwise_padded_row<V: SimdMath>(
    args: &RowArgs<'_>,
    rows: &[(usize, usize)],
    starts: &[*const f32; MAX_ROWS],
) {
    let (out_w, stride) = (args.g.out_w, args.g.stride[1]);
    let group = BLOCKS * V::LANES;
    let mut first = 0;
    while first < out_w {
        let n = group.min(out_w - first);
        let at = starts.map(|start| start.wrapping_add(first * stride));
        // SAFETY: the group reads inside the padded rows (the caller's
        // contract).
        unsafe { planar_depthwise_group::<V>(args, rows, &at, first, n) };
        first += n;
    }
}

/// One output row: see the module documentation.
///
/// # Safety
/// `args` as [`Plan::run`] builds it; the target-feature contract.
#[inline(always)]
unsafe fn planar_depthwise_row<V: SimdMath>(args: &RowArgs<'_>) {
    let g = args.g;
    let stride = g.stride[1];
    let reach = (g.kernel[1] - 1) * g.dilation[1];
    // The kernel rows inside the input, and their input rows.
    let mut rows = [(0usize, 0usize); MAX_ROWS];
    let mut count = 0;
    for ky in 0..g.kernel[0] {
        if let Some(iy) = g.input_row(args.oy, ky) {
            if count == MAX_ROWS {
                count = usize::MAX;
                break;
            }
            rows[count] = (ky, iy);
            count += 1;
        }
    }
    // The padded row every output's window lies in.
    let width = (g.out_w - 1) * stride + reach + 1;
    if count == usize::MAX || stride > 2 || width > EDGE {
        for ox in 0..g.out_w {
            // SAFETY: forwarded.
            unsafe { planar_depthwise_one::<V>(args, ox) };
        }
        return;
    }
    let rows = &rows[..count];
    let mut padded = core::mem::MaybeUninit::<[f32; MAX_ROWS * EDGE]>::uninit();
    let padded = padded.as_mut_ptr().cast::<f32>();
    // SAFETY: each padded row is written over its whole `width ≤ EDGE`
    // floats before the groups read it; input reads stay inside the row;
    // output writes inside the output row. The contract is the caller's.
    unsafe {
        let mut starts = [core::ptr::null::<f32>(); MAX_ROWS];
        for (index, (start, &(_, iy))) in starts.iter_mut().zip(rows).enumerate() {
            let copy = padded.add(index * EDGE);
            pad_row::<V>(g, args.input.add(iy * g.in_w), copy, width);
            *start = copy;
        }
        planar_depthwise_padded_row::<V>(args, rows, &starts);
    }
}

/// Outputs `first .. first + n` (`n ≤ BLOCKS · LANES`) of the row, from
/// `starts[i]`: the input columns of the group's windows in kernel row
/// `rows[i]`, from the first output's first tap on.
///
/// # Safety
/// Every `starts[i]` readable for the group's `(n - 1)·stride + reach + 1`
/// columns; stride 1 or 2; the target-feature contract.
#[inline(always)]
unsafe fn planar_depthwise_group<V: SimdMath>(
    args: &RowArgs<'_>,
    rows: &[(usize, usize)],
    starts: &[*const f32; MAX_ROWS],
    first: usize,
    n: usize,
) {
    let g = args.g;
    let kernel_w = g.kernel[1];
    let (stride, dilation) = (g.stride[1], g.dilation[1]);
    // Outputs of vector `b`.
    let lanes = |b: usize| n.saturating_sub(b * V::LANES).min(V::LANES);
    // SAFETY: reads below the group's width (at stride 2, the `2·lanes -
    // 1` stride-1 positions of each vector); writes inside the row.
    unsafe {
        let bias = V::splat(args.bias);
        let mut low = [bias; BLOCKS];
        let mut high = [bias; BLOCKS];
        for (&(ky, _), &start) in rows.iter().zip(starts) {
            for kx in 0..kernel_w {
                let w = V::splat(*args.weight.add(ky * kernel_w + kx));
                let taps = start.add(kx * dilation);
                for b in 0..BLOCKS {
                    let outputs = lanes(b);
                    if outputs == 0 {
                        continue;
                    }
                    if stride == 1 {
                        let x = load_n::<V>(taps.add(b * V::LANES), outputs);
                        low[b] = x.mul_add(w, low[b]);
                    } else {
                        let positions = 2 * outputs - 1;
                        let at = taps.add(2 * b * V::LANES);
                        let x = load_n::<V>(at, positions.min(V::LANES));
                        low[b] = x.mul_add(w, low[b]);
                        if positions > V::LANES {
                            let x = load_n::<V>(at.add(V::LANES), positions - V::LANES);
                            high[b] = x.mul_add(w, high[b]);
                        }
                    }
                }
            }
        }
        for b in 0..BLOCKS {
            let outputs = lanes(b);
            if outputs == 0 {
                break;
            }
            let value = if stride == 1 {
                low[b]
            } else {
                V::even_lanes(low[b], high[b])
            };
            let out = args.output.add(first + b * V::LANES);
            store_n(activate(value, args.activation), out, outputs);
        }
    }
}

/// Output `ox` of the row alone, with the taps inside the input, as the
/// vector path adds them (bias first, rows then columns, fused
/// multiply-adds). (A function, not a closure: a closure would not inherit
/// the caller's target features, and its intrinsics would not inline.)
///
/// # Safety
/// As [`planar_depthwise_row`].
#[inline(always)]
unsafe fn planar_depthwise_one<V: SimdMath>(args: &RowArgs<'_>, ox: usize) {
    let g = args.g;
    let [kernel_h, kernel_w] = g.kernel;
    // SAFETY: every read is checked inside the plane; the output inside
    // the row. The contract is the caller's.
    unsafe {
        let mut sum = V::splat(args.bias);
        for ky in 0..kernel_h {
            let Some(iy) = g.input_row(args.oy, ky) else {
                continue;
            };
            for kx in 0..kernel_w {
                let Some(ix) = g.input_column(ox, kx) else {
                    continue;
                };
                let x = V::splat(*args.input.add(iy * g.in_w + ix));
                sum = x.mul_add(V::splat(*args.weight.add(ky * kernel_w + kx)), sum);
            }
        }
        store_n(activate(sum, args.activation), args.output.add(ox), 1);
    }
}
