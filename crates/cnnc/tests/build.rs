//! `cnnc build --emit ir`: the optimized graph of every example as text
//! (snapshots), written atomically, and `cnnc check`'s activation memory.

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
fn emit_ir_of_the_examples() {
    insta::glob!("../../../examples", "*.cnn", |path| {
        let output = cnnc(&["build", path.to_str().expect("utf-8 path"), "--emit", "ir"]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert_eq!(text(&output.stderr), "");
        insta::assert_snapshot!(text(&output.stdout));
    });
}

#[test]
fn emit_ir_to_a_file() {
    let dir = std::env::temp_dir().join(format!("cnnc-cli-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("lenet5.ir");
    let net = repo().join("examples/lenet5.cnn");
    let net = net.to_str().expect("utf-8");
    let output = cnnc(&[
        "build",
        net,
        "--emit",
        "ir",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let ir = std::fs::read_to_string(&out).expect("written");
    assert!(ir.starts_with("network lenet5: input %0 [1, 28, 28], output %12 [10]\n"));
    assert!(ir.contains("conv2d(6, 5, padding=2) + relu"));

    // A diagnosed error writes nothing.
    let bad = repo().join("crates/cnnc-ir/tests/errors/add-shape.cnn");
    let out2 = dir.join("bad.ir");
    let output = cnnc(&[
        "build",
        bad.to_str().expect("utf-8"),
        "--emit",
        "ir",
        "-o",
        out2.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out2.exists());
    // Rust output is not there yet: an error, not a panic or a file.
    let out3 = dir.join("net.rs");
    let output = cnnc(&["build", net, "-o", out3.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("--emit ir"));
    assert!(!out3.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_the_arena() {
    let net = repo().join("examples/resnet18.cnn");
    let net = net.to_str().expect("utf-8");
    let output = cnnc(&["check", net]);
    assert_eq!(output.status.code(), Some(0));
    // Arena: conv1's output and the max-pool's live together,
    // (64·112·112 + 64·56·56) floats; naive: every value once.
    assert!(text(&output.stdout).ends_with(
        "\nactivations at batch 1: peak arena 4,014,080 bytes, naive sum 11,347,872 bytes\n"
    ));
    let output = cnnc(&["check", net, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        json["peak_activation_bytes"],
        4 * (64 * 112 * 112 + 64 * 56 * 56)
    );
    assert_eq!(json["naive_activation_bytes"], 11_347_872);
}

#[test]
fn dead_layers_are_reported_once() {
    let dir = std::env::temp_dir().join(format!("cnnc-cli-dead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let net = dir.join("dead.cnn");
    std::fs::write(
        &net,
        "network dead {\n    input x: [3, 8, 8]\n    probe = conv2d(2, 1)\n    probe_act = relu\n    main = conv2d(4, 1) from x\n    output main\n}\n",
    )
    .expect("write");
    let output = cnnc(&[
        "check",
        "--error-format",
        "short",
        net.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = text(&output.stderr);
    let lines: Vec<_> = stderr
        .lines()
        .map(|l| l.split_once(": ").map_or(l, |x| x.1))
        .collect();
    assert_eq!(
        lines,
        [
            "warning: the value `probe_act` is never used",
            "warning: the value `probe` does not contribute to the output"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
