//! A fused inverted residual block (`BottleneckOp`): expansion (optional),
//! depthwise convolution and projection run band by band.

use cnnc_ir::exec_plan::{ConvSource, StepWeights};
use cnnc_kernels::ops::conv::{BottleneckSpec, Conv2dSpec};
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::float64;
use crate::CodegenError;

/// The block's weights: `(expansion, depthwise, projection)`.
#[allow(clippy::type_complexity)]
pub(crate) fn sources<'a>(
    name: &str,
    weights: &'a StepWeights,
) -> Result<(Option<ConvSource<'a>>, ConvSource<'a>, ConvSource<'a>), CodegenError> {
    weights.bottleneck_sources().ok_or_else(|| {
        CodegenError::Internal(format!(
            "block `{name}`: its weights are not two or three convolutions'"
        ))
    })
}

pub(crate) fn emit(input: &StepInput<'_>, spec: &BottleneckSpec) -> Result<StepCode, CodegenError> {
    let Some(weights) = &input.step.weights else {
        return Err(CodegenError::Internal(format!(
            "block `{}` without its weights",
            input.step.name
        )));
    };
    let (expand, depthwise, project) = sources(&input.step.name, weights)?;
    if expand.is_some() != spec.expand.is_some() {
        return Err(CodegenError::Internal(format!(
            "block `{}`: its expansion and its weights disagree",
            input.step.name
        )));
    }
    let source = |source: ConvSource<'_>| {
        let ConvSource {
            module,
            bias,
            batchnorm,
            flip,
        } = source;
        let batchnorm = match batchnorm {
            Some((name, eps)) => {
                let eps = float64(eps);
                quote!(Some((#name, #eps)))
            }
            None => quote!(None),
        };
        quote! {
            ::cnnc_runtime::bind::ConvWeights {
                module: #module,
                bias: #bias,
                batchnorm: #batchnorm,
                flip: #flip,
            }
        }
    };
    let expand = match expand {
        Some(expand) => {
            let expand = source(expand);
            quote!(Some(#expand))
        }
        None => quote!(None),
    };
    let (depthwise, project) = (source(depthwise), source(project));
    let spec_const = &input.spec;
    let op = &input.op;
    let [x, residual @ ..] = input.inputs.as_slice() else {
        return Err(CodegenError::Internal("a block without input".into()));
    };
    let residual = match (spec.project.has_residual, residual) {
        (true, [residual]) => quote!(Some(#residual)),
        (false, []) => quote!(None),
        _ => {
            return Err(CodegenError::Internal(format!(
                "block `{}`: the residual and the inputs disagree",
                input.step.name
            )))
        }
    };
    let y = &input.output;
    Ok(StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::conv::BottleneckOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::conv::BottleneckSpec),
            crate::literal::ToLiteral::literal(spec),
        )),
        build: Build::Weighted {
            bind: quote!(::cnnc_runtime::bind::bottleneck(&weights, #spec_const, #expand, #depthwise, #project)),
            op_type: quote!(::cnnc_runtime::kernels::ops::conv::BottleneckOp),
        },
        run: quote!(#op.run(ctx, batch, #x, #residual, #y, scratch)),
        summary: summary(spec),
        scratch: true,
    })
}

/// `1x1 16→96 relu6, depthwise 3x3/2 relu6, 1x1 96→24 + residual`.
fn summary(spec: &BottleneckSpec) -> String {
    let layer = |spec: &Conv2dSpec| {
        let g = &spec.geometry;
        let mut text = if spec.algorithm == cnnc_kernels::ops::conv::Algorithm::Depthwise {
            format!("depthwise {}x{}", g.kernel[0], g.kernel[1])
        } else {
            format!("1x1 {}→{}", g.in_channels, g.out_channels)
        };
        if g.stride != [1, 1] {
            text.push_str(&format!("/{}", g.stride[0]));
        }
        if spec.has_residual {
            text.push_str(" + residual");
        }
        if spec.activation != cnnc_kernels::Activation::Identity {
            text.push_str(&format!(" {}", spec.activation.name()));
        }
        text
    };
    let layers: Vec<String> = spec
        .expand
        .iter()
        .chain([&spec.depthwise, &spec.project])
        .map(layer)
        .collect();
    format!("fused block: {}", layers.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn an_inverted_residual_block_with_its_residual() {
        // Large enough to be fused: the depthwise layer's input is 1 MiB.
        let code = step_code(
            "input x: [16, 64, 64]
             e = conv2d(64, 1, bias=false)
             e_bn = batchnorm2d
             e_act = relu6
             d = conv2d(64, 3, padding=1, groups=64, bias=false)
             d_bn = batchnorm2d
             d_act = relu6
             p = conv2d(16, 1, bias=false)
             p_bn = batchnorm2d
             out = add(p_bn, x)",
            "e + d + p",
        );
        insta::assert_snapshot!(code);
    }
}
