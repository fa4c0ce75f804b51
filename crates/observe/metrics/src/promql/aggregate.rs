//! Aggregation operators (`sum`, `avg`, `count`, `min`, `max`, `stddev`, `stdvar`, `group`,
//! `topk`, `bottomk`, `quantile`, `count_values`) with `by` / `without` grouping.

use std::collections::BTreeMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::QueryError;
use super::eval::{Evaluator, Val};
use super::functions::{kahan_inc, quantile};
use crate::labels::{Labels, METRIC_NAME};

/// The group a sample belongs to.
fn group_of(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => labels.keep(&by.labels),
        Some(LabelModifier::Exclude(without)) => {
            let mut names = without.labels.clone();
            names.push(METRIC_NAME.to_string());
            labels.drop(&names)
        }
        None => Labels::new(),
    }
}

pub(crate) fn eval(ev: &Evaluator<'_>, agg: &AggregateExpr, t: i64) -> Result<Val, QueryError> {
    let op = agg.op.to_string();
    let node = std::ptr::from_ref(agg) as usize;
    let input = match ev.eval(&agg.expr, t)? {
        Val::Vector(v) => v,
        other => {
            return Err(QueryError::bad_data(format!(
                "expected type instant vector in aggregation expression, got {}",
                other.kind()
            )));
        }
    };
    let param = match &agg.param {
        Some(p) => Some(ev.eval(p, t)?),
        None => None,
    };
    let scalar_param = || match &param {
        Some(Val::Scalar(v)) => Ok(*v),
        _ => Err(QueryError::bad_data(format!(
            "expected type scalar as the parameter of {op}"
        ))),
    };
    match op.as_str() {
        "topk" | "bottomk" => {
            let k = scalar_param()?;
            if k < 1.0 || k.is_nan() {
                return Ok(Val::Vector(Vec::new()));
            }
            let k = k.min(input.len() as f64) as usize;
            let mut groups: BTreeMap<Labels, Vec<(Labels, f64)>> = BTreeMap::new();
            for (l, v) in input {
                groups
                    .entry(ev.group(node, &l, |l| group_of(l, &agg.modifier)))
                    .or_default()
                    .push((l, v));
            }
            let top = op == "topk";
            let mut out = Vec::new();
            for (_, mut members) in groups {
                // NaN sorts last for both.
                members.sort_by(|a, b| {
                    let (x, y) = (a.1, b.1);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                        _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                    }
                });
                out.extend(members.into_iter().take(k));
            }
            Ok(Val::Vector(out))
        }
        "count_values" => {
            let label = match &param {
                Some(Val::String(s)) => s.clone(),
                _ => {
                    return Err(QueryError::bad_data(
                        "expected type string as the parameter of count_values",
                    ));
                }
            };
            let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
            for (l, v) in input {
                let mut g = ev.group(node, &l, |l| group_of(l, &agg.modifier));
                g.set(label.clone(), super::format_value(v));
                *counts.entry(g).or_default() += 1.0;
            }
            Ok(Val::Vector(counts.into_iter().collect()))
        }
        "quantile" => {
            let q = scalar_param()?;
            let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
            for (l, v) in input {
                groups
                    .entry(ev.group(node, &l, |l| group_of(l, &agg.modifier)))
                    .or_default()
                    .push(v);
            }
            Ok(Val::Vector(
                groups
                    .into_iter()
                    .map(|(g, values)| (g, quantile(q, values)))
                    .collect(),
            ))
        }
        "sum" | "avg" | "count" | "min" | "max" | "stddev" | "stdvar" | "group" => {
            // Hashed (label sets hash once), sorted at the end.
            let mut groups: std::collections::HashMap<Labels, Acc> =
                std::collections::HashMap::new();
            for (l, v) in input {
                groups
                    .entry(ev.group(node, &l, |l| group_of(l, &agg.modifier)))
                    .or_default()
                    .add(&op, v);
            }
            let mut out: Vec<(Labels, f64)> = groups
                .into_iter()
                .map(|(g, acc)| (g, acc.result(&op)))
                .collect();
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            Ok(Val::Vector(out))
        }
        other => Err(QueryError::bad_data(format!(
            "aggregation \"{other}\" is not supported by Slipway's PromQL engine yet"
        ))),
    }
}

/// One group's running aggregate.
#[derive(Default)]
struct Acc {
    count: f64,
    value: f64,
    comp: f64,
    mean: f64,
}

impl Acc {
    fn add(&mut self, op: &str, v: f64) {
        self.count += 1.0;
        let first = self.count == 1.0;
        match op {
            "sum" => {
                if first {
                    self.value = v;
                } else {
                    (self.value, self.comp) = kahan_inc(v, self.value, self.comp);
                }
            }
            "avg" => {
                if first {
                    self.mean = v;
                    return;
                }
                if self.mean.is_infinite() {
                    if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                self.mean += v / self.count - self.mean / self.count;
            }
            "min" if first || v < self.value || self.value.is_nan() => self.value = v,
            "max" if first || v > self.value || self.value.is_nan() => self.value = v,
            "stddev" | "stdvar" => {
                let delta = v - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (v - self.mean);
            }
            _ => {}
        }
    }

    fn result(&self, op: &str) -> f64 {
        match op {
            "sum" => {
                if self.value.is_infinite() {
                    self.value
                } else {
                    self.value + self.comp
                }
            }
            "avg" => self.mean,
            "count" => self.count,
            "group" => 1.0,
            "stddev" => (self.value / self.count).sqrt(),
            "stdvar" => self.value / self.count,
            _ => self.value,
        }
    }
}
