//! Slipway's PromQL answers against a real Prometheus' (Debian's `prometheus` package, which
//! `scripts/test` installs): the same synthetic series — counters with resets and jittered
//! scrapes, gauges, histograms, an info series — are backfilled into Prometheus with
//! `promtool tsdb create-blocks-from openmetrics` and loaded into Slipway's store, then dozens
//! of instant and range queries are compared sample by sample. Identical input, so the answers
//! must agree up to floating-point rounding.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use slipway_metrics::labels::Labels;
use slipway_metrics::promql::{Engine, Value};
use slipway_metrics::storage::Series;
use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};
use slipway_metrics_testkit::{self as testkit, Answer, Prometheus, QueryApi, Tolerance, compare};

/// A series and its samples.
type Synthetic = (Labels, Vec<(i64, f64)>);

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn float(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

/// Three hours of samples ending at `end` (ms): what both sides get.
fn synthetic(end: i64) -> Vec<Synthetic> {
    let mut rng = Rng(0x5eed_cafe_f00d_2026);
    let start = end - 3 * 3600 * 1000;
    let mut out: Vec<Synthetic> = Vec::new();
    let mut push = |labels: Labels, samples: Vec<(i64, f64)>| out.push((labels, samples));
    let scrape_times = |rng: &mut Rng, offset: i64| -> Vec<i64> {
        let mut ts = Vec::new();
        let mut t = start + offset;
        while t <= end {
            // 15 s scrapes, a few hundred ms of jitter.
            ts.push(t + (rng.next() % 600) as i64 - 300);
            t += 15_000;
        }
        ts
    };
    let zones = ["eu-1", "eu-2", "us-1"];
    for (i, instance) in ["a", "b", "c"].iter().enumerate() {
        for status in ["200", "500"] {
            let times = scrape_times(&mut rng, (i as i64) * 1_000);
            let mut v = if status == "200" { 100.0 } else { 0.0 };
            let mut samples = Vec::new();
            for (k, t) in times.iter().enumerate() {
                let step = if status == "200" { 40.0 } else { 2.0 };
                v += (step * rng.float()).round();
                // Instance b restarts an hour in: its counters start again.
                if *instance == "b" && k == times.len() / 3 {
                    v = (step * rng.float()).round();
                }
                samples.push((*t, v));
            }
            push(
                Labels::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("instance", instance),
                    ("status", status),
                ]),
                samples,
            );
        }
        // A latency histogram.
        let bounds = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "+Inf"];
        let times = scrape_times(&mut rng, 500 + (i as i64) * 1_000);
        let mut counts = vec![0.0; bounds.len()];
        let mut sum = 0.0;
        let mut per_bucket: Vec<Vec<(i64, f64)>> = vec![Vec::new(); bounds.len()];
        let mut sums = Vec::new();
        for t in &times {
            let n = 20 + rng.next() % 30;
            for _ in 0..n {
                let latency = 0.002 * (1.0 + 400.0 * rng.float().powi(3)) * (1.0 + i as f64);
                sum += latency;
                for (b, bound) in bounds.iter().enumerate() {
                    let upper: f64 = bound.parse().unwrap_or(f64::INFINITY);
                    if latency <= upper {
                        counts[b] += 1.0;
                    }
                }
            }
            for b in 0..bounds.len() {
                per_bucket[b].push((*t, counts[b]));
            }
            sums.push((*t, sum));
        }
        for (b, bound) in bounds.iter().enumerate() {
            push(
                Labels::from_pairs([
                    ("__name__", "http_request_duration_seconds_bucket"),
                    ("job", "api"),
                    ("instance", instance),
                    ("le", bound),
                ]),
                per_bucket[b].clone(),
            );
        }
        push(
            Labels::from_pairs([
                ("__name__", "http_request_duration_seconds_count"),
                ("job", "api"),
                ("instance", instance),
            ]),
            per_bucket[bounds.len() - 1].clone(),
        );
        push(
            Labels::from_pairs([
                ("__name__", "http_request_duration_seconds_sum"),
                ("job", "api"),
                ("instance", instance),
            ]),
            sums,
        );
        // A gauge random walk, and up (with an outage on c).
        let times = scrape_times(&mut rng, 200 + (i as i64) * 700);
        let mut m = 400_000.0 + 100_000.0 * i as f64;
        let gauge: Vec<(i64, f64)> = times
            .iter()
            .map(|t| {
                m += (rng.float() - 0.5) * 20_000.0;
                (*t, m.round())
            })
            .collect();
        push(
            Labels::from_pairs([
                ("__name__", "memory_bytes"),
                ("job", "api"),
                ("instance", instance),
            ]),
            gauge,
        );
        let up: Vec<(i64, f64)> = times
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let down = *instance == "c" && (200..260).contains(&k);
                (*t, if down { 0.0 } else { 1.0 })
            })
            .collect();
        push(
            Labels::from_pairs([("__name__", "up"), ("job", "api"), ("instance", instance)]),
            up,
        );
        push(
            Labels::from_pairs([
                ("__name__", "instance_info"),
                ("job", "api"),
                ("instance", instance),
                ("zone", zones[i]),
            ]),
            times.iter().map(|t| (*t, 1.0)).collect(),
        );
    }
    // A series that stops an hour before the end.
    let times = scrape_times(&mut rng, 0);
    push(
        Labels::from_pairs([("__name__", "batch_last_success"), ("job", "batch")]),
        times
            .iter()
            .filter(|t| **t < end - 3_600_000)
            .map(|t| (*t, (*t / 1000) as f64))
            .collect(),
    );
    out
}

fn openmetrics(series: &[Synthetic]) -> String {
    let mut by_name: BTreeMap<String, Vec<&Synthetic>> = BTreeMap::new();
    for s in series {
        by_name
            .entry(s.0.name().unwrap_or_default().to_string())
            .or_default()
            .push(s);
    }
    let mut text = String::new();
    for (name, group) in by_name {
        text.push_str(&format!("# TYPE {name} gauge\n"));
        for (labels, samples) in group {
            let pairs: Vec<String> = labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            for (t, v) in samples {
                text.push_str(&format!(
                    "{name}{{{}}} {v} {}.{:03}\n",
                    pairs.join(","),
                    t.div_euclid(1000),
                    t.rem_euclid(1000)
                ));
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Prometheus with the data backfilled by `promtool tsdb create-blocks-from openmetrics`.
fn start_prometheus(dir: &Path, data: &str) -> Prometheus {
    testkit::require_prometheus();
    let input = dir.join("input.om");
    std::fs::write(&input, data).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.join("tsdb"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Prometheus::start(
        dir,
        "global:\n  scrape_interval: 15s\n",
        &["--storage.tsdb.retention.time=30d"],
    )
}

fn key(l: &Labels) -> String {
    testkit::series_key(l.iter())
}

fn ours_instant(store: &Tsdb, q: &str, t: i64) -> Answer {
    match Engine::default().instant(store, q, t) {
        Ok(Value::Scalar(v)) => Answer::Scalar(v),
        Ok(Value::Vector(v)) => Answer::Series(
            v.into_iter()
                .map(|(l, x)| (key(&l), vec![(t, x)]))
                .collect(),
        ),
        Ok(Value::Matrix(m)) => Answer::Series(series_map(m)),
        Ok(Value::String(s)) => panic!("string {s}"),
        Err(e) => panic!("{q}: {e}"),
    }
}

fn series_map(m: Vec<Series>) -> BTreeMap<String, Vec<(i64, f64)>> {
    m.into_iter().map(|s| (key(&s.labels), s.samples)).collect()
}

const INSTANT: &[&str] = &[
    "http_requests_total",
    r#"http_requests_total{status=~"5.."}"#,
    r#"http_requests_total{status!="200", instance!~"c"}"#,
    r#"{__name__=~"http_.*_total", instance="a"}"#,
    "http_requests_total offset 10m",
    "batch_last_success",
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "increase(http_requests_total[1h])",
    "delta(memory_bytes[15m])",
    "idelta(memory_bytes[5m])",
    "avg_over_time(memory_bytes[10m])",
    "max_over_time(memory_bytes[10m])",
    "min_over_time(memory_bytes[10m])",
    "sum_over_time(up[10m])",
    "count_over_time(memory_bytes[10m])",
    "last_over_time(memory_bytes[10m])",
    "quantile_over_time(0.9, memory_bytes[30m])",
    "stddev_over_time(memory_bytes[30m])",
    "stdvar_over_time(memory_bytes[30m])",
    "changes(up[2h])",
    "resets(http_requests_total[3h])",
    "deriv(memory_bytes[10m])",
    "predict_linear(memory_bytes[30m], 3600)",
    "sum by (status) (rate(http_requests_total[5m]))",
    "sum without (instance) (rate(http_requests_total[5m]))",
    "avg(memory_bytes)",
    "min(memory_bytes)",
    "max by (job) (memory_bytes)",
    "count by (job) (up)",
    "stddev(memory_bytes)",
    "group by (job) (up)",
    "topk(2, memory_bytes)",
    "bottomk(1, memory_bytes)",
    "quantile(0.75, memory_bytes)",
    "count_values(\"v\", up)",
    "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(http_request_duration_seconds_bucket[10m]))",
    "histogram_quantile(0.99, sum by (instance, le) (increase(http_request_duration_seconds_bucket[30m])))",
    "rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])",
    r#"rate(http_requests_total{status="500"}[5m]) / ignoring(status) rate(http_requests_total{status="200"}[5m])"#,
    r#"sum by (instance) (rate(http_requests_total{status=~"5.."}[5m])) / on(instance) sum by (instance) (rate(http_requests_total[5m]))"#,
    "rate(http_requests_total[5m]) * on(instance) group_left(zone) instance_info",
    "instance_info * on(instance) group_right(zone) rate(http_requests_total[5m])",
    "memory_bytes > 500000",
    "memory_bytes > bool 500000",
    "500000 < memory_bytes",
    "memory_bytes == on(instance) memory_bytes",
    "up == 0",
    "absent(nonexistent_metric{job=\"api\"})",
    "absent(up)",
    "absent_over_time(nonexistent_metric[5m])",
    "clamp_max(memory_bytes, 600000)",
    "clamp_min(memory_bytes, 450000)",
    "clamp(memory_bytes, 450000, 550000)",
    "time() - 1",
    "scalar(sum(up))",
    "vector(1)",
    "memory_bytes and on(instance) up == 1",
    "memory_bytes unless on(instance) up == 0",
    "up or vector(0)",
    "label_replace(up, \"host\", \"$1-x\", \"instance\", \"(.*)\")",
    "label_join(up, \"both\", \"/\", \"job\", \"instance\")",
    "round(memory_bytes / 1000)",
    "round(memory_bytes, 1000)",
    "-memory_bytes",
    "abs(-memory_bytes)",
    "sqrt(memory_bytes) + ln(memory_bytes) * log10(memory_bytes)",
    "memory_bytes % 7 ^ 2",
    "timestamp(up)",
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(sum(up)[1h:5m])",
    "sum(rate(http_requests_total[5m])) by (job) > 0",
    "1 + 2 * 3 / 4 - 5",
    "2 ^ 3 ^ 2",
    "(1 > bool 2) + (3 >= bool 3)",
];

const RANGE: &[&str] = &[
    "rate(http_requests_total[5m])",
    "sum by (status) (rate(http_requests_total[5m]))",
    "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    "memory_bytes",
    "batch_last_success",
    "up == 0",
    "avg_over_time(memory_bytes[5m]) - memory_bytes",
    "time()",
    "topk(1, memory_bytes)",
];

#[test]
fn promql_answers_match_prometheus() {
    // The data ends a little in the past, on a round minute, so no query hits "now".
    let now = jiff::Timestamp::now().as_millisecond();
    let end = (now - 600_000) / 60_000 * 60_000;
    let data = synthetic(end);
    // Slipway's own store, with one-hour blocks so that queries read blocks and the head.
    let dir = tempfile::tempdir().unwrap();
    let store = Tsdb::open(
        &dir.path().join("slipway"),
        TsdbOptions {
            retention: Duration::from_secs(30 * 86_400),
            block: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let mut batches: BTreeMap<i64, Vec<(Labels, i64, f64)>> = BTreeMap::new();
    for (labels, samples) in &data {
        for (t, v) in samples {
            batches
                .entry(t / 15_000)
                .or_default()
                .push((labels.clone(), *t, *v));
        }
    }
    for batch in batches.into_values() {
        store.append_batch(&batch).unwrap();
    }
    store.maintain().unwrap();
    assert!(store.stats().blocks >= 1, "{:?}", store.stats());
    let prometheus = start_prometheus(dir.path(), &openmetrics(&data));
    let store: &Tsdb = &store;
    let api = QueryApi {
        base: &prometheus.base,
        headers: Vec::new(),
    };
    let times = [
        end - 7_200_000 + 7_321,
        end - 3_600_000,
        end - 1_800_000 + 500,
        end - 15_000,
        end,
        end + 240_000,
        end + 299_000,
        end + 300_000,
        end + 301_000,
    ];
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut points = 0;
    let count = |a: &Answer| match a {
        Answer::Scalar(_) => 1,
        Answer::Series(m) => m.values().map(Vec::len).sum(),
    };
    for q in INSTANT {
        for t in times {
            let theirs = api.instant(q, t);
            let ours = ours_instant(store, q, t);
            compared += 1;
            points += count(&theirs);
            if let Err(e) = compare(&format!("{q} @ {t}"), &ours, &theirs, Tolerance::EXACT) {
                failures.push(e);
            }
        }
    }
    for q in RANGE {
        let (start, stop, step) = (end - 3_600_000 + 1_234, end + 360_000, 60_000);
        let theirs = api.range(q, start, stop, step);
        let ours = Answer::Series(series_map(
            Engine::default()
                .range(store, q, start, stop, step)
                .unwrap_or_else(|e| panic!("{q}: {e}")),
        ));
        compared += 1;
        points += count(&theirs);
        if let Err(e) = compare(&format!("range {q}"), &ours, &theirs, Tolerance::EXACT) {
            failures.push(e);
        }
    }
    eprintln!(
        "compared {compared} answers ({} instant expressions × {} times, {} range queries; {points} points): {} differ",
        INSTANT.len(),
        times.len(),
        RANGE.len(),
        failures.len()
    );
    // The comparison means something only if Prometheus had the data.
    assert!(points > 2_000, "Prometheus answered only {points} points");
    assert!(
        failures.is_empty(),
        "{} of {compared} answers differ from Prometheus':\n{}",
        failures.len(),
        failures.join("\n")
    );
}
