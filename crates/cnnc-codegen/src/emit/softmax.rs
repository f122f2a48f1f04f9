//! `softmax` along one axis of the stored layout.

use cnnc_kernels::ops::softmax::SoftmaxSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::ToLiteral;

pub(crate) fn emit(input: &StepInput<'_>, spec: &SoftmaxSpec) -> StepCode {
    let (op, spec_const, y) = (&input.op, &input.spec, &input.output);
    let x = input.inputs.first().cloned().unwrap_or_default();
    StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::softmax::SoftmaxOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::softmax::SoftmaxSpec),
            spec.literal(),
        )),
        build: Build::Plain(
            quote!(::cnnc_runtime::kernels::ops::softmax::SoftmaxOp::new(#spec_const)),
        ),
        run: quote!(#op.run(ctx, batch, #x, #y)),
        summary: format!(
            "softmax over {} (outer {}, inner {})",
            spec.dim, spec.outer, spec.inner
        ),
        scratch: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn along_the_channels_of_an_nhwc_value() {
        let code = step_code(
            "input x: [5, 2, 3]
             s = softmax(dim=1)",
            "s",
        );
        insta::assert_snapshot!(code);
    }
}
