//! Instance logs: one JSON record per output line, secret values redacted before anything is
//! written, in size-rotated files; and the reading side (filter, merge by time).
//!
//! A line that is a JSON object is parsed: `level`/`lvl`/`severity` become the level,
//! `msg`/`message` the message, the rest the fields. Any other line is kept as it is.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::driver::LogPolicy;

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// The current log file of an instance; rotated ones are `output.jsonl.1` (newest) and up.
pub const LOG_FILE: &str = "output.jsonl";

/// One line of an instance's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was read.
    pub ts: Timestamp,
    /// Instance id (filled in when read back).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Level, for JSON lines that carry one (lower-case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The message, or the whole line.
    pub message: String,
    /// The other fields of a JSON line.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Replaces secret values in text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// Redacts these values; values shorter than 4 characters are not redacted (they would
    /// garble ordinary text and are not secrets worth the name).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= 4).collect();
        // Longest first, so a secret that contains another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// The text with every secret value replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Turns one output line into a record.
pub fn parse_line(ts: Timestamp, stream: &str, line: &str) -> LogRecord {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(trimmed)
    {
        let level = ["level", "lvl", "severity"]
            .iter()
            .find_map(|k| fields.remove(*k))
            .map(|v| match v {
                serde_json::Value::String(s) => s.to_lowercase(),
                other => other.to_string(),
            });
        let message = ["msg", "message"]
            .iter()
            .find_map(|k| fields.remove(*k))
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default();
        return LogRecord {
            ts,
            instance: String::new(),
            stream: stream.to_string(),
            level,
            message,
            fields,
        };
    }
    LogRecord {
        ts,
        instance: String::new(),
        stream: stream.to_string(),
        level: None,
        message: trimmed.to_string(),
        fields: serde_json::Map::new(),
    }
}

/// Appends records to `dir/output.jsonl`, rotating by size.
pub struct RotatingWriter {
    dir: PathBuf,
    policy: LogPolicy,
    file: File,
    size: u64,
}

impl RotatingWriter {
    /// Opens (appending to) the current file.
    pub fn open(dir: &Path, policy: LogPolicy) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        Ok(RotatingWriter {
            dir: dir.to_path_buf(),
            policy,
            file,
            size,
        })
    }

    /// Writes one record as a line.
    pub fn write(&mut self, record: &LogRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.policy.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let keep = self.policy.keep.max(1);
        let _ = std::fs::remove_file(self.dir.join(format!("{LOG_FILE}.{keep}")));
        for n in (1..keep).rev() {
            let from = self.dir.join(format!("{LOG_FILE}.{n}"));
            if from.exists() {
                std::fs::rename(&from, self.dir.join(format!("{LOG_FILE}.{}", n + 1)))?;
            }
        }
        std::fs::rename(
            self.dir.join(LOG_FILE),
            self.dir.join(format!("{LOG_FILE}.1")),
        )?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.size = 0;
        Ok(())
    }
}

/// Which records to read.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogFilter {
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
    /// Only records strictly after this time (for following).
    pub after: Option<Timestamp>,
    /// Only this level or more severe (`trace` < `debug` < `info` < `warn` < `error`).
    pub level: Option<String>,
    /// Only records whose message or fields contain this text.
    pub grep: Option<String>,
    /// At most this many records: the newest ones, or with `after`, the oldest ones after it
    /// (so a follower pages forward without losing lines).
    pub limit: Option<usize>,
}

/// Severity rank of a level name; unknown levels rank as `info`.
pub fn level_rank(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 0,
        "debug" => 1,
        "warn" | "warning" => 3,
        "error" | "err" | "fatal" | "critical" | "panic" => 4,
        _ => 2,
    }
}

impl LogFilter {
    /// Whether a record passes.
    pub fn accepts(&self, r: &LogRecord) -> bool {
        if self.since.is_some_and(|s| r.ts < s) || self.after.is_some_and(|a| r.ts <= a) {
            return false;
        }
        if let Some(min) = &self.level {
            // Lines without a level pass only when no level is asked for above `info`.
            let rank = r.level.as_deref().map_or(2, level_rank);
            if rank < level_rank(min) {
                return false;
            }
        }
        if let Some(g) = &self.grep
            && !r.message.contains(g.as_str())
            && !serde_json::Value::Object(r.fields.clone())
                .to_string()
                .contains(g.as_str())
        {
            return false;
        }
        true
    }
}

/// Reads the records of one instance directory (rotated files first), filtered.
pub fn read_dir(dir: &Path, instance: &str, filter: &LogFilter) -> Vec<LogRecord> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if name == LOG_FILE {
                Some((0, e.path()))
            } else {
                name.strip_prefix(&format!("{LOG_FILE}."))
                    .and_then(|n| n.parse().ok())
                    .map(|n| (n, e.path()))
            }
        })
        .collect();
    files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut out = Vec::new();
    for (_, path) in files {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            // A half-written last line (the shim was killed mid-write) is skipped.
            if let Ok(mut record) = serde_json::from_str::<LogRecord>(&line) {
                record.instance = instance.to_string();
                if filter.accepts(&record) {
                    out.push(record);
                }
            }
        }
    }
    out
}

/// Merges several instances' records by time and applies the filter's `limit`.
pub fn merge(mut records: Vec<LogRecord>, filter: &LogFilter) -> Vec<LogRecord> {
    records.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.instance.cmp(&b.instance)));
    if let Some(limit) = filter.limit
        && records.len() > limit
    {
        if filter.after.is_some() {
            records.truncate(limit);
        } else {
            records.drain(..records.len() - limit);
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_parsed_and_plain_lines_kept() {
        let ts = Timestamp::UNIX_EPOCH;
        let r = parse_line(ts, "stdout", r#"{"level":"WARN","msg":"slow","ms":12}"#);
        assert_eq!(r.level.as_deref(), Some("warn"));
        assert_eq!(r.message, "slow");
        assert_eq!(r.fields["ms"], 12);
        let r = parse_line(ts, "stderr", "plain {text}\n");
        assert_eq!(r.level, None);
        assert_eq!(r.message, "plain {text}");
    }

    #[test]
    fn redaction_replaces_longest_first_and_skips_tiny_values() {
        let r = Redactor::new(["hunter2-long".into(), "hunter2".into(), "ab".into()]);
        assert_eq!(
            r.redact("a hunter2-long b hunter2 c ab"),
            "a [redacted] b [redacted] c ab"
        );
    }

    #[test]
    fn rotation_keeps_the_configured_number_of_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let policy = LogPolicy {
            max_size: 200,
            keep: 2,
        };
        let mut w = RotatingWriter::open(dir.path(), policy).unwrap();
        for i in 0..40 {
            let ts = Timestamp::from_second(i).unwrap();
            w.write(&parse_line(ts, "stdout", &format!("line {i}")))
                .unwrap();
        }
        assert!(dir.path().join("output.jsonl.2").exists());
        assert!(!dir.path().join("output.jsonl.3").exists());
        let all = read_dir(dir.path(), "x", &LogFilter::default());
        assert!(all.len() < 40, "old lines were rotated away");
        assert!(all.windows(2).all(|w| w[0].ts < w[1].ts), "in order");
        assert_eq!(all.last().unwrap().message, "line 39");
    }
}
