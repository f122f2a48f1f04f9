//! The reference execution path: every operator through
//! `cnnc_kernels::reference`, over NCHW buffers, one buffer per value.
//!
//! [`ReferencePlan::new`] turns a checked graph and its bound weights into a
//! list of [`Step`]s in topological order, each with the per-sample sizes
//! its kernel needs, all validated up front so that no kernel's length check
//! can fail at run time. [`ReferencePlan::run`] scales them by the batch and
//! calls the kernels.
//!
//! Only the nodes the output depends on are planned. A value's buffer is
//! freed after its last reader has run, and an element-wise step whose input
//! has no other reader works in that input's buffer.
//!
//! Fused epilogues (filled in by optimizer passes) are executed as the
//! operations they stand for, in their documented order: the layer's own
//! bias, then a folded batch-norm (with its original running statistics),
//! then the residual, then the activation. This makes the reference path the
//! oracle for the passes as well as for the kernels.

use cnnc_ir::{checked_product, resolve_dim, Epilogue, Graph, GraphInfo, NodeId, Op};
use cnnc_runtime::kernels::reference;
use cnnc_runtime::kernels::{Activation, Conv2dGeometry, Pool2dGeometry};

use crate::bind::{BatchNormWeights, BindErrors, BoundWeights, DenseWeights, LayerWeights};
use crate::RunError;

/// A ready-to-run reference execution of one graph.
#[derive(Debug)]
pub(crate) struct ReferencePlan {
    /// The input node's value slot.
    input: usize,
    /// The output node's value slot.
    output: usize,
    /// Number of value slots (one per node index).
    slots: usize,
    /// Elements per sample of the input.
    input_len: usize,
    steps: Vec<Step>,
    /// How many steps read each slot (once per input edge), plus one for the
    /// output so it is never freed.
    readers: Vec<usize>,
}

/// One node to execute.
#[derive(Debug)]
struct Step {
    /// The layer's display name, for errors.
    name: String,
    /// The value slots read, by input slot.
    inputs: Vec<usize>,
    /// The slot written.
    output: usize,
    /// Elements per sample of the output.
    output_len: usize,
    kernel: Kernel,
}

/// A kernel call with its per-sample sizes (geometries have `batch: 1`).
#[derive(Debug)]
enum Kernel {
    Conv2d {
        geometry: Conv2dGeometry,
        weights: DenseWeights,
        epilogue: Epilogue,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        weights: DenseWeights,
        epilogue: Epilogue,
    },
    MaxPool2d(Pool2dGeometry),
    AvgPool2d {
        geometry: Pool2dGeometry,
        count_include_pad: bool,
    },
    AdaptiveAvgPool2d {
        input: [usize; 3],
        output_size: [usize; 2],
    },
    BatchNorm2d {
        channels: usize,
        hw: usize,
        weights: BatchNormWeights,
    },
    /// `flatten` and `dropout`: the value itself.
    Identity,
    Activation(Activation),
    Softmax {
        outer: usize,
        dim_len: usize,
        inner: usize,
    },
    Add(Activation),
    Concat {
        /// Per sample: the product of the dimensions before `dim`.
        outer: usize,
        /// Per input: the product of its dimensions from `dim` on.
        inners: Vec<usize>,
    },
}

impl ReferencePlan {
    /// Plans the nodes `graph.output()` depends on, taking their tensors out
    /// of `weights`. Fails only on an inconsistency between the graph, its
    /// info and the bound weights (a bug in cnnc).
    pub(crate) fn new(
        graph: &Graph,
        info: &GraphInfo,
        weights: &mut BoundWeights,
    ) -> Result<ReferencePlan, BindErrors> {
        let slots = graph.node_bound();
        let live = live_nodes(graph, slots);
        let input = graph.input();
        let input_len = per_sample_len(graph, info, input)?;
        let mut readers = vec![0usize; slots];
        let mut steps = Vec::new();
        let mut planned = vec![false; slots];
        planned[input.index()] = true;
        for &node in info.order() {
            if node == input || !live.get(node.index()).copied().unwrap_or(false) {
                continue;
            }
            let inputs = graph.inputs(node);
            if let Some(missing) = inputs.iter().find(|i| !planned[i.index()]) {
                return Err(BindErrors::internal(
                    graph,
                    node,
                    format!("input {missing} is not computed before this node"),
                ));
            }
            let kernel = plan_kernel(graph, info, node, &inputs, weights)
                .map_err(|what| BindErrors::internal(graph, node, what))?;
            for producer in &inputs {
                readers[producer.index()] += 1;
            }
            planned[node.index()] = true;
            steps.push(Step {
                name: graph.display_name(node),
                inputs: inputs.iter().map(|i| i.index()).collect(),
                output: node.index(),
                output_len: per_sample_len(graph, info, node)?,
                kernel,
            });
        }
        let output = graph.output();
        if !planned[output.index()] {
            return Err(BindErrors::internal(
                graph,
                output,
                "the output is not computed (missing from the inference order)",
            ));
        }
        readers[output.index()] += 1;
        Ok(ReferencePlan {
            input: input.index(),
            output: output.index(),
            slots,
            input_len,
            steps,
            readers,
        })
    }

    /// Runs `batch` samples. `input` holds exactly `batch` samples (checked
    /// by the caller, as is `batch >= 1`).
    pub(crate) fn run(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, RunError> {
        if Some(input.len()) != batch.checked_mul(self.input_len) {
            return Err(RunError::Internal(format!(
                "the input has {} values, not {batch} samples of {}",
                input.len(),
                self.input_len
            )));
        }
        let mut values: Vec<Option<Vec<f32>>> = vec![None; self.slots];
        let mut readers = self.readers.clone();
        let mut first = allocate(input.len(), "the input", batch)?;
        first.copy_from_slice(input);
        values[self.input] = Some(first);
        for step in &self.steps {
            let output = step.run(&mut values, &readers, batch)?;
            for &slot in &step.inputs {
                readers[slot] -= 1;
                if readers[slot] == 0 {
                    values[slot] = None;
                }
            }
            values[step.output] = Some(output);
        }
        values[self.output]
            .take()
            .ok_or_else(|| RunError::Internal("the output was not computed".into()))
    }
}

impl Step {
    fn run(
        &self,
        values: &mut [Option<Vec<f32>>],
        readers: &[usize],
        batch: usize,
    ) -> Result<Vec<f32>, RunError> {
        let len = batch
            .checked_mul(self.output_len)
            .ok_or_else(|| RunError::TooLarge {
                layer: self.name.clone(),
                batch,
            })?;
        // Element-wise steps on a value nobody else reads work in its buffer.
        match &self.kernel {
            Kernel::Identity => return self.unary_in_place(values, readers, batch, |_| {}),
            Kernel::Activation(activation) => {
                let activation = *activation;
                return self.unary_in_place(values, readers, batch, |data| {
                    reference::activation(activation, data)
                });
            }
            _ => {}
        }
        let mut output = allocate(len, &self.name, batch)?;
        let inputs: Vec<&[f32]> = self
            .inputs
            .iter()
            .map(|&slot| values[slot].as_deref())
            .collect::<Option<_>>()
            .ok_or_else(|| self.missing_input())?;
        let first = inputs
            .first()
            .copied()
            .ok_or_else(|| self.missing_input())?;
        match &self.kernel {
            Kernel::Conv2d {
                geometry,
                weights,
                epilogue,
            } => {
                let g = Conv2dGeometry { batch, ..*geometry };
                reference::conv2d(
                    &g,
                    first,
                    &weights.weight,
                    weights.bias.as_deref(),
                    false,
                    &mut output,
                );
                let hw = g.out_h * g.out_w;
                self.epilogue(
                    &mut output,
                    batch,
                    g.out_channels,
                    hw,
                    weights,
                    epilogue,
                    &inputs,
                )?;
            }
            Kernel::Linear {
                in_features,
                out_features,
                weights,
                epilogue,
            } => {
                reference::linear(
                    batch,
                    *in_features,
                    *out_features,
                    first,
                    &weights.weight,
                    weights.bias.as_deref(),
                    &mut output,
                );
                self.epilogue(
                    &mut output,
                    batch,
                    *out_features,
                    1,
                    weights,
                    epilogue,
                    &inputs,
                )?;
            }
            Kernel::MaxPool2d(geometry) => {
                let g = Pool2dGeometry { batch, ..*geometry };
                reference::max_pool2d(&g, first, &mut output);
            }
            Kernel::AvgPool2d {
                geometry,
                count_include_pad,
            } => {
                let g = Pool2dGeometry { batch, ..*geometry };
                reference::avg_pool2d(&g, *count_include_pad, first, &mut output);
            }
            Kernel::AdaptiveAvgPool2d {
                input: [channels, in_h, in_w],
                output_size,
            } => {
                reference::adaptive_avg_pool2d(
                    [batch, *channels, *in_h, *in_w],
                    *output_size,
                    first,
                    &mut output,
                );
            }
            Kernel::BatchNorm2d {
                channels,
                hw,
                weights,
            } => {
                reference::batch_norm2d(
                    batch,
                    *channels,
                    *hw,
                    &batchnorm_params(weights),
                    first,
                    &mut output,
                );
            }
            Kernel::Softmax {
                outer,
                dim_len,
                inner,
            } => reference::softmax(batch * outer, *dim_len, *inner, first, &mut output),
            Kernel::Add(activation) => {
                let second = inputs.get(1).copied().ok_or_else(|| self.missing_input())?;
                reference::add(first, second, &mut output);
                reference::activation(*activation, &mut output);
            }
            Kernel::Concat { outer, inners } => {
                let parts: Vec<(&[f32], usize)> =
                    inputs.iter().copied().zip(inners.iter().copied()).collect();
                reference::concat(&parts, batch * outer, &mut output);
            }
            Kernel::Identity | Kernel::Activation(_) => {
                return Err(RunError::Internal("element-wise step not handled".into()))
            }
        }
        Ok(output)
    }

    /// Runs an element-wise step: in the input's buffer when this step is its
    /// last reader and reads it once, else in a copy.
    fn unary_in_place(
        &self,
        values: &mut [Option<Vec<f32>>],
        readers: &[usize],
        batch: usize,
        apply: impl FnOnce(&mut [f32]),
    ) -> Result<Vec<f32>, RunError> {
        let &[slot] = self.inputs.as_slice() else {
            return Err(self.missing_input());
        };
        let mut data = if readers[slot] == 1 {
            values[slot].take().ok_or_else(|| self.missing_input())?
        } else {
            let source = values[slot]
                .as_deref()
                .ok_or_else(|| self.missing_input())?;
            self.copy(source, batch)?
        };
        apply(&mut data);
        Ok(data)
    }

    /// A fused epilogue after a convolution or linear layer (whose own bias
    /// is already in `output`): folded batch-norm, residual, activation.
    #[allow(clippy::too_many_arguments)]
    fn epilogue(
        &self,
        output: &mut [f32],
        batch: usize,
        channels: usize,
        hw: usize,
        weights: &DenseWeights,
        epilogue: &Epilogue,
        inputs: &[&[f32]],
    ) -> Result<(), RunError> {
        if let Some(bn) = &weights.folded_batchnorm {
            let before = self.copy(output, batch)?;
            reference::batch_norm2d(batch, channels, hw, &batchnorm_params(bn), &before, output);
        }
        if epilogue.residual {
            let residual = inputs.get(1).copied().ok_or_else(|| self.missing_input())?;
            let before = self.copy(output, batch)?;
            reference::add(&before, residual, output);
        }
        reference::activation(epilogue.activation, output);
        Ok(())
    }

    /// A copy of `data` (allocation failures are errors).
    fn copy(&self, data: &[f32], batch: usize) -> Result<Vec<f32>, RunError> {
        let mut copy = allocate(data.len(), &self.name, batch)?;
        copy.copy_from_slice(data);
        Ok(copy)
    }

    fn missing_input(&self) -> RunError {
        RunError::Internal(format!("an input of `{}` is missing", self.name))
    }
}

fn batchnorm_params(bn: &BatchNormWeights) -> reference::BatchNorm2dParams<'_> {
    reference::BatchNorm2dParams {
        running_mean: &bn.running_mean,
        running_var: &bn.running_var,
        weight: &bn.weight,
        bias: &bn.bias,
        eps: bn.eps,
    }
}

/// A zeroed buffer of `len` values; an allocation failure is an error, not
/// an abort.
fn allocate(len: usize, layer: &str, batch: usize) -> Result<Vec<f32>, RunError> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(len)
        .map_err(|_| RunError::OutOfMemory {
            layer: layer.to_string(),
            batch,
            bytes: len.saturating_mul(std::mem::size_of::<f32>()),
        })?;
    buffer.resize(len, 0.0);
    Ok(buffer)
}

/// Which nodes the output depends on (the output included).
fn live_nodes(graph: &Graph, slots: usize) -> Vec<bool> {
    let mut live = vec![false; slots];
    let mut stack = vec![graph.output()];
    while let Some(node) = stack.pop() {
        match live.get_mut(node.index()) {
            Some(seen) if !*seen => *seen = true,
            _ => continue,
        }
        stack.extend(graph.inputs(node));
    }
    live
}

fn per_sample_len(graph: &Graph, info: &GraphInfo, node: NodeId) -> Result<usize, BindErrors> {
    let shape = info
        .get(node)
        .map(|node_info| node_info.shape.as_slice())
        .ok_or_else(|| BindErrors::internal(graph, node, "the node has no shape information"))?;
    product(shape).ok_or_else(|| BindErrors::internal(graph, node, "the node's size overflows"))
}

fn product(shape: &[usize]) -> Option<usize> {
    checked_product(shape).and_then(|p| usize::try_from(p).ok())
}

/// Checks a per-sample input shape against what a kernel will be told.
fn expect_len(what: &str, found: usize, expected: usize) -> Result<(), String> {
    if found == expected {
        Ok(())
    } else {
        Err(format!("{what} has {found} values, expected {expected}"))
    }
}

fn plan_kernel(
    graph: &Graph,
    info: &GraphInfo,
    node: NodeId,
    inputs: &[NodeId],
    weights: &mut BoundWeights,
) -> Result<Kernel, String> {
    let op = &graph[node].op;
    let shape = info.shape(node);
    let input_shapes: Vec<&[usize]> = inputs.iter().map(|&i| info.shape(i)).collect();
    let arity = |expected: usize| {
        if inputs.len() == expected {
            Ok(())
        } else {
            Err(format!(
                "`{}` has {} inputs, expected {expected}",
                op.name(),
                inputs.len()
            ))
        }
    };
    let shape_len = product(shape).ok_or("the output size overflows")?;
    let mut dense = |out_features: usize| -> Result<DenseWeights, String> {
        match weights.take(node) {
            Some(LayerWeights::Dense(dense)) => {
                if let Some(bias) = &dense.bias {
                    expect_len("the bias", bias.len(), out_features)?;
                }
                if let Some(bn) = &dense.folded_batchnorm {
                    check_batchnorm(bn, out_features)?;
                }
                Ok(dense)
            }
            _ => Err("the layer's weights are not bound".into()),
        }
    };
    let kernel = match op {
        Op::Input(_) => return Err("a second input node".into()),
        Op::Conv2d(conv) => {
            arity(if conv.epilogue.residual { 2 } else { 1 })?;
            check_epilogue(&conv.epilogue, conv.weights.folded_batchnorm.is_some())?;
            let geometry = info
                .conv2d_geometry(graph, node, 1)
                .ok_or("no convolution geometry")?;
            if geometry.groups == 0
                || !geometry.in_channels.is_multiple_of(geometry.groups)
                || !geometry.out_channels.is_multiple_of(geometry.groups)
            {
                return Err("groups do not divide the channels".into());
            }
            expect_len("the output", geometry.output_len(), shape_len)?;
            let weights = dense(geometry.out_channels)?;
            expect_len("the kernel", weights.weight.len(), geometry.weight_len())?;
            Kernel::Conv2d {
                geometry,
                weights,
                epilogue: conv.epilogue,
            }
        }
        Op::Linear(linear) => {
            arity(if linear.epilogue.residual { 2 } else { 1 })?;
            check_epilogue(&linear.epilogue, linear.weights.folded_batchnorm.is_some())?;
            let &[in_features] = input_shapes[0] else {
                return Err("`linear` on a value that is not flat".into());
            };
            let out_features = linear.out_features;
            expect_len("the output", out_features, shape_len)?;
            let weights = dense(out_features)?;
            let weight_len = in_features
                .checked_mul(out_features)
                .ok_or("the weight size overflows")?;
            expect_len("the weight", weights.weight.len(), weight_len)?;
            Kernel::Linear {
                in_features,
                out_features,
                weights,
                epilogue: linear.epilogue,
            }
        }
        Op::MaxPool2d(_) | Op::AvgPool2d(_) => {
            arity(1)?;
            let geometry = info
                .pool2d_geometry(graph, node, 1)
                .ok_or("no pooling geometry")?;
            expect_len("the output", geometry.output_len(), shape_len)?;
            match op {
                Op::AvgPool2d(pool) => {
                    if geometry.dilation != [1, 1] {
                        return Err("average pooling with dilation".into());
                    }
                    Kernel::AvgPool2d {
                        geometry,
                        count_include_pad: pool.count_include_pad,
                    }
                }
                _ => Kernel::MaxPool2d(geometry),
            }
        }
        Op::AdaptiveAvgPool2d(pool) => {
            arity(1)?;
            let &[channels, in_h, in_w] = input_shapes[0] else {
                return Err("adaptive pooling of a value that is not [C, H, W]".into());
            };
            let [out_h, out_w] = pool.output_size;
            if out_h == 0 || out_w == 0 || shape != [channels, out_h, out_w] {
                return Err("adaptive pooling output shape".into());
            }
            Kernel::AdaptiveAvgPool2d {
                input: [channels, in_h, in_w],
                output_size: pool.output_size,
            }
        }
        Op::BatchNorm2d(_) => {
            arity(1)?;
            let (&channels, rest) = input_shapes[0]
                .split_first()
                .ok_or("batch-norm of a scalar")?;
            let hw = product(rest).ok_or("the size overflows")?;
            let weights = match weights.take(node) {
                Some(LayerWeights::BatchNorm(bn)) => bn,
                _ => return Err("the layer's weights are not bound".into()),
            };
            check_batchnorm(&weights, channels)?;
            Kernel::BatchNorm2d {
                channels,
                hw,
                weights,
            }
        }
        Op::Flatten | Op::Dropout(_) => {
            arity(1)?;
            Kernel::Identity
        }
        Op::Activation(activation) => {
            arity(1)?;
            Kernel::Activation(*activation)
        }
        Op::Softmax(softmax) => {
            arity(1)?;
            let axis = resolve_dim(softmax.dim, shape.len())?;
            Kernel::Softmax {
                outer: product(&shape[..axis]).ok_or("the size overflows")?,
                dim_len: shape[axis],
                inner: product(&shape[axis + 1..]).ok_or("the size overflows")?,
            }
        }
        Op::Add(add) => {
            arity(2)?;
            if add.epilogue.bias || add.epilogue.residual {
                return Err("`add` with a bias or residual epilogue".into());
            }
            if input_shapes[0] != shape || input_shapes[1] != shape {
                return Err("`add` of values of different shapes".into());
            }
            Kernel::Add(add.epilogue.activation)
        }
        Op::Concat(concat) => {
            if inputs.is_empty() {
                return Err("`concat` without inputs".into());
            }
            let axis = resolve_dim(concat.dim, shape.len())?;
            let outer = product(&shape[..axis]).ok_or("the size overflows")?;
            let mut inners = Vec::with_capacity(inputs.len());
            for part in &input_shapes {
                if part.len() != shape.len() || part[..axis] != shape[..axis] {
                    return Err("`concat` of values of incompatible shapes".into());
                }
                inners.push(product(&part[axis..]).ok_or("the size overflows")?);
            }
            let total = inners
                .iter()
                .try_fold(0usize, |sum, &inner| sum.checked_add(inner));
            if total.and_then(|t| t.checked_mul(outer)) != Some(shape_len) {
                return Err("`concat` sizes do not add up".into());
            }
            Kernel::Concat { outer, inners }
        }
    };
    // What each input must hold per sample, so that no kernel's own length
    // check can fail at run time.
    let expected_inputs: Vec<usize> = match &kernel {
        Kernel::Conv2d {
            geometry, epilogue, ..
        } => residual_inputs(geometry.input_len(), epilogue, shape_len),
        Kernel::Linear {
            in_features,
            epilogue,
            ..
        } => residual_inputs(*in_features, epilogue, shape_len),
        Kernel::MaxPool2d(geometry) | Kernel::AvgPool2d { geometry, .. } => {
            vec![geometry.input_len()]
        }
        Kernel::AdaptiveAvgPool2d {
            input: [channels, in_h, in_w],
            ..
        } => vec![product(&[*channels, *in_h, *in_w]).ok_or("the size overflows")?],
        Kernel::BatchNorm2d { channels, hw, .. } => {
            let len = channels.checked_mul(*hw).ok_or("the size overflows")?;
            expect_len("the output", shape_len, len)?;
            vec![len]
        }
        Kernel::Identity | Kernel::Activation(_) => vec![shape_len],
        Kernel::Softmax {
            outer,
            dim_len,
            inner,
        } => {
            let len = product(&[*outer, *dim_len, *inner]).ok_or("the size overflows")?;
            expect_len("the output", shape_len, len)?;
            vec![len]
        }
        Kernel::Add(_) => vec![shape_len, shape_len],
        Kernel::Concat { outer, inners } => inners
            .iter()
            .map(|&inner| outer.checked_mul(inner).ok_or("the size overflows"))
            .collect::<Result<_, _>>()?,
    };
    if expected_inputs.len() != input_shapes.len() {
        return Err(format!(
            "`{}` has {} inputs, expected {}",
            op.name(),
            input_shapes.len(),
            expected_inputs.len()
        ));
    }
    for (slot, (found, expected)) in input_shapes.iter().zip(expected_inputs).enumerate() {
        let found = product(found).ok_or("the size overflows")?;
        expect_len(&format!("input {slot}"), found, expected)?;
    }
    Ok(kernel)
}

/// The per-sample input lengths of a layer with a main input of `main`
/// values and, with a residual epilogue, a second input of the output's size.
fn residual_inputs(main: usize, epilogue: &Epilogue, output: usize) -> Vec<usize> {
    if epilogue.residual {
        vec![main, output]
    } else {
        vec![main]
    }
}

/// Epilogue fields that have no meaning without a source of values.
fn check_epilogue(epilogue: &Epilogue, has_folded_batchnorm: bool) -> Result<(), String> {
    if epilogue.bias && !has_folded_batchnorm {
        return Err("an epilogue bias without a folded batch-norm to take it from".into());
    }
    Ok(())
}

fn check_batchnorm(bn: &BatchNormWeights, channels: usize) -> Result<(), String> {
    for (name, tensor) in [
        ("weight", &bn.weight),
        ("bias", &bn.bias),
        ("running_mean", &bn.running_mean),
        ("running_var", &bn.running_var),
    ] {
        expect_len(&format!("the batch-norm's {name}"), tensor.len(), channels)?;
    }
    Ok(())
}
