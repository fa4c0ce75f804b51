//! Prometheus rule files (`[metrics] rule_files = ["ops/rules/*.yml"]`), accepted as they are:
//! `groups[]{name, interval, query_offset, limit, labels, rules[]{record | alert, expr, for,
//! keep_firing_for, labels, annotations}}`, checked as Prometheus checks them (`promtool check
//! rules`): one of `record`/`alert`, an `expr` that parses, no `for` or `annotations` on a
//! recording rule, valid metric and label names, group names unique in a file, no unknown
//! keys. Every problem is a diagnostic at its file, line and column; a PromQL error points into
//! the expression.
//!
//! The YAML is read with `yaml-rust2`'s event parser, which gives every scalar's position: the
//! tree built from it keeps them.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostic::{Diagnostic, Level, SourceFile};
use crate::units::Duration;

/// A rule file's groups.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleFile {
    /// The file, as found.
    pub path: PathBuf,
    /// Its groups, in file order.
    pub groups: Vec<RuleGroup>,
}

/// One `groups[]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleGroup {
    /// Unique in its file.
    pub name: String,
    /// How often its rules are evaluated (default: `[metrics] interval`).
    pub interval: Option<Duration>,
    /// Evaluate this long in the past (for late data).
    pub query_offset: Option<Duration>,
    /// Most series (or alerts) one rule may produce; 0: no limit.
    pub limit: usize,
    /// Labels added to every rule's output.
    pub labels: IndexMap<String, String>,
    /// The rules, in order (each sees the previous ones' output of the same evaluation).
    pub rules: Vec<Rule>,
}

/// A recording or an alerting rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `record: NAME` or `alert: NAME`.
    pub kind: RuleKind,
    /// The PromQL expression.
    pub expr: String,
    /// Alerts: how long the condition must hold before firing.
    pub for_: Option<Duration>,
    /// Alerts: how long to keep firing once the condition is gone.
    pub keep_firing_for: Option<Duration>,
    /// Labels added to the output (templated for alerts).
    pub labels: IndexMap<String, String>,
    /// Alerts: annotations (templated).
    pub annotations: IndexMap<String, String>,
    /// Line of the rule in its file.
    pub line: usize,
}

/// What a rule makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// A series of this name.
    Record(String),
    /// Alerts of this name.
    Alert(String),
}

/// A YAML value with where it starts.
#[derive(Clone, Debug)]
enum Node {
    Scalar {
        value: String,
        style: TScalarStyle,
        mark: Marker,
    },
    Seq(Vec<Node>, Marker),
    Map(Vec<(Node, Node)>, Marker),
}

impl Node {
    /// Where it starts (a mapping: its first key; the parser marks mappings oddly).
    fn mark(&self) -> Marker {
        match self {
            Node::Map(entries, mark) => entries.first().map_or(*mark, |(k, _)| k.mark()),
            Node::Scalar { mark, .. } | Node::Seq(_, mark) => *mark,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a value",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, style: TScalarStyle::Plain, .. } if value.is_empty() || value == "~" || value == "null")
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    /// A mapping's pending key, per open mapping.
    keys: Vec<Option<Node>>,
    root: Option<Node>,
    alias: Option<Marker>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Node::Seq(items, _)) => items.push(node),
            Some(Node::Map(entries, _)) => {
                let slot = self.keys.last_mut().expect("a key slot per mapping");
                match slot.take() {
                    None => *slot = Some(node),
                    Some(key) => entries.push((key, node)),
                }
            }
            Some(Node::Scalar { .. }) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, _, _) => self.push(Node::Scalar { value, style, mark }),
            Event::SequenceStart(..) => self.stack.push(Node::Seq(Vec::new(), mark)),
            Event::MappingStart(..) => {
                self.stack.push(Node::Map(Vec::new(), mark));
                self.keys.push(None);
            }
            Event::SequenceEnd => {
                if let Some(n) = self.stack.pop() {
                    self.push(n);
                }
            }
            Event::MappingEnd => {
                self.keys.pop();
                if let Some(n) = self.stack.pop() {
                    self.push(n);
                }
            }
            Event::Alias(_) => {
                self.alias.get_or_insert(mark);
                self.push(Node::Scalar {
                    value: String::new(),
                    style: TScalarStyle::Plain,
                    mark,
                });
            }
            _ => {}
        }
    }
}

struct Checker<'a> {
    source: &'a SourceFile,
    out: Vec<Diagnostic>,
}

/// Byte offset of a 1-based line and 0-based column in characters.
fn offset(source: &SourceFile, line: usize, col: usize) -> usize {
    let text = &source.text;
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    text[start..]
        .char_indices()
        .nth(col)
        .map_or(text.len(), |(i, _)| start + i)
}

impl Checker<'_> {
    fn at(&mut self, mark: Marker, path: &str, message: String, hint: Option<&str>) {
        let start = offset(self.source, mark.line(), mark.col());
        let end = self.source.text[start..]
            .find(['\n', ':', ','])
            .map_or(self.source.text.len(), |i| start + i.max(1));
        self.out.push(self.source.diagnostic(
            Level::Error,
            start..end,
            path,
            message,
            hint.map(str::to_string),
        ));
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node {
            Node::Scalar { value, .. } => Some(value.clone()),
            other => {
                let kind = other.kind();
                self.at(
                    other.mark(),
                    path,
                    format!("`{path}` must be a string, not {kind}"),
                    None,
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = self.string(node, path)?;
        match text.parse::<Duration>() {
            Ok(d) => Some(d),
            Err(e) => {
                self.at(
                    node.mark(),
                    path,
                    format!("`{path}`: {e}"),
                    Some("write a duration such as 30s, 5m or 1h"),
                );
                None
            }
        }
    }

    fn label_map(&mut self, node: &Node, path: &str) -> IndexMap<String, String> {
        let mut out = IndexMap::new();
        let Node::Map(entries, _) = node else {
            if !node.is_null() {
                self.at(
                    node.mark(),
                    path,
                    format!("`{path}` must be a mapping of names to values"),
                    None,
                );
            }
            return out;
        };
        for (k, v) in entries {
            let Some(name) = self.string(k, path) else {
                continue;
            };
            let Some(value) = self.string(v, &format!("{path}.{name}")) else {
                continue;
            };
            out.insert(name, value);
        }
        out
    }

    fn label_names(&mut self, node: &Node, labels: &IndexMap<String, String>, path: &str) {
        let Node::Map(entries, _) = node else { return };
        for (k, _) in entries {
            let Node::Scalar { value, mark, .. } = k else {
                continue;
            };
            if !labels.contains_key(value) {
                continue;
            }
            if value == "__name__" {
                self.at(
                    *mark,
                    path,
                    format!("`{path}` cannot set `__name__`"),
                    Some("the rule's name is the series' name"),
                );
            } else if !valid_label_name(value) {
                self.at(
                    *mark,
                    path,
                    format!("`{value}` is not a label name"),
                    Some("use letters, digits and `_`, not starting with a digit"),
                );
            }
        }
    }

    fn expr(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = self.string(node, path)?;
        if let Err(e) = crate::promql::parse(&text) {
            let Node::Scalar { style, mark, .. } = node else {
                return None;
            };
            // Where the expression's error is in the file.
            let (line, col) = match style {
                TScalarStyle::Literal => (mark.line() + e.line - 1, mark.col() + e.column - 1),
                TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted if e.line == 1 => {
                    (mark.line(), mark.col() + e.column)
                }
                _ if e.line == 1 => (mark.line(), mark.col() + e.column - 1),
                _ => (mark.line(), mark.col()),
            };
            let start = offset(self.source, line, col);
            let end = (start + 1).min(self.source.text.len());
            self.out.push(self.source.diagnostic(
                Level::Error,
                start..end,
                path,
                format!("invalid PromQL: {}", e.message),
                Some("see https://prometheus.io/docs/prometheus/latest/querying/basics/".into()),
            ));
            return None;
        }
        Some(text)
    }

    fn unknown(&mut self, key: &Node, path: &str, known: &[&str]) {
        let Node::Scalar { value, mark, .. } = key else {
            return;
        };
        let close = known
            .iter()
            .map(|k| (strsim::jaro_winkler(k, value), *k))
            .filter(|(s, _)| *s > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!("did you mean `{k}`?"));
        let hint = close.unwrap_or_else(|| format!("known: {}", known.join(", ")));
        self.at(
            *mark,
            path,
            format!("unknown key `{value}` in {path}"),
            Some(&hint),
        );
    }

    fn group(&mut self, node: &Node, path: &str) -> Option<RuleGroup> {
        let Node::Map(entries, _) = node else {
            self.at(
                node.mark(),
                path,
                format!("`{path}` must be a mapping with `name` and `rules`"),
                None,
            );
            return None;
        };
        let mark = &node.mark();
        let mut group = RuleGroup {
            name: String::new(),
            interval: None,
            query_offset: None,
            limit: 0,
            labels: IndexMap::new(),
            rules: Vec::new(),
        };
        let mut ok = true;
        let mut has_name = false;
        for (k, v) in entries {
            let Node::Scalar { value: key, .. } = k else {
                continue;
            };
            let p = format!("{path}.{key}");
            match key.as_str() {
                "name" => {
                    has_name = true;
                    match self.string(v, &p) {
                        Some(n) if !n.is_empty() => group.name = n,
                        Some(_) => {
                            self.at(
                                v.mark(),
                                &p,
                                "a group's `name` cannot be empty".into(),
                                None,
                            );
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                "interval" => group.interval = self.duration(v, &p),
                "query_offset" => group.query_offset = self.duration(v, &p),
                "limit" => match self.string(v, &p).map(|s| s.parse::<usize>()) {
                    Some(Ok(n)) => group.limit = n,
                    Some(Err(_)) => {
                        self.at(v.mark(), &p, "`limit` must be a whole number".into(), None);
                        ok = false;
                    }
                    None => ok = false,
                },
                "labels" => {
                    group.labels = self.label_map(v, &p);
                    self.label_names(v, &group.labels.clone(), &p);
                }
                "rules" => match v {
                    Node::Seq(items, _) => {
                        for (i, item) in items.iter().enumerate() {
                            match self.rule(item, &format!("{p}[{i}]")) {
                                Some(r) => group.rules.push(r),
                                None => ok = false,
                            }
                        }
                    }
                    n if n.is_null() => {}
                    other => {
                        self.at(other.mark(), &p, "`rules` must be a list".into(), None);
                        ok = false;
                    }
                },
                _ => {
                    self.unknown(
                        k,
                        path,
                        &[
                            "name",
                            "interval",
                            "query_offset",
                            "limit",
                            "labels",
                            "rules",
                        ],
                    );
                    ok = false;
                }
            }
        }
        if !has_name {
            self.at(
                *mark,
                path,
                format!("{path} has no `name`"),
                Some("add `name: my-group`"),
            );
            ok = false;
        }
        ok.then_some(group)
    }

    fn rule(&mut self, node: &Node, path: &str) -> Option<Rule> {
        let Node::Map(entries, _) = node else {
            self.at(
                node.mark(),
                path,
                format!("`{path}` must be a mapping (`record` or `alert`, and `expr`)"),
                None,
            );
            return None;
        };
        let mark = &node.mark();
        let mut record = None;
        let mut alert = None;
        let mut expr = None;
        let mut expr_ok = true;
        let mut rule = Rule {
            kind: RuleKind::Record(String::new()),
            expr: String::new(),
            for_: None,
            keep_firing_for: None,
            labels: IndexMap::new(),
            annotations: IndexMap::new(),
            line: mark.line(),
        };
        let mut ok = true;
        let mut alert_only: Vec<(Marker, &str)> = Vec::new();
        for (k, v) in entries {
            let Node::Scalar {
                value: key,
                mark: kmark,
                ..
            } = k
            else {
                continue;
            };
            let p = format!("{path}.{key}");
            match key.as_str() {
                "record" => record = self.string(v, &p).map(|s| (s, v.mark())),
                "alert" => alert = self.string(v, &p).map(|s| (s, v.mark())),
                "expr" => {
                    expr = self.expr(v, &p);
                    expr_ok = expr.is_some();
                    if expr.is_none() && matches!(v, Node::Scalar { .. }) {
                        // Reported by `expr`; remember it was there.
                        expr = Some(String::new());
                    }
                }
                "for" => {
                    rule.for_ = self.duration(v, &p);
                    alert_only.push((*kmark, "for"));
                }
                "keep_firing_for" => {
                    rule.keep_firing_for = self.duration(v, &p);
                    alert_only.push((*kmark, "keep_firing_for"));
                }
                "labels" => {
                    rule.labels = self.label_map(v, &p);
                    self.label_names(v, &rule.labels.clone(), &p);
                }
                "annotations" => {
                    rule.annotations = self.label_map(v, &p);
                    alert_only.push((*kmark, "annotations"));
                }
                _ => {
                    self.unknown(
                        k,
                        path,
                        &[
                            "record",
                            "alert",
                            "expr",
                            "for",
                            "keep_firing_for",
                            "labels",
                            "annotations",
                        ],
                    );
                    ok = false;
                }
            }
        }
        match (record, alert) {
            (Some(_), Some((_, m))) => {
                self.at(
                    m,
                    path,
                    "a rule has `record` or `alert`, not both".into(),
                    None,
                );
                ok = false;
            }
            (None, None) => {
                self.at(
                    *mark,
                    path,
                    format!("{path} has neither `record` nor `alert`"),
                    Some("add `record: job:metric:rate5m` or `alert: HighErrorRate`"),
                );
                ok = false;
            }
            (Some((name, m)), None) => {
                if !valid_metric_name(&name) {
                    self.at(
                        m,
                        path,
                        format!("`{name}` is not a metric name"),
                        Some("use letters, digits, `_` and `:`, as in `job:http_errors:rate5m`"),
                    );
                    ok = false;
                }
                for (km, key) in &alert_only {
                    self.at(
                        *km,
                        path,
                        format!("a recording rule cannot have `{key}`"),
                        Some("only alerting rules (`alert:`) take it"),
                    );
                    ok = false;
                }
                rule.kind = RuleKind::Record(name);
            }
            (None, Some((name, m))) => {
                if name.is_empty() {
                    self.at(m, path, "an alert's name cannot be empty".into(), None);
                    ok = false;
                }
                rule.kind = RuleKind::Alert(name);
            }
        }
        match expr {
            None => {
                self.at(
                    *mark,
                    path,
                    format!("{path} has no `expr`"),
                    Some("add the PromQL expression: `expr: sum(rate(http_requests_total[5m]))`"),
                );
                ok = false;
            }
            Some(e) => rule.expr = e,
        }
        (ok && expr_ok).then_some(rule)
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses and checks one rule file.
pub fn parse(source: &SourceFile) -> Result<RuleFile, Vec<Diagnostic>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(&source.text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        let start = offset(source, m.line(), m.col());
        return Err(vec![source.diagnostic(
            Level::Error,
            start..(start + 1).min(source.text.len()),
            "",
            format!("invalid YAML: {}", e.info()),
            Some("see https://prometheus.io/docs/prometheus/latest/configuration/recording_rules/".into()),
        )]);
    }
    let mut c = Checker {
        source,
        out: Vec::new(),
    };
    if let Some(m) = builder.alias {
        c.at(
            m,
            "",
            "YAML aliases are not supported in rule files".into(),
            Some("write the value out"),
        );
    }
    let mut file = RuleFile {
        path: source.path.clone(),
        groups: Vec::new(),
    };
    match &builder.root {
        None => {}
        Some(n) if n.is_null() => {}
        Some(Node::Map(entries, _)) => {
            for (k, v) in entries {
                let Node::Scalar { value: key, .. } = k else {
                    continue;
                };
                if key != "groups" {
                    c.unknown(k, "the file", &["groups"]);
                    continue;
                }
                match v {
                    Node::Seq(items, _) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(g) = c.group(item, &format!("groups[{i}]")) {
                                file.groups.push(g);
                            }
                        }
                    }
                    n if n.is_null() => {}
                    other => c.at(
                        other.mark(),
                        "groups",
                        "`groups` must be a list".into(),
                        None,
                    ),
                }
            }
        }
        Some(other) => c.at(
            other.mark(),
            "",
            "a rule file is a mapping with `groups:`".into(),
            Some("start with `groups:` and a list of `- name: …` entries"),
        ),
    }
    // Group names are unique in a file.
    if let Some(Node::Map(entries, _)) = &builder.root
        && let Some((_, Node::Seq(items, _))) = entries
            .iter()
            .find(|(k, _)| matches!(k, Node::Scalar { value, .. } if value == "groups"))
    {
        let mut seen: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Node::Map(fields, _) = item else { continue };
            for (k, v) in fields {
                if let (
                    Node::Scalar { value: key, .. },
                    Node::Scalar {
                        value: name, mark, ..
                    },
                ) = (k, v)
                    && key == "name"
                {
                    if seen.contains(name) {
                        c.at(
                            *mark,
                            &format!("groups[{i}].name"),
                            format!("groups[{i}]: group name `{name}` is repeated in the file"),
                            Some("give each group its own name"),
                        );
                    }
                    seen.push(name.clone());
                }
            }
        }
    }
    if c.out.is_empty() {
        Ok(file)
    } else {
        Err(c.out)
    }
}

/// The files a `rule_files` pattern names, relative to `dir`: `*`, `?` and `[...]` in any
/// path component, as Prometheus' (Go's) globbing. A pattern without wildcards names one file
/// that must exist (`Err` then); one with wildcards may match nothing.
pub fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let full = dir.join(pattern);
    if !wild(pattern) {
        return if full.is_file() {
            Ok(vec![full])
        } else {
            Err(format!("rule file `{pattern}` does not exist"))
        };
    }
    let mut found = vec![PathBuf::new()];
    for comp in full.components() {
        let part = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if !wild(&part) {
                next.push(base.join(comp.as_os_str()));
                continue;
            }
            let Ok(matcher) = globset::Glob::new(&part).map(|g| g.compile_matcher()) else {
                return Err(format!("`{pattern}` is not a valid pattern"));
            };
            let Ok(entries) = std::fs::read_dir(if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base
            }) else {
                continue;
            };
            let mut names: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| matcher.is_match(e.file_name()))
                .map(|e| base.join(e.file_name()))
                .collect();
            names.sort();
            next.extend(names);
        }
        found = next;
    }
    Ok(found.into_iter().filter(|p| p.is_file()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<RuleFile, Vec<String>> {
        let source = SourceFile::new("rules.yml", text);
        parse(&source).map_err(|ds| {
            ds.iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect()
        })
    }

    #[test]
    fn the_documented_example_loads() {
        let f = check(
            "groups:\n- name: example\n  labels: {team: myteam}\n  interval: 30s\n  rules:\n  - record: code:prometheus_http_requests_total:sum\n    expr: sum by (code) (prometheus_http_requests_total)\n  - alert: HighRequestLatency\n    expr: job:request_latency_seconds:mean5m{job=\"myjob\"} > 0.5\n    for: 10m\n    keep_firing_for: 5m\n    labels: {severity: page}\n    annotations:\n      summary: High request latency\n",
        )
        .unwrap();
        let g = &f.groups[0];
        assert_eq!(g.name, "example");
        assert_eq!(g.interval.map(|d| d.std().as_secs()), Some(30));
        assert_eq!(g.labels["team"], "myteam");
        assert_eq!(g.rules.len(), 2);
        assert_eq!(
            g.rules[0].kind,
            RuleKind::Record("code:prometheus_http_requests_total:sum".into())
        );
        assert_eq!(
            g.rules[1].kind,
            RuleKind::Alert("HighRequestLatency".into())
        );
        assert_eq!(g.rules[1].for_.map(|d| d.std().as_secs()), Some(600));
        assert_eq!(g.rules[1].annotations["summary"], "High request latency");
        assert_eq!(g.rules[1].line, 8);
    }

    #[test]
    fn problems_are_found_where_they_are() {
        let errors = check(
            "groups:\n- name: a\n  rules:\n  - record: ok:x\n    expr: foo bar\n  - record: bad name\n    expr: up\n    for: 5m\n  - alert: A\n    expr: |\n      sum(\n        rate(x[5m]) +\n      )\n  - alert: B\n    exp: up\n- name: a\n  rulez: []\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "5:15: invalid PromQL: unexpected identifier \"bar\"",
                "6:13: `bad name` is not a metric name",
                "8:5: a recording rule cannot have `for`",
                "13:7: invalid PromQL: unexpected character \")\"",
                "15:5: unknown key `exp` in groups[0].rules[3]",
                "14:5: groups[0].rules[3] has no `expr`",
                "17:3: unknown key `rulez` in groups[1]",
                "16:9: groups[1]: group name `a` is repeated in the file",
            ]
        );
    }

    #[test]
    fn broken_yaml_names_its_line() {
        let errors = check("groups:\n- name: a\n  rules: [\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("4:1: invalid YAML") || errors[0].contains("invalid YAML"),
            "{errors:?}"
        );
    }

    #[test]
    fn patterns_expand_like_prometheus() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ops/rules")).unwrap();
        for f in ["b.yml", "a.yml", "c.yaml"] {
            std::fs::write(dir.path().join("ops/rules").join(f), "groups: []\n").unwrap();
        }
        let names = |p: &str| -> Vec<String> {
            expand(dir.path(), p)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("ops/rules/*.yml"), ["a.yml", "b.yml"]);
        assert_eq!(names("ops/*/c.yaml"), ["c.yaml"]);
        assert!(names("nothing/*.yml").is_empty());
        assert!(
            expand(dir.path(), "ops/missing.yml")
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
