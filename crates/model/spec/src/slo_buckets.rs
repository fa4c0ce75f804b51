//! The upper bounds of the proxy's exported latency histogram
//! (`slipway_proxy_request_duration_seconds_bucket`: 0.5 ms × 2^i, sixteen of them, as
//! `slipway-proxy`'s `metrics.rs` writes them), which a latency SLO's threshold is counted at.

use std::time::Duration;

/// The bounds, in seconds, smallest first.
pub fn bounds() -> impl Iterator<Item = f64> {
    (0..16).map(|i| 0.0005 * f64::from(1u32 << i))
}

/// The largest bound at most `threshold` (requests up to it count as fast enough).
pub fn at_most(threshold: Duration) -> Option<Duration> {
    bounds()
        .filter(|b| *b <= threshold.as_secs_f64() + 1e-12)
        .last()
        .map(Duration::from_secs_f64)
}

/// The bounds around `threshold`, for a hint (`"128ms" or "256ms"`).
pub fn near(threshold: Duration) -> String {
    let t = threshold.as_secs_f64();
    let show = |b: f64| format!("\"{}\"", crate::units::Duration(Duration::from_secs_f64(b)));
    let below = bounds().filter(|b| *b < t).last();
    let above = bounds().find(|b| *b > t);
    match (below, above) {
        (Some(b), Some(a)) => format!("{} or {}", show(b), show(a)),
        (Some(b), None) => show(b),
        (None, Some(a)) => show(a),
        (None, None) => "\"256ms\"".into(),
    }
}

/// The `le` label value of a bound, as the proxy's histogram writes it.
pub fn le(bound: Duration) -> String {
    format!("{}", bound.as_secs_f64())
}
