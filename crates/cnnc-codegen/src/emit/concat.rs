//! `concat`: each part with its row length, as a stack array (no
//! allocation).

use cnnc_kernels::ops::concat::ConcatSpec;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::{int, ToLiteral};

pub(crate) fn emit(input: &StepInput<'_>, spec: &ConcatSpec, inners: &[usize]) -> StepCode {
    let (op, spec_const, y) = (&input.op, &input.spec, &input.output);
    let parts = input.inputs.iter().zip(inners).map(|(x, &inner)| {
        let inner = int(inner);
        quote!((#x, #inner))
    });
    StepCode {
        op_type: Some(quote!(::cnnc_runtime::kernels::ops::concat::ConcatOp)),
        spec: Some((
            quote!(::cnnc_runtime::kernels::ops::concat::ConcatSpec),
            spec.literal(),
        )),
        build: Build::Plain(
            quote!(::cnnc_runtime::kernels::ops::concat::ConcatOp::new(#spec_const)),
        ),
        run: quote!(#op.run(ctx, batch, &[#(#parts),*], #y)),
        summary: format!(
            "concat of {} parts {:?} × {} rows",
            inners.len(),
            inners,
            spec.outer
        ),
        scratch: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn channels_of_two_branches() {
        let code = step_code(
            "input x: [2, 3, 3]
             a = relu
             b = sigmoid from x
             c = concat(a, b, dim=1)
             s = softmax(dim=3)",
            "c",
        );
        insta::assert_snapshot!(code);
    }
}
