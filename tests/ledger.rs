//! The ledger as a CRDT, with the library and no git (fast, so many cases run):
//! - join laws for every kind of ledger file and every profile: commutative,
//!   associative, idempotent;
//! - convergence: several devices record events (retries and later versions of an
//!   event included) and exchange their files in any order — stale copies delivered late,
//!   a remote rewritten to an older state, a device's tree reset to an older commit —
//!   and every device's view ends equal to one machine applying every event once;
//! - views of joined ledgers are the same whichever order the joins ran in.

use chrono::{DateTime, Duration};
use git_tally::config::Config;
use git_tally::event::Event;
use git_tally::ledger::{Ledger, LedgerFile, Source};
use git_tally::profile::{self, Profile};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

const FILE: &str = "usage/usage.json";

/// A tree of ledger files in memory: path (from the top) → bytes.
#[derive(Clone, Default, Debug)]
struct Tree(BTreeMap<String, Vec<u8>>);

impl Tree {
    /// Joins a file in, as git-tally's integration joins two versions of one path.
    fn put(&mut self, path: &str, bytes: &[u8]) {
        let joined = match self.0.get(path) {
            Some(old) if old == bytes => return,
            Some(old) => {
                let (a, b) = (LedgerFile::parse(old).unwrap(), LedgerFile::parse(bytes).unwrap());
                a.join(&b).unwrap().render()
            }
            None => bytes.to_vec(),
        };
        self.0.insert(path.to_string(), joined);
    }

    fn join(&mut self, other: &Tree) {
        for (p, b) in &other.0 {
            self.put(p, b);
        }
    }
}

impl Source for Tree {
    fn files(&self, ledger_dir: &str) -> git_tally::error::Result<Vec<(String, Vec<u8>)>> {
        let prefix = format!("{ledger_dir}/");
        Ok(self.0.iter().filter_map(|(p, b)| Some((p.strip_prefix(&prefix)?.to_string(), b.clone()))).collect())
    }
}

struct Device {
    ledger: Ledger,
    tree: Tree,
    /// This device's files as its last commit left them in its tree.
    committed_own: BTreeMap<String, Vec<u8>>,
    /// Earlier trees of this device (a `git reset` goes back to one).
    history: Vec<Tree>,
    _dir: tempfile::TempDir,
}

fn device(profile: &str, name: &str) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".git/tally");
    std::fs::create_dir_all(&state).unwrap();
    let config = Config {
        files: vec![PathBuf::from(FILE)],
        profile: Some(profile.into()),
        device: name.into(),
        ..Config::default()
    };
    let ledger = Ledger::open(dir.path(), &state, &dir.path().join(".git"), config, &|_| Default::default()).unwrap();
    Device { ledger, tree: Tree::default(), committed_own: BTreeMap::new(), history: Vec::new(), _dir: dir }
}

impl Device {
    /// What `sync` does, without git: fold, commit this device's changed files into its
    /// tree, join the remote in, push the joined tree (it contains the remote).
    fn sync(&mut self, remote: &mut Tree) {
        self.ledger.fold().unwrap();
        // As `Sync::commit`: every own file when the tree's copy is not what the last
        // commit left (a reset branch, a rewritten remote).
        let all = self.own_in_tree() != self.committed_own;
        for (path, bytes) in self.ledger.changed_files(all).unwrap() {
            self.tree.put(&path, &bytes);
        }
        self.ledger.committed().unwrap();
        self.committed_own = self.own_in_tree();
        self.tree.join(remote);
        self.history.push(self.tree.clone());
        remote.join(&self.tree);
    }

    fn own_in_tree(&self) -> BTreeMap<String, Vec<u8>> {
        let prefix = format!("usage/usage.ledger/{}/", self.ledger.key());
        self.tree.0.iter().filter(|(p, _)| p.starts_with(&prefix)).map(|(p, b)| (p.clone(), b.clone())).collect()
    }

    fn view(&self) -> Value {
        let stream = &self.ledger.streams()[0];
        self.ledger.view(stream, &self.tree, false).unwrap().doc
    }
}

/// Event `i` of device `d`: unique instants over a few days; version `v` of it has more
/// output tokens.
fn event(i: usize, d: usize, model: u8, v: u64, failed: bool) -> Event {
    let t0 = DateTime::parse_from_rfc3339("2026-10-01T00:00:00+09:00").unwrap();
    let ts = t0 + Duration::minutes(47 * i as i64) + Duration::seconds(d as i64);
    // ProxyPal's history and ccu files know a request by its id alone: there, ids of two
    // devices differ (in the native and CLIProxyAPI formats the same id on two devices is
    // two requests, and the tests use the same ids).
    let id = if UNIQUE_IDS.with(|u| u.get()) { format!("d{d}-e{i}") } else { format!("e{i}") };
    let line = json!({
        "id": id, "timestamp": ts.to_rfc3339(),
        "provider": (["openai", "anthropic"][model as usize % 2]),
        "model": (["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro"][model as usize % 3]),
        "source": "acct@example.com", "auth_index": "1",
        "input_tokens": 100 + i as u64, "output_tokens": 10 + v * 7, "cached_tokens": i as u64 % 5,
        "failed": failed, "cost_usd": (i % 4) as f64 * 0.25,
    });
    Event::parse(&line.to_string(), ts, "x").unwrap()
}

/// One machine applying the final version of every event once, in time order, with the
/// device name of the machine that recorded it.
fn truth(p: &Profile, events: &BTreeMap<usize, (Event, String)>) -> Value {
    let mut all: Vec<Event> = events.values().map(|(e, d)| Event { device: d.clone(), ..e.clone() }).collect();
    all.sort_by_key(|e| e.timestamp);
    let mut doc = (p.empty)();
    for e in &all {
        (p.apply.unwrap())(&mut doc, e).unwrap();
    }
    doc
}

#[derive(Clone, Debug)]
enum Step {
    /// Device records event `i` (a retry if it recorded it before).
    Record {
        device: u8,
        i: u8,
        model: u8,
        failed: bool,
    },
    /// Device records a later version of an event it recorded (more tokens).
    Complete {
        device: u8,
        i: u8,
    },
    Sync {
        device: u8,
    },
    /// The remote is force-pushed back to what one device had earlier.
    RewriteRemote {
        device: u8,
        back: u8,
    },
    /// A device's branch is reset to an earlier commit of its own.
    ResetDevice {
        device: u8,
        back: u8,
    },
}

fn step(devices: u8) -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..devices, 0u8..40, 0u8..3, any::<bool>()).prop_map(|(device, i, model, failed)| Step::Record { device, i, model, failed }),
        2 => (0..devices, 0u8..40).prop_map(|(device, i)| Step::Complete { device, i }),
        4 => (0..devices).prop_map(|device| Step::Sync { device }),
        1 => (0..devices, 0u8..4).prop_map(|(device, back)| Step::RewriteRemote { device, back }),
        1 => (0..devices, 0u8..4).prop_map(|(device, back)| Step::ResetDevice { device, back }),
    ]
}

thread_local! {
    static UNIQUE_IDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn converge(profile_name: &str, supersedes: bool, steps: &[Step], n: u8) -> Result<(), TestCaseError> {
    UNIQUE_IDS.with(|u| u.set(matches!(profile_name, "proxypal-history" | "ccu-usage")));
    let p = profile::by_name(profile_name).unwrap();
    let mut devices: Vec<Device> = (0..n).map(|d| device(profile_name, &format!("dev{d}"))).collect();
    let mut remote = Tree::default();
    // Per device: event i → its latest version (ids are per device: the same i on two
    // devices is two requests).
    let mut recorded: Vec<BTreeMap<usize, (u8, u64, bool)>> = vec![BTreeMap::new(); n as usize];
    for s in steps {
        match *s {
            Step::Record { device, i, model, failed } => {
                let d = device as usize;
                let (model, v, failed) = *recorded[d].entry(i as usize).or_insert((model, 0, failed));
                devices[d].ledger.record(vec![event(i as usize, d, model, v, failed)]).unwrap();
            }
            Step::Complete { device, i } if supersedes => {
                let d = device as usize;
                if let Some(entry) = recorded[d].get_mut(&(i as usize)) {
                    entry.1 += 1;
                    let (model, v, failed) = *entry;
                    devices[d].ledger.record(vec![event(i as usize, d, model, v, failed)]).unwrap();
                }
            }
            Step::Complete { .. } => {}
            Step::Sync { device } => devices[device as usize].sync(&mut remote),
            Step::RewriteRemote { device, back } => {
                let h = &devices[device as usize].history;
                if let Some(old) = h.len().checked_sub(1 + back as usize).map(|k| h[k].clone()) {
                    remote = old;
                }
            }
            Step::ResetDevice { device, back } => {
                let dev = &mut devices[device as usize];
                if let Some(old) = dev.history.len().checked_sub(1 + back as usize).map(|k| dev.history[k].clone()) {
                    dev.tree = old;
                }
            }
        }
    }
    for _ in 0..2 {
        for d in devices.iter_mut() {
            d.sync(&mut remote);
        }
    }
    // The truth: each device's events at their latest version, named after the device.
    let mut all_events: BTreeMap<usize, (Event, String)> = BTreeMap::new();
    for (d, evs) in recorded.iter().enumerate() {
        for (&i, &(model, v, failed)) in evs {
            all_events.insert(i * 16 + d, (event(i, d, model, v, failed), format!("dev{d}")));
        }
    }
    let want = truth(p, &all_events);
    for (k, d) in devices.iter().enumerate() {
        let got = d.view();
        prop_assert!(
            same_view(p, &got, &want),
            "{profile_name}: device {k} differs from one machine applying every event once:\n{}",
            diff(&want, &got)
        );
    }
    Ok(())
}

/// Views compared as documents; the native format's records are compared as a set (the
/// same instant on two devices may list in either order).
fn same_view(p: &Profile, a: &Value, b: &Value) -> bool {
    if p.name != "tally" {
        return a == b;
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        let mut recent: Vec<String> =
            v["recent"].as_array().cloned().unwrap_or_default().iter().map(|r| r.to_string()).collect();
        recent.sort();
        v["recent"] = json!(recent);
        v
    };
    strip(a) == strip(b)
}

fn diff(want: &Value, got: &Value) -> String {
    let pretty = |v: &Value| {
        let sorted: Value = serde_json::from_str(&git_tally::json::canonical(v)).unwrap();
        serde_json::to_string_pretty(&sorted).unwrap()
    };
    similar::TextDiff::from_lines(&pretty(want), &pretty(got)).unified_diff().context_radius(2).to_string()
}

fn random_file(profile: &str, device: &str, seed: &[(u8, u8, u16)]) -> LedgerFile {
    // A shard of one device and day, from records and counters picked by `seed`.
    let p = profile::by_name(profile).unwrap();
    let mut shard = git_tally::ledger::Shard::new(p, device, "2026-10-01");
    for (k, &(i, rev, tokens)) in seed.iter().enumerate() {
        let e = event(i as usize, 0, i % 3, tokens as u64, false);
        if let Some((caps, body)) = p.records.as_ref().and_then(|r| r.of_event).map(|f| f(&e, &format!("e{i}"))) {
            shard.records.insert(
                format!("e{i}"),
                git_tally::ledger::Record { rid: format!("e{i}"), seq: k as u64 + 1, rev: rev as u64, caps, body },
            );
        }
        if p.name == "tally" {
            let hour = format!("{:02}", i % 24);
            let c = &mut shard.counters;
            let cell = &mut c[&hour]["openai"]["openai"]["gpt-5"];
            cell["requests"] = json!(cell["requests"].as_u64().unwrap_or(0).max(tokens as u64));
        }
    }
    LedgerFile::Shard(shard)
}

fn file_seed() -> impl Strategy<Value = Vec<(u8, u8, u16)>> {
    prop::collection::vec((0u8..12, 0u8..3, 0u16..500), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// Join laws for shards of every profile with records or cells.
    #[test]
    fn ledger_files_join_by_the_laws(a in file_seed(), b in file_seed(), c in file_seed(), which in 0usize..5) {
        let name = ["tally", "cliproxyapi", "proxypal-history", "ccu-usage", "tally"][which];
        let (fa, fb, fc) = (random_file(name, "d", &a), random_file(name, "d", &b), random_file(name, "d", &c));
        let ab = fa.join(&fb).unwrap();
        prop_assert_eq!(ab.render(), fb.join(&fa).unwrap().render(), "commutative");
        prop_assert_eq!(fa.join(&fa).unwrap().render(), {
            let mut x = fa.clone();
            if let LedgerFile::Shard(s) = &mut x { s.trim(); }
            x.render()
        }, "idempotent");
        prop_assert_eq!(ab.join(&fb).unwrap().render(), ab.render(), "absorbs what it joined");
        prop_assert_eq!(ab.join(&fc).unwrap().render(), fa.join(&fb.join(&fc).unwrap()).unwrap().render(), "associative");
        // The merge driver joins them too, whatever the base.
        let m = git_tally::merge::merge_bytes(None, b"", &fa.render(), &fb.render()).unwrap();
        prop_assert_eq!(m.output, ab.render());
    }

    #[test]
    fn devices_converge_native(steps in prop::collection::vec(step(3), 1..40)) {
        converge("tally", true, &steps, 3)?;
    }

    #[test]
    fn devices_converge_cliproxyapi(steps in prop::collection::vec(step(3), 1..40)) {
        converge("cliproxyapi", true, &steps, 3)?;
    }

    #[test]
    fn devices_converge_proxypal_aggregate(steps in prop::collection::vec(step(3), 1..40)) {
        converge("proxypal-aggregate", false, &steps, 3)?;
    }

    #[test]
    fn devices_converge_proxypal_history(steps in prop::collection::vec(step(3), 1..40)) {
        converge("proxypal-history", true, &steps, 3)?;
    }
}
