//! The example networks load torchvision's weights unchanged: the tensors
//! they expect are exactly the floating-point tensors of torchvision's
//! `state_dict` (names and shapes), `num_batches_tracked` counters aside.
//! The lists in `tests/fixtures/torchvision/` were written by
//! `tests/fixtures/torchvision.py --names`.

use std::collections::BTreeMap;

use cnnc_syntax::{RenderStyle, SourceFile};
use cnnc_tests::{fixtures_dir, repo_dir};

fn expected_by_example(example: &str) -> BTreeMap<String, Vec<usize>> {
    let path = repo_dir().join("examples").join(example);
    let text = std::fs::read_to_string(&path).expect("example exists");
    let file = SourceFile::new(path.display().to_string(), text);
    let checked = cnnc_ir::check(&file)
        .unwrap_or_else(|errors| panic!("{}", errors.render(&file, RenderStyle::Plain)));
    cnnc_ir::expected_weights(&checked.graph, &checked.info)
        .into_iter()
        .map(|spec| (spec.name, spec.shape))
        .collect()
}

fn torchvision_state_dict(model: &str) -> BTreeMap<String, Vec<usize>> {
    let path = fixtures_dir()
        .join("torchvision")
        .join(format!("{model}.json"));
    let text = std::fs::read_to_string(&path).expect("list exists");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let entries = json["state_dict"].as_array().expect("state_dict list");
    entries
        .iter()
        .filter(|entry| {
            entry[1]
                .as_str()
                .is_some_and(|dtype| dtype.starts_with("float"))
        })
        .map(|entry| {
            let name = entry[0].as_str().expect("name").to_string();
            let shape = entry[2]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dimension") as usize)
                .collect();
            (name, shape)
        })
        .collect()
}

fn assert_same(example: &str, model: &str, tensors: usize) {
    let ours = expected_by_example(example);
    let theirs = torchvision_state_dict(model);
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{example} never loads {missing:?}");
    assert!(
        extra.is_empty(),
        "{example} expects tensors torchvision lacks: {extra:?}"
    );
    for (name, shape) in &ours {
        assert_eq!(Some(shape), theirs.get(name), "shape of `{name}`");
    }
    assert_eq!(ours.len(), tensors);
}

#[test]
fn resnet18_has_torchvision_names_and_shapes() {
    // 122 state_dict entries, 20 of them num_batches_tracked.
    assert_same("resnet18.cnn", "resnet18", 102);
}

#[test]
fn mobilenet_v2_has_torchvision_names_and_shapes() {
    // 314 state_dict entries, 52 of them num_batches_tracked.
    assert_same("mobilenet_v2.cnn", "mobilenet_v2", 262);
}
