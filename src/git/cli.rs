//! git processes: every call names its directory with `-C`, runs with `LC_ALL=C`, captures
//! stderr into the error and never inherits a terminal prompt. Transport (`fetch`, `push`,
//! `ls-remote`: the user's ssh agent, credential helpers and proxies) is typed here, with
//! parsers of git's porcelain output; configuration writes and `check-attr` serve install,
//! hooks and doctor.

use super::Oid;
use crate::error::GitError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where a `git config` write goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Local,
    Global,
}

impl Scope {
    fn flag(self) -> &'static str {
        match self {
            Scope::Local => "--local",
            Scope::Global => "--global",
        }
    }
}

/// Git commands run in one directory.
#[derive(Clone, Debug)]
pub struct Git {
    dir: PathBuf,
    /// Configuration passed as `-c key=value` to every command.
    overrides: Vec<String>,
    /// Extra environment for every command.
    env: Vec<(String, String)>,
    /// Commands still running then are killed (a bounded `flush`).
    deadline: Option<std::time::Instant>,
}

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Git { dir: dir.into(), overrides: Vec::new(), env: Vec::new(), deadline: None }
    }

    /// The same, with `-c key=value` on every command.
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.overrides.push(format!("{key}={value}"));
        self
    }

    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn with_deadline(mut self, deadline: Option<std::time::Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.dir);
        for o in &self.overrides {
            c.arg("-c").arg(o);
        }
        c.args(args);
        // Decisions read exit codes and porcelain output; the locale is pinned anyway so that
        // messages quoted in errors are the same everywhere.
        c.env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C").stdin(Stdio::null());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn describe(&self, args: &[&str]) -> String {
        format!("git -C {} {}", self.dir.display(), args.join(" "))
    }

    pub(crate) fn output(&self, args: &[&str]) -> Result<Output, GitError> {
        let fail = |stderr: String| GitError { command: self.describe(args), status: None, stderr };
        let Some(deadline) = self.deadline else {
            return self.command(args).output().map_err(|e| fail(format!("could not start git: {e}")));
        };
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("could not start git: {e}")))?;
        // Drain the pipes on threads so a chatty git cannot block on a full pipe.
        let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let t_out = std::thread::spawn(move || {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut b).map(|_| b)
        });
        let t_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut b).map(|_| b)
        });
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail("timed out".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let stdout = t_out.join().ok().and_then(Result::ok).unwrap_or_default();
        let stderr = t_err.join().ok().and_then(Result::ok).unwrap_or_default();
        Ok(Output { status, stdout, stderr })
    }

    /// Runs git; stdout (trailing newline trimmed) on success, an error with stderr otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let out = self.output(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string())
        } else {
            Err(GitError {
                command: self.describe(args),
                status: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `run` with owned arguments.
    pub fn run_owned(&self, args: &[String]) -> Result<String, GitError> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }

    /// stdout as bytes (blobs).
    pub fn run_bytes(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let out = self.output(args)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(GitError {
                command: self.describe(args),
                status: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `run` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Result<String, GitError> {
        let fail = |stderr: String, status| GitError { command: self.describe(args), status, stderr };
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("could not start git: {e}"), None))?;
        let mut stdin = child.stdin.take().expect("piped");
        let data = input.to_vec();
        // A child that exits before reading everything closes the pipe: that must be an
        // error from its exit status, not a SIGPIPE that ends git-tally.
        let flag = crate::sigpipe_ends_process();
        flag.store(false, std::sync::atomic::Ordering::SeqCst);
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().map_err(|e| fail(e.to_string(), None));
        let _ = writer.join();
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        let out = out?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string())
        } else {
            Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string(), out.status.code()))
        }
    }

    /// The bytes of `rev:path`, `None` when it does not exist.
    pub fn blob(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let spec = format!("{rev}:{path}");
        let out = self.output(&["cat-file", "blob", &spec])?;
        Ok(out.status.success().then_some(out.stdout))
    }

    /// Like `run`, but exit status 1 (git's "not found" for config) is `None`.
    pub fn run_optional(&self, args: &[&str]) -> Result<Option<String>, GitError> {
        let out = self.output(args)?;
        match out.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string())),
            Some(1) => Ok(None),
            status => Err(GitError {
                command: self.describe(args),
                status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    pub fn config_get(&self, key: &str) -> Result<Option<String>, GitError> {
        self.run_optional(&["config", "--get", key])
    }

    pub fn config_get_all(&self, key: &str) -> Result<Vec<String>, GitError> {
        Ok(self
            .run_optional(&["config", "--get-all", key])?
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default())
    }

    pub fn config_get_in(&self, scope: Scope, key: &str) -> Result<Option<String>, GitError> {
        self.run_optional(&["config", scope.flag(), "--get", key])
    }

    pub fn config_set(&self, scope: Scope, key: &str, value: &str) -> Result<(), GitError> {
        self.run(&["config", scope.flag(), key, value]).map(drop)
    }

    pub fn config_unset(&self, scope: Scope, key: &str) -> Result<(), GitError> {
        // Exit 5: the key was not set, which is what we want.
        match self.run(&["config", scope.flag(), "--unset-all", key]) {
            Err(e) if e.status == Some(5) => Ok(()),
            r => r.map(drop),
        }
    }

    pub fn config_remove_section(&self, scope: Scope, section: &str) -> Result<(), GitError> {
        match self.run(&["config", scope.flag(), "--remove-section", section]) {
            Err(e) if e.status == Some(128) && e.stderr.contains("no such section") => Ok(()),
            r => r.map(drop),
        }
    }

    /// The value of a git attribute for a path, `None` when unspecified.
    pub fn check_attr(&self, attr: &str, path: &str) -> Result<Option<String>, GitError> {
        Ok(self.check_attr_all(attr, &[path])?.pop().flatten())
    }

    /// The value of a git attribute for each of `paths`, with one git process.
    pub fn check_attr_all(&self, attr: &str, paths: &[&str]) -> Result<Vec<Option<String>>, GitError> {
        let input: String = paths.iter().map(|p| format!("{p}\0")).collect();
        let out = self.run_with_input(&["check-attr", "-z", "--stdin", attr], input.as_bytes())?;
        // Output: path NUL attribute NUL value NUL, for each path in order.
        let fields: Vec<&str> = out.split('\0').collect();
        Ok(fields
            .chunks(3)
            .filter(|c| c.len() == 3)
            .map(|c| (c[2] != "unspecified" && c[2] != "unset").then(|| c[2].to_string()))
            .collect())
    }

    /// The top of the work tree.
    pub fn toplevel(&self) -> Result<PathBuf, GitError> {
        self.run(&["rev-parse", "--show-toplevel"]).map(PathBuf::from)
    }

    /// The repository's git directory, absolute.
    pub fn git_dir(&self) -> Result<PathBuf, GitError> {
        self.run(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from)
    }

    pub fn exec_path(&self) -> Result<PathBuf, GitError> {
        self.run(&["--exec-path"]).map(PathBuf::from)
    }
}

/// Line-based 3-way merge (`git merge-file --diff3`), for conflicts and for inputs that
/// are not JSON. Returns the merged text and the number of conflicts.
pub fn merge_file(
    dir: &Path,
    base: &[u8],
    ours: &[u8],
    theirs: &[u8],
    labels: [&str; 3],
    marker_size: usize,
) -> Result<(Vec<u8>, usize), GitError> {
    let tmp = tempfile::tempdir().map_err(|e| GitError {
        command: "git merge-file".into(),
        status: None,
        stderr: format!("could not create a temporary directory: {e}"),
    })?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, GitError> {
        let p = tmp.path().join(name);
        std::fs::File::create(&p).and_then(|mut f| f.write_all(bytes)).map_err(|e| GitError {
            command: "git merge-file".into(),
            status: None,
            stderr: format!("could not write {}: {e}", p.display()),
        })?;
        Ok(p)
    };
    let (o, a, b) = (write("base", base)?, write("ours", ours)?, write("theirs", theirs)?);
    let marker = format!("--marker-size={marker_size}");
    let args: Vec<&str> = vec![
        "merge-file",
        "-p",
        "--diff3",
        &marker,
        "-L",
        labels[1],
        "-L",
        labels[0],
        "-L",
        labels[2],
        a.to_str().unwrap_or_default(),
        o.to_str().unwrap_or_default(),
        b.to_str().unwrap_or_default(),
    ];
    let git = Git::new(dir);
    let out = git.output(&args)?;
    match out.status.code() {
        Some(n) if (0..128).contains(&n) => Ok((out.stdout, n as usize)),
        status => Err(GitError {
            command: git.describe(&args),
            status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// What `fetch` brought.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The branch is in the ref the caller named (and its objects in the object database).
    Fetched,
    /// The remote has no such branch (yet): an empty remote, or a branch nobody pushed.
    NoRemoteRef,
}

/// What `push` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The branch moved (or already pointed at the commit).
    Pushed,
    /// Refused: the remote branch moved since it was fetched (fetch, integrate, retry).
    Rejected(String),
}

/// A transport that failed: the network, the remote, a credential helper, a timeout. Safe
/// to retry; nothing local changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

impl Git {
    /// Fetches `branch` of `remote` (a configured remote or a URL) into the ref `into` (the
    /// remote-tracking ref, where there is one). One git process; a second only when the
    /// fetch failed, so that `ls-remote` tells a missing branch from a failure by exit code.
    pub fn fetch(&self, remote: &str, branch: &str, into: &str) -> Result<Fetched, TransportError> {
        let spec = format!("+refs/heads/{branch}:{into}");
        let out = self
            .output(&["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", remote, &spec])
            .map_err(|e| TransportError(e.to_string()))?;
        if out.status.success() {
            return Ok(Fetched::Fetched);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // `ls-remote --exit-code` exits 2 when the remote answers without the ref.
        let probe = self
            .output(&["ls-remote", "--exit-code", remote, &format!("refs/heads/{branch}")])
            .map_err(|e| TransportError(e.to_string()))?;
        match probe.status.code() {
            Some(2) => Ok(Fetched::NoRemoteRef),
            _ => Err(TransportError(format!("could not fetch {branch} from {remote}: {}", first_lines(&stderr)))),
        }
    }

    /// Pushes `commit` to `branch` of `remote`, never forcing.
    pub fn push(&self, remote: &str, commit: &Oid, branch: &str) -> Result<Pushed, TransportError> {
        let spec = format!("{commit}:refs/heads/{branch}");
        let out = self.output(&["push", "--porcelain", remote, &spec]).map_err(|e| TransportError(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match parse_push_porcelain(&stdout, branch) {
            Some(PushLine::Ok) if out.status.success() => Ok(Pushed::Pushed),
            Some(PushLine::Rejected(why)) => Ok(Pushed::Rejected(why)),
            _ => Err(TransportError(format!("could not push to {remote}: {}", first_lines(&stderr)))),
        }
    }
}

/// The first lines of a message: enough to say what went wrong in one error line.
fn first_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(3).collect();
    if lines.is_empty() {
        "git gave no reason".into()
    } else {
        lines.join("; ")
    }
}

/// The outcome `git push --porcelain` reported for one ref.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushLine {
    Ok,
    Rejected(String),
}

/// Reads the status line of `refs/heads/<branch>` from `git push --porcelain` output:
/// `<flag>\t<from>:<to>\t<summary>`, where `!` is a rejection and ` `, `+`, `*`, `=`
/// mean the ref is where we wanted it. `None`: no such line (the push never got that far).
pub(crate) fn parse_push_porcelain(stdout: &str, branch: &str) -> Option<PushLine> {
    let target = format!("refs/heads/{branch}");
    stdout.lines().find_map(|line| {
        let mut fields = line.splitn(3, '\t');
        let (flag, refs, summary) = (fields.next()?, fields.next()?, fields.next().unwrap_or(""));
        if refs.rsplit_once(':').map(|(_, to)| to) != Some(target.as_str()) {
            return None;
        }
        match flag {
            "!" => Some(PushLine::Rejected(summary.trim().to_string())),
            " " | "+" | "*" | "=" => Some(PushLine::Ok),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from git 2.39 and 2.47 (`git push --porcelain`), LC_ALL=C.
    const ACCEPTED: &str = "To /tmp/r/remote.git\n \t4a1b…:refs/heads/main\t1f2e3d4..4a1b2c3\nDone\n";
    const NEW: &str = "To /tmp/r/remote.git\n*\t4a1b2c3d:refs/heads/main\t[new branch]\nDone\n";
    const UP_TO_DATE: &str = "To /tmp/r/remote.git\n=\t4a1b2c3d:refs/heads/main\t[up to date]\nDone\n";
    const REJECTED: &str = "To /tmp/r/remote.git\n!\t4a1b2c3d:refs/heads/main\t[rejected] (fetch first)\nDone\n";
    const HOOK: &str =
        "To /tmp/r/remote.git\n!\t4a1b2c3d:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n";

    #[test]
    fn push_porcelain_lines() {
        assert_eq!(parse_push_porcelain(ACCEPTED, "main"), Some(PushLine::Ok));
        assert_eq!(parse_push_porcelain(NEW, "main"), Some(PushLine::Ok));
        assert_eq!(parse_push_porcelain(UP_TO_DATE, "main"), Some(PushLine::Ok));
        assert_eq!(parse_push_porcelain(REJECTED, "main"), Some(PushLine::Rejected("[rejected] (fetch first)".into())));
        assert!(matches!(parse_push_porcelain(HOOK, "main"), Some(PushLine::Rejected(_))));
        // Another branch's line, or none at all (the connection failed): no outcome.
        assert_eq!(parse_push_porcelain(NEW, "other"), None);
        assert_eq!(parse_push_porcelain("", "main"), None);
    }

    #[test]
    fn first_lines_keep_errors_short() {
        assert_eq!(first_lines("fatal: a\n\nfatal: b\nc\nd\n"), "fatal: a; fatal: b; c");
        assert_eq!(first_lines(""), "git gave no reason");
    }
}
