//! Diagnostics shared by every compiler stage: a message, labelled spans,
//! help and notes, rendered rustc-style (through codespan-reporting) or as
//! one plain `file:line:col: error: message` line for build scripts.
//!
//! ```
//! use cnnc_syntax::{Diagnostic, Label, RenderStyle, SourceFile, Span};
//!
//! let file = SourceFile::new("net.cnn", "network n {\n    c = conv2D(4, 3)\n}\n");
//! let diagnostic = Diagnostic::error("unknown operator `conv2D`")
//!     .with_primary(Label::new(Span::new(20, 26), "unknown operator"))
//!     .with_help("did you mean `conv2d`?");
//! let text = diagnostic.render(&file, RenderStyle::Plain);
//! assert!(text.contains("net.cnn:2:9"));
//! assert!(text.contains("= help: did you mean `conv2d`?"));
//! assert_eq!(diagnostic.render(&file, RenderStyle::Short),
//!            "net.cnn:2:9: error: unknown operator `conv2D`\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{Ansi, NoColor};

use crate::source::SourceFile;
use crate::span::Span;

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Informational; never fails a command.
    Note,
    /// Something suspicious that does not stop compilation (an unused layer).
    Warning,
    /// The input is wrong; the command fails.
    Error,
}

impl Severity {
    /// `"error"`, `"warning"` or `"note"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A span with a short message printed beside its caret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// What the label points at.
    pub span: Span,
    /// The text beside the caret (may be empty).
    pub message: String,
}

impl Label {
    /// A label over `span` saying `message`.
    pub fn new(span: Span, message: impl Into<String>) -> Label {
        Label {
            span,
            message: message.into(),
        }
    }
}

/// One problem in a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error, warning or note.
    pub severity: Severity,
    /// One line saying what is wrong (no trailing period).
    pub message: String,
    /// Where the problem is; its position is the diagnostic's `line:col`.
    /// `None` for problems with the file as a whole.
    pub primary: Option<Label>,
    /// Related places (a previous definition, the other operand).
    pub secondary: Vec<Label>,
    /// Suggested fixes, printed as `= help: ...`.
    pub help: Vec<String>,
    /// Further explanation, printed as `= note: ...`.
    pub notes: Vec<String>,
}

/// How to render a diagnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderStyle {
    /// rustc-style with source lines and carets, no colors.
    Plain,
    /// rustc-style with ANSI colors, for terminals.
    Colored,
    /// One line per diagnostic: `file:line:col: error: message`.
    Short,
}

impl Diagnostic {
    /// A diagnostic of the given severity with no labels yet.
    pub fn new(severity: Severity, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            help: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// An error.
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, message)
    }

    /// A warning.
    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, message)
    }

    /// Sets the primary label.
    pub fn with_primary(mut self, label: Label) -> Diagnostic {
        self.primary = Some(label);
        self
    }

    /// Adds a secondary label.
    pub fn with_secondary(mut self, label: Label) -> Diagnostic {
        self.secondary.push(label);
        self
    }

    /// Adds a secondary label if there is one.
    pub fn with_secondary_opt(self, label: Option<Label>) -> Diagnostic {
        match label {
            Some(label) => self.with_secondary(label),
            None => self,
        }
    }

    /// Adds a `help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    /// Adds a `note:` line.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Whether this is an error (as opposed to a warning or note).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic against `file`, ending in a newline.
    pub fn render(&self, file: &SourceFile, style: RenderStyle) -> String {
        match style {
            RenderStyle::Short => self.render_short(file),
            RenderStyle::Plain => {
                let mut writer = NoColor::new(Vec::new());
                self.emit_rich(file, &mut writer);
                String::from_utf8_lossy(&writer.into_inner()).into_owned()
            }
            RenderStyle::Colored => {
                let mut writer = Ansi::new(Vec::new());
                self.emit_rich(file, &mut writer);
                String::from_utf8_lossy(&writer.into_inner()).into_owned()
            }
        }
    }

    fn render_short(&self, file: &SourceFile) -> String {
        match &self.primary {
            Some(label) => {
                let (line, column) = file.line_col(label.span.start);
                format!(
                    "{}:{line}:{column}: {}: {}\n",
                    file.name(),
                    self.severity.as_str(),
                    self.message
                )
            }
            None => format!(
                "{}: {}: {}\n",
                file.name(),
                self.severity.as_str(),
                self.message
            ),
        }
    }

    fn emit_rich(&self, file: &SourceFile, writer: &mut dyn term::termcolor::WriteColor) {
        let simple = SimpleFile::new(file.name(), file.text());
        let clamp = |span: Span| {
            let len = file.text().len();
            let start = span.start.min(len);
            start..span.end.clamp(start, len)
        };
        let mut labels = Vec::new();
        if let Some(primary) = &self.primary {
            labels.push(
                cs::Label::primary((), clamp(primary.span)).with_message(primary.message.clone()),
            );
        }
        for secondary in &self.secondary {
            labels.push(
                cs::Label::secondary((), clamp(secondary.span))
                    .with_message(secondary.message.clone()),
            );
        }
        let mut notes: Vec<String> = self.help.iter().map(|h| format!("help: {h}")).collect();
        notes.extend(self.notes.iter().map(|n| format!("note: {n}")));
        let severity = match self.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
            Severity::Note => cs::Severity::Note,
        };
        let diagnostic = cs::Diagnostic::new(severity)
            .with_message(self.message.clone())
            .with_labels(labels)
            .with_notes(notes);
        let config = term::Config::default();
        if term::emit(writer, &config, &simple, &diagnostic).is_err() {
            // Rendering into memory only fails for spans outside the file,
            // which `clamp` rules out; fall back to the one-line form anyway.
            let _ = writer.write_all(self.render_short(file).as_bytes());
        }
    }
}

impl fmt::Display for Diagnostic {
    /// The severity and message only (no position, which needs the file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity.as_str(), self.message)
    }
}

/// An ordered collection of diagnostics (all the problems found, not just the
/// first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty collection.
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    /// Adds one diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Adds all of `other`'s diagnostics.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// Whether there are no diagnostics at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of diagnostics.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The diagnostics in the order they were reported.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// Sorts by position in the file (file-wide diagnostics first), keeping
    /// the report order among diagnostics at the same position.
    pub fn sort_by_position(&mut self) {
        self.items
            .sort_by_key(|d| d.primary.as_ref().map(|label| label.span.start));
    }

    /// Renders the diagnostics, in order, one after another: at most
    /// [`Diagnostics::RENDER_LIMIT`] of them, then a line counting the rest
    /// (a generated file with thousands of broken layers should not bury the
    /// first error, nor take minutes to print).
    pub fn render(&self, file: &SourceFile, style: RenderStyle) -> String {
        let mut out = String::new();
        for diagnostic in self.items.iter().take(Self::RENDER_LIMIT) {
            out.push_str(&diagnostic.render(file, style));
        }
        if let Some(rest) = self.items.len().checked_sub(Self::RENDER_LIMIT) {
            if rest > 0 {
                out.push_str(&format!(
                    "note: {rest} more diagnostic{} not shown\n",
                    if rest == 1 { "" } else { "s" }
                ));
            }
        }
        out
    }

    /// How many diagnostics [`Diagnostics::render`] shows.
    pub const RENDER_LIMIT: usize = 100;
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Diagnostics {
        Diagnostics {
            items: vec![diagnostic],
        }
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(items: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics { items }
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.items {
            writeln!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
