//! Emitter-level snapshots: one step of a small network, rendered as the
//! pieces it contributes to the module, wrapped so that prettyplease can
//! format them.

use cnnc_ir::exec_plan::ExecPlan;
use cnnc_syntax::{RenderStyle, SourceFile};
use quote::{format_ident, quote};

use super::{emit_step, forward_step, Build, StepInput};
use crate::format::format_file;

/// The execution plan of `network t { <body> }`.
pub(crate) fn plan(body: &str) -> ExecPlan {
    let text = format!("network t {{\n{body}\n}}\n");
    let file = SourceFile::new("t.cnn", text);
    let render = |e: cnnc_syntax::Diagnostics| e.render(&file, RenderStyle::Plain);
    let checked = cnnc_ir::check(&file).map_err(render).expect("checks");
    let optimized = cnnc_ir::optimize(checked.graph, &checked.info)
        .map_err(render)
        .expect("optimizes");
    let memory = cnnc_ir::plan_memory(&optimized.graph, &optimized.info)
        .map_err(render)
        .expect("plans memory");
    cnnc_ir::plan_execution(&optimized.graph, &optimized.info, &memory)
        .map_err(render)
        .expect("plans execution")
}

/// The code of the step named `name` (its display name) in the plan of
/// `body`: spec constant, field, constructors and the statements in
/// `forward`.
pub(crate) fn step_code(body: &str, name: &str) -> String {
    let plan = plan(body);
    let step = plan
        .steps
        .iter()
        .find(|step| step.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
            panic!("no step `{name}` in {names:?}")
        });
    let skip = usize::from(step.in_place);
    let input = StepInput {
        step,
        op: quote!(self.op),
        spec: quote!(Self::SPEC),
        inputs: (0..step.inputs.len() - skip)
            .map(|i| {
                let ident = format_ident!("x{}", i);
                quote!(#ident)
            })
            .collect(),
        output: quote!(y),
    };
    let code = emit_step(&input).expect("emits");
    let spec = code
        .spec
        .as_ref()
        .map(|(ty, value)| quote!(const SPEC: #ty = #value;));
    let field = code
        .op_type
        .as_ref()
        .map(|ty| quote!(struct Field { op: #ty }));
    let build = match &code.build {
        Build::None => quote!(),
        Build::Plain(expr) => quote!(fn build() { let op = #expr?; }),
        Build::Weighted { bind, op_type } => quote! {
            fn bind() { let op = #bind?; }
            fn from_blob() { let op = #op_type::from_constants(Self::SPEC, segment)?; }
        },
    };
    let forward = forward_step(step, &code).expect("forward");
    let tokens = quote! {
        #spec
        #field
        #build
        fn forward() {
            #forward
        }
    };
    format_file(tokens).expect("formats")
}
