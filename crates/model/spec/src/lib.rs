//! The `slipway.toml` model: the file's types, loading with precise diagnostics, the JSON
//! Schema, environment resolution and plans.
//!
//! This crate is pure: it reads the files it is pointed at and nothing else (no network, no
//! state store, no processes). Everything above it (store, runtime, deploy engine, server, CLI)
//! consumes a [`Project`] or a [`ResolvedEnv`].
//!
//! ```
//! let project = slipway_spec::load_str(
//!     "slipway.toml".as_ref(),
//!     "[services.web]\nstart = \"./server\"\nport = 8080\nhealth = \"/health\"\n",
//!     None,
//! )
//! .unwrap();
//! let env = project.resolve(&project.default_environment()).unwrap();
//! assert_eq!(env.services["web"].replicas, 1);
//! ```

pub mod diagnostic;
pub mod init;
pub mod matcher;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod promql;
pub mod resolve;
pub mod rulefile;
pub mod slo_buckets;
pub mod template;
pub mod units;

mod check;
mod procfile;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toml::de::DeTable;

pub use diagnostic::{Diagnostic, Level, SourceFile};
pub use model::Config;
pub use procfile::PROCFILE_WEB_PORT;
pub use resolve::{ResolvedEnv, ResolvedService};

use check::Locator;
use check::schema::SchemaChecker;
use check::semantic::{ProcfileOrigin, SemanticChecker};

/// The pipeline stages used when `[pipeline] stages` is not set: the seeds' six.
pub const DEFAULT_STAGES: [&str; 6] = ["build", "test", "scan", "deploy", "smoke", "monitor"];

/// The environment that exists when a file declares none.
pub const IMPLICIT_ENVIRONMENT: &str = "local";

/// A loaded, checked project file.
#[derive(Clone, Debug)]
pub struct Project {
    /// The file, as given.
    pub file: PathBuf,
    /// The folder the file is in (absolute).
    pub dir: PathBuf,
    /// The project's name.
    pub name: String,
    /// The file's content, with Procfile services filled in.
    pub config: Config,
    /// Findings that do not stop the file from being used.
    pub warnings: Report,
    /// The Prometheus rule files `[metrics] rule_files` names, loaded and checked.
    pub rule_files: Vec<rulefile::RuleFile>,
}

/// Diagnostics together with the sources they point into, ready to render.
#[derive(Clone, Debug, Default)]
pub struct Report {
    sources: Vec<SourceFile>,
    /// The findings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// The findings rendered as text (rustc style).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            match self.sources.iter().find(|s| s.path == d.file) {
                Some(source) => out.push_str(&diagnostic::render(source, std::slice::from_ref(d))),
                None => out.push_str(&format!("{:?}: {}\n", d.level, d.message)),
            }
        }
        out
    }

    /// How many errors there are.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .count()
    }

    /// Whether there are no findings.
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// There is no file, and no Procfile beside where it should be.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file has errors.
    #[error("{} has {} error(s)", report.diagnostics.first().map_or_else(String::new, |d| d.file.display().to_string()), report.error_count())]
    Invalid {
        /// The errors (and any warnings).
        report: Report,
    },
}

/// Why an environment could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such environment.
    #[error("unknown environment `{name}` (known: {})", known.join(", "))]
    UnknownEnvironment {
        /// What was asked for.
        name: String,
        /// What exists.
        known: Vec<String>,
    },
    /// Overlaying the environment failed; a checked file never gets here.
    #[error("cannot apply environment `{name}`")]
    Overlay {
        /// The environment.
        name: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
}

/// Loads and checks `path`; a `Procfile` beside it supplies services when the file has none,
/// and stands in for a missing file altogether.
pub fn load(path: &Path) -> Result<Project, LoadError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let procfile_path = dir.join("Procfile");
    let procfile = match std::fs::read_to_string(&procfile_path) {
        Ok(text) => Some(SourceFile::new(&procfile_path, text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(LoadError::Read {
                path: procfile_path,
                source,
            });
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && procfile.is_some() => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(LoadError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    load_str(path, &text, procfile).map_err(|report| LoadError::Invalid { report })
}

/// Checks a file's text (with an optional Procfile) and builds the project.
pub fn load_str(path: &Path, text: &str, procfile: Option<SourceFile>) -> Result<Project, Report> {
    let source = SourceFile::new(path, text);
    let mut report = Report {
        sources: vec![source.clone()],
        diagnostics: Vec::new(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        report.diagnostics = syntax
            .iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                source.diagnostic(
                    Level::Error,
                    span,
                    "",
                    format!("invalid TOML: {}", e.message().trim()),
                    Some("see https://toml.io for the syntax".into()),
                )
            })
            .collect();
        return Err(report);
    }
    SchemaChecker::new(json_schema(), &source).check_document(&doc, &mut report.diagnostics);
    if !report.diagnostics.is_empty() {
        // Every problem at once: the cross-references of what the schema accepted too.
        if let Some((config, pruned)) =
            check::prune(text, report.diagnostics.clone(), json_schema(), &source)
        {
            let locator = Locator::new(&doc);
            // What was left out cannot be judged again: nothing found inside it, and nothing
            // about a whole service or environment that is missing only because it was.
            let regions: Vec<std::ops::Range<usize>> = pruned
                .iter()
                .filter_map(|p| locator.value_span(p))
                .collect();
            let whole: Vec<String> = report
                .diagnostics
                .iter()
                .filter(|d| d.message.starts_with("missing key"))
                .filter_map(|d| {
                    let mut p = check::KeyPath::from_display(&d.path);
                    p.pop();
                    p.entry_name().map(|name| format!("`{name}`"))
                })
                .collect();
            let environments = environment_names(&config);
            let more =
                SemanticChecker::new(&config, &source, Locator::new(&doc), None).run(&environments);
            for d in more {
                // Found in what was dropped, or about a place that holds it.
                let inside = regions
                    .iter()
                    .any(|r| r.start < d.span.end.max(d.span.start + 1) && d.span.start < r.end);
                let about_pruned = whole.iter().any(|w| d.message.contains(w.as_str()));
                if d.level == Level::Error && !inside && !about_pruned {
                    report.diagnostics.push(d);
                }
            }
        }
        report.diagnostics.sort_by(|a, b| {
            (a.level, &a.file, a.line, a.column).cmp(&(b.level, &b.file, b.line, b.column))
        });
        return Err(report);
    }
    let mut config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            // The schema check accepts only what deserializes; this is a safety net.
            report.diagnostics.push(source.diagnostic(
                Level::Error,
                e.span().unwrap_or(0..0),
                "",
                e.message().trim().to_string(),
                None,
            ));
            return Err(report);
        }
    };
    let mut origin = None;
    if config.services.is_empty()
        && let Some(proc_source) = &procfile
    {
        report.sources.push(proc_source.clone());
        match procfile::parse(proc_source) {
            Ok(p) => {
                config.services = p.services;
                if config.deploy.release.is_none() {
                    config.deploy.release = p.release;
                }
                origin = Some(ProcfileOrigin {
                    source: proc_source,
                    lines: p.lines,
                });
            }
            Err(errors) => {
                report.diagnostics = errors;
                return Err(report);
            }
        }
    }
    let environments = environment_names(&config);
    let mut found =
        SemanticChecker::new(&config, &source, Locator::new(&doc), origin).run(&environments);
    let dir = absolute_dir(path);
    let rule_files = load_rule_files(
        &config,
        &dir,
        &source,
        &Locator::new(&doc),
        &mut found,
        &mut report.sources,
    );
    report.diagnostics = found;
    report.diagnostics.sort_by(|a, b| {
        (a.level, &a.file, a.line, a.column).cmp(&(b.level, &b.file, b.line, b.column))
    });
    if report.error_count() > 0 {
        return Err(report);
    }
    let name = config.project.name.clone().unwrap_or_else(|| {
        dir.file_name().map_or_else(
            || "project".to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    Ok(Project {
        file: path.to_path_buf(),
        dir,
        name,
        config,
        warnings: report,
        rule_files,
    })
}

/// Reads and checks every rule file `[metrics] rule_files` names (relative to the project
/// folder); a pattern naming a missing file is an error at that entry of `slipway.toml`, a
/// glob matching nothing a warning.
fn load_rule_files(
    config: &Config,
    dir: &Path,
    source: &SourceFile,
    locator: &Locator<'_, '_>,
    out: &mut Vec<Diagnostic>,
    sources: &mut Vec<SourceFile>,
) -> Vec<rulefile::RuleFile> {
    let mut files = Vec::new();
    for (i, pattern) in config.metrics.rule_files.iter().enumerate() {
        let at = check::KeyPath::root()
            .key("metrics")
            .key("rule_files")
            .index(i);
        let span = locator.value_span(&at).unwrap_or(0..0);
        let found = match rulefile::expand(dir, pattern) {
            Ok(f) => f,
            Err(message) => {
                out.push(source.diagnostic(
                    Level::Error,
                    span.clone(),
                    at.to_string(),
                    message,
                    Some("paths are relative to the folder of slipway.toml".into()),
                ));
                continue;
            }
        };
        if found.is_empty() {
            out.push(source.diagnostic(
                Level::Warning,
                span.clone(),
                at.to_string(),
                format!("`{pattern}` matches no file"),
                Some("paths are relative to the folder of slipway.toml".into()),
            ));
        }
        for file in found {
            // Named as the user would: relative to the project folder.
            let shown = file
                .strip_prefix(dir)
                .map_or(file.clone(), Path::to_path_buf);
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    out.push(source.diagnostic(
                        Level::Error,
                        span.clone(),
                        at.to_string(),
                        format!("cannot read {}: {e}", shown.display()),
                        None,
                    ));
                    continue;
                }
            };
            let rule_source = SourceFile::new(&shown, text);
            match rulefile::parse(&rule_source) {
                Ok(mut f) => {
                    f.path = file.clone();
                    files.push(f);
                }
                Err(ds) => {
                    out.extend(ds);
                    sources.push(rule_source);
                }
            }
        }
    }
    files
}

fn absolute_dir(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(dir)
        .map(|d| d.components().collect())
        .unwrap_or_else(|_| dir.to_path_buf())
}

fn environment_names(config: &Config) -> Vec<String> {
    if config.environments.is_empty() {
        vec![IMPLICIT_ENVIRONMENT.to_string()]
    } else {
        config.environments.keys().cloned().collect()
    }
}

impl Project {
    /// The environments, in file order (`local` when none is declared).
    pub fn environments(&self) -> Vec<String> {
        environment_names(&self.config)
    }

    /// The environment used without `--env`.
    pub fn default_environment(&self) -> String {
        if let Some(d) = &self.config.project.default_environment {
            return d.clone();
        }
        let names = self.environments();
        if names.iter().any(|n| n == IMPLICIT_ENVIRONMENT) {
            return IMPLICIT_ENVIRONMENT.to_string();
        }
        names
            .into_iter()
            .next()
            .unwrap_or_else(|| IMPLICIT_ENVIRONMENT.to_string())
    }

    /// One environment with overrides applied and defaults filled in.
    pub fn resolve(&self, environment: &str) -> Result<ResolvedEnv, ResolveError> {
        let known = self.environments();
        if !known.iter().any(|k| k == environment) {
            return Err(ResolveError::UnknownEnvironment {
                name: environment.to_string(),
                known,
            });
        }
        let mut resolved = resolve::resolve(&self.config, &self.dir, &self.name, environment)
            .map_err(|source| ResolveError::Overlay {
                name: environment.to_string(),
                source,
            })?;
        // The rule files' recording rules run beside the file's own (their alerting rules
        // are the alerts' business).
        for file in &self.rule_files {
            for group in &file.groups {
                for rule in &group.rules {
                    let rulefile::RuleKind::Record(record) = &rule.kind else {
                        continue;
                    };
                    let mut labels = group.labels.clone();
                    labels.extend(rule.labels.clone());
                    resolved.metrics.rules.push(model::RecordingRule {
                        record: record.clone(),
                        expr: rule.expr.clone(),
                        labels,
                        interval: group.interval,
                    });
                }
            }
        }
        Ok(resolved)
    }
}

/// The JSON Schema of `slipway.toml` (what `slipway schema` prints).
pub fn json_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::schema_for!(Config);
        serde_json::to_value(schema).expect("a schema is JSON")
    })
}
