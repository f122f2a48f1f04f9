//! `linear` (fused bias, residual and activation).

use cnnc_ir::exec_plan::StepWeights;
use cnnc_kernels::ops::linear::LinearSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::{float64, ToLiteral};
use crate::CodegenError;

pub(crate) fn emit(input: &StepInput<'_>, spec: &LinearSpec) -> Result<StepCode, CodegenError> {
    let Some(StepWeights::Linear {
        module,
        bias,
        batchnorm,
    }) = &input.step.weights
    else {
        return Err(CodegenError::Internal(format!(
            "linear layer `{}` without linear weights",
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
        return Err(CodegenError::Internal(
            "a linear layer without input".into(),
        ));
    };
    let residual = match (spec.has_residual, residual) {
        (true, [residual]) => quote!(Some(#residual)),
        (false, []) => quote!(None),
        _ => {
            return Err(CodegenError::Internal(format!(
                "linear layer `{}`: the residual and the inputs disagree",
                input.step.name
            )))
        }
    };
    let y = &input.output;
    let mut summary = format!("linear {}→{}", spec.in_features, spec.out_features);
    if spec.has_residual {
        summary.push_str(", + residual");
    }
    if spec.activation != cnnc_kernels::Activation::Identity {
        summary.push_str(&format!(", {}", spec.activation.name()));
    }
    Ok(StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::linear::LinearOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::linear::LinearSpec),
            spec.literal(),
        )),
        build: Build::Weighted {
            bind: quote!(::cnnc_runtime::bind::linear(&weights, #spec_const, #module, #bias, #batchnorm)),
            op_type: quote!(::cnnc_runtime::kernels::ops::linear::LinearOp),
        },
        run: quote!(#op.run(ctx, batch, #x, #residual, #y)),
        summary,
        scratch: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn a_linear_layer_with_its_activation() {
        let code = step_code(
            "input x: [12]
             fc = linear(5)
             relu
             fc2 = linear(3, bias=false)",
            "fc",
        );
        insta::assert_snapshot!(code);
    }
}
