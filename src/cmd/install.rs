//! `install` / `uninstall`: register the merge driver in git config and write the
//! attribute lines in a marked block, so that running it twice changes nothing and
//! `uninstall` removes exactly what `install` wrote.
//!
//! The driver and the textconv command name this binary by its absolute path: git run by
//! cron, systemd or an IDE has a PATH without `~/.cargo/bin`, and a driver git cannot
//! start fails the merge. Running `install` again after an upgrade or a move updates them.

use crate::cli::InstallArgs;
use crate::error::{Error, Result};
use crate::git::{Git, Scope};
use crate::profile;
use crate::{exit, fsutil};
use std::path::{Path, PathBuf};

/// The driver's arguments, after the program.
pub const DRIVER_ARGS: &str = "merge %O %A %B -p %P -l %L -s %S -x %X -y %Y";

/// The merge driver command line for the git-tally at `exe`.
pub fn driver(exe: &Path) -> String {
    format!("{} {DRIVER_ARGS}", fsutil::shell_quote(&exe.to_string_lossy()))
}

/// The textconv command line for the git-tally at `exe`.
pub fn textconv(exe: &Path) -> String {
    format!("{} show", fsutil::shell_quote(&exe.to_string_lossy()))
}
/// Usage files, and every ledger file (the driver joins two versions of a device's file).
/// A pattern with a slash matches from the top, so the ledger's needs a leading `**/` to
/// reach `usage/usage.ledger/…` beside `usage/usage.json`.
pub const DEFAULT_PATTERNS: [&str; 3] = ["usage/*.json", "usage.json", "**/*.ledger/**/*.json"];
const BEGIN: &str = "# >>> git-tally: usage files merge with `git tally merge` >>>";
const END: &str = "# <<< git-tally <<<";

fn scope(args: &InstallArgs) -> Scope {
    if args.global {
        Scope::Global
    } else {
        Scope::Local
    }
}

/// The attributes file this install writes to.
fn attributes_file(git: &Git, args: &InstallArgs) -> Result<PathBuf> {
    if args.global {
        let configured = git.config_get_in(Scope::Global, "core.attributesFile")?;
        return crate::config::global_attributes_file(configured.as_deref())
            .ok_or_else(|| Error::Usage("HOME is not set".into()));
    }
    if args.local_attributes {
        return Ok(git.git_dir()?.join("info").join("attributes"));
    }
    let top = git.toplevel().map_err(|e| {
        Error::Usage(format!("not inside a git work tree ({}); use --global to install for every repository", e.stderr))
    })?;
    Ok(top.join(".gitattributes"))
}

fn block(args: &InstallArgs) -> Result<String> {
    if let Some(p) = &args.profile {
        if profile::by_name(p).is_none() {
            return Err(Error::Usage(format!("unknown profile {p:?}; known: {}", profile::names().join(", "))));
        }
    }
    let patterns: Vec<&str> = if args.patterns.is_empty() {
        DEFAULT_PATTERNS.to_vec()
    } else {
        args.patterns.iter().map(String::as_str).collect()
    };
    let mut s = format!("{BEGIN}\n");
    for p in patterns {
        s.push_str(p);
        s.push_str(" merge=tally diff=tally");
        if let Some(prof) = &args.profile {
            s.push_str(&format!(" tally-profile={prof}"));
        }
        s.push('\n');
    }
    s.push_str(END);
    s.push('\n');
    Ok(s)
}

/// `text` without the managed block (and whether there was one).
fn strip_block(text: &str) -> (String, bool) {
    let (Some(start), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        return (text.to_string(), false);
    };
    let end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
    (format!("{}{}", &text[..start], &text[end..]), true)
}

fn read_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub fn install(dir: &Path, args: &InstallArgs) -> Result<i32> {
    let git = Git::new(dir);
    let scope = scope(args);
    if scope == Scope::Local {
        git.git_dir().map_err(|e| Error::Usage(format!("not a git repository: {}", e.stderr)))?;
    }
    let block = block(args)?;
    let exe = fsutil::current_exe()?;
    let driver = driver(&exe);
    // Written only when different, so that a second install leaves the files untouched.
    let set = |key: &str, value: &str| -> Result<()> {
        if git.config_get_in(scope, key)?.as_deref() != Some(value) {
            git.config_set(scope, key, value)?;
        }
        Ok(())
    };
    set("merge.tally.name", "git-tally: exact merge of usage statistics")?;
    set("merge.tally.driver", &driver)?;
    // `git diff` and `git log -p` show usage files in canonical form (sorted keys).
    set("diff.tally.textconv", &textconv(&exe))?;
    // The driver must also build the virtual ancestor of criss-cross merges.
    if git.config_get_in(scope, "merge.tally.recursive")?.is_some() {
        git.config_unset(scope, "merge.tally.recursive")?;
    }
    let file = attributes_file(&git, args)?;
    let old = read_text(&file)?;
    let (rest, _) = strip_block(&old);
    let mut new = rest.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&block);
    if new != old {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fsutil::write_atomic(&file, new.as_bytes())?;
        println!("wrote the merge=tally lines to {}", file.display());
    } else {
        println!("{} already has the merge=tally lines", file.display());
    }
    let where_ = if args.global { "global" } else { "repository" };
    println!("registered merge driver \"tally\" in the {where_} git config: {driver}");
    if which_git_tally().is_none() {
        eprintln!(
            "note: git-tally is not on PATH: git merges still work (the driver runs {}), but `git tally …` needs its directory on PATH",
            exe.display()
        );
    }
    Ok(exit::OK)
}

pub fn uninstall(dir: &Path, args: &InstallArgs) -> Result<i32> {
    let git = Git::new(dir);
    let scope = scope(args);
    git.config_remove_section(scope, "merge.tally")?;
    git.config_remove_section(scope, "diff.tally")?;
    let file = attributes_file(&git, args)?;
    let old = read_text(&file)?;
    let (rest, had) = strip_block(&old);
    if had {
        if rest.trim().is_empty() {
            std::fs::remove_file(&file).map_err(|e| Error::io(&file, e))?;
        } else {
            fsutil::write_atomic(&file, rest.as_bytes())?;
        }
        println!("removed the git-tally lines from {}", file.display());
    }
    println!(
        "removed merge driver \"tally\" from the {} git config",
        if args.global { "global" } else { "repository" }
    );
    Ok(exit::OK)
}

/// The `git-tally` git would run: PATH, then git's exec path.
pub fn which_git_tally() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Ok(p) = Git::new(".").exec_path() {
        dirs.insert(0, p);
    }
    dirs.into_iter().map(|d| d.join("git-tally")).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fsutil::is_executable(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_replaced_not_repeated() {
        let args = InstallArgs { global: false, local_attributes: false, patterns: vec![], profile: None };
        let b = block(&args).unwrap();
        let text = format!("*.png binary\n{b}");
        let (rest, had) = strip_block(&text);
        assert!(had);
        assert_eq!(rest, "*.png binary\n");
    }
}
