//! `cnnc bench` end to end: the JSON report's fields, random weights for a
//! network given none, per-step figures, and clean refusals.

use std::process::{Command, Output};

use cnnc_tests::fixtures_dir;
use serde_json::Value;

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CNNC_KERNELS")
        .output()
        .expect("cnnc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture_net(name: &str) -> String {
    fixtures_dir()
        .join(name)
        .join("net.cnn")
        .to_string_lossy()
        .into_owned()
}

fn json_report(args: &[&str]) -> Value {
    let output = cnnc(args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&output.stdout)))
}

#[test]
fn json_reports_latency_rate_and_every_step() {
    // The fixture's net has no `weights` statement: random weights.
    let net = fixture_net("resnet-blocks");
    let report = json_report(&[
        "bench",
        &net,
        "--batch",
        "2",
        "--threads",
        "2",
        "--warmup",
        "1",
        "--iters",
        "5",
        "--per-layer",
        "--json",
    ]);
    assert_eq!(report["batch"], 2);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["iters"], 5);
    assert_eq!(report["mode"], "fast");
    assert_eq!(report["random_weights"], true);
    let tier = report["tier"].as_str().expect("tier");
    assert!(
        ["reference", "portable", "avx2", "avx512"].contains(&tier),
        "{tier}"
    );
    let (min, median, max) = (
        report["min_ms"].as_f64().expect("min"),
        report["median_ms"].as_f64().expect("median"),
        report["max_ms"].as_f64().expect("max"),
    );
    assert!(0.0 < min && min <= median && median <= max, "{report}");
    assert!(report["gflops"].as_f64().expect("gflops") > 0.0);
    let layers = report["layers"].as_array().expect("layers");
    assert!(layers.len() >= 3, "{report}");
    // Convolutions name their algorithm and rate; the input edge has none.
    let conv = layers
        .iter()
        .find(|layer| layer["op"] == "conv2d")
        .expect("a convolution step");
    assert!(conv["algorithm"].is_string());
    assert!(conv["gflops"].as_f64().expect("rate") > 0.0);
    assert_eq!(layers[0]["op"], "reorder");
    assert!(layers[0]["gflops"].is_null());
    for layer in layers {
        assert!(layer["median_ms"].as_f64().expect("median") >= 0.0);
        assert!(layer["name"].is_string());
    }
}

#[test]
fn text_reports_name_the_tier_and_the_steps() {
    let net = fixture_net("lenet");
    let weights = fixtures_dir().join("lenet").join("weights.safetensors");
    let output = cnnc(&[
        "bench",
        &net,
        "--weights",
        &weights.to_string_lossy(),
        "--threads",
        "1",
        "--iters",
        "3",
        "--per-layer",
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.contains("fast mode, tier "), "{stdout}");
    assert!(stdout.contains("1 thread, batch 1\n"), "{stdout}");
    assert!(
        stdout.contains("3 runs after 5 warm-ups: median "),
        "{stdout}"
    );
    assert!(stdout.contains("GFLOP/s at the median"), "{stdout}");
    assert!(stdout.contains("conv2d"), "{stdout}");
    assert!(stdout.contains("gemv"), "{stdout}");
}

#[test]
fn the_forced_tier_is_reported() {
    let net = fixture_net("conv-basic-b3");
    let output = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["bench", &net, "--iters", "2", "--json"])
        .env("CNNC_KERNELS", "portable")
        .output()
        .expect("cnnc runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["tier"], "portable");
    // Per-step figures come with every JSON report of the fast mode.
    assert!(!report["layers"].as_array().expect("layers").is_empty());
    // The reference modes have no steps to report.
    let output = cnnc(&[
        "bench",
        &net,
        "--iters",
        "2",
        "--json",
        "--mode",
        "optimized",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["mode"], "optimized");
    assert_eq!(report["layers"], Value::Array(Vec::new()));
}

#[test]
fn bad_arguments_are_refused_cleanly() {
    let net = fixture_net("lenet");
    for args in [
        &["bench", &net, "--batch", "0"][..],
        &["bench", &net, "--iters", "0"],
        &["bench", &net, "--threads", "0"],
        &["bench", &net, "--mode", "reference", "--per-layer"],
        &["bench", &net, "--weights", "/nonexistent/w.safetensors"],
    ] {
        let output = cnnc(args);
        let stderr = text(&output.stderr);
        assert!(
            matches!(output.status.code(), Some(1 | 2)),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn per_layer_columns_stay_aligned_with_fused_steps() {
    // A fused block's algorithm ("expand+depthwise+project") is the widest.
    let net = fixture_net("mobilenet-blocks-fused");
    let output = cnnc(&[
        "bench",
        &net,
        "--threads",
        "1",
        "--iters",
        "2",
        "--per-layer",
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.contains("+depthwise+project"), "{stdout}");
    // Every step row has its share's `%` in the same column.
    let columns: Vec<usize> = stdout
        .lines()
        .filter(|line| line.ends_with(|c: char| c.is_ascii_digit() || c == '-'))
        .filter_map(|line| line.find('%'))
        .collect();
    assert!(columns.len() >= 3, "{stdout}");
    assert!(columns.iter().all(|&c| c == columns[0]), "{stdout}");
}
