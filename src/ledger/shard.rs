//! The files of the ledger, as committed (SPEC §4b): for each usage file (a stream), each
//! device keeps its own directory, written by that device only:
//!
//! ```text
//! <dir>/<stem>.ledger/<device>/device.json             its name (the latest rename wins)
//! <dir>/<stem>.ledger/<device>/<YYYY-MM>/<DD>.json     one UTC day: records and counters
//! <dir>/<stem>.ledger/<device>/residual.json           what application writes counted beyond their records
//! <dir>/<stem>.ledger/<device>/floors.json             resets and cleared histories it recorded
//! ```
//!
//! Every file only grows, and two versions of one merge by a join: records as a set by
//! their id (the later revision of one id wins), counters by maximum. So any history —
//! merges, rebases, cherry-picks, squashes, a rewritten remote — gives the same state, and
//! the same state gives the same bytes.

use super::algebra::{self, Op};
use crate::profile::{self, Profile};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `format` of every ledger file.
pub const FORMAT: &str = "git-tally/2";

/// One record kept by a device: its id (`rid`, unique within the device), the order in
/// which the device learnt it (`seq`), its revision (a streamed message completed later
/// has a higher one), where it lives in the profile's document (`caps`, e.g. api and
/// model) and the record as the profile writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub rid: String,
    pub seq: u64,
    pub rev: u64,
    pub caps: Vec<String>,
    pub body: Value,
}

/// A device's records and counters of one UTC day.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    pub profile: &'static Profile,
    pub device: String,
    pub day: String,
    /// The last journal segment folded into this file (this device's own copy only; never
    /// committed).
    pub folded: u64,
    pub records: BTreeMap<String, Record>,
    /// Counters that no record explains: the native format's hour cells, or an
    /// aggregate-only format's counters of the events recorded that day.
    pub counters: Value,
}

/// A device's name.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceFile {
    pub device: String,
    pub name: String,
    pub named_at: String,
}

/// What a device's applications counted beyond the records they listed, summed over
/// their writes (never lower than before).
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    pub profile: &'static Profile,
    pub device: String,
    pub counters: Value,
    /// File-mode bookkeeping, kept in the same file so that one rename records an
    /// ingestion and what it was based on (this device's own copy only; never committed).
    pub local: Value,
}

/// One device's resets and cleared histories, per device they apply to.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Floor {
    /// Records with a `seq` up to this are gone, with their counts.
    pub reset_seq: u64,
    /// Records with a `seq` up to this are not listed; their counts stay.
    pub cleared_seq: u64,
    /// Counters hidden by the reset: per day, and the residual.
    pub days: BTreeMap<String, Value>,
    pub residual: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Floors {
    pub profile: &'static Profile,
    pub device: String,
    pub floors: BTreeMap<String, Floor>,
}

/// Any ledger file.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerFile {
    Shard(Shard),
    Device(DeviceFile),
    Residual(Residual),
    Floors(Floors),
}

/// Why a ledger file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadFile(pub String);

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, BadFile> {
    v.get(k).ok_or_else(|| BadFile(format!("$.{k} is missing")))
}

fn string(v: &Value, k: &str) -> Result<String, BadFile> {
    field(v, k)?.as_str().map(str::to_string).ok_or_else(|| BadFile(format!("$.{k}: expected a string")))
}

fn profile_of(v: &Value) -> Result<&'static Profile, BadFile> {
    let name = string(v, "profile")?;
    profile::by_name(&name).ok_or_else(|| BadFile(format!("$.profile: unknown profile {name:?}")))
}

/// Whether bytes look like a ledger file (for the merge driver and detection).
pub fn is_ledger_file(v: &Value) -> bool {
    v.get("format").and_then(Value::as_str) == Some(FORMAT) && v.get("kind").and_then(Value::as_str).is_some()
}

impl LedgerFile {
    pub fn parse(bytes: &[u8]) -> Result<LedgerFile, BadFile> {
        if let Some(shard) = fast_shard(bytes) {
            return Ok(LedgerFile::Shard(shard));
        }
        let v = crate::json::parse(bytes).map_err(|p| BadFile(p.to_string()))?;
        LedgerFile::from_owned(v)
    }

    pub fn from_value(v: &Value) -> Result<LedgerFile, BadFile> {
        LedgerFile::from_owned(v.clone())
    }

    /// [`LedgerFile::from_value`], moving the records and counters out of `v` instead of
    /// copying them (a day's shard holds hundreds of records).
    pub fn from_owned(mut v: Value) -> Result<LedgerFile, BadFile> {
        let v = &mut v;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(BadFile(format!("$.format: expected {FORMAT:?}")));
        }
        let device = string(v, "device")?;
        match string(v, "kind")?.as_str() {
            "shard" => {
                let profile = profile_of(v)?;
                let mut records = BTreeMap::new();
                field(v, "records")?;
                let mut list = v.get_mut("records").map(Value::take).unwrap_or_default();
                for (i, r) in list.as_array_mut().into_iter().flatten().enumerate() {
                    let rec = Record {
                        rid: string(r, "rid").map_err(|e| BadFile(format!("records[{i}]: {e}")))?,
                        seq: r.get("seq").and_then(Value::as_u64).unwrap_or(0),
                        rev: r.get("rev").and_then(Value::as_u64).unwrap_or(0),
                        caps: r
                            .get("caps")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
                            .unwrap_or_default(),
                        body: {
                            field(r, "record").map_err(|e| BadFile(format!("records[{i}]: {e}")))?;
                            r["record"].take()
                        },
                    };
                    records.insert(rec.rid.clone(), rec);
                }
                Ok(LedgerFile::Shard(Shard {
                    profile,
                    device,
                    folded: v.get("folded").and_then(Value::as_u64).unwrap_or(0),
                    day: string(v, "day")?,
                    records,
                    counters: v.get_mut("counters").map(Value::take).unwrap_or_else(|| json!({})),
                }))
            }
            "device" => Ok(LedgerFile::Device(DeviceFile {
                device,
                name: string(v, "name")?,
                named_at: v.get("named_at").and_then(Value::as_str).unwrap_or("").to_string(),
            })),
            "residual" => Ok(LedgerFile::Residual(Residual {
                profile: profile_of(v)?,
                device,
                counters: v.get_mut("counters").map(Value::take).unwrap_or_else(|| json!({})),
                local: v.get_mut("local").map(Value::take).unwrap_or(Value::Null),
            })),
            "floors" => {
                let mut floors = BTreeMap::new();
                for (k, f) in field(v, "floors")?.as_object().into_iter().flatten() {
                    floors.insert(
                        k.clone(),
                        Floor {
                            reset_seq: f.get("reset_seq").and_then(Value::as_u64).unwrap_or(0),
                            cleared_seq: f.get("cleared_seq").and_then(Value::as_u64).unwrap_or(0),
                            days: f
                                .get("days")
                                .and_then(Value::as_object)
                                .map(|m| m.iter().map(|(d, c)| (d.clone(), c.clone())).collect())
                                .unwrap_or_default(),
                            residual: f.get("residual").cloned().unwrap_or_else(|| json!({})),
                        },
                    );
                }
                Ok(LedgerFile::Floors(Floors { profile: profile_of(v)?, device, floors }))
            }
            other => Err(BadFile(format!("$.kind: unknown kind {other:?}"))),
        }
    }

    /// The file's bytes as committed: deterministic (equal states, equal bytes), one
    /// record per line.
    pub fn render(&self) -> Vec<u8> {
        self.render_with(false)
    }

    /// The bytes of this device's own copy: with its local bookkeeping.
    pub fn render_own(&self) -> Vec<u8> {
        self.render_with(true)
    }

    fn render_with(&self, local: bool) -> Vec<u8> {
        let mut out = String::new();
        let head = |out: &mut String, kind: &str, device: &str| {
            let _ = write!(
                out,
                "{{\n  \"format\": \"{FORMAT}\",\n  \"kind\": \"{kind}\",\n  \"device\": {}",
                json!(device)
            );
        };
        match self {
            LedgerFile::Shard(s) => {
                head(&mut out, "shard", &s.device);
                let _ = write!(out, ",\n  \"profile\": {},\n  \"day\": {}", json!(s.profile.name), json!(s.day));
                if local {
                    let _ = write!(out, ",\n  \"folded\": {}", s.folded);
                }
                let _ = write!(out, ",\n  \"counters\": {}", indent(&s.counters));
                out.push_str(",\n  \"records\": [");
                let mut first = true;
                let mut recs: Vec<&Record> = s.records.values().collect();
                recs.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.rid.cmp(&b.rid)));
                for r in recs {
                    out.push_str(if first { "\n    " } else { ",\n    " });
                    first = false;
                    // As `json!({"rid", "seq", "rev", "caps", "record"}).to_string()` would
                    // write it, without a deep copy of the record first.
                    let _ = write!(
                        out,
                        "{{\"rid\":{},\"seq\":{},\"rev\":{},\"caps\":{},\"record\":{}}}",
                        Value::from(r.rid.as_str()),
                        r.seq,
                        r.rev,
                        serde_json::to_string(&r.caps).expect("serialises"),
                        r.body
                    );
                }
                out.push_str(if first { "]" } else { "\n  ]" });
            }
            LedgerFile::Device(d) => {
                head(&mut out, "device", &d.device);
                let _ = write!(out, ",\n  \"name\": {},\n  \"named_at\": {}", json!(d.name), json!(d.named_at));
            }
            LedgerFile::Residual(r) => {
                head(&mut out, "residual", &r.device);
                let _ = write!(out, ",\n  \"profile\": {}", json!(r.profile.name));
                let _ = write!(out, ",\n  \"counters\": {}", indent(&r.counters));
                if local && !r.local.is_null() {
                    let _ = write!(out, ",\n  \"local\": {}", indent(&r.local));
                }
            }
            LedgerFile::Floors(f) => {
                head(&mut out, "floors", &f.device);
                let _ = write!(out, ",\n  \"profile\": {}", json!(f.profile.name));
                let floors: Map<String, Value> = f
                    .floors
                    .iter()
                    .map(|(k, fl)| {
                        (
                            k.clone(),
                            json!({"reset_seq": fl.reset_seq, "cleared_seq": fl.cleared_seq,
                                   "days": fl.days, "residual": fl.residual}),
                        )
                    })
                    .collect();
                let _ = write!(out, ",\n  \"floors\": {}", indent(&Value::Object(floors)));
            }
        }
        out.push_str("\n}\n");
        out.into_bytes()
    }

    /// The join of two versions of one file: commutative, associative and idempotent.
    pub fn join(&self, other: &LedgerFile) -> Result<LedgerFile, BadFile> {
        match (self, other) {
            (LedgerFile::Shard(a), LedgerFile::Shard(b)) => Ok(LedgerFile::Shard(a.join(b)?)),
            (LedgerFile::Device(a), LedgerFile::Device(b)) => {
                let pick_a = (a.named_at.as_str(), a.name.as_str()) >= (b.named_at.as_str(), b.name.as_str());
                Ok(LedgerFile::Device(if pick_a { a } else { b }.clone()))
            }
            (LedgerFile::Residual(a), LedgerFile::Residual(b)) => {
                let counters = counters_join(a.profile, &a.counters, &b.counters)?;
                Ok(LedgerFile::Residual(Residual { counters, ..a.clone() }))
            }
            (LedgerFile::Floors(a), LedgerFile::Floors(b)) => {
                let mut floors = a.floors.clone();
                for (k, fb) in &b.floors {
                    let fa = floors.entry(k.clone()).or_default();
                    fa.reset_seq = fa.reset_seq.max(fb.reset_seq);
                    fa.cleared_seq = fa.cleared_seq.max(fb.cleared_seq);
                    for (d, c) in &fb.days {
                        let joined = match fa.days.get(d) {
                            Some(x) => counters_join(a.profile, x, c)?,
                            None => c.clone(),
                        };
                        fa.days.insert(d.clone(), joined);
                    }
                    fa.residual = counters_join(a.profile, &fa.residual, &fb.residual)?;
                }
                Ok(LedgerFile::Floors(Floors { floors, ..a.clone() }))
            }
            _ => Err(BadFile("two different kinds of ledger file at one path".into())),
        }
    }
}

/// Counters of two versions of one device's file, joined by the profile's rules (the
/// native cells: every number a counter).
pub(crate) fn counters_join(profile: &'static Profile, a: &Value, b: &Value) -> Result<Value, BadFile> {
    algebra::combine(counter_rules(profile), Op::Join, a, b).map_err(|e| BadFile(e.to_string()))
}

/// The rules counters of `profile` are read with: the native format's cells have no
/// rules of their own (every number in them is a counter).
pub(crate) fn counter_rules(profile: &'static Profile) -> &'static Profile {
    if profile.name == "tally" {
        &profile::NATIVE_CELLS
    } else {
        profile
    }
}

impl Shard {
    pub fn new(profile: &'static Profile, device: &str, day: &str) -> Shard {
        Shard {
            profile,
            device: device.to_string(),
            day: day.to_string(),
            folded: 0,
            records: BTreeMap::new(),
            counters: json!({}),
        }
    }

    pub fn join(&self, other: &Shard) -> Result<Shard, BadFile> {
        let mut records = self.records.clone();
        for (rid, r) in &other.records {
            match records.get(rid) {
                Some(mine) if newer(mine, r) => {}
                _ => {
                    records.insert(rid.clone(), r.clone());
                }
            }
        }
        let counters = counters_join(self.profile, &self.counters, &other.counters)?;
        let mut out = Shard { records, counters, folded: self.folded.max(other.folded), ..self.clone() };
        out.trim();
        Ok(out)
    }

    /// The native format keeps a bounded list of recent records per day (informational:
    /// its counters live in the cells). Other formats keep every record.
    pub fn trim(&mut self) {
        if self.profile.name != "tally" || self.records.len() <= RECENT_PER_DAY {
            return;
        }
        let mut order: Vec<(String, String)> = self
            .records
            .values()
            .map(|r| (r.body.get("timestamp").and_then(Value::as_str).unwrap_or("").to_string(), r.rid.clone()))
            .collect();
        order.sort();
        let excess = order.len() - RECENT_PER_DAY;
        for (_, rid) in order.into_iter().take(excess) {
            self.records.remove(&rid);
        }
    }

    /// The highest `seq` of its records.
    pub fn max_seq(&self) -> u64 {
        self.records.values().map(|r| r.seq).max().unwrap_or(0)
    }
}

/// Of two versions of one record, whether `a` wins: the higher revision, then the larger
/// text, then the rest of the record (a choice that depends on the records alone, not on
/// the order of the arguments).
fn newer(a: &Record, b: &Record) -> bool {
    (a.rev, crate::json::canonical(&a.body), a.seq, &a.caps) >= (b.rev, crate::json::canonical(&b.body), b.seq, &b.caps)
}

/// Records the native format keeps per device and day.
pub const RECENT_PER_DAY: usize = 500;

/// `value` pretty-printed with its keys sorted (equal states, equal bytes, whatever the
/// order two versions were joined in), indented to sit at the second level of a ledger
/// file.
fn indent(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let text = serde_json::to_string_pretty(&sorted(value)).expect("a value serialises");
    text.replace('\n', "\n  ")
}

/// A well-formed shard read straight into its types: a view reads every shard of every
/// device, and most of their bytes are records. Anything else (another kind of file, an
/// unexpected type, a duplicate key) is `None`, for [`LedgerFile::from_owned`] to read
/// and, if it must, to explain.
fn fast_shard(bytes: &[u8]) -> Option<Shard> {
    #[derive(serde::Deserialize)]
    struct File {
        format: String,
        kind: String,
        device: String,
        profile: String,
        day: String,
        #[serde(default)]
        folded: u64,
        #[serde(default = "empty_object")]
        counters: Value,
        records: Vec<Rec>,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        rid: String,
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        rev: u64,
        #[serde(default)]
        caps: Vec<String>,
        record: Value,
    }
    fn empty_object() -> Value {
        json!({})
    }
    let f: File = serde_json::from_slice(crate::json::body(bytes).ok()?).ok()?;
    if f.format != FORMAT || f.kind != "shard" {
        return None;
    }
    let records = f
        .records
        .into_iter()
        .map(|r| (r.rid.clone(), Record { rid: r.rid, seq: r.seq, rev: r.rev, caps: r.caps, body: r.record }))
        .collect();
    Some(Shard {
        profile: profile::by_name(&f.profile)?,
        device: f.device,
        day: f.day,
        folded: f.folded,
        records,
        counters: f.counters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_read_by_the_fast_path_is_what_the_general_reader_makes_of_it() {
        let text = r#"{"format": "git-tally/2", "kind": "shard", "device": "d1", "profile": "cliproxyapi",
            "day": "2026-01-02", "folded": 3, "counters": {"x": 1}, "extra": true,
            "records": [{"rid": "a", "seq": 2, "rev": 1, "caps": ["k", "m"], "record": {"z": 1, "a": [2]}},
                        {"rid": "b", "record": null}, {"rid": "a", "seq": 5, "record": {}}]}"#;
        let fast = fast_shard(text.as_bytes()).expect("the fast path reads it");
        let general = LedgerFile::from_owned(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(LedgerFile::Shard(fast), general);
        // What the fast path leaves to the general reader.
        for odd in [
            text.replace("\"folded\": 3", "\"folded\": null"),
            text.replace("\"caps\": [\"k\", \"m\"]", "\"caps\": [\"k\", 1]"),
            text.replace("\"kind\": \"shard\"", "\"kind\": \"residual\""),
            text.replace("\"extra\": true", "\"day\": \"2026-01-03\""),
        ] {
            assert!(fast_shard(odd.as_bytes()).is_none(), "{odd}");
        }
        let nulled = text.replace("\"counters\": {\"x\": 1}", "\"counters\": null");
        let general = LedgerFile::from_owned(serde_json::from_str(&nulled).unwrap()).unwrap();
        assert_eq!(LedgerFile::Shard(fast_shard(nulled.as_bytes()).unwrap()), general);
    }

    #[test]
    fn a_record_line_is_what_json_would_write_of_it() {
        let body = json!({"id": "a\"b\\c\u{1}é", "n": 1.5, "z": [1, {"y": null}], "a": true});
        let r = Record { rid: "r\"1\n".into(), seq: 7, rev: 2, caps: vec!["x\"".into()], body: body.clone() };
        let text = String::from_utf8(shard(std::slice::from_ref(&r), json!({})).render()).unwrap();
        let want = json!({"rid": r.rid, "seq": r.seq, "rev": r.rev, "caps": r.caps, "record": body}).to_string();
        assert!(text.contains(&format!("\n    {want}\n")), "{text}\nwant {want}");
    }

    fn rec(rid: &str, seq: u64, rev: u64, tokens: u64) -> Record {
        Record { rid: rid.into(), seq, rev, caps: vec!["api".into(), "m".into()], body: json!({"tokens": tokens}) }
    }

    fn shard(recs: &[Record], counters: Value) -> LedgerFile {
        let mut s = Shard::new(profile::by_name("cliproxyapi").unwrap(), "dev1", "2026-11-03");
        for r in recs {
            s.records.insert(r.rid.clone(), r.clone());
        }
        s.counters = counters;
        LedgerFile::Shard(s)
    }

    #[test]
    fn shards_round_trip_and_join_by_the_laws() {
        let a = shard(&[rec("a", 1, 0, 5), rec("b", 2, 0, 7)], json!({}));
        let b = shard(&[rec("b", 2, 1, 9), rec("c", 3, 0, 1)], json!({}));
        let c = shard(&[rec("d", 4, 0, 2)], json!({}));
        let back = LedgerFile::parse(&a.render()).unwrap();
        assert_eq!(back, a);
        let ab = a.join(&b).unwrap();
        assert_eq!(ab, b.join(&a).unwrap(), "commutative");
        assert_eq!(ab.join(&b).unwrap(), ab, "idempotent");
        assert_eq!(ab.join(&c).unwrap(), a.join(&b.join(&c).unwrap()).unwrap(), "associative");
        let LedgerFile::Shard(s) = &ab else { unreachable!() };
        assert_eq!(s.records["b"].rev, 1, "the later revision wins");
        assert_eq!(s.records.len(), 3);
        assert_eq!(ab.render(), b.join(&a).unwrap().render(), "equal states, equal bytes");
        // Two versions alike but for their sequence number (or caps): one wins, whichever
        // side it is on.
        let (mut x, mut y) = (rec("e", 1, 0, 5), rec("e", 9, 0, 5));
        let (l, r) = (shard(&[x.clone()], json!({})), shard(&[y.clone()], json!({})));
        assert_eq!(l.join(&r).unwrap().render(), r.join(&l).unwrap().render(), "seq");
        x.seq = 9;
        y.caps = vec!["k".into()];
        let (l, r) = (shard(&[x], json!({})), shard(&[y], json!({})));
        assert_eq!(l.join(&r).unwrap().render(), r.join(&l).unwrap().render(), "caps");
    }

    #[test]
    fn native_cells_join_by_maximum() {
        let p = profile::by_name("tally").unwrap();
        let mk = |n: u64| {
            let mut s = Shard::new(p, "d", "2026-11-03");
            s.counters = json!({"10": {"openai": {"openai": {"gpt-5": {"requests": n, "cost_usd": 0.5}}}}});
            LedgerFile::Shard(s)
        };
        let j = mk(3).join(&mk(5)).unwrap();
        let LedgerFile::Shard(s) = j else { unreachable!() };
        assert_eq!(s.counters["10"]["openai"]["openai"]["gpt-5"]["requests"], 5);
    }
}
