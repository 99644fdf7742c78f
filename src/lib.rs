//! git-tally keeps LLM/API usage files exact across machines, with git as the store.
//!
//! The library holds all the logic: the merge [`engine`] driven by [`profile`]s, the
//! file-level [`merge`] the driver runs, the [`git`] module through which every git
//! process is started, and one module per command under [`cmd`].

pub mod cli;
pub mod cmd;
pub mod config;
pub mod debounce;
pub mod engine;
pub mod error;
pub mod event;
pub mod fsutil;
pub mod git;
pub mod import;
pub mod json;
pub mod lock;
pub mod merge;
pub mod num;
pub mod profile;
pub mod report;
pub mod store;
pub mod systemd;

/// Exit codes (SPEC §9).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A merge conflict, or a check that failed.
    pub const CONFLICT: i32 = 1;
    /// A usage error, bad configuration or an unsafe repository state.
    pub const USAGE: i32 = 2;
    /// A transient failure (network, remote, lock busy): safe to retry, nothing lost.
    pub const TRANSIENT: i32 = 3;
}
