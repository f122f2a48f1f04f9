//! Weights → packed kernel operators, one function per weighted layer.
//!
//! Each function takes only kernel-level arguments (the operator's `…Spec`,
//! PyTorch module names, flags), so generated code's `from_safetensors` can
//! call it with literals, and the interpreter's fast mode calls the same
//! functions from its execution plan. Each one:
//!
//! 1. loads the module's tensors from the [`WeightFile`] by their PyTorch
//!    `state_dict` names, checking each shape against the one the spec
//!    implies (errors name the tensor and the file: [`Error::MissingTensor`],
//!    [`Error::TensorShape`], [`Error::UnsupportedDtype`]);
//! 2. rotates the kernels of a `flip_kernel` convolution by 180°;
//! 3. folds a batch-norm recorded by the optimizer into the weight and bias
//!    ([`crate::fold::fold_batchnorm`]: `f64`, rounded once);
//! 4. packs the result for the kernel (`Conv2dOp::pack`, ...).
//!
//! An `f32` tensor with no transform to apply is packed straight from the
//! file's bytes (no intermediate copy).
//!
//! A spec that disagrees with the other arguments (`has_bias` false while a
//! bias or batch-norm is given, ...) or that the kernel refuses is an
//! [`Error::Layer`]: a bug in whoever made the spec, never in the weights.
//!
//! ```
//! use cnnc_runtime::kernels::ops::linear::LinearSpec;
//! use cnnc_runtime::kernels::Activation;
//! use cnnc_runtime::{bind, WeightFile};
//!
//! // `fc.weight` = [[2, -1]], no bias.
//! let header = br#"{"fc.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}"#;
//! let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
//! bytes.extend_from_slice(header);
//! for v in [2.0f32, -1.0] {
//!     bytes.extend_from_slice(&v.to_le_bytes());
//! }
//! let weights = WeightFile::from_bytes(&bytes)?;
//! let spec = LinearSpec {
//!     in_features: 2,
//!     out_features: 1,
//!     activation: Activation::Identity,
//!     has_bias: false,
//!     has_residual: false,
//! };
//! let fc = bind::linear(&weights, spec, "fc", false, None)?;
//! let mut y = [0.0f32];
//! fc.run(&cnnc_runtime::kernels::ops::Context::new(), 1, &[3.0, 1.0], None, &mut y)
//!     .map_err(|e| cnnc_runtime::Error::Layer { layer: "fc".into(), reason: e.to_string() })?;
//! assert_eq!(y, [5.0]);
//!
//! // A wrong module name is an error naming the tensor.
//! let error = bind::linear(&weights, spec, "fc2", false, None).unwrap_err();
//! assert!(error.to_string().contains("`fc2.weight` not found"));
//! # Ok::<(), cnnc_runtime::Error>(())
//! ```

use std::borrow::Cow;

use cnnc_kernels::ops::conv::{BottleneckOp, BottleneckSpec, Conv2dOp, Conv2dSpec};
use cnnc_kernels::ops::linear::{LinearOp, LinearSpec};
use cnnc_kernels::ops::norm::{BatchNormOp, BatchNormSpec};
use cnnc_kernels::ops::OpError;
use cnnc_kernels::reference::BatchNorm2dParams;

use crate::fold::{fold_batchnorm, BatchNorm};
use crate::{Error, WeightFile};

/// Loads, checks, transforms and packs a convolution's weights.
///
/// `module` is the layer's `state_dict` module (`layer1.0.conv1`): its
/// `.weight` `[O, C/groups, kh, kw]` and, when `bias`, `.bias` `[O]`.
/// `batchnorm` is a batch-norm folded into the layer (its module and
/// `eps`); `flip` rotates every kernel by 180° (`flip_kernel=true`).
/// `spec.has_bias` must be `bias || batchnorm.is_some()`.
pub fn conv2d(
    weights: &WeightFile<'_>,
    spec: Conv2dSpec,
    module: &str,
    bias: bool,
    batchnorm: Option<(&str, f64)>,
    flip: bool,
) -> Result<Conv2dOp, Error> {
    let g = &spec.geometry;
    check_bias_flags(module, spec.has_bias, bias, batchnorm)?;
    if g.groups == 0 || !g.in_channels.is_multiple_of(g.groups) {
        return Err(layer_error(module, "groups must divide the input channels"));
    }
    let out_channels = g.out_channels;
    let weight_shape = [
        out_channels,
        g.in_channels / g.groups,
        g.kernel[0],
        g.kernel[1],
    ];
    let mut weight = weights.tensor_cow(&format!("{module}.weight"), &weight_shape)?;
    let mut own_bias = load_bias(weights, module, bias, out_channels)?;
    if flip {
        let taps = g.kernel[0] * g.kernel[1];
        if taps > 0 {
            for kernel in weight.to_mut().chunks_exact_mut(taps) {
                kernel.reverse();
            }
        }
    }
    if let Some((bn_module, eps)) = batchnorm {
        own_bias = Some(Cow::Owned(fold(
            weights,
            module,
            weight.to_mut(),
            own_bias.as_deref(),
            bn_module,
            eps,
            out_channels,
        )?));
    }
    Conv2dOp::pack(spec, &weight, own_bias.as_deref()).map_err(|e| op_error(module, e))
}

/// Where one convolution of a fused block takes its weights: the
/// arguments of [`conv2d`] besides the file and the spec.
#[derive(Clone, Copy, Debug)]
pub struct ConvWeights<'a> {
    /// The module (`features.2.conv.0.0`).
    pub module: &'a str,
    /// Whether the module has its own `.bias`.
    pub bias: bool,
    /// A batch-norm folded into the layer (module, `eps`).
    pub batchnorm: Option<(&'a str, f64)>,
    /// Rotate the kernels by 180°.
    pub flip: bool,
}

/// Loads and packs the convolutions of a fused inverted residual block
/// (each as [`conv2d`] does) and fuses them.
pub fn bottleneck(
    weights: &WeightFile<'_>,
    spec: BottleneckSpec,
    expand: Option<ConvWeights<'_>>,
    depthwise: ConvWeights<'_>,
    project: ConvWeights<'_>,
) -> Result<BottleneckOp, Error> {
    let load = |spec: Conv2dSpec, source: ConvWeights<'_>| {
        conv2d(
            weights,
            spec,
            source.module,
            source.bias,
            source.batchnorm,
            source.flip,
        )
    };
    let expand = match (spec.expand, expand) {
        (Some(spec), Some(source)) => Some(load(spec, source)?),
        (None, None) => None,
        _ => {
            return Err(layer_error(
                project.module,
                "the block's expansion and its weights disagree",
            ))
        }
    };
    let depthwise = load(spec.depthwise, depthwise)?;
    let project_op = load(spec.project, project)?;
    BottleneckOp::from_layers(expand.as_ref(), &depthwise, &project_op)
        .map_err(|e| op_error(project.module, e))
}

/// Loads, checks, folds and packs a linear layer's weights: `.weight`
/// `[O, F]` and, when `bias`, `.bias` `[O]` of `module`; `batchnorm` as for
/// [`conv2d`]. `spec.has_bias` must be `bias || batchnorm.is_some()`.
pub fn linear(
    weights: &WeightFile<'_>,
    spec: LinearSpec,
    module: &str,
    bias: bool,
    batchnorm: Option<(&str, f64)>,
) -> Result<LinearOp, Error> {
    check_bias_flags(module, spec.has_bias, bias, batchnorm)?;
    let out_features = spec.out_features;
    let mut weight = weights.tensor_cow(
        &format!("{module}.weight"),
        &[out_features, spec.in_features],
    )?;
    let mut own_bias = load_bias(weights, module, bias, out_features)?;
    if let Some((bn_module, eps)) = batchnorm {
        own_bias = Some(Cow::Owned(fold(
            weights,
            module,
            weight.to_mut(),
            own_bias.as_deref(),
            bn_module,
            eps,
            out_features,
        )?));
    }
    LinearOp::pack(spec, &weight, own_bias.as_deref()).map_err(|e| op_error(module, e))
}

/// Loads and packs a standalone batch-norm: `.weight`, `.bias`,
/// `.running_mean` and `.running_var` `[C]` of `module`
/// (`C = spec.channels`), with its `eps`.
pub fn batchnorm2d(
    weights: &WeightFile<'_>,
    spec: BatchNormSpec,
    module: &str,
    eps: f64,
) -> Result<BatchNormOp, Error> {
    let [weight, bias, running_mean, running_var] = load_batchnorm(weights, module, spec.channels)?;
    let params = BatchNorm2dParams {
        running_mean: &running_mean,
        running_var: &running_var,
        weight: &weight,
        bias: &bias,
        eps,
    };
    BatchNormOp::pack(spec, &params).map_err(|e| op_error(module, e))
}

/// The four tensors of batch-norm `module`, each `[channels]`, in the
/// order weight, bias, running mean, running variance. Every tensor is
/// asked for (and so marked used) even after one fails; the first error is
/// returned.
fn load_batchnorm<'w>(
    weights: &'w WeightFile<'_>,
    module: &str,
    channels: usize,
) -> Result<[Cow<'w, [f32]>; 4], Error> {
    let [weight, bias, running_mean, running_var] =
        ["weight", "bias", "running_mean", "running_var"]
            .map(|tensor| weights.tensor_cow(&format!("{module}.{tensor}"), &[channels]));
    Ok([weight?, bias?, running_mean?, running_var?])
}

/// Folds batch-norm `bn_module` into `weight` and returns the folded bias.
fn fold(
    weights: &WeightFile<'_>,
    module: &str,
    weight: &mut [f32],
    bias: Option<&[f32]>,
    bn_module: &str,
    eps: f64,
    channels: usize,
) -> Result<Vec<f32>, Error> {
    let [gamma, beta, running_mean, running_var] = load_batchnorm(weights, bn_module, channels)?;
    let bn = BatchNorm {
        weight: &gamma,
        bias: &beta,
        running_mean: &running_mean,
        running_var: &running_var,
        eps,
    };
    fold_batchnorm(weight, bias, &bn).map_err(|e| layer_error(module, e.to_string()))
}

/// `{module}.bias` `[channels]` when the layer has one.
fn load_bias<'w>(
    weights: &'w WeightFile<'_>,
    module: &str,
    bias: bool,
    channels: usize,
) -> Result<Option<Cow<'w, [f32]>>, Error> {
    if bias {
        weights
            .tensor_cow(&format!("{module}.bias"), &[channels])
            .map(Some)
    } else {
        Ok(None)
    }
}

fn check_bias_flags(
    module: &str,
    has_bias: bool,
    bias: bool,
    batchnorm: Option<(&str, f64)>,
) -> Result<(), Error> {
    if has_bias == (bias || batchnorm.is_some()) {
        Ok(())
    } else {
        Err(layer_error(
            module,
            format!(
                "the spec says has_bias = {has_bias}, but the layer has {} and {}",
                if bias { "a bias" } else { "no bias" },
                if batchnorm.is_some() {
                    "a folded batch-norm"
                } else {
                    "no folded batch-norm"
                }
            ),
        ))
    }
}

fn layer_error(module: &str, reason: impl Into<String>) -> Error {
    Error::Layer {
        layer: module.to_string(),
        reason: reason.into(),
    }
}

fn op_error(module: &str, error: OpError) -> Error {
    layer_error(module, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnnc_kernels::ops::Context;
    use cnnc_kernels::{Activation, Conv2dGeometry};

    /// A safetensors file of F32 tensors.
    fn safetensors(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
        let mut header = String::from("{");
        let mut data = Vec::new();
        for (i, (name, shape, values)) in tensors.iter().enumerate() {
            let start = data.len();
            for v in *values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!(
                r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{start},{}]}}"#,
                data.len()
            ));
        }
        header.push('}');
        while !(8 + header.len()).is_multiple_of(8) {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        bytes
    }

    /// A 1x1 convolution with 1 input and 2 output channels on one pixel.
    fn pointwise(has_bias: bool) -> Conv2dSpec {
        Conv2dSpec::new(
            Conv2dGeometry {
                batch: 1,
                in_channels: 1,
                in_h: 1,
                in_w: 2,
                out_channels: 2,
                out_h: 1,
                out_w: 2,
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                padding: [0; 4],
                groups: 1,
            },
            Activation::Identity,
            has_bias,
            false,
        )
    }

    fn run_conv(op: &Conv2dOp, input: &[f32], outputs: usize) -> Vec<f32> {
        let mut output = vec![0.0; outputs];
        op.run(
            &Context::with(cnnc_kernels::kernels(), 1),
            1,
            input,
            None,
            &mut output,
            &mut [],
        )
        .expect("runs");
        output
    }

    #[test]
    fn a_folded_batchnorm_scales_weights_and_makes_the_bias() {
        let bytes = safetensors(&[
            ("c.weight", &[2, 1, 1, 1], &[1.0, 2.0]),
            ("bn.weight", &[2], &[2.0, 1.0]),
            ("bn.bias", &[2], &[0.5, 0.0]),
            ("bn.running_mean", &[2], &[1.0, -1.0]),
            ("bn.running_var", &[2], &[3.0, 0.0]),
        ]);
        let weights = WeightFile::from_bytes(&bytes).expect("parses");
        let op = conv2d(
            &weights,
            pointwise(true),
            "c",
            false,
            Some(("bn", 1.0)),
            false,
        )
        .expect("binds");
        // scale = [2/2, 1/1]; y = (w·x - mean)·scale + beta.
        let y = run_conv(&op, &[1.0, 3.0], 4);
        assert_eq!(
            y,
            [(1.0 - 1.0) + 0.5, 2.0 + 1.0, (3.0 - 1.0) + 0.5, 6.0 + 1.0]
        );
        assert!(weights.unused().is_empty());
    }

    #[test]
    fn flipped_kernels_are_rotated() {
        // One 1x3 kernel [1, 2, 3] on a 1x3 input: flipped, it is [3, 2, 1].
        let spec = Conv2dSpec::new(
            Conv2dGeometry {
                batch: 1,
                in_channels: 1,
                in_h: 1,
                in_w: 3,
                out_channels: 1,
                out_h: 1,
                out_w: 1,
                kernel: [1, 3],
                stride: [1, 1],
                dilation: [1, 1],
                padding: [0; 4],
                groups: 1,
            },
            Activation::Identity,
            true,
            false,
        );
        let bytes = safetensors(&[
            ("c.weight", &[1, 1, 1, 3], &[1.0, 2.0, 3.0]),
            ("c.bias", &[1], &[0.25]),
        ]);
        let weights = WeightFile::from_bytes(&bytes).expect("parses");
        let plain = conv2d(&weights, spec, "c", true, None, false).expect("binds");
        let flipped = conv2d(&weights, spec, "c", true, None, true).expect("binds");
        assert_eq!(run_conv(&plain, &[1.0, 10.0, 100.0], 1), [321.25]);
        assert_eq!(run_conv(&flipped, &[1.0, 10.0, 100.0], 1), [123.25]);
    }

    #[test]
    fn errors_name_the_tensor_and_inconsistent_specs_are_layer_errors() {
        let bytes = safetensors(&[("c.weight", &[2, 1, 1, 1], &[1.0, 2.0])]);
        let weights = WeightFile::from_bytes(&bytes).expect("parses");
        let error = conv2d(&weights, pointwise(true), "c", true, None, false).unwrap_err();
        assert_eq!(error.to_string(), "weights: tensor `c.bias` not found");
        let error = conv2d(&weights, pointwise(false), "d", false, None, false).unwrap_err();
        assert!(matches!(error, Error::MissingTensor { ref name, .. } if name == "d.weight"));
        let error = conv2d(&weights, pointwise(false), "c", true, None, false).unwrap_err();
        assert!(
            matches!(error, Error::Layer { ref layer, .. } if layer == "c"),
            "{error}"
        );
        let bad_shape = safetensors(&[("c.weight", &[2, 1, 1, 2], &[1.0; 4])]);
        let weights = WeightFile::from_bytes(&bad_shape).expect("parses");
        let error = conv2d(&weights, pointwise(false), "c", false, None, false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "weights: tensor `c.weight` has the wrong shape: expected [2, 1, 1, 1], found [2, 1, 1, 2]"
        );
    }

    #[test]
    fn standalone_batchnorms_and_linear_layers_bind() {
        let bytes = safetensors(&[
            ("bn.weight", &[2], &[2.0, 1.0]),
            ("bn.bias", &[2], &[0.5, 0.0]),
            ("bn.running_mean", &[2], &[1.0, -1.0]),
            ("bn.running_var", &[2], &[3.0, 0.0]),
            ("fc.weight", &[1, 2], &[1.0, 1.0]),
            ("fc.bias", &[1], &[-1.0]),
        ]);
        let weights = WeightFile::from_bytes(&bytes).expect("parses");
        let spec = BatchNormSpec {
            channels: 2,
            pixels: 1,
            activation: Activation::Identity,
        };
        let bn = batchnorm2d(&weights, spec, "bn", 1.0).expect("binds");
        let ctx = Context::with(cnnc_kernels::kernels(), 1);
        let mut y = [0.0f32; 2];
        bn.run(&ctx, 1, &[3.0, 1.0], &mut y).expect("runs");
        assert_eq!(y, [2.5, 2.0]);
        let spec = LinearSpec {
            in_features: 2,
            out_features: 1,
            activation: Activation::Relu,
            has_bias: true,
            has_residual: false,
        };
        let fc = linear(&weights, spec, "fc", true, None).expect("binds");
        let mut z = [0.0f32];
        fc.run(&ctx, 1, &y, None, &mut z).expect("runs");
        assert_eq!(z, [3.5]);
        assert!(weights.unused().is_empty());
        assert!(batchnorm2d(&weights, spec_with_channels(3), "bn", 1e-5).is_err());
    }

    fn spec_with_channels(channels: usize) -> BatchNormSpec {
        BatchNormSpec {
            channels,
            pixels: 1,
            activation: Activation::Identity,
        }
    }
}
