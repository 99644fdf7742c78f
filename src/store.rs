//! The write path and sync (SPEC §5, §6): a `Store` is one repository's usage ledger.
//!
//! `record` appends events to a journal under `.git/tally/` and fsyncs it, so its cost
//! does not depend on the size of the usage file. Every command that commits first
//! folds the journal into the usage file (crash-safe: a marker says which file the fold
//! produced), commits only the usage paths, fetches, integrates with the merge driver
//! forced on, and pushes without force, retrying rejected pushes.

use crate::config::{AppReads, Config};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::fsutil::write_atomic;
use crate::git::Git;
use crate::json::{self, Layout};
use crate::lock::Lock;
use crate::profile::{self, Profile};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Fold the journal into the file once it is this large (about 10,000 events), so that
/// reading it (for duplicate ids) stays cheap however long a machine goes without syncing.
const AUTO_FOLD_BYTES: u64 = 4 << 20;
/// Ids of folded events kept for recognising retried events.
const SEEN_KEEP: usize = 100_000;

/// One repository's usage ledger.
pub struct Store {
    top: PathBuf,
    git_dir: PathBuf,
    state: PathBuf,
    git: Option<Git>,
    config: Config,
}

/// What `record` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub recorded: usize,
    /// Events whose id was recorded before (a retry): counted once.
    pub duplicates: usize,
    pub pulled: bool,
    /// Why the pull before the write failed, if it did (the events are recorded anyway).
    pub pull_error: Option<String>,
}

/// What a `pull`, `sync` or `flush` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub folded: usize,
    pub committed: bool,
    pub integrated: bool,
    pub pushed: bool,
    pub push_retries: u32,
}

/// The persistent part of the state, in `.git/tally/state.json`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub last_pull: Option<u64>,
    pub last_sync: Option<u64>,
    pub last_result: Option<String>,
    pub uncommitted_events: usize,
    #[serde(default)]
    pub app_writes: usize,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// FNV-1a: names journal files after usage paths and fingerprints fold results.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Decisions about the ledger when GIT_TALLY_TRACE is set (for crash analysis): on stderr,
/// or appended to the file it names when that is an absolute path.
fn trace(what: std::fmt::Arguments<'_>) {
    let Some(to) = std::env::var_os("GIT_TALLY_TRACE") else { return };
    let line = format!("git-tally[{}]: {what}\n", std::process::id());
    if Path::new(&to).is_absolute() {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&to) {
            let _ = f.write_all(line.as_bytes());
        }
    } else {
        eprint!("{line}");
    }
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

impl Store {
    /// Discovers the repository around `dir` and loads its configuration.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref();
        Store::open_with(dir, Config::load_at(dir)?)
    }

    /// The test seam: a store with the given configuration.
    pub fn open_with(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        let dir = dir.as_ref();
        let repo = crate::config::discover(dir).or_else(|| {
            let probe = Git::new(dir);
            probe.toplevel().ok().zip(probe.git_dir().ok())
        });
        match (repo, config.enabled) {
            (Some((top, git_dir)), _) => {
                let git = config.enabled.then(|| Git::new(&top));
                Ok(Store { top, state: git_dir.join("tally"), git_dir, git, config })
            }
            (None, false) => Ok(Store {
                top: dir.to_path_buf(),
                git_dir: dir.join(".git-tally"),
                state: dir.join(".git-tally"),
                git: None,
                config,
            }),
            (None, true) => Err(Error::Usage(format!(
                "{} is not inside a git work tree; clone your usage repository, or set tally.enabled=false for local-only use",
                dir.display()
            ))),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn top(&self) -> &Path {
        &self.top
    }

    /// The usage file `record` writes (the first configured one).
    pub fn file(&self) -> PathBuf {
        self.top.join(&self.config.files[0])
    }

    fn key(&self, rel: &Path) -> String {
        format!("{:016x}", fnv(rel.to_string_lossy().as_bytes()))
    }

    fn journal(&self, rel: &Path) -> PathBuf {
        self.state.join(format!("journal-{}.jsonl", self.key(rel)))
    }

    fn lock(&self, what: &str) -> Result<Lock> {
        Lock::acquire(&self.state, self.config.lock_timeout, what)
    }

    fn git(&self) -> Result<&Git> {
        self.git.as_ref().ok_or_else(|| Error::Usage("tally.enabled is false: no git operations".into()))
    }

    pub fn state(&self) -> State {
        std::fs::read(self.state.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_state(&self, state: &State) -> Result<()> {
        std::fs::create_dir_all(&self.state).map_err(|e| Error::io(&self.state, e))?;
        write_atomic(&self.state.join("state.json"), &serde_json::to_vec_pretty(state).expect("state serialises"))
    }

    fn profile_for(&self, doc: Option<&Value>) -> Result<&'static Profile> {
        if let Some(name) = &self.config.profile {
            return profile::by_name(name)
                .ok_or_else(|| Error::Usage(format!("git config tally.profile = {name:?}: unknown profile")));
        }
        Ok(match doc {
            Some(d) => profile::detect(&[Some(d)]),
            None if self.config.per_machine => profile::by_name("ccu-usage").expect("the per-machine profile exists"),
            None => profile::by_name("tally").expect("the native profile exists"),
        })
    }

    /// Records `events` durably; retried events (same id) count once.
    pub fn record(&self, mut events: Vec<Event>) -> Result<Recorded> {
        let _lock = self.lock("record")?;
        let rel = self.config.files[0].clone();
        self.recover_fold(&rel)?;
        let mut report = Recorded::default();
        if let (Some(age), Some(git)) = (self.config.pull_max_age, &self.git) {
            let last = self.state().last_pull.unwrap_or(0);
            if now_secs().saturating_sub(last) >= age.as_secs() || age.is_zero() {
                // The merge is exact, so a failed pull loses nothing: record anyway.
                match self.pull_locked(git, None) {
                    Ok(_) => report.pulled = true,
                    Err(e) => report.pull_error = Some(e.to_string()),
                }
            }
        }
        let journal = self.journal(&rel);
        let explicit: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
        // Ids recorded before: folded recently (the seen list, borrowed from its text) or
        // pending in the journal.
        let (seen_text, pending): (String, Vec<String>) = if explicit.is_empty() {
            Default::default()
        } else {
            (
                std::fs::read_to_string(self.state.join(format!("seen-{}.ids", self.key(&rel)))).unwrap_or_default(),
                read_lines(&journal)?.iter().filter_map(|l| Event::id_of_line(l)).collect(),
            )
        };
        let mut seen: HashSet<&str> = seen_text.lines().collect();
        seen.extend(pending.iter().map(String::as_str));
        let mut batch = HashSet::new();
        let before = events.len();
        events.retain(|e| match &e.id {
            Some(id) => !seen.contains(id.as_str()) && batch.insert(id.clone()),
            None => true,
        });
        report.duplicates = before - events.len();
        let nonce = random();
        let mut text = String::new();
        for (i, e) in events.iter_mut().enumerate() {
            if e.id.is_none() {
                e.id =
                    Some(format!("{}-{:x}-{nonce:016x}-{i}", e.device, e.timestamp.timestamp_nanos_opt().unwrap_or(0)));
            }
            text.push_str(&e.to_line());
            text.push('\n');
        }
        if !text.is_empty() {
            append_durably(&journal, text.as_bytes())?;
        }
        report.recorded = events.len();
        let size = std::fs::metadata(&journal).map_or(0, |m| m.len());
        if !self.config.enabled || self.git.is_none() || size >= AUTO_FOLD_BYTES {
            self.fold_locked(&rel)?;
        }
        Ok(report)
    }

    /// A fold interrupted by a crash: finish it if the ledger was replaced, else undo it.
    fn recover_fold(&self, rel: &Path) -> Result<()> {
        let marker = self.state.join(format!("fold-{}.pending", self.key(rel)));
        let Ok(bytes) = std::fs::read(&marker) else { return Ok(()) };
        let want = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v["hash"].as_u64());
        let ledger = std::fs::read(self.ledger_copy(rel)).unwrap_or_default();
        if want == Some(fnv(&ledger)) {
            self.finish_fold(rel, &read_lines(&self.journal(rel))?)?;
        }
        std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))
    }

    /// Moves the folded journal's ids to the seen list and empties the journal.
    fn finish_fold(&self, rel: &Path, lines: &[String]) -> Result<()> {
        let seen = self.state.join(format!("seen-{}.ids", self.key(rel)));
        let mut ids: Vec<String> = read_lines(&seen)?;
        ids.extend(lines.iter().filter_map(|l| Event::id_of_line(l)));
        if ids.len() > SEEN_KEEP {
            ids.drain(..ids.len() - SEEN_KEEP);
        }
        let mut text = ids.join("\n");
        text.push('\n');
        write_atomic(&seen, text.as_bytes())?;
        let journal = self.journal(rel);
        if journal.exists() {
            let f = std::fs::OpenOptions::new().write(true).open(&journal).map_err(|e| Error::io(&journal, e))?;
            f.set_len(0).and_then(|_| f.sync_all()).map_err(|e| Error::io(&journal, e))?;
        }
        Ok(())
    }

    /// Applies the journal to the ledger and the usage file; returns how many events it held.
    fn fold_locked(&self, rel: &Path) -> Result<usize> {
        self.recover_fold(rel)?;
        let lines = read_lines(&self.journal(rel))?;
        if lines.is_empty() {
            return Ok(0);
        }
        let path = self.top.join(rel);
        let old = self.ledger_bytes(rel)?;
        self.note_base_if_new(rel)?;
        let (mut doc, layout) = match &old {
            Some(bytes) => {
                let doc = json::parse(bytes).map_err(|p| {
                    Error::Failed(format!("{}: {p}; the events stay in the journal until it is fixed", path.display()))
                })?;
                (Some(doc), Layout::detect(bytes))
            }
            None => (None, Layout::default()),
        };
        let profile = self.profile_for(doc.as_ref())?;
        let apply = profile.apply.ok_or_else(|| {
            Error::Usage(format!("{}: the {} profile has no events to record", path.display(), profile.name))
        })?;
        let doc = doc.get_or_insert_with(|| (profile.empty)());
        let now = chrono::Utc::now().fixed_offset();
        let events = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                Event::parse(line, now, &self.config.device)
                    .map_err(|err| Error::Failed(format!("journal line {}: {err}", i + 1)))
            })
            .collect::<Result<Vec<Event>>>()?;
        let applied = match profile.apply_batch {
            Some(batch) => batch(doc, &events),
            None => events.iter().try_for_each(|e| apply(doc, e)),
        };
        applied.map_err(|err| Error::Failed(format!("{}: {err}", path.display())))?;
        let bytes = layout.write(doc);
        let marker = self.state.join(format!("fold-{}.pending", self.key(rel)));
        write_atomic(&marker, json!({ "hash": fnv(&bytes) }).to_string().as_bytes())?;
        self.leave(rel, &bytes, old.as_deref())?;
        if self.config.per_machine {
            self.update_manifest(doc)?;
        }
        self.finish_fold(rel, &lines)?;
        std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
        let mut state = self.state();
        state.uncommitted_events += lines.len();
        self.save_state(&state)?;
        Ok(lines.len())
    }

    /// The per-machine layout's manifest: this machine's entry follows its file.
    fn update_manifest(&self, machine_doc: &Value) -> Result<()> {
        let Some(rel) = self.config.files.get(1) else { return Ok(()) };
        let old = self.ledger_bytes(rel)?;
        let mut manifest = match &old {
            Some(b) => json::parse(b).map_err(|p| Error::Failed(format!("{}: {p}", rel.display())))?,
            None => (profile::by_name("ccu-manifest").expect("manifest profile").empty)(),
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let file = self.config.files[0].file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let entry = json!({
            "machine_name": self.config.device,
            "last_sync": now,
            "last_record_date": machine_doc["data_range"]["newest"],
            "total_records": machine_doc["statistics"]["total_records"],
            "current_file": file,
            "backups": [],
        });
        let machines =
            manifest.as_object_mut().expect("manifest object").entry("machines").or_insert_with(|| json!([]));
        if let Value::Array(list) = machines {
            match list.iter_mut().find(|m| m["machine_name"] == json!(self.config.device)) {
                Some(m) => {
                    let backups = m["backups"].clone();
                    *m = entry;
                    m["backups"] = backups;
                }
                None => list.push(entry),
            }
        }
        manifest["last_updated"] = json!(now);
        let layout = old.as_deref().map(Layout::detect).unwrap_or_default();
        self.note_base_if_new(rel)?;
        self.leave(rel, &layout.write(&manifest), old.as_deref())?;
        Ok(())
    }

    fn ledger_copy(&self, rel: &Path) -> PathBuf {
        self.state.join(format!("ledger-{}.json", self.key(rel)))
    }

    fn prev_copy(&self, rel: &Path) -> PathBuf {
        self.state.join(format!("app-{}.json", self.key(rel)))
    }

    fn read_copy(&self, rel: &Path) -> PathBuf {
        self.state.join(format!("pulled-{}.json", self.key(rel)))
    }

    /// The commit the ledger copy builds on: the ledger is that commit's version of the
    /// file plus the local changes not committed yet.
    fn base_copy(&self, rel: &Path) -> PathBuf {
        self.state.join(format!("ledger-{}.base", self.key(rel)))
    }

    fn set_bases(&self, commit: &str) -> Result<()> {
        for rel in &self.config.files {
            if self.ledger_copy(rel).exists() {
                write_atomic(&self.base_copy(rel), commit.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Brings each ledger onto HEAD when HEAD moved without it (a sync killed half way, or
    /// the user's own `git pull`): the local changes are merged onto HEAD's version, so a
    /// stale ledger can never be committed over newer history.
    fn reconcile(&self, git: &Git) -> Result<()> {
        let Some(head) = self.head(git)? else { return Ok(()) };
        for rel in &self.config.files {
            let Ok(ledger) = std::fs::read(self.ledger_copy(rel)) else { continue };
            let base = std::fs::read_to_string(self.base_copy(rel)).ok();
            if base.as_deref() == Some(head.as_str()) {
                continue;
            }
            let path = rel.to_string_lossy();
            let at_head = git.blob(&head, &path)?;
            let at_base = match &base {
                Some(b) => git.blob(b, &path)?,
                None => None,
            };
            let merged = match (&at_base, &at_head) {
                (_, None) => ledger.clone(),
                (_, Some(h)) if *h == ledger => h.clone(),
                (Some(o), Some(h)) if *o == ledger => h.clone(),
                (o, Some(h)) => {
                    let m = crate::merge::merge_bytes(None, o.as_deref().unwrap_or_default(), h, &ledger)
                        .map_err(|e| Error::Failed(format!("{path}: cannot carry local usage onto HEAD: {e}")))?;
                    if !m.conflicts.is_empty() {
                        return Err(Error::Failed(format!("{path}: local usage conflicts with HEAD; resolve by hand")));
                    }
                    m.output
                }
            };
            self.leave(rel, &merged, Some(&ledger))?;
            write_atomic(&self.base_copy(rel), head.as_bytes())?;
        }
        Ok(())
    }

    /// The ledger: what git-tally last left in the work tree, else the committed file.
    fn ledger_bytes(&self, rel: &Path) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.ledger_copy(rel)) {
            Ok(b) => return Ok(Some(b)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(self.ledger_copy(rel), e)),
            Err(_) => {}
        }
        if let Some(git) = &self.git {
            if let Some(b) = git.blob("HEAD", &rel.to_string_lossy())? {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// A ledger copy about to be made from HEAD's version builds on HEAD.
    fn note_base_if_new(&self, rel: &Path) -> Result<()> {
        if self.ledger_copy(rel).exists() {
            return Ok(());
        }
        if let Some(git) = &self.git {
            if let Some(head) = self.head(git)? {
                std::fs::create_dir_all(&self.state).map_err(|e| Error::io(&self.state, e))?;
                write_atomic(&self.base_copy(rel), head.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Makes `bytes` the ledger and writes them to the work tree, unless the application
    /// wrote the file since `expected` was there (its write is ingested next time).
    fn leave(&self, rel: &Path, bytes: &[u8], expected: Option<&[u8]>) -> Result<bool> {
        write_atomic(&self.ledger_copy(rel), bytes)?;
        let path = self.top.join(rel);
        // Held open: after the rename, the file checked here tells whether the application
        // wrote into it meanwhile.
        let mut held = std::fs::File::open(&path).ok();
        let current = held.as_mut().and_then(|f| {
            let mut b = Vec::new();
            f.read_to_end(&mut b).ok().map(|_| b)
        });
        let ours = current.as_deref().is_some_and(|c| self.wrote(rel, c));
        trace(format_args!(
            "leave {:x}: work tree {:?} ours={ours} expected={}",
            fnv(bytes),
            current.as_deref().map(fnv),
            current.as_deref() == expected
        ));
        if current.is_none() || ours || current.as_deref() == expected || current.as_deref() == Some(bytes) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            // Remember what we write, so that it is never taken for the application's:
            // both versions while the file changes, so that whatever a crash leaves in the
            // work tree is recognised.
            let new = fnv(bytes).to_string();
            if current.as_deref() != Some(bytes) {
                let mut both = std::fs::read_to_string(self.written_copy(rel)).unwrap_or_default();
                both.push_str(&format!("\n{new}"));
                write_atomic(&self.written_copy(rel), both.trim().as_bytes())?;
                let checked = held.zip(current);
                if !write_back(&path, bytes, checked, || {})? {
                    trace(format_args!("leave: the application wrote during the rename; its write is back"));
                    write_atomic(&self.written_copy(rel), new.as_bytes())?;
                    return Ok(false);
                }
            }
            write_atomic(&self.written_copy(rel), new.as_bytes())?;
            return Ok(true);
        }
        Ok(false)
    }

    fn written_copy(&self, rel: &Path) -> PathBuf {
        self.state.join(format!("written-{}", self.key(rel)))
    }

    /// Whether `bytes` are what git-tally itself last wrote to the work tree.
    fn wrote(&self, rel: &Path, bytes: &[u8]) -> bool {
        let hash = fnv(bytes).to_string();
        std::fs::read_to_string(self.written_copy(rel)).is_ok_and(|h| h.lines().any(|l| l.trim() == hash))
    }

    /// Ingests an application's write of the usage file into the ledger (SPEC §5b).
    fn ingest_locked(&self, rel: &Path) -> Result<bool> {
        let path = self.top.join(rel);
        let Ok(app) = std::fs::read(&path) else { return Ok(false) };
        let Some(ledger) = self.ledger_bytes(rel)? else {
            // The first sight of the file: it is the ledger, once it is whole.
            let Some(app) = settled(&path, app)? else { return Ok(false) };
            self.note_base_if_new(rel)?;
            write_atomic(&self.ledger_copy(rel), &app)?;
            write_atomic(&self.written_copy(rel), fnv(&app).to_string().as_bytes())?;
            write_atomic(&self.prev_copy(rel), &app)?;
            return Ok(false);
        };
        if app == ledger {
            return Ok(false);
        }
        trace(format_args!("ingest? app {:x} ledger {:x} wrote={}", fnv(&app), fnv(&ledger), self.wrote(rel, &app)));
        if self.wrote(rel, &app) {
            // Our own earlier write, left behind by a crash: put the ledger there.
            self.leave(rel, &ledger, Some(&app))?;
            return Ok(false);
        }
        let Some(app) = settled(&path, app)? else { return Ok(false) };
        if app == ledger {
            return Ok(false);
        }
        // What the application started from. Unknown when git-tally never saw a whole write
        // of it (it started before the first sync, or was caught mid-write then): the ledger
        // if the write holds everything the ledger counts, else nothing — taking the ledger
        // would turn what others counted into deletions.
        let unknown = || covers(&app, &ledger).then(|| ledger.clone());
        let base: Option<Vec<u8>> = match self.config.app_reads {
            AppReads::AfterPull => std::fs::read(self.read_copy(rel)).ok().or_else(unknown),
            AppReads::Never => match std::fs::read(self.prev_copy(rel)) {
                Ok(prev) if restarted(&prev, &app) => None,
                Ok(prev) => Some(prev),
                Err(_) => unknown(),
            },
        };
        trace(format_args!("ingest base {:?}", base.as_deref().map(fnv)));
        self.note_base_if_new(rel)?;
        let (merged, _) = crate::merge::ingest_bytes(base.as_deref(), &ledger, &app)
            .map_err(|e| Error::Failed(format!("{}: cannot ingest the application's write: {e}", path.display())))?;
        write_atomic(&self.prev_copy(rel), &app)?;
        self.leave(rel, &merged, Some(&app))?;
        let mut state = self.state();
        state.app_writes += 1;
        self.save_state(&state)?;
        Ok(true)
    }

    /// Folds every usage file's journal (the plain files are then complete).
    pub fn fold(&self) -> Result<usize> {
        let _lock = self.lock("fold")?;
        self.fold_all()
    }

    fn fold_all(&self) -> Result<usize> {
        let mut n = 0;
        for rel in &self.config.files {
            n += self.fold_locked(rel)?;
        }
        Ok(n)
    }

    /// Events recorded but not yet folded into the usage files.
    pub fn pending_events(&self) -> usize {
        self.config.files.iter().map(|rel| count_lines(&self.journal(rel)).unwrap_or(0)).sum()
    }

    /// Refuses repository states where committing or integrating is unsafe (exit 2).
    fn check_safe(&self) -> Result<()> {
        for (entry, what) in [
            ("MERGE_HEAD", "a merge"),
            ("rebase-merge", "a rebase"),
            ("rebase-apply", "a rebase or am"),
            ("CHERRY_PICK_HEAD", "a cherry-pick"),
            ("REVERT_HEAD", "a revert"),
            ("BISECT_LOG", "a bisect"),
        ] {
            if self.git_dir.join(entry).exists() {
                return Err(Error::Usage(format!(
                    "{what} is in progress in {}; finish or abort it first",
                    self.top.display()
                )));
            }
        }
        self.branch().map(drop)
    }

    /// The checked-out branch (`refs/heads/…`), read from HEAD; a detached HEAD is refused.
    fn branch(&self) -> Result<String> {
        let head =
            std::fs::read_to_string(self.git_dir.join("HEAD")).map_err(|e| Error::io(self.git_dir.join("HEAD"), e))?;
        match head.trim().strip_prefix("ref: ") {
            // What git leaves in HEAD when the refs live in a reftable.
            Some("refs/heads/.invalid") => Err(Error::Usage(format!(
                "{} keeps its refs in a reftable, which git-tally cannot read yet; use a clone with the files ref format (`git clone --ref-format=files …`)",
                self.top.display()
            ))),
            Some(r) => Ok(r.to_string()),
            None => Err(Error::Usage("HEAD is detached; check out a branch first".into())),
        }
    }

    /// The commit HEAD points at (`None` on an unborn branch), read from the git directory
    /// like git does; anything unusual (a symbolic ref chain, an odd file) asks git.
    fn head(&self, git: &Git) -> Result<Option<String>> {
        let is_id = |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        let Ok(r) = self.branch() else { return Ok(git.run_optional(&["rev-parse", "-q", "--verify", "HEAD"])?) };
        let common = match std::fs::read_to_string(self.git_dir.join("commondir")) {
            Ok(c) => self.git_dir.join(c.trim()),
            Err(_) => self.git_dir.clone(),
        };
        if let Ok(loose) = std::fs::read_to_string(common.join(&r)) {
            let id = loose.trim();
            return if is_id(id) {
                Ok(Some(id.to_string()))
            } else {
                Ok(git.run_optional(&["rev-parse", "-q", "--verify", "HEAD"])?)
            };
        }
        if let Ok(packed) = std::fs::read_to_string(common.join("packed-refs")) {
            for line in packed.lines() {
                if let Some((id, name)) = line.split_once(' ') {
                    if name == r && is_id(id) {
                        return Ok(Some(id.to_string()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// What the last fetch brought: the first line of FETCH_HEAD.
    fn fetch_head(&self, git: &Git) -> Result<String> {
        let text = std::fs::read_to_string(self.git_dir.join("FETCH_HEAD")).unwrap_or_default();
        let id = text.split(['\t', ' ', '\n']).next().unwrap_or("");
        if (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(id.to_string())
        } else {
            Ok(git.run(&["rev-parse", "FETCH_HEAD"])?)
        }
    }

    /// (remote, branch) to sync with: tally.remote/tally.branch, else the upstream.
    fn upstream(&self) -> Result<(String, String)> {
        let full = self.branch()?;
        let branch = full.trim_start_matches("refs/heads/").to_string();
        let configured = self.config.branches.get(&branch).cloned().unwrap_or_default();
        let remote = self.config.remote.clone().or(configured.0);
        let target = match &self.config.branch {
            Some(b) => Some(b.clone()),
            None => configured
                .1
                .map(|m| m.trim_start_matches("refs/heads/").to_string())
                .or_else(|| self.config.remote.as_ref().map(|_| branch.clone())),
        };
        match (remote, target) {
            (Some(r), Some(b)) => Ok((r, b)),
            _ => Err(Error::Usage(format!(
                "branch {branch} has no remote or upstream; set one with `git branch --set-upstream-to=origin/{branch}` or `git config tally.remote origin`"
            ))),
        }
    }

    /// Commits the ledger of every usage path, built with plumbing from git-tally's own
    /// copy: an application's write is never committed as it stands, and the user's
    /// index and work tree are not touched beyond the usage paths' index entries.
    fn commit_locked(&self, git: &Git) -> Result<bool> {
        let ledgers: Vec<(String, PathBuf)> = self
            .config
            .files
            .iter()
            .filter(|rel| self.ledger_copy(rel).exists())
            .map(|rel| (rel.to_string_lossy().into_owned(), self.ledger_copy(rel)))
            .collect();
        if ledgers.is_empty() {
            return Ok(false);
        }
        let parent = self.head(git)?;
        let files = ledgers
            .iter()
            .map(|(rel, copy)| Ok((rel.clone(), std::fs::read(copy).map_err(|e| Error::io(copy, e))?)))
            .collect::<Result<Vec<(String, Vec<u8>)>>>()?;
        let (tree, changed) = match None::<(String, Vec<(String, String)>)> {
            Some(built) => built,
            None => self.tree_by_plumbing(git, &ledgers, parent.as_deref())?,
        };
        if changed.is_empty() {
            return Ok(false);
        }
        let branch = self.branch()?;
        let state = self.state();
        let mut message = format!("usage: {} events from {}", state.uncommitted_events, self.config.device);
        if state.app_writes > 0 {
            message.push_str(&format!(" (+{} application write(s) ingested)", state.app_writes));
        }
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message.as_str()];
        if let Some(p) = &parent {
            args.extend(["-p", p.as_str()]);
        }
        let commit = self.identity(git)?.run(&args)?;
        let old = parent.unwrap_or_else(|| "0".repeat(40));
        git.run(&["update-ref", "-m", "git-tally: commit usage", &branch, &commit, &old])?;
        self.set_bases(&commit)?;
        git.run_owned(&cacheinfo(&changed))?;
        self.save_state(&State { uncommitted_events: 0, app_writes: 0, ..state })?;
        Ok(true)
    }

    /// `git::tree_with` by plumbing, for repositories gix cannot write to: the blobs, which
    /// of them differ from `parent`'s, and (if any do) the new tree, via a temporary index.
    fn tree_by_plumbing(
        &self,
        git: &Git,
        ledgers: &[(String, PathBuf)],
        parent: Option<&str>,
    ) -> Result<(String, Vec<(String, String)>)> {
        let list: String = ledgers.iter().map(|(_, p)| format!("{}\n", p.display())).collect();
        let blobs = git.run_with_input(&["hash-object", "-w", "--stdin-paths"], list.as_bytes())?;
        let committed = match parent {
            Some(_) => {
                let mut args = vec!["ls-tree", "-z", "HEAD", "--"];
                args.extend(ledgers.iter().map(|(p, _)| p.as_str()));
                parse_ls_tree(&git.run(&args)?)
            }
            None => Default::default(),
        };
        let changed: Vec<(String, String)> = ledgers
            .iter()
            .zip(blobs.lines())
            .filter(|((path, _), blob)| committed.get(path).map(String::as_str) != Some(*blob))
            .map(|((path, _), blob)| (path.clone(), blob.to_string()))
            .collect();
        if changed.is_empty() {
            return Ok((String::new(), changed));
        }
        let index = self.state.join("commit.index");
        let _ = std::fs::remove_file(&index);
        let tmp = git.clone().with_env("GIT_INDEX_FILE", &index.to_string_lossy());
        match parent {
            Some(p) => tmp.run(&["read-tree", p])?,
            None => tmp.run(&["read-tree", "--empty"])?,
        };
        tmp.run_owned(&cacheinfo(&changed))?;
        let tree = tmp.run(&["write-tree"])?;
        let _ = std::fs::remove_file(&index);
        Ok((tree, changed))
    }

    /// git with the merge driver forced on for the usage files, whatever is installed.
    fn with_driver(&self, git: &Git) -> Result<(Git, tempfile::NamedTempFile)> {
        let exe = crate::fsutil::current_exe()?;
        let quoted = format!("'{}'", exe.to_string_lossy().replace('\'', r"'\''"));
        // The override replaces the attributes file git would read, so it starts as a copy
        // of that file (core.attributesFile, else the XDG default).
        let configured = self.config.attributes_file.as_ref().map(|p| p.to_string_lossy().into_owned());
        let mut attrs = crate::config::global_attributes_file(configured.as_deref())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        for f in &self.config.files {
            attrs.push_str(&format!("\n/{} merge=tally\n", f.to_string_lossy()));
        }
        let mut tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io("temporary attributes file", e))?;
        tmp.write_all(attrs.as_bytes()).map_err(|e| Error::io(tmp.path(), e))?;
        let g = git
            .clone()
            .with_config("merge.tally.name", "git-tally: exact merge of usage statistics")
            .with_config("merge.tally.driver", &format!("{quoted} merge %O %A %B -p %P -l %L -s %S -x %X -y %Y"))
            .with_config("core.attributesFile", &tmp.path().to_string_lossy());
        Ok((g, tmp))
    }

    /// Fetches; `None` when the remote has no such branch yet.
    fn fetch(&self, git: &Git, remote: &str, branch: &str) -> Result<Option<String>> {
        match git.run(&["fetch", "--quiet", remote, branch]) {
            Ok(_) => Ok(Some(self.fetch_head(git)?)),
            Err(e) if e.stderr.contains("couldn't find remote ref") => Ok(None),
            Err(e) => Err(Error::Transient(format!(
                "could not fetch from {remote}: {}; your usage is committed locally and will be pushed by the next sync",
                e.stderr
            ))),
        }
    }

    /// Brings the upstream in; returns whether anything came in. A fast-forward, or the
    /// local commits replayed onto the upstream (a rebase) with the merge driver forced
    /// on — all with plumbing: no rebase state, no stash, and the work tree is only
    /// updated afterwards, path by path, never over an application's newer write.
    fn integrate(&self, git: &Git, upstream: &str) -> Result<bool> {
        let head = self.head(git)?;
        let new = match &head {
            None => upstream.to_string(),
            Some(h) if h == upstream => return Ok(false),
            Some(h) => match git.run_optional(&["merge-base", h, upstream])? {
                Some(base) if base == upstream => return Ok(false),
                Some(base) if &base == h => upstream.to_string(),
                base => self.replay(git, h, upstream, base.as_deref())?,
            },
        };
        self.move_to(git, head.as_deref(), &new)?;
        Ok(true)
    }

    /// Replays the local commits since `base` onto `upstream` (all of them for unrelated
    /// histories); a local history with merges is merged instead. Returns the new head;
    /// changes nothing else.
    fn replay(&self, git: &Git, head: &str, upstream: &str, base: Option<&str>) -> Result<String> {
        let (g, _attrs) = self.with_driver(git)?;
        let conflict = |detail: &str| {
            Error::Failed(format!(
                "integrating the upstream conflicts; nothing was changed and your commits are kept{}",
                if detail.is_empty() { String::new() } else { format!(": {detail}") }
            ))
        };
        let tree_of = |args: &[&str]| -> Result<String> {
            match g.run(args) {
                Ok(out) => Ok(out.lines().next().unwrap_or_default().to_string()),
                Err(e) if e.status == Some(1) => Err(conflict(&e.stderr)),
                Err(e) => Err(e.into()),
            }
        };
        let range = match base {
            Some(b) => format!("{b}..{head}"),
            None => head.to_string(),
        };
        // One log for every commit to replay: id, parents, author, message.
        let log = git.run(&["log", "--reverse", "--format=%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%B%x1e", &range])?;
        let commits: Vec<Vec<&str>> = log
            .split('\x1e')
            .map(|c| c.trim_start_matches('\n'))
            .filter(|c| !c.is_empty())
            .map(|c| c.splitn(6, '\x1f').collect())
            .collect();
        if commits.iter().any(|c| c.get(1).is_some_and(|p| p.split(' ').count() > 1)) {
            let tree = tree_of(&["merge-tree", "--write-tree", head, upstream])?;
            return Ok(self.identity(&g)?.run(&[
                "commit-tree",
                &tree,
                "-p",
                head,
                "-p",
                upstream,
                "-m",
                "git-tally: merge the upstream",
            ])?);
        }
        let mut new = upstream.to_string();
        let mut empty_tree = None;
        for c in commits {
            let [id, parent, name, email, date, msg] = c[..] else { continue };
            let parent = match parent {
                "" => empty_tree
                    .get_or_insert(git.run_with_input(&["hash-object", "-t", "tree", "--stdin"], b"")?)
                    .clone(),
                p => p.to_string(),
            };
            let mb = format!("--merge-base={parent}");
            let tree = tree_of(&["merge-tree", "--write-tree", &mb, &new, id])?;
            let author = g
                .clone()
                .with_env("GIT_AUTHOR_NAME", name)
                .with_env("GIT_AUTHOR_EMAIL", email)
                .with_env("GIT_AUTHOR_DATE", date);
            new = self.identity(&author)?.run(&["commit-tree", &tree, "-p", &new, "-m", msg.trim_end()])?;
        }
        Ok(new)
    }

    /// Points the branch at `new` and updates index and work tree for the paths that
    /// changed. Other paths must not have local changes there (exit 2, nothing changed);
    /// usage files are written only where the application has not written since.
    fn move_to(&self, git: &Git, old: Option<&str>, new: &str) -> Result<()> {
        let empty_tree;
        let from = match old {
            Some(o) => o,
            None => {
                empty_tree = git.run_with_input(&["hash-object", "-t", "tree", "--stdin"], b"")?;
                &empty_tree
            }
        };
        // Raw diff: ":<old mode> <new mode> <old blob> <new blob> <status>\0<path>\0".
        let diff = git.run(&["diff-tree", "-r", "-z", "--no-renames", from, new])?;
        let mut fields = diff.split('\0').filter(|f| !f.is_empty());
        let mut changes = Vec::new();
        while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
            let parts: Vec<&str> = meta.split(' ').collect();
            let (blob, status) = (parts.get(3).copied().unwrap_or(""), parts.get(4).copied().unwrap_or(""));
            changes.push((status.to_string(), blob.to_string(), path.to_string()));
        }
        let usage: Vec<String> = self.config.files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
        let others: Vec<&str> =
            changes.iter().map(|(_, _, p)| p.as_str()).filter(|p| !usage.iter().any(|u| u == p)).collect();
        if !others.is_empty() {
            let mut args = vec!["status", "--porcelain", "--"];
            args.extend(others.iter().copied());
            let dirty = git.run(&args)?;
            if !dirty.is_empty() {
                return Err(Error::Usage(format!(
                    "your usage is committed locally, but local changes block bringing in the upstream's changes to the same files:\n{dirty}\ncommit or stash them, then sync again"
                )));
            }
        }
        let branch = self.branch()?;
        let old_ref = old.map_or_else(|| "0".repeat(40), str::to_string);
        git.run(&["update-ref", "-m", "git-tally: integrate the upstream", &branch, new, &old_ref])?;
        let mut entries = Vec::new();
        for (status, blob, path) in &changes {
            let is_usage = usage.iter().any(|u| u == path);
            if status == "D" {
                git.run(&["rm", "-q", "--cached", "--ignore-unmatch", "--", path])?;
                if !is_usage {
                    let _ = std::fs::remove_file(self.top.join(path));
                }
            } else if !is_usage {
                git.run(&["checkout", new, "--", path])?;
            } else {
                let rel = PathBuf::from(path);
                let bytes = git.run_bytes(&["cat-file", "blob", blob])?;
                entries.push((path.clone(), blob.clone()));
                let previous = self.ledger_bytes(&rel)?;
                if self.leave(&rel, &bytes, previous.as_deref())? {
                    // What an application that re-reads after a pull now starts from.
                    write_atomic(&self.read_copy(&rel), &bytes)?;
                }
            }
        }
        self.set_bases(new)?;
        if !entries.is_empty() {
            git.run_owned(&cacheinfo(&entries))?;
        }
        Ok(())
    }

    /// git with an identity for commits when the user has none configured.
    fn identity(&self, git: &Git) -> Result<Git> {
        Ok(if !self.config.has_identity {
            git.clone()
                .with_config("user.name", &format!("git-tally ({})", self.config.device))
                .with_config("user.email", &format!("git-tally@{}", self.config.device))
        } else {
            git.clone()
        })
    }

    fn pull_locked(&self, git: &Git, report: Option<&mut Synced>) -> Result<(String, String, Option<String>)> {
        self.check_safe()?;
        let (remote, branch) = self.upstream()?;
        for rel in &self.config.files {
            self.recover_fold(rel)?;
        }
        self.reconcile(git)?;
        for rel in &self.config.files {
            self.ingest_locked(rel)?;
        }
        let mut r = Synced { folded: self.fold_all()?, ..Synced::default() };
        r.committed = self.commit_locked(git)?;
        let fetched = self.fetch(git, &remote, &branch)?;
        if let Some(up) = &fetched {
            r.integrated = self.integrate(git, up)?;
        }
        let mut state = self.state();
        state.last_pull = Some(now_secs());
        self.save_state(&state)?;
        if let Some(report) = report {
            report.folded += r.folded;
            report.committed |= r.committed;
            report.integrated |= r.integrated;
        }
        Ok((remote, branch, fetched))
    }

    /// Pull-before-write: commit local usage changes, fetch, integrate.
    pub fn pull(&self) -> Result<Synced> {
        let _lock = self.lock("pull")?;
        let mut report = Synced::default();
        self.pull_locked(self.git()?, Some(&mut report))?;
        Ok(report)
    }

    /// Pull, then push; rejected pushes are integrated and retried with backoff.
    pub fn sync(&self) -> Result<Synced> {
        let _lock = self.lock("sync")?;
        let result = self.sync_locked(self.git()?);
        self.note_result(&result)?;
        result
    }

    fn note_result(&self, result: &Result<Synced>) -> Result<()> {
        let mut state = self.state();
        state.last_sync = Some(now_secs());
        state.last_result = Some(match result {
            Ok(r) if r.pushed => "pushed".into(),
            Ok(_) => "up to date".into(),
            Err(e) => format!("failed: {e}"),
        });
        self.save_state(&state)
    }

    fn sync_locked(&self, git: &Git) -> Result<Synced> {
        let mut report = Synced::default();
        let (remote, branch, mut upstream) = self.pull_locked(git, Some(&mut report))?;
        let mut attempt = 0;
        loop {
            // After integrating, HEAD contains the upstream: ahead unless equal.
            let head = self.head(git)?;
            if head.is_none() || head == upstream {
                return Ok(report);
            }
            match git.run(&["push", "--quiet", &remote, &format!("HEAD:refs/heads/{branch}")]) {
                Ok(_) => {
                    report.pushed = true;
                    return Ok(report);
                }
                Err(e) if is_rejection(&e.stderr) && attempt < self.config.push_retries => {
                    attempt += 1;
                    report.push_retries = attempt;
                    let base = 50u64 << attempt.min(6);
                    std::thread::sleep(Duration::from_millis(base + random() % base));
                    let (_, _, up) = self.pull_locked(git, Some(&mut report))?;
                    upstream = up;
                }
                Err(e) if is_rejection(&e.stderr) => {
                    return Err(Error::Transient(format!(
                        "the push to {remote} was rejected {} times (others kept pushing); your commits are kept, sync again",
                        attempt + 1
                    )))
                }
                Err(e) => {
                    return Err(Error::Transient(format!(
                        "could not push to {remote}: {}; your usage is committed locally and will be pushed by the next sync",
                        e.stderr
                    )))
                }
            }
        }
    }

    /// The pre-shutdown sync: commit locally first (works offline), then push within
    /// `timeout`. Never hangs.
    pub fn flush(&self, timeout: Duration) -> Result<Synced> {
        let deadline = Instant::now() + timeout;
        let lock = Lock::acquire(&self.state, timeout.min(self.config.lock_timeout), "flush")?;
        let git = self.git()?.clone();
        self.check_safe()?;
        for rel in &self.config.files {
            self.recover_fold(rel)?;
        }
        self.reconcile(&git)?;
        let mut local = Synced { folded: self.fold_all()?, ..Synced::default() };
        local.committed = self.commit_locked(&git)?;
        let result = self.sync_locked(&git.with_deadline(Some(deadline))).map(|r| Synced {
            folded: local.folded + r.folded,
            committed: local.committed || r.committed,
            ..r
        });
        self.note_result(&result)?;
        drop(lock);
        result.map_err(|e| match e {
            Error::Transient(m) if Instant::now() >= deadline => {
                Error::Transient(format!("flush timed out after {timeout:?}; usage is committed locally ({m})"))
            }
            e => e,
        })
    }

    /// Rewrites every usage file's ledger with `change` (under the lock, after folding),
    /// as an explicit, local change that the next sync commits and merges.
    fn rewrite(&self, what: &str, change: &dyn Fn(&'static Profile, &Value) -> Result<Value>) -> Result<usize> {
        let _lock = self.lock(what)?;
        for rel in &self.config.files {
            self.recover_fold(rel)?;
        }
        if let Some(git) = &self.git {
            self.reconcile(git)?;
            for rel in &self.config.files {
                self.ingest_locked(rel)?;
            }
        }
        self.fold_all()?;
        let mut n = 0;
        for rel in &self.config.files {
            let Some(old) = self.ledger_bytes(rel)? else { continue };
            let doc = json::parse(&old).map_err(|p| Error::Failed(format!("{}: {p}", rel.display())))?;
            let profile = self.profile_for(Some(&doc))?;
            let new = change(profile, &doc)?;
            self.note_base_if_new(rel)?;
            self.leave(rel, &Layout::detect(&old).write(&new), Some(&old))?;
            n += 1;
        }
        Ok(n)
    }

    /// Clears the records, keeping every aggregate (SPEC §8). Other machines' concurrent
    /// records survive the merge; the counters keep everything.
    pub fn clear_history(&self) -> Result<usize> {
        self.rewrite("clear-history", &|profile, doc| {
            let text = serde_json::to_vec(doc).expect("serialises");
            let mut input =
                crate::engine::Input::parse(&text, Some(profile)).map_err(|p| Error::Failed(p.to_string()))?;
            input.settle(profile);
            Ok(input.skeleton)
        })
    }

    /// Zeroes the aggregates and clears the records; merges as a reset (SPEC §4.3): other
    /// machines' concurrent traffic is what remains.
    pub fn reset(&self) -> Result<usize> {
        self.rewrite("reset", &|profile, doc| {
            let empty = (profile.empty)();
            Ok(match profile.envelope {
                Some((key, is_env)) if is_env(doc) => {
                    let mut env = doc.clone();
                    env[key] = empty;
                    env
                }
                _ => empty,
            })
        })
    }

    /// Writes `bytes` as a usage file's content through the ledger (restore in place).
    pub fn replace(&self, rel: &Path, bytes: &[u8]) -> Result<()> {
        let _lock = self.lock("restore")?;
        self.recover_fold(rel)?;
        if let Some(git) = &self.git {
            self.reconcile(git)?;
        }
        self.fold_locked(rel)?;
        let old = self.ledger_bytes(rel)?;
        self.note_base_if_new(rel)?;
        let current = std::fs::read(self.top.join(rel)).ok();
        self.leave(rel, bytes, current.as_deref().or(old.as_deref()))?;
        Ok(())
    }

    /// The files whose change means there is something to sync: each usage file and its
    /// journal.
    pub fn watched(&self) -> Vec<(PathBuf, PathBuf)> {
        self.config.files.iter().map(|rel| (self.top.join(rel), self.journal(rel))).collect()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The usage file's path relative to the work tree: `file` if given, else the first.
    pub fn rel(&self, file: Option<&Path>) -> PathBuf {
        match file {
            Some(f) => f.strip_prefix(&self.top).unwrap_or(f).to_path_buf(),
            None => self.config.files[0].clone(),
        }
    }

    pub fn git_handle(&self) -> Option<&Git> {
        self.git.as_ref()
    }
}

fn is_rejection(stderr: &str) -> bool {
    ["[rejected]", "non-fast-forward", "fetch first", "failed to update ref", "cannot lock ref", "stale info"]
        .iter()
        .any(|s| stderr.contains(s))
}

/// Appends `bytes` and fsyncs; a torn tail left by a crash is cut off first, so that
/// every line in the journal is one whole event.
fn append_durably(path: &Path, bytes: &[u8]) -> Result<()> {
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
        if let Some(d) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The whole lines of a file (a torn last line is not one).
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    Ok(complete.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

fn count_lines(path: &Path) -> Result<usize> {
    match std::fs::read(path) {
        Ok(b) => Ok(b.iter().filter(|&&c| c == b'\n').count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Puts `bytes` at `path` (atomically) after `checked` — the file that was there, held
/// open, and what it held — was found safe to replace. An application that rewrites the
/// file in place may have written into that file between the check and the rename
/// (`between` stands for that moment in tests): its write, not ours, is then the newest,
/// and it is put back for the next run to ingest. Returns whether `bytes` stayed.
fn write_back(
    path: &Path,
    bytes: &[u8],
    checked: Option<(std::fs::File, Vec<u8>)>,
    between: impl FnOnce(),
) -> Result<bool> {
    between();
    write_atomic(path, bytes)?;
    let Some((mut old, seen)) = checked else { return Ok(true) };
    let mut read_old = || -> Option<Vec<u8>> {
        let mut now = Vec::new();
        old.rewind().ok()?;
        old.read_to_end(&mut now).ok()?;
        Some(now)
    };
    let Some(now) = read_old() else { return Ok(true) };
    if now == seen {
        return Ok(true);
    }
    match whole(now, || Ok(read_old().unwrap_or_default()))? {
        Ok(now) => {
            write_atomic(path, &now)?;
            Ok(false)
        }
        Err(_) => Ok(true),
    }
}

/// An application's write once it is whole: one that rewrites in place (truncate, then
/// write) is caught mid-write now and then, so a write that is not JSON is read `again`
/// once after a moment. Still not JSON: what is wrong with it.
fn whole(
    first: Vec<u8>,
    again: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<std::result::Result<Vec<u8>, json::Problem>> {
    if json::parse(&first).is_ok() {
        return Ok(Ok(first));
    }
    std::thread::sleep(Duration::from_millis(50));
    let again = again()?;
    Ok(json::parse(&again).map(|_| again))
}

/// The application's write `app` of `path` once it is whole (see `whole`); else a warning
/// naming the file, and the write is left for the next run.
fn settled(path: &Path, app: Vec<u8>) -> Result<Option<Vec<u8>>> {
    match whole(app, || std::fs::read(path).map_err(|e| Error::io(path, e)))? {
        Ok(app) => Ok(Some(app)),
        Err(problem) => {
            eprintln!("git-tally: warning: {}: {problem}; not ingested, the committed usage is kept", path.display());
            Ok(None)
        }
    }
}

/// Whether an application's write shows it restarted since its previous write: a counter
/// went down, or a creation time changed (SPEC §5b).
fn restarted(prev: &[u8], app: &[u8]) -> bool {
    fn walk(p: &Value, a: &Value, key: &str) -> bool {
        match (p, a) {
            (Value::Object(pm), Value::Object(am)) => {
                pm.iter().any(|(k, pv)| am.get(k).is_some_and(|av| walk(pv, av, k)))
            }
            (Value::Number(pn), Value::Number(an)) => {
                let created = is_creation_time(key);
                let (x, y) = (pn.as_f64().unwrap_or(0.0), an.as_f64().unwrap_or(0.0));
                if created {
                    x != y
                } else {
                    y < x
                }
            }
            (Value::String(ps), Value::String(asv)) => is_creation_time(key) && ps != asv,
            _ => false,
        }
    }
    match (json::parse(prev), json::parse(app)) {
        (Ok(p), Ok(a)) => walk(&p, &a, ""),
        _ => false,
    }
}

/// A "created"-style field: kept at its earliest, so it moves only when an application
/// starts over.
fn is_creation_time(key: &str) -> bool {
    key.to_ascii_lowercase().contains("created")
}

/// Whether `app` counts at least what `ledger` does: every number of the ledger (arrays
/// and creation times aside) is there in `app`, no smaller.
fn covers(app: &[u8], ledger: &[u8]) -> bool {
    fn walk(a: &Value, l: &Value) -> bool {
        match (a, l) {
            (Value::Object(am), Value::Object(lm)) => {
                lm.iter().all(|(k, lv)| is_creation_time(k) || am.get(k).is_some_and(|av| walk(av, lv)))
            }
            (Value::Number(an), Value::Number(ln)) => an.as_f64().unwrap_or(0.0) >= ln.as_f64().unwrap_or(0.0),
            (_, Value::Object(_) | Value::Number(_)) => false,
            _ => true,
        }
    }
    match (json::parse(app), json::parse(ledger)) {
        (Ok(a), Ok(l)) => walk(&a, &l),
        _ => false,
    }
}

/// `path -> blob` from `git ls-tree -z` output.
fn parse_ls_tree(out: &str) -> std::collections::HashMap<String, String> {
    out.split('\0')
        .filter_map(|entry| {
            let (meta, path) = entry.split_once('\t')?;
            Some((path.to_string(), meta.split(' ').nth(2)?.to_string()))
        })
        .collect()
}

/// `git update-index --add --cacheinfo …` for (path, blob) pairs, as one command.
fn cacheinfo(entries: &[(String, String)]) -> Vec<String> {
    let mut args = vec!["update-index".to_string(), "--add".to_string()];
    for (path, blob) in entries {
        args.push("--cacheinfo".into());
        args.push(format!("100644,{blob},{path}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::write_back;
    use std::io::Read;

    fn checked(path: &std::path::Path) -> Option<(std::fs::File, Vec<u8>)> {
        let mut f = std::fs::File::open(path).unwrap();
        let mut seen = Vec::new();
        f.read_to_end(&mut seen).unwrap();
        Some((f, seen))
    }

    #[test]
    fn an_application_write_during_the_write_back_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        std::fs::write(&path, b"{\"requests\": 1}").unwrap();
        let held = checked(&path);
        // The application rewrites in place (truncate, write) into the file just checked.
        let kept = write_back(&path, b"{\"requests\": 5}", held, || {
            std::fs::write(&path, b"{\"requests\": 2}").unwrap();
        })
        .unwrap();
        assert!(!kept);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"requests\": 2}");

        // Nobody writes meanwhile: ours stays.
        let held = checked(&path);
        assert!(write_back(&path, b"{\"requests\": 5}", held, || {}).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"requests\": 5}");

        // A write that never becomes whole is not put back.
        let held = checked(&path);
        let kept = write_back(&path, b"{\"requests\": 6}", held, || {
            std::fs::write(&path, b"{\"requ").unwrap();
        })
        .unwrap();
        assert!(kept);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"requests\": 6}");
    }
}
