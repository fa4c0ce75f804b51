//! The scrape body parser: this module owns reading the Prometheus text exposition format 0.0.4 and the
//! OpenMetrics 1.0 text format into samples and metric-family metadata.
//!
//! It is strict where the formats are strict and lenient only where Prometheus' own parser is: in 0.0.4, runs
//! of spaces and tabs between tokens (also inside `{}`, and at the start and end of a line) and a `\r` before
//! the `\n`; in both formats, a trailing comma inside `{}` and unknown backslash sequences in `# HELP` text
//! (kept as written).
//! The first error stops parsing and names the 1-based line and column (in characters) where the problem
//! starts, since a scrape with any error is a failed scrape.
//!
//! Not supported: the UTF-8 quoted metric and label names of newer Prometheus versions (`{"my.metric"} 1`),
//! native histograms (protobuf only) and the exemplar and created-timestamp data themselves (exemplars are
//! checked for syntax, then dropped).

use std::collections::{HashMap, HashSet};

/// Which text format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text exposition format 0.0.4.
    Prometheus,
    /// The OpenMetrics 1.0 text format.
    OpenMetrics,
}

impl Format {
    /// From a response's Content-Type header (`application/openmetrics-text...` → OpenMetrics; anything else,
    /// including a missing header, → Prometheus 0.0.4).
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        let Some(content_type) = content_type else {
            return Format::Prometheus;
        };
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The metric type a `# TYPE` line declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped` (Prometheus 0.0.4 only; also the kind of a family with no `# TYPE` line there).
    Untyped,
    /// `info` (OpenMetrics only).
    Info,
    /// `stateset` (OpenMetrics only).
    StateSet,
    /// `gaugehistogram` (OpenMetrics only).
    GaugeHistogram,
    /// `unknown` (OpenMetrics only; also the kind of a family with no `# TYPE` line there).
    Unknown,
}

impl MetricType {
    /// The type a `# TYPE` keyword names in `format`, if that format has it.
    fn from_keyword(keyword: &str, format: Format) -> Option<MetricType> {
        let kind = match (keyword, format) {
            ("counter", _) => MetricType::Counter,
            ("gauge", _) => MetricType::Gauge,
            ("histogram", _) => MetricType::Histogram,
            ("summary", _) => MetricType::Summary,
            ("untyped", Format::Prometheus) => MetricType::Untyped,
            ("info", Format::OpenMetrics) => MetricType::Info,
            ("stateset", Format::OpenMetrics) => MetricType::StateSet,
            ("gaugehistogram", Format::OpenMetrics) => MetricType::GaugeHistogram,
            ("unknown", Format::OpenMetrics) => MetricType::Unknown,
            _ => return None,
        };
        Some(kind)
    }

    /// The suffixes (besides the bare family name) that this type's sample names carry.
    fn sample_suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_count", "_sum", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            MetricType::Summary => &["_count", "_sum", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge
            | MetricType::Untyped
            | MetricType::StateSet
            | MetricType::Unknown => &[],
        }
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as written on the sample line (e.g. `http_requests_total`, `x_bucket`).
    pub name: String,
    /// Label pairs in the order written, values unescaped. No `__name__` entry.
    pub labels: Vec<(String, String)>,
    /// The value (NaN, +Inf, -Inf allowed).
    pub value: f64,
    /// The timestamp in MILLISECONDS since the epoch, if the line has one (OpenMetrics timestamps are seconds with
    /// optional fraction: convert to ms; Prometheus text timestamps are integer ms).
    pub timestamp_ms: Option<i64>,
}

/// A metric family's declared metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The family name as written on its `# HELP`, `# TYPE` or `# UNIT` line.
    pub name: String,
    /// The declared type (`Untyped` in Prometheus 0.0.4, `Unknown` in OpenMetrics when no `# TYPE` line).
    pub kind: MetricType,
    /// The unescaped `# HELP` text, if there was a `# HELP` line.
    pub help: Option<String>,
    /// The `# UNIT` text (OpenMetrics only), if there was a `# UNIT` line.
    pub unit: Option<String>,
}

/// Everything a body holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// The samples in the order written.
    pub samples: Vec<Sample>,
    /// The families in the order their first metadata line appeared.
    pub families: Vec<Family>,
}

/// Why a body could not be parsed: the 1-based line and column, and what was expected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// The 1-based column, in characters, where the problem starts.
    pub column: usize,
    /// What was expected or what is wrong.
    pub message: String,
}

/// Parses a whole body. The first error stops parsing (a scrape with any error is a failed scrape).
pub fn parse(body: &str, format: Format) -> Result<Exposition, ParseError> {
    let mut parser = Parser::new(format, body.len());
    let mut pos = 0;
    let mut last = Line {
        text: "",
        number: 1,
    };
    let mut number = 0;
    while pos < body.len() {
        number += 1;
        let rest = &body[pos..];
        let (text, next) = match rest.find('\n') {
            Some(end) => (&rest[..end], pos + end + 1),
            None => (rest, body.len()),
        };
        let line = Line { text, number };
        if format == Format::OpenMetrics && text == "# EOF" {
            if next < body.len() {
                return Err(ParseError {
                    line: number + 1,
                    column: 1,
                    message: "unexpected data after \"# EOF\"".to_owned(),
                });
            }
            return Ok(parser.out);
        }
        parser.line(&line)?;
        last = line;
        pos = next;
    }
    match format {
        Format::Prometheus => Ok(parser.out),
        Format::OpenMetrics => Err(last.error(
            last.text.len(),
            "missing \"# EOF\" at the end of an OpenMetrics body",
        )),
    }
}

/// One line of the body, without its `\n`.
#[derive(Clone, Copy)]
struct Line<'a> {
    text: &'a str,
    number: usize,
}

impl Line<'_> {
    /// An error starting at byte `at` of this line.
    fn error(&self, at: usize, message: impl Into<String>) -> ParseError {
        let at = at.min(self.text.len());
        // Count the characters before `at`: every byte that is not a UTF-8 continuation byte starts one.
        let before = self.text.as_bytes()[..at]
            .iter()
            .filter(|b| (**b & 0xC0) != 0x80)
            .count();
        ParseError {
            line: self.number,
            column: before + 1,
            message: message.into(),
        }
    }

    /// Describes what is at byte `at`, for "expected X, found Y" messages.
    fn found(&self, at: usize) -> String {
        match self.text.get(at..).and_then(|rest| rest.chars().next()) {
            None => "found end of line".to_owned(),
            Some('\'') => "found \"'\"".to_owned(),
            Some(c) => format!("found \"{}\"", c.escape_debug()),
        }
    }

    /// The byte at `at`, if any.
    fn byte(&self, at: usize) -> Option<u8> {
        self.text.as_bytes().get(at).copied()
    }
}

/// What a metadata line declares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meta {
    Help,
    Type,
    Unit,
}

impl Meta {
    fn keyword(self) -> &'static str {
        match self {
            Meta::Help => "HELP",
            Meta::Type => "TYPE",
            Meta::Unit => "UNIT",
        }
    }
}

struct Parser<'a> {
    format: Format,
    out: Exposition,
    /// Family name → index into `out.families`.
    family_index: HashMap<&'a str, usize>,
    /// Per family: whether a `# TYPE` line was seen.
    has_type: Vec<bool>,
    /// Per family: whether a `# UNIT` line was seen.
    has_unit: Vec<bool>,
    /// Every sample name seen so far (to reject a `# TYPE` after its samples).
    sample_names: HashSet<&'a str>,
    /// The previous sample's name, to skip the set insert for runs of one name.
    last_sample_name: &'a str,
    /// The previous sample's label count, to size the next one's label vector.
    last_label_count: usize,
}

const BLANK_PROMETHEUS: &[u8] = b" \t";
const BLANK_OPENMETRICS: &[u8] = b" ";

impl<'a> Parser<'a> {
    fn new(format: Format, body_len: usize) -> Parser<'a> {
        Parser {
            format,
            out: Exposition {
                samples: Vec::with_capacity(body_len / 48),
                families: Vec::new(),
            },
            family_index: HashMap::new(),
            has_type: Vec::new(),
            has_unit: Vec::new(),
            sample_names: HashSet::new(),
            last_sample_name: "",
            last_label_count: 0,
        }
    }

    fn prometheus(&self) -> bool {
        self.format == Format::Prometheus
    }

    /// The bytes that separate tokens: spaces and tabs in Prometheus 0.0.4, one space in OpenMetrics.
    fn blanks(&self) -> &'static [u8] {
        if self.prometheus() {
            BLANK_PROMETHEUS
        } else {
            BLANK_OPENMETRICS
        }
    }

    /// Skips blanks from `at` in Prometheus 0.0.4 (where any run of them may stand between tokens); returns
    /// `at` unchanged in OpenMetrics (which has no optional whitespace).
    fn skip_optional_blanks(&self, line: &Line<'_>, at: usize) -> usize {
        if self.prometheus() {
            skip_blanks(line.text.as_bytes(), at)
        } else {
            at
        }
    }

    fn line(&mut self, line: &Line<'a>) -> Result<(), ParseError> {
        let mut line = *line;
        if let Some(stripped) = line.text.strip_suffix('\r') {
            if !self.prometheus() {
                return Err(line.error(
                    stripped.len(),
                    "a carriage return before the line end is not allowed in OpenMetrics",
                ));
            }
            line.text = stripped;
        }
        let bytes = line.text.as_bytes();
        if self.prometheus() {
            let start = skip_blanks(bytes, 0);
            match bytes.get(start) {
                None => Ok(()),
                Some(b'#') => self.prometheus_comment(&line, start),
                Some(_) => self.sample(&line, start),
            }
        } else {
            match bytes.first() {
                None => Err(line.error(0, "empty lines are not allowed in OpenMetrics")),
                Some(b'#') => self.openmetrics_comment(&line),
                Some(_) => self.sample(&line, 0),
            }
        }
    }

    /// A Prometheus 0.0.4 line starting with `#` at `hash`: `# HELP`, `# TYPE` or a comment.
    fn prometheus_comment(&mut self, line: &Line<'a>, hash: usize) -> Result<(), ParseError> {
        let bytes = line.text.as_bytes();
        let keyword_start = skip_blanks(bytes, hash + 1);
        if keyword_start == hash + 1 {
            return Ok(()); // `#HELP ...` or `#`: a comment.
        }
        let rest = &bytes[keyword_start..];
        let meta = if rest.starts_with(b"HELP") {
            Meta::Help
        } else if rest.starts_with(b"TYPE") {
            Meta::Type
        } else {
            return Ok(());
        };
        let keyword_end = keyword_start + 4;
        let name_start = skip_blanks(bytes, keyword_end);
        if name_start == keyword_end {
            return Ok(()); // `# HELPER`, or `# HELP` alone: a comment.
        }
        let name_end = scan_metric_name(bytes, name_start);
        if name_end == name_start {
            return Err(line.error(
                name_start,
                format!(
                    "expected a metric name after {}, {}",
                    meta.keyword(),
                    line.found(name_start)
                ),
            ));
        }
        let name = &line.text[name_start..name_end];
        if name_end < bytes.len() && !is_blank(bytes[name_end], BLANK_PROMETHEUS) {
            return Err(line.error(
                name_end,
                format!(
                    "expected whitespace after metric name {name:?} in {}, {}",
                    meta.keyword(),
                    line.found(name_end)
                ),
            ));
        }
        let text_start = skip_blanks(bytes, name_end);
        let text = &line.text[text_start..];
        self.metadata(line, meta, name_start, name, text_start, text)
    }

    /// An OpenMetrics line starting with `#` (`# EOF` was handled already): `# HELP`, `# TYPE` or `# UNIT`.
    fn openmetrics_comment(&mut self, line: &Line<'a>) -> Result<(), ParseError> {
        let bytes = line.text.as_bytes();
        if line.byte(1) != Some(b' ') {
            return Err(line.error(
                1,
                format!(
                    "expected \" \" after \"#\" (OpenMetrics has no free-form comments), {}",
                    line.found(1)
                ),
            ));
        }
        let rest = &bytes[2..];
        let meta = if rest.starts_with(b"HELP") {
            Meta::Help
        } else if rest.starts_with(b"TYPE") {
            Meta::Type
        } else if rest.starts_with(b"UNIT") {
            Meta::Unit
        } else if rest.starts_with(b"EOF") {
            return Err(line.error(
                5,
                format!("expected end of line after \"# EOF\", {}", line.found(5)),
            ));
        } else {
            return Err(line.error(
                2,
                format!(
                    "expected HELP, TYPE, UNIT or EOF after \"# \" (OpenMetrics has no free-form comments), {}",
                    line.found(2)
                ),
            ));
        };
        if line.byte(6) != Some(b' ') {
            return Err(line.error(
                6,
                format!("expected \" \" after {}, {}", meta.keyword(), line.found(6)),
            ));
        }
        let name_start = 7;
        let name_end = scan_metric_name(bytes, name_start);
        if name_end == name_start {
            return Err(line.error(
                name_start,
                format!(
                    "expected a metric name after {}, {}",
                    meta.keyword(),
                    line.found(name_start)
                ),
            ));
        }
        let name = &line.text[name_start..name_end];
        if line.byte(name_end) != Some(b' ') {
            return Err(line.error(
                name_end,
                format!(
                    "expected \" \" and text after metric name {name:?} in {}, {}",
                    meta.keyword(),
                    line.found(name_end)
                ),
            ));
        }
        let text_start = name_end + 1;
        let text = &line.text[text_start..];
        self.metadata(line, meta, name_start, name, text_start, text)
    }

    /// Records one `# HELP`, `# TYPE` or `# UNIT` line whose name starts at byte `name_start` and whose text
    /// (after the separating whitespace) starts at byte `text_start`.
    fn metadata(
        &mut self,
        line: &Line<'a>,
        meta: Meta,
        name_start: usize,
        name: &'a str,
        text_start: usize,
        text: &str,
    ) -> Result<(), ParseError> {
        match meta {
            Meta::Help => {
                let help = unescape_help(text, self.format);
                let index = self.family(name);
                let family = &mut self.out.families[index];
                if family.help.is_some() {
                    return Err(
                        line.error(name_start, format!("second HELP line for metric {name:?}"))
                    );
                }
                family.help = Some(help);
            }
            Meta::Type => {
                if text.is_empty() {
                    return Err(line.error(
                        text_start,
                        format!("expected a metric type after metric name {name:?} in TYPE"),
                    ));
                }
                let Some(kind) = MetricType::from_keyword(text, self.format) else {
                    let expected = match self.format {
                        Format::Prometheus => "counter, gauge, histogram, summary or untyped",
                        Format::OpenMetrics => {
                            "counter, gauge, histogram, gaugehistogram, stateset, info, summary or unknown"
                        }
                    };
                    return Err(line.error(
                        text_start,
                        format!("invalid metric type {text:?} (expected {expected})"),
                    ));
                };
                let index = self.family(name);
                if self.has_type[index] {
                    return Err(
                        line.error(name_start, format!("second TYPE line for metric {name:?}"))
                    );
                }
                if self.has_samples_of(name, kind) {
                    return Err(line.error(
                        name_start,
                        format!("TYPE line for metric {name:?} after its samples"),
                    ));
                }
                self.has_type[index] = true;
                self.out.families[index].kind = kind;
            }
            Meta::Unit => {
                if let Some(bad) = text.bytes().position(|b| !is_metric_name_byte(b)) {
                    return Err(line.error(
                        text_start + bad,
                        format!(
                            "invalid character in unit, {}",
                            line.found(text_start + bad)
                        ),
                    ));
                }
                let is_suffix = text.is_empty()
                    || name
                        .strip_suffix(text)
                        .is_some_and(|stem| stem.len() > 1 && stem.ends_with('_'));
                if !is_suffix {
                    return Err(line.error(
                        text_start,
                        format!(
                            "unit {text:?} is not a suffix of metric name {name:?} (after \"_\")"
                        ),
                    ));
                }
                let index = self.family(name);
                if self.has_unit[index] {
                    return Err(
                        line.error(name_start, format!("second UNIT line for metric {name:?}"))
                    );
                }
                self.has_unit[index] = true;
                self.out.families[index].unit = Some(text.to_owned());
            }
        }
        Ok(())
    }

    /// The index of family `name`, created with the format's default type if new.
    fn family(&mut self, name: &'a str) -> usize {
        if let Some(&index) = self.family_index.get(name) {
            return index;
        }
        let index = self.out.families.len();
        let kind = match self.format {
            Format::Prometheus => MetricType::Untyped,
            Format::OpenMetrics => MetricType::Unknown,
        };
        self.out.families.push(Family {
            name: name.to_owned(),
            kind,
            help: None,
            unit: None,
        });
        self.has_type.push(false);
        self.has_unit.push(false);
        self.family_index.insert(name, index);
        index
    }

    /// Whether a sample of family `name` of type `kind` was already seen.
    fn has_samples_of(&self, name: &str, kind: MetricType) -> bool {
        if self.sample_names.contains(name) {
            return true;
        }
        kind.sample_suffixes().iter().any(|suffix| {
            let mut full = String::with_capacity(name.len() + suffix.len());
            full.push_str(name);
            full.push_str(suffix);
            self.sample_names.contains(full.as_str())
        })
    }

    /// A sample line whose metric name should start at byte `start`.
    fn sample(&mut self, line: &Line<'a>, start: usize) -> Result<(), ParseError> {
        let bytes = line.text.as_bytes();
        let len = bytes.len();
        let name_end = scan_metric_name(bytes, start);
        if name_end == start {
            let hint = if bytes[start] == b'{' {
                " (quoted metric names are not supported)"
            } else {
                ""
            };
            return Err(line.error(
                start,
                format!("expected a metric name, {}{hint}", line.found(start)),
            ));
        }
        let name = &line.text[start..name_end];

        let mut labels = Vec::with_capacity(self.last_label_count);
        let mut at = name_end;
        let brace = self.skip_optional_blanks(line, at);
        let has_labels = line.byte(brace) == Some(b'{');
        if has_labels {
            at = self.labels(line, brace, Some(&mut labels))?;
        } else {
            if at < len && !is_blank(bytes[at], self.blanks()) {
                let expected = if self.prometheus() {
                    "whitespace"
                } else {
                    "\" \""
                };
                return Err(line.error(
                    at,
                    format!(
                        "expected \"{{\" or {expected} after metric name {name:?}, {}",
                        line.found(at)
                    ),
                ));
            }
        }
        // Only formatted for an error message.
        let after_what = || {
            if has_labels {
                "labels".to_owned()
            } else {
                format!("metric name {name:?}")
            }
        };

        // The value.
        let value_start = if self.prometheus() {
            skip_blanks(bytes, at)
        } else if line.byte(at) == Some(b' ') {
            at + 1
        } else {
            at
        };
        if value_start == at && at < len {
            let expected = if self.prometheus() {
                "whitespace"
            } else {
                "\" \""
            };
            return Err(line.error(
                at,
                format!(
                    "expected {expected} and a value after {}, {}",
                    after_what(),
                    line.found(at)
                ),
            ));
        }
        if value_start == len {
            return Err(line.error(
                value_start,
                format!("expected a value after {}", after_what()),
            ));
        }
        let value_end = token_end(bytes, value_start, self.blanks());
        if value_end == value_start {
            return Err(line.error(
                value_start,
                format!(
                    "expected a value after {}, {}",
                    after_what(),
                    line.found(value_start)
                ),
            ));
        }
        let token = &line.text[value_start..value_end];
        if !self.prometheus() && token.starts_with('{') {
            return Err(line.error(
                value_start - 1,
                "whitespace between a metric name and its labels is not allowed in OpenMetrics",
            ));
        }
        let value = parse_float(token)
            .ok_or_else(|| line.error(value_start, format!("invalid value {token:?}")))?;

        // The timestamp, and in OpenMetrics an exemplar.
        let timestamp_ms = if self.prometheus() {
            self.prometheus_timestamp(line, value_end)?
        } else {
            self.openmetrics_tail(line, value_end)?
        };

        self.last_label_count = labels.len();
        if name != self.last_sample_name {
            self.sample_names.insert(name);
            self.last_sample_name = name;
        }
        self.out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            timestamp_ms,
        });
        Ok(())
    }

    /// The optional integer-millisecond timestamp of a Prometheus 0.0.4 sample after the value ending at `at`.
    fn prometheus_timestamp(&self, line: &Line<'_>, at: usize) -> Result<Option<i64>, ParseError> {
        let bytes = line.text.as_bytes();
        let start = skip_blanks(bytes, at);
        if start == bytes.len() {
            return Ok(None);
        }
        let end = token_end(bytes, start, BLANK_PROMETHEUS);
        let token = &line.text[start..end];
        let timestamp = token.parse::<i64>().map_err(|_| {
            line.error(
                start,
                format!("invalid timestamp {token:?} (expected integer milliseconds)"),
            )
        })?;
        let rest = skip_blanks(bytes, end);
        if rest < bytes.len() {
            return Err(line.error(
                rest,
                format!(
                    "expected end of line after the timestamp, found {:?}",
                    &line.text[rest..]
                ),
            ));
        }
        Ok(Some(timestamp))
    }

    /// What follows an OpenMetrics value ending at `at`: `[SP timestamp] [SP # SP exemplar]`.
    fn openmetrics_tail(&self, line: &Line<'_>, at: usize) -> Result<Option<i64>, ParseError> {
        let bytes = line.text.as_bytes();
        if at == bytes.len() {
            return Ok(None);
        }
        if line.text[at..].starts_with(" #") {
            self.exemplar(line, at)?;
            return Ok(None);
        }
        // `at` is a space: a timestamp follows.
        let start = at + 1;
        let end = token_end(bytes, start, BLANK_OPENMETRICS);
        if end == start {
            return Err(line.error(
                start,
                format!("expected a timestamp or an exemplar, {}", line.found(start)),
            ));
        }
        let token = &line.text[start..end];
        let timestamp = parse_openmetrics_timestamp(token).ok_or_else(|| {
            line.error(
                start,
                format!("invalid timestamp {token:?} (expected seconds)"),
            )
        })?;
        if end < bytes.len() {
            if line.text[end..].starts_with(" #") {
                self.exemplar(line, end)?;
            } else {
                return Err(line.error(
                    end,
                    format!(
                        "expected end of line or an exemplar after the timestamp, {}",
                        line.found(end)
                    ),
                ));
            }
        }
        Ok(Some(timestamp))
    }

    /// Checks an OpenMetrics exemplar ` # {labels} value [timestamp]` starting with the space at `at`, up to
    /// the end of the line; its data is dropped.
    fn exemplar(&self, line: &Line<'_>, at: usize) -> Result<(), ParseError> {
        let bytes = line.text.as_bytes();
        let mut pos = at + 2;
        if line.byte(pos) != Some(b' ') {
            return Err(line.error(
                pos,
                format!(
                    "expected \" \" after \"#\" of an exemplar, {}",
                    line.found(pos)
                ),
            ));
        }
        pos += 1;
        if line.byte(pos) != Some(b'{') {
            return Err(line.error(
                pos,
                format!(
                    "expected \"{{\" to start the exemplar labels, {}",
                    line.found(pos)
                ),
            ));
        }
        pos = self.labels(line, pos, None)?;
        if line.byte(pos) != Some(b' ') {
            return Err(line.error(
                pos,
                format!(
                    "expected \" \" and a value after the exemplar labels, {}",
                    line.found(pos)
                ),
            ));
        }
        let start = pos + 1;
        let end = token_end(bytes, start, BLANK_OPENMETRICS);
        let token = &line.text[start..end];
        if token.is_empty() {
            return Err(line.error(
                start,
                format!("expected an exemplar value, {}", line.found(start)),
            ));
        }
        if parse_float(token).is_none() {
            return Err(line.error(start, format!("invalid exemplar value {token:?}")));
        }
        if end == bytes.len() {
            return Ok(());
        }
        let start = end + 1;
        let end = token_end(bytes, start, BLANK_OPENMETRICS);
        let token = &line.text[start..end];
        if parse_openmetrics_timestamp(token).is_none() {
            return Err(line.error(start, format!("invalid exemplar timestamp {token:?}")));
        }
        if end < bytes.len() {
            return Err(line.error(
                end,
                format!(
                    "expected end of line after the exemplar, {}",
                    line.found(end)
                ),
            ));
        }
        Ok(())
    }

    /// A `{...}` label set whose `{` is at byte `open`; returns the byte after the `}`. With `out`, the pairs
    /// are unescaped into it and checked for duplicates; without, only the syntax is checked.
    fn labels(
        &self,
        line: &Line<'_>,
        open: usize,
        mut out: Option<&mut Vec<(String, String)>>,
    ) -> Result<usize, ParseError> {
        let bytes = line.text.as_bytes();
        let mut pos = open + 1;
        loop {
            pos = self.skip_optional_blanks(line, pos);
            if line.byte(pos) == Some(b'}') {
                return Ok(pos + 1);
            }
            let name_start = pos;
            let name_end = scan_label_name(bytes, pos);
            if name_end == name_start {
                return Err(line.error(
                    pos,
                    format!("expected a label name or \"}}\", {}", line.found(pos)),
                ));
            }
            let name = &line.text[name_start..name_end];
            pos = self.skip_optional_blanks(line, name_end);
            if line.byte(pos) != Some(b'=') {
                return Err(line.error(
                    pos,
                    format!(
                        "expected \"=\" after label name {name:?}, {}",
                        line.found(pos)
                    ),
                ));
            }
            pos = self.skip_optional_blanks(line, pos + 1);
            if line.byte(pos) != Some(b'"') {
                return Err(line.error(
                    pos,
                    format!(
                        "expected a double-quoted value for label {name:?}, {}",
                        line.found(pos)
                    ),
                ));
            }
            let (value, after) = scan_label_value(line, pos, out.is_some())?;
            if let Some(out) = out.as_deref_mut() {
                if name == "__name__" {
                    return Err(line.error(
                        name_start,
                        "label name \"__name__\" is not allowed in a label set",
                    ));
                }
                if out.iter().any(|(existing, _)| existing == name) {
                    return Err(line.error(name_start, format!("duplicate label name {name:?}")));
                }
                out.push((name.to_owned(), value));
            }
            pos = self.skip_optional_blanks(line, after);
            match line.byte(pos) {
                Some(b',') => pos += 1,
                Some(b'}') => return Ok(pos + 1),
                _ => {
                    return Err(line.error(
                        pos,
                        format!(
                            "expected \",\" or \"}}\" after the value of label {name:?}, {}",
                            line.found(pos)
                        ),
                    ));
                }
            }
        }
    }
}

fn is_blank(byte: u8, blanks: &[u8]) -> bool {
    blanks.contains(&byte)
}

/// The first byte at or after `at` that is not a space or tab.
fn skip_blanks(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t') {
        at += 1;
    }
    at
}

/// The end of the token starting at `at`: the next blank or the end of the line.
fn token_end(bytes: &[u8], mut at: usize, blanks: &[u8]) -> usize {
    while at < bytes.len() && !is_blank(bytes[at], blanks) {
        at += 1;
    }
    at
}

fn is_metric_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':'
}

/// The end of a metric name `[a-zA-Z_:][a-zA-Z0-9_:]*` starting at `at` (`at` itself when there is none).
fn scan_metric_name(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' || *b == b':' => {}
        _ => return at,
    }
    let mut end = at + 1;
    while end < bytes.len() && is_metric_name_byte(bytes[end]) {
        end += 1;
    }
    end
}

/// The end of a label name `[a-zA-Z_][a-zA-Z0-9_]*` starting at `at` (`at` itself when there is none).
fn scan_label_name(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        _ => return at,
    }
    let mut end = at + 1;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    end
}

/// A double-quoted label value whose `"` is at byte `quote`: its unescaped text (empty unless `want`) and the
/// byte after the closing `"`.
fn scan_label_value(
    line: &Line<'_>,
    quote: usize,
    want: bool,
) -> Result<(String, usize), ParseError> {
    let text = line.text;
    let bytes = text.as_bytes();
    let start = quote + 1;
    let mut pos = start;
    // Fast path: no escapes.
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                let value = if want {
                    text[start..pos].to_owned()
                } else {
                    String::new()
                };
                return Ok((value, pos + 1));
            }
            b'\\' => break,
            _ => pos += 1,
        }
    }
    let mut value = String::new();
    let mut segment = start;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                if want {
                    value.push_str(&text[segment..pos]);
                }
                return Ok((value, pos + 1));
            }
            b'\\' => {
                if want {
                    value.push_str(&text[segment..pos]);
                }
                let unescaped = match bytes.get(pos + 1) {
                    Some(b'\\') => '\\',
                    Some(b'"') => '"',
                    Some(b'n') => '\n',
                    None => break,
                    Some(_) => {
                        let escaped = text[pos + 1..].chars().next().unwrap_or_default();
                        return Err(line.error(
                            pos,
                            format!(
                                "invalid escape sequence \"\\{}\" in label value (expected \\\\, \\\" or \\n)",
                                escaped.escape_debug()
                            ),
                        ));
                    }
                };
                if want {
                    value.push(unescaped);
                }
                pos += 2;
                segment = pos;
            }
            _ => pos += 1,
        }
    }
    Err(line.error(quote, "unterminated label value"))
}

/// Unescapes `# HELP` text: `\\` and `\n`, and in OpenMetrics also `\"`. Other backslashes are kept as
/// written, as Prometheus does.
fn unescape_help(text: &str, format: Format) -> String {
    if !text.contains('\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let unescaped = match chars.as_str().as_bytes().first() {
            Some(b'\\') => '\\',
            Some(b'n') => '\n',
            Some(b'"') if format == Format::OpenMetrics => '"',
            _ => {
                out.push('\\');
                continue;
            }
        };
        chars.next();
        out.push(unescaped);
    }
    out
}

/// The shape of a decimal number `digits [. digits] [e [sign] digits]` (at least one mantissa digit).
struct Decimal {
    int_end: usize,
    frac_start: usize,
    frac_end: usize,
    has_exponent: bool,
}

/// Checks that `s` (without a sign) is a decimal number and returns its shape.
fn decimal_shape(s: &str) -> Option<Decimal> {
    let bytes = s.as_bytes();
    let digits_from = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        at
    };
    let int_end = digits_from(0);
    let (frac_start, frac_end) = if bytes.get(int_end) == Some(&b'.') {
        (int_end + 1, digits_from(int_end + 1))
    } else {
        (int_end, int_end)
    };
    if int_end == 0 && frac_end == frac_start {
        return None;
    }
    let mut at = frac_end;
    let mut has_exponent = false;
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent_end = digits_from(at);
        if exponent_end == at {
            return None;
        }
        at = exponent_end;
        has_exponent = true;
    }
    (at == bytes.len()).then_some(Decimal {
        int_end,
        frac_start,
        frac_end,
        has_exponent,
    })
}

/// Splits an optional leading sign off `s`: (negative, rest).
fn split_sign(s: &str) -> (bool, &str) {
    if let Some(rest) = s.strip_prefix('-') {
        (true, rest)
    } else {
        (false, s.strip_prefix('+').unwrap_or(s))
    }
}

/// A sample value as Go's `strconv.ParseFloat` reads it (which both formats' grammars match): decimal and
/// exponent forms, `[+-]Inf`/`[+-]Infinity` and `NaN` in any case; no hex, no `_`, no overflow to infinity.
fn parse_float(token: &str) -> Option<f64> {
    let (negative, rest) = split_sign(token);
    if rest.eq_ignore_ascii_case("inf") || rest.eq_ignore_ascii_case("infinity") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if rest.eq_ignore_ascii_case("nan") {
        return (rest.len() == token.len()).then_some(f64::NAN);
    }
    decimal_shape(rest)?;
    let value = token.parse::<f64>().ok()?;
    value.is_finite().then_some(value)
}

/// An OpenMetrics timestamp (seconds, optional fraction and exponent) in milliseconds, rounded to the nearest
/// millisecond (halves away from zero).
fn parse_openmetrics_timestamp(token: &str) -> Option<i64> {
    let (negative, rest) = split_sign(token);
    let shape = decimal_shape(rest)?;
    if shape.has_exponent {
        let millis = (token.parse::<f64>().ok()? * 1000.0).round();
        // -2^63 and 2^63 are exactly representable; `as` is exact for the integral values in this range.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        return (-LIMIT..LIMIT).contains(&millis).then_some(millis as i64);
    }
    // Exact decimal arithmetic, so `1520879607.789` is exactly 1520879607789 ms.
    let digit = |b: u8| i64::from(b - b'0');
    let mut millis: i64 = 0;
    for &b in &rest.as_bytes()[..shape.int_end] {
        millis = millis.checked_mul(10)?.checked_add(digit(b))?;
    }
    let fraction = &rest.as_bytes()[shape.frac_start..shape.frac_end];
    let mut sub: i64 = 0;
    for k in 0..3 {
        sub = sub * 10 + fraction.get(k).map_or(0, |b| digit(*b));
    }
    if fraction.get(3).is_some_and(|b| *b >= b'5') {
        sub += 1;
    }
    millis = millis.checked_mul(1000)?.checked_add(sub)?;
    Some(if negative { -millis } else { millis })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of `body`, for failure messages.
    fn short(body: &str) -> &str {
        body.char_indices()
            .nth(300)
            .map_or(body, |(end, _)| &body[..end])
    }

    fn prom(body: &str) -> Exposition {
        match parse(body, Format::Prometheus) {
            Ok(exposition) => exposition,
            Err(error) => panic!("{:?} did not parse: {error}", short(body)),
        }
    }

    fn om(body: &str) -> Exposition {
        match parse(body, Format::OpenMetrics) {
            Ok(exposition) => exposition,
            Err(error) => panic!("{:?} did not parse: {error}", short(body)),
        }
    }

    /// The error for `body`, as (line, column, message).
    fn error(body: &str, format: Format) -> (usize, usize, String) {
        match parse(body, format) {
            Ok(exposition) => panic!("{body:?} parsed but should not have: {exposition:?}"),
            Err(error) => (error.line, error.column, error.message),
        }
    }

    /// Asserts the error position and that its message contains `needle`.
    #[track_caller]
    fn assert_error(body: &str, format: Format, line: usize, column: usize, needle: &str) {
        let (got_line, got_column, message) = error(body, format);
        assert_eq!(
            (got_line, got_column),
            (line, column),
            "position for {body:?}: {message}"
        );
        assert!(
            message.contains(needle),
            "message for {body:?} is {message:?}, expected it to contain {needle:?}"
        );
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn only_sample(body: &str, format: Format) -> Sample {
        let exposition = match parse(body, format) {
            Ok(exposition) => exposition,
            Err(error) => panic!("{:?} did not parse: {error}", short(body)),
        };
        assert_eq!(exposition.samples.len(), 1, "{body:?}");
        exposition.samples[0].clone()
    }

    fn value_of(line: &str) -> f64 {
        only_sample(line, Format::Prometheus).value
    }

    const NODE_EXPORTER: &str = r#"# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.4638e-05
go_gc_duration_seconds{quantile="0.25"} 3.5672e-05
go_gc_duration_seconds{quantile="1"} 0.000714537
go_gc_duration_seconds_sum 0.117212449
go_gc_duration_seconds_count 2156
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1.23456789e+06
node_cpu_seconds_total{cpu="0",mode="system"} 5678.9
# HELP node_disk_io_time_seconds Histogram of disk IO time.
# TYPE node_disk_io_time_seconds histogram
node_disk_io_time_seconds_bucket{device="sda",le="0.005"} 10
node_disk_io_time_seconds_bucket{device="sda",le="0.1"} 15
node_disk_io_time_seconds_bucket{device="sda",le="+Inf"} 17
node_disk_io_time_seconds_sum{device="sda"} 0.42
node_disk_io_time_seconds_count{device="sda"} 17

# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.
# TYPE node_memory_MemTotal_bytes gauge
node_memory_MemTotal_bytes 8.253616128e+09
# A plain comment.
node_untyped_thing 3
"#;

    #[test]
    fn parses_a_node_exporter_like_body() {
        let exposition = prom(NODE_EXPORTER);
        assert_eq!(exposition.samples.len(), 14);
        let names: Vec<_> = exposition
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("go_gc_duration_seconds", MetricType::Summary),
                ("node_cpu_seconds_total", MetricType::Counter),
                ("node_disk_io_time_seconds", MetricType::Histogram),
                ("node_memory_MemTotal_bytes", MetricType::Gauge),
            ]
        );
        assert_eq!(
            exposition.families[1].help.as_deref(),
            Some("Seconds the CPUs spent in each mode.")
        );
        assert_eq!(exposition.families[1].unit, None);
        let inf_bucket = &exposition.samples[9];
        assert_eq!(inf_bucket.name, "node_disk_io_time_seconds_bucket");
        assert_eq!(
            inf_bucket.labels,
            labels(&[("device", "sda"), ("le", "+Inf")])
        );
        assert_eq!(inf_bucket.value, 17.0);
        assert_eq!(inf_bucket.timestamp_ms, None);
        assert_eq!(exposition.samples[5].name, "node_cpu_seconds_total");
        assert_eq!(exposition.samples[5].value, 1_234_567.89);
        assert_eq!(exposition.samples[0].labels, labels(&[("quantile", "0")]));
        let last = &exposition.samples[13];
        assert_eq!(
            (last.name.as_str(), last.value, last.labels.len()),
            ("node_untyped_thing", 3.0, 0)
        );
    }

    #[test]
    fn parses_the_same_body_as_openmetrics_with_eof() {
        let body = NODE_EXPORTER
            .replace("\n\n", "\n")
            .replace("# A plain comment.\n", "")
            + "# TYPE node_untyped_thing unknown\n# EOF\n";
        // `node_untyped_thing` had a sample already above, so drop that line for the TYPE to be legal.
        let body = body.replace("node_untyped_thing 3\n", "");
        let exposition = om(&body);
        assert_eq!(exposition.samples.len(), 13);
        assert_eq!(exposition.families.len(), 5);
        assert_eq!(exposition.families[4].kind, MetricType::Unknown);
    }

    #[test]
    fn unescapes_label_values() {
        let sample = only_sample(
            r#"a{path="C:\\dir\\",msg="say \"hi\"\nbye",empty="",utf="héllo ✓"} 1"#,
            Format::Prometheus,
        );
        assert_eq!(
            sample.labels,
            labels(&[
                ("path", "C:\\dir\\"),
                ("msg", "say \"hi\"\nbye"),
                ("empty", ""),
                ("utf", "héllo ✓")
            ])
        );
        // The same in OpenMetrics.
        let body = "a{path=\"C:\\\\dir\\\\\",msg=\"say \\\"hi\\\"\\nbye\"} 1\n# EOF\n";
        assert_eq!(
            om(body).samples[0].labels,
            labels(&[("path", "C:\\dir\\"), ("msg", "say \"hi\"\nbye")])
        );
        // Null bytes are fine inside a value (as in Prometheus' tests).
        assert_eq!(
            only_sample("a{b=\"\0ss\"} 1", Format::Prometheus).labels,
            labels(&[("b", "\0ss")])
        );
    }

    #[test]
    fn unescapes_help_text() {
        let exposition = prom("# HELP x a\\\\b\\nc \\\"q\\\" \\x end\\\n");
        assert_eq!(
            exposition.families[0].help.as_deref(),
            Some("a\\b\nc \\\"q\\\" \\x end\\")
        );
        assert_eq!(exposition.families[0].kind, MetricType::Untyped);
        // OpenMetrics also unescapes `\"` (vector from Prometheus' openmetricsparse_test.go).
        let exposition = om("# HELP help2 escape \\ \\n \\\\ \\\" \\x chars\n# EOF\n");
        assert_eq!(
            exposition.families[0].help.as_deref(),
            Some("escape \\ \n \\ \" \\x chars")
        );
        assert_eq!(exposition.families[0].kind, MetricType::Unknown);
        // Empty help.
        assert_eq!(
            prom("# HELP nohelp2 \n").families[0].help.as_deref(),
            Some("")
        );
        assert_eq!(
            om("# HELP nohelp1 \n# EOF").families[0].help.as_deref(),
            Some("")
        );
        // A run of blanks after the name is skipped in Prometheus 0.0.4.
        assert_eq!(
            prom("# HELP x \t  text  \n").families[0].help.as_deref(),
            Some("text  ")
        );
    }

    #[test]
    fn accepts_special_values() {
        assert!(value_of("a NaN").is_nan());
        assert!(value_of("a nan").is_nan());
        assert_eq!(value_of("a +Inf"), f64::INFINITY);
        assert_eq!(value_of("a Inf"), f64::INFINITY);
        assert_eq!(value_of("a inf"), f64::INFINITY);
        assert_eq!(value_of("a +Infinity"), f64::INFINITY);
        assert_eq!(value_of("a -Inf"), f64::NEG_INFINITY);
        assert_eq!(value_of("a -inf"), f64::NEG_INFINITY);
        let exposition = om("a NaN\nb +Inf\nc -Inf\n# EOF\n");
        assert!(exposition.samples[0].value.is_nan());
        assert_eq!(exposition.samples[1].value, f64::INFINITY);
        assert_eq!(exposition.samples[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn accepts_go_float_forms() {
        assert_eq!(value_of("a 1e3"), 1000.0);
        assert_eq!(value_of("a -1.5E-2"), -0.015);
        assert_eq!(value_of("a .5"), 0.5);
        assert_eq!(value_of("a 5."), 5.0);
        assert_eq!(value_of("a +3"), 3.0);
        assert_eq!(value_of("a -0"), 0.0);
        assert_eq!(value_of("a 1.e+2"), 100.0);
        assert_eq!(value_of("a 7.424100000000001e-05"), 7.424100000000001e-05);
        assert_eq!(value_of("a 1e-400"), 0.0); // Underflow is not an error for Go either.
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            "abc",
            "true",
            "1_2",
            "0x1p-3",
            "0x1P-3",
            "0x10",
            "e5",
            ".",
            "1e",
            "1e+",
            "+",
            "-",
            "+NaN",
            "-nan",
            "1.2.3",
            "1e400",
            "infinityy",
            "--1",
            "1,5",
        ] {
            let body = format!("foo {bad}\n");
            assert_error(
                &body,
                Format::Prometheus,
                1,
                5,
                &format!("invalid value {bad:?}"),
            );
            let body = format!("foo {bad}\n# EOF\n");
            assert_error(
                &body,
                Format::OpenMetrics,
                1,
                5,
                &format!("invalid value {bad:?}"),
            );
        }
    }

    #[test]
    fn reads_timestamps() {
        let sample = only_sample("go_goroutines 33  \t123123", Format::Prometheus);
        assert_eq!((sample.value, sample.timestamp_ms), (33.0, Some(123_123)));
        assert_eq!(
            only_sample("a 1 -5", Format::Prometheus).timestamp_ms,
            Some(-5)
        );
        assert_eq!(
            only_sample("a 1 1520879607789\n", Format::Prometheus).timestamp_ms,
            Some(1_520_879_607_789)
        );
        assert_error(
            "a 1 1.5\n",
            Format::Prometheus,
            1,
            5,
            "invalid timestamp \"1.5\"",
        );
        assert_error(
            "a 1 99999999999999999999\n",
            Format::Prometheus,
            1,
            5,
            "invalid timestamp",
        );

        let om_ts =
            |ts: &str| only_sample(&format!("a 1 {ts}\n# EOF\n"), Format::OpenMetrics).timestamp_ms;
        assert_eq!(om_ts("123.123"), Some(123_123));
        assert_eq!(om_ts("1520879607.789"), Some(1_520_879_607_789));
        assert_eq!(om_ts("1520430001"), Some(1_520_430_001_000));
        assert_eq!(om_ts("1.0005"), Some(1001));
        assert_eq!(om_ts("1.00049"), Some(1000));
        assert_eq!(om_ts("1.9999"), Some(2000));
        assert_eq!(om_ts("-1.5"), Some(-1500));
        assert_eq!(om_ts(".25"), Some(250));
        assert_eq!(om_ts("1.5e3"), Some(1_500_000));
        assert_eq!(om_ts("+2"), Some(2000));
        for bad in ["NaN", "-Inf", "Inf", "1z", "1_2", "9223372036854775808"] {
            assert_error(
                &format!("a 1 {bad}\n# EOF\n"),
                Format::OpenMetrics,
                1,
                5,
                "invalid timestamp",
            );
        }
    }

    #[test]
    fn ignores_exemplars_in_openmetrics() {
        let body = r#"# TYPE hhh histogram
hhh_bucket{le="+Inf"} 1 # {id="histogram-bucket-test"} 4
hhh_count 1 # {id="histogram-count-test"} 4
# TYPE ggh gaugehistogram
ggh_bucket{le="+Inf"} 1 # {id="gaugehistogram-bucket-test",xx="yy"} 4 123.123
# TYPE foo counter
foo_total 17.0 1520879607.789 # {id="counter-test"} 5
foo_total{a="b"} 17.0 1520879607.789 # {} 5
foo_created 1520872607.123
# EOF
"#;
        let exposition = om(body);
        assert_eq!(exposition.samples.len(), 6);
        assert_eq!(exposition.samples[0].labels, labels(&[("le", "+Inf")]));
        assert_eq!(exposition.samples[0].value, 1.0);
        assert_eq!(exposition.samples[0].timestamp_ms, None);
        assert_eq!(exposition.samples[3].timestamp_ms, Some(1_520_879_607_789));
        assert_eq!(exposition.samples[3].value, 17.0);
        assert_eq!(exposition.samples[4].labels, labels(&[("a", "b")]));
    }

    #[test]
    fn rejects_bad_exemplars() {
        let om_err = |line: &str, column: usize, needle: &str| {
            assert_error(
                &format!("{line}\n# EOF\n"),
                Format::OpenMetrics,
                1,
                column,
                needle,
            );
        };
        om_err(
            "m_total 1 # {aa=bb}",
            17,
            "expected a double-quoted value for label \"aa\"",
        );
        om_err(
            "m_total 1 # {aa=\"bb\"}",
            22,
            "expected \" \" and a value after the exemplar labels",
        );
        om_err(
            "m_total 1 # {bb}",
            16,
            "expected \"=\" after label name \"bb\"",
        );
        om_err(
            "m_total 1 # {aa=\"bb\",,cc=\"dd\"} 1",
            22,
            "expected a label name",
        );
        om_err(
            "m_total 1 # {aa=\"bb\"} 1_2",
            23,
            "invalid exemplar value \"1_2\"",
        );
        om_err(
            "m_total 1 # {aa=\"bb\"} true",
            23,
            "invalid exemplar value \"true\"",
        );
        om_err(
            "m_total 1 # {aa=\"bb\"} 4 NaN",
            25,
            "invalid exemplar timestamp \"NaN\"",
        );
        om_err(
            "m_total 1 # {aa=\"bb\"} 4 1 2",
            26,
            "expected end of line after the exemplar",
        );
        om_err(
            "m_total 1 #{aa=\"bb\"} 4",
            12,
            "expected \" \" after \"#\" of an exemplar",
        );
        om_err(
            "m_total 1 # aa",
            13,
            "expected \"{\" to start the exemplar labels",
        );
        // Prometheus 0.0.4 has no exemplars.
        assert_error(
            "m_total 1 # {a=\"b\"} 1\n",
            Format::Prometheus,
            1,
            11,
            "invalid timestamp \"#\"",
        );
    }

    #[test]
    fn openmetrics_requires_eof() {
        assert_eq!(om("# EOF"), Exposition::default());
        assert_eq!(om("# EOF\n"), Exposition::default());
        assert_eq!(om("a 1\n# EOF").samples.len(), 1);
        assert_error(
            "",
            Format::OpenMetrics,
            1,
            1,
            "missing \"# EOF\" at the end of an OpenMetrics body",
        );
        assert_error("metric 1", Format::OpenMetrics, 1, 9, "missing \"# EOF\"");
        assert_error("a 1\nb 2\n", Format::OpenMetrics, 2, 4, "missing \"# EOF\"");
        assert_error(
            "m_total 1 # {aa=\"bb\"} 4",
            Format::OpenMetrics,
            1,
            24,
            "missing \"# EOF\"",
        );
        assert_error(
            "# EOF\na 1",
            Format::OpenMetrics,
            2,
            1,
            "unexpected data after \"# EOF\"",
        );
        assert_error(
            "# EOF\n\n",
            Format::OpenMetrics,
            2,
            1,
            "unexpected data after \"# EOF\"",
        );
        assert_error(
            "# EOFa 1",
            Format::OpenMetrics,
            1,
            6,
            "expected end of line after \"# EOF\"",
        );
        assert_error(
            "# EOF \n",
            Format::OpenMetrics,
            1,
            6,
            "expected end of line after \"# EOF\"",
        );
        assert_error(
            " # EOF\n",
            Format::OpenMetrics,
            1,
            1,
            "expected a metric name",
        );
        assert_error(
            "a 1\n# EOF\r\n",
            Format::OpenMetrics,
            2,
            6,
            "carriage return",
        );
        // In Prometheus 0.0.4, `# EOF` is only a comment.
        assert_eq!(prom("# EOF\na 1\n").samples.len(), 1);
    }

    #[test]
    fn prometheus_errors_have_line_column_and_expectation() {
        let p = Format::Prometheus;
        assert_error("a", p, 1, 2, "expected a value after metric name \"a\"");
        assert_error(
            "ok 1\na \n",
            p,
            2,
            3,
            "expected a value after metric name \"a\"",
        );
        assert_error("a{b=\"c\"}", p, 1, 9, "expected a value after labels");
        assert_error(
            "a{b=\"c\"}1",
            p,
            1,
            9,
            "expected whitespace and a value after labels, found \"1\"",
        );
        assert_error(
            "a{b='c'} 1\n",
            p,
            1,
            5,
            "expected a double-quoted value for label \"b\", found \"'\"",
        );
        assert_error(
            "a{b=\n",
            p,
            1,
            5,
            "expected a double-quoted value for label \"b\", found end of line",
        );
        assert_error(
            "a{job:x=\"y\"} 1\n",
            p,
            1,
            6,
            "expected \"=\" after label name \"job\", found \":\"",
        );
        assert_error(
            "a{job} 1\n",
            p,
            1,
            6,
            "expected \"=\" after label name \"job\"",
        );
        assert_error("a true\n", p, 1, 3, "invalid value \"true\"");
        assert_error("a abc\n", p, 1, 3, "invalid value \"abc\"");
        assert_error(
            "something_weird{problem=\"",
            p,
            1,
            25,
            "unterminated label value",
        );
        assert_error(
            "x 1\nsomething_weird{problem=\"a\\\"} 1\n",
            p,
            2,
            25,
            "unterminated label value",
        );
        assert_error("a{b=\"\\\n", p, 1, 5, "unterminated label value");
        assert_error(
            "a{b=\"x\\ty\"} 1",
            p,
            1,
            7,
            "invalid escape sequence \"\\t\" in label value",
        );
        assert_error(
            "empty_label_name{=\"\"} 0",
            p,
            1,
            18,
            "expected a label name or \"}\", found \"=\"",
        );
        assert_error(
            "a{,b=\"c\"} 1",
            p,
            1,
            3,
            "expected a label name or \"}\", found \",\"",
        );
        assert_error("a{b=\"c\",,d=\"e\"} 1", p, 1, 9, "expected a label name");
        assert_error("a{1b=\"c\"} 1", p, 1, 3, "expected a label name");
        assert_error(
            "a{b=\"c\"d=\"e\"} 1",
            p,
            1,
            8,
            "expected \",\" or \"}\" after the value of label \"b\"",
        );
        assert_error("a{b=\"c\" d=\"e\"} 1", p, 1, 9, "expected \",\" or \"}\"");
        assert_error("foo 1_2\n", p, 1, 5, "invalid value \"1_2\"");
        assert_error("foo 0x1p-3\n", p, 1, 5, "invalid value \"0x1p-3\"");
        assert_error("foo 0 1_2\n", p, 1, 7, "invalid timestamp \"1_2\"");
        assert_error("a 0 1\0", p, 1, 5, "invalid timestamp");
        assert_error(
            "a 1 2 3\n",
            p,
            1,
            7,
            "expected end of line after the timestamp, found \"3\"",
        );
        assert_error(
            "{a=\"ok\"} 1",
            p,
            1,
            1,
            "expected a metric name, found \"{\" (quoted metric names",
        );
        assert_error("9 1\n", p, 1, 1, "expected a metric name, found \"9\"");
        assert_error(
            "a-b 1\n",
            p,
            1,
            2,
            "expected \"{\" or whitespace after metric name \"a\", found \"-\"",
        );
        assert_error(
            "a\0{b=\"ddd\"} 1",
            p,
            1,
            2,
            "after metric name \"a\", found \"\\0\"",
        );
        assert_error(
            "a{b=\0\"ssss\"} 1\n",
            p,
            1,
            5,
            "expected a double-quoted value",
        );
        assert_error(
            "a{b\0=\"hiih\"}\t1",
            p,
            1,
            4,
            "expected \"=\" after label name \"b\"",
        );
        assert_error(
            "# TYPE #\n",
            p,
            1,
            8,
            "expected a metric name after TYPE, found \"#\"",
        );
        assert_error(
            "# HELP #\n",
            p,
            1,
            8,
            "expected a metric name after HELP, found \"#\"",
        );
        assert_error(
            "# TYPE a{ counter\n",
            p,
            1,
            9,
            "expected whitespace after metric name \"a\" in TYPE",
        );
        assert_error(
            "# TYPE m\n",
            p,
            1,
            9,
            "expected a metric type after metric name \"m\"",
        );
        assert_error("# TYPE m \n", p, 1, 10, "expected a metric type");
        assert_error("# TYPE m info\n", p, 1, 10, "invalid metric type \"info\"");
        assert_error(
            "# TYPE m Counter\n",
            p,
            1,
            10,
            "invalid metric type \"Counter\"",
        );
        assert_error(
            "# TYPE m counter x\n",
            p,
            1,
            10,
            "invalid metric type \"counter x\"",
        );
        // Columns count characters, not bytes.
        assert_error(
            "a{b=\"é✓\",c=x} 1\n",
            p,
            1,
            12,
            "expected a double-quoted value for label \"c\"",
        );
    }

    #[test]
    fn rejects_duplicate_labels() {
        assert_error(
            "a{b=\"1\",c=\"2\",b=\"3\"} 1\n",
            Format::Prometheus,
            1,
            15,
            "duplicate label name \"b\"",
        );
        assert_error(
            "ok 1\na{b=\"1\",b=\"1\"} 1\n# EOF\n",
            Format::OpenMetrics,
            2,
            9,
            "duplicate label name \"b\"",
        );
        assert_error(
            "a{__name__=\"b\"} 1\n",
            Format::Prometheus,
            1,
            3,
            "\"__name__\" is not allowed",
        );
        // Exemplar labels are only checked for syntax.
        assert_eq!(
            om("a_total 1 # {b=\"1\",b=\"2\"} 1\n# EOF\n").samples.len(),
            1
        );
    }

    #[test]
    fn rejects_type_after_samples_and_repeated_metadata() {
        let p = Format::Prometheus;
        assert_error(
            "a 1\n# TYPE a gauge\n",
            p,
            2,
            8,
            "TYPE line for metric \"a\" after its samples",
        );
        assert_error(
            "x_bucket{le=\"1\"} 1\n# TYPE x histogram\n",
            p,
            2,
            8,
            "after its samples",
        );
        assert_error(
            "x_count 1\n# TYPE x summary\n",
            p,
            2,
            8,
            "after its samples",
        );
        assert_error(
            "# TYPE a gauge\n# TYPE a counter\n",
            p,
            2,
            8,
            "second TYPE line for metric \"a\"",
        );
        assert_error(
            "# HELP a x\n# HELP a y\n",
            p,
            2,
            8,
            "second HELP line for metric \"a\"",
        );
        assert_error(
            "a 1\n# TYPE a gauge\n# EOF\n",
            Format::OpenMetrics,
            2,
            8,
            "after its samples",
        );
        assert_error(
            "# UNIT a_s s\n# UNIT a_s s\n# EOF\n",
            Format::OpenMetrics,
            2,
            8,
            "second UNIT line",
        );
        // A gauge does not own `_count`-suffixed names, and HELP after samples is fine.
        let exposition = prom("x_count 1\n# TYPE x gauge\nx 2\n# HELP x late help\n");
        assert_eq!(exposition.families[0].kind, MetricType::Gauge);
        assert_eq!(exposition.families[0].help.as_deref(), Some("late help"));
        // TYPE then HELP for the same family makes one family.
        let exposition = prom("# TYPE a counter\n# HELP a things\na 1\n");
        assert_eq!(
            exposition.families,
            [Family {
                name: "a".into(),
                kind: MetricType::Counter,
                help: Some("things".into()),
                unit: None
            }]
        );
    }

    #[test]
    fn accepts_prometheus_whitespace_variants() {
        let want = labels(&[("quantile", "1.0"), ("a", "b")]);
        for line in [
            "go_gc_duration_seconds{ quantile=\"1.0\", a=\"b\" } 8.3835e-05",
            "go_gc_duration_seconds { quantile=\"1.0\", a=\"b\" } 8.3835e-05",
            "go_gc_duration_seconds { quantile= \"1.0\", a= \"b\", } 8.3835e-05",
            "go_gc_duration_seconds { quantile = \"1.0\", a = \"b\" } 8.3835e-05",
            "go_gc_duration_seconds\t{quantile=\"1.0\",a=\"b\"}\t8.3835e-05\t",
            "  go_gc_duration_seconds{quantile=\"1.0\",a=\"b\"} 8.3835e-05  ",
            "go_gc_duration_seconds{quantile=\"1.0\",a=\"b\"} 8.3835e-05\r",
        ] {
            let sample = only_sample(line, Format::Prometheus);
            assert_eq!(sample.name, "go_gc_duration_seconds", "{line:?}");
            assert_eq!(sample.labels, want, "{line:?}");
            assert_eq!(sample.value, 8.3835e-05, "{line:?}");
        }
        assert_eq!(
            only_sample("some:aggregate:rate5m{a_b=\"c\"}\t1", Format::Prometheus).value,
            1.0
        );
        assert_eq!(only_sample("no_labels{} 3", Format::Prometheus).labels, []);
        assert_eq!(
            only_sample("no_labels { } 3", Format::Prometheus).labels,
            []
        );
        // Empty lines, blank lines, `\r\n` and comments are ignored.
        let exposition = prom(
            "\n  \n\t\r\n# a comment\n#\n#HELP x y\n# HELPER x y\n# HELP\n# UNIT a_s s\na 1\r\n\n",
        );
        assert_eq!(exposition.samples.len(), 1);
        assert_eq!(exposition.families, []);
        // `# \tTYPE` is a TYPE line (Prometheus' promparse_test.go).
        assert_eq!(
            prom("# \tTYPE a summary\n").families[0].kind,
            MetricType::Summary
        );
        assert_eq!(
            prom("  # HELP  a  x\n").families[0].help.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn openmetrics_is_strict_about_whitespace_and_comments() {
        let o = Format::OpenMetrics;
        let e = |line: &str, column: usize, needle: &str| {
            assert_error(&format!("{line}\n# EOF\n"), o, 1, column, needle);
        };
        e(
            "a\t1",
            2,
            "expected \"{\" or \" \" after metric name \"a\", found \"\\t\"",
        );
        e("a 1\t2", 3, "invalid value \"1\\t2\"");
        e(
            "a  1",
            3,
            "expected a value after metric name \"a\", found \" \"",
        );
        e(
            "a 1 2 ",
            6,
            "expected end of line or an exemplar after the timestamp, found \" \"",
        );
        e(
            "a 1 ",
            5,
            "expected a timestamp or an exemplar, found end of line",
        );
        e(
            "a 1 1 1",
            6,
            "expected end of line or an exemplar after the timestamp",
        );
        e(
            "a {b=\"c\"} 1",
            2,
            "whitespace between a metric name and its labels",
        );
        e("a{ b=\"c\"} 1", 3, "expected a label name");
        e("a{b =\"c\"} 1", 4, "expected \"=\" after label name \"b\"");
        e("a{b=\"c\" } 1", 8, "expected \",\" or \"}\"");
        e(" a 1", 1, "expected a metric name, found \" \"");
        e("#", 2, "expected \" \" after \"#\"");
        e("#\tTYPE c counter", 2, "expected \" \" after \"#\"");
        e("# H", 3, "expected HELP, TYPE, UNIT or EOF");
        e("# a comment", 3, "expected HELP, TYPE, UNIT or EOF");
        e("#  TYPE c counter", 3, "expected HELP, TYPE, UNIT or EOF");
        e("# TYPE u untyped", 10, "invalid metric type \"untyped\"");
        e("# TYPE c counter ", 10, "invalid metric type \"counter \"");
        e("# TYPE c  counter", 10, "invalid metric type \" counter\"");
        e(
            "# TYPE ",
            8,
            "expected a metric name after TYPE, found end of line",
        );
        e(
            "# TYPE m",
            9,
            "expected \" \" and text after metric name \"m\" in TYPE",
        );
        e(
            "# HELP m",
            9,
            "expected \" \" and text after metric name \"m\" in HELP",
        );
        e(
            "# UNIT m",
            9,
            "expected \" \" and text after metric name \"m\" in UNIT",
        );
        e("# HELPx m", 7, "expected \" \" after HELP");
        e(
            "# UNIT metric suffix",
            15,
            "unit \"suffix\" is not a suffix of metric name \"metric\"",
        );
        e("# UNIT metricsuffix suffix", 21, "is not a suffix");
        e("# UNIT m suffix", 10, "is not a suffix");
        e("# UNIT _s s", 11, "is not a suffix");
        e(
            "# UNIT a_s- s-",
            11,
            "expected \" \" and text after metric name \"a_s\"",
        );
        e(
            "# UNIT a_s s-",
            13,
            "invalid character in unit, found \"-\"",
        );
        assert_error(
            "\n# EOF\n",
            o,
            1,
            1,
            "empty lines are not allowed in OpenMetrics",
        );
        assert_error("a 1\n\n# EOF\n", o, 2, 1, "empty lines are not allowed");
        assert_error("a 1\r\n# EOF\n", o, 1, 4, "carriage return");
    }

    #[test]
    fn openmetrics_metadata() {
        let exposition = om(
            r#"# HELP go_gc_duration_seconds A summary of the GC invocation durations.
# TYPE go_gc_duration_seconds summary
# UNIT go_gc_duration_seconds seconds
go_gc_duration_seconds{quantile="0"} 4.9351e-05
go_gc_duration_seconds_count 99
# UNIT nounit 
# TYPE ii info
ii{foo="bar"} 1
# TYPE ss stateset
ss{ss="foo"} 1
ss{ss="bar"} 0
# TYPE gh gaugehistogram
gh_bucket{le="+Inf"} 1
# TYPE un unknown
un 1
# EOF
"#,
        );
        let families: Vec<_> = exposition
            .families
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.kind,
                    f.help.as_deref(),
                    f.unit.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            families,
            [
                (
                    "go_gc_duration_seconds",
                    MetricType::Summary,
                    Some("A summary of the GC invocation durations."),
                    Some("seconds")
                ),
                ("nounit", MetricType::Unknown, None, Some("")),
                ("ii", MetricType::Info, None, None),
                ("ss", MetricType::StateSet, None, None),
                ("gh", MetricType::GaugeHistogram, None, None),
                ("un", MetricType::Unknown, None, None),
            ]
        );
        assert_eq!(exposition.samples.len(), 7);
    }

    #[test]
    fn accepts_a_trailing_comma() {
        let sample = only_sample(
            "go_gc_duration_seconds{quantile=\"0.25\",} 7.424100000000001e-05",
            Format::Prometheus,
        );
        assert_eq!(sample.labels, labels(&[("quantile", "0.25")]));
        let sample = only_sample("a{b=\"c\",d=\"e\",} 1\n# EOF\n", Format::OpenMetrics);
        assert_eq!(sample.labels, labels(&[("b", "c"), ("d", "e")]));
    }

    #[test]
    fn parses_prometheus_promparse_test_vectors() {
        let body = "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n\
# \tTYPE go_gc_duration_seconds summary\n\
go_gc_duration_seconds{quantile=\"0\"} 4.9351e-05\n\
go_gc_duration_seconds{quantile=\"0.25\",} 7.424100000000001e-05\n\
go_gc_duration_seconds{quantile=\"0.5\",a=\"b\"} 8.3835e-05\n\
go_gc_duration_seconds{quantile=\"0.8\", a=\"b\"} 8.3835e-05\n\
go_gc_duration_seconds{ quantile=\"0.9\", a=\"b\"} 8.3835e-05\n\
# Hrandom comment starting with prefix of HELP\n\
#\n\
wind_speed{A=\"2\",c=\"3\"} 12345\n\
# comment with escaped \\n newline\n\
# comment with escaped \\ escape character\n\
# HELP nohelp1\n\
# HELP nohelp2 \n\
go_gc_duration_seconds_count 99\n\
# HELP go_goroutines Number of goroutines that currently exist.\n\
# TYPE go_goroutines gauge\n\
go_goroutines 33  \t123123\n\
_metric_starting_with_underscore 1\n\
testmetric{_label_starting_with_underscore=\"foo\"} 1\n\
testmetric{label=\"\\\"bar\\\"\"} 1\n\
# HELP metric foo\0bar\n\
null_byte_metric{a=\"abc\0\"} 1";
        let exposition = prom(body);
        assert_eq!(exposition.samples.len(), 12);
        assert_eq!(
            exposition.samples[5].labels,
            labels(&[("A", "2"), ("c", "3")])
        );
        assert_eq!(
            exposition.samples[10].labels,
            labels(&[("label", "\"bar\"")])
        );
        assert_eq!(exposition.samples[11].labels, labels(&[("a", "abc\0")]));
        let help: Vec<_> = exposition
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.help.as_deref()))
            .collect();
        assert_eq!(
            help,
            [
                (
                    "go_gc_duration_seconds",
                    Some("A summary of the GC invocation durations.")
                ),
                ("nohelp1", Some("")),
                ("nohelp2", Some("")),
                (
                    "go_goroutines",
                    Some("Number of goroutines that currently exist.")
                ),
                ("metric", Some("foo\0bar")),
            ]
        );
    }

    #[test]
    fn reads_the_content_type() {
        assert_eq!(Format::from_content_type(None), Format::Prometheus);
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some(" application/openmetrics-text ;version=0.0.1")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("application/json")),
            Format::Prometheus
        );
        assert_eq!(Format::from_content_type(Some("")), Format::Prometheus);
    }

    #[test]
    fn error_display_names_line_and_column() {
        let error = parse("a 1\nb x\n", Format::Prometheus).err();
        assert_eq!(
            error.map(|e| e.to_string()),
            Some("line 2, column 3: invalid value \"x\"".to_owned())
        );
    }

    #[test]
    fn stops_at_the_first_error() {
        let body = "a 1\nb{x=\"1\"} 2\nc{=} 3\nd x\n";
        assert_error(body, Format::Prometheus, 3, 3, "expected a label name");
    }

    #[test]
    fn more_openmetrics_edge_cases() {
        let o = Format::OpenMetrics;
        // Exemplar values may be special floats; the exemplar may carry a timestamp.
        assert_eq!(
            om("a_total 1 # {x=\"y\"} NaN 1.5\n# EOF\n").samples[0].value,
            1.0
        );
        assert_error(
            "a 1 2 #\n# EOF\n",
            o,
            1,
            8,
            "expected \" \" after \"#\" of an exemplar",
        );
        assert_error("a 1 1e300\n# EOF\n", o, 1, 5, "invalid timestamp \"1e300\"");
        assert_error(
            "a{b=\"c\"}1\n# EOF\n",
            o,
            1,
            9,
            "expected \" \" and a value after labels",
        );
        assert_error("a{} \n# EOF\n", o, 1, 5, "expected a value after labels");
        assert_eq!(om("a{} 1\n# EOF\n").samples[0].labels, []);
        // Exponent-form timestamps are converted through f64 and rounded.
        assert_eq!(only_sample("a 1 1.5e-3\n# EOF\n", o).timestamp_ms, Some(2));
    }

    #[test]
    fn parses_a_100k_line_body() {
        let mut body = String::with_capacity(100_000 * 80);
        body.push_str("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
        for i in 0..99_998 {
            body.push_str(&format!(
                "http_requests_total{{method=\"GET\",code=\"{}\",path=\"/api/v1/item/{i}\"}} {i}.5 {}\n",
                200 + i % 5,
                1_700_000_000_000_i64 + i
            ));
        }
        let started = std::time::Instant::now();
        let exposition = prom(&body);
        let elapsed = started.elapsed();
        println!("100k lines: {elapsed:?}");
        assert_eq!(exposition.samples.len(), 99_998);
        assert_eq!(exposition.families.len(), 1);
        let last = &exposition.samples[99_997];
        assert_eq!(last.value, 99_997.5);
        assert_eq!(last.timestamp_ms, Some(1_700_000_099_997));
        assert_eq!(
            last.labels[2],
            ("path".to_owned(), "/api/v1/item/99997".to_owned())
        );

        // The same samples as OpenMetrics, with timestamps in seconds.
        let mut om_body = String::with_capacity(body.len());
        om_body.push_str("# TYPE http_requests counter\n");
        for i in 0..99_999 {
            om_body.push_str(&format!(
                "http_requests_total{{code=\"{}\"}} {i} 1700000000.{:03}\n",
                200 + i % 5,
                i % 1000
            ));
        }
        om_body.push_str("# EOF\n");
        let exposition = om(&om_body);
        assert_eq!(exposition.samples.len(), 99_999);
        assert_eq!(
            exposition.samples[99_998].timestamp_ms,
            Some(1_700_000_000_998)
        );
    }
}
