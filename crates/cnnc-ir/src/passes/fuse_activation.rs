//! Fuses an element-wise activation (`relu`, `relu6`, `leaky_relu`,
//! `hardswish`, `sigmoid`, `tanh`) into the epilogue of the `conv2d`,
//! `linear` or `add` that produces its input, when the activation is that
//! value's only reader and the epilogue has no activation yet.
//!
//! A convolution's epilogue computes `activation(x + bias + residual)`, so
//! an activation after a convolution that already has a residual fuses too.
//! It does not fuse an activation after anything else (pooling, a
//! batch-norm that could not be folded, `concat`, another activation), nor
//! after a value that is also read elsewhere (the other reader needs the
//! value before the activation), nor `softmax` (not element-wise).

use crate::graph::Graph;
use crate::op::Op;

use super::rewrite;
use cnnc_kernels::Activation;

/// Fuses every eligible activation. Returns how many were fused.
pub fn fuse_activation(graph: &mut Graph) -> usize {
    let mut fused = 0;
    for node in graph.topo_order() {
        let Some(&Op::Activation(activation)) = graph.get(node).map(|n| &n.op) else {
            continue;
        };
        let Some(producer) = rewrite::sole_input(graph, node) else {
            continue;
        };
        if rewrite::sole_reader(graph, producer) != Some(node) {
            continue;
        }
        let epilogue = match &mut graph[producer].op {
            Op::Conv2d(conv) => &mut conv.epilogue,
            Op::Linear(linear) => &mut linear.epilogue,
            Op::Add(add) => &mut add.epilogue,
            _ => continue,
        };
        if epilogue.activation != Activation::Identity {
            continue;
        }
        epilogue.activation = activation;
        rewrite::fuse_into_producer(graph, producer, node);
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
    fn activations_move_into_epilogues() {
        let mut checked = check(
            "input x: [3, 8, 8]
             c = conv2d(4, 3)
             l = leaky_relu(0.2)
             s = add(l, l)
             hardswish
             flatten
             fc = linear(5)
             tanh
             sigmoid",
        );
        assert_eq!(super::fuse_activation(&mut checked.graph), 3);
        // The sigmoid after the fused tanh stays: the epilogue is taken.
        assert_eq!(
            ops(&checked.graph),
            ["input", "conv2d", "add", "flatten", "linear", "sigmoid"]
        );
        let activation = |name: &str| {
            checked.graph[find(&checked.graph, name)]
                .op
                .epilogue()
                .map(|e| e.activation)
        };
        assert_eq!(
            activation("c"),
            Some(Activation::LeakyRelu {
                negative_slope: 0.2
            })
        );
        assert_eq!(activation("s"), Some(Activation::Hardswish));
        assert_eq!(activation("fc"), Some(Activation::Tanh));
    }

    #[test]
    fn a_value_with_other_readers_keeps_its_activation_separate() {
        let mut checked = check(
            "input x: [3, 8, 8]
             c = conv2d(4, 3)
             r = relu
             s = add(r, c)
             p = maxpool2d(2)
             relu",
        );
        assert_eq!(super::fuse_activation(&mut checked.graph), 0);
        let c = find(&checked.graph, "c");
        let Op::Conv2d(conv) = &checked.graph[c].op else {
            panic!()
        };
        assert!(conv.epilogue.is_empty());
    }
}
