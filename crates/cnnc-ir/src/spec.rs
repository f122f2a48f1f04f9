//! The operator table: every operator's parameters in PyTorch order, with
//! their types and whether they are required. Lowering binds arguments
//! against it; `docs/LANGUAGE.md` documents the same table.

/// How an operator takes its input values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// The previous statement's result, or `from NAME`.
    Implicit,
    /// Exactly two leading value names (`add(a, b)`).
    Two,
    /// One or more leading value names (`concat(a, b, c, dim=1)`).
    OneOrMore,
}

/// The type a parameter accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// An integer, at least 1.
    Count,
    /// An integer or an `(h, w)` pair, each at least 1.
    Pair,
    /// An integer or an `(h, w)` pair, each at least 0.
    PaddingPair,
    /// Convolution padding: like `PaddingPair`, or `"same"` or `"valid"`.
    ConvPadding,
    /// `true` or `false`.
    Bool,
    /// A number (an integer is accepted).
    Float,
    /// A dimension index (may be negative).
    Dim,
}

impl ParamType {
    /// What the parameter expects, in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ParamType::Count => "a positive integer",
            ParamType::Pair => "a positive integer or a pair `(h, w)`",
            ParamType::PaddingPair => "a non-negative integer or a pair `(h, w)`",
            ParamType::ConvPadding => {
                "a non-negative integer, a pair `(h, w)`, \"same\" or \"valid\""
            }
            ParamType::Bool => "a boolean (`true` or `false`)",
            ParamType::Float => "a number",
            ParamType::Dim => "an integer dimension",
        }
    }
}

/// One parameter of an operator.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// Its name, as a keyword argument.
    pub name: &'static str,
    /// Its type.
    pub ty: ParamType,
    /// Whether it has no default.
    pub required: bool,
}

/// One operator of the language.
#[derive(Clone, Copy, Debug)]
pub struct OpSpec {
    /// Its name (`conv2d`).
    pub name: &'static str,
    /// How it takes its inputs.
    pub operands: Operands,
    /// Its parameters in positional order.
    pub params: &'static [ParamSpec],
}

impl OpSpec {
    /// The parameter named `name`.
    pub fn param(&self, name: &str) -> Option<(usize, &ParamSpec)> {
        self.params.iter().enumerate().find(|(_, p)| p.name == name)
    }

    /// The call signature for help messages: `conv2d(out_channels, kernel_size, stride=1, ...)`.
    pub fn signature(&self) -> String {
        if self.params.is_empty() && self.operands == Operands::Implicit {
            return self.name.to_string();
        }
        let mut parts: Vec<String> = Vec::new();
        match self.operands {
            Operands::Implicit => {}
            Operands::Two => parts.push("a, b".into()),
            Operands::OneOrMore => parts.push("a, b, ...".into()),
        }
        for param in self.params {
            if param.required {
                parts.push(param.name.to_string());
            } else {
                parts.push(format!("{}=...", param.name));
            }
        }
        format!("{}({})", self.name, parts.join(", "))
    }
}

const fn req(name: &'static str, ty: ParamType) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: ParamType) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        required: false,
    }
}

const fn op(name: &'static str, params: &'static [ParamSpec]) -> OpSpec {
    OpSpec {
        name,
        operands: Operands::Implicit,
        params,
    }
}

use ParamType::*;

/// Every operator of the language.
pub const OPS: &[OpSpec] = &[
    op(
        "conv2d",
        &[
            req("out_channels", Count),
            req("kernel_size", Pair),
            opt("stride", Pair),
            opt("padding", ConvPadding),
            opt("dilation", Pair),
            opt("groups", Count),
            opt("bias", Bool),
            opt("in_channels", Count),
            opt("flip_kernel", Bool),
        ],
    ),
    op(
        "maxpool2d",
        &[
            req("kernel_size", Pair),
            opt("stride", Pair),
            opt("padding", PaddingPair),
            opt("dilation", Pair),
            opt("ceil_mode", Bool),
        ],
    ),
    op(
        "avgpool2d",
        &[
            req("kernel_size", Pair),
            opt("stride", Pair),
            opt("padding", PaddingPair),
            opt("ceil_mode", Bool),
            opt("count_include_pad", Bool),
        ],
    ),
    op("adaptive_avgpool2d", &[req("output_size", Pair)]),
    op(
        "batchnorm2d",
        &[opt("num_features", Count), opt("eps", Float)],
    ),
    op(
        "linear",
        &[
            req("out_features", Count),
            opt("bias", Bool),
            opt("in_features", Count),
        ],
    ),
    op("flatten", &[]),
    op("relu", &[]),
    op("relu6", &[]),
    op("sigmoid", &[]),
    op("tanh", &[]),
    op("hardswish", &[]),
    op("leaky_relu", &[opt("negative_slope", Float)]),
    op("softmax", &[opt("dim", Dim)]),
    OpSpec {
        name: "add",
        operands: Operands::Two,
        params: &[],
    },
    OpSpec {
        name: "concat",
        operands: Operands::OneOrMore,
        params: &[opt("dim", Dim)],
    },
    op("dropout", &[opt("p", Float)]),
];

/// The operator named `name`.
pub fn lookup(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|spec| spec.name == name)
}
