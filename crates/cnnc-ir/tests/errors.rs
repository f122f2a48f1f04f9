//! Rendered diagnostics for every error class: one input file per class in
//! `tests/errors/` (including every conformance error file), one snapshot
//! per file in `tests/snapshots/`. Files named `warning-*` must check
//! successfully with warnings; every other file must fail with errors.
//!
//! Review changes with `cargo insta review`; CI runs with `INSTA_UPDATE=no`.

use cnnc_syntax::{RenderStyle, SourceFile};

fn render(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).expect("test input is readable");
    let name = format!(
        "errors/{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    let file = SourceFile::from_bytes(name.clone(), bytes);
    let is_warning = name.starts_with("errors/warning-");
    match cnnc_ir::check(&file) {
        Ok(checked) => {
            assert!(is_warning, "{name}: expected errors, but the file checks");
            assert!(!checked.warnings.is_empty(), "{name}: expected warnings");
            checked.warnings.render(&file, RenderStyle::Plain)
        }
        Err(diagnostics) => {
            assert!(!is_warning, "{name}: expected only warnings, got errors");
            assert!(diagnostics.has_errors(), "{name}: failure without an error");
            let short = diagnostics.render(&file, RenderStyle::Short);
            format!(
                "{}\n--- short ---\n{short}",
                diagnostics.render(&file, RenderStyle::Plain)
            )
        }
    }
}

#[test]
fn error_snapshots() {
    insta::glob!("errors/*.cnn", |path| {
        insta::assert_snapshot!(render(path));
    });
}

/// The conformance suite's error manifest: each file must point at the
/// given `line:col` and mention the given words (the same check as
/// `conformance/run.py`, without running the binary).
#[test]
fn conformance_error_locations() {
    let cases: &[(&str, Option<&str>, &[&str])] = &[
        ("syntax-unclosed.cnn", Some(":4:"), &[]),
        ("unknown-op.cnn", Some(":3:9"), &["conv2d"]),
        ("unknown-param.cnn", Some(":3:"), &["strides"]),
        ("missing-param.cnn", Some(":3:"), &["out_channels"]),
        ("bad-type.cnn", Some(":3:"), &["bias"]),
        ("undefined-name.cnn", Some(":3:"), &["nowhere"]),
        ("duplicate-name.cnn", Some(":4:"), &["c"]),
        ("kernel-too-big.cnn", Some(":3:"), &["17"]),
        ("groups-mismatch.cnn", Some(":3:"), &["groups"]),
        ("in-channels-mismatch.cnn", Some(":3:"), &["in_channels"]),
        ("add-shape.cnn", Some(":5:"), &["add"]),
        ("linear-not-flat.cnn", Some(":3:"), &["flatten"]),
        ("same-stride.cnn", Some(":3:"), &["same"]),
        ("pool-pad-too-big.cnn", Some(":3:"), &["padding"]),
        ("empty-file.cnn", None, &[]),
        ("binary-garbage.cnn", None, &[]),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    for (file, place, words) in cases {
        let text = render(&dir.join(file));
        if let Some(place) = place {
            assert!(text.contains(place), "{file}: no {place} in\n{text}");
        }
        for word in *words {
            assert!(text.contains(word), "{file}: no {word:?} in\n{text}");
        }
    }
}

/// Two independent bad layers give two errors; a syntax error on one line
/// does not hide the next bad line.
#[test]
fn several_errors_are_all_reported() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    for (file, count) in [
        ("two-bad-layers.cnn", 2),
        ("syntax-two-errors.cnn", 2),
        ("bad-input-dim.cnn", 2),
    ] {
        let bytes = std::fs::read(dir.join(file)).expect("readable");
        let source = SourceFile::from_bytes(file, bytes);
        let errors = cnnc_ir::check(&source).expect_err("must fail");
        assert_eq!(errors.error_count(), count, "{file}: {errors}");
    }
}
