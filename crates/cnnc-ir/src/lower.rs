//! Lowering: the AST of one file → a [`Graph`].
//!
//! This resolves names (`from`, operands, `output`), binds arguments to the
//! operator table of [`crate::spec`] (positional, then keyword), checks their
//! types and ranges, and fills in PyTorch's defaults. It does not look at
//! shapes: that is [`crate::infer()`]'s job.
//!
//! Every problem is reported, not just the first: a layer that cannot be
//! lowered is replaced by a "poisoned" value, and statements that depend on
//! it are still checked without piling up follow-on errors.

use std::collections::HashMap;

use cnnc_kernels::Activation;
use cnnc_syntax::ast::{self, Expr, ExprKind, StatementKind};
use cnnc_syntax::{Diagnostic, Diagnostics, Label, Span};

use crate::graph::{Graph, Node, NodeId, Origin};
use crate::op::{
    AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Epilogue, Input,
    Linear, MaxPool2d, Op, Softmax, WeightSource,
};
use crate::spec::{self, OpSpec, Operands, ParamType};
use crate::suggest::did_you_mean;

/// The largest integer accepted for a size-like parameter (`kernel_size`,
/// `out_channels`, ...): `2^31 - 1`. Larger values are an error, so later
/// arithmetic on them cannot overflow.
pub const MAX_PARAM: i64 = i32::MAX as i64;

/// A lowered network with the warnings found on the way.
#[derive(Debug)]
pub struct Lowered {
    /// The graph.
    pub graph: Graph,
    /// Warnings (unused layers); never errors.
    pub warnings: Diagnostics,
}

/// Lowers a parsed network into a graph, or reports every problem found.
pub fn lower(network: &ast::Network) -> Result<Lowered, Diagnostics> {
    let mut lowerer = Lowerer::new(network);
    for statement in &network.statements {
        lowerer.statement(statement);
    }
    lowerer.finish(network)
}

/// The value a statement produced, as later statements see it.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// A node of the graph.
    Node(NodeId),
    /// A statement that failed to lower; uses of it report nothing more.
    Poisoned,
}

struct Definition {
    value: Value,
    span: Span,
}

struct Lowerer {
    diagnostics: Diagnostics,
    graph: Option<Graph>,
    values: HashMap<String, Definition>,
    /// First definition of every name in the file, to tell "used before its
    /// definition" from "undefined".
    all_names: HashMap<String, Span>,
    previous: Option<Value>,
    output: Option<(Value, Span)>,
    output_statement: Option<Span>,
    reported_after_output: bool,
    layers: usize,
    pending_weights: Option<(String, Span)>,
}

/// Arguments bound to an operator's parameters.
struct Bound<'a> {
    spec: &'static OpSpec,
    operands: Vec<(&'a str, Span)>,
    params: Vec<Option<&'a Expr>>,
}

impl Bound<'_> {
    fn get(&self, name: &str) -> Option<&Expr> {
        let (index, _) = self.spec.param(name)?;
        self.params.get(index).copied().flatten()
    }
}

impl Lowerer {
    fn new(network: &ast::Network) -> Lowerer {
        let mut all_names = HashMap::new();
        for statement in &network.statements {
            let name = match &statement.kind {
                StatementKind::Input(input) => Some(&input.name),
                StatementKind::Layer(layer) => layer.name.as_ref(),
                _ => None,
            };
            if let Some(name) = name {
                all_names.entry(name.text.clone()).or_insert(name.span);
            }
        }
        Lowerer {
            diagnostics: Diagnostics::new(),
            graph: None,
            values: HashMap::new(),
            all_names,
            previous: None,
            output: None,
            output_statement: None,
            reported_after_output: false,
            layers: 0,
            pending_weights: None,
        }
    }

    fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn statement(&mut self, statement: &ast::Statement) {
        if let Some(output_span) = self.output_statement {
            if !self.reported_after_output && !matches!(statement.kind, StatementKind::Output(_)) {
                self.reported_after_output = true;
                self.error(
                    Diagnostic::error("`output` must be the last statement")
                        .with_primary(Label::new(statement.span, "statement after `output`"))
                        .with_secondary(Label::new(output_span, "`output` is here")),
                );
            }
        }
        match &statement.kind {
            StatementKind::Input(input) => self.input(input, statement.span),
            StatementKind::Weights(weights) => self.weights(weights),
            StatementKind::Layer(layer) => self.layer(layer, statement.span),
            StatementKind::Output(output) => self.output(output, statement.span),
        }
    }

    fn input(&mut self, input: &ast::InputStmt, statement: Span) {
        if let Some(graph) = &self.graph {
            let first = graph[graph.input()].origin.statement;
            self.error(
                Diagnostic::error("a network has exactly one `input`")
                    .with_primary(Label::new(statement, "second `input`"))
                    .with_secondary(Label::new(first, "first `input` here")),
            );
            return;
        }
        if self.layers > 0 {
            self.error(
                Diagnostic::error("`input` must come before the layers")
                    .with_primary(Label::new(statement, "`input` after layers")),
            );
        }
        let mut shape = Vec::new();
        if input.dims.is_empty() {
            self.error(
                Diagnostic::error("the input needs at least one dimension")
                    .with_primary(Label::new(input.dims_span, "no dimensions"))
                    .with_help("shapes are per sample, e.g. `[3, 224, 224]` for an image"),
            );
        }
        for dim in &input.dims {
            if dim.value < 1 {
                self.error(
                    Diagnostic::error(format!("input dimension {} is not positive", dim.value))
                        .with_primary(Label::new(dim.span, "must be at least 1")),
                );
                shape.push(1);
            } else if dim.value > MAX_PARAM {
                self.error(
                    Diagnostic::error(format!("input dimension {} is too large", dim.value))
                        .with_primary(Label::new(dim.span, format!("at most {MAX_PARAM}"))),
                );
                shape.push(1);
            } else {
                shape.push(dim.value as usize);
            }
        }
        if shape.is_empty() {
            shape.push(1);
        }
        let node = Node {
            name: Some(input.name.text.clone()),
            op: Op::Input(Input { shape }),
            origin: Origin {
                statement,
                op: input.name.span,
                name: Some(input.name.span),
                args: Vec::new(),
                inputs: Vec::new(),
            },
        };
        let graph = Graph::new("", node);
        let id = graph.input();
        self.graph = Some(graph);
        self.define(&input.name, Value::Node(id));
        self.previous = Some(Value::Node(id));
    }

    fn weights(&mut self, weights: &ast::WeightsStmt) {
        // Kept aside and moved into the graph in `finish`, so `weights` may
        // come before or after `input`.
        self.pending_weights(weights);
    }

    fn pending_weights(&mut self, weights: &ast::WeightsStmt) {
        if let Some((_, first)) = &self.pending_weights {
            let first = *first;
            self.error(
                Diagnostic::error("`weights` is given twice")
                    .with_primary(Label::new(weights.span, "second `weights`"))
                    .with_secondary(Label::new(first, "first `weights` here")),
            );
            return;
        }
        self.pending_weights = Some((weights.path.clone(), weights.span));
    }

    fn define(&mut self, name: &ast::Name, value: Value) {
        if let Some(previous) = self.values.get(&name.text) {
            let first = previous.span;
            self.error(
                Diagnostic::error(format!(
                    "the name `{}` is defined more than once",
                    name.text
                ))
                .with_primary(Label::new(name.span, "defined again here"))
                .with_secondary(Label::new(first, "first defined here"))
                .with_help("names are unique: they are the module paths of the weights"),
            );
            return;
        }
        self.values.insert(
            name.text.clone(),
            Definition {
                value,
                span: name.span,
            },
        );
    }

    /// Resolves a reference to a value; `None` if it is undefined (reported)
    /// or poisoned (already reported).
    fn resolve(&mut self, name: &str, span: Span) -> Option<NodeId> {
        if let Some(definition) = self.values.get(name) {
            return match definition.value {
                Value::Node(node) => Some(node),
                Value::Poisoned => None,
            };
        }
        if let Some(&defined) = self.all_names.get(name) {
            if defined.start > span.start {
                self.error(
                    Diagnostic::error(format!("`{name}` is used before its definition"))
                        .with_primary(Label::new(span, "used here"))
                        .with_secondary(Label::new(defined, "defined later here"))
                        .with_help("a layer can only read values defined above it"),
                );
                return None;
            }
        }
        let mut diagnostic = Diagnostic::error(format!("cannot find value `{name}`"))
            .with_primary(Label::new(span, "not defined"));
        if spec::lookup(name).is_some() {
            diagnostic = diagnostic.with_help(format!(
                "`{name}` is an operator, not a value; name the layer (`x = {name}`) and refer to that name"
            ));
        } else if let Some(suggestion) = did_you_mean(name, self.values.keys().map(String::as_str))
        {
            diagnostic = diagnostic.with_help(format!("did you mean `{suggestion}`?"));
        }
        self.error(diagnostic);
        None
    }

    fn layer(&mut self, layer: &ast::Layer, statement: Span) {
        self.layers += 1;
        let errors_before = self.diagnostics.error_count();
        let value = self.lower_layer(layer, statement);
        if value.is_none() && self.diagnostics.error_count() == errors_before {
            // A layer is only dropped with an error: either its own or one
            // reported earlier for a value it reads (a poisoned input).
            let reads_poisoned = match &layer.from {
                Some(from) => matches!(
                    self.values.get(&from.text).map(|d| d.value),
                    Some(Value::Poisoned)
                ),
                None => matches!(self.previous, Some(Value::Poisoned) | None),
            };
            if !reads_poisoned || !self.diagnostics.has_errors() {
                self.error(
                    Diagnostic::error(format!(
                        "internal error: layer `{}` was dropped without a reason (this is a bug in cnnc)",
                        layer.op.text
                    ))
                    .with_primary(Label::new(layer.op.span, "")),
                );
            }
        }
        let value = value.map_or(Value::Poisoned, Value::Node);
        if let Some(name) = &layer.name {
            self.define(name, value);
        }
        self.previous = Some(value);
    }

    fn lower_layer(&mut self, layer: &ast::Layer, statement: Span) -> Option<NodeId> {
        let Some(spec) = spec::lookup(&layer.op.text) else {
            let mut diagnostic = Diagnostic::error(format!("unknown operator `{}`", layer.op.text))
                .with_primary(Label::new(layer.op.span, "unknown operator"));
            if let Some(suggestion) =
                did_you_mean(&layer.op.text, spec::OPS.iter().map(|spec| spec.name))
            {
                diagnostic = diagnostic.with_help(format!("did you mean `{suggestion}`?"));
            } else {
                let names: Vec<&str> = spec::OPS.iter().map(|s| s.name).collect();
                diagnostic =
                    diagnostic.with_note(format!("the operators are: {}", names.join(", ")));
            }
            self.error(diagnostic);
            // Still resolve `from` so an undefined name is reported too.
            if let Some(from) = &layer.from {
                self.resolve(&from.text, from.span);
            }
            return None;
        };
        if self.graph.is_none() {
            self.error(
                Diagnostic::error("a layer comes before the `input` statement")
                    .with_primary(Label::new(layer.op.span, "no input defined yet"))
                    .with_help("start the network with `input NAME: [C, H, W]`"),
            );
            return None;
        }
        let bound = self.bind(spec, layer)?;
        let mut origin = Origin {
            statement,
            op: layer.op.span,
            name: layer.name.as_ref().map(|n| n.span),
            args: Vec::new(),
            inputs: Vec::new(),
        };
        for (param, expr) in spec.params.iter().zip(&bound.params) {
            if let Some(expr) = expr {
                origin.args.push((param.name, expr.span));
            }
        }

        // The inputs.
        let mut inputs: Vec<Option<NodeId>> = Vec::new();
        let mut poisoned = false;
        if spec.operands == Operands::Implicit {
            match &layer.from {
                Some(from) => {
                    origin.inputs.push(from.span);
                    let node = self.resolve(&from.text, from.span);
                    poisoned |= node.is_none();
                    inputs.push(node);
                }
                None => {
                    origin.inputs.push(layer.op.span);
                    match self.previous {
                        Some(Value::Node(node)) => inputs.push(Some(node)),
                        _ => poisoned = true,
                    }
                }
            }
        } else {
            if let Some(from) = &layer.from {
                self.error(
                    Diagnostic::error(format!(
                        "`{}` takes its inputs as arguments, not with `from`",
                        spec.name
                    ))
                    .with_primary(Label::new(from.span, "`from` is not allowed here"))
                    .with_help(format!("write `{}`", spec.signature())),
                );
                poisoned = true;
            }
            for &(name, span) in &bound.operands {
                origin.inputs.push(span);
                let node = self.resolve(name, span);
                poisoned |= node.is_none();
                inputs.push(node);
            }
        }

        let module = layer.name.as_ref().map(|name| name.text.clone());
        let op = self.build_op(spec, &bound, layer, module)?;
        if poisoned {
            return None;
        }
        let graph = self.graph.as_mut()?;
        let node = graph.add_node(Node {
            name: layer.name.as_ref().map(|n| n.text.clone()),
            op,
            origin,
        });
        for (slot, input) in inputs.into_iter().enumerate() {
            if let Some(input) = input {
                graph.connect(input, node, slot);
            }
        }
        Some(node)
    }

    /// Binds a layer's arguments to its operator's parameters.
    fn bind<'a>(&mut self, spec: &'static OpSpec, layer: &'a ast::Layer) -> Option<Bound<'a>> {
        let mut bound = Bound {
            spec,
            operands: Vec::new(),
            params: vec![None; spec.params.len()],
        };
        let mut ok = true;
        let mut args = layer.args.iter().peekable();
        if spec.operands != Operands::Implicit {
            while let Some(arg) = args
                .next_if(|arg| arg.keyword.is_none() && matches!(arg.value.kind, ExprKind::Name(_)))
            {
                if let ExprKind::Name(text) = &arg.value.kind {
                    bound.operands.push((text.as_str(), arg.value.span));
                }
            }
            let count = bound.operands.len();
            let wrong = match spec.operands {
                Operands::Two => count != 2,
                _ => count == 0,
            };
            if wrong {
                let wanted = if spec.operands == Operands::Two {
                    "two value names"
                } else {
                    "at least one value name"
                };
                let span = layer.args_span.unwrap_or(layer.op.span);
                self.error(
                    Diagnostic::error(format!(
                        "`{}` takes {wanted} as its first arguments, found {count}",
                        spec.name
                    ))
                    .with_primary(Label::new(span, format!("expected {wanted}")))
                    .with_help(format!("write `{}`", spec.signature())),
                );
                ok = false;
            }
        }
        let mut positional = 0usize;
        let mut keyword_seen: Option<Span> = None;
        let mut reported_too_many = false;
        let mut arg_spans: Vec<Option<Span>> = vec![None; spec.params.len()];
        for arg in args {
            let index = match &arg.keyword {
                None => {
                    if let Some(keyword_span) = keyword_seen {
                        self.error(
                            Diagnostic::error("positional argument after a keyword argument")
                                .with_primary(Label::new(arg.span, "positional argument"))
                                .with_secondary(Label::new(keyword_span, "keyword argument here"))
                                .with_help("write positional arguments first, or name this one"),
                        );
                        ok = false;
                        continue;
                    }
                    if positional >= spec.params.len() {
                        if !reported_too_many {
                            reported_too_many = true;
                            let message = if spec.params.is_empty()
                                && spec.operands == Operands::Implicit
                            {
                                format!("`{}` takes no arguments", spec.name)
                            } else {
                                format!(
                                    "too many arguments for `{}`: it takes at most {} positional argument{}",
                                    spec.name,
                                    spec.params.len(),
                                    if spec.params.len() == 1 { "" } else { "s" }
                                )
                            };
                            let mut diagnostic = Diagnostic::error(message)
                                .with_primary(Label::new(arg.span, "unexpected argument"));
                            if spec.operands != Operands::Implicit
                                && !matches!(arg.value.kind, ExprKind::Name(_))
                            {
                                diagnostic =
                                    diagnostic.with_help(format!("write `{}`", spec.signature()));
                            } else if spec.operands != Operands::Implicit {
                                diagnostic = diagnostic
                                    .with_help("value names come first, before any other argument");
                            } else {
                                diagnostic =
                                    diagnostic.with_help(format!("write `{}`", spec.signature()));
                            }
                            self.error(diagnostic);
                        }
                        ok = false;
                        continue;
                    }
                    positional += 1;
                    positional - 1
                }
                Some(keyword) => {
                    keyword_seen.get_or_insert(keyword.span);
                    match spec.param(&keyword.text) {
                        Some((index, _)) => index,
                        None => {
                            let mut diagnostic = Diagnostic::error(format!(
                                "`{}` has no parameter `{}`",
                                spec.name, keyword.text
                            ))
                            .with_primary(Label::new(keyword.span, "unknown parameter"));
                            if let Some(suggestion) =
                                did_you_mean(&keyword.text, spec.params.iter().map(|p| p.name))
                            {
                                diagnostic =
                                    diagnostic.with_help(format!("did you mean `{suggestion}`?"));
                            } else if spec.params.is_empty() {
                                diagnostic = diagnostic
                                    .with_note(format!("`{}` has no parameters", spec.name));
                            } else {
                                let names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
                                diagnostic = diagnostic.with_note(format!(
                                    "the parameters of `{}` are: {}",
                                    spec.name,
                                    names.join(", ")
                                ));
                            }
                            self.error(diagnostic);
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            let span = arg.keyword.as_ref().map_or(arg.span, |k| k.span);
            if let Some(first) = arg_spans[index] {
                self.error(
                    Diagnostic::error(format!(
                        "parameter `{}` is given more than once",
                        spec.params[index].name
                    ))
                    .with_primary(Label::new(span, "given again here"))
                    .with_secondary(Label::new(first, "first given here")),
                );
                ok = false;
                continue;
            }
            arg_spans[index] = Some(span);
            bound.params[index] = Some(&arg.value);
        }
        for (param, value) in spec.params.iter().zip(&bound.params) {
            if param.required && value.is_none() && ok {
                self.error(
                    Diagnostic::error(format!(
                        "missing parameter `{}` of `{}`",
                        param.name, spec.name
                    ))
                    .with_primary(Label::new(
                        layer.args_span.unwrap_or(layer.op.span),
                        format!("`{}` is required", param.name),
                    ))
                    .with_help(format!("write `{}`", spec.signature())),
                );
                ok = false;
            }
        }
        ok.then_some(bound)
    }

    fn build_op(
        &mut self,
        spec: &OpSpec,
        bound: &Bound<'_>,
        layer: &ast::Layer,
        module: Option<String>,
    ) -> Option<Op> {
        let mut ok = true;
        // Each accessor reports its own error; `ok` collects them so every
        // bad argument of the layer is reported.
        macro_rules! take {
            ($expr:expr) => {
                match $expr {
                    Some(value) => value,
                    None => {
                        ok = false;
                        Default::default()
                    }
                }
            };
        }
        let op = match spec.name {
            "conv2d" => {
                let out_channels = take!(self.count(bound, "out_channels", None));
                let kernel_size = take!(self.pair(bound, "kernel_size", 1, None));
                let stride = take!(self.pair(bound, "stride", 1, Some([1, 1])));
                let dilation = take!(self.pair(bound, "dilation", 1, Some([1, 1])));
                let groups = take!(self.count(bound, "groups", Some(1)));
                let bias = take!(self.boolean(bound, "bias", true));
                let in_channels = take!(self.optional_count(bound, "in_channels"));
                let flip_kernel = take!(self.boolean(bound, "flip_kernel", false));
                let padding = take!(self.conv_padding(bound, kernel_size, stride, dilation));
                Op::Conv2d(Conv2d {
                    out_channels,
                    in_channels,
                    kernel_size,
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                    flip_kernel,
                    epilogue: Epilogue::default(),
                    weights: WeightSource::module(module.clone().unwrap_or_default()),
                })
            }
            "maxpool2d" => {
                let kernel_size = take!(self.pair(bound, "kernel_size", 1, None));
                let stride = take!(self.pair(bound, "stride", 1, Some(kernel_size)));
                let padding = take!(self.pair(bound, "padding", 0, Some([0, 0])));
                let dilation = take!(self.pair(bound, "dilation", 1, Some([1, 1])));
                let ceil_mode = take!(self.boolean(bound, "ceil_mode", false));
                Op::MaxPool2d(MaxPool2d {
                    kernel_size,
                    stride,
                    padding,
                    dilation,
                    ceil_mode,
                })
            }
            "avgpool2d" => {
                let kernel_size = take!(self.pair(bound, "kernel_size", 1, None));
                let stride = take!(self.pair(bound, "stride", 1, Some(kernel_size)));
                let padding = take!(self.pair(bound, "padding", 0, Some([0, 0])));
                let ceil_mode = take!(self.boolean(bound, "ceil_mode", false));
                let count_include_pad = take!(self.boolean(bound, "count_include_pad", true));
                Op::AvgPool2d(AvgPool2d {
                    kernel_size,
                    stride,
                    padding,
                    ceil_mode,
                    count_include_pad,
                })
            }
            "adaptive_avgpool2d" => {
                let output_size = take!(self.pair(bound, "output_size", 1, None));
                Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output_size })
            }
            "batchnorm2d" => {
                let eps = take!(self.float(bound, "eps", 1e-5, 0.0, f64::INFINITY));
                let num_features = take!(self.optional_count(bound, "num_features"));
                Op::BatchNorm2d(BatchNorm2d {
                    num_features,
                    eps,
                    module: module.clone().unwrap_or_default(),
                })
            }
            "linear" => {
                let out_features = take!(self.count(bound, "out_features", None));
                let bias = take!(self.boolean(bound, "bias", true));
                let in_features = take!(self.optional_count(bound, "in_features"));
                Op::Linear(Linear {
                    out_features,
                    in_features,
                    bias,
                    epilogue: Epilogue::default(),
                    weights: WeightSource::module(module.clone().unwrap_or_default()),
                })
            }
            "flatten" => Op::Flatten,
            "relu" => Op::Activation(Activation::Relu),
            "relu6" => Op::Activation(Activation::Relu6),
            "sigmoid" => Op::Activation(Activation::Sigmoid),
            "tanh" => Op::Activation(Activation::Tanh),
            "hardswish" => Op::Activation(Activation::Hardswish),
            "leaky_relu" => {
                let slope = take!(self.float(
                    bound,
                    "negative_slope",
                    0.01,
                    f64::NEG_INFINITY,
                    f64::INFINITY
                ));
                Op::Activation(Activation::LeakyRelu {
                    negative_slope: slope as f32,
                })
            }
            "softmax" => Op::Softmax(Softmax {
                dim: take!(self.dim(bound)),
            }),
            "add" => Op::Add(Add::default()),
            "concat" => Op::Concat(Concat {
                dim: take!(self.dim(bound)),
            }),
            "dropout" => Op::Dropout(Dropout {
                p: take!(self.float(bound, "p", 0.5, 0.0, 1.0)),
            }),
            other => {
                self.error(
                    Diagnostic::error(format!(
                        "internal error: operator `{other}` has no lowering (this is a bug in cnnc)"
                    ))
                    .with_primary(Label::new(layer.op.span, "")),
                );
                return None;
            }
        };
        if !ok {
            return None;
        }
        if op.has_weights() && module.is_none() {
            self.error(
                Diagnostic::error(format!(
                    "a `{}` layer has weights, so it needs a name",
                    spec.name
                ))
                .with_primary(Label::new(layer.op.span, "anonymous layer with weights"))
                .with_help({
                    let example = match spec.name {
                        "linear" => "fc1",
                        "batchnorm2d" => "bn1",
                        _ => "conv1",
                    };
                    format!(
                        "name it after its PyTorch module, e.g. `{example} = {} ...`: its tensors are `{example}.weight`, ...",
                        spec.name
                    )
                }),
            );
            return None;
        }
        Some(op)
    }

    // ------------------------------------------------------ typed arguments

    fn type_error(&mut self, param: &str, ty: ParamType, expr: &Expr) {
        let found = describe_value(expr);
        self.error(
            Diagnostic::error(format!(
                "`{param}` expects {}, found {found}",
                ty.describe()
            ))
            .with_primary(Label::new(expr.span, format!("expected {}", ty.describe()))),
        );
    }

    fn int_in_range(&mut self, param: &str, ty: ParamType, expr: &Expr, min: i64) -> Option<usize> {
        let ExprKind::Int(value) = expr.kind else {
            self.type_error(param, ty, expr);
            return None;
        };
        if value < min {
            self.error(
                Diagnostic::error(format!("`{param}` must be at least {min}, found {value}"))
                    .with_primary(Label::new(expr.span, format!("must be at least {min}"))),
            );
            return None;
        }
        if value > MAX_PARAM {
            self.error(
                Diagnostic::error(format!("`{param}` is too large: {value}"))
                    .with_primary(Label::new(expr.span, format!("at most {MAX_PARAM}"))),
            );
            return None;
        }
        Some(value as usize)
    }

    fn count(&mut self, bound: &Bound<'_>, param: &str, default: Option<usize>) -> Option<usize> {
        match bound.get(param) {
            Some(expr) => self.int_in_range(param, ParamType::Count, expr, 1),
            None => default,
        }
    }

    fn optional_count(&mut self, bound: &Bound<'_>, param: &str) -> Option<Option<usize>> {
        match bound.get(param) {
            Some(expr) => self
                .int_in_range(param, ParamType::Count, expr, 1)
                .map(Some),
            None => Some(None),
        }
    }

    fn pair(
        &mut self,
        bound: &Bound<'_>,
        param: &str,
        min: i64,
        default: Option<[usize; 2]>,
    ) -> Option<[usize; 2]> {
        let ty = if min == 0 {
            ParamType::PaddingPair
        } else {
            ParamType::Pair
        };
        let Some(expr) = bound.get(param) else {
            return default;
        };
        self.pair_expr(param, ty, expr, min)
    }

    fn pair_expr(
        &mut self,
        param: &str,
        ty: ParamType,
        expr: &Expr,
        min: i64,
    ) -> Option<[usize; 2]> {
        match &expr.kind {
            ExprKind::Int(_) => {
                let value = self.int_in_range(param, ty, expr, min)?;
                Some([value, value])
            }
            ExprKind::Tuple(items) if items.len() == 2 => {
                let h = self.int_in_range(param, ty, &items[0], min);
                let w = self.int_in_range(param, ty, &items[1], min);
                Some([h?, w?])
            }
            _ => {
                self.type_error(param, ty, expr);
                None
            }
        }
    }

    fn boolean(&mut self, bound: &Bound<'_>, param: &str, default: bool) -> Option<bool> {
        match bound.get(param) {
            None => Some(default),
            Some(Expr {
                kind: ExprKind::Bool(value),
                ..
            }) => Some(*value),
            Some(expr) => {
                self.type_error(param, ParamType::Bool, expr);
                None
            }
        }
    }

    fn float(
        &mut self,
        bound: &Bound<'_>,
        param: &str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Option<f64> {
        let Some(expr) = bound.get(param) else {
            return Some(default);
        };
        let value = match expr.kind {
            ExprKind::Float(value) => value,
            ExprKind::Int(value) => value as f64,
            _ => {
                self.type_error(param, ParamType::Float, expr);
                return None;
            }
        };
        if value < min || value > max {
            let range = if max.is_finite() {
                format!("between {min} and {max}")
            } else {
                format!("at least {min}")
            };
            self.error(
                Diagnostic::error(format!("`{param}` must be {range}, found {value}"))
                    .with_primary(Label::new(expr.span, format!("must be {range}"))),
            );
            return None;
        }
        Some(value)
    }

    fn dim(&mut self, bound: &Bound<'_>) -> Option<i64> {
        match bound.get("dim") {
            None => Some(1),
            Some(Expr {
                kind: ExprKind::Int(value),
                ..
            }) => Some(*value),
            Some(expr) => {
                self.type_error("dim", ParamType::Dim, expr);
                None
            }
        }
    }

    /// Convolution padding resolved to `[top, left, bottom, right]`.
    fn conv_padding(
        &mut self,
        bound: &Bound<'_>,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Option<[usize; 4]> {
        let Some(expr) = bound.get("padding") else {
            return Some([0; 4]);
        };
        match &expr.kind {
            ExprKind::Str(mode) if mode == "valid" => Some([0; 4]),
            ExprKind::Str(mode) if mode == "same" => {
                if stride != [1, 1] {
                    let mut diagnostic =
                        Diagnostic::error("padding=\"same\" needs stride 1 (as in PyTorch)")
                            .with_primary(Label::new(expr.span, "\"same\" padding"));
                    if let Some(stride_expr) = bound.get("stride") {
                        diagnostic = diagnostic
                            .with_secondary(Label::new(stride_expr.span, "stride is not 1"));
                    }
                    self.error(diagnostic.with_help(
                        "give the padding explicitly, e.g. `padding=1` for a 3x3 kernel",
                    ));
                    return None;
                }
                // Total padding d*(k-1); the odd extra goes bottom/right.
                let total = match (
                    dilation[0].checked_mul(kernel[0].saturating_sub(1)),
                    dilation[1].checked_mul(kernel[1].saturating_sub(1)),
                ) {
                    (Some(h), Some(w)) => [h, w],
                    _ => {
                        self.error(
                            Diagnostic::error("\"same\" padding is too large for this kernel")
                                .with_primary(Label::new(expr.span, "too large")),
                        );
                        return None;
                    }
                };
                Some([
                    total[0] / 2,
                    total[1] / 2,
                    total[0] - total[0] / 2,
                    total[1] - total[1] / 2,
                ])
            }
            ExprKind::Str(mode) => {
                self.error(
                    Diagnostic::error(format!(
                        "unknown padding mode \"{mode}\": expected \"same\" or \"valid\""
                    ))
                    .with_primary(Label::new(expr.span, "unknown padding mode")),
                );
                None
            }
            _ => {
                let [h, w] = self.pair_expr("padding", ParamType::ConvPadding, expr, 0)?;
                Some([h, w, h, w])
            }
        }
    }

    fn output(&mut self, output: &ast::OutputStmt, statement: Span) {
        if let Some(first) = self.output_statement {
            self.error(
                Diagnostic::error("`output` is given more than once")
                    .with_primary(Label::new(statement, "second `output`"))
                    .with_secondary(Label::new(first, "first `output` here")),
            );
            return;
        }
        self.output_statement = Some(statement);
        let ExprKind::Name(name) = &output.value.kind else {
            self.error(
                Diagnostic::error(format!(
                    "`output` needs a value name, found {}",
                    describe_value(&output.value)
                ))
                .with_primary(Label::new(output.value.span, "not a value"))
                .with_help("write the name of a layer or of the input, e.g. `output fc3`"),
            );
            self.output = Some((Value::Poisoned, output.value.span));
            return;
        };
        let value = match self.resolve(name, output.value.span) {
            Some(node) => Value::Node(node),
            None => Value::Poisoned,
        };
        self.output = Some((value, output.value.span));
    }

    fn finish(mut self, network: &ast::Network) -> Result<Lowered, Diagnostics> {
        let pending = self.pending_weights.take();
        let Some(mut graph) = self.graph.take() else {
            self.error(
                Diagnostic::error("this network has no `input` statement")
                    .with_primary(Label::new(network.name.span, "no input"))
                    .with_help("declare the per-sample input shape: `input x: [3, 224, 224]`"),
            );
            self.diagnostics.sort_by_position();
            return Err(self.diagnostics);
        };
        if self.layers == 0 {
            self.error(
                Diagnostic::error("this network has no layers")
                    .with_primary(Label::new(network.name.span, "no layers")),
            );
        }
        if let Some((path, span)) = pending {
            graph.set_weights_path(path, span);
        }
        let output = match self.output {
            Some((Value::Node(node), _)) => Some(node),
            Some((Value::Poisoned, _)) => None,
            None => match self.previous {
                Some(Value::Node(node)) => Some(node),
                _ => None,
            },
        };
        if self.diagnostics.has_errors() {
            self.diagnostics.sort_by_position();
            return Err(self.diagnostics);
        }
        let Some(output) = output else {
            self.error(
                Diagnostic::error("internal error: no output value (this is a bug in cnnc)")
                    .with_primary(Label::new(network.name.span, "")),
            );
            return Err(self.diagnostics);
        };
        graph.set_output(output);
        graph.set_name(&network.name.text);
        let mut warnings = Diagnostics::new();
        for node in graph.node_ids() {
            if node == graph.output() || node == graph.input() || !graph.users(node).is_empty() {
                continue;
            }
            let origin = &graph[node].origin;
            let diagnostic = match &graph[node].name {
                Some(name) => Diagnostic::warning(format!("the value `{name}` is never used"))
                    .with_primary(Label::new(origin.name.unwrap_or(origin.op), "never used")),
                None => Diagnostic::warning(format!(
                    "the result of this `{}` is never used",
                    graph[node].op.name()
                ))
                .with_primary(Label::new(origin.op, "result dropped"))
                .with_help(
                    "an anonymous layer feeds only the next statement; name it to use it elsewhere",
                ),
            };
            warnings.push(diagnostic);
        }
        Ok(Lowered { graph, warnings })
    }
}

/// "an integer", "a tuple of 3", "the name `x`", for type errors.
fn describe_value(expr: &Expr) -> String {
    match &expr.kind {
        ExprKind::Tuple(items) => format!("a tuple of {}", items.len()),
        ExprKind::Name(name) => format!("the name `{name}`"),
        ExprKind::Str(text) => format!("the string \"{text}\""),
        other => other.describe().to_string(),
    }
}
