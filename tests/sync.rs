//! The write path and sync against real clones of a bare `file://` remote: convergence of
//! concurrent machines, concurrent writers in one clone, SIGKILL at random moments,
//! unreachable and racing remotes, unsafe repository states, and pull-before-write.

use crate::common::{read_json, Env};
use chrono::{DateTime, Duration};
use git_tally::event::Event;
use git_tally::profile;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) const FILE: &str = "usage/usage.json";

pub(crate) struct Cluster {
    pub(crate) env: Env,
    pub(crate) remote: PathBuf,
    pub(crate) clones: Vec<PathBuf>,
}

pub(crate) fn cluster(n: usize, profile: &str) -> Cluster {
    let env = Env::new();
    let remote = env.path().join("remote.git");
    env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    let url = format!("file://{}", remote.display());
    let mut clones = Vec::new();
    for i in 0..n {
        let dir = env.path().join(format!("m{i}"));
        env.git(env.path(), &["clone", "-q", &url, dir.to_str().unwrap()]);
        for (k, v) in [
            ("commit.gpgsign", "false"),
            ("tally.device", &format!("m{i}")),
            ("tally.profile", profile),
            ("tally.pushRetries", "40"),
        ] {
            env.git(&dir, &["config", k, v]);
        }
        clones.push(dir);
    }
    Cluster { env, remote, clones }
}

/// Event `i` of machine `m`, with a timestamp unique across machines.
pub(crate) fn event_line(m: usize, i: usize) -> String {
    let t0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let ts = t0 + Duration::seconds((i * 8 + m) as i64 * 7);
    json!({
        "id": format!("m{m}-e{i}"), "timestamp": ts.to_rfc3339(), "device": format!("m{m}"),
        "provider": (["openai", "anthropic"][i % 2]), "api": (["key-a", "key-b"][m % 2]),
        "model": (["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"][(i + m) % 3]),
        "input_tokens": 100 + i, "output_tokens": 7 + m, "cached_tokens": i % 5,
        "status": if i % 13 == 0 { 500 } else { 200 }, "cost_usd": ((i % 8) as f64) / 8.0,
        "source": format!("m{m}@example.com"), "auth_index": "0",
    })
    .to_string()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish() as u32
}

/// One machine applying every event once, in time order.
pub(crate) fn single_machine(profile: &str, lines: &[String]) -> Value {
    let p = profile::by_name(profile).unwrap();
    let now = chrono::Utc::now().fixed_offset();
    let mut events: Vec<Event> = lines.iter().map(|l| Event::parse(l, now, "x").unwrap()).collect();
    events.sort_by_key(|e| e.timestamp);
    let mut doc = (p.empty)();
    for e in &events {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    doc
}

impl Cluster {
    pub(crate) fn tally(&self, dir: &Path) -> Command {
        self.env.command(dir)
    }

    /// `record` with these lines on stdin; panics unless it succeeds.
    pub(crate) fn record(&self, dir: &Path, lines: &[String]) {
        let mut c = self.tally(dir);
        c.arg("record").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "record failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub(crate) fn run(&self, dir: &Path, args: &[&str]) -> (i32, String) {
        let out = self.tally(dir).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The remote's usage as a new clone sees it: its view after a first pull.
    pub(crate) fn remote_view(&self, profile: &str) -> Value {
        let dir = self.env.path().join(format!("fresh-{}", std::process::id() ^ rand_u32()));
        let url = format!("file://{}", self.remote.display());
        self.env.git(self.env.path(), &["clone", "-q", &url, dir.to_str().unwrap()]);
        self.env.git(&dir, &["config", "tally.profile", profile]);
        self.env.git(&dir, &["config", "tally.device", "fresh"]);
        let (code, out) = self.run(&dir, &["pull"]);
        assert_eq!(code, 0, "pull in a fresh clone: {out}");
        read_json(&dir.join(FILE))
    }

    /// Syncs until it succeeds (a sync may lose every retry to busier machines).
    pub(crate) fn sync_until_ok(&self, dir: &Path) {
        let mut last = String::new();
        for _ in 0..20 {
            let (code, out) = self.run(dir, &["sync"]);
            if code == 0 {
                return;
            }
            assert_eq!(code, 3, "only transient failures are expected: {out}");
            last = out;
        }
        panic!("sync never succeeded in {}; the last attempt said: {last}", dir.display());
    }
}

fn converge(profile: &str) {
    let c = cluster(4, profile);
    let per_machine = 250;
    std::thread::scope(|s| {
        for (m, dir) in c.clones.iter().enumerate() {
            let c = &c;
            s.spawn(move || {
                let mut seed = m as u64 * 7919 + 1;
                let mut rand = move |n: u64| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 33) % n
                };
                let mut i = 0;
                while i < per_machine {
                    let n = (1 + rand(20) as usize).min(per_machine - i);
                    let lines: Vec<String> = (i..i + n).map(|k| event_line(m, k)).collect();
                    c.record(dir, &lines);
                    i += n;
                    std::thread::sleep(std::time::Duration::from_millis(rand(15)));
                    if rand(3) == 0 {
                        let (code, out) = c.run(dir, &["sync"]);
                        assert!(code == 0 || code == 3, "sync: {out}");
                    }
                }
                c.sync_until_ok(dir);
            });
        }
    });
    // One final round: every clone pulls what the others pushed last.
    for dir in &c.clones {
        c.sync_until_ok(dir);
    }
    let all: Vec<String> = (0..4).flat_map(|m| (0..per_machine).map(move |i| event_line(m, i))).collect();
    let want = single_machine(profile, &all);
    let first = std::fs::read(c.clones[0].join(FILE)).unwrap();
    for dir in &c.clones {
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), first, "{} differs from m0", dir.display());
    }
    let got = read_json(&c.clones[0].join(FILE));
    assert!(
        got == want,
        "{profile}: the ledger differs from one machine applying all 1000 events:\n{}",
        crate::common::diff(&crate::common::pretty(&want), &crate::common::pretty(&got))
    );
    assert_eq!(c.remote_view(profile), want, "the remote holds the same ledger");
}

#[test]
fn four_machines_converge_exactly_tally() {
    converge("tally");
}

#[test]
fn four_machines_converge_exactly_cliproxyapi() {
    converge("cliproxyapi");
}

#[test]
fn eight_concurrent_writers_in_one_clone_count_every_event() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    std::thread::scope(|s| {
        for w in 0..8 {
            let c = &c;
            s.spawn(move || {
                for batch in 0..10 {
                    let lines: Vec<String> = (0..100).map(|k| event_line(w, batch * 100 + k)).collect();
                    c.record(dir, &lines);
                }
            });
        }
    });
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(read_json(&dir.join(FILE))["totals"]["requests"], 8000);
}

/// Kills `record` and `sync` with SIGKILL at random moments (seeded): every event whose
/// `record` returned 0 counts exactly once, and re-sending a killed batch never double
/// counts; the file always parses and passes `check`.
#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let c = cluster(2, "tally");
    let (dir, other) = (&c.clones[0], &c.clones[1]);
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut sent = 0usize;
    let mut other_sent = 0usize;
    for trial in 0..100 {
        if trial % 10 == 5 {
            // Another machine pushes, so that syncs here have something to integrate.
            let lines: Vec<String> = (0..3).map(|k| event_line(7, other_sent + k)).collect();
            other_sent += 3;
            c.record(other, &lines);
            c.sync_until_ok(other);
        }
        let batch: Vec<String> = (0..5).map(|k| event_line(0, trial * 5 + k)).collect();
        let sync = rand(3) == 0;
        let mut cmd = c.tally(dir);
        if sync {
            c.record(dir, &batch);
            cmd.arg("sync");
        } else {
            cmd.arg("record");
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all((batch.join("\n") + "\n").as_bytes());
        }
        std::thread::sleep(std::time::Duration::from_micros(rand(40_000)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !sync && !status.success() {
            // Killed (or not yet done): the proxy retries the same batch.
            c.record(dir, &batch);
        }
        sent += 5;
        let path = dir.join(FILE);
        if path.exists() {
            let doc = read_json(&path);
            let out = c.tally(dir).args(["check", FILE]).output().unwrap();
            assert!(out.status.success(), "trial {trial}: check failed: {}", String::from_utf8_lossy(&out.stderr));
            drop(doc);
        }
    }
    c.sync_until_ok(dir);
    c.sync_until_ok(other);
    c.sync_until_ok(dir);
    let doc = read_json(&dir.join(FILE));
    assert_eq!(doc["totals"]["requests"], (sent + other_sent) as u64, "every event exactly once");
    assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), std::fs::read(other.join(FILE)).unwrap());
}

#[test]
fn an_unreachable_remote_is_transient_and_loses_nothing() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.record(dir, &[event_line(0, 1)]);
    c.sync_until_ok(dir);
    c.env.git(dir, &["remote", "set-url", "origin", "file:///nonexistent/remote.git"]);
    c.record(dir, &[event_line(0, 2)]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("committed locally"), "{out}");
    assert_eq!(read_json(&dir.join(FILE))["totals"]["requests"], 2, "the event is in the file");
    assert!(c.env.git(dir, &["log", "--oneline"]).lines().count() >= 2, "and committed");
    c.env.git(dir, &["remote", "set-url", "origin", &format!("file://{}", c.remote.display())]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.remote_view("tally")["totals"]["requests"], 2);
}

#[test]
fn a_push_raced_by_another_machine_is_retried_and_merged_exactly() {
    let c = cluster(2, "tally");
    let (a, b) = (&c.clones[0], &c.clones[1]);
    c.record(a, &[event_line(0, 0)]);
    c.sync_until_ok(a);
    c.sync_until_ok(b);
    // The remote moves under b's first push: b's pre-push hook (run after b fetched and
    // decided what to push) lets machine a push its new commit first.
    c.record(a, &[event_line(0, 1)]);
    c.run(a, &["pull"]);
    let hook = b.join(".git/hooks/pre-push");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nif [ ! -e \"$(git rev-parse --git-dir)/race-done\" ]; then\n  touch \"$(git rev-parse --git-dir)/race-done\"\n  env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE git -C '{}' push -q origin HEAD:main\nfi\nexit 0\n",
            a.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    c.record(b, &[event_line(1, 0), event_line(1, 1)]);
    let (code, out) = c.run(b, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pushed after 1 retry"), "{out}");
    c.sync_until_ok(a);
    let want = single_machine("tally", &[event_line(0, 0), event_line(0, 1), event_line(1, 0), event_line(1, 1)]);
    assert_eq!(read_json(&a.join(FILE)), want);
    assert_eq!(std::fs::read(a.join(FILE)).unwrap(), std::fs::read(b.join(FILE)).unwrap());
}

#[test]
fn unsafe_repository_states_are_refused() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.record(dir, &[event_line(0, 0)]);
    c.sync_until_ok(dir);
    // Detached HEAD.
    c.env.git(dir, &["checkout", "-q", "--detach"]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("detached"), "{out}");
    c.env.git(dir, &["checkout", "-q", "main"]);
    // A merge in progress.
    std::fs::write(dir.join(".git/MERGE_HEAD"), c.env.git(dir, &["rev-parse", "HEAD"])).unwrap();
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("merge is in progress"), "{out}");
    std::fs::remove_file(dir.join(".git/MERGE_HEAD")).unwrap();
    // No upstream.
    c.env.git(dir, &["checkout", "-q", "-b", "local-only"]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no upstream"), "{out}");
    // A bare repository.
    let (code, out) = c.run(&c.remote, &["sync"]);
    assert_eq!(code, 2, "{out}");
    // Refs in a reftable: named, not misread as a branch called ".invalid". Only a git that
    // makes reftables (2.45 and later) can produce such a repository.
    let reftable = c.env.path().join("reftable");
    let url = format!("file://{}", c.remote.display());
    let cloned =
        c.env.git_output(c.env.path(), &["clone", "-q", "--ref-format=reftable", &url, reftable.to_str().unwrap()]);
    if cloned.status.success() {
        let (code, out) = c.run(&reftable, &["sync"]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("reftable") && !out.contains(".invalid"), "{out}");
    } else {
        eprintln!("this git makes no reftables: {}", String::from_utf8_lossy(&cloned.stderr));
    }
}

#[test]
fn unrelated_staged_changes_stay_staged_byte_for_byte() {
    let c = cluster(2, "tally");
    let (dir, other) = (&c.clones[0], &c.clones[1]);
    c.record(dir, &[event_line(0, 0)]);
    c.sync_until_ok(dir);
    std::fs::write(dir.join("notes.txt"), "my notes\n").unwrap();
    c.env.git(dir, &["add", "notes.txt"]);
    std::fs::write(dir.join("notes.txt"), "my notes\nunstaged line\n").unwrap();
    let staged = c.env.git(dir, &["diff", "--cached"]);
    c.record(dir, &[event_line(0, 1)]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.env.git(dir, &["diff", "--cached"]), staged, "the staged change is untouched");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "my notes\nunstaged line\n");
    let files = c.env.git(dir, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(
        files.lines().all(|f| f.starts_with("usage/usage.ledger/")),
        "only this device's ledger files were committed: {files}"
    );
    // With the upstream ahead, integrating brings in the other machine's usage; the
    // staged and unstaged changes to other files stay exactly as they were.
    c.sync_until_ok(other);
    c.record(other, &[event_line(1, 0)]);
    c.sync_until_ok(other);
    c.record(dir, &[event_line(0, 2)]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.env.git(dir, &["diff", "--cached"]), staged);
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "my notes\nunstaged line\n");
    assert_eq!(c.env.git(dir, &["status", "--porcelain", "--", FILE]), "");
    assert_eq!(read_json(&dir.join(FILE))["totals"]["requests"], 4);
    // An upstream change to a file with local changes is refused, and nothing moves.
    std::fs::write(other.join("notes.txt"), "their notes\n").unwrap();
    c.env.git(other, &["add", "notes.txt"]);
    c.env.commit(other, "notes");
    c.sync_until_ok(other);
    let head = c.env.git(dir, &["rev-parse", "HEAD"]);
    c.record(dir, &[event_line(0, 3)]);
    let (code, out) = c.run(dir, &["sync"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("committed locally") && out.contains("notes.txt"), "{out}");
    assert_eq!(c.env.git(dir, &["diff", "--cached"]), staged);
    assert_ne!(c.env.git(dir, &["rev-parse", "HEAD"]), head, "the usage was committed");
}

fn fetches(trace: &Path) -> usize {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(r#""event":"cmd_name""#) && l.contains(r#""name":"fetch""#))
        .count()
}

/// Waits until `done` holds (60 s at most).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether no sync or pull of `dir` is fetching or pushing (its network lock is free).
fn network_idle(dir: &Path) -> bool {
    git_tally::lock::Lock::acquire_at(&dir.join(".git/tally/net.lock"), std::time::Duration::ZERO, "test").is_ok()
}

#[test]
fn pull_before_write_is_throttled_by_pull_max_age() {
    for (age, writes, want) in [("0", 4, 4), ("30s", 4, 1)] {
        // A new clone: it has never pulled, so the first write pulls in both cases.
        let c = cluster(1, "tally");
        let dir = &c.clones[0];
        c.env.git(dir, &["config", "tally.pullMaxAge", age]);
        let trace = c.env.path().join("trace.json");
        for i in 1..=writes {
            let mut cmd = c.tally(dir);
            cmd.env("GIT_TRACE2_EVENT", &trace).args(["record", "--event", &event_line(0, i)]);
            assert!(cmd.output().unwrap().status.success());
            // The pull runs in the background (record never waits on the network): one
            // that is due has fetched before the next write.
            let due = age == "0" || i == 1;
            if due {
                wait_for("the pull's fetch", || fetches(&trace) == i.min(want));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            wait_for("the pull to finish", || network_idle(dir));
        }
        assert_eq!(fetches(&trace), want, "pullMaxAge={age}");
        let (code, _) = c.run(dir, &["sync"]);
        assert_eq!(code, 0);
        assert_eq!(read_json(&dir.join(FILE))["totals"]["requests"], writes as u64);
    }
}

#[test]
fn invalid_lines_reject_the_whole_batch_with_line_numbers() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let mut cmd = c.tally(dir);
    cmd.arg("record").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let lines = [event_line(0, 0), "{\"timestamp\": \"yesterday\"}".into(), event_line(0, 1), "not json".into()];
        child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2:") && err.contains("line 4:") && !err.contains("line 1:"), "{err}");
    let (_, status) = c.run(dir, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["pending_events"], 0, "nothing of the batch was recorded");
}

#[test]
fn local_only_mode_works_without_git() {
    let env = Env::new();
    let dir = env.path().join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(env.home().join(".gitconfig"), "[tally]\n\tenabled = false\n\tdevice = solo\n").unwrap();
    env.tally(&dir).args(["record", "--event", &event_line(0, 0), "--event", &event_line(0, 1)]).assert().success();
    env.tally(&dir).args(["record", "--event", &event_line(0, 1)]).assert().success();
    let doc = read_json(&dir.join(FILE));
    assert_eq!(doc["totals"]["requests"], 2, "the retried id counted once");
    assert!(!dir.join(".git").exists());
}

#[test]
fn the_demo_converges_exactly() {
    let env = Env::new();
    let dir = env.path().join("demo");
    let out = env.tally(env.path()).args(["demo", "--dir", dir.to_str().unwrap(), "--events", "60"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("byte-identical files: yes") && stdout.contains("all 120 requests once: yes"), "{stdout}");
    assert_eq!(read_json(&dir.join("laptop").join(FILE))["totals"]["requests"], 120);
    // The summary's tables: each machine's requests, and the models' adding up to all.
    for machine in ["laptop", "server"] {
        let row = stdout.lines().find(|l| l.trim_start().starts_with(machine)).unwrap_or_else(|| panic!("{stdout}"));
        assert_eq!(row.split_whitespace().nth(1), Some("60"), "{row}");
    }
    let models: u64 = stdout
        .lines()
        .skip_while(|l| !l.starts_with("model"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(models, 120, "{stdout}");
}

#[test]
fn a_proxy_config_in_the_prd_shape_drives_the_write_path() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let yaml = c.env.path().join("proxy.yaml");
    std::fs::write(&yaml, "gitstore:\n  remote: x\n  usage-sync:\n    enabled: true\n    path: \"stats/usage.json\"\n    sync-interval: \"15m\"\nstatistics-file: ./local.json\n").unwrap();
    let y = yaml.to_str().unwrap();
    assert!(c
        .tally(dir)
        .args(["--proxy-config", y, "record", "--event", &event_line(0, 0)])
        .output()
        .unwrap()
        .status
        .success());
    let (code, out) = c.run(dir, &["--proxy-config", y, "sync"]);
    assert_eq!(code, 0, "{out}");
    let ledger = c.env.git(&c.remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(ledger.lines().any(|f| f.starts_with("stats/usage.ledger/")), "{ledger}");
    assert_eq!(read_json(&dir.join("stats/usage.json"))["totals"]["requests"], 1);
    // Disabled: the statistics-file, locally, without git.
    std::fs::write(&yaml, "gitstore:\n  usage-sync:\n    enabled: false\nstatistics-file: ./local.json\n").unwrap();
    assert!(c
        .tally(dir)
        .args(["--proxy-config", y, "record", "--event", &event_line(0, 1)])
        .output()
        .unwrap()
        .status
        .success());
    assert_eq!(read_json(&dir.join("local.json"))["totals"]["requests"], 1);
}

#[test]
fn flush_commits_locally_and_gives_up_pushing_within_its_timeout() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.record(dir, &[event_line(0, 0)]);
    c.sync_until_ok(dir);
    // A remote that never answers.
    c.env.git(dir, &["remote", "set-url", "origin", "ssh://unreachable.invalid/usage.git"]);
    c.record(dir, &[event_line(0, 1)]);
    let start = std::time::Instant::now();
    let out = c
        .tally(dir)
        .env("GIT_SSH_COMMAND", "sh -c 'sleep 120' --")
        .args(["flush", "--timeout", "2s"])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took >= std::time::Duration::from_secs(2), "the transport really hung ({took:?})");
    assert!(took < std::time::Duration::from_secs(10), "flush took {took:?}");
    let (_, status) = c.run(dir, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (status["pending_events"].as_u64(), status["uncommitted_files"].as_u64()),
        (Some(0), Some(0)),
        "committed locally before trying to push: {status}"
    );
    assert_eq!(status["ahead"], 1);
}

#[test]
fn a_sync_with_nothing_new_leaves_the_view_alone_but_rebuilds_one_removed_or_overwritten() {
    use std::os::unix::fs::MetadataExt;
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.record(dir, &[event_line(0, 1), event_line(0, 2)]);
    c.sync_until_ok(dir);
    let file = dir.join(FILE);
    let want = read_json(&file);
    let before = std::fs::metadata(&file).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.sync_until_ok(dir);
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!((before.ino(), before.mtime_nsec()), (after.ino(), after.mtime_nsec()), "not written again");
    // Removed or overwritten by someone: the next sync writes it again.
    std::fs::remove_file(&file).unwrap();
    c.sync_until_ok(dir);
    assert_eq!(read_json(&file), want);
    std::fs::write(&file, b"{}").unwrap();
    c.sync_until_ok(dir);
    assert_eq!(read_json(&file), want);
    // Something new: the view follows.
    c.record(dir, &[event_line(0, 3)]);
    c.sync_until_ok(dir);
    assert_eq!(read_json(&file)["totals"]["requests"], 3);
}

/// A view overwritten with content of the same size and the same modification time (an
/// application's write within one clock tick) is written again by the next sync.
#[test]
fn a_view_overwritten_with_the_same_size_and_time_is_rebuilt() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    c.record(dir, &[event_line(0, 1), event_line(0, 2)]);
    c.sync_until_ok(dir);
    c.sync_until_ok(dir);
    let file = dir.join(FILE);
    let want = std::fs::read(&file).unwrap();
    let when = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mut other = want.clone();
    let at = other.iter().position(|&b| b == b'1').unwrap();
    other[at] = b'2';
    std::fs::write(&file, &other).unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(when).unwrap();
    c.sync_until_ok(dir);
    assert_eq!(std::fs::read(&file).unwrap(), want);
}

/// A remote that refuses the update itself (a hook, a protected branch) is not a race
/// another push won: the sync says so at once (exit 3, nothing lost), without retrying.
#[test]
fn a_push_the_remote_refuses_is_said_to_be_refused_not_retried() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let hook = c.remote.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho refused by policy >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    c.record(dir, &[r#"{"id":"a","model":"m","input_tokens":1}"#.to_string()]);
    let t = std::time::Instant::now();
    let out = c.tally(dir).arg("sync").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("refused the update") && err.contains("pre-receive hook declined"), "{err}");
    assert!(!err.contains("others kept pushing"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "not retried with backoff");
    std::fs::remove_file(&hook).unwrap();
    let out = c.tally(dir).arg("sync").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = c.env.git(&c.remote, &["log", "-1", "--format=%s", "main"]);
    assert!(log.contains("usage: 1 event from"), "{log}");
}
