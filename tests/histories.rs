//! Exact under any history (issue 9, SPEC §4b): random histories over 3–6 clones of one
//! bare `file://` remote, driven through real git and the real binary, checked against a
//! model that knows nothing of git-tally's code — a multiset of every acknowledged request,
//! each exactly once.
//!
//! Each clone keeps three usage files: the native view (`usage/usage.json`, fed by
//! `git tally record`), a CLIProxyAPI `usage.json` (`usage/cpa.json`) and a ProxyPal
//! `aggregate.json` (`usage/aggregate.json`), the last two written by simulated applications
//! in file mode (SPEC §5b): one that never re-reads its file (and may restart empty), or
//! one that re-reads it after each pull (`tally.appReads = after-pull`; a restart re-loads
//! the file). `record` adds its events to every usage file of the clone.
//!
//! The operations mixed (see [`Op`]): `record` with and without ids, retries of an id (count
//! once), the same id on two machines (two requests), application writes and restarts,
//! `git tally sync` and `pull`, and with the merge driver installed the user's own
//! `git pull` (merge), `git pull --rebase`, `git cherry-pick` of another clone's commit,
//! the same commit on two branches merged, squashed local history, the remote's history
//! squashed or rewound and force-pushed, `git reset --hard`, and one usage commit reverted
//! identically on two clones and merged by the user. Removals are grow-only (SPEC §4b.2–3):
//! a revert of ledger state is undone by the join, so reverts leave the truth unchanged.
//!
//! After the history every clone syncs until a whole round changes nothing (bounded); then
//! every clone's views, `git tally stats --json` (totals computed here from the events, and
//! requests per device) and a fresh clone of the remote equal the truth. After each of a
//! clone's own syncs, its native view counts its own requests exactly and no other device's
//! more often than they happened.
//!
//! What the model leaves out, and why: a ProxyPal aggregate has no records, so an
//! application's first write is told apart from one that loaded the file only by its
//! counters (README, file mode); each clone's ProxyPal traffic lies on its own days, apart
//! from the recorded events, so that first write is never ambiguous. `reset` and
//! `clear-history` hide what the resetting clone knew at that moment, which depends on the
//! history; they are left to the tests that pin their semantics.
//!
//! `PROPTEST_CASES` (default 8) sets the number of histories; a failure prints the history
//! and a transcript of what each step did (`HISTORIES_TRANSCRIPT=1` prints it always).
//! Below, one fixed history per hostile family.

use crate::common::{pretty, read_json, Env};
use chrono::{DateTime, Duration, FixedOffset};
use git_tally::event::Event;
use git_tally::profile::{self, Profile};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const NATIVE: &str = "usage/usage.json";
/// The usage files of every clone, with their profiles (pinned by attribute).
const STREAMS: [(&str, &str); 3] =
    [(NATIVE, "tally"), ("usage/cpa.json", "cliproxyapi"), ("usage/aggregate.json", "proxypal-aggregate")];
/// The ledger directories, as a pathspec.
const LEDGERS: &str = "usage/*.ledger";
/// At most this many clones (copies included): instants are unique per clone below it.
const MAX_CLONES: usize = 8;
/// How many rounds of syncs the final convergence may take.
const MAX_ROUNDS: usize = 6;

/// The applications that write a usage file themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// CLIProxyAPI's `usage.json` (every counter explained by records).
    Cpa,
    /// ProxyPal's `aggregate.json` (counters only).
    ProxyPal,
}

impl App {
    fn index(self) -> usize {
        self as usize
    }

    fn file(self) -> &'static str {
        STREAMS[1 + self.index()].0
    }

    fn profile(self) -> &'static Profile {
        profile::by_name(STREAMS[1 + self.index()].1).unwrap()
    }
}

/// One step of a history. Clone numbers are taken modulo the number of clones.
#[derive(Clone, Debug)]
pub enum Op {
    /// `git tally record` of `n` new events, with ids (`req-<k>`: the same ids on every
    /// clone, which are other requests there) or without.
    Record { c: u8, n: u8, ids: bool },
    /// `record` again of an event this clone recorded with an id: a retry, counts once.
    Retry { c: u8, pick: u8 },
    /// The application serves `n` requests and rewrites its file.
    Serve { c: u8, app: App, n: u8 },
    /// The application restarts: empty if it never re-reads, else loading its file.
    Restart { c: u8, app: App },
    /// `git tally sync`; applications that re-read after a pull re-read.
    Sync { c: u8 },
    /// `git tally pull` (commits locally, integrates, does not push).
    Pull { c: u8 },
    /// `git tally sync` killed (SIGKILL) after `ms` milliseconds, wherever it is.
    KilledSync { c: u8, ms: u8 },
    /// The user's `git pull` (merge, or `--rebase`) with the driver installed.
    UserPull { c: u8, rebase: bool },
    /// `git fetch` and `git cherry-pick` of a commit of the upstream not in HEAD.
    CherryPick { c: u8, pick: u8 },
    /// One commit (of the upstream, or a local one) cherry-picked on a side branch and
    /// on the branch, and the side branch merged: the same change twice.
    Duplicate { c: u8, pick: u8 },
    /// The local commits since the upstream squashed into one.
    SquashLocal { c: u8 },
    /// The remote's history (or, `mine`, this clone's) squashed into one root commit and
    /// force-pushed.
    SquashRemote { c: u8, mine: bool },
    /// An older commit of this clone's branch force-pushed to the remote.
    RewindRemote { c: u8, back: u8 },
    /// `git reset --hard HEAD~back`.
    ResetHard { c: u8, back: u8 },
    /// The clone copied whole (`cp -a`) to a new machine, which gets its own name and its
    /// own applications (starting empty); the copy's git-tally must notice it is a copy.
    Copy { c: u8 },
    /// Clones `a` and `b` both pull, revert the same usage commit, `a` pushes, `b` pulls
    /// (merging the two reverts) and pushes.
    RevertTwice { a: u8, b: u8, pick: u8 },
    /// `git revert` of one of the last usage commits in HEAD, not pushed.
    Revert { c: u8, pick: u8 },
    /// The user puts back the ledger directories as they were `back` commits ago and
    /// commits them.
    RestoreOld { c: u8, back: u8 },
    /// The user's `git add -A && git commit`: whatever the work tree holds (before the
    /// first sync, the applications' files too).
    CommitAll { c: u8 },
}

/// A history: how many clones, which of them declare `tally.appReads = after-pull` (their
/// applications re-read after each pull) and which `tally.commitView = true`, whether each
/// clone first records, serves and syncs once (`warm`: so that the hostile steps find
/// commits to work on), and the steps.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub clones: usize,
    pub after_pull: Vec<bool>,
    pub commit_view: Vec<bool>,
    pub warm: bool,
    pub ops: Vec<Op>,
}

/// Each clone records (with ids on every other one), both applications serve, it syncs.
fn warm_up(clones: usize) -> Vec<Op> {
    (0..clones as u8)
        .flat_map(|c| {
            [
                Op::Record { c, n: 2, ids: c % 2 == 0 },
                Op::Serve { c, app: App::Cpa, n: 1 },
                Op::Serve { c, app: App::ProxyPal, n: 1 },
                Op::Sync { c },
            ]
        })
        .collect()
}

struct AppState {
    memory: Value,
    served: usize,
    /// It wrote its file since git-tally last read it (a sync or pull of its clone).
    unread: bool,
}

struct Machine {
    dir: PathBuf,
    name: String,
    after_pull: bool,
    /// Events recorded (the next event's number).
    recorded: usize,
    /// Lines recorded with an id (a retry sends one again).
    with_ids: Vec<String>,
    apps: [AppState; 2],
    /// It ran `git tally sync` or `pull` (its views are excluded from `git add -A` since).
    synced: bool,
}

/// Every acknowledged request once: the model.
#[derive(Default)]
struct Truth {
    /// Recorded events (in every usage file), with their device's name.
    recorded: Vec<Event>,
    /// Requests an application served, by application.
    served: [Vec<Event>; 2],
}

struct World {
    env: Env,
    remote: PathBuf,
    machines: Vec<Machine>,
    truth: Truth,
    log: Vec<String>,
}

type Outcome<T = ()> = Result<T, String>;

fn t0(text: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text).unwrap()
}

/// Event `k` of clone `m` as `record` gets it: unique instants (4 minutes × (8k + m)) over
/// two days from 2026-10-20, every field varied.
fn record_line(m: usize, k: usize, with_id: bool) -> String {
    let ts = t0("2026-10-20T00:00:00Z") + Duration::minutes(((k * MAX_CLONES + m) * 4) as i64);
    let mut v = json!({
        "timestamp": ts.to_rfc3339(),
        "provider": (["openai", "anthropic"][k % 2]),
        "api": (["key-a", "key-b"][(k + m) % 2]),
        "model": (["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"][(k + 2 * m) % 3]),
        "input_tokens": 100 + 7 * k + m, "output_tokens": 5 + (k * (m + 1)) % 40,
        "status": if (k + m) % 9 == 0 { 500 } else { 200 },
        "cost_usd": ((k + m) % 8) as f64 / 8.0,
        "source": format!("m{m}@example.com"), "auth_index": "0",
    });
    if with_id {
        v["id"] = json!(format!("req-{k}"));
    }
    v.to_string()
}

/// Request `i` served by clone `m`'s application. CLIProxyAPI traffic from 2026-11-05;
/// ProxyPal traffic on days of its own per clone (from 2026-12-01, three days apart).
fn served_event(app: App, m: usize, i: usize) -> Event {
    let ts = match app {
        App::Cpa => t0("2026-11-05T00:00:00Z") + Duration::minutes(((i * MAX_CLONES + m) * 7) as i64),
        App::ProxyPal => t0("2026-12-01T00:00:00Z") + Duration::days(3 * m as i64) + Duration::minutes(5 * i as i64),
    };
    let line = json!({
        "timestamp": ts.to_rfc3339(), "api": (["key-a", "key-b"][m % 2]),
        "provider": (["openai", "anthropic"][i % 2]), "model": (["gpt-5", "gpt-5-mini", "claude-haiku-4-5"][i % 3]),
        "input_tokens": 10 + i, "output_tokens": m + 1 + i % 4, "cached_tokens": i % 3,
        "source": format!("app-m{m}"), "auth_index": "0", "status": if i % 7 == 3 { 429 } else { 200 },
        "cost_usd": (i % 5) as f64 / 8.0,
    });
    Event::parse(&line.to_string(), ts, &format!("m{m}")).unwrap()
}

/// One machine applying `events` once, in time order.
fn single_machine(p: &Profile, events: &[&Event]) -> Value {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.timestamp);
    let mut doc = (p.empty)();
    for e in sorted {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    doc
}

/// A native view compared without the ids `record` made up (events sent without one), and
/// with its recent records as a multiset.
fn normalise(profile: &str, v: &Value) -> Value {
    let mut v = v.clone();
    if profile == "tally" {
        let mut recent: Vec<String> = v["recent"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                if !r["id"].as_str().is_some_and(|id| id.starts_with("req-")) {
                    r.as_object_mut().unwrap().remove("id");
                }
                git_tally::json::canonical(&r)
            })
            .collect();
        recent.sort();
        v["recent"] = json!(recent);
    }
    v
}

/// Requests per device name in a native view.
fn requests_by_device(view: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for devices in view["hours"].as_object().into_iter().flat_map(|h| h.values()) {
        for (dev, providers) in devices.as_object().into_iter().flatten() {
            for apis in providers.as_object().into_iter().flat_map(|p| p.values()) {
                for models in apis.as_object().into_iter().flat_map(|a| a.values()) {
                    for cell in models.as_object().into_iter().flat_map(|m| m.values()) {
                        *out.entry(dev.clone()).or_default() += cell["requests"].as_u64().unwrap_or(0);
                    }
                }
            }
        }
    }
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

impl World {
    fn new(h: &History) -> World {
        let env = Env::new();
        let remote = env.path().join("remote.git");
        env.git(env.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
        let url = format!("file://{}", remote.display());
        // The remote starts with the attributes: each usage file's profile, and the driver
        // for usage and ledger files (as `install` writes them).
        let seed = env.path().join("seed");
        env.git(env.path(), &["clone", "-q", &url, seed.to_str().unwrap()]);
        let attributes: String = STREAMS.iter().map(|(f, p)| format!("{f} tally-profile={p}\n")).collect();
        std::fs::write(seed.join(".gitattributes"), attributes).unwrap();
        env.tally(&seed).arg("install").assert().success();
        env.git(&seed, &["add", ".gitattributes"]);
        env.git(&seed, &["commit", "-q", "--no-gpg-sign", "-m", "usage files merge with git-tally"]);
        env.git(&seed, &["push", "-q", "origin", "main"]);
        let machines = (0..h.clones)
            .map(|m| {
                let dir = env.path().join(format!("m{m}"));
                env.git(env.path(), &["clone", "-q", &url, dir.to_str().unwrap()]);
                env.tally(&dir).arg("install").assert().success();
                let after_pull = h.after_pull.get(m).copied().unwrap_or(false);
                let reads = if after_pull { "after-pull" } else { "never" };
                let commit_view = h.commit_view.get(m).copied().unwrap_or(false).to_string();
                for (k, v) in [
                    ("commit.gpgsign", "false"),
                    ("tally.device", &format!("m{m}")),
                    ("tally.appReads", reads),
                    ("tally.commitView", &commit_view),
                ] {
                    env.git(&dir, &["config", k, v]);
                }
                for (f, _) in STREAMS {
                    env.git(&dir, &["config", "--add", "tally.file", f]);
                }
                let app = |a: App| AppState { memory: (a.profile().empty)(), served: 0, unread: false };
                Machine {
                    dir,
                    name: format!("m{m}"),
                    after_pull,
                    recorded: 0,
                    with_ids: Vec::new(),
                    apps: [app(App::Cpa), app(App::ProxyPal)],
                    synced: false,
                }
            })
            .collect();
        World { env, remote, machines, truth: Truth::default(), log: Vec::new() }
    }

    fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// A failure, with the transcript of the history so far.
    fn fail(&self, why: &str) -> String {
        format!("{why}\n\ntranscript:\n{}", self.log.iter().map(|l| format!("  {l}\n")).collect::<String>())
    }

    /// git as the user runs it. A sync killed while it moved a ref leaves that ref's lock,
    /// and git then says to remove the file by hand: the user does and runs the command
    /// again (the next git-tally run finishes the move the lock belonged to).
    fn git(&self, m: usize, args: &[&str]) -> Output {
        let out = self.env.git_output(&self.machines[m].dir, args);
        match (out.status.success(), left_lock(&text(&out))) {
            (false, Some(lock)) if std::fs::remove_file(&lock).is_ok() => {
                eprintln!("m{m}: removed {} as git said, and ran git {} again", lock.display(), args.join(" "));
                self.env.git_output(&self.machines[m].dir, args)
            }
            _ => out,
        }
    }

    /// git that must succeed.
    fn git_ok(&self, m: usize, args: &[&str]) -> Outcome<String> {
        let out = self.git(m, args);
        if !out.status.success() {
            return Err(self.fail(&format!("m{m}: git {} failed: {}", args.join(" "), text(&out))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn rev(&self, m: usize, rev: &str) -> Option<String> {
        let out = self.git(m, &["rev-parse", "-q", "--verify", &format!("{rev}^{{commit}}")]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn tally(&self, m: usize, args: &[&str]) -> (i32, String) {
        let out = self.env.tally(&self.machines[m].dir).args(args).output().unwrap();
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn record(&mut self, m: usize, lines: &[String]) -> Outcome {
        let mut c = self.env.command(&self.machines[m].dir);
        c.arg("record").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            return Err(self.fail(&format!("m{m}: record failed: {}", text(&out))));
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        let n = self.machines.len();
        let at = |c: u8| c as usize % n;
        match *op {
            Op::Record { c, n: count, ids } => {
                let m = at(c);
                let start = self.machines[m].recorded;
                let lines: Vec<String> = (start..start + count as usize).map(|k| record_line(m, k, ids)).collect();
                self.record(m, &lines)?;
                let name = self.machines[m].name.clone();
                for l in &lines {
                    let mut e = Event::parse(l, t0("2026-10-20T00:00:00Z"), &name).unwrap();
                    e.device = name.clone();
                    self.truth.recorded.push(e);
                }
                let mach = &mut self.machines[m];
                mach.recorded += count as usize;
                if ids {
                    mach.with_ids.extend(lines);
                }
                let what =
                    if ids { format!("ids req-{start}..req-{}", start + count as usize - 1) } else { "no ids".into() };
                self.note(format!("m{m}: record {count} events ({what})"));
            }
            Op::Retry { c, pick } => {
                let m = at(c);
                let ids = &self.machines[m].with_ids;
                if ids.is_empty() {
                    self.note(format!("m{m}: retry (nothing recorded with an id yet)"));
                    return Ok(());
                }
                let line = ids[pick as usize % ids.len()].clone();
                self.record(m, std::slice::from_ref(&line))?;
                self.note(format!("m{m}: record again {} (a retry)", Event::id_of_line(&line).unwrap_or_default()));
            }
            Op::Serve { c, app, n: count } => {
                let m = at(c);
                let p = app.profile();
                let state = &mut self.machines[m].apps[app.index()];
                let events: Vec<Event> =
                    (state.served..state.served + count as usize).map(|i| served_event(app, m, i)).collect();
                state.served += count as usize;
                state.unread = true;
                for e in &events {
                    (p.apply.unwrap())(&mut state.memory, e).unwrap();
                }
                let bytes = serde_json::to_vec_pretty(&state.memory).unwrap();
                let file = self.machines[m].dir.join(app.file());
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, [bytes, b"\n".to_vec()].concat()).unwrap();
                self.truth.served[app.index()].extend(events);
                self.note(format!("m{m}: {app:?} serves {count} requests and writes {}", app.file()));
            }
            Op::Restart { c, app } => {
                let m = at(c);
                if !self.machines[m].after_pull && self.machines[m].apps[app.index()].unread {
                    // Restarting empty overwrites a write git-tally has not read: those
                    // requests would be lost by the application. The operator pulls first
                    // (as the shutdown flush does).
                    self.tally_sync(m, "pull")?;
                }
                let mach = &mut self.machines[m];
                let file = mach.dir.join(app.file());
                let state = &mut mach.apps[app.index()];
                if mach.after_pull {
                    state.memory = std::fs::read(&file)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_else(|| (app.profile().empty)());
                    self.note(format!("m{m}: {app:?} restarts and loads {}", app.file()));
                } else {
                    state.memory = (app.profile().empty)();
                    self.note(format!("m{m}: {app:?} restarts empty"));
                }
            }
            Op::Sync { c } => self.tally_sync(at(c), "sync")?,
            Op::Pull { c } => self.tally_sync(at(c), "pull")?,
            Op::KilledSync { c, ms } => {
                let m = at(c);
                // git-tally alone is killed; a git it started (fetch, push) runs to its end,
                // as after a crash of git-tally, and is waited for: its process group.
                use std::os::unix::process::CommandExt;
                let mut child = self.env.command(&self.machines[m].dir);
                child.arg("sync").stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
                let mut child = child.spawn().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(ms as u64));
                let _ = child.kill();
                let status = child.wait().unwrap();
                let group = format!("-{}", child.id());
                for _ in 0..500 {
                    let alive =
                        std::process::Command::new("kill").args(["-0", "--", &group]).stderr(Stdio::null()).status();
                    if !alive.is_ok_and(|s| s.success()) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let how = match status.code() {
                    Some(code) => format!("it had finished (exit {code})"),
                    None => "killed".into(),
                };
                // An application that re-reads after a pull notices the file changed.
                let mach = &mut self.machines[m];
                if mach.after_pull {
                    for app in [App::Cpa, App::ProxyPal] {
                        let file = mach.dir.join(app.file());
                        if let Some(v) = std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                            mach.apps[app.index()].memory = v;
                        }
                    }
                }
                self.note(format!("m{m}: git tally sync, SIGKILL after {ms} ms: {how}"));
            }
            Op::UserPull { c, rebase } => {
                let m = at(c);
                let how = if rebase { "--rebase" } else { "--no-rebase" };
                let mut r = self.user(m, &["pull", "-q", "--no-edit", how])?;
                if r.contains("unrelated histories") {
                    // The remote was rewritten: a user who insists merges it anyway.
                    let again = self.user(m, &["pull", "-q", "--no-edit", how, "--allow-unrelated-histories"])?;
                    r = format!("{r}; with --allow-unrelated-histories: {again}");
                }
                self.note(format!("m{m}: git pull {how}: {r}"));
            }
            Op::CherryPick { c, pick } => {
                let m = at(c);
                self.git_ok(m, &["fetch", "-q", "origin"])?;
                let list = self.git_ok(m, &["rev-list", "--no-merges", "HEAD..origin/main"])?;
                let commits: Vec<&str> = list.lines().collect();
                if commits.is_empty() {
                    self.note(format!("m{m}: cherry-pick (the upstream has nothing HEAD lacks)"));
                    return Ok(());
                }
                let pick = commits[pick as usize % commits.len()].to_string();
                let subject = self.git_ok(m, &["log", "-1", "--format=%s", &pick])?;
                let r = self.user(m, &["cherry-pick", "--allow-empty", "--keep-redundant-commits", &pick])?;
                self.note(format!("m{m}: git cherry-pick {} ({subject}): {r}", &pick[..10]));
            }
            Op::Duplicate { c, pick } => self.duplicate(at(c), pick)?,
            Op::SquashLocal { c } => {
                let m = at(c);
                let base = self.git(m, &["merge-base", "HEAD", "origin/main"]);
                let base = String::from_utf8_lossy(&base.stdout).trim().to_string();
                if base.is_empty() || Some(&base) == self.rev(m, "HEAD").as_ref() {
                    self.note(format!("m{m}: squash local commits (none)"));
                    return Ok(());
                }
                let count = self.git_ok(m, &["rev-list", "--count", &format!("{base}..HEAD")])?;
                self.git_ok(m, &["reset", "-q", "--soft", &base])?;
                self.git_ok(m, &["commit", "-q", "--allow-empty", "-m", "squashed local usage"])?;
                self.note(format!("m{m}: squash {count} local commits into one"));
            }
            Op::SquashRemote { c, mine } => {
                let m = at(c);
                self.git_ok(m, &["fetch", "-q", "origin"])?;
                let from = if mine { "HEAD" } else { "origin/main" };
                let Some(tip) = self.rev(m, from) else {
                    self.note(format!("m{m}: squash {from} (nothing there)"));
                    return Ok(());
                };
                let root =
                    self.git_ok(m, &["commit-tree", &format!("{tip}^{{tree}}"), "-m", &format!("squashed {from}")])?;
                if mine {
                    self.git_ok(m, &["reset", "-q", "--soft", &root])?;
                }
                self.git_ok(m, &["push", "-q", "-f", "origin", &format!("{root}:refs/heads/main")])?;
                self.note(format!("m{m}: squash {from} into one root commit and force-push it"));
            }
            Op::RewindRemote { c, back } => {
                let m = at(c);
                let Some(old) = self.rev(m, &format!("HEAD~{back}")) else {
                    self.note(format!("m{m}: force-push HEAD~{back} (no such commit)"));
                    return Ok(());
                };
                self.git_ok(m, &["push", "-q", "-f", "origin", &format!("{old}:refs/heads/main")])?;
                self.note(format!("m{m}: force-push HEAD~{back} to the remote"));
            }
            Op::Copy { c } => {
                let m = at(c);
                let k = self.machines.len();
                if k >= MAX_CLONES {
                    self.note(format!("m{m}: copy (already {k} clones)"));
                    return Ok(());
                }
                let dir = self.env.path().join(format!("m{k}"));
                let cp =
                    std::process::Command::new("cp").arg("-a").arg(&self.machines[m].dir).arg(&dir).output().unwrap();
                assert!(cp.status.success(), "cp -a: {}", text(&cp));
                let name = format!("m{k}");
                self.env.git(&dir, &["config", "tally.device", &name]);
                let app = |a: App| AppState { memory: (a.profile().empty)(), served: 0, unread: false };
                let after_pull = self.machines[m].after_pull;
                self.machines.push(Machine {
                    dir,
                    name,
                    after_pull,
                    recorded: 0,
                    with_ids: Vec::new(),
                    apps: [app(App::Cpa), app(App::ProxyPal)],
                    synced: self.machines[m].synced,
                });
                self.note(format!("m{m}: copied whole to m{k} (named m{k}; its applications start empty)"));
            }
            Op::ResetHard { c, back } => {
                let m = at(c);
                if self.rev(m, &format!("HEAD~{back}")).is_none() {
                    self.note(format!("m{m}: git reset --hard HEAD~{back} (no such commit)"));
                    return Ok(());
                }
                self.git_ok(m, &["reset", "-q", "--hard", &format!("HEAD~{back}")])?;
                self.note(format!("m{m}: git reset --hard HEAD~{back}"));
            }
            Op::RevertTwice { a, b, pick } => {
                let a = at(a);
                let b = if at(b) == a { (a + 1) % n } else { at(b) };
                self.revert_twice(a, b, pick)?;
            }
            Op::Revert { c, pick } => {
                let m = at(c);
                let list = self.git_ok(m, &["log", "--no-merges", "-n", "6", "--format=%H", "HEAD", "--", "usage"])?;
                let commits: Vec<&str> = list.lines().collect();
                if commits.is_empty() {
                    self.note(format!("m{m}: git revert (no usage commit in HEAD)"));
                    return Ok(());
                }
                let c = commits[pick as usize % commits.len()].to_string();
                let subject = self.git_ok(m, &["log", "-1", "--format=%s", &c])?;
                let r = self.user(m, &["revert", "--no-edit", &c])?;
                self.note(format!("m{m}: git revert {} ({subject}): {r}", &c[..10]));
            }
            Op::RestoreOld { c, back } => {
                let m = at(c);
                let old = format!("HEAD~{back}");
                let dirs: Vec<String> = STREAMS
                    .iter()
                    .map(|(f, _)| git_tally::ledger::ledger_dir_of(f))
                    .filter(|d| self.git(m, &["cat-file", "-e", &format!("{old}:{d}")]).status.success())
                    .collect();
                if dirs.is_empty() {
                    self.note(format!("m{m}: put back the ledger as of {old} (not there)"));
                    return Ok(());
                }
                let args: Vec<&str> =
                    ["checkout", &old, "--"].into_iter().chain(dirs.iter().map(String::as_str)).collect();
                self.git_ok(m, &args)?;
                self.git_ok(m, &["commit", "-q", "--allow-empty", "-m", &format!("the ledger as of {old}")])?;
                self.note(format!("m{m}: put back the ledger as of {old} and commit it"));
            }
            Op::CommitAll { c } => {
                let m = at(c);
                if !self.machines[m].synced && !with_views() {
                    self.note(format!("m{m}: git add -A && git commit (not before the first sync: see with_views)"));
                    return Ok(());
                }
                self.git_ok(m, &["add", "-A"])?;
                let staged = self.git_ok(m, &["diff", "--cached", "--name-only"])?;
                self.git_ok(m, &["commit", "-q", "--allow-empty", "-m", "the user's commit"])?;
                let files: Vec<&str> = staged.lines().collect();
                self.note(format!("m{m}: git add -A && git commit: {files:?}"));
            }
        }
        Ok(())
    }

    /// A user's git command that may stop on a conflict. A conflict the driver leaves (both
    /// sides changed a usage or ledger file) is a failure; a structural one (a file one side
    /// deleted, as a revert of the commit that created it does) is aborted, as a user would.
    fn user(&mut self, m: usize, args: &[&str]) -> Outcome<String> {
        let out = self.git(m, args);
        if out.status.success() {
            let git_dir = self.machines[m].dir.join(".git");
            let left: Vec<&str> = ["MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "rebase-merge", "rebase-apply"]
                .into_iter()
                .filter(|f| git_dir.join(f).exists())
                .collect();
            if !left.is_empty() {
                return Err(self.fail(&format!(
                    "m{m}: git {} exited 0 and left {left:?}: {}",
                    args.join(" "),
                    text(&out)
                )));
            }
            return Ok("ok".into());
        }
        let said = text(&out);
        let unmerged = self.git_ok(m, &["ls-files", "-u"])?;
        let mut stages: BTreeMap<String, Vec<char>> = BTreeMap::new();
        for l in unmerged.lines() {
            if let Some((meta, path)) = l.split_once('\t') {
                stages.entry(path.to_string()).or_default().push(meta.chars().last().unwrap_or('?'));
            }
        }
        let both: Vec<&String> =
            stages.iter().filter(|(_, s)| s.contains(&'2') && s.contains(&'3')).map(|(p, _)| p).collect();
        if !both.is_empty() {
            return Err(self.fail(&format!("m{m}: git {} left a content conflict in {both:?}: {said}", args.join(" "))));
        }
        let structural = !stages.is_empty();
        let unrelated = said.contains("unrelated histories");
        // git refuses to start over a file an application wrote (tracked since a clone
        // committed its view, or untracked where the upstream tracks it).
        let refused =
            ["would be overwritten", "unstaged changes", "uncommitted changes"].iter().any(|p| said.contains(p));
        // A revert of what is already reverted changes nothing (worded so when a killed
        // sync left usage files changed in the work tree, which its next run finishes).
        let empty = said.contains("nothing to commit") || said.contains("no changes added to commit");
        if !structural && !unrelated && !refused && !empty {
            return Err(self.fail(&format!("m{m}: git {} failed: {said}", args.join(" "))));
        }
        for abort in [["merge", "--abort"], ["rebase", "--abort"], ["cherry-pick", "--abort"], ["revert", "--abort"]] {
            let _ = self.git(m, &abort);
        }
        let status = self.git_ok(m, &["status", "--porcelain", "--untracked-files=no", "--", LEDGERS])?;
        if !status.is_empty() {
            return Err(self.fail(&format!("m{m}: aborting git {} left changes: {status}", args.join(" "))));
        }
        Ok(if unrelated {
            "refused (unrelated histories)".into()
        } else if refused {
            format!("refused ({})", first_line(&said))
        } else if empty && !structural {
            "nothing to do, aborted".into()
        } else {
            format!("stopped on {:?} (one side deleted it), aborted", stages.keys().collect::<Vec<_>>())
        })
    }

    fn tally_sync(&mut self, m: usize, what: &str) -> Outcome {
        let (code, out) = self.tally(m, &[what]);
        if code != 0 {
            return Err(self.fail(&format!("m{m}: git tally {what} exited {code}: {out}")));
        }
        self.note(format!("m{m}: git tally {what}: {}", first_line(&out)));
        let mach = &mut self.machines[m];
        mach.synced = true;
        for app in &mut mach.apps {
            app.unread = false;
        }
        if mach.after_pull {
            for app in [App::Cpa, App::ProxyPal] {
                if let Some(v) =
                    std::fs::read(mach.dir.join(app.file())).ok().and_then(|b| serde_json::from_slice(&b).ok())
                {
                    mach.apps[app.index()].memory = v;
                }
            }
        }
        self.check_own_counts(m, &format!("after m{m}'s {what}"))
    }

    /// Right after a clone's sync, its native view counts its own requests exactly and no
    /// other device's more often than they happened; its CLIProxyAPI view lists each of its
    /// application's requests once.
    fn check_own_counts(&self, m: usize, when: &str) -> Outcome {
        let view = read_json(&self.machines[m].dir.join(NATIVE));
        let got = requests_by_device(&view);
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for e in &self.truth.recorded {
            *want.entry(e.device.clone()).or_default() += 1;
        }
        let me = &self.machines[m].name;
        for (dev, n) in &got {
            let w = want.get(dev).copied().unwrap_or(0);
            if *n > w || (dev == me && *n != w) {
                return Err(self.fail(&format!("{when}: {me}'s view counts {n} requests of {dev}, {w} happened")));
            }
        }
        if want.get(me).is_some_and(|w| *w > 0) && !got.contains_key(me) {
            return Err(self.fail(&format!("{when}: {me}'s view lacks its own requests")));
        }
        let cpa = self.machines[m].dir.join(App::Cpa.file());
        if cpa.exists() {
            let doc = read_json(&cpa);
            let mine = format!("app-m{m}");
            let listed = git_tally::report::records(App::Cpa.profile(), &doc)
                .into_iter()
                .filter(|(_, r)| r["source"].as_str() == Some(mine.as_str()))
                .count();
            let served = self.machines[m].apps[App::Cpa.index()].served;
            if listed != served {
                return Err(
                    self.fail(&format!("{when}: {me}'s {} lists {listed} of its {served} requests", App::Cpa.file()))
                );
            }
        }
        Ok(())
    }

    fn duplicate(&mut self, m: usize, pick: u8) -> Outcome {
        self.git_ok(m, &["fetch", "-q", "origin"])?;
        let mut commits: Vec<String> = Vec::new();
        for range in ["HEAD..origin/main", "origin/main..HEAD"] {
            if let Ok(list) = self.git_ok(m, &["rev-list", "--no-merges", "--max-count=8", range]) {
                commits.extend(list.lines().map(str::to_string));
            }
        }
        if commits.is_empty() {
            self.note(format!("m{m}: duplicate a commit (none apart from the upstream)"));
            return Ok(());
        }
        let c = commits[pick as usize % commits.len()].clone();
        let subject = self.git_ok(m, &["log", "-1", "--format=%s", &c])?;
        let branch = self.git_ok(m, &["symbolic-ref", "--short", "HEAD"])?;
        self.git_ok(m, &["checkout", "-q", "-b", "dup"])?;
        let picked = self.user(m, &["cherry-pick", "--allow-empty", "--keep-redundant-commits", &c])?;
        if picked == "ok" {
            self.git_ok(m, &["commit", "-q", "--amend", "--allow-empty", "-m", &format!("{subject} (again)")])?;
        }
        self.git_ok(m, &["checkout", "-q", &branch])?;
        let in_head = self.git(m, &["merge-base", "--is-ancestor", &c, "HEAD"]).status.success();
        let on_branch = if in_head {
            "already there".to_string()
        } else {
            self.user(m, &["cherry-pick", "--allow-empty", "--keep-redundant-commits", &c])?
        };
        let merged = self.user(m, &["merge", "--no-edit", "-q", "dup"])?;
        self.git_ok(m, &["branch", "-q", "-D", "dup"])?;
        self.note(format!(
            "m{m}: {} ({subject}) on a side branch: {picked}; on {branch}: {on_branch}; side branch merged: {merged}",
            &c[..10]
        ));
        Ok(())
    }

    fn revert_twice(&mut self, a: usize, b: usize, pick: u8) -> Outcome {
        for x in [a, b] {
            let r = self.user(x, &["pull", "-q", "--no-edit", "--no-rebase"])?;
            if r != "ok" {
                self.note(format!("m{x}: git pull before reverting: {r}; no revert"));
                return Ok(());
            }
        }
        let list = self.git_ok(a, &["log", "--no-merges", "-n", "10", "--format=%H", "origin/main", "--", "usage"])?;
        let commits: Vec<&str> = list.lines().collect();
        if commits.is_empty() {
            self.note(format!("m{a}, m{b}: revert (no usage commit upstream)"));
            return Ok(());
        }
        let c = commits[pick as usize % commits.len()].to_string();
        let subject = self.git_ok(a, &["log", "-1", "--format=%s", &c])?;
        let ra = self.user(a, &["revert", "--no-edit", &c])?;
        let pa = if ra == "ok" {
            first_line(&text(&self.git(a, &["push", "-q", "origin", "HEAD:main"]))).to_string()
        } else {
            String::new()
        };
        let rb = self.user(b, &["revert", "--no-edit", &c])?;
        let (mb, pb) = if rb == "ok" {
            let mb = self.user(b, &["pull", "-q", "--no-edit", "--no-rebase"])?;
            (mb, first_line(&text(&self.git(b, &["push", "-q", "origin", "HEAD:main"]))).to_string())
        } else {
            Default::default()
        };
        self.note(format!(
            "m{a}, m{b}: revert {} ({subject}): m{a} {ra} (push: {pa:?}); m{b} {rb}, pulls m{a}'s: {mb} (push: {pb:?})",
            &c[..10]
        ));
        Ok(())
    }

    /// What a round of syncs could change: the remote's branch, every clone's HEAD and views.
    fn snapshot(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.env.git_output(&self.remote, &["rev-parse", "-q", "--verify", "main"]).stdout];
        for (m, mach) in self.machines.iter().enumerate() {
            out.push(self.git(m, &["rev-parse", "HEAD"]).stdout);
            for (f, _) in STREAMS {
                out.push(std::fs::read(mach.dir.join(f)).unwrap_or_default());
            }
        }
        out
    }

    /// Every clone syncs, round after round, until a round changes nothing.
    fn converge(&mut self) -> Outcome {
        let mut before = self.snapshot();
        for round in 1..=MAX_ROUNDS {
            for m in 0..self.machines.len() {
                self.tally_sync(m, "sync")?;
            }
            let after = self.snapshot();
            if after == before {
                self.note(format!("quiescent after {round} rounds of syncs"));
                return Ok(());
            }
            before = after;
        }
        Err(self.fail(&format!("still changing after {MAX_ROUNDS} rounds of syncs")))
    }

    /// The truth of each usage file.
    fn want(&self) -> Vec<Value> {
        STREAMS
            .iter()
            .enumerate()
            .map(|(k, (_, p))| {
                let mut events: Vec<&Event> = self.truth.recorded.iter().collect();
                if k > 0 {
                    events.extend(&self.truth.served[k - 1]);
                }
                single_machine(profile::by_name(p).unwrap(), &events)
            })
            .collect()
    }

    /// A clone's views and `stats` equal the truth.
    fn check_clone(&self, dir: &Path, who: &str, want: &[Value]) -> Outcome {
        for ((file, p), want) in STREAMS.iter().zip(want) {
            let path = dir.join(file);
            let got = if path.exists() { read_json(&path) } else { (profile::by_name(p).unwrap().empty)() };
            let (w, g) = (normalise(p, want), normalise(p, &got));
            if w != g {
                return Err(self.fail(&format!(
                    "{who}: {file} differs from every request once:\n{}",
                    crate::common::diff(&pretty(&w), &pretty(&g))
                )));
            }
        }
        let stats = |args: &[&str]| -> Outcome<Value> {
            let out = self.env.tally(dir).arg("stats").args(args).arg("--json").output().unwrap();
            if !out.status.success() {
                return Err(self.fail(&format!("{who}: git tally stats {args:?} failed: {}", text(&out))));
            }
            serde_json::from_slice(&out.stdout).map_err(|e| self.fail(&format!("{who}: stats --json: {e}")))
        };
        let totals = &stats(&[])?["totals"];
        let events = &self.truth.recorded;
        let sum = |f: &dyn Fn(&Event) -> u64| events.iter().map(f).sum::<u64>();
        let cost: f64 = events.iter().map(|e| e.cost_usd.unwrap_or(0.0)).sum();
        let want_totals = json!({
            "requests": events.len(), "failed": sum(&|e| e.failed as u64),
            "input_tokens": sum(&|e| e.input_tokens), "output_tokens": sum(&|e| e.output_tokens),
            "total_tokens": sum(&|e| e.input_tokens + e.output_tokens), "cost_usd": cost,
        });
        for (k, v) in want_totals.as_object().unwrap() {
            if totals[k].as_f64() != v.as_f64() {
                return Err(
                    self.fail(&format!("{who}: stats --json totals.{k} is {}, the requests add up to {v}", totals[k]))
                );
            }
        }
        let mut per_device: BTreeMap<String, u64> = BTreeMap::new();
        for e in events {
            *per_device.entry(e.device.clone()).or_default() += 1;
        }
        let rows = stats(&["--by", "device"])?;
        let got: BTreeMap<String, u64> = rows["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["requests"].as_u64().unwrap_or(0) > 0)
            .map(|r| (r["key"].as_str().unwrap_or("").to_string(), r["requests"].as_u64().unwrap_or(0)))
            .collect();
        if got != per_device {
            return Err(self.fail(&format!("{who}: stats --by device shows {got:?}, the requests were {per_device:?}")));
        }
        Ok(())
    }

    /// After the history: converge, then every clone, and the remote as a fresh clone sees
    /// it, hold every request exactly once.
    fn check(&mut self) -> Outcome {
        self.converge()?;
        let want = self.want();
        for m in 0..self.machines.len() {
            let dir = self.machines[m].dir.clone();
            self.check_clone(&dir, &format!("m{m}"), &want)?;
            // Ledger files as HEAD has them (a view someone committed may differ: the
            // application writes it).
            let status = self.git_ok(m, &["status", "--porcelain", "--untracked-files=no", "--", LEDGERS])?;
            if !status.is_empty() {
                return Err(self.fail(&format!("m{m}: ledger files changed after the final sync: {status}")));
            }
        }
        let fresh = self.env.path().join("fresh");
        let url = format!("file://{}", self.remote.display());
        self.env.git(self.env.path(), &["clone", "-q", &url, fresh.to_str().unwrap()]);
        self.env.git(&fresh, &["config", "tally.device", "fresh"]);
        for (f, _) in STREAMS {
            self.env.git(&fresh, &["config", "--add", "tally.file", f]);
        }
        let out = self.env.tally(&fresh).arg("pull").output().unwrap();
        if !out.status.success() {
            return Err(self.fail(&format!("a fresh clone's pull failed: {}", text(&out))));
        }
        self.check_clone(&fresh, "a fresh clone of the remote", &want)
    }
}

/// Runs a history and checks it; `Err` holds the reason and the transcript.
pub fn run(h: &History) -> Outcome {
    let mut w = World::new(h);
    let flags: Vec<&str> = w.machines.iter().map(|m| if m.after_pull { "after-pull" } else { "never" }).collect();
    let views: Vec<bool> = (0..h.clones).map(|m| h.commit_view.get(m).copied().unwrap_or(false)).collect();
    w.note(format!("{} clones, tally.appReads {flags:?}, tally.commitView {views:?}", h.clones));
    let warm = if h.warm { warm_up(h.clones) } else { Vec::new() };
    for op in warm.iter().chain(&h.ops) {
        w.apply(op)?;
    }
    let checked = w.check();
    if std::env::var_os("HISTORIES_TRANSCRIPT").is_some() {
        eprintln!("{}", w.fail("transcript (HISTORIES_TRANSCRIPT)"));
    }
    checked
}

fn app() -> impl Strategy<Value = App> {
    prop_oneof![Just(App::Cpa), Just(App::ProxyPal)]
}

fn op() -> impl Strategy<Value = Op> {
    // Most steps on three clones, so that what one does meets what another did.
    let c = prop_oneof![3 => 0u8..3, 1 => any::<u8>()];
    prop_oneof![
        6 => (c.clone(), 1u8..4, any::<bool>()).prop_map(|(c, n, ids)| Op::Record { c, n, ids }),
        1 => (c.clone(), any::<u8>()).prop_map(|(c, pick)| Op::Retry { c, pick }),
        4 => (c.clone(), app(), 1u8..4).prop_map(|(c, app, n)| Op::Serve { c, app, n }),
        1 => (c.clone(), app()).prop_map(|(c, app)| Op::Restart { c, app }),
        5 => c.clone().prop_map(|c| Op::Sync { c }),
        2 => c.clone().prop_map(|c| Op::Pull { c }),
        1 => (c.clone(), any::<u8>()).prop_map(|(c, ms)| Op::KilledSync { c, ms }),
        3 => (c.clone(), any::<bool>()).prop_map(|(c, rebase)| Op::UserPull { c, rebase }),
        1 => (c.clone(), any::<u8>()).prop_map(|(c, pick)| Op::CherryPick { c, pick }),
        1 => (c.clone(), any::<u8>()).prop_map(|(c, pick)| Op::Duplicate { c, pick }),
        1 => c.clone().prop_map(|c| Op::SquashLocal { c }),
        1 => (c.clone(), any::<bool>()).prop_map(|(c, mine)| Op::SquashRemote { c, mine }),
        1 => (c.clone(), 1u8..4).prop_map(|(c, back)| Op::RewindRemote { c, back }),
        1 => (c.clone(), 1u8..3).prop_map(|(c, back)| Op::ResetHard { c, back }),
        1 => c.clone().prop_map(|c| Op::Copy { c }),
        1 => (c.clone(), c.clone(), any::<u8>()).prop_map(|(a, b, pick)| Op::RevertTwice { a, b, pick }),
        1 => (c.clone(), any::<u8>()).prop_map(|(c, pick)| Op::Revert { c, pick }),
        1 => (c.clone(), 1u8..4).prop_map(|(c, back)| Op::RestoreOld { c, back }),
        1 => c.prop_map(|c| Op::CommitAll { c }),
    ]
}

/// Whether histories may commit views (`tally.commitView`, or the user's `git add -A`
/// before the views are excluded): `HISTORIES_WITH_VIEWS=1`. Two known gaps show then: a
/// view git checks out from a commit is taken for an application's write (ProxyPal
/// aggregates count twice), and git overwrites an application's unread write with it
/// (the two ignored tests at the end).
fn with_views() -> bool {
    std::env::var("HISTORIES_WITH_VIEWS").is_ok_and(|v| v == "1")
}

fn history() -> impl Strategy<Value = History> {
    let flags = || prop::collection::vec(any::<bool>(), 6);
    let views = move || prop::collection::vec(any::<bool>().prop_map(|b| b && with_views()), 6);
    (3usize..=6, flags(), views(), prop::collection::vec(op(), 8..28))
        .prop_map(|(clones, after_pull, commit_view, ops)| History { clones, after_pull, commit_view, warm: true, ops })
}

fn env_number(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_number("PROPTEST_CASES").unwrap_or(8),
        // A case runs dozens of git and git-tally processes: shrinking is slow, and the
        // transcript already says what happened.
        max_shrink_iters: env_number("PROPTEST_MAX_SHRINK_ITERS").unwrap_or(8),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_history_converges_to_every_request_once(h in history()) {
        if let Err(why) = run(&h) {
            return Err(TestCaseError::fail(why));
        }
    }
}

// One fixed history per hostile family: a regression points at its family.

fn fixed(clones: usize, after_pull: &[bool], ops: Vec<Op>) {
    let h = History { clones, after_pull: after_pull.to_vec(), ops, ..History::default() };
    if let Err(why) = run(&h) {
        panic!("{why}\nhistory: {h:#?}");
    }
}

use Op::*;

/// Retries of an id count once; `req-0` recorded on every machine is a request on each.
#[test]
fn history_retries_and_the_same_id_on_three_machines() {
    fixed(
        3,
        &[],
        vec![
            Record { c: 0, n: 3, ids: true },
            Record { c: 1, n: 2, ids: true },
            Record { c: 2, n: 2, ids: false },
            Retry { c: 0, pick: 1 },
            Sync { c: 0 },
            Retry { c: 0, pick: 1 },
            Record { c: 2, n: 1, ids: true },
            Sync { c: 1 },
            Retry { c: 1, pick: 0 },
            Sync { c: 2 },
        ],
    );
}

/// Applications in file mode: never re-reading (and restarting empty), re-reading after
/// each pull (and re-loading at a restart), several writes between pulls.
#[test]
fn history_applications_in_three_behaviours() {
    fixed(
        3,
        &[false, true, false],
        vec![
            Serve { c: 0, app: App::Cpa, n: 3 },
            Serve { c: 0, app: App::ProxyPal, n: 2 },
            Serve { c: 1, app: App::Cpa, n: 2 },
            Sync { c: 0 },
            Sync { c: 1 },
            Serve { c: 1, app: App::ProxyPal, n: 2 },
            Serve { c: 1, app: App::ProxyPal, n: 1 },
            Record { c: 2, n: 2, ids: true },
            Sync { c: 2 },
            Restart { c: 0, app: App::Cpa },
            Restart { c: 0, app: App::ProxyPal },
            Serve { c: 0, app: App::Cpa, n: 1 },
            Serve { c: 0, app: App::ProxyPal, n: 1 },
            Sync { c: 0 },
            Restart { c: 1, app: App::ProxyPal },
            Serve { c: 1, app: App::ProxyPal, n: 2 },
            Sync { c: 1 },
        ],
    );
}

/// The user's own `git pull` (merge) and `git pull --rebase` over `git tally pull`'s local
/// commits, with the driver installed.
#[test]
fn history_user_merges_and_rebases() {
    fixed(
        3,
        &[false, false, true],
        vec![
            Record { c: 0, n: 2, ids: true },
            Serve { c: 0, app: App::ProxyPal, n: 2 },
            Sync { c: 0 },
            Record { c: 1, n: 2, ids: false },
            Serve { c: 1, app: App::Cpa, n: 2 },
            Pull { c: 1 },
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            Record { c: 1, n: 1, ids: true },
            Pull { c: 1 },
            UserPull { c: 1, rebase: false },
            Record { c: 2, n: 2, ids: true },
            Pull { c: 2 },
            Record { c: 1, n: 1, ids: true },
            Sync { c: 1 },
            UserPull { c: 2, rebase: true },
            Sync { c: 2 },
        ],
    );
}

/// Another clone's usage commit cherry-picked, later merged with its source.
#[test]
fn history_cherry_pick_then_merge() {
    fixed(
        3,
        &[],
        vec![
            Record { c: 0, n: 3, ids: true },
            Serve { c: 0, app: App::ProxyPal, n: 3 },
            Sync { c: 0 },
            Record { c: 1, n: 1, ids: true },
            Pull { c: 1 },
            Record { c: 0, n: 2, ids: false },
            Sync { c: 0 },
            CherryPick { c: 1, pick: 0 },
            UserPull { c: 1, rebase: false },
            Sync { c: 1 },
            CherryPick { c: 2, pick: 1 },
            Sync { c: 2 },
        ],
    );
}

/// The same change committed on two branches, then merged.
#[test]
fn history_duplicated_commits_merged() {
    fixed(
        3,
        &[],
        vec![
            Record { c: 0, n: 2, ids: true },
            Serve { c: 0, app: App::ProxyPal, n: 2 },
            Sync { c: 0 },
            Record { c: 1, n: 2, ids: true },
            Pull { c: 1 },
            Duplicate { c: 1, pick: 0 },
            Duplicate { c: 1, pick: 1 },
            Sync { c: 1 },
            Duplicate { c: 2, pick: 0 },
            UserPull { c: 2, rebase: false },
            Sync { c: 2 },
        ],
    );
}

/// History squashed (the remote's, a clone's local commits, a clone's whole branch) and
/// force-pushed; every clone syncs onto the rewritten remote.
#[test]
fn history_squashed_and_force_pushed() {
    fixed(
        4,
        &[false, true],
        vec![
            Record { c: 0, n: 3, ids: true },
            Serve { c: 0, app: App::ProxyPal, n: 3 },
            Sync { c: 0 },
            Record { c: 1, n: 2, ids: true },
            Serve { c: 1, app: App::ProxyPal, n: 2 },
            Sync { c: 1 },
            Record { c: 2, n: 2, ids: false },
            Pull { c: 2 },
            Record { c: 2, n: 1, ids: true },
            Pull { c: 2 },
            SquashLocal { c: 2 },
            SquashRemote { c: 3, mine: false },
            Sync { c: 0 },
            Sync { c: 2 },
            Record { c: 3, n: 2, ids: true },
            Sync { c: 3 },
            SquashRemote { c: 1, mine: true },
            Sync { c: 1 },
            Sync { c: 3 },
        ],
    );
}

/// The remote rewound to an older commit, a clone's branch reset.
#[test]
fn history_rewound_remote_and_reset_branch() {
    fixed(
        3,
        &[],
        vec![
            Record { c: 0, n: 2, ids: true },
            Sync { c: 0 },
            Record { c: 1, n: 2, ids: true },
            Serve { c: 1, app: App::Cpa, n: 2 },
            Sync { c: 1 },
            Record { c: 0, n: 2, ids: false },
            Sync { c: 0 },
            RewindRemote { c: 2, back: 1 },
            Sync { c: 2 },
            ResetHard { c: 0, back: 2 },
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            Sync { c: 1 },
        ],
    );
}

/// One usage commit reverted identically on two clones, the reverts merged by the user's
/// `git pull` and pushed: grow-only state, so the truth is unchanged.
#[test]
fn history_identical_reverts_merged() {
    fixed(
        3,
        &[],
        vec![
            Record { c: 0, n: 3, ids: true },
            Serve { c: 0, app: App::ProxyPal, n: 3 },
            Serve { c: 0, app: App::Cpa, n: 2 },
            Sync { c: 0 },
            Record { c: 0, n: 2, ids: true },
            Serve { c: 0, app: App::ProxyPal, n: 1 },
            Sync { c: 0 },
            RevertTwice { a: 1, b: 2, pick: 0 },
            Record { c: 2, n: 1, ids: true },
            Sync { c: 2 },
            Sync { c: 1 },
        ],
    );
}

/// Syncs killed with SIGKILL at moments spread over a sync's run (the moment reached
/// varies with the machine's load; every moment must lose and double nothing), with
/// applications that write between them.
#[test]
fn history_syncs_killed_at_any_moment() {
    let mut ops = Vec::new();
    for (k, ms) in [0u8, 15, 30, 45, 60, 80, 100, 130, 160, 200, 255].into_iter().enumerate() {
        let c = (k % 3) as u8;
        ops.push(Record { c, n: 1, ids: k % 2 == 0 });
        ops.push(Serve { c, app: if k % 2 == 0 { App::Cpa } else { App::ProxyPal }, n: 1 });
        ops.push(KilledSync { c, ms });
    }
    fixed(3, &[false, true, false], ops);
}

/// The user's own commits of the ledger: a revert not pushed, the ledger directories put
/// back as they were and committed, `git add -A` after the views are excluded.
#[test]
fn history_user_reverts_restores_and_commits() {
    fixed(
        3,
        &[true, false, false],
        vec![
            Record { c: 0, n: 2, ids: true },
            Serve { c: 0, app: App::Cpa, n: 2 },
            Sync { c: 0 },
            Record { c: 1, n: 2, ids: true },
            Serve { c: 1, app: App::ProxyPal, n: 2 },
            Sync { c: 1 },
            Sync { c: 0 },
            Record { c: 0, n: 1, ids: false },
            Serve { c: 0, app: App::Cpa, n: 1 },
            Sync { c: 0 },
            Sync { c: 2 },
            Revert { c: 2, pick: 0 },
            RestoreOld { c: 1, back: 1 },
            Serve { c: 1, app: App::ProxyPal, n: 1 },
            CommitAll { c: 1 },
            Sync { c: 2 },
            Sync { c: 1 },
            Revert { c: 0, pick: 1 },
            Serve { c: 0, app: App::Cpa, n: 1 },
            Sync { c: 0 },
        ],
    );
}

/// Found by the histories above (a clone that reset its branch, then synced): a move that
/// adds a path and changes one sorted after it left the changed path twice in the index —
/// `git status` showed usage changed on both sides, and the stale entry is what the user's
/// next commit would have taken. The index is sorted while entries are looked up by
/// binary search, so entries added must wait until every lookup is done.
#[test]
fn an_index_update_that_adds_and_changes_paths_keeps_one_entry_per_path() {
    let env = Env::new();
    let repo = env.repo("repo");
    for p in ["b", "c", "d", "e"] {
        env.commit_file(&repo, &format!("usage/{p}.json"), b"{}\n", p);
    }
    let r = git_tally::git::Repo::open(&repo).unwrap();
    let changed = b"{\"n\": 1}\n";
    let (blob, mode) = (r.write_blob(changed).unwrap(), git_tally::git::EntryMode::Blob);
    for p in ["a", "a2", "e"] {
        std::fs::write(repo.join(format!("usage/{p}.json")), changed).unwrap();
    }
    let changes: Vec<(String, Option<_>)> =
        ["a", "a2", "e"].iter().map(|p| (format!("usage/{p}.json"), Some((blob, mode)))).collect();
    let tmp = repo.join(".git/tally-test-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    r.update_index(&changes, std::time::Duration::from_secs(1), &tmp).unwrap();
    let listed = env.git(&repo, &["ls-files", "--stage"]);
    let paths: Vec<&str> = listed.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    let mut unique = paths.clone();
    unique.dedup();
    assert_eq!(paths, unique, "one entry per path:\n{listed}");
    assert_eq!(
        env.git(&repo, &["diff", "--cached", "--name-only"]).lines().collect::<Vec<_>>(),
        ["usage/a.json", "usage/a2.json", "usage/e.json"]
    );
}

/// Found by the histories above: a sync that replays this device's shard onto an upstream
/// holding an older version of it (another clone pushed first) must leave HEAD holding
/// exactly this device's own files, so the next sync has nothing to commit. A cell new on
/// one side came out of the join with its dollar counters as `0` where the device writes
/// `0.0`: every such sync committed and pushed the same usage a second time.
#[test]
fn a_replayed_sync_leaves_nothing_for_the_next_sync_to_commit() {
    let h = History {
        clones: 2,
        ops: vec![
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            Record { c: 1, n: 1, ids: true },
            Sync { c: 1 },
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
        ],
        ..History::default()
    };
    let mut w = World::new(&h);
    for op in &h.ops {
        w.apply(op).unwrap_or_else(|e| panic!("{e}"));
    }
    let (code, out) = w.tally(0, &["sync"]);
    assert_eq!((code, first_line(&out)), (0, "sync: up to date"), "{}", w.fail("the second sync"));
}

/// Found by a history: an application that re-reads the file after each pull lists the
/// other devices' requests too, and its write takes as this device's only what the other
/// devices do not hold. Counted in HEAD alone, a branch reset (or a reverted commit) between
/// the pull and the write hid them, and they counted twice: 4 of m1's 2 requests.
#[test]
fn a_reset_branch_does_not_turn_what_the_application_read_into_its_own_requests() {
    fixed(
        2,
        &[true, false],
        vec![
            Serve { c: 1, app: App::Cpa, n: 2 },
            Sync { c: 1 },
            Sync { c: 0 },
            ResetHard { c: 0, back: 1 },
            Serve { c: 0, app: App::Cpa, n: 1 },
            Sync { c: 0 },
        ],
    );
}

/// Found by a history: a native view committed by a clone with `tally.commitView = true`
/// and brought into another clone's work tree by the user's `git pull` (or a cherry-pick)
/// is not an application's write — no application writes the native format — yet it
/// was left alone as one, for good: that clone's usage.json never showed its own requests.
#[test]
fn a_native_view_that_git_checked_out_is_written_over() {
    let h = History {
        clones: 2,
        commit_view: vec![true, false],
        ops: vec![Sync { c: 0 }, UserPull { c: 1, rebase: false }, Record { c: 1, n: 2, ids: true }, Sync { c: 1 }],
        ..History::default()
    };
    if let Err(why) = run(&h) {
        panic!("{why}");
    }
}

/// A known gap, found by the histories with `HISTORIES_WITH_VIEWS=1`: a view another clone
/// committed (`tally.commitView = true`; or an application's file a user committed with
/// `git add -A` before git-tally excluded it) comes into this clone's work tree by the
/// user's `git pull`, cherry-pick or checkout, and the next sync takes it for this clone's
/// application's write. Records are taken by identity (exact), but a ProxyPal aggregate has
/// none: m0's request is counted again as m1's. Telling a file git wrote from a commit
/// from an application's write needs a design decision (see the report of this branch).
#[test]
#[ignore = "known gap: a committed view checked out by git is ingested as an application write"]
fn a_committed_view_that_git_checked_out_is_not_an_application_write() {
    let h = History {
        clones: 2,
        commit_view: vec![true, false],
        ops: vec![
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            Record { c: 1, n: 1, ids: true },
            UserPull { c: 1, rebase: false },
            Sync { c: 1 },
        ],
        ..History::default()
    };
    if let Err(why) = run(&h) {
        panic!("{why}");
    }
}

/// A known gap, found with `HISTORIES_WITH_VIEWS=1`: git-tally lists the views in
/// `.git/info/exclude`, and git overwrites ignored files without asking. Once another clone
/// commits the view (`tally.commitView = true`), the user's `git pull` here puts that view
/// over the application's write that no sync has read yet; an application that re-reads
/// after the pull then forgets its requests too. Committing the view at the application's
/// own path is what lets git write there (see the report of this branch).
#[test]
#[ignore = "known gap: git overwrites an application's unread write with a committed view"]
fn a_committed_view_never_overwrites_an_applications_unread_write() {
    let h = History {
        clones: 2,
        after_pull: vec![false, true],
        commit_view: vec![true, false],
        ops: vec![
            Sync { c: 1 },
            Serve { c: 1, app: App::Cpa, n: 2 },
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            UserPull { c: 1, rebase: false },
            Sync { c: 1 },
        ],
        ..History::default()
    };
    if let Err(why) = run(&h) {
        panic!("{why}");
    }
}

/// Found by a history: `git tally install` wrote `*.ledger/**/*.json merge=tally`, and in
/// .gitattributes a pattern with a slash matches from the top, so `*` never crossed into
/// `usage/`: the ledger files beside `usage/usage.json` merged as text. A cherry-pick of
/// a squashed root commit stopped on every shard both sides had (add/add); a merge of two
/// versions of one shard could pass as a text merge of JSON.
#[test]
fn the_driver_merges_the_ledger_files_beside_the_usage_file() {
    let h = History {
        clones: 2,
        ops: vec![
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            Record { c: 1, n: 1, ids: true },
            Sync { c: 1 },
            Record { c: 0, n: 1, ids: true },
            Sync { c: 0 },
            SquashRemote { c: 1, mine: true },
            CherryPick { c: 0, pick: 0 },
        ],
        ..History::default()
    };
    if let Err(why) = run(&h) {
        panic!("{why}");
    }
    let env = Env::new();
    let repo = env.repo("repo");
    env.tally(&repo).arg("install").assert().success();
    for path in ["usage/usage.ledger/0123abcd/2026-10/2026-10-20.json", "usage.ledger/0123abcd/device.json"] {
        assert_eq!(env.git(&repo, &["check-attr", "merge", "--", path]).trim(), format!("{path}: merge: tally"));
    }
}

/// Found by a history: a clone copied whole (`cp -a`, to set up a new machine) is re-keyed
/// and drops the original's state, but the applications' files in its work tree are the
/// original's writes — read by the original's next sync. The copy took them as its own
/// applications' writes: 4 of m0's 2 requests.
#[test]
fn a_copied_clone_does_not_take_the_originals_application_writes() {
    fixed(
        2,
        &[],
        vec![
            Record { c: 0, n: 2, ids: true },
            Sync { c: 0 },
            Record { c: 0, n: 1, ids: true },
            Serve { c: 0, app: App::Cpa, n: 2 },
            Serve { c: 0, app: App::ProxyPal, n: 2 },
            Copy { c: 0 },
            Sync { c: 2 },
            Sync { c: 0 },
            Record { c: 2, n: 1, ids: true },
            Sync { c: 2 },
        ],
    );
}

/// Found by the histories: a copy's own application wrote its file before git-tally first
/// ran in the copy; the copy took that write for the original's (every file in a copy's
/// work tree was), and its request was never counted. Files the original left are told
/// apart by not having changed since the copy (or by the original knowing them).
#[test]
fn a_copied_clones_own_application_write_before_its_first_sync_counts() {
    fixed(
        2,
        &[],
        vec![
            Record { c: 0, n: 1, ids: true },
            Serve { c: 0, app: App::Cpa, n: 2 },
            Serve { c: 0, app: App::ProxyPal, n: 1 },
            Sync { c: 0 },
            Serve { c: 0, app: App::Cpa, n: 1 },
            Copy { c: 0 },
            Serve { c: 2, app: App::Cpa, n: 1 },
            Serve { c: 2, app: App::ProxyPal, n: 1 },
            Sync { c: 2 },
            Sync { c: 0 },
            Sync { c: 2 },
        ],
    );
}

/// The lock file git names when it cannot take a lock that another (here: a killed)
/// process left: `Unable to create '<path>.lock': File exists.`
fn left_lock(said: &str) -> Option<PathBuf> {
    let start = said.find("Unable to create '")? + "Unable to create '".len();
    let len = said[start..].find("': File exists")?;
    let path = &said[start..start + len];
    path.ends_with(".lock").then(|| PathBuf::from(path))
}
