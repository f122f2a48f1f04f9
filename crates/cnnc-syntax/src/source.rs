//! Source files: a name (for messages) and the text.

use crate::diagnostic::{Diagnostic, Label};
use crate::span::Span;

/// One `.cnn` source file, as diagnostics refer to it.
///
/// A file read from disk may not be valid UTF-8; [`SourceFile::from_bytes`]
/// keeps a lossy copy of the text (so diagnostics can still show it) and
/// remembers where the first invalid byte was, which [`crate::parse`] reports.
#[derive(Clone, Debug)]
pub struct SourceFile {
    name: String,
    text: String,
    invalid_utf8_at: Option<usize>,
}

impl SourceFile {
    /// A file named `name` (shown in messages) holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
            invalid_utf8_at: None,
        }
    }

    /// A file from raw bytes. Invalid UTF-8 is replaced by U+FFFD in the
    /// text, and parsing the file reports an error at the first bad byte.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> SourceFile {
        match String::from_utf8(bytes) {
            Ok(text) => SourceFile::new(name, text),
            Err(error) => {
                let valid_up_to = error.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
                SourceFile {
                    name: name.into(),
                    text,
                    invalid_utf8_at: Some(valid_up_to),
                }
            }
        }
    }

    /// The name shown in messages (usually the path as the user wrote it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text (lossy if the file was not valid UTF-8).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The error for a file that was not valid UTF-8, if it was not.
    pub fn encoding_error(&self) -> Option<Diagnostic> {
        let offset = self.invalid_utf8_at?;
        // The lossy text is identical to the bytes up to `offset`, and the
        // replacement character that follows is 3 bytes long.
        let end = self.text[offset..]
            .chars()
            .next()
            .map_or(offset, |c| offset + c.len_utf8());
        Some(
            Diagnostic::error("this file is not valid UTF-8 text")
                .with_primary(Label::new(Span::new(offset, end), "invalid byte here"))
                .with_help("`.cnn` files are plain text; is this the right file?"),
        )
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}
