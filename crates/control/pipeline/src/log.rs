//! A run's log: one file per run (`runs/ID/run.log`), each line tagged with the job and step
//! that wrote it, read back by byte offset so `slipway pipeline logs -f` can follow it without
//! losing or repeating a line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Appends tagged lines to a run's log; cheap to clone.
#[derive(Clone, Debug)]
pub struct RunLog {
    path: PathBuf,
    file: Arc<Mutex<Option<std::fs::File>>>,
}

/// Lines of a log from an offset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The lines.
    pub lines: Vec<String>,
    /// The offset to ask for next.
    pub next: u64,
}

impl RunLog {
    /// The log at `path`, created (with its folder) on first write.
    pub fn new(path: &Path) -> Self {
        RunLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// Writes one line for `who` (`job/step`).
    pub fn line(&self, who: &str, text: &str) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            *guard = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = guard.as_mut() {
            let time = jiff::Timestamp::now().strftime("%H:%M:%S%.3f");
            let _ = writeln!(f, "{time} [{who}] {}", text.trim_end_matches(['\r', '\n']));
        }
    }
}

/// Reads whole lines of the log at `path` from byte `offset` (at most `max` lines).
pub fn read(path: &Path, offset: u64, max: usize) -> std::io::Result<LogChunk> {
    use std::io::{BufRead as _, Seek as _};
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogChunk {
                lines: Vec::new(),
                next: offset,
            });
        }
        Err(e) => return Err(e),
    };
    let mut reader = std::io::BufReader::new(file);
    reader.seek(std::io::SeekFrom::Start(offset))?;
    let mut lines = Vec::new();
    let mut next = offset;
    let mut buf = String::new();
    while lines.len() < max {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        // A line still being written (no newline yet) is left for the next read.
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        next += n as u64;
        lines.push(buf.trim_end_matches('\n').to_string());
    }
    Ok(LogChunk { lines, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_by_offset_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/1/run.log");
        let log = RunLog::new(&path);
        log.line("build/compile", "one");
        log.line("build/compile", "two\n");
        let first = read(&path, 0, 1).unwrap();
        assert_eq!(first.lines.len(), 1);
        assert!(first.lines[0].ends_with("[build/compile] one"));
        log.line("test/unit", "three");
        let rest = read(&path, first.next, 100).unwrap();
        assert_eq!(rest.lines.len(), 2);
        assert!(rest.lines[1].ends_with("[test/unit] three"));
        assert_eq!(read(&path, rest.next, 100).unwrap().lines.len(), 0);
        assert_eq!(
            read(&dir.path().join("none"), 0, 10).unwrap().lines.len(),
            0
        );
    }
}
