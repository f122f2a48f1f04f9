//! The pest parser, the walk from pest's pairs to the AST, and the
//! conversion of pest's errors into [`Diagnostic`]s.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

use crate::ast::{
    Arg, Dim, Expr, ExprKind, InputStmt, Layer, Name, Network, OutputStmt, Statement,
    StatementKind, WeightsStmt,
};
use crate::diagnostic::{Diagnostic, Diagnostics, Label};
use crate::source::SourceFile;
use crate::span::Span;

/// The largest source file accepted, in bytes. Real networks are a few KiB;
/// the limit keeps a stray multi-gigabyte file from exhausting memory.
pub const MAX_SOURCE_LEN: usize = 4 << 20;

/// The deepest nesting of `(` and `[` accepted. The grammar is recursive in
/// tuples, so this bounds the parser's stack use.
pub const MAX_NESTING: usize = 32;

pub use grammar::{CnnParser, Rule};

mod grammar {
    // pest_derive generates undocumented items (one `Rule` variant per rule);
    // the rules are documented in the grammar file itself.
    #![allow(missing_docs)]

    /// The derived pest parser over `grammar/cnn.pest`. `Rule` has one
    /// variant per grammar rule.
    #[derive(pest_derive::Parser)]
    #[grammar = "../../grammar/cnn.pest"]
    pub struct CnnParser;
}

/// Parses a `.cnn` file into its AST, reporting every syntax error found.
///
/// Invalid UTF-8, an oversized file and too deep nesting are reported before
/// the grammar runs. A line that is not a valid statement does not stop the
/// parse: each bad line gets its own error.
///
/// ```
/// use cnnc_syntax::{parse, SourceFile};
///
/// let file = SourceFile::new("n.cnn", "network n {\n  input x: [4]\n  relu\n}\n");
/// let network = parse(&file)?;
/// assert_eq!(network.name.text, "n");
/// assert_eq!(network.statements.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse(file: &SourceFile) -> Result<Network, Diagnostics> {
    // The size first: a reader that stops after `MAX_SOURCE_LEN + 1` bytes
    // may cut a character in two, and "too large" is the real problem then.
    let text = file.text();
    check_limits(text)?;
    if let Some(error) = file.encoding_error() {
        return Err(error.into());
    }
    if is_blank(text) {
        return Err(
            Diagnostic::error("this file is empty: it defines no network")
                .with_primary(Label::new(
                    Span::point(0),
                    "expected `network NAME { ... }`",
                ))
                .with_help("a `.cnn` file holds one `network NAME { ... }` block")
                .into(),
        );
    }
    pest::set_error_detail(true);
    let mut pairs = match CnnParser::parse(Rule::file, text) {
        Ok(pairs) => pairs,
        Err(error) => return Err(syntax_error(&error, text, 0).into()),
    };
    let mut diagnostics = Diagnostics::new();
    let network = match pairs.next().and_then(|file| file.into_inner().next()) {
        Some(network) => network,
        None => return Err(internal(Span::point(0)).into()),
    };
    let network = walk_network(network, text, &mut diagnostics);
    if diagnostics.has_errors() {
        diagnostics.sort_by_position();
        return Err(diagnostics);
    }
    network.ok_or_else(|| internal(Span::point(0)).into())
}

/// Rejects files the grammar must not see: too large or too deeply nested.
fn check_limits(text: &str) -> Result<(), Diagnostics> {
    if text.len() > MAX_SOURCE_LEN {
        return Err(Diagnostic::error(format!(
            "this file is too large ({} bytes; the limit is {MAX_SOURCE_LEN})",
            text.len()
        ))
        .into());
    }
    let mut depth = 0usize;
    let mut chars = text.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        match c {
            '#' => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
            '"' => {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' | '\n' => break,
                        _ => {}
                    }
                }
            }
            '(' | '[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::error(format!(
                        "brackets are nested too deeply (more than {MAX_NESTING} levels)"
                    ))
                    .with_primary(Label::new(Span::new(offset, offset + 1), "too deep"))
                    .into());
                }
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Whether the text holds nothing but whitespace and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim_start_matches([' ', '\t', '\r', '\u{feff}']);
        line.is_empty() || line.starts_with('#')
    })
}

fn internal(span: Span) -> Diagnostic {
    Diagnostic::error("internal error: unexpected parse tree (this is a bug in cnnc)")
        .with_primary(Label::new(span, ""))
}

/// Converts a pest error (from parsing `text[offset..]`) into a diagnostic
/// that names what was expected in words rather than grammar rule names.
fn syntax_error(error: &pest::error::Error<Rule>, text: &str, offset: usize) -> Diagnostic {
    let rule_position = match error.location {
        InputLocation::Pos(position) => position,
        InputLocation::Span((start, _)) => start,
    };
    let mut expected: Vec<String> = Vec::new();
    let mut push = |word: &str| {
        if !expected.iter().any(|w| w == word) {
            expected.push(word.to_string());
        }
    };
    // With error detail on, pest also records the literal tokens tried at
    // the farthest position, which may lie past the last rule attempted
    // (a missing `,` after an argument). Prefer those: they are precise.
    let attempts = error
        .parse_attempts()
        .filter(|attempts| attempts.max_position >= rule_position)
        .map(|attempts| (attempts.max_position, attempts.expected_tokens()));
    let position = match &attempts {
        Some((position, tokens)) if !tokens.is_empty() => {
            // Tokens display as their literal text, character ranges as
            // `a..z`, built-in rules in capitals.
            let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
            let has = |t: &str| tokens.iter().any(|x| x == t);
            let value_context = has("\"");
            let closing = has(")") || has("]");
            for token in &tokens {
                match token.as_str() {
                    "\n" | "\r\n" | "\r" if !closing => push("a line break"),
                    "\n" | "\r\n" | "\r" => {}
                    "\"" | "-" | "true" | "false" | "(" | "_" if value_context => push("a value"),
                    "_" => push("a name"),
                    "e" | "E" | "+" | "-" | "." | "#" | "\u{FEFF}" | " " | "\t" | "\\" => {}
                    "true" | "false" => push("`true` or `false`"),
                    range if range.contains("..") => {
                        if value_context {
                            push("a value");
                        } else if range.starts_with(|c: char| c.is_ascii_digit()) {
                            push("a number");
                        } else {
                            push("a name");
                        }
                    }
                    "BUILTIN_RULE" => {}
                    literal => push(&format!("`{literal}`")),
                }
            }
            *position
        }
        _ => {
            if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
                for rule in positives {
                    if let Some(word) = describe_rule(*rule) {
                        push(word);
                    }
                }
            }
            rule_position
        }
    };
    // Where an operator is expected, pest's tokens only say "an identifier";
    // the rules attempted there tell an operator from a value name.
    if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        if rule_position == position && positives.contains(&Rule::op_name) {
            for word in &mut expected {
                if word == "a name" {
                    *word = "an operator".to_string();
                }
            }
        }
    }
    let position = (position + offset).min(text.len());
    let found = describe_found(text, position);
    // Punctuation first (it is usually what is missing), then words.
    expected.sort_by_key(|word| (!word.starts_with('`'), word == "a line break"));
    let message = if expected.is_empty() {
        format!("unexpected {}", found.0)
    } else {
        format!("expected {}, found {}", join_or(&expected), found.0)
    };
    let mut diagnostic = Diagnostic::error(message)
        .with_primary(Label::new(found.1, format!("unexpected {}", found.0)));
    if found.0 == "end of file" {
        diagnostic = diagnostic.with_help("is a `)`, `]` or the closing `}` missing?");
    }
    diagnostic
}

fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::name | Rule::layer_name => "a name",
        Rule::op_name => "an operator",
        Rule::int => "an integer",
        Rule::float => "a float",
        Rule::string => "a string",
        Rule::boolean => "`true` or `false`",
        Rule::tuple => "a tuple",
        Rule::keyword => "a keyword argument",
        Rule::args => "`(`",
        Rule::dims => "`[`",
        Rule::kw_network | Rule::network => "`network`",
        Rule::kw_from => "`from`",
        Rule::kw_input => "`input`",
        Rule::kw_output => "`output`",
        Rule::kw_weights => "`weights`",
        Rule::statement
        | Rule::input_stmt
        | Rule::weights_stmt
        | Rule::output_stmt
        | Rule::layer
        | Rule::lone_statement => "a statement",
        Rule::arg => "an argument",
        _ => return None,
    })
}

/// What is at `position`, in words, and its span.
fn describe_found(text: &str, position: usize) -> (String, Span) {
    let rest = &text[position..];
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_string(), Span::point(position));
    };
    if first == '\n' || first == '\r' {
        return ("a line break".to_string(), Span::point(position));
    }
    if first == ' ' || first == '\t' {
        return ("whitespace".to_string(), Span::new(position, position + 1));
    }
    if first.is_control() || first == '\u{FFFD}' {
        return (
            format!("control character U+{:04X}", u32::from(first)),
            Span::new(position, position + first.len_utf8()),
        );
    }
    if first.is_alphanumeric() || first == '_' || first == '-' {
        let len = rest
            .char_indices()
            .skip(1)
            .find(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(rest.len(), |(i, _)| i);
        let len = len.min(40);
        let len = (0..=len)
            .rev()
            .find(|&l| rest.is_char_boundary(l))
            .unwrap_or(0);
        return (
            format!("`{}`", &rest[..len]),
            Span::new(position, position + len),
        );
    }
    (
        format!("`{first}`"),
        Span::new(position, position + first.len_utf8()),
    )
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

// ---------------------------------------------------------------- the walk

fn walk_network(
    pair: Pair<'_, Rule>,
    text: &str,
    diagnostics: &mut Diagnostics,
) -> Option<Network> {
    let span = Span::from(pair.as_span());
    let mut inner = pair.into_inner();
    let _keyword = inner.next();
    let name = match inner.next() {
        Some(name) => to_name(&name),
        None => {
            diagnostics.push(internal(span));
            return None;
        }
    };
    let mut statements = Vec::new();
    // Error lines inside a statement whose error was already reported (a
    // statement continuing over several lines) are skipped.
    let mut reported_up_to = 0usize;
    for statement in inner {
        let statement_span = Span::from(statement.as_span());
        let Some(kind) = statement.into_inner().next() else {
            diagnostics.push(internal(statement_span));
            continue;
        };
        if kind.as_rule() == Rule::error_line {
            if statement_span.start < reported_up_to {
                continue;
            }
            let start = statement_span.start;
            let line = &text[start..statement_span.end];
            if line
                .strip_prefix("from")
                .is_some_and(|rest| rest.starts_with([' ', '\t']))
            {
                diagnostics.push(
                    Diagnostic::error("`from` must be on the same line as its layer")
                        .with_primary(Label::new(Span::new(start, start + 4), "`from` starts a new statement"))
                        .with_help("a statement ends at the end of its line; move `from ...` up to the layer"),
                );
                continue;
            }
            let diagnostic = match CnnParser::parse(Rule::lone_statement, &text[start..]) {
                Err(error) => syntax_error(&error, text, start),
                Ok(_) => Diagnostic::error("this line is not a valid statement")
                    .with_primary(Label::new(statement_span, "")),
            };
            let error_at = diagnostic.primary.as_ref().map_or(start, |l| l.span.end);
            reported_up_to = text[error_at..]
                .find('\n')
                .map_or(text.len(), |i| error_at + i);
            diagnostics.push(diagnostic);
            continue;
        }
        if let Some(kind) = walk_statement(kind, diagnostics) {
            statements.push(Statement {
                kind,
                span: statement_span,
            });
        }
    }
    Some(Network {
        name,
        statements,
        span,
    })
}

fn walk_statement(pair: Pair<'_, Rule>, diagnostics: &mut Diagnostics) -> Option<StatementKind> {
    let span = Span::from(pair.as_span());
    let rule = pair.as_rule();
    let mut inner = pair.into_inner().peekable();
    match rule {
        Rule::input_stmt => {
            let _keyword = inner.next();
            let name = to_name(&inner.next()?);
            let dims_pair = inner.next()?;
            let dims_span = Span::from(dims_pair.as_span());
            let dims = dims_pair
                .into_inner()
                .filter_map(|dim| {
                    let span = Span::from(dim.as_span());
                    parse_int(dim.as_str(), span, diagnostics).map(|value| Dim { value, span })
                })
                .collect();
            Some(StatementKind::Input(InputStmt {
                name,
                dims,
                dims_span,
            }))
        }
        Rule::weights_stmt => {
            let _keyword = inner.next();
            let string = inner.next()?;
            Some(StatementKind::Weights(WeightsStmt {
                path: unescape(&string),
                span: Span::from(string.as_span()),
            }))
        }
        Rule::output_stmt => {
            let _keyword = inner.next();
            let value = walk_expr(inner.next()?, diagnostics)?;
            Some(StatementKind::Output(OutputStmt { value }))
        }
        Rule::layer => {
            let name = inner
                .next_if(|p| p.as_rule() == Rule::layer_name)
                .and_then(|p| p.into_inner().next())
                .map(|p| to_name(&p));
            let op = to_name(&inner.next()?);
            let mut args = Vec::new();
            let mut args_span = None;
            if let Some(list) = inner.next_if(|p| p.as_rule() == Rule::args) {
                args_span = Some(Span::from(list.as_span()));
                for arg in list.into_inner() {
                    args.push(walk_arg(arg, diagnostics)?);
                }
            }
            let from = match inner.next() {
                Some(_keyword) => Some(to_name(&inner.next()?)),
                None => None,
            };
            Some(StatementKind::Layer(Layer {
                name,
                op,
                args,
                args_span,
                from,
            }))
        }
        _ => {
            diagnostics.push(internal(span));
            None
        }
    }
}

fn walk_arg(pair: Pair<'_, Rule>, diagnostics: &mut Diagnostics) -> Option<Arg> {
    let span = Span::from(pair.as_span());
    let mut inner = pair.into_inner().peekable();
    let keyword = inner
        .next_if(|p| p.as_rule() == Rule::keyword)
        .map(|p| to_name(&p));
    let value = walk_expr(inner.next()?, diagnostics)?;
    Some(Arg {
        keyword,
        value,
        span,
    })
}

fn walk_expr(pair: Pair<'_, Rule>, diagnostics: &mut Diagnostics) -> Option<Expr> {
    let span = Span::from(pair.as_span());
    let kind = match pair.as_rule() {
        Rule::int => ExprKind::Int(parse_int(pair.as_str(), span, diagnostics)?),
        Rule::float => match pair.as_str().parse::<f64>() {
            Ok(value) if value.is_finite() => ExprKind::Float(value),
            _ => {
                diagnostics.push(
                    Diagnostic::error("this number is too large")
                        .with_primary(Label::new(span, "out of the range of a 64-bit float")),
                );
                return None;
            }
        },
        Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
        Rule::string => ExprKind::Str(unescape(&pair)),
        Rule::name => ExprKind::Name(pair.as_str().to_string()),
        Rule::tuple => {
            let mut items = Vec::new();
            for item in pair.into_inner() {
                items.push(walk_expr(item, diagnostics)?);
            }
            ExprKind::Tuple(items)
        }
        _ => {
            diagnostics.push(internal(span));
            return None;
        }
    };
    Some(Expr { kind, span })
}

fn parse_int(text: &str, span: Span, diagnostics: &mut Diagnostics) -> Option<i64> {
    match text.parse::<i64>() {
        Ok(value) => Some(value),
        Err(_) => {
            diagnostics.push(
                Diagnostic::error("this integer is too large")
                    .with_primary(Label::new(span, "out of the range of a 64-bit integer")),
            );
            None
        }
    }
}

fn to_name(pair: &Pair<'_, Rule>) -> Name {
    Name {
        text: pair.as_str().to_string(),
        span: Span::from(pair.as_span()),
    }
}

/// The contents of a string literal with `\"` and `\\` resolved.
fn unescape(pair: &Pair<'_, Rule>) -> String {
    let raw = pair.as_str();
    let raw = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}
