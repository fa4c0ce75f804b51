//! Downsampled rollups: each series' samples folded into one [`Summary`] per five minutes,
//! written beside every block (`rollups.bin`), so that a function over a long range
//! (`avg_over_time(x[7d])`, `increase(x[24h])`) reads one summary per five minutes of the
//! range instead of every sample. Summaries merge exactly (counter resets across their edges
//! included), so an answer from rollups and raw samples at the range's ragged edges is the
//! answer from the raw samples alone, up to floating-point rounding.

use super::bytes::Reader;
use super::is_stale;
use crate::labels::Labels;

/// Milliseconds per rollup bucket. Bucket `k` holds the samples in `(k·W, (k+1)·W]`, so a
/// range ending on a multiple of five minutes ends on a bucket's edge.
pub const BUCKET_MS: i64 = 300_000;

/// Kahan-compensated addition, as Prometheus' `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A run of samples (stale markers left out) folded: enough for `sum`, `count`, `avg`, `min`,
/// `max`, `last` and `present_over_time`, and `rate`, `increase` and `delta`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Their sum (with `sum_c`, its Kahan compensation).
    pub sum: f64,
    sum_c: f64,
    /// Smallest and largest value, as Prometheus picks them (a NaN only when all are).
    pub min: f64,
    /// See `min`.
    pub max: f64,
    /// The first sample.
    pub first: (i64, f64),
    /// The last sample.
    pub last: (i64, f64),
    /// What counter resets add to an increase: each value a counter fell from.
    pub correction: f64,
}

impl Summary {
    /// One sample.
    pub fn one(t: i64, v: f64) -> Summary {
        Summary {
            count: 1,
            sum: v,
            sum_c: 0.0,
            min: v,
            max: v,
            first: (t, v),
            last: (t, v),
            correction: 0.0,
        }
    }

    /// What `rate` needs of a run: its edges, its count, its counter corrections.
    pub fn span(first: (i64, f64), last: (i64, f64), count: u64, correction: f64) -> Summary {
        Summary {
            count,
            sum: 0.0,
            sum_c: 0.0,
            min: f64::NAN,
            max: f64::NAN,
            first,
            last,
            correction,
        }
    }

    /// Adds a later sample.
    pub fn push(&mut self, t: i64, v: f64) {
        self.merge(&Summary::one(t, v));
    }

    /// Adds a later run.
    pub fn merge(&mut self, later: &Summary) {
        self.count += later.count;
        (self.sum, self.sum_c) = kahan_inc(later.sum + later.sum_c, self.sum, self.sum_c);
        if later.min < self.min || self.min.is_nan() {
            self.min = later.min;
        }
        if later.max > self.max || self.max.is_nan() {
            self.max = later.max;
        }
        self.correction += later.correction;
        if later.first.1 < self.last.1 {
            self.correction += self.last.1;
        }
        self.last = later.last;
    }

    /// The samples' sum, compensated.
    pub fn total(&self) -> f64 {
        if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.sum_c
        }
    }

    /// `samples` (oldest first) folded, stale markers left out; None when nothing is left.
    pub fn of(samples: impl IntoIterator<Item = (i64, f64)>) -> Option<Summary> {
        let mut out: Option<Summary> = None;
        for (t, v) in samples {
            if is_stale(v) {
                continue;
            }
            match &mut out {
                None => out = Some(Summary::one(t, v)),
                Some(s) => s.push(t, v),
            }
        }
        out
    }
}

/// Merges `next` into `acc` (`next` is later).
pub(crate) fn fold(acc: &mut Option<Summary>, next: Option<Summary>) {
    match (acc.as_mut(), next) {
        (_, None) => {}
        (None, Some(n)) => *acc = Some(n),
        (Some(a), Some(n)) => a.merge(&n),
    }
}

/// The bucket a sample time falls in.
pub fn bucket_of(t: i64) -> i64 {
    (t - 1).div_euclid(BUCKET_MS)
}

/// A series' samples (oldest first) as buckets `(k, summary)`, oldest first.
pub(crate) fn buckets(samples: impl IntoIterator<Item = (i64, f64)>) -> Vec<(i64, Summary)> {
    let mut out: Vec<(i64, Summary)> = Vec::new();
    for (t, v) in samples {
        if is_stale(v) {
            continue;
        }
        let k = bucket_of(t);
        match out.last_mut() {
            Some((last, s)) if *last == k => s.push(t, v),
            _ => out.push((k, Summary::one(t, v))),
        }
    }
    out
}

/// Merges buckets of a later stretch into `into` (a bucket both hold is merged).
pub(crate) fn extend(into: &mut Vec<(i64, Summary)>, later: Vec<(i64, Summary)>) {
    for (k, s) in later {
        match into.last_mut() {
            Some((last, acc)) if *last == k => acc.merge(&s),
            _ => into.push((k, s)),
        }
    }
}

const RECORD: usize = 8 + 4 + 4 + 4 + 6 * 8;

/// One series' buckets as bytes, a CRC at the end.
pub(crate) fn encode(buckets: &[(i64, Summary)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + buckets.len() * RECORD + 4);
    out.extend_from_slice(&u32::try_from(buckets.len()).unwrap_or(0).to_le_bytes());
    for (k, s) in buckets {
        let base = k * BUCKET_MS;
        out.extend_from_slice(&k.to_le_bytes());
        out.extend_from_slice(&u32::try_from(s.count).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&((s.first.0 - base) as u32).to_le_bytes());
        out.extend_from_slice(&((s.last.0 - base) as u32).to_le_bytes());
        for f in [s.total(), s.min, s.max, s.first.1, s.last.1, s.correction] {
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The buckets [`encode`] wrote; None if the bytes are damaged.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<(i64, Summary)>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader(body);
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(body.len() / RECORD));
    for _ in 0..n {
        let k = r.i64()?;
        let count = u64::from(r.u32()?);
        let base = k * BUCKET_MS;
        let first_t = base + i64::from(r.u32()?);
        let last_t = base + i64::from(r.u32()?);
        let mut f = [0.0; 6];
        for x in &mut f {
            *x = f64::from_bits(r.u64()?);
        }
        let [sum, min, max, first_v, last_v, correction] = f;
        out.push((
            k,
            Summary {
                count,
                sum,
                sum_c: 0.0,
                min,
                max,
                first: (first_t, first_v),
                last: (last_t, last_v),
                correction,
            },
        ));
    }
    Some(out)
}

/// What one selector reads over a query's window from a store that keeps rollups: each
/// matching series' summary of any range inside that window.
pub trait Summaries {
    /// The series with a sample in `[lo, hi]` (ms, both inclusive) and the summary of those
    /// samples, in one order for every call.
    fn summarize(&mut self, lo: i64, hi: i64) -> Vec<(Labels, Summary)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_merge_as_the_samples_fold() {
        // A counter that resets inside a bucket and across a bucket edge.
        let samples: Vec<(i64, f64)> = (1..200)
            .map(|i| (i * 15_000, ((i % 37) * 3 + i % 11) as f64))
            .collect();
        let whole = Summary::of(samples.iter().copied()).unwrap();
        let mut merged: Option<Summary> = None;
        for (_, s) in buckets(samples.iter().copied()) {
            fold(&mut merged, Some(s));
        }
        let merged = merged.unwrap();
        assert_eq!(merged.count, whole.count);
        assert_eq!(merged.correction, whole.correction);
        assert_eq!((merged.min, merged.max), (whole.min, whole.max));
        assert_eq!((merged.first, merged.last), (whole.first, whole.last));
        assert!((merged.total() - whole.total()).abs() < 1e-9);
        // And through bytes.
        let b = buckets(samples.iter().copied());
        assert_eq!(decode(&encode(&b)).unwrap().len(), b.len());
        let mut bytes = encode(&b);
        bytes[10] ^= 1;
        assert!(decode(&bytes).is_none());
    }

    #[test]
    fn nan_is_the_min_only_when_every_value_is() {
        let s = Summary::of([(1, f64::NAN), (2, 3.0), (3, f64::NAN), (4, 1.0)]).unwrap();
        assert_eq!((s.min, s.max), (1.0, 3.0));
        let mut a = Summary::of([(1, f64::NAN)]).unwrap();
        a.merge(&Summary::of([(2, 5.0)]).unwrap());
        assert_eq!(a.min, 5.0);
        assert!(Summary::of([(1, super::super::stale())]).is_none());
    }
}
