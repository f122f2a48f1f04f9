//! The example networks against torchvision: every `state_dict` tensor name
//! and shape, in order, and the parameter count. The reference list is
//! `fixtures/torchvision_state_dicts.json`, written by
//! `fixtures/torchvision_nets.py` from torchvision itself.

use cnnc_syntax::{RenderStyle, SourceFile};

fn check_example(name: &str) -> cnnc_ir::Checked {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(format!("{name}.cnn"));
    let text = std::fs::read_to_string(&path).expect("example is readable");
    let file = SourceFile::new(format!("{name}.cnn"), text);
    match cnnc_ir::check(&file) {
        Ok(checked) => checked,
        Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
    }
}

fn reference(name: &str) -> (u64, Vec<(String, Vec<usize>)>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torchvision_state_dicts.json");
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let model = &json[name];
    let params = model["params"].as_u64().expect("params");
    let tensors = model["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .map(|entry| {
            let name = entry[0].as_str().expect("name").to_string();
            let shape = entry[1]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            (name, shape)
        })
        .collect();
    (params, tensors)
}

fn assert_matches_torchvision(name: &str, expected_params: u64) {
    let checked = check_example(name);
    let (params, tensors) = reference(name);
    assert_eq!(params, expected_params, "fixture of {name}");
    assert_eq!(
        checked.info.total_params, expected_params,
        "{name} parameters"
    );
    let ours: Vec<(String, Vec<usize>)> = cnnc_ir::expected_weights(&checked.graph, &checked.info)
        .into_iter()
        .map(|spec| (spec.name, spec.shape))
        .collect();
    assert_eq!(ours.len(), tensors.len(), "{name}: number of tensors");
    for (i, (ours, theirs)) in ours.iter().zip(&tensors).enumerate() {
        assert_eq!(ours, theirs, "{name}: tensor #{i}");
    }
    assert!(checked.warnings.is_empty(), "{name}: {}", checked.warnings);
}

#[test]
fn resnet18_matches_torchvision() {
    assert_matches_torchvision("resnet18", 11_689_512);
    let checked = check_example("resnet18");
    assert_eq!(checked.info.shape(checked.graph.output()), &[1000]);
    assert_eq!(checked.info.total_macs, 1_814_073_344);
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    assert_matches_torchvision("mobilenet_v2", 3_504_872);
    let checked = check_example("mobilenet_v2");
    assert_eq!(checked.info.total_macs, 300_774_272);
}

#[test]
fn vgg11_matches_torchvision() {
    assert_matches_torchvision("vgg11", 132_863_336);
}

#[test]
fn lenet5_checks() {
    let checked = check_example("lenet5");
    assert_eq!(checked.info.total_params, 61_706);
    assert_eq!(checked.info.shape(checked.graph.output()), &[10]);
    assert_eq!(
        checked.graph.weights_path().map(|(path, _)| path),
        Some("lenet5.safetensors")
    );
}
