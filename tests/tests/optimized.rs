//! The optimizer's passes (dead-node and identity elimination, batch-norm
//! folding, activation and residual fusion) do not change a single bit of
//! any fixture's output in the reference mode, which executes a fused
//! epilogue as the operations it replaced (a folded batch-norm as a
//! batch-norm). Also checks that each pass fires on the fixtures, so that a
//! pass that silently stops firing shows.

use cnnc_interp::{Interpreter, Mode, Options};
use cnnc_ir::{Graph, GraphInfo};
use cnnc_tests::{case_names, fixtures_dir, Case};

#[test]
fn optimized_graphs_give_the_same_bits() {
    let mut failures = Vec::new();
    let mut fused = Vec::new();
    let names = case_names(&fixtures_dir());
    for name in &names {
        match check(name) {
            Ok(true) => fused.push(name.as_str()),
            Ok(false) => {}
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
    // Each pass fires on these: batch-norm folding and activation fusion
    // (conv-bn-relu-b3), residual fusion (add-residual, resnet-blocks),
    // linear + relu (lenet), dropout elimination (dropout).
    for case in [
        "conv-bn-relu-b3",
        "add-residual",
        "resnet-blocks",
        "mobilenet-blocks",
        "lenet",
        "dropout",
    ] {
        assert!(
            fused.contains(&case),
            "`{case}` was not optimized: {fused:?}"
        );
    }
}

/// Whether the optimizer removed any node.
fn check(name: &str) -> Result<bool, String> {
    let case = Case::fixture(name)?;
    let plain = reference_run(&case, &case.checked.graph, &case.checked.info)?;
    let optimized = cnnc_ir::optimize(case.checked.graph.clone(), &case.checked.info)
        .map_err(|errors| errors.render(&case.source, cnnc_syntax::RenderStyle::Plain))?;
    let fused = optimized.graph.len() < case.checked.graph.len();
    let result = reference_run(&case, &optimized.graph, &optimized.info)?;
    let same = result.len() == plain.len()
        && result
            .iter()
            .zip(&plain)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    if !same {
        let worst = cnnc_tests::compare(&result, &plain);
        return Err(format!("optimized output differs: {worst}"));
    }
    Ok(fused)
}

/// The case's input through `graph` in the reference mode, as given.
fn reference_run(case: &Case, graph: &Graph, info: &GraphInfo) -> Result<Vec<f32>, String> {
    let options = Options::new().mode(Mode::Reference);
    let mut interpreter = Interpreter::with_options(graph, info, case.weights.as_ref(), &options)
        .map_err(|errors| errors.to_string())?;
    interpreter.run(&case.input.data).map_err(|e| e.to_string())
}
