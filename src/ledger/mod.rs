//! The ledger (SPEC §4b), git-free: this device's contribution to each usage file
//! (a *stream*), kept grow-only in per-day shards, and everything that turns events and
//! application writes into it and it into files.
//!
//! - [`Ledger::record`] appends events to the journal (durable, never waits on a sync);
//! - [`Ledger::fold`] applies the journal to this device's shards, crash-safe;
//! - [`Ledger::ingest`] takes what an application wrote into its usage file (file mode);
//! - [`Ledger::view`] sums every device's shards into the usage file's own format;
//! - [`Ledger::write_view`] puts that file back where the application reads it.
//!
//! Other devices' files come from a [`Source`] (a git tree, in `sync`). Local-only mode
//! (`tally.enabled = false`) is this module with no source.

pub mod algebra;
mod device;
mod fold;
mod ids;
mod ingest;
mod journal;
mod legacy;
mod moved;
mod reset;
pub mod shard;
mod state;
mod view;

pub use device::Opened;
pub use ingest::Ingested;
pub use journal::Journal;
pub use legacy::{Head as LegacyHead, LEGACY_DEVICE};
pub use moved::Moved;

pub use shard::{LedgerFile, Record, Shard, FORMAT};
pub use state::StateDir;
pub use view::{render as render_view, replace as replace_file, ViewDoc, Written};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::fsutil::write_atomic;
use crate::profile::{self, Profile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One usage file and the ledger behind it.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The usage file, relative to the top of the work tree (`usage/usage.json`).
    pub file: String,
    pub profile: &'static Profile,
    /// Nothing showed the file's format when the ledger was opened: `profile` is the
    /// default, to be chosen again once there is evidence (see [`Ledger::rechoose`]).
    pub by_default: bool,
}

impl Stream {
    /// `usage/usage.json` → `usage/usage.ledger`.
    pub fn ledger_dir(&self) -> String {
        ledger_dir_of(&self.file)
    }

    pub fn device_dir(&self, key: &str) -> String {
        format!("{}/{key}", self.ledger_dir())
    }

    /// The path of a day's shard below a device's directory.
    pub fn shard_name(day: &str) -> String {
        format!("{}/{day}.json", &day[..7.min(day.len())])
    }
}

/// The ledger directory of a usage file: beside it, named after it.
pub fn ledger_dir_of(file: &str) -> String {
    let p = Path::new(file);
    let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| file.to_string());
    match p.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => format!("{}/{stem}.ledger", d.to_string_lossy()),
        None => format!("{stem}.ledger"),
    }
}

/// How many of this device's files of a stream changed since the last commit.
pub fn dirty_count(state: &StateDir, stream: &str) -> usize {
    journal::read_lines(&state.dirty(stream)).map(|l| l.into_iter().collect::<BTreeSet<_>>().len()).unwrap_or(0)
}

/// Other devices' ledger files: every file under a stream's ledger directory.
pub trait Source {
    /// `(path below the ledger directory, bytes)` of every file there.
    fn files(&self, ledger_dir: &str) -> Result<Vec<(String, Vec<u8>)>>;
}

/// No other devices (local-only mode, or a repository nobody synced to yet).
pub struct NoSource;

impl Source for NoSource {
    fn files(&self, _: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

/// What `record` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub recorded: usize,
    /// Events whose id was recorded before with at least their tokens (a retry).
    pub duplicates: usize,
}

/// This device's ledger in one repository (or local directory).
pub struct Ledger {
    state: StateDir,
    top: PathBuf,
    key: String,
    config: Config,
    streams: Vec<Stream>,
    /// See [`Ledger::orphans`].
    orphans: Vec<Stream>,
    notices: Vec<String>,
    /// Ids this process recorded, with their total and the journal segment they went to
    /// (a long-running collector sees a replay before the fold does). Forgotten once their
    /// segment is folded (the remembered ids have them then), so that a collector running
    /// for months does not grow with every request it saw.
    recorded: std::cell::RefCell<std::collections::HashMap<String, (u64, u64)>>,
}

/// How many ids `record` holds before it forgets those of folded segments.
const RECORDED_PRUNE_AT: usize = 4096;

impl Ledger {
    /// Opens the ledger of the work tree `top`, keeping state in `state_dir`; `profile_hints`
    /// says what git knows of a stream's profile (see `choose_profile`).
    pub fn open(
        top: &Path,
        state_dir: &Path,
        git_dir: &Path,
        config: Config,
        profile_hints: &dyn Fn(&str) -> ProfileHints,
    ) -> Result<Ledger> {
        let state = StateDir::new(state_dir);
        let opened = device::open(&state, git_dir)?;
        let mut notices = Vec::new();
        if let Opened::Rekeyed { old, new, why, .. } = &opened {
            notices.push(format!(
                "warning: {why}: this clone now counts as a new device ({new}, was {old}); what the original had not synced stays the original's"
            ));
        }
        let key = opened.key().to_string();
        let mut streams = Vec::new();
        for f in &config.files {
            let file = f.to_string_lossy().into_owned();
            let (profile, by_default) = choose_profile(&config, &state, top, &file, profile_hints)?;
            streams.push(Stream { file, profile, by_default });
        }
        let orphans = orphans(&state, &streams);
        let ledger = Ledger {
            state,
            top: top.to_path_buf(),
            key,
            config,
            streams,
            orphans,
            notices,
            recorded: Default::default(),
        };
        if let Opened::Rekeyed { inherited, .. } = &opened {
            // The usage files the copy found in its work tree are the original's (its
            // applications' writes, its views), read by the original's sync: never this
            // copy's writes. What the copy's own applications wrote since is.
            for stream in &ledger.streams {
                let path = ledger.top.join(&stream.file);
                if let Ok(bytes) = std::fs::read(&path) {
                    if inherited.is_inherited(&path, &bytes) {
                        ledger.mark_written(stream, &bytes)?;
                    }
                }
            }
        }
        Ok(ledger)
    }

    /// Usage files this device has a ledger for that `tally.file` no longer names (a typo
    /// fixed, a file renamed): their ledger is kept and committed, never dropped, and
    /// `status` and `doctor` name them.
    pub fn orphans(&self) -> &[Stream] {
        &self.orphans
    }

    /// Messages for the user that opening produced (a re-keyed copy).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn name(&self) -> &str {
        &self.config.device
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    pub fn top(&self) -> &Path {
        &self.top
    }

    pub fn journal(&self) -> Journal<'_> {
        Journal::new(&self.state)
    }

    fn ids(&self) -> ids::Ids<'_> {
        ids::Ids::new(&self.state, (self.config.id_horizon.as_secs() / 86400).max(1) as i64)
    }

    /// Records events durably (fsynced to the journal when it returns). A retried event (an
    /// id already folded with at least its tokens) counts once; events without an id get
    /// one.
    pub fn record(&self, mut events: Vec<Event>) -> Result<Recorded> {
        let before = events.len();
        let known = self.ids().lookup(events.iter().filter_map(|e| e.id.as_deref()))?;
        let mut batch: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        {
            let seen = self.recorded.borrow();
            events.retain(|e| {
                let Some(id) = &e.id else { return true };
                // An id kept for good past the horizon no longer counts a later version.
                let known = known.get(id).map(|r| if r.compacted() { u64::MAX } else { r.total });
                let total = [known, seen.get(id).map(|s| s.0), batch.get(id).copied()].into_iter().flatten().max();
                if total.is_some_and(|t| e.total_tokens <= t) {
                    return false; // a retry: counts once
                }
                batch.insert(id.clone(), e.total_tokens);
                true
            });
        }
        let duplicates = before - events.len();
        if events.is_empty() {
            return Ok(Recorded { recorded: 0, duplicates });
        }
        // A cost is decided when an event is recorded, so that history does not change
        // when prices do: the one given, else an estimate from the price table.
        let prices = match events.iter().any(|e| e.cost_usd.is_none()) {
            true => Some(crate::prices::Prices::load(self.state.root()).unwrap_or_else(|e| {
                eprintln!("git-tally: warning: {e}; using the bundled price table");
                crate::prices::Prices::bundled()
            })),
            false => None,
        };
        let nonce = device::new_key();
        let mut text = String::new();
        for (i, e) in events.iter_mut().enumerate() {
            if e.id.is_none() {
                e.id = Some(format!("{}-{nonce}-{i}", self.key));
            }
            if let Some(p) = &prices {
                if crate::prices::estimate(p, e) == crate::prices::Priced::Estimated {
                    e.cost_estimated = true;
                }
            }

            text.push_str(&e.to_line());
            text.push('\n');
        }
        let segment = self.journal().append(&text)?;
        // Remembered once durable: a failed append leaves the retry free to succeed.
        let mut recorded = self.recorded.borrow_mut();
        recorded.extend(batch.into_iter().map(|(id, total)| (id, (total, segment))));
        if recorded.len() >= RECORDED_PRUNE_AT {
            let oldest = self.journal().segments()?.first().copied().unwrap_or(segment);
            recorded.retain(|_, (_, s)| *s >= oldest);
        }
        Ok(Recorded { recorded: events.len(), duplicates })
    }

    /// Takes the events waiting in the journal (recorded, not folded yet) as recorded by
    /// this process: a batch of `record` then counts none of them again, and says so.
    pub fn note_pending(&self) -> Result<()> {
        let journal = self.journal();
        let now = chrono::Utc::now().fixed_offset();
        let mut recorded = self.recorded.borrow_mut();
        for n in journal.segments()? {
            for line in journal.lines(n)? {
                let Ok(e) = Event::parse(&line, now, &self.config.device) else { continue };
                if let Some(id) = e.id {
                    let entry = recorded.entry(id).or_insert((0, n));
                    *entry = (entry.0.max(e.total_tokens), n);
                }
            }
        }
        Ok(())
    }

    /// Joins what a commit holds of this device's files into its own copy, which can lag
    /// behind it: a file lost or damaged here, a clone restored from a backup while the
    /// original went on and pushed. `committed`: `(path below this device's directory,
    /// bytes)`. A damaged own file is replaced by the join of the committed one, and kept
    /// aside under `.git/tally/damaged/`. Returns notices for the user; the next `seq` given
    /// is above every record's.
    pub fn catch_up(&self, stream: &Stream, committed: &[(String, Vec<u8>)]) -> Result<Vec<String>> {
        let mut notices = Vec::new();
        let mut max_seq = 0;
        for (rel, bytes) in committed {
            let Ok(theirs) = LedgerFile::parse(bytes) else { continue };
            let path = match &theirs {
                LedgerFile::Device(_) => continue,
                LedgerFile::Shard(s) => self.state.own_shard(&stream.file, &s.day),
                _ => match Path::new(rel).file_name() {
                    Some(name) => self.state.own_file(&stream.file, &name.to_string_lossy()),
                    None => continue,
                },
            };
            let own = match self.read_own(&path) {
                Ok(own) => own,
                Err(e) => {
                    let aside = self.state.root().join("damaged");
                    self.state.ensure(&aside)?;
                    let to = aside.join(format!(
                        "{}-{}",
                        state::slug(&stream.file),
                        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                    ));
                    std::fs::rename(&path, &to).map_err(|e| Error::io(&path, e))?;
                    notices.push(format!(
                        "{e} — replaced by what the repository holds of it; the damaged file is kept as {}",
                        to.display()
                    ));
                    None
                }
            };
            let joined = match &own {
                Some(o) => o.join(&theirs).map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?,
                None => theirs,
            };
            if let LedgerFile::Shard(s) = &joined {
                max_seq = max_seq.max(s.max_seq());
            }
            if own.as_ref() != Some(&joined) {
                self.state.ensure(&self.state.own_dir(&stream.file))?;
                write_atomic(&path, &joined.render_own())?;
            }
        }
        let seq_path = self.state.seq(&stream.file);
        let next = std::fs::read_to_string(&seq_path).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(1);
        if max_seq + 1 > next {
            self.state.ensure(&self.state.own_dir(&stream.file))?;
            write_atomic(&seq_path, (max_seq + 1).to_string().as_bytes())?;
        }
        Ok(notices)
    }

    /// Reads an own ledger file (this device's copy), `None` if there is none.
    fn read_own(&self, path: &Path) -> Result<Option<LedgerFile>> {
        match std::fs::read(path) {
            Ok(b) => LedgerFile::parse(&b).map(Some).map_err(|e| {
                Error::Failed(format!(
                    "{}: {e}; the next sync replaces it with what the repository holds of it (if it holds it), or move it aside to start this device's file again",
                    path.display()
                ))
            }),

            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// This device's shard of a day (an empty one if there is none yet).
    pub(crate) fn own_shard(&self, stream: &Stream, day: &str) -> Result<Shard> {
        match self.read_own(&self.state.own_shard(&stream.file, day))? {
            Some(LedgerFile::Shard(s)) => Ok(s),
            Some(_) => {
                Err(Error::Failed(format!("{}: not a shard", self.state.own_shard(&stream.file, day).display())))
            }
            None => Ok(Shard::new(stream.profile, &self.key, day)),
        }
    }

    /// Every day this device has a shard for in `stream`.
    pub(crate) fn own_days(&self, stream: &Stream) -> Result<Vec<String>> {
        let dir = self.state.own_dir(&stream.file);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut days: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let day = name.strip_suffix(".json")?;
                (day.len() == 10 && day.as_bytes()[4] == b'-').then(|| day.to_string())
            })
            .collect();
        days.sort();
        Ok(days)
    }

    /// Marks files of this device's directory as changed since the last commit, before
    /// they are written (a crash leaves a mark too many, never one too few).
    fn mark_dirty(&self, stream: &Stream, names: &BTreeSet<String>) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        journal::append_durably(&self.state.dirty(&stream.file), text.as_bytes())
    }

    /// Writes own files (shards by day, or other ledger files by name), marking them dirty.
    pub(crate) fn write_own(&self, stream: &Stream, files: &[(String, LedgerFile)]) -> Result<()> {
        let names: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
        self.mark_dirty(stream, &names)?;
        self.write_own_local(stream, files)
    }

    /// Writes own files whose committed part did not change (local bookkeeping only).
    pub(crate) fn write_own_local(&self, stream: &Stream, files: &[(String, LedgerFile)]) -> Result<()> {
        self.state.ensure(&self.state.own_dir(&stream.file))?;
        let mut durable = crate::fsutil::Durable::default();
        for (name, file) in files {
            let path = match file {
                LedgerFile::Shard(s) => self.state.own_shard(&stream.file, &s.day),
                _ => self.state.own_file(&stream.file, name),
            };
            durable.write(&path, &file.render_own())?;
        }
        durable.finish();
        Ok(())
    }

    /// This device's residual file of a stream (with its file-mode bookkeeping).
    pub(crate) fn own_residual(&self, stream: &Stream) -> Result<shard::Residual> {
        match self.read_own(&self.state.own_file(&stream.file, "residual.json"))? {
            Some(LedgerFile::Residual(r)) => Ok(r),
            _ => Ok(shard::Residual {
                profile: stream.profile,
                device: self.key.clone(),
                counters: serde_json::json!({}),
                local: serde_json::Value::Null,
            }),
        }
    }

    pub(crate) fn own_floors(&self, stream: &Stream) -> Result<Option<shard::Floors>> {
        match self.read_own(&self.state.own_file(&stream.file, "floors.json"))? {
            Some(LedgerFile::Floors(f)) => Ok(Some(f)),
            _ => Ok(None),
        }
    }

    /// This device's files changed since the last commit, as they are to be committed:
    /// `(path in the work tree, bytes)`; with `all`, every file of this device (when the
    /// tree may have lost some: a reset branch, a rewritten remote). The device file comes
    /// along when the name changed.
    pub fn changed_files(&self, all: bool) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for stream in self.streams.iter().chain(&self.orphans) {
            out.extend(self.changed_files_of(stream, all)?);
        }
        Ok(out)
    }

    /// [`Ledger::changed_files`] of one stream.
    pub(crate) fn changed_files_of(&self, stream: &Stream, all: bool) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        {
            let mut names: BTreeSet<String> =
                journal::read_lines(&self.state.dirty(&stream.file))?.into_iter().collect();
            if all {
                for day in self.own_days(stream)? {
                    names.insert(format!("{day}.json"));
                }
                if self.own_floors(stream)?.is_some() {
                    names.insert("floors.json".into());
                }
                if self.own_residual(stream)?.counters.as_object().is_some_and(|m| !m.is_empty()) {
                    names.insert("residual.json".into());
                }

                if self.state.own_file(&stream.file, "device.name").exists() {
                    names.insert("device.json".into());
                }
            }

            // The device's name comes with its first files, and with a rename after that.
            let committed_before = self.state.own_file(&stream.file, "device.name").exists();
            if (committed_before || !names.is_empty()) && self.device_file_changed(stream)? {
                names.insert("device.json".into());
            }

            for name in names {
                let (rel, bytes) = if name == "device.json" {
                    (name.clone(), self.device_file(stream).render())
                } else if let Some(day) = day_of_name(&name) {
                    (Stream::shard_name(day), LedgerFile::Shard(self.own_shard(stream, day)?).render())
                } else {
                    match self.read_own(&self.state.own_file(&stream.file, &name))? {
                        Some(f) => (name.clone(), f.render()),
                        None => continue,
                    }
                };
                out.push((format!("{}/{rel}", stream.device_dir(&self.key)), bytes));
            }
        }
        Ok(out)
    }

    /// Forgets the dirty marks once what they named is committed.
    pub fn committed(&self) -> Result<()> {
        for stream in self.streams.iter().chain(&self.orphans) {
            let p = self.state.dirty(&stream.file);
            if !p.exists() && !self.state.own_file(&stream.file, "device.name").exists() {
                continue; // nothing of this device committed yet
            }
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }

            self.state.ensure(&self.state.own_dir(&stream.file))?;
            crate::fsutil::write_atomic_changed(
                &self.state.own_file(&stream.file, "device.name"),
                self.config.device.as_bytes(),
            )?;
        }
        Ok(())
    }

    fn device_file(&self, _stream: &Stream) -> LedgerFile {
        let named_at = std::fs::metadata(self.state.device())
            .ok()
            .and_then(|m| m.modified().ok())
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let named_at = std::fs::read_to_string(self.state.root().join("device.named_at")).unwrap_or(named_at);
        LedgerFile::Device(shard::DeviceFile { device: self.key.clone(), name: self.config.device.clone(), named_at })
    }

    /// Whether the device file must be (re)committed: never committed, or renamed since.
    fn device_file_changed(&self, stream: &Stream) -> Result<bool> {
        let last = std::fs::read_to_string(self.state.own_file(&stream.file, "device.name")).ok();
        if last.as_deref() != Some(self.config.device.as_str()) {
            // A rename takes effect from now on: the later name wins in a join.
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            if last.is_some() || !self.state.root().join("device.named_at").exists() {
                write_atomic(&self.state.root().join("device.named_at"), now.as_bytes())?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Events recorded but not folded yet, parsed (for reports).
    pub fn pending_events(&self) -> Result<Vec<Event>> {
        let now = chrono::Utc::now().fixed_offset();
        Ok(self.journal().pending()?.iter().filter_map(|l| Event::parse(l, now, &self.config.device).ok()).collect())
    }

    /// `stream` with its profile chosen again from what git now holds, when it was only the
    /// default: a clone made before anyone pushed usage learns the format of the others'
    /// ledger files from its first pull, and writes its first view in that format.
    pub fn rechoose(&self, stream: &Stream, hints: &dyn Fn(&str) -> ProfileHints) -> Stream {
        if !stream.by_default {
            return stream.clone();
        }
        match choose_by_evidence(&self.state, &self.top, &stream.file, hints) {
            Some(p) => {
                remember_profile(&self.state, &stream.file, p);
                Stream { file: stream.file.clone(), profile: p, by_default: false }
            }
            None => stream.clone(),
        }
    }

    /// The stream of a usage file (relative to the top), if it is one.
    pub fn stream(&self, file: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.file == file)
    }
}

/// `2026-11/2026-11-03.json` (a path below a device's directory) → `2026-11-03`.
pub fn day_of_path(rel: &str) -> Option<&str> {
    day_of_name(rel.rsplit('/').next()?)
}

/// `2026-11-03.json` → `2026-11-03`: the own file of a day's shard.
fn day_of_name(name: &str) -> Option<&str> {
    let day = name.strip_suffix(".json")?;
    (day.len() == 10 && day.as_bytes()[4] == b'-' && day.as_bytes()[7] == b'-').then_some(day)
}

/// What git knows of a stream's profile, looked up only when needed: its `tally-profile`
/// attribute, and the profile of what is committed (ledger files, or a file committed by
/// an application or git-tally 0.1).
#[derive(Default)]
pub struct ProfileHints {
    pub attribute: Option<&'static Profile>,
    pub committed: Option<&'static Profile>,
}

/// The profile of a stream: `tally.profile`, the attribute, this device's shards, the
/// committed ledger or file, the file an application wrote in the work tree, else the
/// native format (ccu files in the per-machine layout). Evidence first: a format chosen
/// by default never sticks once an application's file shows another.
fn choose_profile(
    config: &Config,
    state: &StateDir,
    top: &Path,
    file: &str,
    hints: &dyn Fn(&str) -> ProfileHints,
) -> Result<(&'static Profile, bool)> {
    if let Some(name) = &config.profile {
        return profile::by_name(name).map(|p| (p, false)).ok_or_else(|| {
            Error::Usage(format!(
                "git config tally.profile = {name:?}: unknown profile; known: {}",
                profile::names().join(", ")
            ))
        });
    }
    // The profile found before, from evidence (a stream's format is fixed once it has data).
    let cached = state.own_file(file, "profile");
    if let Some(p) = std::fs::read_to_string(&cached).ok().and_then(|n| profile::by_name(n.trim())) {
        return Ok((p, false));
    }
    let found = choose_by_evidence(state, top, file, hints);
    if let Some(p) = found {
        remember_profile(state, file, p);
        return Ok((p, false));
    }
    let default = if config.per_machine && file.ends_with(crate::config::MANIFEST) {
        profile::by_name("ccu-manifest").expect("exists")
    } else if config.per_machine {
        profile::by_name("ccu-usage").expect("exists")
    } else {
        profile::by_name("tally").expect("exists")
    };
    Ok((default, true))
}

/// Keeps the profile evidence showed for a stream (its format is fixed once it has data).
fn remember_profile(state: &StateDir, file: &str, p: &'static Profile) {
    if state.ensure(&state.own_dir(file)).is_ok() {
        let _ = write_atomic(&state.own_file(file, "profile"), p.name.as_bytes());
    }
}

/// A stream's profile from evidence: its attribute, this device's shards, what is
/// committed, the application's file in the work tree.
fn choose_by_evidence(
    state: &StateDir,
    top: &Path,
    file: &str,
    hints: &dyn Fn(&str) -> ProfileHints,
) -> Option<&'static Profile> {
    let hints = hints(file);
    if let Some(p) = hints.attribute {
        return Some(p);
    }

    // This device's shards say which profile the stream was started with.
    if let Ok(entries) = std::fs::read_dir(state.own_dir(file)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if day_of_name(&name).is_none() {
                continue;
            }
            if let Ok(LedgerFile::Shard(s)) =
                std::fs::read(e.path()).map(|b| LedgerFile::parse(&b)).unwrap_or(Err(shard::BadFile(String::new())))
            {
                return Some(s.profile);
            }
        }
    }
    if let Some(p) = hints.committed {
        return Some(p);
    }
    if let Ok(bytes) = std::fs::read(top.join(file)) {
        if let Ok(v) = crate::json::parse(&bytes) {
            let p = profile::detect(&[Some(&v)]);
            if p.name != "generic" || !v.as_object().is_some_and(|m| m.is_empty()) {
                return Some(if p.name == "tally-v1" { profile::by_name("tally").expect("native") } else { p });
            }
        }
    }
    None
}

/// This device's streams with ledger files that no configured usage file names.
fn orphans(state: &StateDir, streams: &[Stream]) -> Vec<Stream> {
    let mut out = Vec::new();
    for file in state.own_streams() {
        if streams.iter().any(|s| s.file == file) {
            continue;
        }
        let dir = state.own_dir(&file);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut profile =
            std::fs::read_to_string(state.own_file(&file, "profile")).ok().and_then(|n| profile::by_name(n.trim()));
        let mut has_data = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if day_of_name(&name).is_some() || ["residual.json", "floors.json"].contains(&name.as_str()) {
                has_data = true;
                if profile.is_none() {
                    if let Ok(Ok(f)) = std::fs::read(e.path()).map(|b| LedgerFile::parse(&b)) {
                        profile = Some(match f {
                            LedgerFile::Shard(s) => s.profile,
                            LedgerFile::Residual(r) => r.profile,
                            LedgerFile::Floors(f) => f.profile,
                            LedgerFile::Device(_) => continue,
                        });
                    }
                }
            }
        }
        if let (true, Some(profile)) = (has_data, profile) {
            out.push(Stream { file, profile, by_default: false });
        }
    }
    out
}

/// Days since the epoch of today (UTC), for the id horizon.
pub(crate) fn today() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86400)
}

/// The UTC day of an event: the shard it counts in.
pub(crate) fn utc_day(e: &Event) -> String {
    use chrono::Datelike;
    let u = e.timestamp.naive_utc();
    if !(0..=9999).contains(&u.year()) {
        return u.format("%Y-%m-%d").to_string();
    }
    format!("{:04}-{:02}-{:02}", u.year(), u.month(), u.day())
}

/// Files of other devices, grouped: device key → (path below its directory → bytes).
pub(crate) fn by_device(files: Vec<(String, Vec<u8>)>) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let mut out: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (path, bytes) in files {
        if let Some((dev, rest)) = path.split_once('/') {
            out.entry(dev.to_string()).or_default().push((rest.to_string(), bytes));
        }
    }
    out
}

#[cfg(test)]
mod recorded_tests {
    use super::*;

    #[test]
    fn a_long_running_recorder_forgets_the_ids_of_folded_segments_and_still_counts_a_retry_once() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(&git).unwrap();
        let config = Config {
            files: vec!["usage/usage.json".into()],
            profile: Some("tally".into()),
            device: "d".into(),
            ..Config::default()
        };
        let ledger = Ledger::open(dir.path(), &git.join("tally"), &git, config, &|_| Default::default()).unwrap();
        let event = |i: usize| {
            let line = format!(
                r#"{{"id":"r{i}","timestamp":"2026-11-30T10:00:00Z","provider":"p","model":"m","input_tokens":5,"output_tokens":1,"cost_usd":0.0}}"#
            );
            Event::parse(&line, chrono::Utc::now().fixed_offset(), "d").unwrap()
        };
        let batch = |from: usize, n: usize| (from..from + n).map(event).collect::<Vec<_>>();
        assert_eq!(ledger.record(batch(0, RECORDED_PRUNE_AT)).unwrap().recorded, RECORDED_PRUNE_AT);
        assert_eq!(ledger.record(batch(0, 1)).unwrap().duplicates, 1, "a replay before the fold");
        assert_eq!(ledger.recorded.borrow().len(), RECORDED_PRUNE_AT, "nothing folded: all held");
        ledger.fold().unwrap();
        assert_eq!(ledger.record(batch(RECORDED_PRUNE_AT, 1)).unwrap().recorded, 1);
        assert_eq!(ledger.recorded.borrow().len(), 1, "the folded segment's ids forgotten");
        assert_eq!(ledger.record(batch(5, 1)).unwrap().duplicates, 1, "a replay after the fold: the ids remember it");
    }
}
