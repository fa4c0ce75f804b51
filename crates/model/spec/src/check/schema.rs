//! Checks a parsed TOML document (with spans) against the JSON Schema generated from
//! [`crate::model`], reporting every problem at once.
//!
//! Serde stops at the first error and knows no positions; this walker does neither. It
//! understands the subset of JSON Schema that schemars emits for our types (`$ref`, `anyOf` /
//! `oneOf`, `type`, `enum` / `const`, `properties`, `additionalProperties`, `required`,
//! `items`, `minimum` / `maximum`, and our own `format`s from [`crate::units`]). Because the
//! schema comes from the same types serde fills, a document this checker accepts deserializes.

use serde_json::Value as Json;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::KeyPath;
use crate::diagnostic::{Diagnostic, Level, SourceFile};
use crate::units;

/// Walks documents against one schema.
pub(crate) struct SchemaChecker<'a> {
    root: &'a Json,
    source: &'a SourceFile,
}

impl<'a> SchemaChecker<'a> {
    pub(crate) fn new(root: &'a Json, source: &'a SourceFile) -> Self {
        SchemaChecker { root, source }
    }

    /// Checks the whole document against the root schema.
    pub(crate) fn check_document(&self, doc: &Spanned<DeTable<'_>>, out: &mut Vec<Diagnostic>) {
        self.check_table(doc.get_ref(), 0..0, self.root, &KeyPath::root(), out);
    }

    /// Checks one value against a schema.
    pub(crate) fn check(
        &self,
        node: &Spanned<DeValue<'_>>,
        schema: &'a Json,
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        let schema = self.deref(schema);
        match schema {
            Json::Bool(true) => return,
            Json::Bool(false) => {
                out.push(self.error(
                    node.span(),
                    path,
                    format!("`{path}` is not allowed here"),
                    Some("remove it".into()),
                ));
                return;
            }
            _ => {}
        }
        if let Some(branches) = alternatives(schema) {
            self.check_alternatives(node, branches, path, out);
            return;
        }
        if let Some(types) = schema.get("type")
            && !type_matches(node.get_ref(), types)
        {
            out.push(self.type_error(node, &[schema], path));
            return;
        }
        match node.get_ref() {
            DeValue::String(s) => self.check_string(node, s, schema, path, out),
            DeValue::Integer(i) => {
                let value = i128::from_str_radix(i.as_str(), i.radix()).unwrap_or(i128::MAX);
                self.check_range(node, value as f64, schema, path, out);
            }
            DeValue::Float(f) => {
                let value = f.as_str().parse::<f64>().unwrap_or(f64::NAN);
                self.check_range(node, value, schema, path, out);
            }
            DeValue::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &path.index(i), out);
                    }
                }
            }
            DeValue::Table(table) => self.check_table(table, node.span(), schema, path, out),
            DeValue::Boolean(_) | DeValue::Datetime(_) => {}
        }
    }

    fn check_table(
        &self,
        table: &DeTable<'_>,
        span: std::ops::Range<usize>,
        schema: &'a Json,
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            let child = path.key(name);
            if let Some(prop) = properties.and_then(|p| p.get(name)) {
                self.check(value, prop, &child, out);
                continue;
            }
            match additional {
                Some(Json::Bool(false)) => {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let hint = unknown_key_hint(name, &known, path, value.get_ref());
                    let message = if path.is_root() {
                        format!("unknown section or key `{name}`")
                    } else {
                        format!("unknown key `{name}` in `{path}`")
                    };
                    out.push(self.error(key.span(), &child, message, Some(hint)));
                }
                Some(extra @ Json::Object(_)) => self.check(value, extra, &child, out),
                _ => {}
            }
        }
        if let Some(required) = schema.get("required").and_then(Json::as_array) {
            for name in required.iter().filter_map(Json::as_str) {
                if table.iter().all(|(k, _)| k.get_ref().as_ref() != name) {
                    let what = if path.is_root() {
                        "the file".to_string()
                    } else {
                        format!("`{path}`")
                    };
                    out.push(self.error(
                        span.clone(),
                        &path.key(name),
                        format!("missing key `{name}` in {what}"),
                        Some(
                            match describe(self.deref(&schema["properties"][name]), self) {
                                Some(d) => format!("add `{name} = …` ({d})"),
                                None => format!("add `{name} = …`"),
                            },
                        ),
                    ));
                }
            }
        }
    }

    fn check_alternatives(
        &self,
        node: &Spanned<DeValue<'_>>,
        branches: &'a [Json],
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        let mut leaves = Vec::new();
        self.flatten(branches, &mut leaves);
        leaves.retain(|b| b.get("type").and_then(Json::as_str) != Some("null"));
        let matching: Vec<&Json> = leaves
            .iter()
            .copied()
            .filter(|b| {
                b.get("type")
                    .is_none_or(|t| type_matches(node.get_ref(), t))
            })
            .collect();
        if matching.is_empty() {
            out.push(self.type_error(node, &leaves, path));
            return;
        }
        // A set of string constants is an enumeration: one clear message with a suggestion.
        if let DeValue::String(s) = node.get_ref() {
            let constants: Option<Vec<&str>> = matching
                .iter()
                .map(|b| string_constants(b))
                .collect::<Option<Vec<_>>>()
                .map(|lists| lists.into_iter().flatten().collect());
            if let Some(allowed) = constants {
                if !allowed.contains(&s.as_ref()) {
                    out.push(self.enum_error(node, s, &allowed, path));
                }
                return;
            }
        }
        let mut best: Option<Vec<Diagnostic>> = None;
        for branch in matching {
            let mut found = Vec::new();
            self.check(node, branch, path, &mut found);
            if found.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| found.len() < b.len()) {
                best = Some(found);
            }
        }
        out.extend(best.unwrap_or_default());
    }

    fn flatten(&self, branches: &'a [Json], leaves: &mut Vec<&'a Json>) {
        for branch in branches {
            let branch = self.deref(branch);
            match alternatives(branch) {
                Some(inner) => self.flatten(inner, leaves),
                None => leaves.push(branch),
            }
        }
    }

    fn check_string(
        &self,
        node: &Spanned<DeValue<'_>>,
        s: &str,
        schema: &Json,
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        if let Some(allowed) = string_constants(schema) {
            if !allowed.contains(&s) {
                out.push(self.enum_error(node, s, &allowed, path));
            }
            return;
        }
        if let Some(format) = schema.get("format").and_then(Json::as_str)
            && let Err(e) = units::check_format(format, s)
        {
            out.push(self.error(
                node.span(),
                path,
                format!("{} (in `{path}`)", e.message),
                Some(e.hint.to_string()),
            ));
        }
    }

    fn check_range(
        &self,
        node: &Spanned<DeValue<'_>>,
        value: f64,
        schema: &Json,
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        let min = schema.get("minimum").and_then(Json::as_f64);
        let max = schema.get("maximum").and_then(Json::as_f64);
        let too_small = min.is_some_and(|m| value < m);
        let too_big = max.is_some_and(|m| value > m);
        let unsigned_overflow = schema
            .get("format")
            .and_then(Json::as_str)
            .is_some_and(|f| f == "uint32" && value > f64::from(u32::MAX));
        if too_small || too_big || unsigned_overflow || value.is_nan() {
            let range = match (min, max) {
                (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                (Some(lo), None) if unsigned_overflow => {
                    format!("between {lo} and {}", u32::MAX)
                }
                (Some(lo), None) => format!("at least {lo}"),
                (None, Some(hi)) => format!("at most {hi}"),
                (None, None) => "a valid number".to_string(),
            };
            out.push(self.error(
                node.span(),
                path,
                format!("`{path}` is out of range"),
                Some(format!("use a value {range}")),
            ));
        }
    }

    fn enum_error(
        &self,
        node: &Spanned<DeValue<'_>>,
        value: &str,
        allowed: &[&str],
        path: &KeyPath,
    ) -> Diagnostic {
        let list = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = match closest(value, allowed) {
            Some(best) => format!("did you mean \"{best}\"? expected one of {list}"),
            None => format!("expected one of {list}"),
        };
        self.error(
            node.span(),
            path,
            format!("unknown value \"{value}\" for `{path}`"),
            Some(hint),
        )
    }

    fn type_error(
        &self,
        node: &Spanned<DeValue<'_>>,
        options: &[&Json],
        path: &KeyPath,
    ) -> Diagnostic {
        let mut wanted: Vec<String> = Vec::new();
        for option in options {
            if let Some(d) = describe(option, self)
                && !wanted.contains(&d)
            {
                wanted.push(d);
            }
        }
        let expected = join_or(&wanted);
        let found = found_word(node.get_ref());
        let hint = type_hint(node.get_ref(), options).or_else(|| {
            Some(match node.get_ref() {
                DeValue::Array(_) if expected == "a table" => format!(
                    "`{path}` holds named entries: write `[{path}.NAME]` sections, not `[[{path}]]`"
                ),
                _ => format!("write {expected} here"),
            })
        });
        self.error(
            node.span(),
            path,
            format!("expected {expected} for `{path}`, found {found}"),
            hint,
        )
    }

    fn error(
        &self,
        span: std::ops::Range<usize>,
        path: &KeyPath,
        message: String,
        hint: Option<String>,
    ) -> Diagnostic {
        self.source
            .diagnostic(Level::Error, span, path.to_string(), message, hint)
    }

    fn deref(&self, schema: &'a Json) -> &'a Json {
        let mut schema = schema;
        // References only point into `$defs`; a chain is followed to its end.
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Json::as_str) else {
                break;
            };
            let name = reference.trim_start_matches("#/$defs/");
            schema = &self.root["$defs"][name];
        }
        schema
    }
}

fn alternatives(schema: &Json) -> Option<&[Json]> {
    schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Json::as_array)
        .map(Vec::as_slice)
}

/// The string values a schema allows, if it is a pure enumeration.
fn string_constants(schema: &Json) -> Option<Vec<&str>> {
    if let Some(c) = schema.get("const").and_then(Json::as_str) {
        return Some(vec![c]);
    }
    if let Some(list) = schema.get("enum").and_then(Json::as_array) {
        return list.iter().map(Json::as_str).collect();
    }
    None
}

fn type_matches(node: &DeValue<'_>, types: &Json) -> bool {
    let accepts = |t: &str| match node {
        DeValue::String(_) => t == "string",
        DeValue::Integer(_) => t == "integer" || t == "number",
        DeValue::Float(_) => t == "number",
        DeValue::Boolean(_) => t == "boolean",
        DeValue::Array(_) => t == "array",
        DeValue::Table(_) => t == "object",
        DeValue::Datetime(_) => false,
    };
    match types {
        Json::String(t) => accepts(t),
        Json::Array(list) => list.iter().filter_map(Json::as_str).any(accepts),
        _ => true,
    }
}

/// Words for what a schema wants, such as `a duration such as "30s"`.
fn describe(schema: &Json, checker: &SchemaChecker<'_>) -> Option<String> {
    let schema = checker.deref(schema);
    if let Some(branches) = alternatives(schema) {
        let mut leaves = Vec::new();
        checker.flatten(branches, &mut leaves);
        let words: Vec<String> = leaves.iter().filter_map(|b| describe(b, checker)).collect();
        return Some(join_or(&words));
    }
    if let Some(constants) = string_constants(schema) {
        let list: Vec<String> = constants.iter().map(|c| format!("\"{c}\"")).collect();
        return Some(join_or(&list));
    }
    if let Some(format) = schema.get("format").and_then(Json::as_str) {
        let word = match format {
            units::format::DURATION => Some("a duration such as \"30s\""),
            units::format::PERCENT => Some("a percentage such as \"5%\""),
            units::format::SIZE => Some("a size such as \"10MB\""),
            units::format::CRON => Some("a cron schedule such as \"*/5 * * * *\""),
            units::format::TIMEZONE => Some("a time zone such as \"UTC\""),
            units::format::REPEAT => Some("a duration such as \"15m\", or \"never\""),
            _ => None,
        };
        if let Some(word) = word {
            return Some(word.to_string());
        }
    }
    let words = |t: &str| match t {
        "string" => Some("a string"),
        "integer" => Some("an integer"),
        "number" => Some("a number"),
        "boolean" => Some("true or false"),
        "array" => Some("a list"),
        "object" => Some("a table"),
        _ => None,
    };
    match schema.get("type")? {
        Json::String(t) => words(t).map(str::to_string),
        Json::Array(list) => {
            let w: Vec<String> = list
                .iter()
                .filter_map(Json::as_str)
                .filter_map(words)
                .map(str::to_string)
                .collect();
            Some(join_or(&w))
        }
        _ => None,
    }
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => "a value".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn found_word(node: &DeValue<'_>) -> String {
    match node {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// A hint for the usual slips: quoted numbers, unquoted durations, `"true"` in quotes.
fn type_hint(node: &DeValue<'_>, options: &[&Json]) -> Option<String> {
    let wants = |t: &str| {
        options.iter().any(|o| match o.get("type") {
            Some(Json::String(s)) => s == t,
            Some(Json::Array(l)) => l.iter().any(|x| x.as_str() == Some(t)),
            _ => false,
        })
    };
    let wants_format = |f: &str| {
        options
            .iter()
            .any(|o| o.get("format").and_then(Json::as_str) == Some(f))
    };
    match node {
        DeValue::String(s)
            if (wants("integer") || wants("number")) && s.trim().parse::<f64>().is_ok() =>
        {
            Some(format!("remove the quotes: `{}`", s.trim()))
        }
        DeValue::String(s) if wants("boolean") && matches!(s.as_ref(), "true" | "false") => {
            Some(format!("remove the quotes: `{s}`"))
        }
        DeValue::Integer(_) | DeValue::Float(_) if wants_format(units::format::DURATION) => {
            Some("durations need a unit and quotes, for example \"30s\" or \"5m\"".to_string())
        }
        DeValue::Float(f) if wants_format(units::format::PERCENT) => {
            let value = f.as_str().parse::<f64>().unwrap_or_default();
            Some(format!(
                "write percentages with a `%`: \"{}%\" (as a ratio, {} is {}%)",
                value * 100.0,
                f.as_str(),
                value * 100.0
            ))
        }
        DeValue::Float(f) if wants("integer") => Some(format!(
            "write a whole number, such as `{}`",
            f.as_str().parse::<f64>().unwrap_or_default().round()
        )),
        DeValue::String(s) if wants("integer") || wants("number") => Some(format!(
            "write a number without quotes instead of \"{s}\", for example `2`"
        )),
        DeValue::String(_) if wants("boolean") => {
            Some("write `true` or `false`, without quotes".to_string())
        }
        DeValue::Array(items) if wants("string") && items.len() == 1 => {
            Some("write a single string, without the brackets".to_string())
        }
        DeValue::Integer(i) if wants("string") => Some(format!("put it in quotes: \"{i}\"")),
        DeValue::String(s) if wants("array") => Some(format!("write a list: [\"{s}\"]")),
        DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_) if wants("object") => {
            Some("write a table: `key = { … }` or a `[section]`".to_string())
        }
        _ => None,
    }
}

/// The nearest known name, if one is near enough to be a likely typo.
pub(crate) fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| {
            let kl = k.to_ascii_lowercase();
            let distance = strsim::damerau_levenshtein(&lower, &kl);
            let similarity = strsim::jaro_winkler(&lower, &kl);
            (k, distance, similarity)
        })
        .filter(|(k, distance, similarity)| {
            *distance <= (k.len().max(name.len()) / 3).max(1) || *similarity >= 0.9
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(k, _, _)| *k)
}

fn unknown_key_hint(name: &str, known: &[&str], path: &KeyPath, value: &DeValue<'_>) -> String {
    if let Some(best) = closest(name, known) {
        return format!("did you mean `{best}`?");
    }
    if path.is_root()
        && let DeValue::Table(t) = value
    {
        let looks_like_service = t
            .iter()
            .any(|(k, _)| matches!(k.get_ref().as_ref(), "start" | "port" | "build" | "kind"));
        if looks_like_service {
            return format!("services go under `[services.{name}]`");
        }
    }
    if known.is_empty() {
        return format!("remove `{name}`: this table takes no keys");
    }
    format!("known keys: {}", known.join(", "))
}
