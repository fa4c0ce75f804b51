//! Prometheus' HTTP query API, so Grafana's Prometheus data source, `promtool query` and
//! anything else written for Prometheus work against Slipway unchanged: `/api/v1/query`,
//! `/query_range`, `/series`, `/labels`, `/label/NAME/values`, `/targets`,
//! `/status/buildinfo`, with Prometheus' JSON shapes and error types (`bad_data` → 400,
//! `execution` → 422). Parameters come in the query string or a form body, `match[]`
//! repeated, times as Unix seconds or RFC 3339, steps as durations or seconds. Also the
//! control plane's own `/metrics`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use slipway_metrics::labels::Labels;
use slipway_metrics::promql::{QueryError, Value};
use slipway_metrics::storage::Series;

use super::AppState;

/// The query string and a form body, as `(name, value)` pairs.
fn params(query: Option<&str>, body: &[u8], headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = decode_pairs(query.unwrap_or(""));
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form && let Ok(text) = std::str::from_utf8(body) {
        out.extend(decode_pairs(text));
    }
    out
}

fn decode_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn one<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn all(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn error(kind: &'static str, message: impl Into<String>) -> Response {
    let status = match kind {
        "bad_data" => StatusCode::BAD_REQUEST,
        "timeout" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (
        status,
        axum::Json(json!({ "status": "error", "errorType": kind, "error": message.into() })),
    )
        .into_response()
}

fn from_query_error(e: QueryError) -> Response {
    error(e.kind, e.message)
}

fn success(data: Json) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

/// A parameter that is not what Prometheus would accept: a `bad_data` error.
struct BadParam(String);

impl IntoResponse for BadParam {
    fn into_response(self) -> Response {
        error("bad_data", self.0)
    }
}

/// A time parameter: Unix seconds (with a fraction) or RFC 3339; `default` when absent.
fn time(params: &[(String, String)], name: &str, default: i64) -> Result<i64, BadParam> {
    let Some(v) = one(params, name).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    if let Ok(secs) = v.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    v.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            BadParam(format!(
                "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid timestamp"
            ))
        })
}

/// A duration parameter: `15s`, `1m` or seconds.
fn duration_ms(params: &[(String, String)], name: &str) -> Result<i64, BadParam> {
    let Some(v) = one(params, name) else {
        return Err(BadParam(format!("invalid parameter \"{name}\": missing")));
    };
    if let Ok(secs) = v.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    v.parse::<slipway_spec::units::Duration>()
        .map(|d| i64::try_from(d.std().as_millis()).unwrap_or(i64::MAX))
        .map_err(|_| {
            BadParam(format!(
                "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid duration"
            ))
        })
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn secs(ms: i64) -> Json {
    json!(ms as f64 / 1000.0)
}

/// A sample value as Prometheus writes it.
fn float(v: f64) -> Json {
    Json::String(slipway_metrics::promql::format_value(v))
}

fn metric(l: &Labels) -> Json {
    Json::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
            .collect(),
    )
}

fn matrix(series: &[Series]) -> Json {
    Json::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "metric": metric(&s.labels),
                    "values": s.samples.iter().map(|(t, v)| json!([secs(*t), float(*v)])).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn value_json(v: &Value, t: i64) -> Json {
    match v {
        Value::Scalar(x) => json!({ "resultType": "scalar", "result": [secs(t), float(*x)] }),
        Value::String(s) => json!({ "resultType": "string", "result": [secs(t), s] }),
        Value::Vector(samples) => json!({
            "resultType": "vector",
            "result": samples.iter().map(|(l, x)| json!({ "metric": metric(l), "value": [secs(t), float(*x)] })).collect::<Vec<_>>(),
        }),
        Value::Matrix(m) => json!({ "resultType": "matrix", "result": matrix(m) }),
    }
}

pub(crate) async fn query(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let p = params(q.as_deref(), &body, &headers);
    let Some(query) = one(&p, "query") else {
        return error("bad_data", "invalid parameter \"query\": missing");
    };
    let t = match time(&p, "time", now_ms()) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match app.metrics.backend().instant(query, t).await {
        Ok(v) => success(value_json(&v, t)),
        Err(e) => from_query_error(e),
    }
}

pub(crate) async fn query_range(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let p = params(q.as_deref(), &body, &headers);
    let Some(query) = one(&p, "query") else {
        return error("bad_data", "invalid parameter \"query\": missing");
    };
    let (start, end, step) = match (
        time(&p, "start", i64::MIN),
        time(&p, "end", i64::MIN),
        duration_ms(&p, "step"),
    ) {
        (Ok(s), Ok(e), Ok(st)) if s != i64::MIN && e != i64::MIN => (s, e, st),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r.into_response(),
        _ => {
            return error(
                "bad_data",
                "invalid parameter \"start\" or \"end\": missing",
            );
        }
    };
    match app.metrics.backend().range(query, start, end, step).await {
        Ok(m) => success(json!({ "resultType": "matrix", "result": matrix(&m) })),
        Err(e) => from_query_error(e),
    }
}

/// `start`/`end` of the metadata endpoints (default: all time).
fn window(p: &[(String, String)]) -> Result<(i64, i64), BadParam> {
    Ok((
        time(p, "start", i64::MIN / 2)?,
        time(p, "end", i64::MAX / 2)?,
    ))
}

pub(crate) async fn series(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let p = params(q.as_deref(), &body, &headers);
    let selectors = all(&p, "match[]");
    if selectors.is_empty() {
        return error("bad_data", "no match[] parameter provided");
    }
    let (start, end) = match window(&p) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    match app.metrics.backend().series(&selectors, start, end).await {
        Ok(list) => success(Json::Array(list.iter().map(metric).collect())),
        Err(e) => from_query_error(e),
    }
}

pub(crate) async fn labels(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let p = params(q.as_deref(), &body, &headers);
    let (start, end) = match window(&p) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    match app
        .metrics
        .backend()
        .label_names(&all(&p, "match[]"), start, end)
        .await
    {
        Ok(names) => success(json!(names)),
        Err(e) => from_query_error(e),
    }
}

pub(crate) async fn label_values(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let p = params(q.as_deref(), &[], &headers);
    let (start, end) = match window(&p) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    match app
        .metrics
        .backend()
        .label_values(&name, &all(&p, "match[]"), start, end)
        .await
    {
        Ok(values) => success(json!(values)),
        Err(e) => from_query_error(e),
    }
}

pub(crate) async fn targets(State(app): State<Arc<AppState>>) -> Response {
    let active: Vec<Json> = app
        .metrics
        .scraper
        .health()
        .into_iter()
        .map(|h| {
            json!({
                "discoveredLabels": h.labels,
                "labels": h.labels,
                "scrapePool": h.labels.get("job").cloned().unwrap_or_default(),
                "scrapeUrl": h.url,
                "lastError": h.last_error.clone().unwrap_or_default(),
                "lastScrape": h.last_scrape_ms.and_then(|t| jiff::Timestamp::from_millisecond(t).ok()).map(|t| t.to_string()),
                "lastScrapeDuration": h.last_duration_s,
                "health": h.health,
                "scrapeInterval": format!("{}s", h.interval_s),
                "samples": h.samples,
            })
        })
        .collect();
    success(json!({ "activeTargets": active, "droppedTargets": [] }))
}

pub(crate) async fn buildinfo() -> Response {
    // The Prometheus version whose query semantics Slipway's engine is checked against.
    success(json!({
        "version": "2.42.0",
        "revision": format!("slipway {}", crate::VERSION),
        "branch": "slipway",
        "buildUser": "slipway",
        "buildDate": "",
        "goVersion": "none",
    }))
}

pub(crate) async fn self_metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.exposition(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_decode_like_a_form() {
        let p = decode_pairs("query=sum%28up%29+by+%28job%29&match%5B%5D=a&match[]=b");
        assert_eq!(one(&p, "query"), Some("sum(up) by (job)"));
        assert_eq!(all(&p, "match[]"), ["a", "b"]);
        assert_eq!(one(&decode_pairs("q=100%"), "q"), Some("100%"));
        assert_eq!(float(f64::INFINITY), Json::String("+Inf".into()));
        assert_eq!(float(0.1), Json::String("0.1".into()));
    }
}
