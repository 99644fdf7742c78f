//! The one place git is used, as a vocabulary of typed operations.
//!
//! - [`Repo`] (in process, with gix): refs, trees, blobs, commits, merge bases, tree
//!   diffs and merges, the index. A sync integrates without starting git.
//! - [`Git`] (git processes, `LC_ALL=C`): transport — [`Git::fetch`] and [`Git::push`],
//!   which use the user's ssh agent, credential helpers and proxies — and the
//!   configuration, attribute, hooks-path and staged-index queries of install, hooks,
//!   doctor and demo, each a typed method (the process runner is private to it).
//!
//! No git command line is built outside this module.

mod attrs;
mod cli;
mod repo;

pub use attrs::{profile_of, profile_setting};
pub use cli::{merge_file, Fetched, Git, Pushed, Scope, TransportError};
pub use repo::{EntryMode, Head, IndexError, Repo, RepoError, TreeChange};

use std::fmt;

/// A git object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(pub(crate) gix::ObjectId);

impl Oid {
    /// Parses a full hexadecimal id.
    pub fn from_hex(text: &str) -> Option<Oid> {
        gix::ObjectId::from_hex(text.trim().as_bytes()).ok().map(Oid)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex_with_len(10))
    }
}

impl From<gix::ObjectId> for Oid {
    fn from(id: gix::ObjectId) -> Self {
        Oid(id)
    }
}
