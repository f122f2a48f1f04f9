//! Layout changes: the input edge (NCHW → NHWC), the output edge and
//! `flatten` (NHWC → NCHW).

use cnnc_kernels::ops::layout::{Reorder, ReorderSpec};
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::ToLiteral;

pub(crate) fn emit(input: &StepInput<'_>, spec: &ReorderSpec) -> StepCode {
    let (op, spec_const, y) = (&input.op, &input.spec, &input.output);
    let x = input.inputs.first().cloned().unwrap_or_default();
    let direction = match spec.reorder {
        Reorder::NchwToNhwc => "NCHW → NHWC",
        Reorder::NhwcToNchw => "NHWC → NCHW",
    };
    StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::layout::ReorderOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::layout::ReorderSpec),
            spec.literal(),
        )),
        build: Build::Plain(
            quote!(::cnnc_runtime::kernels::ops::layout::ReorderOp::new(#spec_const)),
        ),
        run: quote!(#op.run(ctx, batch, #x, #y)),
        summary: format!(
            "reorder {direction} of [{}, {}, {}]",
            spec.channels, spec.height, spec.width
        ),
        scratch: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn the_input_edge_and_a_flatten() {
        let code = step_code(
            "input x: [5, 4, 4]
             c = conv2d(2, 3)
             f = flatten
             fc = linear(2)",
            "input",
        );
        insta::assert_snapshot!(code);
        let code = step_code(
            "input x: [5, 4, 4]
             c = conv2d(2, 3)
             f = flatten
             fc = linear(2)",
            "f",
        );
        insta::assert_snapshot!(code);
    }
}
