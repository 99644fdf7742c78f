//! File mode (SPEC §5b): an application writes its usage file itself, and git-tally takes
//! what that write adds into this device's ledger — never lowering anything, never
//! another device's.
//!
//! - Records are taken by identity, exact whatever the application does: of each record
//!   the write lists `k` times, this device holds at least `k` minus what the other devices
//!   hold (an application that re-read the file lists theirs too).
//! - Counters beyond the records (aggregates, trimmed history) grow by the write's excess
//!   over what the application started from — its previous write (`tally.appReads =
//!   never`; a counter that went down means it restarted), or the file git-tally left
//!   after the last pull (`after-pull`; its previous write if it wrote again before
//!   git-tally left another); with neither known, the ledger if the write counts at least
//!   all of it, else nothing.
//!
//! The residual and what it was based on are written in one file, by one rename, after
//! the records: a crash at any point leaves either the whole ingestion or a repeatable one.

use super::algebra::{self, Op};
use super::shard::{counter_rules, LedgerFile, Record};
use super::view::hash;
use super::{by_device, Ledger, Source, Stream};
use crate::config::AppReads;
use crate::engine::Input;
use crate::error::{Error, Result};
use crate::num::Num;
use crate::profile::Profile;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// What an ingestion did.
#[derive(Debug, PartialEq, Eq)]
pub enum Ingested {
    /// The file holds what git-tally last wrote or took (or nothing).
    Nothing,
    /// The application's write was taken: `records` new ones.
    Taken { records: usize },
    /// The file is not whole JSON even after a moment (caught mid-write, or broken): left
    /// for the next run.
    Skipped(String),
}

/// A record of a document: `(caps, identity, time, body)`.
type FoundRecord = (Vec<String>, String, Option<crate::profile::Instant>, Value);
/// The records of a document.
type Found = Vec<FoundRecord>;

pub(crate) fn records_in(profile: &Profile, doc_text: &[u8]) -> std::result::Result<(Value, Found), String> {
    let mut input = Input::parse(doc_text, Some(profile)).map_err(|p| p.to_string())?;
    input.settle(profile);
    let env = profile.envelope.filter(|(_, is_env)| is_env(&input.skeleton)).map(|(k, _)| k);
    let root = usize::from(env.is_some());
    let mut found = Vec::new();
    if let Some(spec) = &profile.records {
        // Only the places the format keeps records, under the envelope if there is one: a
        // copy elsewhere (a snapshot under `usage` beside the snapshot) is not counted.
        let in_place = |path: &[String]| {
            env.is_none_or(|k| path.first().is_some_and(|p| p == k))
                && path.len() == root + spec.container.len()
                && spec.container.iter().zip(&path[root..]).all(|(p, k)| *p == "*" || p == k)
        };
        for c in input.containers.iter().filter(|c| in_place(&c.path)) {
            let caps: Vec<String> = spec
                .container
                .iter()
                .zip(&c.path[root..])
                .filter(|(p, _)| **p == "*")
                .map(|(_, k)| k.clone())
                .collect();
            for (i, raw) in c.records.iter().enumerate() {
                let (id, time) =
                    (spec.identity)(&caps, raw.get()).map_err(|e| format!("$.{}[{i}]: {e}", c.path.join(".")))?;
                let body: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
                found.push((caps.clone(), id, time, body));
            }
        }
    }
    let mut skeleton = input.skeleton;
    if let Some(k) = env {
        skeleton = skeleton.get(k).cloned().unwrap_or_else(|| json!({}));
    }
    Ok((skeleton, found))
}

/// What records contribute to the counters, as a counters document.
pub(crate) fn contribution<'r>(
    profile: &Profile,
    records: impl IntoIterator<Item = (&'r [String], &'r Value)>,
) -> std::result::Result<Value, String> {
    let mut doc = json!({});
    let Some(spec) = &profile.records else { return Ok(doc) };
    for (caps, body) in records {
        let mut err = None;
        (spec.contribute)(caps, body, &mut |path: &[&str], n: Num| {
            let mut cur = &mut doc;
            for k in &path[..path.len() - 1] {
                cur = cur.as_object_mut().expect("object").entry(k.to_string()).or_insert_with(|| json!({}));
            }
            let m = cur.as_object_mut().expect("object");
            let last = path[path.len() - 1];
            let old = m.get(last).and_then(Num::from_value).and_then(|r| r.ok()).unwrap_or(Num::ZERO);
            match old.plus(n).and_then(|s| s.to_value()) {
                Ok(v) => {
                    m.insert(last.to_string(), v);
                }
                Err(_) => err = Some(format!("{}: does not fit 64 bits", path.join("."))),
            }
        })
        .map_err(|e| e.to_string())?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(doc)
}

pub(crate) fn utc_day_of(time: Option<crate::profile::Instant>) -> String {
    let secs = time.map_or(0, |t| t.0);
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().format("%Y-%m-%d").to_string()
}

impl Ledger {
    /// Takes what the application wrote to the stream's file (see the module comment).
    pub fn ingest(&self, stream: &Stream, source: &dyn Source) -> Result<Ingested> {
        let profile = stream.profile;
        let path = self.top.join(&stream.file);

        let Ok(mut bytes) = std::fs::read(&path) else { return Ok(Ingested::Nothing) };
        let mut residual = self.own_residual(stream)?;
        let local = residual.local.as_object().cloned().unwrap_or_default();
        let seen = |b: &[u8]| {
            let h = hash(b);
            super::view::KNOWN.iter().any(|k| local.get(*k).and_then(Value::as_str) == Some(h.as_str()))
        };
        if seen(&bytes) {
            return Ok(Ingested::Nothing);
        }
        // A write caught half done (truncate, then write) is looked at again after a moment.
        if crate::json::parse(&bytes).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(50));
            bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            if seen(&bytes) {
                return Ok(Ingested::Nothing);
            }
            if let Err(p) = crate::json::parse(&bytes) {
                return Ok(Ingested::Skipped(format!(
                    "{}: {p}; not ingested (the ledger is kept; the next sync looks again)",
                    path.display()
                )));
            }
        }
        if profile.name == "tally" {
            return Ok(Ingested::Nothing); // git-tally's own format: no application writes it
        }
        let (skeleton, found) =
            records_in(profile, &bytes).map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
        let added = self.take_records(stream, &found, source)?;

        // Counters beyond the records.
        let rules = counter_rules(profile);
        let fail = |e: algebra::AlgebraError| Error::Failed(format!("{}: {e}", path.display()));
        let contributed = contribution(profile, found.iter().map(|(c, _, _, b)| (c.as_slice(), b)))
            .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
        let res_w = algebra::combine(rules, Op::Sub, &skeleton, &contributed).map_err(fail)?;
        let base = self.base(stream, &local, &res_w, source)?;
        let delta = match &base {
            Some(b) => algebra::combine(rules, Op::Sub, &res_w, b).map_err(fail)?,
            None => res_w.clone(),
        };
        residual.counters = algebra::combine(rules, Op::Add, &residual.counters, &delta).map_err(fail)?;
        let mut local = local;
        local.insert("prev".into(), res_w);
        local.insert("ingested".into(), json!(hash(&bytes)));
        // Until git-tally writes a view the application reads, it goes on from this write.
        local.insert("wrote_since_read".into(), json!(true));
        residual.local = Value::Object(local);
        self.write_own(stream, &[("residual.json".into(), LedgerFile::Residual(residual))])?;
        Ok(Ingested::Taken { records: added })
    }

    /// What the application started from (`None`: nothing — it started empty).
    fn base(
        &self,
        stream: &Stream,
        local: &serde_json::Map<String, Value>,
        res_w: &Value,
        source: &dyn Source,
    ) -> Result<Option<Value>> {
        let rules = counter_rules(stream.profile);
        let get = |k: &str| local.get(k).filter(|v| !v.is_null()).cloned();
        match self.config.app_reads {
            AppReads::Never => {
                if let Some(prev) = get("prev") {
                    // A counter that went down, or a new creation time: it restarted.
                    return Ok((!algebra::decreased(rules, res_w, &prev)).then_some(prev));
                }
            }
            AppReads::AfterPull => {
                // The view it read; while a write-back was in flight, either one. But when it
                // wrote since and git-tally wrote no view after that write (a write landed
                // during the sync, or the sync stopped before writing views back), it went
                // on from its own previous write, not from what it read before that.
                let wrote_since_read = local.get("wrote_since_read") == Some(&json!(true));
                let last = if wrote_since_read { get("prev").or_else(|| get("read")) } else { get("read") };
                let candidates: Vec<Value> = get("read_pending").into_iter().chain(last.clone()).collect();
                if let Some(c) = candidates.into_iter().find(|c| algebra::covers(rules, res_w, c)) {
                    return Ok(Some(c));
                }
                if last.is_some() {
                    return Ok(None); // below what it last read or wrote: it restarted
                }
            }
        }
        // Never seen a whole write of it: the ledger, if the write counts all of it (it
        // loaded the file), else nothing.
        let view = self.view(stream, source, false)?;
        Ok(algebra::covers(rules, res_w, &view.residual).then_some(view.residual))
    }

    /// Adds the records of an application's write that the ledger lacks to this device.
    fn take_records(&self, stream: &Stream, found: &Found, source: &dyn Source) -> Result<usize> {
        let Some(spec) = &stream.profile.records else { return Ok(0) };
        if found.is_empty() {
            return Ok(0);
        }
        let mut wanted: BTreeMap<String, (usize, &FoundRecord)> = BTreeMap::new();
        for f in found {
            wanted.entry(f.1.clone()).or_insert((0, f)).0 += 1;
        }
        let days: std::collections::BTreeSet<String> = found.iter().map(|f| utc_day_of(f.2)).collect();
        // How many of each record every device holds, on the days the write covers.
        let count = |shard: &super::Shard, into: &mut HashMap<String, usize>| -> Result<()> {
            for r in shard.records.values() {
                let (id, _) = (spec.identity)(&r.caps, &r.body.to_string())
                    .map_err(|e| Error::Failed(format!("{}: a record of the ledger: {e}", stream.file)))?;
                if wanted.contains_key(&id) {
                    *into.entry(id).or_default() += 1;
                }
            }
            Ok(())
        };
        let mut others: HashMap<String, usize> = HashMap::new();
        let source = super::legacy::WithCarried { source, ledger: self };
        for (dev, files) in by_device(source.files(&stream.ledger_dir())?) {
            if dev == self.key {
                continue;
            }
            for (p, bytes) in files {
                let is_day = days.iter().any(|d| p.ends_with(&format!("{d}.json")));
                if !is_day {
                    continue;
                }
                if let Ok(LedgerFile::Shard(s)) = LedgerFile::parse(&bytes) {
                    count(&s, &mut others)?;
                }
            }
        }
        let mut touched = super::fold::Touched::new(self, stream)?;
        let mut mine: HashMap<String, usize> = HashMap::new();
        for d in &days {
            let s = touched.shard(d)?.clone();
            count(&s, &mut mine)?;
        }
        let mut added = 0;
        for (id, (k, (caps, _, time, body))) in &wanted {
            let need = k.saturating_sub(others.get(id).copied().unwrap_or(0));
            let have = mine.get(id).copied().unwrap_or(0);
            if need <= have {
                continue;
            }
            let day = utc_day_of(*time);
            let short = hash(id.as_bytes());
            for i in have..need {
                let seq = touched.seq();
                let shard = touched.shard(&day)?;
                let mut n = i;
                let mut rid = format!("w{short}-{n}");
                while shard.records.contains_key(&rid) {
                    n += 1;
                    rid = format!("w{short}-{n}");
                }
                shard.records.insert(rid.clone(), Record { rid, seq, rev: 0, caps: caps.clone(), body: body.clone() });
                added += 1;
            }
            touched.dirty.insert(day);
        }
        touched.persist(0)?;
        Ok(added)
    }
}
