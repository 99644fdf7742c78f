//! The installer on a fresh HOME: idempotent, and afterwards `git tally --help` shows the
//! manual and `git tally st<TAB>` completes in a real bash with git's own completion.

use crate::common::{bin, have, have_file, Env};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const GIT_COMPLETION: &str = "/usr/share/bash-completion/completions/git";

/// Every file, link and directory under `root`: contents (or link target), mode, mtime.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                (content, m.permissions().mode(), m.mtime(), m.mtime_nsec()),
            );
        }
    }
    out
}

struct Installed {
    env: Env,
    cargo_home: PathBuf,
}

impl Installed {
    /// A command with the environment of a user whose PATH has the install directory.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", self.cargo_home.join("bin").display()))
            .env("HOME", self.env.home())
            .env("GIT_CONFIG_GLOBAL", self.env.home().join(".gitconfig"))
            .env("GIT_CONFIG_SYSTEM", "/dev/null")
            .env("LANG", "C")
            .current_dir(self.env.path());
        c
    }

    fn script(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
        // A machine with git but no cargo: a prebuilt binary instead of cargo's build.
        let out = self
            .command("bash")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("CARGO_HOME", &self.cargo_home)
            .env("GIT_TALLY_BIN", bin())
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "install.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn installed() -> Installed {
    let env = Env::new();
    let cargo_home = env.path().join("cargo");
    let i = Installed { env, cargo_home };
    i.script(&[]);
    i
}

#[test]
fn install_script_twice_changes_nothing_and_uninstalls_cleanly() {
    let env = Env::new();
    let cargo_home = env.path().join("cargo");
    let i = Installed { env, cargo_home };
    let said = i.script(&[]);
    let exe = i.cargo_home.join("bin/git-tally");
    assert!(exe.exists());
    assert!(said.contains(&format!("manual: {}", i.cargo_home.join("share/man/man1/git-tally.1").display())), "{said}");
    let home = i.env.home();
    let config = std::fs::read_to_string(home.join(".gitconfig")).unwrap();
    assert!(config.contains(&format!("driver = {} merge %O %A %B", exe.display())), "by absolute path:\n{config}");
    let attributes = std::fs::read_to_string(home.join(".config/git/attributes")).unwrap();
    assert!(attributes.contains("usage/*.json merge=tally"), "{attributes}");
    assert!(i.cargo_home.join("share/man/man1/git-tally.1").exists());
    for f in [
        ".local/share/bash-completion/completions/git-tally",
        ".local/share/zsh/site-functions/_git-tally",
        ".config/fish/completions/git-tally.fish",
    ] {
        assert!(home.join(f).exists(), "{f}");
    }
    let before = (snapshot(&home), snapshot(&i.cargo_home));
    std::thread::sleep(std::time::Duration::from_millis(50));
    i.script(&[]);
    let after = (snapshot(&home), snapshot(&i.cargo_home));
    assert!(before == after, "a second run changed: {:?}", changed(&before.0, &after.0));
    i.script(&["--uninstall"]);
    assert!(!exe.exists());
    assert!(!std::fs::read_to_string(home.join(".gitconfig")).unwrap().contains("tally"));
    assert!(!i.cargo_home.join("share/man/man1/git-tally.1").exists());
    assert!(!home.join(".local/share/bash-completion/completions/git-tally").exists());
}

fn changed<'a>(
    a: &'a BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)>,
    b: &'a BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)>,
) -> Vec<&'a PathBuf> {
    a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).collect()
}

#[test]
fn git_tally_help_shows_the_manual() {
    if !have("man", "ops::install::git_tally_help_shows_the_manual") {
        return;
    }
    let i = installed();
    let out = i
        .command("git")
        .args(["tally", "--help"])
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("GIT-TALLY(1)") && text.contains("git tally systemd"), "{text}");
    assert!(text.contains("-C path"), "{text}");
}

/// COMPREPLY of a real bash completing `line`, with git's completion, as a user's shell
/// has it after install.sh: bash-completion loading both on demand when it is installed,
/// else git's completion and ours sourced (what install.sh tells such users to do).
fn complete(i: &Installed, lines: &[&str]) -> Vec<Vec<String>> {
    let ours = i.env.home().join(".local/share/bash-completion/completions/git-tally");
    let script = r#"
if [ -f /usr/share/bash-completion/bash_completion ]; then
    . /usr/share/bash-completion/bash_completion
    _completion_loader git
    _completion_loader git-tally
else
    . /usr/share/bash-completion/completions/git
    . "$1"
fi
shift
for line in "$@"; do
    COMP_LINE=$line
    COMP_POINT=${#line}
    read -ra COMP_WORDS <<< "$line"
    [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    spec=$(complete -p "${COMP_WORDS[0]}")
    fn=${spec##*-F }
    fn=${fn%% *}
    "$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s|' "${COMPREPLY[@]}"
    printf '\n'
done
"#;
    let out = i.command("bash").arg("-c").arg(script).arg("complete").arg(&ours).args(lines).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let mut replies: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            let mut v: Vec<String> = l.split('|').map(|w| w.trim().to_string()).filter(|w| !w.is_empty()).collect();
            v.sort();
            v
        })
        .collect();
    replies.resize(lines.len(), Vec::new());
    replies
}

#[test]
fn git_tally_completes_in_bash() {
    if !have_file(GIT_COMPLETION, "git", "ops::install::git_tally_completes_in_bash") {
        return;
    }
    let i = installed();
    let cases: [(&str, &[&str]); 6] = [
        ("git tally st", &["stats", "status"]),
        ("git-tally st", &["stats", "status"]),
        ("git -C /tmp tally sy", &["sync", "systemd"]),
        ("git tally flush --ti", &["--timeout"]),
        ("git tally systemd i", &["install"]),
        ("git tally hooks ", &["help", "install", "run", "uninstall"]),
    ];
    let lines: Vec<&str> = cases.iter().map(|(l, _)| *l).collect();
    let got = complete(&i, &lines);
    for ((line, want), got) in cases.iter().zip(got) {
        let got: Vec<&str> =
            got.iter().map(String::as_str).filter(|w| !w.starts_with('-') || line.contains(" -")).collect();
        assert_eq!(got, *want, "{line}<TAB>");
    }
}

#[test]
fn the_manual_refers_only_to_pages_that_exist() {
    let env = Env::new();
    let out = env.tally(env.path()).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && page.starts_with(".TH GIT\\-TALLY 1"), "{page}");
    // No git-tally-<command>(1) pages: every command is described in this one.
    for line in page.lines() {
        assert!(
            !(line.contains("git\\-tally\\-") && line.contains("(1)")),
            "a reference to a page nobody installs: {line}"
        );
    }
    for cmd in
        ["merge", "install", "doctor", "record", "sync", "flush", "systemd", "hooks install", "stats", "reset", "demo"]
    {
        assert!(page.contains(&format!(".SS \"git tally {}\"", cmd.replace('-', "\\-"))), "{cmd}");
    }
    // -C shows its value (clap_mangen printed `[-C ]`).
    assert!(page.contains("\\fB\\-C\\fR \\fIpath\\fR"), "{page}");
    let see_also = page.split(".SH SEE ALSO\n").nth(1).unwrap();
    let refs: Vec<String> = see_also
        .lines()
        .next()
        .unwrap()
        .split(", ")
        .map(|r| r.replace("\\fB", "").replace("\\fR", "").replace("\\-", "-"))
        .collect();
    let want: Vec<String> = git_tally_man_refs().iter().map(|(n, s)| format!("{n}({s})")).collect();
    assert_eq!(refs, want, "{see_also}");
    if have("groff", "ops::install::the_manual_refers_only_to_pages_that_exist") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("git-tally.1");
        std::fs::write(&file, &page).unwrap();
        let out = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&file).output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "groff: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Where git's and systemd's pages are installed (Debian's container images drop them),
    // each page named in SEE ALSO exists.
    let man_works = Command::new("man").args(["-w", "git"]).output().is_ok_and(|o| o.status.success());
    if man_works {
        for (name, section) in git_tally_man_refs() {
            let out = Command::new("man").args(["-w", &section.to_string(), name]).output().unwrap();
            assert!(out.status.success(), "SEE ALSO {name}({section}) does not exist here");
        }
    } else {
        crate::common::say_skipped(
            "git's and systemd's man pages are not installed here",
            "the SEE ALSO lookups of ops::install::the_manual_refers_only_to_pages_that_exist",
        );
    }
}

fn git_tally_man_refs() -> [(&'static str, u8); 6] {
    [("git", 1), ("git-config", 1), ("gitattributes", 5), ("githooks", 5), ("systemctl", 1), ("systemd.timer", 5)]
}

#[test]
fn zsh_and_fish_completions_serve_git_tally_and_git_tally() {
    let env = Env::new();
    let script = |shell: &str| {
        let out = env.tally(env.path()).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // zsh's _git calls _git-tally for `git tally`; fish's git completion delegates to git-tally's.
    let zsh = script("zsh");
    assert!(zsh.starts_with("#compdef git-tally") && zsh.contains("_git-tally()"), "{zsh}");
    let fish = script("fish");
    assert!(fish.contains("complete -c git-tally"), "{fish}");
    let bash = script("bash");
    assert!(bash.contains("_git_tally()") && bash.contains("complete -F _git__tally"), "{bash}");
}
