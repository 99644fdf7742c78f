//! systemd units: timers that fire exactly every interval (asked of systemd itself), units
//! that `systemd-analyze verify` passes without a word, and an `install` that fails loudly
//! when nothing would run them.

use crate::common::{have, Env};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The units `systemd print` shows, as (name, text).
fn printed(env: &Env, repo: &Path, args: &[&str]) -> Vec<(String, String)> {
    let out = env.tally(repo).args(["systemd", "print"]).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "systemd print {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    stdout
        .split("# git-tally-")
        .skip(1)
        .map(|unit| {
            let (name, body) = unit.split_once('\n').unwrap();
            (format!("git-tally-{name}"), body.trim_end().to_string() + "\n")
        })
        .collect()
}

/// The value of `key=` in a unit.
fn setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// `systemd-analyze verify` prints warnings for some malformed settings and still exits 0,
/// so units pass only with no output at all.
pub(crate) fn verify(dir: &Path, user: bool) {
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    let runtime = tempfile::tempdir().unwrap();
    let mut c = Command::new("systemd-analyze");
    if user {
        c.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let out = c.arg("verify").args(&files).output().expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {}{files:?}:\n{text}",
        if user { "--user " } else { "" }
    );
}

/// The next 30 times systemd fires `expr`, in UTC, counted from just before New York
/// leaves daylight saving time: a calendar in local time would stretch an interval there.
fn firings(expr: &str) -> Vec<chrono::NaiveDateTime> {
    let out = Command::new("systemd-analyze")
        .env("TZ", "America/New_York")
        .args(["calendar", "--iterations=30", "--base-time=2026-10-31 20:00:00 UTC", expr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "systemd-analyze calendar {expr}: {}", String::from_utf8_lossy(&out.stderr));
    let normalized = text.lines().find_map(|l| l.trim().strip_prefix("Normalized form: ")).unwrap();
    assert_eq!(normalized, expr, "systemd reads the expression as written");
    text.lines()
        .filter_map(|l| l.split_once(": ").map(|(_, v)| v.trim()))
        .filter_map(|v| chrono::NaiveDateTime::parse_from_str(v, "%a %Y-%m-%d %H:%M:%S UTC").ok())
        .collect()
}

/// A systemd time span in seconds, as systemd itself parses it.
fn timespan_secs(span: &str) -> u64 {
    let out = Command::new("systemd-analyze").args(["timespan", span]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let micros: u64 = text.lines().find_map(|l| l.trim().strip_prefix("μs: ")).unwrap().trim().parse().unwrap();
    micros / 1_000_000
}

#[test]
fn timers_fire_exactly_every_interval() {
    let test = "ops::systemd::timers_fire_exactly_every_interval";
    if !have("systemd-analyze", test) {
        return;
    }
    let env = Env::new();
    // A space and a percent sign in the path: both need escaping in units.
    let repo = env.repo("usage repo 100%");
    let cases = [
        ("15m", 900),
        ("90m", 5400),
        ("2h", 7200),
        ("7m", 420),
        ("0", 0),
        ("1m", 60),
        ("45m", 2700),
        ("1h", 3600),
        ("2h 30m", 9000),
        ("5h", 18_000),
        ("1d", 86_400),
        ("2d", 172_800),
        ("1w", 604_800),
    ];
    for (interval, secs) in cases {
        for mode in ["--user", "--system"] {
            let units = printed(&env, &repo, &[mode, "--interval", interval]);
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in &units {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            verify(dir.path(), mode == "--user");
            let timer = units.iter().find(|(n, _)| n.ends_with(".timer")).map(|(_, t)| t.as_str());
            let sync = units.iter().any(|(n, _)| n.starts_with("git-tally-sync-") && n.ends_with(".service"));
            assert!(units.iter().any(|(n, _)| n.starts_with("git-tally-flush-")), "{interval}: a flush unit");
            if secs == 0 {
                assert!(timer.is_none() && !sync, "{interval}: no timer, no sync service: {units:?}");
                continue;
            }
            let timer = timer.unwrap_or_else(|| panic!("{interval}: a timer"));
            assert!(sync, "{interval}: the service the timer starts");
            match setting(timer, "OnCalendar") {
                Some(expr) => {
                    assert_eq!(setting(timer, "Persistent"), Some("true"), "{timer}");
                    // The randomized delay is fixed per machine, so it shifts every run alike.
                    assert_eq!(setting(timer, "FixedRandomDelay"), Some("true"), "{timer}");
                    let times = firings(expr);
                    assert_eq!(times.len(), 30, "{expr}");
                    for w in times.windows(2) {
                        assert_eq!((w[1] - w[0]).num_seconds(), secs as i64, "{interval}: {expr} fires at {times:?}");
                    }
                }
                None => {
                    let every = setting(timer, "OnUnitActiveSec").unwrap_or_else(|| panic!("{timer}"));
                    assert_eq!(timespan_secs(every), secs, "{interval}: {timer}");
                    assert_eq!(setting(timer, "OnBootSec"), Some(every), "{timer}");
                    // Measured from the previous run: a random delay would add to each interval.
                    assert_eq!(setting(timer, "RandomizedDelaySec"), None, "{timer}");
                }
            }
            assert_eq!(setting(timer, "AccuracySec"), Some("1s"), "{timer}");
        }
    }
}

#[test]
fn an_interval_below_a_minute_is_refused() {
    let env = Env::new();
    let repo = env.repo("repo");
    for (interval, why) in [("30s", "below the minimum of one minute"), ("90s 500ms", "not a whole number of seconds")]
    {
        let out = env.tally(&repo).args(["systemd", "print", "--interval", interval]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{interval}: {err}");
        assert!(err.contains("--interval") && err.contains(why) && out.stdout.is_empty(), "{err}");
    }
    // From git config: the message names the key.
    env.git(&repo, &["config", "tally.syncInterval", "20s"]);
    let out = env
        .tally(&repo)
        .args(["systemd", "install", "--no-start"])
        .env("XDG_CONFIG_HOME", env.path().join("xdg"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tally.syncInterval") && err.contains("20s"), "{err}");
    assert!(!env.path().join("xdg/systemd/user").exists(), "nothing written");
}

#[test]
fn install_without_a_user_manager_fails_and_says_what_to_run() {
    let env = Env::new();
    let repo = env.repo("repo");
    let xdg = env.path().join("xdg");
    let runtime = env.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    // No D-Bus and an empty runtime directory: no user service manager to reach.
    let out = env
        .tally(&repo)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["systemd", "install", "--user", "--interval", "15m"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let units = xdg.join("systemd/user");
    let names: Vec<String> =
        std::fs::read_dir(&units).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let timer = names.iter().find(|n| n.ends_with(".timer")).expect("the units were written");
    let flush = names.iter().find(|n| n.starts_with("git-tally-flush-")).unwrap();
    assert!(err.contains("systemctl --user daemon-reload"), "{err}");
    // Unit names with systemd's \x escapes are quoted for the shell.
    let q = |n: &str| if n.contains('\\') { format!("'{n}'") } else { n.to_string() };
    assert!(
        err.contains(&format!("systemctl --user enable --now {} {}", q(timer), q(flush))),
        "the exact command:\n{err}"
    );
    let user = Command::new("id").arg("-un").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let user = user.unwrap_or_default();
    if !user.is_empty() && !Path::new("/var/lib/systemd/linger").join(&user).exists() {
        assert!(err.contains("loginctl enable-linger"), "{err}");
    }
    // --no-start writes and exits 0.
    let out = env
        .tally(&repo)
        .env("XDG_CONFIG_HOME", &xdg)
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["systemd", "install", "--user", "--interval", "15m", "--no-start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_new_interval_replaces_the_units_of_the_old_one() {
    let env = Env::new();
    let repo = env.repo("repo");
    let xdg = env.path().join("xdg");
    let units = xdg.join("systemd/user");
    let install = |interval: &str| {
        let out = env
            .tally(&repo)
            .env("XDG_CONFIG_HOME", &xdg)
            .args(["systemd", "install", "--no-start", "--interval", interval])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut names: Vec<String> = std::fs::read_dir(&units)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("git-tally-"))
            .collect();
        names.sort();
        names
    };
    let first = install("15m");
    assert_eq!(first.len(), 4, "{first:?}");
    let timer = first.iter().find(|n| n.ends_with(".timer")).unwrap().clone();
    // As `systemctl enable` leaves it.
    std::fs::create_dir_all(units.join("timers.target.wants")).unwrap();
    std::os::unix::fs::symlink(units.join(&timer), units.join("timers.target.wants").join(&timer)).unwrap();
    let second = install("0");
    assert_eq!(second.len(), 2, "no timer and no sync service for 0: {second:?}");
    assert!(units.join("timers.target.wants").join(&timer).symlink_metadata().is_err(), "enable link removed");
    // Installing the same again changes nothing.
    let mtimes = |names: &[String]| -> Vec<std::time::SystemTime> {
        names.iter().map(|n| std::fs::metadata(units.join(n)).unwrap().modified().unwrap()).collect()
    };
    let before = mtimes(&second);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(install("0"), second);
    assert_eq!(mtimes(&second), before, "a second install leaves the files untouched");
}
