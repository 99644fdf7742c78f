//! git-tally keeps LLM/API usage files exact across machines, with git as the store.
//!
//! The library holds all the logic: the [`ledger`] (this device's grow-only contribution,
//! its journal, and the application files as views of every device's ledger; no git),
//! [`sync`] (the ledger committed, the upstream integrated in-process, pushed), the [`git`]
//! vocabulary (gix in-process; the git CLI only for fetch and push), the merge [`engine`]
//! driven by [`profile`]s with the file-level [`merge`] the driver runs, the sources of
//! events ([`collect`], [`import`]), and one module per command under [`cmd`].

pub mod cli;
pub mod cmd;
pub mod collect;
pub mod config;
pub mod debounce;
pub mod engine;
pub mod error;
pub mod event;
pub mod fsutil;
pub mod git;
pub mod import;
pub mod json;
pub mod ledger;
pub mod lock;
pub mod merge;
pub mod num;
pub mod period;
pub mod prices;
pub mod profile;
pub mod report;
pub mod sync;
pub mod systemd;

/// Whether a SIGPIPE ends the process (the binary registers it so that `git tally status |
/// head` ends quietly). Lowered while git-tally itself writes into a child's stdin, where a
/// child that exited early is an error to report, not a reason to die.
pub fn sigpipe_ends_process() -> &'static std::sync::Arc<std::sync::atomic::AtomicBool> {
    static FLAG: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)))
}

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
