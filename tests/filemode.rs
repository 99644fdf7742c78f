//! File mode (SPEC §5b): an application keeps statistics in memory and rewrites the
//! usage file itself. Simulated applications on two machines — never re-reading,
//! re-reading after each pull, restarting empty half way, loading once at start-up —
//! interleaved with `sync`: the ledger must hold every simulated request exactly once,
//! on both machines and on the remote.

use crate::common::Env;
use chrono::{DateTime, Duration};
use git_tally::event::Event;
use git_tally::profile::{self, Profile};
use serde_json::Value;
use std::path::{Path, PathBuf};

const FILE: &str = "usage/usage.json";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    NeverRereads,
    RereadsAfterPull,
    RestartsHalfWay,
    LoadsOnce,
}

struct App {
    profile: &'static Profile,
    behaviour: Behaviour,
    memory: Value,
    file: PathBuf,
    loaded: bool,
}

impl App {
    fn new(profile: &'static Profile, behaviour: Behaviour, file: PathBuf) -> App {
        App { profile, behaviour, memory: (profile.empty)(), file, loaded: false }
    }

    fn serve(&mut self, events: &[Event]) {
        for e in events {
            (self.profile.apply.unwrap())(&mut self.memory, e).unwrap();
        }
        std::fs::write(&self.file, serde_json::to_vec_pretty(&self.memory).unwrap()).unwrap();
    }

    fn after_sync(&mut self, round: usize, rounds: usize) {
        let read = || serde_json::from_slice(&std::fs::read(&self.file).unwrap()).unwrap();
        match self.behaviour {
            Behaviour::RereadsAfterPull => self.memory = read(),
            Behaviour::LoadsOnce if !self.loaded && round == 1 => {
                self.memory = read();
                self.loaded = true;
            }
            Behaviour::RestartsHalfWay if round == rounds / 2 => self.memory = (self.profile.empty)(),
            _ => {}
        }
    }
}

fn event(m: usize, i: usize) -> Event {
    let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let ts = t0 + Duration::seconds((i * 2 + m) as i64 * 61);
    let line = serde_json::json!({
        "id": format!("m{m}-{i}"), "timestamp": ts.to_rfc3339(), "api": (["key-a", "key-b"][m]),
        "provider": "openai", "model": (["gpt-5", "gpt-5-mini"][i % 2]), "input_tokens": 10 + i, "output_tokens": m + 1,
        "source": format!("m{m}"), "auth_index": "0", "status": 200,
    });
    Event::parse(&line.to_string(), ts, "x").unwrap()
}

fn truth(p: &Profile, events: &[Event]) -> Value {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.timestamp);
    let mut doc = (p.empty)();
    for e in sorted {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    doc
}

fn setup(env: &Env, app_reads: &str) -> (PathBuf, Vec<PathBuf>) {
    let remote = env.path().join("remote.git");
    env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    let clones: Vec<PathBuf> = (0..2)
        .map(|m| {
            let dir = env.path().join(format!("m{m}"));
            env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), dir.to_str().unwrap()]);
            env.git(&dir, &["config", "tally.device", &format!("m{m}")]);
            env.git(&dir, &["config", "tally.appReads", app_reads]);
            std::fs::create_dir_all(dir.join("usage")).unwrap();
            dir
        })
        .collect();
    (remote, clones)
}

fn sync(env: &Env, dir: &Path) {
    let out = env.tally(dir).arg("sync").output().unwrap();
    assert!(out.status.success(), "sync in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
}

/// The usage file as git-tally last wrote it from the ledger (the view).
fn ledger(_env: &Env, dir: &Path) -> Value {
    crate::common::read_json(&dir.join(FILE))
}

/// The remote's usage as a new clone sees it after its first pull.
pub(crate) fn remote_view(env: &Env, remote: &Path, profile: &str) -> Value {
    let dir = env.path().join("fresh-clone");
    let _ = std::fs::remove_dir_all(&dir);
    env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), dir.to_str().unwrap()]);
    env.git(&dir, &["config", "tally.device", "fresh"]);
    env.git(&dir, &["config", "tally.profile", profile]);
    let out = env.tally(&dir).arg("pull").output().unwrap();
    assert!(out.status.success(), "pull in a fresh clone: {}", String::from_utf8_lossy(&out.stderr));
    crate::common::read_json(&dir.join(FILE))
}

/// Every clone's view and the remote's equal `want`, with a diff where not.
fn assert_everywhere(env: &Env, remote: &Path, clones: &[PathBuf], want: &Value, case: &str) {
    let profile = git_tally::profile::detect(&[Some(want)]).name;
    let on_remote = remote_view(env, remote, profile);

    let ledgers = clones.iter().map(|d| (d.display().to_string(), ledger(env, d)));
    for (what, got) in ledgers.chain([("the remote".to_string(), on_remote)]) {
        assert!(
            &got == want,
            "{case}: {what} differs from every request once:\n{}",
            crate::common::diff(&crate::common::pretty(want), &crate::common::pretty(&got))
        );
    }
}

fn simulate(profile: &str, behaviour: Behaviour, app_reads: &str) {
    let env = Env::new();
    let p = profile::by_name(profile).unwrap();
    let (remote, clones) = setup(&env, app_reads);
    let mut apps: Vec<App> = clones
        .iter()
        .map(|dir| App { profile: p, behaviour, memory: (p.empty)(), file: dir.join(FILE), loaded: false })
        .collect();
    let rounds = 8;
    let mut served = [0usize; 2];
    let mut all = Vec::new();
    for round in 0..rounds {
        for m in 0..2 {
            let n = 1 + (round + m) % 3;
            let events: Vec<Event> = (served[m]..served[m] + n).map(|i| event(m, i)).collect();
            served[m] += n;
            apps[m].serve(&events);
            all.extend(events);
            sync(&env, &clones[m]);
            apps[m].after_sync(round, rounds);
        }
    }
    for dir in clones.iter().chain(clones.iter()) {
        sync(&env, dir);
    }
    assert_everywhere(&env, &remote, &clones, &truth(p, &all), &format!("{profile} {behaviour:?}"));
}

#[test]
fn cliproxyapi_app_that_never_rereads() {
    simulate("cliproxyapi", Behaviour::NeverRereads, "never");
}

#[test]
fn cliproxyapi_app_that_rereads_after_each_pull() {
    simulate("cliproxyapi", Behaviour::RereadsAfterPull, "never");
}

#[test]
fn cliproxyapi_app_that_restarts_empty_half_way() {
    simulate("cliproxyapi", Behaviour::RestartsHalfWay, "never");
}

#[test]
fn cliproxyapi_app_that_loads_once_at_start_up() {
    simulate("cliproxyapi", Behaviour::LoadsOnce, "never");
}

#[test]
fn proxypal_app_that_never_rereads() {
    simulate("proxypal-aggregate", Behaviour::NeverRereads, "never");
}

#[test]
fn proxypal_app_that_rereads_after_each_pull() {
    simulate("proxypal-aggregate", Behaviour::RereadsAfterPull, "after-pull");
}

#[test]
fn proxypal_app_that_restarts_shows_a_counter_decrease() {
    simulate("proxypal-aggregate", Behaviour::RestartsHalfWay, "never");
}

struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An application rewriting the file in a tight loop, without git-tally's lock, while
/// 50 syncs run: no write is lost, and no sync leaves a rebase or stash behind.
#[test]
fn an_application_rewriting_in_a_tight_loop_loses_nothing() {
    let env = Env::new();
    let p = profile::by_name("cliproxyapi").unwrap();
    let (remote, clones) = setup(&env, "never");
    let (dir, other) = (&clones[0], &clones[1]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let served = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut app = App::new(p, Behaviour::NeverRereads, dir.join(FILE));
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // New requests for a while, then rewrites of the same statistics.
                let fresh: Vec<Event> = if i < 300 { vec![event(0, i)] } else { Vec::new() };
                app.serve(&fresh);
                served.lock().unwrap().extend(fresh);
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        });
        // A failed assertion below must stop the application too, or the scope waits
        // for it forever and the failure becomes a hang.
        let _stop = StopOnDrop(&stop);
        let mut other_app = App::new(p, Behaviour::NeverRereads, other.join(FILE));
        for k in 0..50 {
            if k % 5 == 0 {
                // Another machine's traffic, so that syncs here integrate (rebase) too.
                let e = event(1, k);
                other_app.serve(std::slice::from_ref(&e));
                served.lock().unwrap().push(e);
                sync(&env, other);
            }
            let out = env.tally(dir).arg("sync").output().unwrap();
            let code = out.status.code().unwrap();
            assert!(code == 0 || code == 3, "sync {k}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(!dir.join(".git/rebase-merge").exists() && !dir.join(".git/rebase-apply").exists());
        }
    });
    sync(&env, dir);
    sync(&env, other);
    sync(&env, dir);
    assert_eq!(env.git(dir, &["stash", "list"]), "", "no stash left behind");
    assert_everywhere(&env, &remote, &clones, &truth(p, &served.lock().unwrap()), "tight loop");
}

/// An application caught mid-write (the file truncated, or cut short) on the very first
/// sync, and later: nothing broken is committed, the file is named, and the next whole
/// write is taken. (Found by the tight-loop test on a loaded machine: the first sight of
/// the file was once taken as the ledger while it was empty.)
#[test]
fn a_write_caught_half_done_is_never_committed() {
    let env = Env::new();
    let p = profile::by_name("cliproxyapi").unwrap();
    let (remote, clones) = setup(&env, "never");
    let dir = &clones[0];
    let mut app = App::new(p, Behaviour::NeverRereads, dir.join(FILE));
    let committed = || env.git_output(dir, &["rev-parse", "-q", "--verify", "HEAD"]).status.success();
    for broken in [&b""[..], b"{\n  \"total_requests\": 1"] {
        std::fs::write(dir.join(FILE), broken).unwrap();
        let out = env.tally(dir).arg("sync").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(FILE) && stderr.contains("not ingested"), "the file is named: {stderr}");
        assert!(!committed(), "a half-written first sight is not committed");
    }
    let first: Vec<Event> = (0..3).map(|i| event(0, i)).collect();
    app.serve(&first);
    sync(&env, dir);
    assert_eq!(ledger(&env, dir), truth(p, &first));
    // Later, with a ledger: a cut-short write is left alone (the application may still be
    // writing it) and loses nothing.
    std::fs::write(dir.join(FILE), b"{\n  \"usage\": {").unwrap();
    let out = env.tally(dir).arg("sync").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not ingested"));
    assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), b"{\n  \"usage\": {", "left alone");
    assert_eq!(remote_view(&env, &remote, "cliproxyapi"), truth(p, &first));

    let second: Vec<Event> = (3..5).map(|i| event(0, i)).collect();
    app.serve(&second);
    sync(&env, dir);
    assert_eq!(ledger(&env, dir), truth(p, &[first, second].concat()));
}

/// The application's first whole write can come after git-tally already holds other
/// machines' requests (the first sync caught the file mid-write, or the repository came
/// with usage in it). Not knowing what the application started from, the write must not
/// turn those requests into deletions; and an application that loaded the committed file
/// at start must not count it twice (proxypal-aggregate: aggregates only, no records).
#[test]
fn an_application_seen_whole_only_after_others_requests_arrived() {
    for (profile, loads_at_start) in
        [("cliproxyapi", false), ("proxypal-aggregate", false), ("proxypal-aggregate", true)]
    {
        let env = Env::new();
        let p = profile::by_name(profile).unwrap();
        let (remote, clones) = setup(&env, "never");
        let (dir, other) = (&clones[0], &clones[1]);
        let mut all: Vec<Event> = (0..2).map(|i| event(1, i)).collect();
        let mut other_app = App::new(p, Behaviour::NeverRereads, other.join(FILE));
        other_app.serve(&all);
        sync(&env, other);
        // The first sync here finds the file cut short and brings in the other machine's usage.
        std::fs::write(dir.join(FILE), b"{\n  \"total").unwrap();
        let out = env.tally(dir).arg("sync").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut app = App::new(p, Behaviour::NeverRereads, dir.join(FILE));
        if loads_at_start {
            // What the ledger holds (the file git-tally writes for it), loaded at start.
            app.memory = remote_view(&env, &remote, profile);
        }

        let mine: Vec<Event> = (0..3).map(|i| event(0, i)).collect();
        app.serve(&mine);
        all.extend(mine);
        for d in [dir, other, dir] {
            sync(&env, d);
        }
        assert_everywhere(
            &env,
            &remote,
            &clones,
            &truth(p, &all),
            &format!("{profile} (loads at start: {loads_at_start})"),
        );
    }
}
