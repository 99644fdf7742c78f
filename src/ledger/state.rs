//! `StateDir`: the one type that knows what git-tally keeps under `.git/tally/` (or
//! `.git-tally/` in local-only mode). Nothing here is committed; all of it is this clone's.
//!
//! ```text
//! device.json           this clone's device key, and what tells a copied .git from it
//! lock, lock.info       the repository lock: local steps of sync, fold, reset…
//! journal.lock          the journal's own short lock: `record` never waits on a sync
//! journal/<n>.jsonl     events recorded and not folded yet, in segments
//! own/<stream>/…        this device's ledger files (the truth; the work tree has copies)
//! own/<stream>/dirty    days (and files) changed since the last commit
//! ids/<xx>.jsonl        event ids remembered for tally.idHorizon, in 256 buckets
//! carried/<stream>/…    legacy devices a 0.1 migration made, until a commit holds them
//! 0.1/                  git-tally 0.1's files, kept after their migration

//! views/<stream>.json   file mode: what git-tally last wrote, what the app wrote and read
//! move.json             a branch move in progress (finished at the next start)
//! state.json            last pull and sync, for `status`
//! tmp/                  temporary files (removed at start)
//! ```

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// A stream's name on disk: its usage file's path with `/` as `~`.
pub fn slug(stream: &str) -> String {
    stream.replace('/', "~")
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn device(&self) -> PathBuf {
        self.root.join("device.json")
    }

    pub fn lock_dir(&self) -> &Path {
        &self.root
    }

    pub fn journal_lock(&self) -> PathBuf {
        self.root.join("journal.lock")
    }

    /// Held by a sync while it fetches and pushes: a pull-before-write skips its pull then.
    pub fn net_lock(&self) -> PathBuf {
        self.root.join("net.lock")
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    pub fn segment(&self, n: u64) -> PathBuf {
        self.journal_dir().join(format!("{n:08}.jsonl"))
    }

    pub fn own_dir(&self, stream: &str) -> PathBuf {
        self.root.join("own").join(slug(stream))
    }

    /// This device's shard of `day` (YYYY-MM-DD) in its own directory.
    pub fn own_shard(&self, stream: &str, day: &str) -> PathBuf {
        self.own_dir(stream).join(format!("{day}.json"))
    }

    pub fn own_file(&self, stream: &str, name: &str) -> PathBuf {
        self.own_dir(stream).join(name)
    }

    pub fn dirty(&self, stream: &str) -> PathBuf {
        self.own_dir(stream).join("dirty")
    }

    /// The next `seq` this device gives a record of `stream`.
    pub fn seq(&self, stream: &str) -> PathBuf {
        self.own_dir(stream).join("seq")
    }

    /// Other devices' ledger files this clone holds and no commit does yet (a migration's
    /// legacy devices), below their paths in the stream's ledger directory.
    pub fn carried_dir(&self, stream: &str) -> PathBuf {
        self.root.join("carried").join(slug(stream))
    }

    pub fn ids_dir(&self) -> PathBuf {
        self.root.join("ids")
    }

    pub fn view_state(&self, stream: &str) -> PathBuf {
        self.root.join("views").join(format!("{}.json", slug(stream)))
    }

    pub fn move_record(&self) -> PathBuf {
        self.root.join("move.json")
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The temporary directory, created if needed.
    pub fn tmp_ensured(&self) -> Result<PathBuf> {
        let t = self.tmp();
        self.ensure(&t)?;
        Ok(t)
    }

    /// Removes temporary files a killed run left (call with the repository lock held).
    pub fn clean_tmp(&self) {
        if let Ok(entries) = std::fs::read_dir(self.tmp()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Creates the directory if needed.
    pub fn ensure(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
    }

    /// Streams with files in `own/`, by slug.
    pub fn own_streams(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("own")) else { return Vec::new() };
        let mut out: Vec<String> =
            entries.flatten().filter_map(|e| e.file_name().to_str().map(|s| s.replace('~', "/"))).collect();
        out.sort();
        out
    }
}
