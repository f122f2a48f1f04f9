//! The optimizer on the example networks: what must be fused is fused, the
//! weights the network loads are unchanged, and the memory plan of the
//! optimized graph passes the independent verifier.

mod support;

use std::collections::BTreeSet;

use cnnc_ir::{expected_weights, Checked, Graph, Op, Optimized};
use cnnc_kernels::Activation;
use cnnc_syntax::{RenderStyle, SourceFile};

fn example(name: &str) -> (SourceFile, Checked) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(format!("{name}.cnn"));
    let text = std::fs::read_to_string(&path).expect("example is readable");
    let file = SourceFile::new(format!("{name}.cnn"), text);
    match cnnc_ir::check(&file) {
        Ok(checked) => (file, checked),
        Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
    }
}

fn optimize(file: &SourceFile, checked: &Checked) -> Optimized {
    cnnc_ir::optimize(checked.graph.clone(), &checked.info)
        .unwrap_or_else(|errors| panic!("{}", errors.render(file, RenderStyle::Plain)))
}

fn count(graph: &Graph, predicate: impl Fn(&Op) -> bool) -> usize {
    graph
        .node_ids()
        .filter(|&n| predicate(&graph[n].op))
        .count()
}

/// The assertions of issue 4 for the residual networks: no batch-norm, no
/// standalone activation and no `add` left; every activation and every
/// residual `add` of the source is now part of a convolution.
fn assert_fully_fused(name: &str, expect_activation: Activation) {
    let (file, checked) = example(name);
    let source = &checked.graph;
    let batchnorms = count(source, |op| matches!(op, Op::BatchNorm2d(_)));
    let activations = count(source, |op| matches!(op, Op::Activation(_)));
    let adds = count(source, |op| matches!(op, Op::Add(_)));
    let convs = count(source, |op| matches!(op, Op::Conv2d(_)));
    assert!(batchnorms > 0 && activations > 0 && adds > 0);

    let optimized = optimize(&file, &checked);
    let graph = &optimized.graph;
    assert_eq!(
        count(graph, |op| matches!(op, Op::BatchNorm2d(_))),
        0,
        "{name}"
    );
    assert_eq!(
        count(graph, |op| matches!(op, Op::Activation(_))),
        0,
        "{name}"
    );
    assert_eq!(count(graph, |op| matches!(op, Op::Add(_))), 0, "{name}");
    assert_eq!(count(graph, |op| matches!(op, Op::Conv2d(_))), convs);

    let conv_epilogues: Vec<_> = graph
        .node_ids()
        .filter_map(|n| match &graph[n].op {
            Op::Conv2d(conv) => Some(conv),
            _ => None,
        })
        .collect();
    // Every convolution of these networks is followed by a batch-norm.
    assert_eq!(batchnorms, convs);
    for conv in &conv_epilogues {
        assert!(conv.epilogue.bias && conv.weights.folded_batchnorm.is_some());
    }
    let with_activation = conv_epilogues
        .iter()
        .filter(|c| c.epilogue.activation != Activation::Identity)
        .count();
    assert_eq!(
        with_activation, activations,
        "{name}: every activation fused"
    );
    assert!(conv_epilogues
        .iter()
        .all(|c| matches!(c.epilogue.activation, Activation::Identity)
            || c.epilogue.activation == expect_activation));
    let with_residual = conv_epilogues
        .iter()
        .filter(|c| c.epilogue.residual)
        .count();
    assert_eq!(with_residual, adds, "{name}: every residual add fused");

    // The network loads exactly the same tensors.
    let before: BTreeSet<_> = expected_weights(&checked.graph, &checked.info)
        .into_iter()
        .map(|w| (w.name, w.shape))
        .collect();
    let after: BTreeSet<_> = expected_weights(&optimized.graph, &optimized.info)
        .into_iter()
        .map(|w| (w.name, w.shape))
        .collect();
    assert_eq!(before, after);
    assert_eq!(optimized.info.total_params, checked.info.total_params);
    assert_eq!(optimized.info.total_macs, checked.info.total_macs);
    assert!(optimized.report.warnings.is_empty());
}

#[test]
fn resnet18_is_fully_fused() {
    assert_fully_fused("resnet18", Activation::Relu);
}

#[test]
fn mobilenet_v2_is_fully_fused() {
    assert_fully_fused("mobilenet_v2", Activation::Relu6);
}

#[test]
fn resnet18_blocks_fuse_into_the_later_conv() {
    let (file, checked) = example("resnet18");
    let optimized = optimize(&file, &checked);
    let graph = &optimized.graph;
    let find = |name: &str| {
        graph
            .node_ids()
            .find(|&n| graph[n].name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name}"))
    };
    // A block without downsampling: conv2 takes the block input.
    let conv2 = find("layer1.0.conv2");
    assert_eq!(
        graph.inputs(conv2),
        [find("layer1.0.conv1"), find("maxpool")]
    );
    // With downsampling both operands qualify; the downsample conv runs
    // later and takes conv2's output as its residual.
    let downsample = find("layer2.0.downsample.0");
    assert_eq!(
        graph.inputs(downsample),
        [find("layer1.1.conv2"), find("layer2.0.conv2")]
    );
    let Op::Conv2d(conv) = &graph[find("layer2.0.conv2")].op else {
        panic!()
    };
    assert_eq!(conv.epilogue.activation, Activation::Identity);
    assert!(!conv.epilogue.residual);
    assert_eq!(
        cnnc_ir::text::fused_summary(graph, downsample),
        format!(
            "conv2d(128, 1, stride=2, bias=false) + bn(layer2.0.downsample.1) + residual({}) + relu",
            find("layer2.0.conv2")
        )
    );
}

#[test]
fn lenet_and_vgg_fuse_their_activations() {
    for name in ["lenet5", "vgg11"] {
        let (file, checked) = example(name);
        let activations = count(&checked.graph, |op| matches!(op, Op::Activation(_)));
        let optimized = optimize(&file, &checked);
        let graph = &optimized.graph;
        assert_eq!(
            count(graph, |op| matches!(op, Op::Activation(_))),
            0,
            "{name}"
        );
        assert_eq!(count(graph, |op| matches!(op, Op::Dropout(_))), 0, "{name}");
        let fused = graph
            .node_ids()
            .filter(|&n| {
                graph[n]
                    .op
                    .epilogue()
                    .is_some_and(|e| e.activation == Activation::Relu)
            })
            .count();
        assert_eq!(fused, activations, "{name}");
    }
}

#[test]
fn every_example_plans_and_verifies() {
    for name in ["lenet5", "mobilenet_v2", "resnet18", "vgg11"] {
        let (file, checked) = example(name);
        // The unoptimized graph plans too.
        let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
        support::plan_verifier::verify_plan(&checked.graph, &checked.info, &plan)
            .unwrap_or_else(|e| panic!("{name} (unoptimized): {e}"));
        let optimized = optimize(&file, &checked);
        let plan = cnnc_ir::plan_memory(&optimized.graph, &optimized.info).expect("plan");
        support::plan_verifier::verify_plan(&optimized.graph, &optimized.info, &plan)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(plan.arena_len() < plan.naive_len(), "{name}");
    }
}

#[test]
fn resnet18_arena_is_at_most_half_the_naive_sum() {
    let (file, checked) = example("resnet18");
    let optimized = optimize(&file, &checked);
    let plan = cnnc_ir::plan_memory(&optimized.graph, &optimized.info).expect("plan");
    let arena = plan.arena_bytes(1).expect("fits");
    let naive = plan.naive_bytes(1).expect("fits");
    assert!(2 * arena <= naive, "arena {arena} vs naive {naive}");
    // The largest two values live together: conv1's output
    // [64, 112, 112] and the max-pool's [64, 56, 56].
    assert_eq!(plan.arena_len(), 64 * 112 * 112 + 64 * 56 * 56);
}
