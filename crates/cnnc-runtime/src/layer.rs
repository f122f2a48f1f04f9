//! Bound layers over an activation arena, and [`Program`], the list of them
//! that runs a whole network.
//!
//! A [`Layer`] is one kernel call of a compiled network's execution plan
//! (`cnnc_ir::exec_plan`) with its operator built: weights packed (by
//! [`crate::bind`] or from embedded constants), tables derived. Its
//! operands are the caller's input, the caller's output, or regions of the
//! [`Arena`]. The interpreter's fast mode builds the list from the plan;
//! generated code may build the same list from literals.
//!
//! [`Program::forward`] checks the buffers, grows the arena to the batch
//! once (see [`Arena::reserve`]), then runs the layers in order. After the
//! first call with the largest batch it allocates nothing.
//!
//! **Invariant:** a layer's output region overlaps none of its inputs,
//! except for an in-place layer ([`Layer::in_place`]), whose first input is
//! its output region. [`Arena::split`] enforces the first half: a read of a
//! region overlapping the output is an error, never aliasing.

use std::time::{Duration, Instant};

use cnnc_kernels::ops::concat::ConcatOp;
use cnnc_kernels::ops::conv::{BottleneckOp, Conv2dOp};
use cnnc_kernels::ops::elementwise::{ActivationOp, AddOp};
use cnnc_kernels::ops::layout::ReorderOp;
use cnnc_kernels::ops::linear::LinearOp;
use cnnc_kernels::ops::norm::BatchNormOp;
use cnnc_kernels::ops::pool::{AdaptiveAvgPoolOp, AvgPoolOp, MaxPoolOp};
use cnnc_kernels::ops::softmax::SoftmaxOp;
use cnnc_kernels::ops::{Context, OpError};

use crate::arena::{Arena, Reads, Region};
use crate::{forward_batch_size, Error};

/// The most parts a `concat` layer may have (their slices are gathered on
/// the stack, so that running allocates nothing).
pub const MAX_CONCAT_PARTS: usize = 128;

/// A buffer a layer reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// The caller's input (NCHW), read-only.
    Input,
    /// The caller's output buffer.
    Output,
    /// A region of the arena.
    Arena(Region),
}

/// The operator of a layer.
// A network has tens of layers, built once: the size of the largest
// variant does not matter, and boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LayerOp {
    /// A layout change (the network's edges, `flatten`).
    Reorder(ReorderOp),
    /// A plain copy of `len` floats per sample.
    Copy {
        /// Floats per sample.
        len: usize,
    },
    /// A convolution; a second input is its residual.
    Conv2d(Conv2dOp),
    /// A fused inverted residual block; a second input is its projection's
    /// residual.
    Bottleneck(BottleneckOp),
    /// A linear layer; a second input is its residual.
    Linear(LinearOp),
    /// A standalone batch-norm.
    BatchNorm(BatchNormOp),
    /// Max pooling.
    MaxPool(MaxPoolOp),
    /// Average pooling.
    AvgPool(AvgPoolOp),
    /// Adaptive average pooling.
    AdaptiveAvgPool(AdaptiveAvgPoolOp),
    /// An activation.
    Activation(ActivationOp),
    /// `a + b` (two inputs), with an activation.
    Add(AddOp),
    /// Softmax.
    Softmax(SoftmaxOp),
    /// Concatenation of the inputs, part `k` being `inners[k]` floats per
    /// row.
    Concat {
        /// The operator.
        op: ConcatOp,
        /// Each part's row length, in input order.
        inners: Vec<usize>,
    },
}

/// One kernel call of a network.
#[derive(Debug)]
pub struct Layer {
    /// The layer's display name (for errors and profiles).
    pub name: String,
    /// The operator.
    pub op: LayerOp,
    /// What it reads, in the operator's argument order.
    pub inputs: Vec<Operand>,
    /// What it writes (an arena region or [`Operand::Output`]).
    pub output: Operand,
    /// It writes over `inputs[0]`, which is the same region as `output`
    /// (activations, standalone batch-norms, `add`).
    pub in_place: bool,
}

impl Layer {
    /// Floats of scratch the layer needs for `batch` samples.
    pub fn scratch_len(&self, batch: usize) -> usize {
        match &self.op {
            LayerOp::Conv2d(op) => op.scratch_len(batch),
            LayerOp::Bottleneck(op) => op.scratch_len(batch),
            // `a + a` in place: `a` is copied to the scratch first.
            LayerOp::Add(_) if self.in_place && self.inputs.get(1) == Some(&self.output) => {
                match self.output {
                    Operand::Arena(region) => region.len.saturating_mul(batch),
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    /// Runs the layer on `batch` samples. `input` and `output` are the
    /// caller's whole buffers; the arena must have been reserved for the
    /// batch and this layer's scratch. Allocates nothing (but its errors).
    pub fn run(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
        arena: &mut Arena,
    ) -> Result<(), Error> {
        self.run_unnamed(ctx, batch, input, output, arena)
            .map_err(|error| {
                let reason = match error {
                    LayerError::Op(error) => error.to_string(),
                    LayerError::Runtime(Error::Layer { reason, .. }) => reason,
                    LayerError::Runtime(other) => return other,
                };
                Error::Layer {
                    layer: self.name.clone(),
                    reason,
                }
            })
    }

    fn run_unnamed(
        &self,
        ctx: &Context,
        batch: usize,
        input: &[f32],
        output: &mut [f32],
        arena: &mut Arena,
    ) -> Result<(), LayerError> {
        match self.output {
            Operand::Arena(region) => {
                let split = arena.split(batch, region)?;
                let sources = Sources {
                    input,
                    reads: &split.reads,
                };
                if self.in_place {
                    if self.inputs.first() != Some(&self.output) {
                        return Err(self.bug("in place over another region"));
                    }
                    self.run_in_place(ctx, batch, sources, split.output, split.scratch)
                } else {
                    self.run_to(ctx, batch, sources, split.output, split.scratch)
                }
            }
            Operand::Output => {
                if self.in_place {
                    return Err(self.bug("in place over the caller's output"));
                }
                let (reads, scratch) = arena.read_all(batch)?;
                let sources = Sources {
                    input,
                    reads: &reads,
                };
                self.run_to(ctx, batch, sources, output, scratch)
            }
            Operand::Input => Err(self.bug("writes the caller's input")),
        }
    }

    /// Runs a layer whose output is `out`, disjoint from every input.
    fn run_to(
        &self,
        ctx: &Context,
        batch: usize,
        sources: Sources<'_, '_>,
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), LayerError> {
        let input = |index: usize| -> Result<&[f32], LayerError> {
            let operand = self
                .inputs
                .get(index)
                .ok_or_else(|| self.bug("an input is missing"))?;
            sources.get(*operand)
        };
        let optional = |index: usize| -> Result<Option<&[f32]>, LayerError> {
            if index < self.inputs.len() {
                input(index).map(Some)
            } else {
                Ok(None)
            }
        };
        match &self.op {
            LayerOp::Reorder(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::Copy { len } => {
                let source = input(0)?;
                let whole = len.checked_mul(batch);
                if whole != Some(source.len()) || source.len() != out.len() {
                    return Err(self.bug("a copy between buffers of other lengths"));
                }
                out.copy_from_slice(source);
            }
            LayerOp::Conv2d(op) => op.run(ctx, batch, input(0)?, optional(1)?, out, scratch)?,
            LayerOp::Bottleneck(op) => op.run(ctx, batch, input(0)?, optional(1)?, out, scratch)?,
            LayerOp::Linear(op) => op.run(ctx, batch, input(0)?, optional(1)?, out)?,
            LayerOp::BatchNorm(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::MaxPool(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::AvgPool(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::AdaptiveAvgPool(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::Activation(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::Add(op) => op.run(ctx, batch, input(0)?, input(1)?, out)?,
            LayerOp::Softmax(op) => op.run(ctx, batch, input(0)?, out)?,
            LayerOp::Concat { op, inners } => {
                if inners.len() != self.inputs.len() || inners.len() > MAX_CONCAT_PARTS {
                    return Err(self.bug("concat parts and inputs disagree"));
                }
                let mut parts: [(&[f32], usize); MAX_CONCAT_PARTS] = [(&[], 0); MAX_CONCAT_PARTS];
                for (index, (part, &inner)) in parts.iter_mut().zip(inners).enumerate() {
                    *part = (input(index)?, inner);
                }
                op.run(ctx, batch, &parts[..inners.len()], out)?;
            }
        }
        Ok(())
    }

    /// Runs an in-place layer over `data` (its first input and output).
    fn run_in_place(
        &self,
        ctx: &Context,
        batch: usize,
        sources: Sources<'_, '_>,
        data: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), LayerError> {
        match &self.op {
            LayerOp::Activation(op) => op.run_in_place(ctx, batch, data)?,
            LayerOp::BatchNorm(op) => op.run_in_place(ctx, batch, data)?,
            LayerOp::Add(op) => {
                let other = *self
                    .inputs
                    .get(1)
                    .ok_or_else(|| self.bug("an add with one operand"))?;
                if other == self.output {
                    // `a + a`: the second operand is a copy of the first.
                    let copy = scratch
                        .get_mut(..data.len())
                        .ok_or_else(|| self.bug("no scratch for a + a"))?;
                    copy.copy_from_slice(data);
                    op.run_in_place(ctx, batch, data, copy)?;
                } else {
                    op.run_in_place(ctx, batch, data, sources.get(other)?)?;
                }
            }
            _ => return Err(self.bug("in place for an operator that cannot be")),
        }
        Ok(())
    }

    fn bug(&self, reason: &str) -> LayerError {
        LayerError::Runtime(Error::Layer {
            layer: self.name.clone(),
            reason: reason.to_string(),
        })
    }
}

/// What a layer's inputs come from.
#[derive(Clone, Copy)]
struct Sources<'s, 'a> {
    input: &'s [f32],
    reads: &'s Reads<'a>,
}

impl<'s> Sources<'s, '_> {
    fn get(&self, operand: Operand) -> Result<&'s [f32], LayerError> {
        match operand {
            Operand::Input => Ok(self.input),
            Operand::Arena(region) => self.reads.get(region).map_err(LayerError::Runtime),
            Operand::Output => Err(LayerError::Runtime(Error::Layer {
                layer: String::new(),
                reason: "reads the caller's output".to_string(),
            })),
        }
    }
}

/// A layer's failure before it is named.
enum LayerError {
    Op(OpError),
    Runtime(Error),
}

impl From<Error> for LayerError {
    fn from(error: Error) -> LayerError {
        LayerError::Runtime(error)
    }
}

impl From<OpError> for LayerError {
    fn from(error: OpError) -> LayerError {
        LayerError::Op(error)
    }
}

/// A whole network: its layers, its arena and the context they run with.
#[derive(Debug)]
pub struct Program {
    layers: Vec<Layer>,
    arena: Arena,
    ctx: Context,
    input_len: usize,
    output_len: usize,
}

impl Program {
    /// A program running `layers` in order over an arena of `arena_len`
    /// floats per sample, for samples of `input_len` floats in and
    /// `output_len` out, with `ctx`'s kernels and threads. Allocates no
    /// activation memory yet.
    pub fn new(
        layers: Vec<Layer>,
        arena_len: usize,
        input_len: usize,
        output_len: usize,
        ctx: Context,
    ) -> Program {
        Program {
            layers,
            arena: Arena::new(arena_len),
            ctx,
            input_len,
            output_len,
        }
    }

    /// The layers, in execution order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The kernels and threads the layers run with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Replaces the context (another tier or thread count).
    pub fn set_context(&mut self, ctx: Context) {
        self.ctx = ctx;
    }

    /// The arena.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// Floats per input sample.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Floats per output sample.
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Grows the arena (and scratch) to a batch of `batch`; later runs of
    /// at most `batch` samples allocate nothing.
    pub fn reserve(&mut self, batch: usize) -> Result<(), Error> {
        let scratch = self
            .layers
            .iter()
            .map(|layer| layer.scratch_len(batch))
            .max()
            .unwrap_or(0);
        self.arena.reserve(batch, scratch)
    }

    /// Runs the network on `input` (a whole number `N ≥ 1` of NCHW samples)
    /// into `output` (exactly `N` outputs).
    ///
    /// Errors: [`Error::EmptyBatch`], [`Error::InputLength`],
    /// [`Error::OutputLength`] for the buffers; [`Error::BatchTooLarge`] if
    /// the activations cannot be allocated.
    pub fn forward(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), Error> {
        let batch = forward_batch_size(input.len(), output.len(), self.input_len, self.output_len)?;
        self.reserve(batch)?;
        for layer in &self.layers {
            layer.run(&self.ctx, batch, input, output, &mut self.arena)?;
        }
        Ok(())
    }

    /// [`forward`](Self::forward), calling `on_layer(index, elapsed)` after
    /// each layer with the time it took (for profiles).
    pub fn forward_timed(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        mut on_layer: impl FnMut(usize, Duration),
    ) -> Result<(), Error> {
        let batch = forward_batch_size(input.len(), output.len(), self.input_len, self.output_len)?;
        self.reserve(batch)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let start = Instant::now();
            layer.run(&self.ctx, batch, input, output, &mut self.arena)?;
            on_layer(index, start.elapsed());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_kernels::ops::elementwise::{ActivationSpec, AddSpec};
    use cnnc_kernels::ops::layout::{Reorder, ReorderSpec};
    use cnnc_kernels::Activation;

    fn region(offset: usize, len: usize) -> Operand {
        Operand::Arena(Region { offset, len })
    }

    fn layer(name: &str, op: LayerOp, inputs: Vec<Operand>, output: Operand) -> Layer {
        let in_place = inputs.first() == Some(&output);
        Layer {
            name: name.to_string(),
            op,
            inputs,
            output,
            in_place,
        }
    }

    /// `[2, 1, 2]` NCHW in; NHWC; relu in place; x + x (in place over
    /// itself); add the NHWC input; NCHW out.
    fn program(ctx: Context) -> Program {
        let reorder = |reorder| ReorderSpec {
            reorder,
            channels: 2,
            height: 1,
            width: 2,
        };
        let add = AddSpec {
            len: 4,
            activation: Activation::Identity,
        };
        let layers = vec![
            layer(
                "in",
                LayerOp::Reorder(ReorderOp::new(reorder(Reorder::NchwToNhwc)).expect("op")),
                vec![Operand::Input],
                region(0, 4),
            ),
            layer(
                "relu",
                LayerOp::Activation(
                    ActivationOp::new(ActivationSpec {
                        len: 4,
                        activation: Activation::Relu,
                    })
                    .expect("op"),
                ),
                vec![region(0, 4)],
                region(16, 4),
            ),
            layer(
                "double",
                LayerOp::Add(AddOp::new(add).expect("op")),
                vec![region(16, 4), region(16, 4)],
                region(16, 4),
            ),
            layer(
                "sum",
                LayerOp::Add(AddOp::new(add).expect("op")),
                vec![region(16, 4), region(0, 4)],
                region(16, 4),
            ),
            layer(
                "out",
                LayerOp::Reorder(ReorderOp::new(reorder(Reorder::NhwcToNchw)).expect("op")),
                vec![region(16, 4)],
                Operand::Output,
            ),
        ];
        Program::new(layers, 32, 4, 4, ctx)
    }

    #[test]
    fn a_program_runs_its_layers_over_the_arena() {
        let mut program = program(Context::with(cnnc_kernels::kernels(), 1));
        assert_eq!(program.layers()[2].scratch_len(3), 12);
        // Channels [1, -2] and [3, -4]: 3·relu(x) where positive, x otherwise.
        let input = [1.0, -2.0, 3.0, -4.0, 0.5, 0.5, -1.0, 2.0];
        let mut output = [0.0f32; 8];
        program.forward(&input, &mut output).expect("runs");
        assert_eq!(output, [3.0, -2.0, 9.0, -4.0, 1.5, 1.5, -1.0, 6.0]);
        assert_eq!(program.arena().batch_capacity(), 2);
        let mut times = Vec::new();
        let mut one = [0.0f32; 4];
        program
            .forward_timed(&input[..4], &mut one, |index, _| times.push(index))
            .expect("runs");
        assert_eq!(one, output[..4]);
        assert_eq!(times, [0, 1, 2, 3, 4]);
        assert_eq!(program.arena().batch_capacity(), 2);
    }

    #[test]
    fn buffers_and_inconsistent_layers_are_refused() {
        let mut program = program(Context::with(cnnc_kernels::kernels(), 1));
        let mut output = [0.0f32; 4];
        assert!(matches!(
            program.forward(&[], &mut output),
            Err(Error::EmptyBatch { .. })
        ));
        assert!(matches!(
            program.forward(&[0.0; 5], &mut output),
            Err(Error::InputLength { .. })
        ));
        assert!(matches!(
            program.forward(&[0.0; 8], &mut output),
            Err(Error::OutputLength { .. })
        ));
        // A layer reading the region it writes (not in place) is refused.
        let mut bad = program;
        bad.layers[1].inputs = vec![region(16, 4)];
        let error = bad.forward(&[0.0; 4], &mut output).unwrap_err();
        assert!(
            matches!(error, Error::Layer { ref layer, .. } if layer == "relu"),
            "{error}"
        );
    }
}
