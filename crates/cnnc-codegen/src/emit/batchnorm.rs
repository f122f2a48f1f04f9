//! A standalone `batchnorm2d` (one the optimizer could not fold), in place
//! or not.

use cnnc_ir::exec_plan::StepWeights;
use cnnc_kernels::ops::norm::BatchNormSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::{float64, ToLiteral};
use crate::CodegenError;

pub(crate) fn emit(input: &StepInput<'_>, spec: &BatchNormSpec) -> Result<StepCode, CodegenError> {
    let Some(StepWeights::BatchNorm { module, eps }) = &input.step.weights else {
        return Err(CodegenError::Internal(format!(
            "batch-norm `{}` without batch-norm weights",
            input.step.name
        )));
    };
    let spec_const = &input.spec;
    let eps = float64(*eps);
    let (op, y) = (&input.op, &input.output);
    let run = if input.step.in_place {
        quote!(#op.run_in_place(ctx, batch, #y))
    } else {
        let [x] = input.inputs.as_slice() else {
            return Err(CodegenError::Internal(
                "a batch-norm with several inputs".into(),
            ));
        };
        quote!(#op.run(ctx, batch, #x, #y))
    };
    Ok(StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::norm::BatchNormOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::norm::BatchNormSpec),
            spec.literal(),
        )),
        build: Build::Weighted {
            bind: quote!(::cnnc_runtime::bind::batchnorm2d(&weights, #spec_const, #module, #eps)),
            op_type: quote!(::cnnc_runtime::kernels::ops::norm::BatchNormOp),
        },
        run,
        summary: format!("batchnorm2d of {} channels", spec.channels),
        scratch: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn a_batchnorm_after_a_pool_runs_in_place() {
        let code = step_code(
            "input x: [4, 6, 6]
             p = maxpool2d(2)
             bn = batchnorm2d(eps=0.001)",
            "bn",
        );
        insta::assert_snapshot!(code);
    }
}
