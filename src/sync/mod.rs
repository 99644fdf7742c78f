//! Sync (SPEC §6): `Sync { ledger, repo }`. Each of `pull`, `sync` and `flush` is one
//! `prepare` (under the repository lock: finish what a killed run left, fold the journal,
//! ingest application writes, commit this device's changed files), a fetch (no lock: a
//! `record` never waits on the network), an integration planned as data and done
//! in-process, the views written back, and for `sync` and `flush` a push (while the views
//! are written) retried with backoff when another machine pushed first.
//!
//! git processes a sync starts: `fetch` (and `ls-remote` when it fails) and `push`.

mod integrate;
mod moves;
mod tree;

pub use integrate::Plan;
pub use tree::TreeSource;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::git::{Fetched, Git, Head, Pushed, Repo};
use crate::ledger::{Ledger, Stream};
use crate::lock::Lock;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};
use tree::repo_err;

/// Where a sync pulls from and pushes to: `tally.remote`/`tally.branch`, else the
/// branch's upstream. `status` and `sync` use this one lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub remote: String,
    pub branch: String,
    /// The ref the fetch writes: the remote-tracking branch of a configured remote, else
    /// a ref of git-tally's own.
    pub tracking: String,
}

/// What a `pull`, `sync` or `flush` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub folded: usize,
    pub ingested: usize,
    pub committed: bool,
    /// How the upstream came in, if it did.
    pub integrated: Option<Plan>,
    pub pushed: bool,
    pub push_retries: u32,
    /// The upstream's history was rewritten since the last sync (states were joined).
    pub rewritten: bool,
    pub warnings: Vec<String>,
}

/// The persistent part of the state, in `.git/tally/state.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub last_pull: Option<u64>,
    #[serde(default)]
    pub last_sync: Option<u64>,
    #[serde(default)]
    pub last_result: Option<String>,
    /// Events folded since the last commit (for the commit message).
    #[serde(default)]
    pub uncommitted_events: usize,
    /// The upstream commit last integrated or pushed: a rewrite of the upstream's history
    /// shows as this commit no longer being an ancestor.
    #[serde(default)]
    pub last_synced: Option<String>,
    /// The commit HEAD was at when the views were last written (what an application that
    /// re-reads its file saw of other devices; see `IngestSource`).
    #[serde(default)]
    pub viewed: Option<String>,
}

impl State {
    pub fn read(state: &crate::ledger::StateDir) -> State {
        std::fs::read(state.state()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A repository's ledger and the repository, synced together.
pub struct Sync {
    pub ledger: Ledger,
    pub repo: Repo,
    config: Config,
    /// The commit this run's `commit` made last (see `integrate`); a daemon's `Sync` runs
    /// many times, so each run starts without one.
    made: std::sync::Mutex<Option<crate::git::Oid>>,
}

impl Sync {
    /// The repository around `dir`, its configuration read from git config in-process and
    /// then adjusted by `adjust` (`--proxy-config`).
    pub fn open(dir: &Path, adjust: impl FnOnce(&mut Config) -> Result<()>) -> Result<Sync> {
        let repo = Repo::open(dir).map_err(repo_err)?;
        let mut config = Config::from_repo(&repo)?;
        adjust(&mut config)?;
        Sync::open_with(repo, config)
    }

    /// The test seam: a repository with the given configuration.
    pub fn open_with(repo: Repo, config: Config) -> Result<Sync> {
        let state = repo.git_dir().join("tally");
        let hints = |file: &str| profile_hints(&repo, file);
        let ledger = Ledger::open(repo.top(), &state, repo.git_dir(), config.clone(), &hints)?;
        Ok(Sync { ledger, repo, config, made: Default::default() })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn git(&self) -> Git {
        Git::new(self.repo.top())
    }

    fn lock(&self, what: &str, timeout: Duration) -> Result<Lock> {
        Lock::acquire(self.ledger.state().lock_dir(), timeout, what)
    }

    pub fn state(&self) -> State {
        State::read(self.ledger.state())
    }

    fn save_state(&self, state: &State) -> Result<()> {
        self.ledger.state().ensure(self.ledger.state().root())?;
        // Status and hints only (see `State`): not worth a disk flush, written several
        // times a sync.
        crate::fsutil::write_replace(
            &self.ledger.state().state(),
            &serde_json::to_vec_pretty(state).expect("serialises"),
        )
    }

    /// Refuses repository states where committing or integrating is unsafe (exit 2).
    fn check_safe(&self) -> Result<Head> {
        if let Some(what) = self.repo.in_progress() {
            return Err(Error::Usage(format!(
                "{what} is in progress in {}; finish or abort it first",
                self.repo.top().display()
            )));
        }
        self.repo.head().map_err(repo_err)
    }

    /// The one upstream lookup (see [`Upstream`]).
    pub fn upstream(&self) -> Result<Upstream> {
        let head = self.repo.head().map_err(repo_err)?;
        let name = head.name().to_string();
        let configured = self.config.branches.get(&name).cloned().unwrap_or_default();
        let remote = self.config.remote.clone().or(configured.0);
        let branch = match &self.config.branch {
            Some(b) => Some(b.clone()),
            None => configured
                .1
                .map(|m| m.trim_start_matches("refs/heads/").to_string())
                .or_else(|| self.config.remote.as_ref().map(|_| name.clone())),
        };
        match (remote, branch) {
            (Some(remote), Some(branch)) => {
                let tracking = if self.repo.is_remote(&remote) {
                    format!("refs/remotes/{remote}/{branch}")
                } else {
                    format!("refs/tally/upstream/{branch}")
                };
                Ok(Upstream { remote, branch, tracking })
            }
            _ if self.repo.config("remote.origin.url").is_none() && self.config.remote.is_none() => {
                Err(Error::Usage(format!(
                    "there is no remote to sync with: usage is committed locally; add one with `git remote add origin URL` and `git branch --set-upstream-to=origin/{name}` (or `git config tally.remote origin`)"
                )))
            }
            _ => Err(Error::Usage(format!(
                "branch {name} has no upstream: set one with `git branch --set-upstream-to=origin/{name}`, or `git config tally.remote origin`"
            ))),
        }
    }

    /// Local steps, under the lock: finish a killed run's move (its stale `index.lock` and
    /// branch lock released), remove stale temporary files, fold, ingest application
    /// writes, commit this device's changes.
    fn prepare(&self, r: &mut Synced) -> Result<()> {
        // A killed run's index.lock is known by its twin in tmp: released before tmp is emptied.
        self.repo.release_stale_index_lock(&self.ledger.state().tmp());
        self.ledger.state().clean_tmp();
        self.exclude_views()?;
        moves::recover(self)?;
        self.migrate(r)?;
        self.catch_up(r, false)?;
        let n = match self.ledger.fold() {
            Ok(n) => n,
            Err(e) => {
                // A damaged own file: what the repository holds of this device, again.
                self.catch_up(r, true)?;
                self.ledger.fold().map_err(|_| e)?
            }
        };
        r.folded += n;
        if n > 0 {
            let mut s = self.state();
            s.uncommitted_events += n;
            self.save_state(&s)?;
        }
        let head = self.repo.head().map_err(repo_err)?;
        let viewed = self.state().viewed.as_deref().and_then(crate::git::Oid::from_hex);
        let source = tree::IngestSource { repo: &self.repo, head: head.commit, viewed };
        for stream in self.ledger.streams() {
            match self.ledger.ingest(stream, &source)? {
                crate::ledger::Ingested::Taken { .. } => r.ingested += 1,
                crate::ledger::Ingested::Skipped(why) => r.warnings.push(why),
                crate::ledger::Ingested::Nothing => {}
            }
        }
        r.committed |= self.commit()?;
        Ok(())
    }

    /// Brings this device's own files up to what HEAD and the fetched upstream hold of
    /// them, before new events are folded in (a device's contribution only grows, from
    /// its latest state): a lost or damaged own file, a clone restored from a backup whose
    /// original went on syncing. Cheap when nothing lags: a tree that is the one this
    /// device last committed is only checked for files missing here (`everything`: all).
    fn catch_up(&self, r: &mut Synced, everything: bool) -> Result<()> {
        let head = self.repo.head().map_err(repo_err)?;
        let mut trees: Vec<crate::git::Oid> =
            head.commit.map(|c| self.repo.tree_of(c)).transpose().map_err(repo_err)?.into_iter().collect();
        if let Ok(up) = self.upstream() {
            if let Ok(Some(u)) = self.repo.resolve(&up.tracking) {
                trees.push(self.repo.tree_of(u).map_err(repo_err)?);
            }
        }
        for stream in self.ledger.streams() {
            let dir = stream.device_dir(self.ledger.key());
            let remembered = self.remembered_own_tree(stream);
            let mut wanted: Vec<(String, Vec<u8>)> = Vec::new();
            for &tree in &trees {
                let Some((sub, _)) = self.repo.entry(tree, &dir).map_err(repo_err)? else { continue };
                let all = everything || remembered.as_deref() != Some(sub.to_string().as_str());
                for (rel, blob) in self.repo.files_under(tree, &dir).map_err(repo_err)? {
                    let missing = || {
                        let own = match crate::ledger::day_of_path(&rel) {
                            Some(day) => self.ledger.state().own_shard(&stream.file, day),
                            None => self.ledger.state().own_file(&stream.file, &rel),
                        };
                        !own.exists()
                    };
                    if all || missing() {
                        wanted.push((rel, self.repo.blob(blob).map_err(repo_err)?));
                    }
                }
            }
            r.warnings.extend(self.ledger.catch_up(stream, &wanted)?);
        }
        Ok(())
    }

    /// Turns what git-tally 0.1 left (its committed usage file, its state) into ledger
    /// state, before anything else reads the ledger.
    fn migrate(&self, r: &mut Synced) -> Result<()> {
        r.warnings.extend(migrate(&self.ledger, Some(&self.repo))?);
        Ok(())
    }

    /// Keeps the views out of `git status` and `git add -A` (`.git/info/exclude`): they are
    /// written from the ledger, not committed (unless `tally.commitView`).
    fn exclude_views(&self) -> Result<()> {
        if self.config.commit_view {
            return Ok(());
        }
        let path = self.repo.git_dir().join("info").join("exclude");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut add = String::new();
        for s in self.ledger.streams() {
            let line = format!("/{}", s.file);
            if !text.lines().any(|l| l.trim() == line) {
                add.push_str(&format!("# git-tally: a view of {}, written from the ledger\n{line}\n", s.ledger_dir()));
            }
        }
        if add.is_empty() {
            return Ok(());
        }
        let mut new = text;
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&add);
        self.ledger.state().ensure(path.parent().expect("has a parent"))?;
        crate::fsutil::write_atomic(&path, new.as_bytes())
    }

    /// Commits this device's changed ledger files (and views, with `tally.commitView`) on
    /// top of HEAD, moving branch, index and work tree together.
    fn commit(&self) -> Result<bool> {
        let head = self.repo.head().map_err(repo_err)?;
        // HEAD's copy of this device's files is what the last commit left, unless the
        // branch was reset or the remote rewritten: then every file is checked again.
        let all = self.ledger.streams().iter().any(|s| self.own_tree(&head, s) != self.remembered_own_tree(s));
        let base = head.commit.map(|c| self.repo.tree_of(c)).transpose().map_err(repo_err)?;
        // Ledger files joined with what HEAD holds of them: a commit never lowers a
        // device's files (this device's own copy may lag; a migration's legacy devices
        // may be there already).
        let mut files = Vec::new();
        for (path, bytes) in self.ledger.changed_files(all)?.into_iter().chain(self.ledger.carried_files()?) {
            let now = match base.map(|t| self.repo.entry(t, &path)).transpose().map_err(repo_err)?.flatten() {
                Some((id, crate::git::EntryMode::Blob)) => Some(self.repo.blob(id).map_err(repo_err)?),
                _ => None,
            };
            let joined = match now.as_deref().map(crate::ledger::LedgerFile::parse) {
                Some(Ok(old)) => match crate::ledger::LedgerFile::parse(&bytes) {
                    Ok(new) => old.join(&new).map(|f| f.render()).unwrap_or(bytes),
                    Err(_) => bytes,
                },
                _ => bytes,
            };
            files.push((path, joined));
        }

        if self.config.commit_view {
            let tree = head.commit.map(|c| self.repo.tree_of(c)).transpose().map_err(repo_err)?;
            for stream in self.ledger.streams() {
                let stream = &self.ledger.rechoose(stream, &|f| profile_hints(&self.repo, f));
                let view = self.ledger.view(stream, &TreeSource { repo: &self.repo, tree }, false)?;
                let existing = std::fs::read(self.repo.top().join(&stream.file)).ok();
                files.push((stream.file.clone(), crate::ledger::render_view(&view, existing.as_deref())));
            }
        }
        let mut edits = Vec::new();
        if !self.config.commit_view {
            // The file git-tally 0.1 committed, when its ledger is committed first: the
            // ledger holds its counts now; the work tree keeps the file. Once a ledger is
            // there, a committed view is another clone's `tally.commitView`, kept up to date
            // by that clone (removing it here would undo that clone's commit every sync).
            for s in self.ledger.streams() {
                if let Some(t) = base {
                    if self.repo.entry(t, &s.file).map_err(repo_err)?.is_some()
                        && self.repo.entry(t, &s.ledger_dir()).map_err(repo_err)?.is_none()
                    {
                        edits.push((s.file.clone(), None));
                    }
                }
            }
        }
        for (path, bytes) in &files {
            let blob = self.repo.write_blob(bytes).map_err(repo_err)?;
            let now = match base {
                Some(t) => self.repo.entry(t, path).map_err(repo_err)?,
                None => None,
            };
            if now.map(|(id, _)| id) != Some(blob) {
                edits.push((path.clone(), Some((blob, crate::git::EntryMode::Blob))));
            }
        }
        if edits.is_empty() {
            self.ledger.committed()?;
            self.ledger.carried_committed()?;
            self.remember_own_trees()?;
            return Ok(false);
        }

        let tree = self.repo.edit_tree(base, &edits).map_err(repo_err)?;
        let state = self.state();
        let n = state.uncommitted_events;
        // Events recorded; else what changed otherwise (an application's own write taken
        // in, a view committed with tally.commitView).
        let message = match n {
            0 => format!("usage: update from {}", self.ledger.name()),
            n => format!("usage: {n} event{} from {}", if n == 1 { "" } else { "s" }, self.ledger.name()),
        };
        let parents: Vec<_> = head.commit.into_iter().collect();
        let commit = self.repo.commit(tree, &parents, &message, None, self.ledger.name()).map_err(repo_err)?;
        moves::move_to(self, &head, commit, "git-tally: commit usage")?;
        *self.made.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(commit);
        self.ledger.committed()?;
        self.ledger.carried_committed()?;

        self.remember_own_trees()?;

        self.save_state(&State { uncommitted_events: 0, ..self.state() })?;
        Ok(true)
    }

    /// Whether `commit` is the one this run's `commit` made last: its ledger files are its
    /// parent's, or grown from them (a commit never lowers a ledger file).
    pub(crate) fn made_here(&self, commit: crate::git::Oid) -> bool {
        *self.made.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == Some(commit)
    }

    /// The id of this device's directory of a stream in HEAD.
    fn own_tree(&self, head: &Head, stream: &Stream) -> Option<String> {
        let tree = self.repo.tree_of(head.commit?).ok()?;
        self.repo.entry(tree, &stream.device_dir(self.ledger.key())).ok()?.map(|(id, _)| id.to_string())
    }

    fn remembered_own_tree(&self, stream: &Stream) -> Option<String> {
        std::fs::read_to_string(self.ledger.state().own_file(&stream.file, "tree")).ok()
    }

    /// Remembers HEAD's copy of this device's directories (see `commit`).
    fn remember_own_trees(&self) -> Result<()> {
        let head = self.repo.head().map_err(repo_err)?;
        for s in self.ledger.streams() {
            let path = self.ledger.state().own_file(&s.file, "tree");
            match self.own_tree(&head, s) {
                Some(id) => {
                    self.ledger.state().ensure(&self.ledger.state().own_dir(&s.file))?;
                    // Lost, it only makes the next commit check every file again.
                    crate::fsutil::write_replace(&path, id.as_bytes())?
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Writes every stream's view from HEAD's ledger (after a pull; `reread` per
    /// `tally.appReads`).
    fn write_views(&self, r: &mut Synced) -> Result<()> {
        let head = self.repo.head().map_err(repo_err)?;
        let tree = head.commit.map(|c| self.repo.tree_of(c)).transpose().map_err(repo_err)?;
        let source = TreeSource { repo: &self.repo, tree };
        let reread = self.config.app_reads == crate::config::AppReads::AfterPull;
        for stream in self.ledger.streams() {
            let stream = &self.ledger.rechoose(stream, &|f| profile_hints(&self.repo, f));
            let view = self.ledger.view(stream, &source, false)?;
            if self.ledger.write_view(stream, &view, reread)? == crate::ledger::Written::PutBack {
                r.warnings.push(format!(
                    "{}: the application wrote it while git-tally was syncing; its write is kept for the next sync",
                    stream.file
                ));
            }
        }
        if let Some(c) = head.commit {
            let s = self.state();
            if s.viewed.as_deref() != Some(c.to_string().as_str()) {
                self.save_state(&State { viewed: Some(c.to_string()), ..s })?;
            }
        }
        Ok(())
    }

    /// Pull-before-write: prepare, fetch, integrate, write the views.
    pub fn pull(&self) -> Result<Synced> {
        self.run(false, None, &mut |d| std::thread::sleep(d))
    }

    /// Pull, then push; a rejected push is integrated and retried with backoff and jitter.
    pub fn sync(&self) -> Result<Synced> {
        self.run(true, None, &mut |d| std::thread::sleep(d))
    }

    /// The pre-shutdown sync: commit locally first (works offline), then push within
    /// `timeout`. Never hangs.
    pub fn flush(&self, timeout: Duration) -> Result<Synced> {
        // A timeout beyond what a clock holds is a century: for ever, in effect.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
        self.run(true, Some(deadline), &mut |d| {
            std::thread::sleep(d.min(deadline.saturating_duration_since(Instant::now())))
        })
        .map_err(|e| match e {
            Error::Transient(m) if Instant::now() >= deadline => {
                Error::Transient(format!("flush timed out after {timeout:?}; usage is committed locally ({m})"))
            }
            e => e,
        })
    }

    /// The whole run, with the sleep between push attempts injected (tests).
    pub fn run(&self, push: bool, deadline: Option<Instant>, sleep: &mut dyn FnMut(Duration)) -> Result<Synced> {
        *self.made.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let mut r = Synced::default();
        let result = self.run_inner(push, deadline, sleep, &mut r);
        let mut s = self.state();
        s.last_sync = Some(now_secs());
        s.last_result = Some(match &result {
            Ok(()) if r.pushed => "pushed".into(),
            Ok(()) => "up to date".into(),
            Err(e) => format!("failed: {e}"),
        });
        self.save_state(&s)?;
        result.map(|_| r)
    }

    fn run_inner(
        &self,
        push: bool,
        deadline: Option<Instant>,
        sleep: &mut dyn FnMut(Duration),
        r: &mut Synced,
    ) -> Result<()> {
        let lock_wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(self.config.lock_timeout),
            None => self.config.lock_timeout,
        };
        // Fetch first, outside the lock: this device's files are brought up to what the
        // upstream holds of them before new events are folded in (see `catch_up`).
        let up = self.upstream();
        let git = self.git().with_deadline(deadline);
        // Says that the network part is under way (never waited for: two syncs may fetch).
        let _net = Lock::acquire_at(&self.ledger.state().net_lock(), Duration::ZERO, "fetch and push").ok();
        // HEAD and the upstream before anything moved them (see `maintain` below).
        let mut seen = (
            self.repo.head().ok().and_then(|h| h.commit),
            up.as_ref().ok().and_then(|up| self.repo.resolve(&up.tracking).ok().flatten()),
        );
        let mut first = up.as_ref().ok().map(|up| self.fetch(&git, up, r));
        {
            let _lock = self.lock("sync", lock_wait)?;
            self.check_safe()?;
            self.prepare(r)?;
            if up.is_err() || matches!(first, Some(Err(_))) {
                // No upstream, or offline: the usage files still show what this machine
                // committed.
                self.write_views(r)?;
            }
        }
        let up = up?;
        let mut attempt = 0u32;
        loop {
            let fetched = match first.take().unwrap_or_else(|| self.fetch(&git, &up, r)) {
                Ok(f) => f,
                Err(e) => {
                    if attempt > 0 {
                        if let Ok(_lock) = self.lock("sync", lock_wait) {
                            self.write_views(r)?;
                        }
                    }
                    return Err(Error::Transient(format!(
                        "{e}; your usage is committed locally and will be pushed by the next sync"
                    )));
                }
            };

            let upstream = match fetched {
                Fetched::Fetched => self.repo.resolve(&up.tracking).map_err(repo_err)?,
                Fetched::NoRemoteRef => None,
            };
            let lock = self.lock("sync", lock_wait)?;
            self.check_safe()?;
            moves::recover(self)?;
            if let Some(u) = upstream {
                let plan = integrate::integrate(self, u, r)?;
                if plan != Plan::UpToDate {
                    r.integrated = Some(plan);
                }
                // With tally.commitView the view follows the joined ledger.
                if self.config.commit_view {
                    r.committed |= self.commit()?;
                }
            }
            let mut s = self.state();
            s.last_pull = Some(now_secs());
            if let Some(u) = upstream {
                s.last_synced = Some(u.to_string());
            }
            self.save_state(&s)?;
            let head = self.repo.head().map_err(repo_err)?;
            let to_push = head.commit.filter(|&c| push && Some(c) != upstream);
            // Objects came in or were written: git's own check for a gc (the fetch leaves it).
            let maintain = (head.commit, upstream) != seen;
            seen = (head.commit, upstream);
            // The push runs while the views are written (both take a while, one on the
            // network, one on the disk); the lock is released once the views are written.
            let (views, pushed) = std::thread::scope(|scope| {
                let (git, up) = (&git, &up);
                let pushing = to_push.map(|c| scope.spawn(move || git.push(&up.remote, &c, &up.branch)));
                if maintain {
                    scope.spawn(move || git.maintenance());
                }
                let views = self.write_views(r);
                drop(lock);
                (views, pushing.map(|p| p.join().expect("the push thread does not panic")))
            });
            let (Some(commit), Some(pushed)) = (to_push, pushed) else { return views };
            match pushed {
                Ok(Pushed::Pushed) => {
                    r.pushed = true;
                    let mut s = self.state();
                    s.last_synced = Some(commit.to_string());
                    self.save_state(&s)?;
                    if views.is_err() {
                        eprintln!(
                            "git-tally: pushed to {}/{}; writing the usage files failed (the next sync writes them):",
                            up.remote, up.branch
                        );
                    }
                    return views;
                }
                Ok(Pushed::Rejected(why)) if refused_by_policy(&why) => {
                    // The remote refused the update itself (a hook, a protected branch): not
                    // a race another push won, so not retried now.
                    views?;
                    return Err(Error::Transient(format!(
                        "the remote {} refused the update of {}: {why}; your usage is committed locally and will be pushed by a sync once the remote accepts it",
                        up.remote, up.branch
                    )));
                }
                Ok(Pushed::Rejected(why)) => {
                    views?;
                    if attempt >= self.config.push_retries {
                        return Err(Error::Transient(format!(
                            "the push to {} was rejected {} times ({why}: others kept pushing, or the remote could not update the branch); your commits are kept, sync again",
                            up.remote,
                            attempt + 1
                        )));
                    }
                    attempt += 1;
                    r.push_retries = attempt;
                    sleep(backoff(attempt));
                }
                Err(e) => {
                    views?;
                    return Err(Error::Transient(format!(
                        "{e}; your usage is committed locally and will be pushed by the next sync"
                    )));
                }
            }
        }
    }

    /// Fetches the upstream. A fetch that failed on a lock of the tracking ref that a git
    /// process killed while updating it left (older than [`STALE_REF_LOCK`]) is tried again
    /// without it, with a warning; a lock no fetch fails on is left alone (it may be a live
    /// process's).
    fn fetch(&self, git: &Git, up: &Upstream, r: &mut Synced) -> Result<Fetched, crate::git::TransportError> {
        match git.fetch(&up.remote, &up.branch, &up.tracking) {
            Err(_) if self.repo.release_stale_tracking_lock(&up.tracking, STALE_REF_LOCK) => {
                r.warnings.push(format!(
                    "removed {}.lock, left by a git process killed while updating it (the fetch failed on it)",
                    up.tracking
                ));
                git.fetch(&up.remote, &up.branch, &up.tracking)
            }
            fetched => fetched,
        }
    }

    /// The stream of a usage file.
    pub fn stream(&self, file: &str) -> Option<&Stream> {
        self.ledger.stream(file)
    }
}

/// Turns what git-tally 0.1 left into ledger state (see `Ledger::migrate`), from HEAD's
/// files (`repo`; `None` in local-only mode). Call with the repository lock held.
/// Returns notices for the user.
pub fn migrate(ledger: &Ledger, repo: Option<&Repo>) -> Result<Vec<String>> {
    let tree = match repo {
        Some(repo) => repo.head().map_err(repo_err)?.commit.map(|c| repo.tree_of(c)).transpose().map_err(repo_err)?,
        None => None,
    };
    let mut notices = Vec::new();
    for stream in ledger.streams() {
        let (file, has_ledger) = match (repo, tree) {
            (Some(repo), Some(t)) => {
                let file = match repo.entry(t, &stream.file).map_err(repo_err)? {
                    Some((id, crate::git::EntryMode::Blob)) => Some(repo.blob(id).map_err(repo_err)?),
                    _ => None,
                };
                (file, repo.entry(t, &stream.ledger_dir()).map_err(repo_err)?.is_some())
            }
            _ => (None, false),
        };
        let legacy = crate::ledger::LegacyHead { file: file.as_deref(), has_ledger };
        notices.extend(ledger.migrate(stream, legacy)?);
    }
    notices.extend(ledger.migrate_leftovers()?);
    Ok(notices)
}

/// What git knows of a usage file's profile: its `tally-profile` attribute, and the
/// profile of what HEAD holds — ledger files of any device, else a file committed by an
/// application or by git-tally 0.1.
pub fn profile_hints(repo: &Repo, file: &str) -> crate::ledger::ProfileHints {
    use crate::profile;
    let attribute = crate::git::profile_setting(repo.top(), Some(file)).flatten().and_then(|n| profile::by_name(&n));
    let committed = || -> Option<&'static profile::Profile> {
        let head = repo.head().ok()?.commit?;
        let tree = repo.tree_of(head).ok()?;
        let dir = crate::ledger::ledger_dir_of(file);
        for (path, id) in repo.files_under(tree, &dir).ok()? {
            if path.ends_with("device.json") {
                continue;
            }
            let bytes = repo.blob(id).ok()?;
            if let Some(p) =
                crate::json::parse(&bytes).ok()?.get("profile").and_then(|p| p.as_str()).and_then(profile::by_name)
            {
                return Some(p);
            }
        }
        let bytes = repo.file_at(head, file).ok()??;
        match profile::detect(&[Some(&crate::json::parse(&bytes).ok()?)]).name {
            "generic" => None,
            "tally-v1" => profile::by_name("tally"),
            name => profile::by_name(name),
        }
    };
    crate::ledger::ProfileHints { attribute, committed: if attribute.is_some() { None } else { committed() } }
}

/// How old a lock on a ref must be to be a dead process's when nothing in it says whose it
/// is (fetch and push hold the tracking ref's for the moment they update it).
const STALE_REF_LOCK: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter: 50 ms × 2^attempt (at most 3.2 s), plus up to as much
/// again at random, so that machines that collided do not collide again.
pub fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = 50u64 << attempt.min(6);
    let jitter = std::collections::hash_map::RandomState::new().build_hasher().finish() % base;
    Duration::from_millis(base + jitter)
}

/// Whether a rejected push was refused by the remote's policy (a hook, a protected branch,
/// a denied update), which trying again does not change, rather than lost to another push
/// (`[rejected] (fetch first)`, or `[remote rejected] (failed to update ref)` when the ref
/// moved under the update).
fn refused_by_policy(why: &str) -> bool {
    why.starts_with("[remote rejected]")
        && ["declined", "protected", "denied", "deny", "refusing", "not allowed", "checked out"]
            .iter()
            .any(|w| why.contains(w))
}

#[cfg(test)]
mod tests {
    use super::refused_by_policy;

    #[test]
    fn a_refusal_by_policy_is_told_from_a_lost_race() {
        for why in [
            "[remote rejected] (pre-receive hook declined)",
            "[remote rejected] (hook declined)",
            "[remote rejected] (protected branch hook declined)",
            "[remote rejected] (branch is currently checked out)",
            "[remote rejected] (deny updating a hidden ref)",
        ] {
            assert!(refused_by_policy(why), "{why}");
        }
        for why in
            ["[rejected] (fetch first)", "[rejected] (non-fast-forward)", "[remote rejected] (failed to update ref)"]
        {
            assert!(!refused_by_policy(why), "{why}");
        }
    }

    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_with_jitter_and_is_bounded() {
        for a in 1..10 {
            let d = backoff(a);
            let base = Duration::from_millis(50 << a.min(6));
            assert!(d >= base && d < base * 2, "attempt {a}: {d:?}");
        }
    }
}
