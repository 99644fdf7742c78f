//! One module per subcommand; `run` dispatches.

mod check;
mod doctor;
mod install;
mod merge;
mod status;
mod sync;

use crate::cli::{Cli, Command};
use crate::error::{Error, Result};
use crate::profile;
use std::path::PathBuf;

/// Runs a parsed command line; the `Ok` value is the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let dir = cli.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    match cli.command {
        Command::Merge(args) => merge::run(&dir, &args),
        Command::Install(args) => install::install(&dir, &args),
        Command::Uninstall(args) => install::uninstall(&dir, &args),
        Command::Doctor => doctor::run(&dir),
        Command::Check(args) => check::run(&dir, &args),
        Command::Profiles => {
            for p in profile::all() {
                println!("{:<20} {}", p.name, p.description);
            }
            Ok(crate::exit::OK)
        }
        Command::Record(args) => sync::record(&dir, &args),
        Command::Pull => sync::pull(&dir),
        Command::Sync => sync::sync(&dir),
        Command::Flush(args) => sync::flush(&dir, &args),
        Command::Daemon(_) => Err(Error::NotImplemented("daemon")),
        Command::Status(args) => status::run(&dir, &args),
        Command::Systemd(_) => Err(Error::NotImplemented("systemd")),
        Command::Hooks(_) => Err(Error::NotImplemented("hooks")),
        Command::Stats(_) => Err(Error::NotImplemented("stats")),
        Command::Export(_) => Err(Error::NotImplemented("export")),
        Command::History(_) => Err(Error::NotImplemented("history")),
        Command::Restore(_) => Err(Error::NotImplemented("restore")),
        Command::ClearHistory(_) => Err(Error::NotImplemented("clear-history")),
        Command::Reset(_) => Err(Error::NotImplemented("reset")),
        Command::Import(_) => Err(Error::NotImplemented("import")),
        Command::Demo(_) => Err(Error::NotImplemented("demo")),
    }
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
