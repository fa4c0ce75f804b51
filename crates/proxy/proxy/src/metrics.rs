//! RED metrics per service × release × track: requests by status class, latency, requests in
//! flight. Exposed three ways: cumulative, in the Prometheus text format (prometheus-client,
//! with a lock-free histogram of our own); over sliding windows (one-second slots of
//! log-spaced latency buckets, mergeable by addition) for people; and as cumulative counts
//! with the same fine buckets ([`Counts`]), which the deploy engine takes the difference of
//! between two readings to judge exactly the requests of an analysis interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Seconds of history kept for windowed queries.
pub const WINDOW_SLOTS: usize = 300;
/// Latency buckets of the windowed sketch: 0.1ms × 1.2^i.
const BUCKETS: usize = 90;
const FIRST_MS: f64 = 0.1;
const GROWTH: f64 = 1.2;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    environment: String,
    service: String,
    release: String,
    track: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    environment: String,
    service: String,
    release: String,
    track: String,
    code: String,
}

/// The registry of every pool's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<PoolLabels, LatencyHistogram>,
    in_flight: Family<PoolLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("slipway_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<PoolLabels, LatencyHistogram>::default();
        let in_flight = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "requests",
            "Requests answered, by status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the backend's response headers",
            latency.clone(),
        );
        registry.register("in_flight", "Requests being answered", in_flight.clone());
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
        }
    }
}

impl Metrics {
    /// Handles for one pool (resolved once, so a request touches only atomics).
    pub fn pool(
        &self,
        environment: &str,
        service: &str,
        release: &str,
        track: &str,
    ) -> PoolMetrics {
        let labels = PoolLabels {
            environment: environment.into(),
            service: service.into(),
            release: release.into(),
            track: track.into(),
        };
        let class = |code: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    environment: environment.into(),
                    service: service.into(),
                    release: release.into(),
                    track: track.into(),
                    code: code.into(),
                })
                .clone()
        };
        PoolMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: self.latency.get_or_create(&labels).clone(),
            total_buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            window: Box::new(Windowed::default()),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Upper bounds of the exported latency buckets, in seconds: 0.5 ms × 2^i.
const PROM_BUCKETS: usize = 16;

/// A cumulative latency histogram updated with atomics only (prometheus-client's takes a lock
/// on every observation, which the proxy's worker threads would contend for).
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: std::sync::Arc<HistogramInner>,
}

#[derive(Debug, Default)]
struct HistogramInner {
    buckets: [AtomicU64; PROM_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = (0..PROM_BUCKETS)
            .find(|&i| secs <= 0.0005 * f64::from(1u32 << i))
            .unwrap_or(PROM_BUCKETS);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = (0..=PROM_BUCKETS)
            .map(|i| {
                let upper = if i == PROM_BUCKETS {
                    f64::MAX
                } else {
                    0.0005 * f64::from(1u32 << i)
                };
                (upper, self.inner.buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        // The count is the buckets' sum, so `_count` always equals the `+Inf` bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(
            self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One pool's metric handles.
pub struct PoolMetrics {
    by_class: [Counter; 5],
    latency: LatencyHistogram,
    /// Every answered request since the pool was created, in the fine buckets.
    total_buckets: Box<[AtomicU64; BUCKETS]>,
    /// Requests in flight.
    pub in_flight: Gauge,
    window: Box<Windowed>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolMetrics")
    }
}

fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

impl PoolMetrics {
    /// Records one answered request.
    pub fn record(&self, status: u16, took: Duration) {
        self.by_class[class_index(status)].inc();
        self.latency.observe(took);
        self.total_buckets[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
        self.window.record(class_index(status), took);
    }

    /// Every request since the pool was created (read while requests are being counted, so
    /// the classes and buckets may differ by the few requests in between).
    pub fn counts(&self) -> Counts {
        Counts {
            classes: std::array::from_fn(|i| self.by_class[i].get()),
            buckets: self
                .total_buckets
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let n = b.load(Ordering::Relaxed);
                    (n > 0).then_some((i as u16, n))
                })
                .collect(),
        }
    }

    /// Stats over the last `window`.
    pub fn stats(&self, window: Duration) -> WindowStats {
        let mut s = self.window.sum(window);
        s.in_flight = self.in_flight.get();
        s
    }
}

/// One second of one pool.
struct Slot {
    second: AtomicU64,
    classes: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            second: AtomicU64::new(0),
            classes: Default::default(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

struct Windowed {
    slots: Vec<Slot>,
}

impl Default for Windowed {
    fn default() -> Self {
        Windowed {
            slots: (0..WINDOW_SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

fn now_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bucket_of(took: Duration) -> usize {
    let ms = took.as_secs_f64() * 1000.0;
    if ms <= FIRST_MS {
        return 0;
    }
    let i = ((ms / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// Upper bound of latency bucket `i` of [`Counts`], in milliseconds (0.1 ms × 1.2^i; the
/// last bucket also holds everything slower).
pub fn bucket_upper_ms(i: usize) -> f64 {
    FIRST_MS * GROWTH.powi(i as i32)
}

impl Windowed {
    fn record(&self, class: usize, took: Duration) {
        let now = now_second();
        let slot = &self.slots[(now as usize) % WINDOW_SLOTS];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != now
            && slot
                .second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This thread moved the slot to a new second: clear the old counts. A request
            // counted by another thread in between may be lost; windows are estimates.
            for c in &slot.classes {
                c.store(0, Ordering::Relaxed);
            }
            for b in &slot.buckets {
                b.store(0, Ordering::Relaxed);
            }
        }
        slot.classes[class].fetch_add(1, Ordering::Relaxed);
        slot.buckets[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self, window: Duration) -> WindowStats {
        let now = now_second();
        let span = window.as_secs().clamp(1, WINDOW_SLOTS as u64);
        let mut classes = [0u64; 5];
        let mut buckets = [0u64; BUCKETS];
        for slot in &self.slots {
            let second = slot.second.load(Ordering::Acquire);
            if second == 0 || second + span <= now || second > now {
                continue;
            }
            for (sum, c) in classes.iter_mut().zip(&slot.classes) {
                *sum += c.load(Ordering::Relaxed);
            }
            for (sum, b) in buckets.iter_mut().zip(&slot.buckets) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        let requests: u64 = classes.iter().sum();
        let quantile = |q: f64| -> Option<f64> {
            if requests == 0 {
                return None;
            }
            let rank = (q * requests as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(bucket_mid_ms(i));
                }
            }
            None
        };
        WindowStats {
            window_s: span,
            requests,
            status_1xx: classes[0],
            status_2xx: classes[1],
            status_3xx: classes[2],
            status_4xx: classes[3],
            status_5xx: classes[4],
            error_rate: if requests == 0 {
                0.0
            } else {
                classes[4] as f64 / requests as f64
            },
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
            in_flight: 0,
        }
    }
}

/// Cumulative counts of a pool: requests by status class, and latencies in the fine buckets
/// (see [`bucket_upper_ms`]). Subtracting an earlier reading gives the requests in between.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Counts {
    /// Requests answered 1xx, 2xx, 3xx, 4xx, 5xx.
    pub classes: [u64; 5],
    /// `(bucket index, requests)`, for non-empty buckets, by index.
    pub buckets: Vec<(u16, u64)>,
}

impl Counts {
    /// Requests answered.
    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// Requests answered 5xx (the proxy's own 502/503/504 included).
    pub fn errors(&self) -> u64 {
        self.classes[4]
    }

    /// Requests per bucket, as a dense vector of [`BUCKET_COUNT`] entries.
    pub fn dense(&self) -> Vec<u64> {
        let mut out = vec![0; BUCKET_COUNT];
        for &(i, n) in &self.buckets {
            if let Some(slot) = out.get_mut(usize::from(i)) {
                *slot += n;
            }
        }
        out
    }

    /// What was counted since `earlier`; `None` when the counts went back (the pool was
    /// created anew in between), so the caller can start over.
    pub fn since(&self, earlier: &Counts) -> Option<Counts> {
        let mut classes = [0; 5];
        for (i, c) in classes.iter_mut().enumerate() {
            *c = self.classes[i].checked_sub(earlier.classes[i])?;
        }
        let before = earlier.dense();
        let mut buckets = Vec::new();
        for &(i, n) in &self.buckets {
            let d = n.checked_sub(before.get(usize::from(i)).copied().unwrap_or(0))?;
            if d > 0 {
                buckets.push((i, d));
            }
        }
        Some(Counts { classes, buckets })
    }

    /// The latency quantile `q` (0–1) in milliseconds, at the middle of its bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(bucket_mid_ms(usize::from(i)));
            }
        }
        None
    }

    /// Share (0–1) of the requests slower than `ms`, counting a bucket as slower when its
    /// lower bound is at or above `ms`.
    pub fn share_slower_than(&self, ms: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let slow: u64 = self
            .buckets
            .iter()
            .filter(|(i, _)| bucket_lower_ms(usize::from(*i)) >= ms)
            .map(|(_, n)| n)
            .sum();
        Some(slow as f64 / total as f64)
    }
}

/// One pool as the deploy engine reads it (`GET /samples`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PoolSample {
    /// Environment.
    pub environment: String,
    /// Service.
    pub service: String,
    /// Release.
    pub release: String,
    /// Track.
    pub track: crate::table::Track,
    /// It left the table (or changed track) and its requests are finishing.
    pub draining: bool,
    /// Requests going on.
    pub in_flight: i64,
    /// Requests going on per backend id, including backends just removed from the pool.
    pub backends_in_flight: Vec<(String, u32)>,
    /// Everything answered since the pool was created.
    pub counts: Counts,
}

/// How many latency buckets [`Counts`] has.
pub const BUCKET_COUNT: usize = BUCKETS;

fn bucket_lower_ms(i: usize) -> f64 {
    if i == 0 { 0.0 } else { bucket_upper_ms(i - 1) }
}

/// The geometric middle of a bucket: within ±10% of any value in it.
fn bucket_mid_ms(i: usize) -> f64 {
    let upper = bucket_upper_ms(i);
    let mid = if i == 0 {
        upper / 2.0
    } else {
        (upper * bucket_lower_ms(i)).sqrt()
    };
    (mid * 100.0).round() / 100.0
}

/// A pool's traffic over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// The window, in seconds.
    pub window_s: u64,
    /// Requests answered.
    pub requests: u64,
    /// By status class.
    pub status_1xx: u64,
    /// By status class.
    pub status_2xx: u64,
    /// By status class.
    pub status_3xx: u64,
    /// By status class.
    pub status_4xx: u64,
    /// By status class (includes the proxy's own 502/503/504).
    pub status_5xx: u64,
    /// Share of 5xx.
    pub error_rate: f64,
    /// Median latency to response headers.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// In flight now.
    pub in_flight: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_subtract_and_give_quantiles() {
        let metrics = Metrics::default();
        let pool = metrics.pool("e", "web", "r1", "stable");
        for ms in 1..=100u64 {
            pool.record(200, Duration::from_millis(ms));
        }
        let first = pool.counts();
        assert_eq!(first.requests(), 100);
        for _ in 0..10 {
            pool.record(500, Duration::from_millis(500));
        }
        let later = pool.counts();
        let delta = later.since(&first).unwrap();
        assert_eq!((delta.requests(), delta.errors()), (10, 10));
        let p50 = delta.quantile_ms(0.5).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.1, "{p50}");
        assert_eq!(delta.share_slower_than(400.0), Some(1.0));
        assert_eq!(
            first.since(&later),
            None,
            "counts that went back start over"
        );
        let p95 = later.quantile_ms(0.95).unwrap();
        assert!(p95 > 90.0, "{p95}");
    }

    #[test]
    fn window_quantiles_are_within_ten_percent() {
        let w = Windowed::default();
        for ms in 1..=1000u64 {
            w.record(1, Duration::from_millis(ms));
        }
        w.record(4, Duration::from_millis(5));
        let s = w.sum(Duration::from_secs(60));
        assert_eq!(s.requests, 1001);
        assert_eq!(s.status_5xx, 1);
        for (got, want) in [(s.p50_ms, 500.0), (s.p95_ms, 950.0), (s.p99_ms, 990.0)] {
            let got = got.unwrap();
            assert!((got - want).abs() / want < 0.1, "{got} vs {want}");
        }
    }
}
