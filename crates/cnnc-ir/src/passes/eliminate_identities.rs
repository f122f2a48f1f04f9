//! Removes operators that are the identity on their input: every `dropout`
//! (inference mode) and a `flatten` of a value that is already rank 1.
//!
//! It does not touch a `flatten` that changes the shape, even when it moves
//! no data (`[C, 1, 1] → [C]`): that is a shape change the graph must keep;
//! the memory plan makes such a `flatten` share its input's buffer instead.

use crate::graph::Graph;
use crate::infer::GraphInfo;
use crate::op::Op;

use super::rewrite;

/// Removes every identity operator; its readers (and the output) read its
/// input instead. `info` holds the shapes of the graph before this pass.
/// Returns how many nodes were removed.
pub fn eliminate_identities(graph: &mut Graph, info: &GraphInfo) -> usize {
    let mut removed = 0;
    for node in graph.topo_order() {
        let identity = match &graph[node].op {
            Op::Dropout(_) => true,
            Op::Flatten => {
                rewrite::sole_input(graph, node).is_some_and(|input| info.shape(input).len() == 1)
            }
            _ => false,
        };
        if identity && rewrite::bypass(graph, node) {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use crate::passes::tests::{check, find, ops};

    #[test]
    fn dropout_and_flat_flatten_are_removed() {
        let mut checked = check(
            "input x: [2, 3, 3]
             flatten
             d = dropout(0.2)
             fc = linear(4)
             f2 = flatten
             output f2",
        );
        let removed = super::eliminate_identities(&mut checked.graph, &checked.info);
        assert_eq!(removed, 2);
        assert_eq!(ops(&checked.graph), ["input", "flatten", "linear"]);
        // The output moved to what the removed `flatten` read.
        assert_eq!(checked.graph.output(), find(&checked.graph, "fc"));
        // The linear layer now reads the shape-changing flatten.
        let fc = find(&checked.graph, "fc");
        let input = checked.graph.inputs(fc)[0];
        assert_eq!(checked.graph[input].op.name(), "flatten");
    }

    #[test]
    fn dropout_of_the_input_leaves_the_input_as_output() {
        let mut checked = check("input x: [5]\n d = dropout");
        assert_eq!(
            super::eliminate_identities(&mut checked.graph, &checked.info),
            1
        );
        assert_eq!(checked.graph.output(), checked.graph.input());
        assert_eq!(checked.graph.len(), 1);
    }
}
