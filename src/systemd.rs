//! systemd units for running unattended (SPEC §7): a oneshot sync service and its timer
//! (`Persistent=true`, so runs missed during sleep or downtime catch up, and a randomized
//! delay), a flush unit whose `ExecStop=` runs at shutdown (bounded, and for system units
//! ordered after the network so it stops before the network does), and a daemon service.
//! Unit names carry the escaped repository path, so several repositories can be synced.

use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    User,
    System,
}

/// A repository path as systemd escapes it for unit names (`systemd-escape --path`).
pub fn escape_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    let mut prev_slash = false;
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' if prev_slash => continue,
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
        prev_slash = b == b'/';
    }
    out
}

/// `OnCalendar=` for a sync every `interval`.
pub fn calendar(interval: Duration) -> String {
    let secs = interval.as_secs().max(60);
    if secs >= 86_400 {
        "daily".into()
    } else if secs % 3600 == 0 {
        format!("*-*-* 00/{}:00:00", secs / 3600)
    } else if secs >= 3600 {
        "hourly".into()
    } else {
        format!("*:00/{}", (secs / 60).max(1))
    }
}

/// A value for an `Exec*=` line: quoted, with `%` and `\` escaped for systemd.
fn exec_arg(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%"))
}

/// (file name, contents) of every unit for `repo`.
pub fn units(
    repo: &Path,
    exe: &Path,
    mode: Mode,
    interval: Duration,
    flush_timeout: Duration,
) -> Vec<(String, String)> {
    let name = escape_path(repo);
    let (exe, dir) = (exec_arg(&exe.to_string_lossy()), exec_arg(&repo.to_string_lossy()));
    let shown = repo.display().to_string().replace('%', "%%");
    let network = match mode {
        Mode::System => "After=network-online.target\nWants=network-online.target\n",
        Mode::User => "",
    };
    let wanted_by = match mode {
        Mode::System => "multi-user.target",
        Mode::User => "default.target",
    };
    let flush = flush_timeout.as_secs().max(1);
    let delay = (interval.as_secs() / 10).clamp(1, 300);
    vec![
        (
            format!("git-tally-sync-{name}.service"),
            format!(
                "[Unit]\nDescription=git-tally: sync usage in {shown}\n{network}\n[Service]\nType=oneshot\nExecStart={exe} -C {dir} sync\n"
            ),
        ),
        (
            format!("git-tally-sync-{name}.timer"),
            format!(
                "[Unit]\nDescription=git-tally: sync usage in {shown} every {}\n\n[Timer]\nOnCalendar={}\nPersistent=true\nRandomizedDelaySec={delay}s\nUnit=git-tally-sync-{name}.service\n\n[Install]\nWantedBy=timers.target\n",
                humantime::format_duration(interval),
                calendar(interval)
            ),
        ),
        (
            format!("git-tally-flush-{name}.service"),
            format!(
                "[Unit]\nDescription=git-tally: commit and push usage in {shown} at shutdown\n{network}\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\nExecStop={exe} -C {dir} flush --timeout {flush}s\nTimeoutStopSec={}s\n\n[Install]\nWantedBy={wanted_by}\n",
                flush + 10
            ),
        ),
        (
            format!("git-tally-daemon-{name}.service"),
            format!(
                "[Unit]\nDescription=git-tally: sync usage in {shown} continuously\n{network}\n[Service]\nType=simple\nExecStart={exe} -C {dir} daemon\nTimeoutStopSec={}s\nRestart=on-failure\nRestartSec=30s\n\n[Install]\nWantedBy={wanted_by}\n",
                flush + 10
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_systemd() {
        assert_eq!(escape_path(Path::new("/home/ann/usage-repo")), "home-ann-usage\\x2drepo");
        assert_eq!(escape_path(Path::new("/srv//a b/")), "srv-a\\x20b");
        assert_eq!(escape_path(Path::new("/")), "-");
    }

    #[test]
    fn calendars() {
        assert_eq!(calendar(Duration::from_secs(900)), "*:00/15");
        assert_eq!(calendar(Duration::from_secs(7200)), "*-*-* 00/2:00:00");
        assert_eq!(calendar(Duration::from_secs(86_400)), "daily");
    }
}
