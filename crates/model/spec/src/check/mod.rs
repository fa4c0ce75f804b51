//! Checking a `slipway.toml`: first its shape against the schema ([`schema`]), then the rules
//! that span several places, such as references between sections, per environment
//! ([`semantic`]).
//!
//! Both phases report every problem they find; the second runs only when the first found none,
//! because it needs the typed model.

pub(crate) mod schema;
pub(crate) mod semantic;

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A dotted key path such as `services.web.health.interval` or `alerts[0].name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// Builds a path from dotted text; numeric parts are array indexes.
    pub(crate) fn parse(dotted: &str) -> Self {
        KeyPath(
            dotted
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| match s.parse() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key(s.to_string()),
                })
                .collect(),
        )
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(i));
        next
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "\"{k}\"")?;
                    }
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Finds where a key path is written in the parsed document.
pub(crate) struct Locator<'d, 'i> {
    doc: &'d Spanned<DeTable<'i>>,
}

impl<'d, 'i> Locator<'d, 'i> {
    pub(crate) fn new(doc: &'d Spanned<DeTable<'i>>) -> Self {
        Locator { doc }
    }

    /// Span of the value at `path` (for a key, see [`Locator::key_span`]).
    pub(crate) fn value_span(&self, path: &KeyPath) -> Option<Range<usize>> {
        self.find(path).map(|(_, value)| value)
    }

    /// Where the first of several paths that is written in the file is: its value, unless the
    /// value is a table (then its key, which is where a `[header]` names it).
    pub(crate) fn first_span(&self, paths: &[KeyPath]) -> Option<Range<usize>> {
        paths.iter().find_map(|p| {
            let (key, value, is_table) = self.find_with_kind(p)?;
            Some(if is_table { key } else { value })
        })
    }

    fn find_with_kind(&self, path: &KeyPath) -> Option<(Range<usize>, Range<usize>, bool)> {
        let (key, value) = self.find(path)?;
        let mut node: Option<&DeValue<'i>> = None;
        let mut table = Some(self.doc.get_ref());
        for segment in &path.0 {
            let next = match segment {
                Segment::Key(k) => {
                    table?
                        .iter()
                        .find(|(key, _)| key.get_ref().as_ref() == k)?
                        .1
                }
                Segment::Index(i) => match node? {
                    DeValue::Array(items) => items.get(*i)?,
                    _ => return None,
                },
            };
            node = Some(next.get_ref());
            table = match next.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        Some((key, value, matches!(node, Some(DeValue::Table(_)))))
    }

    fn find(&self, path: &KeyPath) -> Option<(Range<usize>, Range<usize>)> {
        let mut spans = (0..0, 0..0);
        let mut table: Option<&DeTable<'i>> = Some(self.doc.get_ref());
        let mut current: Option<&Spanned<DeValue<'i>>> = None;
        for segment in &path.0 {
            match segment {
                Segment::Key(k) => {
                    let t = table.take()?;
                    let (key, value) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)?;
                    spans = (key.span(), value.span());
                    current = Some(value);
                }
                Segment::Index(i) => {
                    let DeValue::Array(items) = current?.get_ref() else {
                        return None;
                    };
                    let item = items.get(*i)?;
                    spans = (item.span(), item.span());
                    current = Some(item);
                }
            }
            table = match current.map(Spanned::get_ref) {
                Some(DeValue::Table(t)) => Some(t),
                _ => None,
            };
        }
        Some(spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_toml_keys() {
        let p = KeyPath::root().key("services").key("web").key("port");
        assert_eq!(p.to_string(), "services.web.port");
        let q = KeyPath::root().key("alerts").index(0).key("name");
        assert_eq!(q.to_string(), "alerts[0].name");
        assert_eq!(
            KeyPath::root().key("env").key("a.b").to_string(),
            "env.\"a.b\""
        );
        assert_eq!(KeyPath::parse("alerts.0.name"), q);
    }

    #[test]
    fn locator_finds_keys_and_values() {
        let text = "[services.web]\nport = 8080\n[[alerts]]\nname = \"x\"\n";
        let doc = DeTable::parse(text).unwrap();
        let loc = Locator::new(&doc);
        let table = loc.first_span(&[KeyPath::parse("services.web")]).unwrap();
        assert_eq!(&text[table], "web");
        let value = loc
            .value_span(&KeyPath::parse("services.web.port"))
            .unwrap();
        assert_eq!(&text[value], "8080");
        let name = loc.value_span(&KeyPath::parse("alerts.0.name")).unwrap();
        assert_eq!(&text[name], "\"x\"");
        assert!(loc.first_span(&[KeyPath::parse("services.api")]).is_none());
    }
}
