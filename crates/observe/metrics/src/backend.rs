//! Where queries are answered: the embedded store with Slipway's engine, or a real Prometheus
//! (or anything that speaks its HTTP API: Mimir, VictoriaMetrics) when a team has outgrown
//! one machine. The alert rules, the deploy analysis and the dashboard ask through
//! [`MetricsBackend`]; both back-ends pass the same contract tests.

use std::sync::Arc;

use async_trait::async_trait;

use crate::labels::{Labels, Matcher};
use crate::promql::{Engine, QueryError, Value};
use crate::storage::Series;
use crate::storage::tsdb::Tsdb;

/// See the module docs. Times are Unix milliseconds.
#[async_trait]
pub trait MetricsBackend: Send + Sync {
    /// The back-end's name (`embedded`, `prometheus`).
    fn name(&self) -> &'static str;

    /// An instant query.
    async fn instant(&self, query: &str, time: i64) -> Result<Value, QueryError>;

    /// A range query.
    async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, QueryError>;

    /// Series matching any of the selectors (each a PromQL selector such as `up{job="a"}`).
    async fn series(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError>;

    /// Label names (of the series the selectors match, all when none).
    async fn label_names(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError>;

    /// A label's values (over the series the selectors match, all when none).
    async fn label_values(
        &self,
        name: &str,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError>;
}

/// The embedded store and engine.
pub struct Embedded {
    store: Arc<Tsdb>,
    engine: Engine,
}

impl Embedded {
    /// Queries over `store`.
    pub fn new(store: Arc<Tsdb>) -> Self {
        Embedded {
            store,
            engine: Engine::default(),
        }
    }
}

/// The matchers of a selector (`up{job="a"}`), for the metadata endpoints.
pub fn selector_matchers(selector: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    match crate::promql::parse(selector)? {
        promql_parser::parser::Expr::VectorSelector(vs) => {
            Ok(crate::promql::selector_matchers(&vs))
        }
        _ => Err(QueryError::bad_data(format!(
            "invalid parameter \"match[]\": {selector:?} is not a series selector"
        ))),
    }
}

impl Embedded {
    fn matching(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        use crate::storage::Queryable as _;
        let mut out: Vec<Labels> = Vec::new();
        if selectors.is_empty() {
            out = self.store.series(&[], start, end);
        } else {
            for s in selectors {
                for group in selector_matchers(s)? {
                    for l in self.store.series(&group, start, end) {
                        out.push(l);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[async_trait]
impl MetricsBackend for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn instant(&self, query: &str, time: i64) -> Result<Value, QueryError> {
        let (store, engine, query) = (self.store.clone(), self.engine, query.to_string());
        tokio::task::spawn_blocking(move || engine.instant(store.as_ref(), &query, time))
            .await
            .map_err(|e| QueryError::execution(format!("the query stopped: {e}")))?
    }

    async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let (store, engine, query) = (self.store.clone(), self.engine, query.to_string());
        tokio::task::spawn_blocking(move || engine.range(store.as_ref(), &query, start, end, step))
            .await
            .map_err(|e| QueryError::execution(format!("the query stopped: {e}")))?
    }

    async fn series(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        self.matching(selectors, start, end)
    }

    async fn label_names(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError> {
        let mut names: Vec<String> = self
            .matching(selectors, start, end)?
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn label_values(
        &self,
        name: &str,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError> {
        let mut values: Vec<String> = self
            .matching(selectors, start, end)?
            .iter()
            .filter_map(|l| l.get(name).map(str::to_string))
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }
}

/// A Prometheus-compatible server, queried over its HTTP API.
pub struct Prometheus {
    base: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// Queries `base` (`http://prometheus:9090`).
    pub fn new(base: &str) -> Self {
        Prometheus {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<serde_json::Value, QueryError> {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            )
            .timeout(std::time::Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| {
                QueryError::execution(format!("Prometheus at {} does not answer: {e}", self.base))
            })?;
        let body: serde_json::Value = res.json().await.map_err(|e| {
            QueryError::execution(format!("Prometheus answered something else than JSON: {e}"))
        })?;
        if body["status"] != "success" {
            let kind = if body["errorType"] == "bad_data" {
                "bad_data"
            } else {
                "execution"
            };
            return Err(QueryError {
                kind,
                message: body["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
            });
        }
        Ok(body["data"].clone())
    }
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn prom_float(v: &serde_json::Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn prom_ms(v: &serde_json::Value) -> i64 {
    (v.as_f64().unwrap_or(0.0) * 1000.0).round() as i64
}

fn prom_labels(v: &serde_json::Value) -> Labels {
    Labels::from_pairs(
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
    )
}

fn prom_series(v: &serde_json::Value) -> Vec<Series> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| Series {
            labels: prom_labels(&r["metric"]),
            samples: r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (prom_ms(&p[0]), prom_float(&p[1])))
                .collect(),
        })
        .collect()
}

fn match_params(selectors: &[String], start: i64, end: i64) -> Vec<(&'static str, String)> {
    let mut form = vec![("start", secs(start)), ("end", secs(end))];
    for s in selectors {
        form.push(("match[]", s.clone()));
    }
    form
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[async_trait]
impl MetricsBackend for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    async fn instant(&self, query: &str, time: i64) -> Result<Value, QueryError> {
        let data = self
            .call(
                "/api/v1/query",
                &[("query", query.to_string()), ("time", secs(time))],
            )
            .await?;
        let result = &data["result"];
        Ok(match data["resultType"].as_str() {
            Some("scalar") => Value::Scalar(prom_float(&result[1])),
            Some("string") => Value::String(result[1].as_str().unwrap_or_default().to_string()),
            Some("matrix") => Value::Matrix(prom_series(result)),
            _ => Value::Vector(
                result
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| (prom_labels(&r["metric"]), prom_float(&r["value"][1])))
                    .collect(),
            ),
        })
    }

    async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let data = self
            .call(
                "/api/v1/query_range",
                &[
                    ("query", query.to_string()),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", secs(step)),
                ],
            )
            .await?;
        Ok(prom_series(&data["result"]))
    }

    async fn series(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        let selectors = if selectors.is_empty() {
            vec!["{__name__=~\".+\"}".to_string()]
        } else {
            selectors.to_vec()
        };
        let data = self
            .call("/api/v1/series", &match_params(&selectors, start, end))
            .await?;
        let mut out: Vec<Labels> = data
            .as_array()
            .into_iter()
            .flatten()
            .map(prom_labels)
            .collect();
        out.sort();
        Ok(out)
    }

    async fn label_names(
        &self,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError> {
        let data = self
            .call("/api/v1/labels", &match_params(selectors, start, end))
            .await?;
        Ok(strings(&data))
    }

    async fn label_values(
        &self,
        name: &str,
        selectors: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, QueryError> {
        let mut url = format!(
            "/api/v1/label/{name}/values?start={}&end={}",
            secs(start),
            secs(end)
        );
        for s in selectors {
            url.push_str("&match[]=");
            url.push_str(&encode(s));
        }
        let res = self
            .client
            .get(format!("{}{url}", self.base))
            .send()
            .await
            .map_err(|e| QueryError::execution(format!("Prometheus does not answer: {e}")))?;
        let body: serde_json::Value = res.json().await.map_err(|e| {
            QueryError::execution(format!("Prometheus answered something else than JSON: {e}"))
        })?;
        Ok(strings(&body["data"]))
    }
}

/// Percent-encodes a form or query value.
fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}
