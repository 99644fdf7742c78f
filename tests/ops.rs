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
