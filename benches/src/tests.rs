//! The benchmarked networks are the layers they claim to be.

use cnnc_ir::WeightSpec;

use super::*;

fn checked(spec: &LayerSpec) -> cnnc_ir::Checked {
    let file = cnnc_syntax::SourceFile::new(spec.name, spec.source());
    match cnnc_ir::check(&file) {
        Ok(checked) => checked,
        Err(errors) => panic!("{}: {errors:?}\n{}", spec.name, spec.source()),
    }
}

#[test]
fn every_layer_checks_with_the_stated_work_and_sizes() {
    assert_eq!(LAYERS.len(), 7);
    for spec in LAYERS {
        let checked = checked(&spec);
        let info = &checked.info;
        let macs = info.total_macs;
        if spec.name.starts_with("maxpool") {
            assert_eq!(macs, 0, "{}", spec.name);
        } else {
            assert_eq!(2 * macs, spec.ops, "{}", spec.name);
        }
        let output: usize = info.shape(checked.graph.output()).iter().product();
        assert_eq!(output as u64, spec.outputs, "{}", spec.name);
        let params: usize = cnnc_ir::expected_weights(&checked.graph, info)
            .iter()
            .map(|w| w.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params as u64, spec.params, "{}", spec.name);
    }
}

#[test]
fn the_issue_layers_have_the_stated_output_shapes() {
    let shape = |name: &str| {
        let spec = LAYERS.iter().find(|s| s.name == name).copied();
        let spec = spec.unwrap_or_else(|| panic!("no layer {name}"));
        let checked = checked(&spec);
        checked.info.shape(checked.graph.output()).to_vec()
    };
    assert_eq!(shape("conv3x3_64_64_56"), [64, 56, 56]);
    assert_eq!(shape("conv3x3_256_256_14"), [256, 14, 14]);
    assert_eq!(shape("conv1x1_256_1024_14"), [1024, 14, 14]);
    assert_eq!(shape("conv7x7s2_3_64_224"), [64, 112, 112]);
    assert_eq!(shape("dw3x3_144_56"), [144, 56, 56]);
    assert_eq!(shape("linear_4096_1000"), [1000]);
    assert_eq!(shape("maxpool3x3s2_64_112"), [64, 56, 56]);
}

#[test]
fn the_fast_plan_times_the_layer_between_the_edge_reorders_if_any() {
    for spec in LAYERS {
        let layer = match OneLayer::new(spec, 1) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        };
        let steps = layer.step_names();
        assert!(
            steps.iter().any(|s| s == LAYER_NAME),
            "{}: {steps:?}",
            spec.name
        );
        if matches!(
            spec.name,
            "maxpool3x3s2_64_112" | "dw3x3_144_56" | "conv7x7s2_3_64_224"
        ) {
            // Reads the caller's NCHW planes: no reorder at either edge.
            assert_eq!(steps, [LAYER_NAME], "{}", spec.name);
        } else if spec.input.len() == 3 {
            assert_eq!(steps, ["input", LAYER_NAME, "output"], "{}", spec.name);
        } else {
            assert_eq!(steps, [LAYER_NAME], "{}", spec.name);
        }
        match spec.name {
            "dw3x3_144_56" => assert_eq!(layer.algorithm(), Some("planar_depthwise")),
            "conv7x7s2_3_64_224" => assert_eq!(layer.algorithm(), Some("planar_direct")),
            "linear_4096_1000" => assert_eq!(layer.algorithm(), Some("gemv")),
            "maxpool3x3s2_64_112" => assert_eq!(layer.algorithm(), Some("planar")),
            // The dense convolutions' algorithm is the kernels' choice.
            name => assert!(layer.algorithm().is_some(), "{name}"),
        }
    }
}

/// The fast mode on the benchmarked (random) weights agrees with the
/// reference mode: the bench runs real layers, not empty plans.
#[test]
fn fast_and_reference_agree_on_the_small_layers() {
    for name in ["dw3x3_144_56", "linear_4096_1000", "maxpool3x3s2_64_112"] {
        let spec = LAYERS.iter().find(|s| s.name == name).copied();
        let spec = spec.unwrap_or_else(|| panic!("no layer {name}"));
        let mut fast = OneLayer::new(spec, 1).unwrap_or_else(|e| panic!("{e}"));
        let mut reference =
            OneLayer::with_mode(spec, 1, Mode::Reference).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fast.input(), reference.input());
        let (step, total) = fast.run().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            step > Duration::ZERO && step <= total,
            "{name}: {step:?} {total:?}"
        );
        reference.run().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fast.output().len() as u64, spec.outputs);
        let mut worst = 0.0f32;
        for (a, b) in fast.output().iter().zip(reference.output()) {
            worst = worst.max((a - b).abs());
        }
        assert!(worst <= 1e-5, "{name}: worst difference {worst}");
        let magnitude = fast.output().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(magnitude > 0.1, "{name}: outputs too small ({magnitude})");
    }
}

#[test]
fn random_weights_load_with_their_shapes_and_scales() {
    let specs = [
        WeightSpec {
            name: "fc.weight".into(),
            shape: vec![10, 300],
        },
        WeightSpec {
            name: "fc.bias".into(),
            shape: vec![10],
        },
    ];
    let bytes = cnnc_ir::random_weights(&specs, 0).unwrap_or_else(|e| panic!("{e}"));
    let file = WeightFile::from_vec(bytes).unwrap_or_else(|e| panic!("{e}"));
    let weight = file
        .tensor("fc.weight", &[10, 300])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(weight.len(), 3000);
    let bound = (3.0f32 / 300.0).sqrt();
    assert!(weight.iter().all(|v| v.abs() <= bound));
    assert!(weight.iter().any(|v| v.abs() > bound / 2.0));
    let bias = file
        .tensor("fc.bias", &[10])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(bias.iter().all(|v| v.abs() <= 0.1));
    assert!(bias.iter().any(|v| *v != 0.0));
}

#[test]
fn medians_and_the_one_layer_source() {
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(median(&mut []), 0.0);
    assert_eq!(
        LAYERS[5].source(),
        "# linear 4096→1000: one layer, for benchmarks.\nnetwork linear_4096_1000 {\n    input x: [4096]\n    layer = linear(1000)\n    output layer\n}\n"
    );
    assert_eq!(LAYERS[0].bytes(), 4 * (2 * 64 * 56 * 56 + 64 * 64 * 9 + 64));
}

/// Every peak loop the CPU can run (not only the active tier's) counts
/// the FMAs it does and does them: `acc ← acc·0.999 + 0.001` converges to
/// 1 in every lane of every chain, so the returned sum is the lane count.
#[test]
fn the_peak_loops_do_the_work_they_count() {
    use cnnc_runtime::Tier;
    let mut ran = 0;
    for (tier, name, chains, lanes) in [(Tier::Avx512, "zmm", 24, 16), (Tier::Avx2, "ymm", 12, 8)] {
        let Some(peak) = peak::PeakLoop::for_tier(tier) else {
            assert!(!tier.is_available(), "{tier}: available but no peak loop");
            continue;
        };
        ran += 1;
        assert_eq!(peak.name, name);
        assert_eq!(
            peak.flops_per_call,
            peak::ITERATIONS as u64 * chains * lanes * 2
        );
        let sum = peak.call();
        let expected = (chains * lanes) as f32;
        assert!(
            (sum - expected).abs() < 0.5,
            "{name}: {sum} (expected {expected})"
        );
    }
    for tier in [Tier::Reference, Tier::Portable] {
        assert!(peak::PeakLoop::for_tier(tier).is_none(), "{tier}");
    }
    // The active tier has a loop when it is a SIMD one.
    let active = cnnc_runtime::kernels::active_tier();
    if matches!(active, Tier::Avx512 | Tier::Avx2) {
        assert!(ran > 0 && peak::PeakLoop::for_tier(active).is_some());
    }
}

/// `benches/peers.py` times the same seven layers as [`LAYERS`], in the
/// same order, with the same input shapes, `.cnn` layers and FLOPs.
#[test]
fn peers_py_lists_the_same_layers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/peers.py");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut from = 0;
    for spec in LAYERS {
        let dims: Vec<String> = spec.input.iter().map(ToString::to_string).collect();
        let dims = match dims.as_slice() {
            [one] => format!("({one},)"),
            many => format!("({})", many.join(", ")),
        };
        let entry = format!(
            "Layer(\"{}\", \"{}\", {dims}, \"{}\", {},",
            spec.name, spec.description, spec.layer, spec.ops
        );
        match text[from..].find(&entry) {
            Some(at) => from += at + entry.len(),
            None => panic!("peers.py lacks (after the previous layer) `{entry}`"),
        }
    }
    assert_eq!(text.matches("    Layer(\"").count(), LAYERS.len());
}
