//! `conv2d` (any algorithm, fused bias, residual and activation).

use cnnc_ir::exec_plan::StepWeights;
use cnnc_kernels::ops::conv::Conv2dSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::{float64, ToLiteral};
use crate::CodegenError;

pub(crate) fn emit(input: &StepInput<'_>, spec: &Conv2dSpec) -> Result<StepCode, CodegenError> {
    let Some(StepWeights::Conv2d {
        module,
        bias,
        batchnorm,
        flip,
    }) = &input.step.weights
    else {
        return Err(CodegenError::Internal(format!(
            "convolution `{}` without convolution weights",
            input.step.name
        )));
    };
    let spec_const = &input.spec;
    let batchnorm = match batchnorm {
        Some(bn) => {
            let (name, eps) = (&bn.module, float64(bn.eps));
            quote!(Some((#name, #eps)))
        }
        None => quote!(None),
    };
    let op = &input.op;
    let [x, residual @ ..] = input.inputs.as_slice() else {
        return Err(CodegenError::Internal("a convolution without input".into()));
    };
    let residual = match (spec.has_residual, residual) {
        (true, [residual]) => quote!(Some(#residual)),
        (false, []) => quote!(None),
        _ => {
            return Err(CodegenError::Internal(format!(
                "convolution `{}`: the residual and the inputs disagree",
                input.step.name
            )))
        }
    };
    let y = &input.output;
    let g = &spec.geometry;
    let mut summary = format!(
        "conv2d {}→{} {}x{}",
        g.in_channels, g.out_channels, g.kernel[0], g.kernel[1]
    );
    if g.stride != [1, 1] {
        summary.push_str(&format!("/{}", g.stride[0]));
    }
    if g.groups > 1 {
        summary.push_str(&format!(" groups {}", g.groups));
    }
    summary.push_str(&format!(", {}", spec.algorithm.name()));
    if spec.has_residual {
        summary.push_str(", + residual");
    }
    if spec.activation != cnnc_kernels::Activation::Identity {
        summary.push_str(&format!(", {}", spec.activation.name()));
    }
    Ok(StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::conv::Conv2dOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::conv::Conv2dSpec),
            spec.literal(),
        )),
        build: Build::Weighted {
            bind: quote!(::cnnc_runtime::bind::conv2d(&weights, #spec_const, #module, #bias, #batchnorm, #flip)),
            op_type: quote!(::cnnc_runtime::kernels::ops::conv::Conv2dOp),
        },
        run: quote!(#op.run(ctx, batch, #x, #residual, #y, scratch)),
        summary,
        scratch: true,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn a_strided_convolution_with_a_folded_batchnorm_and_a_residual() {
        let code = step_code(
            "input x: [8, 9, 9]
             c = conv2d(8, 3, stride=1, padding=1, bias=false)
             bn = batchnorm2d
             s = add(bn, x)
             relu",
            "c",
        );
        insta::assert_snapshot!(code);
    }
}
