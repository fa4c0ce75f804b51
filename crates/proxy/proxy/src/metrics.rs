//! RED metrics per service × release × track: requests by status class, latency, requests in
//! flight. Exposed two ways: cumulative, in the Prometheus text format (prometheus-client, with
//! a lock-free histogram of our own), and
//! over sliding windows (one-second slots of log-spaced latency buckets, mergeable by addition)
//! for the deploy engine's analysis.

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
        self.window.record(class_index(status), took);
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

/// Upper bound of bucket `i`, in milliseconds.
fn bucket_upper_ms(i: usize) -> f64 {
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
                    // The geometric middle of the bucket: within ±10% of the true value.
                    let upper = bucket_upper_ms(i);
                    let lower = if i == 0 { 0.0 } else { bucket_upper_ms(i - 1) };
                    let mid = if i == 0 {
                        upper / 2.0
                    } else {
                        (upper * lower).sqrt()
                    };
                    return Some((mid * 100.0).round() / 100.0);
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
