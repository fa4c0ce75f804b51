//! Where samples are kept, as the query engine reads them: series selected by label matchers,
//! each with its samples in a time range. [`Queryable`] is what the PromQL engine needs;
//! [`Appender`] what scraping writes. The embedded store ([`tsdb::Tsdb`]: a head of
//! compressed chunks, a write-ahead log, blocks on disk) implements both.

mod block;
mod bytes;
pub mod chunk;
pub mod rollup;
pub mod tsdb;
mod wal;

use crate::labels::{Labels, Matcher};

/// One sample of one series: labels, timestamp (Unix ms), value.
pub type Sample = (Labels, i64, f64);

/// Sees every batch of samples a store accepted (remote write ships them on).
pub type Tap = std::sync::Arc<dyn Fn(&[Sample]) + Send + Sync>;

/// A series and its samples in the asked range, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its labels, `__name__` included.
    pub labels: Labels,
    /// `(timestamp ms, value)`, strictly increasing in time.
    pub samples: Vec<(i64, f64)>,
}

/// Reads series for queries.
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers` with at least one sample in `[start, end]`
    /// (milliseconds, both inclusive), with those samples.
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series>;

    /// The label sets of the series matching all `matchers` (all series when empty) with a
    /// sample in `[start, end]`.
    fn series(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        self.select(matchers, start, end)
            .into_iter()
            .map(|s| s.labels)
            .collect()
    }

    /// Summaries of the series matching `matchers` over ranges inside `[start, end]`, when
    /// the store keeps [rollups](rollup) (a store without answers None: fold raw samples).
    fn summaries(
        &self,
        _matchers: &[Matcher],
        _start: i64,
        _end: i64,
    ) -> Option<Box<dyn rollup::Summaries + '_>> {
        None
    }
}

/// Writes samples.
pub trait Appender: Send + Sync {
    /// Appends one sample of a series; a sample not newer than the series' last one is
    /// dropped (and counted as out of order).
    fn append(&self, labels: &Labels, t: i64, v: f64) -> bool;
}

/// Prometheus' stale marker: a NaN with this bit pattern says a series ended (its target went
/// away, or stopped exposing it). Queries treat it as no sample.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Whether a value is the stale marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// The stale marker as a value.
pub fn stale() -> f64 {
    f64::from_bits(STALE_NAN)
}

/// A simple store in memory, for tests of the engine: every sample in a vector.
#[derive(Default)]
pub struct MemoryStore {
    series: std::sync::RwLock<Vec<Series>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Appender for MemoryStore {
    fn append(&self, labels: &Labels, t: i64, v: f64) -> bool {
        let mut all = self.series.write().unwrap_or_else(|e| e.into_inner());
        match all.iter_mut().find(|s| &s.labels == labels) {
            Some(s) => {
                if s.samples.last().is_some_and(|(last, _)| *last >= t) {
                    return false;
                }
                s.samples.push((t, v));
            }
            None => all.push(Series {
                labels: labels.clone(),
                samples: vec![(t, v)],
            }),
        }
        true
    }
}

impl Queryable for MemoryStore {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let all = self.series.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|s| crate::labels::matches_all(matchers, &s.labels))
            .filter_map(|s| {
                let samples: Vec<(i64, f64)> = s
                    .samples
                    .iter()
                    .filter(|(t, _)| *t >= start && *t <= end)
                    .copied()
                    .collect();
                (!samples.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    samples,
                })
            })
            .collect()
    }
}
