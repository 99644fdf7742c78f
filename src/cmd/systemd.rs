//! `systemd print|install|uninstall`: the units of [`crate::systemd`] for this repository.
//!
//! `install` writes the units, then enables and starts the timer and the shutdown flush;
//! it exits 0 only when systemd took them. Without a reachable service manager (a shell
//! without a login session, a container) it exits non-zero and prints the exact commands
//! to run, because units that were written but never started fail silently: nothing
//! syncs, and nobody is watching.

use crate::cli::{SystemdAction, SystemdArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::fsutil::shell_quote;
use crate::ledger::Ledger as Store;
use crate::systemd::{schedule, unit_names, units, Mode, Options, Units};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the interval came from, to name it when it cannot be honoured.
pub enum IntervalSource<'a> {
    Flag,
    GitConfig,
    Proxy(&'a Path),
}

pub fn unit_dir(mode: Mode) -> Result<PathBuf> {
    Ok(match mode {
        Mode::System => PathBuf::from("/etc/systemd/system"),
        Mode::User => match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("systemd/user"),
            None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| Error::Usage("HOME is not set".into()))?)
                .join(".config/systemd/user"),
        },
    })
}

/// A `systemctl` command line, run or shown.
struct Systemctl {
    mode: Mode,
    args: Vec<String>,
}

impl Systemctl {
    fn new(mode: Mode, args: &[&str]) -> Systemctl {
        Systemctl { mode, args: args.iter().map(|s| s.to_string()).collect() }
    }

    /// The command as a person types it (unit names with `\x2d` quoted).
    fn shown(&self) -> String {
        let mut s = String::from("systemctl");
        if self.mode == Mode::User {
            s.push_str(" --user");
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(a));
        }
        s
    }

    /// Runs it; the reason it failed, if it did.
    fn run(&self) -> std::result::Result<(), String> {
        let mut c = Command::new("systemctl");
        if self.mode == Mode::User {
            c.arg("--user");
        }
        match c.args(&self.args).stdin(std::process::Stdio::null()).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
                Err(if err.is_empty() { format!("exit {:?}", out.status.code()) } else { err })
            }
            Err(e) => Err(format!("could not start systemctl: {e}")),
        }
    }
}

/// This process's user id and name (from /proc and /etc/passwd: no libc calls).
fn current_user() -> Option<(u32, String)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid: u32 = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
    Some((uid, user_name(uid).unwrap_or_else(|| uid.to_string())))
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// Commands that make user units outlive the login session, when they are needed: lingering
/// is off for this user, or no user manager is reachable from here.
fn linger_commands() -> Vec<String> {
    let Some((uid, name)) = current_user() else { return Vec::new() };
    let mut v = Vec::new();
    if !Path::new("/var/lib/systemd/linger").join(&name).exists() {
        v.push(format!("loginctl enable-linger {}", shell_quote(&name)));
    }
    let runtime = format!("/run/user/{uid}");
    if std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| Path::new(&d) != Path::new(&runtime)) {
        v.push(format!("export XDG_RUNTIME_DIR={runtime}"));
    }
    v
}

pub fn run(store: &Store, args: &SystemdArgs, source: IntervalSource<'_>) -> Result<i32> {
    let mode = if args.system { Mode::System } else { Mode::User };
    let exe = crate::fsutil::current_exe()?;
    let interval = args.interval.unwrap_or(store.config().sync_interval);
    let schedule = schedule(interval).map_err(|e| {
        let what = match source {
            IntervalSource::Flag => "--interval".to_string(),
            IntervalSource::GitConfig => "git config tally.syncInterval".to_string(),
            IntervalSource::Proxy(p) => format!("{}: gitstore.usage-sync.sync-interval", p.display()),
        };
        Error::Usage(format!(
            "{what}: {e}; a timer needs 1m or more (whole seconds), or 0 for no timer, only the flush at shutdown"
        ))
    })?;
    let run_as = match mode {
        Mode::System => {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata(store.top()).map_err(|e| Error::io(store.top(), e))?.uid();
            (uid != 0).then(|| user_name(uid).unwrap_or_else(|| uid.to_string()))
        }
        Mode::User => None,
    };
    let units = units(&Options {
        repo: store.top(),
        exe: &exe,
        mode,
        schedule,
        interval,
        flush_timeout: store.config().flush_timeout,
        run_as,
        collect: store.config().collect.is_some(),
    });

    match args.action {
        SystemdAction::Print => {
            if units.sync.is_none() {
                println!("# no timer: an interval of 0 syncs only at shutdown (the flush unit)\n");
            }
            for u in units.all() {
                println!("# {}\n{}", u.name, u.text);
            }
            Ok(exit::OK)
        }
        SystemdAction::Install => install(store.top(), mode, &units, interval, args.no_start),
        SystemdAction::Uninstall => uninstall(store.top(), mode, args.no_start),
    }
}

/// The enable symlinks of `name` under `dir` (`timers.target.wants/<name>` and the like).
fn wants_links(dir: &Path, name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.extension().is_some_and(|x| x == "wants" || x == "requires"))
        .map(|p| p.join(name))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

/// An error changing the unit directory: without the permission to, it is the wrong mode
/// or the wrong user (exit 2, saying which), not something to retry.
fn unit_dir_error(mode: Mode, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        let hint = match mode {
            Mode::System => "system units need root (sudo git tally systemd install --system), or use --user",
            Mode::User => "check the owner of the directory",
        };
        return Error::Usage(format!("{}: permission denied; {hint}", path.display()));
    }
    Error::io(path, e)
}

/// Removes the unit files `names` (and their enable links) from `dir`.
fn remove_units(mode: Mode, dir: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        for link in wants_links(dir, name) {
            std::fs::remove_file(&link).map_err(|e| unit_dir_error(mode, &link, e))?;
        }
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| unit_dir_error(mode, &p, e))?;
            println!("removed {}", p.display());
        }
    }
    Ok(())
}

/// Runs `commands` in order until one fails; on failure prints what failed and every
/// command to run by hand, and gives the exit code.
fn run_or_explain(mode: Mode, commands: &[Systemctl], what: &str) -> i32 {
    for (i, c) in commands.iter().enumerate() {
        if let Err(why) = c.run() {
            eprintln!("git-tally: {what}, but `{}` failed: {why}", c.shown());
            eprintln!("run these yourself{}:", if i == 0 { "" } else { " (the first ones may have worked)" });
            if mode == Mode::User {
                for l in linger_commands() {
                    eprintln!("    {l}");
                }
            }
            for c in commands {
                eprintln!("    {}", c.shown());
            }
            if mode == Mode::User {
                eprintln!("(`loginctl enable-linger` starts your user service manager now and at every boot, so the timer runs without a login session)");
            }
            return exit::USAGE;
        }
    }
    exit::OK
}

fn install(repo: &Path, mode: Mode, units: &Units, interval: Duration, no_start: bool) -> Result<i32> {
    let dir = unit_dir(mode)?;
    std::fs::create_dir_all(&dir).map_err(|e| unit_dir_error(mode, &dir, e))?;
    for u in units.all() {
        let path = dir.join(&u.name);
        if std::fs::read(&path).ok().as_deref() == Some(u.text.as_bytes()) {
            println!("{} is up to date", path.display());
        } else {
            crate::fsutil::write_atomic(&path, u.text.as_bytes()).map_err(|e| match e {
                Error::Io { path, source } => unit_dir_error(mode, &path, source),
                e => e,
            })?;
            println!("wrote {}", path.display());
        }
    }
    // Units of an earlier install with another schedule (a timer, when the interval is
    // now 0): stopped and removed, or they would keep firing.
    let wanted: Vec<&str> = units.all().iter().map(|u| u.name.as_str()).collect();
    let names = unit_names(repo);
    let stale: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| !wanted.contains(n) && dir.join(n).exists()).collect();
    let start = units.to_start();
    let schedule = match &units.sync {
        Some(_) => format!("a sync every {}", humantime::format_duration(interval)),
        None => "no timer (interval 0: sync only at shutdown)".to_string(),
    };
    if no_start {
        remove_units(mode, &dir, &stale)?;
        println!(
            "not started (--no-start); {schedule}; to start: systemctl{} daemon-reload && systemctl{} enable --now {}",
            if mode == Mode::User { " --user" } else { "" },
            if mode == Mode::User { " --user" } else { "" },
            start.iter().map(|s| shell_quote(s)).collect::<Vec<_>>().join(" ")
        );
        return Ok(exit::OK);
    }
    if !stale.is_empty() {
        let mut disable = vec!["disable", "--now"];
        disable.extend(&stale);
        // A unit that was never loaded cannot be disabled; removing it is what matters.
        let _ = Systemctl::new(mode, &disable).run();
        remove_units(mode, &dir, &stale)?;
    }
    let mut commands = vec![Systemctl::new(mode, &["daemon-reload"])];
    let mut enable = vec!["enable", "--now"];
    enable.extend(&start);
    commands.push(Systemctl::new(mode, &enable));
    if let Some((_, timer)) = &units.sync {
        // A timer that was already running keeps its old schedule until restarted.
        commands.push(Systemctl::new(mode, &["restart", &timer.name]));
    }
    let code = run_or_explain(mode, &commands, "wrote the units");
    if code == exit::OK {
        println!("started: {}; {schedule}", start.join(", "));
        println!("the daemon is an alternative to the timer: {}", units.daemon.name);
        if mode == Mode::User {
            if let Some(l) = linger_commands().into_iter().find(|l| l.starts_with("loginctl")) {
                println!("note: to keep syncing when you are not logged in, run: {l}");
            }
        }
    }
    Ok(code)
}

fn uninstall(repo: &Path, mode: Mode, no_start: bool) -> Result<i32> {
    let dir = unit_dir(mode)?;
    let names = unit_names(repo);
    let present: Vec<&str> = names.iter().map(String::as_str).filter(|n| dir.join(n).exists()).collect();
    if present.is_empty() {
        println!("no git-tally units for {} in {}", repo.display(), dir.display());
        return Ok(exit::OK);
    }
    if no_start {
        remove_units(mode, &dir, &present)?;
        return Ok(exit::OK);
    }
    let mut disable = vec!["disable", "--now"];
    disable.extend(&present);
    let stopped = Systemctl::new(mode, &disable).run();
    remove_units(mode, &dir, &present)?;
    let commands = [Systemctl::new(mode, &disable), Systemctl::new(mode, &["daemon-reload"])];
    if let Err(why) = stopped {
        eprintln!("git-tally: removed the unit files, but `{}` failed: {why}", commands[0].shown());
        eprintln!("if the units are still loaded, stop them with:");
        for c in &commands {
            eprintln!("    {}", c.shown());
        }
        return Ok(exit::USAGE);
    }
    Ok(run_or_explain(mode, &commands[1..], "removed the units"))
}
