//! Label matchers (`service=web`, `alertname=~"api_.*"`), as silences and maintenance windows
//! write them.

use serde::{Deserialize, Serialize};

/// A label matcher of a silence (`service=web`, `alertname=~"api_.*"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Value (a regular expression, anchored, when `regex`).
    pub value: String,
    /// `=~` / `!~`.
    pub regex: bool,
    /// `!=` / `!~`.
    pub negative: bool,
}

impl Matcher {
    /// Parses `name=value`, `name!=value`, `name=~re`, `name!~re` (the value may be quoted).
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let ops = ["=~", "!~", "!=", "="];
        let (at, op) = ops
            .iter()
            .filter_map(|op| text.find(op).map(|i| (i, *op)))
            .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
            .ok_or_else(|| {
                format!("`{text}` is not a matcher: write `name=value` (or `!=`, `=~`, `!~`)")
            })?;
        let name = text[..at].trim();
        let raw = text[at + op.len()..].trim();
        let value = raw
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(raw);
        if name.is_empty() {
            return Err(format!("`{text}` has no label name before `{op}`"));
        }
        let m = Matcher {
            name: name.to_string(),
            value: value.to_string(),
            regex: op.contains('~'),
            negative: op.starts_with('!'),
        };
        if m.regex {
            regex::Regex::new(&format!("^(?:{})$", m.value))
                .map_err(|e| format!("`{}` is not a regular expression: {e}", m.value))?;
        }
        Ok(m)
    }

    /// Whether an alert's labels match (a missing label is the empty value).
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let v = labels
            .iter()
            .find(|(k, _)| *k == self.name)
            .map_or("", |(_, v)| v.as_str());
        let hit = if self.regex {
            regex::Regex::new(&format!("^(?:{})$", self.value)).is_ok_and(|r| r.is_match(v))
        } else {
            v == self.value
        };
        hit != self.negative
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match (self.regex, self.negative) {
            (false, false) => "=",
            (false, true) => "!=",
            (true, false) => "=~",
            (true, true) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}
