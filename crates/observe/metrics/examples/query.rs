//! Times a PromQL query against an embedded store directory (for profiling the engine):
//! `query STORE_DIR 'EXPR' [range_s=0] [step_s=60] [rounds=20]`. With a range, a range query
//! ending now; else an instant query now.

use std::time::{Duration, Instant};

use slipway_metrics::promql::Engine;
use slipway_metrics::storage::tsdb::{Tsdb, TsdbOptions};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: query STORE_DIR 'EXPR' [range_s=0] [step_s=60] [rounds=20]");
        std::process::exit(2);
    }
    let num = |i: usize, d: i64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (range, step, rounds) = (num(3, 0) * 1000, num(4, 60) * 1000, num(5, 20));
    let store = Tsdb::open(
        std::path::Path::new(&args[1]),
        TsdbOptions {
            retention: Duration::from_secs(365 * 86_400),
            ..TsdbOptions::default()
        },
    )?;
    let engine = Engine::default();
    let end = jiff::Timestamp::now().as_millisecond();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        let n = if range > 0 {
            engine
                .range(&*store, &args[2], end - range, end, step)
                .map(|s| s.len())
        } else {
            engine.instant(&*store, &args[2], end).map(|v| match v {
                slipway_metrics::promql::Value::Vector(v) => v.len(),
                _ => 1,
            })
        };
        let n = n.map_err(|e| std::io::Error::other(e.message))?;
        times.push((t0.elapsed(), n));
    }
    times.sort();
    let (p50, n) = times[times.len() / 2];
    eprintln!(
        "{n} series; p50 {p50:?}, min {:?}, max {:?}",
        times[0].0,
        times[times.len() - 1].0
    );
    Ok(())
}
