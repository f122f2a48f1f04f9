//! The memory planner against the independent verifier: plans of small
//! networks that exercise aliases and in-place writes pass, and plans with
//! each kind of mistake are caught (so the verifier can fail).

mod support;

use cnnc_ir::memory::{MemoryPlan, Placement, Slot};
use cnnc_ir::{Checked, NodeId};
use cnnc_syntax::{RenderStyle, SourceFile};
use support::plan_verifier::{verify_fused_slots, verify_plan, verify_slots};

fn check(body: &str) -> Checked {
    let file = SourceFile::new("t.cnn", format!("network t {{\n{body}\n}}\n"));
    match cnnc_ir::check(&file) {
        Ok(checked) => checked,
        Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
    }
}

fn find(checked: &Checked, name: &str) -> NodeId {
    checked
        .graph
        .node_ids()
        .find(|&n| checked.graph[n].name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Verifies `plan` with the slot of `node` replaced by `with`.
fn verify_changed(
    checked: &Checked,
    plan: &MemoryPlan,
    node: NodeId,
    with: Slot,
) -> Result<(), String> {
    verify_slots(
        &checked.graph,
        &checked.info,
        plan.order(),
        plan.arena_len(),
        |n| {
            if n == node {
                Some(with)
            } else {
                plan.slot(n).copied()
            }
        },
    )
}

const BRANCHY: &str = "input x: [4, 6, 6]
     a = conv2d(4, 3, padding=1)
     r = relu
     b = conv2d(4, 1) from x
     s = add(r, b)
     t = add(s, x)
     p = maxpool2d(2)
     q = batchnorm2d
     c = concat(q, p)
     g = adaptive_avgpool2d(1)
     f = flatten
     d = dropout
     h = hardswish
     fc = linear(3)
     k = flatten from c
     output fc";

#[test]
fn a_branchy_network_verifies() {
    let checked = check(&BRANCHY.replace("output fc", "o = concat(fc, fc)\n output o"));
    let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
    verify_plan(&checked.graph, &checked.info, &plan).expect("valid plan");
    let placement = |name: &str| plan.slot(find(&checked, name)).expect("slot").placement;
    assert_eq!(placement("r"), Placement::InPlace(find(&checked, "a")));
    // x is still needed by `t`, b by nobody after `s`.
    assert_eq!(placement("s"), Placement::InPlace(find(&checked, "r")));
    assert_eq!(placement("t"), Placement::InPlace(find(&checked, "s")));
    // p is read again by the concat.
    assert_eq!(placement("q"), Placement::Fresh);
    assert_eq!(placement("f"), Placement::Alias(find(&checked, "g")));
    assert_eq!(placement("d"), Placement::Alias(find(&checked, "f")));
    assert_eq!(placement("h"), Placement::InPlace(find(&checked, "d")));
    // [8, 3, 3] in NHWC is not [72] in NCHW order: a real copy.
    assert_eq!(placement("k"), Placement::Fresh);
}

#[test]
fn the_verifier_catches_mistakes() {
    let checked = check(BRANCHY);
    let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
    verify_plan(&checked.graph, &checked.info, &plan).expect("valid plan");
    let slot = |name: &str| *plan.slot(find(&checked, name)).expect("slot");

    // `b` on top of `r`: both are live until the add reads them.
    let b = Slot {
        offset: slot("r").offset,
        ..slot("b")
    };
    let error = verify_changed(&checked, &plan, find(&checked, "b"), b).unwrap_err();
    assert!(error.contains("overlap"), "{error}");

    // A convolution cannot run in place.
    let a = Slot {
        offset: slot("x").offset,
        placement: Placement::InPlace(checked.graph.input()),
        ..slot("a")
    };
    let error = verify_changed(&checked, &plan, find(&checked, "a"), a).unwrap_err();
    assert!(error.contains("cannot run in place"), "{error}");

    // The batch-norm is element-wise, but `p` is read again by the concat:
    // writing over it in place loses it.
    let q = Slot {
        offset: slot("p").offset,
        placement: Placement::InPlace(find(&checked, "p")),
        ..slot("q")
    };
    let error = verify_changed(&checked, &plan, find(&checked, "q"), q).unwrap_err();
    assert!(error.contains("overlap"), "{error}");

    // A flatten that reorders data cannot alias.
    let k = Slot {
        offset: slot("c").offset,
        placement: Placement::Alias(find(&checked, "c")),
        ..slot("k")
    };
    let error = verify_changed(&checked, &plan, find(&checked, "k"), k).unwrap_err();
    assert!(error.contains("cannot alias"), "{error}");

    // Misaligned, outside the arena, wrong length.
    let mut fc = slot("fc");
    fc.offset += 1;
    assert!(verify_changed(&checked, &plan, find(&checked, "fc"), fc)
        .unwrap_err()
        .contains("unaligned"));
    let fc = Slot {
        offset: plan.arena_len(),
        ..slot("fc")
    };
    assert!(verify_changed(&checked, &plan, find(&checked, "fc"), fc)
        .unwrap_err()
        .contains("outside the arena"));
    let fc = Slot {
        len: 4,
        ..slot("fc")
    };
    assert!(verify_changed(&checked, &plan, find(&checked, "fc"), fc)
        .unwrap_err()
        .contains("floats"));
}

#[test]
fn in_place_waits_for_every_alias_of_the_input() {
    // `f` aliases `g`; the hardswish may not overwrite `g` while `f` is
    // still to be read by the concat.
    let checked = check(
        "input x: [5, 1, 1]
         g = relu
         f = flatten
         h = hardswish from g
         c = concat(f, f)
         output h",
    );
    let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
    verify_plan(&checked.graph, &checked.info, &plan).expect("valid plan");
    let h = plan.slot(find(&checked, "h")).expect("slot");
    assert_eq!(h.placement, Placement::Fresh);
    // ... and the verifier refuses the in-place version.
    let g = plan.slot(find(&checked, "g")).expect("slot");
    let bad = Slot {
        offset: g.offset,
        placement: Placement::InPlace(find(&checked, "g")),
        ..*h
    };
    let error = verify_changed(&checked, &plan, find(&checked, "h"), bad).unwrap_err();
    assert!(error.contains("overlap"), "{error}");
}

#[test]
fn very_many_live_values_still_plan_correctly() {
    // 1,200 values live at once (more than the planner searches gaps
    // among), all read by one concat.
    let count = 1200;
    let mut body = String::from("input x: [1, 2, 2]\n");
    for i in 0..count {
        body.push_str(&format!("v{i} = relu from x\n"));
    }
    let names: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
    body.push_str(&format!("c = concat({})\n", names.join(", ")));
    let checked = check(&body);
    let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
    verify_plan(&checked.graph, &checked.info, &plan).expect("valid plan");
    // Every relu in its own 16-float slot (the last one in place of the
    // input, which it reads last), then the concat.
    assert_eq!(plan.arena_len(), count * 16 + count * 4);
}

/// An inverted residual block large enough to run fused (the expansion's
/// output is 1.2 MB).
const FUSED: &str = "input x: [16, 56, 56]
     e = conv2d(96, 1)
     d = conv2d(96, 3, padding=1, groups=96)
     p = conv2d(24, 1)
     output p";

#[test]
fn a_fused_block_keeps_its_input_until_the_projection() {
    let checked = check(FUSED);
    let plan = cnnc_ir::plan_memory(&checked.graph, &checked.info).expect("plan");
    assert_eq!(plan.bottlenecks().len(), 1, "the block runs fused");
    verify_plan(&checked.graph, &checked.info, &plan).expect("valid plan");

    // `d` over `x`, everything else apart: right if the layers ran one by
    // one (`x` is dead once `e` has read it), wrong when the block runs
    // fused at `p`'s step, which reads `x` then.
    let node = |name: &str| find(&checked, name);
    let len = |name: &str| plan.slot(node(name)).expect("slot").len;
    let e_at = len("x").max(len("d")).next_multiple_of(16);
    let p_at = (e_at + len("e")).next_multiple_of(16);
    let arena = p_at + len("p");
    let offsets = [("x", 0), ("e", e_at), ("d", 0), ("p", p_at)];
    let slots = |n: NodeId| {
        offsets
            .iter()
            .find(|(name, _)| node(name) == n)
            .map(|&(name, offset)| Slot {
                offset,
                len: len(name),
                placement: Placement::Fresh,
            })
    };
    verify_slots(&checked.graph, &checked.info, plan.order(), arena, slots)
        .expect("valid when the layers run one by one");
    let error = verify_fused_slots(
        &checked.graph,
        &checked.info,
        plan.order(),
        arena,
        plan.bottlenecks(),
        slots,
    )
    .unwrap_err();
    assert!(error.contains("overlap"), "{error}");
}
