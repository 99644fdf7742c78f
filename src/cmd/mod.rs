//! One module per subcommand; `run` dispatches.

mod check;
mod daemon;
mod demo;
mod doctor;
mod history;
mod hooks;
mod install;
mod merge;
mod stats;
mod status;
mod sync;
mod systemd;

use crate::cli::{Cli, Command};
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
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "git-tally", &mut std::io::stdout());
            Ok(crate::exit::OK)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout()).map_err(|e| Error::io("stdout", e))?;
            Ok(crate::exit::OK)
        }
        Command::Profiles => {
            for p in profile::all() {
                println!("{:<20} {}", p.name, p.description);
            }
            Ok(crate::exit::OK)
        }
        Command::Record(args) => sync::record(&open_ledger(&dir, proxy)?, &dir, proxy, &args),
        Command::Pull | Command::Sync | Command::Flush(_) => {
            let ledger = open_ledger(&dir, proxy)?;
            if !ledger.config().enabled {
                return local_only(&ledger, proxy);
            }
            let s = open_sync(&dir, proxy)?;
            match cli.command {
                Command::Pull => sync::pull(&s),
                Command::Sync => sync::sync(&s),
                Command::Flush(args) => sync::flush(&s, &args),
                _ => unreachable!("matched above"),
            }
        }
        Command::Daemon => daemon::run(&dir, proxy),
        Command::Status(args) => status::run(&dir, proxy, &args),
        Command::Systemd(args) => systemd::run(&open_ledger(&dir, proxy)?, &args),
        Command::Hooks(args) => hooks::run(&dir, &args),
        Command::Stats(args) => stats::stats(&dir, proxy, &args),
        Command::Export(args) => stats::export(&dir, proxy, &args),
        Command::Report(args) => stats::html(&dir, proxy, &args),
        Command::Rebuild { file } => stats::rebuild(&dir.join(file)),
        Command::History(args) => history::history(&open_sync(&dir, proxy)?, &args),
        Command::Restore(args) => history::restore(&open_sync(&dir, proxy)?, &args),
        Command::Diff(args) => history::diff(&open_sync(&dir, proxy)?, &args),
        Command::Show { file } => history::show(&dir.join(file)),
        Command::ClearHistory => lower(&dir, proxy, false),
        Command::Reset => lower(&dir, proxy, true),
        Command::Import(args) => {
            let ledger = open_ledger(&dir, proxy)?;
            let dirs = if args.dirs.is_empty() { crate::import::default_dirs() } else { args.dirs.clone() };
            let r = crate::import::claude_code(&ledger, &dirs)?;
            println!(
                "import claude-code: {} file(s), {} bytes read, {} request(s) found, {} recorded, {} already recorded",
                r.files, r.bytes_read, r.entries, r.recorded, r.already
            );
            Ok(crate::exit::OK)
        }
        Command::Demo(args) => demo::run(&args),
    }
}

/// The configuration for `dir`: git config, then `--proxy-config` over it.
pub(crate) fn apply_proxy(config: &mut Config, proxy: Option<&Path>) -> Result<()> {
    if let Some(p) = proxy {
        ProxyConfig::read(p)?.apply(config)?;
    }
    Ok(())
}

/// This device's ledger in the repository around `dir` (no git process, no gix: the write
/// path opens only what it needs). Local-only mode outside a repository keeps its state
/// in `<dir>/.git-tally/`.
pub(crate) fn open_ledger(dir: &Path, proxy: Option<&Path>) -> Result<Ledger> {
    let mut config = Config::load_at(dir)?;
    apply_proxy(&mut config, proxy)?;
    match crate::config::discover(dir) {
        Some((top, git_dir)) => {
            let hints = |file: &str| match crate::git::Repo::open(&top) {
                Ok(repo) => crate::sync::profile_hints(&repo, file),
                Err(_) => Default::default(),
            };
            Ledger::open(&top, &git_dir.join("tally"), &git_dir, config, &hints)
        }
        None if !config.enabled => {
            let state = dir.join(".git-tally");
            Ledger::open(dir, &state, &state, config, &|_| Default::default())
        }
        None => Err(Error::Usage(format!(
            "{} is not inside a git work tree; clone your usage repository, or set tally.enabled=false for local-only use",
            dir.display()
        ))),
    }
}

/// `reset` (`true`) and `clear-history`: floors or watermarks at what every device holds
/// now, committed by the next sync (SPEC §4b.3).
fn lower(dir: &Path, proxy: Option<&Path>, reset: bool) -> Result<i32> {
    let ledger = open_ledger(dir, proxy)?;
    let _lock = crate::lock::Lock::acquire(ledger.state().lock_dir(), ledger.config().lock_timeout, "reset")?;
    ledger.fold()?;
    let repo = if ledger.config().enabled { crate::git::Repo::open(ledger.top()).ok() } else { None };
    let tree = repo.as_ref().and_then(|r| r.head().ok()?.commit.and_then(|c| r.tree_of(c).ok()));
    let n = match &repo {
        Some(r) => ledger.lower(&crate::sync::TreeSource { repo: r, tree }, reset)?,
        None => ledger.lower(&crate::ledger::NoSource, reset)?,
    };
    if !ledger.config().enabled {
        for s in ledger.streams() {
            let view = ledger.view(s, &crate::ledger::NoSource, false)?;
            ledger.write_view(s, &view, false)?;
        }
    }
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

/// The view of a configured usage file (`file`: one of them, by path; `None`: the first)
/// as the ledger makes it, with what is recorded and not synced yet; `None` when `file`
/// is not a configured usage file.
pub(crate) fn current_view(
    dir: &Path,
    proxy: Option<&Path>,
    file: Option<&Path>,
) -> Result<Option<(PathBuf, Option<(&'static profile::Profile, serde_json::Value)>)>> {
    let ledger = open_ledger(dir, proxy)?;
    let stream = match file {
        None => ledger.streams().first(),
        Some(f) => {
            let abs = std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf());
            ledger.streams().iter().find(|s| ledger.top().join(&s.file) == abs || ledger.top().join(&s.file) == f)
        }
    };
    let Some(stream) = stream else { return Ok(None) };
    let repo = if ledger.config().enabled { crate::git::Repo::open(ledger.top()).ok() } else { None };
    let tree = repo.as_ref().and_then(|r| r.head().ok()?.commit.and_then(|c| r.tree_of(c).ok()));
    let view = match &repo {
        Some(r) => ledger.view(stream, &crate::sync::TreeSource { repo: r, tree }, true)?,
        None => ledger.view(stream, &crate::ledger::NoSource, true)?,
    };
    Ok(Some((ledger.top().join(&stream.file), Some((view.profile, view.doc)))))
}

/// The repository around `dir`, to sync.
pub(crate) fn open_sync(dir: &Path, proxy: Option<&Path>) -> Result<Sync> {
    let mut s = Sync::open(dir, |c| apply_proxy(c, proxy))?;
    for n in s.ledger.take_notices() {
        eprintln!("git-tally: {n}");
    }
    Ok(s)
}

/// `pull`, `sync` and `flush` with usage sync disabled: fold and write the usage files,
/// exit 0 (a cron job that runs anyway is not an error).
fn local_only(ledger: &Ledger, proxy: Option<&Path>) -> Result<i32> {
    let _lock = crate::lock::Lock::acquire(ledger.state().lock_dir(), ledger.config().lock_timeout, "fold")?;
    let n = ledger.fold()?;
    for s in ledger.streams() {
        let view = ledger.view(s, &crate::ledger::NoSource, false)?;
        ledger.write_view(s, &view, false)?;
    }
    let why = match proxy {
        Some(p) => format!("usage sync is disabled in {} (gitstore.usage-sync.enabled is not true)", p.display()),
        None => "usage sync is disabled (git config tally.enabled = false)".to_string(),
    };
    println!("{why}: {} folded into the local usage files, nothing to push", sync::plural(n, "event"));
    Ok(crate::exit::OK)
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
