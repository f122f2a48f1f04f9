//! Graphviz DOT output of a graph and its shapes.

use std::fmt::Write as _;

use crate::graph::Graph;
use crate::infer::{format_shape, GraphInfo};
use crate::op::Op;

/// The graph in Graphviz DOT: one box per node (name, operator with its key
/// parameters, output shape), one edge per value, labelled with the input
/// slot when the consumer has several inputs.
pub fn to_dot(graph: &Graph, info: &GraphInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(graph.name()));
    let _ = writeln!(out, "    rankdir=TB;");
    let _ = writeln!(
        out,
        "    node [shape=box, style=\"rounded,filled\", fillcolor=\"#f5f5f5\", fontname=\"Helvetica\"];"
    );
    for node in graph.topo_order() {
        let Some(data) = graph.get(node) else {
            continue;
        };
        let mut label = String::new();
        if let Some(name) = &data.name {
            label.push_str(name);
            label.push('\n');
        }
        label.push_str(&data.op.summary());
        if let Some(node_info) = info.get(node) {
            label.push('\n');
            label.push_str(&format_shape(&node_info.shape));
        }
        let fill = match &data.op {
            Op::Input(_) => "#d0e8ff",
            Op::Conv2d(_) | Op::Linear(_) => "#ffe4b5",
            Op::BatchNorm2d(_) => "#e0f0e0",
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d(_) => "#e8e0f8",
            _ => "#f5f5f5",
        };
        let extra = if node == graph.output() {
            ", penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    n{} [label={}, fillcolor=\"{fill}\"{extra}];",
            node.index(),
            quote(&label)
        );
    }
    for node in graph.topo_order() {
        let inputs = graph.inputs(node);
        let several = inputs.len() > 1;
        for (slot, input) in inputs.iter().enumerate() {
            if several {
                let _ = writeln!(
                    out,
                    "    n{} -> n{} [label=\"{slot}\"];",
                    input.index(),
                    node.index()
                );
            } else {
                let _ = writeln!(out, "    n{} -> n{};", input.index(), node.index());
            }
        }
    }
    out.push_str("}\n");
    out
}

/// A DOT string literal (`"..."` with `"` and `\` escaped, newlines as `\n`).
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
