//! Running unattended: the daemon in real time, systemd units, git hooks, the installer,
//! and what a first run meets (configuration, exit codes, the demo).

mod config;
mod install;
mod paths;
mod systemd;

use crate::common::{have, read_json};
use crate::sync::{cluster, event_line};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILE: &str = "usage/usage.json";

/// A running daemon, killed if the test ends without stopping it (a failed assertion must
/// not leave it running, nor turn into a wait that never ends).
struct Daemon(std::process::Child);

impl Daemon {
    fn start(mut command: Command) -> Daemon {
        let daemon = Daemon(command.arg("daemon").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
        std::thread::sleep(Duration::from_millis(300));
        daemon
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Sends `signal` and waits up to `within` for the exit; the exit code and the log.
    fn stop(mut self, signal: &str, within: Duration) -> (Option<i32>, String) {
        assert!(Command::new("kill").args([signal, &self.0.id().to_string()]).status().unwrap().success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < within, "the daemon did not exit within {within:?} of {signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        std::io::Read::read_to_string(self.0.stderr.as_mut().unwrap(), &mut log).unwrap();
        (status.code(), log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_syncs_bursts_and_flushes_on_sigterm() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.env.git(dir, &["config", "tally.debounce", "1s"]);
    c.env.git(dir, &["config", "tally.syncInterval", "0"]);
    let daemon = Daemon::start(c.tally(dir));
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
    let (code, log) = daemon.stop("-TERM", Duration::from_secs(25));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.matches("sync (").count() >= 2, "debounced syncs while running:\n{log}");
    assert!(log.contains("flush:"), "{log}");
    let remote = c.remote_view("tally");
    assert_eq!(remote["totals"]["requests"], sent as u64, "the remote holds every event:\n{log}");
    assert_eq!(read_json(&dir.join(FILE))["totals"]["requests"], sent as u64);
}

/// An upgrade replaces the binary under a running daemon: the daemon's later merges start
/// the new binary as the merge driver (Linux names the running one `<path> (deleted)`).
#[test]
fn the_daemon_keeps_merging_after_its_binary_is_replaced() {
    let c = cluster(2, "tally");
    let (dir, other) = (&c.clones[0], &c.clones[1]);
    let installed = c.env.path().join("bin/git-tally");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(crate::common::bin(), &installed).unwrap();
    for d in [dir, other] {
        c.env.git(d, &["config", "tally.debounce", "0"]);
        c.env.git(d, &["config", "tally.syncInterval", "0"]);
    }
    let daemon = Daemon::start(c.env.command_of(&installed, dir));
    // The upgrade: a new file renamed over the old one, as installers do.
    let staged = c.env.path().join("bin/git-tally.new");
    std::fs::copy(crate::common::bin(), &staged).unwrap();
    std::fs::rename(&staged, &installed).unwrap();
    // Both machines change the usage file, so the daemon's sync has to merge it.
    c.record(other, &[event_line(1, 0), event_line(1, 1)]);
    assert!(c.tally(other).arg("sync").status().unwrap().success());
    c.record(dir, &[event_line(0, 0)]);
    let start = Instant::now();
    let on_remote = || Some(c.remote_view("tally")["totals"]["requests"].clone());
    while on_remote() != Some(3.into()) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, log) = daemon.stop("-TERM", Duration::from_secs(25));
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(on_remote(), Some(3.into()), "the daemon merged both machines' events:\n{log}");
    assert!(!log.contains("conflict"), "{log}");
}

#[test]
fn the_daemon_survives_an_unreachable_remote() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.env.git(dir, &["config", "tally.debounce", "0"]);
    c.env.git(dir, &["config", "tally.syncInterval", "0"]);
    c.env.git(dir, &["config", "tally.flushTimeout", "3s"]);
    c.env.git(dir, &["remote", "set-url", "origin", "file:///nonexistent/remote.git"]);
    let mut daemon = Daemon::start(c.tally(dir));
    c.record(dir, &[event_line(0, 0)]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(daemon.is_running(), "still running after a failed sync");
    let (code, log) = daemon.stop("-INT", Duration::from_secs(25));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("failed"), "{log}");
    assert!(c.env.git(dir, &["log", "--oneline"]).lines().count() >= 1, "committed locally");
}

#[test]
fn systemd_units_verify_for_user_and_system() {
    if !have("systemd-analyze", "ops::systemd_units_verify_for_user_and_system") {
        return;
    }
    let verify = systemd::verify;
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
            && timer.contains("OnCalendar=*-*-* *:00/30:00 UTC")
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
    assert_eq!(std::fs::read_dir(&sys).unwrap().count(), 4, "no collector unit without tally.collect");
    verify(&sys, false);
    // With tally.collect, a collector unit too (its key from tally.collectKeyFile).
    c.env.git(dir, &["config", "tally.collect", "redis://127.0.0.1:8317"]);
    let out = c.tally(dir).args(["systemd", "print", "--system"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let collect = text.split("# git-tally-").find(|u| u.starts_with("collect-")).expect("a collector unit");
    let (name, body) = collect.split_once('\n').unwrap();
    assert!(body.contains(" collect cliproxyapi\n") && body.contains("Restart=always"), "{body}");
    std::fs::write(sys.join(format!("git-tally-{name}")), body.trim_end().to_string() + "\n").unwrap();
    verify(&sys, false);
    c.env.git(dir, &["config", "--unset", "tally.collect"]);

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

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn hooks_refuse_broken_usage_files_and_keep_the_users_hook() {
    let env = crate::common::Env::new();
    let repo = env.repo("repo");
    let user_hook = repo.join(".git/hooks/pre-commit");
    write(&user_hook, "#!/bin/sh\necho ran >> \"$(git rev-parse --git-dir)/user-hook-ran\"\n");
    std::fs::set_permissions(&user_hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let original = std::fs::read(&user_hook).unwrap();
    env.tally(&repo).args(["hooks", "install"]).assert().success();
    env.tally(&repo).args(["hooks", "install"]).assert().success();
    // A valid ledger commits (git-tally commits it, without a remote too), and the user's
    // hook ran first.
    env.tally(&repo).args(["record", "--event", &event_line(0, 0)]).assert().success();
    env.tally(&repo).arg("pull").assert().code(2);
    std::fs::write(repo.join("notes"), "n\n").unwrap();
    env.git(&repo, &["add", "notes"]);
    env.commit(&repo, "notes");
    assert!(repo.join(".git/user-hook-ran").exists(), "the user's pre-commit ran");
    // A broken ledger file is refused, naming the file and the JSON path.
    let shard = "usage/usage.ledger/0123456789ab/2026-11/2026-11-01.json";
    write(&repo.join(shard), "{\"format\": \"git-tally/2\", \"kind\": \"shard\", \"device\": \"0123456789ab\", \"profile\": \"tally\", \"records\": []}\n");
    env.git(&repo, &["add", shard]);
    let out = env.git_output(&repo, &["commit", "-q", "-m", "broken"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(shard) && err.contains("$.day"), "{err}");
    write(&repo.join(shard), "{\n<<<<<<< ours\n}\n");
    env.git(&repo, &["add", shard]);
    let out = env.git_output(&repo, &["commit", "-q", "-m", "markers"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("conflict markers"));
    // pre-push refuses a broken file that slipped past with --no-verify.
    env.git(&repo, &["commit", "-q", "--no-verify", "-m", "slipped"]);
    let remote = env.path().join("remote.git");
    env.git(env.path(), &["init", "-q", "--bare", remote.to_str().unwrap()]);
    let out = env.git_output(&repo, &["push", "-q", remote.to_str().unwrap(), "main"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pre-push"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Uninstall puts the user's hook back, byte for byte.
    env.tally(&repo).args(["hooks", "uninstall"]).assert().success();
    assert_eq!(std::fs::read(&user_hook).unwrap(), original);
    assert!(!repo.join(".git/hooks/pre-push").exists());
}

#[test]
fn hooks_install_into_core_hooks_path() {
    let env = crate::common::Env::new();
    let repo = env.repo("repo");
    env.git(&repo, &["config", "core.hooksPath", "my-hooks"]);
    env.tally(&repo).args(["hooks", "install"]).assert().success();
    assert!(repo.join("my-hooks/pre-commit").exists());
    assert!(!repo.join(".git/hooks/pre-commit").exists());
}

#[test]
fn post_merge_summarises_what_came_in() {
    let env = crate::common::Env::new();
    let repo = env.repo("repo");
    env.tally(&repo).arg("install").assert().success();
    env.tally(&repo).args(["hooks", "install"]).assert().success();
    env.git(&repo, &["add", ".gitattributes"]);
    env.commit(&repo, "attributes");
    env.tally(&repo).args(["record", "--event", &event_line(0, 0)]).assert().success();
    env.tally(&repo).arg("pull").assert().code(2); // committed locally: no remote
    env.git(&repo, &["checkout", "-q", "-b", "other"]);
    env.tally(&repo).args(["record", "--event", &event_line(1, 0), "--event", &event_line(1, 1)]).assert().success();
    env.tally(&repo).arg("pull").assert().code(2);
    env.git(&repo, &["checkout", "-q", "main"]);
    let out = env.git_output(&repo, &["merge", "--no-edit", "other"]);
    // Git shows a hook's output on stderr.
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("usage/usage.json: +2 requests"), "{text}");
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let env = crate::common::Env::new();
    let out = env.tally(env.path()).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("record"));
    let out = env.tally(env.path()).arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && man.contains(".TH GIT\\-TALLY") && man.contains("sync"), "{man}");
}

/// A flush timeout longer than a clock can hold is "for ever", not a crash.
#[test]
fn a_flush_timeout_beyond_any_clock_flushes() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.record(dir, &[event_line(0, 0)]);
    for args in [vec!["flush", "--timeout", "18446744073709551615s"], vec!["flush"]] {
        c.env.git(dir, &["config", "tally.flushTimeout", "18446744073709551615s"]);
        let out = c.tally(dir).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(c.remote_view("tally")["totals"]["requests"], 1);
}
