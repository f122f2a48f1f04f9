//! A standalone activation, in place or not.

use cnnc_kernels::ops::elementwise::ActivationSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::ToLiteral;

pub(crate) fn emit(input: &StepInput<'_>, spec: &ActivationSpec) -> StepCode {
    let (op, spec_const, y) = (&input.op, &input.spec, &input.output);
    let run = if input.step.in_place {
        quote!(#op.run_in_place(ctx, batch, #y))
    } else {
        let x = input.inputs.first().cloned().unwrap_or_default();
        quote!(#op.run(ctx, batch, #x, #y))
    };
    StepCode {
        op_type: Some(quote!(
            ::cnnc_runtime::kernels::ops::elementwise::ActivationOp
        )),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::elementwise::ActivationSpec),
            spec.literal(),
        )),
        build: Build::Plain(
            quote!(::cnnc_runtime::kernels::ops::elementwise::ActivationOp::new(#spec_const)),
        ),
        run,
        summary: format!("{} of {} floats", spec.activation.name(), spec.len),
        scratch: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn in_place_and_into_the_output() {
        let net = "input x: [4]
             a = leaky_relu(0.2)
             b = sigmoid from x
             s = add(a, b)";
        insta::assert_snapshot!(step_code(net, "a"));
        let net = "input x: [4]
             s = softmax(dim=1)
             t = tanh";
        insta::assert_snapshot!(step_code(net, "t"));
    }
}
