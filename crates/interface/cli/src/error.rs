//! Errors as the CLI shows them: what happened, what to do, and the exit status.

use std::fmt::Write as _;

use slipway_api::DiagnosticView;

/// A failure of a command.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
    pub(crate) code: u8,
    /// Text printed before the error (rendered diagnostics).
    pub(crate) detail: Option<String>,
}

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            code: 1,
            detail: None,
        }
    }

    /// An error with the whole chain of its cause.
    pub(crate) fn from_error(what: &str, error: &dyn std::error::Error) -> Self {
        let mut message = format!("{what}: {error}");
        let mut source = error.source();
        while let Some(s) = source {
            let _ = write!(message, ": {s}");
            source = s.source();
        }
        CliError::new(message)
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds diagnostics a remote call returned, in `file:line:column` form.
    pub(crate) fn with_diagnostics(self, diagnostics: Vec<DiagnosticView>) -> Self {
        if diagnostics.is_empty() {
            return self;
        }
        let mut text = String::new();
        for d in diagnostics {
            let _ = writeln!(
                text,
                "{}: {}\n  --> {}:{}:{}",
                d.level, d.message, d.file, d.line, d.column
            );
            if let Some(h) = d.hint {
                let _ = writeln!(text, "  = hint: {h}");
            }
            text.push('\n');
        }
        self.detail(text)
    }

    /// Prints the error on stderr.
    pub(crate) fn print(&self) {
        if let Some(detail) = &self.detail {
            eprint!("{detail}");
        }
        eprintln!("error: {}", self.message);
        if let Some(hint) = &self.hint {
            eprintln!("  hint: {hint}");
        }
    }
}
