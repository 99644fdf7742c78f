//! Moving this device's usage of a file `tally.file` no longer names (a typo fixed, a file
//! renamed) into a configured one: `git tally move FROM [--to FILE]`.
//!
//! The usage becomes a device of its own in the target's ledger (`<key>-moved-<hash>`,
//! named as this device), carried until a sync commits it, like a migration's legacy
//! devices: grow-only and joined like any device, so moving twice, or on two clones that
//! share the files, counts it once. This device's own files of the old path move aside to
//! `.git/tally/moved/` (nothing is deleted); the copies already committed stay in the
//! repository, read by nothing while the old path is not configured.

use super::shard::LedgerFile;
use super::{Error, Ledger, Result, Stream};
use crate::fsutil::write_atomic;

/// What a move did.
#[derive(Debug)]
pub struct Moved {
    /// The device the usage became in the target's ledger.
    pub device: String,
    /// Ledger files moved (days, floors, residual, device file).
    pub files: usize,
}

impl Ledger {
    /// The first and last instant this device's files of `stream` know of (the native
    /// cells' times, the records' timestamps); `None` where they tell none.
    fn span(&self, stream: &Stream) -> Result<(Option<crate::profile::Instant>, Option<crate::profile::Instant>)> {
        let (mut first, mut last) = (None, None);
        let mut see = |t: Option<crate::profile::Instant>| {
            if let Some(t) = t {
                first = Some(first.map_or(t, |f: crate::profile::Instant| f.min(t)));
                last = Some(last.map_or(t, |l: crate::profile::Instant| l.max(t)));
            }
        };
        for day in self.own_days(stream)? {
            let shard = self.own_shard(stream, &day)?;
            if let Some(times) = shard.counters.get("times") {
                see(times.get("first").and_then(crate::profile::parse_instant));
                see(times.get("last").and_then(crate::profile::parse_instant));
            }
            for r in shard.records.values() {
                see(r.body.get("timestamp").and_then(crate::profile::parse_instant));
            }
        }
        Ok((first, last))
    }

    /// Moves this device's usage of `from` (not configured) into the configured `to`.
    /// Call with the repository lock held, after folding.
    pub fn move_usage(&self, from: &str, to: &Stream) -> Result<Moved> {
        let Some(old) = self.orphans().iter().find(|o| o.file == from) else {
            let known: Vec<&str> = self.orphans().iter().map(|o| o.file.as_str()).collect();
            return Err(Error::Usage(if self.streams().iter().any(|s| s.file == from) {
                format!("{from} is in tally.file: its usage is counted already; nothing to move")
            } else if known.is_empty() {
                format!("this device has no usage of {from}, and none of any file tally.file does not name")
            } else {
                format!("this device has no usage of {from}; files tally.file does not name: {}", known.join(", "))
            }));
        };
        if old.profile.name != to.profile.name {
            return Err(Error::Usage(format!(
                "{from} holds {} usage and {} is {}: the formats differ, so its counts cannot be moved there (add it back with `git config --add tally.file {from}` to report it beside)",
                old.profile.name, to.file, to.profile.name
            )));
        }
        // `record` folds an event into every configured file that takes events: while both
        // files were configured, this device counted the same events in each, and moving
        // would count them twice. Moved only when this device's usage of the target
        // starts after its last use of the old file.
        let (old_last, new_first) = (self.span(old)?.1, self.span(to)?.0);
        let overlap = match (old_last, new_first) {
            (_, None) => false,
            (Some(last), Some(first)) => first <= last,
            (None, Some(_)) => true,
        };
        if overlap {
            return Err(Error::Usage(format!(
                "this device recorded usage in {} while {from} was still configured (or cannot tell): the same requests may be in both, and moving would count them twice; to report {from} beside it: git config --add tally.file {from}",
                to.file
            )));
        }
        let device = format!("{}-moved-{:08x}", self.key, super::legacy::fnv(from.as_bytes()) as u32);
        let prefix = format!("{}/", old.device_dir(&self.key));
        let root = self.state.carried_dir(&to.file).join(&device);
        let mut files = 0;
        for (path, bytes) in self.changed_files_of(old, true)? {
            let Some(rel) = path.strip_prefix(&prefix) else { continue };
            let file = match LedgerFile::parse(&bytes).map_err(|e| Error::Failed(format!("{path}: {e}")))? {
                LedgerFile::Shard(mut s) => {
                    s.device = device.clone();
                    LedgerFile::Shard(s)
                }
                LedgerFile::Residual(mut r) => {
                    r.device = device.clone();
                    r.local = serde_json::Value::Null;
                    LedgerFile::Residual(r)
                }
                LedgerFile::Device(mut d) => {
                    d.device = device.clone();
                    LedgerFile::Device(d)
                }
                // Only the floor this device set on its own usage applies to the moved
                // copy; floors on other devices of the old path name devices of the target
                // that it must not lower.
                LedgerFile::Floors(mut f) => {
                    let own = f.floors.remove(&self.key);
                    f.device = device.clone();
                    f.floors = own.map(|fl| (device.clone(), fl)).into_iter().collect();
                    if f.floors.is_empty() {
                        continue;
                    }
                    LedgerFile::Floors(f)
                }
            };
            let dest = root.join(rel);
            let file = match std::fs::read(&dest).ok().map(|b| LedgerFile::parse(&b)) {
                Some(Ok(before)) => {
                    before.join(&file).map_err(|e| Error::Failed(format!("{}: {e}", dest.display())))?
                }
                _ => file,
            };
            self.state.ensure(dest.parent().expect("below the carried directory"))?;
            write_atomic(&dest, &file.render())?;
            files += 1;
        }
        let aside = self.state.root().join("moved").join(super::state::slug(from));
        self.state.ensure(aside.parent().expect("below the state directory"))?;
        let _ = std::fs::remove_dir_all(&aside);
        let own = self.state.own_dir(from);
        std::fs::rename(&own, &aside).map_err(|e| Error::io(&own, e))?;
        Ok(Moved { device, files })
    }
}
