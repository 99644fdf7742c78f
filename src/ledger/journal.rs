//! The journal: events recorded and not folded yet, one JSON line each, fsynced before
//! `record` returns. Appends take the journal's own lock, held for the append only, so a
//! sync (which holds the repository lock through its local steps) never delays a write.
//!
//! The journal is a series of segments. A fold first seals the current one (new events go
//! to the next), then folds sealed segments in order and removes each once every ledger
//! file holds it; a crash in between leaves the segment for the next fold, which knows
//! from each file what it already holds.

use super::state::StateDir;
use crate::error::{Error, Result};
use crate::lock::Lock;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

/// How long `record` waits for another append or a seal (both take milliseconds).
const APPEND_WAIT: Duration = Duration::from_secs(10);

pub struct Journal<'a> {
    state: &'a StateDir,
}

impl<'a> Journal<'a> {
    pub fn new(state: &'a StateDir) -> Journal<'a> {
        Journal { state }
    }

    fn lock(&self, what: &str) -> Result<Lock> {
        Lock::acquire_at(&self.state.journal_lock(), APPEND_WAIT, what)
    }

    /// Segment numbers present, ascending.
    pub fn segments(&self) -> Result<Vec<u64>> {
        let dir = self.state.journal_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out: Vec<u64> =
            entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".jsonl")?.parse().ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Appends whole lines durably (fsync) to the current segment; returns its number.
    pub fn append(&self, lines: &str) -> Result<u64> {
        let _lock = self.lock("record")?;
        let n = self.segments()?.last().copied().unwrap_or(1);
        if !lines.is_empty() {
            append_durably(&self.state.segment(n), lines.as_bytes())?;
        }
        Ok(n)
    }

    /// Starts a new segment if the current one holds events; returns the sealed segments
    /// (every segment but the current), which no append touches any more.
    pub fn seal(&self) -> Result<Vec<u64>> {
        let _lock = self.lock("fold")?;
        let mut segs = self.segments()?;
        if let Some(&last) = segs.last() {
            let len = std::fs::metadata(self.state.segment(last)).map_or(0, |m| m.len());
            if len > 0 {
                let next = self.state.segment(last + 1);
                std::fs::File::create(&next).map_err(|e| Error::io(&next, e))?;
                sync_dir(&self.state.journal_dir());
                segs.push(last + 1);
            }
        }
        segs.pop();
        Ok(segs)
    }

    /// The whole lines of a segment (a torn last line, from a crash during an append that
    /// never returned, is not one).
    pub fn lines(&self, n: u64) -> Result<Vec<String>> {
        read_lines(&self.state.segment(n))
    }

    pub fn remove(&self, n: u64) -> Result<()> {
        let p = self.state.segment(n);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// Every event line not folded yet, oldest first.
    pub fn pending(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for n in self.segments()? {
            out.extend(self.lines(n)?);
        }
        Ok(out)
    }

    /// How many events wait to be folded (counts lines, parses nothing).
    pub fn count(&self) -> usize {
        self.segments()
            .unwrap_or_default()
            .into_iter()
            .map(|n| std::fs::read(self.state.segment(n)).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()))
            .sum()
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Appends `bytes` and fsyncs; a torn tail left by a crash is cut off first, so that
/// every line in the journal is one whole event.
pub(crate) fn append_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let created = !path.exists();
    let mut f =
        std::fs::OpenOptions::new().create(true).read(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > 0 {
        let mut last = [0u8];
        f.seek(std::io::SeekFrom::End(-1)).and_then(|_| f.read_exact(&mut last)).map_err(|e| Error::io(path, e))?;
        if last[0] != b'\n' {
            let mut all = Vec::new();
            f.seek(std::io::SeekFrom::Start(0))
                .and_then(|_| f.read_to_end(&mut all))
                .map_err(|e| Error::io(path, e))?;
            let keep = all.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            f.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
        }
    }
    f.write_all(bytes).and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))?;
    if created {
        if let Some(d) = path.parent() {
            sync_dir(d);
        }
    }
    Ok(())
}

/// The whole lines of a file (a torn last line is not one); none if it does not exist.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..i],
        None => &[][..],
    };
    Ok(String::from_utf8_lossy(complete).lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_starts_a_new_segment_and_appends_go_there() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let j = Journal::new(&state);
        assert!(j.seal().unwrap().is_empty());
        j.append("{\"a\":1}\n").unwrap();
        assert_eq!(j.seal().unwrap(), vec![1]);
        j.append("{\"b\":2}\n").unwrap();
        assert_eq!(j.lines(1).unwrap(), vec!["{\"a\":1}"]);
        assert_eq!(j.lines(2).unwrap(), vec!["{\"b\":2}"]);
        assert_eq!(j.count(), 2);
        j.remove(1).unwrap();
        assert_eq!(j.pending().unwrap(), vec!["{\"b\":2}"]);
        // An empty current segment is not sealed again.
        assert_eq!(j.seal().unwrap(), vec![2]);
        assert_eq!(j.seal().unwrap(), vec![2]);
    }

    #[test]
    fn a_torn_tail_is_cut_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        assert_eq!(read_lines(&p).unwrap(), vec!["{\"a\":1}"]);
        append_durably(&p, b"{\"c\":3}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"c\":3}\n");
    }
}
