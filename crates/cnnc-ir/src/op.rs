//! The operators: one closed enum, one struct per operator.
//!
//! Every parameter is resolved when the AST is lowered: PyTorch defaults are
//! filled in, `kernel_size`-like pairs are `[h, w]`, convolution padding is
//! `[top, left, bottom, right]`. What depends on the input shape (channel
//! counts, output sizes, a negative `dim`) is computed by [`crate::infer()`].
//!
//! Shapes below are per sample (the batch dimension `N` is implicit).

use cnnc_kernels::Activation;

/// One operator of the graph. Each produces exactly one value.
///
/// The enum is deliberately exhaustive: adding an operator must break every
/// `match` in the interpreter and the code generator until they handle it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The network's input. No inputs; output: the declared shape.
    Input(Input),
    /// `torch.nn.Conv2d`. Input `[C, H, W]` → `[O, H', W']` with
    /// `H' = floor((H + top + bottom - d*(k-1) - 1) / s) + 1` (same for `W`).
    /// `C` and `O` must be multiples of `groups`. With a residual epilogue
    /// there is a second input (slot 1) of the output's shape.
    Conv2d(Conv2d),
    /// `torch.nn.MaxPool2d`. `[C, H, W]` → `[C, H', W']`, size rule as for
    /// convolutions with symmetric padding, plus `ceil_mode`'s rule.
    MaxPool2d(MaxPool2d),
    /// `torch.nn.AvgPool2d`. `[C, H, W]` → `[C, H', W']` (dilation 1).
    AvgPool2d(AvgPool2d),
    /// `torch.nn.AdaptiveAvgPool2d`. `[C, H, W]` → `[C, oh, ow]`.
    AdaptiveAvgPool2d(AdaptiveAvgPool2d),
    /// `torch.nn.BatchNorm2d` in inference mode. `[C, H, W]` → same.
    BatchNorm2d(BatchNorm2d),
    /// `torch.nn.Linear`. `[F]` → `[O]`; other ranks are an error. With a
    /// residual epilogue there is a second input (slot 1) of shape `[O]`.
    Linear(Linear),
    /// `torch.nn.Flatten()` (start_dim 1): any shape → `[product]`.
    Flatten,
    /// An element-wise activation. Any shape → same.
    Activation(Activation),
    /// `torch.nn.Softmax(dim)`. Any shape → same.
    Softmax(Softmax),
    /// Element-wise `a + b` (no broadcasting): two inputs of equal shape →
    /// that shape, optionally followed by an activation (fused by a pass).
    Add(Add),
    /// `torch.cat(inputs, dim)`: one or more inputs equal in every dimension
    /// but `dim` → the sizes along `dim` summed.
    Concat(Concat),
    /// `torch.nn.Dropout(p)`: the identity at inference. Any shape → same.
    Dropout(Dropout),
}

impl Op {
    /// The operator's name in the `.cnn` language (`conv2d`, `relu`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Conv2d(_) => "conv2d",
            Op::MaxPool2d(_) => "maxpool2d",
            Op::AvgPool2d(_) => "avgpool2d",
            Op::AdaptiveAvgPool2d(_) => "adaptive_avgpool2d",
            Op::BatchNorm2d(_) => "batchnorm2d",
            Op::Linear(_) => "linear",
            Op::Flatten => "flatten",
            Op::Activation(activation) => activation.name(),
            Op::Softmax(_) => "softmax",
            Op::Add(_) => "add",
            Op::Concat(_) => "concat",
            Op::Dropout(_) => "dropout",
        }
    }

    /// Whether the operator reads tensors from the weights file.
    pub fn has_weights(&self) -> bool {
        matches!(self, Op::Conv2d(_) | Op::BatchNorm2d(_) | Op::Linear(_))
    }

    /// The key parameters in the language's syntax, for tables and graphs:
    /// `conv2d(64, 3, stride=2, padding=1)`. Defaults are left out.
    pub fn summary(&self) -> String {
        fn pair(p: [usize; 2]) -> String {
            if p[0] == p[1] {
                p[0].to_string()
            } else {
                format!("({}, {})", p[0], p[1])
            }
        }
        let mut parts: Vec<String> = Vec::new();
        match self {
            Op::Input(_) => {}
            Op::Conv2d(conv) => {
                parts.push(conv.out_channels.to_string());
                parts.push(pair(conv.kernel_size));
                if conv.stride != [1, 1] {
                    parts.push(format!("stride={}", pair(conv.stride)));
                }
                let [top, left, bottom, right] = conv.padding;
                if top == bottom && left == right {
                    if conv.padding != [0; 4] {
                        parts.push(format!("padding={}", pair([top, left])));
                    }
                } else {
                    parts.push(format!("padding=({top}, {left}, {bottom}, {right})"));
                }
                if conv.dilation != [1, 1] {
                    parts.push(format!("dilation={}", pair(conv.dilation)));
                }
                if conv.groups != 1 {
                    parts.push(format!("groups={}", conv.groups));
                }
                if !conv.bias {
                    parts.push("bias=false".into());
                }
                if conv.flip_kernel {
                    parts.push("flip_kernel=true".into());
                }
            }
            Op::MaxPool2d(pool) => {
                parts.push(pair(pool.kernel_size));
                if pool.stride != pool.kernel_size {
                    parts.push(format!("stride={}", pair(pool.stride)));
                }
                if pool.padding != [0, 0] {
                    parts.push(format!("padding={}", pair(pool.padding)));
                }
                if pool.dilation != [1, 1] {
                    parts.push(format!("dilation={}", pair(pool.dilation)));
                }
                if pool.ceil_mode {
                    parts.push("ceil_mode=true".into());
                }
            }
            Op::AvgPool2d(pool) => {
                parts.push(pair(pool.kernel_size));
                if pool.stride != pool.kernel_size {
                    parts.push(format!("stride={}", pair(pool.stride)));
                }
                if pool.padding != [0, 0] {
                    parts.push(format!("padding={}", pair(pool.padding)));
                }
                if pool.ceil_mode {
                    parts.push("ceil_mode=true".into());
                }
                if !pool.count_include_pad {
                    parts.push("count_include_pad=false".into());
                }
            }
            Op::AdaptiveAvgPool2d(pool) => parts.push(pair(pool.output_size)),
            Op::BatchNorm2d(bn) => {
                if bn.eps != 1e-5 {
                    parts.push(format!("eps={:e}", bn.eps));
                }
            }
            Op::Linear(linear) => {
                parts.push(linear.out_features.to_string());
                if !linear.bias {
                    parts.push("bias=false".into());
                }
            }
            Op::Activation(Activation::LeakyRelu { negative_slope }) => {
                parts.push(format!("negative_slope={negative_slope}"));
            }
            Op::Softmax(softmax) => parts.push(format!("dim={}", softmax.dim)),
            Op::Concat(concat) => parts.push(format!("dim={}", concat.dim)),
            Op::Dropout(dropout) => parts.push(format!("p={}", dropout.p)),
            Op::Flatten | Op::Activation(_) | Op::Add(_) => {}
        }
        let mut text = self.name().to_string();
        if !parts.is_empty() {
            text.push('(');
            text.push_str(&parts.join(", "));
            text.push(')');
        }
        if let Some(epilogue) = self.epilogue() {
            text.push_str(&epilogue.summary());
        }
        text
    }

    /// The fused epilogue of a convolution or linear layer.
    pub fn epilogue(&self) -> Option<&Epilogue> {
        match self {
            Op::Conv2d(conv) => Some(&conv.epilogue),
            Op::Linear(linear) => Some(&linear.epilogue),
            Op::Add(add) => Some(&add.epilogue),
            _ => None,
        }
    }
}

/// The network input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The per-sample shape (every dimension at least 1).
    pub shape: Vec<usize>,
}

/// What a convolution or linear layer does after its main product, in the
/// register tile before the store: `y = activation(x + bias + residual)`.
///
/// **Invariant:** empty ([`Epilogue::default`]) after lowering; only the
/// optimizer's fusion passes fill it in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue {
    /// A per-channel bias vector produced by a pass (folded batch-norm) is
    /// added. The layer's own `.bias` tensor is not this (see the op's `bias`).
    pub bias: bool,
    /// A second input (slot 1), of the output's shape, is added before the
    /// activation (a fused residual `add`).
    pub residual: bool,
    /// The activation applied last ([`Activation::Identity`] for none).
    pub activation: Activation,
}

impl Default for Epilogue {
    fn default() -> Epilogue {
        Epilogue {
            bias: false,
            residual: false,
            activation: Activation::Identity,
        }
    }
}

impl Epilogue {
    /// Whether the epilogue does nothing.
    pub fn is_empty(&self) -> bool {
        *self == Epilogue::default()
    }

    /// ` + bias + residual -> relu`-style suffix for summaries; empty if empty.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        if self.bias {
            text.push_str(" + bias");
        }
        if self.residual {
            text.push_str(" + residual");
        }
        if self.activation != Activation::Identity {
            text.push_str(" -> ");
            text.push_str(self.activation.name());
        }
        text
    }
}

/// Where a layer's weights come from in the PyTorch `state_dict`.
///
/// After lowering this names the layer's own module. A batch-norm folding
/// pass records the folded batch-norm here, so the weights still load from
/// the original tensors (`bn1.running_var`) and are transformed on loading.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSource {
    /// The module of the layer itself (`layer1.0.conv1`): its `.weight` and,
    /// if the layer has a bias, `.bias` tensors.
    pub module: String,
    /// A batch-norm folded into this layer, if any.
    pub folded_batchnorm: Option<FoldedBatchNorm>,
}

impl WeightSource {
    /// The weights of the module `module` and nothing else.
    pub fn module(module: impl Into<String>) -> WeightSource {
        WeightSource {
            module: module.into(),
            folded_batchnorm: None,
        }
    }
}

/// A batch-norm whose affine transform was folded into a preceding layer.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBatchNorm {
    /// The batch-norm's module (`layer1.0.bn1`).
    pub module: String,
    /// Its `eps`.
    pub eps: f64,
}

/// `torch.nn.Conv2d` with every parameter resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// Output channels `O` (at least 1).
    pub out_channels: usize,
    /// The `in_channels` the user wrote, checked against the input by
    /// inference; `None` when left to inference.
    pub in_channels: Option<usize>,
    /// `[kh, kw]`, at least 1.
    pub kernel_size: [usize; 2],
    /// `[sh, sw]`, at least 1.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]` ("same" resolved: the odd
    /// extra row/column goes to the bottom/right).
    pub padding: [usize; 4],
    /// `[dh, dw]`, at least 1.
    pub dilation: [usize; 2],
    /// Groups (at least 1); must divide both channel counts.
    pub groups: usize,
    /// Whether the module has a `.bias` tensor (`bias=true`, the default).
    pub bias: bool,
    /// Rotate the kernel by 180° (textbook convolution) before use.
    pub flip_kernel: bool,
    /// Fused work after the convolution; empty after lowering.
    pub epilogue: Epilogue,
    /// The `state_dict` module(s) of the weights.
    pub weights: WeightSource,
}

/// `torch.nn.MaxPool2d` with every parameter resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// `[kh, kw]`, at least 1.
    pub kernel_size: [usize; 2],
    /// `[sh, sw]`, at least 1 (PyTorch default: the kernel size).
    pub stride: [usize; 2],
    /// `[ph, pw]`, applied on both sides, at most half the kernel size.
    pub padding: [usize; 2],
    /// `[dh, dw]`, at least 1.
    pub dilation: [usize; 2],
    /// Round output sizes up (dropping a last window that starts in the padding).
    pub ceil_mode: bool,
}

/// `torch.nn.AvgPool2d` with every parameter resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
    /// `[kh, kw]`, at least 1.
    pub kernel_size: [usize; 2],
    /// `[sh, sw]`, at least 1 (PyTorch default: the kernel size).
    pub stride: [usize; 2],
    /// `[ph, pw]`, zeros on both sides, at most half the kernel size.
    pub padding: [usize; 2],
    /// Round output sizes up (dropping a last window that starts in the padding).
    pub ceil_mode: bool,
    /// Divide by the window size including padding (`true`, PyTorch's default)
    /// or by the number of input elements in the window.
    pub count_include_pad: bool,
}

/// `torch.nn.AdaptiveAvgPool2d`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    /// `[oh, ow]`, at least 1.
    pub output_size: [usize; 2],
}

/// `torch.nn.BatchNorm2d` (inference: running statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2d {
    /// The `num_features` the user wrote, checked against the input's
    /// channels by inference; `None` when left to inference.
    pub num_features: Option<usize>,
    /// `eps`, default `1e-5`.
    pub eps: f64,
    /// The module whose `.weight`, `.bias`, `.running_mean`, `.running_var`
    /// are used.
    pub module: String,
}

/// `torch.nn.Linear` with every parameter resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Output features `O` (at least 1).
    pub out_features: usize,
    /// The `in_features` the user wrote, checked by inference.
    pub in_features: Option<usize>,
    /// Whether the module has a `.bias` tensor.
    pub bias: bool,
    /// Fused work after the product; empty after lowering.
    pub epilogue: Epilogue,
    /// The `state_dict` module(s) of the weights.
    pub weights: WeightSource,
}

/// `torch.nn.Softmax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// The dimension as written, counting the batch as dimension 0; negative
    /// values count from the end. [`crate::resolve_dim`] turns it into a
    /// per-sample axis.
    pub dim: i64,
}

/// Element-wise addition of two values (inputs in slots 0 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Add {
    /// Fused work after the addition (only `activation` is used); empty
    /// after lowering.
    pub epilogue: Epilogue,
}

/// Concatenation along one dimension (inputs in slots 0, 1, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    /// The dimension as written (batch = 0; negative counts from the end).
    pub dim: i64,
}

/// `torch.nn.Dropout` (inference: identity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// The drop probability, in `[0, 1]`; unused at inference.
    pub p: f64,
}
