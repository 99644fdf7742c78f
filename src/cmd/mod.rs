//! One module per subcommand; `run` dispatches.

mod check;
mod completions;
mod daemon;
mod demo;
mod doctor;
mod history;
mod hooks;
mod install;
mod man;
mod merge;
mod stats;
mod status;
mod sync;
mod systemd;

use crate::cli::{Cli, Command, ConfirmArgs};
use crate::config::{Config, ProxyConfig};
use crate::error::{Error, Result};
use crate::profile;
use crate::store::Store;
use std::path::{Path, PathBuf};

/// Runs a parsed command line; the `Ok` value is the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let dir = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let proxy = cli.proxy_config.as_deref();
    match cli.command {
        Command::Merge(args) => merge::run(&dir, &args),
        Command::Install(args) => install::install(&dir, &args),
        Command::Uninstall(args) => install::uninstall(&dir, &args),
        Command::Doctor => doctor::run(&dir),
        Command::Check(args) => check::run(&dir, &args),
        Command::Completions { shell } => completions::run(shell),
        Command::Man => {
            use std::io::Write;
            std::io::stdout().write_all(man::render().as_bytes()).map_err(|e| Error::io("stdout", e))?;
            Ok(crate::exit::OK)
        }
        Command::Profiles => {
            for p in profile::all() {
                println!("{:<20} {}", p.name, p.description);
            }
            Ok(crate::exit::OK)
        }
        Command::Record(args) => sync::record(&open_store(&dir, proxy)?, &args),
        Command::Pull => match sync_disabled(&dir, proxy)? {
            (store, Some(note)) => fold_only(&store, "pull", &note),
            (store, None) => sync::pull(&store),
        },
        Command::Sync => match sync_disabled(&dir, proxy)? {
            (store, Some(note)) => fold_only(&store, "sync", &note),
            (store, None) => sync::sync(&store),
        },
        Command::Flush(args) => match sync_disabled(&dir, proxy)? {
            (store, Some(note)) => fold_only(&store, "flush", &note),
            (store, None) => sync::flush(&store, &args),
        },
        Command::Daemon => match sync_disabled(&dir, proxy)? {
            (_, Some(note)) => {
                println!("daemon: {note}; nothing to sync, not starting");
                Ok(crate::exit::OK)
            }
            (store, None) => daemon::run(&store),
        },
        Command::Status(args) => status::run(&open_store(&dir, proxy)?, &args),
        Command::Systemd(args) => {
            let (config, proxy_config) = load_config(&dir, proxy)?;
            let source = match (&args.interval, proxy, &proxy_config) {
                (Some(_), _, _) => systemd::IntervalSource::Flag,
                (None, Some(p), Some(pc)) if pc.sets_sync_interval() => systemd::IntervalSource::Proxy(p),
                _ => systemd::IntervalSource::GitConfig,
            };
            systemd::run(&Store::open_with(&dir, config)?, &args, source)
        }
        Command::Hooks(args) => hooks::run(&dir, &args),
        Command::Stats(args) => stats::stats(&dir, proxy, &args),
        Command::Export(args) => stats::export(&dir, proxy, &args),
        Command::Report(args) => stats::html(&dir, proxy, &args),
        Command::Rebuild { file } => stats::rebuild(&dir.join(file)),
        Command::History(args) => history::history(&open_store(&dir, proxy)?, &args),
        Command::Restore(args) => history::restore(&open_store(&dir, proxy)?, &args),
        Command::Diff(args) => history::diff(&open_store(&dir, proxy)?, &args),
        Command::Show { file } => history::show(&dir.join(file)),
        Command::ClearHistory(args) => {
            let store = open_store(&dir, proxy)?;
            let what = format!(
                "Clear the records of {} (aggregates are kept; every machine gets this at its next sync)?",
                files_of(&store)
            );
            if !confirm("clear-history", &what, &args)? {
                return Ok(crate::exit::CONFLICT);
            }
            let n = store.clear_history()?;
            println!("cleared the records of {n} usage file(s); aggregates kept (sync to share)");
            Ok(crate::exit::OK)
        }
        Command::Reset(args) => {
            let store = open_store(&dir, proxy)?;
            let what = format!(
                "Zero the aggregates and clear the records of {} (every machine gets the reset at its next sync; traffic recorded elsewhere meanwhile stays)?",
                files_of(&store)
            );
            if !confirm("reset", &what, &args)? {
                return Ok(crate::exit::CONFLICT);
            }
            let n = store.reset()?;
            println!("reset {n} usage file(s) to zero (sync to share; other machines' new traffic stays)");
            Ok(crate::exit::OK)
        }
        Command::Import(args) => {
            let store = open_store(&dir, proxy)?;
            let dirs = if args.dirs.is_empty() { crate::import::default_dirs() } else { args.dirs.clone() };
            let r = crate::import::claude_code(&store, &dirs)?;
            println!(
                "import claude-code: {} file(s), {} bytes read, {} request(s) found, {} recorded, {} already recorded",
                r.files, r.bytes_read, r.entries, r.recorded, r.already
            );
            Ok(crate::exit::OK)
        }
        Command::Demo(args) => demo::run(&args),
    }
}

/// The configuration of the repository around `dir`: git config, then `--proxy-config`
/// over it, its usage files checked; warnings about it printed.
fn load_config(dir: &Path, proxy: Option<&Path>) -> Result<(Config, Option<ProxyConfig>)> {
    let mut config = Config::load_at(dir)?;
    let proxy_config = match proxy {
        Some(p) => {
            let pc = ProxyConfig::read(p)?;
            pc.apply(&mut config)?;
            let top = crate::config::discover(dir).map(|(top, _)| top).unwrap_or_else(|| dir.to_path_buf());
            crate::config::check_files(&mut config.files, Some(&top), &pc.file_key(p), config.enabled)?;
            // The git config's usage files were replaced: so are the warnings about them.
            config.warnings.clear();
            Some(pc)
        }
        None => None,
    };
    for w in &config.warnings {
        eprintln!("git-tally: warning: {w}");
    }
    Ok((config, proxy_config))
}

/// The store of the repository around `dir`: git config, then `--proxy-config` over it.
pub(crate) fn open_store(dir: &Path, proxy: Option<&Path>) -> Result<Store> {
    let (config, _) = load_config(dir, proxy)?;
    Store::open_with(dir, config)
}

/// The store, and why usage sync is off if it is — in the terms of the setting that turned
/// it off (the proxy's YAML, or git config).
fn sync_disabled(dir: &Path, proxy: Option<&Path>) -> Result<(Store, Option<String>)> {
    let (config, proxy_config) = load_config(dir, proxy)?;
    let note = match (proxy, &proxy_config) {
        (Some(p), Some(pc)) => pc.sync_disabled(p),
        _ if !config.enabled => {
            Some("usage sync is off (git config tally.enabled = false): usage is kept locally".to_string())
        }
        _ => None,
    };
    Ok((Store::open_with(dir, config)?, note))
}

/// A sync command with usage sync off: the journal folded into the usage file, a note,
/// exit 0 (a cron job must not log an error every run for a setting someone chose).
fn fold_only(store: &Store, what: &str, note: &str) -> Result<i32> {
    let n = store.fold()?;
    let folded = if n == 1 { "1 event folded".to_string() } else { format!("{n} events folded") };
    println!("{what}: {folded}; {note}, nothing to sync");
    Ok(crate::exit::OK)
}

/// The usage files of `store`, for a question about them.
fn files_of(store: &Store) -> String {
    store.config().files.iter().map(|f| store.top().join(f).display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Asks `question` on a terminal; without one, `--yes` is required (exit 2), so that a
/// script cannot destroy counters by accident. Whether to go ahead.
fn confirm(command: &str, question: &str, args: &ConfirmArgs) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if args.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "{command} changes the usage file on every machine and asks first; not on a terminal, so pass --yes to do it"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Error::io("stdin", e))?;
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !yes {
        eprintln!("{command}: nothing changed");
    }
    Ok(yes)
}

/// A profile named on the command line.
fn profile_arg(name: Option<&str>) -> Result<Option<&'static profile::Profile>> {
    name.map(|n| {
        profile::by_name(n).ok_or_else(|| {
            Error::Usage(format!("unknown profile {n:?}; known profiles: {}", profile::names().join(", ")))
        })
    })
    .transpose()
}
