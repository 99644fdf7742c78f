//! From git-tally 0.1 (SPEC §4b). 0.1 kept one usage file, committed, and under
//! `.git/tally/`, per usage file (`<key>`: FNV-1a of its path): a copy holding what was not
//! committed yet (`ledger-<key>.json`, on the commit in `ledger-<key>.base`), a journal
//! of events not folded yet (`journal-<key>.jsonl`), the ids folded lately
//! (`seen-<key>.ids`) and, in file mode, the application's previous write
//! (`app-<key>.json`) and what it read after a pull (`pulled-<key>.json`).
//!
//! The first sync of this version turns that into ledger state:
//! - the usage file — the committed one while no ledger is committed beside it, and 0.1's
//!   copy — becomes *legacy devices*: ledger files made from its content alone, so that
//!   clones migrating the same file make the same bytes and the join counts it once, and
//!   a clone whose 0.1 copy held more (committed, not pushed) adds what it held more. The
//!   native format's cells keep their 0.1 device (one legacy device per name); the other
//!   formats have one, `legacy`. This clone carries them (`carried/`) until a commit
//!   holds them;
//! - pending events are recorded again as this device's, their ids kept; the ids 0.1
//!   folded lately are remembered as counted (a retry after the upgrade counts once);
//! - the file-mode copies become what the application last wrote and read;
//! - 0.1's files move to `.git/tally/0.1/` (nothing is deleted, nothing migrates twice).
//!
//! Exact for records (they join by identity) and for the native format (its cells are
//! per device, and only that device changed them). For aggregate counters of other
//! formats, two clones that both had unsynced 0.1 changes when they upgraded join by the
//! larger: the smaller change is not counted.

use super::algebra::{self, Op};
use super::fold::add_at;
use super::ids::Remembered;
use super::ingest::{contribution, records_in};
use super::shard::{counter_rules, DeviceFile, LedgerFile, Record, Residual, Shard};
use super::view::hash;
use super::{Ledger, Source, Stream};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::profile::Profile;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The device key of a format's legacy counts (the native format has one per 0.1 device).
pub const LEGACY_DEVICE: &str = "legacy";
/// When legacy devices were named: before any real rename.
const LEGACY_NAMED_AT: &str = "1970-01-01T00:00:00Z";

/// 0.1's files for one usage file.
struct Old {
    dir: PathBuf,
    key: String,
}

impl Old {
    fn new(state_root: &Path, file: &str) -> Old {
        let h = file.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        Old { dir: state_root.to_path_buf(), key: format!("{h:016x}") }
    }

    fn path(&self, prefix: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{prefix}-{}{suffix}", self.key))
    }

    fn read(&self, prefix: &str, suffix: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(prefix, suffix)).ok()
    }

    /// Every 0.1 file of this usage file that exists.
    fn existing(&self) -> Vec<PathBuf> {
        [
            ("ledger", ".json"),
            ("ledger", ".base"),
            ("journal", ".jsonl"),
            ("seen", ".ids"),
            ("app", ".json"),
            ("pulled", ".json"),
            ("written", ""),
            ("fold", ".pending"),
        ]
        .iter()
        .map(|(p, s)| self.path(p, s))
        .filter(|p| p.exists())
        .collect()
    }
}

/// The ledger files a 0.1 usage file amounts to, by path below the ledger directory.
pub(crate) fn legacy_files(profile: &'static Profile, bytes: &[u8]) -> std::result::Result<Files, String> {
    let mut out = Files::new();
    let device_file = |key: &str, name: &str| {
        LedgerFile::Device(DeviceFile { device: key.into(), name: name.into(), named_at: LEGACY_NAMED_AT.into() })
    };
    if profile.name == "tally" {
        let doc = crate::json::parse(bytes).map_err(|p| p.to_string())?;
        // 0.1: days/<day>/<device>/<provider>/<model>; a view: hours/<hour>/<device>/<provider>/<api>/<model>.
        let mut cells: BTreeMap<(String, String), Value> = BTreeMap::new(); // (device, day) → counters
        let mut add =
            |device: &str, day: &str, path: [String; 4], counters: &Value| -> std::result::Result<(), String> {
                let Some(c) = counters.as_object() else { return Ok(()) };
                let amounts: Map<String, Value> = c
                    .iter()
                    .filter(|(_, v)| v.is_number())
                    .map(|(k, v)| {
                        (if k == "cached_tokens" { "cache_read_tokens".into() } else { k.clone() }, v.clone())
                    })
                    .collect();
                let shard = cells.entry((device.to_string(), day.to_string())).or_insert_with(|| json!({}));
                add_at(shard, &path, &amounts)
            };
        for (day, devices) in each(&doc["days"]) {
            for (device, providers) in each(devices) {
                for (provider, models) in each(providers) {
                    for (model, counters) in each(models) {
                        let path = ["00".into(), provider.clone(), "unknown".into(), model.clone()];
                        add(device, day, path, counters)?;
                    }
                }
            }
        }
        for (hour, devices) in each(&doc["hours"]) {
            let (Some(day), Some(hh)) = (hour.get(..10), hour.get(11..13)) else { continue };
            for (device, providers) in each(devices) {
                for (provider, apis) in each(providers) {
                    for (api, models) in each(apis) {
                        for (model, counters) in each(models) {
                            add(device, day, [hh.into(), provider.clone(), api.clone(), model.clone()], counters)?;
                        }
                    }
                }
            }
        }
        for ((device, day), counters) in cells {
            let key = format!("{LEGACY_DEVICE}-{}", &hash(device.as_bytes())[..12]);
            out.entry(format!("{key}/device.json")).or_insert_with(|| device_file(&key, &device));
            let mut shard = Shard::new(profile, &key, &day);
            shard.counters = counters;
            out.insert(format!("{key}/{}", Stream::shard_name(&day)), LedgerFile::Shard(shard));
        }
        return Ok(out);
    }

    let key = LEGACY_DEVICE;
    let (skeleton, found) = records_in(profile, bytes)?;
    let contributed = contribution(profile, found.iter().map(|(c, _, _, b)| (c.as_slice(), b)))?;
    let residual =
        algebra::combine(counter_rules(profile), Op::Sub, &skeleton, &contributed).map_err(|e| e.to_string())?;
    out.insert(format!("{key}/device.json"), device_file(key, "git-tally 0.1"));
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by(|&a, &b| found[a].1.cmp(&found[b].1));
    let mut nth: HashMap<&str, usize> = HashMap::new();
    for (seq, i) in order.into_iter().enumerate() {
        let (caps, id, time, body) = &found[i];
        let n = nth.entry(id.as_str()).or_default();
        let rid = format!("l{}-{n}", hash(id.as_bytes()));
        *n += 1;
        let day = super::ingest::utc_day_of(*time);
        let path = format!("{key}/{}", Stream::shard_name(&day));
        let entry = out.entry(path).or_insert_with(|| LedgerFile::Shard(Shard::new(profile, key, &day)));
        if let LedgerFile::Shard(s) = entry {
            let record =
                Record { rid: rid.clone(), seq: seq as u64 + 1, rev: 0, caps: caps.clone(), body: body.clone() };
            s.records.insert(rid, record);
        }
    }
    if residual.as_object().is_some_and(|m| !m.is_empty()) {
        out.insert(
            format!("{key}/residual.json"),
            LedgerFile::Residual(Residual { profile, device: key.into(), counters: residual, local: Value::Null }),
        );
    }
    Ok(out)
}

/// The entries of an object (none for anything else).
fn each(v: &Value) -> Vec<(&String, &Value)> {
    v.as_object().into_iter().flat_map(|m| m.iter()).collect()
}

/// Ledger files by path below a ledger directory.
pub(crate) type Files = BTreeMap<String, LedgerFile>;

/// Joins `b` into `a`, file by file.
fn join_into(a: &mut Files, b: Files) -> std::result::Result<(), String> {
    for (path, f) in b {
        let joined = match a.remove(&path) {
            Some(old) => old.join(&f).map_err(|e| format!("{path}: {e}"))?,
            None => f,
        };
        a.insert(path, joined);
    }
    Ok(())
}

/// What a 0.1 stream's HEAD holds, as the caller (git) sees it.
pub struct Head<'a> {
    /// HEAD's version of the usage file.
    pub file: Option<&'a [u8]>,
    /// Whether HEAD holds a ledger directory for it.
    pub has_ledger: bool,
}

impl Ledger {
    /// Ledger files this clone carries for a stream (other devices' files not in a commit
    /// yet: what a migration made), by path below the ledger directory.
    pub(crate) fn carried(&self, stream: &Stream) -> Result<Vec<(String, Vec<u8>)>> {
        let root = self.state.carried_dir(&stream.file);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if e.file_name().to_string_lossy().starts_with(".git-tally-") {
                    // A write a killed run left half done (its temporary file): not a
                    // ledger file.
                    continue;
                } else if let Ok(rel) = p.strip_prefix(&root) {
                    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                    out.push((rel.to_string_lossy().into_owned(), bytes));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every carried file, by path in the work tree (for a commit).
    pub fn carried_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for s in &self.streams {
            for (p, b) in self.carried(s)? {
                out.push((format!("{}/{p}", s.ledger_dir()), b));
            }
        }
        Ok(out)
    }

    /// Forgets the carried files once a commit holds them.
    pub fn carried_committed(&self) -> Result<()> {
        for s in &self.streams {
            let dir = self.state.carried_dir(&s.file);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        Ok(())
    }

    /// Turns what 0.1 left for `stream` into ledger state (see the module comment); a
    /// no-op when there is nothing of 0.1. Call with the repository lock held. Returns a
    /// notice for the user when it migrated something.
    pub fn migrate(&self, stream: &Stream, head: Head<'_>) -> Result<Option<String>> {
        let old = Old::new(self.state.root(), &stream.file);
        let existing = old.existing();
        let from_head = head.file.filter(|_| !head.has_ledger);
        if existing.is_empty() && from_head.is_none() {
            return Ok(None);
        }
        let profile = stream.profile;
        let fail = |what: &str, e: String| Error::Failed(format!("{}: {what}: {e}", stream.file));
        let mut files = Files::new();
        for (what, bytes) in
            [("0.1's copy", old.read("ledger", ".json")), ("the committed file", from_head.map(<[u8]>::to_vec))]
        {
            let Some(bytes) = bytes.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else { continue };
            let made = legacy_files(profile, &bytes).map_err(|e| fail(what, e))?;
            join_into(&mut files, made).map_err(|e| fail(what, e))?;
        }
        // Carried first: a crash after this point repeats the migration, whose files join
        // to the same.
        let before = self.carried(stream)?;
        let carried: Files =
            before.iter().filter_map(|(p, b)| LedgerFile::parse(b).ok().map(|f| (p.clone(), f))).collect();
        join_into(&mut files, carried).map_err(|e| fail("carried files", e))?;
        let after: Vec<(String, Vec<u8>)> = files.iter().map(|(p, f)| (p.clone(), f.render())).collect();
        if existing.is_empty() && after == before {
            return Ok(None); // migrated before, not committed yet
        }
        let root = self.state.carried_dir(&stream.file);
        for (path, bytes) in &after {
            let p = root.join(path);
            self.state.ensure(p.parent().expect("below the carried directory"))?;
            write_atomic(&p, bytes)?;
        }

        // Events 0.1 had not folded (unless its last fold finished but for the journal).
        let mut events = 0;
        if let Some(journal) = old.read("journal", ".jsonl") {
            let folded = old
                .read("fold", ".pending")
                .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
                .and_then(|m| m["hash"].as_u64())
                .is_some_and(|h| Some(h) == old.read("ledger", ".json").map(|l| fnv(&l)));
            if !folded {
                let now = chrono::Utc::now().fixed_offset();
                let mut parsed = Vec::new();
                for (i, line) in String::from_utf8_lossy(&journal).lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match crate::event::Event::parse(line, now, &self.config.device) {
                        Ok(e) => parsed.push(e),
                        Err(e) => {
                            return Err(Error::Failed(format!(
                                "{}:{}: {e}; fix or remove the line, then sync again",
                                old.path("journal", ".jsonl").display(),
                                i + 1
                            )))
                        }
                    }
                }
                events = self.record(parsed)?.recorded;
            }
        }
        // Ids 0.1 folded lately: counted (in the legacy devices).
        if let Some(seen) = old.read("seen", ".ids") {
            let today = super::today();
            let entries = String::from_utf8_lossy(&seen)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|id| Remembered { id: id.trim().to_string(), total: u64::MAX, seen: today, ..Default::default() })
                .collect();
            self.ids().remember(entries, today)?;
        }
        // File mode: what the application last wrote and read.
        let mut residual = self.own_residual(stream)?;
        let mut local = residual.local.as_object().cloned().unwrap_or_default();
        for (prefix, key) in [("app", "prev"), ("pulled", "read")] {
            if local.contains_key(key) {
                continue;
            }
            if let Some(v) = old.read(prefix, ".json").and_then(|b| beyond_records(profile, &b).ok()) {
                local.insert(key.into(), v);
            }
        }
        if let Some(app) = std::fs::read(self.top.join(&stream.file)).ok().filter(|b| {
            old.read("written", "")
                .is_some_and(|w| String::from_utf8_lossy(&w).lines().any(|l| l.trim() == fnv(b).to_string()))
        }) {
            // The file is 0.1's own write: not the application's.
            local.insert("written".into(), json!(hash(&app)));
        }
        if !local.is_empty() {
            residual.local = Value::Object(local);
            self.write_own_local(stream, &[("residual.json".into(), LedgerFile::Residual(residual))])?;
        }

        // 0.1's files, kept aside.
        let aside = self.state.root().join("0.1");
        self.state.ensure(&aside)?;
        for p in &existing {
            let to = aside.join(p.file_name().expect("a file"));
            std::fs::rename(p, &to).map_err(|e| Error::io(p, e))?;
        }
        let devices = files.keys().filter(|p| p.ends_with("/device.json")).count();
        Ok(Some(format!(
            "{}: migrated from git-tally 0.1: its counts are now {} of the ledger{}; 0.1's files are kept in {}",
            stream.file,
            plural(devices, "legacy device"),
            if events > 0 {
                format!(", and {} it had not folded are recorded", plural(events, "event"))
            } else {
                String::new()
            },
            aside.display()
        )))
    }
}

impl Ledger {
    /// 0.1's files for usage files no longer configured (after `migrate` took those of the
    /// configured ones): events it journaled are recorded again (they count in the usage
    /// files configured now), the rest is kept aside in `.git/tally/0.1/`. Call with the
    /// repository lock held.
    pub fn migrate_leftovers(&self) -> Result<Option<String>> {
        let Ok(entries) = std::fs::read_dir(self.state.root()) else { return Ok(None) };
        let mut left: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                ["journal-", "ledger-", "seen-", "app-", "pulled-", "written-", "fold-"].iter().any(|pre| {
                    name.strip_prefix(pre).is_some_and(|rest| {
                        rest.len() >= 16 && rest.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit) && p.is_file()
                    })
                })
            })
            .collect();
        if left.is_empty() {
            return Ok(None);
        }
        left.sort();
        let now = chrono::Utc::now().fixed_offset();
        let mut events = Vec::new();
        for p in left.iter().filter(|p| p.to_string_lossy().ends_with(".jsonl")) {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                events.push(crate::event::Event::parse(line, now, &self.config.device).map_err(|e| {
                    Error::Failed(format!("{}:{}: {e}; fix or remove the line, then sync again", p.display(), i + 1))
                })?);
            }
        }
        let recorded = if events.is_empty() { 0 } else { self.record(events)?.recorded };
        let aside = self.state.root().join("0.1");
        self.state.ensure(&aside)?;
        for p in &left {
            std::fs::rename(p, aside.join(p.file_name().expect("a file"))).map_err(|e| Error::io(p, e))?;
        }
        Ok(Some(format!(
            "git-tally 0.1 left files for a usage file no longer in tally.file: {} of its journal recorded now (counted in {}); the files are kept in {}",
            plural(recorded, "event"),
            self.streams.iter().map(|s| s.file.as_str()).collect::<Vec<_>>().join(", "),
            aside.display()
        )))
    }
}

/// What a document counts beyond its records (the residual form the file-mode
/// bookkeeping compares).
fn beyond_records(profile: &'static Profile, bytes: &[u8]) -> std::result::Result<Value, String> {
    let (skeleton, found) = records_in(profile, bytes)?;
    let contributed = contribution(profile, found.iter().map(|(c, _, _, b)| (c.as_slice(), b)))?;
    algebra::combine(counter_rules(profile), Op::Sub, &skeleton, &contributed).map_err(|e| e.to_string())
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// FNV-1a as 0.1 computed it (its journal and written-file fingerprints).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A source with this clone's carried files joined in.
pub(crate) struct WithCarried<'a> {
    pub source: &'a dyn Source,
    pub ledger: &'a Ledger,
}

impl Source for WithCarried<'_> {
    fn files(&self, ledger_dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = self.source.files(ledger_dir)?;
        let Some(stream) = self.ledger.streams.iter().find(|s| s.ledger_dir() == ledger_dir) else {
            return Ok(files);
        };
        let carried = self.ledger.carried(stream)?;
        if carried.is_empty() {
            return Ok(files);
        }
        let mut at: HashMap<String, usize> = files.iter().enumerate().map(|(i, (p, _))| (p.clone(), i)).collect();
        for (path, bytes) in carried {
            match at.get(&path) {
                Some(&i) => {
                    let joined = match (LedgerFile::parse(&files[i].1), LedgerFile::parse(&bytes)) {
                        (Ok(a), Ok(b)) => a.join(&b).map(|f| f.render()).unwrap_or_else(|_| files[i].1.clone()),
                        _ => files[i].1.clone(),
                    };
                    files[i].1 = joined;
                }
                None => {
                    at.insert(path.clone(), files.len());
                    files.push((path, bytes));
                }
            }
        }
        Ok(files)
    }
}
