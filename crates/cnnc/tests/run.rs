//! `cnnc run` and `cnnc check --weights` end to end, on the PyTorch
//! fixtures of `tests/fixtures/`: results, exit codes, messages, and that a
//! failed run leaves no output file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cnnc_tests::{compare, fixtures_dir, safetensors_raw, Tensor};

fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh, empty folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-run-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The files of a fixture.
struct Fixture {
    net: PathBuf,
    weights: PathBuf,
    input: PathBuf,
    expected: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let dir = fixtures_dir().join(name);
    Fixture {
        net: dir.join("net.cnn"),
        weights: dir.join("weights.safetensors"),
        input: dir.join("input.npy"),
        expected: dir.join("expected.npy"),
    }
}

/// Asserts a clean refusal: exit 1, no panic, the words, no output file.
fn assert_refused(output: &Output, words: &[&str], out: &Path) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "missing {word:?} in:\n{stderr}");
    }
    assert!(!out.exists(), "{} was written", out.display());
    // Nor a temporary file next to it.
    if let Some(dir) = out.parent().filter(|d| d.is_dir()) {
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

#[test]
fn run_matches_pytorch() {
    let dir = scratch("matches");
    let out = dir.join("out.npy");
    let case = fixture("resnet-blocks");
    let expected = Tensor::read(&case.expected).expect("expected");
    // The fast path (the default), each mode by name, the graph as written
    // (`--unoptimized`), and the fast path on 1 and 2 threads.
    for extra in [
        &[][..],
        &["--mode", "fast"],
        &["--mode", "optimized"],
        &["--mode", "reference"],
        &["--unoptimized"],
        &["--threads", "1"],
        &["--threads", "2"],
    ] {
        let mut args = vec![
            "run",
            s(&case.net),
            "--weights",
            s(&case.weights),
            "--input",
            s(&case.input),
            "--output",
            s(&out),
        ];
        args.extend(extra.iter().copied());
        let output = cnnc(&args);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert_eq!(text(&output.stderr), "");
        let got = Tensor::read(&out).expect("output written");
        assert_eq!(got.shape, [3, 5]);
        assert_eq!(got.shape, expected.shape);
        let comparison = compare(&got.data, &expected.data);
        assert!(comparison.passed(), "{extra:?}: {comparison}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_larger_batch_gives_each_sample_its_own_output() {
    // The lenet fixture's 3 samples, then the same 3 in reverse order, then
    // the first again: a batch of 7.
    let dir = scratch("batch");
    let case = fixture("lenet");
    let input = Tensor::read(&case.input).expect("input");
    let expected = Tensor::read(&case.expected).expect("expected");
    let sample = input.data.len() / 3;
    let order = [0, 1, 2, 2, 1, 0, 0];
    let data: Vec<f32> = order
        .iter()
        .flat_map(|&i| input.data[i * sample..(i + 1) * sample].iter().copied())
        .collect();
    let batch_path = dir.join("batch.npy");
    cnnc_runtime::npy::write(&batch_path, &[7, 1, 20, 20], &data).expect("write input");
    let out = dir.join("out.npy");
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--weights",
        s(&case.weights),
        "--input",
        s(&batch_path),
        "--output",
        s(&out),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let got = Tensor::read(&out).expect("output written");
    assert_eq!(got.shape, [7, 10]);
    for (row, &i) in order.iter().enumerate() {
        let comparison = compare(
            &got.data[row * 10..(row + 1) * 10],
            &expected.data[i * 10..(i + 1) * 10],
        );
        assert!(comparison.passed(), "row {row}: {comparison}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_input_shape_shows_expected_and_found() {
    let dir = scratch("shape");
    let case = fixture("lenet");
    let out = dir.join("out.npy");
    // A 1x19x5x6 input (another fixture's) for a [1, 20, 20] network.
    let wrong = fixture("conv-1x1").input;
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--weights",
        s(&case.weights),
        "--input",
        s(&wrong),
        "--output",
        s(&out),
    ]);
    assert_refused(
        &output,
        &["has the wrong shape: expected [N, 1, 20, 20], found [1, 19, 5, 6]"],
        &out,
    );

    // An empty batch is refused too.
    let empty = dir.join("empty.npy");
    cnnc_runtime::npy::write(&empty, &[0, 1, 20, 20], &[]).expect("write input");
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--weights",
        s(&case.weights),
        "--input",
        s(&empty),
        "--output",
        s(&out),
    ]);
    assert_refused(&output, &["is an empty batch (0 samples)"], &out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lenet fixture's weights rewritten without `conv2.weight`.
fn weights_without_conv2(dir: &Path) -> PathBuf {
    let case = fixture("lenet");
    let weights = cnnc_runtime::WeightFile::from_path(&case.weights).expect("weights");
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .names()
        .into_iter()
        .filter(|&name| name != "conv2.weight")
        .map(|name| {
            let shape = weights.shape(name).expect("shape").to_vec();
            let values = weights.tensor(name, &shape).expect("f32");
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.to_string(), shape, bytes)
        })
        .collect();
    let raw: Vec<(&str, &str, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, shape, b)| (n.as_str(), "F32", shape.as_slice(), b.as_slice()))
        .collect();
    let path = dir.join("missing.safetensors");
    std::fs::write(&path, safetensors_raw(&raw)).expect("write weights");
    path
}

#[test]
fn a_missing_tensor_is_reported_at_its_layer() {
    let dir = scratch("missing");
    let case = fixture("lenet");
    let weights = weights_without_conv2(&dir);
    let out = dir.join("out.npy");
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--weights",
        s(&weights),
        "--input",
        s(&case.input),
        "--output",
        s(&out),
    ]);
    let location = format!("{}:8:5", case.net.display());
    let file = format!("weights file `{}`", weights.display());
    assert_refused(
        &output,
        &[
            "tensor `conv2.weight` not found",
            &location,
            &file,
            "conv2 = conv2d(16, 5)",
        ],
        &out,
    );

    // `check --weights` finds the same problem, and prints no table.
    let output = cnnc(&["check", s(&case.net), "--weights", s(&weights)]);
    assert_refused(
        &output,
        &["tensor `conv2.weight` not found", &location],
        &out,
    );
    assert_eq!(text(&output.stdout), "");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_weights_are_refused() {
    let dir = scratch("corrupt");
    let case = fixture("lenet");
    let bytes = std::fs::read(&case.weights).expect("weights");
    let out = dir.join("out.npy");
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).expect("write");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json").expect("write");
    for (path, words) in [
        (&truncated, &["the file is truncated"][..]),
        (&garbage, &["truncated, or not a safetensors file"][..]),
    ] {
        let output = cnnc(&[
            "run",
            s(&case.net),
            "--weights",
            s(path),
            "--input",
            s(&case.input),
            "--output",
            s(&out),
        ]);
        assert_refused(&output, words, &out);
        assert!(text(&output.stderr).contains(s(path)));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_output_folder_is_refused_before_running() {
    let dir = scratch("outdir");
    let case = fixture("lenet");
    let out = dir.join("no-such-folder").join("out.npy");
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--weights",
        s(&case.weights),
        "--input",
        s(&case.input),
        "--output",
        s(&out),
    ]);
    assert_refused(&output, &["does not exist"], &out);
    assert!(!dir.join("no-such-folder").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_run_leaves_an_existing_output_alone() {
    let dir = scratch("existing");
    let case = fixture("lenet");
    let out = dir.join("out.npy");
    std::fs::write(&out, b"previous").expect("write");
    let wrong = fixture("conv-1x1").input;
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--weights",
        s(&case.weights),
        "--input",
        s(&wrong),
        "--output",
        s(&out),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).expect("still there"), b"previous");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weights_come_from_the_statement_relative_to_the_net() {
    let dir = scratch("statement");
    let case = fixture("lenet");
    std::fs::create_dir_all(dir.join("nets/w")).expect("dirs");
    let source = std::fs::read_to_string(&case.net).expect("net");
    let with_statement = source.replacen(
        "network lenet {",
        "network lenet {\n    weights \"w/lenet.safetensors\"",
        1,
    );
    let net = dir.join("nets/lenet.cnn");
    std::fs::write(&net, with_statement).expect("write net");
    let out = dir.join("out.npy");
    let args = [
        "run",
        s(&net),
        "--input",
        s(&case.input),
        "--output",
        s(&out),
    ];

    // Not there yet: reported at the statement.
    let output = cnnc(&args);
    assert_refused(
        &output,
        &["weights file named here", "weights \"w/lenet.safetensors\""],
        &out,
    );

    // Next to the net (the command runs elsewhere): found.
    std::fs::copy(&case.weights, dir.join("nets/w/lenet.safetensors")).expect("copy");
    let output = cnnc(&args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let got = Tensor::read(&out).expect("output");
    let expected = Tensor::read(&case.expected).expect("expected");
    assert!(compare(&got.data, &expected.data).passed());

    // `--weights` overrides the statement.
    std::fs::remove_file(&out).expect("remove");
    let broken = weights_without_conv2(&dir);
    let mut with_flag = args.to_vec();
    with_flag.extend(["--weights", s(&broken)]);
    let output = cnnc(&with_flag);
    assert_refused(&output, &["tensor `conv2.weight` not found"], &out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_network_with_parameters_needs_weights() {
    let dir = scratch("noweights");
    let case = fixture("lenet");
    let out = dir.join("out.npy");
    let output = cnnc(&[
        "run",
        s(&case.net),
        "--input",
        s(&case.input),
        "--output",
        s(&out),
    ]);
    assert_refused(
        &output,
        &[
            "network `lenet` has parameters, but no weights file was given",
            "--weights",
        ],
        &out,
    );

    // A network without parameters runs without weights.
    let pool = fixture("maxpool-basic-b3");
    assert!(!pool.weights.exists());
    let output = cnnc(&[
        "run",
        s(&pool.net),
        "--input",
        s(&pool.input),
        "--output",
        s(&out),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let got = Tensor::read(&out).expect("output");
    let expected = Tensor::read(&pool.expected).expect("expected");
    assert_eq!(got, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_with_weights_prints_the_table_and_warns_about_unused_tensors() {
    let dir = scratch("check");
    let case = fixture("lenet");
    let output = cnnc(&["check", s(&case.net), "--weights", s(&case.weights)]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "");
    assert!(text(&output.stdout).starts_with("network lenet: input [1, 20, 20], output [10]"));

    // Another fixture's weights: everything missing, and their tensors unused.
    let other = fixture("mlp-softmax").weights;
    let output = cnnc(&["check", s(&case.net), "--weights", s(&other)]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not used by the network"), "{stderr}");

    // A superset of the weights: fine, with a warning naming the extra.
    let weights = cnnc_runtime::WeightFile::from_path(&case.weights).expect("weights");
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .names()
        .into_iter()
        .map(|name| {
            let shape = weights.shape(name).expect("shape").to_vec();
            let values = weights.tensor(name, &shape).expect("f32");
            (
                name.to_string(),
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    tensors.push(("fc4.weight".into(), vec![2], vec![0; 8]));
    let raw: Vec<(&str, &str, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, shape, b)| (n.as_str(), "F32", shape.as_slice(), b.as_slice()))
        .collect();
    let extra = dir.join("extra.safetensors");
    std::fs::write(&extra, safetensors_raw(&raw)).expect("write");
    let output = cnnc(&["check", s(&case.net), "--weights", s(&extra)]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: 1 tensor in weights file `{}` not used by the network: `fc4.weight`",
            extra.display()
        )),
        "{stderr}"
    );
    assert!(text(&output.stdout).contains("total"));

    // Without `--weights`, `check` does not open any weights.
    let output = cnnc(&["check", s(&case.net)]);
    assert_eq!(output.status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
