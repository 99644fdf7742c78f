//! `doctor`: checks everything a sync and a merge need (SPEC §7) and says, for each
//! problem, the command that fixes it: the git version, the driver's registration and
//! the binary it names, the attributes of each usage file, `tally.file` itself, the hooks
//! and systemd units and the binary they call, and whether the remote answers (a
//! repository without one is noted, not a problem: merges need none).
//!
//! Unattended runs fail quietly, so doctor is where a person finds out: a driver, hook or
//! unit that names a binary which was moved or uninstalled is a problem, as is one that
//! names `git-tally` without a path, which cron, systemd and IDEs will not find.

use super::hooks::{hook_names, hook_program, is_ours};
use super::install::{which_git_tally, DRIVER_ARGS};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::exit;
use crate::fsutil::{first_shell_word, is_executable, shell_quote};
use crate::git::Git;
use crate::systemd::{exec_program, unit_names, Mode};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The oldest git sync is tested with (Debian 11 ships 2.30).
pub const MIN_GIT: (u32, u32) = (2, 30);

/// How long the remote may take to answer `git ls-remote`.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(20);

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&mut self, what: impl std::fmt::Display) {
        println!("ok       {what}");
    }

    fn note(&mut self, what: impl std::fmt::Display) {
        println!("note     {what}");
    }

    fn problem(&mut self, what: impl std::fmt::Display, fix: impl std::fmt::Display) {
        self.problems += 1;
        println!("problem  {what}\n         fix: {fix}");
    }

    /// A program a driver, hook or unit runs: a problem when it is gone, or named without a
    /// path.
    fn program(&mut self, what: &str, program: &str, fix: &str) {
        let path = Path::new(program);
        if !path.is_absolute() {
            let found = which_git_tally();
            self.problem(
                format!(
                    "{what} runs `{program}` by name{}; git run by cron, systemd or an IDE may not find it",
                    match &found {
                        Some(p) => format!(" (found on this PATH: {})", p.display()),
                        None => ", and it is not on PATH".into(),
                    }
                ),
                format!("{fix} (it then names the binary by its absolute path)"),
            );
        } else if !is_executable(path) {
            self.problem(format!("{what} runs {program}, which does not exist (moved or uninstalled?)"), fix);
        } else {
            self.ok(format!("{what} runs {program}"));
        }
    }
}

pub fn run(dir: &Path) -> Result<i32> {
    let git = Git::new(dir);
    git.git_dir().map_err(|e| Error::Usage(format!("not a git repository: {}", e.stderr)))?;
    let top = git.toplevel().ok();
    let mut r = Report { problems: 0 };

    match git.version() {
        Some(v) if (v.0, v.1) >= MIN_GIT => r.ok(format!("git {}.{}.{}", v.0, v.1, v.2)),
        Some(v) => r.problem(
            format!(
                "git {}.{}.{} is older than {}.{}, the oldest git-tally supports",
                v.0, v.1, v.2, MIN_GIT.0, MIN_GIT.1
            ),
            format!(
                "install git {}.{} or newer (Debian 11 and later, Ubuntu 22.04 and later ship one)",
                MIN_GIT.0, MIN_GIT.1
            ),
        ),
        None => r.problem("cannot tell git's version from `git --version`", "check that `git --version` works"),
    }
    match which_git_tally() {
        Some(p) => r.ok(format!("git-tally is on PATH: {} (`git tally …` works)", p.display())),
        None => r.note("git-tally is not on PATH: `git tally …` needs its directory on PATH (drivers, hooks and units call it by absolute path)"),
    }

    // The driver, and where it is registered (so the fix names the same scope).
    let install_cmd = |key: &str| match git.config_scope(key).as_deref() {
        Some("global") => "run `git tally install --global`",
        _ => "run `git tally install`",
    };
    match git.config_get("merge.tally.driver")? {
        Some(d) if d.contains("merge %O %A %B") => match first_shell_word(&d) {
            Some(program) => r.program("merge.tally.driver", &program, install_cmd("merge.tally.driver")),
            None => r.problem(format!("merge.tally.driver is {d:?}"), install_cmd("merge.tally.driver")),
        },
        Some(d) => r.problem(
            format!("merge.tally.driver is {d:?}, not the git-tally driver (… {DRIVER_ARGS})"),
            install_cmd("merge.tally.driver"),
        ),
        None => r.problem(
            "the merge driver \"tally\" is not registered (merge.tally.driver unset)",
            "run `git tally install` (or `git tally install --global`)",
        ),
    }
    if let Some(t) = git.config_get("diff.tally.textconv")? {
        if let Some(program) = first_shell_word(&t) {
            r.program("diff.tally.textconv", &program, install_cmd("diff.tally.textconv"));
        }
    }
    if let Some(v) = git.config_get("merge.tally.recursive")? {
        r.problem(
            format!(
                "merge.tally.recursive = {v}: criss-cross merges would not use the driver for the virtual ancestor"
            ),
            "git config --unset merge.tally.recursive",
        );
    }

    // tally.file, checked as every command checks it.
    let files: Vec<PathBuf> = match Config::load_at(dir) {
        Ok(c) => {
            r.ok(format!(
                "tally.file: {}",
                c.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
            // Usage this device recorded for a file tally.file no longer names.
            if let Ok(ledger) = super::ledger_with(dir, c.clone()) {
                for o in ledger.orphans() {
                    r.problem(
                        format!("this device has usage of {}, which tally.file no longer names (kept, and committed by sync, but in no report)", o.file),
                        format!(
                            "if it was mistyped or renamed, count it in the configured file: git tally move {f}; to report it as a file of its own: git config --add tally.file {f}",
                            f = shell_quote(&o.file)
                        ),
                    );
                }
            }
            c.files
        }

        Err(e) => {
            r.problem(e.to_string(), "git config tally.file usage/usage.json (a file inside the repository)");
            Vec::new()
        }
    };
    for f in &files {
        let f = f.to_string_lossy();
        match top.as_ref().map(|t| Git::new(t).check_attr("merge", &f)).transpose()?.flatten() {
            Some(v) if v == "tally" => r.ok(format!("{f}: merge=tally applies")),
            other => r.problem(
                format!("{f}: the merge attribute is {}, not tally", other.as_deref().unwrap_or("unspecified")),
                format!("run `git tally install --pattern {}` (or check tally.file for a typo)", shell_quote(&f)),
            ),
        }
    }

    // Hooks.
    let hooks = git.hooks_dir()?;
    let ours: Vec<(&str, PathBuf)> = hook_names().map(|n| (n, hooks.join(n))).filter(|(_, p)| is_ours(p)).collect();
    if ours.is_empty() {
        r.note(format!("no git-tally hooks in {} (optional: `git tally hooks install`)", hooks.display()));
    }
    for (name, path) in &ours {
        let script = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        match hook_program(&script) {
            Some(p) => r.program(&format!("the {name} hook"), &p, "run `git tally hooks install`"),
            None => r.problem(
                format!("the {name} hook in {} is from an older git-tally", hooks.display()),
                "run `git tally hooks install`",
            ),
        }
    }

    // systemd units of this repository, user and system.
    if let Some(top) = &top {
        let mut found = false;
        for mode in [Mode::User, Mode::System] {
            let Ok(unit_dir) = super::systemd::unit_dir(mode) else { continue };
            for name in unit_names(top).into_iter().filter(|n| n.ends_with(".service")) {
                let path = unit_dir.join(&name);
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                found = true;
                let flag = if mode == Mode::User { "--user" } else { "--system" };
                match exec_program(&text) {
                    Some(p) => r.program(
                        &format!("unit {}", path.display()),
                        &p,
                        &format!("run `git tally systemd install {flag}`"),
                    ),
                    None => r.problem(
                        format!("unit {} runs no git-tally", path.display()),
                        format!("run `git tally systemd install {flag}`"),
                    ),
                }
            }
        }
        if !found {
            r.note("no systemd units for this repository (optional: `git tally systemd install`, or cron)");
        }
    }

    // The remote.
    let branch = git.current_branch()?;
    let remote = match git.config_get("tally.remote")? {
        Some(r) => Some(r),
        None => match &branch {
            Some(b) => git.config_get(&format!("branch.{b}.remote"))?,
            None => None,
        },
    }
    .or_else(|| git.remotes().ok().and_then(|r| r.into_iter().next()));
    match remote {
        // Merges need no remote; only sync does, and it says so itself (exit 2).
        None => r.note(
            "no remote: merges work, but `git tally sync` needs one: git remote add origin <url> && git push -u origin HEAD",
        ),
        Some(remote) => {
            let probe = git.clone().with_deadline(Some(Instant::now() + REMOTE_TIMEOUT));
            match probe.ls_remote_heads(&remote) {
                Ok(_) => r.ok(format!("the remote {remote} answers")),
                Err(e) => r.problem(
                    format!("the remote {remote} does not answer: {}", e.stderr.lines().next().unwrap_or("").trim()),
                    format!("check its URL (`git remote get-url {remote}`), the network and your credentials"),
                ),
            }
        }
    }

    collector(&mut r, top.as_deref())?;

    if r.problems == 0 {
        println!("git-tally is ready: usage files in this repository merge exactly and sync");

        Ok(exit::OK)
    } else {
        println!("{} problem(s) found", r.problems);
        Ok(exit::CONFLICT)
    }
}

/// The collector (`tally.collect`): the proxy answers and accepts the key; pops nothing.
fn collector(r: &mut Report, top: Option<&Path>) -> Result<()> {
    let Some(top) = top else { return Ok(()) };
    // A configuration that does not load is reported above (tally.file and the like).
    let Ok(config) = crate::config::Config::load_at(top) else { return Ok(()) };

    let Some(url) = &config.collect else { return Ok(()) };
    let fix = "check the URL (git config tally.collect), that CLIProxyAPI runs with usage-statistics-enabled: true, and the key (tally.collectKeyFile or CLIPROXYAPI_MANAGEMENT_KEY)";
    let source = match crate::collect::Source::parse(url) {
        Ok(s) => s,
        Err(e) => {
            r.problem(format!("tally.collect: {e}"), fix);
            return Ok(());
        }
    };
    let key = match crate::collect::load_key(None, config.collect_key_file.as_deref(), top) {
        Ok((key, _)) => key,
        Err(e) => {
            r.problem(format!("the collector's key: {e}"), fix);
            return Ok(());
        }
    };
    match crate::collect::check(&source, &key) {
        Ok(c) if c.statistics_enabled == Some(false) => r.problem(
            format!("the proxy at {} answers, but its usage statistics are off: it queues nothing", source.url()),
            "set usage-statistics-enabled: true in CLIProxyAPI's config",
        ),
        Ok(_) => r.ok(format!("the collector's proxy {} answers and accepts the key", source.url())),
        Err(e) => r.problem(format!("the collector cannot read the proxy: {e}"), fix),
    }
    let git_dir = crate::config::discover(top).map_or_else(|| top.join(".git"), |(_, g)| g);
    if let Some(state) = crate::collect::state::CollectState::read(&git_dir.join("tally")) {
        if let Some(e) = state.last_error {
            r.note(format!("the collector's last error, at {}: {}", e.at, e.message));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MIN_GIT;

    #[test]
    fn the_oldest_supported_git_is_debian_11s() {
        assert_eq!(MIN_GIT, (2, 30));
        assert!((2, 29) < MIN_GIT && (2, 39) >= MIN_GIT);
    }
}
