//! Diagnostics a user can act on: where (file, line, column), what was expected, and a hint.
//!
//! A [`Diagnostic`] is plain data (it serializes for `--json`); [`render`] prints the
//! rustc-style text form with the offending source line underlined. Rendering is deterministic
//! and colourless so that snapshot tests and logs read the same.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The file cannot be used.
    Error,
    /// The file works, but probably not as meant.
    Warning,
}

/// One finding about a source file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub level: Level,
    /// The file, as the user named it.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key path of the value concerned (`services.web.port`), if any.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Byte range in the file.
    #[serde(skip)]
    pub span: Range<usize>,
}

/// A source file with its text, able to turn byte offsets into lines and columns.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as the user gave it.
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps a file's text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.text[start..offset].chars().count() + 1;
        (line + 1, column)
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |&next| next);
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// A diagnostic at `span`.
    pub fn diagnostic(
        &self,
        level: Level,
        span: Range<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let (line, column) = self.line_col(span.start);
        Diagnostic {
            level,
            file: self.path.clone(),
            line,
            column,
            path: path.into(),
            message: message.into(),
            hint,
            span,
        }
    }
}

/// Renders diagnostics in the rustc style, each followed by a blank line.
pub fn render(source: &SourceFile, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        render_one(&mut out, source, d);
        out.push('\n');
    }
    out
}

fn render_one(out: &mut String, source: &SourceFile, d: &Diagnostic) {
    let level = match d.level {
        Level::Error => "error",
        Level::Warning => "warning",
    };
    let _ = writeln!(out, "{level}: {}", d.message);
    let _ = writeln!(out, "  --> {}", location(&d.file, d.line, d.column));
    if d.line >= 1 && d.line <= source.line_starts.len() {
        let text = source.line_text(d.line);
        let gutter = d.line.to_string().len();
        let pad = " ".repeat(gutter);
        // Underline the span, but only on its first line.
        let line_start = source.line_starts[d.line - 1];
        let span_end = d.span.end.min(line_start + text.len()).max(d.span.start);
        let width = source.text[d.span.start.min(source.text.len())..span_end]
            .chars()
            .count()
            .max(1);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {text}", d.line);
        let _ = writeln!(
            out,
            "{pad} | {}{}",
            " ".repeat(d.column - 1),
            "^".repeat(width)
        );
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "  = hint: {hint}");
    }
}

/// `file:line:column`.
pub fn location(file: &Path, line: usize, column: usize) -> String {
    format!("{}:{line}:{column}", file.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let src = SourceFile::new("x.toml", "a = 1\nné = \"x\"\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // "é" is two bytes, one column.
        assert_eq!(src.line_col(10), (2, 4));
        assert_eq!(src.line_text(2), "né = \"x\"");
    }

    #[test]
    fn renders_location_source_and_hint() {
        let src = SourceFile::new("slipway.toml", "[services.web]\nreplica = 2\n");
        let d = src.diagnostic(
            Level::Error,
            15..22,
            "services.web.replica",
            "unknown key `replica` in `services.web`",
            Some("did you mean `replicas`?".into()),
        );
        let text = render(&src, &[d]);
        assert_eq!(
            text,
            "error: unknown key `replica` in `services.web`\n  --> slipway.toml:2:1\n  |\n2 | replica = 2\n  | ^^^^^^^\n  = hint: did you mean `replicas`?\n\n"
        );
    }
}
