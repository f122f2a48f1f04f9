//! The grammar rule by rule (pest's `parses_to!`/`fails_with!`), then the
//! parser as a whole: the AST it builds, its spans, and its limits.

use cnnc_syntax::ast::{ExprKind, StatementKind};
use cnnc_syntax::{
    parse, CnnParser, Diagnostics, RenderStyle, Rule, SourceFile, Span, MAX_NESTING,
};
use pest::{consumes_to, fails_with, parses_to};

#[test]
fn names_are_dotted_module_paths() {
    parses_to! {
        parser: CnnParser,
        input: "layer1.0.conv1",
        rule: Rule::name,
        tokens: [name(0, 14)]
    };
    parses_to! {
        parser: CnnParser,
        input: "features.3",
        rule: Rule::name,
        tokens: [name(0, 10)]
    };
    // A name stops before a part that is neither an identifier nor digits.
    parses_to! {
        parser: CnnParser,
        input: "_x.y_2",
        rule: Rule::name,
        tokens: [name(0, 6)]
    };
    fails_with! {
        parser: CnnParser,
        input: "3x",
        rule: Rule::name,
        positives: vec![Rule::name],
        negatives: vec![],
        pos: 0
    };
    // Reserved words are not names, but may start one.
    fails_with! {
        parser: CnnParser,
        input: "from",
        rule: Rule::name,
        positives: vec![Rule::name],
        negatives: vec![],
        pos: 0
    };
    parses_to! {
        parser: CnnParser,
        input: "from_x",
        rule: Rule::name,
        tokens: [name(0, 6)]
    };
}

#[test]
fn numbers() {
    parses_to! { parser: CnnParser, input: "64", rule: Rule::int, tokens: [int(0, 2)] };
    parses_to! { parser: CnnParser, input: "-1", rule: Rule::int, tokens: [int(0, 2)] };
    parses_to! { parser: CnnParser, input: "1e-5", rule: Rule::float, tokens: [float(0, 4)] };
    parses_to! { parser: CnnParser, input: "0.01", rule: Rule::float, tokens: [float(0, 4)] };
    parses_to! { parser: CnnParser, input: "-2.5E+3", rule: Rule::float, tokens: [float(0, 7)] };
    // An integer is not a float, and `1.` is neither.
    fails_with! {
        parser: CnnParser, input: "12", rule: Rule::float,
        positives: vec![Rule::float], negatives: vec![], pos: 0
    };
    fails_with! {
        parser: CnnParser, input: "1.", rule: Rule::int,
        positives: vec![Rule::int], negatives: vec![], pos: 0
    };
}

#[test]
fn layers_and_arguments() {
    parses_to! {
        parser: CnnParser,
        input: "c = conv2d(4, k=(3, 5)) from x",
        rule: Rule::layer,
        tokens: [layer(0, 30, [
            layer_name(0, 1, [name(0, 1)]),
            op_name(4, 10),
            args(10, 23, [
                arg(11, 12, [int(11, 12)]),
                arg(14, 22, [keyword(14, 15), tuple(16, 22, [int(17, 18), int(20, 21)])])
            ]),
            kw_from(24, 28),
            name(29, 30)
        ])]
    };
    parses_to! {
        parser: CnnParser,
        input: "relu",
        rule: Rule::layer,
        tokens: [layer(0, 4, [op_name(0, 4)])]
    };
    parses_to! {
        parser: CnnParser,
        input: "\"same\"",
        rule: Rule::string,
        tokens: [string(0, 6, [string_inner(1, 5)])]
    };
    parses_to! {
        parser: CnnParser,
        input: "output = relu",
        rule: Rule::layer,
        tokens: [layer(0, 13, [layer_name(0, 6, [name(0, 6)]), op_name(9, 13)])]
    };
}

fn parse_ok(text: &str) -> cnnc_syntax::ast::Network {
    let file = SourceFile::new("t.cnn", text);
    match parse(&file) {
        Ok(network) => network,
        Err(errors) => panic!("{}", errors.render(&file, RenderStyle::Plain)),
    }
}

fn parse_err(text: &str) -> String {
    let file = SourceFile::new("t.cnn", text);
    match parse(&file) {
        Ok(network) => panic!("parsed: {network:?}"),
        Err(errors) => errors.render(&file, RenderStyle::Short),
    }
}

#[test]
fn ast_holds_values_and_spans() {
    let text = "network n {\n  input x: [3, 8, 8]\n  c = conv2d(4, 3, padding=\"same\", eps=1e-5, b=true) from x\n  output c\n}\n";
    let network = parse_ok(text);
    assert_eq!(network.name.text, "n");
    assert_eq!(network.statements.len(), 3);
    let StatementKind::Input(input) = &network.statements[0].kind else {
        panic!("not an input")
    };
    let dims: Vec<i64> = input.dims.iter().map(|d| d.value).collect();
    assert_eq!(dims, [3, 8, 8]);
    assert_eq!(&text[input.name.span.range()], "x");
    let StatementKind::Layer(layer) = &network.statements[1].kind else {
        panic!("not a layer")
    };
    assert_eq!(layer.name.as_ref().map(|n| n.text.as_str()), Some("c"));
    assert_eq!(&text[layer.op.span.range()], "conv2d");
    assert_eq!(layer.args.len(), 5);
    assert_eq!(layer.args[0].value.kind, ExprKind::Int(4));
    assert_eq!(layer.args[2].value.kind, ExprKind::Str("same".into()));
    assert_eq!(&text[layer.args[2].span.range()], "padding=\"same\"");
    assert_eq!(layer.args[3].value.kind, ExprKind::Float(1e-5));
    assert_eq!(layer.args[4].value.kind, ExprKind::Bool(true));
    assert_eq!(layer.from.as_ref().map(|n| n.text.as_str()), Some("x"));
    let statement = &network.statements[1];
    assert!(text[statement.span.range()].starts_with("c = conv2d"));
    assert!(text[statement.span.range()].ends_with("from x"));
}

#[test]
fn layout_rules() {
    // Windows line endings, comments, blank lines, a BOM, trailing commas,
    // one-line networks and statements over several lines in brackets.
    parse_ok("\u{feff}# header\r\nnetwork n {\r\n\r\n  input x: [4]  # c\r\n  relu\r\n}\r\n");
    parse_ok("network n { input x: [4] }");
    parse_ok("network n {\n input x: [\n 3,\n 8,\n 8,\n ]\n c = conv2d(\n 4, # comment\n (3,\n 3),\n )\n}");
    let network = parse_ok("network n {\n input x: [4]\n s = concat(a, b.1, dim=-1)\n}");
    let StatementKind::Layer(layer) = &network.statements[1].kind else {
        panic!("not a layer")
    };
    assert_eq!(layer.args[1].value.kind, ExprKind::Name("b.1".into()));
    assert_eq!(layer.args[2].value.kind, ExprKind::Int(-1));
    let network = parse_ok("network n {\n input x: [4]\n weights \"a \\\"b\\\" \\\\c\"\n}");
    let StatementKind::Weights(weights) = &network.statements[1].kind else {
        panic!("not weights")
    };
    assert_eq!(weights.path, "a \"b\" \\c");
}

#[test]
fn one_statement_per_line() {
    // Two statements on one line are an error; so is a newline outside brackets.
    assert!(
        parse_err("network n {\n input x: [4] relu\n}").starts_with("t.cnn:2:15: error: expected")
    );
    assert!(
        parse_err("network n {\n input x: [4]\n c = conv2d(4, 3)\n from x\n}")
            .starts_with("t.cnn:4:2: error:")
    );
}

#[test]
fn every_bad_line_is_reported() {
    let errors = parse_err("network n {\n input x: [4]\n a = relu(\n b = = c\n relu\n d = 1\n}");
    let lines: Vec<&str> = errors.lines().collect();
    // `a = relu(` continues on the next line, where `b =` reads as a
    // keyword argument; that one error covers lines 3-4. Line 5 is fine.
    assert_eq!(lines.len(), 2, "{errors}");
    assert!(
        lines[0].starts_with("t.cnn:4:6: error: expected a value, found `=`"),
        "{errors}"
    );
    assert!(
        lines[1].starts_with("t.cnn:6:6: error: expected"),
        "{errors}"
    );
}

#[test]
fn rendering_stops_after_the_limit() {
    let bad_lines = "  x = = 1\n".repeat(Diagnostics::RENDER_LIMIT + 5);
    let text = format!("network n {{\n input x: [4]\n{bad_lines}}}\n");
    let file = SourceFile::new("t.cnn", text);
    let errors = parse(&file).expect_err("every line is bad");
    assert_eq!(errors.len(), Diagnostics::RENDER_LIMIT + 5);
    let rendered = errors.render(&file, RenderStyle::Short);
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), Diagnostics::RENDER_LIMIT + 1, "{rendered}");
    assert!(lines[0].starts_with("t.cnn:3:7: error:"), "{rendered}");
    assert_eq!(
        lines[Diagnostics::RENDER_LIMIT],
        "note: 5 more diagnostics not shown"
    );
}

#[test]
fn limits_are_errors_not_crashes() {
    // 100k open parentheses: refused before pest recurses.
    let deep = format!(
        "network n {{\n input x: [4]\n c = f({}\n}}",
        "(".repeat(100_000)
    );
    let errors = parse_err(&deep);
    assert!(errors.contains("nested too deeply"), "{errors}");
    assert!(
        errors.starts_with(&format!("t.cnn:3:{}:", 7 + MAX_NESTING)),
        "{errors}"
    );
    // Parentheses in comments and strings do not count.
    let commented = format!(
        "network n {{\n input x: [4]  # {}\n weights \"{}\"\n}}",
        "(".repeat(100),
        "[".repeat(100)
    );
    parse_ok(&commented);
    // Too large a file.
    let huge = format!(
        "network n {{\n input x: [4]\n{}}}",
        "# padding\n".repeat(500_000)
    );
    assert!(parse_err(&huge).contains("too large"));
    // Empty, blank, invalid UTF-8.
    assert!(parse_err("").contains("empty"));
    assert!(parse_err("  \n# only a comment\n").contains("empty"));
    let file = SourceFile::from_bytes("bin.cnn", b"network n {\xff\xfe}".to_vec());
    let errors = parse(&file).expect_err("invalid UTF-8");
    assert_eq!(
        errors.render(&file, RenderStyle::Short),
        "bin.cnn:1:12: error: this file is not valid UTF-8 text\n"
    );
    // Out-of-range literals.
    assert!(
        parse_err("network n {\n input x: [99999999999999999999]\n}")
            .contains("2:12: error: this integer is too large")
    );
    assert!(parse_err("network n {\n input x: [4]\n relu(1e999)\n}")
        .contains("3:7: error: this number is too large"));
}

#[test]
fn spans_convert_and_merge() {
    let a = Span::new(4, 2);
    assert_eq!((a.start, a.end), (2, 4));
    assert_eq!(a.to(Span::point(9)), Span::new(2, 9));
    assert_eq!(Span::from(3..5).len(), 2);
    let file = SourceFile::new("f", "ab\ncé\nx");
    assert_eq!(file.line_col(0), (1, 1));
    assert_eq!(file.line_col(3), (2, 1));
    assert_eq!(file.line_col(6), (2, 3));
    assert_eq!(file.line_col(7), (3, 1));
    assert_eq!(file.line_col(100), (3, 2));
}
