//! Folding the journal into this device's shards. A sealed segment is applied to every
//! stream; each shard records the last segment it holds (`folded`), so a fold killed
//! half way is finished by the next one without applying anything twice. The remembered
//! ids are updated once every shard holds the segment, then the segment goes.

use super::ids::Remembered;
use super::shard::{LedgerFile, Record, Shard};
use super::{today, utc_day, Ledger, Stream};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::profile::{self, event_amounts};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// What an event does to the ledger, decided once for every stream.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// A new event, counted in the shard of `day` (in the native format, in `cell`, by
    /// `amounts`).
    New { day: String, cell: Vec<String>, amounts: Map<String, Value> },
    /// A later version of an event already counted (`prev`): the difference counts (in
    /// the native format, in `cell`, by `delta`).
    Supersede { prev: Remembered, cell: Vec<String>, delta: Map<String, Value> },
    /// A retry: nothing to do.
    Duplicate,
}

/// Decides each event's action against the remembered ids and the events before it.
pub(crate) fn decide(events: &[Event], remembered: &HashMap<String, Remembered>) -> (Vec<Action>, Vec<Remembered>) {
    let mut batch: HashMap<String, Remembered> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut actions = Vec::with_capacity(events.len());
    let now = today();
    for e in events {
        let id = e.id.clone().expect("journal events have ids");
        let prev = batch.get(&id).or_else(|| remembered.get(&id)).cloned();
        if prev.as_ref().is_some_and(|p| e.total_tokens <= p.total || p.compacted()) {
            actions.push(Action::Duplicate);
            continue;
        }
        let new = event_amounts(e);
        let (day, cell) = match &prev {
            Some(p) => (p.day.clone(), p.cell.clone()),
            None => (utc_day(e), native_cell(e)),
        };
        let amounts = Value::Object(max_amounts(prev.as_ref().map(|p| &p.amounts), &new));
        let action = match prev {
            Some(prev) => {
                let delta = new
                    .iter()
                    .map(|(k, v)| {
                        let old = prev.amounts.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                        let d = (v.as_f64().unwrap_or(0.0) - old).max(0.0);
                        (k.clone(), if v.is_f64() { json!(d) } else { json!(d as u64) })
                    })
                    .collect();
                let cell = if prev.cell.len() == 4 { prev.cell.clone() } else { native_cell(e) };
                Action::Supersede { prev, cell, delta }
            }
            None => Action::New { day: day.clone(), cell: cell.clone(), amounts: new },
        };
        if !batch.contains_key(&id) {
            order.push(id.clone());
        }
        let keep = crate::event::remembered_for_good(&id);
        batch.insert(id.clone(), Remembered { id, day, cell, total: e.total_tokens, amounts, seen: now, keep });
        actions.push(action);
    }
    let remembered = order.into_iter().filter_map(|id| batch.remove(&id)).collect();
    (actions, remembered)
}

/// The native cell of an event: UTC hour, provider, api, model.
fn native_cell(e: &Event) -> Vec<String> {
    vec![
        profile::hour_key(&e.timestamp),
        profile::cell_name(&e.provider),
        profile::cell_name(&e.api),
        profile::cell_name(&e.model),
    ]
}

/// Counter by counter, the larger of what an event's versions contributed.
fn max_amounts(prev: Option<&Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut out = new.clone();
    if let Some(Value::Object(p)) = prev {
        for (k, v) in p {
            let (a, b) = (v.as_f64().unwrap_or(0.0), out.get(k).and_then(Value::as_f64).unwrap_or(0.0));
            if a > b {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Adds `amounts` into the counters object at `path` below `root`, creating it; a sum
/// beyond 64 bits is an error naming the counter, never a wrap or a saturated value.
pub(crate) fn add_at(
    root: &mut Value,
    path: &[String],
    amounts: &Map<String, Value>,
) -> std::result::Result<(), String> {
    let mut cur = root;
    for k in path {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur.as_object_mut().expect("object").entry(k.clone()).or_insert_with(|| json!({}));
    }
    let cell = cur.as_object_mut().expect("object");
    for (k, v) in amounts {
        let sum = match (cell.get(k), v) {
            (Some(Value::Number(a)), Value::Number(b)) if a.is_f64() || b.is_f64() => {
                json!(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
            }
            (Some(Value::Number(a)), Value::Number(b)) => {
                match a.as_u64().unwrap_or(0).checked_add(b.as_u64().unwrap_or(0)) {
                    Some(n) => json!(n),
                    None => return Err(format!("{}.{k}: the sum does not fit 64 bits", path.join("."))),
                }
            }
            _ => v.clone(),
        };
        cell.insert(k.clone(), sum);
    }
    Ok(())
}

/// The shards of one stream being folded, loaded as needed.
pub(crate) struct Touched<'l> {
    ledger: &'l Ledger,
    stream: &'l Stream,
    pub(crate) shards: BTreeMap<String, Shard>,
    next_seq: u64,
    /// Days whose shard changed.
    pub(crate) dirty: std::collections::BTreeSet<String>,
}

impl<'l> Touched<'l> {
    pub(crate) fn new(ledger: &'l Ledger, stream: &'l Stream) -> Result<Touched<'l>> {
        let next_seq = std::fs::read_to_string(ledger.state.seq(&stream.file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        Ok(Touched { ledger, stream, shards: BTreeMap::new(), next_seq, dirty: Default::default() })
    }

    pub(crate) fn shard(&mut self, day: &str) -> Result<&mut Shard> {
        if !self.shards.contains_key(day) {
            let s = self.ledger.own_shard(self.stream, day)?;
            self.next_seq = self.next_seq.max(s.max_seq() + 1);
            self.shards.insert(day.to_string(), s);
        }
        Ok(self.shards.get_mut(day).expect("just loaded"))
    }

    pub(crate) fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Applies one event's action; `segment` skips shards that already hold it.
    pub(crate) fn apply(&mut self, e: &Event, action: &Action, segment: Option<u64>) -> Result<()> {
        let profile = self.stream.profile;
        let id = e.id.clone().expect("journal events have ids");
        let (day, prev, cell, delta) = match action {
            Action::Duplicate => return Ok(()),
            Action::New { day, cell, amounts } => (day, None, cell, amounts),
            Action::Supersede { prev, cell, delta } => (&prev.day, Some(prev), cell, delta),
        };
        if let Some(n) = segment {
            if self.shard(day)?.folded >= n {
                return Ok(());
            }
        }
        let of_event = profile.records.as_ref().and_then(|r| r.of_event);
        if profile.name == "tally" {
            let hour = cell[0].get(11..13).unwrap_or("00").to_string();
            let path = [hour, cell[1].clone(), cell[2].clone(), cell[3].clone()];
            let file = self.stream.file.clone();
            let shard = self.shard(day)?;
            add_at(&mut shard.counters, &path, delta).map_err(|err| Error::Failed(format!("{file}: {err}")))?;
            // When the day's first and last requests were (times, not counters: they join
            // as the earlier and the later).
            let ts = e.timestamp_text();
            let t = (e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos());
            let times = shard.counters.as_object_mut().expect("object").entry("times").or_insert_with(|| json!({}));
            let (first, last) = (
                times.get("first").and_then(crate::profile::parse_instant),
                times.get("last").and_then(crate::profile::parse_instant),
            );
            if first.is_none_or(|f| t < f) {
                times["first"] = json!(ts);
            }
            if last.is_none_or(|l| t > l) {
                times["last"] = json!(ts);
            }
        } else if of_event.is_none() {
            // Aggregate-only formats count new events; a later version changes nothing.
            if prev.is_some() {
                return Ok(());
            }
            let apply = profile.apply.ok_or_else(|| {
                Error::Usage(format!("{}: the {} profile does not take events", self.stream.file, profile.name))
            })?;
            let shard = self.shard(day)?;
            if shard.counters.as_object().is_none_or(|m| m.is_empty()) {
                shard.counters = (profile.empty)();
            }
            apply(&mut shard.counters, e).map_err(|err| Error::Failed(format!("{}: {err}", self.stream.file)))?;
        }
        if let Some(of_event) = of_event {
            let (caps, body) = of_event(e, &id);
            if prev.is_none() && profile.name != "tally" {
                // What the format counts of the event beyond its record (ProxyPal's history
                // has no cost per entry, ccu files none per record): the shard's counters.
                if let Some(extra) = beyond_record(profile, e, &caps, &body)? {
                    let file = self.stream.file.clone();
                    let shard = self.shard(day)?;
                    shard.counters = crate::ledger::algebra::combine(
                        profile,
                        crate::ledger::algebra::Op::Add,
                        &shard.counters,
                        &extra,
                    )
                    .map_err(|err| Error::Failed(format!("{file}: {err}")))?;
                }
            }
            let seq = self.seq();
            let shard = self.shard(day)?;
            let (seq, rev) = match shard.records.get(&id) {
                Some(old) => (old.seq, old.rev + u64::from(prev.is_some())),
                None => (seq, u64::from(prev.is_some())),
            };
            shard.records.insert(id.clone(), Record { rid: id, seq, rev, caps, body });
            // Trimmed once per shard when written (`persist`), not per record: a day of
            // many requests would sort its list once for each.
        }
        self.dirty.insert(day.clone());
        Ok(())
    }

    /// Writes every shard that changed (marked dirty first), holding `segment`. The next
    /// `seq` is saved first: a crash leaves a gap, never a `seq` given twice.
    pub(crate) fn persist(mut self, segment: u64) -> Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let seq_path = self.ledger.state.seq(&self.stream.file);
        self.ledger.state.ensure(&self.ledger.state.own_dir(&self.stream.file))?;
        crate::fsutil::write_atomic(&seq_path, self.next_seq.to_string().as_bytes())?;
        let dirty = std::mem::take(&mut self.dirty);
        let files: Vec<(String, LedgerFile)> = std::mem::take(&mut self.shards)
            .into_iter()
            .filter(|(day, _)| dirty.contains(day))
            .map(|(day, mut s)| {
                s.folded = s.folded.max(segment);
                s.trim();
                (format!("{day}.json"), LedgerFile::Shard(s))
            })
            .collect();
        self.ledger.write_own(self.stream, &files)
    }
}

/// What applying `e` to an empty document counts beyond what its record contributes:
/// `None` when the record explains everything (CLIProxyAPI).
fn beyond_record(
    profile: &'static crate::profile::Profile,
    e: &Event,
    caps: &[String],
    body: &Value,
) -> Result<Option<Value>> {
    let Some(apply) = profile.apply else { return Ok(None) };
    let mut doc = (profile.empty)();
    apply(&mut doc, e).map_err(|err| Error::Failed(format!("{}: {err}", profile.name)))?;
    if let Some((key, is_env)) = profile.envelope {
        if is_env(&doc) {
            doc = doc[key].clone();
        }
    }
    let contributed = crate::ledger::ingest::contribution(profile, [(caps, body)]).map_err(Error::Failed)?;
    let rest = crate::ledger::algebra::combine(profile, crate::ledger::algebra::Op::Sub, &doc, &contributed)
        .map_err(|err| Error::Failed(err.to_string()))?;
    Ok(has_counts(&rest).then_some(rest))
}

/// Whether a counters document holds anything: a number above zero, or a name (ccu
/// files' `machine_name`).
fn has_counts(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|x| x > 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Object(m) => m.values().any(has_counts),
        Value::Array(a) => a.iter().any(has_counts),
        _ => false,
    }
}

/// Whether a format takes events (a manifest of machines does not: it follows them).
fn takes_events(p: &crate::profile::Profile) -> bool {
    p.apply.is_some() || p.records.as_ref().is_some_and(|r| r.of_event.is_some())
}

impl Ledger {
    /// Folds the journal into this device's shards; returns how many events it held.
    pub fn fold(&self) -> Result<usize> {
        let journal = self.journal();
        let mut n_events = 0;
        for n in journal.seal()? {
            let now = chrono::Utc::now().fixed_offset();
            let mut events = Vec::new();
            for (i, line) in journal.lines(n)?.iter().enumerate() {
                let mut e = match Event::parse(line, now, &self.config.device) {
                    Ok(e) => e,
                    Err(err) => {
                        // Not written by `record` (which checks every event): a damaged
                        // file. Set aside, never dropped, and never in the way of the
                        // events beside it.
                        let aside = self.state.root().join("damaged");
                        self.state.ensure(&aside)?;
                        let to = aside.join(format!("journal-{n:08}.jsonl"));
                        super::journal::append_durably(&to, format!("{line}\n").as_bytes())?;
                        eprintln!(
                            "git-tally: warning: {} line {}: {err}; not counted, kept in {}",
                            self.state.segment(n).display(),
                            i + 1,
                            to.display()
                        );
                        continue;
                    }
                };
                if e.id.is_none() {
                    // Written by an older git-tally: an id as stable as the line's place.
                    e.id = Some(format!("{}-j{n}-{i}", self.key));
                }
                events.push(e);
            }
            let remembered = self.ids().lookup(events.iter().filter_map(|e| e.id.as_deref()))?;
            let (actions, remember) = decide(&events, &remembered);
            for stream in self.streams.iter().filter(|s| takes_events(s.profile)) {
                let mut touched = Touched::new(self, stream)?;

                for (e, a) in events.iter().zip(&actions) {
                    touched.apply(e, a, Some(n))?;
                }
                touched.persist(n)?;
            }
            self.ids().remember(remember, today())?;
            journal.remove(n)?;
            n_events += events.len();
        }
        if n_events > 0 {
            self.update_manifests()?;
        }
        Ok(n_events)
    }

    /// The per-machine layout's manifest: this machine's entry follows its usage file
    /// (seed 001): its records, the newest, when it last synced.
    fn update_manifests(&self) -> Result<()> {
        let Some(manifest) = self.streams.iter().find(|s| s.profile.name == "ccu-manifest") else { return Ok(()) };
        let Some(usage) = self.streams.iter().find(|s| s.profile.name == "ccu-usage") else { return Ok(()) };
        let mut total = 0u64;
        let mut newest: Option<(crate::profile::Instant, String)> = None;
        for day in self.own_days(usage)? {
            for r in self.own_shard(usage, &day)?.records.values() {
                total += 1;
                if let Some(ts) = r.body.get("timestamp").and_then(Value::as_str) {
                    if let Some(t) = crate::profile::instant_of(ts) {
                        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                            newest = Some((t, ts.to_string()));
                        }
                    }
                }
            }
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let file =
            std::path::Path::new(&usage.file).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let mut residual = self.own_residual(manifest)?;
        residual.counters = json!({
            "version": "1.0",
            "last_updated": now,
            "machines": [{
                "machine_name": self.config.device, "last_sync": now,
                "last_record_date": newest.map(|n| n.1), "total_records": total,
                "current_file": file, "backups": []
            }],
            "backup_retention_days": 30
        });
        self.write_own(manifest, &[("residual.json".into(), LedgerFile::Residual(residual))])
    }

    /// This device's shards of a stream with the unfolded journal applied in memory (for
    /// reports: what is recorded counts before it is synced).
    pub(crate) fn own_shards_with_journal(&self, stream: &Stream) -> Result<Vec<Shard>> {
        let mut shards: BTreeMap<String, Shard> = BTreeMap::new();
        for day in self.own_days(stream)? {
            shards.insert(day.clone(), self.own_shard(stream, &day)?);
        }
        let events = self.pending_events()?;
        if !events.is_empty() {
            let remembered = self.ids().lookup(events.iter().filter_map(|e| e.id.as_deref()))?;
            let (actions, _) = decide(&events, &remembered);
            let mut touched = Touched::new(self, stream)?;
            touched.shards = std::mem::take(&mut shards);
            for (e, a) in events.iter().zip(&actions) {
                touched.apply(e, a, None)?;
            }
            shards = touched.shards;
        }
        Ok(shards
            .into_values()
            .map(|mut s| {
                s.trim();
                s
            })
            .collect())
    }
}
