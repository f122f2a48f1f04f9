//! The fast execution path: the optimized graph lowered to an execution
//! plan (`cnnc_ir::exec_plan`) and run with the NHWC SIMD kernels over one
//! activation arena (`cnnc_runtime::Program`).
//!
//! Building a [`FastPlan`] reads every weight tensor once:
//!
//! 1. the weights are checked against the graph **as written** ([`check`]:
//!    each tensor's name, shape and dtype; `f32` tensors are borrowed from
//!    the file, not copied), so errors point at the layers the user wrote,
//!    including those the optimizer removes;
//! 2. the graph is optimized, its memory planned and lowered to steps;
//! 3. each weighted step is bound by `cnnc_runtime::bind` (loaded, flipped,
//!    batch-norm folded in `f64`, packed), exactly as generated code's
//!    `from_safetensors` does.
//!
//! Running allocates nothing once the arena has grown to the batch
//! (`Program::forward`); results are bit-identical for every thread count.
//!
//! [`check`]: crate::bind::check

use cnnc_ir::exec_plan::{ExecPlan, Kernel, Operand, StepWeights};
use cnnc_ir::{Graph, GraphInfo};
use cnnc_runtime::kernels::ops::concat::ConcatOp;
use cnnc_runtime::kernels::ops::elementwise::{ActivationOp, AddOp};
use cnnc_runtime::kernels::ops::layout::ReorderOp;
use cnnc_runtime::kernels::ops::pool::{AdaptiveAvgPoolOp, AvgPoolOp, MaxPoolOp};
use cnnc_runtime::kernels::ops::softmax::SoftmaxOp;
use cnnc_runtime::kernels::ops::OpError;
use cnnc_runtime::{Context, Layer, LayerOp, Program, Region, WeightFile};

use crate::bind::{self, BindErrorKind, BindErrors};
use crate::RunError;

/// A network bound for the fast kernels.
#[derive(Debug)]
pub(crate) struct FastPlan {
    pub(crate) plan: ExecPlan,
    pub(crate) program: Program,
}

impl FastPlan {
    /// Checks the weights against `graph` (as written), optimizes it, plans
    /// it and binds every step.
    pub(crate) fn new(
        graph: &Graph,
        info: &GraphInfo,
        weights: Option<&WeightFile<'_>>,
        ctx: Context,
    ) -> Result<FastPlan, BindErrors> {
        bind::check(graph, info, weights)?;
        let internal = |errors: cnnc_syntax::Diagnostics| {
            let what = errors
                .iter()
                .next()
                .map_or_else(|| "planning failed".to_string(), |d| d.message.clone());
            BindErrors::internal(graph, graph.output(), what)
        };
        let optimized = cnnc_ir::optimize(graph.clone(), info).map_err(internal)?;
        let memory = cnnc_ir::plan_memory(&optimized.graph, &optimized.info).map_err(internal)?;
        let plan = cnnc_ir::plan_execution(&optimized.graph, &optimized.info, &memory)
            .map_err(internal)?;

        let mut layers = Vec::with_capacity(plan.steps.len());
        let mut errors = Vec::new();
        for step in &plan.steps {
            match bind_step(step, weights) {
                Ok(op) => layers.push(Layer {
                    name: step.name.clone(),
                    op,
                    inputs: step.inputs.iter().map(|&o| operand(o)).collect(),
                    output: operand(step.output),
                    in_place: step.in_place,
                }),
                Err(kind) => errors.push(bind::layer_error(&optimized.graph, step.node, kind)),
            }
        }
        if !errors.is_empty() {
            return Err(BindErrors::from_errors(errors));
        }
        let program = Program::new(layers, plan.arena_len, plan.input_len, plan.output_len, ctx);
        Ok(FastPlan { plan, program })
    }

    /// Runs a batch into `output` (exactly the batch's outputs).
    pub(crate) fn forward(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), RunError> {
        self.program.forward(input, output).map_err(run_error)
    }
}

/// The runtime's errors as the interpreter reports them.
pub(crate) fn run_error(error: cnnc_runtime::Error) -> RunError {
    match error {
        cnnc_runtime::Error::BatchTooLarge {
            batch,
            bytes: Some(bytes),
        } => RunError::OutOfMemory {
            layer: "(activation arena)".to_string(),
            batch,
            bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
        },
        cnnc_runtime::Error::BatchTooLarge { batch, bytes: None } => RunError::TooLarge {
            layer: "(activation arena)".to_string(),
            batch,
        },
        error @ cnnc_runtime::Error::Layer { .. } => RunError::Internal(error.to_string()),
        other => RunError::Buffer(other),
    }
}

fn operand(operand: Operand) -> cnnc_runtime::Operand {
    match operand {
        Operand::Input => cnnc_runtime::Operand::Input,
        Operand::Output => cnnc_runtime::Operand::Output,
        Operand::Arena(region) => cnnc_runtime::Operand::Arena(Region {
            offset: region.offset,
            len: region.len,
        }),
    }
}

/// A bind function's result: weights errors are the user's, layer errors
/// cnnc's.
fn loaded<T>(result: Result<T, cnnc_runtime::Error>) -> Result<T, BindErrorKind> {
    result.map_err(|error| match error {
        cnnc_runtime::Error::Layer { .. } => BindErrorKind::Internal(error.to_string()),
        other => BindErrorKind::Weights(other),
    })
}

/// Builds a step's operator, loading its weights.
fn bind_step(
    step: &cnnc_ir::exec_plan::Step,
    weights: Option<&WeightFile<'_>>,
) -> Result<LayerOp, BindErrorKind> {
    let op_error = |error: OpError| BindErrorKind::Internal(error.to_string());
    let file = || {
        weights.ok_or_else(|| BindErrorKind::Internal("a layer with weights but no file".into()))
    };
    let mismatch = || BindErrorKind::Internal("the step's weights do not match its kernel".into());
    Ok(match (&step.kernel, &step.weights) {
        (Kernel::Reorder(spec), None) => LayerOp::Reorder(ReorderOp::new(*spec).map_err(op_error)?),
        (Kernel::Copy { len }, None) => LayerOp::Copy { len: *len },
        (
            Kernel::Conv2d(spec),
            Some(StepWeights::Conv2d {
                module,
                bias,
                batchnorm,
                flip,
            }),
        ) => LayerOp::Conv2d(loaded(cnnc_runtime::bind::conv2d(
            file()?,
            *spec,
            module,
            *bias,
            batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps)),
            *flip,
        ))?),
        (Kernel::Bottleneck(spec), Some(weights)) => {
            let (expand, depthwise, project) = weights.bottleneck_sources().ok_or_else(mismatch)?;
            LayerOp::Bottleneck(loaded(cnnc_runtime::bind::bottleneck(
                file()?,
                **spec,
                expand.map(conv_weights),
                conv_weights(depthwise),
                conv_weights(project),
            ))?)
        }
        (
            Kernel::Linear(spec),
            Some(StepWeights::Linear {
                module,
                bias,
                batchnorm,
            }),
        ) => LayerOp::Linear(loaded(cnnc_runtime::bind::linear(
            file()?,
            *spec,
            module,
            *bias,
            batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps)),
        ))?),
        (Kernel::BatchNorm(spec), Some(StepWeights::BatchNorm { module, eps })) => {
            LayerOp::BatchNorm(loaded(cnnc_runtime::bind::batchnorm2d(
                file()?,
                *spec,
                module,
                *eps,
            ))?)
        }
        (Kernel::MaxPool(spec), None) => LayerOp::MaxPool(MaxPoolOp::new(*spec).map_err(op_error)?),
        (Kernel::AvgPool(spec), None) => LayerOp::AvgPool(AvgPoolOp::new(*spec).map_err(op_error)?),
        (Kernel::AdaptiveAvgPool(spec), None) => {
            LayerOp::AdaptiveAvgPool(AdaptiveAvgPoolOp::new(*spec).map_err(op_error)?)
        }
        (Kernel::Activation(spec), None) => {
            LayerOp::Activation(ActivationOp::new(*spec).map_err(op_error)?)
        }
        (Kernel::Add(spec), None) => LayerOp::Add(AddOp::new(*spec).map_err(op_error)?),
        (Kernel::Softmax(spec), None) => LayerOp::Softmax(SoftmaxOp::new(*spec).map_err(op_error)?),
        (Kernel::Concat { spec, inners }, None) => {
            if inners.len() > cnnc_runtime::layer::MAX_CONCAT_PARTS {
                return Err(BindErrorKind::Internal(format!(
                    "a concat of {} values (at most {} are supported)",
                    inners.len(),
                    cnnc_runtime::layer::MAX_CONCAT_PARTS
                )));
            }
            LayerOp::Concat {
                op: ConcatOp::new(*spec).map_err(op_error)?,
                inners: inners.clone(),
            }
        }
        _ => return Err(mismatch()),
    })
}

/// The runtime's name for a convolution's weight source.
fn conv_weights(source: cnnc_ir::exec_plan::ConvSource<'_>) -> cnnc_runtime::bind::ConvWeights<'_> {
    let cnnc_ir::exec_plan::ConvSource {
        module,
        bias,
        batchnorm,
        flip,
    } = source;
    cnnc_runtime::bind::ConvWeights {
        module,
        bias,
        batchnorm,
        flip,
    }
}
