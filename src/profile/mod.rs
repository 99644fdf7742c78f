//! Profiles: what the merge engine needs to know about one usage-file format, as data.
//! A profile is a table of path rules (which values are counters, times, maps, series…),
//! an optional description of where the records live and what each contributes to the
//! counters, and a few hooks. The engine reads these values; it has no special cases.

mod ccu;
mod cliproxyapi;
mod generic;
mod proxypal;
mod tally;
mod tally_v1;

use crate::event::Event;
use crate::num::Num;
use serde_json::Value;
use std::fmt;

pub use tally::{
    cell_name, event_amounts, hour_key, is_money, is_native_view, CELLS as NATIVE_CELLS, COUNTERS, NATIVE_FORMAT,
    RECENT_LIMIT,
};
pub use tally_v1::V1_FORMAT;

/// How the engine merges the value at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A number merged by deltas: O + (A−O) + (B−O), exact with record contributions.
    Counter,
    /// A time or version: the later / greater wins.
    Later,
    /// A creation time: the earlier wins.
    Earlier,
    /// Any value merged 3-way; changed differently on both sides is a conflict.
    Scalar,
    /// An object whose keys keep the order of ours.
    Object,
    /// An object used as a map: keys written sorted.
    Map,
    /// An array of `{label, value}` objects: union by label, values are counters, written
    /// in label order, optionally only the newest `keep` labels.
    Series { label: &'static str, value: &'static str, keep: Option<usize> },
    /// An array of objects keyed by `key`: of two versions of an entry the one with the
    /// later `by` wins, and the arrays under `union` are united.
    LatestEntry { key: &'static str, by: &'static str, union: &'static str },
    /// Where the profile's records live; filled by the record engine.
    Records,
    /// Recomputed from the merged records by the profile's `finish` hook.
    Derived,
    /// No rule: inferred from the values and the key name (the `generic` rules).
    Infer,
}

/// A path pattern: literal keys, or `*` for any key or array entry.
pub struct Rule {
    pub pattern: &'static [&'static str],
    pub kind: Kind,
}

pub const fn rule(pattern: &'static [&'static str], kind: Kind) -> Rule {
    Rule { pattern, kind }
}

/// A problem with one field of a record or document, located by the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub expected: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, expected: impl Into<String>) -> Self {
        FieldError { field: field.into(), expected: expected.into() }
    }

    /// A record that does not parse as the profile's record type.
    pub fn record(e: serde_json::Error) -> Self {
        FieldError::new("record", crate::json::strip_position(&e.to_string()))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "record" {
            write!(f, "{}", self.expected)
        } else {
            write!(f, "{}: expected {}", self.field, self.expected)
        }
    }
}

/// Reads a record's JSON text as `T` (typed, borrowing strings where it can).
pub(crate) fn read_record<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, FieldError> {
    serde_json::from_str(text).map_err(FieldError::record)
}

/// A record's JSON text as a value.
pub(crate) fn record_value(text: &str) -> Result<Value, FieldError> {
    read_record(text)
}

/// An RFC 3339 text as an instant.
pub(crate) fn instant_of(ts: &str) -> Option<Instant> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| (t.timestamp(), t.timestamp_subsec_nanos()))
}

/// A seconds/nanoseconds instant, for ordering records.
pub type Instant = (i64, u32);

/// Receives `(path relative to the profile root, amount)` contributions of one record.
pub type Emit<'a> = dyn FnMut(&[&str], Num) + 'a;

/// Where a profile's records live and how they relate to the counters.
pub struct RecordSpec {
    /// Path of the arrays holding records; `*` segments are captured (e.g. api, model).
    pub container: &'static [&'static str],
    /// The identity of a record (given as JSON text) and when it happened; two records
    /// with the same identity are one record. The time orders the output and tells
    /// which records are the newest.
    pub identity: Identity,
    /// The same from the record as a value, where that is cheaper than its text (a view
    /// orders every record); `None` where it cannot tell, and then `identity` decides.
    pub identity_of_value: Option<IdentityOfValue>,
    /// What the record adds to the counters.
    pub contribute: fn(captures: &[String], record: &Value, emit: &mut Emit<'_>) -> Result<(), FieldError>,
    /// True when `contribute` reads only identity fields, so two records with one identity
    /// always contribute the same (saves comparing them).
    pub contribution_by_identity: bool,
    /// How many records to keep (the newest), read from the merged document.
    pub keep_newest: fn(root: &Value) -> Option<usize>,
    /// The record an event becomes, and where (the captures): what `record` keeps in the
    /// ledger. `None` for formats whose records come only from applications.
    pub of_event: Option<OfEvent>,
}

/// The record an event becomes (given its id), and its captures.
pub type OfEvent = fn(&Event, &str) -> (Vec<String>, Value);

/// A record's identity and time, from its captures and JSON text.
pub type Identity = fn(&[String], &str) -> Result<(String, Option<Instant>), FieldError>;
/// The same from its value, where it can tell.
pub type IdentityOfValue = fn(&[String], &Value) -> Option<(String, Option<Instant>)>;
/// Recomputes derived values of a merged document from its records (JSON texts).
pub type Finish = fn(&mut Value, &[&str]) -> Result<(), FieldError>;
/// Applies one event to a document.
pub type Apply = fn(&mut Value, &Event) -> Result<(), FieldError>;
/// Applies events in order to a document.
pub type ApplyBatch = fn(&mut Value, &[Event]) -> Result<(), FieldError>;
/// A test on a whole document.
pub type DocTest = fn(&Value) -> bool;
/// Reports `(path, message)` of a broken invariant.
pub type Report<'a> = dyn FnMut(String, String) + 'a;

/// One usage-file format.
pub struct Profile {
    pub name: &'static str,
    pub description: &'static str,
    /// Recognises a document of this format (envelope included).
    pub detect: fn(&Value) -> bool,
    /// Key of an envelope around the document proper (`usage` for CLIProxyAPI exports),
    /// and a test telling whether a document is enveloped.
    pub envelope: Option<(&'static str, DocTest)>,
    pub envelope_rules: &'static [Rule],
    pub rules: &'static [Rule],
    pub records: Option<RecordSpec>,
    /// Recomputes `Kind::Derived` values once the records are merged.
    pub finish: Option<Finish>,
    /// Strict profiles reject values of the wrong type; `generic` merges them 3-way.
    pub strict: bool,
    /// The empty document, as `record` creates it.
    pub empty: fn() -> Value,
    /// Applies one usage event (the write path); `None` when the format has no events.
    pub apply: Option<Apply>,
    /// Applies many events at once, as `apply` one by one would (a faster fold).
    pub apply_batch: Option<ApplyBatch>,
    /// Invariants beyond "every counter covers its records", for `check`.
    pub invariants: for<'a, 'b> fn(&'a Value, &'a mut Report<'b>),
}

/// Profiles are statics: one is another when it has the same name.
impl PartialEq for Profile {
    fn eq(&self, other: &Profile) -> bool {
        self.name == other.name
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Every profile, in detection order; `generic` matches anything and comes last.
pub fn all() -> [&'static Profile; 8] {
    [
        &tally::TALLY,
        &tally_v1::TALLY_V1,
        &cliproxyapi::CLIPROXYAPI,
        &proxypal::AGGREGATE,
        &proxypal::HISTORY,
        &ccu::USAGE,
        &ccu::MANIFEST,
        &generic::GENERIC,
    ]
}

pub fn by_name(name: &str) -> Option<&'static Profile> {
    all().into_iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name).collect()
}

/// The profile of the first document that a specific profile recognises (ours first),
/// else `generic`.
pub fn detect(docs: &[Option<&Value>]) -> &'static Profile {
    for doc in docs.iter().flatten() {
        if let Some(p) = all().into_iter().find(|p| p.name != "generic" && (p.detect)(doc)) {
            return p;
        }
    }
    &generic::GENERIC
}

pub fn generic() -> &'static Profile {
    &generic::GENERIC
}

// Small readers shared by the profiles.

pub(crate) fn u64_field(v: &Value, field: &str) -> Result<u64, FieldError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(x) => x.as_u64().ok_or_else(|| FieldError::new(field, "a non-negative integer")),
    }
}

pub(crate) fn str_field<'a>(v: &'a Value, field: &str) -> Result<&'a str, FieldError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FieldError::new(field, "a string")),
    }
}

/// RFC 3339 text or epoch milliseconds, as an instant.
pub(crate) fn parse_instant(v: &Value) -> Option<Instant> {
    match v {
        Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| (t.timestamp(), t.timestamp_subsec_nanos()))
        }
        Value::Number(n) => {
            let ms = n.as_i64()?;
            Some((ms.div_euclid(1000), (ms.rem_euclid(1000) * 1_000_000) as u32))
        }
        _ => None,
    }
}

/// The `YYYY-MM-DD` and `HH` of an RFC 3339 timestamp in its own offset.
pub(crate) fn day_and_hour(ts: &str) -> Option<(String, String)> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some((t.format("%Y-%m-%d").to_string(), t.format("%H").to_string()))
}

pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let map = v.as_object_mut().expect("profile documents are objects");
    map.entry(key.to_string()).or_insert_with(|| Value::Object(Default::default()))
}

pub(crate) fn add_u64(v: &mut Value, key: &str, n: u64) -> Result<(), FieldError> {
    let map = v.as_object_mut().expect("profile documents are objects");
    let slot = match map.get_mut(key) {
        Some(slot) => slot,
        None => map.entry(key.to_string()).or_insert(Value::Null),
    };
    let cur = match &*slot {
        Value::Null => 0,
        x => x.as_u64().ok_or_else(|| FieldError::new(key, "a non-negative integer"))?,
    };
    *slot = Value::from(cur.checked_add(n).ok_or_else(|| FieldError::new(key, "a counter that fits 64 bits"))?);
    Ok(())
}

pub(crate) fn add_f64(v: &mut Value, key: &str, x: f64) -> Result<(), FieldError> {
    let map = v.as_object_mut().expect("profile documents are objects");
    let slot = match map.get_mut(key) {
        Some(slot) => slot,
        None => map.entry(key.to_string()).or_insert(Value::Null),
    };
    let cur = match &*slot {
        Value::Null => 0.0,
        c => c.as_f64().ok_or_else(|| FieldError::new(key, "a number"))?,
    };
    *slot = Value::from(cur + x);
    Ok(())
}

/// (requests, tokens) a document counts, for one-line summaries; `None` for formats that
/// count neither (manifests, generic files).
pub fn summary(profile: &Profile, doc: &Value) -> Option<(u64, u64)> {
    let n = |v: &Value, path: &[&str]| path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_u64).unwrap_or(0);
    match profile.name {
        "cliproxyapi" => {
            let root = doc.get("usage").filter(|u| u.get("total_requests").is_some()).unwrap_or(doc);
            Some((n(root, &["total_requests"]), n(root, &["total_tokens"])))
        }
        "tally" | "tally-v1" => Some((n(doc, &["totals", "requests"]), n(doc, &["totals", "total_tokens"]))),
        "proxypal-aggregate" => {
            Some((n(doc, &["totalRequests"]), n(doc, &["totalTokensIn"]).saturating_add(n(doc, &["totalTokensOut"]))))
        }
        "proxypal-history" => Some((
            doc.get("requests").and_then(Value::as_array).map_or(0, |a| a.len() as u64),
            n(doc, &["totalTokensIn"]).saturating_add(n(doc, &["totalTokensOut"])),
        )),
        "ccu-usage" => Some((n(doc, &["statistics", "total_records"]), n(doc, &["statistics", "total_tokens"]))),
        _ => None,
    }
}
