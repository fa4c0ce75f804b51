//! A series' identity: its label set, `__name__` included, kept sorted by name so that two
//! equal sets compare, hash and print the same. Also the matchers that select series.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// A sorted set of label pairs. Empty values are never stored (an empty label is no label).
///
/// Shared: a clone is a reference count, so the scrape cache, the store's index, a scrape's
/// batch and the stale-marker bookkeeping hold one copy. The hash is computed once per set, so
/// maps keyed by labels cost one 64-bit write per lookup.
#[derive(Clone, Default)]
pub struct Labels(Arc<Inner>);

#[derive(Clone, Default)]
struct Inner {
    pairs: Vec<(String, String)>,
    hash: OnceLock<u64>,
    /// The same set without `__name__` (what `rate` and arithmetic return), made once: the
    /// steps of a range query ask it of the same sets. At most one more set per series.
    /// None: the set has no name, and is its own.
    without_name: OnceLock<Option<Labels>>,
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.pairs == other.0.pairs
    }
}

impl Eq for Labels {}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.pairs.cmp(&other.0.pairs)
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint());
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Labels").field(&self.0.pairs).finish()
    }
}

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels::default()
    }

    fn from_sorted(pairs: Vec<(String, String)>) -> Self {
        Labels(Arc::new(Inner {
            pairs,
            hash: OnceLock::new(),
            without_name: OnceLock::new(),
        }))
    }

    /// The pairs, to change (the cached hash is dropped).
    fn pairs_mut(&mut self) -> &mut Vec<(String, String)> {
        let inner = Arc::make_mut(&mut self.0);
        inner.hash = OnceLock::new();
        inner.without_name = OnceLock::new();
        &mut inner.pairs
    }

    /// From pairs in any order; the last of duplicate names wins, empty values are dropped.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut out = Labels::new();
        for (k, v) in pairs {
            out.set(k.into(), v.into());
        }
        out
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        let pairs = &self.0.pairs;
        pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| pairs[i].1.as_str())
    }

    /// The metric name.
    pub fn name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Sets a label (an empty value removes it).
    pub fn set(&mut self, name: String, value: String) {
        match self
            .0
            .pairs
            .binary_search_by(|(k, _)| k.as_str().cmp(&name))
        {
            Ok(i) if value.is_empty() => {
                self.pairs_mut().remove(i);
            }
            Ok(i) if self.0.pairs[i].1 == value => {}
            Ok(i) => self.pairs_mut()[i].1 = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.pairs_mut().insert(i, (name, value)),
        }
    }

    /// Removes a label.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.pairs.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            self.pairs_mut().remove(i);
        }
    }

    /// The same set without its metric name.
    pub fn without_name(&self) -> Labels {
        self.0
            .without_name
            .get_or_init(|| {
                self.name()?;
                let mut l = Labels::from_sorted(self.0.pairs.clone());
                l.remove(METRIC_NAME);
                Some(l)
            })
            .clone()
            .unwrap_or_else(|| self.clone())
    }

    /// Only the labels named (`by`, `on`).
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels::from_sorted(
            self.0
                .pairs
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == k))
                .cloned()
                .collect(),
        )
    }

    /// All but the labels named (`without`, `ignoring`).
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels::from_sorted(
            self.0
                .pairs
                .iter()
                .filter(|(k, _)| !names.iter().any(|n| n == k))
                .cloned()
                .collect(),
        )
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.pairs.is_empty()
    }

    /// A 64-bit hash of the set (stable within a process).
    pub fn fingerprint(&self) -> u64 {
        *self.0.hash.get_or_init(|| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.0.pairs.hash(&mut h);
            h.finish()
        })
    }

    /// Bytes held, roughly, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.0.pairs.capacity() * std::mem::size_of::<(String, String)>()
            + self
                .0
                .pairs
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity())
                .sum::<usize>()
    }
}

impl fmt::Display for Labels {
    /// `name{a="1", b="2"}`, as Prometheus prints a series.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.name() {
            f.write_str(n)?;
        }
        let rest: Vec<String> = self
            .0
            .pairs
            .iter()
            .filter(|(k, _)| k != METRIC_NAME)
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        if !rest.is_empty() || self.name().is_none() {
            write!(f, "{{{}}}", rest.join(", "))?;
        }
        Ok(())
    }
}

/// How a matcher compares a label's value.
#[derive(Clone, Debug)]
pub enum MatchKind {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Regex(regex::Regex),
    /// `!~` (fully anchored)
    NotRegex(regex::Regex),
}

/// One label matcher of a selector. A label that is not set matches as the empty string.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The label.
    pub name: String,
    /// The comparison.
    pub kind: MatchKind,
    /// The value or pattern as written.
    pub value: String,
}

impl Matcher {
    /// `name = value`.
    pub fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.to_string(),
            kind: MatchKind::Equal,
            value: value.to_string(),
        }
    }

    /// `name =~ pattern` (anchored); an invalid pattern is an error.
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, regex::Error> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(Matcher {
            name: name.to_string(),
            kind: if negate {
                MatchKind::NotRegex(re)
            } else {
                MatchKind::Regex(re)
            },
            value: pattern.to_string(),
        })
    }

    /// Whether a value (`""` for a missing label) matches.
    pub fn matches_value(&self, value: &str) -> bool {
        match &self.kind {
            MatchKind::Equal => value == self.value,
            MatchKind::NotEqual => value != self.value,
            MatchKind::Regex(re) => re.is_match(value),
            MatchKind::NotRegex(re) => !re.is_match(value),
        }
    }

    /// Whether a series matches.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }

    /// Whether it matches the empty string (a series without the label).
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.kind {
            MatchKind::Equal => "=",
            MatchKind::NotEqual => "!=",
            MatchKind::Regex(_) => "=~",
            MatchKind::NotRegex(_) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// Whether a series matches every matcher.
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_stay_sorted_and_empty_values_are_no_labels() {
        let l = Labels::from_pairs([("job", "api"), ("__name__", "up"), ("a", ""), ("b", "2")]);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [("__name__", "up"), ("b", "2"), ("job", "api")]
        );
        assert_eq!(l.get("a"), None);
        assert_eq!(l.to_string(), r#"up{b="2", job="api"}"#);
        assert_eq!(l.without_name().to_string(), r#"{b="2", job="api"}"#);
        assert_eq!(Labels::new().to_string(), "{}");
    }

    #[test]
    fn matchers_treat_a_missing_label_as_empty() {
        let l = Labels::from_pairs([("job", "api")]);
        assert!(Matcher::equal("env", "").matches(&l));
        assert!(!Matcher::equal("job", "ap").matches(&l));
        assert!(Matcher::regex("job", "a.*", false).unwrap().matches(&l));
        assert!(
            !Matcher::regex("job", "p", false).unwrap().matches(&l),
            "anchored"
        );
        assert!(Matcher::regex("env", ".*", false).unwrap().matches(&l));
        assert!(!Matcher::regex("env", ".+", false).unwrap().matches(&l));
    }
}
