//! PromQL syntax, checked where a query is written (rules in `slipway.toml`, the query API):
//! `promql-parser` parses, and when it refuses a query this module finds where — the first
//! token after the longest prefix that still parses — so the error says line, column and
//! what was found there, as Prometheus' own messages do (`1:5: parse error: unexpected
//! identifier "bar"`).

pub use promql_parser::parser::Expr;

/// A query that does not parse: where (a byte offset into it) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the problem in the query.
    pub offset: usize,
    /// 1-based line and column (in characters) of the offset.
    pub line: usize,
    /// See `line`.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: parse error: {}",
            self.line, self.column, self.message
        )
    }
}

/// Parses a query, or says where and why it does not parse.
pub fn parse(query: &str) -> Result<Expr, SyntaxError> {
    if query.trim().is_empty() {
        return Err(error_at(query, 0, "no expression found in input".into()));
    }
    match promql_parser::parser::parse(query) {
        Ok(e) => Ok(e),
        Err(message) => Err(locate(query, &message)),
    }
}

fn error_at(query: &str, offset: usize, message: String) -> SyntaxError {
    let upto = &query[..offset.min(query.len())];
    let line = upto.matches('\n').count() + 1;
    let column = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    SyntaxError {
        offset,
        line,
        column,
        message,
    }
}

/// Where the parser's complaint is: an unclosed bracket is its opener; otherwise the first
/// token after the longest prefix that parses.
fn locate(query: &str, message: &str) -> SyntaxError {
    let tokens = tokens(query);
    if (message.starts_with("unclosed") || message.contains("end of input"))
        && let Some(open) = unclosed(&tokens, query)
    {
        return error_at(query, open, message.to_string());
    }
    let valid = (1..=tokens.len())
        .rev()
        .find(|k| completable(&tokens[..*k], &query[..tokens[k - 1].1]));
    let bad = valid.unwrap_or(0);
    match tokens.get(bad) {
        Some(&(start, end)) => {
            let found = &query[start..end];
            let what = if message == "invalid promql query" {
                format!("unexpected {} {found:?}", describe(found))
            } else {
                message.to_string()
            };
            error_at(query, start, what)
        }
        None => error_at(
            query,
            query.trim_end().len(),
            if message == "invalid promql query" {
                "unexpected end of input".to_string()
            } else {
                message.to_string()
            },
        ),
    }
}

/// Whether a prefix of the query can still become a query: as it is, or with an operand,
/// a grouping or a matcher after it, and its open brackets closed.
fn completable(tokens: &[(usize, usize)], prefix: &str) -> bool {
    let mut closers = String::new();
    for &(start, end) in tokens {
        match &prefix[start..end] {
            "(" => closers.push(')'),
            "{" => closers.push('}'),
            "[" => closers.push(']'),
            ")" | "}" | "]" => {
                closers.pop();
            }
            _ => {}
        }
    }
    let closers: String = closers.chars().rev().collect();
    ["", " 1", " x", " (x)", "=\"x\""]
        .iter()
        .any(|more| promql_parser::parser::parse(&format!("{prefix}{more}{closers}")).is_ok())
}

fn describe(token: &str) -> &'static str {
    let first = token.chars().next().unwrap_or(' ');
    if first == '"' || first == '\'' || first == '`' {
        "string"
    } else if first.is_ascii_digit() || first == '.' {
        "number"
    } else if first.is_alphabetic() || first == '_' || first == ':' {
        "identifier"
    } else {
        "character"
    }
}

/// The opener of the first bracket left unclosed, if any.
fn unclosed(tokens: &[(usize, usize)], query: &str) -> Option<usize> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    for &(start, end) in tokens {
        let t = &query[start..end];
        match t {
            "(" | "{" | "[" => stack.push((t.chars().next().unwrap_or('('), start)),
            ")" | "}" | "]" => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack.first().map(|(_, at)| *at)
}

/// A rough tokenization, good enough to point at tokens: strings, words (identifiers,
/// numbers, durations), two-character operators, single characters.
fn tokens(q: &str) -> Vec<(usize, usize)> {
    let bytes = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                if bytes[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'.' || c >= 0x80 {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || bytes[i] == b':'
                    || bytes[i] == b'.'
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
        } else if i + 1 < bytes.len()
            && matches!(&q[i..i + 2], "==" | "!=" | ">=" | "<=" | "=~" | "!~")
        {
            i += 2;
        } else {
            i += 1;
        }
        while !q.is_char_boundary(i) {
            i += 1;
        }
        out.push((start, i));
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_comparison_with_a_number_gives_its_holding_condition() {
        let c = threshold_comparison("rate(errors_total[5m]) > 0.05").unwrap();
        assert!(c.above && !c.inclusive && c.threshold == 0.05);
        assert_eq!(c.holding(0.02), "(rate(errors_total[5m])) > 0.02");
        let c = threshold_comparison("(10 >= queue_depth)").unwrap();
        assert!(!c.above && c.inclusive && c.threshold == 10.0);
        assert_eq!(c.holding(20.0), "(queue_depth) <= 20");
        assert!(threshold_comparison("absent(up)").is_none());
        assert!(threshold_comparison("up > bool 0").is_none());
        assert!(threshold_comparison("a > b").is_none());
    }

    use super::*;

    #[test]
    fn errors_say_where_and_what() {
        let e = parse("foo bar").unwrap_err();
        assert_eq!(
            e.to_string(),
            "1:5: parse error: unexpected identifier \"bar\""
        );
        let e = parse("rate(x[5m]").unwrap_err();
        assert_eq!((e.line, e.column), (1, 5), "{e}");
        assert!(e.message.contains("unclosed"), "{e}");
        let e = parse("sum(x) by").unwrap_err();
        assert_eq!(e.column, 10, "{e}");
        let e = parse("x +").unwrap_err();
        assert_eq!(e.to_string(), "1:4: parse error: unexpected end of input");
        // What is wrong is the `)`, not the `(` of a `sum` that would parse alone.
        let e = parse("sum(\n  rate(x[5m]) +\n)").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        let e = parse("up\n  and on(job) foo{").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(parse("").is_err());
        assert!(parse("sum by (job) (rate(x[5m]))").is_ok());
    }
}

/// An alert condition of the form `A > N` (or `>=`, `<`, `<=`, the number on either side),
/// which a numeric recovery threshold turns into the condition that keeps it firing.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The side that is not the number.
    pub value: Expr,
    /// Whether the alert fires when the value is high (`A > N`, `N < A`).
    pub above: bool,
    /// Whether the comparison is inclusive (`>=`, `<=`).
    pub inclusive: bool,
    /// The number.
    pub threshold: f64,
}

impl Comparison {
    /// The condition that holds while a firing alert has not recovered: the value still
    /// past `recover` (`A > 5` with `recover = 3` keeps firing while `A > 3`).
    pub fn holding(&self, recover: f64) -> String {
        let op = match (self.above, self.inclusive) {
            (true, true) => ">=",
            (true, false) => ">",
            (false, true) => "<=",
            (false, false) => "<",
        };
        format!("({}) {op} {recover}", self.value)
    }
}

/// `expr` as a comparison with a number, if it is one (and it parses).
pub fn threshold_comparison(expr: &str) -> Option<Comparison> {
    use promql_parser::parser::token::{T_GTE, T_GTR, T_LSS, T_LTE};
    let mut e = parse(expr).ok()?;
    while let Expr::Paren(p) = e {
        e = *p.expr;
    }
    let Expr::Binary(b) = e else {
        return None;
    };
    if b.modifier.as_ref().is_some_and(|m| m.return_bool) {
        return None;
    }
    let id = b.op.id();
    let (above_if_number_right, inclusive) = match id {
        T_GTR => (true, false),
        T_GTE => (true, true),
        T_LSS => (false, false),
        T_LTE => (false, true),
        _ => return None,
    };
    let strip = |mut e: Expr| {
        while let Expr::Paren(p) = e {
            e = *p.expr;
        }
        e
    };
    match (strip(*b.lhs.clone()), strip(*b.rhs.clone())) {
        (value, Expr::NumberLiteral(n)) if !matches!(value, Expr::NumberLiteral(_)) => {
            Some(Comparison {
                value,
                above: above_if_number_right,
                inclusive,
                threshold: n.val,
            })
        }
        (Expr::NumberLiteral(n), value) if !matches!(value, Expr::NumberLiteral(_)) => {
            Some(Comparison {
                value,
                above: !above_if_number_right,
                inclusive,
                threshold: n.val,
            })
        }
        _ => None,
    }
}
