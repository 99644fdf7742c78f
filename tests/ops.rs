//! Running unattended: the daemon in real time, systemd units, git hooks, the installer.

use crate::common::{read_json, Env};
use crate::sync::{cluster, event_line};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILE: &str = "usage/usage.json";

#[test]
fn the_daemon_syncs_bursts_and_flushes_on_sigterm() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.env.git(dir, &["config", "tally.debounce", "1s"]);
    c.env.git(dir, &["config", "tally.syncInterval", "0"]);
    let mut daemon = c.tally(dir).arg("daemon").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut sent = 0;
    for burst in 0..4 {
        for _ in 0..3 {
            let lines: Vec<String> = (0..5).map(|k| event_line(0, sent + k)).collect();
            c.record(dir, &lines);
            sent += 5;
            std::thread::sleep(Duration::from_millis(150));
        }
        std::thread::sleep(Duration::from_millis(if burst == 1 { 1600 } else { 300 }));
    }
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(25), "the daemon did not exit within the flush timeout");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.matches("sync (").count() >= 2, "debounced syncs while running:\n{log}");
    assert!(log.contains("flush:"), "{log}");
    let remote: serde_json::Value =
        serde_json::from_str(&c.env.git(&c.remote, &["show", &format!("main:{FILE}")])).unwrap();
    assert_eq!(remote["totals"]["requests"], sent as u64, "the remote holds every event:\n{log}");
    assert_eq!(read_json(&dir.join(FILE))["totals"]["requests"], sent as u64);
}

#[test]
fn the_daemon_survives_an_unreachable_remote() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.env.git(dir, &["config", "tally.debounce", "0"]);
    c.env.git(dir, &["config", "tally.syncInterval", "0"]);
    c.env.git(dir, &["config", "tally.flushTimeout", "3s"]);
    c.env.git(dir, &["remote", "set-url", "origin", "file:///nonexistent/remote.git"]);
    let mut daemon = c.tally(dir).arg("daemon").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.record(dir, &[event_line(0, 0)]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(daemon.try_wait().unwrap().is_none(), "still running after a failed sync");
    assert!(Command::new("kill").args(["-INT", &daemon.id().to_string()]).status().unwrap().success());
    let status = daemon.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("failed"), "{log}");
    assert!(c.env.git(dir, &["log", "--oneline"]).lines().count() >= 1, "committed locally");
}

/// `systemd-analyze verify` prints warnings for some malformed settings and still exits 0,
/// so a unit passes only with no output at all.
fn verify(dir: &std::path::Path, user: bool) {
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    let runtime = tempfile::tempdir().unwrap();
    let mut c = Command::new("systemd-analyze");
    if user {
        c.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let out =
        c.arg("verify").args(&files).output().expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {}:\n{text}",
        if user { "--user" } else { "" }
    );
}

#[test]
fn systemd_units_verify_for_user_and_system() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    // User units, installed into a temporary XDG_CONFIG_HOME.
    let config = c.env.path().join("xdg");
    let out = c
        .tally(dir)
        .env("XDG_CONFIG_HOME", &config)
        .args(["systemd", "install", "--user", "--no-start", "--interval", "30m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let user_dir = config.join("systemd/user");
    verify(&user_dir, true);
    let read = |suffix: &str| {
        let f = std::fs::read_dir(&user_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap();
        std::fs::read_to_string(f).unwrap()
    };
    let timer = read(".timer");
    assert!(
        timer.contains("Persistent=true")
            && timer.contains("OnCalendar=*:00/30")
            && timer.contains("RandomizedDelaySec="),
        "{timer}"
    );
    let flush =
        read(&format!("flush-{}.service", git_tally::systemd::escape_path(&std::fs::canonicalize(dir).unwrap())));
    assert!(flush.contains("RemainAfterExit=yes") && flush.contains("ExecStart=/bin/true"), "{flush}");
    assert!(flush.contains("flush --timeout 20s") && flush.contains("TimeoutStopSec=30s"), "{flush}");
    assert!(!flush.contains("network-online.target"), "user units have no network targets:\n{flush}");
    // System units: printed, then verified.
    let out = c.tally(dir).args(["systemd", "print", "--system"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let sys = c.env.path().join("system");
    std::fs::create_dir_all(&sys).unwrap();
    for unit in text.split("# git-tally-").skip(1) {
        let (name, body) = unit.split_once('\n').unwrap();
        std::fs::write(sys.join(format!("git-tally-{name}")), body.trim_end().to_string() + "\n").unwrap();
    }
    assert_eq!(std::fs::read_dir(&sys).unwrap().count(), 4);
    verify(&sys, false);
    let flush = std::fs::read_dir(&sys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("flush"))
        .unwrap();
    let flush = std::fs::read_to_string(flush).unwrap();
    assert!(flush.contains("After=network-online.target") && flush.contains("Wants=network-online.target"), "{flush}");
    // Uninstall removes them.
    assert!(c
        .tally(dir)
        .env("XDG_CONFIG_HOME", &config)
        .args(["systemd", "uninstall", "--no-start"])
        .output()
        .unwrap()
        .status
        .success());
    assert_eq!(std::fs::read_dir(&user_dir).unwrap().count(), 0);
}
