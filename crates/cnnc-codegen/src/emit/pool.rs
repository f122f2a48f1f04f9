//! `maxpool2d`, `avgpool2d` and `adaptive_avgpool2d`.

use cnnc_kernels::ops::pool::{AdaptiveAvgPoolSpec, AvgPoolSpec, MaxPoolSpec};
use proc_macro2::TokenStream;
use quote::quote;

use super::{Build, StepCode, StepInput};
use crate::literal::ToLiteral;

fn plain(
    input: &StepInput<'_>,
    op_type: TokenStream,
    spec_type: TokenStream,
    literal: TokenStream,
    summary: String,
) -> StepCode {
    let (op, spec) = (&input.op, &input.spec);
    let x = input.inputs.first().cloned().unwrap_or_default();
    let y = &input.output;
    StepCode {
        build: Build::Plain(quote!(#op_type::new(#spec))),
        op_type: Some(op_type),
        spec: Some((spec_type, literal)),
        run: quote!(#op.run(ctx, batch, #x, #y)),
        summary,
        scratch: false,
    }
}

pub(crate) fn emit_max(input: &StepInput<'_>, spec: &MaxPoolSpec) -> StepCode {
    let g = &spec.geometry;
    plain(
        input,
        quote!(::cnnc_runtime::kernels::ops::pool::MaxPoolOp),
        quote!(::cnnc_runtime::kernels::ops::pool::MaxPoolSpec),
        spec.literal(),
        format!("maxpool2d {}x{}/{}", g.kernel[0], g.kernel[1], g.stride[0]),
    )
}

pub(crate) fn emit_avg(input: &StepInput<'_>, spec: &AvgPoolSpec) -> StepCode {
    let g = &spec.geometry;
    plain(
        input,
        quote!(::cnnc_runtime::kernels::ops::pool::AvgPoolOp),
        quote!(::cnnc_runtime::kernels::ops::pool::AvgPoolSpec),
        spec.literal(),
        format!("avgpool2d {}x{}/{}", g.kernel[0], g.kernel[1], g.stride[0]),
    )
}

pub(crate) fn emit_adaptive(input: &StepInput<'_>, spec: &AdaptiveAvgPoolSpec) -> StepCode {
    plain(
        input,
        quote!(::cnnc_runtime::kernels::ops::pool::AdaptiveAvgPoolOp),
        quote!(::cnnc_runtime::kernels::ops::pool::AdaptiveAvgPoolSpec),
        spec.literal(),
        format!(
            "adaptive_avgpool2d {}x{} → {}x{}",
            spec.input[0], spec.input[1], spec.output[0], spec.output[1]
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn a_max_pool_with_padding_and_ceil_mode() {
        let code = step_code(
            "input x: [3, 7, 7]
             p = maxpool2d(3, stride=2, padding=1, ceil_mode=true)",
            "p",
        );
        insta::assert_snapshot!(code);
    }

    #[test]
    fn an_average_pool_excluding_padding() {
        let code = step_code(
            "input x: [3, 8, 8]
             p = avgpool2d(3, stride=2, padding=1, count_include_pad=false)",
            "p",
        );
        insta::assert_snapshot!(code);
    }

    #[test]
    fn an_adaptive_pool() {
        let code = step_code(
            "input x: [3, 7, 5]
             p = adaptive_avgpool2d((2, 3))
             relu",
            "p",
        );
        insta::assert_snapshot!(code);
    }
}
