//! The one place git is used. Git processes: every call names its directory with `-C`,
//! captures stderr into the error, and never inherits a terminal prompt. In process, with
//! gix, only where a process per call would dominate: the merge driver's profile lookup
//! (`profile_of`) and the tree of a usage commit (`tree_with`).

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
        c.env("GIT_TERMINAL_PROMPT", "0").stdin(Stdio::null());
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

/// The setting that picks the profile of `path` (its `tally-profile` attribute, else
/// `tally.profile`), in-process where `profile_setting` can, else from git.
pub fn profile_of(dir: &Path, path: Option<&str>) -> Option<String> {
    profile_setting(dir, path).unwrap_or_else(|| {
        let git = Git::new(dir);
        let from_attr = path.and_then(|p| git.check_attr("tally-profile", p).ok().flatten());
        from_attr.or_else(|| git.config_get("tally.profile").ok().flatten())
    })
}

/// The setting that picks the profile of `path`, read in-process with gix: its
/// `tally-profile` attribute, else `tally.profile` (`Some(None)` when neither is set). The
/// merge driver runs once per merged file, and the two git processes this replaces were
/// most of its fixed cost. `None` where gix cannot stand in for git — no work tree, a
/// repository gix cannot open, a relative `core.attributesFile`, or `git -c` setting a
/// `tally.` key (git hands those to the driver in GIT_CONFIG_PARAMETERS, which gix does not
/// read): ask git then.
pub fn profile_setting(dir: &Path, path: Option<&str>) -> Option<Option<String>> {
    if std::env::var("GIT_CONFIG_PARAMETERS").is_ok_and(|p| sets_tally_key(&p)) {
        return None;
    }
    let repo = gix::ThreadSafeRepository::discover_with_environment_overrides(dir).ok()?.to_thread_local();
    let top = std::fs::canonicalize(repo.workdir()?).ok()?;
    let config = repo.config_snapshot();
    if config.string("core.attributesFile").is_some_and(|f| !f.starts_with(b"/") && !f.starts_with(b"~")) {
        return None; // relative to git's working directory, which gix reads differently
    }
    if let Some(path) = path {
        if Path::new(path).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return None;
        }
        // Relative to `dir`, as `git -C dir check-attr` reads it (the driver runs at the top).
        let at = std::fs::canonicalize(dir).ok()?.join(path);
        let rel = at.strip_prefix(&top).ok()?;
        let index = repo.index_or_empty().ok()?;
        let source = gix::worktree::stack::state::attributes::Source::WorktreeThenIdMapping;
        let mut stack = repo.attributes_only(&index, source).ok()?;
        let mut found = stack.selected_attribute_matches(["tally-profile"]);
        stack.at_path(rel, None).ok()?.matching_attributes(&mut found);
        use gix::attrs::StateRef;
        let value = found.iter_selected().next().and_then(|m| match m.assignment.state {
            StateRef::Value(v) => Some(v.as_bstr().to_string()),
            StateRef::Set => Some("set".to_string()),
            StateRef::Unset | StateRef::Unspecified => None,
        });
        if value.is_some() {
            return Some(value);
        }
    }
    Some(config.string("tally.profile").map(|v| v.to_string()))
}

/// The tree of `parent` (none: empty) with each of `files` (path in the tree, contents)
/// written in, built in-process with gix: blobs and trees are content-addressed objects,
/// so this moves no ref and touches no index — committing stays with git. Returns the
/// tree and the files whose blob differs from `parent`'s, with that blob. `None` where gix
/// cannot do it (a repository it cannot open, another object format): use plumbing then.
pub fn tree_with(
    dir: &Path,
    parent: Option<&str>,
    files: &[(String, Vec<u8>)],
) -> Option<(String, Vec<(String, String)>)> {
    let repo = gix::open(dir).ok()?;
    let base = match parent {
        Some(p) => repo.find_commit(gix::ObjectId::from_hex(p.as_bytes()).ok()?).ok()?.tree_id().ok()?.detach(),
        None => gix::ObjectId::empty_tree(repo.object_hash()),
    };
    let old_tree = repo.find_tree(base).ok()?;
    let mut editor = repo.edit_tree(base).ok()?;
    let mut changed = Vec::new();
    for (path, bytes) in files {
        let blob = repo.write_blob(bytes).ok()?.detach();
        if old_tree.lookup_entry_by_path(path).ok()?.map(|e| e.object_id()) != Some(blob) {
            editor.upsert(path.as_str(), gix::object::tree::EntryKind::Blob, blob).ok()?;
            changed.push((path.clone(), blob.to_string()));
        }
    }
    let tree = editor.write().ok()?.detach();
    Some((tree.to_string(), changed))
}

/// Whether git's `-c` settings, as passed to a child in GIT_CONFIG_PARAMETERS, set a key
/// of the `tally` section. Each key starts a single-quoted item: `'tally.profile'='x'`, or
/// `'tally.profile=x'` from older git. `merge.tally.*` (git-tally's own forced driver) is
/// not one.
fn sets_tally_key(parameters: &str) -> bool {
    parameters.to_ascii_lowercase().contains("'tally.")
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

#[cfg(test)]
mod tests {
    #[test]
    fn only_tally_keys_in_git_config_parameters_count() {
        use super::sets_tally_key;
        // As git 2.47 passes `git -c merge.tally.driver=… -c Tally.Profile=generic`.
        assert!(!sets_tally_key(
            "'merge.tally.name'='git-tally: exact' 'merge.tally.driver'='git-tally merge %O %A %B'"
        ));
        assert!(sets_tally_key("'merge.tally.name'='x' 'Tally.Profile'='generic'"));
        assert!(sets_tally_key("'tally.profile=generic'"));
        assert!(!sets_tally_key("'core.attributesfile'='/x/tally.attrs'"));
    }
}
