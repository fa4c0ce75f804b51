//! PromQL's functions, with Prometheus 2's arithmetic: `rate`/`increase`/`delta` extrapolate to
//! the range's edges (and never below zero for a counter), counters reset when they decrease,
//! `*_over_time` sum with Kahan compensation, `histogram_quantile` interpolates linearly inside
//! the bucket that holds the rank.

use promql_parser::parser::{Call, Expr, VectorSelector};

use super::QueryError;
use super::eval::{Evaluator, Val, Windows, matchers_of, to_ms};
use crate::labels::{Labels, METRIC_NAME, MatchKind};
use crate::storage::rollup::Summary;
pub(crate) use crate::storage::rollup::kahan_inc;

fn arg(call: &Call, i: usize) -> Result<&Expr, QueryError> {
    call.args.args.get(i).map(|b| b.as_ref()).ok_or_else(|| {
        QueryError::bad_data(format!(
            "expected at least {} argument(s) in call to \"{}\"",
            i + 1,
            call.func.name
        ))
    })
}

fn scalar_arg(ev: &Evaluator<'_>, call: &Call, i: usize, t: i64) -> Result<f64, QueryError> {
    match ev.eval(arg(call, i)?, t)? {
        Val::Scalar(v) => Ok(v),
        other => Err(QueryError::bad_data(format!(
            "expected type scalar in call to function \"{}\", got {}",
            call.func.name,
            other.kind()
        ))),
    }
}

fn string_arg(ev: &Evaluator<'_>, call: &Call, i: usize, t: i64) -> Result<String, QueryError> {
    match ev.eval(arg(call, i)?, t)? {
        Val::String(s) => Ok(s),
        other => Err(QueryError::bad_data(format!(
            "expected type string in call to function \"{}\", got {}",
            call.func.name,
            other.kind()
        ))),
    }
}

fn vector_arg(
    ev: &Evaluator<'_>,
    call: &Call,
    i: usize,
    t: i64,
) -> Result<Vec<(Labels, f64)>, QueryError> {
    match ev.eval(arg(call, i)?, t)? {
        Val::Vector(v) => Ok(v),
        other => Err(QueryError::bad_data(format!(
            "expected type instant vector in call to function \"{}\", got {}",
            call.func.name,
            other.kind()
        ))),
    }
}

/// A range argument: its series, and the range's edges (for extrapolation).
struct RangeArg {
    series: Windows,
    start: i64,
    end: i64,
    range_ms: i64,
}

fn range_arg(ev: &Evaluator<'_>, call: &Call, i: usize, t: i64) -> Result<RangeArg, QueryError> {
    let e = arg(call, i)?;
    let (range_ms, te) = match e {
        Expr::MatrixSelector(ms) => (
            to_ms(ms.range),
            ev.selector_time(&ms.vs.at, &ms.vs.offset, t),
        ),
        Expr::Subquery(sq) => (to_ms(sq.range), ev.selector_time(&sq.at, &sq.offset, t)),
        _ => {
            return Err(QueryError::bad_data(format!(
                "expected type range vector in call to function \"{}\", got {}",
                call.func.name,
                super::eval::static_kind(e)
            )));
        }
    };
    if let Expr::MatrixSelector(ms) = e {
        return Ok(RangeArg {
            series: ev.range_windows(&ms.vs, range_ms, t)?,
            start: te - range_ms,
            end: te,
            range_ms,
        });
    }
    match ev.eval(e, t)? {
        Val::Matrix(series) => Ok(RangeArg {
            series: Windows::owned(series),
            start: te - range_ms,
            end: te,
            range_ms,
        }),
        other => Err(QueryError::bad_data(format!(
            "expected type range vector in call to function \"{}\", got {}",
            call.func.name,
            other.kind()
        ))),
    }
}

/// The selector under an argument, if it is one (for `absent` and `timestamp`).
fn selector_of(e: &Expr) -> Option<&VectorSelector> {
    match e {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        Expr::Paren(p) => selector_of(&p.expr),
        _ => None,
    }
}

/// The labels `absent` gives its one sample: the selector's equality matchers.
fn absent_labels(e: &Expr) -> Labels {
    let mut labels = Labels::new();
    let Some(vs) = selector_of(e) else {
        return labels;
    };
    let groups = matchers_of(vs);
    if groups.len() != 1 {
        return labels;
    }
    let mut seen: Vec<&str> = Vec::new();
    for m in &groups[0] {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.kind, MatchKind::Equal) && !seen.contains(&m.name.as_str()) {
            labels.set(m.name.clone(), m.value.clone());
            seen.push(&m.name);
        } else if seen.contains(&m.name.as_str()) {
            // Two matchers on one label: Prometheus leaves it out.
            labels.remove(&m.name);
        }
    }
    labels
}

pub(crate) fn call(ev: &Evaluator<'_>, call: &Call, t: i64) -> Result<Val, QueryError> {
    let name = call.func.name;
    let simple = |f: fn(f64) -> f64| -> Result<Val, QueryError> {
        Ok(Val::Vector(
            vector_arg(ev, call, 0, t)?
                .into_iter()
                .map(|(l, v)| (l.without_name(), f(v)))
                .collect(),
        ))
    };
    if let Some(v) = from_rollups(ev, call, t) {
        return Ok(v);
    }
    match name {
        "rate" | "increase" | "delta" => {
            let r = range_arg(ev, call, 0, t)?;
            let (counter, rate) = match name {
                "rate" => (true, true),
                "increase" => (true, false),
                _ => (false, false),
            };
            Ok(Val::Vector(
                r.series
                    .iter()
                    .filter_map(|(labels, samples)| {
                        extrapolated_rate(samples, r.start, r.end, r.range_ms, counter, rate)
                            .map(|v| (labels.without_name(), v))
                    })
                    .collect(),
            ))
        }
        "irate" | "idelta" => {
            let r = range_arg(ev, call, 0, t)?;
            Ok(Val::Vector(
                r.series
                    .iter()
                    .filter_map(|(labels, samples)| {
                        instant_value(samples, name == "irate").map(|v| (labels.without_name(), v))
                    })
                    .collect(),
            ))
        }
        "deriv" => {
            let r = range_arg(ev, call, 0, t)?;
            Ok(Val::Vector(
                r.series
                    .iter()
                    .filter(|(_, samples)| samples.len() >= 2)
                    .map(|(labels, samples)| {
                        let (slope, _) = linear_regression(samples, samples[0].0);
                        (labels.without_name(), slope)
                    })
                    .collect(),
            ))
        }
        "predict_linear" => {
            let r = range_arg(ev, call, 0, t)?;
            let ahead = scalar_arg(ev, call, 1, t)?;
            Ok(Val::Vector(
                r.series
                    .iter()
                    .filter(|(_, samples)| samples.len() >= 2)
                    .map(|(labels, samples)| {
                        let (slope, intercept) = linear_regression(samples, r.end);
                        (labels.without_name(), slope * ahead + intercept)
                    })
                    .collect(),
            ))
        }
        "avg_over_time" | "sum_over_time" | "count_over_time" | "min_over_time"
        | "max_over_time" | "stddev_over_time" | "stdvar_over_time" | "last_over_time"
        | "present_over_time" | "changes" | "resets" => {
            let r = range_arg(ev, call, 0, t)?;
            let keep_name = name == "last_over_time";
            Ok(Val::Vector(
                r.series
                    .iter()
                    .map(|(labels, samples)| {
                        let labels = if keep_name {
                            labels.clone()
                        } else {
                            labels.without_name()
                        };
                        (labels, over_time(name, samples))
                    })
                    .collect(),
            ))
        }
        "quantile_over_time" => {
            let q = scalar_arg(ev, call, 0, t)?;
            let r = range_arg(ev, call, 1, t)?;
            Ok(Val::Vector(
                r.series
                    .iter()
                    .map(|(labels, samples)| {
                        let values: Vec<f64> = samples.iter().map(|(_, v)| *v).collect();
                        (labels.without_name(), quantile(q, values))
                    })
                    .collect(),
            ))
        }
        "absent_over_time" => {
            let r = range_arg(ev, call, 0, t)?;
            if r.series.is_empty() {
                Ok(Val::Vector(vec![(absent_labels(arg(call, 0)?), 1.0)]))
            } else {
                Ok(Val::Vector(Vec::new()))
            }
        }
        "absent" => {
            let v = vector_arg(ev, call, 0, t)?;
            if v.is_empty() {
                Ok(Val::Vector(vec![(absent_labels(arg(call, 0)?), 1.0)]))
            } else {
                Ok(Val::Vector(Vec::new()))
            }
        }
        "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
        "vector" => Ok(Val::Vector(vec![(
            Labels::new(),
            scalar_arg(ev, call, 0, t)?,
        )])),
        "scalar" => {
            let v = vector_arg(ev, call, 0, t)?;
            Ok(Val::Scalar(if v.len() == 1 { v[0].1 } else { f64::NAN }))
        }
        "timestamp" => {
            // The sample's own time, which only a selector knows.
            let e = arg(call, 0)?;
            if let Some(vs) = selector_of(e).filter(|_| matches!(e, Expr::VectorSelector(_))) {
                let te = ev.selector_time(&vs.at, &vs.offset, t);
                let lookback = to_ms(ev.engine.lookback);
                let series = ev.range_selector(vs, lookback - 1, t)?;
                Ok(Val::Vector(
                    series
                        .into_iter()
                        .filter_map(|s| {
                            let (ts, _) = *s.samples.last()?;
                            (ts <= te).then(|| (s.labels.without_name(), ts as f64 / 1000.0))
                        })
                        .collect(),
                ))
            } else {
                Ok(Val::Vector(
                    vector_arg(ev, call, 0, t)?
                        .into_iter()
                        .map(|(l, _)| (l.without_name(), t as f64 / 1000.0))
                        .collect(),
                ))
            }
        }
        "abs" => simple(f64::abs),
        "ceil" => simple(f64::ceil),
        "floor" => simple(f64::floor),
        "exp" => simple(f64::exp),
        "sqrt" => simple(f64::sqrt),
        "ln" => simple(f64::ln),
        "log2" => simple(f64::log2),
        "log10" => simple(f64::log10),
        "sin" => simple(f64::sin),
        "cos" => simple(f64::cos),
        "tan" => simple(f64::tan),
        "asin" => simple(f64::asin),
        "acos" => simple(f64::acos),
        "atan" => simple(f64::atan),
        "sinh" => simple(f64::sinh),
        "cosh" => simple(f64::cosh),
        "tanh" => simple(f64::tanh),
        "deg" => simple(f64::to_degrees),
        "rad" => simple(f64::to_radians),
        "sgn" => simple(|v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
        "round" => {
            let to_nearest = if call.args.len() > 1 {
                scalar_arg(ev, call, 1, t)?
            } else {
                1.0
            };
            let inverse = 1.0 / to_nearest;
            Ok(Val::Vector(
                vector_arg(ev, call, 0, t)?
                    .into_iter()
                    .map(|(l, v)| (l.without_name(), (v * inverse + 0.5).floor() / inverse))
                    .collect(),
            ))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = vector_arg(ev, call, 0, t)?;
            let (lo, hi) = match name {
                "clamp" => (scalar_arg(ev, call, 1, t)?, scalar_arg(ev, call, 2, t)?),
                "clamp_min" => (scalar_arg(ev, call, 1, t)?, f64::INFINITY),
                _ => (f64::NEG_INFINITY, scalar_arg(ev, call, 1, t)?),
            };
            if hi < lo {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(
                v.into_iter()
                    .map(|(l, x)| (l.without_name(), x.max(lo).min(hi)))
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let q = scalar_arg(ev, call, 0, t)?;
            Ok(Val::Vector(histogram_quantile(
                q,
                vector_arg(ev, call, 1, t)?,
            )))
        }
        "label_replace" => {
            let v = vector_arg(ev, call, 0, t)?;
            let dst = string_arg(ev, call, 1, t)?;
            let replacement = string_arg(ev, call, 2, t)?;
            let src = string_arg(ev, call, 3, t)?;
            let pattern = string_arg(ev, call, 4, t)?;
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                QueryError::bad_data(format!(
                    "invalid regular expression in label_replace(): {e}"
                ))
            })?;
            let mut out: Vec<(Labels, f64)> = Vec::new();
            for (mut l, x) in v {
                let value = l.get(&src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&value) {
                    let mut expanded = String::new();
                    caps.expand(&replacement, &mut expanded);
                    l.set(dst.clone(), expanded);
                }
                if out.iter().any(|(o, _)| *o == l) {
                    return Err(QueryError::execution(
                        "vector cannot contain metrics with the same labelset",
                    ));
                }
                out.push((l, x));
            }
            Ok(Val::Vector(out))
        }
        "label_join" => {
            let v = vector_arg(ev, call, 0, t)?;
            let dst = string_arg(ev, call, 1, t)?;
            let sep = string_arg(ev, call, 2, t)?;
            let mut srcs = Vec::new();
            for i in 3..call.args.len() {
                srcs.push(string_arg(ev, call, i, t)?);
            }
            Ok(Val::Vector(
                v.into_iter()
                    .map(|(mut l, x)| {
                        let joined: Vec<String> = srcs
                            .iter()
                            .map(|s| l.get(s).unwrap_or("").to_string())
                            .collect();
                        l.set(dst.clone(), joined.join(&sep));
                        (l, x)
                    })
                    .collect(),
            ))
        }
        "sort" | "sort_desc" => {
            let mut v = vector_arg(ev, call, 0, t)?;
            v.sort_by(|a, b| {
                let o =
                    a.1.partial_cmp(&b.1)
                        .unwrap_or_else(|| a.1.is_nan().cmp(&b.1.is_nan()));
                if name == "sort" { o } else { o.reverse() }
            });
            Ok(Val::Vector(v))
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let v = if call.args.is_empty() {
                vec![(Labels::new(), t as f64 / 1000.0)]
            } else {
                vector_arg(ev, call, 0, t)?
            };
            Ok(Val::Vector(
                v.into_iter()
                    .map(|(l, x)| (l.without_name(), date_part(name, x)))
                    .collect(),
            ))
        }
        other => Err(QueryError::bad_data(format!(
            "function \"{other}\" is not supported by Slipway's PromQL engine yet"
        ))),
    }
}

fn date_part(part: &str, seconds: f64) -> f64 {
    let Ok(ts) = jiff::Timestamp::from_second(seconds as i64) else {
        return f64::NAN;
    };
    let d = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    f64::from(match part {
        "minute" => i32::from(d.minute()),
        "hour" => i32::from(d.hour()),
        "day_of_month" => i32::from(d.day()),
        "day_of_week" => i32::from(d.weekday().to_sunday_zero_offset()),
        "day_of_year" => i32::from(d.day_of_year()),
        "days_in_month" => i32::from(d.days_in_month()),
        "month" => i32::from(d.month()),
        _ => i32::from(d.year()),
    })
}

/// A function over a long range selector answered from the store's rollups, when it keeps
/// them (see [`Evaluator::summaries`]); None to read the samples.
fn from_rollups(ev: &Evaluator<'_>, call: &Call, t: i64) -> Option<Val> {
    let name = call.func.name;
    let keep_name = name == "last_over_time";
    let value: fn(&Summary, i64, i64, i64) -> Option<f64> = match name {
        "rate" => |s, a, b, r| extrapolate(s, a, b, r, true, true),
        "increase" => |s, a, b, r| extrapolate(s, a, b, r, true, false),
        "delta" => |s, a, b, r| extrapolate(s, a, b, r, false, false),
        "sum_over_time" => |s, _, _, _| Some(s.total()),
        "count_over_time" => |s, _, _, _| Some(s.count as f64),
        "avg_over_time" => |s, _, _, _| Some(s.total() / s.count as f64),
        "min_over_time" => |s, _, _, _| Some(s.min),
        "max_over_time" => |s, _, _, _| Some(s.max),
        "last_over_time" => |s, _, _, _| Some(s.last.1),
        "present_over_time" => |_, _, _, _| Some(1.0),
        _ => return None,
    };
    let Some(Expr::MatrixSelector(ms)) = call.args.args.first().map(|b| b.as_ref()) else {
        return None;
    };
    let range = to_ms(ms.range);
    let rows = ev.summaries(&ms.vs, range, t)?;
    let end = ev.selector_time(&ms.vs.at, &ms.vs.offset, t);
    Some(Val::Vector(
        rows.into_iter()
            .filter_map(|(labels, s)| {
                let v = value(&s, end - range, end, range)?;
                Some((
                    if keep_name {
                        labels
                    } else {
                        labels.without_name()
                    },
                    v,
                ))
            })
            .collect(),
    ))
}

/// `rate`, `increase` and `delta` over one series' samples in `[start, end]`.
pub(crate) fn extrapolated_rate(
    samples: &[(i64, f64)],
    start: i64,
    end: i64,
    range_ms: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let mut correction = 0.0;
    if counter {
        let mut prev = samples[0].1;
        for &(_, v) in &samples[1..] {
            if v < prev {
                correction += prev;
            }
            prev = v;
        }
    }
    let span = Summary::span(
        samples[0],
        samples[samples.len() - 1],
        samples.len() as u64,
        correction,
    );
    extrapolate(&span, start, end, range_ms, counter, rate)
}

/// `rate`, `increase` and `delta` from a range's first and last sample, its sample count and
/// its counter resets, extrapolated to the range's edges as Prometheus 2 does.
fn extrapolate(
    s: &Summary,
    start: i64,
    end: i64,
    range_ms: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if s.count < 2 {
        return None;
    }
    let ((first_t, first_v), (last_t, last_v)) = (s.first, s.last);
    let mut result = last_v - first_v;
    if counter {
        result += s.correction;
    }
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (s.count - 1) as f64;
    if counter && result > 0.0 && first_v >= 0.0 {
        // A counter is never extrapolated below zero.
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    result *= interval / sampled;
    if rate {
        result /= range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: the last two samples.
fn instant_value(samples: &[(i64, f64)], rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (t1, v1) = samples[samples.len() - 2];
    let (t2, v2) = samples[samples.len() - 1];
    let mut result = if rate && v2 < v1 { v2 } else { v2 - v1 };
    if rate {
        let interval = t2 - t1;
        if interval == 0 {
            return None;
        }
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least squares slope and intercept (at `intercept_t`), as Prometheus' `linearRegression`.
fn linear_regression(samples: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init = samples[0].1;
    let mut constant = true;
    for (i, &(ts, v)) in samples.iter().enumerate() {
        if constant && i > 0 && v != init {
            constant = false;
        }
        n += 1.0;
        let x = (ts - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn over_time(name: &str, samples: &[(i64, f64)]) -> f64 {
    let values = samples.iter().map(|(_, v)| *v);
    match name {
        "count_over_time" => samples.len() as f64,
        "present_over_time" => 1.0,
        "last_over_time" => samples.last().map_or(f64::NAN, |(_, v)| *v),
        "sum_over_time" => {
            let (mut sum, mut c) = (0.0, 0.0);
            for v in values {
                (sum, c) = kahan_inc(v, sum, c);
            }
            if sum.is_infinite() { sum } else { sum + c }
        }
        "avg_over_time" => {
            let (mut mean, mut count, mut c) = (0.0_f64, 0.0, 0.0);
            for v in values {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                (mean, c) = kahan_inc(v / count - mean / count, mean, c);
            }
            if mean.is_infinite() { mean } else { mean + c }
        }
        "min_over_time" | "max_over_time" => {
            let mut it = values;
            let mut best = it.next().unwrap_or(f64::NAN);
            for v in it {
                let better = if name == "max_over_time" {
                    v > best
                } else {
                    v < best
                };
                if better || best.is_nan() {
                    best = v;
                }
            }
            best
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for v in values {
                count += 1.0;
                let delta = v - (mean + cm);
                (mean, cm) = kahan_inc(delta / count, mean, cm);
                (aux, ca) = kahan_inc(delta * (v - (mean + cm)), aux, ca);
            }
            let var = (aux + ca) / count;
            if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            }
        }
        "changes" => {
            let mut changes = 0.0;
            let mut prev: Option<f64> = None;
            for v in values {
                if let Some(p) = prev
                    && v != p
                    && !(v.is_nan() && p.is_nan())
                {
                    changes += 1.0;
                }
                prev = Some(v);
            }
            changes
        }
        _ => {
            // resets
            let mut resets = 0.0;
            let mut prev: Option<f64> = None;
            for v in values {
                if prev.is_some_and(|p| v < p) {
                    resets += 1.0;
                }
                prev = Some(v);
            }
            resets
        }
    }
}

/// The φ-quantile of values, interpolated between the closest ranks (Prometheus' `quantile`).
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

/// `histogram_quantile` over classic (`le`) buckets, grouped by their other labels.
fn histogram_quantile(q: f64, v: Vec<(Labels, f64)>) -> Vec<(Labels, f64)> {
    let mut groups: std::collections::BTreeMap<Labels, Vec<(f64, f64)>> =
        std::collections::BTreeMap::new();
    for (l, count) in v {
        let Some(le) = l.get("le") else { continue };
        let Some(upper) = parse_le(le) else { continue };
        let mut key = l.without_name();
        key.remove("le");
        groups.entry(key).or_default().push((upper, count));
    }
    groups
        .into_iter()
        .map(|(l, buckets)| (l, bucket_quantile(q, buckets)))
        .collect()
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.len() < 2 {
        return f64::NAN;
    }
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are added up; counts are made monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (upper, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let last = merged.len() - 1;
    let b = merged[..last].partition_point(|(_, c)| *c < rank);
    if b == last {
        return merged[last - 1].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let mut start = 0.0;
    let end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantile_interpolates_inside_the_bucket() {
        // ClickHouse's reproduction of PromQL: (0:6) (0.5:11) (1:14) (+Inf:19), φ=0.5 → 0.35.
        let q = bucket_quantile(
            0.5,
            vec![(0.0, 6.0), (0.5, 11.0), (1.0, 14.0), (f64::INFINITY, 19.0)],
        );
        assert!((q - 0.35).abs() < 1e-12, "{q}");
        assert!(bucket_quantile(0.5, vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert_eq!(bucket_quantile(2.0, vec![]), f64::INFINITY);
        // The rank in +Inf: the second-highest bound.
        assert_eq!(
            bucket_quantile(0.99, vec![(1.0, 1.0), (2.0, 2.0), (f64::INFINITY, 10.0)]),
            2.0
        );
    }

    #[test]
    fn rate_extrapolates_and_handles_resets() {
        // A counter at 1/s, sampled every 10 s over a 60 s range, samples from 5 s to 55 s.
        let samples: Vec<(i64, f64)> = (0..6)
            .map(|i| (5_000 + i * 10_000, (5 + i * 10) as f64))
            .collect();
        let r = extrapolated_rate(&samples, 0, 60_000, 60_000, true, true).unwrap();
        assert!((r - 1.0).abs() < 1e-12, "{r}");
        // A reset adds the value before it.
        let reset = [(0, 10.0), (10_000, 20.0), (20_000, 5.0)];
        let inc = extrapolated_rate(&reset, 0, 20_000, 20_000, true, false).unwrap();
        assert!((inc - 15.0).abs() < 1e-12, "{inc}");
        assert_eq!(extrapolated_rate(&[(0, 1.0)], 0, 1, 1, true, true), None);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(quantile(0.5, vec![1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, vec![3.0, 1.0]), 1.0);
        assert!(quantile(0.5, vec![]).is_nan());
    }
}
