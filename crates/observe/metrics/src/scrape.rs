//! Scraping: every target on its interval, its body parsed (Prometheus text or OpenMetrics,
//! as its `Content-Type` says), its samples stored with the target's labels, and, as
//! Prometheus does, `up`, `scrape_duration_seconds` and `scrape_samples_scraped` per target
//! and stale markers for series that disappear (a target that goes away, or stops exposing
//! one). A target that answers garbage is down, with the parse error as its last error;
//! nothing else is affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::exposition::{self, Format};
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::stale;
use crate::storage::tsdb::Tsdb;

/// What is scraped.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The URL.
    pub url: String,
    /// Labels every series of it gets (`job`, `instance`, and Slipway's own:
    /// `environment`, `service`, `release`).
    pub labels: Labels,
    /// How often.
    pub interval: Duration,
    /// A bearer token to send, if the endpoint wants one.
    pub bearer: Option<String>,
}

impl Target {
    fn key(&self) -> String {
        format!("{} {}", self.url, self.labels)
    }
}

/// A target's health, for `slipway metrics targets` and `/api/v1/targets`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetHealth {
    /// The URL.
    pub url: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `up`, `down`, or `unknown` before its first scrape.
    pub health: String,
    /// When it was last scraped (Unix ms).
    pub last_scrape_ms: Option<i64>,
    /// How long that took, in seconds.
    pub last_duration_s: Option<f64>,
    /// Why it is down.
    pub last_error: Option<String>,
    /// Samples it gave last time.
    pub samples: usize,
    /// Its interval, in seconds.
    pub interval_s: f64,
}

struct Running {
    target: Target,
    cancel: CancellationToken,
    health: Arc<Mutex<TargetHealth>>,
    task: tokio::task::JoinHandle<()>,
}

/// See the module docs.
pub struct Scraper {
    store: Arc<Tsdb>,
    client: reqwest::Client,
    running: Mutex<HashMap<String, Running>>,
    /// Set when stopping should leave the series as they are (the targets live on).
    keep_series: std::sync::atomic::AtomicBool,
    /// Counts the scrapes stored, for whoever wants to act on new samples at once.
    stored: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Scraper {
    /// A scraper storing into `store`.
    pub fn new(store: Arc<Tsdb>) -> Arc<Self> {
        Arc::new(Scraper {
            store,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .unwrap_or_default(),
            running: Mutex::new(HashMap::new()),
            keep_series: std::sync::atomic::AtomicBool::new(false),
            stored: tokio::sync::watch::channel(0).0,
        })
    }

    /// Changes each time a scrape's samples are stored (alert rules are evaluated then, not
    /// up to a tick later).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// Makes the targets scraped exactly `targets`: new ones start, gone ones stop (their
    /// series get stale markers).
    pub fn set_targets(self: &Arc<Self>, targets: Vec<Target>) {
        let wanted: HashMap<String, Target> = targets.into_iter().map(|t| (t.key(), t)).collect();
        let mut running = lock(&self.running);
        running.retain(|key, r| {
            let keep = wanted
                .get(key)
                .is_some_and(|t| t.interval == r.target.interval);
            if !keep {
                r.cancel.cancel();
            }
            keep
        });
        for (key, target) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let cancel = CancellationToken::new();
            let health = Arc::new(Mutex::new(TargetHealth {
                url: target.url.clone(),
                labels: target
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                health: "unknown".into(),
                interval_s: target.interval.as_secs_f64(),
                ..Default::default()
            }));
            let task = tokio::spawn(self.clone().run(
                target.clone(),
                cancel.clone(),
                health.clone(),
            ));
            running.insert(
                key,
                Running {
                    target,
                    cancel,
                    health,
                    task,
                },
            );
        }
    }

    /// Every target's health.
    pub fn health(&self) -> Vec<TargetHealth> {
        let mut out: Vec<TargetHealth> = lock(&self.running)
            .values()
            .map(|r| lock(&r.health).clone())
            .collect();
        out.sort_by(|a, b| (&a.labels, &a.url).cmp(&(&b.labels, &b.url)));
        out
    }

    /// Stops every target and waits until they stopped. `targets_gone` (the workloads stop
    /// too) ends their series with stale markers, as a target that goes away does; otherwise
    /// the series stay as they are, to go on when scraping resumes.
    pub async fn stop(&self, targets_gone: bool) {
        self.keep_series
            .store(!targets_gone, std::sync::atomic::Ordering::SeqCst);
        let stopped: Vec<Running> = lock(&self.running).drain().map(|(_, r)| r).collect();
        for r in &stopped {
            r.cancel.cancel();
        }
        for r in stopped {
            let _ = r.task.await;
        }
    }

    async fn run(
        self: Arc<Self>,
        target: Target,
        cancel: CancellationToken,
        health: Arc<Mutex<TargetHealth>>,
    ) {
        // Targets start spread over their interval, not all at once.
        let spread = target.interval.as_millis().max(1) as u64;
        let offset = Duration::from_millis(target.labels.fingerprint() % spread);
        tokio::select! {
            _ = tokio::time::sleep(offset.min(Duration::from_secs(1))) => {}
            _ = cancel.cancelled() => return,
        }
        let mut cache = ScrapeCache::default();
        let mut ticker = tokio::time::interval(target.interval.max(Duration::from_millis(100)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = cancel.cancelled() => break,
            }
            self.scrape(&target, &health, &mut cache).await;
        }
        if self.keep_series.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // Gone: its series end now, `up` and the scrape's own series too.
        let t = now_ms();
        let mut batch: Vec<(Labels, i64, f64)> =
            cache.last_seen().map(|l| (l, t, stale())).collect();
        for name in REPORT_SERIES {
            let mut l = target.labels.clone();
            l.set(METRIC_NAME.to_string(), name.to_string());
            batch.push((l, t, stale()));
        }
        self.store_batch(&batch);
    }

    fn store_batch(&self, batch: &[(Labels, i64, f64)]) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_batch(batch) {
            tracing::error!(error = %e, "cannot store scraped samples");
        }
        self.stored.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// One scrape; returns the series it stored (for the next one's stale markers).
    async fn scrape(&self, target: &Target, health: &Mutex<TargetHealth>, cache: &mut ScrapeCache) {
        let t = now_ms();
        let started = std::time::Instant::now();
        let timeout = target.interval.min(Duration::from_secs(10));
        let result = self.fetch(target, timeout).await;
        let took = started.elapsed().as_secs_f64();
        let mut batch: Vec<(Labels, i64, f64)> = Vec::new();
        let (up, error, count) = match result {
            Ok(exp) => {
                let count = exp.samples.len();
                batch.reserve(count + REPORT_SERIES.len());
                for s in exp.samples {
                    let labels = cache.labels(s.name, s.labels, &target.labels);
                    batch.push((labels, s.timestamp_ms.unwrap_or(t), s.value));
                }
                (1.0, None, count)
            }
            Err(e) => (0.0, Some(e), 0),
        };
        // The previous scrape's series this one did not have end now (all of them when the
        // scrape failed).
        let added = cache.added;
        batch.extend(cache.end_scrape().map(|l| (l, t, stale())));
        for (name, value) in
            REPORT_SERIES
                .into_iter()
                .zip([up, took, count as f64, count as f64, added as f64])
        {
            let mut l = target.labels.clone();
            l.set(METRIC_NAME.to_string(), name.to_string());
            batch.push((l, t, value));
        }
        self.store_batch(&batch);
        let mut h = lock(health);
        h.health = if up == 1.0 { "up" } else { "down" }.into();
        h.last_scrape_ms = Some(t);
        h.last_duration_s = Some(took);
        h.last_error = error;
        h.samples = count;
    }

    async fn fetch(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<exposition::Exposition, String> {
        let mut req = self
            .client
            .get(&target.url)
            .timeout(timeout)
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
            );
        if let Some(token) = &target.bearer {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {}s", timeout.as_secs_f64())
            } else {
                format!("cannot reach it: {}", root_cause(&e))
            }
        })?;
        if !res.status().is_success() {
            return Err(format!("server returned HTTP status {}", res.status()));
        }
        let format = Format::from_content_type(
            res.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let body = res
            .text()
            .await
            .map_err(|e| format!("cannot read the body: {e}"))?;
        exposition::parse(&body, format).map_err(|e| format!("cannot parse the body: {e}"))
    }
}

/// The series every scrape writes about itself, as Prometheus does (there is no relabeling, so
/// the samples after it are the samples scraped).
const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
}

/// A target's series as its page writes them (name and own labels) → the stored label set,
/// so a steady page costs one hash lookup per sample, not a label set built and hashed
/// (Prometheus keeps the same cache per scrape loop). It also knows which series each scrape
/// had, for stale markers.
struct ScrapeCache {
    map: HashMap<PageSeries, Entry, foldhash::fast::RandomState>,
    /// The scrape going on (the first is 1).
    scrape: u64,
    /// Series new in the scrape going on.
    added: usize,
}

/// A series as a page writes it: its name and its own labels.
type PageSeries = (String, Vec<(String, String)>);

struct Entry {
    labels: Labels,
    /// The last scrape that had it.
    seen: u64,
}

impl Default for ScrapeCache {
    fn default() -> Self {
        ScrapeCache {
            map: HashMap::default(),
            scrape: 1,
            added: 0,
        }
    }
}

impl ScrapeCache {
    /// The stored labels of a sample of this scrape.
    fn labels(&mut self, name: String, own: Vec<(String, String)>, target: &Labels) -> Labels {
        let scrape = self.scrape;
        match self.map.entry((name, own)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let entry = e.get_mut();
                if entry.seen + 1 < scrape {
                    self.added += 1;
                }
                entry.seen = scrape;
                entry.labels.clone()
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let (name, own) = e.key();
                let labels = series_labels(name, own, target);
                e.insert(Entry {
                    labels: labels.clone(),
                    seen: scrape,
                });
                self.added += 1;
                labels
            }
        }
    }

    /// Ends the scrape going on: the series the one before had and this one did not. Forgets
    /// series gone once they outnumber the live ones.
    fn end_scrape(&mut self) -> impl Iterator<Item = Labels> + use<> {
        let (now, before) = (self.scrape, self.scrape - 1);
        let gone: Vec<Labels> = self
            .map
            .values()
            .filter(|e| e.seen == before)
            .map(|e| e.labels.clone())
            .collect();
        let live = self.map.values().filter(|e| e.seen == now).count();
        if self.map.len() > live.saturating_mul(2).max(64) {
            self.map.retain(|_, e| e.seen == now);
        }
        self.scrape += 1;
        self.added = 0;
        gone.into_iter()
    }

    /// The series the last scrape had (their stale markers when the target goes).
    fn last_seen(&self) -> impl Iterator<Item = Labels> + '_ {
        let last = self.scrape - 1;
        self.map
            .values()
            .filter(move |e| e.seen == last)
            .map(|e| e.labels.clone())
    }
}

/// A scraped sample's series: its own labels, then the target's; a label of its own that
/// the target also sets is kept as `exported_<name>` (Prometheus' `honor_labels: false`).
pub fn series_labels(name: &str, own: &[(String, String)], target: &Labels) -> Labels {
    let mut l = Labels::new();
    for (k, v) in own {
        let k = if target.get(k).is_some() {
            format!("exported_{k}")
        } else {
            k.clone()
        };
        l.set(k, v.clone());
    }
    for (k, v) in target.iter() {
        l.set(k.to_string(), v.to_string());
    }
    l.set(METRIC_NAME.to_string(), name.to_string());
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_cache_knows_which_series_went_and_which_are_new() {
        let target = Labels::from_pairs([("job", "web")]);
        let mut cache = ScrapeCache::default();
        let a = cache.labels("x".into(), own(&[("k", "a")]), &target);
        let b = cache.labels("x".into(), own(&[("k", "b")]), &target);
        assert_eq!(a.to_string(), r#"x{job="web", k="a"}"#);
        assert_eq!(cache.added, 2);
        assert_eq!(cache.end_scrape().count(), 0);
        // `b` goes: its stale marker; the same labels come back shared.
        let again = cache.labels("x".into(), own(&[("k", "a")]), &target);
        assert_eq!(again, a);
        assert_eq!(cache.added, 0);
        assert_eq!(
            cache.end_scrape().collect::<Vec<_>>(),
            std::slice::from_ref(&b)
        );
        // A failed scrape: everything the last one had ends.
        assert_eq!(
            cache.end_scrape().collect::<Vec<_>>(),
            std::slice::from_ref(&a)
        );
        assert_eq!(cache.end_scrape().count(), 0);
        // Back after a gap: new again.
        cache.labels("x".into(), own(&[("k", "b")]), &target);
        assert_eq!(cache.added, 1);
        assert_eq!(cache.end_scrape().count(), 0);
        assert_eq!(cache.last_seen().collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn target_labels_win_and_conflicts_are_exported() {
        let target = Labels::from_pairs([("job", "web"), ("instance", "web-r1-0")]);
        let l = series_labels(
            "x_total",
            &[
                ("job".into(), "inner".into()),
                ("code".into(), "200".into()),
            ],
            &target,
        );
        assert_eq!(
            l.to_string(),
            r#"x_total{code="200", exported_job="inner", instance="web-r1-0", job="web"}"#
        );
    }
}
