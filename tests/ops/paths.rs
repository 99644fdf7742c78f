//! Unattended runs have a minimal PATH: the driver, the hooks and the units call git-tally
//! by absolute path, installing again after a move updates them, and `doctor` says when
//! they point at a binary that is gone.

use crate::common::{bin, have_file, Env};
use crate::sync::event_line;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FILE: &str = "usage/usage.json";
/// What cron, systemd and many IDEs give their children.
const MINIMAL_PATH: &str = "/usr/bin:/bin";

/// A bare remote with one commit and a clone of it; the clone's path.
pub(crate) fn clone_of_bare(env: &Env, name: &str) -> PathBuf {
    let remote = bare_remote(env, &format!("{name}-remote.git"));
    clone(env, &remote, name)
}

/// A bare repository `name` with one commit on main.
fn bare_remote(env: &Env, name: &str) -> PathBuf {
    let remote = env.path().join(name);
    env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    let seed = env.repo(&format!("{name}-seed"));
    env.git(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
    remote
}

/// A clone `name` of `remote`, its device named `name`.
fn clone(env: &Env, remote: &Path, name: &str) -> PathBuf {
    let dir = env.path().join(name);
    env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), dir.to_str().unwrap()]);
    env.git(&dir, &["config", "commit.gpgsign", "false"]);
    env.git(&dir, &["config", "tally.device", name]);
    dir
}

/// `program` (git-tally or git) run with the minimal PATH, in the test's environment.
fn minimal(env: &Env, program: &Path, dir: &Path) -> Command {
    let mut c = env.command_of(program, dir);
    c.env("PATH", MINIMAL_PATH);
    c
}

fn ok(mut c: Command, what: &str) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

#[test]
fn sync_push_commit_and_merge_work_without_git_tally_on_path() {
    let test = "ops::paths::sync_push_commit_and_merge_work_without_git_tally_on_path";
    if !have_file("/usr/bin/git", "git", test) {
        return;
    }
    for d in MINIMAL_PATH.split(':') {
        assert!(!Path::new(d).join("git-tally").exists(), "{d}/git-tally exists: this test needs a PATH without it");
    }
    let env = Env::new();
    let remote = bare_remote(&env, "remote.git");
    let (a, b) = (clone(&env, &remote, "a"), clone(&env, &remote, "b"));
    env.tally(&a).arg("install").assert().success();
    env.git(&a, &["add", ".gitattributes"]);
    env.commit(&a, "merge usage files with git-tally");
    env.git(&a, &["push", "-q"]);
    env.git(&b, &["pull", "-q", "--no-rebase"]);
    for dir in [&a, &b] {
        env.tally(dir).arg("install").assert().success();
        env.tally(dir).args(["hooks", "install"]).assert().success();
        // The usage file is committed too, so that a user's `git pull` merges it (driver).
        env.git(dir, &["config", "tally.commitView", "true"]);
    }
    let config = std::fs::read_to_string(a.join(".git/config")).unwrap();
    assert!(config.contains(&format!("driver = {} merge %O", bin().display())), "{config}");
    let hook = std::fs::read_to_string(a.join(".git/hooks/pre-push")).unwrap();
    assert!(hook.contains(&format!("git_tally={}\n", bin().display())), "{hook}");

    // record and sync as cron runs them: the pre-push hook runs during the push.
    let git = Path::new("/usr/bin/git");
    let mut record = minimal(&env, &bin(), &a);
    record.args(["record", "--event", &event_line(0, 0), "--event", &event_line(0, 1)]);
    ok(record, "record");
    let mut sync = minimal(&env, &bin(), &a);
    sync.arg("sync");
    let out = ok(sync, "sync");
    assert!(out.contains("pushed"), "{out}");
    // The other machine: its own events committed by git-tally while offline, then the
    // user's own commit (pre-commit hook), `git pull` (the merge driver on the usage file,
    // the post-merge hook) and `git push` (pre-push hook).
    let mut record = minimal(&env, &bin(), &b);
    record.args(["record", "--event", &event_line(1, 0)]);
    ok(record, "record");
    env.git(&b, &["remote", "add", "offline", "file:///nonexistent/remote.git"]);
    env.git(&b, &["config", "tally.remote", "offline"]);
    let mut offline = minimal(&env, &bin(), &b);
    offline.arg("pull");
    assert_eq!(offline.output().unwrap().status.code(), Some(3), "committed locally, the remote unreachable");
    env.git(&b, &["config", "--unset", "tally.remote"]);
    std::fs::write(b.join("notes.txt"), "a user's own change\n").unwrap();
    let mut add = minimal(&env, git, &b);
    add.args(["add", "notes.txt"]);

    ok(add, "git add");
    let mut commit = minimal(&env, git, &b);
    commit.args(["commit", "-q", "-m", "usage and notes"]);
    ok(commit, "git commit (pre-commit hook)");
    let mut pull = minimal(&env, git, &b);
    pull.args(["pull", "-q", "--no-rebase", "--no-edit"]);
    ok(pull, "git pull (merge driver, post-merge hook)");
    let mut push = minimal(&env, git, &b);
    push.args(["push", "-q"]);
    ok(push, "git push (pre-push hook)");
    let merged = crate::common::read_json(&b.join(FILE));
    assert_eq!(merged["totals"]["requests"], 3, "both machines' events, each once");
}

/// Installs the driver, hooks and units with the git-tally at `exe`.
fn install_with(env: &Env, exe: &Path, repo: &Path, xdg: &Path) {
    for args in [&["install"][..], &["hooks", "install"], &["systemd", "install", "--user", "--no-start"]] {
        // A binary copied a moment ago can be "busy" (ETXTBSY) while another test thread's
        // fork still holds the copy's write descriptor: tried again shortly.
        let run = || env.command_of(exe, repo).env("XDG_CONFIG_HOME", xdg).args(args).output();
        let out = (0..50)
            .map(|_| run())
            .find(|r| {
                let busy = matches!(r, Err(e) if e.raw_os_error() == Some(26)); // ETXTBSY
                if busy {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                !busy
            })
            .unwrap_or_else(run)
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn doctor(env: &Env, repo: &Path, xdg: &Path) -> (Option<i32>, String) {
    let out = env.tally(repo).env("XDG_CONFIG_HOME", xdg).arg("doctor").output().unwrap();
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn doctor_finds_a_moved_binary_and_installing_again_fixes_it() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    let xdg = env.path().join("xdg");
    // The binary installed in a directory with a space, as some home directories have.
    let old = env.path().join("old bin/git-tally");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::copy(bin(), &old).unwrap();
    install_with(&env, &old, &repo, &xdg);
    env.git(&repo, &["add", ".gitattributes"]);
    env.commit(&repo, "attributes");
    let (code, report) = doctor(&env, &repo, &xdg);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains(&format!("merge.tally.driver runs {}", old.display())), "{report}");
    assert!(report.contains(&format!("the pre-push hook runs {}", old.display())), "{report}");
    assert!(report.contains("unit ") && report.contains("the remote origin answers"), "{report}");

    // Moved: everything that named it is a problem, with its fix.
    let new = env.path().join("new/git-tally");
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    std::fs::rename(&old, &new).unwrap();
    let (code, report) = doctor(&env, &repo, &xdg);
    assert_eq!(code, Some(1), "{report}");
    let gone = format!("runs {}, which does not exist", old.display());
    assert!(report.contains(&format!("merge.tally.driver {gone}")), "{report}");
    assert!(report.contains(&format!("diff.tally.textconv {gone}")), "{report}");
    for hook in ["pre-commit", "post-merge", "post-rewrite", "pre-push"] {
        assert!(report.contains(&format!("the {hook} hook {gone}")), "{report}");
    }
    assert_eq!(report.matches(&format!("service {gone}")).count(), 3, "sync, flush and daemon units:\n{report}");
    assert!(report.contains("fix: run `git tally hooks install`"), "{report}");
    assert!(report.contains("fix: run `git tally systemd install --user`"), "{report}");
    // A commit still works: the hook falls back to git-tally on PATH, and says nothing.
    std::fs::write(repo.join("notes.txt"), "x\n").unwrap();
    env.git(&repo, &["add", "notes.txt"]);
    env.commit(&repo, "still commits");

    install_with(&env, &new, &repo, &xdg);
    let (code, report) = doctor(&env, &repo, &xdg);
    assert_eq!(code, Some(0), "{report}");
    assert!(!report.contains(&old.display().to_string()), "{report}");
}

#[test]
fn doctor_checks_git_the_remote_and_tally_file() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    env.tally(&repo).arg("install").assert().success();
    let (_, report) = doctor(&env, &repo, &env.path().join("xdg"));
    let git_version = Command::new("git").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&git_version.stdout).trim().trim_start_matches("git version ").to_string();
    assert!(report.contains(&format!("ok       git {}", version.split(' ').next().unwrap())), "{report}");
    assert!(report.contains("ok       the remote origin answers"), "{report}");
    // A remote that does not answer, a tally.file outside the work tree.
    env.git(&repo, &["remote", "set-url", "origin", "file:///nonexistent/remote.git"]);
    env.git(&repo, &["config", "tally.file", "../outside.json"]);
    let (code, report) = doctor(&env, &repo, &env.path().join("xdg"));
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("problem  the remote origin does not answer"), "{report}");
    assert!(report.contains("problem  git config tally.file = \"../outside.json\": `..` leads outside"), "{report}");
    // No remote at all: merges work, so only a note.
    env.git(&repo, &["remote", "remove", "origin"]);
    env.git(&repo, &["config", "--unset", "tally.file"]);
    let (code, report) = doctor(&env, &repo, &env.path().join("xdg"));
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("note     no remote: merges work, but `git tally sync` needs one"), "{report}");
}

#[test]
fn a_driver_registered_by_name_is_a_problem() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    env.tally(&repo).arg("install").assert().success();
    // As versions before absolute paths registered it.
    env.git(&repo, &["config", "merge.tally.driver", "git-tally merge %O %A %B -p %P -l %L -s %S -x %X -y %Y"]);
    let (code, report) = doctor(&env, &repo, &env.path().join("xdg"));
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("merge.tally.driver runs `git-tally` by name"), "{report}");
    assert!(
        report.contains("fix: run `git tally install` (it then names the binary by its absolute path)"),
        "{report}"
    );
}
