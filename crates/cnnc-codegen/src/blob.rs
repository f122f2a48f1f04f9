//! The weight blob: every weighted step's operator built by
//! `cnnc_runtime::bind` (exactly as the interpreter's fast mode and the
//! generated `from_safetensors` build it), its `constants()` appended at a
//! 64-byte aligned offset.

use cnnc_ir::exec_plan::{ExecPlan, Kernel, StepWeights};
use cnnc_runtime::embed::push_segment;
use cnnc_runtime::WeightFile;

use crate::{CodegenError, WeightError};

/// A packed blob and where each weighted step's constants are.
pub(crate) struct Blob {
    /// The file's bytes.
    pub(crate) bytes: Vec<u8>,
    /// (byte offset, length in floats) per weighted step, in step order.
    pub(crate) segments: Vec<(usize, usize)>,
}

/// Binds and packs every weighted step; reports every layer whose weights
/// do not fit, not only the first.
pub(crate) fn pack(plan: &ExecPlan, weights: &WeightFile<'_>) -> Result<Blob, CodegenError> {
    let mut bytes = Vec::new();
    let mut segments = Vec::new();
    let mut errors = Vec::new();
    for step in &plan.steps {
        let Some(source) = &step.weights else {
            continue;
        };
        let constants = match (&step.kernel, source) {
            (
                Kernel::Conv2d(spec),
                StepWeights::Conv2d {
                    module,
                    bias,
                    batchnorm,
                    flip,
                },
            ) => {
                let bn = batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps));
                cnnc_runtime::bind::conv2d(weights, *spec, module, *bias, bn, *flip)
                    .map(|op| op.constants().to_vec())
            }
            (Kernel::Bottleneck(spec), weights_of_block) => {
                let (expand, depthwise, project) =
                    crate::emit::bottleneck::sources(&step.name, weights_of_block)?;
                cnnc_runtime::bind::bottleneck(
                    weights,
                    **spec,
                    expand.map(conv_weights),
                    conv_weights(depthwise),
                    conv_weights(project),
                )
                .map(|op| op.constants().to_vec())
            }
            (
                Kernel::Linear(spec),
                StepWeights::Linear {
                    module,
                    bias,
                    batchnorm,
                },
            ) => {
                let bn = batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps));
                cnnc_runtime::bind::linear(weights, *spec, module, *bias, bn)
                    .map(|op| op.constants().to_vec())
            }
            (Kernel::BatchNorm(spec), StepWeights::BatchNorm { module, eps }) => {
                cnnc_runtime::bind::batchnorm2d(weights, *spec, module, *eps)
                    .map(|op| op.constants().to_vec())
            }
            _ => {
                return Err(CodegenError::Internal(format!(
                    "step `{}`: its weights do not match its kernel",
                    step.name
                )))
            }
        };
        match constants {
            Ok(values) => segments.push((push_segment(&mut bytes, &values), values.len())),
            Err(error) => errors.push(WeightError {
                layer: step.name.clone(),
                node: step.node,
                error,
            }),
        }
    }
    if errors.is_empty() {
        Ok(Blob { bytes, segments })
    } else {
        Err(CodegenError::Weights(errors))
    }
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
