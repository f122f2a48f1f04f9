//! 2-D convolution over NHWC activations: [`Conv2dOp`], its algorithms, and
//! the one rule that picks an algorithm from a layer's shape.
//!
//! ```text
//! y[n, oy, ox, o] = act( Σ_{ky, kx, c} x[n, iy, ix, c] · w[o, c, ky, kx] + bias[o] + residual[n, oy, ox, o] )
//! ```
//!
//! with PyTorch's semantics (cross-correlation; the caller has already
//! rotated the kernel of a `flip_kernel` layer), stride, dilation,
//! asymmetric zero padding and groups. Taps that fall into the padding are
//! skipped, as in [`reference::conv2d`](crate::reference::conv2d). Bias,
//! residual and activation are applied in registers before the store.
//!
//! ## Algorithms
//!
//! Each algorithm is one file; [`Algorithm::choose`] is **the** rule, the
//! first row that matches wins:
//!
//! | # | layer | algorithm | why |
//! |---|---|---|---|
//! | 1 | `groups == in_channels > 1` (depthwise, any multiplier) | [`Algorithm::Depthwise`] | one input channel per output: no reduction to feed a GEMM; memory-bound, so a channel-vectorized direct kernel |
//! | 2 | `groups > 1` otherwise | [`Algorithm::Grouped`] | one (indirect) GEMM per group on channel slices |
//! | 3 | 1x1, stride 1, no padding | [`Algorithm::Gemm1x1`] | the NHWC input *is* the GEMM's `A` (M = N·H·W, K = Cin): no copy, no table |
//! | 4 | `in_channels ≤ 4`, `kw > 1`, `dilation_w = 1` (stems: 3→64 7x7/2, LeNet 1→6 5x5) | [`Algorithm::RowIndirect`] | a tap of `Cin` channels is 1-4 k-steps, so the indirect kernel would re-read its row table every few FMAs; whole kernel rows are `kw·Cin` contiguous k-steps (21 for the stem) |
//! | 5 | 3x3, stride 1, dilation 1, ≥ 16 channels in and out, ≥ 9 4x4 output tiles | [`Algorithm::Winograd`]`(F4x4)` | 4x fewer multiplications; at ~2x the rounding error of the direct sum |
//! | 6 | everything else (k×k, strided, dilated, padded, strided 1x1) | [`Algorithm::Indirect`] | XNNPACK's indirect GEMM: a table of input-pixel offsets per output pixel and tap, padding → a zero row |
//!
//! Row 5 first asks [`WinogradTile::recommend`] (3x3, stride 1, one group,
//! enough channels and tiles: see [`crate::ops::winograd`]): when it
//! recommends a variant, the layer uses [`Algorithm::Winograd`] with it.
//! The measurements behind the rule are in `docs/KERNELS.md`
//! ("Convolution", "Winograd").
//!
//! `spec.algorithm` may force any algorithm that [`Algorithm::is_applicable`]
//! to the layer (tests force each one); the code generator writes the
//! chosen one into the spec literal.
//!
//! Two algorithms are outside the rule: [`Algorithm::PlanarDepthwise`] and
//! [`Algorithm::PlanarDirect`] take **NCHW** input and output planes (a
//! depthwise layer with multiplier 1, or a stem, without residual, that
//! reads the network's input, so the network skips its input reorder — and
//! its output reorder when the layer is the network). The execution plan
//! chooses them (`cnnc_ir::exec_plan`), never [`Algorithm::choose`], and
//! they are not in [`Algorithm::ALL`].
//!
//! ## Constants
//!
//! GEMM-based algorithms (`Gemm1x1`, `Indirect`, `RowIndirect`, `Grouped`) store,
//! per group, the weights packed as a [`PackedBRef`] (`K = (ky, kx, c)`,
//! `N` = the group's output channels; panels `[⌈N/16⌉][K][16]`) followed by
//! the bias padded to whole panels (when `has_bias`). `Gemm1x1`, `Indirect`
//! and `RowIndirect` thus have identical constants. `Depthwise` stores
//! `[taps][C']` weights then `[C']` bias, `C'` = output channels rounded up
//! to 16. Every segment is a multiple of 16 floats, so each starts on a
//! 64-byte boundary of an aligned [`Buffer`]. `PlanarDepthwise` stores
//! PyTorch's `[C, 1, kh, kw]` weights as they are, then the bias;
//! `PlanarDirect` blocks of 8 output channels `[⌈Cout/8⌉][K][8]`, then the
//! bias padded alike.
//!
//! ## Threads
//!
//! Work is cut along output pixels (whole register tiles of rows) and, when
//! there are too few pixel tiles for the threads, along output channels
//! (whole `NR`-column tiles); never along `K`. Layers under
//! [`PARALLEL_MIN_MACS`] run as one task. Every output element goes through
//! the same arithmetic whatever the cut (the GEMM's invariant), so results
//! are bit-identical for every thread count.

use core::ops::Range;
use std::sync::OnceLock;

/// The variant of [`Algorithm::Winograd`] (re-exported from
/// [`crate::ops::winograd`]).
pub use super::winograd::WinogradTile;
use super::winograd::{self, WinogradConv, WinogradSpec};
use super::{check_len, Buffer, Context, OpError, RunBuffers};
use crate::gemm::{PackedBRef, PANEL};
use crate::geometry::Conv2dGeometry;
use crate::Activation;
pub use bottleneck::{BottleneckOp, BottleneckSpec};
pub use planar_depthwise::planar_depthwise_supported;
pub use planar_direct::planar_direct_supported;

pub mod bottleneck;
mod depthwise;
mod gemm1x1;
mod grouped;
mod indirect;
mod planar_depthwise;
mod planar_direct;
mod row_indirect;
#[cfg(test)]
mod tests;

/// Below this many multiply-accumulates per call a convolution runs as a
/// single task: waking another thread costs microseconds, and 2^19 MACs
/// take ~6 µs on one AVX-512 core.
pub const PARALLEL_MIN_MACS: u64 = 1 << 19;

/// The algorithms of [`Conv2dOp`]. See the module documentation for the
/// rule that chooses among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// 1x1, stride 1, no padding, one group: a plain GEMM over the NHWC
    /// input (M = N·H·W, K = Cin, N = Cout), no copy.
    Gemm1x1,
    /// Indirect GEMM (one group; any kernel, stride, dilation, padding): a
    /// table of input offsets per (output pixel, tap) built at construction.
    Indirect,
    /// Indirect GEMM over whole kernel rows (one group, `dilation_w = 1`):
    /// chosen for few input channels (stems).
    RowIndirect,
    /// A channel-vectorized direct kernel for `groups == in_channels` (any
    /// channel multiplier, kernel, stride, dilation, padding).
    Depthwise,
    /// One GEMM (1x1, stride 1, no padding) or indirect GEMM per group, on
    /// channel slices of the NHWC tensors.
    Grouped,
    /// Winograd `F(m×m, 3×3)` for 3x3 stride-1 layers (one group):
    /// [`WinogradConv`] with the given variant.
    Winograd(WinogradTile),
    /// A depthwise convolution with channel multiplier 1 over **NCHW**
    /// input and output planes, without residual: a layer that reads the
    /// network's input (the execution plan's choice, never
    /// [`Algorithm::choose`]'s; not in [`Algorithm::ALL`], whose members
    /// all take NHWC).
    PlanarDepthwise,
    /// A convolution of one group over **NCHW** input and output planes,
    /// without residual, vectorized along output pixels: a few-channel
    /// first layer whose output is the network's (the execution plan's
    /// choice, like [`Algorithm::PlanarDepthwise`]; not in
    /// [`Algorithm::ALL`]).
    PlanarDirect,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 7] = [
        Algorithm::Gemm1x1,
        Algorithm::Indirect,
        Algorithm::RowIndirect,
        Algorithm::Depthwise,
        Algorithm::Grouped,
        Algorithm::Winograd(WinogradTile::F4x4),
        Algorithm::Winograd(WinogradTile::F6x6),
    ];

    /// The algorithm for a layer: the rule of the module documentation.
    pub fn choose(geometry: &Conv2dGeometry) -> Algorithm {
        let g = geometry;
        if g.groups > 1 && g.groups == g.in_channels {
            Algorithm::Depthwise
        } else if g.groups > 1 {
            Algorithm::Grouped
        } else if is_pointwise(g) {
            Algorithm::Gemm1x1
        } else if g.in_channels <= ROW_INDIRECT_MAX_CHANNELS
            && g.kernel[1] > 1
            && g.dilation[1] == 1
        {
            Algorithm::RowIndirect
        } else if let Some(tile) = WinogradTile::recommend(g) {
            Algorithm::Winograd(tile)
        } else {
            Algorithm::Indirect
        }
    }

    /// Whether this algorithm can compute the layer (its geometry assumed
    /// valid).
    pub fn is_applicable(self, geometry: &Conv2dGeometry) -> bool {
        let g = geometry;
        match self {
            Algorithm::Gemm1x1 => g.groups == 1 && is_pointwise(g),
            Algorithm::Indirect => g.groups == 1,
            Algorithm::RowIndirect => g.groups == 1 && g.dilation[1] == 1,
            Algorithm::Depthwise => g.groups == g.in_channels,
            Algorithm::Grouped => true,
            Algorithm::Winograd(_) => winograd::applicable(g),
            Algorithm::PlanarDepthwise => planar_depthwise::planar_depthwise_supported(g),
            Algorithm::PlanarDirect => planar_direct::planar_direct_supported(g),
        }
    }

    /// A short name (`gemm1x1`, `indirect`, ...), as in the file names.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Gemm1x1 => "gemm1x1",
            Algorithm::Indirect => "indirect",
            Algorithm::RowIndirect => "row_indirect",
            Algorithm::Depthwise => "depthwise",
            Algorithm::Grouped => "grouped",
            Algorithm::Winograd(WinogradTile::F4x4) => "winograd_f4x4",
            Algorithm::Winograd(WinogradTile::F6x6) => "winograd_f6x6",
            Algorithm::PlanarDepthwise => "planar_depthwise",
            Algorithm::PlanarDirect => "planar_direct",
        }
    }
}

/// Layers with at most this many input channels use
/// [`Algorithm::RowIndirect`] (when it applies and `kw > 1`).
pub const ROW_INDIRECT_MAX_CHANNELS: usize = 4;

/// 1x1, stride 1, no padding: the input pixels are the output pixels.
fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel == [1, 1] && g.stride == [1, 1] && g.padding == [0; 4]
}

/// Everything that defines a [`Conv2dOp`] besides its weights: plain data,
/// written out by the code generator as a literal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dSpec {
    /// The layer's geometry for **one** sample (`batch` must be 1; the batch
    /// is an argument of [`Conv2dOp::run`]).
    pub geometry: Conv2dGeometry,
    /// The activation applied last.
    pub activation: Activation,
    /// Whether the layer adds a bias (packed into the constants).
    pub has_bias: bool,
    /// Whether `run` adds a residual tensor (shaped like the output) before
    /// the activation.
    pub has_residual: bool,
    /// The algorithm; usually [`Algorithm::choose`]`(&geometry)`.
    pub algorithm: Algorithm,
}

impl Conv2dSpec {
    /// A spec with the algorithm of [`Algorithm::choose`].
    pub fn new(
        geometry: Conv2dGeometry,
        activation: Activation,
        has_bias: bool,
        has_residual: bool,
    ) -> Conv2dSpec {
        Conv2dSpec {
            geometry,
            activation,
            has_bias,
            has_residual,
            algorithm: Algorithm::choose(&geometry),
        }
    }
}

/// Per-sample sizes of a checked geometry, every product overflow-checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    /// Floats of one input sample `[H, W, Cin]`.
    pub input: usize,
    /// Floats of one output sample `[OH, OW, Cout]`.
    pub output: usize,
    /// Output pixels of one sample (`OH·OW`).
    pub pixels: usize,
    /// Elements of the PyTorch weight `[Cout, Cin/groups, kh, kw]`.
    pub weight: usize,
    /// Kernel taps (`kh·kw`).
    pub taps: usize,
    /// The GEMM `K` of one group (`taps · Cin/groups`).
    pub k: usize,
    /// Multiply-accumulates of one sample.
    pub macs: u64,
}

fn spec_error(why: impl Into<String>) -> OpError {
    OpError::Spec(why.into())
}

fn too_large() -> OpError {
    spec_error("convolution sizes overflow")
}

/// Checks that a geometry is one PyTorch could produce for one sample, and
/// computes its sizes without overflow.
pub(crate) fn check_geometry(g: &Conv2dGeometry) -> Result<Sizes, OpError> {
    if g.batch != 1 {
        return Err(spec_error(format!(
            "a conv spec describes one sample (batch 1), got batch {}",
            g.batch
        )));
    }
    if g.in_channels == 0 || g.out_channels == 0 {
        return Err(spec_error("convolution with zero channels"));
    }
    if g.groups == 0
        || !g.in_channels.is_multiple_of(g.groups)
        || !g.out_channels.is_multiple_of(g.groups)
    {
        return Err(spec_error(format!(
            "groups {} must divide in_channels {} and out_channels {}",
            g.groups, g.in_channels, g.out_channels
        )));
    }
    for axis in 0..2 {
        let (kernel, stride, dilation) = (g.kernel[axis], g.stride[axis], g.dilation[axis]);
        if kernel == 0 || stride == 0 || dilation == 0 {
            return Err(spec_error(
                "kernel size, stride and dilation must be at least 1",
            ));
        }
        let (in_len, out_len) = if axis == 0 {
            (g.in_h, g.out_h)
        } else {
            (g.in_w, g.out_w)
        };
        let padded = in_len
            .checked_add(g.padding[axis])
            .and_then(|x| x.checked_add(g.padding[axis + 2]))
            .ok_or_else(too_large)?;
        let span = (kernel - 1)
            .checked_mul(dilation)
            .and_then(|x| x.checked_add(1))
            .ok_or_else(too_large)?;
        let expected = padded.checked_sub(span).map(|x| x / stride + 1);
        if expected != Some(out_len) {
            return Err(spec_error(format!(
                "output size {out_len} along {} disagrees with input {in_len}, padding {}+{}, kernel {kernel}, stride {stride}, dilation {dilation}",
                if axis == 0 { "height" } else { "width" },
                g.padding[axis],
                g.padding[axis + 2],
            )));
        }
    }
    let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(too_large);
    let input = mul(mul(g.in_h, g.in_w)?, g.in_channels)?;
    let pixels = mul(g.out_h, g.out_w)?;
    let output = mul(pixels, g.out_channels)?;
    let taps = mul(g.kernel[0], g.kernel[1])?;
    let k = mul(taps, g.in_channels_per_group())?;
    let weight = mul(k, g.out_channels)?;
    let macs = (output as u64)
        .checked_mul(k as u64)
        .ok_or_else(too_large)?;
    Ok(Sizes {
        input,
        output,
        pixels,
        weight,
        taps,
        k,
        macs,
    })
}

/// The input coordinate read by output position `out` at kernel tap `tap`,
/// or `None` when it falls into the padding.
pub(crate) fn input_coordinate(
    out: usize,
    stride: usize,
    tap: usize,
    dilation: usize,
    pad_before: usize,
    in_len: usize,
) -> Option<usize> {
    (out * stride + tap * dilation)
        .checked_sub(pad_before)
        .filter(|&coordinate| coordinate < in_len)
}

/// The floats of one group's GEMM constants: packed panels, then the padded
/// bias when there is one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmSegment {
    /// GEMM `K` (`taps · Cin/groups`).
    pub k: usize,
    /// GEMM `N` (output channels per group).
    pub n: usize,
    /// Floats of the packed panels.
    pub panels: usize,
    /// Floats of the padded bias (0 without bias).
    pub bias: usize,
}

impl GemmSegment {
    fn new(g: &Conv2dGeometry, sizes: &Sizes, has_bias: bool) -> Result<GemmSegment, OpError> {
        let n = g.out_channels_per_group();
        let padded_n = n.div_ceil(PANEL) * PANEL;
        let panels = padded_n.checked_mul(sizes.k).ok_or_else(too_large)?;
        Ok(GemmSegment {
            k: sizes.k,
            n,
            panels,
            bias: if has_bias { padded_n } else { 0 },
        })
    }

    /// Floats of one group's segment.
    fn len(&self) -> usize {
        self.panels + self.bias
    }

    /// Floats of the constants of all `groups`.
    fn total(&self, groups: usize) -> Result<usize, OpError> {
        self.len().checked_mul(groups).ok_or_else(too_large)
    }

    /// The packed matrix of `group` inside `constants`.
    fn view<'a>(&self, constants: &'a [f32], group: usize) -> Result<PackedBRef<'a>, OpError> {
        let start = group * self.len();
        let segment = constants
            .get(start..start + self.len())
            .ok_or(OpError::Length {
                what: "constants",
                len: constants.len(),
                expected: start + self.len(),
            })?;
        let (panels, bias) = segment.split_at(self.panels);
        Ok(PackedBRef::new(
            self.k,
            self.n,
            panels,
            (self.bias > 0).then_some(bias),
        )?)
    }

    /// Packs the PyTorch weight `[Cout, Cin/groups, kh, kw]` and bias into
    /// `out` (`total(groups)` floats, zero-filled): per group, `B[k][n]` with
    /// `k = (ky·kw + kx)·Cin/groups + c` and `n` the output channel within
    /// the group, in panels `[⌈N/16⌉][K][16]`.
    fn pack(&self, g: &Conv2dGeometry, weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let in_per_group = g.in_channels_per_group();
        let taps = g.kernel[0] * g.kernel[1];
        let panel_len = self.k * PANEL;
        for (group, segment) in out.chunks_exact_mut(self.len()).enumerate() {
            let (panels, padded_bias) = segment.split_at_mut(self.panels);
            for nn in 0..self.n {
                let o = group * self.n + nn;
                let panel = &mut panels[(nn / PANEL) * panel_len..][..panel_len];
                for tap in 0..taps {
                    for c in 0..in_per_group {
                        let kk = tap * in_per_group + c;
                        panel[kk * PANEL + nn % PANEL] =
                            weight[(o * in_per_group + c) * taps + tap];
                    }
                }
            }
            if let Some(bias) = bias {
                padded_bias[..self.n].copy_from_slice(&bias[group * self.n..][..self.n]);
            }
        }
    }
}

/// What an algorithm derived from the spec at construction (tables, zero
/// rows, constant offsets); never part of the constants.
#[derive(Debug)]
enum Plan {
    Gemm1x1(gemm1x1::Plan),
    Indirect(indirect::Plan),
    RowIndirect(row_indirect::Plan),
    Depthwise(depthwise::Plan),
    Grouped(grouped::Plan),
    PlanarDepthwise(planar_depthwise::Plan),
    PlanarDirect(planar_direct::Plan),
}

/// A 2-D convolution layer over NHWC activations (see the module doc).
#[derive(Debug)]
pub struct Conv2dOp {
    spec: Conv2dSpec,
    sizes: Sizes,
    body: Body,
}

/// The algorithm's state.
#[derive(Debug)]
enum Body {
    /// The algorithms of this module: their constants and derived plan.
    Native { constants: Buffer, plan: Plan },
    /// [`WinogradConv`], which owns its constants.
    Winograd(WinogradConv),
}

/// The arguments of one `run`, lengths already checked, shared by the
/// algorithms.
pub(crate) struct RunArgs<'a> {
    pub spec: &'a Conv2dSpec,
    pub sizes: &'a Sizes,
    pub constants: &'a [f32],
    pub ctx: &'a Context,
    pub batch: usize,
    pub input: &'a [f32],
    pub residual: Option<&'a [f32]>,
}

impl Conv2dOp {
    /// Packs PyTorch-layout weights `[O, C/groups, kh, kw]` (a flipped
    /// kernel already rotated by the caller) and the bias (`Some` exactly
    /// when `spec.has_bias`) for `spec.algorithm`.
    pub fn pack(spec: Conv2dSpec, weight: &[f32], bias: Option<&[f32]>) -> Result<Self, OpError> {
        let sizes = check_spec(&spec)?;
        check_len("weight", weight.len(), sizes.weight)?;
        match (bias, spec.has_bias) {
            (Some(bias), true) => check_len("bias", bias.len(), spec.geometry.out_channels)?,
            (None, false) => {}
            (Some(_), false) => return Err(spec_error("a bias was given to a layer without bias")),
            (None, true) => return Err(spec_error("the layer has a bias but none was given")),
        }
        if let Algorithm::Winograd(tile) = spec.algorithm {
            let winograd = WinogradConv::pack(winograd_spec(&spec, tile), weight, bias)?;
            return Ok(Conv2dOp {
                spec,
                sizes,
                body: Body::Winograd(winograd),
            });
        }
        let g = &spec.geometry;
        let mut constants = Buffer::zeroed(constants_len(&spec, &sizes)?);
        let out = constants.make_mut();
        match spec.algorithm {
            Algorithm::Depthwise => depthwise::pack(g, &sizes, weight, bias, out),
            Algorithm::PlanarDepthwise => planar_depthwise::pack(weight, bias, out),
            Algorithm::PlanarDirect => planar_direct::pack(weight, bias, sizes.k, out),
            _ => GemmSegment::new(g, &sizes, spec.has_bias)?.pack(g, weight, bias, out),
        }
        Conv2dOp::from_constants(spec, constants)
    }

    /// Rebuilds the operator from constants that [`Conv2dOp::constants`]
    /// returned for the same spec (e.g. embedded in generated code), without
    /// repacking.
    pub fn from_constants(spec: Conv2dSpec, constants: Buffer) -> Result<Self, OpError> {
        let sizes = check_spec(&spec)?;
        let g = &spec.geometry;
        let plan = match spec.algorithm {
            Algorithm::Gemm1x1 => Plan::Gemm1x1(gemm1x1::Plan::new(g, &sizes, spec.has_bias)?),
            Algorithm::Indirect => Plan::Indirect(indirect::Plan::new(g, &sizes, spec.has_bias)?),
            Algorithm::RowIndirect => {
                Plan::RowIndirect(row_indirect::Plan::new(g, &sizes, spec.has_bias)?)
            }
            Algorithm::Depthwise => Plan::Depthwise(depthwise::Plan::new(g, spec.has_bias)),
            Algorithm::Grouped => Plan::Grouped(grouped::Plan::new(g, &sizes, spec.has_bias)?),
            Algorithm::PlanarDepthwise => Plan::PlanarDepthwise(planar_depthwise::Plan),
            Algorithm::PlanarDirect => Plan::PlanarDirect(planar_direct::Plan::new(g)?),
            Algorithm::Winograd(tile) => {
                let winograd = WinogradConv::from_constants(winograd_spec(&spec, tile), constants)?;
                return Ok(Conv2dOp {
                    spec,
                    sizes,
                    body: Body::Winograd(winograd),
                });
            }
        };
        check_len("constants", constants.len(), constants_len(&spec, &sizes)?)?;
        Ok(Conv2dOp {
            spec,
            sizes,
            body: Body::Native { constants, plan },
        })
    }

    /// The spec.
    pub fn spec(&self) -> &Conv2dSpec {
        &self.spec
    }

    /// All packed constants (what generated code embeds).
    pub fn constants(&self) -> &[f32] {
        match &self.body {
            Body::Native { constants, .. } => constants,
            Body::Winograd(winograd) => winograd.constants(),
        }
    }

    /// Floats of scratch [`Conv2dOp::run`] needs for `batch` samples: 0 for
    /// every algorithm but Winograd and the planar direct one (the others
    /// read the input in place).
    pub fn scratch_len(&self, batch: usize) -> usize {
        match &self.body {
            Body::Native {
                plan: Plan::PlanarDirect(plan),
                ..
            } => plan.scratch_len(),
            Body::Native { .. } => 0,
            Body::Winograd(winograd) => winograd.scratch_len(batch),
        }
    }

    /// Runs the layer on `batch` samples: `input` `[N, H, W, Cin]`,
    /// `residual` `[N, OH, OW, Cout]` (`Some` exactly when
    /// `spec.has_residual`), `output` `[N, OH, OW, Cout]` (overwritten),
    /// `scratch` at least [`Conv2dOp::scratch_len`] floats. Allocates
    /// nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), OpError> {
        let sizes = &self.sizes;
        RunBuffers {
            input: sizes.input,
            output: sizes.output,
            residual: self.spec.has_residual,
            scratch: self.scratch_len(batch),
        }
        .check(batch, input, residual, output, scratch)?;
        if batch == 0 {
            return Ok(());
        }
        let (constants, plan) = match &self.body {
            Body::Native { constants, plan } => (constants, plan),
            Body::Winograd(winograd) => {
                return winograd.run(ctx, batch, input, residual, output, scratch)
            }
        };
        let args = RunArgs {
            spec: &self.spec,
            sizes,
            constants,
            ctx,
            batch,
            input,
            residual,
        };
        match plan {
            Plan::Gemm1x1(plan) => plan.run(&args, output),
            Plan::Indirect(plan) => plan.run(&args, output),
            Plan::RowIndirect(plan) => plan.run(&args, output),
            Plan::Depthwise(plan) => plan.run(&args, output),
            Plan::PlanarDepthwise(plan) => plan.run(&args, output),
            Plan::PlanarDirect(plan) => plan.run(&args, output, scratch),
            Plan::Grouped(plan) => plan.run(&args, output),
        }
    }
}

/// The [`WinogradSpec`] of a conv spec.
fn winograd_spec(spec: &Conv2dSpec, tile: WinogradTile) -> WinogradSpec {
    WinogradSpec {
        geometry: spec.geometry,
        activation: spec.activation,
        has_bias: spec.has_bias,
        has_residual: spec.has_residual,
        tile,
    }
}

/// Checks the geometry and that the algorithm applies to it.
fn check_spec(spec: &Conv2dSpec) -> Result<Sizes, OpError> {
    let sizes = check_geometry(&spec.geometry)?;
    if matches!(
        spec.algorithm,
        Algorithm::PlanarDepthwise | Algorithm::PlanarDirect
    ) && spec.has_residual
    {
        return Err(spec_error(format!(
            "the {} algorithm takes no residual",
            spec.algorithm.name()
        )));
    }
    if !spec.algorithm.is_applicable(&spec.geometry) {
        return Err(spec_error(format!(
            "the {} algorithm does not apply to this convolution",
            spec.algorithm.name()
        )));
    }
    Ok(sizes)
}

/// Floats of the constants of a checked spec.
fn constants_len(spec: &Conv2dSpec, sizes: &Sizes) -> Result<usize, OpError> {
    let g = &spec.geometry;
    match spec.algorithm {
        Algorithm::Depthwise => depthwise::constants_len(g, sizes, spec.has_bias),
        Algorithm::PlanarDepthwise => planar_depthwise::constants_len(g, sizes, spec.has_bias),
        Algorithm::PlanarDirect => planar_direct::constants_len(g, sizes, spec.has_bias),
        _ => GemmSegment::new(g, sizes, spec.has_bias)?.total(g.groups),
    }
}

/// The first error raised by any task of a parallel run.
#[derive(Default)]
pub(crate) struct FirstError(OnceLock<OpError>);

impl FirstError {
    /// Records `result`'s error if it is the first.
    pub fn record<E: Into<OpError>>(&self, result: Result<(), E>) {
        if let Err(error) = result {
            let _ = self.0.set(error.into());
        }
    }

    /// `Err` with the first recorded error, if any.
    pub fn into_result(self) -> Result<(), OpError> {
        match self.0.into_inner() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// How one call's GEMM-shaped work is cut into tasks.
///
/// The work is `outer` independent matrices (samples, or samples × groups)
/// of `rows × cols` outputs each. Rows are counted in register tiles of `MR`
/// rows, flattened over the matrices, and cut into `row_parts` near-equal
/// runs of tiles; when there are fewer row tiles than tasks, the columns are
/// also cut into `col_parts` runs of whole `NR`-column tiles. A task is one
/// (row run, column run); it visits its run matrix by matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Split {
    outer: usize,
    rows: usize,
    cols: usize,
    mr: usize,
    col_unit: usize,
    row_parts: usize,
    col_parts: usize,
}

impl Split {
    /// Cuts the work for `ctx`'s threads: one task below
    /// [`PARALLEL_MIN_MACS`] (`macs` is the whole call's), at most
    /// `max_tasks`; columns are cut only with `split_cols`.
    pub fn new(
        ctx: &Context,
        outer: usize,
        rows: usize,
        cols: usize,
        macs: u64,
        max_tasks: usize,
        split_cols: bool,
    ) -> Split {
        let (mr, nr) = ctx.kernels().gemm_tile();
        let mr = mr.max(1);
        let col_unit = nr.max(PANEL).div_ceil(PANEL) * PANEL;
        let row_tiles = outer.saturating_mul(rows.div_ceil(mr));
        let col_tiles = cols.div_ceil(col_unit);
        let wanted = if ctx.threads() <= 1 || macs < PARALLEL_MIN_MACS {
            1
        } else {
            // A few tasks per thread balance a machine shared with others.
            ctx.threads()
                .saturating_mul(TASKS_PER_THREAD)
                .min(max_tasks.max(1))
        };
        let (row_parts, col_parts) = if row_tiles >= wanted || !split_cols {
            (wanted.min(row_tiles).max(1), 1)
        } else {
            let col_parts = wanted.min(col_tiles).max(1);
            ((wanted / col_parts).min(row_tiles).max(1), col_parts)
        };
        Split {
            outer,
            rows,
            cols,
            mr,
            col_unit,
            row_parts,
            col_parts,
        }
    }

    /// The number of tasks.
    pub fn tasks(&self) -> usize {
        self.row_parts * self.col_parts
    }

    /// Calls `f(matrix, rows, cols)` for each piece of task `task`.
    pub fn for_each(&self, task: usize, mut f: impl FnMut(usize, Range<usize>, Range<usize>)) {
        let row_part = task / self.col_parts;
        let col_part = task % self.col_parts;
        let col_tiles = self.cols.div_ceil(self.col_unit);
        let cols = (col_part * col_tiles / self.col_parts * self.col_unit).min(self.cols)
            ..((col_part + 1) * col_tiles / self.col_parts * self.col_unit).min(self.cols);
        if cols.is_empty() {
            return;
        }
        let tiles_per = self.rows.div_ceil(self.mr);
        if tiles_per == 0 {
            return;
        }
        let total = self.outer * tiles_per;
        let first = row_part * total / self.row_parts;
        let end = (row_part + 1) * total / self.row_parts;
        let mut tile = first;
        while tile < end {
            let matrix = tile / tiles_per;
            let local = tile - matrix * tiles_per;
            let local_end = (end - matrix * tiles_per).min(tiles_per);
            let rows = local * self.mr..(local_end * self.mr).min(self.rows);
            f(matrix, rows, cols.clone());
            tile = matrix * tiles_per + local_end;
        }
    }
}

/// Tasks per thread when a layer is split (the pool hands tasks out
/// dynamically, so a thread slowed down by a neighbour takes fewer).
pub(crate) const TASKS_PER_THREAD: usize = 4;
