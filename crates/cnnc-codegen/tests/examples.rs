//! The generated module of every example network (`examples/*.cnn`),
//! snapshotted (the blob excluded: a network with a `weights` statement is
//! generated with its weights, so the snapshot shows `new()` and the blob's
//! segment offsets). Review changes with `cargo insta review`; CI runs with
//! `INSTA_UPDATE=no`.
//!
//! Also: generating twice gives the same bytes (source and blob).

use std::path::Path;

use cnnc_runtime::WeightFile;
use cnnc_syntax::{RenderStyle, SourceFile};

fn generate(path: &Path) -> cnnc_codegen::Generated {
    let text = std::fs::read_to_string(path).expect("the example");
    let name = format!(
        "examples/{}",
        path.file_name().and_then(|n| n.to_str()).expect("utf-8")
    );
    let file = SourceFile::new(name.clone(), text);
    let front = cnnc_codegen::frontend(&file)
        .map_err(|e| e.render(&file, RenderStyle::Plain))
        .expect("the example compiles");
    let weights = front.graph.weights_path().map(|(weights, _)| {
        let dir = path.parent().expect("a folder");
        WeightFile::from_path(dir.join(weights)).expect("the example's weights")
    });
    let blob_file = format!(
        "{}.weights.bin",
        path.file_stem().and_then(|s| s.to_str()).expect("utf-8")
    );
    let mut options = cnnc_codegen::Options::new(&name);
    if let Some(weights) = &weights {
        options = options.weights(weights, &blob_file);
    }
    cnnc_codegen::generate(&front.plan, &options).expect("generates")
}

#[test]
fn generated_modules_of_the_examples() {
    insta::glob!("../../../examples", "*.cnn", |path| {
        let generated = generate(path);
        insta::assert_snapshot!(generated.source);
    });
}

#[test]
fn generation_is_deterministic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lenet5.cnn");
    let first = generate(&path);
    let second = generate(&path);
    assert!(first.blob.is_some());
    assert_eq!(first, second);
    // LeNet-5's five layers, each segment 64-byte aligned.
    let blob = first.blob.expect("a blob");
    assert_eq!(blob.len() % 4, 0);
    assert_eq!(
        first
            .source
            .matches("::cnnc_runtime::embed::segment(")
            .count(),
        5
    );
}
