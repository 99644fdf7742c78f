//! `doctor`: checks what must hold for git to use the driver on each usage file, and says
//! how to fix what does not.

use super::install::{which_git_tally, DRIVER};
use crate::error::{Error, Result};
use crate::exit;
use crate::git::Git;
use std::path::Path;

pub const DEFAULT_FILE: &str = "usage/usage.json";

pub fn run(dir: &Path) -> Result<i32> {
    let git = Git::new(dir);
    git.git_dir().map_err(|e| Error::Usage(format!("not a git repository: {}", e.stderr)))?;
    let mut problems = 0;
    let mut report = |ok: bool, what: String, fix: &str| {
        if ok {
            println!("ok       {what}");
        } else {
            problems += 1;
            println!("problem  {what}\n         fix: {fix}");
        }
    };
    match which_git_tally() {
        Some(p) => report(true, format!("git-tally is on the PATH git uses: {}", p.display()), ""),
        None => report(
            false,
            "git-tally is not on the PATH git uses, so git cannot run the driver".into(),
            "install it with scripts/install.sh or `cargo install --path .`, or add its directory to PATH",
        ),
    }
    match git.config_get("merge.tally.driver")? {
        Some(d) if d.contains("merge %O %A %B") => report(true, format!("merge.tally.driver = {d}"), ""),
        Some(d) => {
            report(false, format!("merge.tally.driver is {d:?}, not the git-tally driver"), "run `git tally install`")
        }
        None => report(
            false,
            "the merge driver \"tally\" is not registered (merge.tally.driver unset)".into(),
            "run `git tally install` (or `git tally install --global`)",
        ),
    }
    if let Some(r) = git.config_get("merge.tally.recursive")? {
        report(
            false,
            format!(
                "merge.tally.recursive = {r}: criss-cross merges would not use the driver for the virtual ancestor"
            ),
            "git config --unset merge.tally.recursive",
        );
    }
    let mut files = git.config_get_all("tally.file")?;
    if files.is_empty() {
        files.push(DEFAULT_FILE.to_string());
    }
    for f in &files {
        match git.check_attr("merge", f)? {
            Some(v) if v == "tally" => report(true, format!("{f}: merge=tally applies"), ""),
            other => report(
                false,
                format!("{f}: the merge attribute is {}, not tally", other.as_deref().unwrap_or("unspecified")),
                &format!("run `git tally install --pattern '{f}'` (the driver is {DRIVER})"),
            ),
        }
    }
    if problems == 0 {
        println!("git-tally is ready: usage files in this repository merge exactly");
        Ok(exit::OK)
    } else {
        println!("{problems} problem(s) found");
        Ok(exit::CONFLICT)
    }
}
