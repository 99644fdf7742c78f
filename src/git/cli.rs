//! git processes: every call names its directory with `-C`, runs with `LC_ALL=C`, captures
//! stderr into the error and never inherits a terminal prompt. Each is a typed operation
//! here (the runner itself is private): transport (`fetch`, `push`, `ls-remote`, `clone`:
//! the user's ssh agent, credential helpers and proxies); configuration reads and writes,
//! `check-attr`, the hooks path and git's version for install, hooks and doctor; the index
//! a pre-commit hook is handed (`GIT_INDEX_FILE`). Their output is read by the parsers at
//! the end of this file, unit-tested over captured output.

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

    fn output(&self, args: &[&str]) -> Result<Output, GitError> {
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
    /// Private: every command line is built in this module, by a typed operation.
    fn run(&self, args: &[&str]) -> Result<String, GitError> {
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

    /// stdout as bytes (blobs).
    fn run_bytes(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
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
    fn run_with_input(&self, args: &[&str], input: &[u8]) -> Result<String, GitError> {
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
    fn run_optional(&self, args: &[&str]) -> Result<Option<String>, GitError> {
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
        Ok(parse_check_attr(&out))
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

    /// This git's version (`git --version`), `None` when it cannot be read.
    pub fn version(&self) -> Option<(u32, u32, u32)> {
        self.run(&["--version"]).ok().as_deref().and_then(parse_git_version)
    }

    /// The scope a config key's value comes from (`local`, `global`, `system`, `command`…),
    /// `None` when it is not set.
    pub fn config_scope(&self, key: &str) -> Option<String> {
        self.run(&["config", "--show-scope", "--get", key]).ok().as_deref().and_then(parse_show_scope)
    }

    /// Every config entry whose key matches `regex`, in the order git reads them, with
    /// section and variable names lower-cased (git's keys are case-insensitive but for
    /// subsections). One git process.
    pub fn config_matching(&self, regex: &str) -> Result<Vec<(String, String)>, GitError> {
        Ok(parse_config_z(&self.run_optional(&["config", "-z", "--get-regexp", regex])?.unwrap_or_default()))
    }

    /// The checked-out branch's short name, `None` on a detached HEAD.
    pub fn current_branch(&self) -> Result<Option<String>, GitError> {
        self.run_optional(&["symbolic-ref", "--short", "-q", "HEAD"])
    }

    /// The configured remotes, in git's order.
    pub fn remotes(&self) -> Result<Vec<String>, GitError> {
        Ok(self.run(&["remote"])?.lines().map(str::to_string).collect())
    }

    /// The branches of `remote` (a configured remote or a URL) and their commits: asks the
    /// remote (transport).
    pub fn ls_remote_heads(&self, remote: &str) -> Result<Vec<(Oid, String)>, GitError> {
        Ok(parse_ls_remote(&self.run(&["ls-remote", "--heads", remote])?))
    }

    /// Where git looks for hooks (core.hooksPath honoured), absolute. Asked of git: it
    /// reads every way the path can be set (`git -c`, includes, a linked worktree's common
    /// directory) as hooks see it; only install, uninstall and doctor ask.
    pub fn hooks_dir(&self) -> Result<PathBuf, GitError> {
        let p = PathBuf::from(self.run(&["rev-parse", "--git-path", "hooks"])?);
        Ok(if p.is_absolute() { p } else { self.toplevel()?.join(p) })
    }

    /// The paths staged as added, copied or modified (what a commit being made changes),
    /// from the index git hands a pre-commit hook (`GIT_INDEX_FILE` honoured).
    pub fn staged_paths(&self) -> Result<Vec<String>, GitError> {
        Ok(parse_nul_list(&self.run(&["diff", "--cached", "--name-only", "-z", "--diff-filter=ACM"])?))
    }

    /// The staged bytes of `path`.
    pub fn staged_blob(&self, path: &str) -> Result<Vec<u8>, GitError> {
        self.run_bytes(&["cat-file", "blob", &format!(":{path}")])
    }

    /// Stages `bytes` as `path` (a regular file), without touching the work tree.
    pub fn stage(&self, path: &str, bytes: &[u8]) -> Result<Oid, GitError> {
        let out = self.run_with_input(&["hash-object", "-w", "--stdin"], bytes)?;
        let blob = Oid::from_hex(&out).ok_or_else(|| GitError {
            command: self.describe(&["hash-object", "-w", "--stdin"]),
            status: Some(0),
            stderr: format!("not an object id: {out:?}"),
        })?;
        self.run(&["update-index", "--add", "--cacheinfo", &format!("100644,{blob},{path}")])?;
        Ok(blob)
    }

    /// Creates a bare repository at `path` whose unborn branch is `branch`.
    pub fn init_bare(&self, path: &Path, branch: &str) -> Result<(), GitError> {
        self.run(&["init", "-q", "--bare", "-b", branch, &path.to_string_lossy()]).map(drop)
    }

    /// Clones `url` into `dir` (transport).
    pub fn clone_into(&self, url: &str, dir: &Path) -> Result<(), GitError> {
        self.run(&["clone", "-q", url, &dir.to_string_lossy()]).map(drop)
    }
}

/// The version in `git --version` output ("git version 2.39.5", "2.39.3 (Apple Git-145)",
/// "2.45.1.windows.1").
fn parse_git_version(out: &str) -> Option<(u32, u32, u32)> {
    let v = out.trim().strip_prefix("git version ")?;
    let mut nums = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>());
    let major = nums.next()?.ok()?;
    let minor = nums.next()?.ok()?;
    let patch = nums.next().and_then(|r| r.ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// The scope in `git config --show-scope --get` output: `<scope>TAB<value>`.
fn parse_show_scope(out: &str) -> Option<String> {
    out.lines().next()?.split_once('\t').map(|(scope, _)| scope.to_string())
}

/// `git config -z --get-regexp` output: `key LF value NUL` per entry (`key NUL` for a key
/// without a value, which git reads as true). Section and variable names are lower-cased;
/// a subsection (a branch name) keeps its case.
fn parse_config_z(out: &str) -> Vec<(String, String)> {
    out.split('\0')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (k, v) = entry.split_once('\n').unwrap_or((entry, ""));
            let key = match (k.find('.'), k.rfind('.')) {
                (Some(a), Some(b)) if a != b => {
                    format!("{}{}{}", k[..a].to_ascii_lowercase(), &k[a..b], k[b..].to_ascii_lowercase())
                }
                _ => k.to_ascii_lowercase(),
            };
            (key, v.to_string())
        })
        .collect()
}

/// `git ls-remote` output: `<oid>TAB<ref>` per line.
fn parse_ls_remote(out: &str) -> Vec<(Oid, String)> {
    out.lines()
        .filter_map(|l| {
            let (id, name) = l.split_once('\t')?;
            Some((Oid::from_hex(id)?, name.to_string()))
        })
        .collect()
}

/// `git check-attr -z` output: `path NUL attribute NUL value NUL` for each path, in the
/// order asked; `unspecified` and `unset` are no value.
fn parse_check_attr(out: &str) -> Vec<Option<String>> {
    let fields: Vec<&str> = out.split('\0').collect();
    fields
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| (c[2] != "unspecified" && c[2] != "unset").then(|| c[2].to_string()))
        .collect()
}

/// A NUL-terminated list of paths (`-z`).
fn parse_nul_list(out: &str) -> Vec<String> {
    out.split('\0').filter(|p| !p.is_empty()).map(str::to_string).collect()
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self
                .output(&[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-recurse-submodules",
                    "--no-write-fetch-head",
                    // Checked by `maintenance` once there is something to pack, beside the
                    // push instead of before everything else.
                    "--no-auto-maintenance",
                    remote,
                    &spec,
                ])
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
                Some(2) => return Ok(Fetched::NoRemoteRef),
                // The remote answers with the branch: what failed is local, most often the
                // tracking ref updated at that moment by another git process (a push of a
                // sync killed a moment ago, or of one running beside): tried again.
                Some(0) if attempt < 5 => std::thread::sleep(std::time::Duration::from_millis(100 * attempt)),
                _ => {
                    return Err(TransportError(format!(
                        "could not fetch {branch} from {remote}: {}",
                        first_lines(&stderr)
                    )))
                }
            }
        }
    }

    /// What git runs after a command that added objects (`git maintenance run --auto`: a
    /// `gc --auto` that detaches when the repository needs one); the sync's fetch leaves it
    /// to this. Its failure is not the sync's: it is ignored, as git ignores it.
    pub fn maintenance(&self) {
        let _ = self.output(&["maintenance", "run", "--auto", "--quiet"]);
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

    // `git push --porcelain` (LC_ALL=C), captured from git 2.39.5 and 2.47.3, which print
    // the same: a `To` line, one status line per ref (flag TAB from:to TAB summary), `Done`.
    const ACCEPTED: &str = "To file:///tmp/r.git\n \tHEAD:refs/heads/main\t95223e1..2e2a57c\nDone\n";
    const NEW: &str = "To file:///tmp/r.git\n*\tHEAD:refs/heads/usage/main\t[new branch]\nDone\n";
    const UP_TO_DATE: &str = "To file:///tmp/r.git\n=\tHEAD:refs/heads/main\t[up to date]\nDone\n";
    const NON_FAST_FORWARD: &str =
        "To file:///tmp/r.git\n!\tHEAD:refs/heads/main\t[rejected] (non-fast-forward)\nDone\n";
    const FETCH_FIRST: &str = "To /tmp/r/remote.git\n!\t4a1b2c3d:refs/heads/main\t[rejected] (fetch first)\nDone\n";
    const HOOK: &str =
        "To /tmp/r/remote.git\n!\t4a1b2c3d:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n";
    const FORCED: &str = "To file:///tmp/r.git\n+\tHEAD:refs/heads/main\t2e2a57c...fa8cf2c (forced update)\nDone\n";
    const DELETED: &str = "To file:///tmp/r.git\n-\t:refs/heads/usage/main\t[deleted]\nDone\n";

    #[test]
    fn push_porcelain_lines() {
        assert_eq!(parse_push_porcelain(ACCEPTED, "main"), Some(PushLine::Ok));
        assert_eq!(parse_push_porcelain(NEW, "usage/main"), Some(PushLine::Ok));
        assert_eq!(parse_push_porcelain(UP_TO_DATE, "main"), Some(PushLine::Ok));
        assert_eq!(parse_push_porcelain(FORCED, "main"), Some(PushLine::Ok));
        assert_eq!(
            parse_push_porcelain(NON_FAST_FORWARD, "main"),
            Some(PushLine::Rejected("[rejected] (non-fast-forward)".into()))
        );
        assert_eq!(
            parse_push_porcelain(FETCH_FIRST, "main"),
            Some(PushLine::Rejected("[rejected] (fetch first)".into()))
        );
        assert!(matches!(parse_push_porcelain(HOOK, "main"), Some(PushLine::Rejected(_))));
        // A deletion is not a push of a commit.
        assert_eq!(parse_push_porcelain(DELETED, "usage/main"), None);
    }

    #[test]
    fn push_porcelain_names_the_branch_exactly() {
        // Another branch's line, a branch whose name the asked one ends or starts with,
        // or no line at all (the connection failed before any ref): no outcome.
        assert_eq!(parse_push_porcelain(NEW, "main"), None);
        assert_eq!(parse_push_porcelain(NEW, "usage"), None);
        assert_eq!(parse_push_porcelain(ACCEPTED, "mai"), None);
        assert_eq!(parse_push_porcelain("", "main"), None);
        assert_eq!(parse_push_porcelain("fatal: could not read from remote repository.\n", "main"), None);
        // Several refs in one push: the asked one's line decides.
        let two =
            "To r\n*\tHEAD:refs/heads/other\t[new branch]\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone\n";
        assert!(matches!(parse_push_porcelain(two, "main"), Some(PushLine::Rejected(_))));
        assert_eq!(parse_push_porcelain(two, "other"), Some(PushLine::Ok));
        // A summary may be missing (older git); the flag alone decides.
        assert_eq!(parse_push_porcelain("=\tHEAD:refs/heads/main\n", "main"), Some(PushLine::Ok));
    }

    #[test]
    fn first_lines_keep_errors_short() {
        assert_eq!(first_lines("fatal: a\n\nfatal: b\nc\nd\n"), "fatal: a; fatal: b; c");
        assert_eq!(first_lines(""), "git gave no reason");
    }

    #[test]
    fn git_versions() {
        // Captured: Debian 12's git, the newer one in /usr/local here; then macOS and
        // Git for Windows as their users report them.
        assert_eq!(parse_git_version("git version 2.39.5\n"), Some((2, 39, 5)));
        assert_eq!(parse_git_version("git version 2.47.3\n"), Some((2, 47, 3)));
        assert_eq!(parse_git_version("git version 2.39.3 (Apple Git-145)"), Some((2, 39, 3)));
        assert_eq!(parse_git_version("git version 2.45.1.windows.1"), Some((2, 45, 1)));
        assert_eq!(parse_git_version("git version 2.30"), Some((2, 30, 0)));
        assert_eq!(parse_git_version("git version 2.43.0.rc1"), Some((2, 43, 0)));
        assert_eq!(parse_git_version("hub version 2.14"), None);
        assert_eq!(parse_git_version("git version"), None);
        assert_eq!(parse_git_version(""), None);
    }

    #[test]
    fn config_scopes() {
        // `git config --show-scope --get KEY`, captured from 2.39.5 and 2.47.3.
        assert_eq!(parse_show_scope("local\tusage/u.json\n").as_deref(), Some("local"));
        assert_eq!(parse_show_scope("global\tdev").as_deref(), Some("global"));
        assert_eq!(parse_show_scope("command\t1").as_deref(), Some("command"));
        // A value with a tab in it still has its scope first.
        assert_eq!(parse_show_scope("local\ta\tb").as_deref(), Some("local"));
        assert_eq!(parse_show_scope(""), None);
    }

    #[test]
    fn config_entries_with_z() {
        // `git config -z --get-regexp '^(tally\.|user\.email$)'`, captured from 2.39.5 and
        // 2.47.3 (global scope first; `flag` written without a value).
        let out = "tally.device\ndev\0tally.file\nusage/u.json\0tally.flag\0user.email\nx@y\0";
        assert_eq!(
            parse_config_z(out),
            [("tally.device", "dev"), ("tally.file", "usage/u.json"), ("tally.flag", ""), ("user.email", "x@y")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // Section and variable names are case-insensitive, subsections (branch names) are
        // not; values keep newlines.
        let out = "Tally.File\na.json\0branch.Feature/X.Remote\norigin\0tally.note\nline 1\nline 2\0";
        assert_eq!(
            parse_config_z(out),
            [("tally.file", "a.json"), ("branch.Feature/X.remote", "origin"), ("tally.note", "line 1\nline 2")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(parse_config_z(""), []);
    }

    #[test]
    fn ls_remote_lines() {
        // `git ls-remote --heads origin`, captured from 2.47.3.
        let out = "e2c8ed317a1726452fcff0fec4553b6653e75dd7\trefs/heads/main\n\
                   95223e1c0b0b1f4e1f9d2d9b2a0e0c1d2e3f4a5b\trefs/heads/usage/main\n";
        let heads = parse_ls_remote(out);
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0].0.to_string(), "e2c8ed317a1726452fcff0fec4553b6653e75dd7");
        assert_eq!(heads[1].1, "refs/heads/usage/main");
        // An empty remote prints nothing; a line that is not `<oid>TAB<ref>` is skipped.
        assert_eq!(parse_ls_remote(""), []);
        assert_eq!(parse_ls_remote("warning: redirecting to https://x/\n"), []);
    }

    #[test]
    fn check_attr_values() {
        // `printf 'a\0b c\0x\0' | git check-attr -z --stdin merge`, captured from 2.39.5 and
        // 2.47.3 with `* merge=tally` and `x -merge`.
        let out = "a\0merge\0tally\0b c\0merge\0tally\0x\0merge\0unset\0";
        assert_eq!(parse_check_attr(out), [Some("tally".to_string()), Some("tally".to_string()), None]);
        assert_eq!(parse_check_attr("a\0merge\0unspecified\0"), [None]);
        // `merge` set without a value.
        assert_eq!(parse_check_attr("a\0merge\0set\0"), [Some("set".to_string())]);
        assert_eq!(parse_check_attr(""), []);
    }

    /// The typed operations against the git on PATH, in a repository of their own (no
    /// global or system configuration): their command lines and parsers fit together.
    #[test]
    fn typed_operations_against_real_git() {
        let tmp = tempfile::tempdir().unwrap();
        let hermetic = |dir: &Path| {
            Git::new(dir)
                .with_env("GIT_CONFIG_GLOBAL", "/dev/null")
                .with_env("GIT_CONFIG_SYSTEM", "/dev/null")
                .with_env("HOME", &tmp.path().to_string_lossy())
        };
        let remote = tmp.path().join("remote.git");
        hermetic(tmp.path()).init_bare(&remote, "main").unwrap();
        let dir = tmp.path().join("clone");
        hermetic(tmp.path()).clone_into(&format!("file://{}", remote.display()), &dir).unwrap();
        let git = hermetic(&dir);
        assert!(git.version().is_some_and(|v| (v.0, v.1) >= (2, 0)));
        assert_eq!(git.current_branch().unwrap().as_deref(), Some("main"));
        assert_eq!(git.remotes().unwrap(), ["origin"]);
        assert_eq!(git.ls_remote_heads("origin").unwrap(), []);
        assert_eq!(
            std::fs::canonicalize(git.hooks_dir().unwrap()).ok(),
            std::fs::canonicalize(dir.join(".git/hooks")).ok()
        );

        git.config_set(Scope::Local, "tally.file", "usage/a.json").unwrap();
        git.config_set(Scope::Local, "Tally.Device", "laptop").unwrap();
        assert_eq!(git.config_scope("tally.file").as_deref(), Some("local"));
        assert_eq!(git.config_scope("tally.nothing"), None);
        let pairs = git.config_matching(r"^tally\.").unwrap();
        assert_eq!(
            pairs,
            [("tally.file".to_string(), "usage/a.json".to_string()), ("tally.device".into(), "laptop".into())]
        );
        assert_eq!(git.config_matching(r"^nothing\.").unwrap(), []);

        std::fs::write(dir.join(".gitattributes"), "usage/*.json merge=tally\n").unwrap();
        assert_eq!(git.check_attr_all("merge", &["usage/a.json", "notes"]).unwrap(), [Some("tally".into()), None]);

        let id = git.stage("usage/a.json", b"{\"n\": 1}\n").unwrap();
        assert_eq!(id.to_string().len(), 40);
        assert_eq!(git.staged_paths().unwrap(), ["usage/a.json"]);
        assert_eq!(git.staged_blob("usage/a.json").unwrap(), b"{\"n\": 1}\n");
        assert!(!dir.join("usage/a.json").exists(), "staged without touching the work tree");
    }

    #[test]
    fn nul_separated_paths() {
        // `git diff --cached --name-only -z`, captured: a name with a space, then others.
        assert_eq!(parse_nul_list("new file\0usage/usage.json\0"), ["new file", "usage/usage.json"]);
        assert_eq!(parse_nul_list(""), Vec::<String>::new());
    }
}
