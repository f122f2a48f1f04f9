//! The `.cnn` language front end: grammar, AST and diagnostics.
//!
//! A `.cnn` file describes one inference network (see `docs/LANGUAGE.md`).
//! This crate turns its text into an [`ast::Network`]: a faithful tree of
//! what was written, where every node carries the byte [`Span`] it came from.
//! Nothing is resolved here: names, operators and arguments are checked when
//! `cnnc-ir` lowers the AST into its graph.
//!
//! The [`diagnostic`] module is shared by every stage of the compiler: a
//! [`Diagnostic`] is a message with labelled spans, help and notes, rendered
//! rustc-style or as one `file:line:col: error: message` line.
//!
//! ```
//! use cnnc_syntax::{parse, RenderStyle, SourceFile};
//!
//! let file = SourceFile::new("bad.cnn", "network n {\n  input x: [3, 8, 8]\n  conv2d(4, 3,\n}\n");
//! let errors = parse(&file).unwrap_err();
//! let text = errors.render(&file, RenderStyle::Short);
//! assert!(text.starts_with("bad.cnn:4:1: error: expected"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod ast;
pub mod diagnostic;
mod parser;
mod source;
mod span;

pub use diagnostic::{Diagnostic, Diagnostics, Label, RenderStyle, Severity};
pub use parser::{parse, CnnParser, Rule, MAX_NESTING, MAX_SOURCE_LEN};
pub use source::SourceFile;
pub use span::Span;
