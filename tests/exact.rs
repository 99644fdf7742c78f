//! Exact under any history (issue 9, SPEC §4b): each row of the table of failures
//! as a scenario through real git, a bare `file://` remote and the real binary. Expected
//! figures come from what each scenario did (the requests it served or recorded), and,
//! where the format allows, the whole document is compared with one machine applying
//! every request once.

use crate::common::{diff, have, pretty, read_json, Env};
use chrono::{DateTime, Duration};
use git_tally::event::Event;
use git_tally::profile::{self, Profile};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;

const FILE: &str = "usage/usage.json";

/// What a command printed and how it exited.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A bare remote and the machines cloned from it.
struct World {
    env: Env,
    remote: PathBuf,
    fresh: std::cell::Cell<usize>,
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let remote = env.path().join("remote.git");
        env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
        World { env, remote, fresh: std::cell::Cell::new(0) }
    }

    fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// A new clone of the remote, as machine `name` (`tally.device`), with `config`.
    fn machine(&self, name: &str, config: &[(&str, &str)]) -> PathBuf {
        let dir = self.env.path().join(name);
        self.env.git(self.env.path(), &["clone", "-q", &self.url(), dir.to_str().unwrap()]);
        self.env.git(&dir, &["config", "commit.gpgsign", "false"]);
        self.env.git(&dir, &["config", "tally.device", name]);
        for (k, v) in config {
            self.env.git(&dir, &["config", k, v]);
        }
        std::fs::create_dir_all(dir.join("usage")).unwrap();
        dir
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Out {
        let out = self.env.command(dir).args(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `git tally ARGS`, which must succeed.
    fn ok(&self, dir: &Path, args: &[&str]) -> Out {
        let out = self.run(dir, args);
        assert_eq!(out.code, 0, "git tally {} in {}:\n{}", args.join(" "), dir.display(), out.text());
        out
    }

    fn sync(&self, dir: &Path) -> Out {
        self.ok(dir, &["sync"])
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.env.git(dir, args)
    }

    /// `record` with these events on stdin.
    fn record(&self, dir: &Path, events: &[Value]) -> Out {
        let mut c = self.env.command(dir);
        c.arg("record").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let out = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_eq!(out.code, 0, "record in {}: {}", dir.display(), out.text());
        out
    }

    /// The usage file of a machine (the view git-tally wrote after its last pull).
    fn view(&self, dir: &Path) -> Value {
        read_json(&dir.join(FILE))
    }

    /// A new clone of the remote after its first pull: its view (what anyone cloning the
    /// remote now sees) and the clone.
    fn fresh(&self, config: &[(&str, &str)]) -> (Value, PathBuf) {
        let n = self.fresh.get();
        self.fresh.set(n + 1);
        let dir = self.machine(&format!("fresh{n}"), config);
        self.ok(&dir, &["pull"]);
        (self.view(&dir), dir)
    }
}

/// Request `i` of machine `m`: a unique instant, id, and token counts.
fn request(m: usize, i: usize) -> Value {
    let t0 = DateTime::parse_from_rfc3339("2026-11-02T08:00:00Z").unwrap();
    let ts = t0 + Duration::seconds((i * 8 + m) as i64 * 61);
    json!({
        "id": format!("m{m}-r{i}"), "timestamp": ts.to_rfc3339(),
        "api": (["key-a", "key-b"][m % 2]), "provider": "openai",
        "model": (["gpt-5", "gpt-5-mini"][i % 2]),
        "input_tokens": 100 + i, "output_tokens": 10 + m,
        "source": format!("m{m}"), "auth_index": "0", "status": 200, "cost_usd": 0.0,
    })
}

fn requests(m: usize, range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(|i| request(m, i)).collect()
}

fn event(v: &Value) -> Event {
    Event::parse(&v.to_string(), chrono::Utc::now().fixed_offset(), "x").unwrap()
}

/// An application that keeps its statistics in memory and rewrites the whole file.
struct App {
    profile: &'static Profile,
    memory: Value,
    file: PathBuf,
}

impl App {
    fn new(profile: &str, dir: &Path) -> App {
        let profile = profile::by_name(profile).unwrap();
        App { profile, memory: (profile.empty)(), file: dir.join(FILE) }
    }

    fn count(&mut self, served: &[Value]) {
        for v in served {
            (self.profile.apply.unwrap())(&mut self.memory, &event(v)).unwrap();
        }
    }

    /// Serves requests and writes the file in place.
    fn serve(&mut self, served: &[Value]) {
        self.count(served);
        std::fs::write(&self.file, serde_json::to_vec_pretty(&self.memory).unwrap()).unwrap();
    }

    /// Serves requests and writes the file as many applications do: a temporary file
    /// beside it, renamed over it.
    fn serve_by_rename(&mut self, served: &[Value]) {
        self.count(served);
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.memory).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    /// A restart: statistics in memory only, so it starts from nothing.
    fn restart(&mut self) {
        self.memory = (self.profile.empty)();
    }

    /// Loads the file (an application that re-reads after a pull).
    fn reread(&mut self) {
        self.memory = read_json(&self.file);
    }
}

/// One machine applying every request once, in time order.
fn truth(profile: &str, all: &[Value]) -> Value {
    let p = profile::by_name(profile).unwrap();
    let mut events: Vec<Event> = all.iter().map(event).collect();
    events.sort_by_key(|e| e.timestamp);
    let mut doc = (p.empty)();
    for e in &events {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    doc
}

/// What a usage file counts, read from the format's own fields: requests, records it
/// lists, input + output tokens.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Counts {
    requests: u64,
    listed: u64,
    tokens: u64,
}

fn n(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("{path} in {}", pretty(v)))
}

fn counts(profile: &str, v: &Value) -> Counts {
    let len = |p: &str| v.pointer(p).and_then(Value::as_array).map_or(0, |a| a.len() as u64);
    match profile {
        "cliproxyapi" => {
            let u = if v.get("usage").is_some() { &v["usage"] } else { v };
            let mut listed = 0;
            for api in u["apis"].as_object().into_iter().flatten() {
                for model in api.1["models"].as_object().into_iter().flatten() {
                    listed += model.1["details"].as_array().map_or(0, |d| d.len() as u64);
                }
            }
            Counts { requests: n(u, "/total_requests"), listed, tokens: n(u, "/total_tokens") }
        }
        "proxypal-aggregate" => Counts {
            requests: n(v, "/totalRequests"),
            listed: 0,
            tokens: n(v, "/totalTokensIn") + n(v, "/totalTokensOut"),
        },
        "proxypal-history" => Counts {
            requests: len("/requests"),
            listed: len("/requests"),
            tokens: n(v, "/totalTokensIn") + n(v, "/totalTokensOut"),
        },
        "ccu-usage" => Counts {
            requests: n(v, "/statistics/total_records"),
            listed: len("/records"),
            tokens: n(v, "/statistics/total_tokens"),
        },
        "tally" => Counts {
            requests: n(v, "/totals/requests"),
            listed: len("/recent"),
            tokens: n(v, "/totals/input_tokens") + n(v, "/totals/output_tokens"),
        },
        other => panic!("no counts for {other}"),
    }
}

/// What `served` must count in `profile`: every request once, each listed where the
/// format lists requests (up to its limit).
fn expected(profile: &str, served: &[Value]) -> Counts {
    let tokens =
        served.iter().map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap()).sum();
    let requests = served.len() as u64;
    let listed = match profile {
        "proxypal-aggregate" => 0,
        "proxypal-history" | "tally" => requests.min(500),
        _ => requests,
    };
    Counts { requests, listed, tokens }
}

/// Every machine's view and a fresh clone's count `served` once; where the format is
/// fully determined by its requests, each equals one machine applying them.
fn assert_exact(w: &World, profile: &str, machines: &[&PathBuf], served: &[Value], case: &str) {
    let want = expected(profile, served);
    let (fresh, _) = w.fresh(&[]);
    let views = machines.iter().map(|d| (d.display().to_string(), w.view(d))).chain([("a fresh clone".into(), fresh)]);
    for (what, got) in views {
        assert_eq!(counts(profile, &got), want, "{case}: {what}:\n{}", pretty(&got));
        if matches!(profile, "cliproxyapi" | "proxypal-aggregate") {
            let t = truth(profile, served);
            assert!(got == t, "{case}: {what} differs from one machine:\n{}", diff(&pretty(&t), &pretty(&got)));
        }
    }
}

/// `git tally check` accepts the usage file.
fn assert_checks(w: &World, dir: &Path) {
    let out = w.run(dir, &["check", FILE]);
    assert_eq!(out.code, 0, "check in {}: {}", dir.display(), out.text());
}

// Row 1 ---------------------------------------------------------------------------------

/// A new machine pulls the others' usage, then its proxy starts empty (it never reads the
/// file) and serves 4 requests: those 4 add to the 3 the other machine served.
#[test]
fn a_new_machines_proxy_adds_its_requests_to_the_others() {
    for profile in ["cliproxyapi", "proxypal-history", "ccu-usage"] {
        let w = World::new();
        let m0 = w.machine("m0", &[]);
        let mut app0 = App::new(profile, &m0);
        let mut served = requests(0, 0..3);
        app0.serve(&served);
        w.sync(&m0);

        let m1 = w.machine("m1", &[]);
        w.ok(&m1, &["pull"]);
        assert_eq!(counts(profile, &w.view(&m1)), expected(profile, &served), "{profile}: the new machine's view");
        let mut app1 = App::new(profile, &m1);
        let new = requests(1, 0..4);
        app1.serve(&new);
        served.extend(new);
        w.sync(&m1);
        w.sync(&m0);
        assert_checks(&w, &m0);
        assert_checks(&w, &m1);
        assert_exact(&w, profile, &[&m0, &m1], &served, profile);
    }
}

#[test]
fn a_new_machines_recorded_requests_add_to_the_others() {
    let w = World::new();
    let m0 = w.machine("m0", &[]);
    let mut served = requests(0, 0..3);
    w.record(&m0, &served);
    w.sync(&m0);
    let m1 = w.machine("m1", &[]);
    w.ok(&m1, &["pull"]);
    let new = requests(1, 0..4);
    w.record(&m1, &new);
    served.extend(new);
    w.sync(&m1);
    w.sync(&m0);
    assert_checks(&w, &m1);
    assert_exact(&w, "tally", &[&m0, &m1], &served, "record");
}

/// A machine cloned before anyone pushed usage knows no format yet: its first pull
/// brings the others' ledger in, and its first view is written in their format (the
/// proxy there reads it), not in the native default.
#[test]
fn a_clone_made_before_any_usage_was_pushed_writes_the_others_format() {
    for profile in ["cliproxyapi", "proxypal-aggregate"] {
        let w = World::new();
        let (m0, m1) = (w.machine("m0", &[]), w.machine("m1", &[]));
        let served = requests(0, 0..3);
        App::new(profile, &m0).serve(&served);
        w.sync(&m0);
        w.ok(&m1, &["pull"]);
        assert_checks(&w, &m1);
        assert_eq!(profile::detect(&[Some(&w.view(&m1))]).name, profile, "{}", pretty(&w.view(&m1)));
        assert_exact(&w, profile, &[&m0, &m1], &served, profile);
    }
}

// Row 2 ---------------------------------------------------------------------------------

/// A proxy restarts (its statistics were in memory) and serves more than it had before
/// its next write: nothing in the file's counters tells a restart, its requests do.
#[test]
fn a_restarted_proxy_that_outgrew_its_last_write_adds_every_request() {
    for profile in ["cliproxyapi", "proxypal-history", "ccu-usage"] {
        let w = World::new();
        let m0 = w.machine("m0", &[]);
        let m1 = w.machine("m1", &[]);
        let mut served = requests(1, 0..3);
        App::new(profile, &m1).serve(&served);
        w.sync(&m1);

        let mut app = App::new(profile, &m0);
        let before = requests(0, 0..2);
        app.serve(&before);
        w.sync(&m0);
        app.restart();
        let after = requests(0, 2..5);
        app.serve(&after);
        served.extend(before);
        served.extend(after);
        w.sync(&m0);
        w.sync(&m1);
        assert_exact(&w, profile, &[&m0, &m1], &served, profile);
    }
}

// Row 10 --------------------------------------------------------------------------------

/// Two proxies number their own requests: `req-1` on each machine is two requests, and
/// neither machine's tokens are lost.
#[test]
fn the_same_id_on_two_machines_is_two_requests() {
    for profile in ["tally", "cliproxyapi"] {
        let w = World::new();
        let m0 = w.machine("m0", &[("tally.profile", profile)]);
        let m1 = w.machine("m1", &[("tally.profile", profile)]);
        let mut a = request(0, 0);
        let mut b = request(1, 1);
        a["id"] = json!("req-1");
        b["id"] = json!("req-1");
        w.record(&m0, std::slice::from_ref(&a));
        w.record(&m1, std::slice::from_ref(&b));
        // A retry on one machine is still one request there.
        w.record(&m1, std::slice::from_ref(&b));
        for d in [&m0, &m1, &m0] {
            w.sync(d);
        }
        assert_exact(&w, profile, &[&m0, &m1], &[a, b], profile);
    }
}

/// Makes the next fetch of `dir` first put `bytes` in its usage file: an application
/// writing while a sync talks to the remote (git runs the remote's upload-pack through
/// this script).
fn write_during_next_fetch(w: &World, dir: &Path, bytes: &[u8]) -> PathBuf {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let next = w.env.path().join(format!("{name}-next.json"));
    std::fs::write(&next, bytes).unwrap();
    let script = w.env.path().join(format!("{name}-upload-pack"));
    let text = format!(
        "#!/bin/sh\nif [ -f '{n}' ]; then mv '{n}' '{f}'; fi\nexec git upload-pack \"$@\"\n",
        n = next.display(),
        f = dir.join(FILE).display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    w.git(dir, &["config", "remote.origin.uploadpack", script.to_str().unwrap()]);
    next
}

// Row 3 ---------------------------------------------------------------------------------

/// `tally.appReads = after-pull`: the application re-reads the file git-tally leaves
/// after a pull — but writes again before git-tally gets to leave one (its second write
/// lands while the sync fetches, so the view is not written back). That second write
/// started from the first, not from what it last read: its requests count once.
#[test]
fn an_application_writing_twice_between_pulls_counts_each_request_once() {
    let p = "proxypal-aggregate";
    let w = World::new();
    let cfg = [("tally.appReads", "after-pull")];
    let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
    let mut served = requests(1, 0..5);
    App::new(p, &m1).serve(&served);
    w.sync(&m1);
    w.sync(&m0);
    let mut app = App::new(p, &m0);
    app.reread();
    assert_eq!(counts(p, &app.memory), expected(p, &served), "m0's application read the others' usage");

    let first = requests(0, 0..3);
    app.serve(&first);
    let second = requests(0, 3..5);
    app.count(&second);
    let next = write_during_next_fetch(&w, &m0, &serde_json::to_vec_pretty(&app.memory).unwrap());
    w.sync(&m0);
    assert!(!next.exists(), "the second write landed during the sync");
    assert_eq!(read_json(&m0.join(FILE)), app.memory, "git-tally left the application's second write alone");
    // Nothing was pulled into the file since: the application goes on from its own write.
    let third = requests(0, 5..6);
    app.serve(&third);
    for d in [&m0, &m1, &m0] {
        w.sync(d);
    }
    served.extend(first);
    served.extend(second);
    served.extend(third);
    assert_exact(&w, p, &[&m0, &m1], &served, "after-pull");
}

// Row 4 ---------------------------------------------------------------------------------

/// The user reverts the same usage commit on two machines and merges with their own
/// `git pull` (the driver installed): a device's usage only grows, so after the next
/// syncs every request counts once — reverted or not, merged twice or not.
#[test]
fn the_same_usage_commit_reverted_on_two_machines_and_merged_by_git_pull_counts_once() {
    let w = World::new();
    let (m0, m1) = (w.machine("m0", &[]), w.machine("m1", &[]));
    for d in [&m0, &m1] {
        w.ok(d, &["install", "--local-attributes"]);
    }
    let mut recorded = requests(0, 0..10);
    w.record(&m0, &recorded);
    w.sync(&m0);
    let more = requests(0, 10..12);
    w.record(&m0, &more);
    recorded.extend(more);
    w.sync(&m0);
    let c = w.git(&m0, &["rev-parse", "HEAD"]).trim().to_string();
    w.sync(&m1);
    assert_eq!(w.git(&m1, &["rev-parse", "HEAD"]).trim(), c);

    w.git(&m0, &["revert", "--no-edit", &c]);
    w.git(&m0, &["push", "-q", "origin", "main"]);
    // m0 goes on recording: its sync commits its usage again on top of the revert.
    let later = requests(0, 12..13);
    w.record(&m0, &later);
    recorded.extend(later);
    w.sync(&m0);
    w.git(&m1, &["revert", "--no-edit", &c]);
    let pulled = w.env.git_output(&m1, &["pull", "--no-rebase", "--no-edit", "-q", "origin", "main"]);
    assert!(pulled.status.success(), "git pull: {}", String::from_utf8_lossy(&pulled.stderr));
    w.git(&m1, &["push", "-q", "origin", "main"]);
    w.git(&m0, &["pull", "-q", "--no-rebase", "--no-edit", "origin", "main"]);
    for d in [&m0, &m1, &m0] {
        w.sync(d);
    }
    assert_exact(&w, "tally", &[&m0, &m1], &recorded, "reverted twice");
}

// Row 5 ---------------------------------------------------------------------------------

/// The hooks installed, the user commits everything (`git commit -a`) while the
/// application's file holds a stale write (it never re-reads, so it lacks the other
/// machine's requests): views are not tracked, so the commit holds no usage, and the
/// next sync ingests the write. With `tally.commitView` the stale write is committed,
/// and the next sync commits the view of the ledger over it.
#[test]
fn git_commit_all_of_a_stale_application_write_loses_nothing() {
    let p = "proxypal-aggregate";
    for commit_view in [false, true] {
        let w = World::new();
        let cfg = [("tally.commitView", if commit_view { "true" } else { "false" })];
        let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
        w.ok(&m0, &["hooks", "install"]);
        w.ok(&m0, &["install", "--local-attributes"]);
        std::fs::write(m0.join("notes.txt"), "notes\n").unwrap();
        w.git(&m0, &["add", "notes.txt"]);
        w.env.commit(&m0, "notes");
        let mut app0 = App::new(p, &m0);
        let mut served = requests(0, 0..4);
        app0.serve(&served);
        w.sync(&m0);
        let theirs = requests(1, 0..3);
        App::new(p, &m1).serve(&theirs);
        w.sync(&m1);
        w.sync(&m0);
        assert_eq!(counts(p, &w.view(&m0)).requests, 7);
        let mine = requests(0, 4..7);
        app0.serve(&mine);
        served.extend(theirs);
        served.extend(mine);
        std::fs::write(m0.join("notes.txt"), "notes\nmore notes\n").unwrap();
        w.git(&m0, &["commit", "-q", "-a", "-m", "my notes"]);
        let committed = w.git(&m0, &["show", "--name-only", "--format=", "HEAD"]);
        if !commit_view {
            assert_eq!(committed.trim(), "notes.txt", "only the notes were committed");
        }
        for d in [&m0, &m1, &m0] {
            w.sync(d);
        }
        let case = format!("commitView={commit_view}");
        assert_exact(&w, p, &[&m0, &m1], &served, &case);
        if commit_view {
            let head = w.git(&m0, &["show", &format!("HEAD:{FILE}")]);
            let head: Value = serde_json::from_str(&head).unwrap();
            assert_eq!(counts(p, &head), expected(p, &served), "{case}: the committed view");
        }
    }
}

// Row 6 ---------------------------------------------------------------------------------

/// Someone squashes the remote's history into one commit and force-pushes it. Each clone
/// says so on its next sync and joins states: nothing of its history is replayed onto the
/// new one, so nothing counts twice — not the synced usage, not the unsynced.
fn squashed_and_force_pushed(profile: &str) {
    let w = World::new();
    let cfg: Vec<(&str, &str)> = if profile == "tally" { vec![("tally.profile", "tally")] } else { vec![] };
    let ms: Vec<PathBuf> = (0..3).map(|m| w.machine(&format!("m{m}"), &cfg)).collect();
    let mut apps: Vec<App> = ms.iter().map(|d| App::new(profile, d)).collect();
    let mut served = Vec::new();
    let mut next = [0usize; 3];
    let mut serve = |m: usize, k: usize, apps: &mut Vec<App>, served: &mut Vec<Value>| {
        let new = requests(m, next[m]..next[m] + k);
        next[m] += k;
        if profile == "tally" {
            w.record(&ms[m], &new);
        } else {
            apps[m].serve(&new);
        }
        served.extend(new);
    };
    for round in 0..2 {
        for (m, d) in ms.iter().enumerate() {
            serve(m, 2 + m + round, &mut apps, &mut served);
            w.sync(d);
        }
    }
    // m2 has usage it has not synced when the remote is rewritten.
    serve(2, 3, &mut apps, &mut served);
    w.ok(&ms[2], &["pull"]);
    let sq = w.env.path().join("squasher");
    w.git(w.env.path(), &["clone", "-q", &w.url(), sq.to_str().unwrap()]);
    w.git(&sq, &["checkout", "-q", "--orphan", "squashed"]);
    w.env.commit(&sq, "squash the history");
    w.git(&sq, &["push", "-q", "--force", "origin", "squashed:main"]);
    for (m, d) in ms.iter().enumerate() {
        serve(m, 1, &mut apps, &mut served);
        let out = w.sync(d);
        assert!(out.text().contains("rewritten"), "{profile}: m{m} says the upstream was rewritten:\n{}", out.text());
    }
    for d in ms.iter().chain(ms.iter()) {
        w.sync(d);
    }
    let refs: Vec<&PathBuf> = ms.iter().collect();
    assert_exact(&w, profile, &refs, &served, &format!("{profile}, squashed"));
}

#[test]
fn a_squashed_and_force_pushed_remote_counts_every_request_once() {
    squashed_and_force_pushed("tally");
}

#[test]
fn a_squashed_and_force_pushed_remote_counts_every_proxypal_request_once() {
    squashed_and_force_pushed("proxypal-aggregate");
}

// Row 7 ---------------------------------------------------------------------------------

/// A usage commit made on a branch is cherry-picked onto main; later the branch, which
/// went on counting, is merged into main (the driver installed): each request once.
fn cherry_picked_then_merged(profile: &str, in_commit: usize) {
    let w = World::new();
    let cfg: Vec<(&str, &str)> = if profile == "tally" { vec![("tally.profile", "tally")] } else { vec![] };
    let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
    for d in [&m0, &m1] {
        w.ok(d, &["install", "--local-attributes"]);
    }
    let (mut app0, mut app1) = (App::new(profile, &m0), App::new(profile, &m1));
    let serve = |d: &Path, app: &mut App, new: Vec<Value>, served: &mut Vec<Value>| {
        if profile == "tally" {
            w.record(d, &new);
        } else {
            app.serve(&new);
        }
        served.extend(new);
    };
    let mut served = Vec::new();
    serve(&m1, &mut app1, requests(1, 0..2), &mut served);
    w.sync(&m1);
    w.sync(&m0);
    w.git(&m0, &["checkout", "-q", "-b", "side"]);
    w.git(&m0, &["push", "-q", "-u", "origin", "side"]);
    serve(&m0, &mut app0, requests(0, 0..in_commit), &mut served);
    w.sync(&m0);
    let picked = w.git(&m0, &["rev-parse", "HEAD"]).trim().to_string();
    w.git(&m1, &["fetch", "-q", "origin"]);
    w.git(&m1, &["cherry-pick", &picked]);
    w.sync(&m1);
    // The branch goes on counting, then is merged.
    serve(&m0, &mut app0, requests(0, in_commit..in_commit + 2), &mut served);
    w.sync(&m0);
    w.git(&m1, &["fetch", "-q", "origin"]);
    let merged = w.env.git_output(&m1, &["merge", "--no-edit", "-q", "origin/side"]);
    assert!(
        merged.status.success(),
        "git merge: {}{}",
        String::from_utf8_lossy(&merged.stdout),
        String::from_utf8_lossy(&merged.stderr)
    );
    w.sync(&m1);
    w.git(&m0, &["checkout", "-q", "main"]);
    for d in [&m0, &m1, &m0] {
        w.sync(d);
    }
    assert_exact(&w, profile, &[&m0, &m1], &served, &format!("{profile}, cherry-picked then merged"));
}

#[test]
fn a_cherry_picked_usage_commit_later_merged_counts_once() {
    cherry_picked_then_merged("proxypal-aggregate", 1);
}

#[test]
fn a_cherry_picked_commit_of_more_than_500_requests_later_merged_counts_once() {
    cherry_picked_then_merged("tally", 600);
}

// Row 8 ---------------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Requests and output tokens of transcript lines as Claude Code means them: a streamed
/// message (same `message.id` and `requestId` on several lines) is one request whose
/// usage is its last line's.
fn claude_truth(text: &str) -> (u64, u64) {
    let mut last: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(out) = v.pointer("/message/usage/output_tokens").and_then(Value::as_u64) {
            let key = (v["message"]["id"].as_str().unwrap().to_string(), v["requestId"].as_str().unwrap().to_string());
            last.insert(key, out);
        }
    }
    (last.len() as u64, last.values().sum())
}

fn stats_totals(w: &World, dir: &Path) -> Value {
    let out = w.ok(dir, &["stats", "--json", "--timezone", "UTC"]);
    serde_json::from_str::<Value>(&out.stdout).unwrap()["totals"].clone()
}

/// `import claude-code` while a message is still streaming (its line carries the usage
/// so far: 2 output tokens), synced; then again once it finished (418): the message is one
/// request with its final usage — not the two versions summed, not the final one dropped
/// as a retry — on this machine, on another, and in a fresh clone.
#[test]
fn a_message_imported_while_streaming_counts_its_final_usage_once() {
    let w = World::new();
    let cfg = [("tally.profile", "tally")];
    let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
    let data = w.env.path().join("claude");
    let project = data.join("projects/-home-dev-work-usage-sync");
    std::fs::create_dir_all(&project).unwrap();
    let transcript = project.join("3f6a9c2e-8b1d-4e57-a0c4-91d2e7b5f318.jsonl");
    let begun = std::fs::read_to_string(fixture("claude-code-streaming/begun.jsonl")).unwrap();
    let finished = std::fs::read_to_string(fixture("claude-code-streaming/finished.jsonl")).unwrap();
    let all = format!("{begun}{finished}");
    let (streaming_requests, streaming_output) = claude_truth(&begun);
    let (requests, output) = claude_truth(&all);
    assert_eq!((streaming_requests, streaming_output, requests), (1, 2, 2), "the fixture is what this test says");

    std::fs::write(&transcript, &begun).unwrap();
    w.ok(&m0, &["import", "claude-code", data.to_str().unwrap()]);
    w.sync(&m0);
    w.sync(&m1);
    assert_eq!(stats_totals(&w, &m1)["output_tokens"], streaming_output, "the message so far");
    std::fs::write(&transcript, &all).unwrap();
    w.ok(&m0, &["import", "claude-code", data.to_str().unwrap()]);
    // Read again from the start (the offsets lost): nothing changes.
    std::fs::remove_file(&transcript).unwrap();
    std::fs::write(&transcript, &all).unwrap();
    w.ok(&m0, &["import", "claude-code", data.to_str().unwrap()]);
    for d in [&m0, &m1] {
        w.sync(d);
    }
    let (_, fresh) = w.fresh(&cfg);
    for d in [&m0, &m1, &fresh] {
        let t = stats_totals(&w, d);
        assert_eq!(
            (t["requests"].as_u64(), t["output_tokens"].as_u64()),
            (Some(requests), Some(output)),
            "{}",
            d.display()
        );
    }
    assert_eq!(output, 418 + 96, "418 is the streamed message's final output, 96 the other's");
}

// Row 9 ---------------------------------------------------------------------------------

/// Two distinct requests that are equal in every field CLIProxyAPI identifies a request
/// by (same second, same tokens, same account) are two requests: recorded, written by the
/// proxy, or merged by the driver, another machine's request merged in gives 3 requests
/// and 3 details.
#[test]
fn two_identical_requests_on_one_machine_stay_two_through_a_merge() {
    let p = "cliproxyapi";
    let mut twin_a = request(0, 0);
    twin_a.as_object_mut().unwrap().remove("id");
    let twin_b = twin_a.clone();
    let other = request(1, 0);
    let served = vec![twin_a.clone(), twin_b.clone(), other.clone()];

    // Recorded (ids given by git-tally), and written by the proxy itself.
    for file_mode in [false, true] {
        let w = World::new();
        let cfg: Vec<(&str, &str)> = if file_mode { vec![] } else { vec![("tally.profile", p)] };
        let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
        if file_mode {
            App::new(p, &m0).serve(&[twin_a.clone(), twin_b.clone()]);
            App::new(p, &m1).serve(std::slice::from_ref(&other));
        } else {
            w.record(&m0, &[twin_a.clone(), twin_b.clone()]);
            w.record(&m1, std::slice::from_ref(&other));
        }
        for d in [&m0, &m1, &m0] {
            w.sync(d);
        }
        assert_exact(&w, p, &[&m0, &m1], &served, &format!("file mode: {file_mode}"));
    }

    // The usage file committed and merged by the user's git with the driver.
    let env = Env::new();
    let repo = env.repo("plain");
    env.tally(&repo).args(["install", "--local-attributes"]).assert().success();
    env.commit_file(&repo, "usage.json", &serde_json::to_vec_pretty(&truth(p, &[])).unwrap(), "empty");
    env.git(&repo, &["checkout", "-q", "-b", "other"]);
    env.commit_file(&repo, "usage.json", &serde_json::to_vec_pretty(&truth(p, &[other])).unwrap(), "other");
    env.git(&repo, &["checkout", "-q", "main"]);
    let twins = truth(p, &[twin_a, twin_b]);
    assert_eq!(counts(p, &twins).listed, 2, "CLIProxyAPI lists both");
    env.commit_file(&repo, "usage.json", &serde_json::to_vec_pretty(&twins).unwrap(), "twins");
    env.git(&repo, &["merge", "-q", "--no-edit", "other"]);
    let merged = read_json(&repo.join("usage.json"));
    assert_eq!(counts(p, &merged), expected(p, &served), "{}", pretty(&merged));
    assert_eq!(merged, truth(p, &served));
}

// Row 13 --------------------------------------------------------------------------------

/// Two versions of a document of each usage format (the base, and ours with a request
/// more) and the JSON path of a counter in it.
fn documents(w: &World) -> Vec<(&'static str, Value, Value, &'static str)> {
    let one = [request(0, 0)];
    let two = [request(0, 0), request(0, 1)];
    let mut out = Vec::new();
    for (p, path) in [
        ("cliproxyapi", "/total_requests"),
        ("proxypal-aggregate", "/totalRequests"),
        ("proxypal-history", "/totalTokensIn"),
        ("ccu-usage", "/records/0/input_tokens"),
        ("tally", "/totals/requests"),
    ] {
        out.push((p, truth(p, &one), truth(p, &two), path));
    }
    let case = |p: &str, f: &str| read_json(&fixture(&format!("../cases/{p}/{f}")));
    out.push((
        "tally-v1",
        case("tally-v1", "both-add/base.json"),
        case("tally-v1", "both-add/ours.json"),
        "/totals/requests",
    ));
    // A shard of the ledger, as a sync commits it.
    let m = w.machine("shards", &[("tally.profile", "tally")]);
    w.record(&m, &one);
    w.sync(&m);
    let shard = |dir: &Path| {
        let ls = w.git(dir, &["ls-files", "usage/usage.ledger"]);
        let f = ls.lines().find(|f| f.ends_with("2026-11-02.json")).unwrap().to_string();
        (read_json(&dir.join(&f)), f)
    };
    let (base, _) = shard(&m);
    w.record(&m, &two[1..]);
    w.sync(&m);
    let (ours, _) = shard(&m);
    let cell = ours["counters"].as_object().unwrap().iter().find(|(k, _)| k.len() == 2).unwrap().0.clone();
    let path = format!("/counters/{cell}/openai/key-a/gpt-5/requests");
    assert!(ours.pointer(&path).is_some(), "{path} in {}", pretty(&ours));
    out.push(("ledger shard", base, ours, Box::leak(path.into_boxed_str())));
    out
}

/// The merge driver given a negative or a fractional counter — in theirs or in ours —
/// exits 1 and names the JSON path, for every usage format (a ccu manifest has no
/// counters); any other JSON gets the exact sum.
#[test]
fn the_merge_driver_refuses_negative_and_fractional_counters_naming_their_path() {
    let w = World::new();
    let dir = w.env.path().join("driver");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (format, base, ours, path) in documents(&w) {
        for (bad, what) in [(json!(-3), "negative"), (json!(2.5), "fractional")] {
            let mut broken = ours.clone();
            *broken.pointer_mut(path).unwrap() = bad.clone();
            for side in ["theirs", "ours"] {
                let (a, b) = if side == "theirs" { (&ours, &broken) } else { (&broken, &ours) };
                for (name, doc) in [("o.json", &base), ("a.json", a), ("b.json", b)] {
                    std::fs::write(dir.join(name), serde_json::to_vec_pretty(doc).unwrap()).unwrap();
                }
                let out = w.run(&dir, &["merge", "o.json", "a.json", "b.json", "-p", "usage/usage.json"]);
                // The counter's path; a record's own field, the record's path (records are
                // read whole).
                let key = path.rsplit('/').next().unwrap();
                let named = path.trim_start_matches('/').replace('/', ".");
                let record =
                    path.strip_prefix("/records/").map(|r| format!("records.{}", r.split('/').next().unwrap()));
                let names = out.stderr.contains(&named)
                    || out.stderr.contains(key)
                    || record.is_some_and(|r| out.stderr.contains(&format!("$.{r}")));
                if out.code != 1 || !names {
                    let got = std::fs::read_to_string(dir.join("a.json")).unwrap();
                    failures.push(format!(
                        "{format}: a {what} {path} in {side}: exit {}, {}\n  merged: {}",
                        out.code,
                        out.stderr.trim(),
                        got.chars().take(300).collect::<String>().replace('\n', " ")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the merges took a counter that cannot be:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Any other JSON (generic) may count below zero or in fractions: the exact 3-way sum.
    for (theirs, sum) in [(json!(-3), json!(-2)), (json!(2.5), json!(3.5))] {
        for (name, count) in [("o.json", json!(1)), ("a.json", json!(2)), ("b.json", theirs.clone())] {
            std::fs::write(dir.join(name), serde_json::to_vec(&json!({ "count": count })).unwrap()).unwrap();
        }
        let out = w.run(&dir, &["merge", "o.json", "a.json", "b.json", "--profile", "generic"]);
        assert_eq!(out.code, 0, "generic, theirs {theirs}: {}", out.text());
        assert_eq!(read_json(&dir.join("a.json")), json!({ "count": sum }), "generic, theirs {theirs}");
    }
}

/// The same through git: the driver installed, a branch that holds a negative counter is
/// merged — git stops with the file unmerged, and the path is named.
#[test]
fn git_merge_stops_at_a_negative_counter_and_names_it() {
    let env = Env::new();
    let repo = env.repo("plain");
    env.tally(&repo).args(["install", "--local-attributes"]).assert().success();
    let p = "cliproxyapi";
    env.commit_file(&repo, "usage.json", &serde_json::to_vec_pretty(&truth(p, &[request(0, 0)])).unwrap(), "one");
    env.git(&repo, &["checkout", "-q", "-b", "bad"]);
    let mut bad = truth(p, &[request(0, 0)]);
    bad["total_requests"] = json!(-29);
    env.commit_file(&repo, "usage.json", &serde_json::to_vec_pretty(&bad).unwrap(), "bad");
    env.git(&repo, &["checkout", "-q", "main"]);
    env.commit_file(&repo, "usage.json", &serde_json::to_vec_pretty(&truth(p, &requests(0, 0..2))).unwrap(), "two");
    let out = env.git_output(&repo, &["merge", "--no-edit", "bad"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "git merge took it: {stderr}");
    assert!(stderr.contains("total_requests"), "{stderr}");
    assert!(env.git(&repo, &["ls-files", "-u"]).contains("usage.json"), "usage.json is left unmerged");
}

// Row 14 (correctness; its cost is scripts/bench-scale.sh's) ------------------------------

/// The days-since-epoch each remembered id was last seen, moved back by `days` (the
/// binary has no clock to set: this is the state it would find `days` later).
fn age_remembered_ids(dir: &Path, days: i64) {
    let ids = dir.join(".git/tally/ids");
    for e in std::fs::read_dir(&ids).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let aged: String = text
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let s = v["s"].as_i64().expect("each remembered id says when it was last seen");
                v["s"] = json!(s - days);
                format!("{v}\n")
            })
            .collect();
        std::fs::write(&p, aged).unwrap();
    }
}

/// `record` with ids: an id replayed in a later run is a duplicate (exit 0, counted once,
/// said so), whether the first was synced or not; an id last seen longer ago than
/// `tally.idHorizon` is forgotten, so its replay counts as a new request.
#[test]
fn record_remembers_ids_across_runs_for_the_id_horizon() {
    let w = World::new();
    let m0 = w.machine("m0", &[("tally.profile", "tally"), ("tally.idHorizon", "10d")]);
    let (a, b, c) = (request(0, 0), request(0, 1), request(0, 2));
    w.record(&m0, &[a.clone(), b.clone()]);
    w.record(&m0, std::slice::from_ref(&a));
    w.sync(&m0);
    let again = w.record(&m0, &[a.clone(), b.clone()]);
    assert!(again.stdout.contains("0 events, 2 already recorded"), "{}", again.text());
    w.sync(&m0);
    assert_eq!(counts("tally", &w.view(&m0)), expected("tally", &[a.clone(), b.clone()]));

    // Nine days later `a` is still remembered; `b` was last seen eleven days ago.
    w.record(&m0, std::slice::from_ref(&c));
    w.sync(&m0);
    age_remembered_ids(&m0, 9);
    let dup = w.record(&m0, std::slice::from_ref(&a));
    assert!(dup.stdout.contains("1 already recorded"), "{}", dup.text());
    age_remembered_ids(&m0, 2);
    let forgotten = w.record(&m0, std::slice::from_ref(&b));
    assert!(
        forgotten.stdout.contains("recorded 1 event") && !forgotten.stdout.contains("already"),
        "{}",
        forgotten.text()
    );
    w.sync(&m0);
    let want = expected("tally", &[a, b.clone(), c, b]);
    let got = counts("tally", &w.view(&m0));
    assert_eq!((got.requests, got.tokens), (want.requests, want.tokens), "the forgotten id counted again");
    assert_eq!(got.listed, 3, "the recent list names an id once");
}

// SPEC §4b.3 ----------------------------------------------------------------------------

/// `reset` on one machine while another records 10 requests: 10 (the reset hides what
/// every device counted when it ran; the other's new traffic lies above it).
#[test]
fn a_reset_here_while_another_machine_records_ten_leaves_those_ten() {
    for p in ["tally", "cliproxyapi"] {
        let w = World::new();
        let cfg = [("tally.profile", p)];
        let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
        w.record(&m0, &requests(0, 0..5));
        w.sync(&m0);
        w.record(&m1, &requests(1, 0..3));
        w.sync(&m1);
        w.sync(&m0);
        w.ok(&m0, &["reset", "--yes"]);
        assert_eq!(counts(p, &w.view(&m0)).requests, 0, "{p}: the reset shows at once");
        let ten = requests(1, 3..13);
        w.record(&m1, &ten);
        for d in [&m1, &m0, &m1] {
            w.sync(d);
        }
        assert_exact(&w, p, &[&m0, &m1], &ten, &format!("{p}: reset"));
    }
}

/// `clear-history` on one machine while another records 10 requests: the aggregates are
/// the old ones plus 10, and the records listed are those 10.
#[test]
fn history_cleared_here_while_another_machine_records_ten_lists_those_ten() {
    for p in ["tally", "cliproxyapi"] {
        let w = World::new();
        let cfg = [("tally.profile", p)];
        let (m0, m1) = (w.machine("m0", &cfg), w.machine("m1", &cfg));
        let mut old = requests(0, 0..5);
        w.record(&m0, &old);
        w.sync(&m0);
        old.extend(requests(1, 0..3));
        w.record(&m1, &old[5..]);
        w.sync(&m1);
        w.sync(&m0);
        w.ok(&m0, &["clear-history", "--yes"]);
        let ten = requests(1, 3..13);
        w.record(&m1, &ten);
        for d in [&m1, &m0, &m1] {
            w.sync(d);
        }
        let all: Vec<Value> = old.iter().chain(&ten).cloned().collect();
        let (fresh, _) = w.fresh(&[]);
        for (what, got) in [("m0", w.view(&m0)), ("m1", w.view(&m1)), ("a fresh clone", fresh)] {
            let c = counts(p, &got);
            let want = expected(p, &all);
            assert_eq!((c.requests, c.tokens), (want.requests, want.tokens), "{p}: {what}: the old aggregates plus 10");
            assert_eq!(c.listed, 10, "{p}: {what} lists the 10 recorded since:\n{}", pretty(&got));
        }
    }
}

// Devices ------------------------------------------------------------------------------

fn stats_rows(w: &World, dir: &Path, by: &str) -> std::collections::BTreeMap<String, u64> {
    let out = w.ok(dir, &["stats", "--json", "--by", by, "--timezone", "UTC"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut rows = std::collections::BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        let key = r["key"].as_str().unwrap().to_string();
        assert!(rows.insert(key.clone(), r["requests"].as_u64().unwrap()).is_none(), "{key} named twice: {v}");
    }
    rows
}

/// A fresh clone's `stats` shows every device's totals, `--by device` names each machine
/// once, and renaming `tally.device` keeps its history attributed to it (under the new
/// name, the latest rename winning).
#[test]
fn a_fresh_clone_shows_every_device_once_and_a_rename_keeps_the_history() {
    let w = World::new();
    let cfg = [("tally.profile", "tally")];
    let ms: Vec<PathBuf> = (0..3).map(|m| w.machine(&format!("m{m}"), &cfg)).collect();
    let mut per: std::collections::BTreeMap<String, u64> = Default::default();
    for round in 0..2 {
        for (m, d) in ms.iter().enumerate() {
            let k = m + 1 + round;
            w.record(d, &requests(m, round * 10..round * 10 + k));
            *per.entry(format!("m{m}")).or_default() += k as u64;
            w.sync(d);
        }
    }
    let total: u64 = per.values().sum();
    let (_, fresh) = w.fresh(&cfg);
    assert_eq!(stats_totals(&w, &fresh)["requests"], total);
    assert_eq!(stats_rows(&w, &fresh, "device"), per);

    w.git(&ms[0], &["config", "tally.device", "laptop"]);
    w.record(&ms[0], &requests(0, 30..32));
    w.sync(&ms[0]);
    let old = per.remove("m0").unwrap();
    per.insert("laptop".into(), old + 2);
    for d in &ms[1..] {
        w.sync(d);
    }
    let (_, fresh) = w.fresh(&cfg);
    for d in ms.iter().chain([&fresh]) {
        assert_eq!(stats_rows(&w, d, "device"), per, "{}", d.display());
        assert_eq!(stats_totals(&w, d)["requests"], total + 2);
    }
}

/// A whole clone copied (`cp -a`, its `.git` too) is noticed on its first run and given a
/// key of its own with a warning; what the original had not synced stays the original's,
/// and after syncs both copies' requests count once each.
#[test]
fn a_copied_clone_is_rekeyed_and_both_copies_count_once() {
    let w = World::new();
    let cfg = [("tally.profile", "tally")];
    let m0 = w.machine("m0", &cfg);
    let mut all = requests(0, 0..3);
    w.record(&m0, &all);
    w.sync(&m0);
    let unsynced = requests(0, 3..5);
    w.record(&m0, &unsynced);
    all.extend(unsynced);
    let copy = w.env.path().join("copy");
    let cp = std::process::Command::new("cp").arg("-a").arg(&m0).arg(&copy).status().unwrap();
    assert!(cp.success());
    let theirs = requests(2, 0..4);
    let first = w.record(&copy, &theirs);
    assert!(first.stderr.contains("warning") && first.stderr.contains("copy"), "{}", first.text());
    all.extend(theirs);
    let mine = requests(0, 5..6);
    w.record(&m0, &mine);
    all.extend(mine);
    let quiet = w.record(&m0, &[]);
    assert!(!quiet.stderr.contains("warning"), "the original keeps its key: {}", quiet.text());
    for d in [&copy, &m0, &copy] {
        w.sync(d);
    }
    assert_exact(&w, "tally", &[&m0, &copy], &all, "copied .git");
    let devices = w.git(&m0, &["ls-tree", "--name-only", "HEAD", "usage/usage.ledger/"]);
    assert_eq!(devices.lines().count(), 2, "two devices: {devices}");
}

// Rows 11 and 12: crashes and races in file mode -------------------------------------------

/// `git tally sync` under strace with `inject` (SIGKILL at the n-th rename, or a delay on
/// each `rename`): `-o` keeps strace's own output out of the way.
fn traced_sync(w: &World, dir: &Path, strace_args: &[&str]) -> std::process::Command {
    let mut c = w.env.command_of(Path::new("strace"), dir);
    c.args(["-qq", "-o", "/dev/null"]).args(strace_args).arg(crate::common::bin()).arg("sync");
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// A sync killed (SIGKILL) at its n-th rename, for every n — before, between and after
/// saving the application's write, the ledger, its bookkeeping and the view — then run
/// again: every request the application wrote counts once, never lost, never twice.
fn killed_at_every_rename(profile: &str, test: &str) {
    if !have("strace", test) {
        return;
    }
    let w = World::new();
    let (m0, m1) = (w.machine("m0", &[]), w.machine("m1", &[]));
    let mut served = requests(1, 0..4);
    App::new(profile, &m1).serve(&served);
    w.sync(&m1);
    let mut app = App::new(profile, &m0);
    let first = requests(0, 0..3);
    app.serve(&first);
    served.extend(first);
    w.sync(&m0);
    let mut stale_locks = Vec::new();
    for n in 1.. {
        assert!(n < 200, "a sync that renames that often is not what this test expects");
        // A new request before each sync (the first three were served above).
        let new = requests(0, 2 + n..3 + n);
        app.serve(&new);
        served.extend(new);
        let kill = format!("inject=rename,renameat,renameat2:signal=SIGKILL:when={n}");
        let out = traced_sync(&w, &m0, &["-f", "-e", "trace=rename,renameat,renameat2", "-e", &kill]).output().unwrap();
        let completed = out.status.success();
        // Killed while it held one of git's own lock files (the index's, the branch's), it
        // leaves it behind as any killed git process does, and the next sync stops naming
        // it, as git does; removing it is the user's step. Nothing is lost meanwhile.
        let mut again = w.run(&m0, &["sync"]);
        for lock in [".git/index.lock", ".git/refs/heads/main.lock"] {
            if again.code != 0 && m0.join(lock).exists() {
                assert!(
                    again.stderr.contains("index.lock") || again.stderr.contains("refs/heads/main"),
                    "{}",
                    again.text()
                );
                std::fs::remove_file(m0.join(lock)).unwrap();
                stale_locks.push(format!("{lock} at rename {n}"));
                again = w.run(&m0, &["sync"]);
            }
        }
        assert_eq!(again.code, 0, "{profile}: the sync after a kill at rename {n}: {}", again.text());
        let got = counts(profile, &w.view(&m0));
        assert_eq!(got, expected(profile, &served), "{profile}: killed at rename {n}:\n{}", pretty(&w.view(&m0)));
        if completed {
            break; // n is past the last rename of a sync
        }
    }
    assert!(stale_locks.len() <= 3, "git's locks left behind: {stale_locks:?}");
    for d in [&m1, &m0] {
        w.sync(d);
    }
    assert_exact(&w, profile, &[&m0, &m1], &served, &format!("{profile}, killed at every rename"));
}

#[test]
fn a_sync_killed_at_any_rename_loses_and_doubles_no_proxy_request() {
    killed_at_every_rename("cliproxyapi", "exact::a_sync_killed_at_any_rename_loses_and_doubles_no_proxy_request");
}

#[test]
fn a_sync_killed_at_any_rename_loses_and_doubles_no_proxypal_request() {
    killed_at_every_rename(
        "proxypal-aggregate",
        "exact::a_sync_killed_at_any_rename_loses_and_doubles_no_proxypal_request",
    );
}

/// The view git-tally is about to rename into place, once it is whole: a temporary file
/// of its own holding a CLIProxyAPI document (the ledger files it writes there are not).
fn view_waiting_to_be_renamed(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir.join(".git/tally/tmp")) else { return false };
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("view-")
            && std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v.get("total_requests").is_some())
    })
}

/// The proxy writes its file (in place, or by a temporary file renamed over it) just as
/// git-tally is about to put the merged view in its place: the proxy's write is kept and
/// counted by the next sync. strace holds git-tally's `rename` (or `renameat2`) of the
/// usage file for a moment, so that the proxy's write lands exactly there.
#[test]
fn a_proxy_write_landing_during_the_write_back_is_kept() {
    let test = "exact::a_proxy_write_landing_during_the_write_back_is_kept";
    if !have("strace", test) {
        return;
    }
    let p = "cliproxyapi";
    for by_rename in [false, true] {
        let w = World::new();
        let (m0, m1) = (w.machine("m0", &[]), w.machine("m1", &[]));
        let mut served = requests(1, 0..4);
        App::new(p, &m1).serve(&served);
        w.sync(&m1);
        let mut app = App::new(p, &m0);
        let first = requests(0, 0..6);
        app.serve(&first);
        served.extend(first);
        let file = m0.join(FILE);
        let only_the_view = ["-P", file.to_str().unwrap()];
        let delay = ["-e", "trace=rename,renameat2", "-e", "inject=rename,renameat2:delay_enter=1000000"];
        let mut sync = traced_sync(&w, &m0, &[&only_the_view[..], &delay[..]].concat()).spawn().unwrap();
        let start = std::time::Instant::now();
        while !view_waiting_to_be_renamed(&m0) {
            // (strace's -P sees renameat2, which the write-back exchanges files with, not
            // rename: a write-back by rename is never held, and ends here.)
            assert!(sync.try_wait().unwrap().is_none(), "the sync ended without its write-back of the view held");
            assert!(start.elapsed() < std::time::Duration::from_secs(120), "no view written back");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let during = requests(0, 6..10);
        if by_rename {
            app.serve_by_rename(&during);
        } else {
            app.serve(&during);
        }
        served.extend(during);
        let out = sync.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for d in [&m0, &m1, &m0] {
            w.sync(d);
        }
        assert_exact(
            &w,
            p,
            &[&m0, &m1],
            &served,
            &format!("written back while the proxy wrote (by rename: {by_rename})"),
        );
    }
}
