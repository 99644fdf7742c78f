//! Moving the branch, with the index and the work tree (SPEC §6): the changed files are
//! written first (through `.git/tally/tmp`), then the index (through `index.lock`, waiting
//! a moment for an editor's `git status`), then the branch, with its expected old value.
//! `move.json` says what is under way: a run killed anywhere, or stopped by another
//! process holding `index.lock`, is finished by the next one. Until the branch moves the
//! index holds the new files, so a user's commit in between commits them — never a
//! deletion of usage.

use super::tree::repo_err;
use super::Sync;
use crate::error::{Error, Result};
use crate::git::{EntryMode, Head, Oid, TreeChange};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long to wait for another git process to release `index.lock`.
const INDEX_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
struct MoveRecord {
    branch: String,
    from: Option<String>,
    to: String,
    message: String,
}

/// Whether `path` belongs to git-tally: a ledger directory or a view file.
pub(super) fn is_usage_path(sync: &Sync, path: &str) -> bool {
    sync.ledger.streams().iter().any(|s| path == s.file || path.starts_with(&format!("{}/", s.ledger_dir())))
}

fn is_view(sync: &Sync, path: &str) -> bool {
    sync.ledger.streams().iter().any(|s| path == s.file)
}

/// Points the branch at `to`, with index and work tree (see the module comment). Refuses
/// (exit 2, nothing changed) when a file outside git-tally's paths that the move changes
/// has local changes.
pub(super) fn move_to(sync: &Sync, head: &Head, to: Oid, message: &str) -> Result<()> {
    let repo = &sync.repo;
    let from_tree = head.commit.map(|c| repo.tree_of(c)).transpose().map_err(repo_err)?;
    let to_tree = repo.tree_of(to).map_err(repo_err)?;
    let changes = repo.diff_trees(from_tree, Some(to_tree)).map_err(repo_err)?;
    check_clean(sync, &changes)?;
    let record = MoveRecord {
        branch: head.branch.clone(),
        from: head.commit.map(|c| c.to_string()),
        to: to.to_string(),
        message: message.to_string(),
    };
    let path = sync.ledger.state().move_record();
    crate::fsutil::write_atomic(&path, &serde_json::to_vec(&record).expect("serialises"))?;
    apply(sync, &changes)?;
    repo.set_branch(&head.branch, to, head.commit, message, sync.ledger.name()).map_err(repo_err)?;
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    Ok(())
}

/// Finishes a move a killed run left (see the module comment).
pub(super) fn recover(sync: &Sync) -> Result<()> {
    let path = sync.ledger.state().move_record();
    let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
    let Ok(record) = serde_json::from_slice::<MoveRecord>(&bytes) else {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    };
    let repo = &sync.repo;
    let (from, to) = (record.from.as_deref().and_then(Oid::from_hex), Oid::from_hex(&record.to));
    let Some(to) = to else {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    };
    // Killed while updating the branch (before or after the ref itself moved): the lock
    // gix took on `packed-refs` stops every later ref update, git's too.
    if let Ok(recorded) = std::fs::metadata(&path).and_then(|m| m.modified()) {
        repo.release_stale_packed_refs_lock(recorded);
    }
    let now = repo.resolve(&record.branch).map_err(repo_err)?;
    if now == from {
        // Killed while moving the branch: its lock holds `to` and stops every git process.
        repo.release_stale_ref_lock(&record.branch, to, super::STALE_REF_LOCK);
    }
    if now == Some(to) || now == from {
        let from_tree = from.map(|c| repo.tree_of(c)).transpose().map_err(repo_err)?;
        let to_tree = repo.tree_of(to).map_err(repo_err)?;
        let changes = repo.diff_trees(from_tree, Some(to_tree)).map_err(repo_err)?;
        apply(sync, &changes)?;
        if now == from {
            repo.set_branch(&record.branch, to, from, &record.message, sync.ledger.name()).map_err(repo_err)?;
        }
    }
    // Otherwise the branch moved elsewhere meanwhile (the user committed): the next
    // integration starts from there.
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    Ok(())
}

/// The id git gives a file's content.
fn blob_id(bytes: &[u8]) -> Option<Oid> {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes).ok().map(Oid::from)
}

/// Refuses a move over local changes to files outside git-tally's paths.
fn check_clean(sync: &Sync, changes: &[TreeChange]) -> Result<()> {
    let mut dirty = Vec::new();
    for c in changes.iter().filter(|c| !is_usage_path(sync, &c.path)) {
        let old = c.old.map(|(id, _)| id);
        let on_disk = match std::fs::symlink_metadata(sync.repo.top().join(&c.path)) {
            Ok(m) if m.is_file() => std::fs::read(sync.repo.top().join(&c.path)).ok().and_then(|b| blob_id(&b)),
            Ok(_) => old, // a directory or link: git's own business
            Err(_) => None,
        };
        let staged = sync.repo.index_entry(&c.path).map_err(repo_err)?;
        if on_disk != old || staged != old {
            dirty.push(c.path.clone());
        }
    }
    if dirty.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "local changes to {} block bringing in the upstream's changes to the same files; your usage is committed locally — commit or stash them, then sync again",
        dirty.join(", ")
    )))
}

/// Writes the changed files into the work tree and the index (view files: the index only;
/// their work-tree copy is written as a view, after the application's writes).
fn apply(sync: &Sync, changes: &[TreeChange]) -> Result<()> {
    let repo = &sync.repo;
    let tmp = sync.ledger.state().tmp();
    sync.ledger.state().ensure(&tmp)?;
    for c in changes {
        if is_view(sync, &c.path) {
            continue;
        }
        let path = repo.top().join(&c.path);
        match c.new {
            Some((id, mode @ (EntryMode::Blob | EntryMode::Executable))) => {
                let bytes = repo.blob(id).map_err(repo_err)?;
                crate::ledger::replace_file(&path, &bytes, &tmp)?;
                if mode == EntryMode::Executable {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
                }
            }
            Some((id, EntryMode::Link)) => {
                let target = repo.blob(id).map_err(repo_err)?;
                let _ = std::fs::remove_file(&path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::os::unix::fs::symlink(String::from_utf8_lossy(&target).as_ref(), &path)
                    .map_err(|e| Error::io(&path, e))?;
            }
            Some(_) => {}
            None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
                // Like git: directories left empty go too.
                let mut dir = path.parent().map(|p| p.to_path_buf());
                while let Some(d) = dir {
                    if d == repo.top() || std::fs::remove_dir(&d).is_err() {
                        break;
                    }
                    dir = d.parent().map(|p| p.to_path_buf());
                }
            }
        }
    }
    let entries: Vec<(String, Option<(Oid, EntryMode)>)> = changes.iter().map(|c| (c.path.clone(), c.new)).collect();
    repo.update_index(&entries, INDEX_PATIENCE, &tmp).map_err(|e| match e {
        crate::git::IndexError::Locked(p) => Error::Transient(format!(
            "another git process holds {} (an editor's `git status`?); nothing was lost — the next sync finishes this one",
            p.display()
        )),
        crate::git::IndexError::Repo(e) => repo_err(e),
    })
}
