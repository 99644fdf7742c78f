//! One module per subcommand; `run` dispatches.

mod check;
mod daemon;
mod demo;
mod doctor;
mod history;
mod hooks;
mod import;
mod install;
mod merge;
mod prices;
mod render;
mod stats;
mod status;
mod sync;
mod systemd;

use crate::cli::{Cli, Command};
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
        Command::Record(args) => sync::record(&open_store(&dir, proxy)?, &args),
        Command::Pull => sync::pull(&open_store(&dir, proxy)?),
        Command::Sync => sync::sync(&open_store(&dir, proxy)?),
        Command::Flush(args) => sync::flush(&open_store(&dir, proxy)?, &args),
        Command::Daemon => daemon::run(&open_store(&dir, proxy)?),
        Command::Status(args) => status::run(&open_store(&dir, proxy)?, &args),
        Command::Systemd(args) => systemd::run(&open_store(&dir, proxy)?, &args),
        Command::Hooks(args) => hooks::run(&dir, &args),
        Command::Stats(args) => stats::stats(&dir, proxy, &args),
        Command::Export(args) => stats::export(&dir, proxy, &args),
        Command::Report(args) => stats::html(&dir, proxy, &args),
        Command::Rebuild { file } => stats::rebuild(&dir.join(file)),
        Command::History(args) => history::history(&open_store(&dir, proxy)?, &args),
        Command::Restore(args) => history::restore(&open_store(&dir, proxy)?, &args),
        Command::Diff(args) => history::diff(&open_store(&dir, proxy)?, &args),
        Command::Show { file } => history::show(&dir.join(file)),
        Command::ClearHistory => {
            let n = open_store(&dir, proxy)?.clear_history()?;
            println!("cleared the records of {n} usage file(s); aggregates kept (sync to share)");
            Ok(crate::exit::OK)
        }
        Command::Reset => {
            let n = open_store(&dir, proxy)?.reset()?;
            println!("reset {n} usage file(s) to zero (sync to share; other machines' new traffic stays)");
            Ok(crate::exit::OK)
        }
        Command::Import(args) => import::run(&open_store(&dir, proxy)?, &args),
        Command::Prices(args) => prices::run(&dir, proxy, &args),
        Command::Demo(args) => demo::run(&args),
    }
}

/// The store of the repository around `dir`: git config, then `--proxy-config` over it.
pub(crate) fn open_store(dir: &Path, proxy: Option<&Path>) -> Result<Store> {
    let mut config = Config::load_at(dir)?;
    if let Some(p) = proxy {
        ProxyConfig::read(p)?.apply(&mut config)?;
    }
    Store::open_with(dir, config)
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
