//! A hermetic environment for driving the real binary and real git: cleared environment
//! but PATH (with the binary's directory first), a temporary HOME and global config,
//! no system config, fixed author and dates. Helpers panic with the command and stderr.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub tmp: tempfile::TempDir,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-tally"))
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        std::fs::write(tmp.path().join("home/.gitconfig"), "").unwrap();
        Env { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn apply(&self, c: &mut Command) {
        let bin_dir = bin().parent().unwrap().to_path_buf();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        c.env_clear()
            .env("PATH", path)
            .env("HOME", self.home())
            .env("GIT_CONFIG_GLOBAL", self.home().join(".gitconfig"))
            .env("GIT_CONFIG_SYSTEM", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("GIT_AUTHOR_DATE", "2026-11-01T12:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-11-01T12:00:00Z")
            .env("LANG", "C");
        if let Some(trace) = std::env::var_os("GIT_TALLY_TRACE") {
            c.env("GIT_TALLY_TRACE", trace); // ledger decisions, for debugging a failure
        }
    }

    /// git in `dir`; panics with the command line and stderr on failure.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_output(dir, args);
        if !out.status.success() {
            panic!(
                "git {} failed in {}: {}\n{}",
                args.join(" "),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn git_output(&self, dir: &Path, args: &[&str]) -> Output {
        self.git_output_with(dir, args, &[])
    }

    /// git with extra environment variables.
    pub fn git_output_with(&self, dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut c = Command::new("git");
        c.arg("-C").arg(dir).args(args);
        self.apply(&mut c);
        c.envs(vars.iter().copied());
        c.output().expect("run git")
    }

    /// The git-tally binary in this environment, as a std command (to spawn and kill).
    pub fn command(&self, dir: &Path) -> Command {
        self.command_of(&bin(), dir)
    }

    /// `program` (a copy of the binary, say) in this environment.
    pub fn command_of(&self, program: &Path, dir: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(dir);
        self.apply(&mut c);
        c
    }

    /// The git-tally binary, as assert_cmd runs it, in this environment. A run that hangs
    /// is killed after five minutes and fails its test, rather than stalling the suite.
    pub fn tally(&self, dir: &Path) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.command(dir));
        c.timeout(std::time::Duration::from_secs(300));
        c
    }

    /// A new repository with one commit on `main`.
    pub fn repo(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.git(&dir, &["init", "-q", "-b", "main"]);
        self.git(&dir, &["config", "commit.gpgsign", "false"]);
        std::fs::write(dir.join("README"), "usage ledger\n").unwrap();
        self.git(&dir, &["add", "README"]);
        self.commit(&dir, "init");
        dir
    }

    pub fn commit(&self, dir: &Path, msg: &str) {
        self.git(dir, &["commit", "-q", "--no-gpg-sign", "-m", msg]);
    }

    /// Writes `path` in the repo and commits it.
    pub fn commit_file(&self, dir: &Path, path: &str, bytes: &[u8], msg: &str) {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, bytes).unwrap();
        self.git(dir, &["add", path]);
        self.commit(dir, msg);
    }
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    git_tally::json::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A readable line diff of two texts, for assertion messages.
pub fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// A value pretty-printed with sorted keys: diffs of two values show what differs, not
/// the order their keys were written in.
pub fn pretty(v: &serde_json::Value) -> String {
    let sorted: serde_json::Value = serde_json::from_str(&git_tally::json::canonical(v)).unwrap();
    serde_json::to_string_pretty(&sorted).unwrap()
}

/// The variable under which a test that lacks an outside program fails instead of
/// skipping (CI sets it; `.ci/run` installs every program the tests use).
pub const REQUIRE_TOOLS: &str = "GIT_TALLY_REQUIRE_TOOLS";

/// Whether `program` (looked up on PATH) can be started. Without it, `test` says by name on
/// stderr that it was skipped and this returns false — or, with GIT_TALLY_REQUIRE_TOOLS=1
/// set, panics so that CI cannot pass without running it.
pub fn have(program: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| is_executable(&d.join(program))));
    if found {
        return true;
    }
    if std::env::var(REQUIRE_TOOLS).is_ok_and(|v| v == "1") {
        panic!("{test}: {program} is not installed, and {REQUIRE_TOOLS}=1 requires it (.ci/run installs it)");
    }
    say_skipped(&format!("{program} is not installed"), test);
    false
}

/// Says that `test` was skipped, on the real stderr: libtest captures `eprintln!` of a
/// test that passes, which would hide the skip from the person running the suite.
pub fn say_skipped(why: &str, test: &str) {
    use std::io::Write;
    let line = format!("skipped {test}: {why} (CI installs it; set {REQUIRE_TOOLS}=1 to fail instead)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the file `path` that `test` needs (a script another package installs, such as
/// git's bash completion) exists; like [`have`], a skip says so by name, and is a failure
/// under GIT_TALLY_REQUIRE_TOOLS=1.
pub fn have_file(path: &str, package: &str, test: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var(REQUIRE_TOOLS).is_ok_and(|v| v == "1") {
        panic!("{test}: {path} (Debian package {package}) is missing, and {REQUIRE_TOOLS}=1 requires it (.ci/run installs it)");
    }
    say_skipped(&format!("{path} (Debian package {package}) is missing"), test);
    false
}
