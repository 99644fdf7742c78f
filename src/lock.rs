//! One lock per repository (an fs2 lock on a file under `.git/tally/`), held by every
//! command that writes the journal, the usage files or history. Waiting is bounded: a
//! busy lock is a transient failure (exit 3), never a hang.

use crate::error::{Error, Result};
use fs2::FileExt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Lock {
    file: File,
    info: PathBuf,
}

impl Lock {
    /// Takes the repository lock in `dir`, waiting up to `timeout`.
    pub fn acquire(dir: &Path, timeout: Duration, what: &str) -> Result<Lock> {
        Lock::acquire_at(&dir.join("lock"), timeout, what)
    }

    /// Takes the lock `path` only if it is free now.
    pub fn try_acquire(dir: &Path, what: &str) -> Result<Option<Lock>> {
        match Lock::acquire_at(&dir.join("lock"), Duration::ZERO, what) {
            Ok(l) => Ok(Some(l)),
            Err(Error::Transient(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the lock file `path` (`<path>.info` says who holds it), waiting up to `timeout`.
    pub fn acquire_at(path: &Path, timeout: Duration, what: &str) -> Result<Lock> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = path.to_path_buf();
        let info = path.with_extension("info");
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        while FileExt::try_lock_exclusive(&file).is_err() {
            if start.elapsed() >= timeout {
                let holder = std::fs::read_to_string(&info).unwrap_or_default();
                return Err(Error::Transient(format!(
                    "the repository lock {} is busy{}; waited {:?}, try again",
                    path.display(),
                    if holder.is_empty() { String::new() } else { format!(" (held by {})", holder.trim()) },
                    timeout
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        if let Ok(mut f) = File::create(&info) {
            let _ = writeln!(f, "pid {} ({what})", std::process::id());
        }
        Ok(Lock { file, info })
    }

    /// Who holds the lock now, if anyone (for `status`; takes nothing).
    pub fn holder(dir: &Path) -> Option<String> {
        let file = File::open(dir.join("lock")).ok()?;
        if FileExt::try_lock_shared(&file).is_ok() {
            let _ = FileExt::unlock(&file);
            return None;
        }
        Some(std::fs::read_to_string(dir.join("lock.info")).unwrap_or_default().trim().to_string())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.info);
        let _ = FileExt::unlock(&self.file);
    }
}
