//! The library's error type: every error carries the file or command it concerns and
//! maps to one of the documented exit codes.

use crate::exit;
use std::path::PathBuf;

/// A git process that failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed{}: {stderr}", status.map(|s| format!(" (exit {s})")).unwrap_or_default())]
pub struct GitError {
    pub command: String,
    pub status: Option<i32>,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Bad arguments, configuration or repository state (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A check that failed, already reported (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The lock is busy, the remote unreachable, a push kept being rejected: retry later;
    /// nothing was lost (exit 3).
    #[error("{0}")]
    Transient(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { source, .. } if !io_transient(source) => exit::USAGE,
            Error::Git(_) | Error::Io { .. } | Error::Transient(_) => exit::TRANSIENT,
            Error::Usage(_) => exit::USAGE,
            Error::Failed(_) => exit::CONFLICT,
        }
    }
}

/// Whether a file-system error may go away by itself (a full disk, a busy or interrupted
/// call): exit 3, safe to retry. A file that is missing, not permitted, read-only or of the
/// wrong kind stays so until someone changes it: exit 2, like any other bad argument.
fn io_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    !matches!(
        e.kind(),
        NotFound
            | PermissionDenied
            | AlreadyExists
            | InvalidInput
            | InvalidData
            | IsADirectory
            | NotADirectory
            | ReadOnlyFilesystem
            | DirectoryNotEmpty
            | InvalidFilename
            | FileTooLarge
            | Unsupported
    )
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
