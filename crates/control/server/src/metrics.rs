//! The control plane's metrics: it opens the embedded store in `.slipway/metrics`, tells the
//! scraper its targets (every instance of a service with `metrics`, the `[metrics.targets]`,
//! and the proxy's RED metrics per service × release × track), writes Slipway's own series
//! (instances up, healthy, restarts, CPU and memory; cron runs; deployments), evaluates the
//! recording rules, and keeps the store synced (every second: a crash loses at most that) and
//! maintained (blocks, retention).

use std::sync::Arc;
use std::time::Duration;

use slipway_metrics::backend::{Embedded, MetricsBackend, Prometheus};
use slipway_metrics::labels::Labels;
use slipway_metrics::remote_write::RemoteWriter;
use slipway_metrics::scrape::{Scraper, Target};
use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};
use slipway_pipeline::state::status;
use slipway_spec::resolve::ResolvedMetrics;
use slipway_store::Store;
use tokio_util::sync::CancellationToken;

use crate::workloads::Workloads;

/// See the module docs.
pub(crate) struct Metrics {
    pub(crate) tsdb: Arc<Tsdb>,
    pub(crate) scraper: Arc<Scraper>,
    backend: std::sync::RwLock<Arc<dyn MetricsBackend>>,
    config: std::sync::RwLock<ResolvedMetrics>,
    /// The `[metrics] remote_write` shipper, and what stops it.
    remote: std::sync::Mutex<Option<(Arc<RemoteWriter>, CancellationToken)>>,
    shutdown: CancellationToken,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn backend_for(config: &ResolvedMetrics, tsdb: &Arc<Tsdb>) -> Arc<dyn MetricsBackend> {
    match &config.backend {
        Some(b) => Arc::new(Prometheus::new(&b.prometheus)),
        None => Arc::new(Embedded::new(tsdb.clone())),
    }
}

pub(crate) fn labels<const N: usize>(name: &str, pairs: [(&str, &str); N]) -> Labels {
    let mut l = Labels::from_pairs(pairs);
    l.set("__name__".into(), name.into());
    l
}

/// The metrics configuration of `environment`: the file's, with the recording rules its SLOs
/// need (their error ratios over every window) after the file's own.
pub(crate) fn config_for(project: &slipway_spec::Project, environment: &str) -> ResolvedMetrics {
    let mut config = project
        .resolve(environment)
        .map(|r| r.metrics)
        .unwrap_or_default();
    let (slos, _) = slipway_slo::Slo::all(&project.config);
    config
        .rules
        .extend(slos.iter().flat_map(slipway_slo::Slo::recording_rules));
    config
}

impl Metrics {
    /// Opens the store and starts scraping, writing Slipway's series and maintaining the store.
    pub(crate) fn start(
        dir: &std::path::Path,
        config: ResolvedMetrics,
        workloads: Arc<Workloads>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Arc<Metrics>> {
        let retention = config.retention.std();
        let tsdb = Tsdb::open(
            dir,
            TsdbOptions {
                retention,
                // Blocks of a tenth of the retention (as Prometheus' largest), from a minute
                // to two hours: a short retention is kept to, a long one has few blocks.
                block: (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(7200)),
            },
        )?;
        let scraper = Scraper::new(tsdb.clone());
        let metrics = Arc::new(Metrics {
            backend: std::sync::RwLock::new(backend_for(&config, &tsdb)),
            tsdb,
            scraper,
            config: std::sync::RwLock::new(ResolvedMetrics::default()),
            remote: std::sync::Mutex::new(None),
            shutdown: shutdown.clone(),
        });
        metrics.reconfigure(config);
        metrics.spawn_upkeep(shutdown.clone());
        metrics.spawn_discovery(workloads.clone(), shutdown.clone());
        metrics.spawn_builtin(workloads, store, shutdown.clone());
        metrics.spawn_rules(shutdown);
        Ok(metrics)
    }

    /// Takes the file's `[metrics]` again (an apply).
    pub(crate) fn reconfigure(&self, config: ResolvedMetrics) {
        self.tsdb.set_retention(config.retention.std());
        if let Ok(mut remote) = self.remote.lock() {
            let current = remote.as_ref().map(|(w, _)| w.url().to_string());
            if current != config.remote_write {
                if let Some((_, stop)) = remote.take() {
                    stop.cancel();
                }
                self.tsdb.set_tap(None);
                if let Some(url) = &config.remote_write {
                    let stop = self.shutdown.child_token();
                    let writer = RemoteWriter::start(url, stop.clone());
                    self.tsdb.set_tap(Some(writer.tap()));
                    *remote = Some((writer, stop));
                }
            }
        }
        if config.backend != self.config().backend
            && let Ok(mut b) = self.backend.write()
        {
            *b = backend_for(&config, &self.tsdb);
        }
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
    }

    /// What queries go to: the embedded store, or the `[metrics] backend` server.
    pub(crate) fn backend(&self) -> Arc<dyn MetricsBackend> {
        self.backend
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|_| Arc::new(Embedded::new(self.tsdb.clone())))
    }

    fn config(&self) -> ResolvedMetrics {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    fn spawn_upkeep(self: &Arc<Self>, shutdown: CancellationToken) {
        let tsdb = self.tsdb.clone();
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
                ticks += 1;
                let db = tsdb.clone();
                let maintain = ticks.is_multiple_of(10);
                let done = tokio::task::spawn_blocking(move || {
                    db.sync()?;
                    if maintain {
                        db.maintain()?;
                    }
                    Ok::<(), std::io::Error>(())
                })
                .await;
                if let Ok(Err(e)) = done {
                    tracing::error!(error = %e, "the metrics store failed to sync");
                }
            }
        });
    }

    /// Stops scraping (ending the targets' series when `targets_gone`: the workloads stop
    /// too) and syncs the store: the last step of the daemon's shutdown.
    pub(crate) async fn shutdown(&self, targets_gone: bool) {
        self.scraper.stop(targets_gone).await;
        let db = self.tsdb.clone();
        match tokio::task::spawn_blocking(move || db.sync()).await {
            Ok(Err(e)) => tracing::error!(error = %e, "the metrics store failed to sync"),
            Err(e) => tracing::error!(error = %e, "the metrics store failed to sync"),
            Ok(Ok(())) => {}
        }
    }

    fn spawn_discovery(self: &Arc<Self>, workloads: Arc<Workloads>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let config = this.config();
                let mut targets = Vec::new();
                for (env, e) in workloads.scrape_endpoints().await {
                    targets.push(Target {
                        url: e.url,
                        labels: Labels::from_pairs([
                            ("job", e.service.as_str()),
                            ("instance", e.instance.as_str()),
                            ("environment", env.as_str()),
                            ("service", e.service.as_str()),
                            ("release", e.release.as_str()),
                        ]),
                        interval: e.interval,
                        bearer: None,
                    });
                }
                for t in &config.targets {
                    for url in t.all_urls() {
                        let mut l = Labels::from_pairs(
                            t.labels.iter().map(|(k, v)| (k.clone(), v.clone())),
                        );
                        l.set("job".into(), t.name.clone());
                        if l.get("instance").is_none()
                            || t.urls.len() + usize::from(t.url.is_some()) > 1
                        {
                            // host:port, as Prometheus names a static target.
                            let host = url
                                .split("://")
                                .nth(1)
                                .and_then(|r| r.split('/').next())
                                .unwrap_or(url)
                                .to_string();
                            l.set("instance".into(), host);
                        }
                        targets.push(Target {
                            url: url.to_string(),
                            labels: l,
                            interval: t.interval.map_or(config.interval.std(), |i| i.std()),
                            bearer: None,
                        });
                    }
                }
                if let Some((url, token)) = workloads.proxy_metrics() {
                    targets.push(Target {
                        url,
                        labels: Labels::from_pairs([
                            ("job", "slipway-proxy"),
                            ("instance", "proxy"),
                        ]),
                        interval: config.interval.std(),
                        bearer: Some(token),
                    });
                }
                this.scraper.set_targets(targets);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        });
    }

    /// Slipway's own series, every interval: what the runtime knows of each instance and
    /// cron service, and the deployments' outcomes.
    fn spawn_builtin(
        self: &Arc<Self>,
        workloads: Arc<Workloads>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let interval = this.config().interval.std();
                let t = now_ms();
                let mut batch: Vec<(Labels, i64, f64)> = Vec::new();
                for env in workloads.environments().await {
                    let Some(services) = workloads.status(&env).await else {
                        continue;
                    };
                    for s in services {
                        let base = [("environment", env.as_str()), ("service", s.name.as_str())];
                        batch.push((
                            labels("slipway_service_restarts_total", base),
                            t,
                            f64::from(s.restarts),
                        ));
                        for i in &s.instances {
                            let l = |name: &str| {
                                labels(
                                    name,
                                    [
                                        ("environment", env.as_str()),
                                        ("service", s.name.as_str()),
                                        ("release", i.release.as_str()),
                                        ("instance", i.id.as_str()),
                                    ],
                                )
                            };
                            let up = if i.state == "running" || i.state == "retiring" {
                                1.0
                            } else {
                                0.0
                            };
                            batch.push((l("slipway_instance_up"), t, up));
                            // Only instances that are checked have a health to report.
                            if i.health != "none" {
                                let healthy = if i.health == "healthy" { 1.0 } else { 0.0 };
                                batch.push((l("slipway_instance_healthy"), t, healthy));
                            }
                            if let Some(c) = i.cpu_percent {
                                batch.push((l("slipway_instance_cpu_percent"), t, c));
                            }
                            if let Some(r) = i.rss_bytes {
                                batch.push((l("slipway_instance_rss_bytes"), t, r as f64));
                            }
                        }
                        if let Some(last) = s.runs.iter().rev().find(|r| r.finished_at.is_some()) {
                            batch.push((
                                labels("slipway_cron_last_run_success", base),
                                t,
                                if last.outcome == "succeeded" {
                                    1.0
                                } else {
                                    0.0
                                },
                            ));
                            if let Some(f) = last.finished_at {
                                batch.push((
                                    labels("slipway_cron_last_run_timestamp_seconds", base),
                                    t,
                                    f.as_millisecond() as f64 / 1000.0,
                                ));
                            }
                        }
                    }
                }
                if let Ok(deployments) = store.deployments(None, 10_000).await {
                    let mut counts: std::collections::BTreeMap<(String, String, String), f64> =
                        std::collections::BTreeMap::new();
                    for d in deployments.iter().filter(|d| !d.active) {
                        *counts
                            .entry((d.environment.clone(), d.kind.clone(), d.status.clone()))
                            .or_default() += 1.0;
                    }
                    for ((env, kind, outcome), n) in counts {
                        batch.push((
                            labels(
                                "slipway_deployments_total",
                                [
                                    ("environment", env.as_str()),
                                    ("kind", kind.as_str()),
                                    ("outcome", outcome.as_str()),
                                ],
                            ),
                            t,
                            n,
                        ));
                    }
                }
                // Each environment's pipeline, by ref: whether its last finished run passed.
                let query = slipway_store::RunQuery {
                    limit: 500,
                    ..Default::default()
                };
                if let Ok(runs) = store.runs(&query).await {
                    let mut seen = std::collections::HashSet::new();
                    for r in runs
                        .iter()
                        .filter(|r| r.status == status::SUCCEEDED || r.status == status::FAILED)
                    {
                        if seen.insert((r.environment.clone(), r.git_ref.clone())) {
                            batch.push((
                                labels(
                                    "slipway_pipeline_last_run_success",
                                    [
                                        ("environment", r.environment.as_str()),
                                        ("ref", r.git_ref.as_str()),
                                    ],
                                ),
                                t,
                                if r.status == status::SUCCEEDED {
                                    1.0
                                } else {
                                    0.0
                                },
                            ));
                        }
                    }
                }
                let db = this.tsdb.clone();
                let _ = tokio::task::spawn_blocking(move || db.append_batch(&batch)).await;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        });
    }

    /// Recording rules: each `expr` evaluated on its interval (its group's, else
    /// `[metrics] interval`), its result stored as `record` at once, so the rules after it
    /// see it, as in a Prometheus rule group.
    fn spawn_rules(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            // Last evaluation per (record, expr).
            let mut last: std::collections::HashMap<(String, String), i64> =
                std::collections::HashMap::new();
            // The series each rule made last time.
            let mut made: std::collections::HashMap<
                (String, String),
                std::collections::HashSet<Labels>,
            > = std::collections::HashMap::new();
            loop {
                let config = this.config();
                let t = now_ms();
                for rule in &config.rules {
                    let every = rule.interval.unwrap_or(config.interval).std().as_millis() as i64;
                    let key = (rule.record.clone(), rule.expr.clone());
                    // Evaluated on multiples of the interval, like Prometheus' groups.
                    let slot = t - t.rem_euclid(every.max(1000));
                    if last.get(&key).is_some_and(|l| *l >= slot) {
                        continue;
                    }
                    last.insert(key, slot);
                    let batch = match this.backend().instant(&rule.expr, t).await {
                        Ok(slipway_metrics::promql::Value::Vector(v)) => v
                            .into_iter()
                            .map(|(mut l, x)| {
                                for (k, v) in &rule.labels {
                                    l.set(k.clone(), v.clone());
                                }
                                l.set("__name__".into(), rule.record.clone());
                                (l, t, x)
                            })
                            .collect(),
                        Ok(slipway_metrics::promql::Value::Scalar(x)) => {
                            let mut l = Labels::from_pairs(
                                rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())),
                            );
                            l.set("__name__".into(), rule.record.clone());
                            vec![(l, t, x)]
                        }
                        Ok(_) => Vec::new(),
                        Err(e) => {
                            tracing::warn!(record = %rule.record, error = %e, "a recording rule failed");
                            Vec::new()
                        }
                    };
                    // A series the rule no longer makes ends now (a stale marker), as in
                    // Prometheus.
                    let mut batch = batch;
                    let now: std::collections::HashSet<Labels> =
                        batch.iter().map(|(l, _, _)| l.clone()).collect();
                    let before = made.insert((rule.record.clone(), rule.expr.clone()), now.clone());
                    for gone in before.unwrap_or_default().difference(&now) {
                        batch.push((gone.clone(), t, slipway_metrics::storage::stale()));
                    }
                    if !batch.is_empty() {
                        let db = this.tsdb.clone();
                        let _ = tokio::task::spawn_blocking(move || db.append_batch(&batch)).await;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        });
    }

    /// The control plane's own metrics, in the Prometheus text format.
    pub(crate) fn exposition(&self) -> String {
        use std::fmt::Write as _;
        let s = self.tsdb.stats();
        let health = self.scraper.health();
        let up = health.iter().filter(|h| h.health == "up").count();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "slipway_tsdb_head_series",
            "Series in the metrics store's head.",
            s.head_series as f64,
        );
        gauge(
            "slipway_tsdb_head_samples",
            "Samples in the metrics store's head.",
            s.head_samples as f64,
        );
        gauge(
            "slipway_tsdb_head_chunk_bytes",
            "Bytes of compressed chunks in the head.",
            s.head_chunk_bytes as f64,
        );
        gauge(
            "slipway_tsdb_blocks",
            "Blocks of the metrics store on disk.",
            s.blocks as f64,
        );
        gauge(
            "slipway_tsdb_disk_bytes",
            "Bytes of the metrics store on disk.",
            s.disk_bytes as f64,
        );
        gauge(
            "slipway_tsdb_out_of_order_samples_total",
            "Samples refused for being out of order.",
            s.out_of_order as f64,
        );
        gauge(
            "slipway_scrape_targets",
            "Scrape targets.",
            health.len() as f64,
        );
        gauge(
            "slipway_scrape_targets_up",
            "Scrape targets whose last scrape succeeded.",
            up as f64,
        );
        let writer = self
            .remote
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|(w, _)| w.clone()));
        if let Some(w) = writer {
            let r = w.stats();
            for (name, help, v) in [
                ("sent", "Samples remote write delivered.", r.sent),
                (
                    "refused",
                    "Samples the remote end refused (4xx).",
                    r.refused,
                ),
                (
                    "dropped",
                    "Samples dropped because the queue was full.",
                    r.dropped,
                ),
            ] {
                let name = format!("slipway_remote_write_samples_{name}_total");
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP slipway_remote_write_retries_total Requests retried (5xx, 429, no answer).\n\
                 # TYPE slipway_remote_write_retries_total counter\nslipway_remote_write_retries_total {}\n\
                 # HELP slipway_remote_write_samples_pending Samples queued to ship.\n\
                 # TYPE slipway_remote_write_samples_pending gauge\nslipway_remote_write_samples_pending {}",
                r.retries, r.pending
            );
        }
        out
    }
}
