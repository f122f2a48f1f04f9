//! The abstract syntax tree of a `.cnn` file.
//!
//! The AST is exactly what was written, with a byte [`Span`] on every node:
//! no name is resolved, no default filled, no argument checked against its
//! operator. `cnnc-ir` lowers it into a graph and reports those problems.

use crate::span::Span;

/// A dotted name as written (`conv1`, `layer1.0.conv1`), or an identifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    /// The text of the name.
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// The whole file: `network NAME { STATEMENT* }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// The network's name.
    pub name: Name,
    /// The statements in source order.
    pub statements: Vec<Statement>,
    /// The whole `network ... { ... }` block.
    pub span: Span,
}

/// One statement (one line, or several inside parentheses).
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// What kind of statement it is.
    pub kind: StatementKind,
    /// The whole statement.
    pub span: Span,
}

/// The four kinds of statements.
#[derive(Clone, Debug, PartialEq)]
pub enum StatementKind {
    /// `input NAME: [D1, D2, ...]`.
    Input(InputStmt),
    /// `weights "PATH"`.
    Weights(WeightsStmt),
    /// `[NAME =] OP[(ARGS)] [from NAME]`.
    Layer(Layer),
    /// `output VALUE`.
    Output(OutputStmt),
}

/// `input NAME: [D1, D2, ...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputStmt {
    /// The input's value name.
    pub name: Name,
    /// The per-sample dimensions as written (possibly zero or negative).
    pub dims: Vec<Dim>,
    /// The bracketed list.
    pub dims_span: Span,
}

/// One dimension of an `input` statement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dim {
    /// The value as written.
    pub value: i64,
    /// Where it is.
    pub span: Span,
}

/// `weights "PATH"`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsStmt {
    /// The path, escapes resolved.
    pub path: String,
    /// The string literal.
    pub span: Span,
}

/// `output VALUE`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputStmt {
    /// What follows `output` (a value name if the file is correct).
    pub value: Expr,
}

/// `[NAME =] OP[(ARGS)] [from NAME]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The name this layer defines, if any.
    pub name: Option<Name>,
    /// The operator name (`conv2d`).
    pub op: Name,
    /// The arguments in source order (positional and keyword mixed as written).
    pub args: Vec<Arg>,
    /// The parenthesized argument list, if there is one (`relu` has none).
    pub args_span: Option<Span>,
    /// The value after `from`, if any.
    pub from: Option<Name>,
}

/// One argument: `value` or `keyword=value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// The keyword, for keyword arguments.
    pub keyword: Option<Name>,
    /// The value.
    pub value: Expr,
    /// The whole argument, keyword included.
    pub span: Span,
}

/// A literal or a value name.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// The kinds of expressions.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer literal, `64` or `-1`.
    Int(i64),
    /// A float literal, `0.01` or `1e-5` (always finite).
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A string literal, escapes resolved.
    Str(String),
    /// A value name (`layer1.0.conv1`).
    Name(String),
    /// A parenthesized group, `(3, 5)`.
    Tuple(Vec<Expr>),
}

impl ExprKind {
    /// A short description for messages: "an integer", "a tuple", ...
    pub fn describe(&self) -> &'static str {
        match self {
            ExprKind::Int(_) => "an integer",
            ExprKind::Float(_) => "a float",
            ExprKind::Bool(_) => "a boolean",
            ExprKind::Str(_) => "a string",
            ExprKind::Name(_) => "a name",
            ExprKind::Tuple(_) => "a tuple",
        }
    }
}
