//! Removes the layers the network's output does not depend on.
//!
//! It never removes the input. It warns only about removed layers that had
//! readers: a layer nobody reads is already reported by the front end ("the
//! value `x` is never used", from lowering), so those are removed silently.
//! What remains are layers whose only readers are themselves dead, which the
//! front end cannot see; each is named once, here. Every removed layer is
//! thus reported exactly once, by whichever stage can see why.

use cnnc_syntax::{Diagnostic, Diagnostics, Label};

use crate::graph::Graph;

/// Removes every node the output does not depend on and returns warnings
/// for those that the front end did not already warn about (see the module
/// documentation), in source order.
pub fn eliminate_dead_nodes(graph: &mut Graph) -> Diagnostics {
    let mut live = vec![false; graph.node_bound()];
    live[graph.input().index()] = true;
    let mut stack = vec![graph.output()];
    while let Some(node) = stack.pop() {
        if std::mem::replace(&mut live[node.index()], true) {
            continue;
        }
        stack.extend(graph.inputs(node));
    }
    let dead: Vec<_> = graph.node_ids().filter(|n| !live[n.index()]).collect();
    let mut warnings = Diagnostics::new();
    for &node in &dead {
        if graph.users(node).is_empty() {
            continue; // The front end's "never used" warning covers it.
        }
        let data = &graph[node];
        let what = match &data.name {
            Some(name) => format!("the value `{name}`"),
            None => format!("the result of this `{}`", data.op.name()),
        };
        warnings.push(
            Diagnostic::warning(format!("{what} does not contribute to the output"))
                .with_primary(Label::new(
                    data.origin.name.unwrap_or(data.origin.op),
                    "only read by layers whose results are never used",
                ))
                .with_note("layers that do not contribute to the output are not computed"),
        );
    }
    for node in dead {
        graph.remove_node(node);
    }
    warnings.sort_by_position();
    warnings
}

#[cfg(test)]
mod tests {
    use crate::passes::tests::{check, ops};

    #[test]
    fn dead_branches_go_and_only_interior_ones_are_warned_about() {
        let mut checked = check(
            "input x: [2, 4, 4]
             probe = conv2d(2, 1) from x
             probe_act = relu
             main = conv2d(3, 1) from x
             output main",
        );
        // The front end warned about `probe_act` (nobody reads it).
        assert_eq!(checked.warnings.len(), 1);
        assert!(checked
            .warnings
            .iter()
            .all(|w| w.message.contains("probe_act")));
        let warnings = super::eliminate_dead_nodes(&mut checked.graph);
        assert_eq!(ops(&checked.graph), ["input", "conv2d"]);
        let messages: Vec<_> = warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(
            messages,
            ["the value `probe` does not contribute to the output"]
        );
    }

    #[test]
    fn a_live_graph_is_unchanged() {
        let mut checked = check("input x: [3]\n relu\n sigmoid");
        assert!(super::eliminate_dead_nodes(&mut checked.graph).is_empty());
        assert_eq!(ops(&checked.graph), ["input", "relu", "sigmoid"]);
    }
}
