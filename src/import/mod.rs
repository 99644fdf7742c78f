//! Importing coding agents' own logs into usage events: Claude Code transcripts
//! ([`claude`]) and Codex CLI sessions ([`codex`]). Both are read strictly read-only and
//! incrementally: each file is read from where the previous run stopped (its inode and
//! byte offset are kept under `.git/tally/`), a line still being written is left for the
//! next run, and a file replaced by another (a new inode) or truncated is read again from
//! its start — event ids keep what was already recorded from counting twice. Events go
//! through the normal write path.

pub mod claude;
pub mod codex;
mod scan;

pub use claude::{claude_code, default_dirs};
pub use codex::{codex, default_dir as codex_default_dir};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub files: usize,
    pub bytes_read: u64,
    /// Requests found in what was read.
    pub entries: usize,
    pub recorded: usize,
    pub already: usize,
    /// Lines that could not be read, each naming its file and line, for the user.
    pub warnings: Vec<String>,
}

/// Where a file was read up to: its inode, the byte offset after the last complete line,
/// and that line's number (for messages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<u64>", into = "Vec<u64>")]
pub struct Position {
    pub ino: u64,
    pub offset: u64,
    pub line: u64,
}

/// Earlier state files kept `[inode, offset]`.
impl From<Vec<u64>> for Position {
    fn from(v: Vec<u64>) -> Position {
        Position {
            ino: v.first().copied().unwrap_or(0),
            offset: v.get(1).copied().unwrap_or(0),
            line: v.get(2).copied().unwrap_or(0),
        }
    }
}

impl From<Position> for Vec<u64> {
    fn from(p: Position) -> Vec<u64> {
        vec![p.ino, p.offset, p.line]
    }
}

/// The `*.jsonl` files under `dir`, recursively, in path order.
pub(crate) fn jsonl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => jsonl_files(&p, out),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "jsonl") => out.push(p),
            _ => {}
        }
    }
}

/// Whether reading `path` continues from `start` or begins again: `None` when the file is
/// another one now (a new inode) or shorter than where reading stopped.
pub(crate) fn resume(start: Option<Position>, meta: &std::fs::Metadata) -> Option<Position> {
    start.filter(|s| s.ino == meta.ino() && s.offset <= meta.len())
}

/// Reads the complete lines of `file` after `from` (a line without its newline is still
/// being written: it is left for the next run), calling `each(line_number, text)`.
/// Returns where reading stopped and how many bytes were read. The file is read in large
/// chunks into `buf` and lines are cut from it in place, never copied again; a chunk's
/// unfinished last line moves to the front for the next.
pub(crate) fn read_lines(
    path: &Path,
    file: std::fs::File,
    from: Position,
    buf: &mut Vec<u8>,
    each: impl FnMut(u64, &[u8]),
) -> Result<(Position, u64)> {
    read_lines_in(path, file, from, buf, 16 << 20, each)
}

fn read_lines_in(
    path: &Path,
    mut file: std::fs::File,
    from: Position,
    buf: &mut Vec<u8>,
    chunk: usize,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(Position, u64)> {
    use std::io::Read;
    file.seek(SeekFrom::Start(from.offset)).map_err(|e| Error::io(path, e))?;
    buf.clear();
    let mut at = from;
    let mut read = 0u64;
    loop {
        // Appends to what was kept, without zeroing the space first.
        let n = (&mut file).take(chunk as u64).read_to_end(buf).map_err(|e| Error::io(path, e))?;
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
            let end = start + nl + 1;
            at.line += 1;
            each(at.line, &buf[start..end]);
            start = end;
        }
        at.offset += start as u64;
        read += start as u64;
        buf.drain(..start);
        if n == 0 {
            return Ok((at, read));
        }
    }
}

/// A warning about one line, as the user reads it: `FILE:LINE: what`.
pub(crate) fn line_warning(path: &Path, line: u64, what: impl std::fmt::Display) -> String {
    format!("{}:{line}: {what}; line skipped", path.display())
}

/// How many line warnings an import reports in full (the rest are counted).
pub const MAX_WARNINGS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_chunks_and_a_line_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(&p, "one\ntwo two\n\nthree three three\nfour (being writ").unwrap();
        for chunk in [1, 2, 3, 5, 8, 64] {
            let mut seen = Vec::new();
            let (at, read) = read_lines_in(
                &p,
                std::fs::File::open(&p).unwrap(),
                Position::default(),
                &mut Vec::new(),
                chunk,
                |n, l| seen.push((n, String::from_utf8(l.to_vec()).unwrap())),
            )
            .unwrap();
            let want = [(1, "one\n"), (2, "two two\n"), (3, "\n"), (4, "three three three\n")];
            assert_eq!(seen, want.map(|(n, l)| (n, l.to_string())), "chunk {chunk}");
            assert_eq!((at.offset, at.line, read), (31, 4, 31), "chunk {chunk}");
            // From where it stopped: the rest, once finished.
            std::fs::write(&p, "one\ntwo two\n\nthree three three\nfour (being written)\n").unwrap();
            let mut rest = Vec::new();
            let (at2, _) = read_lines_in(&p, std::fs::File::open(&p).unwrap(), at, &mut Vec::new(), chunk, |n, l| {
                rest.push((n, l.len()))
            })
            .unwrap();
            assert_eq!((rest, at2.line), (vec![(5, 21)], 5));
            std::fs::write(&p, "one\ntwo two\n\nthree three three\nfour (being writ").unwrap();
        }
    }
}
