//! Blocks: immutable directories of the samples of one time range, written when the head
//! has held them long enough. `series.bin` lists each series' labels and where its chunks are
//! in `chunks.bin`; `meta.json` says the range. A block is written to a temporary directory
//! and renamed into place, so it is whole or absent. Nothing of a block stays in memory but
//! its range: its index is read when a query needs it (and a few are cached).
//!
//! `rollups.bin` holds each series' five-minute [rollups](super::rollup): a table of where
//! each series' record is (in `series.bin`'s order), then the records. A block written before
//! rollups existed has none; queries then fold its raw samples.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bytes::Reader;
use super::chunk::Chunk;
use super::rollup::{self, Summary};
use crate::labels::Labels;

const MAGIC: &[u8; 4] = b"SWB1";
const ROLLUP_MAGIC: &[u8; 4] = b"SWR1";

/// What `meta.json` says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// First sample time (ms).
    pub(crate) min_time: i64,
    /// Last sample time (ms).
    pub(crate) max_time: i64,
    /// Series in the block.
    pub(crate) series: usize,
    /// Samples in the block.
    pub(crate) samples: usize,
}

/// Where one chunk is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChunkRef {
    pub(crate) min_time: i64,
    pub(crate) max_time: i64,
    offset: u64,
    len: u32,
}

/// A block's index: every series with its chunks.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) series: Vec<(Labels, Vec<ChunkRef>)>,
    /// Where each series' rollups are in `rollups.bin` (empty when the block has none).
    rollups: Vec<(u64, u32)>,
}

/// A block on disk.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub(crate) dir: PathBuf,
    pub(crate) meta: Meta,
}

/// Writes a block of `series` (each with its chunks, oldest first) into `parent`.
pub(crate) fn write(
    parent: &Path,
    series: &[(Labels, Vec<Chunk>)],
) -> std::io::Result<Option<Block>> {
    let mut min_time = i64::MAX;
    let mut max_time = i64::MIN;
    let mut samples = 0;
    for (_, chunks) in series {
        for c in chunks {
            if let (Some(a), Some(b)) = (c.min_time(), c.max_time()) {
                min_time = min_time.min(a);
                max_time = max_time.max(b);
                samples += c.len();
            }
        }
    }
    if samples == 0 {
        return Ok(None);
    }
    let name = format!("{min_time}-{max_time}");
    let tmp = parent.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut chunks_file = File::create(tmp.join("chunks.bin"))?;
    let mut index = Vec::new();
    index.extend_from_slice(MAGIC);
    let non_empty: Vec<&(Labels, Vec<Chunk>)> = series
        .iter()
        .filter(|(_, c)| c.iter().any(|c| !c.is_empty()))
        .collect();
    put_u32(&mut index, non_empty.len());
    let mut offset = 0u64;
    for (labels, chunks) in &non_empty {
        put_u32(&mut index, labels.len());
        for (k, v) in labels.iter() {
            put_str(&mut index, k);
            put_str(&mut index, v);
        }
        let chunks: Vec<&Chunk> = chunks.iter().filter(|c| !c.is_empty()).collect();
        put_u32(&mut index, chunks.len());
        for c in chunks {
            let bytes = c.bytes();
            chunks_file.write_all(&bytes)?;
            index.extend_from_slice(&c.min_time().unwrap_or(0).to_le_bytes());
            index.extend_from_slice(&c.max_time().unwrap_or(0).to_le_bytes());
            index.extend_from_slice(&offset.to_le_bytes());
            put_u32(&mut index, bytes.len());
            offset += bytes.len() as u64;
        }
    }
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    chunks_file.sync_all()?;
    write_rollups(&tmp, &non_empty)?;
    let mut f = File::create(tmp.join("series.bin"))?;
    f.write_all(&index)?;
    f.sync_all()?;
    let meta = Meta {
        min_time,
        max_time,
        series: non_empty.len(),
        samples,
    };
    let mut f = File::create(tmp.join("meta.json"))?;
    f.write_all(&serde_json::to_vec_pretty(&meta).unwrap_or_default())?;
    f.sync_all()?;
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    File::open(parent)?.sync_all()?;
    Ok(Some(Block { dir, meta }))
}

/// `rollups.bin`: the table (offset, length per series), its CRC, then each series' record.
fn write_rollups(dir: &Path, series: &[&(Labels, Vec<Chunk>)]) -> std::io::Result<()> {
    let records: Vec<Vec<u8>> = series
        .iter()
        .map(|(_, chunks)| rollup::encode(&rollup::buckets(chunks.iter().flat_map(Chunk::iter))))
        .collect();
    let mut table = Vec::with_capacity(8 + records.len() * 12 + 4);
    table.extend_from_slice(ROLLUP_MAGIC);
    put_u32(&mut table, records.len());
    let mut offset = (8 + records.len() * 12 + 4) as u64;
    for r in &records {
        table.extend_from_slice(&offset.to_le_bytes());
        put_u32(&mut table, r.len());
        offset += r.len() as u64;
    }
    let crc = crc32fast::hash(&table);
    table.extend_from_slice(&crc.to_le_bytes());
    let mut f = std::io::BufWriter::new(File::create(dir.join("rollups.bin"))?);
    f.write_all(&table)?;
    for r in &records {
        f.write_all(r)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The table of `rollups.bin` (empty when there is none or it is damaged).
fn read_rollup_table(dir: &Path) -> Vec<(u64, u32)> {
    let Ok(file) = File::open(dir.join("rollups.bin")) else {
        return Vec::new();
    };
    let mut head = [0u8; 8];
    if file.read_exact_at(&mut head, 0).is_err() || &head[..4] != ROLLUP_MAGIC {
        return Vec::new();
    }
    let n = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let mut table = vec![0u8; 8 + n * 12 + 4];
    if file.read_exact_at(&mut table, 0).is_err() {
        return Vec::new();
    }
    let (body, crc) = table.split_at(table.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Vec::new();
    }
    let mut r = Reader(&body[8..]);
    (0..n).map_while(|_| Some((r.u64()?, r.u32()?))).collect()
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// The blocks in `parent`, oldest first (unfinished `.tmp` ones are removed).
pub(crate) fn list(parent: &Path) -> std::io::Result<Vec<Block>> {
    std::fs::create_dir_all(parent)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(parent)?.flatten() {
        let dir = entry.path();
        if dir.extension().is_some_and(|e| e == "tmp") {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let Ok(text) = std::fs::read(dir.join("meta.json")) else {
            continue;
        };
        let Ok(meta) = serde_json::from_slice::<Meta>(&text) else {
            continue;
        };
        out.push(Block { dir, meta });
    }
    out.sort_by_key(|b| b.meta.min_time);
    Ok(out)
}

impl Block {
    /// Reads its index.
    pub(crate) fn index(&self) -> std::io::Result<Index> {
        let mut bytes = Vec::new();
        File::open(self.dir.join("series.bin"))?.read_to_end(&mut bytes)?;
        let corrupt = || std::io::Error::other(format!("{} is corrupt", self.dir.display()));
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(corrupt());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(corrupt());
        }
        let mut c = Reader(&body[4..]);
        let n = c.u32().ok_or_else(corrupt)?;
        let mut series = Vec::with_capacity(n.min(1 << 20) as usize);
        for _ in 0..n {
            let labels_n = c.u32().ok_or_else(corrupt)?;
            let mut pairs = Vec::new();
            for _ in 0..labels_n {
                pairs.push((
                    c.string().ok_or_else(corrupt)?,
                    c.string().ok_or_else(corrupt)?,
                ));
            }
            let chunks_n = c.u32().ok_or_else(corrupt)?;
            let mut chunks = Vec::new();
            for _ in 0..chunks_n {
                chunks.push(ChunkRef {
                    min_time: c.i64().ok_or_else(corrupt)?,
                    max_time: c.i64().ok_or_else(corrupt)?,
                    offset: c.i64().ok_or_else(corrupt)? as u64,
                    len: c.u32().ok_or_else(corrupt)?,
                });
            }
            series.push((Labels::from_pairs(pairs), chunks));
        }
        let mut rollups = read_rollup_table(&self.dir);
        if rollups.len() != series.len() {
            rollups.clear();
        }
        Ok(Index { series, rollups })
    }

    /// The rollups of the `i`th series of `index`, read from `file` (`rollups.bin`); None
    /// when the block has none (or they are damaged): then fold its chunks.
    pub(crate) fn rollups(
        &self,
        file: &File,
        index: &Index,
        i: usize,
    ) -> Option<Vec<(i64, Summary)>> {
        let (offset, len) = *index.rollups.get(i)?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset).ok()?;
        rollup::decode(&buf)
    }

    /// Appends the samples of one chunk to `out`, decoding them once.
    pub(crate) fn samples(
        &self,
        file: &File,
        r: &ChunkRef,
        out: &mut Vec<(i64, f64)>,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; r.len as usize];
        file.read_exact_at(&mut buf, r.offset)?;
        Chunk::decode_into(&buf, out).ok_or_else(|| {
            std::io::Error::other(format!("a chunk of {} is corrupt", self.dir.display()))
        })
    }

    /// Opens its rollups file, if it has one.
    pub(crate) fn rollups_file(&self) -> Option<File> {
        File::open(self.dir.join("rollups.bin")).ok()
    }

    /// Opens its chunks file.
    pub(crate) fn chunks_file(&self) -> std::io::Result<File> {
        File::open(self.dir.join("chunks.bin"))
    }

    /// Bytes on disk.
    pub(crate) fn size(&self) -> u64 {
        ["chunks.bin", "series.bin", "rollups.bin", "meta.json"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}
