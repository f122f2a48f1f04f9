//! Binding a weights file to a checked graph.
//!
//! [`bind`] asks the [`WeightFile`] for every tensor each layer expects (the
//! names and shapes shape inference recorded in [`NodeInfo::weights`]), checks
//! each shape, and keeps the values in a side table indexed by node. Every
//! problem is collected, not only the first, and each one knows the layer it
//! belongs to, so it can be reported at that layer's line in the `.cnn` file
//! ([`BindError::to_diagnostic`]).
//!
//! What binding does to the values, once, so that no execution path has to:
//!
//! - **`flip_kernel`**: the kernel of a `flip_kernel=true` convolution is
//!   rotated by 180° here. Every bound convolution kernel is a
//!   cross-correlation kernel, as PyTorch's are.
//!
//! What it does not do by itself: fold batch-norms. A batch-norm folded
//! into a layer by a pass ([`WeightSource::folded_batchnorm`]) is bound as
//! its four original tensors; the reference mode applies it as written (it
//! is the oracle the folding is checked against), and the optimized mode
//! then calls [`BoundWeights::fold_batchnorms`], which folds them into the
//! layer's weight and bias with `cnnc_runtime::fold` (as generated code does
//! when it loads its weights).
//!
//! Tensors the network never asks for are listed by
//! [`WeightFile::unused`] afterwards (`num_batches_tracked` counters
//! excluded); the caller decides how to warn about them.
//!
//! [`NodeInfo::weights`]: cnnc_ir::NodeInfo::weights
//! [`WeightSource::folded_batchnorm`]: cnnc_ir::WeightSource::folded_batchnorm

use std::collections::{HashMap, HashSet};
use std::fmt;

use cnnc_ir::{format_shape, Graph, GraphInfo, NodeId, Op, WeightSource};
use cnnc_runtime::WeightFile;
use cnnc_syntax::{Diagnostic, Diagnostics, Label, Span};

/// The four tensors of a batch-norm and its `eps`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BatchNormWeights {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) running_mean: Vec<f32>,
    pub(crate) running_var: Vec<f32>,
    pub(crate) eps: f64,
}

/// The tensors of one convolution or linear layer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DenseWeights {
    /// `[O, C/groups, kh, kw]` (a cross-correlation kernel: already rotated
    /// for `flip_kernel`) or `[O, F]`.
    pub(crate) weight: Vec<f32>,
    /// The layer's own `.bias`, `[O]`.
    pub(crate) bias: Option<Vec<f32>>,
    /// A batch-norm folded into the layer by a pass, applied after it.
    pub(crate) folded_batchnorm: Option<BatchNormWeights>,
}

/// The bound tensors of one layer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LayerWeights {
    /// A `conv2d` or `linear` layer.
    Dense(DenseWeights),
    /// A `batchnorm2d` layer.
    BatchNorm(BatchNormWeights),
}

/// Every layer's tensors, indexed by [`NodeId::index`].
#[derive(Debug, Default)]
pub(crate) struct BoundWeights {
    layers: Vec<Option<LayerWeights>>,
}

impl BoundWeights {
    /// Takes the tensors of `node` out of the table.
    pub(crate) fn take(&mut self, node: NodeId) -> Option<LayerWeights> {
        self.layers.get_mut(node.index()).and_then(Option::take)
    }

    /// Folds every layer's folded batch-norm into its weight and bias
    /// (`cnnc_runtime::fold::fold_batchnorm`: `f64`, rounded once). Fails
    /// only on lengths that disagree (a bug: shapes were checked on binding).
    pub(crate) fn fold_batchnorms(&mut self, graph: &Graph) -> Result<(), BindErrors> {
        for node in graph.node_ids() {
            let Some(Some(LayerWeights::Dense(dense))) = self.layers.get_mut(node.index()) else {
                continue;
            };
            let Some(bn) = dense.folded_batchnorm.take() else {
                continue;
            };
            let params = cnnc_runtime::fold::BatchNorm {
                weight: &bn.weight,
                bias: &bn.bias,
                running_mean: &bn.running_mean,
                running_var: &bn.running_var,
                eps: bn.eps,
            };
            let bias = cnnc_runtime::fold::fold_batchnorm(
                &mut dense.weight,
                dense.bias.as_deref(),
                &params,
            )
            .map_err(|error| BindErrors::internal(graph, node, error.to_string()))?;
            dense.bias = Some(bias);
        }
        Ok(())
    }
}

/// Why a layer's weights could not be bound.
#[derive(Debug)]
#[non_exhaustive]
pub enum BindErrorKind {
    /// The weights file is wrong for this layer: a tensor is missing, has the
    /// wrong shape, or has a dtype that cannot be converted to `f32`. The
    /// runtime's error names the file, the tensor, the expected and the
    /// found shape. The user's error.
    Weights(cnnc_runtime::Error),
    /// The graph and its shape information disagree. A bug in cnnc.
    Internal(String),
}

/// One layer whose weights could not be bound.
#[derive(Debug)]
pub struct BindError {
    /// The layer.
    pub node: NodeId,
    /// Its display name (`layer1.0.conv1`).
    pub layer: String,
    /// The operator (`conv2d`).
    pub op: &'static str,
    /// Where the layer is written: its name, or its operator if anonymous.
    pub span: Span,
    /// What went wrong.
    pub kind: BindErrorKind,
}

impl BindError {
    /// The error as a diagnostic on the layer's line of the `.cnn` file. The
    /// message names the weights file (when the weights came from one) and
    /// the tensor.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let op = self.op;
        match &self.kind {
            BindErrorKind::Weights(error) => {
                let (label, note) = match error {
                    cnnc_runtime::Error::MissingTensor {
                        name, did_you_mean, ..
                    } => (
                        format!("this `{op}` needs `{name}`"),
                        did_you_mean.is_none().then(|| {
                            format!(
                                "a layer named `L` loads `L.weight`{}",
                                match op {
                                    "batchnorm2d" => {
                                        ", `L.bias`, `L.running_mean` and `L.running_var`"
                                    }
                                    _ => " and, unless `bias=false`, `L.bias`",
                                }
                            )
                        }),
                    ),
                    cnnc_runtime::Error::TensorShape { name, expected, .. } => (
                        format!(
                            "this `{op}` expects `{name}` of shape {}",
                            format_shape(expected)
                        ),
                        layout_note(op, name),
                    ),
                    cnnc_runtime::Error::UnsupportedDtype { name, .. } => {
                        (format!("this `{op}` reads `{name}`"), None)
                    }
                    _ => (format!("this `{op}`'s weights"), None),
                };
                let diagnostic =
                    Diagnostic::error(error.to_string()).with_primary(Label::new(self.span, label));
                match note {
                    Some(note) => diagnostic.with_note(note),
                    None => diagnostic,
                }
            }
            BindErrorKind::Internal(what) => {
                Diagnostic::error(format!("internal error: {what} (this is a bug in cnnc)"))
                    .with_primary(Label::new(self.span, "while binding this layer's weights"))
            }
        }
    }
}

/// What a weight tensor's shape is made of, for shape errors.
fn layout_note(op: &str, tensor: &str) -> Option<String> {
    let layout = if tensor.ends_with(".weight") {
        match op {
            "conv2d" => "[out_channels, in_channels / groups, kernel_h, kernel_w]",
            "linear" => "[out_features, in_features]",
            _ => "[channels]",
        }
    } else {
        match op {
            "conv2d" => "[out_channels]",
            "linear" => "[out_features]",
            _ => "[channels]",
        }
    };
    Some(format!(
        "`{tensor}` of a `{op}` is {layout}; input sizes come from the layers above"
    ))
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BindErrorKind::Weights(error) => write!(f, "layer `{}`: {error}", self.layer),
            BindErrorKind::Internal(what) => write!(
                f,
                "layer `{}`: internal error: {what} (this is a bug in cnnc)",
                self.layer
            ),
        }
    }
}

/// The message already includes the runtime error's, so there is no
/// separate `source()` (which would print it twice in error chains).
impl std::error::Error for BindError {}

/// Every layer whose weights could not be bound, in execution order (never
/// empty).
#[derive(Debug)]
pub struct BindErrors {
    errors: Vec<BindError>,
}

impl BindErrors {
    /// The errors, in execution order.
    pub fn iter(&self) -> std::slice::Iter<'_, BindError> {
        self.errors.iter()
    }

    /// Number of errors (at least one).
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always `false`: there is at least one error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Every error as a diagnostic, sorted by position in the `.cnn` file.
    pub fn to_diagnostics(&self) -> Diagnostics {
        let mut diagnostics: Diagnostics = self
            .errors
            .iter()
            .map(BindError::to_diagnostic)
            .collect::<Vec<_>>()
            .into();
        diagnostics.sort_by_position();
        diagnostics
    }

    /// Errors collected elsewhere (never empty in practice).
    pub(crate) fn from_errors(errors: Vec<BindError>) -> BindErrors {
        BindErrors { errors }
    }

    pub(crate) fn internal(graph: &Graph, node: NodeId, what: impl Into<String>) -> BindErrors {
        BindErrors {
            errors: vec![layer_error(
                graph,
                node,
                BindErrorKind::Internal(what.into()),
            )],
        }
    }
}

impl<'a> IntoIterator for &'a BindErrors {
    type Item = &'a BindError;
    type IntoIter = std::slice::Iter<'a, BindError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for BindErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BindErrors {}

pub(crate) fn layer_error(graph: &Graph, node: NodeId, kind: BindErrorKind) -> BindError {
    let (op, span) = match graph.get(node) {
        Some(data) => (data.op.name(), data.origin.name.unwrap_or(data.origin.op)),
        None => ("(removed)", Span::default()),
    };
    BindError {
        node,
        layer: graph.display_name(node),
        op,
        span,
        kind,
    }
}

/// Loads every tensor the graph's layers expect from `weights` (`None`: no
/// weights at all, so every tensor is missing).
///
/// Layers are visited in [`GraphInfo::order`]; a layer with several bad
/// tensors gets one error per tensor. Layers that nothing reads are bound
/// too: their weights are part of the network as written.
pub(crate) fn bind(
    graph: &Graph,
    info: &GraphInfo,
    weights: Option<&WeightFile<'_>>,
) -> Result<BoundWeights, BindErrors> {
    let mut bound = BoundWeights {
        layers: vec![None; graph.node_bound()],
    };
    // Names some layer loads: never a plausible "did you mean" for another.
    let expected: HashSet<String> = cnnc_ir::expected_weights(graph, info)
        .into_iter()
        .map(|spec| spec.name)
        .collect();
    let mut errors = Vec::new();
    for &node in info.order() {
        let Some(data) = graph.get(node) else {
            continue; // Removed by a pass after inference.
        };
        if !data.op.has_weights() {
            continue;
        }
        let Some(node_info) = info.get(node) else {
            errors.push(layer_error(
                graph,
                node,
                BindErrorKind::Internal("the layer has no shape information".into()),
            ));
            continue;
        };
        let mut tensors = HashMap::new();
        let mut failed = false;
        for spec in &node_info.weights {
            let loaded = match weights {
                Some(weights) => weights.tensor(&spec.name, &spec.shape),
                None => Err(cnnc_runtime::Error::MissingTensor {
                    file: None,
                    name: spec.name.clone(),
                    did_you_mean: None,
                }),
            };
            match loaded {
                Ok(values) => {
                    tensors.insert(spec.name.as_str(), values);
                }
                Err(error) => {
                    failed = true;
                    let error = drop_suggestion_of_another_layer(error, &expected);
                    errors.push(layer_error(graph, node, BindErrorKind::Weights(error)));
                }
            }
        }
        if failed {
            continue;
        }
        let mut tensors = Tensors { tensors };
        match layer_weights(&data.op, &mut tensors) {
            Ok(layer) => bound.layers[node.index()] = Some(layer),
            Err(what) => errors.push(layer_error(graph, node, BindErrorKind::Internal(what))),
        }
    }
    if errors.is_empty() {
        Ok(bound)
    } else {
        Err(BindErrors { errors })
    }
}

/// Checks that `weights` holds every tensor the graph's layers expect,
/// with the right shape and a dtype that converts to `f32`, reporting
/// problems exactly as [`bind`] does, without keeping any value (`f32`
/// tensors are borrowed from the file, not copied). Marks the tensors
/// used. The fast path checks the graph as written this way, then loads
/// the optimized graph's tensors once.
pub(crate) fn check(
    graph: &Graph,
    info: &GraphInfo,
    weights: Option<&WeightFile<'_>>,
) -> Result<(), BindErrors> {
    let expected: HashSet<String> = cnnc_ir::expected_weights(graph, info)
        .into_iter()
        .map(|spec| spec.name)
        .collect();
    let mut errors = Vec::new();
    for &node in info.order() {
        let Some(data) = graph.get(node) else {
            continue;
        };
        if !data.op.has_weights() {
            continue;
        }
        let Some(node_info) = info.get(node) else {
            errors.push(layer_error(
                graph,
                node,
                BindErrorKind::Internal("the layer has no shape information".into()),
            ));
            continue;
        };
        for spec in &node_info.weights {
            let checked = match weights {
                Some(weights) => weights.tensor_cow(&spec.name, &spec.shape).map(drop),
                None => Err(cnnc_runtime::Error::MissingTensor {
                    file: None,
                    name: spec.name.clone(),
                    did_you_mean: None,
                }),
            };
            if let Err(error) = checked {
                let error = drop_suggestion_of_another_layer(error, &expected);
                errors.push(layer_error(graph, node, BindErrorKind::Weights(error)));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BindErrors { errors })
    }
}

/// A missing tensor's "did you mean" that another layer of the network
/// loads is wrong by construction (`layer2.0.conv1.weight` missing is not
/// `layer1.0.conv1.weight`, which `layer1.0.conv1` reads): drop it.
fn drop_suggestion_of_another_layer(
    error: cnnc_runtime::Error,
    expected: &HashSet<String>,
) -> cnnc_runtime::Error {
    match error {
        cnnc_runtime::Error::MissingTensor {
            file,
            name,
            did_you_mean: Some(close),
        } if expected.contains(&close) => cnnc_runtime::Error::MissingTensor {
            file,
            name,
            did_you_mean: None,
        },
        other => other,
    }
}

/// The loaded tensors of one layer, by name.
struct Tensors<'a> {
    tensors: HashMap<&'a str, Vec<f32>>,
}

impl Tensors<'_> {
    fn take(&mut self, name: &str) -> Result<Vec<f32>, String> {
        self.tensors
            .remove(name)
            .ok_or_else(|| format!("shape inference did not list the tensor `{name}`"))
    }

    fn batchnorm(&mut self, module: &str, eps: f64) -> Result<BatchNormWeights, String> {
        Ok(BatchNormWeights {
            weight: self.take(&format!("{module}.weight"))?,
            bias: self.take(&format!("{module}.bias"))?,
            running_mean: self.take(&format!("{module}.running_mean"))?,
            running_var: self.take(&format!("{module}.running_var"))?,
            eps,
        })
    }

    fn dense(&mut self, source: &WeightSource, bias: bool) -> Result<DenseWeights, String> {
        let weight = self.take(&format!("{}.weight", source.module))?;
        let bias = if bias {
            Some(self.take(&format!("{}.bias", source.module))?)
        } else {
            None
        };
        let folded_batchnorm = match &source.folded_batchnorm {
            Some(bn) => Some(self.batchnorm(&bn.module, bn.eps)?),
            None => None,
        };
        Ok(DenseWeights {
            weight,
            bias,
            folded_batchnorm,
        })
    }
}

fn layer_weights(op: &Op, tensors: &mut Tensors<'_>) -> Result<LayerWeights, String> {
    match op {
        Op::Conv2d(conv) => {
            let mut dense = tensors.dense(&conv.weights, conv.bias)?;
            if conv.flip_kernel {
                let taps = conv.kernel_size[0] * conv.kernel_size[1];
                if taps == 0 || !dense.weight.len().is_multiple_of(taps) {
                    return Err("the kernel size does not divide the weight tensor".into());
                }
                rotate_kernels(&mut dense.weight, taps);
            }
            Ok(LayerWeights::Dense(dense))
        }
        Op::Linear(linear) => Ok(LayerWeights::Dense(
            tensors.dense(&linear.weights, linear.bias)?,
        )),
        Op::BatchNorm2d(bn) => Ok(LayerWeights::BatchNorm(
            tensors.batchnorm(&bn.module, bn.eps)?,
        )),
        other => Err(format!("`{}` has no weights", other.name())),
    }
}

/// Rotates every `kh x kw` kernel of a `[.., .., kh, kw]` tensor by 180°:
/// tap `(ky, kx)` becomes `(kh-1-ky, kw-1-kx)`, which in row-major order is
/// reversing each block of `taps = kh * kw` values.
fn rotate_kernels(weight: &mut [f32], taps: usize) {
    for kernel in weight.chunks_exact_mut(taps) {
        kernel.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::rotate_kernels;

    #[test]
    fn rotation_is_180_degrees() {
        // Two 2x3 kernels.
        let mut weight = vec![
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
        ];
        rotate_kernels(&mut weight, 6);
        assert_eq!(
            weight,
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0]
        );
    }
}
