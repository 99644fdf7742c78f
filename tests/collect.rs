//! `collect cliproxyapi` against a real `redis-server` (started by each test on a free
//! loopback port with `requirepass`, stopped when the test ends) and against an HTTP endpoint
//! in this file that pops like the proxy's management API. Every count is checked where a
//! user would read it: `stats --json` in a fresh clone after `sync`, against totals computed
//! here from the generated records.

use crate::common::{have, Env};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "mgmt-key-7Qx93";
const FIXTURE: &str = include_str!("fixtures/cliproxyapi-queue-sample.jsonl");

/// A small deterministic generator (SplitMix64), so a failing trial can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Queue records shaped as CLIProxyAPI emits them (as `shared/tools/gen_cpa_queue.py` makes
/// them): a plain api_key, client address, user agent and, for failed requests, a failure
/// body quoting a key.
fn generate(n: usize, seed: u64, prefix: &str) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut t = chrono::DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z").unwrap();
    (0..n)
        .map(|i| {
            t += chrono::Duration::milliseconds(rng.range(50, 90_000) as i64);
            let (inp, out) = (rng.range(10, 40_000), rng.range(1, 6000));
            let (reas, cached) = (rng.range(0, 1500), rng.range(0, inp));
            let failed = rng.range(0, 99) < 4;
            let model = ["claude-sonnet-4-5", "gpt-5-codex", "gemini-2.5-pro"][rng.range(0, 2) as usize];
            let provider = ["claude", "codex", "gemini"][rng.range(0, 2) as usize];
            json!({
                "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "latency_ms": rng.range(200, 90_000), "ttft_ms": rng.range(50, 3000),
                "source": format!("acct{}@example.com", rng.range(1, 4)), "auth_index": rng.range(0, 7).to_string(),
                "client_ip": format!("203.0.113.{}", rng.range(1, 254)), "x_forwarded_for": "",
                "user_agent": "claude-cli/2.1.39",
                "tokens": {"input_tokens": inp, "output_tokens": out, "reasoning_tokens": reas, "cached_tokens": cached,
                    "cache_read_tokens": cached, "cache_read_tokens_present": true, "cache_creation_tokens": 0,
                    "cache_creation_5m_tokens": 0, "cache_creation_1h_tokens": 0, "total_tokens": inp + out + reas},
                "failed": failed, "generate": false, "stream": true,
                "fail": if failed { json!({"status_code": 429, "body": "rate limited for sk-live-SECRET"}) }
                        else { json!({"status_code": 200, "body": ""}) },
                "accounting_version": 2, "token_breakdown": {},
                "provider": provider, "executor_type": "oauth",
                "model": model, "alias": model, "endpoint": "/v1/messages", "auth_type": "oauth",
                "api_key": format!("sk-live-SECRET-{}", rng.range(1, 3)),
                "request_id": format!("{prefix}{i:07}"), "reasoning_effort": "", "service_tier": "",
            })
            .to_string()
        })
        .collect()
}

/// Totals as `stats --json` names them, computed from the records themselves: each
/// request_id once; input without the cache reads.
fn expected(records: &[String]) -> BTreeMap<&'static str, u64> {
    let mut seen = HashSet::new();
    let mut t: BTreeMap<&'static str, u64> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_str(r).unwrap();
        if !seen.insert(v["request_id"].as_str().unwrap().to_string()) {
            continue;
        }
        let tok = &v["tokens"];
        let n = |k: &str| tok[k].as_u64().unwrap();
        *t.entry("requests").or_default() += 1;
        *t.entry("failed").or_default() += v["failed"].as_bool().unwrap() as u64;
        *t.entry("input_tokens").or_default() += n("input_tokens") - n("cache_read_tokens");
        *t.entry("cache_read_tokens").or_default() += n("cache_read_tokens");
        *t.entry("output_tokens").or_default() += n("output_tokens");
        *t.entry("reasoning_tokens").or_default() += n("reasoning_tokens");
        *t.entry("total_tokens").or_default() += n("total_tokens");
    }
    t
}

fn totals_of(stats: &Value) -> BTreeMap<&'static str, u64> {
    ["requests", "failed", "input_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens", "total_tokens"]
        .into_iter()
        .map(|k| (k, stats["totals"][k].as_u64().unwrap_or_else(|| panic!("no totals.{k} in {stats}"))))
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` of this test: loopback only, `requirepass`, no persistence. Killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        Redis::start_on(dir, free_port(), None)
    }

    /// On `port`; with `dbfile`, the data in it is there from the first connection on.
    fn start_on(dir: &Path, port: u16, dbfile: Option<&str>) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let mut c = Command::new("redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", KEY])
            .args(["--appendonly", "no", "--save", "", "--dir", dir.to_str().unwrap()])
            .args(["--dbfilename", dbfile.unwrap_or("unused.rdb")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("start redis-server");
        let r = Redis { child, port, dir: dir.to_path_buf() };
        let start = Instant::now();
        while r.try_client().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server on port {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_client(&self) -> Option<redis::Connection> {
        let mut c =
            redis::Client::open(format!("redis://:{KEY}@127.0.0.1:{}/", self.port)).ok()?.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    fn client(&self) -> redis::Connection {
        self.try_client().expect("connect to the test's redis-server")
    }

    fn push(&self, records: &[String]) {
        let mut c = self.client();
        for chunk in records.chunks(500) {
            redis::cmd("RPUSH").arg("usage").arg(chunk).query::<i64>(&mut c).unwrap();
        }
    }

    /// Publishes one record; how many subscribers got it.
    fn publish(c: &mut redis::Connection, record: &str) -> i64 {
        redis::cmd("PUBLISH").arg("usage").arg(record).query(c).unwrap()
    }

    fn queued(&self) -> i64 {
        redis::cmd("LLEN").arg("usage").query(&mut self.client()).unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server and starts another on the same port holding `queued` (as the proxy
    /// holds what arrived while nobody was subscribed), so that the collector finds them
    /// there however quickly it reconnects.
    fn restart_with(&mut self, queued: &[String]) {
        self.stop();
        let staging = Redis::start_on(&self.dir.join("staging"), free_port(), Some("restart.rdb"));
        staging.push(queued);
        redis::cmd("SAVE").query::<()>(&mut staging.client()).unwrap();
        drop(staging);
        std::fs::rename(self.dir.join("staging/restart.rdb"), self.dir.join("restart.rdb")).unwrap();
        *self = Redis::start_on(&self.dir.clone(), self.port, Some("restart.rdb"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Clones of one bare remote, each a device, and a key file outside all of them.
struct Machines {
    env: Env,
    url: String,
    clones: Vec<PathBuf>,
    key_file: PathBuf,
}

fn machines(n: usize) -> Machines {
    let env = Env::new();
    let remote = env.path().join("remote.git");
    env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
    let seed = env.path().join("seed");
    env.git(env.path(), &["init", "-q", "-b", "main", seed.to_str().unwrap()]);
    env.commit_file(&seed, "README", b"usage ledger\n", "init");
    env.git(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
    let url = format!("file://{}", remote.display());
    let clones = (0..n)
        .map(|i| {
            let dir = env.path().join(format!("m{i}"));
            env.git(env.path(), &["clone", "-q", &url, dir.to_str().unwrap()]);
            env.git(&dir, &["config", "commit.gpgsign", "false"]);
            env.git(&dir, &["config", "tally.device", &format!("m{i}")]);
            dir
        })
        .collect();
    let key_file = env.path().join("cpa.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Machines { env, url, clones, key_file }
}

impl Machines {
    fn collect_args(&self, url: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> =
            ["collect", "cliproxyapi", "--url", url, "--key-file", self.key_file.to_str().unwrap()]
                .map(String::from)
                .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// `collect --once`; its exit code and output.
    fn collect_once(&self, dir: &Path, url: &str, extra: &[&str]) -> (i32, String) {
        let mut args = self.collect_args(url, extra);
        args.push("--once".into());
        let out = self.env.tally(dir).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    /// A collector that runs until stopped, its stderr in a file.
    fn spawn(&self, dir: &Path, url: &str, extra: &[&str], log: &Path) -> Collector {
        let mut c = self.env.command(dir);
        c.args(self.collect_args(url, extra)).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
        Collector { child: c.spawn().unwrap(), log: log.to_path_buf() }
    }

    fn sync(&self, dir: &Path) {
        let out = self.env.tally(dir).arg("sync").output().unwrap();
        assert!(out.status.success(), "sync in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }

    /// `stats --json` (by `by`) in a fresh clone of the remote.
    fn stats_in_fresh_clone(&self, by: &str) -> Value {
        let fresh = self.env.path().join(format!("fresh-{}", Instant::now().elapsed().as_nanos() ^ rand_suffix()));
        self.env.git(self.env.path(), &["clone", "-q", &self.url, fresh.to_str().unwrap()]);
        let out = self.env.tally(&fresh).args(["stats", "--json", "--by", by]).output().unwrap();
        assert!(out.status.success(), "stats: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

struct Collector {
    child: Child,
    log: PathBuf,
}

impl Collector {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `done` holds, failing with the collector's log after 60 s.
    fn wait_for(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) {
        let start = Instant::now();
        loop {
            let log = self.log();
            if done(&log) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the collector exited ({status}) while waiting for {what}:\n{log}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}; collector log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM, then its exit code (failing after 30 s).
    fn terminate(mut self) -> (i32, String) {
        self.signal("-TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.log());
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the collector did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records made durable so far, by the collector's own account (one line per batch).
fn logged_records(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix("git-tally collect: "))
        .filter(|l| l.contains(" record(s): "))
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn queued_published_replayed_and_a_redis_restart_count_exactly_once() {
    if !have("redis-server", "queued_published_replayed_and_a_redis_restart_count_exactly_once") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let mut redis = Redis::start(&m.env.path().join("redis"));
    let records = generate(700, 7, "req-");
    let (before, rest) = records.split_at(250);
    let (published, rest) = rest.split_at(200);
    let (during_restart, after) = rest.split_at(150);
    // Queued before the collector starts, one of them twice (a replay).
    let mut queued = before.to_vec();
    queued.push(before[17].clone());
    redis.push(&queued);
    let mut collector = m.spawn(dir, &redis.url(), &["--batch", "64"], &m.env.path().join("collect.log"));
    collector.wait_for("the queue to be drained and the subscription", |l| l.contains(": subscribed"));
    assert_eq!(redis.queued(), 0);
    // Published while subscribed, with replays of queued and of published records.
    let mut pub_con = redis.client();
    let mut sent = published.to_vec();
    sent.insert(50, before[3].clone());
    sent.push(published[10].clone());
    for r in &sent {
        assert_eq!(Redis::publish(&mut pub_con, r), 1, "the collector is subscribed");
    }
    collector.wait_for("the published records", |l| logged_records(l) >= (queued.len() + sent.len()) as u64);
    // Redis restarts; what arrives meanwhile waits in its queue.
    redis.restart_with(during_restart);
    collector.wait_for("a second subscription", |l| l.matches(": subscribed").count() >= 2);
    assert_eq!(redis.queued(), 0, "the collector drained what was queued while it was away");
    let mut pub_con = redis.client();
    for r in after {
        assert_eq!(Redis::publish(&mut pub_con, r), 1);
    }
    let total = queued.len() + sent.len() + during_restart.len() + after.len();
    collector.wait_for("every record", |l| logged_records(l) >= total as u64);
    let (code, log) = collector.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("connection lost"), "the restart was noticed:\n{log}");
    m.sync(dir);
    let stats = m.stats_in_fresh_clone("day");
    assert_eq!(totals_of(&stats), expected(&records), "{log}");
    assert_eq!(stats["totals"]["requests"], 700);
}

#[test]
fn once_drains_the_sample_and_skips_a_bad_record_by_position() {
    if !have("redis-server", "once_drains_the_sample_and_skips_a_bad_record_by_position") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    let mut sample: Vec<String> = FIXTURE.lines().map(String::from).collect();
    let good = sample.clone();
    sample.insert(2, r#"{"timestamp":"not a time","model":"m","api_key":"sk-live-SECRET-bad"}"#.into());
    sample.insert(4, r#"{"support_refresh":true}"#.into());
    redis.push(&sample);
    let (code, out) = m.collect_once(dir, &redis.url(), &["--batch", "3"]);
    assert_eq!(code, 1, "a skipped record fails a one-shot run: {out}");
    assert!(out.contains("skipped queued record 3 of 3: timestamp \"not a time\" is not RFC 3339"), "{out}");
    assert!(!out.contains("SECRET"), "{out}");
    assert!(out.contains("collected 7 record(s)") && out.contains("5 new") && out.contains("1 invalid"), "{out}");
    assert_eq!(redis.queued(), 0, "the bad record did not block the queue");
    m.sync(dir);
    let stats = m.stats_in_fresh_clone("day");
    let t = totals_of(&stats);
    // The fixture's own totals (shared/README.md): 5 requests, 1 failed, 110,077 input
    // tokens with the cache reads, 17,442 output tokens.
    assert_eq!(
        (t["requests"], t["failed"], t["input_tokens"] + t["cache_read_tokens"], t["output_tokens"]),
        (5, 1, 110_077, 17_442)
    );
    assert_eq!(t, expected(&good));
}

#[test]
fn a_wrong_key_exits_2_and_pops_nothing_over_resp() {
    if !have("redis-server", "a_wrong_key_exits_2_and_pops_nothing_over_resp") {
        return;
    }
    let m = machines(1);
    let redis = Redis::start(&m.env.path().join("redis"));
    redis.push(&generate(5, 1, "w-"));
    let wrong = m.env.path().join("wrong.key");
    std::fs::write(&wrong, "not-the-key\n").unwrap();
    let out = m
        .env
        .tally(&m.clones[0])
        .args(["collect", "cliproxyapi", "--url", &redis.url(), "--key-file", wrong.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refused the management key") && err.contains("nothing was popped"), "{err}");
    assert!(!err.contains("not-the-key"), "{err}");
    assert_eq!(redis.queued(), 5);
    // Unreachable: exit 3 (transient), with what to check.
    let out = m
        .env
        .tally(&m.clones[0])
        .args(m.collect_args(&format!("redis://127.0.0.1:{}", free_port()), &["--once"]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the proxy running"));
}

#[test]
fn no_secret_reaches_the_repository_or_the_state_directory() {
    if !have("redis-server", "no_secret_reaches_the_repository_or_the_state_directory") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    let mut records: Vec<String> = FIXTURE.lines().map(String::from).collect();
    records.extend(generate(300, 3, "s-"));
    redis.push(&records);
    let (code, out) = m.collect_once(dir, &redis.url(), &[]);
    assert_eq!(code, 0, "{out}");
    m.sync(dir);
    // Every object of the repository, and every file git-tally keeps beside it.
    let objects = m.env.git(dir, &["rev-list", "--all", "--objects"]);
    let mut cat = Command::new("git")
        .args(["-C", dir.to_str().unwrap(), "cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ids: String = objects.lines().map(|l| l.split(' ').next().unwrap().to_string() + "\n").collect();
    let mut stdin = cat.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(ids.as_bytes()));
    let mut all = Vec::new();
    cat.stdout.take().unwrap().read_to_end(&mut all).unwrap();
    writer.join().unwrap().unwrap();
    assert!(cat.wait().unwrap().success());
    let mut state = Vec::new();
    for f in walk(&dir.join(".git/tally")) {
        state.extend(std::fs::read(&f).unwrap());
    }
    let mut worktree = Vec::new();
    for f in walk(&dir.join("usage")) {
        worktree.extend(std::fs::read(&f).unwrap());
    }
    assert!(all.len() > 1000 && !state.is_empty(), "the ledger was written and committed");
    for (what, bytes) in [("the repository's objects", &all), (".git/tally", &state), ("the usage files", &worktree)] {
        let text = String::from_utf8_lossy(bytes);
        for secret in ["sk-live-SECRET", KEY, "rate limited for", "203.0.113.", "claude-cli/"] {
            assert!(!text.contains(secret), "{secret:?} found in {what}");
        }
    }
    assert!(String::from_utf8_lossy(&all).contains("sha256:"), "keys are kept as fingerprints");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn keep_names_what_stays_on_this_machine() {
    if !have("redis-server", "keep_names_what_stays_on_this_machine") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    redis.push(&FIXTURE.lines().map(String::from).collect::<Vec<_>>());
    let (code, out) = m.collect_once(dir, &redis.url(), &["--keep", "fail-body", "--keep", "user_agent"]);
    assert_eq!(code, 0, "{out}");
    let kept = std::fs::read_to_string(dir.join(".git/tally/collect-kept.jsonl")).unwrap();
    assert_eq!(kept.lines().count(), 5, "{kept}");
    assert!(kept.contains("rate limited for sk-live-SECRET") && kept.contains("claude-cli/2.1.39"), "{kept}");
    assert!(!kept.contains("203.0.113.") && !kept.contains("sk-live-SECRET-"), "only what --keep names: {kept}");
    m.sync(dir);
    let committed = m.env.git(dir, &["log", "-p", "--all"]);
    assert!(
        !committed.contains("rate limited") && !committed.contains("claude-cli"),
        "kept fields are never committed"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join(".git/tally/collect-kept.jsonl")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "kept fields are readable by this user only: {mode:o}");
}

#[test]
fn sigterm_while_subscribed_writes_everything_received() {
    if !have("redis-server", "sigterm_while_subscribed_writes_everything_received") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    let collector = {
        let mut c = m.spawn(dir, &redis.url(), &[], &m.env.path().join("collect.log"));
        c.wait_for("the subscription", |l| l.contains(": subscribed"));
        c
    };
    let records = generate(400, 11, "t-");
    let mut pub_con = redis.client();
    for r in &records {
        assert_eq!(Redis::publish(&mut pub_con, r), 1);
    }
    // At once: some of these are still in the socket, some held in a batch.
    let (code, log) = collector.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(logged_records(&log), 400, "everything published before SIGTERM was written:\n{log}");
    m.sync(dir);
    assert_eq!(totals_of(&m.stats_in_fresh_clone("day")), expected(&records));
}

#[test]
fn sigkill_at_random_moments_loses_only_what_was_not_yet_written_and_doubles_nothing() {
    if !have("redis-server", "sigkill_at_random_moments_loses_only_what_was_not_yet_written_and_doubles_nothing") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    let mut pub_con = redis.client();
    // Each trial's records carry their own model name, so that `stats --by model` counts
    // each trial apart, and the same tokens, so that a doubled count would show.
    let trial_records = |trial: u64, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                json!({"timestamp": format!("2026-11-20T08:{:02}:{:02}Z", trial, i % 60), "model": format!("trial-{trial:02}"),
                    "provider": "codex", "request_id": format!("k{trial}-{i}"), "api_key": "sk-live-SECRET-k",
                    "tokens": {"input_tokens": 10, "output_tokens": 1, "total_tokens": 11}})
                .to_string()
            })
            .collect()
    };
    let mut bounds = Vec::new();
    let mut all = 0u64;
    for trial in 0..20u64 {
        let mut rng = Rng(1000 + trial);
        let records = trial_records(trial, 300);
        let (queued, published) = records.split_at(200);
        redis.push(queued);
        let log = m.env.path().join(format!("kill-{trial}.log"));
        let collector = m.spawn(dir, &redis.url(), &["--batch", "16"], &log);
        let deadline = Instant::now() + Duration::from_millis(rng.range(5, 400));
        let mut delivered = 0u64;
        let mut requeued = 0u64;
        for r in published {
            if Instant::now() >= deadline {
                break;
            }
            // As the proxy does: to the subscriber if there is one, else to the queue.
            if Redis::publish(&mut pub_con, r) == 1 {
                delivered += 1;
            } else {
                redis.push(std::slice::from_ref(r));
                requeued += 1;
            }
            std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
        }
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let log = collector.kill();
        let popped = (200 + requeued) as i64 - redis.queued();
        let handed_out = popped as u64 + delivered;
        let acknowledged = logged_records(&log);
        assert!(acknowledged <= handed_out, "trial {trial}: logged more than the server handed out:\n{log}");
        // What was never handed out, or was written: must all be there in the end.
        let at_least = acknowledged + (300 - handed_out) - (published.len() as u64 - delivered - requeued);
        bounds.push((
            trial,
            at_least,
            300 - (published.len() as u64 - delivered - requeued),
            handed_out - acknowledged,
        ));
        all += 300;
        // What was never handed out is still queued: drain it before the next trial.
        let (code, out) = m.collect_once(dir, &redis.url(), &[]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(redis.queued(), 0);
    }
    m.sync(dir);
    let stats = m.stats_in_fresh_clone("model");
    let rows: BTreeMap<String, (u64, u64)> = stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                (r["requests"].as_u64().unwrap(), r["input_tokens"].as_u64().unwrap()),
            )
        })
        .collect();
    let mut lost_total = 0;
    for (trial, at_least, at_most, in_flight) in bounds {
        let (n, input) = rows.get(&format!("trial-{trial:02}")).copied().unwrap_or_default();
        assert_eq!(input, 10 * n, "trial {trial}: every request counted once");
        assert!(n >= at_least, "trial {trial}: {n} recorded, but {at_least} were written or never handed out");
        assert!(n <= at_most, "trial {trial}: {n} recorded of {at_most} sent");
        lost_total += at_most - n;
        eprintln!("trial {trial}: {n} of {at_most} recorded; {in_flight} in flight at the kill");
        assert!(at_most - n <= in_flight, "trial {trial}: lost more than was in flight");
    }
    eprintln!("sigkill trials: {lost_total} of {all} records lost in flight (popped or delivered, not yet written)");
}

#[test]
fn two_machines_each_with_its_own_redis_converge_to_the_sum() {
    if !have("redis-server", "two_machines_each_with_its_own_redis_converge_to_the_sum") {
        return;
    }
    let m = machines(2);
    let mut all = Vec::new();
    let mut servers = Vec::new();
    for (i, dir) in m.clones.iter().enumerate() {
        let redis = Redis::start(&m.env.path().join(format!("redis{i}")));
        let records = generate(150 + 50 * i, 20 + i as u64, &format!("m{i}-"));
        redis.push(&records);
        let (code, out) = m.collect_once(dir, &redis.url(), &["--batch", "40"]);
        assert_eq!(code, 0, "{out}");
        all.extend(records);
        servers.push(redis);
    }
    for dir in m.clones.iter().chain(m.clones.iter()) {
        m.sync(dir);
    }
    let stats = m.stats_in_fresh_clone("device");
    assert_eq!(totals_of(&stats), expected(&all));
    let rows: BTreeMap<&str, u64> = stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, BTreeMap::from([("m0", 150), ("m1", 200)]));
}

/// An HTTP endpoint that pops like CLIProxyAPI's management API: the Bearer key is checked
/// before anything is popped; `count` records leave the queue with each answer.
struct Proxy {
    port: u16,
    queue: Arc<Mutex<VecDeque<String>>>,
    handed_out: Arc<Mutex<u64>>,
    /// Delay before each pop's answer (to catch a collector mid-request).
    delay: Arc<Mutex<Duration>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy { port, queue: Default::default(), handed_out: Default::default(), delay: Default::default() };
        let (queue, handed_out, delay) = (p.queue.clone(), p.handed_out.clone(), p.delay.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (queue, handed_out, delay) = (queue.clone(), handed_out.clone(), delay.clone());
                std::thread::spawn(move || serve(stream, &queue, &handed_out, &delay));
            }
        });
        p
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn push(&self, records: &[String]) {
        self.queue.lock().unwrap().extend(records.iter().cloned());
    }

    fn queued(&self) -> usize {
        self.queue.lock().unwrap().len()
    }
}

fn serve(stream: TcpStream, queue: &Mutex<VecDeque<String>>, handed_out: &Mutex<u64>, delay: &Mutex<Duration>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    auth = v.trim().to_string();
                }
            }
        }
        let path = request.split(' ').nth(1).unwrap_or("").to_string();
        let (status, body) = if auth != format!("Bearer {KEY}") {
            (401, json!({"error": "invalid management key"}).to_string())
        } else if path == "/v0/management/usage-statistics-enabled" {
            (200, json!({"usage-statistics-enabled": true}).to_string())
        } else if let Some(count) = path.strip_prefix("/v0/management/usage-queue?count=") {
            let count: usize = count.parse().unwrap();
            let items: Vec<String> = {
                let mut q = queue.lock().unwrap();
                let n = count.min(q.len());
                q.drain(..n).collect()
            };
            *handed_out.lock().unwrap() += items.len() as u64;
            std::thread::sleep(*delay.lock().unwrap());
            (200, format!("[{}]", items.join(",")))
        } else {
            (404, "404 page not found".to_string())
        };
        let head =
            format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        if out.write_all(head.as_bytes()).and_then(|_| out.write_all(body.as_bytes())).is_err() {
            return;
        }
    }
}

#[test]
fn http_pops_like_the_proxy_exactly_once() {
    let m = machines(1);
    let dir = &m.clones[0];
    let proxy = Proxy::start();
    let records = generate(450, 5, "h-");
    let (first, later) = records.split_at(300);
    let mut queued = first.to_vec();
    queued.push(first[0].clone());
    proxy.push(&queued);
    let (code, out) = m.collect_once(dir, &proxy.url(), &["--batch", "70"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(proxy.queued(), 0);
    assert!(out.contains("1 already recorded"), "{out}");
    // Polling: records that arrive over time, and a SIGTERM while a pop is in flight.
    let mut collector =
        m.spawn(dir, &proxy.url(), &["--interval", "50ms", "--batch", "25"], &m.env.path().join("h.log"));
    collector.wait_for("polling", |l| l.contains("polling the management API"));
    for chunk in later.chunks(40) {
        proxy.push(chunk);
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_until("the queue to empty", || proxy.queued() == 0);
    *proxy.delay.lock().unwrap() = Duration::from_millis(400);
    let extra = generate(5, 6, "late-");
    proxy.push(&extra);
    wait_until("a pop in flight", || proxy.queued() == 0);
    let (code, log) = collector.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(*proxy.handed_out.lock().unwrap(), 301 + 150 + 5);
    m.sync(dir);
    let mut all = records.clone();
    all.extend(extra);
    assert_eq!(totals_of(&m.stats_in_fresh_clone("day")), expected(&all), "{log}");
}

#[test]
fn http_wrong_key_exits_2_and_pops_nothing() {
    let m = machines(1);
    let proxy = Proxy::start();
    proxy.push(&generate(3, 9, "x-"));
    let out = m
        .env
        .tally(&m.clones[0])
        .env("CLIPROXYAPI_MANAGEMENT_KEY", "wrong")
        .args(["collect", "cliproxyapi", "--url", &proxy.url(), "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HTTP 401: invalid management key") && err.contains("nothing was popped"), "{err}");
    assert_eq!(proxy.queued(), 3);
    assert_eq!(*proxy.handed_out.lock().unwrap(), 0);
}

#[test]
fn the_key_never_comes_from_the_url_or_the_repository() {
    let m = machines(1);
    let dir = &m.clones[0];
    let out = m
        .env
        .tally(dir)
        .args(["collect", "cliproxyapi", "--url", "redis://:sk-secret@127.0.0.1:1", "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("must not carry the key") && !err.contains("sk-secret@"), "{err}");
    let inside = dir.join("cpa.key");
    std::fs::write(&inside, KEY).unwrap();
    let out = m
        .env
        .tally(dir)
        .args(["collect", "cliproxyapi", "--url", "redis://127.0.0.1:1", "--key-file", "cpa.key", "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("inside the usage repository"), "{err}");
    let out =
        m.env.tally(dir).args(["collect", "cliproxyapi", "--url", "redis://127.0.0.1:1", "--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no management key"));
}

#[test]
fn a_second_collector_on_the_same_proxy_is_told_so() {
    if !have("redis-server", "a_second_collector_on_the_same_proxy_is_told_so") {
        return;
    }
    let m = machines(2);
    let redis = Redis::start(&m.env.path().join("redis"));
    let mut first = m.spawn(&m.clones[0], &redis.url(), &[], &m.env.path().join("first.log"));
    first.wait_for("the subscription", |l| l.contains(": subscribed"));
    let mut second = m.spawn(&m.clones[1], &redis.url(), &[], &m.env.path().join("second.log"));
    second.wait_for("the subscription", |l| l.contains(": subscribed"));
    let (code, log) = second.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("another git-tally collect is already draining") && log.contains("Run one collector per proxy"),
        "{log}"
    );
    assert!(!first.log().contains("another git-tally"), "{}", first.log());
}

#[test]
fn check_proves_the_url_and_the_key_without_popping() {
    if !have("redis-server", "check_proves_the_url_and_the_key_without_popping") {
        return;
    }
    use git_tally::collect::{check, CollectError, Key, Source};
    let env = Env::new();
    let redis = Redis::start(&env.path().join("redis"));
    redis.push(&generate(2, 4, "c-"));
    let source = Source::parse(&redis.url()).unwrap();
    assert!(check(&source, &Key::new(KEY).unwrap()).is_ok());
    let wrong = check(&source, &Key::new("nope").unwrap()).unwrap_err();
    assert!(matches!(wrong, CollectError::Auth { .. }), "{wrong}");
    assert_eq!(wrong.exit_code(), 2);
    let proxy = Proxy::start();
    let http = Source::parse(&proxy.url()).unwrap();
    assert_eq!(check(&http, &Key::new(KEY).unwrap()).unwrap().statistics_enabled, Some(true));
    assert!(matches!(check(&http, &Key::new("nope").unwrap()), Err(CollectError::Auth { .. })));
    let gone = Source::parse(&format!("redis://127.0.0.1:{}", free_port())).unwrap();
    assert_eq!(check(&gone, &Key::new(KEY).unwrap()).unwrap_err().exit_code(), 3);
    assert_eq!(redis.queued(), 2);
}

#[test]
fn the_daemon_collects_when_tally_collect_is_set_and_pushes_it_at_shutdown() {
    if !have("redis-server", "the_daemon_collects_when_tally_collect_is_set_and_pushes_it_at_shutdown") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    for (k, v) in [
        ("tally.collect", redis.url()),
        ("tally.collectKeyFile", m.key_file.display().to_string()),
        ("tally.syncInterval", "0".into()),
        ("tally.debounce", "1s".into()),
    ] {
        m.env.git(dir, &["config", k, &v]);
    }
    // doctor: the proxy answers and takes the key.
    let out = m.env.tally(dir).arg("doctor").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("answers and accepts the key"), "doctor:\n{said}");

    let queued = generate(300, 21, "q-");
    redis.push(&queued);
    let log = m.env.path().join("daemon.log");
    let mut c = m.env.command(dir);
    c.arg("daemon").stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let mut daemon = Collector { child: c.spawn().unwrap(), log };
    daemon.wait_for("the queue drained and the subscription", |l| l.contains(": subscribed"));
    wait_until("the queued records in status", || {
        let out = m.env.tally(dir).args(["status", "--json"]).output().unwrap();
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        s["collector"]["received"] == 300 && s["collector"]["running"] == true
    });
    let published = generate(100, 22, "p-");
    let mut pub_con = redis.client();
    for r in &published {
        assert_eq!(Redis::publish(&mut pub_con, r), 1, "the daemon's collector is subscribed");
    }
    let (code, log) = daemon.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("the collector stopped") && log.contains("flush"), "{log}");
    let all: Vec<String> = queued.into_iter().chain(published).collect();
    assert_eq!(totals_of(&m.stats_in_fresh_clone("day")), expected(&all), "every record once, pushed at shutdown");
    let out = m.env.tally(dir).arg("status").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("collector    stopped;") && said.contains("400 received"), "status:\n{said}");

    // A wrong key: doctor says the collector cannot read the proxy.
    std::fs::write(&m.key_file, "not-the-key\n").unwrap();
    let out = m.env.tally(dir).arg("doctor").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("the collector cannot read the proxy"), "doctor:\n{said}");
}

/// One command of a RESP client (an array of bulk strings), or `None` at the end.
fn read_command(r: &mut impl std::io::BufRead) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::new();
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        std::io::Read::read_exact(r, &mut arg).ok()?;
        arg.truncate(len);
        args.push(arg);
    }
    Some(args)
}

/// A proxy whose subscriber connection gets `published` right after subscribing and is
/// then closed (the proxy restarting), the first time only; the queue is empty.
fn proxy_dropping_after(published: Vec<String>) -> u16 {
    fake_proxy(published, Vec::new())
}

/// A proxy as [`proxy_dropping_after`], whose first `LPOP` replies are `replies` (raw RESP).
fn fake_proxy(published: Vec<String>, replies: Vec<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let replies = std::sync::Arc::new(Mutex::new(VecDeque::from(replies)));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (published, first, replies) = (published.clone(), first.clone(), replies.clone());
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut r = std::io::BufReader::new(stream);
                while let Some(cmd) = read_command(&mut r) {
                    let reply: Vec<u8> = match cmd[0].to_ascii_uppercase().as_slice() {
                        b"SUBSCRIBE" => {
                            let mut m = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nusage\r\n:1\r\n".to_vec();
                            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                                for p in &published {
                                    m.extend(
                                        format!("*3\r\n$7\r\nmessage\r\n$5\r\nusage\r\n${}\r\n{p}\r\n", p.len())
                                            .bytes(),
                                    );
                                }
                                out.write_all(&m).unwrap();
                                let _ = out.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            m
                        }
                        b"LPOP" => replies.lock().unwrap().pop_front().unwrap_or(b"*-1\r\n".to_vec()),
                        _ => b"+OK\r\n".to_vec(),
                    };
                    if out.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Records published while the collector drains the queue, then the connection drops:
/// what was read before the drop is written, not discarded with the error.
#[test]
fn records_read_before_the_proxy_drops_the_connection_are_written() {
    let m = machines(1);
    let dir = &m.clones[0];
    let records = generate(3, 21, "drop-");
    let port = proxy_dropping_after(records.clone());
    let mut collector = m.spawn(dir, &format!("redis://127.0.0.1:{port}"), &[], &m.env.path().join("collect.log"));
    collector.wait_for("the reconnection", |l| l.contains(": subscribed"));
    let (code, log) = collector.terminate();
    assert_eq!(code, 0, "{log}");
    assert_eq!(logged_records(&log), 3, "{log}");
    m.sync(dir);
    assert_eq!(totals_of(&m.stats_in_fresh_clone("day")), expected(&records));
}

/// A pop reply of another shape than a list of bulk strings (a simple string, a nested
/// array, an integer among the records): its records are off the proxy, so they are taken
/// (before the reply is reported), and no message quotes them (a record holds keys).
#[test]
fn records_in_a_pop_reply_of_another_shape_are_taken_and_never_quoted() {
    let m = machines(1);
    let dir = &m.clones[0];
    let records: Vec<String> = generate(5, 5, "shape-")
        .into_iter()
        .map(|r| {
            let mut v: Value = serde_json::from_str(&r).unwrap();
            v["api_key"] = "sk-live-NEVERSHOWN".into();
            v.to_string()
        })
        .collect();
    let bulk = |r: &str| format!("${}\r\n{r}\r\n", r.len());
    let replies = vec![
        format!("+{}\r\n", records[0]).into_bytes(),
        format!("*2\r\n{}*1\r\n{}", bulk(&records[1]), bulk(&records[2])).into_bytes(),
        format!("*3\r\n{}:42\r\n{}", bulk(&records[3]), bulk(&records[4])).into_bytes(),
    ];
    let port = fake_proxy(Vec::new(), replies);
    let (code, out) = m.collect_once(dir, &format!("redis://127.0.0.1:{port}"), &["--batch", "1"]);
    assert_eq!(code, 2, "an integer is not a reply of the usage queue: {out}");
    assert!(out.contains("the reply holds an integer, not records"), "{out}");
    assert!(!out.contains("NEVERSHOWN"), "{out}");
    for f in walk(&dir.join(".git/tally")) {
        assert!(!std::fs::read_to_string(&f).unwrap_or_default().contains("NEVERSHOWN"), "{}", f.display());
    }
    m.sync(dir);
    assert_eq!(totals_of(&m.stats_in_fresh_clone("day")), expected(&records));
}

/// The ledger cannot be written for a while (here its journal is a file where a directory
/// belongs; a permission, a full disk): records already taken from the queue are held and
/// written once it can be, not given up on.
#[test]
fn records_taken_while_the_ledger_cannot_be_written_are_held_until_it_can() {
    if !have("redis-server", "records_taken_while_the_ledger_cannot_be_written_are_held_until_it_can") {
        return;
    }
    let m = machines(1);
    let dir = &m.clones[0];
    let redis = Redis::start(&m.env.path().join("redis"));
    let mut collector = m.spawn(dir, &redis.url(), &[], &m.env.path().join("collect.log"));
    collector.wait_for("the subscription", |l| l.contains(": subscribed"));
    let journal = dir.join(".git/tally/journal");
    let aside = dir.join(".git/tally/journal-aside");
    if journal.exists() {
        std::fs::rename(&journal, &aside).unwrap();
    }
    std::fs::write(&journal, "not a directory").unwrap();
    let records = generate(5, 33, "held-");
    let mut pub_con = redis.client();
    for r in &records {
        assert_eq!(Redis::publish(&mut pub_con, r), 1);
    }
    collector.wait_for("the write to be retried", |l| l.contains("holding them, trying again"));
    std::fs::remove_file(&journal).unwrap();
    if aside.exists() {
        std::fs::rename(&aside, &journal).unwrap();
    }
    collector.wait_for("the records to be written", |l| logged_records(l) == 5);
    let (code, log) = collector.terminate();
    assert_eq!(code, 0, "{log}");
    m.sync(dir);
    assert_eq!(totals_of(&m.stats_in_fresh_clone("day")), expected(&records));
}
