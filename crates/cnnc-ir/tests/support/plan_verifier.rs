//! An independent verifier of activation memory plans, for tests.
//!
//! It shares no code with the planner (`cnnc_ir::memory`): from the graph,
//! its info and the slots alone it re-derives liveness with the planner's
//! documented definition (a value is live from the step that computes it to
//! the last step that reads it, both included; the output until after the
//! last step) and checks
//!
//! 1. the execution order: every node once, the input first, inputs before
//!    their readers;
//! 2. every slot: the value's length, an offset aligned to 16 floats, inside
//!    the arena;
//! 3. every alias and in-place placement against its own copy of the rules
//!    (`dropout`; `flatten` of a value whose NHWC and NCHW orders agree;
//!    in place only for activations, `add` and `batchnorm2d`), and that a
//!    value with memory of its own does not overlap its inputs;
//! 4. that no two values live at the same step overlap in the arena, unless
//!    they are the same data (an alias) or the later one is written in place
//!    over the earlier at the earlier one's last use;
//! 5. by simulating the execution over the arena, that every read finds
//!    the value it expects, and the output survives to the end.
//!
//! The blocks the plan says the engines run fused
//! ([`MemoryPlan::bottlenecks`]) are checked too: each is a chain (input →
//! optional expansion → depthwise → projection) whose intermediate values
//! only the next layer reads, and since the fused kernel runs at the
//! projection's step and reads the block's input there, that input counts
//! as read at that step (for 4. and 5.). Only a block's intermediates may
//! have no memory ([`Placement::Fused`]); those that do occupy nothing.
//! Intermediates with memory are treated as written at their own steps,
//! which can only make the check stricter.
//!
//! Shared by this crate's tests and `cnnc-interp`'s property tests (which
//! include this file by path).

use cnnc_ir::fusion::Bottleneck;
use cnnc_ir::memory::{MemoryPlan, Placement, Slot};
use cnnc_ir::{Graph, GraphInfo, NodeId, Op};

/// Verifies `plan` for `graph` (see the module documentation).
pub fn verify_plan(graph: &Graph, info: &GraphInfo, plan: &MemoryPlan) -> Result<(), String> {
    verify_fused_slots(
        graph,
        info,
        plan.order(),
        plan.arena_len(),
        plan.bottlenecks(),
        |node| plan.slot(node).copied(),
    )
}

/// Verifies the slots `slot` gives, for the execution `order`, in an arena
/// of `arena_len` floats per sample, with no fused blocks.
// Not every test crate that includes this file uses it.
#[allow(dead_code)]
pub fn verify_slots(
    graph: &Graph,
    info: &GraphInfo,
    order: &[NodeId],
    arena_len: usize,
    slot: impl Fn(NodeId) -> Option<Slot>,
) -> Result<(), String> {
    verify_fused_slots(graph, info, order, arena_len, &[], slot)
}

/// [`verify_slots`] where `blocks` run fused at their projection's step.
pub fn verify_fused_slots(
    graph: &Graph,
    info: &GraphInfo,
    order: &[NodeId],
    arena_len: usize,
    blocks: &[Bottleneck],
    slot: impl Fn(NodeId) -> Option<Slot>,
) -> Result<(), String> {
    let name = |node: NodeId| graph.display_name(node);
    let bound = graph.node_bound();

    // 1. The order.
    let mut position = vec![usize::MAX; bound];
    for (step, &node) in order.iter().enumerate() {
        if !graph.contains(node) {
            return Err(format!("the order has a removed node {node}"));
        }
        if position[node.index()] != usize::MAX {
            return Err(format!("`{}` is twice in the order", name(node)));
        }
        position[node.index()] = step;
    }
    if order.len() != graph.len() {
        return Err(format!(
            "the order has {} nodes, the graph {}",
            order.len(),
            graph.len()
        ));
    }
    if order.first() != Some(&graph.input()) {
        return Err("the input is not the first step".into());
    }
    for &node in order {
        for input in graph.inputs(node) {
            if position[input.index()] >= position[node.index()] {
                return Err(format!(
                    "`{}` runs before its input `{}`",
                    name(node),
                    name(input)
                ));
            }
        }
    }

    // The fused blocks: chains whose intermediates only the next link
    // reads; each block's input is also read at its projection's step.
    let readers = |node: NodeId| {
        order
            .iter()
            .filter(|&&reader| graph.inputs(reader).contains(&node))
            .count()
    };
    let mut fused_reads: Vec<(NodeId, NodeId)> = Vec::new();
    // Values computed and consumed inside a fused block.
    let mut inner_values: Vec<NodeId> = Vec::new();
    for block in blocks {
        let chain: Vec<NodeId> = std::iter::once(block.input)
            .chain(block.expand)
            .chain([block.depthwise, block.project])
            .collect();
        for link in chain.windows(2) {
            // The projection may read a residual too, as its second input.
            let inputs = graph.inputs(link[1]);
            let extra = if link[1] == block.project { 1 } else { 0 };
            if inputs.first() != Some(&link[0]) || inputs.len() > 1 + extra {
                return Err(format!(
                    "fused block of `{}`: `{}` does not read `{}` (alone)",
                    name(block.project),
                    name(link[1]),
                    name(link[0])
                ));
            }
        }
        for &inner in &chain[1..chain.len() - 1] {
            if readers(inner) != 1 || inner == graph.output() {
                return Err(format!(
                    "fused block of `{}`: `{}` is read outside the block",
                    name(block.project),
                    name(inner)
                ));
            }
        }
        fused_reads.push((block.project, block.input));
        inner_values.extend(&chain[1..chain.len() - 1]);
    }
    // Every value a step reads: its inputs, and a fused block's input at
    // the block's projection.
    let reads = |node: NodeId| {
        let mut inputs = graph.inputs(node);
        inputs.extend(
            fused_reads
                .iter()
                .filter(|(project, _)| *project == node)
                .map(|&(_, input)| input),
        );
        inputs
    };

    // 2. The slots.
    let mut slots: Vec<Option<Slot>> = vec![None; bound];
    for &node in order {
        let Some(s) = slot(node) else {
            return Err(format!("`{}` has no slot", name(node)));
        };
        let len: usize = info.shape(node).iter().product();
        if s.len != len {
            return Err(format!(
                "`{}` has {} floats, its slot {}",
                name(node),
                len,
                s.len
            ));
        }
        if s.offset % 16 != 0 {
            return Err(format!(
                "`{}` is at unaligned offset {}",
                name(node),
                s.offset
            ));
        }
        if s.placement == Placement::Fused {
            if !inner_values.contains(&node) {
                return Err(format!(
                    "`{}` has no memory but is not inside a fused block",
                    name(node)
                ));
            }
        } else if s.offset + s.len > arena_len {
            return Err(format!(
                "`{}` at {}..{} is outside the arena of {arena_len}",
                name(node),
                s.offset,
                s.offset + s.len
            ));
        }
        slots[node.index()] = Some(s);
    }
    // A value with no memory occupies nothing (and overlaps nothing).
    let region = |node: NodeId| {
        let s = slots[node.index()].expect("checked above");
        if s.placement == Placement::Fused {
            (0, 0)
        } else {
            (s.offset, s.offset + s.len)
        }
    };
    let overlap = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;

    // 3. The placements, and each value's data: its own, or its alias
    // source's.
    let mut data: Vec<NodeId> = (0..bound).map(|_| graph.input()).collect();
    for &node in order {
        let inputs = graph.inputs(node);
        let s = slots[node.index()].expect("checked above");
        data[node.index()] = node;
        match s.placement {
            Placement::Alias(source) => {
                let legal = inputs == [source]
                    && match &graph[node].op {
                        Op::Dropout(_) => true,
                        Op::Flatten => match info.shape(source) {
                            [c, h, w] => *c == 1 || h * w == 1,
                            _ => true,
                        },
                        _ => false,
                    };
                if !legal {
                    return Err(format!("`{}` cannot alias `{}`", name(node), name(source)));
                }
                if region(node) != region(source) {
                    return Err(format!("alias `{}` is not where its source is", name(node)));
                }
                data[node.index()] = data[source.index()];
            }
            Placement::InPlace(source) => {
                let element_wise = matches!(
                    graph[node].op,
                    Op::Activation(_) | Op::Add(_) | Op::BatchNorm2d(_)
                );
                if !element_wise || !inputs.contains(&source) {
                    return Err(format!(
                        "`{}` cannot run in place over `{}`",
                        name(node),
                        name(source)
                    ));
                }
                if region(node) != region(source) {
                    return Err(format!(
                        "`{}` runs in place but is not where `{}` is",
                        name(node),
                        name(source)
                    ));
                }
            }
            // Checked above: only inside a fused block, where the block's
            // kernel alone computes and reads it.
            Placement::Fused => {}
            Placement::Fresh => {
                for input in &inputs {
                    if overlap(region(node), region(*input)) {
                        return Err(format!(
                            "`{}` overlaps its input `{}` without running in place",
                            name(node),
                            name(*input)
                        ));
                    }
                }
            }
        }
    }

    // 4. Liveness.
    let mut last = position.clone();
    for &node in order {
        for input in reads(node) {
            last[input.index()] = last[input.index()].max(position[node.index()]);
        }
    }
    last[graph.output().index()] = order.len();
    for (i, &early) in order.iter().enumerate() {
        for &late in &order[i + 1..] {
            // `early` is computed before `late`.
            let live_together = position[late.index()] <= last[early.index()];
            if !live_together || !overlap(region(early), region(late)) {
                continue;
            }
            if data[early.index()] == data[late.index()] {
                continue; // The same data under two names.
            }
            let in_place_over_early = match slots[late.index()].expect("checked").placement {
                Placement::InPlace(source) => {
                    data[source.index()] == data[early.index()]
                        && last[early.index()] == position[late.index()]
                }
                _ => false,
            };
            if !in_place_over_early {
                return Err(format!(
                    "`{}` (live at steps {}..={}, arena {:?}) and `{}` (steps {}..={}, arena {:?}) overlap",
                    name(early),
                    position[early.index()],
                    last[early.index()],
                    region(early),
                    name(late),
                    position[late.index()],
                    last[late.index()],
                    region(late)
                ));
            }
        }
    }

    // 5. Simulation: which data is still intact in its region.
    let mut intact = vec![false; bound];
    for &node in order {
        for input in reads(node) {
            if !intact[data[input.index()].index()] {
                return Err(format!(
                    "`{}` reads `{}`, which was overwritten",
                    name(node),
                    name(input)
                ));
            }
        }
        if data[node.index()] != node {
            continue; // An alias writes nothing.
        }
        for &other in order {
            if position[other.index()] >= position[node.index()] {
                break;
            }
            if data[other.index()] == other && overlap(region(other), region(node)) {
                intact[other.index()] = false;
            }
        }
        intact[node.index()] = true;
    }
    if !intact[data[graph.output().index()].index()] {
        return Err("the output was overwritten before the end".into());
    }
    Ok(())
}
