//! The Mann-Whitney U test (Wilcoxon rank-sum test), used to judge whether
//! canary latencies are shifted relative to a concurrently running baseline.
//!
//! Results match `scipy.stats.mannwhitneyu(x, y, alternative=...,
//! use_continuity=True, method="asymptotic")`: midranks for ties, the
//! tie-corrected variance, and a continuity correction of 0.5.
//!
//! Raw samples are first collapsed into bins of equal values, so raw samples
//! and histograms go through the same rank arithmetic (`test_bins`).

use statrs::distribution::{ContinuousCDF, Normal};

/// The alternative hypothesis of a Mann-Whitney test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    /// `x` is stochastically greater than `y` (e.g. the canary is slower).
    Greater,
    /// `x` is stochastically less than `y`.
    Less,
    /// `x` and `y` differ in either direction.
    TwoSided,
}

/// The outcome of a Mann-Whitney U test of `x` against `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U1, the statistic for `x`: the number of pairs `(x_i, y_j)` with
    /// `x_i > y_j`, counting tied pairs as one half (scipy's `statistic`).
    pub u: f64,
    /// The normal-approximation z-score of `u` with tie-corrected variance,
    /// signed so that positive means `x` tends to be larger. The continuity
    /// correction of 0.5 is applied against the chosen alternative, so
    /// `p_value` is `sf(z)` for [`Alternative::Greater`], `cdf(z)` for
    /// [`Alternative::Less`] and `min(1, 2·sf(|z|))` for
    /// [`Alternative::TwoSided`].
    pub z: f64,
    /// The asymptotic p-value for the chosen alternative.
    pub p_value: f64,
    /// `u / (n1·n2)`: the probability that a random `x` exceeds a random `y`,
    /// ties counting half (common-language effect size; 0.5 = no difference).
    pub effect: f64,
}

/// Runs the Mann-Whitney U test on raw samples.
///
/// Returns `None` when either sample is empty, when any value is NaN, or when
/// all values are equal (the rank variance is then zero).
pub fn mann_whitney_u(x: &[f64], y: &[f64], alternative: Alternative) -> Option<MannWhitney> {
    if x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    let mut tagged: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    // `total_cmp` puts -0.0 right before 0.0, and grouping by `==` then
    // treats them as one tie, as scipy does.
    tagged.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let bins = tagged.chunk_by(|a, b| a.0 == b.0).map(|group| {
        let in_x = group.iter().filter(|(_, is_x)| *is_x).count() as u64;
        (in_x, group.len() as u64 - in_x)
    });
    test_bins(bins, alternative)
}

/// Runs the Mann-Whitney U test on two histograms with the same bucket edges.
///
/// `x[i]` and `y[i]` count the samples in bucket `i`, buckets in increasing
/// order; a bucket missing from the shorter slice counts as empty. Samples in
/// the same bucket are ties. The result equals [`mann_whitney_u`] on the
/// expanded samples, in O(buckets) time.
///
/// Returns `None` when either histogram is empty or when all samples fall in
/// one bucket.
pub fn mann_whitney_binned(x: &[u64], y: &[u64], alternative: Alternative) -> Option<MannWhitney> {
    let bins = (0..x.len().max(y.len())).map(|i| {
        (
            x.get(i).copied().unwrap_or(0),
            y.get(i).copied().unwrap_or(0),
        )
    });
    test_bins(bins, alternative)
}

/// The shared test: `bins` yields `(count in x, count in y)` per group of tied
/// values, in increasing order of value.
fn test_bins(
    bins: impl Iterator<Item = (u64, u64)>,
    alternative: Alternative,
) -> Option<MannWhitney> {
    // Counting pairs (`u += cx·(y below + cy/2)`) rather than summing ranks
    // keeps every partial sum a multiple of 0.5, so `u` is exact in f64 while
    // n1·n2 < 2^52.
    let (mut n1, mut n2, mut u, mut tie_term) = (0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64);
    let mut occupied_bins = 0_usize;
    for (cx, cy) in bins {
        let (cx, cy) = (cx as f64, cy as f64);
        // `n2` is still the number of y values below this bin.
        u += cx * (n2 + 0.5 * cy);
        n1 += cx;
        n2 += cy;
        let t = cx + cy;
        // f64 because t³ overflows u64 once a tie holds a few million samples.
        tie_term += t * t * t - t;
        if t > 0.0 {
            occupied_bins += 1;
        }
    }
    // With one occupied bin every value is tied and the variance is zero;
    // checking this structurally avoids trusting a rounded 0.0.
    if n1 == 0.0 || n2 == 0.0 || occupied_bins < 2 {
        return None;
    }

    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let sd = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let diff = u - mean;
    let normal = Normal::standard();
    // `sf` keeps relative precision for tiny upper-tail p-values, where
    // `1 - cdf` would round to 0.
    let (z, p_value) = match alternative {
        Alternative::Greater => {
            let z = (diff - 0.5) / sd;
            (z, normal.sf(z))
        }
        Alternative::Less => {
            let z = (diff + 0.5) / sd;
            (z, normal.cdf(z))
        }
        Alternative::TwoSided => {
            // scipy uses max(U1, U2) - mean - 0.5, which can dip below zero and
            // push 2·sf above 1; clamping the distance at 0 gives the same
            // clipped p-value and a z of 0 rather than the wrong sign.
            let z = diff.signum() * (diff.abs() - 0.5).max(0.0) / sd;
            (z, (2.0 * normal.sf(z.abs())).min(1.0))
        }
    };
    Some(MannWhitney {
        u,
        z,
        p_value,
        effect: u / (n1 * n2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative tolerance 1e-9, also for the tiny p-values: statrs' `sf`
    /// keeps about 1e-10 relative accuracy even at p ~ 1e-114.
    fn assert_close(actual: f64, expected: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.abs(),
            "{what}: got {actual:e}, expected {expected:e}"
        );
    }

    fn assert_matches(result: Option<MannWhitney>, u: f64, z: f64, p: f64) {
        let result = result.expect("test should be defined");
        assert_eq!(result.u, u, "u");
        assert_close(result.z, z, "z");
        assert_close(result.p_value, p, "p");
    }

    // Reference values: `r = scipy.stats.mannwhitneyu(x, y, alternative=alt,
    // use_continuity=True, method="asymptotic")` gives u = r.statistic and
    // p = r.pvalue. scipy does not return z; it was computed in numpy with
    // scipy's own formula (scipy/stats/_mannwhitneyu.py, _get_mwu_z) under
    // this module's sign convention, d = u - n1*n2/2, ties t from
    // numpy.unique(concat(x, y), return_counts=True):
    //   s = sqrt(n1*n2/12 * ((n1+n2+1) - sum(t**3 - t)/((n1+n2)*(n1+n2-1))))
    //   greater: (d - 0.5)/s, less: (d + 0.5)/s,
    //   two-sided: sign(d)*max(|d| - 0.5, 0)/s
    // and checked to reproduce r.pvalue via scipy.stats.norm.sf / norm.cdf.

    const NO_TIES_X: [f64; 8] = [1.83, 0.57, 2.91, 1.24, 3.05, 2.48, 1.66, 2.73];
    const NO_TIES_Y: [f64; 8] = [0.92, 1.41, 0.33, 1.09, 2.15, 0.71, 1.58, 0.48];
    const TIES_X: [f64; 10] = [3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 6.0, 8.0, 9.0, 5.0];
    const TIES_Y: [f64; 11] = [1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 5.0, 7.0, 2.0, 4.0, 6.0];

    #[test]
    fn no_ties_greater() {
        let r = mann_whitney_u(&NO_TIES_X, &NO_TIES_Y, Alternative::Greater);
        assert_matches(r, 53.0, 2.152930629193065, 0.015662065438944998);
    }

    #[test]
    fn no_ties_two_sided() {
        let r = mann_whitney_u(&NO_TIES_X, &NO_TIES_Y, Alternative::TwoSided);
        assert_matches(r, 53.0, 2.152930629193065, 0.031324130877889995);
    }

    #[test]
    fn ties_greater() {
        let r = mann_whitney_u(&TIES_X, &TIES_Y, Alternative::Greater);
        assert_matches(r, 82.5, 1.9232636110392067, 0.027223476053013607);
    }

    #[test]
    fn ties_less_in_the_wrong_direction() {
        let r = mann_whitney_u(&TIES_X, &TIES_Y, Alternative::Less);
        assert_matches(r, 82.5, 1.9944955966332516, 0.9769510396447368);
    }

    #[test]
    fn ties_less_with_samples_swapped() {
        let r = mann_whitney_u(&TIES_Y, &TIES_X, Alternative::Less);
        assert_matches(r, 27.5, -1.9232636110392067, 0.027223476053013607);
    }

    #[test]
    fn unequal_sizes_two_sided() {
        let x = [12.5, 14.0, 14.0, 15.5, 11.0];
        let y = [
            10.0, 11.0, 11.0, 12.5, 9.5, 13.0, 10.5, 12.0, 14.0, 8.0, 11.5, 10.0,
        ];
        let r = mann_whitney_u(&x, &y, Alternative::TwoSided);
        assert_matches(r, 50.5, 2.121222863131148, 0.03390305212680155);
    }

    #[test]
    fn shifted_samples_give_tiny_p() {
        // python: x = [v*0.5 + 12.0 for v in range(40)]; y = [v*0.5 for v in range(45)]
        let x: Vec<f64> = (0..40).map(|v| f64::from(v) * 0.5 + 12.0).collect();
        let y: Vec<f64> = (0..45).map(|v| f64::from(v) * 0.5).collect();
        let greater = mann_whitney_u(&x, &y, Alternative::Greater);
        assert_matches(greater, 1579.5, 5.978875113101986, 1.1234186117890583e-09);
        let two_sided = mann_whitney_u(&x, &y, Alternative::TwoSided);
        assert_matches(two_sided, 1579.5, 5.978875113101986, 2.2468372235781167e-09);
        let less = mann_whitney_u(&x, &y, Alternative::Less);
        assert_matches(less, 1579.5, 5.987680525639691, 0.9999999989357269);
    }

    /// Two 90-bucket histograms of ~1.3e5 samples each, mirrored in python as
    /// `hx = [i*(90-i) + (i*37 % 23)*8 for i in range(90)]`,
    /// `hy = [i*(90-i) + (i*53 % 29)*8 for i in range(90)]` and expanded with
    /// `numpy.repeat(numpy.arange(90.0), h)` for scipy.
    fn large_histograms() -> (Vec<u64>, Vec<u64>) {
        let hx = (0..90).map(|i| i * (90 - i) + (i * 37 % 23) * 8).collect();
        let hy = (0..90).map(|i| i * (90 - i) + (i * 53 % 29) * 8).collect();
        (hx, hy)
    }

    #[test]
    fn large_binned_similar() {
        let (hx, hy) = large_histograms();
        let greater = mann_whitney_binned(&hx, &hy, Alternative::Greater);
        assert_matches(
            greater,
            8524764924.5,
            0.743076347911088,
            0.22871772920222194,
        );
        let two_sided = mann_whitney_binned(&hx, &hy, Alternative::TwoSided);
        assert_matches(
            two_sided,
            8524764924.5,
            0.743076347911088,
            0.4574354584044439,
        );
    }

    #[test]
    fn large_binned_shifted() {
        // python: hx2 = [0, 0] + [i*(90-i) for i in range(88)]
        let (_, hy) = large_histograms();
        let hx: Vec<u64> = (0..90)
            .map(|j| j.max(2) - 2)
            .map(|i| i * (90 - i))
            .collect();
        let greater = mann_whitney_binned(&hx, &hy, Alternative::Greater);
        assert_matches(
            greater,
            8390075376.0,
            22.666323399013514,
            4.815483894708925e-114,
        );
        let two_sided = mann_whitney_binned(&hx, &hy, Alternative::TwoSided);
        assert_matches(
            two_sided,
            8390075376.0,
            22.666323399013514,
            9.63096778941785e-114,
        );
    }

    #[test]
    fn identical_samples_show_no_difference() {
        let x = [5.0, 1.0, 4.0, 4.0, 2.0, 9.0, 7.0];
        let greater = mann_whitney_u(&x, &x, Alternative::Greater).unwrap();
        assert_eq!(greater.effect, 0.5);
        assert!(greater.p_value > 0.5 && greater.p_value < 0.6);
        let two_sided = mann_whitney_u(&x, &x, Alternative::TwoSided).unwrap();
        assert_eq!(two_sided.z, 0.0);
        assert_eq!(two_sided.p_value, 1.0);
    }

    #[test]
    fn clearly_shifted_sample_is_detected() {
        let y: Vec<f64> = (0..50).map(f64::from).collect();
        let x: Vec<f64> = y.iter().map(|v| v + 100.0).collect();
        let r = mann_whitney_u(&x, &y, Alternative::Greater).unwrap();
        assert_eq!(r.effect, 1.0);
        assert!(r.p_value < 1e-15);
        let reversed = mann_whitney_u(&x, &y, Alternative::Less).unwrap();
        assert!(reversed.p_value > 1.0 - 1e-15);
    }

    #[test]
    fn degenerate_inputs_give_none() {
        for alternative in [
            Alternative::Greater,
            Alternative::Less,
            Alternative::TwoSided,
        ] {
            assert_eq!(mann_whitney_u(&[], &[1.0, 2.0], alternative), None);
            assert_eq!(mann_whitney_u(&[1.0, 2.0], &[], alternative), None);
            assert_eq!(mann_whitney_u(&[2.0; 5], &[2.0; 3], alternative), None);
            assert_eq!(mann_whitney_u(&[1.0, f64::NAN], &[2.0], alternative), None);
            assert_eq!(mann_whitney_binned(&[], &[], alternative), None);
            assert_eq!(mann_whitney_binned(&[0, 0], &[3, 1], alternative), None);
            assert_eq!(mann_whitney_binned(&[0, 7, 0], &[0, 3], alternative), None);
        }
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let with_signed_zero = mann_whitney_u(&[-0.0, 1.0], &[0.0, 2.0], Alternative::Greater);
        let plain = mann_whitney_u(&[0.0, 1.0], &[0.0, 2.0], Alternative::Greater);
        assert_eq!(with_signed_zero, plain);
    }

    /// xorshift64: deterministic pseudo-random numbers without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }

        fn histogram(&mut self) -> Vec<u64> {
            let len = self.below(12) as usize;
            // Mostly small counts with plenty of empty bins and big ties.
            (0..len).map(|_| self.below(9).saturating_sub(2)).collect()
        }
    }

    /// Expands a histogram into samples at log-spaced bucket values, in a
    /// scrambled order so that the raw path has to do its own sorting.
    fn expand(histogram: &[u64], rng: &mut XorShift) -> Vec<f64> {
        let mut samples: Vec<f64> = histogram
            .iter()
            .zip(0..)
            .flat_map(|(&count, bin)| (0..count).map(move |_| 1.25_f64.powi(bin)))
            .collect();
        for i in (1..samples.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            samples.swap(i, j);
        }
        samples
    }

    #[test]
    fn binned_equals_raw_on_expanded_samples() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut defined = 0;
        for _ in 0..500 {
            let (hx, hy) = (rng.histogram(), rng.histogram());
            let (x, y) = (expand(&hx, &mut rng), expand(&hy, &mut rng));
            for alternative in [
                Alternative::Greater,
                Alternative::Less,
                Alternative::TwoSided,
            ] {
                let binned = mann_whitney_binned(&hx, &hy, alternative);
                assert_eq!(binned, mann_whitney_u(&x, &y, alternative), "{hx:?} {hy:?}");
                defined += usize::from(binned.is_some());
            }
        }
        // Guard against a generator that only produces degenerate cases.
        assert!(defined > 900, "only {defined} defined results");
    }
}
