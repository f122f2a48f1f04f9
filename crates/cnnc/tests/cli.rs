//! The `cnnc` binary end to end: `check` tables of every example
//! (snapshots), `--json`, `graph` output files, exit codes and diagnostics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_tables_of_the_examples() {
    insta::glob!("../../../examples", "*.cnn", |path| {
        let output = cnnc(&["check", path.to_str().expect("utf-8 path")]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert_eq!(text(&output.stderr), "");
        insta::assert_snapshot!(text(&output.stdout));
    });
}

#[test]
fn check_json() {
    let net = repo().join("examples/resnet18.cnn");
    let output = cnnc(&["check", net.to_str().expect("utf-8"), "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    assert_eq!(json["total_params"], 11_689_512);
    assert_eq!(json["total_macs"], 1_814_073_344u64);
    assert_eq!(json["output_shape"], serde_json::json!([1000]));
    let layers = json["layers"].as_array().expect("layers");
    assert_eq!(layers[0]["name"], "image");
    assert_eq!(layers[1]["name"], "conv1");
    assert_eq!(layers[1]["op"], "conv2d");
    assert_eq!(layers[1]["output_shape"], serde_json::json!([64, 112, 112]));
    assert_eq!(layers[1]["params"], 9408);
    assert_eq!(layers[1]["macs"], 118_013_952);
    assert_eq!(layers[3]["name"], "#3 relu");
    let sum: u64 = layers
        .iter()
        .map(|l| l["params"].as_u64().expect("params"))
        .sum();
    assert_eq!(sum, 11_689_512);
}

#[test]
fn graph_writes_dot_atomically() {
    let dir = std::env::temp_dir().join(format!("cnnc-cli-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("net.dot");
    let net = repo().join("examples/lenet5.cnn");
    let output = cnnc(&[
        "graph",
        net.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let dot = std::fs::read_to_string(&out).expect("dot written");
    assert!(dot.starts_with("digraph \"lenet5\" {"));
    // The optimized graph by default: the relu is in the convolution.
    assert!(dot.contains("conv2d(6, 5, padding=2) -> relu\\n[6, 28, 28]"));
    assert!(dot.contains("n0 -> n1;"));
    assert!(dot.trim_end().ends_with('}'));

    // On a diagnosed error nothing is written, and no temporary file is left.
    let bad = repo().join("crates/cnnc-ir/tests/errors/add-shape.cnn");
    let out2 = dir.join("bad.dot");
    let output = cnnc(&[
        "graph",
        bad.to_str().expect("utf-8"),
        "-o",
        out2.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out2.exists());
    // Into a missing directory: an error, not a panic, and no file.
    let out3 = dir.join("missing/dir/x.dot");
    let output = cnnc(&[
        "graph",
        net.to_str().expect("utf-8"),
        "-o",
        out3.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr).trim_end(),
        format!(
            "error: cannot write `{}`: the directory `{}` does not exist",
            out3.display(),
            dir.join("missing/dir").display()
        )
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["net.dot"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graph_to_stdout() {
    let net = repo().join("examples/mobilenet_v2.cnn");
    let output = cnnc(&["graph", net.to_str().expect("utf-8"), "--stage", "lowered"]);
    assert_eq!(output.status.code(), Some(0));
    let dot = text(&output.stdout);
    // Residual adds have two labelled inputs.
    assert!(dot.contains("[label=\"1\"]"));
    // 154 nodes in a chain (153 edges) plus a second input for each of the
    // 10 residual adds.
    assert_eq!(dot.matches(" -> ").count(), 153 + 10);
    // Optimized: input, 52 convolutions, pool, flatten, linear in a chain
    // (55 edges), plus the residual input of the 10 convolutions that took
    // over an add.
    let output = cnnc(&["graph", net.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(0));
    let dot = text(&output.stdout);
    // (Labels say `-> relu6` too; edges point at a node `nINDEX`.)
    assert_eq!(dot.matches(" -> n").count(), 55 + 10);
    assert_eq!(dot.matches("batchnorm2d").count(), 0);
}

#[test]
fn errors_exit_1_with_diagnostics() {
    let dir = repo().join("crates/cnnc-ir/tests/errors");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("errors dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if !name.ends_with(".cnn") || name.starts_with("warning-") {
            continue;
        }
        seen += 1;
        let output = cnnc(&["check", path.to_str().expect("utf-8")]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.contains("could not compile"), "{name}: {stderr}");
        assert_eq!(text(&output.stdout), "", "{name}");
    }
    assert!(seen >= 50, "only {seen} error files");
}

#[test]
fn short_error_format_and_warnings() {
    let bad = repo().join("crates/cnnc-ir/tests/errors/two-bad-layers.cnn");
    let bad = bad.to_str().expect("utf-8");
    let output = cnnc(&["check", "--error-format", "short", bad]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        format!(
            "{bad}:3:9: error: unknown operator `conv2D`\n{bad}:5:22: error: `maxpool2d` has no parameter `strides`\n"
        )
    );
    let warn = repo().join("crates/cnnc-ir/tests/errors/warning-unused.cnn");
    let output = cnnc(&["check", warn.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stderr).starts_with("warning: the result of this `relu` is never used"));
    assert!(text(&output.stdout).contains("total"));
}

#[test]
fn unreadable_inputs_are_errors() {
    let output = cnnc(&["check", "/nonexistent/net.cnn"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).starts_with("error: cannot open /nonexistent/net.cnn"));
    let output = cnnc(&["check", "/"]);
    assert_eq!(output.status.code(), Some(1));
    let output = cnnc(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn graph_and_json_of_lenet5() {
    let net = repo().join("examples/lenet5.cnn");
    let output = cnnc(&["graph", net.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(0));
    insta::assert_snapshot!("lenet5_dot", text(&output.stdout));
    let output = cnnc(&["check", "--json", net.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(0));
    insta::assert_snapshot!("lenet5_json", text(&output.stdout));
}
