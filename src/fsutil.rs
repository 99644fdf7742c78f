//! File helpers: durable replacement (write a temporary file beside the target, fsync it,
//! rename it over the target, so a reader or git never sees half a usage file), and the
//! path of this executable that survives an upgrade.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".git-tally-").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).and_then(|_| tmp.as_file().sync_all()).map_err(|e| Error::io(tmp.path(), e))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// This executable's path, for git to start it again as the merge driver (and for the
/// systemd units). When the binary was replaced while running — an upgrade under a running
/// daemon — Linux reports `<path> (deleted)`: the new binary at `<path>` is the one to run.
pub fn current_exe() -> Result<std::path::PathBuf> {
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
