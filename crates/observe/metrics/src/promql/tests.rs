//! Engine tests on small hand-made series; the comparison with a real Prometheus is in the
//! end-to-end tests.

use super::{Engine, Value};
use crate::labels::Labels;
use crate::storage::{Appender, MemoryStore};

fn store() -> MemoryStore {
    let s = MemoryStore::new();
    // A counter per instance: 1/s on a, 2/s on b, scraped every 10 s for 10 minutes.
    for i in 0..=60 {
        let t = i * 10_000;
        for (inst, rate) in [("a", 1.0), ("b", 2.0)] {
            let l = Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("instance", inst),
                ("job", "api"),
            ]);
            s.append(&l, t, rate * (t / 1000) as f64);
        }
    }
    s
}

fn vector(v: Value) -> Vec<(String, f64)> {
    match v {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|(l, x)| (l.to_string(), x)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("not a vector: {other:?}"),
    }
}

#[test]
fn selectors_rates_and_aggregations() {
    let s = store();
    let e = Engine::default();
    let t = 600_000;
    assert_eq!(
        vector(
            e.instant(&s, "http_requests_total{instance=\"a\"}", t)
                .unwrap()
        ),
        [(
            r#"http_requests_total{instance="a", job="api"}"#.to_string(),
            600.0
        )]
    );
    let r = vector(e.instant(&s, "rate(http_requests_total[1m])", t).unwrap());
    assert_eq!(r.len(), 2);
    assert!(
        (r[0].1 - 1.0).abs() < 1e-9 && (r[1].1 - 2.0).abs() < 1e-9,
        "{r:?}"
    );
    let sum = vector(
        e.instant(&s, "sum by (job) (rate(http_requests_total[5m]))", t)
            .unwrap(),
    );
    assert_eq!(sum[0].0, r#"{job="api"}"#);
    assert!((sum[0].1 - 3.0).abs() < 1e-9);
    let ratio = vector(
        e.instant(
            &s,
            "rate(http_requests_total{instance=\"b\"}[5m]) / ignoring(instance) rate(http_requests_total{instance=\"a\"}[5m])",
            t,
        )
        .unwrap(),
    );
    assert!((ratio[0].1 - 2.0).abs() < 1e-9, "{ratio:?}");
    assert_eq!(
        vector(
            e.instant(&s, "count(http_requests_total > 700)", t)
                .unwrap()
        )[0]
        .1,
        1.0
    );
    assert_eq!(e.instant(&s, "1 + 2 * 3", t).unwrap(), Value::Scalar(7.0));
    assert_eq!(
        vector(e.instant(&s, "absent(nope{job=\"x\"})", t).unwrap()),
        [(r#"{job="x"}"#.to_string(), 1.0)]
    );
}

#[test]
fn the_lookback_ends_five_minutes_after_the_last_sample() {
    let s = store();
    let e = Engine::default();
    assert_eq!(
        vector(
            e.instant(&s, "http_requests_total", 600_000 + 299_999)
                .unwrap()
        )
        .len(),
        2
    );
    assert!(
        vector(
            e.instant(&s, "http_requests_total", 600_000 + 300_000)
                .unwrap()
        )
        .is_empty()
    );
}

#[test]
fn range_queries_evaluate_each_step() {
    let s = store();
    let e = Engine::default();
    let m = e
        .range(
            &s,
            "sum(rate(http_requests_total[1m]))",
            60_000,
            600_000,
            60_000,
        )
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].samples.len(), 10);
    assert!(m[0].samples.iter().all(|(_, v)| (v - 3.0).abs() < 1e-9));
    let err = e.range(&s, "http_requests_total[1m]", 0, 1, 1).unwrap_err();
    assert_eq!(err.kind, "bad_data");
}

#[test]
fn syntax_errors_are_bad_data_with_a_position() {
    let e = Engine::default();
    let err = e.instant(&store(), "rate(x[5m]", 0).unwrap_err();
    assert_eq!(err.kind, "bad_data");
    assert!(err.message.contains(':'), "{}", err.message);
}
