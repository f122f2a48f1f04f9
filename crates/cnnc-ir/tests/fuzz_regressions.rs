//! Runs the fuzz target's work on its seeds (`fuzz/seeds/`) and on every
//! input that once crashed it (`fuzz/regressions/`), so plain `cargo test`
//! keeps them fixed. Seeds named `error-*` must be refused with errors, the
//! other seeds (valid conformance networks) must check; a regression input
//! only has to give a network or diagnostics without panicking.

use std::path::{Path, PathBuf};

use cnnc_syntax::{RenderStyle, SourceFile};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"));
    files.sort();
    files
}

/// What the fuzz target does; returns whether the input checked.
fn run(path: &Path) -> bool {
    let bytes = std::fs::read(path).expect("readable");
    let file = SourceFile::from_bytes("fuzz.cnn", bytes);
    match cnnc_ir::check(&file) {
        Ok(checked) => {
            let _ = cnnc_ir::dot::to_dot(&checked.graph, &checked.info);
            let weights = cnnc_ir::expected_weights(&checked.graph, &checked.info);
            let params: u64 = weights
                .iter()
                .filter(|w| !w.name.ends_with("running_mean") && !w.name.ends_with("running_var"))
                .map(|w| w.shape.iter().product::<usize>() as u64)
                .sum();
            assert_eq!(params, checked.info.total_params, "{}", path.display());
            for node in checked.graph.node_ids() {
                let _ = checked.graph[node].op.summary();
            }
            true
        }
        Err(diagnostics) => {
            assert!(
                diagnostics.has_errors(),
                "{}: failure without an error",
                path.display()
            );
            let rendered = diagnostics.render(&file, RenderStyle::Plain);
            assert!(rendered.starts_with("error") || rendered.starts_with("warning"));
            let _ = diagnostics.render(&file, RenderStyle::Short);
            false
        }
    }
}

#[test]
fn seeds() {
    let seeds = files("seeds");
    assert!(seeds.len() >= 40, "only {} seeds", seeds.len());
    for seed in seeds {
        let name = seed
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let checks = run(&seed);
        assert_eq!(checks, !name.starts_with("error-"), "{name}");
    }
}

#[test]
fn crash_regressions() {
    for input in files("regressions") {
        run(&input);
    }
}
