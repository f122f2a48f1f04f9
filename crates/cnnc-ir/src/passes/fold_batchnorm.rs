//! Folds a `batchnorm2d` into the `conv2d` before it: `conv2d → batchnorm2d`,
//! where the convolution's output is read only by the batch-norm, becomes
//! one convolution whose [`WeightSource`](crate::WeightSource) records the
//! batch-norm, and whose epilogue adds the folded bias.
//!
//! It does no arithmetic: the weights are folded when they are loaded
//! (`cnnc_runtime::fold::fold_batchnorm`, in `f64`, rounded once), so the
//! graph stays independent of any weights file and the tensors still load
//! under their PyTorch names. It leaves alone a batch-norm after anything
//! else (a pooling layer, an `add`, the input), after a convolution whose
//! output has other readers or is the network's output, and after a
//! convolution whose epilogue already does something (an activation or a
//! residual would have to run before the batch-norm, which folding into the
//! weights cannot express; a second batch-norm would need folding twice).

use crate::graph::Graph;
use crate::op::{FoldedBatchNorm, Op};

use super::rewrite;

/// Folds every eligible batch-norm into its convolution. Returns how many
/// were folded.
pub fn fold_batchnorm(graph: &mut Graph) -> usize {
    let mut folded = 0;
    for node in graph.topo_order() {
        let Some(Op::BatchNorm2d(bn)) = graph.get(node).map(|n| &n.op) else {
            continue;
        };
        let bn = FoldedBatchNorm {
            module: bn.module.clone(),
            eps: bn.eps,
        };
        let Some(producer) = rewrite::sole_input(graph, node) else {
            continue;
        };
        if rewrite::sole_reader(graph, producer) != Some(node) {
            continue;
        }
        let Op::Conv2d(conv) = &mut graph[producer].op else {
            continue;
        };
        if !conv.epilogue.is_empty() || conv.weights.folded_batchnorm.is_some() {
            continue;
        }
        conv.weights.folded_batchnorm = Some(bn);
        conv.epilogue.bias = true;
        rewrite::fuse_into_producer(graph, producer, node);
        folded += 1;
    }
    folded
}

#[cfg(test)]
mod tests {
    use crate::passes::tests::{check, find, ops};
    use crate::{FoldedBatchNorm, Op};

    #[test]
    fn conv_then_batchnorm_becomes_one_conv() {
        let mut checked = check(
            "input x: [3, 8, 8]
             c1 = conv2d(4, 3, bias=false)
             b1 = batchnorm2d(eps=0.001)
             c2 = conv2d(4, 3)
             b2 = batchnorm2d
             output b2",
        );
        assert_eq!(super::fold_batchnorm(&mut checked.graph), 2);
        assert_eq!(ops(&checked.graph), ["input", "conv2d", "conv2d"]);
        let c1 = find(&checked.graph, "c1");
        let Op::Conv2d(conv) = &checked.graph[c1].op else {
            panic!("c1 is not a convolution");
        };
        assert!(!conv.bias);
        assert!(conv.epilogue.bias);
        assert_eq!(
            conv.weights.folded_batchnorm,
            Some(FoldedBatchNorm {
                module: "b1".into(),
                eps: 0.001
            })
        );
        // The second conv keeps its own bias, gets b2's, and is the output.
        let c2 = find(&checked.graph, "c2");
        assert_eq!(checked.graph.output(), c2);
        assert_eq!(checked.graph.inputs(c2), [c1]);
        let Op::Conv2d(conv) = &checked.graph[c2].op else {
            panic!("c2 is not a convolution");
        };
        assert!(conv.bias && conv.epilogue.bias);
        // The folded graph still infers, and lists the batch-norm's tensors
        // under the convolution, after its own.
        let info = crate::infer(&checked.graph).expect("valid graph");
        let names: Vec<_> = info[c2].weights.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "c2.weight",
                "c2.bias",
                "b2.weight",
                "b2.bias",
                "b2.running_mean",
                "b2.running_var"
            ]
        );
        assert_eq!(info.total_params, checked.info.total_params);
    }

    #[test]
    fn batchnorms_that_cannot_fold_stay() {
        let mut checked = check(
            "input x: [3, 8, 8]
             bn0 = batchnorm2d
             c = conv2d(3, 3, padding=1)
             p = maxpool2d(3, stride=1, padding=1) from c
             bn1 = batchnorm2d from c
             bn2 = batchnorm2d from p
             s = add(bn1, bn2)
             bn4 = batchnorm2d
             c3 = conv2d(3, 1)
             relu
             bn3 = batchnorm2d",
        );
        // bn0 follows the input, bn1 a conv read twice, bn2 a pool, bn4 an
        // add, bn3 a relu.
        assert_eq!(super::fold_batchnorm(&mut checked.graph), 0);
        // After the relu is fused into c3, bn3 still cannot fold.
        assert_eq!(crate::passes::fuse_activation(&mut checked.graph), 1);
        assert_eq!(super::fold_batchnorm(&mut checked.graph), 0);
        assert_eq!(
            ops(&checked.graph)
                .iter()
                .filter(|op| **op == "batchnorm2d")
                .count(),
            5
        );
    }

    #[test]
    fn the_output_conv_is_not_folded_into_a_later_reader() {
        let mut checked = check(
            "input x: [3, 8, 8]
             c = conv2d(4, 3)
             bn = batchnorm2d
             output c",
        );
        // `c` is the output, so `bn` (dead) cannot take its place.
        assert_eq!(super::fold_batchnorm(&mut checked.graph), 0);
    }
}
