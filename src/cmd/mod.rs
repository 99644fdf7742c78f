//! One module per subcommand; `run` dispatches.

mod check;
mod collect;
mod completions;
mod daemon;
mod demo;
mod doctor;
mod history;
mod hooks;
mod import;
mod install;
mod man;
mod merge;
mod prices;
mod render;
mod stats;
mod status;
mod sync;
mod systemd;

use crate::cli::{Cli, Command, ConfirmArgs};
use crate::config::{Config, ProxyConfig};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::profile;
use crate::sync::Sync;
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
        Command::Record(args) => sync::record(&open_ledger(&dir, proxy)?, &dir, proxy, &args),
        Command::Collect(args) => collect::run(&dir, proxy, &args),
        Command::Pull | Command::Sync | Command::Flush(_) | Command::Daemon => {
            let (config, note) = sync_disabled(&dir, proxy)?;
            let what = match &cli.command {
                Command::Pull => "pull",
                Command::Sync => "sync",
                Command::Flush(_) => "flush",
                _ => "daemon",
            };
            if let Some(note) = note {
                if what == "daemon" {
                    println!("daemon: {note}; nothing to sync, not starting");
                    return Ok(crate::exit::OK);
                }
                return fold_only(&ledger_with(&dir, config)?, what, &note);
            }
            if what == "daemon" {
                return daemon::run(&dir, proxy);
            }
            let s = sync_with(&dir, config)?;
            match cli.command {
                Command::Pull => sync::pull(&s),
                Command::Sync => sync::sync(&s),
                Command::Flush(args) => sync::flush(&s, &args),
                _ => unreachable!("matched above"),
            }
        }
        Command::Status(args) => status::run(&dir, proxy, &args),
        Command::Systemd(args) => {
            let (config, proxy_config) = load_config(&dir, proxy)?;
            let source = match (&args.interval, proxy, &proxy_config) {
                (Some(_), _, _) => systemd::IntervalSource::Flag,
                (None, Some(p), Some(pc)) if pc.sets_sync_interval() => systemd::IntervalSource::Proxy(p),
                _ => systemd::IntervalSource::GitConfig,
            };
            systemd::run(&ledger_with(&dir, config)?, &args, source)
        }
        Command::Hooks(args) => hooks::run(&dir, &args),
        Command::Stats(args) => stats::stats(&dir, proxy, &args),
        Command::Export(args) => stats::export(&dir, proxy, &args),
        Command::Report(args) => stats::html(&dir, proxy, &args),
        Command::Rebuild { file } => stats::rebuild(&dir.join(file)),
        Command::History(args) => history::history(&open_sync(&dir, proxy)?, &args),
        Command::Restore(args) => history::restore(&open_sync(&dir, proxy)?, &args),
        Command::Diff(args) => history::diff(&open_sync(&dir, proxy)?, &args),
        Command::Show { file } => history::show(&dir.join(file)),
        Command::ClearHistory(args) => {
            let ledger = open_ledger(&dir, proxy)?;
            let what = format!(
                "Clear the records of {} (aggregates are kept; every machine gets this at its next sync)?",
                files_of(&ledger)
            );
            if !confirm("clear-history", &what, &args)? {
                return Ok(crate::exit::CONFLICT);
            }
            pull_first(&ledger, &dir, proxy, "clear-history");
            lower(&ledger, false)
        }
        Command::Reset(args) => {
            let ledger = open_ledger(&dir, proxy)?;
            let what = format!(
                "Zero the aggregates and clear the records of {} (every machine gets the reset at its next sync; traffic recorded elsewhere meanwhile stays)?",
                files_of(&ledger)
            );
            if !confirm("reset", &what, &args)? {
                return Ok(crate::exit::CONFLICT);
            }
            pull_first(&ledger, &dir, proxy, "reset");
            lower(&ledger, true)
        }
        Command::Move { from, to } => {
            let ledger = open_ledger(&dir, proxy)?;
            pull_first(&ledger, &dir, proxy, "move");
            move_usage(&ledger, &from, to.as_deref())
        }
        Command::Import(args) => import::run(&open_ledger(&dir, proxy)?, &args),
        Command::Prices(args) => prices::run(&dir, proxy, &args),
        Command::Demo(args) => demo::run(&args),
    }
}

/// How long `reset`, `clear-history` and `move` wait for the pull before them.
const PULL_FIRST: std::time::Duration = std::time::Duration::from_secs(30);

/// A pull before a command that folds the journal and rewrites this device's files
/// (`reset`, `clear-history`, `move`): the pull brings those files up to what the remote
/// holds of them first (a clone restored from a backup lags behind what its original
/// pushed; a fold into a lagging file is lost to it). Offline, the command goes on with
/// what this clone holds, with a warning.
fn pull_first(ledger: &Ledger, dir: &Path, proxy: Option<&Path>, what: &str) {
    if !ledger.config().enabled {
        return;
    }
    let Ok(s) = open_sync(dir, proxy) else { return };
    if s.upstream().is_err() {
        return; // nothing to pull from
    }
    let deadline = std::time::Instant::now() + PULL_FIRST;
    if let Err(e) = s.run(false, Some(deadline), &mut |d| std::thread::sleep(d)) {
        eprintln!("git-tally: warning: could not pull before the {what} ({e}); it applies to what this clone holds");
    }
}

/// The configuration for `dir`: git config, then `--proxy-config` over it (its usage file
/// checked as `tally.file` is); warnings about it are printed here.
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

/// `--proxy-config` over a configuration already read.
pub(crate) fn apply_proxy(config: &mut Config, proxy: Option<&Path>) -> Result<()> {
    if let Some(p) = proxy {
        ProxyConfig::read(p)?.apply(config)?;
    }
    Ok(())
}

/// This device's ledger in the repository around `dir` (no git process when the
/// configuration is cached, no gix: the write path opens only what it needs).
pub(crate) fn open_ledger(dir: &Path, proxy: Option<&Path>) -> Result<Ledger> {
    let (config, _) = load_config(dir, proxy)?;
    ledger_with(dir, config)
}

/// This device's ledger with a configuration. Local-only mode outside a repository keeps
/// its state in `<dir>/.git-tally/`.
pub(crate) fn ledger_with(dir: &Path, config: Config) -> Result<Ledger> {
    let mut ledger = match crate::config::discover(dir) {
        Some((top, git_dir)) => {
            let hints = |file: &str| match crate::git::Repo::open(&top) {
                Ok(repo) => crate::sync::profile_hints(&repo, file),
                Err(_) => Default::default(),
            };
            Ledger::open(&top, &git_dir.join("tally"), &git_dir, config, &hints)?
        }
        None if !config.enabled => {
            let state = dir.join(".git-tally");
            Ledger::open(dir, &state, &state, config, &|_| Default::default())?
        }
        None => return Err(not_a_work_tree(dir)),
    };
    for n in ledger.take_notices() {
        eprintln!("git-tally: {n}");
    }
    Ok(ledger)
}

/// The repository around `dir`, to sync.
pub(crate) fn open_sync(dir: &Path, proxy: Option<&Path>) -> Result<Sync> {
    sync_with(dir, load_config(dir, proxy)?.0)
}

fn not_a_work_tree(dir: &Path) -> Error {
    Error::Usage(format!(
        "{} is not inside a git work tree; clone your usage repository, or set tally.enabled=false for local-only use",
        dir.display()
    ))
}

fn sync_with(dir: &Path, config: Config) -> Result<Sync> {
    if crate::config::discover(dir).is_none() {
        return Err(not_a_work_tree(dir));
    }
    let repo = crate::git::Repo::open(dir).map_err(|e| Error::Usage(e.to_string()))?;
    let mut s = Sync::open_with(repo, config)?;
    for n in s.ledger.take_notices() {
        eprintln!("git-tally: {n}");
    }
    Ok(s)
}

/// Other devices' files as HEAD holds them (none in local-only mode).
fn with_source<T>(ledger: &Ledger, f: impl FnOnce(&dyn crate::ledger::Source) -> Result<T>) -> Result<T> {
    let repo = if ledger.config().enabled { crate::git::Repo::open(ledger.top()).ok() } else { None };
    match &repo {
        Some(r) => {
            let tree = r.head().ok().and_then(|h| h.commit).and_then(|c| r.tree_of(c).ok());
            f(&crate::sync::TreeSource { repo: r, tree })
        }
        None => f(&crate::ledger::NoSource),
    }
}

/// What git-tally 0.1 left, migrated (call with the repository lock held).
fn migrate(ledger: &Ledger) -> Result<()> {
    let repo = if ledger.config().enabled { crate::git::Repo::open(ledger.top()).ok() } else { None };
    for n in crate::sync::migrate(ledger, repo.as_ref())? {
        eprintln!("git-tally: {n}");
    }
    Ok(())
}

/// The usage files follow the ledger at once (a reset shows before it is synced).
fn write_views_now(ledger: &Ledger) -> Result<()> {
    for s in ledger.streams() {
        let view = with_source(ledger, |source| ledger.view(s, source, false))?;
        ledger.write_view(s, &view, false)?;
    }
    Ok(())
}

/// `reset` (`true`) and `clear-history`: floors or watermarks at what every device holds
/// now, committed by the next sync (SPEC §4b.3).
fn lower(ledger: &Ledger, reset: bool) -> Result<i32> {
    let _lock = crate::lock::Lock::acquire(ledger.state().lock_dir(), ledger.config().lock_timeout, "reset")?;
    migrate(ledger)?;
    ledger.fold()?;
    let n = with_source(ledger, |source| ledger.lower(source, reset))?;
    write_views_now(ledger)?;
    if reset {
        println!(
            "reset the usage of {} to zero (sync to share; other machines' new traffic stays)",
            sync::plural(n, "device")
        );
    } else {
        println!("cleared the records of {}; aggregates kept (sync to share)", sync::plural(n, "device"));
    }
    Ok(crate::exit::OK)
}

/// `move`: this device's usage of `from` (no longer in tally.file) counted in `to`.
fn move_usage(ledger: &Ledger, from: &str, to: Option<&str>) -> Result<i32> {
    let _lock = crate::lock::Lock::acquire(ledger.state().lock_dir(), ledger.config().lock_timeout, "move")?;
    migrate(ledger)?;
    ledger.fold()?;
    let target = match to {
        None => ledger.streams().first(),
        Some(t) => ledger.streams().iter().find(|s| s.file == t.trim_start_matches("./")),
    }
    .ok_or_else(|| {
        Error::Usage(format!("{} is not in tally.file (configured: {})", to.unwrap_or("(none)"), files_of(ledger)))
    })?;
    let moved = ledger.move_usage(from.trim_start_matches("./"), target)?;
    write_views_now(ledger)?;
    println!(
        "moved this device's usage of {from} into {} ({}, device {}); sync to share",
        target.file,
        sync::plural(moved.files, "ledger file"),
        moved.device
    );
    Ok(crate::exit::OK)
}

/// A usage file, and its document as the ledger makes it (`None`: read the file).
pub(crate) type Located = (PathBuf, Option<(&'static profile::Profile, serde_json::Value)>);

/// The view of a configured usage file (`file`: one of them, by path; `None`: the first)
/// as the ledger makes it, with what is recorded and not synced yet; `None` when `file`
/// is not a configured usage file.
pub(crate) fn current_view(dir: &Path, proxy: Option<&Path>, file: Option<&Path>) -> Result<Option<Located>> {
    let ledger = open_ledger(dir, proxy)?;
    let stream = match file {
        None => ledger.streams().first(),
        Some(f) => {
            let abs = std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf());
            ledger.streams().iter().find(|s| ledger.top().join(&s.file) == abs || ledger.top().join(&s.file) == f)
        }
    };
    let Some(stream) = stream else { return Ok(None) };
    // A repository from git-tally 0.1 is migrated before its first report (unless a sync
    // holds the lock: it migrates).
    if let Some(_lock) = crate::lock::Lock::try_acquire(ledger.state().lock_dir(), "migrate")? {
        migrate(&ledger)?;
    }
    let view = with_source(&ledger, |source| ledger.view(stream, source, true))?;
    Ok(Some((ledger.top().join(&stream.file), Some((view.profile, view.doc)))))
}

/// The configuration, and why usage sync is off if it is — in the terms of the setting
/// that turned it off (the proxy's YAML, or git config).
fn sync_disabled(dir: &Path, proxy: Option<&Path>) -> Result<(Config, Option<String>)> {
    let (config, proxy_config) = load_config(dir, proxy)?;
    let note = match (proxy, &proxy_config) {
        (Some(p), Some(pc)) => pc.sync_disabled(p),
        _ if !config.enabled => {
            Some("usage sync is off (git config tally.enabled = false): usage is kept locally".to_string())
        }
        _ => None,
    };
    Ok((config, note))
}

/// A sync command with usage sync off: the journal folded into the usage files, a note,
/// exit 0 (a cron job must not log an error every run for a setting someone chose).
fn fold_only(ledger: &Ledger, what: &str, note: &str) -> Result<i32> {
    let _lock = crate::lock::Lock::acquire(ledger.state().lock_dir(), ledger.config().lock_timeout, what)?;
    migrate(ledger)?;
    let n = ledger.fold()?;

    for s in ledger.streams() {
        let view = ledger.view(s, &crate::ledger::NoSource, false)?;
        ledger.write_view(s, &view, false)?;
    }
    println!("{what}: {} folded; {note}, nothing to sync", sync::plural(n, "event"));
    Ok(crate::exit::OK)
}

/// The usage files of a ledger, for a question about them.
fn files_of(ledger: &Ledger) -> String {
    ledger.streams().iter().map(|s| ledger.top().join(&s.file).display().to_string()).collect::<Vec<_>>().join(", ")
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
