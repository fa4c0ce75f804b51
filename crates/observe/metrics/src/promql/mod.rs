//! PromQL: queries parsed by `promql-parser` (the Prometheus 3 grammar), evaluated here over a
//! [`Queryable`] store, with Prometheus' semantics — the 5-minute lookback of instant selectors
//! and staleness markers, counter resets and extrapolation in `rate`/`increase`, vector
//! matching, `histogram_quantile`'s interpolation. A range query is the instant query at each
//! step; selectors read the store once per query and are sliced per step.
//!
//! The module owns evaluation only: what the HTTP API returns is built from [`Value`] by the
//! server, in Prometheus' JSON shapes.

mod aggregate;
mod binary;
mod eval;
mod functions;

use std::time::Duration;

use crate::labels::Labels;
use crate::storage::Queryable;

pub use eval::parse;

/// A sample value as Prometheus writes it in its API and `count_values` labels: Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)` (`NaN`, `+Inf`, `-Inf`, shortest decimal).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The matchers of a selector (one group per `or` alternative), the metric name included.
pub fn selector_matchers(
    vs: &promql_parser::parser::VectorSelector,
) -> Vec<Vec<crate::labels::Matcher>> {
    eval::matchers_of(vs)
}

/// What a query evaluated to at one instant.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string.
    String(String),
    /// One sample per series.
    Vector(Vec<(Labels, f64)>),
    /// Samples over a range per series (a range selector at the top level).
    Matrix(Vec<crate::storage::Series>),
}

impl Value {
    /// The type's name as Prometheus' API spells it (`resultType`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Why a query failed, in Prometheus' error types: `bad_data` for a query that does not parse
/// or type-check, `execution` for one that fails while evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// `bad_data` or `execution`.
    pub kind: &'static str,
    /// What is wrong (a parse error names the position and what was expected).
    pub message: String,
}

impl QueryError {
    pub(crate) fn bad_data(message: impl Into<String>) -> Self {
        QueryError {
            kind: "bad_data",
            message: message.into(),
        }
    }

    pub(crate) fn execution(message: impl Into<String>) -> Self {
        QueryError {
            kind: "execution",
            message: message.into(),
        }
    }
}

/// Evaluation settings.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    /// How far back an instant selector looks for a series' newest sample (Prometheus: 5m).
    pub lookback: Duration,
    /// The step of a subquery that names none (Prometheus: the global evaluation interval).
    pub default_subquery_step: Duration,
    /// Most samples one query may load.
    pub max_samples: usize,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            lookback: Duration::from_secs(300),
            default_subquery_step: Duration::from_secs(60),
            max_samples: 50_000_000,
        }
    }
}

impl Engine {
    /// Evaluates `query` at `time` (Unix milliseconds).
    pub fn instant(
        &self,
        store: &dyn Queryable,
        query: &str,
        time: i64,
    ) -> Result<Value, QueryError> {
        let expr = parse(query)?;
        let ev = eval::Evaluator::new(self, store, time, time, 0);
        ev.top(&expr, time)
    }

    /// Evaluates `query` at every `step` from `start` to `end` (Unix milliseconds, both
    /// inclusive): a series per output label set, with a point per step it had a value.
    pub fn range(
        &self,
        store: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<crate::storage::Series>, QueryError> {
        if step <= 0 {
            return Err(QueryError::bad_data(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end < start {
            return Err(QueryError::bad_data(
                "end timestamp must not be before start time",
            ));
        }
        if (end - start) / step > 11_000 {
            return Err(QueryError::bad_data(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        let expr = parse(query)?;
        let ev = eval::Evaluator::new(self, store, start, end, step);
        ev.range(&expr, start, end, step)
    }
}

#[cfg(test)]
mod tests;
