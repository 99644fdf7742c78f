//! This clone's device key (SPEC §4b.1): generated once, kept in `.git/tally/device.json`,
//! never shared. A copied `.git` (another directory or machine with the same key) would
//! make two clones write one device's files, so the key file remembers where it was made
//! — the machine, the file's inode and the git directory — and a copy is re-keyed with a
//! warning. A move (same machine, the old directory gone) keeps its key.

use super::state::StateDir;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct KeyFile {
    key: String,
    created: String,
    machine: String,
    dir: String,
    #[serde(default)]
    ino: u64,
}

/// What opening the device key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The key this clone made.
    Same(String),
    /// A new clone: a new key.
    New(String),
    /// A copied `.git`: a new key; what the copy held of the original's state is dropped.
    Rekeyed { old: String, new: String, why: String, inherited: Inherited },
}

impl Opened {
    pub fn key(&self) -> &str {
        match self {
            Opened::Same(k) | Opened::New(k) => k,
            Opened::Rekeyed { new, .. } => new,
        }
    }
}

/// What tells, in a copy, the usage files the original left in the work tree from ones the
/// copy's own applications wrote since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inherited {
    /// When the copy was made, as far as the file system tells (the change time of the
    /// copied key file: a copy cannot keep it), in seconds and nanoseconds.
    pub copied_at: Option<(i64, i64)>,
    /// Hashes of files the original wrote or ingested (its bookkeeping, before it is
    /// dropped).
    pub known: Vec<String>,
}

impl Inherited {
    /// Whether a usage file in the copy's work tree is the original's: not changed since
    /// the copy was made, or a file the original wrote or ingested.
    pub fn is_inherited(&self, path: &Path, bytes: &[u8]) -> bool {
        use std::os::unix::fs::MetadataExt;
        let unchanged = match (self.copied_at, std::fs::metadata(path)) {
            (Some(at), Ok(m)) => (m.mtime(), m.mtime_nsec()) <= at,
            _ => false,
        };
        unchanged || self.known.contains(&super::view::hash(bytes))
    }
}

/// A new random key: 12 hex digits.
pub fn new_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(crate::config::hostname)
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.ino())
}

fn read_key(path: &Path) -> Result<Option<KeyFile>> {
    match std::fs::read(path) {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The key of the clone whose state is `state` (its git directory is `git_dir`).
pub fn open(state: &StateDir, git_dir: &Path) -> Result<Opened> {
    let path = state.device();
    let here = git_dir.to_string_lossy().into_owned();
    // The common case, without a lock: the key this clone made, where it made it.
    if let Some(k) = read_key(&path)? {
        if k.dir == here && k.machine == machine_id() && k.ino == ino(&path) {
            return Ok(Opened::Same(k.key));
        }
    }
    // Making or changing the key: one process at a time (the first commands of a new
    // clone often run at once, and must not make two devices).
    state.ensure(state.root())?;
    let _lock = crate::lock::Lock::acquire_at(
        &state.root().join("device.lock"),
        std::time::Duration::from_secs(30),
        "device key",
    )?;
    decide(state, &path, &here)
}

fn decide(state: &StateDir, path: &Path, here: &str) -> Result<Opened> {
    let here = here.to_string();
    let existing = read_key(path)?;
    let Some(old) = existing else {
        let key = new_key();
        write_key(state, &key, &here)?;
        return Ok(Opened::New(key));
    };
    let (machine, inode) = (machine_id(), ino(path));
    if old.machine == machine && old.ino == inode {
        if old.dir != here {
            // Moved on this file system: the same clone.
            write_key(state, &old.key, &here)?;
        }
        return Ok(Opened::Same(old.key));
    }
    // The file is not the one this clone wrote: copied, restored, or moved across file
    // systems. Only a move leaves no clone behind with the key.
    let original = Path::new(&old.dir).join("tally").join("device.json");
    let original_alive = old.dir != here
        && std::fs::read(&original)
            .ok()
            .and_then(|b| serde_json::from_slice::<KeyFile>(&b).ok())
            .is_some_and(|k| k.key == old.key);
    if old.machine == machine && !original_alive {
        write_key(state, &old.key, &here)?;
        return Ok(Opened::Same(old.key));
    }
    let why = if old.machine != machine {
        "this .git was copied from another machine".to_string()
    } else {
        format!("this .git is a copy of {}", old.dir)
    };
    let new = new_key();
    let inherited = inherited(state, path);
    // What the copy holds of the original's device (its own files, journal, remembered
    // ids, file-mode bookkeeping) is the original's to sync, not this clone's.
    for dir in ["own", "journal", "ids", "views"] {
        let d = state.root().join(dir);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
    }
    let _ = std::fs::remove_file(state.move_record());
    write_key(state, &new, &here)?;
    Ok(Opened::Rekeyed { old: old.key, new, why, inherited })
}

/// See [`Inherited`]; read before the original's bookkeeping is dropped.
fn inherited(state: &StateDir, key_file: &Path) -> Inherited {
    use std::os::unix::fs::MetadataExt;
    let copied_at = std::fs::metadata(key_file).ok().map(|m| (m.ctime(), m.ctime_nsec()));
    let mut known = Vec::new();
    for stream in state.own_streams() {
        let residual = state.own_file(&stream, "residual.json");
        let Ok(Ok(super::shard::LedgerFile::Residual(r))) =
            std::fs::read(&residual).map(|b| super::shard::LedgerFile::parse(&b))
        else {
            continue;
        };
        for k in super::view::KNOWN {
            if let Some(h) = r.local.get(k).and_then(serde_json::Value::as_str) {
                known.push(h.to_string());
            }
        }
    }
    Inherited { copied_at, known }
}

fn write_key(state: &StateDir, key: &str, dir: &str) -> Result<()> {
    let path = state.device();
    state.ensure(state.root())?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut file = KeyFile { key: key.into(), created, machine: machine_id(), dir: dir.into(), ino: 0 };
    // The inode is known only once the file exists: write, read it, write again in place
    // (a rename would change it).
    write_atomic(&path, serde_json::to_string(&file).expect("serialises").as_bytes())?;
    file.ino = ino(&path);
    std::fs::write(&path, serde_json::to_string(&file).expect("serialises")).map_err(|e| Error::io(&path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_rekeyed_and_a_move_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a/.git");
        std::fs::create_dir_all(a.join("tally/own/x")).unwrap();
        let sa = StateDir::new(a.join("tally"));
        let Opened::New(key) = open(&sa, &a).unwrap() else { panic!("new") };
        assert_eq!(open(&sa, &a).unwrap(), Opened::Same(key.clone()));

        // cp -a: a new inode, the original still there.
        let b = tmp.path().join("b/.git");
        std::fs::create_dir_all(b.join("tally/own/x")).unwrap();
        std::fs::copy(sa.device(), b.join("tally/device.json")).unwrap();
        let sb = StateDir::new(b.join("tally"));
        match open(&sb, &b).unwrap() {
            Opened::Rekeyed { old, new, .. } => {
                assert_eq!(old, key);
                assert_ne!(new, key);
            }
            other => panic!("expected a new key, got {other:?}"),
        }
        assert!(!b.join("tally/own").exists(), "the original's own files are not the copy's");
        assert_eq!(open(&sa, &a).unwrap(), Opened::Same(key.clone()), "the original keeps its key");

        // mv to another file system (new inode), the original gone: the same device.
        let c = tmp.path().join("c/.git");
        std::fs::create_dir_all(c.join("tally")).unwrap();
        std::fs::copy(sa.device(), c.join("tally/device.json")).unwrap();
        std::fs::remove_dir_all(tmp.path().join("a")).unwrap();
        let sc = StateDir::new(c.join("tally"));
        assert_eq!(open(&sc, &c).unwrap(), Opened::Same(key));
    }
}
