//! `add` with its fused activation, in place over one operand or not.

use cnnc_kernels::ops::elementwise::AddSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::ToLiteral;
use crate::CodegenError;

pub(crate) fn emit(input: &StepInput<'_>, spec: &AddSpec) -> Result<StepCode, CodegenError> {
    let (op, spec_const, y) = (&input.op, &input.spec, &input.output);
    let run = match input.inputs.as_slice() {
        [b] if input.step.in_place => quote!(#op.run_in_place(ctx, batch, #y, #b)),
        [a, b] => quote!(#op.run(ctx, batch, #a, #b, #y)),
        _ => {
            return Err(CodegenError::Internal(format!(
                "add `{}` without two operands",
                input.step.name
            )))
        }
    };
    let mut summary = format!("add of {} floats", spec.len);
    if spec.activation != cnnc_kernels::Activation::Identity {
        summary.push_str(&format!(", {}", spec.activation.name()));
    }
    Ok(StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::elementwise::AddOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::elementwise::AddSpec),
            spec.literal(),
        )),
        build: Build::Plain(
            quote!(::cnnc_runtime::kernels::ops::elementwise::AddOp::new(#spec_const)),
        ),
        run,
        summary,
        scratch: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn an_add_over_its_dead_operand() {
        let code = step_code(
            "input x: [4]
             a = relu
             b = sigmoid from x
             s = add(a, b)
             t = tanh",
            "s",
        );
        insta::assert_snapshot!(code);
    }
}
