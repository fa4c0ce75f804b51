//! The Heroku/Dokku `Procfile` convention: `name: command` per line, accepted as the services
//! list when `slipway.toml` declares none.
//!
//! `web` becomes a web service on public port [`PROCFILE_WEB_PORT`], `release` becomes the
//! deploy's release command (Heroku's release phase), every other entry a worker.

use std::collections::HashMap;
use std::ops::Range;

use indexmap::IndexMap;

use crate::diagnostic::{Diagnostic, Level, SourceFile};
use crate::model::{Service, ServiceKind};

/// Public port given to a Procfile's `web` process.
pub const PROCFILE_WEB_PORT: u16 = 8080;

/// What a Procfile declares.
#[derive(Debug, Default)]
pub(crate) struct Procfile {
    pub(crate) services: IndexMap<String, Service>,
    pub(crate) release: Option<String>,
    /// Byte range of each entry's line, for diagnostics.
    pub(crate) lines: HashMap<String, Range<usize>>,
}

/// Parses a Procfile, reporting every malformed line.
pub(crate) fn parse(source: &SourceFile) -> Result<Procfile, Vec<Diagnostic>> {
    let mut out = Procfile::default();
    let mut errors = Vec::new();
    let mut offset = 0;
    for raw in source.text.split_inclusive('\n') {
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let span = start..start + line.len();
        let Some((name, command)) = line.split_once(':') else {
            errors.push(source.diagnostic(
                Level::Error,
                span,
                "",
                "Procfile line is not `name: command`",
                Some("write for example `web: ./server --port $PORT`".into()),
            ));
            continue;
        };
        let name = name.trim();
        let command = command.trim();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid || command.is_empty() {
            let message = if valid {
                format!("Procfile entry `{name}` has no command")
            } else {
                format!("`{name}` is not a valid process name")
            };
            errors.push(source.diagnostic(
                Level::Error,
                span,
                "",
                message,
                Some("names use letters, digits, `-` and `_`".into()),
            ));
            continue;
        }
        if out.lines.insert(name.to_string(), span.clone()).is_some() {
            errors.push(source.diagnostic(
                Level::Error,
                span,
                "",
                format!("Procfile declares `{name}` twice"),
                Some("keep one line per process name".into()),
            ));
            continue;
        }
        if name == "release" {
            out.release = Some(command.to_string());
            continue;
        }
        let web = name == "web";
        out.services.insert(
            name.to_string(),
            Service {
                kind: Some(if web {
                    ServiceKind::Web
                } else {
                    ServiceKind::Worker
                }),
                start: Some(command.to_string()),
                port: web.then_some(PROCFILE_WEB_PORT),
                ..Default::default()
            },
        );
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_worker_and_release() {
        let src = SourceFile::new(
            "Procfile",
            "# app\nweb: ./server\nworker: ./jobs --queue default\nrelease: ./migrate\n",
        );
        let p = parse(&src).unwrap();
        assert_eq!(p.services.len(), 2);
        assert_eq!(p.services["web"].port, Some(PROCFILE_WEB_PORT));
        assert_eq!(p.services["worker"].kind, Some(ServiceKind::Worker));
        assert_eq!(p.release.as_deref(), Some("./migrate"));
    }

    #[test]
    fn malformed_lines_are_all_reported() {
        let src = SourceFile::new("Procfile", "web ./server\nbad name: x\nworker:\n");
        let errors = parse(&src).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[1].line, 2);
    }
}
