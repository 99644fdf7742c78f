//! The sync layer's promises (issue 8), tried as a user meets them: the git processes an
//! integrating sync starts, a `record` while a sync waits on a hanging remote, another git
//! process holding `index.lock`, a sync killed at each of its renames, fsyncs and ref
//! updates, a user whose git speaks German, and `status` naming the upstream `sync` uses.

use crate::common::{bin, have, read_json, say_skipped, Env, REQUIRE_TOOLS};
use crate::sync::{cluster, event_line, single_machine, Cluster};
use git_tally::event::Event;
use git_tally::profile;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const FILE: &str = "usage/usage.json";

/// The PATH the hermetic environment gives its commands, with `first` in front.
fn path_with(first: &Path) -> String {
    let bin_dir = bin().parent().unwrap().to_path_buf();
    format!("{}:{}:{}", first.display(), bin_dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// The first executable `git` on this process's PATH (the one the tests run).
fn real_git() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("git")).find(|g| g.is_file()))
        .expect("git on PATH")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn requests(dir: &Path) -> u64 {
    read_json(&dir.join(FILE))["totals"]["requests"].as_u64().unwrap()
}

/// A directory holding a `git` that appends its arguments to `log`, one line per process,
/// and runs the real git.
fn git_shim(env: &Env, log: &Path) -> PathBuf {
    let dir = env.path().join("shim");
    std::fs::create_dir_all(&dir).unwrap();
    let script =
        format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n", log.display(), real_git().display());
    let shim = dir.join("git");
    std::fs::write(&shim, script).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

/// The git subcommand of each logged process (`-C dir` and `-c key=value` skipped).
fn subcommands(log: &Path) -> Vec<String> {
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    logged
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            loop {
                match words.next() {
                    Some("-C") | Some("-c") => {
                        words.next();
                    }
                    Some(w) => return w.to_string(),
                    None => return String::new(),
                }
            }
        })
        .collect()
}

#[test]
fn an_integrating_sync_starts_no_merge_tree_and_at_most_four_git_processes() {
    let c = cluster(2, "tally");
    let (a, b) = (&c.clones[0], &c.clones[1]);
    c.record(a, &[event_line(0, 0)]);
    c.sync_until_ok(a);
    c.sync_until_ok(b);
    // The other machine pushes first: a's sync fetches, integrates and pushes.
    c.record(b, &[event_line(1, 0)]);
    c.sync_until_ok(b);
    c.record(a, &[event_line(0, 1)]);

    let log = c.env.path().join("git-processes.log");
    let shim = git_shim(&c.env, &log);
    let sync = |dir: &Path| {
        let out = c.tally(dir).env("PATH", path_with(&shim)).arg("sync").output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let out = sync(a);
    assert!(out.contains("replayed onto the upstream") && out.contains("pushed"), "an integrating sync: {out}");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let started = subcommands(&log);
    assert!(!logged.contains("merge-tree"), "no merge-tree:\n{logged}");
    assert!(started.len() <= 4, "at most 4 git processes, started:\n{logged}");
    assert!(started.contains(&"fetch".into()) && started.contains(&"push".into()), "the shim saw them:\n{logged}");
    assert_eq!(requests(a), 3);

    // Nothing new on either side: one fetch, and nothing else.
    std::fs::remove_file(&log).unwrap();
    let out = sync(a);
    assert!(out.contains("sync: up to date"), "{out}\n{}", c.env.git(a, &["log", "-p", "-2"]));
    assert_eq!(subcommands(&log), ["fetch"], "an up-to-date sync:\n{}", std::fs::read_to_string(&log).unwrap());
    c.sync_until_ok(b);
    assert_eq!(requests(b), 3);
}

/// The sync's fetch leaves git's automatic maintenance to a check beside the push: a
/// repository that needs a `gc --auto` still gets it, and an up-to-date sync starts none.
#[test]
fn a_sync_that_adds_objects_runs_gits_automatic_gc() {
    let c = cluster(1, "tally");
    let a = &c.clones[0];
    c.record(a, &[event_line(0, 0)]);
    c.sync_until_ok(a);
    // gc --auto when more than one loose object is estimated, in the foreground.
    c.env.git(a, &["config", "gc.auto", "1"]);
    c.env.git(a, &["config", "gc.autoDetach", "false"]);
    let loose = |dir: &Path| -> u64 {
        let out = c.env.git(dir, &["count-objects", "-v"]);
        let count = out.lines().find_map(|l| l.strip_prefix("count: ")).expect("count-objects says count");
        count.trim().parse().unwrap()
    };
    let objects_dir = a.join(".git/objects");
    // git estimates the loose objects from objects/17 alone: a few there make it need a gc.
    let fillers = c.env.path().join("fillers");
    std::fs::create_dir_all(&fillers).unwrap();
    let names: Vec<String> = (0..2000).map(|i| format!("{}/f{i}", fillers.display())).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(n, format!("filler {i}\n")).unwrap();
    }
    let mut args = vec!["hash-object"];
    args.extend(names.iter().map(String::as_str));
    let ids = c.env.git(a, &args);
    let mut write = vec!["hash-object", "-w"];
    write.extend(ids.lines().zip(&names).filter(|(id, _)| id.starts_with("17")).map(|(_, n)| n.as_str()));
    assert!(write.len() >= 2 + 3, "enough fillers land in objects/17: {}", write.len() - 2);
    c.env.git(a, &write);
    let before = loose(a);
    assert!(objects_dir.join("pack").read_dir().map_or(true, |mut d| d.next().is_none()), "no pack yet");
    c.record(a, &[event_line(0, 1)]);
    c.sync_until_ok(a);
    assert!(loose(a) < before, "the loose objects were packed: {} of {before} left", loose(a));
    assert!(objects_dir.join("pack").read_dir().unwrap().next().is_some(), "a pack was written");
}

#[test]
fn a_record_while_a_sync_waits_on_a_hanging_remote_returns_at_once() {
    record_while_a_sync_hangs(None);
}

/// The same with pull-before-write on every write (`tally.pullMaxAge = 0`): the pull is
/// left to the sync that is fetching, and `record` still returns at once.
#[test]
fn a_record_that_would_pull_first_returns_at_once_while_a_sync_hangs() {
    record_while_a_sync_hangs(Some("0"));
}

fn record_while_a_sync_hangs(pull_max_age: Option<&str>) {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    if let Some(age) = pull_max_age {
        c.env.git(dir, &["config", "tally.pullMaxAge", age]);
    }
    c.record(dir, &[event_line(0, 0)]);
    c.sync_until_ok(dir);
    c.record(dir, &[event_line(0, 1)]);
    // The remote hangs when a fetch starts, and says so in a file first.
    let marker = c.env.path().join("fetch-started");
    let hang = format!("touch '{}'; sleep 10; git-upload-pack", marker.display());
    c.env.git(dir, &["config", "remote.origin.uploadpack", &hang]);
    let mut sync = c.tally(dir).arg("sync").stdout(std::process::Stdio::piped()).spawn().unwrap();
    let waiting = Instant::now();
    while !marker.exists() {
        assert!(sync.try_wait().unwrap().is_none(), "the sync ended before it fetched");
        assert!(waiting.elapsed() < Duration::from_secs(120), "the sync never fetched");
        std::thread::sleep(Duration::from_millis(20));
    }

    let start = Instant::now();
    let out = c.tally(dir).args(["record", "--event", &event_line(0, 2)]).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(sync.try_wait().unwrap().is_none(), "the sync was still fetching when record returned");
    assert!(took < Duration::from_secs(1), "record took {took:?} while a sync was fetching");

    let synced = sync.wait_with_output().unwrap();
    assert!(synced.status.success(), "{}", text(&synced));
    c.env.git(dir, &["config", "--unset", "remote.origin.uploadpack"]);
    c.sync_until_ok(dir);
    assert_eq!(c.remote_view("tally")["totals"]["requests"], 3, "the record's event reached the remote");
}

/// The remote-tracking ref is locked for a moment when the sync fetches: by the push of a
/// sync killed a moment before (its `git push` goes on and updates that ref), or of one
/// running beside. The remote answers, so the fetch is tried again and the sync succeeds;
/// a lock that stays is an error naming the ref, exit 3, with the usage committed.
#[test]
fn a_tracking_ref_locked_for_a_moment_is_fetched_again() {
    let c = cluster(2, "tally");
    let (a, b) = (&c.clones[0], &c.clones[1]);
    c.record(a, &[event_line(0, 0)]);
    c.sync_until_ok(a);
    c.record(b, &[event_line(1, 0)]);
    c.sync_until_ok(b);
    c.record(a, &[event_line(0, 1)]);
    let lock = a.join(".git/refs/remotes/origin/main.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, b"").unwrap();
    let (code, out) = c.run(a, &["sync"]);
    assert_eq!(code, 3, "a lock that stays is transient: {out}");
    assert!(out.contains("refs/remotes/origin/main"), "{out}");
    let releaser = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::remove_file(&lock).unwrap();
        })
    };
    let (code, out) = c.run(a, &["sync"]);
    releaser.join().unwrap();
    assert_eq!(code, 0, "{out}");
    c.sync_until_ok(b);
    assert_eq!(requests(a), 3);
    assert_eq!(requests(b), 3);

    // A lock left by a git process killed while updating the ref (found by an adversarial
    // pass: a sync killed with its process group made every later sync exit 3): once it is
    // older than any live update holds one, the next sync removes it and says so.
    c.record(b, &[event_line(1, 1)]);
    c.sync_until_ok(b);
    c.record(a, &[event_line(0, 2)]);
    std::fs::write(&lock, b"").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options().write(true).open(&lock).unwrap().set_modified(old).unwrap();
    let (code, out) = c.run(a, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("refs/remotes/origin/main.lock"), "the removal is told: {out}");
    assert!(!lock.exists());
    c.sync_until_ok(b);
    assert_eq!(requests(a), 5);
    assert_eq!(requests(b), 5);

    // An old lock that no fetch fails on (nothing came in, so the ref is not updated) may
    // be a live git process's (an `update-ref` transaction held open): left alone (found
    // by an adversarial pass: it was removed on its age alone).
    c.sync_until_ok(a);
    c.record(a, &[event_line(0, 3)]);
    std::fs::write(&lock, b"").unwrap();
    std::fs::File::options().write(true).open(&lock).unwrap().set_modified(old).unwrap();
    let (code, out) = c.run(a, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert!(lock.exists(), "a lock no fetch failed on is left: {out}");
    std::fs::remove_file(&lock).unwrap();
}

/// A sync's fetch leaves `FETCH_HEAD` alone: the user's own `git fetch origin feature`
/// then `git merge FETCH_HEAD` merges the feature (found by an adversarial pass: the
/// sync's fetch had replaced it with main, and the merge said "Already up to date").
#[test]
fn a_sync_leaves_the_users_fetch_head_alone() {
    let c = cluster(2, "tally");
    let (a, b) = (&c.clones[0], &c.clones[1]);
    c.record(a, &[event_line(0, 0)]);
    c.sync_until_ok(a);
    c.sync_until_ok(b);
    c.env.git(b, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(b.join("f.txt"), "f\n").unwrap();
    c.env.git(b, &["add", "f.txt"]);
    c.env.commit(b, "feature");
    c.env.git(b, &["push", "-q", "origin", "feature"]);
    c.env.git(a, &["fetch", "-q", "origin", "feature"]);
    c.record(a, &[event_line(0, 1)]);
    c.sync_until_ok(a);
    let head = std::fs::read_to_string(a.join(".git/FETCH_HEAD")).unwrap();
    assert!(head.contains("'feature'"), "{head}");
}

/// Another git process (an editor's `git status`) holds `index.lock` while a sync commits
/// or brings the upstream in; the user then commits a file of their own with plain git,
/// from the index the sync could not update. Nothing of the usage is lost or reverted.
#[test]
fn a_held_index_lock_then_a_user_commit_loses_no_usage() {
    for local_events in [true, false] {
        let case = if local_events { "events to commit" } else { "only the upstream moved" };
        let c = cluster(2, "tally");
        let (a, b) = (&c.clones[0], &c.clones[1]);
        let mut lines = vec![event_line(0, 0)];
        c.record(a, &lines);
        c.sync_until_ok(a);
        c.sync_until_ok(b);
        lines.push(event_line(1, 0));
        c.record(b, &lines[1..]);
        c.sync_until_ok(b);
        if local_events {
            lines.push(event_line(0, 1));
            c.record(a, &lines[2..]);
        }

        let lock = a.join(".git/index.lock");
        std::fs::write(&lock, b"").unwrap();
        let (code, out) = c.run(a, &["sync"]);
        assert_eq!(code, 3, "{case}: a held index.lock is transient: {out}");
        assert!(out.contains("index.lock"), "{case}: {out}");
        std::fs::remove_file(&lock).unwrap();

        std::fs::write(a.join("notes.txt"), "my notes\n").unwrap();
        c.env.git(a, &["add", "notes.txt"]);
        c.env.commit(a, "my notes");
        for d in [a, b, a] {
            c.sync_until_ok(d);
        }

        let want = single_machine("tally", &lines);
        assert_eq!(read_json(&a.join(FILE)), want, "{case}: this clone");
        assert_eq!(read_json(&b.join(FILE)), want, "{case}: the other clone");
        assert_eq!(c.remote_view("tally"), want, "{case}: the remote");
        assert_eq!(c.env.git(a, &["status", "--porcelain"]), "", "{case}: nothing left uncommitted");
        assert_eq!(c.env.git(&c.remote, &["show", "main:notes.txt"]), "my notes\n", "{case}: the user's commit");
        assert_eq!(c.env.git(a, &["log", "--format=%s", "--grep=my notes"]), "my notes\n", "{case}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Events arrive through `git tally record`.
    Record,
    /// An application writes its usage file (CLIProxyAPI's `usage.json`) itself.
    File,
}

/// A machine's source of requests: `record`, or an application that keeps its statistics
/// in memory and rewrites the usage file (never re-reading it).
struct Machine {
    dir: PathBuf,
    m: usize,
    sent: usize,
    memory: Value,
}

impl Machine {
    /// Serves one more request; returns its event line once it is acknowledged (`record`
    /// exited 0, or the application's write returned).
    fn serve(&mut self, c: &Cluster, mode: Mode, profile: &str) -> String {
        let line = event_line(self.m, self.sent);
        self.sent += 1;
        match mode {
            Mode::Record => c.record(&self.dir, std::slice::from_ref(&line)),
            Mode::File => {
                let p = profile::by_name(profile).unwrap();
                let e = Event::parse(&line, chrono::Utc::now().fixed_offset(), "x").unwrap();
                (p.apply.unwrap())(&mut self.memory, &e).unwrap();
                std::fs::create_dir_all(self.dir.join(FILE).parent().unwrap()).unwrap();
                std::fs::write(self.dir.join(FILE), serde_json::to_vec_pretty(&self.memory).unwrap()).unwrap();
            }
        }
        line
    }
}

/// Files in the work tree that are neither committed nor the usage file's view.
fn strays(env: &Env, dir: &Path) -> Vec<String> {
    let out = env.git(dir, &["status", "--porcelain", "--ignored", "--untracked-files=all"]);
    out.lines()
        .filter(|l| l.starts_with("??") || l.starts_with("!!"))
        .map(|l| l[3..].to_string())
        .filter(|p| p != FILE)
        .collect()
}

/// Kills a sync at the 1st, 2nd, … call of `syscall` (strace's fault injection) until a run
/// gets through; after each kill, syncs again and checks every acknowledged event once on
/// both clones, no file left in the work tree and a clean index. The other machine pushes
/// first each time, so that every sync commits, integrates, writes the view and pushes.
/// `paths`: only the calls on these files count (strace's `-P`); a lock among them that a
/// kill left empty is taken for a live process's until it is old, so the next sync runs
/// once it is (as a timer's next run would).
fn kill_at_each(
    c: &Cluster,
    mode: Mode,
    profile: &str,
    syscall: &str,
    paths: &[&str],
    machines: &mut [Machine; 2],
    acked: &mut Vec<String>,
) -> usize {
    let env = &c.env;
    for n in 1.. {
        assert!(n < 500, "{mode:?}/{syscall}: a sync never got through");
        acked.push(machines[1].serve(c, mode, profile));
        c.sync_until_ok(&machines[1].dir);
        let want = single_machine(profile, acked);
        assert_eq!(
            read_json(&machines[1].dir.join(FILE)),
            want,
            "{mode:?}/{syscall}#{n}: the other clone (and the remote it synced with)"
        );
        acked.push(machines[0].serve(c, mode, profile));

        let a = &machines[0].dir;
        let inject = format!("{syscall}:signal=SIGKILL:when={n}");
        let out = env
            .command_of(Path::new("strace"), a)
            .args(["-qq", "-o", "/dev/null", "-e", &format!("trace={syscall}"), "-e", &format!("inject={inject}")])
            .args(paths.iter().flat_map(|p| ["-P".to_string(), a.join(p).display().to_string()]))
            .arg(bin())
            .arg("sync")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let killed = out.status.signal() == Some(9) || out.status.code() == Some(128 + 9);
        if !killed {
            assert!(out.status.success(), "{mode:?}/{syscall}#{n}: the sync not killed failed: {}", text(&out));
        }
        assert_eq!(
            strays(env, a),
            Vec::<String>::new(),
            "{mode:?}/{syscall}#{n}: files left in the work tree by the kill"
        );
        let (mut code, mut after) = c.run(a, &["sync"]);
        if code == 3 && after.contains(".lock is held") && !paths.is_empty() {
            for p in paths {
                age(&a.join(p));
            }
            (code, after) = c.run(a, &["sync"]);
        }
        assert_eq!(code, 0, "{mode:?}/{syscall}#{n}: the sync after the kill: {after}");
        assert_eq!(strays(env, a), Vec::<String>::new(), "{mode:?}/{syscall}#{n}: files left after the next sync");
        assert_eq!(env.git(a, &["status", "--porcelain"]), "", "{mode:?}/{syscall}#{n}: index and work tree clean");
        let want = single_machine(profile, acked);
        assert!(
            read_json(&a.join(FILE)) == want,
            "{mode:?}/{syscall}#{n}: every acknowledged event once on this clone:\n{}",
            crate::common::diff(&crate::common::pretty(&want), &crate::common::pretty(&read_json(&a.join(FILE))))
        );
        if !killed {
            return n - 1;
        }
    }
    unreachable!()
}

/// Sets a file's modification time a minute back, if there is the file.
fn age(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)).unwrap();
    }
}

/// A lock on the branch that git-tally did not write (empty, as a live git process's is
/// the moment it takes it) is left alone while it is young, even where a killed sync's
/// move is waiting to be finished, and released once it is old.
#[test]
fn a_young_empty_branch_lock_is_a_live_processs() {
    let c = cluster(1, "tally");
    let a = &c.clones[0];
    c.record(a, &[event_line(0, 0)]);
    c.sync_until_ok(a);
    // A sync that stops on index.lock leaves its move to be finished.
    let index_lock = a.join(".git/index.lock");
    std::fs::write(&index_lock, "").unwrap();
    c.record(a, &[event_line(0, 1)]);
    let (code, out) = c.run(a, &["sync"]);
    assert_eq!(code, 3, "{out}");
    std::fs::remove_file(&index_lock).unwrap();
    // Another git process takes the branch's lock just now.
    let lock = a.join(".git/refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    let (code, out) = c.run(a, &["sync"]);
    assert_eq!(code, 3, "a live process's lock is not taken away: {out}");
    assert!(lock.exists(), "the lock is still there");
    // Much later it is a killed process's: released, the move finished.
    age(&lock);
    let (code, out) = c.run(a, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert!(!lock.exists());
    assert_eq!(requests(a), 2);
    assert_eq!(c.env.git(a, &["status", "--porcelain"]), "");
}

fn crash_at_every_step(mode: Mode, test: &str) {
    if !have("strace", test) {
        return;
    }
    let profile = match mode {
        Mode::Record => "tally",
        Mode::File => "cliproxyapi",
    };
    let c = cluster(2, profile);
    let p = profile::by_name(profile).unwrap();
    let mut machines = [0, 1].map(|m| Machine { dir: c.clones[m].clone(), m, sent: 0, memory: (p.empty)() });
    let mut acked = Vec::new();
    // A first sync each, so that what follows is the steady state.
    for machine in machines.iter_mut() {
        acked.push(machine.serve(&c, mode, profile));
        c.sync_until_ok(&machine.dir);
    }
    // Refs packed, as a clone of a non-empty remote (or `git gc`) leaves them: updating the
    // branch then locks `packed-refs` too, and a kill must not leave that lock behind.
    for machine in &machines {
        c.env.git(&machine.dir, &["pack-refs", "--all"]);
    }
    let mut kills = Vec::new();
    // Renames (files, the index, refs: `main.lock` → `main`), fsyncs, the removals that
    // end a step (`move.json`, journal segments) and the link that takes `index.lock`.
    for syscall in ["rename", "renameat", "fsync", "fdatasync", "unlink", "linkat"] {
        kills.push(format!("{syscall}: {}", kill_at_each(&c, mode, profile, syscall, &[], &mut machines, &mut acked)));
    }
    // Between taking a lock and writing what it will hold: an empty lock file is left.
    let locks = [".git/refs/heads/main.lock", ".git/packed-refs.lock", ".git/index.lock"];
    kills.push(format!("lock writes: {}", kill_at_each(&c, mode, profile, "write", &locks, &mut machines, &mut acked)));
    c.sync_until_ok(&machines[1].dir);
    let want = single_machine(profile, &acked);
    assert_eq!(c.remote_view(profile), want, "{mode:?}: the remote");
    assert_eq!(read_json(&machines[1].dir.join(FILE)), want, "{mode:?}: the other clone");
    // Not one kill at all would mean strace injected nothing: the test would prove nothing.
    assert!(kills.iter().any(|k| !k.ends_with(": 0")), "{mode:?}: no sync was killed: {kills:?}");
    eprintln!("{test}: syncs killed per system call: {}", kills.join(", "));
}

#[test]
fn a_sync_killed_at_every_step_loses_nothing_record_mode() {
    crash_at_every_step(Mode::Record, "syncsteps::a_sync_killed_at_every_step_loses_nothing_record_mode");
}

#[test]
fn a_sync_killed_at_every_step_loses_nothing_file_mode() {
    crash_at_every_step(Mode::File, "syncsteps::a_sync_killed_at_every_step_loses_nothing_file_mode");
}

/// A German locale (`LANG`, `LOCPATH` when the locale is built here) and a git on PATH
/// that speaks German in it, or `None` (the test then says why it was skipped).
fn german(env: &Env) -> Result<(Vec<(String, String)>, PathBuf), String> {
    let mut vars = vec![("LANG".to_string(), "de_DE.UTF-8".to_string()), ("LANGUAGE".to_string(), "de".to_string())];
    let installed = Command::new("locale")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.eq_ignore_ascii_case("de_DE.utf8")))
        .unwrap_or(false);
    if !installed {
        // Built into the test's directory from the locale sources (Debian's `locales`).
        if !Path::new("/usr/share/i18n/locales/de_DE").exists() {
            return Err("the de_DE.UTF-8 locale is neither installed nor buildable (Debian package locales)".into());
        }
        let dir = env.path().join("locale");
        std::fs::create_dir_all(&dir).unwrap();
        let built = Command::new("localedef")
            .args(["-i", "de_DE", "-f", "UTF-8"])
            .arg(dir.join("de_DE.UTF-8"))
            .output()
            .map_err(|e| format!("localedef: {e}"))?;
        if !dir.join("de_DE.UTF-8").exists() {
            return Err(format!("localedef could not build de_DE.UTF-8: {}", text(&built)));
        }
        vars.push(("LOCPATH".into(), dir.display().to_string()));
    }
    // The first git on PATH whose messages are German there (a git built without gettext,
    // or without German messages installed, speaks English).
    let probe = env.path().join("not-a-repository");
    std::fs::create_dir_all(&probe).unwrap();
    let gits = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("git")).filter(|g| g.is_file()).collect::<Vec<_>>())
        .unwrap_or_default();
    for git in gits {
        let mut cmd = Command::new(&git);
        cmd.arg("-C").arg(&probe).arg("status").env_clear().env("GIT_CEILING_DIRECTORIES", env.path());
        let english = cmd.output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
        cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        let here = cmd.output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
        if english.starts_with("fatal:") && !here.is_empty() && !here.starts_with("fatal:") {
            return Ok((vars, git));
        }
    }
    Err("no git on PATH speaks German (git's German messages come with Debian's git package)".into())
}

#[test]
fn a_first_sync_to_an_empty_remote_works_in_a_german_locale() {
    let test = "syncsteps::a_first_sync_to_an_empty_remote_works_in_a_german_locale";
    let env = Env::new();
    let (vars, git) = match german(&env) {
        Ok(found) => found,
        Err(why) if std::env::var(REQUIRE_TOOLS).is_ok_and(|v| v == "1") => {
            panic!("{test}: {why}, and {REQUIRE_TOOLS}=1 requires it (.ci/run installs it)")
        }
        Err(why) => return say_skipped(&why, test),
    };
    // That git first on PATH, for the test's git and git-tally's.
    let only_git = env.path().join("german-git");
    std::fs::create_dir_all(&only_git).unwrap();
    std::os::unix::fs::symlink(&git, only_git.join("git")).unwrap();
    let mut vars = vars;
    vars.push(("PATH".into(), path_with(&only_git)));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let remote = env.path().join("remote.git");
    env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    let dir = env.path().join("m0");
    let url = format!("file://{}", remote.display());
    let cloned = env.git_output_with(env.path(), &["clone", &url, dir.to_str().unwrap()], &vars);
    assert!(cloned.status.success(), "{}", text(&cloned));
    for (k, v) in [("commit.gpgsign", "false"), ("tally.device", "m0")] {
        env.git(&dir, &["config", k, v]);
    }
    // What the sync meets on an empty remote, in German here.
    let fetched = env.git_output_with(&dir, &["fetch", "origin", "main"], &vars);
    let said = String::from_utf8_lossy(&fetched.stderr);
    assert!(
        !fetched.status.success() && !said.is_empty() && !said.contains("couldn't find"),
        "git speaks German: {said}"
    );

    let tally = |args: &[&str]| {
        let mut cmd = env.command(&dir);
        cmd.envs(vars.iter().copied()).args(args);
        cmd.output().unwrap()
    };
    let out = tally(&["record", "--event", &event_line(0, 0), "--event", &event_line(0, 1)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = tally(&["sync"]);
    assert!(out.status.success(), "a first sync to an empty remote: {}", text(&out));
    let on_remote = env.git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(on_remote.lines().any(|f| f.starts_with("usage/usage.ledger/")), "{on_remote}");
    assert_eq!(crate::filemode::remote_view(&env, &remote, "tally")["totals"]["requests"], 2);
}

#[test]
fn status_names_the_upstream_sync_uses_with_tally_remote_and_branch() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let backup = c.env.path().join("backup.git");
    c.env.git(c.env.path(), &["init", "-q", "--bare", "-b", "main", backup.to_str().unwrap()]);
    c.env.git(dir, &["remote", "add", "backup", &format!("file://{}", backup.display())]);
    c.env.git(dir, &["config", "tally.remote", "backup"]);
    c.env.git(dir, &["config", "tally.branch", "usage"]);
    c.record(dir, &[event_line(0, 0)]);
    let status = || -> Value {
        let (code, out) = c.run(dir, &["status", "--json"]);
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    let before = status();
    assert_eq!(before["upstream"]["remote"], "backup", "{before}");
    assert_eq!(before["upstream"]["branch"], "usage", "{before}");

    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 0, "{out}");
    let tree = c.env.git(&backup, &["ls-tree", "-r", "--name-only", "usage"]);
    assert!(tree.lines().any(|f| f.starts_with("usage/usage.ledger/")), "pushed to backup's usage: {tree}");
    let origin = c.env.git(&c.remote, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(origin, "", "nothing went to origin");
    let after = status();
    assert_eq!(after["upstream"], before["upstream"], "{after}");
    assert_eq!(after["upstream"]["tracking"], "refs/remotes/backup/usage", "{after}");
    assert_eq!((after["ahead"].as_u64(), after["behind"].as_u64()), (Some(0), Some(0)), "{after}");

    // A URL rather than a configured remote: the same again, tracked in a ref of git-tally's.
    let url = format!("file://{}", backup.display());
    c.env.git(dir, &["config", "tally.remote", &url]);
    c.env.git(dir, &["config", "tally.branch", "usage2"]);
    c.record(dir, &[event_line(0, 1)]);
    let by_url = status();
    assert_eq!(by_url["upstream"]["remote"], url.as_str(), "{by_url}");
    assert_eq!(by_url["upstream"]["branch"], "usage2", "{by_url}");
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 0, "{out}");
    let pushed = c.env.git(&backup, &["rev-parse", "usage2"]);
    assert_eq!(pushed, c.env.git(dir, &["rev-parse", "HEAD"]), "sync pushed to the branch status names");
    // The next sync fetches it into the ref status reads (a push to a URL moves no ref here).
    c.sync_until_ok(dir);
    let again = status();
    assert_eq!(again["upstream"], by_url["upstream"], "{again}");
    let tracking = again["upstream"]["tracking"].as_str().unwrap().to_string();
    assert!(tracking.starts_with("refs/tally/"), "{again}");
    assert_eq!(c.env.git(dir, &["rev-parse", &tracking]), pushed, "{tracking}");
    assert_eq!((again["ahead"].as_u64(), again["behind"].as_u64()), (Some(0), Some(0)), "{again}");
}
