//! `import claude-code|codex`: read an agent's logs into usage events, and say what was
//! read, recorded and skipped.

use crate::cli::{ImportArgs, ImportSource};
use crate::error::Result;
use crate::exit;
use crate::import;
use crate::ledger::Ledger as Store;

pub fn run(store: &Store, args: &ImportArgs) -> Result<i32> {
    // Requests imported before and not folded yet are not recorded (or said recorded) again.
    store.note_pending()?;
    let (name, r) = match args.source {
        ImportSource::ClaudeCode => {
            let dirs = if args.dirs.is_empty() { import::default_dirs() } else { args.dirs.clone() };
            ("claude-code", import::claude_code(store, &dirs)?)
        }
        ImportSource::Codex => {
            let dirs = if args.dirs.is_empty() { vec![import::codex_default_dir()] } else { args.dirs.clone() };
            ("codex", import::codex(store, &dirs)?)
        }
    };
    // With sync on, the requests wait in the journal as `record`'s events do: the next sync
    // folds them after it has brought this device's files up to what the remote holds of
    // them (a clone restored from a backup lags behind what its original pushed, and a fold
    // into a lagging file would be lost to it). Kept locally only, they are folded now.
    if !store.config().enabled {
        if let Some(_lock) = crate::lock::Lock::try_acquire(store.state().lock_dir(), "import")? {
            store.fold()?;
        }
    }
    for w in r.warnings.iter().take(import::MAX_WARNINGS) {
        eprintln!("warning: {w}");
    }
    if r.warnings.len() > import::MAX_WARNINGS {
        eprintln!("warning: {} more line(s) skipped", r.warnings.len() - import::MAX_WARNINGS);
    }
    println!(
        "import {name}: {} file(s), {} bytes read, {} request(s) found, {} recorded, {} already recorded{}",
        r.files,
        r.bytes_read,
        r.entries,
        r.recorded,
        r.already,
        if r.warnings.is_empty() { String::new() } else { format!(", {} line(s) skipped", r.warnings.len()) }
    );
    Ok(exit::OK)
}
