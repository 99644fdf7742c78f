//! Configuration from git config (local, then global): the `tally.*` keys of SPEC §6.
//! Loaded once, by the command that starts, and passed down; nothing deeper reads git
//! config on its own.

use crate::error::{Error, Result};
use crate::git::Git;
use std::path::PathBuf;
use std::time::Duration;

/// What the application that writes the usage file re-reads (SPEC §5b).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppReads {
    /// Statistics live in memory: the base of an application write is its previous write.
    Never,
    /// The application re-reads the file git-tally leaves after each pull.
    AfterPull,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Usage files, relative to the top of the work tree.
    pub files: Vec<PathBuf>,
    pub profile: Option<String>,
    pub remote: Option<String>,
    pub branch: Option<String>,
    pub sync_interval: Duration,
    pub debounce: Duration,
    /// `None`: `record` never pulls; `Some(0)`: before every write.
    pub pull_max_age: Option<Duration>,
    pub push_retries: u32,
    pub flush_timeout: Duration,
    pub device: String,
    pub app_reads: AppReads,
    /// false: local only (atomic writes, no git).
    pub enabled: bool,
    /// How long a command waits for the repository lock.
    pub lock_timeout: Duration,
    /// Whether the user has an identity for commits (user.email).
    pub has_identity: bool,
    /// core.attributesFile, kept when git-tally adds its own attributes for a sync.
    pub attributes_file: Option<PathBuf>,
    /// `per-machine`: each device writes `usage_data_<device>.json` beside a shared
    /// `manifest.json` (seed 001), in the directory of `tally.file`.
    pub per_machine: bool,
    /// `tally.collect`: the CLIProxyAPI queue the collector drains (a URL without secrets).
    pub collect: Option<String>,
    /// `tally.collectKeyFile`: the file holding the proxy's management key (`~/` expanded).
    pub collect_key_file: Option<PathBuf>,
    /// branch.<name>.remote and branch.<name>.merge, by branch name.
    pub branches: std::collections::HashMap<String, (Option<String>, Option<String>)>,
    /// How long event ids are remembered to recognise retries (SPEC §4b.6).
    pub id_horizon: Duration,
    /// Drop records older than this many days from the ledger (their counts stay).
    pub keep_records: Option<u32>,
    /// Commit the application-format files too, not only the ledger (SPEC §4b.5).
    pub commit_view: bool,
    /// What a person should hear about this configuration (the command prints them): a
    /// usage file no merge=tally attribute applies to. Found when the configuration is
    /// read from git, not from the cache, so a proxy's log does not repeat them per write.
    pub warnings: Vec<String>,
}

pub const DEFAULT_FILE: &str = "usage/usage.json";
/// The manifest of the per-machine layout.
pub const MANIFEST: &str = "manifest.json";

impl Default for Config {
    fn default() -> Self {
        Config {
            files: vec![PathBuf::from(DEFAULT_FILE)],
            profile: None,
            remote: None,
            branch: None,
            sync_interval: Duration::from_secs(15 * 60),
            debounce: Duration::from_secs(10),
            pull_max_age: None,
            push_retries: 5,
            flush_timeout: Duration::from_secs(20),
            device: hostname(),
            app_reads: AppReads::Never,
            enabled: true,
            lock_timeout: Duration::from_secs(30),
            has_identity: false,
            attributes_file: None,
            per_machine: false,
            collect: None,
            collect_key_file: None,
            branches: Default::default(),
            id_horizon: Duration::from_secs(30 * 86400),
            keep_records: None,
            commit_view: false,
            warnings: Vec::new(),
        }
    }
}

/// This machine's name, the default device.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A path from git config with a leading `~/` expanded, as git's `--type=path` does.
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn duration(key: &str, value: &str) -> Result<Duration> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value.trim())
        .map_err(|e| Error::Usage(format!("git config {key} = {value:?}: {e} (examples: 30s, 15m, 1h)")))
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(Error::Usage(format!("git config {key} = {value:?}: expected true or false"))),
    }
}

impl Config {
    /// Reads every `tally.*` key (and the user identity) with one git process.
    pub fn load(git: &Git) -> Result<Config> {
        Config::from_pairs(&Config::pairs(git)?)
    }

    fn pairs(git: &Git) -> Result<Vec<(String, String)>> {
        Ok(git.config_matching(r"^(tally\.|user\.email$|core\.attributesfile$|branch\..*\.(remote|merge)$)")?)
    }

    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Config> {
        let mut c = Config::default();
        let mut files = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "tally.file" => files.push(PathBuf::from(v)),
                "tally.profile" => c.profile = Some(v.clone()),
                "tally.remote" => c.remote = Some(v.clone()),
                "tally.branch" => c.branch = Some(v.clone()),
                "tally.syncinterval" => c.sync_interval = duration(k, v)?,
                "tally.debounce" => c.debounce = duration(k, v)?,
                "tally.pullmaxage" => c.pull_max_age = Some(duration(k, v)?),
                "tally.pushretries" => {
                    c.push_retries = v
                        .trim()
                        .parse()
                        .map_err(|_| Error::Usage(format!("git config {k} = {v:?}: expected a number")))?
                }
                "tally.flushtimeout" => c.flush_timeout = duration(k, v)?,
                "tally.locktimeout" => c.lock_timeout = duration(k, v)?,
                "tally.device" => c.device = v.clone(),
                "tally.appreads" => {
                    c.app_reads = match v.trim() {
                        "never" => AppReads::Never,
                        "after-pull" => AppReads::AfterPull,
                        _ => return Err(Error::Usage(format!("git config {k} = {v:?}: expected never or after-pull"))),
                    }
                }
                "tally.enabled" => c.enabled = boolean(k, v)?,
                "tally.idhorizon" => c.id_horizon = duration(k, v)?,
                "tally.keeprecords" => {
                    c.keep_records = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| Error::Usage(format!("git config {k} = {v:?}: expected a number of days")))?,
                    )
                }
                "tally.commitview" => c.commit_view = boolean(k, v)?,
                "tally.collect" => c.collect = Some(v.trim().to_string()).filter(|u| !u.is_empty()),
                "tally.collectkeyfile" => c.collect_key_file = Some(expand_home(v.trim())),
                "tally.layout" => {
                    c.per_machine = match v.trim() {
                        "single" => false,
                        "per-machine" => true,
                        _ => {
                            return Err(Error::Usage(format!("git config {k} = {v:?}: expected single or per-machine")))
                        }
                    }
                }
                "user.email" => c.has_identity = true,
                "core.attributesfile" => c.attributes_file = Some(PathBuf::from(v)),
                k if k.starts_with("branch.") && (k.ends_with(".remote") || k.ends_with(".merge")) => {
                    // Branch names keep their case: take the name from the original key.
                    let (name, field) = k["branch.".len()..].rsplit_once('.').expect("ends with .remote or .merge");
                    let entry = c.branches.entry(name.to_string()).or_default();
                    if field == "remote" {
                        entry.0 = Some(v.clone());
                    } else {
                        entry.1 = Some(v.clone());
                    }
                }
                _ => {}
            }
        }
        if !files.is_empty() {
            c.files = files;
        }
        if c.per_machine {
            // The device names a file: one name, not a path.
            let name = c.device.trim();
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
                return Err(Error::Usage(format!(
                    "tally.device = {:?}: with tally.layout per-machine it names usage_data_<device>.json, so it must be a plain name (no '/', not empty)",
                    c.device
                )));
            }
            let dir = c.files[0].parent().map(PathBuf::from).unwrap_or_default();
            c.files = vec![dir.join(format!("usage_data_{}.json", c.device)), dir.join(MANIFEST)];
            // The layout's point is a file per machine in the repository.
            c.commit_view = true;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_and_durations() {
        let c = Config::from_pairs(&pairs(&[
            ("tally.file", "a.json"),
            ("tally.file", "b.json"),
            ("tally.pullmaxage", "0"),
            ("tally.syncinterval", "1h"),
            ("tally.enabled", "false"),
            ("tally.appreads", "after-pull"),
        ]))
        .unwrap();
        assert_eq!(c.files, [PathBuf::from("a.json"), PathBuf::from("b.json")]);
        assert_eq!(c.pull_max_age, Some(Duration::ZERO));
        assert_eq!(c.sync_interval, Duration::from_secs(3600));
        assert!(!c.enabled);
        assert_eq!(c.app_reads, AppReads::AfterPull);
        assert!(Config::from_pairs(&pairs(&[("tally.debounce", "soon")])).is_err());
        // With a file per machine, the device names a file.
        for bad in ["a/b", "", ".", "..", "a\\b"] {
            let err =
                Config::from_pairs(&pairs(&[("tally.layout", "per-machine"), ("tally.device", bad)])).unwrap_err();
            assert!(err.to_string().contains("must be a plain name"), "{bad:?}: {err}");
        }
        let c = Config::from_pairs(&pairs(&[("tally.layout", "per-machine"), ("tally.device", "lap top")])).unwrap();
        assert!(c.files[0].ends_with("usage_data_lap top.json"), "{:?}", c.files);
    }

    #[test]
    fn collector_keys() {
        let c = Config::from_pairs(&pairs(&[
            ("tally.collect", "redis://127.0.0.1:8317"),
            ("tally.collectkeyfile", "/etc/git-tally/cpa.key"),
        ]))
        .unwrap();
        assert_eq!(c.collect.as_deref(), Some("redis://127.0.0.1:8317"));
        assert_eq!(c.collect_key_file, Some(PathBuf::from("/etc/git-tally/cpa.key")));
        assert_eq!(Config::from_pairs(&pairs(&[("tally.collect", " ")])).unwrap().collect, None);
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn checked(file: &str, top: Option<&std::path::Path>, in_git: bool) -> Result<PathBuf> {
        let mut files = vec![PathBuf::from(file)];
        check_files(&mut files, top, "git config tally.file", in_git)?;
        Ok(files.remove(0))
    }

    #[test]
    fn usage_files_stay_inside_the_work_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("repo");
        std::fs::create_dir_all(top.join("usage/dir")).unwrap();
        let t = Some(top.as_path());
        assert_eq!(checked("usage/usage.json", t, true).unwrap(), PathBuf::from("usage/usage.json"));
        assert_eq!(checked("./usage/x/../u.json", t, true).unwrap(), PathBuf::from("usage/u.json"));
        let abs = top.join("usage/u.json");
        assert_eq!(checked(abs.to_str().unwrap(), t, true).unwrap(), PathBuf::from("usage/u.json"));
        for (bad, why) in [
            ("../u.json", "outside the work tree"),
            ("usage/../../u.json", "outside the work tree"),
            ("/etc/u.json", "outside the work tree"),
            ("usage/dir", "is a directory"),
            ("usage", "is a directory"),
            (".", "a directory"),
            ("", "empty"),
            (".git/u.json", "inside .git"),
        ] {
            let e = checked(bad, t, true).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, Error::Usage(_)) && text.contains(why), "{bad}: {text}");
            assert!(text.starts_with("git config tally.file = ") && !text.contains('\n'), "{text}");
        }
        std::os::unix::fs::symlink(tmp.path(), top.join("out")).unwrap();
        let e = checked("out/u.json", t, true).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // Without git (local only), a file may be anywhere, but not a directory.
        assert_eq!(checked("/var/lib/u.json", t, false).unwrap(), PathBuf::from("/var/lib/u.json"));
        assert_eq!(checked("../u.json", t, false).unwrap(), PathBuf::from("../u.json"));
        assert!(checked("usage/dir", t, false).is_err());
    }
}

/// A proxy's YAML configuration in the PRD's shape (`--proxy-config`):
/// `gitstore.usage-sync.{enabled, path, sync-interval}`, and `statistics-file`, which is
/// used instead when usage sync is disabled or `gitstore` is absent.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ProxyConfig {
    #[serde(default)]
    gitstore: Option<GitStore>,
    #[serde(default, rename = "statistics-file")]
    statistics_file: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct GitStore {
    #[serde(default, rename = "usage-sync")]
    usage_sync: Option<UsageSync>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct UsageSync {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default, rename = "sync-interval")]
    sync_interval: Option<String>,
}

impl ProxyConfig {
    /// Reads the file given with `--proxy-config`; a file that cannot be read is bad
    /// configuration (exit 2), not a failure worth retrying.
    pub fn read(path: &std::path::Path) -> Result<ProxyConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("--proxy-config {}: {e}", path.display())))?;
        serde_yaml_ng::from_str(&text).map_err(|e| Error::Usage(format!("--proxy-config {}: {e}", path.display())))
    }

    fn usage_sync(&self) -> Option<&UsageSync> {
        self.gitstore.as_ref().and_then(|g| g.usage_sync.as_ref())
    }

    /// Why usage sync is off, in the proxy's own terms (`path` is the YAML file); `None`
    /// when it is on.
    pub fn sync_disabled(&self, path: &std::path::Path) -> Option<String> {
        match self.usage_sync() {
            Some(s) if s.enabled => None,
            Some(_) => {
                Some(format!("usage sync is disabled in {} (gitstore.usage-sync.enabled: false)", path.display()))
            }
            None => {
                Some(format!("usage sync is not configured in {} (no gitstore.usage-sync section)", path.display()))
            }
        }
    }

    /// Whether the YAML sets the sync interval.
    pub fn sets_sync_interval(&self) -> bool {
        self.usage_sync().is_some_and(|s| s.enabled && s.sync_interval.is_some())
    }

    /// The key the usage file comes from, for messages (`path` is the YAML file).
    pub fn file_key(&self, path: &std::path::Path) -> String {
        match self.usage_sync() {
            Some(s) if s.enabled => format!("{}: gitstore.usage-sync.path", path.display()),
            _ => format!("{}: statistics-file", path.display()),
        }
    }

    /// Applies the proxy's settings over the git configuration.
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        match self.gitstore.as_ref().and_then(|g| g.usage_sync.as_ref()) {
            Some(sync) if sync.enabled => {
                config.enabled = true;
                config.files = vec![sync.path.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_FILE))];
                if let Some(i) = &sync.sync_interval {
                    config.sync_interval = duration("gitstore.usage-sync.sync-interval", i).map_err(|_| {
                        Error::Usage(format!(
                            "gitstore.usage-sync.sync-interval = {i:?} is not a duration (examples: 30s, 15m, 1h)"
                        ))
                    })?;
                }
            }
            _ => {
                config.enabled = false;
                config.files = vec![self.statistics_file.clone().unwrap_or_else(|| PathBuf::from("usage.json"))];
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    #[test]
    fn the_prd_shape() {
        let enabled: ProxyConfig = serde_yaml_ng::from_str(
            "gitstore:\n  remote: x\n  usage-sync:\n    enabled: true\n    path: \"stats/usage.json\"\n    sync-interval: \"1h\"\nstatistics-file: ./local.json\n",
        )
        .unwrap();
        let mut c = Config::default();
        enabled.apply(&mut c).unwrap();
        assert!(c.enabled);
        assert_eq!(c.files, [PathBuf::from("stats/usage.json")]);
        assert_eq!(c.sync_interval, Duration::from_secs(3600));
        let disabled: ProxyConfig = serde_yaml_ng::from_str(
            "gitstore:\n  usage-sync:\n    enabled: false\n    sync-interval: \"0m\"\nstatistics-file: ./local.json\n",
        )
        .unwrap();
        let mut c = Config::default();
        disabled.apply(&mut c).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.files, [PathBuf::from("./local.json")]);
        let zero: ProxyConfig =
            serde_yaml_ng::from_str("gitstore:\n  usage-sync:\n    enabled: true\n    sync-interval: \"0m\"\n")
                .unwrap();
        let mut c = Config::default();
        zero.apply(&mut c).unwrap();
        assert_eq!(c.sync_interval, Duration::ZERO);
    }
}

/// The work tree and git directory around `dir`, found by looking for `.git` the way git
/// does, without starting git. `None` when unsure (GIT_DIR set, bare repositories): ask git.
pub fn discover(dir: &std::path::Path) -> Option<(PathBuf, PathBuf)> {
    if std::env::var_os("GIT_DIR").is_some() || std::env::var_os("GIT_WORK_TREE").is_some() {
        return None;
    }
    let mut d = std::fs::canonicalize(dir).ok()?;
    loop {
        let dotgit = d.join(".git");
        if dotgit.is_dir() && dotgit.join("HEAD").is_file() {
            return Some((d, dotgit));
        }
        if dotgit.is_file() {
            let text = std::fs::read_to_string(&dotgit).ok()?;
            let target = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
            let git_dir = if target.is_absolute() { target } else { d.join(target) };
            return Some((d, std::fs::canonicalize(git_dir).ok()?));
        }
        if !d.pop() {
            return None;
        }
    }
}

/// What the `tally.*` values depend on: the config files git reads and the variables that
/// choose them. The values are cached under `.git/tally/` and reused while this is equal,
/// so that `record` starts no git process.
fn fingerprint(git_dir: &std::path::Path) -> Option<String> {
    let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    if var("GIT_CONFIG_COUNT").is_some() || var("GIT_CONFIG_PARAMETERS").is_some() {
        return None;
    }
    let home = var("HOME").unwrap_or_default();
    let xdg = var("XDG_CONFIG_HOME").unwrap_or_else(|| format!("{home}/.config"));
    let mut files = vec![git_dir.join("config")];
    match var("GIT_CONFIG_GLOBAL") {
        Some(g) => files.push(PathBuf::from(g)),
        None => {
            files.push(PathBuf::from(format!("{xdg}/git/config")));
            files.push(PathBuf::from(format!("{home}/.gitconfig")));
        }
    }
    match var("GIT_CONFIG_SYSTEM") {
        Some(s) => files.push(PathBuf::from(s)),
        None => files.extend(["/etc/gitconfig", "/usr/local/etc/gitconfig"].map(PathBuf::from)),
    }
    let mut key = format!("nosystem={:?};", var("GIT_CONFIG_NOSYSTEM"));
    for f in files {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&f) {
            Ok(m) => {
                key.push_str(&format!("{}:{}:{}:{}:{};", f.display(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            }
            Err(_) => key.push_str(&format!("{}:-;", f.display())),
        }
    }
    Some(key)
}

impl Config {
    /// The configuration of a repository, read in-process with gix (no git process), unless
    /// git passes configuration in its environment (`git -c …`), which only git reads.
    pub fn from_repo(repo: &crate::git::Repo) -> Result<Config> {
        if std::env::var_os("GIT_CONFIG_PARAMETERS").is_some() || std::env::var_os("GIT_CONFIG_COUNT").is_some() {
            return Config::load(&Git::new(repo.top()));
        }
        Config::from_pairs(&repo.config_pairs())
    }

    /// The configuration for the repository around `dir` (cached where the repository
    /// is found without git; read by git otherwise), with `tally.file` checked against the
    /// work tree.
    pub fn load_at(dir: &std::path::Path) -> Result<Config> {
        let git = Git::new(dir);
        let (mut config, top, fresh) = match discover(dir) {
            Some((top, git_dir)) => {
                let (c, fresh) = Config::load_cached_fresh(&git, &git_dir)?;
                (c, Some(top), fresh)
            }
            None => (Config::load(&git)?, git.toplevel().ok(), true),
        };
        let in_git = config.enabled;
        check_files(&mut config.files, top.as_deref(), "git config tally.file", in_git)?;
        // Only a committed usage file is merged by git (a view is not committed: SPEC §4b.5).
        if fresh && in_git && config.commit_view {
            if let Some(top) = &top {
                config.warnings = unattributed_files(&Git::new(top), &config.files);
            }
        }
        if fresh && config.keep_records.is_some() {
            config.warnings.push(
                "git config tally.keepRecords is not implemented in this version: every record is kept (no count depends on it)"
                    .into(),
            );
        }
        Ok(config)
    }

    /// `load`, from the cache in `git_dir` when the config files have not changed.
    pub fn load_cached(git: &Git, git_dir: &std::path::Path) -> Result<Config> {
        Config::load_cached_fresh(git, git_dir).map(|(c, _)| c)
    }

    /// `load_cached`, and whether the values were read from git rather than the cache.
    fn load_cached_fresh(git: &Git, git_dir: &std::path::Path) -> Result<(Config, bool)> {
        let cache = git_dir.join("tally").join("config.cache");
        let key = fingerprint(git_dir);
        if let (Some(key), Ok(text)) = (&key, std::fs::read_to_string(&cache)) {
            if let Ok((k, pairs)) = serde_json::from_str::<(String, Vec<(String, String)>)>(&text) {
                if &k == key {
                    return Ok((Config::from_pairs(&pairs)?, false));
                }
            }
        }
        let pairs = Config::pairs(git)?;
        if let Some(key) = key {
            if std::fs::create_dir_all(cache.parent().expect("has a parent")).is_ok() {
                let _ = crate::fsutil::write_atomic(
                    &cache,
                    serde_json::to_string(&(key, &pairs)).expect("serialises").as_bytes(),
                );
            }
        }
        Ok((Config::from_pairs(&pairs)?, true))
    }
}

/// Checks usage-file paths where they are read, so that a bad one is refused at once
/// (exit 2, naming `key`) instead of being recorded into and failing every sync after:
/// a file git-tally commits must be inside the work tree at `top` (not `..` above it, not
/// absolute elsewhere, not under `.git`, not through a symbolic link, which git would
/// store as a link) and must not be a directory. Absolute paths inside the work tree are
/// made relative to it. Without git (`in_git` false) a file may be anywhere, but still not
/// a directory.
pub fn check_files(files: &mut [PathBuf], top: Option<&std::path::Path>, key: &str, in_git: bool) -> Result<()> {
    use std::path::Component;
    for file in files.iter_mut() {
        let shown = file.display().to_string();
        let bad = |why: String| Error::Usage(format!("{key} = {shown:?}: {why}"));
        if file.as_os_str().is_empty() {
            return Err(bad("empty; name a usage file inside the repository, e.g. usage/usage.json".into()));
        }
        if file.is_absolute() {
            let canonical_top = top.and_then(|t| std::fs::canonicalize(t).ok());
            let inside = canonical_top.as_ref().and_then(|t| {
                let canonical = canonical_ancestor(file);
                canonical.strip_prefix(t).ok().map(PathBuf::from)
            });
            match inside {
                Some(rel) => *file = rel,
                None if in_git && top.is_some() => {
                    return Err(bad(format!(
                        "outside the work tree{}; a usage file git-tally commits must be inside the repository (e.g. usage/usage.json)",
                        top.map(|t| format!(" {}", t.display())).unwrap_or_default()
                    )))
                }
                None => {}
            }
        }
        if !file.is_absolute() {
            let mut normal = PathBuf::new();
            for c in file.components() {
                match c {
                    Component::CurDir => {}
                    Component::ParentDir if !normal.pop() => {
                        if in_git {
                            return Err(bad(format!(
                                "`..` leads outside the work tree{}; a usage file git-tally commits must be inside the repository",
                                top.map(|t| format!(" {}", t.display())).unwrap_or_default()
                            )));
                        }
                        normal.push("..");
                    }
                    Component::ParentDir => {}
                    c => normal.push(c),
                }
            }
            if normal.as_os_str().is_empty() {
                return Err(bad(
                    "names the top of the work tree, a directory; name a file, e.g. usage/usage.json".into()
                ));
            }
            if in_git && normal.components().next().is_some_and(|c| c.as_os_str().eq_ignore_ascii_case(".git")) {
                return Err(bad("inside .git, where git tracks nothing; name a file in the work tree".into()));
            }
            *file = normal;
        }
        let Some(top) = top else { continue };
        let full = top.join(&*file);
        if full.is_dir() {
            return Err(bad(format!(
                "{} is a directory; name a file in it, e.g. {}",
                full.display(),
                file.join("usage.json").display()
            )));
        }
        if in_git {
            let mut at = top.to_path_buf();
            for c in file.components() {
                at.push(c);
                if at.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(bad(format!(
                        "{} is a symbolic link; git would commit the link, not the usage: name the file itself",
                        at.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `path` with its longest existing ancestor resolved (symbolic links, `..`), the rest
/// appended: where the file would be, even before it exists.
pub(crate) fn canonical_ancestor(path: &std::path::Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&at) {
            return rest.iter().rev().fold(c, |p: PathBuf, r| p.join(r));
        }
        match (at.file_name().map(|n| n.to_os_string()), at.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                at = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Warnings for usage files no `merge=tally` attribute applies to: git's own merges
/// (`git pull`, `git merge`) would merge them line by line. Often a typo in `tally.file`.
pub fn unattributed_files(git: &Git, files: &[PathBuf]) -> Vec<String> {
    let paths: Vec<String> = files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let Ok(values) = git.check_attr_all("merge", &refs) else { return Vec::new() };
    paths
        .iter()
        .zip(values)
        .filter(|(_, v)| v.as_deref() != Some("tally"))
        .map(|(p, _)| {
            format!(
                "tally.file {p}: no merge=tally attribute applies to it, so git's own merges (git pull, git merge) would not use the driver; check the name for a typo, or run `git tally install --pattern {}`",
                crate::fsutil::shell_quote(p)
            )
        })
        .collect()
}

/// The global attributes file git reads: `core.attributesFile` (`~/` expanded) when set,
/// else `$XDG_CONFIG_HOME/git/attributes`, else `~/.config/git/attributes`. `None` without
/// a HOME to put it in.
pub fn global_attributes_file(configured: Option<&str>) -> Option<PathBuf> {
    let home = || std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    if let Some(p) = configured {
        return Some(match p.strip_prefix("~/") {
            Some(rest) => home()?.join(rest),
            None => PathBuf::from(p),
        });
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => home()?.join(".config"),
    };
    Some(base.join("git").join("attributes"))
}
