//! Tests and intervals on error ratios (requests answered with a 5xx out of
//! the requests served): an exact test against a fixed limit, a canary versus
//! baseline comparison, and the Wilson score interval.

use std::f64::consts::PI;

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::factorial::ln_factorial;

/// One-sided exact binomial test of H0: error ratio ≤ `limit` against
/// H1: error ratio > `limit`.
///
/// Returns the p-value P(X ≥ `errors`) for X ~ Binomial(`n`, `limit`),
/// accurate to about 1e-12 relative (checked up to `n` = 3e7). Returns `None`
/// when `n` is 0, `errors` exceeds `n`, or `limit` is outside [0, 1].
pub fn binomial_exceeds(errors: u64, n: u64, limit: f64) -> Option<f64> {
    if n == 0 || errors > n || !(0.0..=1.0).contains(&limit) {
        return None;
    }
    if errors == 0 || limit == 1.0 {
        return Some(1.0);
    }
    if limit == 0.0 {
        return Some(0.0);
    }
    // statrs' `Binomial::sf` (an incomplete beta continued fraction) is not
    // used: at n = 1e7 it is off by ~1e-8 relative from cancelling ln Γ terms,
    // and near the mean its 140-step continued fraction stops unconverged
    // (~1e-4 off). Summing the pmf over the smaller side of the mode instead
    // is exact up to rounding and takes O(√n) steps at worst.
    let mode = ((n as f64 + 1.0) * limit).floor() as u64;
    let p_value = if errors >= mode {
        sum_pmf_away_from_mode(errors, n, limit, Direction::Up)
    } else {
        1.0 - sum_pmf_away_from_mode(errors - 1, n, limit, Direction::Down)
    };
    Some(p_value.clamp(0.0, 1.0))
}

/// One-sided test of H0: p1 ≤ p2 + `margin` against H1: p1 > p2 + `margin`,
/// where p1 = `e1`/`n1` is the canary's error ratio and p2 = `e2`/`n2` the
/// baseline's.
///
/// Uses the Agresti–Caffo adjusted Wald test: each group gets one extra
/// error and one extra success before the normal approximation. That keeps
/// the variance positive and the p-value sensible when either side has no
/// errors at all (the plain Wald test would divide by zero at 0 errors on both
/// sides), which is the common case for a healthy canary. Returns `None` when
/// `n1` or `n2` is 0, an error count exceeds its total, or `margin` is not
/// finite.
pub fn two_proportion_exceeds(e1: u64, n1: u64, e2: u64, n2: u64, margin: f64) -> Option<f64> {
    if n1 == 0 || n2 == 0 || e1 > n1 || e2 > n2 || !margin.is_finite() {
        return None;
    }
    let adjusted = |errors: u64, n: u64| {
        let n = n as f64 + 2.0;
        let ratio = (errors as f64 + 1.0) / n;
        (ratio, ratio * (1.0 - ratio) / n)
    };
    let (p1, var1) = adjusted(e1, n1);
    let (p2, var2) = adjusted(e2, n2);
    let z = (p1 - p2 - margin) / (var1 + var2).sqrt();
    // `sf` rather than `1 - cdf` keeps precision for tiny p-values.
    Some(Normal::standard().sf(z))
}

/// The two-sided Wilson score interval `(low, high)` for the error ratio
/// `errors`/`n` at the given `confidence` (e.g. 0.95).
///
/// Returns `None` when `n` is 0, `errors` exceeds `n`, or `confidence` is not
/// strictly between 0 and 1.
pub fn wilson_interval(errors: u64, n: u64, confidence: f64) -> Option<(f64, f64)> {
    if n == 0 || errors > n || !(confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    // -Φ⁻¹(α/2) rather than Φ⁻¹(1 - α/2): no rounding of 1 - α/2 near 1.
    let z = -Normal::standard().inverse_cdf((1.0 - confidence) / 2.0);
    let n = n as f64;
    let ratio = errors as f64 / n;
    let z2_n = z * z / n;
    let center = (ratio + z2_n / 2.0) / (1.0 + z2_n);
    let half_width = z / (1.0 + z2_n) * (ratio * (1.0 - ratio) / n + z2_n / (4.0 * n)).sqrt();
    // Mathematically the bounds are inside [0, 1] (and exactly 0 or 1 at
    // the extremes); clamping absorbs rounding there.
    Some((
        (center - half_width).max(0.0),
        (center + half_width).min(1.0),
    ))
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Sums the Binomial(`n`, `p`) pmf from `start` towards `n` (`Up`) or 0
/// (`Down`). `start` must lie at or past the mode in that direction, so the
/// terms only shrink.
fn sum_pmf_away_from_mode(start: u64, n: u64, p: f64, direction: Direction) -> f64 {
    let odds = p / (1.0 - p);
    let mut k = start;
    let mut term = binomial_pmf(k, n, p);
    let mut sum = 0.0;
    loop {
        sum += term;
        let ratio = match direction {
            Direction::Up if k < n => (n - k) as f64 / (k + 1) as f64 * odds,
            Direction::Down if k > 0 => k as f64 / (n - k + 1) as f64 / odds,
            _ => break,
        };
        term *= ratio;
        // The pmf is log-concave, so later ratios are smaller still and the
        // rest of the tail is at most term / (1 - ratio).
        if ratio < 1.0 && term <= sum * f64::EPSILON * (1.0 - ratio) {
            break;
        }
        k = match direction {
            Direction::Up => k + 1,
            Direction::Down => k - 1,
        };
    }
    sum
}

/// The Binomial(`n`, `p`) pmf at `k` for 0 < `p` < 1, by Loader's
/// saddle-point formula (C. Loader, "Fast and Accurate Computation of
/// Binomial Probabilities", 2000; also R's `dbinom`). The textbook
/// ln C(n, k) + k ln p + (n-k) ln(1-p) cancels terms of size n ln n and loses
/// about 8 digits at n = 1e7; Loader's terms are all small.
fn binomial_pmf(k: u64, n: u64, p: f64) -> f64 {
    let n_f = n as f64;
    if k == 0 {
        return (n_f * (-p).ln_1p()).exp();
    }
    if k == n {
        return (n_f * p.ln()).exp();
    }
    let (k_f, rest) = (k as f64, (n - k) as f64);
    let log_pmf = stirling_error(n)
        - stirling_error(k)
        - stirling_error(n - k)
        - deviance_term(k_f, n_f * p)
        - deviance_term(rest, n_f * (1.0 - p));
    log_pmf.exp() * (n_f / (2.0 * PI * k_f * rest)).sqrt()
}

/// ln(n!) - ln(√(2πn) (n/e)^n), the error of Stirling's formula, for n ≥ 1.
fn stirling_error(n: u64) -> f64 {
    let n_f = n as f64;
    if n <= 15 {
        // ln(n!) < 28 here, so the direct difference loses under 1e-14.
        return ln_factorial(n) - (n_f + 0.5) * n_f.ln() + n_f - 0.5 * (2.0 * PI).ln();
    }
    // Asymptotic series; the first omitted term is below 1e-16 for n > 15.
    let nn = n_f * n_f;
    (1.0 / 12.0
        - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / 1188.0 / nn) / nn) / nn) / nn)
        / n_f
}

/// x ln(x/m) + m - x, the deviance term of Loader's formula, computed
/// without cancellation when x is close to m.
fn deviance_term(x: f64, m: f64) -> f64 {
    if (x - m).abs() < 0.1 * (x + m) {
        // Series in v = (x-m)/(x+m): 2x·Σ v^(2j+1)/(2j+1) - (x-m); |v| < 0.1
        // makes it converge within a dozen terms.
        let v = (x - m) / (x + m);
        let mut sum = (x - m) * v;
        let mut power = 2.0 * x * v;
        for j in 1..50 {
            power *= v * v;
            let next = sum + power / f64::from(2 * j + 1);
            if next == sum {
                break;
            }
            sum = next;
        }
        return sum;
    }
    x * (x / m).ln() + m - x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, relative: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= relative * expected.abs(),
            "{what}: got {actual:e}, expected {expected:e}"
        );
    }

    #[test]
    fn binomial_matches_scipy() {
        // (errors, n, limit, scipy.stats.binom.sf(errors - 1, n, limit))
        let cases = [
            (3, 20, 0.05, 0.07548367378849626),
            (15, 1000, 0.01, 0.0824123195160887),
            (5, 5, 0.5, 0.03125),
            (1000, 1_000_000, 0.001, 0.5042115551669921),
            (1100, 1_000_000, 0.001, 0.0009574669700285317),
            (1200, 1_000_000, 0.001, 4.589638606100776e-10),
            (950, 1_000_000, 0.001, 0.945881261742004),
            (10100, 10_000_000, 0.001, 0.15974246645121262),
            (10500, 10_000_000, 0.001, 3.553266742524275e-07),
            (9800, 10_000_000, 0.001, 0.9778418508770413),
            (11000, 10_000_000, 0.001, 3.7186451672034396e-23),
            // statrs' Binomial::sf gives 0.37610004 here (continued fraction
            // not converged).
            (5_000_500, 10_000_000, 0.5, 0.3760348278155796),
            (4_999_000, 10_000_000, 0.5, 0.7365586485143509),
            (3, 10_000_000, 1e-7, 0.08030138787440728),
        ];
        for (errors, n, limit, expected) in cases {
            let p = binomial_exceeds(errors, n, limit).unwrap();
            assert_close(
                p,
                expected,
                1e-12,
                &format!("binom({errors}, {n}, {limit})"),
            );
        }
    }

    #[test]
    fn binomial_edge_cases() {
        assert_eq!(binomial_exceeds(0, 100, 0.01), Some(1.0));
        assert_eq!(binomial_exceeds(0, 100, 0.0), Some(1.0));
        assert_eq!(binomial_exceeds(1, 100, 0.0), Some(0.0));
        assert_eq!(binomial_exceeds(100, 100, 1.0), Some(1.0));
        assert_eq!(binomial_exceeds(0, 0, 0.01), None);
        assert_eq!(binomial_exceeds(101, 100, 0.01), None);
        for limit in [-0.1, 1.1, f64::NAN] {
            assert_eq!(binomial_exceeds(1, 100, limit), None);
        }
    }

    #[test]
    fn two_proportion_matches_formula() {
        // (e1, n1, e2, n2, margin, p) with, in python,
        //   p1 = (e1+1)/(n1+2); p2 = (e2+1)/(n2+2)
        //   z = (p1 - p2 - margin) / math.sqrt(p1*(1-p1)/(n1+2) + p2*(1-p2)/(n2+2))
        //   p = scipy.stats.norm.sf(z)
        let cases = [
            (0, 1000, 0, 1000, 0.0, 0.5),
            (0, 1000, 0, 1000, 0.001, 0.7607989167880361),
            (0, 1000, 0, 50000, 0.0, 0.1634805804641754),
            (25, 10000, 10, 10000, 0.0, 0.006781293943710024),
            (
                1200,
                1_000_000,
                1000,
                1_000_000,
                0.0,
                1.0019982442353583e-05,
            ),
            (1200, 1_000_000, 1000, 1_000_000, 1e-4, 0.016494453887399382),
            (5, 1000, 20, 1000, 0.0, 0.998207497947035),
            (300, 5000, 10, 5000, 0.0, 1.6833023041296105e-64),
            (40, 2000, 10, 8000, -0.005, 2.1656228830923085e-14),
        ];
        for (e1, n1, e2, n2, margin, expected) in cases {
            let p = two_proportion_exceeds(e1, n1, e2, n2, margin).unwrap();
            // statrs' normal `sf` is good to about 1e-10 relative, not 1e-15.
            assert_close(p, expected, 1e-9, &format!("{e1}/{n1} vs {e2}/{n2}"));
        }
    }

    #[test]
    fn two_proportion_edge_cases() {
        assert_eq!(two_proportion_exceeds(0, 0, 0, 10, 0.0), None);
        assert_eq!(two_proportion_exceeds(0, 10, 0, 0, 0.0), None);
        assert_eq!(two_proportion_exceeds(11, 10, 0, 10, 0.0), None);
        assert_eq!(two_proportion_exceeds(1, 10, 0, 10, f64::NAN), None);
        // All errors on both sides is as uninformative as none.
        assert_eq!(two_proportion_exceeds(10, 10, 10, 10, 0.0), Some(0.5));
    }

    #[test]
    fn wilson_matches_formula() {
        // (errors, n, confidence, low, high) with, in python,
        //   z = scipy.stats.norm.ppf(1 - (1 - confidence)/2); p = errors/n
        //   center = (p + z*z/(2*n)) / (1 + z*z/n)
        //   half = z/(1 + z*z/n) * math.sqrt(p*(1-p)/n + z*z/(4*n*n))
        //   low, high = center - half, center + half
        // except that python's low of 3.5e-18 for 0 errors is the rounding of
        // an exact 0, which the function clamps to.
        let cases = [
            (0, 100, 0.95, 0.0, 0.03699349820698568),
            (1, 100, 0.95, 0.0017674320641406505, 0.054486196178705315),
            (50, 100, 0.95, 0.4038315303659956, 0.5961684696340044),
            (100, 100, 0.95, 0.9630065017930143, 1.0),
            (7, 20, 0.9, 0.202260040056761, 0.5334873111515283),
            (
                3,
                1_000_000,
                0.99,
                7.577586311244589e-07,
                1.187705413922045e-05,
            ),
            (
                1234,
                10_000_000,
                0.999,
                0.00011237022516902122,
                0.00013551226305164065,
            ),
        ];
        for (errors, n, confidence, low, high) in cases {
            let (l, h) = wilson_interval(errors, n, confidence).unwrap();
            let what = format!("wilson({errors}, {n}, {confidence})");
            assert_close(l, low, 1e-12, &what);
            assert_close(h, high, 1e-12, &what);
        }
    }

    #[test]
    fn wilson_edge_cases() {
        assert_eq!(wilson_interval(0, 0, 0.95), None);
        assert_eq!(wilson_interval(2, 1, 0.95), None);
        for confidence in [0.0, 1.0, -0.5, f64::NAN] {
            assert_eq!(wilson_interval(1, 10, confidence), None);
        }
    }
}
