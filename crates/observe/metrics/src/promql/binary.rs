//! Binary operators: arithmetic and comparisons between scalars and vectors, vector matching
//! (`on`, `ignoring`, `group_left`, `group_right`), comparisons with `bool`, and the set
//! operators `and`, `or`, `unless`. Result labels follow Prometheus' `resultMetric`.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::QueryError;
use super::eval::{Evaluator, Val};
use crate::labels::{Labels, METRIC_NAME};

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Operators whose result is a new quantity, so it loses the metric name.
fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^" | "atan2")
}

/// `(value, keep)` of one pair, as Prometheus' `vectorElemBinop`.
fn elem(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "^" => (l.powf(r), true),
        "%" => (l % r, true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

pub(crate) fn eval(ev: &Evaluator<'_>, b: &BinaryExpr, t: i64) -> Result<Val, QueryError> {
    let op = b.op.to_string();
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = elem(&op, l, r);
            if is_comparison(&op) {
                Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
            } else {
                Ok(Val::Scalar(v))
            }
        }
        (Val::Vector(l), Val::Scalar(r)) => {
            Ok(Val::Vector(vector_scalar(&op, l, r, false, return_bool)))
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            Ok(Val::Vector(vector_scalar(&op, r, l, true, return_bool)))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let modifier = b.modifier.clone().unwrap_or(BinModifier {
                card: VectorMatchCardinality::OneToOne,
                matching: None,
                return_bool: false,
                fill_values: Default::default(),
            });
            match op.as_str() {
                "and" | "or" | "unless" => Ok(Val::Vector(set_op(&op, l, r, &modifier))),
                _ => vector_vector(&op, l, r, &modifier).map(Val::Vector),
            }
        }
        (l, r) => Err(QueryError::bad_data(format!(
            "binary expression must contain only scalar and instant vector types, got {} and {}",
            l.kind(),
            r.kind()
        ))),
    }
}

fn vector_scalar(
    op: &str,
    v: Vec<(Labels, f64)>,
    s: f64,
    scalar_first: bool,
    return_bool: bool,
) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for (labels, x) in v {
        let (l, r) = if scalar_first { (s, x) } else { (x, s) };
        let (mut value, mut keep) = elem(op, l, r);
        // A comparison keeps the vector's own value, whichever side it is on.
        if is_comparison(op) && scalar_first {
            value = x;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let labels = if drops_name(op) || return_bool {
                labels.without_name()
            } else {
                labels
            };
            out.push((labels, value));
        }
    }
    out
}

/// The labels vector matching compares: `on(...)` keeps those, otherwise all but
/// `ignoring(...)` and the metric name.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ignoring)) => {
            let mut names = ignoring.labels.clone();
            names.push(METRIC_NAME.to_string());
            labels.drop(&names)
        }
        None => labels.without_name(),
    }
}

fn set_op(
    op: &str,
    l: Vec<(Labels, f64)>,
    r: Vec<(Labels, f64)>,
    m: &BinModifier,
) -> Vec<(Labels, f64)> {
    let right: HashSet<Labels> = r.iter().map(|(x, _)| signature(x, &m.matching)).collect();
    match op {
        "and" => l
            .into_iter()
            .filter(|(x, _)| right.contains(&signature(x, &m.matching)))
            .collect(),
        "unless" => l
            .into_iter()
            .filter(|(x, _)| !right.contains(&signature(x, &m.matching)))
            .collect(),
        _ => {
            let left: HashSet<Labels> = l.iter().map(|(x, _)| signature(x, &m.matching)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|(x, _)| !left.contains(&signature(x, &m.matching))),
            );
            out
        }
    }
}

fn vector_vector(
    op: &str,
    l: Vec<(Labels, f64)>,
    r: Vec<(Labels, f64)>,
    m: &BinModifier,
) -> Result<Vec<(Labels, f64)>, QueryError> {
    let (include, one_to_many, one_to_one) = match &m.card {
        VectorMatchCardinality::ManyToOne(labels) => (labels.labels.clone(), false, false),
        VectorMatchCardinality::OneToMany(labels) => (labels.labels.clone(), true, false),
        _ => (Vec::new(), false, true),
    };
    // The "many" side is iterated; the "one" side is looked up.
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    let mut by_sig: HashMap<Labels, (Labels, f64)> = HashMap::new();
    for (labels, v) in one {
        let sig = signature(&labels, &m.matching);
        if by_sig.contains_key(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::execution(format!(
                "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{labels}];many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
        by_sig.insert(sig, (labels, v));
    }
    let mut out: Vec<(Labels, f64)> = Vec::new();
    let mut matched_sigs: HashSet<Labels> = HashSet::new();
    let mut seen_results: HashSet<Labels> = HashSet::new();
    for (labels, v) in many {
        let sig = signature(&labels, &m.matching);
        let Some((one_labels, one_v)) = by_sig.get(&sig) else {
            continue;
        };
        if one_to_one && !matched_sigs.insert(sig.clone()) {
            return Err(QueryError::execution(format!(
                "found duplicate series for the match group {sig} on the left hand-side of the operation: [{labels}];many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
        let (vl, vr) = if one_to_many {
            (*one_v, v)
        } else {
            (v, *one_v)
        };
        let (mut value, mut keep) = elem(op, vl, vr);
        if m.return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        let mut result = if drops_name(op) || m.return_bool {
            labels.without_name()
        } else {
            labels.clone()
        };
        if one_to_one {
            result = match &m.matching {
                Some(LabelModifier::Include(on)) => result.keep(&on.labels),
                Some(LabelModifier::Exclude(ignoring)) => result.drop(&ignoring.labels),
                None => result,
            };
        }
        for name in &include {
            match one_labels.get(name) {
                Some(v) => result.set(name.clone(), v.to_string()),
                None => result.remove(name),
            }
        }
        if !one_to_one && !seen_results.insert(result.clone()) {
            return Err(QueryError::execution(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        out.push((result, value));
    }
    Ok(out)
}
