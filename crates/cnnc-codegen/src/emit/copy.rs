//! A plain copy (an edge whose NCHW and NHWC layouts coincide): inline
//! code, no operator.

use quote::quote;

use super::{Build, StepCode, StepInput};

pub(crate) fn emit(input: &StepInput<'_>, len: usize) -> StepCode {
    let y = &input.output;
    let x = input.inputs.first().cloned().unwrap_or_default();
    StepCode {
        op_type: None,
        spec: None,
        build: Build::None,
        run: quote! {
            ::cnnc_runtime::kernels::ops::check_len("copy", #x.len(), #y.len())
                .map(|()| #y.copy_from_slice(#x))
        },
        summary: format!("copy of {len} floats per sample"),
        scratch: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_helpers::step_code;

    #[test]
    fn an_alias_output_is_copied_out() {
        let code = step_code(
            "input x: [3, 4, 4]
             p = adaptive_avgpool2d(1)
             flatten",
            "output",
        );
        insta::assert_snapshot!(code);
    }
}
