//! Shape inference: every node's output shape, parameter and MAC counts and
//! expected weight tensors, with PyTorch's exact size rules.
//!
//! [`infer`] does not change the graph; it returns a [`GraphInfo`] side table
//! that later stages take together with the graph. All arithmetic is checked:
//! absurd sizes are reported as "too large", never overflow.
//!
//! A node whose shape cannot be computed is reported, and the nodes that
//! depend on it are skipped (no follow-on errors); independent branches are
//! still checked.

use cnnc_kernels::{Conv2dGeometry, Pool2dGeometry};
use cnnc_syntax::{Diagnostic, Diagnostics, Label, Span};

use crate::graph::{Graph, Node, NodeId};
use crate::op::{Conv2d, Linear, Op, WeightSource};

/// The largest number of elements of one tensor (per sample for
/// activations): `2^31`.
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// One tensor the weights file must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightSpec {
    /// The `state_dict` name (`layer1.0.conv1.weight`).
    pub name: String,
    /// Its shape (`[64, 64, 3, 3]`).
    pub shape: Vec<usize>,
}

/// What inference knows about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The per-sample output shape.
    pub shape: Vec<usize>,
    /// Trainable parameters (PyTorch's `parameters()`: weights and biases,
    /// batch-norm running statistics excluded).
    pub params: u64,
    /// Multiply-accumulates per sample (convolutions and linear layers only).
    pub macs: u64,
    /// The tensors this node reads from the weights file.
    pub weights: Vec<WeightSpec>,
}

/// The side table computed by [`infer`].
#[derive(Clone, Debug, Default)]
pub struct GraphInfo {
    nodes: Vec<Option<NodeInfo>>,
    order: Vec<NodeId>,
    /// Sum of [`NodeInfo::params`].
    pub total_params: u64,
    /// Sum of [`NodeInfo::macs`].
    pub total_macs: u64,
}

impl GraphInfo {
    /// The info of `node`, if it is in the graph that was inferred.
    pub fn get(&self, node: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(node.index()).and_then(Option::as_ref)
    }

    /// The per-sample output shape of `node` (empty if unknown).
    pub fn shape(&self, node: NodeId) -> &[usize] {
        self.get(node).map_or(&[], |info| info.shape.as_slice())
    }

    /// The nodes in the topological order inference used.
    pub fn order(&self) -> &[NodeId] {
        &self.order
    }

    /// The convolution geometry of a `Conv2d` node for `batch` samples.
    pub fn conv2d_geometry(
        &self,
        graph: &Graph,
        node: NodeId,
        batch: usize,
    ) -> Option<Conv2dGeometry> {
        let Op::Conv2d(conv) = &graph.get(node)?.op else {
            return None;
        };
        let input = *graph.inputs(node).first()?;
        let &[in_channels, in_h, in_w] = self.shape(input) else {
            return None;
        };
        let &[out_channels, out_h, out_w] = self.shape(node) else {
            return None;
        };
        Some(Conv2dGeometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            out_h,
            out_w,
            kernel: conv.kernel_size,
            stride: conv.stride,
            dilation: conv.dilation,
            padding: conv.padding,
            groups: conv.groups,
        })
    }

    /// The pooling geometry of a `MaxPool2d` or `AvgPool2d` node.
    pub fn pool2d_geometry(
        &self,
        graph: &Graph,
        node: NodeId,
        batch: usize,
    ) -> Option<Pool2dGeometry> {
        let (kernel, stride, padding, dilation) = match &graph.get(node)?.op {
            Op::MaxPool2d(p) => (p.kernel_size, p.stride, p.padding, p.dilation),
            Op::AvgPool2d(p) => (p.kernel_size, p.stride, p.padding, [1, 1]),
            _ => return None,
        };
        let input = *graph.inputs(node).first()?;
        let &[channels, in_h, in_w] = self.shape(input) else {
            return None;
        };
        let &[_, out_h, out_w] = self.shape(node) else {
            return None;
        };
        Some(Pool2dGeometry {
            batch,
            channels,
            in_h,
            in_w,
            out_h,
            out_w,
            kernel,
            stride,
            dilation,
            padding,
        })
    }
}

impl std::ops::Index<NodeId> for GraphInfo {
    type Output = NodeInfo;

    /// The info of `node`; panics if the node was not inferred (a compiler
    /// bug: every node of an inferred graph has info).
    fn index(&self, node: NodeId) -> &NodeInfo {
        match self.get(node) {
            Some(info) => info,
            None => panic!("no shape information for node {node}"),
        }
    }
}

/// Every tensor the weights file must hold for this graph, in execution
/// order, each once (for `cnnc check --weights` and weight loading).
pub fn expected_weights(graph: &Graph, info: &GraphInfo) -> Vec<WeightSpec> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for &node in info.order() {
        if !graph.contains(node) {
            continue; // Removed by a pass after inference.
        }
        if let Some(node_info) = info.get(node) {
            for spec in &node_info.weights {
                if seen.insert(spec.name.clone()) {
                    out.push(spec.clone());
                }
            }
        }
    }
    out
}

/// The output size of a convolution along one axis, PyTorch's rule:
/// `floor((input + pad_total - dilation*(kernel-1) - 1) / stride) + 1`.
///
/// `pad_total` is the padding on both sides together. Fails when the
/// dilated kernel is larger than the padded input.
pub fn conv_output_size(
    input: usize,
    pad_total: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize, SizeError> {
    let padded = (input as u64)
        .checked_add(pad_total as u64)
        .ok_or(SizeError::TooLarge)?;
    let window = window_size(kernel, dilation)?;
    if window > padded || stride == 0 {
        return Err(SizeError::WindowTooLarge { window, padded });
    }
    Ok(((padded - window) / stride as u64 + 1) as usize)
}

/// The output size of max or average pooling along one axis, PyTorch's
/// rule (`pooling_output_shape`): like a convolution with `padding` on both
/// sides, rounded up with `ceil_mode`, after which a last window that would
/// start in the bottom/right padding is dropped (`(out-1)*stride >= input + padding`).
pub fn pool_output_size(
    input: usize,
    padding: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Result<usize, SizeError> {
    let input_i = input as i128;
    let padding_i = padding as i128;
    let stride_i = stride.max(1) as i128;
    let window = window_size(kernel, dilation)? as i128;
    let mut numerator = input_i + 2 * padding_i - window;
    if ceil_mode {
        numerator += stride_i - 1;
    }
    let mut out = numerator.div_euclid(stride_i) + 1;
    if ceil_mode && (out - 1) * stride_i >= input_i + padding_i {
        out -= 1;
    }
    if out < 1 {
        let padded = (input_i + 2 * padding_i) as u64;
        if window as u64 > padded {
            return Err(SizeError::WindowTooLarge {
                window: window as u64,
                padded,
            });
        }
        return Err(SizeError::NotPositive { size: out as i64 });
    }
    if out as u64 > MAX_ELEMENTS {
        return Err(SizeError::TooLarge);
    }
    Ok(out as usize)
}

fn window_size(kernel: usize, dilation: usize) -> Result<u64, SizeError> {
    (dilation as u64)
        .checked_mul((kernel as u64).saturating_sub(1))
        .and_then(|w| w.checked_add(1))
        .ok_or(SizeError::TooLarge)
}

/// Why an output size could not be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// The (dilated) window is larger than the padded input.
    WindowTooLarge {
        /// `dilation*(kernel-1)+1`.
        window: u64,
        /// The input size plus its padding.
        padded: u64,
    },
    /// The output size would be zero or negative.
    NotPositive {
        /// The size computed.
        size: i64,
    },
    /// A size overflowed.
    TooLarge,
}

/// Infers every node's shape, or reports every problem found.
pub fn infer(graph: &Graph) -> Result<GraphInfo, Diagnostics> {
    let order = graph.topo_order();
    let mut info = GraphInfo {
        nodes: vec![None; graph.node_bound()],
        order: order.clone(),
        total_params: 0,
        total_macs: 0,
    };
    let mut diagnostics = Diagnostics::new();
    if order.len() != graph.len() {
        diagnostics.push(internal(graph, graph.input(), "the graph has a cycle"));
        return Err(diagnostics);
    }
    for &node in &order {
        let inputs = graph.inputs(node);
        let mut input_shapes = Vec::with_capacity(inputs.len());
        for &input in &inputs {
            match info.get(input) {
                Some(input_info) => input_shapes.push(input_info.shape.as_slice()),
                None => break,
            }
        }
        if input_shapes.len() != inputs.len() {
            continue; // An input failed; it was reported already.
        }
        let context = Context {
            graph,
            node,
            data: &graph[node],
            input_shapes: &input_shapes,
        };
        match context.infer_node() {
            Ok(node_info) => {
                let elements = checked_product(&node_info.shape);
                if elements.is_none_or(|e| e > MAX_ELEMENTS) {
                    diagnostics.push(context.too_large(&node_info.shape));
                    continue;
                }
                info.nodes[node.index()] = Some(node_info);
            }
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
    if diagnostics.has_errors() {
        diagnostics.sort_by_position();
        return Err(diagnostics);
    }
    let mut total_params: u64 = 0;
    let mut total_macs: u64 = 0;
    for node_info in info.nodes.iter().flatten() {
        total_params = total_params.saturating_add(node_info.params);
        total_macs = total_macs.saturating_add(node_info.macs);
    }
    info.total_params = total_params;
    info.total_macs = total_macs;
    Ok(info)
}

fn internal(graph: &Graph, node: NodeId, what: &str) -> Diagnostic {
    let span = graph.get(node).map_or(Span::default(), |n| n.origin.op);
    Diagnostic::error(format!("internal error: {what} (this is a bug in cnnc)"))
        .with_primary(Label::new(span, ""))
}

/// The product of the dimensions, if it fits in a `u64`.
pub fn checked_product(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// `[3, 224, 224]`.
pub fn format_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

struct Context<'a> {
    graph: &'a Graph,
    node: NodeId,
    data: &'a Node,
    input_shapes: &'a [&'a [usize]],
}

type Inferred = Result<NodeInfo, Diagnostic>;

fn plain(shape: Vec<usize>) -> NodeInfo {
    NodeInfo {
        shape,
        params: 0,
        macs: 0,
        weights: Vec::new(),
    }
}

impl Context<'_> {
    fn op_span(&self) -> Span {
        self.data.origin.op
    }

    fn arg_span(&self, param: &str) -> Span {
        self.data.origin.arg_or_op(param)
    }

    fn input_span(&self, slot: usize) -> Span {
        self.data
            .origin
            .inputs
            .get(slot)
            .copied()
            .unwrap_or(self.data.origin.op)
    }

    fn name(&self) -> &'static str {
        self.data.op.name()
    }

    /// A label on what feeds input `slot`, unless that is the operator name
    /// itself (an implicit input), where the primary label already points.
    fn input_label(&self, slot: usize, message: impl Into<String>) -> Option<Label> {
        let span = self.input_span(slot);
        (span != self.op_span()).then(|| Label::new(span, message))
    }

    fn too_large(&self, shape: &[usize]) -> Diagnostic {
        if matches!(self.data.op, Op::Input(_)) {
            return Diagnostic::error(format!(
                "the input is too large: {} has more than 2^31 elements per sample",
                format_shape(shape)
            ))
            .with_primary(Label::new(self.op_span(), "input too large"));
        }
        Diagnostic::error(format!(
            "the output of this `{}` is too large: {} has more than 2^31 elements",
            self.name(),
            format_shape(shape)
        ))
        .with_primary(Label::new(self.op_span(), "output too large"))
    }

    fn arity(&self, expected: usize) -> Result<(), Diagnostic> {
        if self.input_shapes.len() == expected {
            Ok(())
        } else {
            Err(internal(
                self.graph,
                self.node,
                &format!(
                    "`{}` has {} inputs, expected {expected}",
                    self.name(),
                    self.input_shapes.len()
                ),
            ))
        }
    }

    /// The input in slot 0 as `[C, H, W]`.
    fn chw(&self) -> Result<[usize; 3], Diagnostic> {
        match self.input_shapes.first() {
            Some(&[c, h, w]) => Ok([*c, *h, *w]),
            Some(shape) => Err(Diagnostic::error(format!(
                "`{}` expects a [C, H, W] input, found {}",
                self.name(),
                format_shape(shape)
            ))
            .with_primary(Label::new(self.op_span(), "needs a [C, H, W] input"))
            .with_secondary_opt(
                self.input_label(0, format!("this value has shape {}", format_shape(shape))),
            )),
            None => Err(internal(self.graph, self.node, "missing input")),
        }
    }

    fn infer_node(&self) -> Inferred {
        match &self.data.op {
            Op::Input(input) => {
                self.arity(0)?;
                Ok(plain(input.shape.clone()))
            }
            Op::Conv2d(conv) => self.conv2d(conv),
            Op::MaxPool2d(pool) => {
                self.arity(1)?;
                self.pool(
                    pool.kernel_size,
                    pool.stride,
                    pool.padding,
                    pool.dilation,
                    pool.ceil_mode,
                )
            }
            Op::AvgPool2d(pool) => {
                self.arity(1)?;
                self.pool(
                    pool.kernel_size,
                    pool.stride,
                    pool.padding,
                    [1, 1],
                    pool.ceil_mode,
                )
            }
            Op::AdaptiveAvgPool2d(pool) => {
                self.arity(1)?;
                let [c, _, _] = self.chw()?;
                Ok(plain(vec![c, pool.output_size[0], pool.output_size[1]]))
            }
            Op::BatchNorm2d(bn) => {
                self.arity(1)?;
                let [c, h, w] = self.chw()?;
                self.check_explicit("num_features", c, "channels")?;
                let params = 2 * c as u64;
                let weights = batchnorm_weights(&bn.module, c);
                Ok(NodeInfo {
                    shape: vec![c, h, w],
                    params,
                    macs: 0,
                    weights,
                })
            }
            Op::Linear(linear) => self.linear(linear),
            Op::Flatten => {
                self.arity(1)?;
                let product = checked_product(self.input_shapes[0])
                    .filter(|&p| p <= MAX_ELEMENTS)
                    .ok_or_else(|| self.too_large(self.input_shapes[0]))?;
                Ok(plain(vec![product as usize]))
            }
            Op::Activation(_) | Op::Dropout(_) => {
                self.arity(1)?;
                Ok(plain(self.input_shapes[0].to_vec()))
            }
            Op::Softmax(softmax) => {
                self.arity(1)?;
                let shape = self.input_shapes[0];
                self.resolve_dim(softmax.dim, shape.len())?;
                Ok(plain(shape.to_vec()))
            }
            Op::Add(_) => {
                self.arity(2)?;
                let (a, b) = (self.input_shapes[0], self.input_shapes[1]);
                if a != b {
                    return Err(Diagnostic::error(format!(
                        "`add` of values with different shapes: {} and {}",
                        format_shape(a),
                        format_shape(b)
                    ))
                    .with_primary(Label::new(self.op_span(), "shapes differ"))
                    .with_secondary_opt(self.input_label(0, format!("shape {}", format_shape(a))))
                    .with_secondary_opt(self.input_label(1, format!("shape {}", format_shape(b))))
                    .with_note("`add` does not broadcast: both operands need the same shape"));
                }
                Ok(plain(a.to_vec()))
            }
            Op::Concat(concat) => self.concat(concat.dim),
        }
    }

    fn check_explicit(&self, param: &str, actual: usize, what: &str) -> Result<(), Diagnostic> {
        let Some(span) = self.data.origin.arg(param) else {
            return Ok(());
        };
        let written = match (&self.data.op, param) {
            (Op::Conv2d(conv), "in_channels") => conv.in_channels,
            (Op::Linear(linear), "in_features") => linear.in_features,
            (Op::BatchNorm2d(bn), "num_features") => bn.num_features,
            _ => None,
        };
        let Some(written) = written else {
            return Ok(());
        };
        if written != actual {
            return Err(Diagnostic::error(format!(
                "`{param}` is {written}, but the input has {actual} {what}"
            ))
            .with_primary(Label::new(span, format!("{param}={written}")))
            .with_secondary_opt(self.input_label(0, format!("this value has {actual} {what}")))
            .with_help(format!(
                "remove `{param}` to infer it, or fix the layers above"
            )));
        }
        Ok(())
    }

    fn conv2d(&self, conv: &Conv2d) -> Inferred {
        let expected_inputs = if conv.epilogue.residual { 2 } else { 1 };
        self.arity(expected_inputs)?;
        let [c, h, w] = self.chw()?;
        self.check_explicit("in_channels", c, "channels")?;
        let groups = conv.groups;
        if !c.is_multiple_of(groups) {
            return Err(Diagnostic::error(format!(
                "groups={groups} does not divide the {c} input channels"
            ))
            .with_primary(Label::new(
                self.arg_span("groups"),
                "groups must divide in_channels",
            ))
            .with_secondary_opt(self.input_label(0, format!("this value has {c} channels"))));
        }
        if !conv.out_channels.is_multiple_of(groups) {
            return Err(Diagnostic::error(format!(
                "groups={groups} does not divide out_channels={}",
                conv.out_channels
            ))
            .with_primary(Label::new(
                self.arg_span("groups"),
                "groups must divide out_channels",
            ))
            .with_secondary(Label::new(self.arg_span("out_channels"), "out_channels")));
        }
        let [top, left, bottom, right] = conv.padding;
        let out_h = self.size_2d(
            0,
            h,
            top.saturating_add(bottom),
            conv.kernel_size[0],
            conv.stride[0],
            conv.dilation[0],
            None,
        )?;
        let out_w = self.size_2d(
            1,
            w,
            left.saturating_add(right),
            conv.kernel_size[1],
            conv.stride[1],
            conv.dilation[1],
            None,
        )?;
        let shape = vec![conv.out_channels, out_h, out_w];
        let per_group = c / groups;
        let weight_shape = vec![
            conv.out_channels,
            per_group,
            conv.kernel_size[0],
            conv.kernel_size[1],
        ];
        let weight_len = checked_product(&weight_shape)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                Diagnostic::error(format!(
                    "the weight tensor of this `conv2d` is too large: {} has more than 2^31 elements",
                    format_shape(&weight_shape)
                ))
                .with_primary(Label::new(self.op_span(), "weights too large"))
            })?;
        if conv.epilogue.residual && self.input_shapes[1] != shape.as_slice() {
            return Err(internal(
                self.graph,
                self.node,
                "residual input has the wrong shape",
            ));
        }
        let bias = if conv.bias {
            conv.out_channels as u64
        } else {
            0
        };
        let output_len = checked_product(&shape).unwrap_or(u64::MAX);
        let macs = output_len
            .saturating_mul((per_group * conv.kernel_size[0] * conv.kernel_size[1]) as u64);
        let mut weights = vec![WeightSpec {
            name: format!("{}.weight", conv.weights.module),
            shape: weight_shape,
        }];
        if conv.bias {
            weights.push(WeightSpec {
                name: format!("{}.bias", conv.weights.module),
                shape: vec![conv.out_channels],
            });
        }
        let folded = folded_weights(&conv.weights, conv.out_channels);
        Ok(NodeInfo {
            shape,
            params: weight_len + bias + folded.1,
            macs,
            weights: weights.into_iter().chain(folded.0).collect(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn size_2d(
        &self,
        axis: usize,
        input: usize,
        pad_total: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pool: Option<(usize, bool)>,
    ) -> Result<usize, Diagnostic> {
        let result = match pool {
            None => conv_output_size(input, pad_total, kernel, stride, dilation),
            Some((padding, ceil_mode)) => {
                pool_output_size(input, padding, kernel, stride, dilation, ceil_mode)
            }
        };
        let axis_name = if axis == 0 { "height" } else { "width" };
        result.map_err(|error| match error {
            SizeError::WindowTooLarge { window, padded } => {
                let what = if dilation > 1 {
                    format!("dilated kernel size {window} (kernel {kernel}, dilation {dilation})")
                } else {
                    format!("kernel size {kernel}")
                };
                let padded_text = if padded == input as u64 {
                    format!("{input}")
                } else {
                    format!("{padded} with padding")
                };
                Diagnostic::error(format!(
                    "{what} is larger than the input {axis_name} ({padded_text})"
                ))
                .with_primary(Label::new(self.arg_span("kernel_size"), "window too large"))
                .with_secondary_opt(self.input_label(0, format!("input {axis_name} is {input}")))
                .with_help(
                    "use a smaller kernel, add padding, or remove a downsampling layer above",
                )
            }
            SizeError::NotPositive { size } => Diagnostic::error(format!(
                "the output {axis_name} of this `{}` would be {size}",
                self.name()
            ))
            .with_primary(Label::new(self.op_span(), "output size must be at least 1"))
            .with_secondary_opt(self.input_label(0, format!("input {axis_name} is {input}"))),
            SizeError::TooLarge => {
                Diagnostic::error(format!("the sizes of this `{}` are too large", self.name()))
                    .with_primary(Label::new(self.op_span(), "too large"))
            }
        })
    }

    fn pool(
        &self,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Inferred {
        let [c, h, w] = self.chw()?;
        for axis in 0..2 {
            if padding[axis] > kernel[axis] / 2 {
                return Err(Diagnostic::error(format!(
                    "padding {} is more than half the kernel size {}",
                    padding[axis], kernel[axis]
                ))
                .with_primary(Label::new(self.arg_span("padding"), "padding too large"))
                .with_secondary(Label::new(self.arg_span("kernel_size"), "kernel size"))
                .with_note("PyTorch requires pooling padding <= kernel_size / 2"));
            }
        }
        let out_h = self.size_2d(
            0,
            h,
            0,
            kernel[0],
            stride[0],
            dilation[0],
            Some((padding[0], ceil_mode)),
        )?;
        let out_w = self.size_2d(
            1,
            w,
            0,
            kernel[1],
            stride[1],
            dilation[1],
            Some((padding[1], ceil_mode)),
        )?;
        Ok(plain(vec![c, out_h, out_w]))
    }

    fn linear(&self, linear: &Linear) -> Inferred {
        let expected_inputs = if linear.epilogue.residual { 2 } else { 1 };
        self.arity(expected_inputs)?;
        let shape = self.input_shapes[0];
        let &[features] = shape else {
            return Err(Diagnostic::error(format!(
                "`linear` expects a flat [features] input, found {}",
                format_shape(shape)
            ))
            .with_primary(Label::new(self.op_span(), "needs a rank-1 input"))
            .with_secondary_opt(
                self.input_label(0, format!("this value has shape {}", format_shape(shape))),
            )
            .with_help("add `flatten` before this layer"));
        };
        self.check_explicit("in_features", features, "features")?;
        let weight_shape = vec![linear.out_features, features];
        let weight_len = checked_product(&weight_shape)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                Diagnostic::error(format!(
                    "the weight tensor of this `linear` is too large: {} has more than 2^31 elements",
                    format_shape(&weight_shape)
                ))
                .with_primary(Label::new(self.op_span(), "weights too large"))
            })?;
        let mut weights = vec![WeightSpec {
            name: format!("{}.weight", linear.weights.module),
            shape: weight_shape,
        }];
        let mut params = weight_len;
        if linear.bias {
            params += linear.out_features as u64;
            weights.push(WeightSpec {
                name: format!("{}.bias", linear.weights.module),
                shape: vec![linear.out_features],
            });
        }
        let folded = folded_weights(&linear.weights, linear.out_features);
        weights.extend(folded.0);
        Ok(NodeInfo {
            shape: vec![linear.out_features],
            params: params + folded.1,
            macs: weight_len,
            weights,
        })
    }

    /// A `dim` argument (batch = 0, negative from the end) as a per-sample
    /// axis; dim 0 (the batch) is rejected.
    fn resolve_dim(&self, dim: i64, rank: usize) -> Result<usize, Diagnostic> {
        resolve_dim(dim, rank).map_err(|message| {
            Diagnostic::error(message)
                .with_primary(Label::new(self.arg_span("dim"), "invalid dimension"))
                .with_note("`dim` counts the batch as dimension 0, as in PyTorch")
        })
    }

    fn concat(&self, dim: i64) -> Inferred {
        let first = *self
            .input_shapes
            .first()
            .ok_or_else(|| internal(self.graph, self.node, "`concat` without inputs"))?;
        let axis = self.resolve_dim(dim, first.len())?;
        let mut shape = first.to_vec();
        for (slot, other) in self.input_shapes.iter().enumerate().skip(1) {
            let compatible = other.len() == first.len()
                && other
                    .iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !compatible {
                return Err(Diagnostic::error(format!(
                    "`concat` along dim {dim} of incompatible shapes {} and {}",
                    format_shape(first),
                    format_shape(other)
                ))
                .with_primary(Label::new(self.op_span(), "shapes differ"))
                .with_secondary_opt(self.input_label(0, format!("shape {}", format_shape(first))))
                .with_secondary_opt(
                    self.input_label(slot, format!("shape {}", format_shape(other))),
                )
                .with_note("all dimensions but `dim` must be equal"));
            }
            shape[axis] = shape[axis]
                .checked_add(other[axis])
                .ok_or_else(|| self.too_large(first))?;
        }
        Ok(plain(shape))
    }
}

/// Resolves a PyTorch `dim` (counting the batch as dimension 0; negative
/// values count from the end) against a per-sample rank, giving the
/// per-sample axis. The batch dimension itself is rejected.
pub fn resolve_dim(dim: i64, rank: usize) -> Result<usize, String> {
    let batched = rank as i64 + 1;
    let normalized = if dim < 0 { dim + batched } else { dim };
    if normalized < 0 || normalized >= batched {
        return Err(format!(
            "dim {dim} is out of range for a {}-dimensional value (with its batch): expected {} to {}",
            batched,
            -batched,
            batched - 1
        ));
    }
    if normalized == 0 {
        return Err(format!(
            "dim {dim} is the batch dimension, which cannot be used here"
        ));
    }
    Ok((normalized - 1) as usize)
}

fn batchnorm_weights(module: &str, channels: usize) -> Vec<WeightSpec> {
    ["weight", "bias", "running_mean", "running_var"]
        .iter()
        .map(|tensor| WeightSpec {
            name: format!("{module}.{tensor}"),
            shape: vec![channels],
        })
        .collect()
}

/// The tensors and parameter count of a folded batch-norm, if any.
fn folded_weights(source: &WeightSource, channels: usize) -> (Vec<WeightSpec>, u64) {
    match &source.folded_batchnorm {
        Some(bn) => (batchnorm_weights(&bn.module, channels), 2 * channels as u64),
        None => (Vec::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::{conv_output_size, pool_output_size, resolve_dim, SizeError};

    // Values from PyTorch 2.x (`torch.nn.Conv2d`/`MaxPool2d` on zeros).
    #[test]
    fn conv_sizes_match_pytorch() {
        // Conv2d(16, 33, 3, stride=2) on 50x100 -> 24x49.
        assert_eq!(conv_output_size(50, 0, 3, 2, 1), Ok(24));
        assert_eq!(conv_output_size(100, 0, 3, 2, 1), Ok(49));
        // kernel (3, 5), stride (2, 1), padding (4, 2) -> 28x100.
        assert_eq!(conv_output_size(50, 8, 3, 2, 1), Ok(28));
        assert_eq!(conv_output_size(100, 4, 5, 1, 1), Ok(100));
        // ... with dilation (3, 1) -> 26x100.
        assert_eq!(conv_output_size(50, 8, 3, 2, 3), Ok(26));
        assert_eq!(conv_output_size(100, 4, 5, 1, 1), Ok(100));
        // 3x3 "same" on 9: total padding 2.
        assert_eq!(conv_output_size(9, 2, 3, 1, 1), Ok(9));
        // Kernel exactly the padded input.
        assert_eq!(conv_output_size(16, 0, 16, 1, 1), Ok(1));
        assert_eq!(
            conv_output_size(16, 0, 17, 1, 1),
            Err(SizeError::WindowTooLarge {
                window: 17,
                padded: 16
            })
        );
        assert_eq!(
            conv_output_size(5, 0, 3, 1, 3),
            Err(SizeError::WindowTooLarge {
                window: 7,
                padded: 5
            })
        );
        assert_eq!(
            conv_output_size(5, usize::MAX, 3, 1, 1),
            Err(SizeError::TooLarge)
        );
    }

    #[test]
    fn pool_sizes_match_pytorch() {
        // MaxPool2d(3, stride=2, padding=1) on 50x32 -> 25x16.
        assert_eq!(pool_output_size(50, 1, 3, 2, 1, false), Ok(25));
        assert_eq!(pool_output_size(32, 1, 3, 2, 1, false), Ok(16));
        // MaxPool2d(3, 2, ceil_mode=True) on 10 -> 5 (floor would give 4).
        assert_eq!(pool_output_size(10, 0, 3, 2, 1, true), Ok(5));
        assert_eq!(pool_output_size(10, 0, 3, 2, 1, false), Ok(4));
        // MaxPool2d(2, 2, padding=1, ceil_mode=True) on 5 -> 3: ceil gives
        // 4, but the 4th window would start in the right padding.
        assert_eq!(pool_output_size(5, 1, 2, 2, 1, true), Ok(3));
        // AvgPool2d(3, 2, padding=1, ceil_mode=True) on 10 -> 6.
        assert_eq!(pool_output_size(10, 1, 3, 2, 1, true), Ok(6));
        // MaxPool2d(3, 1, dilation=2) on 12 -> 8.
        assert_eq!(pool_output_size(12, 0, 3, 1, 2, false), Ok(8));
        // MaxPool2d(3, 3, ceil_mode=True) on 2 -> 1 (window past the input).
        assert_eq!(pool_output_size(2, 0, 3, 3, 1, true), Ok(1));
        assert_eq!(
            pool_output_size(2, 0, 3, 3, 1, false),
            Err(SizeError::WindowTooLarge {
                window: 3,
                padded: 2
            })
        );
    }

    #[test]
    fn dims_count_the_batch() {
        assert_eq!(resolve_dim(1, 3), Ok(0));
        assert_eq!(resolve_dim(-1, 3), Ok(2));
        assert_eq!(resolve_dim(3, 3), Ok(2));
        assert_eq!(
            resolve_dim(-4, 3),
            Err("dim -4 is the batch dimension, which cannot be used here".into())
        );
        assert!(resolve_dim(0, 1).is_err());
        assert!(resolve_dim(4, 3).is_err());
        assert!(resolve_dim(-5, 3).is_err());
        assert!(resolve_dim(i64::MIN, 3).is_err());
    }
}
