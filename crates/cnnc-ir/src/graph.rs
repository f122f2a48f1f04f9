//! The dataflow graph: nodes are operators, edges carry values.
//!
//! [`Graph`] wraps petgraph's `StableDiGraph` (indices stay valid when nodes
//! are removed, which the optimizer's rewrites rely on) behind typed
//! [`NodeId`]s. Every operator has exactly one output; an edge goes from the
//! producer to a consumer and says which input slot of the consumer it
//! feeds ([`Edge::input_slot`]).
//!
//! **Invariant:** the graph is acyclic; the input slots of every node are
//! `0..n` with no gap and no duplicate; the input node has no inputs.

use std::collections::BTreeSet;
use std::fmt;

use cnnc_syntax::Span;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::op::Op;

/// A node of a [`Graph`]. Stays valid while the node exists, including
/// across the removal of other nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

impl NodeId {
    /// A dense index (`0..Graph::node_bound()`), for side tables.
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// An edge: the producer's (only) output feeds input `input_slot` of the
/// consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The consumer's input slot (0 for the main input, 1 for the second
    /// operand of `add` or a fused residual, ...).
    pub input_slot: usize,
}

/// Where a node came from in the source, for diagnostics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The whole statement.
    pub statement: Span,
    /// The operator name (`conv2d`), or the input's name for the input node.
    pub op: Span,
    /// The name the statement defines, if any.
    pub name: Option<Span>,
    /// The value of each argument written, by parameter name.
    pub args: Vec<(&'static str, Span)>,
    /// What provided each input slot: the `from` name, an operand name, or
    /// (for an implicit input) the operator name.
    pub inputs: Vec<Span>,
}

impl Origin {
    /// The span of the argument for `param`, if it was written.
    pub fn arg(&self, param: &str) -> Option<Span> {
        self.args
            .iter()
            .find(|(name, _)| *name == param)
            .map(|(_, span)| *span)
    }

    /// The span of the argument for `param`, or else the operator name.
    pub fn arg_or_op(&self, param: &str) -> Span {
        self.arg(param).unwrap_or(self.op)
    }
}

/// One operator in the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The name the statement gave it (`layer1.0.conv1`), if any.
    pub name: Option<String>,
    /// What it computes.
    pub op: Op,
    /// Where it was written.
    pub origin: Origin,
}

/// A network as a graph of operators.
#[derive(Clone, Debug)]
pub struct Graph {
    name: String,
    inner: StableDiGraph<Node, Edge, u32>,
    input: NodeId,
    output: NodeId,
    weights_path: Option<(String, Span)>,
}

impl Graph {
    /// A graph named `name` holding only its input node (which is also its
    /// output until [`Graph::set_output`] is called).
    pub fn new(name: impl Into<String>, input: Node) -> Graph {
        let mut inner = StableDiGraph::default();
        let input = NodeId(inner.add_node(input));
        Graph {
            name: name.into(),
            inner,
            input,
            output: input,
            weights_path: None,
        }
    }

    /// The network's name (`network NAME { ... }`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the network.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        self.input
    }

    /// The node whose value is the network's result.
    pub fn output(&self) -> NodeId {
        self.output
    }

    /// Makes `node` the network's result.
    pub fn set_output(&mut self, node: NodeId) {
        self.output = node;
    }

    /// The `weights "PATH"` statement's path (as written) and span, if any.
    pub fn weights_path(&self) -> Option<(&str, Span)> {
        self.weights_path.as_ref().map(|(p, s)| (p.as_str(), *s))
    }

    /// Records the `weights "PATH"` statement.
    pub fn set_weights_path(&mut self, path: impl Into<String>, span: Span) {
        self.weights_path = Some((path.into(), span));
    }

    /// Adds a node without inputs; connect them with [`Graph::connect`].
    pub fn add_node(&mut self, node: Node) -> NodeId {
        NodeId(self.inner.add_node(node))
    }

    /// Feeds `producer`'s output into input `input_slot` of `consumer`.
    pub fn connect(&mut self, producer: NodeId, consumer: NodeId, input_slot: usize) {
        self.inner
            .add_edge(producer.0, consumer.0, Edge { input_slot });
    }

    /// Removes a node and every edge touching it.
    pub fn remove_node(&mut self, node: NodeId) -> Option<Node> {
        self.inner.remove_node(node.0)
    }

    /// Whether `node` exists.
    pub fn contains(&self, node: NodeId) -> bool {
        self.inner.contains_node(node.0)
    }

    /// The node, if it exists.
    pub fn get(&self, node: NodeId) -> Option<&Node> {
        self.inner.node_weight(node.0)
    }

    /// The node, mutably, if it exists.
    pub fn get_mut(&mut self, node: NodeId) -> Option<&mut Node> {
        self.inner.node_weight_mut(node.0)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.inner.node_count()
    }

    /// Whether the graph has no nodes (never true for a graph from [`Graph::new`]).
    pub fn is_empty(&self) -> bool {
        self.inner.node_count() == 0
    }

    /// An upper bound of [`NodeId::index`], for sizing side tables.
    pub fn node_bound(&self) -> usize {
        self.inner
            .node_indices()
            .map(|i| i.index() + 1)
            .max()
            .unwrap_or(0)
    }

    /// Every node id, in increasing index order (source order for a freshly
    /// lowered graph).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.inner.node_indices().map(NodeId)
    }

    /// The producers feeding `node`, ordered by input slot.
    pub fn inputs(&self, node: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .inner
            .edges_directed(node.0, Direction::Incoming)
            .map(|edge| (edge.weight().input_slot, NodeId(edge.source())))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, producer)| producer).collect()
    }

    /// The consumers of `node`'s output with the slot each one reads it in,
    /// ordered by consumer.
    pub fn users(&self, node: NodeId) -> Vec<(NodeId, usize)> {
        let mut users: Vec<(NodeId, usize)> = self
            .inner
            .edges_directed(node.0, Direction::Outgoing)
            .map(|edge| (NodeId(edge.target()), edge.weight().input_slot))
            .collect();
        users.sort();
        users
    }

    /// Makes every consumer of `old` read `new` instead (same slots); if
    /// `old` is the output, `new` becomes the output.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        for (consumer, slot) in self.users(old) {
            if let Some(edge) = self.inner.find_edge(old.0, consumer.0) {
                self.inner.remove_edge(edge);
            }
            self.connect(new, consumer, slot);
        }
        if self.output == old {
            self.output = new;
        }
    }

    /// The nodes in a topological order: producers before consumers, and
    /// among ready nodes the lowest index first (so a freshly lowered graph
    /// comes out in source order). Nodes unreachable from the input are
    /// included too.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let bound = self.node_bound();
        let mut waiting = vec![0usize; bound];
        let mut ready = BTreeSet::new();
        for node in self.node_ids() {
            let count = self
                .inner
                .edges_directed(node.0, Direction::Incoming)
                .count();
            waiting[node.index()] = count;
            if count == 0 {
                ready.insert(node);
            }
        }
        let mut order = Vec::with_capacity(self.len());
        while let Some(node) = ready.pop_first() {
            order.push(node);
            for edge in self.inner.edges_directed(node.0, Direction::Outgoing) {
                let consumer = edge.target().index();
                waiting[consumer] -= 1;
                if waiting[consumer] == 0 {
                    ready.insert(NodeId(edge.target()));
                }
            }
        }
        order
    }

    /// A display name for a node: its own name, or `#INDEX op` for an
    /// anonymous one (`#3 relu`).
    pub fn display_name(&self, node: NodeId) -> String {
        match self.get(node) {
            Some(Node {
                name: Some(name), ..
            }) => name.clone(),
            Some(n) => format!("#{} {}", node.index(), n.op.name()),
            None => format!("#{} (removed)", node.index()),
        }
    }
}

impl std::ops::Index<NodeId> for Graph {
    type Output = Node;

    /// The node; panics if it was removed (a compiler bug, never user input).
    fn index(&self, node: NodeId) -> &Node {
        &self.inner[node.0]
    }
}

impl std::ops::IndexMut<NodeId> for Graph {
    fn index_mut(&mut self, node: NodeId) -> &mut Node {
        &mut self.inner[node.0]
    }
}

#[cfg(test)]
mod tests {
    use super::{Graph, Node, Origin};
    use crate::op::{Add, Input, Op};
    use cnnc_kernels::Activation;

    fn node(op: Op) -> Node {
        Node {
            name: None,
            op,
            origin: Origin::default(),
        }
    }

    #[test]
    fn edges_rewrites_and_order() {
        let mut graph = Graph::new("g", node(Op::Input(Input { shape: vec![4] })));
        let x = graph.input();
        let relu = graph.add_node(node(Op::Activation(Activation::Relu)));
        let add = graph.add_node(node(Op::Add(Add::default())));
        let tanh = graph.add_node(node(Op::Activation(Activation::Tanh)));
        graph.connect(x, relu, 0);
        graph.connect(x, add, 1);
        graph.connect(relu, add, 0);
        graph.connect(add, tanh, 0);
        graph.set_output(tanh);
        assert_eq!(graph.inputs(add), [relu, x]);
        assert_eq!(graph.users(x), [(relu, 0), (add, 1)]);
        assert_eq!(graph.topo_order(), [x, relu, add, tanh]);

        // Bypass the relu: `add` reads `x` in both slots.
        graph.replace_all_uses(relu, x);
        assert_eq!(graph.inputs(add), [x, x]);
        assert!(graph.users(relu).is_empty());
        graph.remove_node(relu);
        assert!(!graph.contains(relu));
        assert_eq!(graph.len(), 3);
        assert_eq!(graph.topo_order(), [x, add, tanh]);
        // Ids stay valid after a removal.
        assert_eq!(graph[tanh].op.name(), "tanh");
        assert_eq!(graph.display_name(tanh), format!("#{} tanh", tanh.index()));

        // Replacing the output moves it.
        graph.replace_all_uses(tanh, add);
        assert_eq!(graph.output(), add);
    }
}
