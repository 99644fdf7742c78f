//! Trees of the ledger: reading other devices' files from a commit, and joining two trees'
//! ledger directories (walking both at once, into subtrees that differ only, so the cost
//! follows what changed).

use crate::error::{Error, Result};
use crate::git::{EntryMode, Oid, Repo};
use crate::ledger::{LedgerFile, Source};

/// The ledger files in a commit's tree (none: an unborn branch).
pub struct TreeSource<'r> {
    pub repo: &'r Repo,
    pub tree: Option<Oid>,
}

impl Source for TreeSource<'_> {
    fn files(&self, ledger_dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let Some(tree) = self.tree else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (path, id) in self.repo.files_under(tree, ledger_dir).map_err(repo_err)? {
            out.push((path, self.repo.blob(id).map_err(repo_err)?));
        }
        Ok(out)
    }
}

/// The ledger files an application's write is ingested against: HEAD's, joined with those
/// of the commit the views were last written from. An application that re-reads the file
/// lists other devices' requests, and takes as this device's only what they do not hold;
/// a reset branch or a reverted commit may have taken those files out of HEAD since the
/// application read them. Joining costs nothing when the two are the same.
pub struct IngestSource<'r> {
    pub repo: &'r Repo,
    pub head: Option<Oid>,
    /// The commit HEAD was at when the views were last written.
    pub viewed: Option<Oid>,
}

impl Source for IngestSource<'_> {
    fn files(&self, ledger_dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let sub = |commit: Option<Oid>| -> Option<Oid> {
            let tree = self.repo.tree_of(commit?).ok()?;
            self.repo.entry(tree, ledger_dir).ok()?.filter(|(_, m)| *m == EntryMode::Tree).map(|(id, _)| id)
        };
        let joined = join_trees(self.repo, sub(self.head), sub(self.viewed), ledger_dir)?;
        TreeSource { repo: self.repo, tree: joined }.files("")
    }
}

pub(crate) fn repo_err(e: crate::git::RepoError) -> Error {
    match e {
        crate::git::RepoError::Unusable(m) => Error::Usage(m),
        e @ crate::git::RepoError::RefLocked(_) => Error::Transient(e.to_string()),
        other => Error::Failed(other.to_string()),
    }
}

/// The tree at `path` below `tree` (`None`: absent, or not a directory).
pub(crate) fn subtree(repo: &Repo, tree: Oid, path: &str) -> Result<Option<Oid>> {
    Ok(repo.entry(tree, path).map_err(repo_err)?.filter(|(_, m)| *m == EntryMode::Tree).map(|(id, _)| id))
}

/// The join of two subtrees holding ledger files (`None`: absent). Files on one side
/// only are kept; files on both with different content are joined.
pub(crate) fn join_trees(repo: &Repo, a: Option<Oid>, b: Option<Oid>, path: &str) -> Result<Option<Oid>> {
    match (a, b) {
        (None, x) | (x, None) => Ok(x),
        (Some(x), Some(y)) if x == y => Ok(Some(x)),
        (Some(x), Some(y)) => {
            let ea = repo.tree_entries(x).map_err(repo_err)?;
            let eb = repo.tree_entries(y).map_err(repo_err)?;
            let mut names: Vec<&String> = ea.iter().chain(&eb).map(|(n, _, _)| n).collect();
            names.sort();
            names.dedup();
            let mut edits = Vec::new();
            for name in names {
                let find =
                    |l: &[(String, Oid, EntryMode)]| l.iter().find(|(n, _, _)| n == name).map(|(_, id, m)| (*id, *m));
                let (u, v) = (find(&ea), find(&eb));
                if u == v {
                    continue;
                }
                let sub = format!("{path}/{name}");
                let joined = match (u, v) {
                    (Some((i, EntryMode::Tree)), Some((j, EntryMode::Tree))) => {
                        join_trees(repo, Some(i), Some(j), &sub)?.map(|t| (t, EntryMode::Tree))
                    }
                    (Some((i, mi)), Some((j, _))) if mi != EntryMode::Tree => {
                        let fa = LedgerFile::parse(&repo.blob(i).map_err(repo_err)?);
                        let fb = LedgerFile::parse(&repo.blob(j).map_err(repo_err)?);
                        match (fa, fb) {
                            (Ok(fa), Ok(fb)) => {
                                let joined = fa.join(&fb).map_err(|e| Error::Failed(format!("{sub}: {e}")))?;
                                Some((repo.write_blob(&joined.render()).map_err(repo_err)?, EntryMode::Blob))
                            }
                            // One side unreadable: keep the readable one; both: ours.
                            (Ok(_), Err(_)) | (Err(_), Err(_)) => Some((i, mi)),
                            (Err(_), Ok(_)) => Some((j, mi)),
                        }
                    }
                    // A tree against a file: keep the tree (ledger directories hold files).
                    (Some(t @ (_, EntryMode::Tree)), _) | (_, Some(t @ (_, EntryMode::Tree))) => Some(t),
                    (Some(t), None) | (None, Some(t)) => Some(t),
                    (Some(t), Some(_)) => Some(t),
                    (None, None) => None,
                };
                edits.push((name.clone(), joined));
            }
            if edits.is_empty() {
                return Ok(Some(x));
            }
            Ok(Some(repo.edit_tree(Some(x), &edits).map_err(repo_err)?))
        }
    }
}
