//! [`Algorithm::Depthwise`](super::Algorithm::Depthwise): `groups ==
//! in_channels`, any channel multiplier `m = Cout/Cin`, kernel, stride,
//! dilation and padding. Each output channel `o` reads one input channel,
//! `o / m`, so there is no reduction over channels to feed a GEMM; the layer
//! is memory-bound (about 2 flops per byte moved) and wants a direct kernel
//! that streams NHWC rows once (XNNPACK's `dwconv`).
//!
//! **Kernel.** Vectorized over output channels (16 lanes AVX-512, 8 AVX2 and
//! portable, 1 reference): for each output pixel, blocks of 4 vectors (64
//! channels on AVX-512) accumulate `x[iy, ix, c] · w[ky, kx, c]` over the
//! taps that fall inside the input (the rest is padding and skipped, as the
//! reference does), starting from the bias; then residual add and activation
//! in registers, and one (masked) store. The last block has 1-4 vectors,
//! the last of which may be partial (masked loads and stores). With `m > 1`
//! the input lanes are gathered (`o / m`), which is slow but rare.
//!
//! **Constants.** `[taps][C']` weights, then `[C']` bias, `C'` = `Cout`
//! rounded up to 16 and zero-filled, so weight and bias loads are never
//! partial.
//!
//! **Threads.** Output rows (over all samples) are cut into runs.

use super::{FirstError, OpError, RunArgs, Sizes, PARALLEL_MIN_MACS};
use crate::gemm::microkernel::{prefetch, with_activation, TO_L1};
use crate::gemm::simd::Simd;
use crate::gemm::PANEL;
use crate::geometry::Conv2dGeometry;
use crate::threads::Disjoint;
use crate::tier::Tier;
use crate::Activation;

/// `Cout` rounded up to a multiple of 16.
fn padded_channels(g: &Conv2dGeometry) -> Result<usize, OpError> {
    g.out_channels
        .checked_next_multiple_of(PANEL)
        .ok_or_else(super::too_large)
}

/// Floats of the constants.
pub(super) fn constants_len(
    g: &Conv2dGeometry,
    sizes: &Sizes,
    has_bias: bool,
) -> Result<usize, OpError> {
    padded_channels(g)?
        .checked_mul(sizes.taps + usize::from(has_bias))
        .ok_or_else(super::too_large)
}

/// Packs the PyTorch weight `[Cout, 1, kh, kw]` and bias into `out`
/// (zero-filled, [`constants_len`] floats).
pub(super) fn pack(
    g: &Conv2dGeometry,
    sizes: &Sizes,
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let padded = g.out_channels.next_multiple_of(PANEL);
    let taps = sizes.taps;
    for (o, kernel) in weight.chunks_exact(taps).enumerate() {
        for (tap, &w) in kernel.iter().enumerate() {
            out[tap * padded + o] = w;
        }
    }
    if let Some(bias) = bias {
        out[taps * padded..][..g.out_channels].copy_from_slice(bias);
    }
}

/// The constants' layout.
#[derive(Debug)]
pub(super) struct Plan {
    padded: usize,
    multiplier: usize,
    has_bias: bool,
}

/// A depthwise MAC costs about this many GEMM MACs (one load per FMA:
/// ~50 against ~170 GFLOP/s), so a depthwise layer is split over threads
/// from this many times fewer MACs than [`PARALLEL_MIN_MACS`], i.e. from
/// about the same time. Splitting the small layers pays beyond their own
/// time: run on one core, they read the half of their input that the
/// (split) layer before left in the other core's cache.
const DEPTHWISE_MACS_PER_GEMM_MAC: u64 = 4;

impl Plan {
    /// For a checked geometry with `groups == in_channels`.
    pub fn new(g: &Conv2dGeometry, has_bias: bool) -> Plan {
        Plan {
            padded: g.out_channels.next_multiple_of(PANEL),
            multiplier: g.out_channels / g.in_channels,
            has_bias,
        }
    }

    pub fn run(&self, args: &RunArgs<'_>, output: &mut [f32]) -> Result<(), OpError> {
        let g = &args.spec.geometry;
        let sizes = args.sizes;
        let rows = args.batch * g.out_h;
        let row_len = g.out_w * g.out_channels;
        let macs = sizes.macs.saturating_mul(args.batch as u64);
        let threads = args.ctx.threads();
        let tasks = if threads <= 1 || macs < PARALLEL_MIN_MACS / DEPTHWISE_MACS_PER_GEMM_MAC {
            1
        } else {
            threads.saturating_mul(4).min(rows).max(1)
        };
        let tier = args.ctx.kernels().tier();
        let output = Disjoint::new(output);
        let errors = FirstError::default();
        args.ctx.parallel_for(tasks, |task| {
            let (first, end) = (task * rows / tasks, (task + 1) * rows / tasks);
            // Runs of rows of one sample each.
            let mut row = first;
            while row < end {
                let (sample, oy) = (row / g.out_h, row % g.out_h);
                let run_end = end.min((sample + 1) * g.out_h);
                // SAFETY: the row runs of distinct tasks are disjoint.
                let out = unsafe { output.part(row * row_len..run_end * row_len) };
                let residual = args.residual.map(|r| &r[row * row_len..run_end * row_len]);
                errors.record(self.run_rows(
                    tier,
                    g,
                    args.spec.activation,
                    args.constants,
                    &args.input[sample * sizes.input..][..sizes.input],
                    0,
                    oy..oy + (run_end - row),
                    residual,
                    out,
                ));
                row = run_end;
            }
        });
        errors.into_result()
    }
}

impl Plan {
    /// Computes the output rows `rows` of one sample from a window of its
    /// input: `input` holds the input rows `first_row..first_row + n` (all
    /// the rows those outputs read that exist; the whole sample for
    /// [`Plan::run`], whose tasks call this), `output` and `residual` (when
    /// the spec has one) the output rows `rows`. Single-threaded. Each
    /// output row is computed alone, so a window gives the same bits as the
    /// whole sample; [`super::bottleneck`] runs a layer band by band with it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_rows(
        &self,
        tier: Tier,
        g: &Conv2dGeometry,
        activation: Activation,
        constants: &[f32],
        input: &[f32],
        first_row: usize,
        rows: core::ops::Range<usize>,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<(), OpError> {
        let in_row = g.in_w * g.in_channels;
        let row_len = g.out_w * g.out_channels;
        if in_row == 0 || !input.len().is_multiple_of(in_row) || rows.end > g.out_h {
            return Err(super::spec_error(
                "a depthwise window of rows out of bounds",
            ));
        }
        let in_rows = input.len() / in_row;
        super::check_len("output", output.len(), rows.len() * row_len)?;
        if let Some(residual) = residual {
            super::check_len("residual", residual.len(), rows.len() * row_len)?;
        }
        // The rows the outputs read must all be in the window (those below
        // `first_row` or past its end may only be padding).
        let span = (g.kernel[0] - 1) * g.dilation[0];
        if let Some(first) = rows.clone().next() {
            let lowest = (first * g.stride[0]).saturating_sub(g.padding[0]);
            let highest = ((rows.end - 1) * g.stride[0] + span)
                .saturating_sub(g.padding[0])
                .min(g.in_h.saturating_sub(1));
            if first_row > lowest || highest >= first_row + in_rows {
                return Err(super::spec_error("a depthwise window misses input rows"));
            }
        }
        let taps = g.kernel[0] * g.kernel[1];
        super::check_len(
            "constants",
            constants.len(),
            self.padded * (taps + usize::from(self.has_bias)),
        )?;
        let (weights, bias) = constants.split_at(taps * self.padded);
        let kernel = row_kernel(tier, self.multiplier > 1);
        let scalar_activation = matches!(activation, Activation::Sigmoid | Activation::Tanh);
        for (index, oy) in rows.enumerate() {
            let out_row = &mut output[index * row_len..][..row_len];
            let job = Row {
                input: input.as_ptr(),
                in_w: g.in_w,
                in_h: in_rows,
                in_c: g.in_channels,
                weights: weights.as_ptr(),
                bias: if self.has_bias {
                    bias.as_ptr()
                } else {
                    core::ptr::null()
                },
                padded: self.padded,
                out_c: g.out_channels,
                multiplier: self.multiplier,
                kernel: g.kernel,
                stride: g.stride,
                dilation: g.dilation,
                // Input row `iy` is row `iy - first_row` of the window: as
                // if `first_row` more rows of padding were on top.
                pad: [g.padding[0] + first_row, g.padding[1]],
                out_w: g.out_w,
                oy,
                output: out_row.as_mut_ptr(),
                residual: residual.map_or(core::ptr::null(), |r| r[index * row_len..].as_ptr()),
                activation,
            };
            // SAFETY: the window holds `in_rows` whole input rows, the
            // constants, output and residual rows were checked above;
            // taps outside the window are skipped as padding, and the
            // window covers every real row the outputs read (checked).
            unsafe { kernel(&job) };
            if scalar_activation {
                for y in out_row.iter_mut() {
                    *y = activation.apply(*y);
                }
            }
        }
        Ok(())
    }
}

/// One output row of one sample, as raw pointers (built by `Plan::run`
/// from checked slices).
struct Row {
    /// The sample's input `[H, W, Cin]`.
    input: *const f32,
    in_h: usize,
    in_w: usize,
    in_c: usize,
    /// Packed weights `[taps][padded]`.
    weights: *const f32,
    /// Padded bias `[padded]`, or null.
    bias: *const f32,
    padded: usize,
    out_c: usize,
    multiplier: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Top and left padding.
    pad: [usize; 2],
    out_w: usize,
    oy: usize,
    /// The output row `[OW, Cout]`.
    output: *mut f32,
    /// The residual row `[OW, Cout]`, or null.
    residual: *const f32,
    activation: Activation,
}

/// The type of a tier's row kernel.
type RowFn = unsafe fn(&Row);

/// The row kernel of `tier`, with gathered input lanes when `gather`.
///
/// The x86 entries are only returned for tiers whose [`Kernels`] table
/// exists, which [`crate::tier`] hands out only after detecting the CPU
/// features they need.
///
/// [`Kernels`]: crate::tier::Kernels
fn row_kernel(tier: Tier, gather: bool) -> RowFn {
    match (tier, gather) {
        (Tier::Reference, false) => reference_row::<false>,
        (Tier::Reference, true) => reference_row::<true>,
        #[cfg(target_arch = "x86_64")]
        (Tier::Avx2, false) => avx2_row::<false>,
        #[cfg(target_arch = "x86_64")]
        (Tier::Avx2, true) => avx2_row::<true>,
        #[cfg(target_arch = "x86_64")]
        (Tier::Avx512, false) => avx512_row::<false>,
        #[cfg(target_arch = "x86_64")]
        (Tier::Avx512, true) => avx512_row::<true>,
        (_, false) => portable_row::<false>,
        (_, true) => portable_row::<true>,
    }
}

/// # Safety
/// As [`row`].
unsafe fn reference_row<const GATHER: bool>(job: &Row) {
    // SAFETY: forwarded; scalar code needs no CPU feature.
    unsafe { row::<f32, GATHER>(job) }
}

/// # Safety
/// As [`row`].
unsafe fn portable_row<const GATHER: bool>(job: &Row) {
    // SAFETY: forwarded; `f32x8` needs only the features the crate was
    // compiled for.
    unsafe { row::<wide::f32x8, GATHER>(job) }
}

/// # Safety
/// As [`row`], and the CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_row<const GATHER: bool>(job: &Row) {
    // SAFETY: AVX2 and FMA are enabled here; the rest is forwarded.
    unsafe { row::<core::arch::x86_64::__m256, GATHER>(job) }
}

/// # Safety
/// As [`row`], and the CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_row<const GATHER: bool>(job: &Row) {
    // SAFETY: AVX-512F is enabled here; the rest is forwarded.
    unsafe { row::<core::arch::x86_64::__m512, GATHER>(job) }
}

/// The taps `first..end` along one axis whose input coordinate
/// `out·stride + tap·dilation - pad` lies in `0..in_len`.
#[inline(always)]
fn valid_taps(
    out: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    in_len: usize,
    kernel: usize,
) -> (usize, usize) {
    let origin = out * stride;
    let first = pad.saturating_sub(origin).div_ceil(dilation).min(kernel);
    let end = (in_len + pad)
        .saturating_sub(origin)
        .div_ceil(dilation)
        .clamp(first, kernel);
    (first, end)
}

/// Output pixels computed together by the interior loop: they share each
/// weight load (`1 + 1/PIXELS` loads per FMA instead of 2) and give the FMA
/// units `PIXELS · NV` independent chains.
const PIXELS: usize = 4;

/// The output columns `first..end` whose taps all fall inside the input
/// row (the interior, where every pixel has the full `kx` range).
#[inline(always)]
fn interior_columns(job: &Row) -> (usize, usize) {
    let (stride, pad, out_w) = (job.stride[1], job.pad[1], job.out_w);
    let span = (job.kernel[1] - 1) * job.dilation[1];
    let first = pad.div_ceil(stride).min(out_w);
    // Columns with `ox·stride + span - pad < in_w`.
    let end = match (job.in_w + pad).checked_sub(span + 1) {
        Some(last_origin) => (last_origin / stride + 1).clamp(first, out_w),
        None => first,
    };
    (first, end)
}

/// Computes one output row.
///
/// # Safety
/// The pointers of `job` are valid for the sizes it states (input `in_h ·
/// in_w · in_c`, weights `taps · padded`, bias `padded`, output and
/// residual `out_w · out_c`), `padded ≥ out_c` is a multiple of 16,
/// `out_c == in_c · multiplier`, `multiplier == 1` unless `GATHER`, and the
/// target-feature contract of [`Simd`] holds for `V`.
#[inline(always)]
unsafe fn row<V: Simd, const GATHER: bool>(job: &Row) {
    let ky = valid_taps(
        job.oy,
        job.stride[0],
        job.dilation[0],
        job.pad[0],
        job.in_h,
        job.kernel[0],
    );
    let (interior, interior_end) = interior_columns(job);
    let full = (0, job.kernel[1]);
    // SAFETY: every pixel group lies inside the row, with taps inside the
    // input, as `pixels` requires; the rest is forwarded.
    unsafe {
        for ox in (0..interior).chain(interior_end..job.out_w) {
            let kx = valid_taps(
                ox,
                job.stride[1],
                job.dilation[1],
                job.pad[1],
                job.in_w,
                job.kernel[1],
            );
            pixels::<V, 1, GATHER>(job, ky, kx, ox);
        }
        let mut ox = interior;
        let slide = !GATHER && job.kernel[1] == 3 && job.dilation[1] == 1;
        match job.stride[1] {
            1 if slide => {
                while ox + SLIDE_PIXELS <= interior_end {
                    slide_pixels::<V, SLIDE_PIXELS, 1>(job, ky, ox);
                    ox += SLIDE_PIXELS;
                }
                // Narrow maps (7x7, 14x14) and the rest of wider rows.
                while ox + SLIDE_PIXELS / 2 <= interior_end {
                    slide_pixels::<V, { SLIDE_PIXELS / 2 }, 1>(job, ky, ox);
                    ox += SLIDE_PIXELS / 2;
                }
            }
            2 if slide => {
                while ox + SLIDE_PIXELS <= interior_end {
                    slide_pixels::<V, SLIDE_PIXELS, 2>(job, ky, ox);
                    ox += SLIDE_PIXELS;
                }
                while ox + SLIDE_PIXELS / 2 <= interior_end {
                    slide_pixels::<V, { SLIDE_PIXELS / 2 }, 2>(job, ky, ox);
                    ox += SLIDE_PIXELS / 2;
                }
            }
            _ => {}
        }
        while ox + PIXELS <= interior_end {
            pixels::<V, PIXELS, GATHER>(job, ky, full, ox);
            ox += PIXELS;
        }
        for ox in ox..interior_end {
            pixels::<V, 1, GATHER>(job, ky, full, ox);
        }
    }
}

/// Output pixels of one [`slide_block`] (half as many for the rest of a
/// row).
const SLIDE_PIXELS: usize = 8;

/// All output channels of the `P` interior pixels from `ox0` of a layer
/// with 3 kernel columns, column dilation 1 and column stride `S`: blocks
/// of 2 vectors where 32 registers allow it (AVX-512), else 1.
///
/// # Safety
/// As [`row`], without `GATHER`; the pixels are interior (all their column
/// taps inside the input).
#[inline(always)]
unsafe fn slide_pixels<V: Simd, const P: usize, const S: usize>(
    job: &Row,
    ky: (usize, usize),
    ox0: usize,
) {
    let lanes = V::LANES;
    let mut c = 0;
    // SAFETY: every block lies inside the row, as `slide_block` requires.
    unsafe {
        if lanes >= 16 {
            while c + lanes < job.out_c {
                slide_block::<V, P, 2, S>(job, ky, ox0, c);
                c += 2 * lanes;
            }
        }
        while c < job.out_c {
            slide_block::<V, P, 1, S>(job, ky, ox0, c);
            c += lanes;
        }
    }
}

/// `NV` vectors of output channels from `c0` for the `P` interior pixels
/// from `ox0`, 3 kernel columns, column stride `S`: each input column of a
/// kernel row is loaded once and fed to every pixel whose window holds it
/// (3 at stride 1), `(P - 1)·S + 3` loads for `3·P` FMAs per vector instead
/// of `3·P`. Each output still adds its taps in `(ky, kx)` order, as
/// [`block`] does, so both give the same bits.
///
/// # Safety
/// As [`block`], with `kx` the full 3 columns.
#[inline(always)]
unsafe fn slide_block<V: Simd, const P: usize, const NV: usize, const S: usize>(
    job: &Row,
    ky: (usize, usize),
    ox0: usize,
    c0: usize,
) {
    let lanes = V::LANES;
    let left = job.out_c - c0;
    // SAFETY: as in `block`: full weight and bias loads stay inside the
    // padded channels, input accesses within the `left` valid channels of
    // interior columns of rows inside the input.
    unsafe {
        let mut acc = start::<V, P, NV>(job, c0);
        for ky in ky.0..ky.1 {
            let iy = job.oy * job.stride[0] + ky * job.dilation[0] - job.pad[0];
            let input_row = job.input.add(iy * job.in_w * job.in_c);
            let first = input_row.add((ox0 * S - job.pad[1]) * job.in_c + c0);
            let w = job.weights.add(ky * 3 * job.padded + c0);
            let weights: [[V; NV]; 3] = core::array::from_fn(|kx| {
                core::array::from_fn(|v| V::load(w.add(kx * job.padded + v * lanes)))
            });
            let column = |j: usize| -> [V; NV] {
                let column = first.add(j * job.in_c);
                core::array::from_fn(|v| load_edge::<V>(column.add(v * lanes), left - v * lanes))
            };
            if S == 2 {
                // Written per pixel: LLVM does not unroll the general loop
                // below at stride 2 (17 columns, a modulo per tap) and then
                // kept the accumulators on the stack (35 GFLOP/s). Pixel
                // `p` reads columns `2p`, `2p + 1`, `2p + 2`; the last is
                // the next pixel's first. Same sums in the same order.
                let mut even = column(0);
                for (p, acc) in acc.iter_mut().enumerate() {
                    let (odd, next) = (column(2 * p + 1), column(2 * p + 2));
                    for v in 0..NV {
                        acc[v] = even[v].mul_add(weights[0][v], acc[v]);
                        acc[v] = odd[v].mul_add(weights[1][v], acc[v]);
                        acc[v] = next[v].mul_add(weights[2][v], acc[v]);
                    }
                    even = next;
                }
                continue;
            }
            for j in 0..(P - 1) * S + 3 {
                let x = column(j);
                for (kx, weights) in weights.iter().enumerate() {
                    if j >= kx && (j - kx) % S == 0 && (j - kx) / S < P {
                        let acc = &mut acc[(j - kx) / S];
                        for v in 0..NV {
                            acc[v] = x[v].mul_add(weights[v], acc[v]);
                        }
                    }
                }
            }
        }
        finish::<V, P, NV>(job, acc, ox0, c0);
    }
}

/// All output channels of the `P` pixels `ox0..ox0 + P` of the row, whose
/// valid taps are `ky × kx`, in blocks of 4 vectors and a last block of 1-4
/// (the last vector possibly partial).
///
/// # Safety
/// As [`row`]; the pixels are inside the row and the taps inside the input.
#[inline(always)]
unsafe fn pixels<V: Simd, const P: usize, const GATHER: bool>(
    job: &Row,
    ky: (usize, usize),
    kx: (usize, usize),
    ox0: usize,
) {
    let lanes = V::LANES;
    let mut c = 0;
    // SAFETY: every block lies inside the row (`c + vectors · lanes`
    // rounded to the padded channels), as `block` requires.
    unsafe {
        while job.out_c - c >= 4 * lanes {
            block::<V, P, 4, GATHER>(job, ky, kx, ox0, c);
            c += 4 * lanes;
        }
        match (job.out_c - c).div_ceil(lanes) {
            1 => block::<V, P, 1, GATHER>(job, ky, kx, ox0, c),
            2 => block::<V, P, 2, GATHER>(job, ky, kx, ox0, c),
            3 => block::<V, P, 3, GATHER>(job, ky, kx, ox0, c),
            4 => block::<V, P, 4, GATHER>(job, ky, kx, ox0, c),
            _ => {}
        }
    }
}

/// `NV` vectors of output channels from `c0` for the `P` pixels from
/// `ox0`; the last vector may be partial (`out_c - c0` channels are left).
///
/// # Safety
/// As [`pixels`], with `c0 < out_c` a multiple of `LANES` and
/// `out_c - c0 > (NV - 1) · LANES`.
#[inline(always)]
unsafe fn block<V: Simd, const P: usize, const NV: usize, const GATHER: bool>(
    job: &Row,
    ky: (usize, usize),
    kx: (usize, usize),
    ox0: usize,
    c0: usize,
) {
    let lanes = V::LANES;
    let left = job.out_c - c0;
    let pixel_step = job.stride[1] * job.in_c;
    // SAFETY: full loads of weights and bias stay below `c0 + NV · lanes ≤
    // padded` (the padded channels are a multiple of 16, hence of `lanes`);
    // input, residual and output accesses are limited to the `left` valid
    // channels of each pixel (masked edges); taps are inside the input.
    unsafe {
        let mut acc = start::<V, P, NV>(job, c0);
        for ky in ky.0..ky.1 {
            let iy = job.oy * job.stride[0] + ky * job.dilation[0] - job.pad[0];
            let input_row = job.input.add(iy * job.in_w * job.in_c);
            if P > 1 {
                // The columns the next group of pixels reads last in this
                // kernel row: one group ahead, so that they arrive from L2
                // while this group computes.
                let ix = (ox0 + P) * job.stride[1] + (kx.1 - 1) * job.dilation[1] - job.pad[1];
                let next = input_row.wrapping_add(ix * job.in_c + c0);
                for p in 0..P {
                    for v in 0..NV {
                        prefetch::<TO_L1>(next.wrapping_add(p * pixel_step + v * lanes));
                    }
                }
            }
            for kx in kx.0..kx.1 {
                let ix = ox0 * job.stride[1] + kx * job.dilation[1] - job.pad[1];
                let first = input_row.add(ix * job.in_c);
                let w = job.weights.add((ky * job.kernel[1] + kx) * job.padded + c0);
                let weights: [V; NV] = core::array::from_fn(|v| V::load(w.add(v * lanes)));
                for (p, acc) in acc.iter_mut().enumerate() {
                    let pixel = first.add(p * pixel_step);
                    for v in 0..NV {
                        let x = load_input::<V, GATHER>(
                            pixel,
                            c0 + v * lanes,
                            left - v * lanes,
                            job.multiplier,
                        );
                        acc[v] = x.mul_add(weights[v], acc[v]);
                    }
                }
            }
        }
        finish::<V, P, NV>(job, acc, ox0, c0);
    }
}

/// The starting accumulators of `P` pixels × `NV` vectors of channels from
/// `c0`: the bias, or zero.
///
/// # Safety
/// The bias (when not null) valid for `c0 + NV·LANES` reads (it is padded
/// to whole panels); the target-feature contract of [`Simd`].
#[inline(always)]
unsafe fn start<V: Simd, const P: usize, const NV: usize>(job: &Row, c0: usize) -> [[V; NV]; P] {
    // SAFETY: the caller's contract.
    unsafe {
        if job.bias.is_null() {
            return [[V::zero(); NV]; P];
        }
        let bias: [V; NV] = core::array::from_fn(|v| V::load(job.bias.add(c0 + v * V::LANES)));
        [bias; P]
    }
}

/// The epilogue of [`block`]: residual, activation, (masked) store. Takes
/// the accumulators by value so that they stay in registers in the loop.
///
/// # Safety
/// As [`block`].
#[inline(always)]
unsafe fn finish<V: Simd, const P: usize, const NV: usize>(
    job: &Row,
    acc: [[V; NV]; P],
    ox0: usize,
    c0: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if job.out_c - c0 >= NV * V::LANES {
            with_activation!(V, job.activation, |f| {
                finish_with::<V, P, NV, true>(job, &acc, ox0, c0, f)
            })
        } else {
            with_activation!(V, job.activation, |f| {
                finish_with::<V, P, NV, false>(job, &acc, ox0, c0, f)
            })
        }
    }
}

/// [`finish`] with the activation as `f`, for a block whose vectors are
/// all whole (`FULL`) or whose last vector is partial. Loops to constants,
/// nothing tested per register: LLVM unrolls them and keeps the
/// accumulators in registers (with a run-time trip count or an activation
/// matched per register, it stored them to the stack first).
///
/// # Safety
/// As [`block`], with `FULL` only if `out_c - c0 ≥ NV·LANES`.
#[inline(always)]
unsafe fn finish_with<V: Simd, const P: usize, const NV: usize, const FULL: bool>(
    job: &Row,
    acc: &[[V; NV]; P],
    ox0: usize,
    c0: usize,
    f: impl Fn(V) -> V,
) {
    let lanes = V::LANES;
    let left = job.out_c - c0;
    // SAFETY: as in `block`: the `left` valid channels of pixels inside
    // the row.
    unsafe {
        for (p, acc) in acc.iter().enumerate() {
            let offset = (ox0 + p) * job.out_c + c0;
            for (v, &acc) in acc.iter().enumerate() {
                let valid = if FULL || v + 1 < NV {
                    lanes
                } else {
                    left - v * lanes
                };
                let mut y = acc;
                if !job.residual.is_null() {
                    y = y.add(load_edge::<V>(job.residual.add(offset + v * lanes), valid));
                }
                store_edge(f(y), job.output.add(offset + v * lanes), valid);
            }
        }
    }
}

/// The input lanes of output channels `c..c + LANES` (at most `valid` of
/// them): input channels `c..` directly, or `(c + l) / multiplier` gathered.
///
/// # Safety
/// `pixel` valid for the input channels read; the target-feature contract.
#[inline(always)]
unsafe fn load_input<V: Simd, const GATHER: bool>(
    pixel: *const f32,
    c: usize,
    valid: usize,
    multiplier: usize,
) -> V {
    // SAFETY: forwarded from the caller.
    unsafe {
        if GATHER {
            let mut lanes = [0.0f32; 16];
            for (l, lane) in lanes.iter_mut().enumerate().take(V::LANES.min(valid)) {
                *lane = *pixel.add((c + l) / multiplier);
            }
            V::load(lanes.as_ptr())
        } else {
            load_edge::<V>(pixel.add(c), valid)
        }
    }
}

/// Loads `min(valid, LANES)` values, the rest zero.
///
/// # Safety
/// `p` valid for `min(valid, LANES)` reads, `valid > 0`; the target-feature
/// contract.
#[inline(always)]
unsafe fn load_edge<V: Simd>(p: *const f32, valid: usize) -> V {
    // SAFETY: forwarded from the caller.
    unsafe {
        if valid >= V::LANES {
            V::load(p)
        } else {
            V::load_partial(p, valid)
        }
    }
}

/// Stores `min(valid, LANES)` values.
///
/// # Safety
/// `p` valid for `min(valid, LANES)` writes, `valid > 0`; the
/// target-feature contract.
#[inline(always)]
unsafe fn store_edge<V: Simd>(x: V, p: *mut f32, valid: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if valid >= V::LANES {
            x.store(p)
        } else {
            x.store_partial(p, valid)
        }
    }
}
