//! Per-machine usage files and their manifest, as the Gist-sync design in the seeds lays
//! them out (SPEC §3.3): records keyed by session and message, statistics derived from
//! the records, and a manifest keyed by machine.

use super::Instant;
use super::{instant_of, parse_instant, read_record, rule, FieldError, Kind, Profile, RecordSpec, Rule};
use crate::event::Event;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashSet;

static USAGE_RULES: &[Rule] = &[
    rule(&["machine_name"], Kind::Scalar),
    rule(&["export_date"], Kind::Later),
    rule(&["data_range", "oldest"], Kind::Derived),
    rule(&["data_range", "newest"], Kind::Derived),
    rule(&["records"], Kind::Records),
    rule(&["statistics", "total_records"], Kind::Derived),
    rule(&["statistics", "total_sessions"], Kind::Derived),
    rule(&["statistics", "total_tokens"], Kind::Derived),
    rule(&["statistics", "total_cost"], Kind::Counter),
];

pub static USAGE: Profile = Profile {
    name: "ccu-usage",
    description: "per-machine usage_data_<machine>.json (records by session and message)",
    detect: |v| v.get("machine_name").is_some() && v.get("records").is_some_and(Value::is_array),
    envelope: None,
    envelope_rules: &[],
    rules: USAGE_RULES,
    records: Some(RecordSpec {
        container: &["records"],
        identity_of_value: None,
        identity: |_, text| {
            let r: CcuRecord<'_> = read_record(text)?;
            let time = r.timestamp.as_deref().and_then(instant_of);
            Ok((
                format!("{}\u{1f}{}", r.session_id.as_deref().unwrap_or(""), r.message_uuid.as_deref().unwrap_or("")),
                time,
            ))
        },
        contribute: |_, _, _| Ok(()),
        contribution_by_identity: true,
        keep_newest: |_| None,
        of_event: Some(|e, id| (Vec::new(), usage_record(e, id))),
    }),
    finish: Some(derive_statistics),
    strict: true,
    empty: || {
        json!({
            "machine_name": "", "export_date": null, "data_range": {"oldest": null, "newest": null},
            "records": [],
            "statistics": {"total_records": 0, "total_sessions": 0, "total_tokens": 0, "total_cost": 0.0}
        })
    },
    apply: Some(apply_usage),
    apply_batch: None,
    invariants: |doc, report| {
        let mut derived = doc.clone();
        if derive_in_place(&mut derived).is_ok() && derived.get("statistics") != doc.get("statistics") {
            let want = derived.get("statistics").cloned().unwrap_or_default();
            report("statistics".into(), format!("does not match the records: expected {want}"));
        }
    },
};

/// The fields of a record that identity and statistics read.
#[derive(serde::Deserialize)]
struct CcuRecord<'a> {
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message_uuid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    total_tokens: Option<u64>,
    // Read only to refuse what cannot be a token count (negative, fractional).
    #[serde(default, rename = "input_tokens")]
    _input_tokens: Option<u64>,
    #[serde(default, rename = "output_tokens")]
    _output_tokens: Option<u64>,
    #[serde(default, rename = "cache_creation_tokens")]
    _cache_creation_tokens: Option<u64>,
    #[serde(default, rename = "cache_read_tokens")]
    _cache_read_tokens: Option<u64>,
}

/// Statistics and the data range are a function of the records (sessions are distinct
/// ids, not a sum).
fn derive_statistics(doc: &mut Value, records: &[&str]) -> Result<(), FieldError> {
    let mut sessions = HashSet::new();
    let mut tokens: u64 = 0;
    let mut oldest: Option<(Instant, String)> = None;
    let mut newest: Option<(Instant, String)> = None;
    for text in records {
        let r: CcuRecord<'_> = read_record(text)?;
        sessions.insert(r.session_id.unwrap_or_default().into_owned());
        tokens = tokens
            .checked_add(r.total_tokens.unwrap_or(0))
            .ok_or_else(|| FieldError::new("statistics.total_tokens", "a total that fits 64 bits"))?;
        if let Some(ts) = r.timestamp {
            let t = instant_of(&ts).ok_or_else(|| FieldError::new("timestamp", "an RFC 3339 timestamp"))?;
            if oldest.as_ref().is_none_or(|(o, _)| t < *o) {
                oldest = Some((t, ts.to_string()));
            }
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, ts.to_string()));
            }
        }
    }
    let Some(map) = doc.as_object_mut() else { return Ok(()) };
    if !records.is_empty() {
        map.insert("data_range".into(), json!({"oldest": oldest.map(|x| x.1), "newest": newest.map(|x| x.1)}));
    }
    if let Some(Value::Object(stats)) = map.get_mut("statistics") {
        stats.insert("total_records".into(), json!(records.len()));
        stats.insert("total_sessions".into(), json!(sessions.len()));
        stats.insert("total_tokens".into(), json!(tokens));
    }
    Ok(())
}

/// `derive_statistics` for a whole document (the write path and `check`).
fn derive_in_place(doc: &mut Value) -> Result<(), FieldError> {
    let texts: Vec<String> = doc
        .get("records")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    derive_statistics(doc, &refs)
}

/// The record a ccu usage file keeps for a request: session (the event's source, else
/// its device) and message (the event's id).
fn usage_record(e: &Event, uuid: &str) -> Value {
    let session = if e.source.is_empty() { e.device.clone() } else { e.source.clone() };
    json!({
        "session_id": session, "message_uuid": uuid, "timestamp": e.timestamp_text(), "model": e.model,
        "total_tokens": e.total_tokens, "input_tokens": e.input_tokens, "output_tokens": e.output_tokens,
        "cache_creation_tokens": e.cache_creation_tokens, "cache_read_tokens": e.cache_read_tokens,
        "folder": e.path, "git_branch": "", "version": ""
    })
}

fn apply_usage(doc: &mut Value, e: &Event) -> Result<(), FieldError> {
    let ts = e.timestamp_text();
    let session = if e.source.is_empty() { e.device.clone() } else { e.source.clone() };
    let uuid =
        e.id.clone()
            .unwrap_or_else(|| format!("{}-{}", e.device, e.timestamp.timestamp_nanos_opt().unwrap_or_default()));
    let list = doc.as_object_mut().expect("object").entry("records").or_insert_with(|| json!([]));
    let Value::Array(list) = list else {
        return Err(FieldError::new("records", "an array"));
    };
    if list.iter().any(|r| {
        r.get("session_id").and_then(Value::as_str) == Some(&session)
            && r.get("message_uuid").and_then(Value::as_str) == Some(&uuid)
    }) {
        return Ok(());
    }
    list.push(usage_record(e, &uuid));
    list.sort_by_key(|r| r.get("timestamp").and_then(parse_instant));
    let map = doc.as_object_mut().expect("object");
    if map.get("machine_name").and_then(Value::as_str).is_none_or(str::is_empty) {
        map.insert("machine_name".into(), json!(e.device));
    }
    let range = map.entry("data_range").or_insert_with(|| json!({}));
    let t = (e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos());
    if range.get("oldest").and_then(parse_instant).is_none_or(|o| o > t) {
        range["oldest"] = json!(ts);
    }
    if range.get("newest").and_then(parse_instant).is_none_or(|n| n < t) {
        range["newest"] = json!(ts);
    }
    if map.get("export_date").and_then(parse_instant).is_none_or(|d| d < t) {
        map.insert("export_date".into(), json!(ts));
    }
    let stats = map.entry("statistics").or_insert_with(|| json!({}));
    let cost = stats.get("total_cost").and_then(Value::as_f64).unwrap_or(0.0) + e.cost_usd.unwrap_or(0.0);
    stats["total_cost"] = json!(cost);
    derive_in_place(doc)
}

static MANIFEST_RULES: &[Rule] = &[
    rule(&["version"], Kind::Later),
    rule(&["last_updated"], Kind::Later),
    rule(&["backup_retention_days"], Kind::Scalar),
    rule(&["machines"], Kind::LatestEntry { key: "machine_name", by: "last_sync", union: "backups" }),
];

pub static MANIFEST: Profile = Profile {
    name: "ccu-manifest",
    description: "manifest.json of per-machine usage files",
    detect: |v| {
        v.get("machines").is_some_and(Value::is_array)
            && (v.get("backup_retention_days").is_some() || v.get("last_updated").is_some())
    },
    envelope: None,
    envelope_rules: &[],
    rules: MANIFEST_RULES,
    records: None,
    finish: None,
    strict: true,
    empty: || json!({ "version": "1.0", "last_updated": null, "machines": [], "backup_retention_days": 30 }),
    apply: None,
    apply_batch: None,
    invariants: |doc, report| {
        let mut seen = HashSet::new();
        for m in doc.get("machines").and_then(Value::as_array).into_iter().flatten() {
            let name = m.get("machine_name").and_then(Value::as_str).unwrap_or("");
            if !seen.insert(name) {
                report(format!("machines[machine_name={name}]"), "appears twice".into());
            }
        }
    },
};
