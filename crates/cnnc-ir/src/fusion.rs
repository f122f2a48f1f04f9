//! Layer fusions that change how the fast engines run a graph, not what it
//! computes: the graph keeps its nodes; the memory plan asks [`bottlenecks`]
//! which groups run as one kernel and records them
//! ([`MemoryPlan::bottlenecks`](crate::MemoryPlan::bottlenecks)), and the
//! execution plan fuses exactly those.
//!
//! **Inverted residual blocks** (MobileNetV2): a 1x1 expansion (optional),
//! a depthwise convolution and a 1x1 projection, where each intermediate
//! value is read only by the next layer, run as one
//! [`BottleneckOp`](cnnc_kernels::ops::conv::BottleneckOp) when the
//! kernels crate says the block is large enough to gain
//! ([`BottleneckSpec::worth_fusing`]). The fused kernel reads the block's
//! input until its last band, so the memory plan keeps that input alive
//! until the projection's step, where the fused step runs; the block's
//! intermediate values are never stored and get no memory.

use cnnc_kernels::ops::conv::{Algorithm, BottleneckSpec, Conv2dSpec};

use crate::graph::{Graph, NodeId};
use crate::infer::GraphInfo;
use crate::op::Op;

/// One fused inverted residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bottleneck {
    /// The value the block reads (the expansion's input, or the depthwise
    /// layer's without expansion).
    pub input: NodeId,
    /// The 1x1 expansion, if any.
    pub expand: Option<NodeId>,
    /// The depthwise convolution.
    pub depthwise: NodeId,
    /// The 1x1 projection: the block's output, where its step runs.
    pub project: NodeId,
}

/// The spec of the convolution `node` (one sample, the algorithm of
/// [`Algorithm::choose`]) — the execution plan's, and what fusion decides
/// on — or `None` if `node` is not a convolution with a known geometry.
pub fn conv_spec(graph: &Graph, info: &GraphInfo, node: NodeId) -> Option<Conv2dSpec> {
    let Op::Conv2d(conv) = &graph.get(node)?.op else {
        return None;
    };
    let geometry = info.conv2d_geometry(graph, node, 1)?;
    let epilogue = &conv.epilogue;
    Some(Conv2dSpec::new(
        geometry,
        epilogue.activation,
        conv.bias || epilogue.bias,
        epilogue.residual,
    ))
}

/// The blocks of `graph` that run fused, in execution order. A node
/// belongs to at most one block: a 1x1 layer that is both a block's
/// projection and the next block's expansion stays the former's (the next
/// block then has no expansion).
pub fn bottlenecks(graph: &Graph, info: &GraphInfo) -> Vec<Bottleneck> {
    // `node`'s value is read by `reader` alone, in slot 0, and is not the
    // network's output (so it need not be stored).
    let only_feeds =
        |node: NodeId, reader: NodeId| node != graph.output() && graph.users(node) == [(reader, 0)];
    let mut blocks: Vec<Bottleneck> = Vec::new();
    for &project in info.order() {
        let Some(project_spec) = conv_spec(graph, info, project) else {
            continue;
        };
        if project_spec.algorithm != Algorithm::Gemm1x1 {
            continue;
        }
        let Some(&depthwise) = graph.inputs(project).first() else {
            continue;
        };
        let Some(depthwise_spec) = conv_spec(graph, info, depthwise) else {
            continue;
        };
        if depthwise_spec.algorithm != Algorithm::Depthwise || !only_feeds(depthwise, project) {
            continue;
        }
        let Some(&before) = graph.inputs(depthwise).first() else {
            continue;
        };
        let expand = conv_spec(graph, info, before).filter(|spec| {
            spec.algorithm == Algorithm::Gemm1x1
                && !spec.has_residual
                && only_feeds(before, depthwise)
                && !blocks.iter().any(|block| block.project == before)
        });
        let input = match expand {
            Some(_) => graph.inputs(before).first().copied(),
            None => Some(before),
        };
        let Some(input) = input else {
            continue;
        };
        let spec = BottleneckSpec {
            expand,
            depthwise: depthwise_spec,
            project: project_spec,
        };
        if spec.worth_fusing() {
            blocks.push(Bottleneck {
                input,
                expand: expand.map(|_| before),
                depthwise,
                project,
            });
        }
    }
    blocks
}
