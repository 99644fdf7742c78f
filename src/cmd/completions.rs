//! `completions SHELL`: clap_complete's script for `git-tally`, plus what makes `git tally`
//! complete the same way.
//!
//! - bash: git's completion calls `_git_<command>` for `git <command> …` (and, with
//!   bash-completion, first loads the completion file named `git-<command>`). The
//!   `_git_tally` below hands clap's function the words after `tally`, as if the user had
//!   typed `git-tally …`. git completes with `-o nospace`, so finished words get their
//!   space here.
//! - zsh: git's `_git` calls `_git-<command>`; clap's script defines `_git-tally` (install
//!   it as `_git-tally` in `$fpath`).
//! - fish: fish's git completion delegates `git tally …` to the completions of `git-tally`.

use crate::cli::Cli;
use crate::error::{Error, Result};
use clap_complete::Shell;

const BASH_GIT_WRAPPER: &str = r#"
# `git tally <TAB>`: git's completion calls _git_tally. Complete the words after `tally`
# as clap's function completes `git-tally …`.
_git_tally() {
    local idx=${__git_cmd_idx:-}
    if [[ -z $idx ]]; then
        # git's completion before 2.30 does not say where the command is.
        idx=1
        while [[ $idx -lt $cword && ${words[idx]} != tally ]]; do ((idx++)); done
    fi
    local -a COMP_WORDS=(git-tally "${words[@]:idx+1}")
    local COMP_CWORD=$((cword - idx))
    _git__tally git-tally "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    local i
    for i in "${!COMPREPLY[@]}"; do
        [[ -d ${COMPREPLY[i]} ]] || COMPREPLY[i]+=" "
    done
}
"#;

pub fn run(shell: Shell) -> Result<i32> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "git-tally", &mut script);
    if shell == Shell::Bash {
        // clap_complete spells the state of a hyphenated program one way in its dispatch
        // loop (`git__tally__subcmd__flush`) and another in the case arms that list the
        // options (`git__subcmd__tally__subcmd__flush`), so no subcommand's options ever
        // complete (clap-rs/clap#6421). Spell the arms as the loop does; once clap_complete
        // is fixed this replaces nothing.
        let text = String::from_utf8_lossy(&script).replace("git__subcmd__tally", "git__tally");
        script = text.into_bytes();
        script.extend_from_slice(BASH_GIT_WRAPPER.as_bytes());
    }
    use std::io::Write;
    std::io::stdout().write_all(&script).map_err(|e| Error::io("stdout", e))?;
    Ok(crate::exit::OK)
}
