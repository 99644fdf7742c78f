//! The driver under real git: merge, rebase, cherry-pick and a criss-cross history all
//! give exactly the single-machine result; broken input stops the merge with everything
//! kept; a killed driver aborts the merge; install is idempotent; doctor explains.

use crate::common::{read_json, Env};
use chrono::{DateTime, Duration, FixedOffset};
use git_tally::event::Event;
use git_tally::profile::{self, Profile};
use serde_json::Value;
use std::path::Path;

const FILE: &str = "usage/usage.json";

/// Event `i` of machine `device`; timestamps grow with `i` and never collide.
fn event(i: u32, device: &str) -> Event {
    let t0: DateTime<FixedOffset> = DateTime::parse_from_rfc3339("2026-10-01T08:00:00Z").unwrap();
    let ts = t0 + Duration::minutes(i64::from(i) * 37) + Duration::seconds(i64::from(device.len() as u32));
    let models = ["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"];
    let line = serde_json::json!({
        "id": format!("{device}-{i}"), "timestamp": ts.to_rfc3339(), "provider": (["openai", "anthropic"][i as usize % 2]),
        "model": models[i as usize % 3], "input_tokens": 100 + i, "output_tokens": 10 + i % 17,
        "status": if i % 11 == 0 { 500 } else { 200 }, "cost_usd": f64::from(i % 8) * 0.125,
        "source": format!("{device}@example.com"), "auth_index": (i % 3).to_string(),
    });
    Event::parse(&line.to_string(), ts, device).unwrap()
}

fn events(range: std::ops::Range<u32>, device: &str) -> Vec<Event> {
    range.map(|i| event(i, device)).collect()
}

/// One machine applying `events` once, in time order: the ground truth.
pub fn single_machine(p: &Profile, events: &[&Event]) -> Value {
    let mut sorted: Vec<&Event> = events.to_vec();
    sorted.sort_by_key(|e| e.timestamp);
    let mut doc = (p.empty)();
    for e in sorted {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    doc
}

fn apply_to_file(p: &Profile, path: &Path, events: &[Event]) {
    let mut doc = if path.exists() { read_json(path) } else { (p.empty)() };
    for e in events {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}

fn setup(env: &Env, p: &Profile, base: &[Event]) -> std::path::PathBuf {
    let repo = env.repo("repo");
    env.tally(&repo).args(["install"]).assert().success();
    apply_to_file(p, &repo.join(FILE), base);
    env.git(&repo, &["add", "-A"]);
    env.commit(&repo, "base");
    repo
}

fn commit_events(env: &Env, repo: &Path, p: &Profile, evs: &[Event], msg: &str) {
    apply_to_file(p, &repo.join(FILE), evs);
    env.git(repo, &["add", FILE]);
    env.commit(repo, msg);
}

fn assert_ledger(env: &Env, repo: &Path, p: &Profile, all: &[&Event]) {
    let got = read_json(&repo.join(FILE));
    let want = single_machine(p, all);
    assert!(
        got == want,
        "ledger differs from the single-machine result:\n{}",
        crate::common::diff(&crate::common::pretty(&want), &crate::common::pretty(&got))
    );
    env.tally(repo).args(["check", FILE]).assert().success();
}

fn two_branches(env: &Env, p: &Profile) -> (std::path::PathBuf, Vec<Event>) {
    let (e0, a, b) = (events(0..5, "base"), events(5..12, "laptop"), events(12..20, "server"));
    let repo = setup(env, p, &e0);
    env.git(&repo, &["checkout", "-q", "-b", "laptop"]);
    commit_events(env, &repo, p, &a, "laptop traffic");
    env.git(&repo, &["checkout", "-q", "main"]);
    commit_events(env, &repo, p, &b, "server traffic");
    let all = [e0, a, b].concat();
    (repo, all)
}

fn profiles() -> [&'static Profile; 2] {
    [profile::by_name("cliproxyapi").unwrap(), profile::by_name("tally").unwrap()]
}

#[test]
fn git_merge_gives_the_single_machine_result() {
    for p in profiles() {
        let env = Env::new();
        let (repo, all) = two_branches(&env, p);
        env.git(&repo, &["merge", "-q", "--no-edit", "laptop"]);
        assert_ledger(&env, &repo, p, &all.iter().collect::<Vec<_>>());
    }
}

#[test]
fn git_rebase_gives_the_single_machine_result() {
    for p in profiles() {
        let env = Env::new();
        let (repo, all) = two_branches(&env, p);
        env.git(&repo, &["checkout", "-q", "laptop"]);
        env.git(&repo, &["rebase", "-q", "main"]);
        assert_ledger(&env, &repo, p, &all.iter().collect::<Vec<_>>());
    }
}

#[test]
fn git_cherry_pick_gives_the_single_machine_result() {
    for p in profiles() {
        let env = Env::new();
        let (repo, all) = two_branches(&env, p);
        env.git(&repo, &["cherry-pick", "laptop"]);
        assert_ledger(&env, &repo, p, &all.iter().collect::<Vec<_>>());
    }
}

#[test]
fn criss_cross_history_gives_the_single_machine_result() {
    for p in profiles() {
        let env = Env::new();
        let e0 = events(0..3, "base");
        let repo = setup(&env, p, &e0);
        let (a1, b1, a2, b2) = (events(3..6, "a"), events(6..9, "b"), events(9..13, "a"), events(13..16, "b"));
        env.git(&repo, &["checkout", "-q", "-b", "a"]);
        commit_events(&env, &repo, p, &a1, "a1");
        env.git(&repo, &["checkout", "-q", "-b", "b", "main"]);
        commit_events(&env, &repo, p, &b1, "b1");
        // Each branch merges the other's first commit: two merge bases from here on.
        env.git(&repo, &["checkout", "-q", "a"]);
        env.git(&repo, &["merge", "-q", "--no-edit", "b~0"]);
        env.git(&repo, &["checkout", "-q", "b"]);
        env.git(&repo, &["merge", "-q", "--no-edit", "a~1"]);
        commit_events(&env, &repo, p, &b2, "b2");
        env.git(&repo, &["checkout", "-q", "a"]);
        commit_events(&env, &repo, p, &a2, "a2");
        let bases = env.git(&repo, &["merge-base", "--all", "a", "b"]);
        assert_eq!(bases.lines().count(), 2, "the history must be criss-cross");
        env.git(&repo, &["merge", "-q", "--no-edit", "b"]);
        let all: Vec<&Event> = [&e0, &a1, &b1, &a2, &b2].into_iter().flatten().collect();
        assert_ledger(&env, &repo, p, &all);
    }
}

#[test]
fn invalid_json_on_one_side_stops_the_merge_and_keeps_both_sides() {
    let env = Env::new();
    let p = profile::by_name("tally").unwrap();
    let repo = setup(&env, p, &events(0..3, "base"));
    env.git(&repo, &["checkout", "-q", "-b", "broken"]);
    let good = std::fs::read_to_string(repo.join(FILE)).unwrap();
    let truncated = &good[..good.len() / 2];
    env.commit_file(&repo, FILE, truncated.as_bytes(), "truncated write");
    env.git(&repo, &["checkout", "-q", "main"]);
    commit_events(&env, &repo, p, &events(3..5, "server"), "server traffic");
    let ours = std::fs::read(repo.join(FILE)).unwrap();
    let out = env.git_output(&repo, &["merge", "--no-edit", "broken"]);
    assert_eq!(out.status.code(), Some(1), "merge must stop with a conflict");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(FILE) && stderr.contains("theirs"), "message names the file and side: {stderr}");
    let merged = std::fs::read_to_string(repo.join(FILE)).unwrap();
    assert!(merged.contains("<<<<<<<") && merged.contains(">>>>>>>"), "markers expected:\n{merged}");
    assert_eq!(env.git(&repo, &["show", &format!(":2:{FILE}")]).as_bytes(), &ours[..]);
    assert_eq!(env.git(&repo, &["show", &format!(":3:{FILE}")]), truncated);
    env.tally(&repo).args(["check", FILE]).assert().code(1);
}

#[test]
fn a_driver_killed_by_a_signal_aborts_the_merge_cleanly() {
    let env = Env::new();
    let p = profile::by_name("cliproxyapi").unwrap();
    let (repo, _) = two_branches(&env, p);
    env.git(&repo, &["config", "merge.tally.driver", r#"sh -c 'git-tally merge "$0" "$1" "$2"; kill -9 $$' %O %A %B"#]);
    let before = std::fs::read(repo.join(FILE)).unwrap();
    let head = env.git(&repo, &["rev-parse", "HEAD"]);
    let out = env.git_output(&repo, &["merge", "--no-edit", "laptop"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to execute internal merge"));
    assert_eq!(env.git(&repo, &["rev-parse", "HEAD"]), head);
    assert!(!repo.join(".git/MERGE_HEAD").exists(), "no merge left in progress");
    assert_eq!(std::fs::read(repo.join(FILE)).unwrap(), before, "work tree untouched");
    assert_eq!(env.git(&repo, &["status", "--porcelain"]), "");
}

#[test]
fn kill_switch_falls_back_to_the_text_merge() {
    let env = Env::new();
    let p = profile::by_name("cliproxyapi").unwrap();
    let (repo, _) = two_branches(&env, p);
    let out = env.git_output_with(&repo, &["merge", "--no-edit", "laptop"], &[("GIT_TALLY_MERGE", "0")]);
    assert_eq!(out.status.code(), Some(1), "the text merge conflicts on counters");
    assert!(std::fs::read_to_string(repo.join(FILE)).unwrap().contains("<<<<<<<"));
}

#[test]
fn install_is_idempotent_and_uninstall_undoes_it() {
    let env = Env::new();
    let repo = env.repo("repo");
    std::fs::write(repo.join(".gitattributes"), "*.png binary\n").unwrap();
    env.tally(&repo).arg("install").assert().success();
    let config = std::fs::read_to_string(repo.join(".git/config")).unwrap();
    let attrs = std::fs::read_to_string(repo.join(".gitattributes")).unwrap();
    env.tally(&repo).arg("install").assert().success();
    assert_eq!(std::fs::read_to_string(repo.join(".git/config")).unwrap(), config);
    assert_eq!(std::fs::read_to_string(repo.join(".gitattributes")).unwrap(), attrs);
    assert!(attrs.starts_with("*.png binary\n") && attrs.contains("usage/*.json merge=tally"));
    assert_eq!(env.git(&repo, &["check-attr", "merge", "--", FILE]).trim(), format!("{FILE}: merge: tally"));
    assert!(env.git_output(&repo, &["config", "merge.tally.recursive"]).status.code() == Some(1));
    env.tally(&repo).arg("doctor").assert().success();
    env.tally(&repo).arg("uninstall").assert().success();
    assert_eq!(std::fs::read_to_string(repo.join(".gitattributes")).unwrap(), "*.png binary\n");
    assert!(!std::fs::read_to_string(repo.join(".git/config")).unwrap().contains("tally"));
}

#[test]
fn install_with_local_attributes_and_profile() {
    let env = Env::new();
    let repo = env.repo("repo");
    env.tally(&repo)
        .args(["install", "--local-attributes", "--pattern", "stats/*.json", "--profile", "proxypal-aggregate"])
        .assert()
        .success();
    assert!(!repo.join(".gitattributes").exists());
    assert_eq!(
        env.git(&repo, &["check-attr", "tally-profile", "--", "stats/aggregate.json"]).trim(),
        "stats/aggregate.json: tally-profile: proxypal-aggregate"
    );
    env.tally(&repo).args(["install", "--profile", "nonsense"]).assert().code(2);
}

#[test]
fn doctor_reports_an_unregistered_driver() {
    let env = Env::new();
    let repo = env.repo("repo");
    let out = env.tally(&repo).arg("doctor").assert().code(1);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("not registered") && stdout.contains("git tally install"), "{stdout}");
    assert!(stdout.contains("usage/usage.json: the merge attribute is unspecified"), "{stdout}");
}

/// An add/add of a manifest: `backup_retention_days` is a setting for `ccu-manifest` (30)
/// but a counter for `generic` (30 + 30), so the result shows which profile merged.
fn add_add_manifest(env: &Env, repo: &Path, config: &[&str]) -> i64 {
    let doc = |day: u8| {
        format!("{{\"version\": \"1.0\", \"last_updated\": \"2026-10-{day:02}T00:00:00Z\", \"backup_retention_days\": 30, \"machines\": []}}\n")
    };
    env.git(repo, &["checkout", "-q", "-b", "other"]);
    env.commit_file(repo, "usage/manifest.json", doc(2).as_bytes(), "b");
    env.git(repo, &["checkout", "-q", "main"]);
    env.commit_file(repo, "usage/manifest.json", doc(1).as_bytes(), "a");
    let config: Vec<&str> = config.iter().flat_map(|c| ["-c", c]).collect();
    env.git(repo, &[&config[..], &["merge", "-q", "--no-edit", "other"]].concat());
    read_json(&repo.join("usage/manifest.json"))["backup_retention_days"].as_i64().unwrap()
}

#[test]
fn detection_attribute_and_config_pick_the_profile() {
    let env = Env::new();
    // A repository with the driver installed (and `install` arguments), a profile in git
    // config, `-c` settings for the merge: the manifest's merged retention tells the
    // profile (ccu-manifest keeps the setting, 30; generic adds both sides' numbers, 60).
    type Case =
        (&'static str, &'static [&'static str], Option<&'static str>, &'static [&'static str], i64, &'static str);
    let cases: [Case; 4] = [
        ("detected", &[], None, &[], 30, "detected as ccu-manifest"),
        ("attribute", &["--profile", "generic"], None, &[], 60, "tally-profile=generic from the attribute"),
        ("config", &[], Some("generic"), &[], 60, "tally.profile=generic from git config"),
        (
            "command-line",
            &[],
            Some("ccu-manifest"),
            &["tally.profile=generic"],
            60,
            "`git -c tally.profile=generic merge` overrides the configured profile",
        ),
    ];
    for (name, install, configured, merge_config, want, why) in cases {
        let repo = env.repo(name);
        env.tally(&repo).arg("install").args(install).assert().success();
        env.git(&repo, &["add", ".gitattributes"]);
        env.commit(&repo, "attributes");
        if let Some(p) = configured {
            env.git(&repo, &["config", "tally.profile", p]);
        }
        assert_eq!(add_add_manifest(&env, &repo, merge_config), want, "{why}");
    }
}

/// The driver reads the profile setting in-process with gix; git itself is the reference.
/// Each setup: files written (and committed, then some removed from the work tree), local
/// config, and the path asked from a directory. Both readers run in this process's
/// environment, so a global configuration affects both alike.
#[test]
fn the_in_process_profile_lookup_agrees_with_git() {
    type Setup =
        (&'static [(&'static str, &'static str)], &'static [(&'static str, &'static str)], &'static str, &'static str);
    let setups: &[Setup] = &[
        (&[], &[], "", "usage/usage.json"),
        (&[], &[("tally.profile", "ccu-usage")], "", "usage/usage.json"),
        (
            &[(".gitattributes", "*.json tally-profile=cliproxyapi\n")],
            &[("tally.profile", "tally")],
            "",
            "usage/usage.json",
        ),
        (&[(".gitattributes", "*.json tally-profile=cliproxyapi\n")], &[], "", "notes.txt"),
        (
            &[
                (".gitattributes", "*.json tally-profile=cliproxyapi\n"),
                ("usage/.gitattributes", "usage.json tally-profile=proxypal-history\n"),
            ],
            &[],
            "",
            "usage/usage.json",
        ),
        (
            &[
                (".gitattributes", "*.json tally-profile=cliproxyapi\n"),
                ("usage/.gitattributes", "*.json -tally-profile\n"),
            ],
            &[("tally.profile", "generic")],
            "",
            "usage/usage.json",
        ),
        (
            &[
                (".gitattributes", "*.json tally-profile=cliproxyapi\n"),
                ("usage/.gitattributes", "*.json !tally-profile\n"),
            ],
            &[],
            "",
            "usage/usage.json",
        ),
        (
            &[(".gitattributes", "[attr]usage tally-profile=ccu-manifest merge=tally\n**/stats/*.json usage\n")],
            &[],
            "",
            "a/b/stats/x.json",
        ),
        (&[(".gitattributes", "usage/usage.json tally-profile\n")], &[], "", "usage/usage.json"),
        (
            &[
                (".git/info/attributes", "*.json tally-profile=proxypal-aggregate\n"),
                (".gitattributes", "*.json tally-profile=cliproxyapi\n"),
            ],
            &[],
            "",
            "usage.json",
        ),
        (
            &[("attrs", "*.json tally-profile=ccu-usage\n")],
            &[("core.attributesFile", "{repo}/attrs")],
            "",
            "usage.json",
        ),
        (&[("attrs", "*.json tally-profile=ccu-usage\n")], &[("core.attributesFile", "attrs")], "", "usage.json"),
        (&[(".gitattributes", "/usage/*.json tally-profile=cliproxyapi\n")], &[], "usage", "usage.json"),
        (&[("usage/.gitattributes", "#deleted\n* tally-profile=ccu-usage\n")], &[], "", "usage/usage.json"),
    ];
    let env = Env::new();
    for (k, (files, config, from, path)) in setups.iter().enumerate() {
        let repo = env.repo(&format!("r{k}"));
        for (k, v) in *config {
            env.git(&repo, &["config", k, &v.replace("{repo}", repo.to_str().unwrap())]);
        }
        for (file, text) in *files {
            let p = repo.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        env.git(&repo, &["add", "-A"]);
        env.git(&repo, &["commit", "-q", "--allow-empty", "-m", "attributes"]);
        for (file, text) in *files {
            // Attributes only in the index: git falls back to it, and so must the driver.
            if text.starts_with("#deleted") {
                std::fs::remove_file(repo.join(file)).unwrap();
            }
        }
        let dir = repo.join(from);
        std::fs::create_dir_all(&dir).unwrap();
        let git = git_tally::git::Git::new(&dir);
        let by_git =
            git.check_attr("tally-profile", path).unwrap().or_else(|| git.config_get("tally.profile").unwrap());
        // Where gix cannot stand in for git it says so (None), and the driver asks git.
        let in_process = git_tally::git::profile_setting(&dir, Some(path));
        let relative_attributes = config.iter().any(|(k, v)| *k == "core.attributesFile" && !v.starts_with('{'));
        let want = if relative_attributes { None } else { Some(by_git.clone()) };
        assert_eq!(in_process, want, "setup {k}: {files:?} {config:?}, {path} from {from:?}");
    }
}

/// `install --global --profile` writes the profile into the global attributes file (here
/// the XDG default, ~/.config/git/attributes); a `sync` that has to merge the file (both
/// machines added it) picks that profile. The manifest's retention tells which one ran:
/// generic adds both sides' numbers (60), the detected ccu-manifest keeps the setting (30).
#[test]
fn a_globally_installed_profile_applies_when_sync_merges() {
    for (global_profile, want) in [(Some("generic"), 60), (None, 30)] {
        let env = Env::new();
        let remote = env.path().join("remote.git");
        env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
        if let Some(p) = global_profile {
            env.tally(env.path()).args(["install", "--global", "--profile", p]).assert().success();
            assert!(env.home().join(".config/git/attributes").exists());
        }
        let clones: Vec<std::path::PathBuf> = (0..2u8)
            .map(|m| {
                let dir = env.path().join(format!("m{m}"));
                env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), dir.to_str().unwrap()]);
                env.git(&dir, &["config", "tally.device", &format!("m{m}")]);
                let doc = format!(
                    "{{\"version\": \"1.0\", \"last_updated\": \"2026-10-0{}T00:00:00Z\", \"backup_retention_days\": 30, \"machines\": []}}\n",
                    m + 1
                );
                std::fs::create_dir_all(dir.join("usage")).unwrap();
                std::fs::write(dir.join("usage/usage.json"), doc).unwrap();
                dir
            })
            .collect();
        for dir in &clones {
            env.tally(dir).arg("sync").assert().success();
        }
        // The file is a view of both machines' ledgers.
        let merged = crate::common::read_json(&clones[1].join("usage/usage.json"));
        assert_eq!(merged["backup_retention_days"], want, "global profile {global_profile:?}");
    }
}
