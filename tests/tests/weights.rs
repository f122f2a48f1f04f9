//! Real weights files of the fixtures, broken the ways users break them,
//! must be reported at the layer whose weights are wrong, naming the file.

use std::path::PathBuf;

use cnnc_interp::Interpreter;
use cnnc_runtime::WeightFile;
use cnnc_syntax::RenderStyle;
use cnnc_tests::{case_names, compare, fixtures_dir, safetensors_raw, Case};

/// The `F32` tensors of a case's weights file: `(name, shape, values)`.
fn f32_tensors(weights: &WeightFile<'_>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    weights
        .names()
        .into_iter()
        .filter(|name| weights.dtype(name) == Some("F32"))
        .filter_map(|name| {
            let shape = weights.shape(name)?.to_vec();
            let values = weights.tensor(name, &shape).ok()?;
            Some((name.to_string(), shape, values))
        })
        .collect()
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-tests-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write weights");
    path
}

fn encode(tensors: &[(String, Vec<usize>, Vec<u8>)], dtype: &str) -> Vec<u8> {
    let raw: Vec<(&str, &str, &[usize], &[u8])> = tensors
        .iter()
        .map(|(name, shape, bytes)| (name.as_str(), dtype, shape.as_slice(), bytes.as_slice()))
        .collect();
    safetensors_raw(&raw)
}

#[test]
fn every_fixture_uses_every_tensor_of_its_file() {
    for name in case_names(&fixtures_dir()) {
        let case = Case::fixture(&name).expect("loads");
        let interpreter = case.interpreter().expect("binds");
        // `num_batches_tracked` counters are present in the batch-norm cases
        // and never reported.
        assert_eq!(interpreter.unused_weights(), [] as [String; 0], "{name}");
    }
}

#[test]
fn a_missing_and_a_misshapen_tensor_point_at_their_layers() {
    let case = Case::fixture("resnet-blocks").expect("loads");
    let weights = case.weights.as_ref().expect("has weights");
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = f32_tensors(weights)
        .into_iter()
        .filter(|(name, _, _)| name != "layer2.0.conv1.weight")
        .map(|(name, shape, values)| {
            let shape = if name == "layer1.0.bn2.running_var" {
                vec![2, 4]
            } else {
                shape
            };
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let path = temp_file("broken.safetensors", &encode(&tensors, "F32"));
    let broken = WeightFile::from_path(&path).expect("a valid file");
    let errors =
        Interpreter::new(&case.checked.graph, &case.checked.info, &broken).expect_err("refused");
    let text = errors
        .to_diagnostics()
        .render(&case.source, RenderStyle::Short);
    let net = case.source.name();
    let file = path.display();
    // The runtime would suggest `layer1.0.conv1.weight` (one edit away) for
    // the missing tensor; binding drops suggestions that another layer loads.
    assert_eq!(
        text,
        format!(
            "{net}:9:5: error: weights file `{file}`: tensor `layer1.0.bn2.running_var` has the wrong shape: expected [8], found [2, 4]\n\
             {net}:12:5: error: weights file `{file}`: tensor `layer2.0.conv1.weight` not found\n"
        )
    );
    let rich = errors
        .to_diagnostics()
        .render(&case.source, RenderStyle::Plain);
    assert!(
        rich.contains("9 │     layer1.0.bn2 = batchnorm2d"),
        "{rich}"
    );
    assert!(
        rich.contains("this `conv2d` needs `layer2.0.conv1.weight`"),
        "{rich}"
    );
    let _ = std::fs::remove_file(&path);
}

/// The same values stored as F64 load exactly (f32 → f64 → f32 is exact),
/// so the output is bit for bit the same; F16 storage rounds the weights,
/// and the result moves, but stays close.
#[test]
fn f64_and_f16_weights_convert() {
    let case = Case::fixture("lenet").expect("loads");
    let weights = case.weights.as_ref().expect("has weights");
    let original = case.run_interpreter().expect("runs").data;
    let tensors = f32_tensors(weights);

    let as_f64: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes = values
                .iter()
                .flat_map(|&v| f64::from(v).to_le_bytes())
                .collect();
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let bytes = encode(&as_f64, "F64");
    let file = WeightFile::from_bytes(&bytes).expect("valid");
    let mut net = Interpreter::new(&case.checked.graph, &case.checked.info, &file).expect("binds");
    assert_eq!(net.run(&case.input.data).expect("runs"), original);

    let as_f16: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes = values
                .iter()
                .flat_map(|&v| f32_to_f16_bits(v).to_le_bytes())
                .collect();
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let bytes = encode(&as_f16, "F16");
    let file = WeightFile::from_bytes(&bytes).expect("valid");
    let mut net = Interpreter::new(&case.checked.graph, &case.checked.info, &file).expect("binds");
    let rounded = net.run(&case.input.data).expect("runs");
    assert_ne!(rounded, original, "f16 rounding changes the weights");
    // f16 has an 11-bit significand: weights move by up to 2^-11 relative.
    let comparison = compare(&rounded, &original);
    assert!(
        comparison.max_abs_error < 1e-2 * comparison.scale,
        "{comparison}"
    );
}

/// Round-to-nearest-even f32 → f16 for normal, in-range values (the
/// fixtures' weights are of magnitude ~1).
fn f32_to_f16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = bits & 0x7f_ffff;
    if value == 0.0 || exponent <= 0 {
        return sign; // Zero, or too small for a normal f16: flush.
    }
    let mut half = (u32::from(sign) << 16) | ((exponent as u32) << 10) | (mantissa >> 13);
    let rest = mantissa & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        half += 1;
    }
    (half & 0xffff) as u16 | sign
}

#[test]
fn a_corrupt_file_is_refused_with_its_name() {
    let case = Case::fixture("lenet").expect("loads");
    let bytes = std::fs::read(case.dir.join("weights.safetensors")).expect("read");
    let path = temp_file("truncated.safetensors", &bytes[..bytes.len() / 2]);
    let error = WeightFile::from_path(&path).expect_err("refused");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("weights file `{}`: tensor `", path.display())),
        "{message}"
    );
    assert!(message.contains("the file is truncated"), "{message}");
    let _ = std::fs::remove_file(&path);
}
