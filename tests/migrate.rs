//! Migration from git-tally 0.1 (issue 9, item 8). The repositories are written by the real
//! 0.1 binary (`scripts/make-v01-fixtures.sh` → `tests/fixtures/v01/<profile>.tar.gz`): a
//! bare remote and two clones, where `a` recorded 3 events and synced, `b` 2 and synced,
//! `a` synced again, then `a` recorded 2 more (left in 0.1's journal, not folded) and `b`
//! recorded 1 more and pulled (committed, not pushed). Every request once: 8.

use crate::common::{read_json, Env};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILE: &str = "usage/usage.json";
/// What the scenario recorded, by machine: a 3 + 2, b 2 + 1.
const BY_MACHINE: [(&str, u64); 2] = [("a", 5), ("b", 3)];

struct Old {
    env: Env,
    remote: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

fn unpack(profile: &str) -> Old {
    let env = Env::new();
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v01/{profile}.tar.gz"));
    let out =
        std::process::Command::new("tar").arg("-xzf").arg(&tar).arg("-C").arg(env.path()).output().expect("run tar");
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    let remote = env.path().join("remote.git");
    let url = format!("file://{}", remote.display());
    let (a, b) = (env.path().join("a"), env.path().join("b"));
    for dir in [&a, &b] {
        env.git(dir, &["remote", "set-url", "origin", &url]);
    }
    Old { env, remote, a, b }
}

fn stats(env: &Env, dir: &Path, by: Option<&str>) -> Value {
    let mut args = vec!["stats", "--json"];
    if let Some(by) = by {
        args.extend(["--by", by]);
    }
    let out = env.tally(dir).args(&args).output().unwrap();
    assert!(out.status.success(), "stats in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `stats --json FILE`: a file's totals, read by the same code.
fn stats_of_file(env: &Env, file: &Path) -> Value {
    let out = env.tally(env.path()).args(["stats", "--json"]).arg(file).output().unwrap();
    assert!(out.status.success(), "stats {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn requests(env: &Env, dir: &Path) -> u64 {
    stats(env, dir, None)["totals"]["requests"].as_u64().expect("totals.requests")
}

fn sync(env: &Env, dir: &Path) -> String {
    let out = env.tally(dir).arg("sync").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sync in {}: {text}", dir.display());
    text
}

/// A fresh clone of the remote with this version, its usage as `stats` shows it.
fn fresh_clone(old: &Old, profile: &str) -> PathBuf {
    let dir = old.env.path().join("fresh");
    let url = format!("file://{}", old.remote.display());
    old.env.git(old.env.path(), &["clone", "-q", &url, dir.to_str().unwrap()]);
    old.env.git(&dir, &["config", "tally.profile", profile]);
    old.env.git(&dir, &["config", "tally.device", "fresh"]);
    sync(&old.env, &dir);
    dir
}

fn migrates_with_every_count_unchanged(profile: &str) {
    let old = unpack(profile);
    let env = &old.env;
    // 0.1's own file before the upgrade: a's holds 5 (3 + b's 2; 2 more in its journal).
    let before = read_json(&old.a.join(FILE));
    assert!(env.git(&old.a, &["ls-files", FILE]).contains(FILE), "0.1 committed the usage file");

    // The first command after the upgrade migrates, and says so; a report already counts
    // everything a knows: 5 + 2 pending.
    let out = env.tally(&old.a).args(["stats", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("migrated from git-tally 0.1"), "stats says what happened: {said}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["totals"]["requests"], 7, "stats in a before its first sync");
    sync(env, &old.a);
    assert_eq!(requests(env, &old.a), 7);
    assert!(old.a.join(".git/tally/0.1").is_dir(), "0.1's files are kept aside");
    assert!(
        !old.a
            .join(".git/tally")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("journal-")),
        "0.1's journal moved aside"
    );

    // b still has its 0.1 state (one event committed, not pushed): it upgrades too.
    sync(env, &old.b);
    sync(env, &old.a);
    for dir in [&old.a, &old.b] {
        assert_eq!(requests(env, dir), 8, "every request once in {}", dir.display());
        // The usage file is a view now: written, not tracked.
        assert!(env.git(dir, &["ls-files", FILE]).is_empty(), "{FILE} is no longer committed");
        assert!(env.git(dir, &["status", "--porcelain"]).is_empty(), "a clean work tree in {}", dir.display());
        assert_eq!(read_json(&dir.join(FILE)).get("format").is_some(), before.get("format").is_some());
    }
    let fresh = fresh_clone(&old, profile);
    assert_eq!(requests(env, &fresh), 8, "a fresh clone counts every request once");

    // Syncing again changes nothing (the migration happens once).
    let head = env.git(&old.a, &["rev-parse", "HEAD"]);
    sync(env, &old.a);
    assert_eq!(env.git(&old.a, &["rev-parse", "HEAD"]), head, "nothing more to commit");
    assert_eq!(requests(env, &old.a), 8);
}

#[test]
fn a_cliproxyapi_repository_from_0_1_migrates_with_every_count_unchanged() {
    migrates_with_every_count_unchanged("cliproxyapi");
}

#[test]
fn a_native_repository_from_0_1_migrates_with_every_count_unchanged() {
    migrates_with_every_count_unchanged("tally");
}

#[test]
fn the_native_formats_devices_survive_the_migration() {
    let old = unpack("tally");
    let env = &old.env;
    sync(env, &old.a);
    sync(env, &old.b);
    sync(env, &old.a);
    let report = stats(env, &old.a, Some("device"));
    let rows: BTreeMap<String, u64> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r["requests"].as_u64().unwrap()))
        .collect();
    let want: BTreeMap<String, u64> = BY_MACHINE.iter().map(|(m, n)| (m.to_string(), *n)).collect();
    assert_eq!(rows, want, "each 0.1 machine once, with what it recorded before and after the upgrade");
}

#[test]
fn a_clone_of_a_0_1_remote_migrates_without_any_0_1_state() {
    // A machine set up after the upgrade clones the 0.1 remote: HEAD's file is all it has.
    let old = unpack("cliproxyapi");
    let fresh = fresh_clone(&old, "cliproxyapi");
    // The remote held a's 3 and b's 2 (a's 2 were never folded, b's 1 never pushed).
    assert_eq!(requests(&old.env, &fresh), 5);
    // a and b upgrade later: nothing counts twice.
    sync(&old.env, &old.a);
    sync(&old.env, &old.b);
    sync(&old.env, &old.a);
    sync(&old.env, &fresh);
    for dir in [&old.a, &old.b, &fresh] {
        assert_eq!(requests(&old.env, dir), 8, "in {}", dir.display());
    }
}

#[test]
fn a_file_mode_repository_from_0_1_migrates_and_keeps_the_applications_unsynced_write() {
    // a's application (never re-reading) wrote a1..a4 after a's last 0.1 sync; b's wrote
    // b1..b2 and synced. Every request once: 6.
    let old = unpack("cliproxyapi-filemode");
    let env = &old.env;
    sync(env, &old.a);
    sync(env, &old.b);
    sync(env, &old.a);
    for dir in [&old.a, &old.b] {
        assert_eq!(requests(env, dir), 6, "every request once in {}", dir.display());
    }
    let fresh = fresh_clone(&old, "cliproxyapi");
    assert_eq!(requests(env, &fresh), 6);
    // The application keeps writing its own requests only (a1..a5, as 0.1's fixture script
    // had it write them): one more.
    std::fs::copy(env.path().join("app-a-next.json"), old.a.join(FILE)).unwrap();
    sync(env, &old.a);
    sync(env, &old.b);
    // Every count, as one machine holding each request once has it (truth.json).
    let want = stats_of_file(env, &env.path().join("truth.json"))["totals"].clone();
    assert_eq!(want["requests"], 7);
    for dir in [&old.a, &old.b] {
        assert_eq!(stats(env, dir, None)["totals"], want, "in {}", dir.display());
    }
}

#[test]
fn a_0_1_journal_of_a_file_no_longer_configured_counts_in_the_configured_one() {
    // a's 0.1 journal holds 2 events for usage/usage.json; the user moved to another file.
    let old = unpack("cliproxyapi");
    let env = &old.env;
    env.git(&old.a, &["config", "tally.file", "usage/other.json"]);
    let said = sync(env, &old.a);
    assert!(said.contains("no longer in tally.file: 2 events of its journal recorded now"), "{said}");
    let out = env.tally(&old.a).args(["stats", "--json", "usage/other.json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["totals"]["requests"], 2, "{report}");
    assert!(old.a.join(".git/tally/0.1").read_dir().unwrap().count() >= 2, "0.1's files kept aside");
    // Nothing migrates twice.
    let said = sync(env, &old.a);
    assert!(!said.contains("0.1"), "{said}");
    let out = env.tally(&old.a).args(["stats", "--json", "usage/other.json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["totals"]["requests"], 2);
}
