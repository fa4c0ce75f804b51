//! Automated analysis: is the new release worse than the one it replaces?
//!
//! The engine reads the proxy's cumulative per-pool counts ([`Counts`]) and judges the
//! difference between two readings, so both sides are measured over exactly the same
//! requests' time — canary against the *concurrent* stable baseline, as Kayenta does, never
//! against history. Each check is a one-sided significance test rather than a bare threshold,
//! so a handful of unlucky requests cannot fail a healthy release, and too few requests make
//! the result *inconclusive* (the step is extended), never a failure:
//!
//! | check | fails when (at 99 % confidence) |
//! |---|---|
//! | error rate | the canary's 5xx ratio is above `max_error_rate` (exact binomial test) |
//! | error increase | it is above the baseline's plus `max_error_rate_increase` (two-proportion test) |
//! | p95 / p99 limit | more than 5 % / 1 % of its requests are slower than `max_p95` / `max_p99` |
//! | p95 increase | more than 5 % are slower than the baseline's p95 × (1 + `max_p95_increase`) |
//! | judge | Mann-Whitney U says its latencies are stochastically greater, and its median is more than `max_p95_increase` above the baseline's |
//!
//! Latency differences below `latency_tolerance` never fail. A failure so clear that it is
//! significant at 1 in 1 000 on the canary's requests of the step so far, against everything the
//! stable release answered since just before the step's instances started ([`decisive`]), rolls back at
//! once, without waiting for `failure_limit` intervals or `min_requests`: the tests there are
//! exact at any sample size, and waiting would only show more users the errors (five 500s in a
//! row from the canary while the stable release answers thousands cleanly is enough).

pub mod mann_whitney;
pub mod proportion;

use serde::{Deserialize, Serialize};
use slipway_proxy::metrics::Counts;
use slipway_spec::resolve::ResolvedAnalysis;

use crate::record::BaselineStats;

/// Significance of one interval's checks.
pub const ALPHA: f64 = 0.01;
/// Significance at which a failure rolls back at once.
pub const ALPHA_DECISIVE: f64 = 1e-3;

/// The outcome of a check or of a whole analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not worse.
    Pass,
    /// Worse.
    Fail,
    /// Too few requests to tell.
    Inconclusive,
}

/// Traffic of one side over the judged requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests.
    pub requests: u64,
    /// 5xx answers.
    pub errors: u64,
    /// Share of 5xx.
    pub error_rate: f64,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

impl Summary {
    /// The summary of some counts.
    pub fn of(counts: &Counts) -> Self {
        let requests = counts.requests();
        let errors = counts.errors();
        Summary {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: counts.quantile_ms(0.50),
            p95_ms: counts.quantile_ms(0.95),
            p99_ms: counts.quantile_ms(0.99),
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `error-rate`, `error-increase`, `p95`, `p99`, `p95-increase`, `judge`.
    pub name: String,
    /// Its outcome.
    pub verdict: Verdict,
    /// Why, for people.
    pub detail: String,
}

/// An analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Fail if any check failed; inconclusive if there were too few requests; else pass.
    pub verdict: Verdict,
    /// The failed checks' details, or why it is inconclusive.
    pub reason: String,
    /// The new release.
    pub canary: Summary,
    /// The release it is compared with.
    pub baseline: Option<Summary>,
    /// Every check that ran.
    pub checks: Vec<Check>,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn significant(p: Option<f64>, alpha: f64) -> bool {
    p.is_some_and(|p| p < alpha)
}

/// Judges the canary's requests of an interval against the baseline's of the same interval.
pub fn judge(canary: &Counts, baseline: Option<&Counts>, a: &ResolvedAnalysis) -> Judgement {
    let c = Summary::of(canary);
    let b = baseline.map(Summary::of);
    let mut checks = Vec::new();
    if c.requests < a.min_requests {
        let reason = format!(
            "only {} request(s) reached the new release; {} are needed to judge it",
            c.requests, a.min_requests
        );
        return Judgement {
            verdict: Verdict::Inconclusive,
            reason,
            canary: c,
            baseline: b,
            checks,
        };
    }
    error_checks(&c, b.as_ref(), a, ALPHA, &mut checks);
    let tolerance = a.latency_tolerance.std().as_secs_f64() * 1000.0;
    for (name, limit, share) in [("p95", a.max_p95, 0.05), ("p99", a.max_p99, 0.01)] {
        let Some(limit) = limit else { continue };
        let limit_ms = limit.std().as_secs_f64() * 1000.0;
        let slow = slow_count(canary, limit_ms);
        let fails = significant(proportion::binomial_exceeds(slow, c.requests, share), ALPHA);
        let observed = if name == "p95" { c.p95_ms } else { c.p99_ms };
        checks.push(Check {
            name: name.into(),
            verdict: if fails { Verdict::Fail } else { Verdict::Pass },
            detail: format!(
                "{name} {} against a limit of {limit_ms:.1}ms",
                observed.map_or("-".into(), |v| format!("{v:.1}ms"))
            ),
        });
    }
    let comparable = baseline.filter(|b| b.requests() >= a.min_requests);
    if let (Some(base), Some(bs)) = (comparable, b.as_ref()) {
        if let (Some(base_p95), Some(canary_p95)) = (bs.p95_ms, c.p95_ms) {
            let limit_ms = (base_p95 * (1.0 + a.max_p95_increase)).max(base_p95 + tolerance);
            let slow = slow_count(canary, limit_ms);
            let fails = significant(proportion::binomial_exceeds(slow, c.requests, 0.05), ALPHA);
            checks.push(Check {
                name: "p95-increase".into(),
                verdict: if fails { Verdict::Fail } else { Verdict::Pass },
                detail: format!(
                    "p95 {canary_p95:.1}ms against the baseline's {base_p95:.1}ms (limit {limit_ms:.1}ms)"
                ),
            });
        }
        if a.judge
            && let Some(test) = mann_whitney::mann_whitney_binned(
                &canary.dense(),
                &base.dense(),
                mann_whitney::Alternative::Greater,
            )
            && let (Some(cm), Some(bm)) = (c.p50_ms, bs.p50_ms)
        {
            let shifted = cm > bm * (1.0 + a.max_p95_increase) && cm - bm > tolerance;
            let fails = test.p_value < ALPHA && shifted;
            checks.push(Check {
                name: "judge".into(),
                verdict: if fails { Verdict::Fail } else { Verdict::Pass },
                detail: format!(
                    "Mann-Whitney U p={:.2e}, P(canary slower)={:.2}, median {cm:.1}ms against {bm:.1}ms",
                    test.p_value, test.effect
                ),
            });
        }
    }
    let failed: Vec<&Check> = checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .collect();
    let (verdict, reason) = if failed.is_empty() {
        (Verdict::Pass, format!("{} checks passed", checks.len()))
    } else {
        (
            Verdict::Fail,
            failed
                .iter()
                .map(|c| c.detail.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    Judgement {
        verdict,
        reason,
        canary: c,
        baseline: b,
        checks,
    }
}

fn error_checks(
    c: &Summary,
    b: Option<&Summary>,
    a: &ResolvedAnalysis,
    alpha: f64,
    checks: &mut Vec<Check>,
) {
    let fails = significant(
        proportion::binomial_exceeds(c.errors, c.requests, a.max_error_rate),
        alpha,
    );
    checks.push(Check {
        name: "error-rate".into(),
        verdict: if fails { Verdict::Fail } else { Verdict::Pass },
        detail: format!(
            "error rate {} ({} of {}) against a limit of {}",
            pct(c.error_rate),
            c.errors,
            c.requests,
            pct(a.max_error_rate)
        ),
    });
    if let Some(b) = b.filter(|b| b.requests >= a.min_requests) {
        let fails = significant(
            proportion::two_proportion_exceeds(
                c.errors,
                c.requests,
                b.errors,
                b.requests,
                a.max_error_rate_increase,
            ),
            alpha,
        );
        checks.push(Check {
            name: "error-increase".into(),
            verdict: if fails { Verdict::Fail } else { Verdict::Pass },
            detail: format!(
                "error rate {} against the baseline's {} (+{} allowed)",
                pct(c.error_rate),
                pct(b.error_rate),
                pct(a.max_error_rate_increase)
            ),
        });
    }
}

/// Requests of `counts` in buckets that lie wholly above `ms`.
fn slow_count(counts: &Counts, ms: f64) -> u64 {
    let total = counts.requests() as f64;
    counts
        .share_slower_than(ms)
        .map_or(0, |share| (share * total).round() as u64)
}

/// A failure clear enough to roll back at once: on every request of the step so far, the
/// canary's errors are significant at [`ALPHA_DECISIVE`] against the absolute limit, or
/// against the baseline's rate (its upper 99.9 % Wilson bound, so the baseline's own noise
/// counts) plus the allowed increase — both exact binomial tests, valid at any sample size.
/// `None` when there is no such failure.
pub fn decisive(
    canary: &Counts,
    baseline: Option<&Counts>,
    a: &ResolvedAnalysis,
) -> Option<String> {
    let c = Summary::of(canary);
    if c.errors == 0 {
        return None;
    }
    let mut failed = Vec::new();
    if significant(
        proportion::binomial_exceeds(c.errors, c.requests, a.max_error_rate),
        ALPHA_DECISIVE,
    ) {
        failed.push(format!(
            "error rate {} ({} of {}) against a limit of {}",
            pct(c.error_rate),
            c.errors,
            c.requests,
            pct(a.max_error_rate)
        ));
    }
    if let Some(b) = baseline
        .map(Summary::of)
        .filter(|b| b.requests >= a.min_requests)
        && let Some((_, upper)) = proportion::wilson_interval(b.errors, b.requests, 0.999)
    {
        let limit = (upper + a.max_error_rate_increase).min(1.0);
        if significant(
            proportion::binomial_exceeds(c.errors, c.requests, limit),
            ALPHA_DECISIVE,
        ) {
            failed.push(format!(
                "error rate {} ({} of {}) against the baseline's {} (+{} allowed)",
                pct(c.error_rate),
                c.errors,
                c.requests,
                pct(b.error_rate),
                pct(a.max_error_rate_increase)
            ));
        }
    }
    (!failed.is_empty()).then(|| failed.join("; "))
}

/// Judges a committed release's requests against what the release before it did before the
/// deploy (the post-deploy watch).
pub fn watch(new: &Counts, before: &BaselineStats, a: &ResolvedAnalysis) -> Judgement {
    let baseline = (before.requests >= a.min_requests).then(|| Summary {
        requests: before.requests,
        errors: (before.error_rate * before.requests as f64).round() as u64,
        error_rate: before.error_rate,
        p50_ms: None,
        p95_ms: before.p95_ms,
        p99_ms: None,
    });
    let c = Summary::of(new);
    let mut checks = Vec::new();
    if c.requests < a.min_requests {
        return Judgement {
            verdict: Verdict::Inconclusive,
            reason: format!(
                "only {} request(s) since the last look; {} are needed",
                c.requests, a.min_requests
            ),
            canary: c,
            baseline,
            checks,
        };
    }
    error_checks(&c, None, a, ALPHA, &mut checks);
    if let Some(b) = &baseline {
        // The baseline is history here, so it is a fixed limit, not a second sample.
        let limit = (b.error_rate + a.max_error_rate_increase).min(1.0);
        let fails = significant(
            proportion::binomial_exceeds(c.errors, c.requests, limit),
            ALPHA,
        );
        checks.push(Check {
            name: "error-increase".into(),
            verdict: if fails { Verdict::Fail } else { Verdict::Pass },
            detail: format!(
                "error rate {} against {} before the deploy (+{} allowed)",
                pct(c.error_rate),
                pct(b.error_rate),
                pct(a.max_error_rate_increase)
            ),
        });
        if let (Some(base_p95), Some(p95)) = (b.p95_ms, c.p95_ms) {
            let tolerance = a.latency_tolerance.std().as_secs_f64() * 1000.0;
            let limit_ms = (base_p95 * (1.0 + a.max_p95_increase)).max(base_p95 + tolerance);
            let slow = slow_count(new, limit_ms);
            let fails = significant(proportion::binomial_exceeds(slow, c.requests, 0.05), ALPHA);
            checks.push(Check {
                name: "p95-increase".into(),
                verdict: if fails { Verdict::Fail } else { Verdict::Pass },
                detail: format!(
                    "p95 {p95:.1}ms against {base_p95:.1}ms before the deploy (limit {limit_ms:.1}ms)"
                ),
            });
        }
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.detail.as_str())
        .collect();
    Judgement {
        verdict: if failed.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        reason: if failed.is_empty() {
            format!("{} checks passed", checks.len())
        } else {
            failed.join("; ")
        },
        canary: c,
        baseline,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_proxy::metrics::Metrics;
    use std::time::Duration;

    fn analysis() -> ResolvedAnalysis {
        let project = slipway_spec::load_str(
            std::path::Path::new("/tmp/slipway.toml"),
            "[services.web]\nstart = \"x\"\nport = 0\nstrategy = \"canary\"\n",
            None,
        )
        .expect("valid");
        let env = project.resolve("local").expect("resolves");
        env.services["web"].strategy.analysis.clone()
    }

    /// Counts of `ok` fast requests and `errors` 5xx, each taking `ms`.
    fn counts(ok: u64, errors: u64, ms: u64) -> Counts {
        let m = Metrics::default();
        let p = m.pool("e", "web", "r", "stable");
        for _ in 0..ok {
            p.record(200, Duration::from_millis(ms));
        }
        for _ in 0..errors {
            p.record(500, Duration::from_millis(ms));
        }
        p.counts()
    }

    #[test]
    fn too_few_requests_are_inconclusive_not_a_failure() {
        let j = judge(&counts(3, 2, 1), Some(&counts(500, 0, 1)), &analysis());
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reason.contains("only 5 request(s)"), "{}", j.reason);
        // Two errors in five is not proof against a clean baseline at 1 in 1 000…
        assert!(decisive(&counts(3, 2, 1), Some(&counts(500, 0, 1)), &analysis()).is_none());
        // …five in a row is.
        let five = decisive(&counts(0, 5, 1), Some(&counts(2000, 0, 1)), &analysis());
        assert!(five.is_some_and(|r| r.contains("5 of 5")));
    }

    #[test]
    fn a_thirty_percent_failure_fails_at_once_and_a_healthy_canary_passes() {
        let a = analysis();
        let bad = counts(70, 30, 1);
        let base = counts(2000, 0, 1);
        let j = judge(&bad, Some(&base), &a);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.reason.contains("error rate 30.00%"), "{}", j.reason);
        assert!(decisive(&bad, Some(&base), &a).is_some());
        let good = judge(&counts(100, 0, 1), Some(&base), &a);
        assert_eq!(good.verdict, Verdict::Pass, "{:?}", good.checks);
    }

    #[test]
    fn an_error_or_two_does_not_fail_a_canary() {
        let a = analysis();
        // 1 error in 40 is 2.5 %, under the 5 % limit; 2 in 25 is 8 %, over it, but not
        // significantly so.
        for (ok, errors) in [(39, 1), (23, 2)] {
            let j = judge(&counts(ok, errors, 1), Some(&counts(1000, 5, 1)), &a);
            assert_eq!(j.verdict, Verdict::Pass, "{ok}/{errors}: {}", j.reason);
        }
    }

    #[test]
    fn slower_canaries_fail_on_latency_only_beyond_the_tolerance() {
        let a = analysis();
        let base = counts(1000, 0, 20);
        let slow = judge(&counts(1000, 0, 60), Some(&base), &a);
        assert_eq!(slow.verdict, Verdict::Fail, "{:?}", slow.checks);
        assert!(
            slow.checks
                .iter()
                .any(|c| c.name == "judge" && c.verdict == Verdict::Fail)
        );
        // 1 ms against 2 ms doubles the latency, but stays within the 5 ms tolerance.
        let tiny = judge(&counts(1000, 0, 2), Some(&counts(1000, 0, 1)), &a);
        assert_eq!(tiny.verdict, Verdict::Pass, "{:?}", tiny.checks);
    }

    #[test]
    fn the_watch_compares_with_the_stats_before_the_deploy() {
        let a = analysis();
        let before = BaselineStats {
            requests: 5000,
            error_rate: 0.001,
            p95_ms: Some(10.0),
        };
        assert_eq!(
            watch(&counts(500, 0, 10), &before, &a).verdict,
            Verdict::Pass
        );
        let worse = watch(&counts(450, 50, 10), &before, &a);
        assert_eq!(worse.verdict, Verdict::Fail);
        assert_eq!(
            watch(&counts(5, 0, 10), &before, &a).verdict,
            Verdict::Inconclusive
        );
    }
}
