//! The activation memory plan: every value of the graph gets an offset in
//! one arena, and values whose lifetimes do not overlap share memory.
//!
//! # Sizes
//!
//! Everything is in `f32` elements **per sample**. Every value's size is
//! linear in the batch `N`, so the plan for a batch of `N` is this plan with
//! every offset and length multiplied by `N`: the arena is
//! [`MemoryPlan::arena_len`]` × N` floats, value `v` lives at
//! `slot(v).offset × N`. Offsets are multiples of [`ALIGN_FLOATS`] (64
//! bytes), and so stay aligned for any `N`.
//!
//! # Liveness
//!
//! Nodes execute in [`MemoryPlan::order`] (the topological order of
//! [`GraphInfo::order`]); step `s` is the `s`-th node, the network input
//! being step 0 (the fast path copies, and reorders, the caller's NCHW
//! input into its slot there). A value is **live** from the step that
//! computes it to the last step that reads it, both included; the network's
//! output stays live past the last step (it is copied out at the end).
//! The input of a fused block ([`crate::fusion::bottlenecks`]) stays live
//! until the block's projection: the fused kernel runs there and reads it.
//! The values inside a fused block (its expansion's and depthwise layer's
//! outputs) are never stored and take no memory ([`Placement::Fused`]).
//! Values that are live at the same step never share memory, with two
//! exceptions, which are the only other ways a [`Placement`] other than
//! [`Placement::Fresh`] arises:
//!
//! - **Aliases.** An operator that is the identity on the data shares its
//!   input's memory: `dropout` (normally removed by the optimizer), and a
//!   `flatten` whose input has the same element order in NHWC as in NCHW
//!   ([`flatten_is_alias`]: rank 1, `H = W = 1`, or `C = 1`). Any other
//!   `flatten` of `[C, H, W]` is a real copy: the fast path keeps NHWC
//!   internally and `flatten` must produce PyTorch's `C, H, W` order.
//! - **In place.** An element-wise operator ([`runs_in_place`]: an
//!   activation, `add`, a standalone `batchnorm2d`) writes its result over
//!   an input whose memory nobody reads afterwards (the input, and every
//!   alias sharing its memory, has its last use at this step).
//!
//! Values joined by these rules form one *buffer* whose lifetime is the
//! union of theirs.
//!
//! # Allocation
//!
//! Buffers are placed greedily by size, largest first (TFLite's
//! "greedy by size" arena planner): each goes into the smallest gap, among
//! the buffers already placed whose lifetimes overlap its own, that fits it
//! (best fit), or after the last of them. Every size is rounded up to
//! [`ALIGN_FLOATS`].
//!
//! The plan is checked by an independent verifier, test code that shares
//! nothing with the planner (`tests/support/plan_verifier.rs` in this
//! crate): it re-derives liveness from the graph, checks that no two values
//! live at the same step overlap unless one of the two exceptions above
//! allows it, and simulates the execution to check that every read finds
//! the value it expects.

use cnnc_syntax::{Diagnostic, Diagnostics, Label, Span};

use crate::fusion::Bottleneck;
use crate::graph::{Graph, NodeId};
use crate::infer::{checked_product, GraphInfo};
use crate::op::Op;

/// The alignment of every offset, in floats (64 bytes: a cache line, an
/// AVX-512 register).
pub const ALIGN_FLOATS: usize = 16;

/// How a value's memory relates to its inputs'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Memory of its own while it is live (possibly reused from values that
    /// died before it was computed). The operator writes it from its
    /// inputs, which never overlap it.
    Fresh,
    /// The operator (element-wise: see [`runs_in_place`]) writes its result
    /// over this input, whose memory nobody reads afterwards.
    InPlace(NodeId),
    /// The value is this input's data under another shape (see
    /// [`flatten_is_alias`]): nothing is computed or copied.
    Alias(NodeId),
    /// An intermediate value of a fused block ([`MemoryPlan::bottlenecks`]):
    /// the fused kernel computes it band by band in its own scratch and
    /// never stores it, so it has no memory in the arena (its slot's offset
    /// is 0 and means nothing).
    Fused,
}

/// Where one value lives in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Offset in floats per sample; a multiple of [`ALIGN_FLOATS`].
    pub offset: usize,
    /// The value's length in floats per sample (its shape's product).
    pub len: usize,
    /// How it relates to its inputs' memory.
    pub placement: Placement,
}

/// The memory plan of one graph: a slot for every value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    slots: Vec<Option<Slot>>,
    order: Vec<NodeId>,
    arena_len: usize,
    naive_len: usize,
    /// The fused blocks whose inputs the plan keeps alive.
    bottlenecks: Vec<Bottleneck>,
}

impl MemoryPlan {
    /// The inverted residual blocks that run fused
    /// ([`crate::fusion::bottlenecks`]): the plan keeps each block's input
    /// alive until its projection, so these (and only these) may run as
    /// one step.
    pub fn bottlenecks(&self) -> &[Bottleneck] {
        &self.bottlenecks
    }

    /// The slot of `node`'s value (every node of the planned graph has one).
    pub fn slot(&self, node: NodeId) -> Option<&Slot> {
        self.slots.get(node.index()).and_then(Option::as_ref)
    }

    /// The execution order the plan's liveness assumes: every node of the
    /// graph once, the input first. Whoever executes the plan must run the
    /// nodes in exactly this order.
    pub fn order(&self) -> &[NodeId] {
        &self.order
    }

    /// The arena's length in floats per sample (a multiple of
    /// [`ALIGN_FLOATS`]).
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }

    /// The sum of every value's length in floats per sample: the memory
    /// one buffer per value would take.
    pub fn naive_len(&self) -> usize {
        self.naive_len
    }

    /// The arena's size in bytes for a batch of `batch` (`None` on overflow).
    pub fn arena_bytes(&self, batch: usize) -> Option<u64> {
        bytes(self.arena_len, batch)
    }

    /// [`naive_len`](Self::naive_len) in bytes for a batch of `batch`.
    pub fn naive_bytes(&self, batch: usize) -> Option<u64> {
        bytes(self.naive_len, batch)
    }
}

fn bytes(floats: usize, batch: usize) -> Option<u64> {
    (floats as u64)
        .checked_mul(batch as u64)?
        .checked_mul(std::mem::size_of::<f32>() as u64)
}

/// Whether a `flatten` of a value of shape `input` moves no data when
/// activations are stored NHWC: a `[C, H, W]` value with `C = 1` or
/// `H·W = 1` has the same element order in NHWC as in NCHW; a value of any
/// other rank is stored as it is, so flattening it is free too.
pub fn flatten_is_alias(input: &[usize]) -> bool {
    match input {
        &[channels, height, width] => channels == 1 || height.saturating_mul(width) == 1,
        _ => true,
    }
}

/// Whether `op` can write its output over one of its inputs: element-wise
/// operators whose output element `i` depends only on input elements `i`
/// (an activation, `add` with its activation, a standalone batch-norm).
pub fn runs_in_place(op: &Op) -> bool {
    matches!(op, Op::Activation(_) | Op::Add(_) | Op::BatchNorm2d(_))
}

/// The input whose data a node's value is, if the node is an alias (see
/// the [module documentation](self)).
fn alias_source(graph: &Graph, info: &GraphInfo, node: NodeId) -> Option<NodeId> {
    let input = match graph.inputs(node).as_slice() {
        [input] => *input,
        _ => return None,
    };
    match graph[node].op {
        Op::Dropout(_) => Some(input),
        Op::Flatten if flatten_is_alias(info.shape(input)) => Some(input),
        _ => None,
    }
}

/// A set of values sharing memory (through aliases and in-place writes),
/// live from `start` to `end` (steps, both included).
struct Buffer {
    start: usize,
    end: usize,
    len: usize,
    size: usize,
    offset: usize,
}

/// Plans the activation memory of a checked (usually optimized) graph and
/// its info. Errors are internal (the info does not describe the graph).
pub fn plan_memory(graph: &Graph, info: &GraphInfo) -> Result<MemoryPlan, Diagnostics> {
    let bound = graph.node_bound();
    let order: Vec<NodeId> = info
        .order()
        .iter()
        .copied()
        .filter(|&node| graph.contains(node))
        .collect();
    let mut step = vec![usize::MAX; bound];
    for (position, node) in order.iter().enumerate() {
        step[node.index()] = position;
    }
    if order.len() != graph.len() || order.first() != Some(&graph.input()) {
        return Err(internal(
            graph,
            graph.input(),
            "the execution order does not match the graph",
        ));
    }

    // The last step that reads each value (its own step if none does).
    let mut last_use = step.clone();
    for &node in &order {
        for input in graph.inputs(node) {
            if step[input.index()] >= step[node.index()] {
                return Err(internal(
                    graph,
                    node,
                    "an input is computed after its reader",
                ));
            }
            last_use[input.index()] = last_use[input.index()].max(step[node.index()]);
        }
    }
    last_use[graph.output().index()] = order.len();
    // A fused block ([`crate::fusion`]) runs at its projection's step and
    // reads its input until then.
    let bottlenecks = crate::fusion::bottlenecks(graph, info);
    for block in &bottlenecks {
        let (input, end) = (block.input.index(), step[block.project.index()]);
        if end != usize::MAX {
            last_use[input] = last_use[input].max(end);
        }
    }

    let mut fused = vec![false; bound];
    for block in &bottlenecks {
        for inner in block.expand.into_iter().chain([block.depthwise]) {
            fused[inner.index()] = true;
        }
    }

    let mut buffers: Vec<Buffer> = Vec::new();
    let mut buffer_of = vec![usize::MAX; bound];
    let mut slots: Vec<Option<Slot>> = vec![None; bound];
    let mut naive_len: u64 = 0;
    for (position, &node) in order.iter().enumerate() {
        let len = value_len(graph, info, node)?;
        naive_len = naive_len.saturating_add(len as u64);
        if fused[node.index()] {
            slots[node.index()] = Some(Slot {
                offset: 0,
                len,
                placement: Placement::Fused,
            });
            continue;
        }
        let placement = match alias_source(graph, info, node) {
            Some(source) => Placement::Alias(source),
            None if runs_in_place(&graph[node].op) => graph
                .inputs(node)
                .into_iter()
                .find(|input| {
                    buffers
                        .get(buffer_of[input.index()])
                        .is_some_and(|buffer| buffer.end == position && buffer.len == len)
                })
                .map_or(Placement::Fresh, Placement::InPlace),
            None => Placement::Fresh,
        };
        let buffer = match placement {
            Placement::Alias(source) | Placement::InPlace(source) => {
                let buffer = buffer_of[source.index()];
                if buffers.get(buffer).is_none_or(|buffer| buffer.len != len) {
                    return Err(internal(graph, node, "an alias changes the value's size"));
                }
                buffer
            }
            // (`Fused` values took the `continue` above.)
            Placement::Fresh | Placement::Fused => {
                let size = len
                    .div_ceil(ALIGN_FLOATS)
                    .checked_mul(ALIGN_FLOATS)
                    .ok_or_else(|| internal(graph, node, "the value's size overflows"))?;
                buffers.push(Buffer {
                    start: position,
                    end: position,
                    len,
                    size,
                    offset: 0,
                });
                buffers.len() - 1
            }
        };
        buffers[buffer].end = buffers[buffer].end.max(last_use[node.index()]);
        buffer_of[node.index()] = buffer;
        slots[node.index()] = Some(Slot {
            offset: 0,
            len,
            placement,
        });
    }

    let arena_len = allocate(&mut buffers)
        .ok_or_else(|| internal(graph, graph.output(), "the arena's size overflows"))?;
    for &node in &order {
        if let (Some(slot), Some(buffer)) = (
            slots[node.index()].as_mut(),
            buffers.get(buffer_of[node.index()]),
        ) {
            slot.offset = buffer.offset;
        }
    }
    Ok(MemoryPlan {
        slots,
        order,
        arena_len,
        naive_len: usize::try_from(naive_len)
            .map_err(|_| internal(graph, graph.output(), "the activations' size overflows"))?,
        bottlenecks,
    })
}

/// Places every buffer (greedy by size, best fit among the buffers live at
/// the same time) and returns the arena's length; `None` on overflow.
fn allocate(buffers: &mut [Buffer]) -> Option<usize> {
    let mut by_size: Vec<usize> = (0..buffers.len()).collect();
    by_size.sort_by_key(|&b| (std::cmp::Reverse(buffers[b].size), buffers[b].start, b));
    let mut placed = PlacedIndex::new(buffers);
    let mut arena_len = 0usize;
    let mut neighbours: Vec<(usize, usize)> = Vec::new();
    for b in by_size {
        let (start, end, size) = (buffers[b].start, buffers[b].end, buffers[b].size);
        neighbours.clear();
        let complete = placed.overlapping(start, end, &mut |other| {
            let other = &buffers[other];
            neighbours.push((other.offset, other.offset + other.size));
            neighbours.len() <= MAX_NEIGHBOURS
        });
        if !complete {
            // Pathologically many values live at once: skip the best-fit
            // search and go above every buffer placed that starts before
            // this one ends (a superset of its neighbours: safe, and fast).
            let offset = placed.top_before(end);
            buffers[b].offset = offset;
            arena_len = arena_len.max(offset.checked_add(size)?);
            placed.insert(b, end, offset + size);
            continue;
        }
        neighbours.sort_unstable();
        let mut best: Option<(usize, usize)> = None; // (gap, offset)
        let mut cursor = 0usize;
        for &(low, high) in &neighbours {
            if low >= cursor {
                let gap = low - cursor;
                if gap >= size && best.is_none_or(|(best_gap, _)| gap < best_gap) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(high);
        }
        let offset = best.map_or(cursor, |(_, offset)| offset);
        buffers[b].offset = offset;
        arena_len = arena_len.max(offset.checked_add(size)?);
        placed.insert(b, end, offset + size);
    }
    Some(arena_len)
}

/// Beyond this many placed buffers overlapping one lifetime, [`allocate`]
/// stops looking for the best gap (which costs time linear in them, so
/// quadratic overall) and places the buffer above them all. Real networks
/// have a few dozen values live at once at most.
const MAX_NEIGHBOURS: usize = 1024;

/// The buffers placed so far, found by lifetime: a segment tree over all
/// buffers sorted by start step, each node holding the latest end step of
/// the placed buffers below it. Finding the `k` placed buffers that overlap
/// a lifetime costs `O((k + 1) log n)`, so planning stays fast on graphs
/// with very many values (a plain scan of every placed buffer, as TFLite
/// does, is quadratic).
struct PlacedIndex {
    /// Buffer indices sorted by start step.
    by_start: Vec<usize>,
    /// The start step of `by_start[i]`.
    starts: Vec<usize>,
    /// The position of each buffer in `by_start`.
    position: Vec<usize>,
    /// Number of leaves (a power of two).
    leaves: usize,
    /// `1 + end` of the latest-ending placed buffer under each node, 0 if
    /// none (node 1 is the root, leaves start at `leaves`).
    latest_end: Vec<usize>,
    /// The highest `offset + size` of the placed buffers under each node.
    top: Vec<usize>,
}

impl PlacedIndex {
    fn new(buffers: &[Buffer]) -> PlacedIndex {
        let mut by_start: Vec<usize> = (0..buffers.len()).collect();
        by_start.sort_by_key(|&b| (buffers[b].start, b));
        let starts = by_start.iter().map(|&b| buffers[b].start).collect();
        let mut position = vec![0; buffers.len()];
        for (i, &b) in by_start.iter().enumerate() {
            position[b] = i;
        }
        let leaves = buffers.len().next_power_of_two().max(1);
        PlacedIndex {
            by_start,
            starts,
            position,
            leaves,
            latest_end: vec![0; 2 * leaves],
            top: vec![0; 2 * leaves],
        }
    }

    /// Records buffer `b`, live until step `end` and placed below `top`.
    fn insert(&mut self, b: usize, end: usize, top: usize) {
        let mut node = self.leaves + self.position[b];
        while node >= 1 {
            self.latest_end[node] = self.latest_end[node].max(end + 1);
            self.top[node] = self.top[node].max(top);
            node /= 2;
        }
    }

    /// Calls `found` with every placed buffer live at some step of
    /// `start..=end`, until it returns `false`; returns whether every one
    /// was found.
    fn overlapping(&self, start: usize, end: usize, found: &mut impl FnMut(usize) -> bool) -> bool {
        // Only buffers that start by `end` can overlap.
        let candidates = self.starts.partition_point(|&s| s <= end);
        self.visit(1, 0, self.leaves, candidates, start, found)
    }

    fn visit(
        &self,
        node: usize,
        low: usize,
        high: usize,
        candidates: usize,
        start: usize,
        found: &mut impl FnMut(usize) -> bool,
    ) -> bool {
        if low >= candidates || self.latest_end[node] <= start {
            return true; // Nothing placed here lives at `start` or later.
        }
        if high - low == 1 {
            return found(self.by_start[low]);
        }
        let middle = (low + high) / 2;
        self.visit(2 * node, low, middle, candidates, start, found)
            && self.visit(2 * node + 1, middle, high, candidates, start, found)
    }

    /// The highest `offset + size` among the placed buffers that start by
    /// step `end`.
    fn top_before(&self, end: usize) -> usize {
        let candidates = self.starts.partition_point(|&s| s <= end);
        // Maximum over leaves `0..candidates`, bottom-up.
        let (mut low, mut high) = (self.leaves, self.leaves + candidates);
        let mut top = 0;
        while low < high {
            if low % 2 == 1 {
                top = top.max(self.top[low]);
                low += 1;
            }
            if high % 2 == 1 {
                high -= 1;
                top = top.max(self.top[high]);
            }
            low /= 2;
            high /= 2;
        }
        top
    }
}

fn value_len(graph: &Graph, info: &GraphInfo, node: NodeId) -> Result<usize, Diagnostics> {
    info.get(node)
        .and_then(|node_info| checked_product(&node_info.shape))
        .and_then(|len| usize::try_from(len).ok())
        .filter(|&len| len > 0)
        .ok_or_else(|| internal(graph, node, "the value has no valid shape"))
}

fn internal(graph: &Graph, node: NodeId, what: &str) -> Diagnostics {
    let span = graph.get(node).map_or(Span::default(), |n| n.origin.op);
    let mut diagnostics = Diagnostics::new();
    diagnostics.push(
        Diagnostic::error(format!(
            "internal error: memory plan: {what} (this is a bug in cnnc)"
        ))
        .with_primary(Label::new(span, "")),
    );
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::{flatten_is_alias, plan_memory, Placement, ALIGN_FLOATS};
    use crate::passes::tests::{check, find};

    #[test]
    fn a_chain_ping_pongs_between_two_buffers() {
        let checked = check(
            "input x: [1, 10, 10]
             a = conv2d(2, 3, padding=1)
             b = conv2d(2, 3, padding=1)
             c = conv2d(2, 3, padding=1)
             d = conv2d(2, 3, padding=1)",
        );
        let plan = plan_memory(&checked.graph, &checked.info).expect("plan");
        let slot = |name: &str| *plan.slot(find(&checked.graph, name)).expect("slot");
        // 100 floats round up to 112, 200 to 208.
        assert_eq!(slot("a").len, 200);
        assert_eq!(plan.naive_len(), 100 + 4 * 200);
        // x and a overlap in time; then a/b, b/c, c/d: two buffers of 208
        // suffice, with x (dead after a) reused by nothing larger.
        assert_eq!(plan.arena_len(), 2 * 208);
        assert_eq!(slot("a").offset, slot("c").offset);
        assert_eq!(slot("b").offset, slot("d").offset);
        assert_ne!(slot("a").offset, slot("b").offset);
        for name in ["a", "b", "c", "d"] {
            assert_eq!(slot(name).offset % ALIGN_FLOATS, 0);
            assert_eq!(slot(name).placement, Placement::Fresh);
        }
        assert_eq!(plan.arena_bytes(2), Some(2 * 2 * 208 * 4));
    }

    #[test]
    fn element_wise_ops_run_in_place_and_flatten_aliases() {
        let checked = check(
            "input x: [4, 1, 1]
             r = relu
             f = flatten
             s = sigmoid
             t = add(s, f)",
        );
        let plan = plan_memory(&checked.graph, &checked.info).expect("plan");
        let slot = |name: &str| *plan.slot(find(&checked.graph, name)).expect("slot");
        let x = checked.graph.input();
        // The relu overwrites the input (its only reader).
        assert_eq!(slot("r").placement, Placement::InPlace(x));
        assert_eq!(
            slot("f").placement,
            Placement::Alias(find(&checked.graph, "r"))
        );
        // f is read again by the add, so the sigmoid cannot overwrite it.
        assert_eq!(slot("s").placement, Placement::Fresh);
        assert_eq!(
            slot("t").placement,
            Placement::InPlace(find(&checked.graph, "s"))
        );
        assert_eq!(plan.arena_len(), 2 * ALIGN_FLOATS);
    }

    #[test]
    fn flatten_aliases_only_when_nhwc_equals_nchw() {
        assert!(flatten_is_alias(&[7]));
        assert!(flatten_is_alias(&[512, 1, 1]));
        assert!(flatten_is_alias(&[1, 5, 5]));
        assert!(!flatten_is_alias(&[2, 1, 3]));
        assert!(!flatten_is_alias(&[16, 5, 5]));
    }
}
