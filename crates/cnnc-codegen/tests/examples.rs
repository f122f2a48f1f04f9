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

/// The offsets written in the source point at exactly the constants that
/// `cnnc_runtime::bind` packs when loading the same weights: what `new()`
/// borrows is what `from_safetensors` would compute.
#[test]
fn the_blob_holds_the_constants_bind_packs_at_the_offsets_the_source_names() {
    use cnnc_ir::exec_plan::{Kernel, StepWeights};

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lenet5.cnn");
    let generated = generate(&path);
    let blob = generated.blob.expect("a blob");
    // `::cnnc_runtime::embed::segment(BLOB, 1664, 2416)?` → (1664, 2416).
    let segments: Vec<(usize, usize)> = generated
        .source
        .split("::cnnc_runtime::embed::segment(BLOB,")
        .skip(1)
        .map(|rest| {
            let args = rest.split(')').next().expect("arguments");
            let mut numbers = args
                .split(',')
                .map(|n| n.trim().parse::<usize>().expect("a literal"));
            (
                numbers.next().expect("offset"),
                numbers.next().expect("length"),
            )
        })
        .collect();

    let text = std::fs::read_to_string(&path).expect("the example");
    let file = SourceFile::new("lenet5.cnn", text);
    let front = cnnc_codegen::frontend(&file).expect("compiles");
    let weights =
        WeightFile::from_path(path.with_file_name("lenet5.safetensors")).expect("weights");
    let mut packed: Vec<Vec<f32>> = Vec::new();
    for step in &front.plan.steps {
        match (&step.kernel, &step.weights) {
            (
                Kernel::Conv2d(spec),
                Some(StepWeights::Conv2d {
                    module,
                    bias,
                    batchnorm,
                    flip,
                }),
            ) => {
                let bn = batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps));
                let op = cnnc_runtime::bind::conv2d(&weights, *spec, module, *bias, bn, *flip)
                    .expect("binds");
                packed.push(op.constants().to_vec());
            }
            (
                Kernel::Linear(spec),
                Some(StepWeights::Linear {
                    module,
                    bias,
                    batchnorm,
                }),
            ) => {
                let bn = batchnorm.as_ref().map(|bn| (bn.module.as_str(), bn.eps));
                let op =
                    cnnc_runtime::bind::linear(&weights, *spec, module, *bias, bn).expect("binds");
                packed.push(op.constants().to_vec());
            }
            (_, None) => {}
            _ => panic!("lenet5 has only convolutions and linear layers"),
        }
    }
    assert_eq!(segments.len(), packed.len());
    for ((offset, len), constants) in segments.iter().zip(&packed) {
        assert_eq!(offset % 64, 0);
        assert_eq!(*len, constants.len());
        let stored: Vec<f32> = blob[*offset..offset + len * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&stored), bits(constants));
    }
}
