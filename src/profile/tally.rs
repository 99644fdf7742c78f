//! The native format (SPEC §3.4), written by `record` when no other profile applies.
//! Its size grows with days × keys, not with requests: per-day counters by device,
//! provider and model, all-time totals, and a bounded list of recent records with ids.
//! The counters are record-backed, so trimming `recent` never changes a total.

use super::{
    add_f64, add_u64, obj_mut, parse_instant, record_value, rule, str_field, u64_field, Emit, FieldError, Kind,
    Profile, RecordSpec, Rule,
};
use crate::event::Event;
use crate::num::Num;
use serde_json::{json, Value};

/// The `format` value of native files.
pub const NATIVE_FORMAT: &str = "git-tally/1";
/// Default length of the `recent` list.
pub const RECENT_LIMIT: usize = 500;

/// The counters kept for the totals and for every day/device/provider/model cell.
pub const COUNTERS: [&str; 8] = [
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "total_tokens",
    "cost_usd",
];

static RULES: &[Rule] = &[
    rule(&["format"], Kind::Later),
    rule(&["created_at"], Kind::Earlier),
    rule(&["updated_at"], Kind::Later),
    rule(&["recent_limit"], Kind::Scalar),
    rule(&["totals"], Kind::Object),
    rule(&["totals", "*"], Kind::Counter),
    rule(&["days"], Kind::Map),
    rule(&["days", "*"], Kind::Map),
    rule(&["days", "*", "*"], Kind::Map),
    rule(&["days", "*", "*", "*"], Kind::Map),
    rule(&["days", "*", "*", "*", "*"], Kind::Object),
    rule(&["days", "*", "*", "*", "*", "*"], Kind::Counter),
    rule(&["devices"], Kind::Map),
    rule(&["devices", "*"], Kind::Object),
    rule(&["devices", "*", "first_seen"], Kind::Earlier),
    rule(&["devices", "*", "last_seen"], Kind::Later),
    rule(&["recent"], Kind::Records),
];

pub static TALLY: Profile = Profile {
    name: "tally",
    description: "git-tally's native format (per-day counters by device, provider and model)",
    detect: |v| v.get("format").and_then(Value::as_str).is_some_and(is_native_format),
    envelope: None,
    envelope_rules: &[],
    rules: RULES,
    records: Some(RecordSpec {
        container: &["recent"],
        identity: |_, text| {
            let r = record_value(text)?;
            match r.get("id") {
                Some(Value::String(s)) if !s.is_empty() => Ok((s.clone(), r.get("timestamp").and_then(parse_instant))),
                _ => Err(FieldError::new("id", "a non-empty string")),
            }
        },
        contribute,
        contribution_by_identity: false,
        keep_newest: |root| Some(root.get("recent_limit").and_then(Value::as_u64).map_or(RECENT_LIMIT, |n| n as usize)),
    }),
    finish: None,
    strict: true,
    empty,
    apply: Some(apply),
    apply_batch: Some(apply_batch),
    invariants,
};

fn empty() -> Value {
    let zero: serde_json::Map<String, Value> =
        COUNTERS.iter().map(|k| (k.to_string(), if *k == "cost_usd" { json!(0.0) } else { json!(0) })).collect();
    json!({
        "format": NATIVE_FORMAT,
        "recent_limit": RECENT_LIMIT,
        "totals": zero,
        "days": {},
        "devices": {},
        "recent": []
    })
}

/// One record's counter values, in `COUNTERS` order.
fn amounts(r: &Value) -> Result<[Num; 8], FieldError> {
    let failed = match r.get("failed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(FieldError::new("failed", "true or false")),
    };
    let int = |f: &str| u64_field(r, f).map(|n| Num::Int(i128::from(n)));
    let cost =
        r.get("cost_usd").map_or(Ok(0.0), |c| c.as_f64().ok_or_else(|| FieldError::new("cost_usd", "a number")))?;
    Ok([
        Num::Int(1),
        Num::Int(failed as i128),
        int("input_tokens")?,
        int("output_tokens")?,
        int("reasoning_tokens")?,
        int("cached_tokens")?,
        int("total_tokens")?,
        Num::Float(cost),
    ])
}

fn cell(r: &Value) -> Result<[String; 4], FieldError> {
    let ts = str_field(r, "timestamp")?;
    let day = chrono::DateTime::parse_from_rfc3339(ts)
        .map_err(|_| FieldError::new("timestamp", "an RFC 3339 timestamp"))?
        .format("%Y-%m-%d")
        .to_string();
    let name = |f: &str| str_field(r, f).map(|s| if s.is_empty() { "unknown".to_string() } else { s.to_string() });
    Ok([day, name("device")?, name("provider")?, name("model")?])
}

fn contribute(_: &[String], r: &Value, emit: &mut Emit<'_>) -> Result<(), FieldError> {
    let amounts = amounts(r)?;
    let [day, device, provider, model] = cell(r)?;
    for (k, n) in COUNTERS.iter().zip(amounts) {
        emit(&["totals", k], n);
        emit(&["days", &day, &device, &provider, &model, k], n);
    }
    Ok(())
}

/// The record `record` stores for an event.
pub fn record_of(e: &Event, id: &str) -> Value {
    let mut r = json!({
        "id": id,
        "timestamp": e.timestamp_text(),
        "device": e.device,
        "provider": e.provider,
        "model": e.model,
    });
    if e.api != e.provider {
        r["api"] = json!(e.api);
    }
    if let Some(s) = e.status {
        r["status"] = json!(s);
    }
    r["failed"] = json!(e.failed);
    r["input_tokens"] = json!(e.input_tokens);
    r["output_tokens"] = json!(e.output_tokens);
    r["reasoning_tokens"] = json!(e.reasoning_tokens);
    r["cached_tokens"] = json!(e.cache_read_tokens);
    r["total_tokens"] = json!(e.total_tokens);
    r["cost_usd"] = json!(e.cost_usd.unwrap_or(0.0));
    if let Some(l) = e.latency_ms {
        r["latency_ms"] = json!(l);
    }
    r
}

/// Whether a `format` value names the native format (any version).
pub fn is_native_format(format: &str) -> bool {
    format.starts_with("git-tally/")
}

/// The id of an event's record: its own, else one made from its device and instant.
fn record_id(e: &Event) -> String {
    match &e.id {
        Some(id) => id.clone(),
        None => format!("{}-{}", e.device, e.timestamp.timestamp_nanos_opt().unwrap_or_default()),
    }
}

/// A part of a day cell's key; an empty one is "unknown".
fn cell_name(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s.to_string()
    }
}

/// The day cell an event counts in: day, device, provider, model.
fn cell_key(e: &Event) -> [String; 4] {
    [e.day(), cell_name(&e.device), cell_name(&e.provider), cell_name(&e.model)]
}

fn apply(doc: &mut Value, e: &Event) -> Result<(), FieldError> {
    let id = record_id(e);
    // A retried event counts once. It carries its first timestamp, so only the records at
    // that instant (found by binary search; `recent` is in time order) can be it.
    let t = Some((e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos()));
    let time = |r: &Value| r.get("timestamp").and_then(parse_instant);
    if let Some(list) = doc.get("recent").and_then(Value::as_array) {
        // Events mostly arrive in time order: nothing at or after this instant yet.
        let later_than_all = list.last().is_none_or(|r| time(r) < t);
        if !later_than_all {
            let (lo, hi) = (list.partition_point(|r| time(r) < t), list.partition_point(|r| time(r) <= t));
            if list[lo..hi].iter().any(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str())) {
                return Ok(());
            }
        }
    }
    let rec = record_of(e, &id);
    let amounts = [
        Num::Int(1),
        Num::Int(e.failed as i128),
        Num::Int(i128::from(e.input_tokens)),
        Num::Int(i128::from(e.output_tokens)),
        Num::Int(i128::from(e.reasoning_tokens)),
        Num::Int(i128::from(e.cache_read_tokens)),
        Num::Int(i128::from(e.total_tokens)),
        Num::Float(e.cost_usd.unwrap_or(0.0)),
    ];
    let [day, device, provider, model] = cell_key(e);
    let ts = e.timestamp_text();
    let map = doc.as_object_mut().expect("native documents are objects");
    map.entry("format").or_insert_with(|| json!(NATIVE_FORMAT));
    let later = |old: Option<&Value>, keep_earlier: bool| !matches!(old.and_then(parse_instant), Some(t) if (t <= (e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos())) == keep_earlier);
    if later(map.get("created_at"), true) {
        map.insert("created_at".into(), json!(ts));
    }
    if later(map.get("updated_at"), false) {
        map.insert("updated_at".into(), json!(ts));
    }
    let totals = obj_mut(doc, "totals");
    let bump = |target: &mut Value| -> Result<(), FieldError> {
        for (k, n) in COUNTERS.iter().zip(amounts) {
            match n {
                Num::Float(f) => add_f64(target, k, f)?,
                Num::Int(i) => add_u64(target, k, i as u64)?,
            }
        }
        Ok(())
    };
    bump(totals)?;
    let cell = obj_mut(obj_mut(obj_mut(obj_mut(obj_mut(doc, "days"), &day), &device), &provider), &model);
    bump(cell)?;
    let dev = obj_mut(obj_mut(doc, "devices"), &device);
    if later(dev.get("first_seen"), true) {
        dev["first_seen"] = json!(ts);
    }
    if later(dev.get("last_seen"), false) {
        dev["last_seen"] = json!(ts);
    }
    let limit = doc.get("recent_limit").and_then(Value::as_u64).map_or(RECENT_LIMIT, |n| n as usize);
    let recent = doc.as_object_mut().expect("object").entry("recent").or_insert_with(|| json!([]));
    let Value::Array(list) = recent else {
        return Err(FieldError::new("recent", "an array"));
    };
    // Records stay in time order: insert after every record not later than this one.
    if list.last().is_none_or(|r| time(r) <= t) {
        list.push(rec);
    } else {
        let at = list.partition_point(|r| time(r) <= t);
        list.insert(at, rec);
    }
    if list.len() > limit {
        let excess = list.len() - limit;
        list.drain(..excess);
    }
    Ok(())
}

fn invariants(doc: &Value, report: &mut super::Report<'_>) {
    let Some(days) = doc.get("days").and_then(Value::as_object) else {
        return;
    };
    for k in COUNTERS {
        let mut sum = 0.0;
        for devices in days.values() {
            for providers in devices.as_object().into_iter().flat_map(|m| m.values()) {
                for models in providers.as_object().into_iter().flat_map(|m| m.values()) {
                    for c in models.as_object().into_iter().flat_map(|m| m.values()) {
                        sum += c.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    }
                }
            }
        }
        let total = doc.get("totals").and_then(|t| t.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
        if (sum - total).abs() > 1e-6 * total.abs().max(1.0) {
            report(format!("totals.{k}"), format!("the days add up to {sum}, the total is {total}"));
        }
    }
}

/// `apply` for many events at once: counters are summed per cell first, and records are
/// built only for the events that stay in `recent` (the newest `recent_limit`).
fn apply_batch(doc: &mut Value, events: &[Event]) -> Result<(), FieldError> {
    use std::collections::{HashMap, HashSet};
    let limit = doc.get("recent_limit").and_then(Value::as_u64).map_or(RECENT_LIMIT, |n| n as usize);
    let mut seen: HashSet<String> = doc
        .get("recent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut kept: Vec<(&Event, String)> = Vec::with_capacity(events.len());
    for e in events {
        let id = record_id(e);
        if seen.insert(id.clone()) {
            kept.push((e, id));
        }
    }
    if kept.is_empty() {
        return Ok(());
    }
    let mut cells: HashMap<[String; 4], [u64; 7]> = HashMap::new();
    let mut costs: HashMap<[String; 4], f64> = HashMap::new();
    let mut order: Vec<[String; 4]> = Vec::new();
    let mut devices: HashMap<String, (&Event, &Event)> = HashMap::new();
    for (e, _) in &kept {
        let key = cell_key(e);
        let amounts = [
            1,
            e.failed as u64,
            e.input_tokens,
            e.output_tokens,
            e.reasoning_tokens,
            e.cache_read_tokens,
            e.total_tokens,
        ];
        let slot = cells.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            [0; 7]
        });
        for (s, a) in slot.iter_mut().zip(amounts) {
            *s = s.checked_add(a).ok_or_else(|| FieldError::new("tokens", "counts that fit 64 bits"))?;
        }
        // Costs are added event by event, in order, as `apply` adds them.
        *costs.entry(key).or_insert(0.0) += e.cost_usd.unwrap_or(0.0);
        let d = devices.entry(cell_name(&e.device)).or_insert((e, e));
        if e.timestamp < d.0.timestamp {
            d.0 = e;
        }
        if e.timestamp > d.1.timestamp {
            d.1 = e;
        }
    }
    let first = kept.iter().map(|(e, _)| *e).min_by_key(|e| e.timestamp).expect("not empty");
    let last = kept.iter().map(|(e, _)| *e).max_by_key(|e| e.timestamp).expect("not empty");
    let map = doc.as_object_mut().expect("native documents are objects");
    map.entry("format").or_insert_with(|| json!(NATIVE_FORMAT));
    let instant = |e: &Event| (e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos());
    let earlier = |old: Option<&Value>, e: &Event| old.and_then(parse_instant).is_none_or(|t| instant(e) < t);
    let later = |old: Option<&Value>, e: &Event| old.and_then(parse_instant).is_none_or(|t| instant(e) > t);
    if earlier(map.get("created_at"), first) {
        map.insert("created_at".into(), json!(first.timestamp_text()));
    }
    if later(map.get("updated_at"), last) {
        map.insert("updated_at".into(), json!(last.timestamp_text()));
    }
    for key in &order {
        let sums = cells[key];
        let cost = costs[key];
        let bump = |target: &mut Value| -> Result<(), FieldError> {
            for (k, n) in COUNTERS.iter().zip(sums) {
                add_u64(target, k, n)?;
            }
            add_f64(target, "cost_usd", cost)
        };
        bump(obj_mut(doc, "totals"))?;
        let [day, device, provider, model] = key;
        bump(obj_mut(obj_mut(obj_mut(obj_mut(obj_mut(doc, "days"), day), device), provider), model))?;
    }
    for (device, (first, last)) in devices {
        let dev = obj_mut(obj_mut(doc, "devices"), &device);
        if earlier(dev.get("first_seen"), first) {
            dev["first_seen"] = json!(first.timestamp_text());
        }
        if later(dev.get("last_seen"), last) {
            dev["last_seen"] = json!(last.timestamp_text());
        }
    }
    // Only the newest `limit` of the new events can stay in `recent`.
    kept.sort_by_key(|(e, _)| e.timestamp);
    let skip = kept.len().saturating_sub(limit);
    let recent = doc.as_object_mut().expect("object").entry("recent").or_insert_with(|| json!([]));
    let Value::Array(list) = recent else { return Err(FieldError::new("recent", "an array")) };
    list.extend(kept[skip..].iter().map(|(e, id)| record_of(e, id)));
    list.sort_by_key(|r| r.get("timestamp").and_then(parse_instant));
    if list.len() > limit {
        let excess = list.len() - limit;
        list.drain(..excess);
    }
    Ok(())
}
