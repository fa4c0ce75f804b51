//! The embedded time-series store: a head in memory with the recent samples of every active
//! series in compressed chunks (and an inverted index of their labels), a write-ahead log
//! that makes every append survive a crash, and immutable blocks on disk for older samples,
//! deleted at the end of their retention.
//!
//! Memory is the head: the series seen in the last block range or so (about 1.5 × `block`),
//! each with its chunks of that time. When the head spans more than 1.5 blocks, its oldest
//! block range is written out as a block, dropped from memory, and the log is checkpointed to
//! what the head still holds. A series with nothing left in the head is forgotten.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::block::{self, Block, ChunkRef, Index};
use super::chunk::Chunk;
use super::rollup::{self, BUCKET_MS, Summaries, Summary};
use super::wal::{Record, Wal};
use super::{Appender, Queryable, Sample, Series, Tap};
use crate::labels::{Labels, MatchKind, Matcher, matches_all};

/// Samples per head chunk before it is sealed and a new one starts (as Prometheus).
const CHUNK_SAMPLES: usize = 120;
/// Block indexes kept in memory for queries: a day of two-hour blocks (their label sets are
/// shared with the head's, so an index costs little more than its chunk references).
const CACHED_INDEXES: usize = 16;

/// Settings.
#[derive(Clone, Copy, Debug)]
pub struct TsdbOptions {
    /// How long samples are kept.
    pub retention: Duration,
    /// The time range of a block (and so about two thirds of what the head holds).
    pub block: Duration,
}

impl Default for TsdbOptions {
    fn default() -> Self {
        TsdbOptions {
            retention: Duration::from_secs(30 * 86_400),
            block: Duration::from_secs(2 * 3600),
        }
    }
}

struct HeadSeries {
    labels: Labels,
    sealed: Vec<Chunk>,
    open: Chunk,
    last_t: i64,
}

impl HeadSeries {
    fn samples_in(&self, start: i64, end: i64, out: &mut Vec<(i64, f64)>) {
        for c in self.sealed.iter().chain(std::iter::once(&self.open)) {
            let (Some(a), Some(b)) = (c.min_time(), c.max_time()) else {
                continue;
            };
            if b < start || a > end {
                continue;
            }
            out.extend(c.iter().filter(|(t, _)| *t >= start && *t <= end));
        }
    }

    fn min_time(&self) -> Option<i64> {
        self.sealed
            .first()
            .and_then(Chunk::min_time)
            .or_else(|| self.open.min_time())
    }
}

#[derive(Default)]
struct Head {
    series: Vec<HeadSeries>,
    ids: HashMap<Labels, u32>,
    /// label name → value → series ids (sorted).
    postings: HashMap<String, HashMap<String, Vec<u32>>>,
    min_time: Option<i64>,
    max_time: Option<i64>,
}

impl Head {
    fn add_series(&mut self, labels: Labels) -> u32 {
        let id = u32::try_from(self.series.len()).unwrap_or(u32::MAX);
        for (k, v) in labels.iter() {
            self.postings
                .entry(k.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .push(id);
        }
        self.ids.insert(labels.clone(), id);
        self.series.push(HeadSeries {
            labels,
            sealed: Vec::new(),
            open: Chunk::new(),
            last_t: i64::MIN,
        });
        id
    }

    fn append(&mut self, id: u32, t: i64, v: f64) -> bool {
        let Some(s) = self.series.get_mut(id as usize) else {
            return false;
        };
        if t <= s.last_t {
            return false;
        }
        if s.open.len() >= CHUNK_SAMPLES {
            let full = std::mem::take(&mut s.open);
            s.sealed.push(full);
        }
        if !s.open.append(t, v) {
            return false;
        }
        s.last_t = t;
        self.min_time = Some(self.min_time.map_or(t, |m| m.min(t)));
        self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
        true
    }

    /// Candidate series for matchers: the intersection of the postings of the equality
    /// matchers that need a value; every series when there are none.
    fn candidates(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut lists: Vec<&Vec<u32>> = Vec::new();
        for m in matchers {
            if let MatchKind::Equal = m.kind
                && !m.value.is_empty()
            {
                match self
                    .postings
                    .get(&m.name)
                    .and_then(|vals| vals.get(&m.value))
                {
                    Some(list) => lists.push(list),
                    None => return Vec::new(),
                }
            }
        }
        lists.sort_by_key(|l| l.len());
        match lists.split_first() {
            None => (0..u32::try_from(self.series.len()).unwrap_or(u32::MAX)).collect(),
            Some((first, rest)) => first
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|l| l.binary_search(id).is_ok()))
                .collect(),
        }
    }
}

/// What the store holds, for `/metrics` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TsdbStats {
    /// Series in the head.
    pub head_series: usize,
    /// Samples in the head.
    pub head_samples: usize,
    /// Bytes of compressed chunks in the head.
    pub head_chunk_bytes: usize,
    /// Blocks on disk.
    pub blocks: usize,
    /// Bytes on disk (blocks and log).
    pub disk_bytes: u64,
    /// Samples refused for being out of order.
    pub out_of_order: u64,
}

/// See the module docs.
pub struct Tsdb {
    dir: PathBuf,
    options: TsdbOptions,
    head: RwLock<Head>,
    wal: Mutex<Wal>,
    blocks: RwLock<Vec<Block>>,
    indexes: Mutex<VecDeque<(PathBuf, Arc<Index>)>>,
    out_of_order: std::sync::atomic::AtomicU64,
    tap: RwLock<Option<Tap>>,
    /// The retention in force (it changes with the configuration).
    retention_ms: std::sync::atomic::AtomicI64,
}

fn io_err(e: std::sync::PoisonError<impl Sized>) -> std::io::Error {
    std::io::Error::other(format!("a lock was poisoned: {e}"))
}

impl Tsdb {
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: &Path, options: TsdbOptions) -> std::io::Result<Arc<Tsdb>> {
        std::fs::create_dir_all(dir)?;
        let blocks = block::list(&dir.join("blocks"))?;
        let (wal, records) = Wal::open(&dir.join("wal"))?;
        // Samples a block already holds are not replayed (a crash between writing a block
        // and checkpointing the log).
        let covered = blocks.last().map_or(i64::MIN, |b| b.meta.max_time);
        let mut head = Head::default();
        let mut ids: HashMap<u32, u32> = HashMap::new();
        for r in records {
            match r {
                Record::Series { id, labels } => {
                    let own = match head.ids.get(&labels) {
                        Some(own) => *own,
                        None => head.add_series(labels),
                    };
                    ids.insert(id, own);
                }
                Record::Samples(samples) => {
                    for (id, t, v) in samples {
                        if t <= covered {
                            continue;
                        }
                        if let Some(own) = ids.get(&id) {
                            head.append(*own, t, v);
                        }
                    }
                }
            }
        }
        let db = Arc::new(Tsdb {
            dir: dir.to_path_buf(),
            options,
            head: RwLock::new(head),
            wal: Mutex::new(wal),
            blocks: RwLock::new(blocks),
            indexes: Mutex::new(VecDeque::new()),
            out_of_order: std::sync::atomic::AtomicU64::new(0),
            tap: RwLock::new(None),
            retention_ms: std::sync::atomic::AtomicI64::new(
                i64::try_from(options.retention.as_millis()).unwrap_or(i64::MAX),
            ),
        });
        // The replayed head becomes the log's new start (ids were renumbered).
        db.checkpoint()?;
        Ok(db)
    }

    /// Keeps samples this long from now on (blocks older go at the next [`Tsdb::maintain`]).
    pub fn set_retention(&self, retention: Duration) {
        self.retention_ms.store(
            i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Shows every batch stored from now on to `tap` (after it is in the log), or no longer.
    pub fn set_tap(&self, tap: Option<Tap>) {
        if let Ok(mut t) = self.tap.write() {
            *t = tap;
        }
    }

    /// Appends a batch of samples (a scrape), writing it to the log first. Returns how many
    /// were stored (out-of-order ones are refused).
    pub fn append_batch(&self, samples: &[Sample]) -> std::io::Result<usize> {
        let mut head = self.head.write().map_err(io_err)?;
        let mut wal = self.wal.lock().map_err(io_err)?;
        let mut records: Vec<(u32, i64, f64)> = Vec::with_capacity(samples.len());
        let mut stored = 0;
        let mut refused: Vec<usize> = Vec::new();
        for (i, (labels, t, v)) in samples.iter().enumerate() {
            let id = match head.ids.get(labels) {
                Some(id) => *id,
                None => {
                    let id = head.add_series(labels.clone());
                    wal.append(&Record::Series {
                        id,
                        labels: labels.clone(),
                    })?;
                    id
                }
            };
            if head.append(id, *t, *v) {
                records.push((id, *t, *v));
                stored += 1;
            } else {
                refused.push(i);
                self.out_of_order
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if !records.is_empty() {
            wal.append(&Record::Samples(records))?;
        }
        drop(wal);
        drop(head);
        if stored > 0
            && let Some(tap) = self.tap.read().ok().and_then(|t| t.clone())
        {
            if refused.is_empty() {
                tap(samples);
            } else {
                // Only what was accepted: a receiver would refuse the rest too.
                let accepted: Vec<Sample> = samples
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| refused.binary_search(i).is_err())
                    .map(|(_, s)| s.clone())
                    .collect();
                tap(&accepted);
            }
        }
        Ok(stored)
    }

    /// Syncs the log: everything appended so far survives a crash.
    pub fn sync(&self) -> std::io::Result<()> {
        self.wal.lock().map_err(io_err)?.sync()
    }

    /// Writes the head's oldest block range out when the head spans more than 1.5 blocks,
    /// and deletes blocks past the retention. Call it every minute or so.
    pub fn maintain(&self) -> std::io::Result<()> {
        let block_ms = i64::try_from(self.options.block.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        loop {
            let (min, max) = {
                let head = self.head.read().map_err(io_err)?;
                match (head.min_time, head.max_time) {
                    (Some(a), Some(b)) => (a, b),
                    _ => break,
                }
            };
            if max - min < block_ms + block_ms / 2 {
                break;
            }
            let start = min.div_euclid(block_ms) * block_ms;
            self.cut(start + block_ms)?;
        }
        self.expire()
    }

    /// Moves every head sample before `until` into a block.
    fn cut(&self, until: i64) -> std::io::Result<()> {
        let mut head = self.head.write().map_err(io_err)?;
        let mut out: Vec<(Labels, Vec<Chunk>)> = Vec::new();
        let mut kept: Vec<HeadSeries> = Vec::new();
        for s in std::mem::take(&mut head.series) {
            let mut old = Vec::new();
            let mut new = Vec::new();
            for c in s.sealed.iter().chain(std::iter::once(&s.open)) {
                match (c.min_time(), c.max_time()) {
                    (Some(_), Some(b)) if b < until => old.push(c.clone()),
                    (Some(a), Some(_)) if a >= until => new.push(c.clone()),
                    (Some(_), Some(_)) => {
                        let (mut before, mut after) = (Chunk::new(), Chunk::new());
                        for (t, v) in c.iter() {
                            if t < until {
                                before.append(t, v);
                            } else {
                                after.append(t, v);
                            }
                        }
                        old.push(before);
                        new.push(after);
                    }
                    _ => {}
                }
            }
            if !old.is_empty() {
                out.push((s.labels.clone(), old));
            }
            if !new.is_empty() {
                let open = new.pop().unwrap_or_default();
                kept.push(HeadSeries {
                    labels: s.labels,
                    sealed: new,
                    open,
                    last_t: s.last_t,
                });
            }
        }
        // The block first: once it is on disk, the head may let go of its samples.
        if let Some(b) = block::write(&self.dir.join("blocks"), &out)? {
            self.blocks.write().map_err(io_err)?.push(b);
        }
        let mut fresh = Head::default();
        for s in kept {
            let id = fresh.add_series(s.labels.clone());
            let min = s.min_time();
            let slot = &mut fresh.series[id as usize];
            slot.sealed = s.sealed;
            slot.open = s.open;
            slot.last_t = s.last_t;
            if let Some(m) = min {
                fresh.min_time = Some(fresh.min_time.map_or(m, |x| x.min(m)));
            }
            fresh.max_time = Some(fresh.max_time.map_or(s.last_t, |x| x.max(s.last_t)));
        }
        *head = fresh;
        drop(head);
        self.checkpoint()
    }

    /// Rewrites the log as what the head holds now.
    fn checkpoint(&self) -> std::io::Result<()> {
        let head = self.head.read().map_err(io_err)?;
        let mut records = Vec::new();
        for (id, s) in head.series.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            records.push(Record::Series {
                id,
                labels: s.labels.clone(),
            });
            let mut samples = Vec::new();
            s.samples_in(i64::MIN, i64::MAX, &mut samples);
            if !samples.is_empty() {
                records.push(Record::Samples(
                    samples.into_iter().map(|(t, v)| (id, t, v)).collect(),
                ));
            }
        }
        let mut wal = self.wal.lock().map_err(io_err)?;
        wal.checkpoint(&records)
    }

    /// Deletes blocks whose samples are all older than the retention (counted back from the
    /// newest sample).
    fn expire(&self) -> std::io::Result<()> {
        let newest = {
            let head = self.head.read().map_err(io_err)?;
            head.max_time
        };
        let Some(newest) = newest.or_else(|| {
            self.blocks
                .read()
                .ok()
                .and_then(|b| b.last().map(|b| b.meta.max_time))
        }) else {
            return Ok(());
        };
        let horizon =
            newest.saturating_sub(self.retention_ms.load(std::sync::atomic::Ordering::Relaxed));
        let mut blocks = self.blocks.write().map_err(io_err)?;
        let (gone, kept): (Vec<Block>, Vec<Block>) =
            blocks.drain(..).partition(|b| b.meta.max_time < horizon);
        *blocks = kept;
        drop(blocks);
        for b in gone {
            std::fs::remove_dir_all(&b.dir)?;
            if let Ok(mut cache) = self.indexes.lock() {
                cache.retain(|(p, _)| *p != b.dir);
            }
        }
        Ok(())
    }

    fn index(&self, b: &Block) -> std::io::Result<Arc<Index>> {
        if let Ok(cache) = self.indexes.lock()
            && let Some((_, i)) = cache.iter().find(|(p, _)| *p == b.dir)
        {
            return Ok(i.clone());
        }
        let mut index = b.index()?;
        if let Ok(head) = self.head.read() {
            for (labels, _) in &mut index.series {
                if let Some((shared, _)) = head.ids.get_key_value(labels) {
                    *labels = shared.clone();
                }
            }
        }
        let index = Arc::new(index);
        if let Ok(mut cache) = self.indexes.lock() {
            cache.push_back((b.dir.clone(), index.clone()));
            while cache.len() > CACHED_INDEXES {
                cache.pop_front();
            }
        }
        Ok(index)
    }

    /// What it holds.
    pub fn stats(&self) -> TsdbStats {
        let (head_series, head_samples, head_chunk_bytes) = self
            .head
            .read()
            .map(|h| {
                let samples: usize = h
                    .series
                    .iter()
                    .map(|s| s.sealed.iter().map(Chunk::len).sum::<usize>() + s.open.len())
                    .sum();
                let bytes: usize = h
                    .series
                    .iter()
                    .map(|s| {
                        s.sealed.iter().map(Chunk::encoded_len).sum::<usize>()
                            + s.open.encoded_len()
                    })
                    .sum();
                (h.series.len(), samples, bytes)
            })
            .unwrap_or_default();
        let blocks = self.blocks.read().map(|b| b.clone()).unwrap_or_default();
        let wal = self.wal.lock().map(|w| w.size()).unwrap_or(0);
        TsdbStats {
            head_series,
            head_samples,
            head_chunk_bytes,
            blocks: blocks.len(),
            disk_bytes: blocks.iter().map(Block::size).sum::<u64>() + wal,
            out_of_order: self.out_of_order.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Label names of series with samples in `[start, end]` matching `matchers`.
    pub fn label_names(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<String> {
        let mut names = BTreeSet::new();
        for l in self.series(matchers, start, end) {
            for (k, _) in l.iter() {
                names.insert(k.to_string());
            }
        }
        names.into_iter().collect()
    }

    /// Values of a label over the series with samples in `[start, end]` matching `matchers`.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Vec<String> {
        let mut values = BTreeSet::new();
        for l in self.series(matchers, start, end) {
            if let Some(v) = l.get(name) {
                values.insert(v.to_string());
            }
        }
        values.into_iter().collect()
    }
}

impl Appender for Tsdb {
    fn append(&self, labels: &Labels, t: i64, v: f64) -> bool {
        self.append_batch(&[(labels.clone(), t, v)])
            .is_ok_and(|n| n == 1)
    }
}

impl Queryable for Tsdb {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Series> {
        let mut found: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let blocks: Vec<Block> = self
            .blocks
            .read()
            .map(|b| {
                b.iter()
                    .filter(|b| b.meta.max_time >= start && b.meta.min_time <= end)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for b in &blocks {
            let (Ok(index), Ok(file)) = (self.index(b), b.chunks_file()) else {
                tracing_warn(&b.dir);
                continue;
            };
            let mut edge = Vec::new();
            for (labels, chunks) in &index.series {
                if !matches_all(matchers, labels) {
                    continue;
                }
                let out = found.entry(labels.clone()).or_default();
                for r in chunks
                    .iter()
                    .filter(|r| r.max_time >= start && r.min_time <= end)
                {
                    if r.min_time >= start && r.max_time <= end {
                        let _ = b.samples(&file, r, out);
                    } else {
                        // A chunk at the range's edge: only what is inside.
                        edge.clear();
                        if b.samples(&file, r, &mut edge).is_ok() {
                            out.extend(edge.iter().filter(|(t, _)| *t >= start && *t <= end));
                        }
                    }
                }
            }
        }
        if let Ok(head) = self.head.read() {
            for id in head.candidates(matchers) {
                let s = &head.series[id as usize];
                if !matches_all(matchers, &s.labels) {
                    continue;
                }
                let mut samples = Vec::new();
                s.samples_in(start, end, &mut samples);
                if !samples.is_empty() {
                    found.entry(s.labels.clone()).or_default().extend(samples);
                }
            }
        }
        let mut out: Vec<Series> = found
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|(t, _)| *t);
                samples.dedup_by_key(|(t, _)| *t);
                Series { labels, samples }
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    fn summaries(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Option<Box<dyn Summaries + '_>> {
        Some(Box::new(self.summaries_view(matchers, start, end)))
    }
}

impl Tsdb {
    /// The summaries reader behind [`Queryable::summaries`].
    fn summaries_view(&self, matchers: &[Matcher], start: i64, end: i64) -> TsdbSummaries {
        let mut found: HashMap<Labels, ViewSeries> = HashMap::new();
        // The head's samples and the blocks before it, at one instant (a cut moves samples
        // from the head into a block under the head's lock).
        let (split, blocks) = {
            let Ok(head) = self.head.read() else {
                return TsdbSummaries::default();
            };
            for id in head.candidates(matchers) {
                let s = &head.series[id as usize];
                if !matches_all(matchers, &s.labels) {
                    continue;
                }
                let mut samples = Vec::new();
                s.samples_in(start, end, &mut samples);
                if !samples.is_empty() {
                    found.entry(s.labels.clone()).or_default().head = samples;
                }
            }
            let split = head.min_time.unwrap_or(i64::MAX);
            let blocks: Vec<Block> = self
                .blocks
                .read()
                .map(|b| {
                    b.iter()
                        .filter(|b| {
                            b.meta.max_time >= start
                                && b.meta.min_time <= end
                                && b.meta.min_time < split
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (split, blocks)
        };
        let mut files = Vec::new();
        for b in blocks {
            let (Ok(index), Ok(file)) = (self.index(&b), b.chunks_file()) else {
                tracing_warn(&b.dir);
                continue;
            };
            let rollups = b.rollups_file();
            let at = files.len();
            for (i, (labels, chunks)) in index.series.iter().enumerate() {
                if !matches_all(matchers, labels) {
                    continue;
                }
                let wanted: Vec<&ChunkRef> = chunks
                    .iter()
                    .filter(|r| r.max_time >= start && r.min_time <= end)
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let buckets = rollups
                    .as_ref()
                    .and_then(|f| b.rollups(f, &index, i))
                    .unwrap_or_else(|| {
                        // A block without rollups: fold its samples.
                        let mut samples = Vec::new();
                        for r in &wanted {
                            let _ = b.samples(&file, r, &mut samples);
                        }
                        rollup::buckets(samples)
                    });
                let s = found.entry(labels.clone()).or_default();
                rollup::extend(
                    &mut s.buckets,
                    buckets
                        .into_iter()
                        .filter(|(k, _)| (k + 1) * BUCKET_MS >= start && k * BUCKET_MS < end)
                        .collect(),
                );
                s.raw.extend(wanted.into_iter().map(|r| (at, r.clone())));
            }
            files.push((b, file));
        }
        let mut series: Vec<(Labels, ViewSeries)> = found.into_iter().collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        TsdbSummaries {
            split,
            blocks: files,
            series,
        }
    }
}

/// One series in a [`TsdbSummaries`].
#[derive(Default)]
struct ViewSeries {
    /// Its rollups from the blocks, by bucket.
    buckets: Vec<(i64, Summary)>,
    /// A segment tree over `buckets` (leaves from `buckets.len()` on; node `i` merges
    /// `2i` and `2i + 1`), so a range of buckets is about 2·log₂(n) merges, not n.
    tree: Vec<Summary>,
    /// Its chunks in the blocks (block, chunk), oldest first, for a range's ragged edges.
    raw: Vec<(usize, ChunkRef)>,
    /// The last chunks decoded (steps move forward, so their edges reuse them).
    decoded: VecDeque<(usize, Vec<(i64, f64)>)>,
    /// Its samples in the head.
    head: Vec<(i64, f64)>,
}

/// Summaries over the blocks' rollups (whole buckets), their raw samples at a range's edges,
/// and the head's samples.
#[derive(Default)]
struct TsdbSummaries {
    /// The head's first sample time: every block sample is older.
    split: i64,
    blocks: Vec<(Block, std::fs::File)>,
    series: Vec<(Labels, ViewSeries)>,
}

impl ViewSeries {
    /// The merged summary of `buckets[from..to]`.
    fn buckets_between(&mut self, from: usize, to: usize) -> Option<Summary> {
        let n = self.buckets.len();
        if self.tree.len() != 2 * n {
            let mut tree = vec![Summary::one(0, 0.0); 2 * n];
            for (i, (_, b)) in self.buckets.iter().enumerate() {
                tree[n + i] = *b;
            }
            for i in (1..n).rev() {
                let mut merged = tree[2 * i];
                merged.merge(&tree[2 * i + 1]);
                tree[i] = merged;
            }
            self.tree = tree;
        }
        let (mut left, mut right): (Option<Summary>, Option<Summary>) = (None, None);
        let (mut l, mut r) = (from + n, to + n);
        while l < r {
            if l & 1 == 1 {
                rollup::fold(&mut left, Some(self.tree[l]));
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                let mut node = Some(self.tree[r]);
                rollup::fold(&mut node, right);
                right = node;
            }
            l >>= 1;
            r >>= 1;
        }
        rollup::fold(&mut left, right);
        left
    }

    /// The summary of its block samples in `[lo, hi]`, read from the chunks.
    fn raw(&mut self, blocks: &[(Block, std::fs::File)], lo: i64, hi: i64) -> Option<Summary> {
        let mut acc = None;
        if lo > hi {
            return acc;
        }
        for i in 0..self.raw.len() {
            let (b, r) = &self.raw[i];
            if r.max_time < lo || r.min_time > hi {
                continue;
            }
            if !self.decoded.iter().any(|(j, _)| *j == i) {
                let (block, file) = &blocks[*b];
                let mut samples = Vec::new();
                if block.samples(file, r, &mut samples).is_err() {
                    tracing_warn(&block.dir);
                }
                if self.decoded.len() >= 4 {
                    self.decoded.pop_front();
                }
                self.decoded.push_back((i, samples));
            }
            let Some((_, samples)) = self.decoded.iter().find(|(j, _)| *j == i) else {
                continue;
            };
            let from = samples.partition_point(|(t, _)| *t < lo);
            let to = samples.partition_point(|(t, _)| *t <= hi);
            rollup::fold(&mut acc, Summary::of(samples[from..to].iter().copied()));
        }
        acc
    }
}

impl Summaries for TsdbSummaries {
    fn summarize(&mut self, lo: i64, hi: i64) -> Vec<(Labels, Summary)> {
        let mut out = Vec::new();
        let in_blocks = hi.min(self.split.saturating_sub(1));
        for (labels, s) in &mut self.series {
            let mut acc: Option<Summary> = None;
            if lo <= in_blocks {
                // Whole buckets k, (k·W, (k+1)·W] inside [lo, in_blocks]; raw at the edges.
                let first = -(-(lo - 1)).div_euclid(BUCKET_MS);
                let last = in_blocks.div_euclid(BUCKET_MS) - 1;
                if first <= last {
                    rollup::fold(&mut acc, s.raw(&self.blocks, lo, first * BUCKET_MS));
                    let from = s.buckets.partition_point(|(k, _)| *k < first);
                    let to = s.buckets.partition_point(|(k, _)| *k <= last);
                    if from < to {
                        let whole = s.buckets_between(from, to);
                        rollup::fold(&mut acc, whole);
                    }
                    rollup::fold(
                        &mut acc,
                        s.raw(&self.blocks, (last + 1) * BUCKET_MS + 1, in_blocks),
                    );
                } else {
                    rollup::fold(&mut acc, s.raw(&self.blocks, lo, in_blocks));
                }
            }
            if hi >= self.split {
                let from = s.head.partition_point(|(t, _)| *t < lo.max(self.split));
                let to = s.head.partition_point(|(t, _)| *t <= hi);
                rollup::fold(&mut acc, Summary::of(s.head[from..to].iter().copied()));
            }
            if let Some(a) = acc {
                out.push((labels.clone(), a));
            }
        }
        out
    }
}

fn tracing_warn(dir: &Path) {
    eprintln!("slipway-metrics: cannot read block {}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(i: usize) -> Labels {
        Labels::from_pairs([
            ("__name__".to_string(), "m".to_string()),
            ("i".to_string(), i.to_string()),
        ])
    }

    #[test]
    fn samples_survive_a_reopen_blocks_are_cut_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let options = TsdbOptions {
            retention: Duration::from_secs(4 * 3600),
            block: Duration::from_secs(3600),
        };
        let db = Tsdb::open(dir.path(), options).unwrap();
        // Three hours of 15 s samples for 5 series.
        for k in 0..720 {
            let t = k * 15_000;
            let batch: Vec<(Labels, i64, f64)> = (0..5).map(|i| (labels(i), t, k as f64)).collect();
            db.append_batch(&batch).unwrap();
        }
        db.sync().unwrap();
        db.maintain().unwrap();
        let stats = db.stats();
        assert!(stats.blocks >= 1, "{stats:?}");
        assert_eq!(stats.head_series, 5);
        // Everything still answers, across blocks and the head.
        let all = db.select(&[Matcher::equal("i", "3")], 0, i64::MAX);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].samples.len(), 720);
        assert!(all[0].samples.windows(2).all(|w| w[0].0 < w[1].0));
        drop(db);
        // Reopened: the head comes back from the log, the blocks from disk.
        let db = Tsdb::open(dir.path(), options).unwrap();
        let all = db.select(&[Matcher::equal("i", "3")], 0, i64::MAX);
        assert_eq!(all[0].samples.len(), 720);
        // Ten hours later, the oldest hours are past the retention.
        for k in 720..2400 {
            db.append_batch(&[(labels(0), k * 15_000, k as f64)])
                .unwrap();
        }
        db.maintain().unwrap();
        let left = db.select(&[Matcher::equal("i", "0")], 0, i64::MAX);
        let first = left[0].samples[0].0;
        assert!(first >= 2400 * 15_000 - 5 * 3600 * 1000, "{first}");
        assert!(
            db.select(&[Matcher::equal("i", "3")], 0, i64::MAX)
                .is_empty()
        );
    }

    /// Long ranges read from rollups answer as the raw samples do: over blocks and the head,
    /// at times on and off the buckets' edges, with counter resets, NaNs, stale markers and a
    /// series that stops.
    #[test]
    fn long_ranges_from_rollups_answer_as_the_samples() {
        use crate::promql::{Engine, Value};
        let dir = tempfile::tempdir().unwrap();
        let options = TsdbOptions {
            retention: Duration::from_secs(30 * 86_400),
            block: Duration::from_secs(3600),
        };
        let db = Tsdb::open(dir.path(), options).unwrap();
        let raw = super::super::MemoryStore::new();
        let mut seed = 7u64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f64
        };
        let mut counter = [0.0f64; 3];
        // Six hours of 15 s samples, starting off a bucket's edge.
        for k in 0..1440i64 {
            let t = 7_000 + k * 15_000;
            let mut batch = Vec::new();
            for (i, c) in counter.iter_mut().enumerate() {
                *c = if k % 500 == 499 && i == 1 {
                    3.0
                } else {
                    *c + noise()
                };
                batch.push((labels(i), t, *c));
            }
            let gauge = match k % 97 {
                13 => f64::NAN,
                50 if k > 1000 => super::super::stale(),
                _ => noise() - 500.0,
            };
            batch.push((labels(9), t, gauge));
            if k < 800 {
                batch.push((labels(10), t, noise()));
            }
            for (l, t, v) in &batch {
                raw.append(l, *t, *v);
            }
            db.append_batch(&batch).unwrap();
            if k % 240 == 0 {
                db.maintain().unwrap();
            }
        }
        db.maintain().unwrap();
        assert!(db.stats().blocks >= 3, "{:?}", db.stats());
        let e = Engine::default();
        let close = |a: f64, b: f64| {
            (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        };
        let same = |q: &str, ours: Value, theirs: Value| {
            let rows = |v: Value| -> Vec<(String, Vec<(i64, f64)>)> {
                match v {
                    Value::Vector(v) => v
                        .into_iter()
                        .map(|(l, x)| (l.to_string(), vec![(0, x)]))
                        .collect(),
                    Value::Matrix(m) => m
                        .into_iter()
                        .map(|s| (s.labels.to_string(), s.samples))
                        .collect(),
                    other => panic!("{other:?}"),
                }
            };
            let (mut a, mut b) = (rows(ours), rows(theirs));
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(
                a.iter().map(|r| &r.0).collect::<Vec<_>>(),
                b.iter().map(|r| &r.0).collect::<Vec<_>>(),
                "{q}"
            );
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.1.len(), y.1.len(), "{q} {}", x.0);
                for (p, q2) in x.1.iter().zip(&y.1) {
                    assert!(
                        p.0 == q2.0 && close(p.1, q2.1),
                        "{q} {}: {p:?} vs {q2:?}",
                        x.0
                    );
                }
            }
        };
        let queries = [
            "sum_over_time(m[2h])",
            "count_over_time(m[1h])",
            "avg_over_time(m[3h])",
            "min_over_time(m[90m])",
            "max_over_time(m[4h])",
            "last_over_time(m[2h])",
            "present_over_time(m[1h])",
            "rate(m{i=~\"[012]\"}[3h])",
            "increase(m{i=\"1\"}[5h])",
            "delta(m{i=\"9\"}[2h])",
            "sum(rate(m{i=~\"[012]\"}[1h] offset 20m))",
        ];
        let end = 7_000 + 1439 * 15_000;
        for q in queries {
            for t in [
                end,
                end - 1,
                3 * 3_600_000,
                3 * 3_600_000 + 1,
                4 * 3_600_000 + 12_345,
                5_400_000,
            ] {
                same(
                    q,
                    e.instant(&*db, q, t).unwrap(),
                    e.instant(&raw, q, t).unwrap(),
                );
            }
            for (start, step) in [(3_600_000, 300_000), (3_700_001, 61_000), (0, 900_000)] {
                same(
                    q,
                    Value::Matrix(e.range(&*db, q, start, end, step).unwrap()),
                    Value::Matrix(e.range(&raw, q, start, end, step).unwrap()),
                );
            }
        }
        // And they were read from rollups.
        let view = db.summaries_view(&[Matcher::equal("i", "1")], 0, end);
        assert!(!view.series[0].1.buckets.is_empty());
    }

    #[test]
    fn out_of_order_samples_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), TsdbOptions::default()).unwrap();
        assert_eq!(db.append_batch(&[(labels(1), 10, 1.0)]).unwrap(), 1);
        assert_eq!(db.append_batch(&[(labels(1), 10, 2.0)]).unwrap(), 0);
        assert_eq!(db.stats().out_of_order, 1);
    }
}
