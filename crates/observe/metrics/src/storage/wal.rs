//! The write-ahead log of the embedded store: every series definition and every batch of
//! samples is a record appended to a segment file before it counts as stored, so a restart
//! (or a `kill -9`) replays what the head held. Records are length-prefixed and checksummed;
//! a torn record at the end (the crash happened mid-write) ends the replay, and what came
//! before it is kept.
//!
//! Writes are buffered and synced by [`Wal::sync`] (the store calls it every second): a crash
//! loses at most the samples of the last second.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::bytes::Reader;
use crate::labels::Labels;

const SERIES: u8 = 1;
const SAMPLES: u8 = 2;

/// What a record holds.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    /// A series and the id its samples use in this log.
    Series { id: u32, labels: Labels },
    /// Samples: `(series id, t, value)`.
    Samples(Vec<(u32, i64, f64)>),
}

/// An open log: the directory of segments and the one being written.
pub(crate) struct Wal {
    dir: PathBuf,
    segment: u64,
    out: BufWriter<File>,
    dirty: bool,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}"))
}

/// The segments in a directory, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Opens the log in `dir` (creating it), returning the records of every segment, and
    /// starts a new segment for what comes next.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Wal, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let existing = segments(dir)?;
        let mut records = Vec::new();
        for n in &existing {
            read_segment(&segment_path(dir, *n), &mut records)?;
        }
        let next = existing.last().map_or(1, |n| n + 1);
        let out = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(dir, next))?,
        );
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                segment: next,
                out,
                dirty: false,
            },
            records,
        ))
    }

    /// Appends a record (buffered until [`sync`](Self::sync)).
    pub(crate) fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut body = Vec::new();
        match record {
            Record::Series { id, labels } => {
                body.push(SERIES);
                body.extend_from_slice(&id.to_le_bytes());
                body.extend_from_slice(
                    &u32::try_from(labels.len())
                        .unwrap_or(u32::MAX)
                        .to_le_bytes(),
                );
                for (k, v) in labels.iter() {
                    put_str(&mut body, k);
                    put_str(&mut body, v);
                }
            }
            Record::Samples(samples) => {
                body.push(SAMPLES);
                body.extend_from_slice(
                    &u32::try_from(samples.len())
                        .unwrap_or(u32::MAX)
                        .to_le_bytes(),
                );
                for (id, t, v) in samples {
                    body.extend_from_slice(&id.to_le_bytes());
                    body.extend_from_slice(&t.to_le_bytes());
                    body.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
        let len = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other("a WAL record over 4 GiB"))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&body)?;
        self.out.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        self.dirty = true;
        Ok(())
    }

    /// Writes buffered records to disk and syncs them.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        self.dirty = false;
        Ok(())
    }

    /// Replaces the whole log by `records` (a checkpoint of what the head still holds): a
    /// new segment is written and synced first, then the older ones are deleted.
    pub(crate) fn checkpoint(&mut self, records: &[Record]) -> std::io::Result<()> {
        self.sync()?;
        let old = segments(&self.dir)?;
        self.segment += 1;
        self.out = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, self.segment))?,
        );
        for r in records {
            self.append(r)?;
        }
        self.dirty = true;
        self.sync()?;
        for n in old {
            if n < self.segment {
                let _ = std::fs::remove_file(segment_path(&self.dir, n));
            }
        }
        Ok(())
    }

    /// Bytes on disk.
    pub(crate) fn size(&self) -> u64 {
        segments(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| std::fs::metadata(segment_path(&self.dir, *n)).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads a segment's records; a torn or corrupt record ends it.
fn read_segment(path: &Path, out: &mut Vec<Record>) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let start = at + 4;
        let Some(end) = start.checked_add(len) else {
            break;
        };
        if end + 4 > bytes.len() {
            break;
        }
        let body = &bytes[start..end];
        let crc = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
        if crc32fast::hash(body) != crc {
            break;
        }
        match decode(body) {
            Some(r) => out.push(r),
            None => break,
        }
        at = end + 4;
    }
    Ok(())
}

fn decode(body: &[u8]) -> Option<Record> {
    let (&kind, rest) = body.split_first()?;
    let mut c = Reader(rest);
    match kind {
        SERIES => {
            let id = c.u32()?;
            let n = c.u32()?;
            let mut pairs = Vec::new();
            for _ in 0..n {
                pairs.push((c.string()?, c.string()?));
            }
            Some(Record::Series {
                id,
                labels: Labels::from_pairs(pairs),
            })
        }
        SAMPLES => {
            let n = c.u32()? as usize;
            let mut samples = Vec::with_capacity(n.min(1 << 20));
            for _ in 0..n {
                let id = c.u32()?;
                let t = c.u64()? as i64;
                let v = f64::from_bits(c.u64()?);
                samples.push((id, t, v));
            }
            Some(Record::Samples(samples))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        {
            let (mut wal, records) = Wal::open(dir.path()).unwrap();
            assert!(records.is_empty());
            wal.append(&Record::Series {
                id: 0,
                labels: labels.clone(),
            })
            .unwrap();
            wal.append(&Record::Samples(vec![(0, 1000, 1.0), (0, 2000, f64::NAN)]))
                .unwrap();
            wal.sync().unwrap();
            // Half a record, as a crash leaves it.
            wal.append(&Record::Samples(vec![(0, 3000, 3.0)])).unwrap();
            wal.out.flush().unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let (_, records) = Wal::open(dir.path()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], Record::Series { id: 0, labels });
        match &records[1] {
            Record::Samples(s) => {
                assert_eq!(s[0], (0, 1000, 1.0));
                assert!(s[1].2.is_nan());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_checkpoint_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&Record::Samples(vec![(0, 1, 1.0)])).unwrap();
        wal.checkpoint(&[Record::Samples(vec![(0, 2, 2.0)])])
            .unwrap();
        drop(wal);
        let (_, records) = Wal::open(dir.path()).unwrap();
        assert_eq!(records, vec![Record::Samples(vec![(0, 2, 2.0)])]);
    }
}
