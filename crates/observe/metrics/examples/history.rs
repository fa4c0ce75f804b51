//! Writes the same synthetic history twice: as OpenMetrics text (for
//! `promtool tsdb create-blocks-from openmetrics`, which backfills a real Prometheus) and into
//! an embedded store directory (`.slipway/metrics` of a project). `bench/metrics.sh` uses it so
//! both sides answer queries over identical data.
//!
//! Usage: history OPENMETRICS_FILE STORE_DIR [hours=24] [interval_s=30] [only=METRIC]
//!
//! The series: request counters by service × route × status (200), a latency histogram by
//! service × route × 10 buckets (1000), CPU counters by cpu × mode (512), gauges (288): 2000
//! series, ending now.

use std::io::Write;
use std::time::Duration;

use slipway_metrics::labels::Labels;
use slipway_metrics::storage::Sample;
use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};

const BUCKETS: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];

/// One series: its name, its labels, and how it moves per scrape.
struct Gen {
    name: &'static str,
    labels: Vec<(String, String)>,
    kind: Kind,
}

enum Kind {
    /// A counter growing by about `rate` per scrape.
    Counter(f64),
    /// A gauge wandering around `base`.
    Gauge(f64),
}

fn series() -> Vec<Gen> {
    let mut out = Vec::new();
    for s in 0..10 {
        for r in 0..10 {
            let labels = |extra: &[(&str, String)]| {
                let mut l = vec![
                    ("service".to_string(), format!("svc{s}")),
                    ("route".to_string(), format!("/r{r}")),
                ];
                l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
                l
            };
            let load = 10.0 + (s * 10 + r) as f64;
            for (status, share) in [("200", 0.98), ("500", 0.02)] {
                out.push(Gen {
                    name: "http_requests_total",
                    labels: labels(&[("status", status.to_string())]),
                    kind: Kind::Counter(load * share),
                });
            }
            for (i, le) in BUCKETS.iter().enumerate() {
                let share = ((i + 1) as f64 / BUCKETS.len() as f64).powf(0.5);
                out.push(Gen {
                    name: "http_request_duration_seconds_bucket",
                    labels: labels(&[("le", le.to_string())]),
                    kind: Kind::Counter(load * share),
                });
            }
        }
    }
    let modes = [
        "user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice",
    ];
    for cpu in 0..64 {
        for (m, mode) in modes.iter().enumerate() {
            out.push(Gen {
                name: "node_cpu_seconds_total",
                labels: vec![
                    ("cpu".into(), cpu.to_string()),
                    ("mode".into(), mode.to_string()),
                ],
                kind: Kind::Counter(if m == 2 { 20.0 } else { 1.0 + m as f64 * 0.3 }),
            });
        }
    }
    for sensor in 0..288 {
        out.push(Gen {
            name: "temperature_celsius",
            labels: vec![
                ("sensor".into(), sensor.to_string()),
                ("site".into(), format!("site{}", sensor % 4)),
            ],
            kind: Kind::Gauge(15.0 + (sensor % 20) as f64),
        });
    }
    out
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: history OPENMETRICS_FILE STORE_DIR [hours=24] [interval_s=30] [only=METRIC]"
        );
        std::process::exit(2);
    }
    let hours: i64 = args.get(3).and_then(|h| h.parse().ok()).unwrap_or(24);
    let interval: i64 = args.get(4).and_then(|h| h.parse().ok()).unwrap_or(30) * 1000;
    let mut gens = series();
    // Only the series of one metric (`bench/slo.sh` needs the request counters alone).
    if let Some(only) = args.get(5) {
        gens.retain(|g| g.name == only.as_str());
    }
    let end = jiff::Timestamp::now().as_millisecond() / interval * interval;
    let start = end - hours * 3_600_000;
    let times: Vec<i64> = (0..)
        .map(|k| start + k * interval)
        .take_while(|t| *t <= end)
        .collect();

    // A deterministic wobble, so values are not trivially compressible.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1000) as f64 / 1000.0
    };
    let mut values: Vec<Vec<f64>> = Vec::with_capacity(gens.len());
    for g in &gens {
        let mut v = 0.0;
        let column = times
            .iter()
            .map(|_| match g.kind {
                Kind::Counter(rate) => {
                    v += (rate * (0.8 + 0.4 * noise())).round();
                    v
                }
                Kind::Gauge(base) => (base + noise() * 2.0 * 100.0).round() / 100.0,
            })
            .collect();
        values.push(column);
    }

    // OpenMetrics: series by series, samples in time order.
    let mut om = std::io::BufWriter::new(std::fs::File::create(&args[1])?);
    for (g, column) in gens.iter().zip(&values) {
        let labels: Vec<String> = g
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        let head = format!("{}{{{}}}", g.name, labels.join(","));
        for (t, v) in times.iter().zip(column) {
            writeln!(om, "{head} {v} {}.{:03}", t / 1000, t % 1000)?;
        }
    }
    writeln!(om, "# EOF")?;
    om.flush()?;

    // The store: scrape by scrape, as scraping writes it, blocks cut as the daemon cuts them.
    let store = Tsdb::open(
        std::path::Path::new(&args[2]),
        TsdbOptions {
            retention: Duration::from_secs(30 * 86_400),
            block: Duration::from_secs(7200),
        },
    )?;
    let labels: Vec<Labels> = gens
        .iter()
        .map(|g| {
            let mut l = Labels::from_pairs(g.labels.iter().cloned());
            l.set("__name__".into(), g.name.into());
            l
        })
        .collect();
    for (k, t) in times.iter().enumerate() {
        let batch: Vec<Sample> = labels
            .iter()
            .zip(&values)
            .map(|(l, col)| (l.clone(), *t, col[k]))
            .collect();
        store.append_batch(&batch)?;
        if k % 120 == 0 {
            store.sync()?;
            store.maintain()?;
        }
    }
    store.sync()?;
    store.maintain()?;
    eprintln!(
        "{} series × {} samples, {} to {} (ms)",
        gens.len(),
        times.len(),
        start,
        end
    );
    Ok(())
}
