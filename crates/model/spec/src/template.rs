//! Alert templates: the part of Prometheus' Go templates that alert rules use, so summaries
//! written for Prometheus work unchanged. Text with actions in `{{ … }}`: a variable
//! (`$labels.NAME`, `$value`, `$externalURL`, `.Labels.NAME`, `.Value`), optionally piped
//! through functions (`{{ $value | humanize }}`), or a function applied to arguments
//! (`{{ humanizePercentage $value }}`, `{{ printf "%.2f" $value }}`). `{{- … -}}` trims the
//! space beside the action, as Go does.
//!
//! A template is parsed once ([`Template::parse`]); an error names the byte offset where it is,
//! so `validate` can point at the line and column in the file.

use std::fmt::Write as _;

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Action(Vec<Command>),
}

/// One stage of a pipeline: a function and its arguments (the previous stage's value is the
/// last argument), or a bare operand.
#[derive(Clone, Debug, PartialEq)]
enum Command {
    Operand(Operand),
    Call(Func, Vec<Operand>),
}

#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Label(String),
    Labels,
    Value,
    ExternalUrl,
    Str(String),
    Num(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Func {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    Printf,
    ToUpper,
    ToLower,
    Title,
}

const FUNCS: [(&str, Func); 8] = [
    ("humanize", Func::Humanize),
    ("humanize1024", Func::Humanize1024),
    ("humanizePercentage", Func::HumanizePercentage),
    ("humanizeDuration", Func::HumanizeDuration),
    ("printf", Func::Printf),
    ("toUpper", Func::ToUpper),
    ("toLower", Func::ToLower),
    ("title", Func::Title),
];

/// A template that does not parse: where (a byte offset into it) and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Byte offset of the problem in the template text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

/// What a template is rendered with.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The alert's labels.
    pub labels: &'a [(String, String)],
    /// The expression's value.
    pub value: f64,
    /// Where the control plane is reached (for links).
    pub external_url: &'a str,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut before = &rest[..open];
            if trim_next {
                before = before.trim_start();
            }
            let mut body_start = open + 2;
            if rest[body_start..].starts_with('-') {
                before = before.trim_end();
                body_start += 1;
            }
            if !before.is_empty() {
                parts.push(Part::Text(before.to_string()));
            }
            let Some(close) = rest[body_start..].find("}}") else {
                return Err(TemplateError {
                    offset: offset + open,
                    message: "`{{` is never closed".into(),
                    hint: "end the action with `}}`".into(),
                });
            };
            let mut body = &rest[body_start..body_start + close];
            trim_next = body.ends_with('-');
            if trim_next {
                body = &body[..body.len() - 1];
            }
            let body_offset = offset + body_start;
            parts.push(Part::Action(parse_pipeline(body, body_offset)?));
            let consumed = body_start + close + 2;
            rest = &rest[consumed..];
            offset += consumed;
        }
        let tail = if trim_next { rest.trim_start() } else { rest };
        if !tail.is_empty() {
            parts.push(Part::Text(tail.to_string()));
        }
        Ok(Template { parts })
    }

    /// The text with every action's value in place.
    pub fn render(&self, cx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(cmds) => out.push_str(&run(cmds, cx)),
            }
        }
        out
    }
}

/// Splits an action into words: quoted strings stay whole, `|` stands alone.
fn words(body: &str, base: usize) -> Result<Vec<(usize, String)>, TemplateError> {
    let mut out = Vec::new();
    let bytes: Vec<(usize, char)> = body.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (at, c) = bytes[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '|' {
            out.push((base + at, "|".to_string()));
            i += 1;
        } else if c == '"' || c == '`' {
            let quote = c;
            let mut s = String::new();
            s.push(quote);
            i += 1;
            let mut closed = false;
            while i < bytes.len() {
                let (_, d) = bytes[i];
                s.push(d);
                i += 1;
                if d == '\\' && quote == '"' && i < bytes.len() {
                    s.push(bytes[i].1);
                    i += 1;
                } else if d == quote {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(TemplateError {
                    offset: base + at,
                    message: "a string is never closed".into(),
                    hint: format!("end it with `{quote}`"),
                });
            }
            out.push((base + at, s));
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].1.is_whitespace() && bytes[i].1 != '|' {
                i += 1;
            }
            let word: String = bytes[start..i].iter().map(|(_, c)| *c).collect();
            out.push((base + at, word));
        }
    }
    Ok(out)
}

fn parse_pipeline(body: &str, base: usize) -> Result<Vec<Command>, TemplateError> {
    let words = words(body, base)?;
    if words.is_empty() {
        return Err(TemplateError {
            offset: base,
            message: "an empty action".into(),
            hint: "write `{{ $value }}` or `{{ $labels.NAME }}`, or remove the braces".into(),
        });
    }
    let mut out = Vec::new();
    for stage in words.split(|(_, w)| w == "|") {
        let Some(((at, head), args)) = stage.split_first() else {
            return Err(TemplateError {
                offset: base,
                message: "a `|` with nothing on one side".into(),
                hint: "pipe a value into a function: `{{ $value | humanize }}`".into(),
            });
        };
        if let Some((_, f)) = FUNCS.iter().find(|(n, _)| n == head) {
            let args = args
                .iter()
                .map(|(a, w)| operand(w, *a))
                .collect::<Result<Vec<_>, _>>()?;
            if *f == Func::Printf
                && !matches!(args.first(), Some(Operand::Str(_)))
                && out.is_empty()
            {
                return Err(TemplateError {
                    offset: *at,
                    message: "`printf` needs a format string first".into(),
                    hint: "for example `{{ printf \"%.2f\" $value }}`".into(),
                });
            }
            out.push(Command::Call(*f, args));
        } else {
            let head_operand = operand(head, *at)?;
            if !args.is_empty() {
                return Err(TemplateError {
                    offset: args[0].0,
                    message: format!("`{head}` is not a function, so it takes no arguments"),
                    hint: format!(
                        "the functions are {}",
                        FUNCS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            if !out.is_empty() {
                return Err(TemplateError {
                    offset: *at,
                    message: format!("`{head}` is not a function, so nothing can be piped into it"),
                    hint: format!(
                        "the functions are {}",
                        FUNCS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            out.push(Command::Operand(head_operand));
        }
    }
    Ok(out)
}

fn operand(word: &str, at: usize) -> Result<Operand, TemplateError> {
    if let Some(name) = word
        .strip_prefix("$labels.")
        .or_else(|| word.strip_prefix(".Labels."))
    {
        let valid = !name.is_empty()
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid {
            return Err(TemplateError {
                offset: at,
                message: format!("`{name}` is not a label name"),
                hint: "label names are letters, digits and `_`, not starting with a digit".into(),
            });
        }
        return Ok(Operand::Label(name.to_string()));
    }
    match word {
        "$value" | ".Value" => return Ok(Operand::Value),
        "$labels" | ".Labels" => return Ok(Operand::Labels),
        "$externalURL" | ".ExternalURL" => return Ok(Operand::ExternalUrl),
        _ => {}
    }
    if let Some(inner) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        return Ok(Operand::Str(unescape(inner)));
    }
    if let Some(inner) = word.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
        return Ok(Operand::Str(inner.to_string()));
    }
    if let Ok(n) = word.parse::<f64>() {
        return Ok(Operand::Num(n));
    }
    let hint = if word.starts_with('$') || word.starts_with('.') {
        "the variables are `$labels.NAME`, `$value` and `$externalURL`".to_string()
    } else if let Some(close) = FUNCS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| strsim::levenshtein(&n.to_lowercase(), &word.to_lowercase()) <= 2)
    {
        format!("did you mean `{close}`?")
    } else {
        format!(
            "write a variable (`$labels.NAME`, `$value`), a quoted string, a number, or a function ({})",
            FUNCS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )
    };
    Err(TemplateError {
        offset: at,
        message: format!("`{word}` is not something a template knows"),
        hint,
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A value flowing through a pipeline.
#[derive(Clone, Debug)]
enum Val {
    Num(f64),
    Str(String),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Num(n) => format_number(*n),
            Val::Str(s) => s.clone(),
        }
    }

    fn num(&self) -> f64 {
        match self {
            Val::Num(n) => *n,
            Val::Str(s) => s.trim().parse().unwrap_or(f64::NAN),
        }
    }
}

/// A number as Go's `%v` writes a float64 (`strconv.FormatFloat(v, 'g', -1, 64)`, with an
/// exponent only for very large or small values).
fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let exp = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    if (-4..21).contains(&exp) {
        format!("{v}")
    } else {
        let s = format!("{v:e}");
        // Go writes `1e+21`, `1.5e-05`.
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

fn resolve(op: &Operand, cx: &Context<'_>) -> Val {
    match op {
        Operand::Label(name) => Val::Str(
            cx.labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        ),
        Operand::Labels => {
            let pairs: Vec<String> = cx.labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            Val::Str(format!("map[{}]", pairs.join(" ")))
        }
        Operand::Value => Val::Num(cx.value),
        Operand::ExternalUrl => Val::Str(cx.external_url.to_string()),
        Operand::Str(s) => Val::Str(s.clone()),
        Operand::Num(n) => Val::Num(*n),
    }
}

fn run(cmds: &[Command], cx: &Context<'_>) -> String {
    let mut piped: Option<Val> = None;
    for c in cmds {
        piped = Some(match c {
            Command::Operand(op) => resolve(op, cx),
            Command::Call(f, args) => {
                let mut vals: Vec<Val> = args.iter().map(|a| resolve(a, cx)).collect();
                if let Some(p) = piped.take() {
                    vals.push(p);
                }
                call(*f, &vals)
            }
        });
    }
    piped.map(|v| v.text()).unwrap_or_default()
}

fn call(f: Func, args: &[Val]) -> Val {
    let last = args.last().cloned().unwrap_or(Val::Str(String::new()));
    match f {
        Func::Humanize => Val::Str(humanize(
            last.num(),
            1000.0,
            &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
        )),
        Func::Humanize1024 => Val::Str(humanize(
            last.num(),
            1024.0,
            &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
        )),
        Func::HumanizePercentage => Val::Str(format!("{}%", significant(last.num() * 100.0))),
        Func::HumanizeDuration => Val::Str(humanize_duration(last.num())),
        Func::Printf => {
            let Some((format, rest)) = args.split_first() else {
                return Val::Str(String::new());
            };
            Val::Str(printf(&format.text(), rest))
        }
        Func::ToUpper => Val::Str(last.text().to_uppercase()),
        Func::ToLower => Val::Str(last.text().to_lowercase()),
        Func::Title => Val::Str(
            last.text()
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    match c.next() {
                        Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
                        None => String::new(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// `%.4g`, as Prometheus' humanizers print the mantissa.
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_number(v);
    }
    let digits = 4 - 1 - v.abs().log10().floor() as i32;
    let rounded = if digits >= 0 {
        let p = 10f64.powi(digits);
        (v * p).round() / p
    } else {
        let p = 10f64.powi(-digits);
        (v / p).round() * p
    };
    format_number(rounded)
}

/// Prometheus' `humanize`: SI prefixes for large values, `m`, `u`… for small ones.
fn humanize(v: f64, base: f64, big: &[&str]) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_number(v);
    }
    if v.abs() >= 1.0 {
        let mut x = v;
        let mut i = 0;
        while x.abs() >= base && i + 1 < big.len() {
            x /= base;
            i += 1;
        }
        return format!("{}{}", significant(x), big[i]);
    }
    if base != 1000.0 {
        return significant(v);
    }
    let small = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
    let mut x = v;
    let mut i = 0;
    while x.abs() < 1.0 && i + 1 < small.len() {
        x *= 1000.0;
        i += 1;
    }
    format!("{}{}", significant(x), small[i])
}

/// Prometheus' `humanizeDuration`: `1d 2h 3m 4s`, or `123ms` under a second.
fn humanize_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return format_number(secs);
    }
    if secs.abs() < 1.0 {
        if secs == 0.0 {
            return "0s".into();
        }
        return humanize(secs, 1000.0, &[""]) + "s";
    }
    let sign = if secs < 0.0 { "-" } else { "" };
    let total = secs.abs();
    let whole = total.floor() as u64;
    let (d, h, m, s) = (
        whole / 86_400,
        whole / 3600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    let frac = total - whole as f64;
    let secs_text = if frac > 0.0 {
        significant(s as f64 + frac)
    } else {
        s.to_string()
    };
    let mut out = String::from(sign);
    if d > 0 {
        let _ = write!(out, "{d}d {h}h {m}m {secs_text}s");
    } else if h > 0 {
        let _ = write!(out, "{h}h {m}m {secs_text}s");
    } else if m > 0 {
        let _ = write!(out, "{m}m {secs_text}s");
    } else {
        let _ = write!(out, "{secs_text}s");
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %.Nf %e %g %%` (a width is
/// honoured).
fn printf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut next = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push('%');
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = next.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let (width, precision) = match spec.trim_start_matches(['-', '+']).split_once('.') {
            Some((w, p)) => (w.parse::<usize>().ok(), p.parse::<usize>().ok()),
            None => (
                spec.trim_start_matches(['-', '+']).parse::<usize>().ok(),
                None,
            ),
        };
        let text = match verb {
            'd' => format!("{}", arg.num().trunc() as i64),
            'f' | 'F' => format!("{:.*}", precision.unwrap_or(6), arg.num()),
            'e' => format!("{:.*e}", precision.unwrap_or(6), arg.num()),
            'g' => match precision {
                Some(p) if p > 0 => {
                    let v = arg.num();
                    if v == 0.0 || !v.is_finite() {
                        format_number(v)
                    } else {
                        let digits = p as i32 - 1 - v.abs().log10().floor() as i32;
                        let scale = 10f64.powi(digits);
                        format_number((v * scale).round() / scale)
                    }
                }
                _ => arg.text(),
            },
            'q' => format!("{:?}", arg.text()),
            _ => arg.text(),
        };
        match width {
            Some(w) if spec.starts_with('-') => {
                let _ = write!(out, "{text:<w$}");
            }
            Some(w) => {
                let _ = write!(out, "{text:>w$}");
            }
            None => out.push_str(&text),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, value: f64) -> String {
        let labels = vec![
            ("instance".to_string(), "web-1".to_string()),
            ("service".to_string(), "api".to_string()),
        ];
        Template::parse(t).unwrap().render(&Context {
            labels: &labels,
            value,
            external_url: "http://slipway:7070",
        })
    }

    #[test]
    fn prometheus_templates_render_as_prometheus_renders_them() {
        assert_eq!(
            render(
                "{{ $labels.service }} on {{$labels.instance}} is at {{ $value }}",
                0.25
            ),
            "api on web-1 is at 0.25"
        );
        assert_eq!(render("{{ .Labels.service }}: {{ .Value }}", 3.0), "api: 3");
        assert_eq!(render("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ humanize $value }}", 0.0123), "12.3m");
        assert_eq!(render("{{ $value | humanizePercentage }}", 0.0523), "5.23%");
        assert_eq!(render("{{ humanizeDuration $value }}", 3725.0), "1h 2m 5s");
        assert_eq!(render("{{ $value | humanize1024 }}", 2048.0), "2ki");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", 1.0 / 3.0), "0.33");
        assert_eq!(render("{{ printf \"%d%%\" $value }}", 42.9), "42%");
        assert_eq!(render("{{ $labels.missing }}!", 1.0), "!");
        assert_eq!(render("a  {{- $labels.service -}}  b", 1.0), "aapib");
        assert_eq!(render("{{ $labels.service | toUpper }}", 1.0), "API");
        assert_eq!(render("{{ $value }}", 1e21), "1e+21");
        assert_eq!(render("{{ $value }}", f64::NAN), "NaN");
    }

    #[test]
    fn a_bad_template_says_where_and_what_to_write() {
        let e = Template::parse("load {{ $value | humanise }}").unwrap_err();
        assert_eq!(e.offset, 17);
        assert!(e.message.contains("humanise"), "{e:?}");
        assert_eq!(e.hint, "did you mean `humanize`?");
        let e = Template::parse("x {{ $labels.service").unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (2, "`{{` is never closed"));
        let e = Template::parse("{{ $lables.service }}").unwrap_err();
        assert!(e.hint.contains("$labels.NAME"), "{e:?}");
        let e = Template::parse("{{ }}").unwrap_err();
        assert!(e.message.contains("empty"), "{e:?}");
        let e = Template::parse("{{ printf $value }}").unwrap_err();
        assert!(e.message.contains("format string"), "{e:?}");
        let e = Template::parse("{{ HUMANIZE $value }}").unwrap_err();
        assert!(e.hint.contains("`humanize`"), "{e:?}");
    }
}
