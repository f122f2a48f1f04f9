//! Fuses a residual `add` into the `conv2d` or `linear` layer that produces
//! one of its operands: `add(y, x)` where `y` comes from a layer read only
//! by this `add`, whose epilogue has no residual and no activation yet,
//! becomes that layer with `x` as its residual input (slot 1) and the
//! `add`'s activation (fused into it by `fuse_activation`) as its own.
//!
//! When both operands qualify, the one computed later (in the graph's
//! topological order) takes the other as its residual: the earlier one is
//! then still live anyway, so the choice adds no memory pressure and keeps
//! the execution order. It leaves alone an `add` of two values from other
//! operators, of a layer with another reader (that reader needs the value
//! without the residual), and of a layer whose epilogue already has an
//! activation (the `add` comes after it and cannot move inside).

use crate::graph::{Graph, NodeId};
use crate::op::{Epilogue, Op};

use super::rewrite;
use cnnc_kernels::Activation;

/// Fuses every eligible `add`. Returns how many were fused.
pub fn fuse_residual(graph: &mut Graph) -> usize {
    let position = rewrite::positions(graph);
    let mut fused = 0;
    for node in graph.topo_order() {
        let Some(Op::Add(add)) = graph.get(node).map(|n| &n.op) else {
            continue;
        };
        let add_epilogue = add.epilogue;
        if add_epilogue.bias || add_epilogue.residual {
            continue; // Never produced by a pass; nothing to take over.
        }
        let &[a, b] = graph.inputs(node).as_slice() else {
            continue;
        };
        let qualifies = |operand: NodeId| {
            rewrite::sole_reader(graph, operand) == Some(node)
                && graph[operand]
                    .op
                    .epilogue()
                    .is_some_and(|e| !e.residual && e.activation == Activation::Identity)
                && matches!(graph[operand].op, Op::Conv2d(_) | Op::Linear(_))
        };
        let (layer, residual) = match (qualifies(a), qualifies(b)) {
            (true, true) if position[b.index()] > position[a.index()] => (b, a),
            (true, _) => (a, b),
            (false, true) => (b, a),
            (false, false) => continue,
        };
        let epilogue: &mut Epilogue = match &mut graph[layer].op {
            Op::Conv2d(conv) => &mut conv.epilogue,
            Op::Linear(linear) => &mut linear.epilogue,
            _ => continue,
        };
        epilogue.residual = true;
        epilogue.activation = add_epilogue.activation;
        graph.connect(residual, layer, 1);
        rewrite::fuse_into_producer(graph, layer, node);
        fused += 1;
    }
    fused
}

#[cfg(test)]
mod tests {
    use crate::passes::tests::{check, find, ops};
    use crate::Op;
    use cnnc_kernels::Activation;

    #[test]
    fn add_of_a_conv_becomes_its_residual() {
        let mut checked = check(
            "input x: [4, 6, 6]
             c = conv2d(4, 3, padding=1)
             s = add(x, c)
             relu",
        );
        assert_eq!(crate::passes::fuse_activation(&mut checked.graph), 1);
        assert_eq!(super::fuse_residual(&mut checked.graph), 1);
        assert_eq!(ops(&checked.graph), ["input", "conv2d"]);
        let c = find(&checked.graph, "c");
        let x = checked.graph.input();
        assert_eq!(checked.graph.output(), c);
        assert_eq!(checked.graph.inputs(c), [x, x]);
        let Op::Conv2d(conv) = &checked.graph[c].op else {
            panic!()
        };
        assert!(conv.epilogue.residual);
        assert_eq!(conv.epilogue.activation, Activation::Relu);
        assert_eq!(
            crate::infer(&checked.graph).expect("valid").shape(c),
            [4, 6, 6]
        );
    }

    #[test]
    fn the_later_layer_takes_the_earlier_as_residual() {
        let mut checked = check(
            "input x: [8]
             a = linear(8)
             b = linear(8) from x
             s = add(a, b)
             sigmoid",
        );
        crate::passes::fuse_activation(&mut checked.graph);
        assert_eq!(super::fuse_residual(&mut checked.graph), 1);
        let (a, b) = (find(&checked.graph, "a"), find(&checked.graph, "b"));
        assert_eq!(checked.graph.output(), b);
        assert_eq!(checked.graph.inputs(b), [checked.graph.input(), a]);
        let Op::Linear(linear) = &checked.graph[b].op else {
            panic!()
        };
        assert_eq!(linear.epilogue.activation, Activation::Sigmoid);
        assert!(linear.epilogue.residual);
    }

    #[test]
    fn ineligible_adds_stay() {
        let mut checked = check(
            "input x: [4, 6, 6]
             c = conv2d(4, 3, padding=1)
             r = relu
             s = add(r, x)
             d = conv2d(4, 1) from x
             t = add(d, d)
             e = conv2d(4, 1) from x
             u = add(e, s)
             v = add(e, u)
             w = concat(t, v)",
        );
        // c has a relu before the add; d is read twice by one add; e is
        // read by two adds.
        crate::passes::fuse_activation(&mut checked.graph);
        assert_eq!(super::fuse_residual(&mut checked.graph), 0);
    }
}
