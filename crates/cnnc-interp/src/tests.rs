//! Unit tests: hand-computed values, binding errors as diagnostics, buffer
//! checks, and fused epilogues against the unfused graph. The PyTorch cases
//! of `tests/fixtures/` run in the `cnnc-tests` package.

use cnnc_ir::{Checked, FoldedBatchNorm, Graph, NodeId, Op};
use cnnc_runtime::kernels::Activation;
use cnnc_runtime::WeightFile;
use cnnc_syntax::{RenderStyle, SourceFile};

use crate::{BindErrorKind, Interpreter, Mode, Options, RunError};

/// A safetensors file: `(name, dtype, shape, little-endian bytes)`.
fn safetensors_raw(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, dtype, shape, bytes)) in tensors.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
            dims.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

/// A safetensors file of `F32` tensors.
fn safetensors(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let raw: Vec<(&str, &str, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|&(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, "F32", shape, bytes)
        })
        .collect();
    safetensors_raw(&raw)
}

fn check(source: &str) -> (SourceFile, Checked) {
    let file = SourceFile::new("net.cnn", source);
    match cnnc_ir::check(&file) {
        Ok(checked) => (file, checked),
        Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
    }
}

fn node_named(graph: &Graph, name: &str) -> NodeId {
    graph
        .node_ids()
        .find(|&node| graph[node].name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no node `{name}`"))
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

const CONV: &str = "network c {\n    input x: [1, 3, 3]\n    conv = conv2d(1, 2)\n}\n";
const CONV_FLIP: &str =
    "network c {\n    input x: [1, 3, 3]\n    conv = conv2d(1, 2, flip_kernel=true)\n}\n";

#[test]
fn conv_by_hand_and_flipped() {
    let input = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let kernel = [1.0, 0.0, 0.0, -1.0]; // [[1, 0], [0, -1]]
    let bytes = safetensors(&[
        ("conv.weight", &[1, 1, 2, 2], &kernel),
        ("conv.bias", &[1], &[0.5]),
    ]);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");

    // Cross-correlation: x[i][j] - x[i+1][j+1] + 0.5 = -4 + 0.5 everywhere.
    let (_, checked) = check(CONV);
    let mut net = Interpreter::new(&checked.graph, &checked.info, &weights).expect("binds");
    assert_eq!(net.output_shape(), [1, 2, 2]);
    assert_eq!(net.run(&input).expect("runs"), [-3.5; 4]);

    // Flipped: the kernel becomes [[-1, 0], [0, 1]], so +4 + 0.5.
    let (_, checked) = check(CONV_FLIP);
    let mut net = Interpreter::new(&checked.graph, &checked.info, &weights).expect("binds");
    assert_eq!(net.run(&input).expect("runs"), [4.5; 4]);
}

const SMALL: &str = "network small {
    input x: [2, 5, 4]
    c1 = conv2d(3, 3, padding=1)
    bn = batchnorm2d
    a = relu
    p = maxpool2d(2, ceil_mode=true)
    d = conv2d(3, 1, groups=3, bias=false) from a
    dp = avgpool2d(2, ceil_mode=true)
    cat = concat(p, dp, dim=1)
    s = add(cat, cat)
    flatten
    fc = linear(4)
    softmax
}
";

fn small_weights() -> Vec<u8> {
    let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
        ("c1.weight", vec![3, 2, 3, 3], values(54, 1)),
        ("c1.bias", vec![3], values(3, 2)),
        ("bn.weight", vec![3], values(3, 3)),
        ("bn.bias", vec![3], values(3, 4)),
        ("bn.running_mean", vec![3], values(3, 5)),
        ("bn.running_var", vec![3], vec![0.5, 1.0, 2.0]),
        ("d.weight", vec![3, 1, 1, 1], values(3, 6)),
        ("fc.weight", vec![4, 36], values(144, 7)),
        ("fc.bias", vec![4], values(4, 8)),
    ];
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (*n, s.as_slice(), v.as_slice()))
        .collect();
    safetensors(&refs)
}

#[test]
fn a_batch_is_its_samples_one_by_one() {
    let (_, checked) = check(SMALL);
    let bytes = small_weights();
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    for mode in Mode::ALL {
        let options = Options::new().mode(mode);
        let mut net =
            Interpreter::with_options(&checked.graph, &checked.info, Some(&weights), &options)
                .expect("binds");
        assert_eq!(net.input_len(), 40);
        assert_eq!(net.output_shape(), [4]);
        let batch = values(3 * 40, 9);
        let together = net.run(&batch).expect("runs");
        assert_eq!(together.len(), 12);
        for (sample, expected) in batch.chunks(40).zip(together.chunks(4)) {
            let alone = net.run(sample).expect("runs");
            if mode == Mode::Fast {
                // A batch of one runs the linear layer as a GEMV, whose
                // sums are ordered differently from the batched GEMM's.
                for (a, b) in alone.iter().zip(expected) {
                    assert!((a - b).abs() <= 1e-6, "{alone:?} vs {expected:?}");
                }
            } else {
                assert_eq!(alone, expected, "{mode:?}");
            }
        }
        // A softmax output: each sample sums to 1.
        for sample in together.chunks(4) {
            let sum: f32 = sample.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "{sample:?}");
        }
        let mut output = vec![0.0; 12];
        net.forward(&batch, &mut output).expect("runs");
        assert_eq!(output, together);
    }
}

#[test]
fn buffers_that_are_not_whole_batches_are_refused() {
    let (_, checked) = check(SMALL);
    let bytes = small_weights();
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let mut net = Interpreter::new(&checked.graph, &checked.info, &weights).expect("binds");
    let error = net.run(&[]).expect_err("empty");
    assert_eq!(error.to_string(), "input is an empty batch (0 samples)");
    let error = net.run(&[0.0; 41]).expect_err("ragged");
    assert_eq!(
        error.to_string(),
        "input has 41 values, which is not a whole number of samples of 40 values each"
    );
    let mut output = vec![0.0; 5];
    let error = net.forward(&[0.0; 80], &mut output).expect_err("output");
    assert!(matches!(error, RunError::Buffer(_)));
    assert_eq!(
        error.to_string(),
        "output buffer has 5 values, expected 8 for a batch of 2"
    );
}

#[test]
fn bind_errors_point_at_the_layer_and_name_the_file() {
    let (file, checked) = check(SMALL);
    // `c1.bias` is missing (a near name is present), `bn.running_var` has the
    // wrong shape, `fc.weight` is I64, and an unrelated tensor is unused.
    let mut tensors: Vec<(&str, &str, &[usize], Vec<u8>)> = vec![
        ("c1.weight", "F32", &[3, 2, 3, 3], vec![0; 54 * 4]),
        ("cl.bias", "F32", &[3], vec![0; 12]),
        ("bn.weight", "F32", &[3], vec![0; 12]),
        ("bn.bias", "F32", &[3], vec![0; 12]),
        ("bn.running_mean", "F32", &[3], vec![0; 12]),
        ("bn.running_var", "F32", &[1, 3], vec![0; 12]),
        ("d.weight", "F32", &[3, 1, 1, 1], vec![0; 12]),
        ("fc.weight", "I64", &[4, 36], vec![0; 144 * 8]),
        ("fc.bias", "F32", &[4], vec![0; 16]),
    ];
    tensors.push(("bn.num_batches_tracked", "I64", &[], vec![0; 8]));
    let bytes = safetensors_raw(&tensors);
    let dir = std::env::temp_dir().join(format!("cnnc-interp-bind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("w.safetensors");
    std::fs::write(&path, &bytes).expect("write");
    let weights = WeightFile::from_path(&path).expect("valid file");
    let errors = Interpreter::new(&checked.graph, &checked.info, &weights).expect_err("fails");
    let _ = std::fs::remove_dir_all(&dir);

    let summary: Vec<(String, &str)> = errors
        .iter()
        .map(|e| {
            assert!(matches!(e.kind, BindErrorKind::Weights(_)));
            (e.layer.clone(), e.op)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("c1".to_string(), "conv2d"),
            ("bn".to_string(), "batchnorm2d"),
            ("fc".to_string(), "linear")
        ]
    );
    let file_name = path.display().to_string();
    let text = errors
        .to_diagnostics()
        .render(&file, RenderStyle::Short)
        .replace(&file_name, "W");
    assert_eq!(
        text,
        "net.cnn:3:5: error: weights file `W`: tensor `c1.bias` not found; did you mean `cl.bias`?\n\
         net.cnn:4:5: error: weights file `W`: tensor `bn.running_var` has the wrong shape: expected [3], found [1, 3]\n\
         net.cnn:12:5: error: weights file `W`: tensor `fc.weight` has dtype I64, which cannot be converted to f32 (supported: F32, F16, BF16, F64)\n"
    );
    let rich = errors.to_diagnostics().render(&file, RenderStyle::Plain);
    assert!(
        rich.contains("this `batchnorm2d` expects `bn.running_var` of shape [3]"),
        "{rich}"
    );
    assert!(rich.contains("= note: `bn.running_var` of a `batchnorm2d` is [channels]"));
    assert!(rich.contains("this `conv2d` needs `c1.bias`"), "{rich}");
    assert_eq!(
        errors.to_string().lines().next(),
        Some(
            format!(
                "layer `c1`: weights file `{file_name}`: tensor `c1.bias` not found; did you mean `cl.bias`?"
            )
            .as_str()
        )
    );
}

#[test]
fn unused_tensors_are_reported_but_training_counters_are_not() {
    let (_, checked) = check(CONV);
    let mut tensors: Vec<(&str, &str, &[usize], Vec<u8>)> = vec![
        ("conv.weight", "F32", &[1, 1, 2, 2], vec![0; 16]),
        ("conv.bias", "F32", &[1], vec![0; 4]),
        ("fc.weight", "F32", &[1], vec![0; 4]),
        ("bn.num_batches_tracked", "I64", &[], vec![0; 8]),
    ];
    tensors.push(("aux.bias", "F16", &[2], vec![0; 4]));
    let bytes = safetensors_raw(&tensors);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let net = Interpreter::new(&checked.graph, &checked.info, &weights).expect("binds");
    assert_eq!(net.unused_weights(), ["aux.bias", "fc.weight"]);
}

#[test]
fn weights_convert_from_f16_bf16_and_f64() {
    let (_, checked) = check(CONV);
    // 1.0 and -1.0 in each dtype; the bias is 0.5.
    let f16 = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let f64s = [0.5f64].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors: Vec<(&str, &str, &[usize], Vec<u8>)> = vec![
        (
            "conv.weight",
            "BF16",
            &[1, 1, 2, 2],
            f16(&[0x3f80, 0, 0, 0xbf80]),
        ),
        ("conv.bias", "F64", &[1], f64s),
    ];
    let bytes = safetensors_raw(&tensors);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let mut net = Interpreter::new(&checked.graph, &checked.info, &weights).expect("binds");
    let input = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    assert_eq!(net.run(&input).expect("runs"), [-3.5; 4]);
}

#[test]
fn networks_without_parameters_need_no_weights() {
    let (_, checked) = check("network p {\n  input x: [1, 2, 2]\n  maxpool2d(2)\n  flatten\n}\n");
    let mut net = Interpreter::without_weights(&checked.graph, &checked.info).expect("plans");
    assert_eq!(net.run(&[1.0, 5.0, -2.0, 3.0]).expect("runs"), [5.0]);

    let (_, checked) = check(CONV);
    let errors = Interpreter::without_weights(&checked.graph, &checked.info).expect_err("fails");
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        [
            "layer `conv`: weights: tensor `conv.weight` not found",
            "layer `conv`: weights: tensor `conv.bias` not found"
        ]
    );
}

#[test]
fn unused_layers_are_bound_but_not_run() {
    // `side` is read by nothing: a warning at check time. Its weights are
    // still required, since they are part of the network as written.
    let source = "network n {\n  input x: [2]\n  side = linear(3)\n  main = linear(1, bias=false) from x\n}\n";
    let (_, checked) = check(source);
    assert!(!checked.warnings.is_empty());
    let bytes = safetensors(&[("main.weight", &[1, 2], &[1.0, 1.0])]);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let errors = Interpreter::new(&checked.graph, &checked.info, &weights).expect_err("fails");
    assert_eq!(errors.len(), 2);
    let bytes = safetensors(&[
        ("main.weight", &[1, 2], &[1.0, 1.0]),
        ("side.weight", &[3, 2], &[0.0; 6]),
        ("side.bias", &[3], &[0.0; 3]),
    ]);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let mut net = Interpreter::with_options(
        &checked.graph,
        &checked.info,
        Some(&weights),
        &Options::new().mode(Mode::Reference),
    )
    .expect("binds");
    assert_eq!(net.mode(), Mode::Reference);
    assert_eq!(net.run(&[2.0, 3.0]).expect("runs"), [5.0]);
}

/// `conv -> bn -> add(bn, x) -> relu`, then the same graph with the
/// batch-norm, the residual and the relu fused into the convolution's
/// epilogue the way the optimizer's passes record them: the reference path
/// must give the same values bit for bit.
#[test]
fn fused_epilogues_run_as_the_operations_they_replace() {
    let source = "network r {
    input x: [3, 4, 4]
    conv = conv2d(3, 3, padding=1)
    bn = batchnorm2d
    sum = add(bn, x)
    out = relu
}
";
    let (_, checked) = check(source);
    let bytes = safetensors(&[
        ("conv.weight", &[3, 3, 3, 3], &values(81, 11)),
        ("conv.bias", &[3], &values(3, 12)),
        ("bn.weight", &[3], &values(3, 13)),
        ("bn.bias", &[3], &values(3, 14)),
        ("bn.running_mean", &[3], &values(3, 15)),
        ("bn.running_var", &[3], &[0.5, 1.5, 0.25]),
    ]);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let input = values(2 * 48, 16);
    let mut net = Interpreter::new(&checked.graph, &checked.info, &weights).expect("binds");
    let unfused = net.run(&input).expect("runs");
    assert!(unfused.contains(&0.0) && unfused.iter().any(|&v| v > 0.0));

    let mut graph = checked.graph.clone();
    let x = graph.input();
    let conv = node_named(&graph, "conv");
    let bn = node_named(&graph, "bn");
    let sum = node_named(&graph, "sum");
    let out = node_named(&graph, "out");
    let Op::BatchNorm2d(batchnorm) = graph[bn].op.clone() else {
        panic!("bn is a batch-norm");
    };
    let Op::Conv2d(fused) = &mut graph[conv].op else {
        panic!("conv is a convolution");
    };
    fused.weights.folded_batchnorm = Some(FoldedBatchNorm {
        module: batchnorm.module.clone(),
        eps: batchnorm.eps,
    });
    fused.epilogue.bias = true;
    fused.epilogue.residual = true;
    fused.epilogue.activation = Activation::Relu;
    graph.replace_all_uses(out, conv);
    for node in [out, sum, bn] {
        graph.remove_node(node);
    }
    graph.connect(x, conv, 1);
    let info = cnnc_ir::infer(&graph).expect("the fused graph infers");
    let mut fused_net = Interpreter::new(&graph, &info, &weights).expect("binds");
    assert_eq!(fused_net.run(&input).expect("runs"), unfused);
}

#[test]
fn an_epilogue_bias_without_a_source_is_an_internal_error() {
    let (_, checked) = check(CONV);
    let mut graph = checked.graph.clone();
    let conv = node_named(&graph, "conv");
    if let Op::Conv2d(conv) = &mut graph[conv].op {
        conv.epilogue.bias = true;
    }
    let info = cnnc_ir::infer(&graph).expect("infers");
    let bytes = safetensors(&[
        ("conv.weight", &[1, 1, 2, 2], &[0.0; 4]),
        ("conv.bias", &[1], &[0.0]),
    ]);
    let weights = WeightFile::from_bytes(&bytes).expect("valid file");
    let errors = Interpreter::new(&graph, &info, &weights).expect_err("fails");
    let error = errors.iter().next().expect("one error");
    assert!(matches!(error.kind, BindErrorKind::Internal(_)));
    assert!(error
        .to_diagnostic()
        .message
        .contains("this is a bug in cnnc"));
}
