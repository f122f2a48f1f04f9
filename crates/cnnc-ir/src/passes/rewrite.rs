//! Small rewrite helpers the passes share, so that no pass does its own
//! edge surgery (tract's `ModelPatch` helpers play this role there).
//!
//! Each helper keeps the graph's invariants: input slots stay `0..n`
//! without gaps, the output moves along with the value it names, and
//! nodes are only ever removed, never created.

use crate::graph::{Graph, NodeId};

/// The one node that reads `node`, if `node` feeds exactly one input slot
/// of exactly one node and is not the network's output: the condition for
/// fusing `node` with its reader, since no one else sees the value.
pub(crate) fn sole_reader(graph: &Graph, node: NodeId) -> Option<NodeId> {
    if node == graph.output() {
        return None;
    }
    match graph.users(node).as_slice() {
        [(reader, _)] => Some(*reader),
        _ => None,
    }
}

/// The single input of `node`, if it has exactly one.
pub(crate) fn sole_input(graph: &Graph, node: NodeId) -> Option<NodeId> {
    match graph.inputs(node).as_slice() {
        [input] => Some(*input),
        _ => None,
    }
}

/// Removes a one-input node whose value equals its input's: every reader
/// (and the output, if it was this node) takes the input instead. Returns
/// whether the node was removed (not if it has several inputs, or none).
pub(crate) fn bypass(graph: &mut Graph, node: NodeId) -> bool {
    let Some(input) = sole_input(graph, node) else {
        return false;
    };
    graph.replace_all_uses(node, input);
    graph.remove_node(node).is_some()
}

/// Removes `consumer` after its work has been folded into `producer`'s op:
/// every reader of `consumer` (and the output) reads `producer` instead.
/// The caller has already moved whatever `consumer` did into `producer`,
/// including any other input it needs (connected in a new slot).
pub(crate) fn fuse_into_producer(graph: &mut Graph, producer: NodeId, consumer: NodeId) {
    graph.replace_all_uses(consumer, producer);
    graph.remove_node(consumer);
}

/// The position of every node in a topological order, by node index
/// (`usize::MAX` for an index with no node).
pub(crate) fn positions(graph: &Graph) -> Vec<usize> {
    let mut position = vec![usize::MAX; graph.node_bound()];
    for (step, node) in graph.topo_order().into_iter().enumerate() {
        position[node.index()] = step;
    }
    position
}
