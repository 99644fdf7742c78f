//! Bringing the upstream in, planned as data and done in-process. Ledger directories are
//! joined (two versions of a device's file merge by a join, so any history gives the same
//! state); views are never merged (they are written from the ledger); other files merge
//! 3-way, and a real conflict there stops the sync with nothing changed.

use super::moves::{is_usage_path, move_to};
use super::tree::{join_trees, repo_err};
use super::Sync;
use crate::error::{Error, Result};
use crate::git::{EntryMode, Oid};

/// How the upstream came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing new upstream.
    UpToDate,
    /// Only the upstream moved: the branch moves to it.
    FastForward,
    /// Local commits replayed onto the upstream, one by one (a linear history).
    Replay,
    /// A local history with merges: one merge commit with the upstream.
    Merge,
    /// No common history (a rewritten remote): the upstream with this clone's ledger
    /// joined in.
    Join,
}

/// Integrates the fetched upstream `up` into the current branch.
pub(super) fn integrate(sync: &Sync, up: Oid, r: &mut super::Synced) -> Result<Plan> {
    let repo = &sync.repo;
    let head = repo.head().map_err(repo_err)?;
    if let Some(last) = sync.state().last_synced.as_deref().and_then(Oid::from_hex) {
        if last != up && repo.tree_of(last).is_ok() && !repo.is_ancestor(last, up).map_err(repo_err)? {
            r.rewritten = true;
            r.warnings.push(format!(
                "the upstream's history was rewritten since the last sync ({} is no longer in it); joining the ledgers, nothing is replayed twice",
                &last.to_string()[..12]
            ));
        }
    }
    let Some(h) = head.commit else {
        move_to(sync, &head, up, "git-tally: start from the upstream")?;
        return Ok(Plan::FastForward);
    };
    if h == up {
        return Ok(Plan::UpToDate);
    }
    let base = repo.merge_base(h, up).map_err(repo_err)?;
    let (plan, new) = match base {
        // Ahead of the upstream: nothing to bring in (but see `keep_what_was_taken`).
        Some(b) if b == up => (Plan::UpToDate, h),
        Some(b) if b == h => (Plan::FastForward, up),
        Some(b) => {
            let commits = repo.commits_since(Some(b), h).map_err(repo_err)?;
            if commits.iter().any(|c| c.parents.len() > 1) {
                let tree = merged_tree(sync, Some(repo.tree_of(b).map_err(repo_err)?), h, up)?;
                let commit = repo
                    .commit(tree, &[h, up], "git-tally: merge the upstream", None, sync.ledger.name())
                    .map_err(repo_err)?;
                (Plan::Merge, commit)
            } else {
                let mut onto = up;
                for c in commits {
                    let parent_tree = match c.parents.first() {
                        Some(p) => Some(repo.tree_of(*p).map_err(repo_err)?),
                        None => None,
                    };
                    let onto_tree = repo.tree_of(onto).map_err(repo_err)?;
                    let tree = replayed_tree(sync, parent_tree, onto_tree, c.tree)?;
                    if tree == onto_tree {
                        continue; // the upstream holds all of it already
                    }
                    onto = repo
                        .commit(tree, &[onto], c.message.trim_end(), Some(&c.author), sync.ledger.name())
                        .map_err(repo_err)?;
                }
                (Plan::Replay, onto)
            }
        }
        None => {
            // Unrelated histories (a new clone's first commit, or a rewritten remote): the
            // upstream's files, with the ledgers joined.
            let up_tree = repo.tree_of(up).map_err(repo_err)?;
            let tree = with_ledgers(sync, up_tree, up_tree, repo.tree_of(h).map_err(repo_err)?)?;
            if tree == up_tree {
                (Plan::Join, up)
            } else {
                let commit = repo
                    .commit(
                        tree,
                        &[up],
                        "git-tally: join this clone's usage onto the upstream (no common history)",
                        None,
                        sync.ledger.name(),
                    )
                    .map_err(repo_err)?;
                (Plan::Join, commit)
            }
        }
    };
    // Only this run's own commit on top of the upstream: nothing was taken out of the
    // ledger on either side (a day's busy shard is not read three more times).
    let own_on_top =
        plan == Plan::UpToDate && sync.made_here(h) && repo.commit_info(h).map_err(repo_err)?.parents == [up];
    let new = if own_on_top { new } else { keep_what_was_taken(sync, new, &[h, up])? };
    if new != h {
        move_to(sync, &head, new, "git-tally: integrate the upstream")?;
    }
    Ok(plan)
}

/// The ledger only grows, whatever a commit did: a user's `git revert` or `git reset` of
/// usage commits, another clone's push of such a commit, a ledger directory deleted by
/// hand. Each ledger directory of `new` is joined with those of `before` (this branch
/// before integrating, and the upstream); if that adds anything, a commit on `new` puts it
/// back.
fn keep_what_was_taken(sync: &Sync, new: Oid, before: &[Oid]) -> Result<Oid> {
    let repo = &sync.repo;
    let new_tree = repo.tree_of(new).map_err(repo_err)?;
    let mut tree = new_tree;
    for &c in before {
        let other = repo.tree_of(c).map_err(repo_err)?;
        tree = join_ledgers(sync, tree, other)?;
    }
    if tree == new_tree {
        return Ok(new);
    }
    repo.commit(tree, &[new], "usage: put back what a commit took out of the ledger", None, sync.ledger.name())
        .map_err(repo_err)
}

/// `tree` with each ledger directory joined with `other`'s (everything else as in `tree`).
fn join_ledgers(sync: &Sync, tree: Oid, other: Oid) -> Result<Oid> {
    let repo = &sync.repo;
    let mut edits = Vec::new();
    for s in sync.ledger.streams() {
        let dir = s.ledger_dir();
        let sub = |t: Oid| super::tree::subtree(repo, t, &dir);
        let (a, b) = (sub(tree)?, sub(other)?);
        if a == b || b.is_none() {
            continue;
        }
        let joined = join_trees(repo, a, b, &dir)?;
        if joined != a {
            edits.push((dir, joined.map(|t| (t, EntryMode::Tree))));
        }
    }
    if edits.is_empty() {
        return Ok(tree);
    }
    repo.edit_tree(Some(tree), &edits).map_err(repo_err)
}

/// `tree` without git-tally's paths (ledger directories and view files).
fn strip(sync: &Sync, tree: Oid) -> Result<Oid> {
    let mut edits = Vec::new();
    for s in sync.ledger.streams() {
        for p in [s.ledger_dir(), s.file.clone()] {
            if sync.repo.entry(tree, &p).map_err(repo_err)?.is_some() {
                edits.push((p, None));
            }
        }
    }
    if edits.is_empty() {
        return Ok(tree);
    }
    sync.repo.edit_tree(Some(tree), &edits).map_err(repo_err)
}

/// A 3-way merge of the files outside git-tally's paths.
fn merge_others(sync: &Sync, base: Option<Oid>, ours: Oid, theirs: Oid) -> Result<Oid> {
    let empty = sync.repo.empty_tree();
    let (b, o, t) = (strip(sync, base.unwrap_or(empty))?, strip(sync, ours)?, strip(sync, theirs)?);
    if t == b || o == t {
        return Ok(o);
    }
    if o == b {
        return Ok(t);
    }
    match sync.repo.merge_trees(b, o, t).map_err(repo_err)? {
        Ok(tree) => Ok(tree),
        Err(paths) => {
            let paths: Vec<String> = paths.into_iter().filter(|p| !is_usage_path(sync, p)).collect();
            Err(Error::Usage(format!(
                "integrating the upstream conflicts in {}; nothing was changed and your commits are kept — merge by hand (`git pull`), then sync again",
                paths.join(", ")
            )))
        }
    }
}

/// `others` (a tree of files outside git-tally's paths) with each ledger directory the
/// join of `a`'s and `b`'s, and each tracked view as in `a`.
fn with_ledgers(sync: &Sync, others: Oid, a: Oid, b: Oid) -> Result<Oid> {
    let repo = &sync.repo;
    let mut edits = Vec::new();
    for s in sync.ledger.streams() {
        let dir = s.ledger_dir();
        let sub = |t: Oid| super::tree::subtree(repo, t, &dir);
        let joined = join_trees(repo, sub(a)?, sub(b)?, &dir)?;
        edits.push((dir.clone(), joined.map(|t| (t, EntryMode::Tree))));
        let view = repo.entry(a, &s.file).map_err(repo_err)?;
        if view.is_some() || repo.entry(others, &s.file).map_err(repo_err)?.is_some() {
            edits.push((s.file.clone(), view));
        }
    }
    let edits: Vec<_> =
        edits.into_iter().filter(|(p, e)| e.is_some() || repo.entry(others, p).ok().flatten().is_some()).collect();
    if edits.is_empty() {
        return Ok(others);
    }
    repo.edit_tree(Some(others), &edits).map_err(repo_err)
}

/// The tree of commit `c` (made on `parent`) replayed onto `onto`.
fn replayed_tree(sync: &Sync, parent: Option<Oid>, onto: Oid, c: Oid) -> Result<Oid> {
    let others = merge_others(sync, parent, onto, c)?;
    with_ledgers(sync, others, onto, c)
}

/// The tree of a merge of commits `h` and `up` (with base tree `base`).
fn merged_tree(sync: &Sync, base: Option<Oid>, h: Oid, up: Oid) -> Result<Oid> {
    let repo = &sync.repo;
    let (ht, ut) = (repo.tree_of(h).map_err(repo_err)?, repo.tree_of(up).map_err(repo_err)?);
    let others = merge_others(sync, base, ht, ut)?;
    with_ledgers(sync, others, ut, ht)
}
