//! systemd units for running unattended (SPEC §7): a oneshot sync service and a timer that
//! fires exactly every interval, a flush unit whose `ExecStop=` runs at shutdown (bounded,
//! and for system units ordered after the network so it stops before the network does),
//! and a daemon service for those who prefer one long-running process. Unit names carry
//! the escaped repository path, so several repositories can be synced.
//!
//! The timer never rounds the interval. A calendar expression (`OnCalendar=`, with
//! `Persistent=true` so a run missed while the machine was off happens at boot) is used
//! only where one fires evenly across hour and day boundaries: intervals that divide an
//! hour, whole hours that divide a day, a day, a week. Anything else (7m, 90m, 2h30m)
//! would leave a short gap at each boundary (`*:00/7` fires at :56 and again at :00), so it
//! gets a monotonic timer (`OnBootSec=` + `OnUnitActiveSec=`) instead. Calendar
//! expressions are in UTC, so daylight-saving changes do not stretch or skip a run, and
//! their randomized delay is fixed per machine (`FixedRandomDelay=`), so machines spread
//! out while each keeps its exact interval.

use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    User,
    System,
}

/// When the sync timer fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// `OnCalendar=` with this expression, which fires exactly every interval.
    Calendar(String),
    /// `OnBootSec=` and `OnUnitActiveSec=` of this length.
    Monotonic(Duration),
    /// No timer: the shutdown flush only (an interval of 0).
    ShutdownOnly,
}

/// An interval a timer cannot honour as given.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("{} is below the minimum of one minute", humantime::format_duration(*.0))]
    TooShort(Duration),
    #[error("{} is not a whole number of seconds", humantime::format_duration(*.0))]
    NotWholeSeconds(Duration),
}

/// The schedule that fires every `interval`, exactly.
pub fn schedule(interval: Duration) -> Result<Schedule, IntervalError> {
    if interval.is_zero() {
        return Ok(Schedule::ShutdownOnly);
    }
    if interval < Duration::from_secs(60) {
        return Err(IntervalError::TooShort(interval));
    }
    if interval.subsec_nanos() != 0 {
        return Err(IntervalError::NotWholeSeconds(interval));
    }
    let secs = interval.as_secs();
    let (minutes, hours) = (secs / 60, secs / 3600);
    let calendar = if secs % 60 != 0 {
        None
    } else if minutes < 60 && 60 % minutes == 0 {
        Some(format!("*-*-* *:00/{minutes}:00 UTC"))
    } else if minutes == 60 {
        Some("*-*-* *:00:00 UTC".to_string())
    } else if secs % 3600 == 0 && hours < 24 && 24 % hours == 0 {
        Some(format!("*-*-* 00/{hours}:00:00 UTC"))
    } else if secs == 86_400 {
        Some("*-*-* 00:00:00 UTC".to_string())
    } else if secs == 7 * 86_400 {
        Some("Mon *-*-* 00:00:00 UTC".to_string())
    } else {
        None
    };
    Ok(calendar.map_or(Schedule::Monotonic(interval), Schedule::Calendar))
}

/// A whole number of seconds as a systemd time span (`1h 30min`).
pub fn timespan(secs: u64) -> String {
    let mut parts = Vec::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(" ")
    }
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

/// A value for an `Exec*=` line: quoted, with `%` (specifiers), `$` (variables) and `\`
/// escaped for systemd.
fn exec_arg(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$"))
}

/// One unit file.
#[derive(Clone, Debug)]
pub struct Unit {
    pub name: String,
    pub text: String,
}

/// Every unit for one repository.
#[derive(Clone, Debug)]
pub struct Units {
    /// The sync service and its timer; `None` for a shutdown-only schedule.
    pub sync: Option<(Unit, Unit)>,
    pub flush: Unit,
    /// The alternative to the timer: `git tally daemon`, not enabled by `install`.
    pub daemon: Unit,
    /// The collector (`git tally collect cliproxyapi`), when `tally.collect` is set.
    pub collect: Option<Unit>,
}

impl Units {
    /// Every unit, in the order they are printed.
    pub fn all(&self) -> Vec<&Unit> {
        let mut v: Vec<&Unit> = self.sync.iter().flat_map(|(s, t)| [s, t]).collect();
        v.push(&self.flush);
        v.push(&self.daemon);
        v.extend(&self.collect);
        v
    }

    /// What `install` enables and starts: the timer (if any), the flush unit and the
    /// collector (if any).
    pub fn to_start(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.sync.iter().map(|(_, t)| t.name.as_str()).collect();
        v.push(&self.flush.name);
        v.extend(self.collect.iter().map(|c| c.name.as_str()));
        v
    }
}

/// The names every unit of `repo` may have, whatever the schedule: what `uninstall`
/// removes, and what an `install` with another schedule replaces.
pub fn unit_names(repo: &Path) -> [String; 5] {
    let name = escape_path(repo);
    [
        format!("git-tally-sync-{name}.service"),
        format!("git-tally-sync-{name}.timer"),
        format!("git-tally-flush-{name}.service"),
        format!("git-tally-daemon-{name}.service"),
        format!("git-tally-collect-{name}.service"),
    ]
}

/// What the units are made of.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    pub repo: &'a Path,
    /// The git-tally the units run, by absolute path (units have a minimal PATH).
    pub exe: &'a Path,
    pub mode: Mode,
    pub schedule: Schedule,
    /// The interval, for the description.
    pub interval: Duration,
    pub flush_timeout: Duration,
    /// `User=` of system units: the owner of the repository, so git runs as the user whose
    /// credentials and safe.directory apply, not as root.
    pub run_as: Option<String>,
    /// Whether a collector runs (`tally.collect` is set).
    pub collect: bool,
}

/// The units for `o.repo`.
pub fn units(o: &Options<'_>) -> Units {
    let [sync_name, timer_name, flush_name, daemon_name, collect_name] = unit_names(o.repo);
    let (exe, dir) = (exec_arg(&o.exe.to_string_lossy()), exec_arg(&o.repo.to_string_lossy()));
    let shown = o.repo.display().to_string().replace('%', "%%");
    let network = match o.mode {
        Mode::System => "After=network-online.target\nWants=network-online.target\n",
        Mode::User => "",
    };
    let user = match (o.mode, &o.run_as) {
        (Mode::System, Some(u)) => format!("User={u}\n"),
        _ => String::new(),
    };
    let wanted_by = match o.mode {
        Mode::System => "multi-user.target",
        Mode::User => "default.target",
    };
    let flush = o.flush_timeout.as_secs().max(1);
    let every = humantime::format_duration(o.interval).to_string();
    let timer = |settings: String| {
        Unit {
        name: timer_name.clone(),
        text: format!(
            "[Unit]\nDescription=git-tally: sync usage in {shown} every {every}\n\n[Timer]\n{settings}Unit={sync_name}\n\n[Install]\nWantedBy=timers.target\n"
        ),
    }
    };
    let sync = match &o.schedule {
        Schedule::ShutdownOnly => None,
        Schedule::Calendar(expr) => {
            let delay = (o.interval.as_secs() / 10).clamp(1, 300);
            Some(timer(format!(
                "OnCalendar={expr}\nPersistent=true\nAccuracySec=1s\nRandomizedDelaySec={delay}s\nFixedRandomDelay=true\n"
            )))
        }
        Schedule::Monotonic(d) => {
            let span = timespan(d.as_secs());
            // No randomized delay: each run is measured from the start of the previous
            // one, so a delay would add to every interval.
            Some(timer(format!("OnBootSec={span}\nOnUnitActiveSec={span}\nAccuracySec=1s\n")))
        }
    };
    let sync = sync.map(|timer| {
        let service = Unit {
            name: sync_name.clone(),
            text: format!(
                "[Unit]\nDescription=git-tally: sync usage in {shown}\n{network}\n[Service]\nType=oneshot\n{user}ExecStart={exe} -C {dir} sync\n"
            ),
        };
        (service, timer)
    });
    Units {
        sync,
        flush: Unit {
            name: flush_name,
            text: format!(
                "[Unit]\nDescription=git-tally: commit and push usage in {shown} at shutdown\n{network}\n[Service]\nType=oneshot\nRemainAfterExit=yes\n{user}ExecStart=/bin/true\nExecStop={exe} -C {dir} flush --timeout {flush}s\nTimeoutStopSec={}s\n\n[Install]\nWantedBy={wanted_by}\n",
                flush + 10
            ),
        },
        daemon: Unit {
            name: daemon_name,
            text: format!(
                "[Unit]\nDescription=git-tally: sync usage in {shown} continuously\n{network}\n[Service]\nType=simple\n{user}ExecStart={exe} -C {dir} daemon\nTimeoutStopSec={}s\nRestart=on-failure\nRestartSec=30s\n\n[Install]\nWantedBy={wanted_by}\n",
                flush + 10
            ),
        },
        // The key comes from tally.collectKeyFile (a unit has no CLIPROXYAPI_MANAGEMENT_KEY).
        // It stops on SIGTERM after writing what it holds; the timer and flush push it.
        collect: o.collect.then(|| Unit {
            name: collect_name,
            text: format!(
                "[Unit]\nDescription=git-tally: collect CLIProxyAPI usage into {shown}\n{network}\n[Service]\nType=simple\n{user}ExecStart={exe} -C {dir} collect cliproxyapi\nTimeoutStopSec=30s\nRestart=always\nRestartSec=5s\n\n[Install]\nWantedBy={wanted_by}\n"
            ),
        }),
    }
}

/// The program a unit's `ExecStart=` or `ExecStop=` runs (`/bin/true` aside), unquoted:
/// what `doctor` checks still exists.
pub fn exec_program(unit_text: &str) -> Option<String> {
    unit_text
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart=").or_else(|| l.strip_prefix("ExecStop=")))
        .filter(|cmd| !cmd.starts_with("/bin/true"))
        .find_map(|cmd| {
            let rest = cmd.strip_prefix('"')?;
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(out.replace("%%", "%").replace("$$", "$")),
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            None
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;
    const HOUR: u64 = 3600;

    fn of(secs: u64) -> Schedule {
        schedule(Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn escaping_matches_systemd() {
        assert_eq!(escape_path(Path::new("/home/ann/usage-repo")), "home-ann-usage\\x2drepo");
        assert_eq!(escape_path(Path::new("/srv//a b/")), "srv-a\\x20b");
        assert_eq!(escape_path(Path::new("/")), "-");
    }

    #[test]
    fn calendars_only_where_they_fire_evenly() {
        assert_eq!(of(15 * MIN), Schedule::Calendar("*-*-* *:00/15:00 UTC".into()));
        assert_eq!(of(MIN), Schedule::Calendar("*-*-* *:00/1:00 UTC".into()));
        assert_eq!(of(HOUR), Schedule::Calendar("*-*-* *:00:00 UTC".into()));
        assert_eq!(of(2 * HOUR), Schedule::Calendar("*-*-* 00/2:00:00 UTC".into()));
        assert_eq!(of(24 * HOUR), Schedule::Calendar("*-*-* 00:00:00 UTC".into()));
        assert_eq!(of(7 * 24 * HOUR), Schedule::Calendar("Mon *-*-* 00:00:00 UTC".into()));
        // A calendar would leave a short gap at the hour or day boundary.
        for secs in [7 * MIN, 45 * MIN, 90 * MIN, 150 * MIN, 5 * HOUR, 48 * HOUR, 90] {
            assert_eq!(of(secs), Schedule::Monotonic(Duration::from_secs(secs)), "{secs}s");
        }
        assert_eq!(of(0), Schedule::ShutdownOnly);
    }

    #[test]
    fn intervals_a_timer_cannot_honour_are_refused() {
        assert!(matches!(schedule(Duration::from_secs(30)), Err(IntervalError::TooShort(_))));
        assert!(matches!(schedule(Duration::from_millis(59_999)), Err(IntervalError::TooShort(_))));
        assert!(matches!(schedule(Duration::from_millis(90_500)), Err(IntervalError::NotWholeSeconds(_))));
    }

    #[test]
    fn timespans() {
        assert_eq!(timespan(7 * MIN), "7min");
        assert_eq!(timespan(90 * MIN), "1h 30min");
        assert_eq!(timespan(2 * 86_400 + 61), "2d 1min 1s");
    }

    #[test]
    fn the_program_of_a_unit_reads_back() {
        let repo = Path::new("/srv/a b");
        for exe in ["/opt/git tally/bin/git-tally", "/x/100%/$HOME/\"q\"\\"] {
            let o = Options {
                repo,
                exe: Path::new(exe),
                mode: Mode::User,
                schedule: of(15 * MIN),
                interval: Duration::from_secs(15 * MIN),
                flush_timeout: Duration::from_secs(20),
                run_as: None,
                collect: true,
            };

            let u = units(&o);
            for unit in u.all().into_iter().filter(|u| !u.name.ends_with(".timer")) {
                assert_eq!(exec_program(&unit.text).as_deref(), Some(exe), "{}", unit.text);
            }
        }
    }
}
