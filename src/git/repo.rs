//! The repository in process, with gix: what a sync reads and writes without starting git.
//! Refs are updated with their expected old value (a concurrent change is an error, never
//! overwritten), the index through git's own lock file protocol (`index.lock`).

use super::Oid;
use gix::bstr::{BStr, ByteSlice};
use std::path::{Path, PathBuf};

/// Why an in-process git operation failed. None of these is transient.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The repository cannot be used as it is (exit 2).
    #[error("{0}")]
    Unusable(String),
    /// Reading or writing objects or refs failed.
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
    /// A ref moved between reading and updating it (someone else changed the branch).
    #[error("{branch} moved while git-tally was updating it (expected {expected}); nothing was lost, sync again")]
    RefMoved { branch: String, expected: String },
    /// Another git process holds a lock the update needs (`<ref>.lock`, `packed-refs.lock`).
    #[error("{} is held by another git process; nothing was changed, sync again", .0.display())]
    RefLocked(PathBuf),
}

macro_rules! gx {
    ($e:expr, $what:expr) => {
        $e.map_err(|e| RepoError::Failed { what: $what.to_string(), message: e.to_string() })
    };
}

/// Why the index could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another git process holds `index.lock` (an editor's `git status`, say).
    #[error("the index is locked by another git process ({0} exists)")]
    Locked(PathBuf),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The checked-out branch and the commit it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `refs/heads/<name>`.
    pub branch: String,
    /// `None` on an unborn branch (a new repository).
    pub commit: Option<Oid>,
}

impl Head {
    /// The branch's short name.
    pub fn name(&self) -> &str {
        self.branch.strip_prefix("refs/heads/").unwrap_or(&self.branch)
    }
}

/// How a tree entry is checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryMode {
    Blob,
    Executable,
    Link,
    /// A submodule's commit.
    Commit,
    Tree,
}

impl EntryMode {
    fn from_gix(mode: gix::objs::tree::EntryMode) -> EntryMode {
        use gix::objs::tree::EntryKind;
        match mode.kind() {
            EntryKind::Blob => EntryMode::Blob,
            EntryKind::BlobExecutable => EntryMode::Executable,
            EntryKind::Link => EntryMode::Link,
            EntryKind::Commit => EntryMode::Commit,
            EntryKind::Tree => EntryMode::Tree,
        }
    }

    fn kind(self) -> gix::objs::tree::EntryKind {
        use gix::objs::tree::EntryKind;
        match self {
            EntryMode::Blob => EntryKind::Blob,
            EntryMode::Executable => EntryKind::BlobExecutable,
            EntryMode::Link => EntryKind::Link,
            EntryMode::Commit => EntryKind::Commit,
            EntryMode::Tree => EntryKind::Tree,
        }
    }
}

/// A file that differs between two trees: `None` where it is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeChange {
    pub path: String,
    pub old: Option<(Oid, EntryMode)>,
    pub new: Option<(Oid, EntryMode)>,
}

/// One commit, as a replay needs it.
#[derive(Clone, Debug)]
pub struct CommitInfo {
    pub id: Oid,
    pub tree: Oid,
    pub parents: Vec<Oid>,
    pub author: gix::actor::Signature,
    pub message: String,
}

/// The name of a file in the caller's temporary directory that is (a hard link of) the
/// `index.lock` being written: see [`Repo::update_index`].
const INDEX_LOCK_TWIN: &str = "index.lock-";

/// How writing the index through a linked lock went.
enum Linked {
    Written,
    /// Another process holds `index.lock`.
    Locked,
    /// The file system makes no hard links.
    Unsupported,
    Failed(String),
}

/// A repository with a work tree.
pub struct Repo {
    repo: gix::Repository,
    top: PathBuf,
    git_dir: PathBuf,
}

impl Repo {
    /// The repository around `dir`. A bare repository, or one gix cannot read, is unusable.
    pub fn open(dir: &Path) -> Result<Repo, RepoError> {
        let repo = gix::ThreadSafeRepository::discover_with_environment_overrides(dir)
            .map_err(|e| RepoError::Unusable(format!("{}: not a git repository ({e})", dir.display())))?
            .to_thread_local();
        let Some(work) = repo.workdir() else {
            return Err(RepoError::Unusable(format!(
                "{} is a bare repository; git-tally needs a clone with a work tree",
                dir.display()
            )));
        };
        let top = std::fs::canonicalize(work).unwrap_or_else(|_| work.to_path_buf());
        let reftable = repo
            .config_snapshot()
            .string("extensions.refStorage")
            .is_some_and(|v| v.to_string().eq_ignore_ascii_case("reftable"));
        if reftable {
            return Err(RepoError::Unusable(format!(
                "{} keeps its refs in a reftable, which git-tally cannot read yet; use a clone with the files ref format (`git clone --ref-format=files …`)",
                top.display()
            )));
        }

        let git_dir = std::fs::canonicalize(repo.git_dir()).unwrap_or_else(|_| repo.git_dir().to_path_buf());
        let mut repo = repo;
        repo.object_cache_size_if_unset(8 << 20);
        Ok(Repo { repo, top, git_dir })
    }

    pub fn top(&self) -> &Path {
        &self.top
    }

    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The checked-out branch. A detached HEAD is unusable for a sync.
    pub fn head(&self) -> Result<Head, RepoError> {
        let head = gx!(self.repo.head(), "reading HEAD")?;
        match head.kind {
            gix::head::Kind::Symbolic(r) => {
                let commit = gx!(self.repo.find_reference(r.name.as_ref()), "reading HEAD's branch")?
                    .peel_to_id()
                    .ok()
                    .map(|id| Oid(id.detach()));
                Ok(Head { branch: r.name.as_bstr().to_string(), commit })
            }
            gix::head::Kind::Unborn(name) => {
                let branch = name.as_bstr().to_string();
                if branch == "refs/heads/.invalid" {
                    return Err(RepoError::Unusable(format!(
                        "{} keeps its refs in a reftable, which git-tally cannot read yet; use a clone with the files ref format (`git clone --ref-format=files …`)",
                        self.top.display()
                    )));
                }
                Ok(Head { branch, commit: None })
            }
            gix::head::Kind::Detached { .. } => {
                Err(RepoError::Unusable("HEAD is detached; check out a branch first".into()))
            }
        }
    }

    /// The operation in progress (a merge, rebase…), which a sync must not interfere with.
    pub fn in_progress(&self) -> Option<&'static str> {
        use gix::state::InProgress;
        self.repo.state().map(|s| match s {
            InProgress::ApplyMailbox | InProgress::ApplyMailboxRebase => "an am",
            InProgress::Bisect => "a bisect",
            InProgress::CherryPick | InProgress::CherryPickSequence => "a cherry-pick",
            InProgress::Merge => "a merge",
            InProgress::Rebase | InProgress::RebaseInteractive => "a rebase",
            InProgress::Revert | InProgress::RevertSequence => "a revert",
        })
    }

    /// A config value (the last one), with git's rules for case and includes.
    pub fn config(&self, key: &str) -> Option<String> {
        self.repo.config_snapshot().string(key).map(|v| v.to_string())
    }

    /// The configuration git-tally reads, as `(key, value)` pairs in the order git reads
    /// them (later files win): every `tally.*` key, `user.email`, `core.attributesFile` and
    /// each branch's `remote` and `merge`. Section and variable names are lower-cased;
    /// branch names keep their case.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        let snapshot = self.repo.config_snapshot();
        let mut out = Vec::new();
        for section in snapshot.plumbing().sections() {
            let header = section.header();
            let name = header.name().to_str_lossy().to_ascii_lowercase();
            let sub = header.subsection_name().map(|s| s.to_str_lossy().into_owned());
            let body = section.body();
            let mut names: Vec<String> = body.value_names().map(|n| n.to_ascii_lowercase()).collect();
            names.dedup();
            let mut seen = std::collections::HashSet::new();
            for var in names {
                if !seen.insert(var.clone()) {
                    continue;
                }
                let key = match (name.as_str(), &sub, var.as_str()) {
                    ("tally", None, v) => format!("tally.{v}"),
                    ("user", None, "email") => "user.email".into(),
                    ("core", None, "attributesfile") => "core.attributesfile".into(),
                    ("branch", Some(b), v @ ("remote" | "merge")) => format!("branch.{b}.{v}"),
                    _ => continue,
                };
                for v in body.values(&var) {
                    out.push((key.clone(), v.to_str_lossy().into_owned()));
                }
            }
        }
        out
    }

    /// Whether `name` is a configured remote (rather than a URL).
    pub fn is_remote(&self, name: &str) -> bool {
        self.repo.remote_names().iter().any(|n| n.as_bytes() == name.as_bytes())
    }

    /// The commit a ref points at, `None` if it does not exist.
    pub fn resolve(&self, name: &str) -> Result<Option<Oid>, RepoError> {
        match gx!(self.repo.try_find_reference(name), format!("reading {name}"))? {
            Some(mut r) => Ok(Some(Oid(gx!(r.peel_to_id(), format!("reading {name}"))?.detach()))),
            None => Ok(None),
        }
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: Oid) -> Result<Oid, RepoError> {
        let c = gx!(self.repo.find_commit(commit.0), format!("reading commit {commit}"))?;
        Ok(Oid(gx!(c.tree_id(), format!("reading commit {commit}"))?.detach()))
    }

    /// The commit's parents, author and message.
    pub fn commit_info(&self, commit: Oid) -> Result<CommitInfo, RepoError> {
        let c = gx!(self.repo.find_commit(commit.0), format!("reading commit {commit}"))?;
        let d = gx!(c.decode(), format!("reading commit {commit}"))?;
        let author = gx!(d.author(), format!("reading commit {commit}"))?;
        Ok(CommitInfo {
            id: commit,
            tree: Oid(d.tree()),
            parents: d.parents().map(Oid).collect(),
            author: gx!(author.to_owned(), format!("reading commit {commit}"))?,
            message: d.message.to_str_lossy().into_owned(),
        })
    }

    /// A revision (`HEAD~3`, a commit id, a branch) as a commit, `None` if it names none.
    pub fn rev_parse(&self, spec: &str) -> Option<Oid> {
        let id = self.repo.rev_parse_single(spec).ok()?;
        let obj = id.object().ok()?;
        let commit = obj.peel_to_commit().ok()?;
        Some(Oid(commit.id))
    }

    /// Every file in the tree of revision `rev` (what `git ls-tree -r --name-only` lists).
    pub fn paths_at(&self, rev: &str) -> Result<Vec<String>, RepoError> {
        let commit = self
            .rev_parse(rev)
            .ok_or_else(|| RepoError::Failed { what: format!("reading {rev}"), message: "no such commit".into() })?;
        Ok(self.files_under(self.tree_of(commit)?, "")?.into_iter().map(|(path, _)| path).collect())
    }

    /// The commit's time, in seconds since the epoch.
    pub fn commit_time(&self, commit: Oid) -> Result<i64, RepoError> {
        let c = gx!(self.repo.find_commit(commit.0), format!("reading commit {commit}"))?;
        Ok(gx!(c.time(), format!("reading commit {commit}"))?.seconds)
    }

    /// `from` and its first parents, newest first, at most `limit`.
    pub fn first_parents(&self, from: Oid, limit: usize) -> Result<Vec<CommitInfo>, RepoError> {
        let mut out = Vec::new();
        let mut cur = Some(from);
        while let Some(c) = cur {
            if out.len() >= limit {
                break;
            }
            let info = self.commit_info(c)?;
            cur = info.parents.first().copied();
            out.push(info);
        }
        Ok(out)
    }

    /// The bytes of a blob.
    pub fn blob(&self, id: Oid) -> Result<Vec<u8>, RepoError> {
        Ok(gx!(self.repo.find_blob(id.0), format!("reading blob {id}"))?.take_data())
    }

    /// The entry at `path` in `tree`.
    pub fn entry(&self, tree: Oid, path: &str) -> Result<Option<(Oid, EntryMode)>, RepoError> {
        let t = gx!(self.repo.find_tree(tree.0), format!("reading tree {tree}"))?;
        let e = gx!(t.lookup_entry_by_path(path), format!("looking up {path}"))?;
        Ok(e.map(|e| (Oid(e.object_id()), EntryMode::from_gix(e.mode()))))
    }

    /// The blob at `path` in a commit's tree, `None` if there is none.
    pub fn file_at(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let tree = self.tree_of(commit)?;
        match self.entry(tree, path)? {
            Some((id, EntryMode::Blob | EntryMode::Executable)) => Ok(Some(self.blob(id)?)),
            _ => Ok(None),
        }
    }

    /// Every file under `dir` in `tree` (recursively), as (path below `dir`, blob).
    pub fn files_under(&self, tree: Oid, dir: &str) -> Result<Vec<(String, Oid)>, RepoError> {
        let mut out = Vec::new();
        let start = if dir.is_empty() {
            Some(tree)
        } else {
            match self.entry(tree, dir)? {
                Some((id, EntryMode::Tree)) => Some(id),
                _ => None,
            }
        };
        if let Some(t) = start {
            self.walk(t, String::new(), &mut out)?;
        }
        Ok(out)
    }

    fn walk(&self, tree: Oid, prefix: String, out: &mut Vec<(String, Oid)>) -> Result<(), RepoError> {
        let t = gx!(self.repo.find_tree(tree.0), format!("reading tree {tree}"))?;
        let decoded = gx!(t.decode(), format!("reading tree {tree}"))?;
        let entries: Vec<(String, Oid, bool)> = decoded
            .entries
            .iter()
            .map(|e| (e.filename.to_str_lossy().into_owned(), Oid(e.oid.to_owned()), e.mode.is_tree()))
            .collect();
        for (name, id, is_tree) in entries {
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if is_tree {
                self.walk(id, path, out)?;
            } else {
                out.push((path, id));
            }
        }
        Ok(())
    }

    pub fn write_blob(&self, bytes: &[u8]) -> Result<Oid, RepoError> {
        Ok(Oid(gx!(self.repo.write_blob(bytes), "writing a blob")?.detach()))
    }

    /// `base` (none: the empty tree) with each path set to an entry or removed.
    pub fn edit_tree(&self, base: Option<Oid>, edits: &[(String, Option<(Oid, EntryMode)>)]) -> Result<Oid, RepoError> {
        let base = base.map_or_else(|| gix::ObjectId::empty_tree(self.repo.object_hash()), |b| b.0);
        let mut editor = gx!(self.repo.edit_tree(base), "editing a tree")?;
        for (path, entry) in edits {
            match entry {
                Some((id, mode)) => {
                    gx!(editor.upsert(path.as_str(), mode.kind(), id.0), format!("adding {path} to a tree"))?;
                }
                None => {
                    gx!(editor.remove(path.as_str()), format!("removing {path} from a tree"))?;
                }
            }
        }
        Ok(Oid(gx!(editor.write(), "writing a tree")?.detach()))
    }

    /// The empty tree's id.
    pub fn empty_tree(&self) -> Oid {
        Oid(gix::ObjectId::empty_tree(self.repo.object_hash()))
    }

    /// Writes a commit object (no ref moves).
    pub fn commit(
        &self,
        tree: Oid,
        parents: &[Oid],
        message: &str,
        author: Option<&gix::actor::Signature>,
        fallback_name: &str,
    ) -> Result<Oid, RepoError> {
        let committer = self.signature(fallback_name);
        let commit = gix::objs::Commit {
            tree: tree.0,
            parents: parents.iter().map(|p| p.0).collect(),
            author: author.cloned().unwrap_or_else(|| committer.clone()),
            committer,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        Ok(Oid(gx!(self.repo.write_object(&commit), "writing a commit")?.detach()))
    }

    /// Who commits: the user's identity (`user.name`, `user.email`, or git's environment
    /// variables), else `git-tally (<device>)`.
    pub fn signature(&self, fallback_name: &str) -> gix::actor::Signature {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = env("GIT_COMMITTER_NAME")
            .or_else(|| self.config("user.name"))
            .unwrap_or_else(|| format!("git-tally ({fallback_name})"));
        let email = env("GIT_COMMITTER_EMAIL")
            .or_else(|| self.config("user.email"))
            .unwrap_or_else(|| format!("git-tally@{fallback_name}"));
        gix::actor::Signature { name: name.into(), email: email.into(), time: now() }
    }

    /// Points `branch` at `new`, only if it still points at `expected` (`None`: it must
    /// not exist yet), with a reflog entry.
    pub fn set_branch(
        &self,
        branch: &str,
        new: Oid,
        expected: Option<Oid>,
        message: &str,
        fallback_name: &str,
    ) -> Result<(), RepoError> {
        use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
        use gix::refs::Target;
        let name: gix::refs::FullName =
            gx!(gix::refs::FullName::try_from(branch), format!("the branch name {branch}"))?;
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange { mode: RefLog::AndReference, force_create_reflog: false, message: message.into() },
                expected: match expected {
                    Some(old) => PreviousValue::MustExistAndMatch(Target::Object(old.0)),
                    None => PreviousValue::MustNotExist,
                },
                new: Target::Object(new.0),
            },
            name,
            deref: false,
        };
        let sig = self.signature(fallback_name);
        let mut time = gix::date::parse::TimeBuf::default();
        let sig_ref = sig.to_ref(&mut time);
        match self.repo.edit_references_as([edit], Some(sig_ref)) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Tell "someone moved it" (the value differs now) from other failures.
                let now = self.resolve(branch).ok().flatten();
                let locks = [self.repo.common_dir().join(format!("{branch}.lock")), self.packed_refs_lock()];
                if now != expected {
                    Err(RepoError::RefMoved {
                        branch: branch.to_string(),
                        expected: expected.map_or_else(|| "no branch".to_string(), |o| o.to_string()),
                    })
                } else if let Some(held) = locks.into_iter().find(|l| l.exists()) {
                    Err(RepoError::RefLocked(held))
                } else {
                    Err(RepoError::Failed { what: format!("updating {branch}"), message: e.to_string() })
                }
            }
        }
    }

    /// The best common ancestor of two commits.
    pub fn merge_base(&self, a: Oid, b: Oid) -> Result<Option<Oid>, RepoError> {
        Ok(gx!(self.repo.merge_base(a.0, b.0), "finding a merge base")
            .or_else(|e| match e {
                // gix reports "no merge base" as an error in some versions.
                RepoError::Failed { message, .. } if message.contains("No merge base") => Ok(None),
                e => Err(e),
            })?
            .map(|id| Oid(id.detach())))
    }

    /// Whether `ancestor` is reachable from `commit` (or equal to it).
    pub fn is_ancestor(&self, ancestor: Oid, commit: Oid) -> Result<bool, RepoError> {
        Ok(ancestor == commit || self.merge_base(ancestor, commit)? == Some(ancestor))
    }

    /// The commits reachable from `tip` but not from `base`, parents before children.
    pub fn commits_since(&self, base: Option<Oid>, tip: Oid) -> Result<Vec<CommitInfo>, RepoError> {
        let mut walk = self.repo.rev_walk([tip.0]);
        if let Some(b) = base {
            walk = walk.with_hidden([b.0]);
        }
        let mut ids = Vec::new();
        for info in gx!(walk.all(), "walking history")? {
            ids.push(Oid(gx!(info, "walking history")?.id));
        }
        // The walk yields children first; replay wants parents first.
        let mut out: Vec<CommitInfo> = ids.into_iter().map(|id| self.commit_info(id)).collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// The files that differ between two trees (`None`: the empty tree). Subtrees with
    /// equal ids are skipped, so the cost follows the change, not the tree.
    pub fn diff_trees(&self, from: Option<Oid>, to: Option<Oid>) -> Result<Vec<TreeChange>, RepoError> {
        let mut out = Vec::new();
        self.diff_into(from, to, "", &mut out)?;
        Ok(out)
    }

    /// The entries of one tree: name, id, mode.
    pub fn tree_entries(&self, tree: Oid) -> Result<Vec<(String, Oid, EntryMode)>, RepoError> {
        self.entries(Some(tree))
    }

    fn entries(&self, tree: Option<Oid>) -> Result<Vec<(String, Oid, EntryMode)>, RepoError> {
        let Some(tree) = tree else { return Ok(Vec::new()) };
        let t = gx!(self.repo.find_tree(tree.0), format!("reading tree {tree}"))?;
        let d = gx!(t.decode(), format!("reading tree {tree}"))?;
        Ok(d.entries
            .iter()
            .map(|e| (e.filename.to_str_lossy().into_owned(), Oid(e.oid.to_owned()), EntryMode::from_gix(e.mode)))
            .collect())
    }

    fn diff_into(
        &self,
        from: Option<Oid>,
        to: Option<Oid>,
        prefix: &str,
        out: &mut Vec<TreeChange>,
    ) -> Result<(), RepoError> {
        if from == to {
            return Ok(());
        }
        let (a, b) = (self.entries(from)?, self.entries(to)?);
        let mut names: Vec<&String> = a.iter().chain(&b).map(|(n, _, _)| n).collect();
        names.sort();
        names.dedup();
        for name in names {
            let x = a.iter().find(|(n, _, _)| n == name).map(|(_, id, m)| (*id, *m));
            let y = b.iter().find(|(n, _, _)| n == name).map(|(_, id, m)| (*id, *m));
            if x == y {
                continue;
            }
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let sub = |e: Option<(Oid, EntryMode)>| e.filter(|(_, m)| *m == EntryMode::Tree).map(|(id, _)| id);
            let file = |e: Option<(Oid, EntryMode)>| e.filter(|(_, m)| *m != EntryMode::Tree);
            if sub(x).is_some() || sub(y).is_some() {
                self.diff_into(sub(x), sub(y), &path, out)?;
            }
            if file(x) != file(y) {
                out.push(TreeChange { path, old: file(x), new: file(y) });
            }
        }
        Ok(())
    }

    /// A 3-way merge of trees (content merges of text files included); the paths that
    /// conflict when it does not resolve cleanly.
    pub fn merge_trees(&self, base: Oid, ours: Oid, theirs: Oid) -> Result<Result<Oid, Vec<String>>, RepoError> {
        let options = gx!(self.repo.tree_merge_options(), "reading merge options")?;
        let labels = gix::merge::blob::builtin_driver::text::Labels {
            ancestor: Some("base".into()),
            current: Some("ours".into()),
            other: Some("theirs".into()),
        };
        let mut outcome = gx!(self.repo.merge_trees(base.0, ours.0, theirs.0, labels, options), "merging trees")?;
        let how = gix::merge::tree::TreatAsUnresolved::default();
        if outcome.has_unresolved_conflicts(how) {
            let mut paths: Vec<String> =
                outcome.conflicts.iter().map(|c| c.ours.location().to_str_lossy().into_owned()).collect();
            paths.sort();
            paths.dedup();
            return Ok(Err(paths));
        }
        Ok(Ok(Oid(gx!(outcome.tree.write(), "writing the merged tree")?.detach())))
    }

    /// The index entry (stage 0) of a path.
    pub fn index_entry(&self, path: &str) -> Result<Option<Oid>, RepoError> {
        let index = gx!(self.repo.index_or_empty(), "reading the index")?;
        Ok(index.entry_by_path(path.as_bytes().as_bstr()).map(|e| Oid(e.id)))
    }

    /// Sets the index entries of `changes` (removing those that are `None`), with the stat
    /// of the file now in the work tree, through `index.lock`. Waits up to `patience` for
    /// another git process to release the lock.
    ///
    /// The new index is written into a file in `tmp` first and linked in as `index.lock`
    /// (git's lock protocol: creating the link fails while another process holds the lock),
    /// then renamed over `index`. A run killed between the two leaves an `index.lock` that
    /// git and every later sync would stop at for ever; its twin in `tmp` proves it was
    /// this, and [`Repo::release_stale_index_lock`] removes it.
    pub fn update_index(
        &self,
        changes: &[(String, Option<(Oid, EntryMode)>)],
        patience: std::time::Duration,
        tmp: &Path,
    ) -> Result<(), IndexError> {
        if changes.is_empty() {
            return Ok(());
        }
        let lock = self.git_dir.join("index.lock");
        let start = std::time::Instant::now();
        loop {
            // Read afresh each time: another git process may have rewritten it meanwhile.
            let mut index = if self.git_dir.join("index").exists() {
                gx!(self.repo.open_index(), "reading the index")?
            } else {
                gx!(self.repo.index_or_load_from_head_or_empty(), "reading the index")?.into_owned()
            };
            // Lookups are binary searches over the sorted entries: new entries are pushed
            // (unsorted) only after every lookup, or a path after them is not found and
            // ends up in the index twice.
            let mut new = Vec::new();
            for (path, entry) in changes {
                let p: &BStr = path.as_bytes().as_bstr();
                match entry {
                    Some((id, mode)) => {
                        let stat = std::fs::symlink_metadata(self.top.join(path))
                            .ok()
                            .and_then(|m| {
                                gix::index::fs::Metadata::from_path_no_follow(&self.top.join(path)).ok().map(|g| (m, g))
                            })
                            .and_then(|(_, g)| gix::index::entry::Stat::from_fs(&g).ok())
                            .unwrap_or_default();
                        let emode = match mode {
                            EntryMode::Executable => gix::index::entry::Mode::FILE_EXECUTABLE,
                            EntryMode::Link => gix::index::entry::Mode::SYMLINK,
                            EntryMode::Commit => gix::index::entry::Mode::COMMIT,
                            _ => gix::index::entry::Mode::FILE,
                        };
                        match index.entry_index_by_path_and_stage(p, gix::index::entry::Stage::Unconflicted) {
                            Some(i) => {
                                let e = &mut index.entries_mut()[i];
                                e.id = id.0;
                                e.mode = emode;
                                e.stat = stat;
                            }
                            None => new.push((stat, id.0, emode, p)),
                        }
                    }
                    None => {
                        index.remove_entries(|_, entry_path, _| entry_path == p);
                    }
                }
            }
            for (stat, id, mode, p) in new {
                index.dangerously_push_entry(stat, id, gix::index::entry::Flags::empty(), mode, p);
            }
            index.sort_entries();
            index.remove_tree();
            let written = match self.write_index_linked(&index, &lock, tmp) {
                Linked::Written => Ok(()),
                Linked::Locked => Err(None),
                // A file system without hard links: gix's own lock (a kill can then leave it).
                Linked::Unsupported => {
                    index.write(gix::index::write::Options::default()).map_err(|e| Some(e.to_string()))
                }
                Linked::Failed(e) => Err(Some(e)),
            };
            // Locked: the link found index.lock (it may be gone again already), or gix's
            // lock failed while it exists.
            let locked = matches!(written, Err(None)) || lock.exists();
            match written {
                Ok(()) => return Ok(()),
                Err(_) if locked && start.elapsed() < patience => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(_) if locked => return Err(IndexError::Locked(lock)),
                Err(e) => {
                    return Err(IndexError::Repo(RepoError::Failed {
                        what: "writing the index".into(),
                        message: e.unwrap_or_default(),
                    }))
                }
            }
        }
    }

    /// Writes `index` into a twin in `tmp`, links it in as `lock` and renames that over the
    /// index (see [`Repo::update_index`]).
    fn write_index_linked(&self, index: &gix::index::File, lock: &Path, tmp: &Path) -> Linked {
        let mut bytes = Vec::new();
        if let Err(e) = index.write_to(&mut bytes, gix::index::write::Options::default()) {
            return Linked::Failed(e.to_string());
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let twin = tmp.join(format!("{INDEX_LOCK_TWIN}{}-{nanos}", std::process::id()));
        let created = std::fs::create_dir_all(tmp).and_then(|_| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&twin)?;
            std::io::Write::write_all(&mut f, &bytes)
        });
        if let Err(e) = created {
            let _ = std::fs::remove_file(&twin);
            return Linked::Failed(format!("{}: {e}", twin.display()));
        }
        let outcome = match std::fs::hard_link(&twin, lock) {
            Ok(()) => match std::fs::rename(lock, self.git_dir.join("index")) {
                Ok(()) => Linked::Written,
                Err(e) => {
                    let _ = std::fs::remove_file(lock);
                    Linked::Failed(format!("renaming {}: {e}", lock.display()))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Linked::Locked,
            Err(_) => Linked::Unsupported,
        };
        let _ = std::fs::remove_file(&twin);
        outcome
    }

    /// Removes the `index.lock` a killed [`Repo::update_index`] left: the one that is the
    /// same file as a twin in `tmp` (no other process can have made that file). Call before
    /// `tmp` is emptied, with the repository lock held. Returns whether there was one.
    pub fn release_stale_index_lock(&self, tmp: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let lock = self.git_dir.join("index.lock");
        let Ok(held) = std::fs::symlink_metadata(&lock) else { return false };
        let Ok(entries) = std::fs::read_dir(tmp) else { return false };
        let ours = entries.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(INDEX_LOCK_TWIN)
                && e.metadata().is_ok_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino()))
        });
        ours && std::fs::remove_file(&lock).is_ok()
    }

    fn packed_refs_lock(&self) -> PathBuf {
        self.repo.common_dir().join("packed-refs.lock")
    }

    /// Removes the `packed-refs.lock` a killed [`Repo::set_branch`] left: updating a branch
    /// locks `packed-refs` (to read it under the lock) when the file exists, and the lock
    /// stays empty. Only an empty lock created at or after `since` (when the move that
    /// updated the branch was recorded) is taken for that one, and only once it is a second
    /// old: a git process that locks `packed-refs` writes the new file into its lock at
    /// once and is done well within that. Returns whether it removed one.
    pub fn release_stale_packed_refs_lock(&self, since: std::time::SystemTime) -> bool {
        let lock = self.packed_refs_lock();
        let stale = |m: &std::fs::Metadata| m.len() == 0 && m.modified().is_ok_and(|t| t >= since);
        let Ok(meta) = std::fs::metadata(&lock) else { return false };
        if !stale(&meta) {
            return false;
        }
        let age = meta.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        if let Some(wait) = std::time::Duration::from_secs(1).checked_sub(age) {
            std::thread::sleep(wait);
        }
        match std::fs::metadata(&lock) {
            Ok(again) if stale(&again) && again.modified().ok() == meta.modified().ok() => {
                std::fs::remove_file(&lock).is_ok()
            }
            _ => false,
        }
    }

    /// Removes a lock on the ref a fetch writes (`refs/remotes/…`, or git-tally's own
    /// `refs/tally/…`) that no process holds any more: a fetch or push killed while
    /// updating that ref leaves it, and every later fetch fails on it. Fetch and push hold
    /// that lock for the moment of the update, so a lock `older_than` that, which a fetch
    /// just failed on (call it only then), is taken for a dead process's. Returns whether
    /// it removed one.
    pub fn release_stale_tracking_lock(&self, tracking: &str, older_than: std::time::Duration) -> bool {
        if !(tracking.starts_with("refs/remotes/") || tracking.starts_with("refs/tally/")) || !plain_ref(tracking) {
            return false;
        }
        let lock = self.repo.common_dir().join(format!("{tracking}.lock"));
        let Ok(meta) = std::fs::symlink_metadata(&lock) else { return false };
        let age = meta.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        age >= older_than && std::fs::remove_file(&lock).is_ok()
    }

    /// Removes the lock of `branch` that a killed [`Repo::set_branch`] left while moving it
    /// to `new`: `<branch>.lock` holding `new`, a commit git-tally made and recorded before
    /// it took the lock (another process moving the branch writes another commit). Killed
    /// between taking the lock and writing it leaves it empty (or holding the start of
    /// `new`), as a live git process's is while it works (`reflog expire` for the whole
    /// rewrite): such a lock goes only once it is `older_than`.
    /// Returns whether there was one.
    pub fn release_stale_ref_lock(&self, branch: &str, new: Oid, older_than: std::time::Duration) -> bool {
        if !branch.starts_with("refs/heads/") || !plain_ref(branch) {
            return false;
        }
        let lock = self.repo.common_dir().join(format!("{branch}.lock"));
        match std::fs::read_to_string(&lock) {
            Ok(text) if Oid::from_hex(&text) == Some(new) => std::fs::remove_file(&lock).is_ok(),
            Ok(text) if new.to_string().starts_with(text.trim_end()) => {
                let age = std::fs::metadata(&lock).ok().and_then(|m| m.modified().ok()?.elapsed().ok());
                age.is_some_and(|a| a >= older_than) && std::fs::remove_file(&lock).is_ok()
            }
            _ => false,
        }
    }
}

/// Whether a ref name is a plain path below `.git` (no empty or `..` component), so that
/// a lock file named after it is the ref's own.
fn plain_ref(name: &str) -> bool {
    !name.split('/').any(|c| c.is_empty() || c == "..")
}

/// Now, with the local offset (`TZ`, else `/etc/localtime`), as git stamps commits. Read
/// through chrono: gix's `Time::now_local_or_utc` loads jiff's whole time zone database
/// first, about 1.5 ms of every sync.
fn now() -> gix::date::Time {
    let now = chrono::Local::now();
    gix::date::Time { seconds: now.timestamp(), offset: now.offset().local_minus_utc() }
}
