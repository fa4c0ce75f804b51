//! One contract for every metrics back-end: what the alert rules, the deploy analysis and the
//! dashboard may count on from [`MetricsBackend`], run against the embedded store and against
//! a real Prometheus (Debian's `prometheus` package, which `scripts/test` installs).
//!
//! Both get the same samples the way they get them in production: appended to the embedded
//! store, whose tap hands them to the [`RemoteWriter`], which ships them to Prometheus'
//! remote-write receiver (`--web.enable-remote-write-receiver`). So this also proves that
//! remote write 1.0 lands every sample, and `[metrics] backend = { prometheus }` reads them
//! back through Prometheus' query API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_metrics::backend::{self, Embedded, MetricsBackend};
use slipway_metrics::labels::Labels;
use slipway_metrics::promql::Value;
use slipway_metrics::remote_write::RemoteWriter;
use slipway_metrics::storage::Sample;
use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};
use slipway_metrics_testkit::Prometheus;
use tokio_util::sync::CancellationToken;

const STEP: i64 = 15_000;
/// Forty minutes of 15 s scrapes: inside the window Prometheus' head accepts remote-written
/// samples in.
const SPAN: i64 = 40 * 60_000;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// Scrapes ending at `end`, grouped by scrape time: counters at known rates (one resets),
/// gauges, a histogram, a series that stops half way.
fn scrapes(end: i64) -> Vec<Vec<Sample>> {
    let start = end - SPAN;
    let mut out = Vec::new();
    let mut t = start;
    let mut k = 0i64;
    while t <= end {
        let mut batch = Vec::new();
        for (instance, per_scrape) in [("a", 30.0), ("b", 15.0), ("c", 3.0)] {
            for (status, share) in [("200", 0.9), ("500", 0.1)] {
                // `c` restarts after 20 minutes: its counters start again from 0.
                let n = if instance == "c" && k >= 80 {
                    k - 80
                } else {
                    k
                };
                batch.push((
                    labels(&[
                        ("__name__", "http_requests_total"),
                        ("job", "web"),
                        ("instance", instance),
                        ("status", status),
                    ]),
                    t,
                    per_scrape * share * n as f64,
                ));
            }
            batch.push((
                labels(&[("__name__", "up"), ("job", "web"), ("instance", instance)]),
                t,
                1.0,
            ));
        }
        for (room, base) in [("kitchen", 21.0), ("cellar", 12.5)] {
            batch.push((
                labels(&[("__name__", "temperature_celsius"), ("room", room)]),
                t,
                base + (k % 8) as f64 * 0.25,
            ));
        }
        for (le, per_scrape) in [
            ("0.1", 6.0),
            ("0.25", 9.0),
            ("0.5", 11.0),
            ("1", 11.5),
            ("+Inf", 12.0),
        ] {
            batch.push((
                labels(&[
                    ("__name__", "latency_seconds_bucket"),
                    ("job", "web"),
                    ("le", le),
                ]),
                t,
                per_scrape * k as f64,
            ));
        }
        if k < 40 {
            batch.push((
                labels(&[("__name__", "batch_job_last_success"), ("job", "nightly")]),
                t,
                1.0,
            ));
        }
        out.push(batch);
        t += STEP;
        k += 1;
    }
    out
}

/// What a query answered, comparable across back-ends: series as sorted label strings.
#[derive(Debug, PartialEq)]
enum Seen {
    Scalar(String),
    Vector(Vec<(String, String)>),
    Matrix(Vec<(String, Vec<(i64, String)>)>),
}

fn number(v: f64) -> String {
    // Equal up to floating-point rounding: 9 significant digits.
    if v.is_finite() {
        format!("{v:.9e}")
    } else {
        format!("{v}")
    }
}

fn name(l: &Labels) -> String {
    let mut pairs: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    pairs.sort();
    pairs.join(",")
}

fn seen(v: Value) -> Seen {
    match v {
        Value::Scalar(x) => Seen::Scalar(number(x)),
        Value::String(s) => Seen::Scalar(s),
        Value::Vector(rows) => {
            let mut rows: Vec<(String, String)> =
                rows.iter().map(|(l, v)| (name(l), number(*v))).collect();
            rows.sort();
            Seen::Vector(rows)
        }
        Value::Matrix(series) => matrix(series),
    }
}

fn matrix(series: Vec<slipway_metrics::storage::Series>) -> Seen {
    let mut rows: Vec<(String, Vec<(i64, String)>)> = series
        .iter()
        .map(|s| {
            (
                name(&s.labels),
                s.samples.iter().map(|(t, v)| (*t, number(*v))).collect(),
            )
        })
        .collect();
    rows.sort();
    Seen::Matrix(rows)
}

/// The contract: each case's answer, and what it must be where the data says so.
async fn contract(b: &dyn MetricsBackend, end: i64) -> Vec<(String, Seen)> {
    let mut answers = Vec::new();
    let at = end - 60_000;

    // Instant queries of each family, with what the samples make them.
    let cases: &[(&str, Option<f64>)] = &[
        ("sum(up)", Some(3.0)),
        // 30 per 15 s scrape on `a`, 90% of them 200.
        (
            r#"sum(rate(http_requests_total{instance="a",status="200"}[5m]))"#,
            Some(1.8),
        ),
        (r#"sum by (instance) (rate(http_requests_total[5m]))"#, None),
        // 3 per scrape on `c`: 40 scrapes in 10 minutes, extrapolated to the window.
        (
            r#"sum(increase(http_requests_total{instance="c"}[10m]))"#,
            Some(120.0),
        ),
        // `c` restarted 20 minutes before the end: increase sees through the reset.
        (
            r#"sum(increase(http_requests_total{instance="c"}[30m]))"#,
            None,
        ),
        ("resets(http_requests_total[30m])", None),
        (
            r#"sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))"#,
            Some(0.1),
        ),
        (
            "histogram_quantile(0.5, sum by (le) (rate(latency_seconds_bucket[5m])))",
            None,
        ),
        ("max_over_time(temperature_celsius[10m])", None),
        ("avg(temperature_celsius) by (room)", None),
        ("topk(1, temperature_celsius)", None),
        ("count(http_requests_total)", Some(6.0)),
        (r#"temperature_celsius offset 5m"#, None),
        ("absent(nonexistent_metric)", Some(1.0)),
        ("absent(batch_job_last_success)", Some(1.0)),
        (
            "clamp_max(sum(rate(http_requests_total[5m])), 2)",
            Some(2.0),
        ),
        ("time()", Some((at / 1000) as f64)),
        ("1 + 1", Some(2.0)),
    ];
    for (q, expect) in cases {
        let v = b
            .instant(q, at)
            .await
            .unwrap_or_else(|e| panic!("{}: {q}: {}", b.name(), e.message));
        if let Some(want) = expect {
            let got = match &v {
                Value::Scalar(x) => *x,
                Value::Vector(rows) if rows.len() == 1 => rows[0].1,
                other => panic!("{}: {q}: one number expected, got {other:?}", b.name()),
            };
            assert!(
                (got - want).abs() < 1e-9 * want.abs().max(1.0),
                "{}: {q} = {got}, not {want}",
                b.name()
            );
        }
        answers.push((format!("instant {q}"), seen(v)));
    }

    // Range queries.
    for q in [
        "sum(rate(http_requests_total[2m]))",
        r#"rate(http_requests_total{instance="c",status="200"}[1m])"#,
        "avg_over_time(temperature_celsius[5m])",
        "batch_job_last_success",
    ] {
        let s = b
            .range(q, end - 30 * 60_000, end, 60_000)
            .await
            .unwrap_or_else(|e| panic!("{}: {q}: {}", b.name(), e.message));
        assert!(!s.is_empty(), "{}: {q} answered nothing", b.name());
        answers.push((format!("range {q}"), matrix(s)));
    }

    // Metadata: series, label names, label values.
    let (from, to) = (end - SPAN, end);
    let series = b.series(&["up".to_string()], from, to).await.unwrap();
    let mut names: Vec<String> = series.iter().map(name).collect();
    names.sort();
    assert_eq!(names.len(), 3, "{}: {names:?}", b.name());
    answers.push(("series up".into(), Seen::Scalar(names.join(" "))));
    let several = b
        .series(
            &[
                r#"http_requests_total{status="500"}"#.to_string(),
                "temperature_celsius".to_string(),
            ],
            from,
            to,
        )
        .await
        .unwrap();
    assert_eq!(several.len(), 5, "{}", b.name());
    let mut label_names = b.label_names(&[], from, to).await.unwrap();
    label_names.sort();
    assert_eq!(
        label_names,
        ["__name__", "instance", "job", "le", "room", "status"],
        "{}",
        b.name()
    );
    let of_up = b.label_names(&["up".to_string()], from, to).await.unwrap();
    assert_eq!(of_up, ["__name__", "instance", "job"], "{}", b.name());
    let mut metric_names = b.label_values("__name__", &[], from, to).await.unwrap();
    metric_names.sort();
    assert_eq!(
        metric_names,
        [
            "batch_job_last_success",
            "http_requests_total",
            "latency_seconds_bucket",
            "temperature_celsius",
            "up"
        ],
        "{}",
        b.name()
    );
    let rooms = b.label_values("room", &[], from, to).await.unwrap();
    assert_eq!(rooms, ["cellar", "kitchen"], "{}", b.name());
    let jobs = b
        .label_values("job", &["up".to_string()], from, to)
        .await
        .unwrap();
    assert_eq!(jobs, ["web"], "{}", b.name());

    // Errors: a syntax error is bad_data and says where; a bad selector too.
    let e = b.instant("sum(rate(x[5m])", at).await.unwrap_err();
    assert_eq!(e.kind, "bad_data", "{}: {}", b.name(), e.message);
    assert!(
        e.message.contains("parse error") || e.message.contains("1:"),
        "{}: {}",
        b.name(),
        e.message
    );
    let e = b.series(&["{".to_string()], from, to).await.unwrap_err();
    assert_eq!(e.kind, "bad_data", "{}: {}", b.name(), e.message);
    let e = b
        .instant("rate(temperature_celsius)", at)
        .await
        .unwrap_err();
    assert_eq!(e.kind, "bad_data", "{}: {}", b.name(), e.message);
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_and_a_real_prometheus_fed_by_remote_write_keep_one_contract() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(
        dir.path(),
        "global:\n  scrape_interval: 1h\n",
        &["--web.enable-remote-write-receiver"],
    );

    // The embedded store, its tap feeding remote write to Prometheus.
    let end = jiff::Timestamp::now().as_millisecond() / STEP * STEP;
    let store = Tsdb::open(&dir.path().join("embedded"), TsdbOptions::default()).unwrap();
    let shutdown = CancellationToken::new();
    let writer = RemoteWriter::start(
        &format!("{}/api/v1/write", prometheus.base),
        shutdown.clone(),
    );
    store.set_tap(Some(writer.tap()));
    let mut total = 0u64;
    for batch in scrapes(end) {
        total += store.append_batch(&batch).unwrap() as u64;
    }
    store.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = writer.stats();
        assert!(
            s.refused == 0 && s.dropped == 0,
            "remote write lost samples: {s:?}"
        );
        if s.sent == total && s.pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "remote write did not ship {total} samples: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What Prometheus stored is exactly what was written.
    let remote = backend::Prometheus::new(&prometheus.base);
    let embedded = Embedded::new(Arc::clone(&store));
    let count = "count_over_time({__name__=~\".+\"}[1h])";
    let counted = |v: Value| match v {
        Value::Vector(rows) => rows.iter().map(|r| r.1).sum::<f64>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        counted(remote.instant(count, end).await.unwrap()),
        total as f64
    );
    assert_eq!(
        counted(embedded.instant(count, end).await.unwrap()),
        total as f64
    );

    let ours = contract(&embedded, end).await;
    let theirs = contract(&remote, end).await;
    assert_eq!(ours.len(), theirs.len());
    let mut differ = Vec::new();
    for ((what, a), (_, b)) in ours.iter().zip(&theirs) {
        if a != b {
            differ.push(format!("{what}:\n  embedded:   {a:?}\n  prometheus: {b:?}"));
        }
    }
    eprintln!(
        "{} answers compared, {} differ; {total} samples remote-written",
        ours.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    shutdown.cancel();
}

#[tokio::test]
async fn a_prometheus_that_is_not_there_is_a_clear_error() {
    let port = slipway_metrics_testkit::free_port();
    let b = backend::Prometheus::new(&format!("http://127.0.0.1:{port}"));
    let e = b.instant("up", 0).await.unwrap_err();
    assert_eq!(e.kind, "execution");
    assert!(e.message.contains("does not answer"), "{}", e.message);
}

/// Functions over long ranges, which the embedded store answers from its five-minute rollups
/// (and raw samples at the ranges' ragged edges), answer as Prometheus does over the same
/// history: twelve hours written into the embedded store scrape by scrape (blocks cut as the
/// daemon cuts them) and backfilled into Prometheus with `promtool tsdb create-blocks-from
/// openmetrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ranges_answered_from_rollups_agree_with_prometheus() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let end = jiff::Timestamp::now().as_millisecond() / STEP * STEP;
    let start = end - 12 * 3_600_000;
    let store = Tsdb::open(
        &dir.path().join("embedded"),
        TsdbOptions {
            retention: Duration::from_secs(30 * 86_400),
            block: Duration::from_secs(7200),
        },
    )
    .unwrap();
    let mut om = String::new();
    let mut columns: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 100) as f64
    };
    for instance in ["a", "b", "c"] {
        let (mut jobs, mut times) = (0.0, Vec::new());
        let mut depth = Vec::new();
        let mut t = start;
        let mut k = 0;
        while t <= end {
            // `b` restarts twice (its counter starts again); `c` stops after eight hours.
            jobs = if instance == "b" && (k == 1000 || k == 2222) {
                noise()
            } else {
                jobs + noise()
            };
            if instance != "c" || k < 1920 {
                times.push((t, jobs));
                depth.push((t, noise() - 20.0));
            }
            t += STEP;
            k += 1;
        }
        columns.push((
            labels(&[("__name__", "jobs_total"), ("instance", instance)]),
            times,
        ));
        columns.push((
            labels(&[("__name__", "queue_depth"), ("instance", instance)]),
            depth,
        ));
    }
    for (l, samples) in &columns {
        let inst = l.get("instance").unwrap();
        let name = l.get("__name__").unwrap();
        for (t, v) in samples {
            om.push_str(&format!(
                "{name}{{instance=\"{inst}\"}} {v} {}.{:03}\n",
                t / 1000,
                t % 1000
            ));
        }
    }
    om.push_str("# EOF\n");
    let file = dir.path().join("history.om");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(om.as_bytes())
        .unwrap();
    slipway_metrics_testkit::require_prometheus();
    let status = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(dir.path().join("tsdb"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "promtool could not backfill");
    let mut t = start;
    while t <= end {
        let batch: Vec<Sample> = columns
            .iter()
            .filter_map(|(l, s)| {
                let i = s.binary_search_by_key(&t, |(ts, _)| *ts).ok()?;
                Some((l.clone(), t, s[i].1))
            })
            .collect();
        store.append_batch(&batch).unwrap();
        if (t - start) % (30 * 60_000) == 0 {
            store.maintain().unwrap();
        }
        t += STEP;
    }
    store.maintain().unwrap();
    assert!(store.stats().blocks >= 4, "{:?}", store.stats());
    let prometheus = Prometheus::start(dir.path(), "global:\n  scrape_interval: 1h\n", &[]);
    let remote = backend::Prometheus::new(&prometheus.base);
    let embedded = Embedded::new(Arc::clone(&store));

    let rows = |v: Value| -> Vec<(String, Vec<(i64, f64)>)> {
        let mut out: Vec<(String, Vec<(i64, f64)>)> = match v {
            Value::Vector(v) => v.iter().map(|(l, x)| (name(l), vec![(0, *x)])).collect(),
            Value::Matrix(m) => m
                .iter()
                .map(|s| (name(&s.labels), s.samples.clone()))
                .collect(),
            other => panic!("{other:?}"),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let queries = [
        "avg_over_time(queue_depth[6h])",
        "max_over_time(queue_depth[3h])",
        "min_over_time(queue_depth[2h])",
        "sum_over_time(queue_depth[1h])",
        "count_over_time(queue_depth[4h])",
        "last_over_time(queue_depth[2h])",
        "present_over_time(queue_depth[1h])",
        "rate(jobs_total[3h])",
        "increase(jobs_total[6h])",
        "delta(queue_depth[2h])",
        "sum(increase(jobs_total[1h])) > bool 30 * sum(avg_over_time(queue_depth[6h]))",
        "increase(jobs_total[1h] offset 2h)",
    ];
    let mut compared = 0;
    let mut differ = Vec::new();
    for q in queries {
        let mut answers = Vec::new();
        for at in [
            end,
            end - 433_000,
            end - 3 * 3_600_000,
            start + 7 * 3_600_000 + 1,
        ] {
            answers.push((
                format!("{q} @ {at}"),
                embedded.instant(q, at).await.unwrap(),
                remote.instant(q, at).await.unwrap(),
            ));
        }
        for (from, step) in [
            (end - 6 * 3_600_000, 1_200_000),
            (end - 5 * 3_600_000 + 1, 420_000),
        ] {
            answers.push((
                format!("{q} from {from} step {step}"),
                Value::Matrix(embedded.range(q, from, end, step).await.unwrap()),
                Value::Matrix(remote.range(q, from, end, step).await.unwrap()),
            ));
        }
        for (what, ours, theirs) in answers {
            let (a, b) = (rows(ours), rows(theirs));
            compared += 1;
            let same = a.len() == b.len()
                && !a.is_empty()
                && a.iter().zip(&b).all(|(x, y)| {
                    x.0 == y.0
                        && x.1.len() == y.1.len()
                        && x.1
                            .iter()
                            .zip(&y.1)
                            .all(|(p, q)| p.0 == q.0 && close(p.1, q.1))
                });
            if !same {
                differ.push(format!("{what}:\n  embedded:   {a:?}\n  prometheus: {b:?}"));
            }
        }
    }
    eprintln!(
        "{compared} long-range answers compared, {} differ",
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
