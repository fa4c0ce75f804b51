//! Checking a `slipway.toml`: first its shape against the schema ([`schema`]), then the rules
//! that span several places, such as references between sections, per environment
//! ([`semantic`]).
//!
//! Both phases report every problem they find. The second needs the typed model, so when the
//! first found problems it runs on the document without the values the schema refused
//! ([`prune`]): a typo in one place does not hide a wrong reference in another.

pub(crate) mod schema;
pub(crate) mod semantic;

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The typed model of a document with the parts the schema refused left out, for the semantic
/// checks to run on: each refused value is dropped (a missing key drops its table; an array
/// item that is itself wrong, or lacks a key, drops its array, as removing the one item would
/// renumber the rest), and the result checked again, until it deserializes. Also returns the
/// paths that were dropped. `None` when nothing usable is left.
pub(crate) fn prune(
    text: &str,
    mut refused: Vec<crate::diagnostic::Diagnostic>,
    root: &serde_json::Value,
    source: &crate::diagnostic::SourceFile,
) -> Option<(crate::model::Config, Vec<KeyPath>)> {
    let mut doc = toml::Value::Table(text.parse().ok()?);
    let mut pruned = Vec::new();
    for _ in 0..8 {
        for d in &refused {
            let mut path = KeyPath::from_display(&d.path);
            if d.message.starts_with("missing key") {
                path.0.pop();
            }
            // Never the array item alone: the rest would be renumbered.
            while matches!(path.0.last(), Some(Segment::Index(_))) {
                path.0.pop();
            }
            if path.is_root() {
                return None;
            }
            remove(&mut doc, &path.0);
            pruned.push(path);
        }
        let pruned_text = toml::to_string(&doc).ok()?;
        let (tree, syntax) = DeTable::parse_recoverable(&pruned_text);
        if !syntax.is_empty() {
            return None;
        }
        let pruned_source = crate::diagnostic::SourceFile::new(&source.path, pruned_text.clone());
        refused.clear();
        schema::SchemaChecker::new(root, &pruned_source).check_document(&tree, &mut refused);
        if refused.is_empty() {
            return toml::from_str(&pruned_text).ok().map(|c| (c, pruned));
        }
    }
    None
}

/// Removes the value at `path` (through tables and array items).
fn remove(doc: &mut toml::Value, path: &[Segment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Key(k), toml::Value::Table(t)) => t.get_mut(k),
            (Segment::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    if let (Segment::Key(k), toml::Value::Table(t)) = (last, node) {
        t.remove(k);
    }
}

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

    /// Reads a path back from its [`Display`](fmt::Display) form (`services."a.b"[0].name`).
    pub(crate) fn from_display(text: &str) -> Self {
        let mut segments = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '.' => {
                    chars.next();
                }
                '"' => {
                    chars.next();
                    let key: String = chars.by_ref().take_while(|c| *c != '"').collect();
                    segments.push(Segment::Key(key));
                }
                '[' => {
                    chars.next();
                    let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                    if let Ok(i) = digits.parse() {
                        segments.push(Segment::Index(i));
                    }
                }
                _ => {
                    let mut key = String::new();
                    while let Some(&c) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        key.push(c);
                        chars.next();
                    }
                    segments.push(Segment::Key(key));
                }
            }
        }
        KeyPath(segments)
    }

    /// The name a path ends with when it is a table of a named entry (`services.web`,
    /// `pipeline.jobs.build`): dropping it makes references to that name look wrong.
    pub(crate) fn entry_name(&self) -> Option<&str> {
        match self.0.as_slice() {
            [.., Segment::Key(_), Segment::Key(name)] => Some(name),
            _ => None,
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops the last segment.
    pub(crate) fn pop(&mut self) {
        self.0.pop();
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
    fn paths_read_back_from_their_display_form() {
        for p in [
            KeyPath::root().key("services").key("web").key("port"),
            KeyPath::root().key("alerts").index(0).key("name"),
            KeyPath::root().key("env").key("a.b").key("c"),
        ] {
            assert_eq!(KeyPath::from_display(&p.to_string()), p);
        }
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
