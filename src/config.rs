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
}

pub const DEFAULT_FILE: &str = "usage/usage.json";

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
    /// Reads every `tally.*` key with one git process.
    pub fn load(git: &Git) -> Result<Config> {
        let out = git.run_optional(&["config", "-z", "--get-regexp", r"^tally\."])?.unwrap_or_default();
        let mut pairs = Vec::new();
        for entry in out.split('\0').filter(|e| !e.is_empty()) {
            let (k, v) = entry.split_once('\n').unwrap_or((entry, ""));
            pairs.push((k.to_ascii_lowercase(), v.to_string()));
        }
        Config::from_pairs(&pairs)
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
                _ => {}
            }
        }
        if !files.is_empty() {
            c.files = files;
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
    pub fn read(path: &std::path::Path) -> Result<ProxyConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_yaml_ng::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
    }

    /// Applies the proxy's settings over the git configuration.
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        match self.gitstore.as_ref().and_then(|g| g.usage_sync.as_ref()) {
            Some(sync) if sync.enabled => {
                config.enabled = true;
                config.files = vec![sync.path.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_FILE))];
                if let Some(i) = &sync.sync_interval {
                    config.sync_interval = duration("gitstore.usage-sync.sync-interval", i)?;
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
