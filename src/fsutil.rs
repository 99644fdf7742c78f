//! File helpers: durable replacement (write a temporary file beside the target, fsync it,
//! rename it over the target, so a reader or git never sees half a usage file), and the
//! path of this executable that survives an upgrade.
//!
//! Files git-tally creates are read by others: a dashboard or a proxy running as another
//! user reads the usage file, a web server serves the report. So a new file gets the mode
//! any program would give it (0666, or 0777 for a script, less the umask) rather than the
//! 0600 of a private temporary file, and a file that exists keeps the mode its owner chose.

use crate::error::{Error, Result};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` atomically; a new file is created 0666 less the umask.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for a new file created with `mode` less the umask (0o777 for a script).
/// An existing file keeps its mode.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace_with(path, bytes, mode, true)
}

/// Writes `bytes` into a temporary file beside `path` and renames it over `path`; with
/// `durable`, the file and the directory are flushed to the disk.
fn replace_with(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = put(path, bytes, mode, durable)?;
    if durable {
        sync_dir(dir);
    }
    Ok(())
}

/// Atomic, durable replacements of several files whose directories are flushed once each,
/// at [`Durable::finish`] (one flush for a hundred shards of one directory, not a hundred).
/// Until then a power loss may undo any of the renames; a killed process leaves each file
/// old or new, as [`write_atomic`] does.
#[derive(Default)]
pub struct Durable {
    dirs: std::collections::BTreeSet<PathBuf>,
}

impl Durable {
    /// Replaces `path` with `bytes` (flushed to the disk; its directory at `finish`).
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = put(path, bytes, 0o666, true)?;
        self.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    /// Flushes the directories of every file written.
    pub fn finish(self) {
        for d in &self.dirs {
            sync_dir(d);
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The temporary file and the rename of [`replace_with`]; returns the directory.
fn put<'p>(path: &'p Path, bytes: &[u8], mode: u32, durable: bool) -> Result<&'p Path> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The kernel applies the umask to the mode given to open(2), so the temporary file is
    // born with the mode a new file should have; no umask(2) call (which is unsafe) needed.
    let mut tmp = tempfile::Builder::new()
        .prefix(".git-tally-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| if durable { tmp.as_file().sync_all() } else { Ok(()) })
        .map_err(|e| Error::io(tmp.path(), e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(dir)
}

/// [`write_atomic`] without waiting for the disk: for files that only save work or show
/// status (`state.json`, remembered tree ids), where a power loss may bring back the
/// previous version (or, on some file systems, an empty file, read as "nothing known").
/// A killed process still leaves the old or the new file, never a mix.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    if holds(path, bytes) {
        return Ok(());
    }
    replace_with(path, bytes, 0o666, false)
}

/// [`write_atomic`], unless `path` holds `bytes` already (then nothing is written or
/// flushed).
pub fn write_atomic_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if holds(path, bytes) {
        return Ok(());
    }
    write_atomic(path, bytes)
}

fn holds(path: &Path, bytes: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|b| b == bytes)
}

/// This executable's path, for git to start it again as the merge driver (and for the
/// systemd units and hooks). When the binary was replaced while running — an upgrade under
/// a running daemon — Linux reports `<path> (deleted)`: the new binary at `<path>` is the
/// one to run.
pub fn current_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    if !exe.exists() {
        if let Some(path) = exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            if Path::new(path).exists() {
                return Ok(path.into());
            }
        }
    }
    Ok(exe)
}

/// Whether `path` is a file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `s` quoted for a POSIX shell: unchanged when it has nothing the shell would interpret,
/// else in single quotes. git runs merge drivers and textconv commands through the shell,
/// and the hooks are shell scripts, so a path with a space must survive them.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The first word of a shell command line as the shell would read it (quotes removed):
/// the program a registered driver, textconv or hook runs.
pub fn first_shell_word(line: &str) -> Option<String> {
    let mut word = String::new();
    let mut chars = line.trim_start().chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                any = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                any = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                any = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => break,
            c => {
                any = true;
                word.push(c);
            }
        }
    }
    any.then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_the_first_word() {
        for s in ["/usr/bin/git-tally", "/home/a b/bin/git-tally", "/x/it's", "/x/$HOME/\"q\"", ""] {
            let line = format!("{} merge %O %A %B", shell_quote(s));
            assert_eq!(first_shell_word(&line).as_deref(), Some(s), "{line}");
        }
        assert_eq!(shell_quote("/usr/bin/git-tally"), "/usr/bin/git-tally");
        assert_eq!(first_shell_word("git-tally show"), Some("git-tally".into()));
        assert_eq!(first_shell_word("  "), None);
    }

    #[test]
    fn new_files_follow_the_umask_and_existing_files_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        // The umask of this process, as the kernel reports it.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        let new = dir.path().join("new.json");
        write_atomic(&new, b"{}").unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().permissions().mode() & 0o777, 0o666 & !umask);
        let script = dir.path().join("hook");
        write_atomic_mode(&script, b"#!/bin/sh\n", 0o777).unwrap();
        assert_eq!(std::fs::metadata(&script).unwrap().permissions().mode() & 0o777, 0o777 & !umask);
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&new, b"{\"a\": 1}").unwrap();
        assert_eq!(std::fs::metadata(&new).unwrap().permissions().mode() & 0o777, 0o640);
    }
}
