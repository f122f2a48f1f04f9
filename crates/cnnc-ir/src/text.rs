//! The readable text form of a graph (`cnnc build --emit ir`): one node per
//! line, in execution order.
//!
//! ```text
//! %5  layer1.0.conv2  conv2d(64, 3, padding=1, bias=false) + bn(layer1.0.bn2) + residual(%3) + relu  %4, %3  [64, 56, 56]  @200704..401408 (200704)
//! ```
//!
//! Columns: the value (`%` and the node index, stable across passes), the
//! layer's name (`_` if anonymous), the operator with its key parameters and
//! its fused epilogue in evaluation order (folded batch-norm, residual,
//! activation), the values it reads, its per-sample shape, and, with a
//! memory plan, its arena range in floats per sample with its length, and
//! whether it is computed in place of, or is an alias of, an input.

use std::fmt::Write as _;

use cnnc_kernels::Activation;

use crate::graph::{Graph, NodeId};
use crate::infer::{format_shape, GraphInfo};
use crate::memory::{MemoryPlan, Placement};
use crate::op::{Epilogue, Op, WeightSource};

/// The text form of `graph` (see the module documentation); `plan` adds the
/// arena column and a header line with the arena's size.
pub fn to_text(graph: &Graph, info: &GraphInfo, plan: Option<&MemoryPlan>) -> String {
    let order: Vec<NodeId> = match plan {
        Some(plan) => plan.order().to_vec(),
        None => info
            .order()
            .iter()
            .copied()
            .filter(|&n| graph.contains(n))
            .collect(),
    };
    let mut out = format!(
        "network {}: input {} {}, output {} {}\n",
        graph.name(),
        graph.input(),
        format_shape(info.shape(graph.input())),
        graph.output(),
        format_shape(info.shape(graph.output()))
    );
    if let Some(plan) = plan {
        let _ = writeln!(
            out,
            "arena: {} floats per sample ({} bytes at batch 1); one buffer per value: {} floats ({} bytes)",
            thousands(plan.arena_len() as u64),
            thousands(plan.arena_bytes(1).unwrap_or(u64::MAX)),
            thousands(plan.naive_len() as u64),
            thousands(plan.naive_bytes(1).unwrap_or(u64::MAX)),
        );
    }
    out.push('\n');

    let rows: Vec<[String; 6]> = order
        .iter()
        .map(|&node| {
            let data = &graph[node];
            let inputs: Vec<String> = graph.inputs(node).iter().map(|i| i.to_string()).collect();
            let memory = plan
                .and_then(|plan| plan.slot(node))
                .map(|slot| {
                    let mut text = format!(
                        "@{}..{} ({})",
                        slot.offset,
                        slot.offset + slot.len,
                        slot.len
                    );
                    match slot.placement {
                        Placement::Fresh => {}
                        Placement::InPlace(source) => {
                            let _ = write!(text, " in place of {source}");
                        }
                        Placement::Alias(source) => {
                            let _ = write!(text, " alias of {source}");
                        }
                        Placement::Fused => {
                            text = format!("fused, not stored ({})", slot.len);
                        }
                    }
                    text
                })
                .unwrap_or_default();
            [
                node.to_string(),
                data.name.clone().unwrap_or_else(|| "_".into()),
                fused_summary(graph, node),
                inputs.join(", "),
                format_shape(info.shape(node)),
                memory,
            ]
        })
        .collect();
    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The operator with its key parameters and its fused epilogue, in
/// evaluation order: `conv2d(64, 3, padding=1) + bn(bn1) + residual(%3) + relu`.
pub fn fused_summary(graph: &Graph, node: NodeId) -> String {
    let op = &graph[node].op;
    let mut bare = op.clone();
    let (epilogue, weights): (Epilogue, Option<&WeightSource>) = match (&mut bare, op) {
        (Op::Conv2d(conv), Op::Conv2d(original)) => {
            (std::mem::take(&mut conv.epilogue), Some(&original.weights))
        }
        (Op::Linear(linear), Op::Linear(original)) => (
            std::mem::take(&mut linear.epilogue),
            Some(&original.weights),
        ),
        (Op::Add(add), _) => (std::mem::take(&mut add.epilogue), None),
        _ => (Epilogue::default(), None),
    };
    let mut text = bare.summary();
    if let Some(bn) = weights.and_then(|w| w.folded_batchnorm.as_ref()) {
        let _ = write!(text, " + bn({})", bn.module);
    } else if epilogue.bias {
        text.push_str(" + bias");
    }
    if epilogue.residual {
        match graph.inputs(node).get(1) {
            Some(residual) => {
                let _ = write!(text, " + residual({residual})");
            }
            None => text.push_str(" + residual(?)"),
        }
    }
    if epilogue.activation != Activation::Identity {
        let _ = write!(text, " + {}", activation_summary(epilogue.activation));
    }
    text
}

fn activation_summary(activation: Activation) -> String {
    match activation {
        Activation::LeakyRelu { negative_slope } => format!("leaky_relu({negative_slope})"),
        other => other.name().to_string(),
    }
}

/// `1234567` → `1,234,567`.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
