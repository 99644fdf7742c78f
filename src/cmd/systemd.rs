//! `systemd print|install|uninstall`: the units of [`crate::systemd`] for this repository.

use crate::cli::SystemdArgs;
use crate::error::{Error, Result};
use crate::exit;
use crate::ledger::Ledger as Store;
use crate::systemd::{units, Mode};
use std::path::PathBuf;
use std::process::Command;

fn unit_dir(mode: Mode) -> Result<PathBuf> {
    Ok(match mode {
        Mode::System => PathBuf::from("/etc/systemd/system"),
        Mode::User => match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("systemd/user"),
            None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| Error::Usage("HOME is not set".into()))?)
                .join(".config/systemd/user"),
        },
    })
}

fn systemctl(mode: Mode, args: &[&str]) -> bool {
    let mut c = Command::new("systemctl");
    if mode == Mode::User {
        c.arg("--user");
    }
    match c.args(args).status() {
        Ok(s) if s.success() => true,
        _ => {
            eprintln!(
                "git-tally: `systemctl {}{}` did not succeed; run it yourself",
                if mode == Mode::User { "--user " } else { "" },
                args.join(" ")
            );
            false
        }
    }
}

pub fn run(store: &Store, args: &SystemdArgs) -> Result<i32> {
    let mode = if args.system { Mode::System } else { Mode::User };
    let exe = crate::fsutil::current_exe()?;
    let interval = args.interval.unwrap_or(store.config().sync_interval);
    let interval = if interval.is_zero() { std::time::Duration::from_secs(15 * 60) } else { interval };
    let units = units(store.top(), &exe, mode, interval, store.config().flush_timeout);
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    let (timer, flush) = (names[1], names[2]);
    match args.action.as_str() {
        "print" => {
            for (name, text) in &units {
                println!("# {name}\n{text}");
            }
        }
        "install" => {
            let dir = unit_dir(mode)?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            for (name, text) in &units {
                crate::fsutil::write_atomic(&dir.join(name), text.as_bytes())?;
                println!("wrote {}", dir.join(name).display());
            }
            if !args.no_start && systemctl(mode, &["daemon-reload"]) {
                systemctl(mode, &["enable", "--now", timer, flush]);
            }
            println!("sync timer: {timer}; shutdown flush: {flush}; alternatively the daemon: {}", names[3]);
        }
        _ => {
            if !args.no_start {
                systemctl(mode, &["disable", "--now", timer, flush, names[3]]);
            }
            let dir = unit_dir(mode)?;
            for name in &names {
                let p = dir.join(name);
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                    println!("removed {}", p.display());
                }
            }
            if !args.no_start {
                systemctl(mode, &["daemon-reload"]);
            }
        }
    }
    Ok(exit::OK)
}
