//! [`BottleneckOp`]: an optional 1x1 expansion, a depthwise convolution and
//! a 1x1 projection (MobileNetV2's inverted residual block) run together,
//! band of output rows by band, so that the wide tensors between them never
//! leave the cache.
//!
//! Run layer by layer, the expansion of MobileNetV2's second block writes
//! 112·112·96 floats (4.8 MB, more than the 2 MiB L2) that the depthwise
//! layer reads back; on one core both run at the speed of memory (~12 GB/s
//! written). Here a task computes, for a band of `B` output rows of the
//! depthwise layer:
//!
//! 1. the expanded input rows the band reads (`(B-1)·stride + span` rows,
//!    fewer at the edges) into a scratch slot `E`, with the expansion's
//!    epilogue; rows the previous band of the same task already expanded
//!    are moved to the front of `E` instead of being recomputed;
//! 2. the band's depthwise rows into a scratch slot `D`;
//! 3. the projection of `D` (with its residual and activation) into the
//!    band's output rows.
//!
//! `B` is the largest band whose `E` and `D` fit in [`BAND_BYTES`].
//!
//! **Exactness.** Each output element goes through the same arithmetic as
//! in the three layers run one after the other by [`Conv2dOp`] (the GEMM's
//! rows are independent of the rows computed with them, the depthwise
//! kernel computes each row alone), so the results are bit-identical to the
//! unfused layers, for every band size and thread count.
//!
//! **Threads.** The bands of all samples are cut into at most
//! [`MAX_TASKS`] runs of consecutive bands, one scratch slot each.
//!
//! **Constants.** The three layers' constants, one after the other (each a
//! multiple of 16 floats, so each starts 64-byte aligned).

use core::ops::Range;

use super::depthwise;
use super::{
    check_len, check_spec, constants_len, spec_error, too_large, Algorithm, Buffer, Context,
    Conv2dOp, Conv2dSpec, FirstError, GemmSegment, OpError, Sizes, PARALLEL_MIN_MACS,
};
use crate::gemm::{gemm, Epilogue, MatMut, MatRef};
use crate::geometry::Conv2dGeometry;
use crate::ops::RunBuffers;
use crate::threads::Disjoint;

/// The scratch of one band (`E` and `D`) should fit in this many bytes: a
/// quarter of this machine's 2 MiB L2, which also holds the weights and
/// the band's input and output rows.
pub const BAND_BYTES: usize = 512 * 1024;

/// At most this many tasks (and scratch slots) run one call.
pub const MAX_TASKS: usize = 8;

/// Fusion pays when the tensors it keeps in the cache would not stay there
/// otherwise: a block is fused when the depthwise layer's input or output
/// (one sample) is at least this many bytes. Smaller blocks run faster as
/// three layers (the GEMMs split their columns over threads, and a band
/// fusion recomputes the rows two bands share).
pub const FUSE_MIN_BYTES: usize = 1 << 20;

/// Three convolutions to run as one [`BottleneckOp`]: plain data, written
/// out by the code generator as a literal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BottleneckSpec {
    /// The 1x1 expansion ([`Algorithm::Gemm1x1`], no residual), if any.
    pub expand: Option<Conv2dSpec>,
    /// The depthwise layer ([`Algorithm::Depthwise`], one output channel
    /// per input channel, no residual).
    pub depthwise: Conv2dSpec,
    /// The 1x1 projection ([`Algorithm::Gemm1x1`]; it may add a residual).
    pub project: Conv2dSpec,
}

impl BottleneckSpec {
    /// Whether the three layers chain as [`BottleneckOp`] requires (see
    /// the fields), and the block is large enough to gain from fusion
    /// ([`FUSE_MIN_BYTES`]).
    pub fn worth_fusing(&self) -> bool {
        self.check().is_ok() && {
            let g = &self.depthwise.geometry;
            let bytes = |h: usize, w: usize| {
                h.saturating_mul(w)
                    .saturating_mul(g.in_channels)
                    .saturating_mul(4)
            };
            bytes(g.in_h, g.in_w).max(bytes(g.out_h, g.out_w)) >= FUSE_MIN_BYTES
        }
    }

    /// Checks each layer and that they chain; returns their sizes (the
    /// expansion's with its spec).
    fn check(&self) -> Result<CheckedLayers, OpError> {
        let expand = self
            .expand
            .map(|spec| check_spec(&spec).map(|sizes| (spec, sizes)))
            .transpose()?;
        let depthwise = check_spec(&self.depthwise)?;
        let project = check_spec(&self.project)?;
        let dw = &self.depthwise.geometry;
        let pointwise = |spec: &Conv2dSpec| spec.algorithm == Algorithm::Gemm1x1;
        if self.depthwise.algorithm != Algorithm::Depthwise
            || dw.out_channels != dw.in_channels
            || self.depthwise.has_residual
        {
            return Err(spec_error(
                "a bottleneck's middle layer must be a depthwise convolution with one output channel per input channel and no residual",
            ));
        }
        if let Some(expand) = &self.expand {
            let g = &expand.geometry;
            if !pointwise(expand)
                || expand.has_residual
                || (g.out_channels, g.out_h, g.out_w) != (dw.in_channels, dw.in_h, dw.in_w)
            {
                return Err(spec_error(
                    "a bottleneck's expansion must be a 1x1 GEMM without residual whose output is the depthwise layer's input",
                ));
            }
        }
        let g = &self.project.geometry;
        if !pointwise(&self.project)
            || (g.in_channels, g.in_h, g.in_w) != (dw.out_channels, dw.out_h, dw.out_w)
        {
            return Err(spec_error(
                "a bottleneck's projection must be a 1x1 GEMM reading the depthwise layer's output",
            ));
        }
        Ok((expand, depthwise, project))
    }
}

/// The sizes of a checked block's layers: the expansion (with its spec),
/// the depthwise layer, the projection.
type CheckedLayers = (Option<(Conv2dSpec, Sizes)>, Sizes, Sizes);

/// The fused layers (see the module documentation).
#[derive(Debug)]
pub struct BottleneckOp {
    spec: BottleneckSpec,
    constants: Buffer,
    /// Where each layer's constants are in `constants`.
    ranges: [Range<usize>; 3],
    /// The expansion and its GEMM constants, when there is one.
    expand: Option<(Conv2dSpec, GemmSegment)>,
    depthwise: depthwise::Plan,
    project: GemmSegment,
    /// Floats of one input and one output sample.
    input_len: usize,
    output_len: usize,
    /// Multiply-accumulates of one sample.
    macs: u64,
    /// Output rows per band.
    band_rows: usize,
    /// Floats of `E` and of a whole slot (`E` then `D`).
    e_len: usize,
    slot_len: usize,
}

impl BottleneckOp {
    /// Fuses three packed layers (their constants are copied).
    pub fn from_layers(
        expand: Option<&Conv2dOp>,
        depthwise: &Conv2dOp,
        project: &Conv2dOp,
    ) -> Result<BottleneckOp, OpError> {
        let spec = BottleneckSpec {
            expand: expand.map(|op| *op.spec()),
            depthwise: *depthwise.spec(),
            project: *project.spec(),
        };
        let parts: Vec<&[f32]> = expand
            .into_iter()
            .chain([depthwise, project])
            .map(Conv2dOp::constants)
            .collect();
        let total = parts
            .iter()
            .try_fold(0usize, |sum, part| sum.checked_add(part.len()))
            .ok_or_else(too_large)?;
        let mut constants = Buffer::zeroed(total);
        let mut at = 0;
        let out = constants.make_mut();
        for part in parts {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        BottleneckOp::from_constants(spec, constants)
    }

    /// Rebuilds the operator from the constants [`BottleneckOp::constants`]
    /// returned for the same spec (e.g. embedded in generated code).
    pub fn from_constants(spec: BottleneckSpec, constants: Buffer) -> Result<Self, OpError> {
        let (expand, dw_sizes, project_sizes) = spec.check()?;
        let mut lens = [0usize; 3];
        if let Some((expand, sizes)) = &expand {
            lens[0] = constants_len(expand, sizes)?;
        }
        lens[1] = constants_len(&spec.depthwise, &dw_sizes)?;
        lens[2] = constants_len(&spec.project, &project_sizes)?;
        let total = lens
            .iter()
            .try_fold(0usize, |sum, &len| sum.checked_add(len))
            .ok_or_else(too_large)?;
        check_len("constants", constants.len(), total)?;
        let ranges = [
            0..lens[0],
            lens[0]..lens[0] + lens[1],
            lens[0] + lens[1]..total,
        ];

        let dw = &spec.depthwise.geometry;
        let project = GemmSegment::new(
            &spec.project.geometry,
            &project_sizes,
            spec.project.has_bias,
        )?;
        let input_len = expand.map_or(dw_sizes.input, |(_, sizes)| sizes.input);
        let macs = [
            expand.map(|(_, sizes)| sizes),
            Some(dw_sizes),
            Some(project_sizes),
        ]
        .iter()
        .flatten()
        .try_fold(0u64, |sum, sizes| sum.checked_add(sizes.macs))
        .ok_or_else(too_large)?;
        let expand = expand
            .map(|(spec, sizes)| {
                GemmSegment::new(&spec.geometry, &sizes, spec.has_bias).map(|seg| (spec, seg))
            })
            .transpose()?;
        let band_rows = band_rows(dw, spec.expand.is_some());
        let (e_len, d_len) = slot_lens(dw, band_rows, spec.expand.is_some());
        Ok(BottleneckOp {
            spec,
            constants,
            ranges,
            expand,
            depthwise: depthwise::Plan::new(dw, spec.depthwise.has_bias),
            project,
            input_len,
            output_len: project_sizes.output,
            macs,
            band_rows,
            e_len,
            slot_len: e_len + d_len,
        })
    }

    /// The same operator with bands of `rows` output rows (tests: cut
    /// small layers into several bands).
    #[cfg(test)]
    pub(crate) fn with_band_rows(mut self, rows: usize) -> BottleneckOp {
        let dw = &self.spec.depthwise.geometry;
        self.band_rows = rows.clamp(1, dw.out_h.max(1));
        let (e_len, d_len) = slot_lens(dw, self.band_rows, self.spec.expand.is_some());
        (self.e_len, self.slot_len) = (e_len, e_len + d_len);
        self
    }

    /// The spec.
    pub fn spec(&self) -> &BottleneckSpec {
        &self.spec
    }

    /// All packed constants (what generated code embeds).
    pub fn constants(&self) -> &[f32] {
        &self.constants
    }

    /// Output rows of the depthwise layer per band.
    pub fn band_rows(&self) -> usize {
        self.band_rows
    }

    /// Floats of scratch [`BottleneckOp::run`] needs (the same for every
    /// batch): one slot per task.
    pub fn scratch_len(&self, _batch: usize) -> usize {
        self.slot_len.saturating_mul(MAX_TASKS)
    }

    /// Runs the three layers on `batch` samples: `input` `[N, H, W, C]` (the
    /// expansion's input, or the depthwise layer's without expansion),
    /// `residual` `[N, OH, OW, Cout]` (`Some` exactly when the projection
    /// has one), `output` `[N, OH, OW, Cout]`, `scratch` at least
    /// [`BottleneckOp::scratch_len`] floats. Allocates nothing.
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        residual: Option<&[f32]>,
        output: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), OpError> {
        RunBuffers {
            input: self.input_len,
            output: self.output_len,
            residual: self.spec.project.has_residual,
            scratch: self.scratch_len(batch),
        }
        .check(batch, input, residual, output, scratch)?;
        let dw = &self.spec.depthwise.geometry;
        let bands = dw.out_h.div_ceil(self.band_rows);
        let units = batch * bands;
        if units == 0 {
            return Ok(());
        }
        let macs = self.macs.saturating_mul(batch as u64);
        let tasks = if macs < PARALLEL_MIN_MACS {
            1
        } else {
            ctx.threads().min(MAX_TASKS).min(units)
        };
        let outputs = Disjoint::new(output);
        let slots = Disjoint::new(scratch);
        let errors = FirstError::default();
        ctx.parallel_for(tasks, |task| {
            let units = task * units / tasks..(task + 1) * units / tasks;
            // SAFETY: each task takes its own slot.
            let slot = unsafe { slots.part(task * self.slot_len..(task + 1) * self.slot_len) };
            let mut band = Band {
                op: self,
                ctx,
                slot,
                cached: None,
            };
            for unit in units {
                let (sample, index) = (unit / bands, unit % bands);
                let rows = index * self.band_rows..((index + 1) * self.band_rows).min(dw.out_h);
                let row_len = dw.out_w * self.spec.project.geometry.out_channels;
                let start = (sample * dw.out_h + rows.start) * row_len;
                let end = (sample * dw.out_h + rows.end) * row_len;
                // SAFETY: distinct units are distinct rows of the output,
                // and each unit belongs to one task.
                let out = unsafe { outputs.part(start..end) };
                let residual = residual.map(|residual| &residual[start..end]);
                let x = &input[sample * self.input_len..][..self.input_len];
                errors.record(band.run(sample, x, rows, residual, out));
            }
        });
        errors.into_result()
    }
}

/// One task's state: its scratch slot and which expanded rows `E` holds.
struct Band<'a> {
    op: &'a BottleneckOp,
    ctx: &'a Context,
    slot: &'a mut [f32],
    /// `(sample, first row, rows)` of the expanded rows in `E`.
    cached: Option<(usize, usize, usize)>,
}

impl Band<'_> {
    /// Computes the output rows `rows` (of the depthwise layer and the
    /// projection) of one sample whose input is `x`.
    fn run(
        &mut self,
        sample: usize,
        x: &[f32],
        rows: Range<usize>,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let op = self.op;
        let kernels = self.ctx.kernels();
        let dw = &op.spec.depthwise.geometry;
        let channels = dw.in_channels;
        let in_row = dw.in_w * channels;
        let window = input_rows(dw, rows.clone());
        let (e, d) = self.slot.split_at_mut(op.e_len);

        // 1. The expanded rows, or the input rows themselves.
        let source: &[f32] = match &op.expand {
            Some((spec, segment)) => {
                let mut have = 0;
                if let Some((cached_sample, first, count)) = self.cached {
                    if cached_sample == sample
                        && first <= window.start
                        && window.start < first + count
                    {
                        let shift = window.start - first;
                        have = (first + count - window.start).min(window.len());
                        e.copy_within(shift * in_row..(shift + have) * in_row, 0);
                    }
                }
                let x_row = dw.in_w * spec.geometry.in_channels;
                let new_rows = window.start + have..window.end;
                let m = new_rows.len() * dw.in_w;
                if m > 0 {
                    let a = MatRef::new(
                        &x[new_rows.start * x_row..new_rows.end * x_row],
                        m,
                        spec.geometry.in_channels,
                        spec.geometry.in_channels,
                    )?;
                    let c = MatMut::new(
                        &mut e[have * in_row..window.len() * in_row],
                        m,
                        channels,
                        channels,
                    )?;
                    let b = segment.view(&op.constants[op.ranges[0].clone()], 0)?;
                    gemm(kernels, a, b, c, &Epilogue::activation(spec.activation))?;
                }
                self.cached = Some((sample, window.start, window.len()));
                &e[..window.len() * in_row]
            }
            None => &x[window.start * in_row..window.end * in_row],
        };

        // 2. The depthwise rows.
        let d_len = rows.len() * dw.out_w * channels;
        let d = &mut d[..d_len];
        op.depthwise.run_rows(
            kernels.tier(),
            dw,
            op.spec.depthwise.activation,
            &op.constants[op.ranges[1].clone()],
            source,
            window.start,
            rows.clone(),
            None,
            d,
        )?;

        // 3. The projection.
        let project = &op.spec.project;
        let (m, n) = (rows.len() * dw.out_w, project.geometry.out_channels);
        let a = MatRef::new(d, m, channels, channels)?;
        let residual = match residual {
            Some(residual) => Some(MatRef::new(residual, m, n, n)?),
            None => None,
        };
        let epilogue = Epilogue {
            activation: project.activation,
            residual,
            accumulate: false,
        };
        let b = op.project.view(&op.constants[op.ranges[2].clone()], 0)?;
        gemm(kernels, a, b, MatMut::new(out, m, n, n)?, &epilogue)?;
        Ok(())
    }
}

/// The input rows that the output rows `rows` of `g` read (clipped to the
/// input; rows in the padding are not read).
fn input_rows(g: &Conv2dGeometry, rows: Range<usize>) -> Range<usize> {
    let span = (g.kernel[0] - 1) * g.dilation[0] + 1;
    let first = (rows.start * g.stride[0]).saturating_sub(g.padding[0]);
    let end = ((rows.end.max(1) - 1) * g.stride[0] + span)
        .saturating_sub(g.padding[0])
        .min(g.in_h);
    first..end.max(first)
}

/// Floats of `E` (expanded input rows, 0 without expansion) and `D`
/// (depthwise output rows) for bands of `band` rows.
fn slot_lens(g: &Conv2dGeometry, band: usize, expand: bool) -> (usize, usize) {
    let span = (g.kernel[0] - 1) * g.dilation[0] + 1;
    let in_rows = ((band - 1) * g.stride[0] + span).min(g.in_h);
    let e = if expand {
        in_rows * g.in_w * g.in_channels
    } else {
        0
    };
    (e, band * g.out_w * g.out_channels)
}

/// The largest band whose scratch fits in [`BAND_BYTES`] (at least one
/// row, at most the layer's).
fn band_rows(g: &Conv2dGeometry, expand: bool) -> usize {
    let fits = |band: usize| {
        let (e, d) = slot_lens(g, band, expand);
        (e + d) * 4 <= BAND_BYTES
    };
    let mut band = 1;
    while band < g.out_h && fits(band + 1) {
        band += 1;
    }
    band
}
