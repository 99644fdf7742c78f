//! The native format (SPEC §3.4), `git-tally/2`: the single native file is a view of the
//! ledger (SPEC §4b), every device summed. Its size grows with hours × keys, not with
//! requests: counters per UTC hour, device, provider, api and model (UTC hours, so that
//! reports can use any whole-hour time zone), all-time totals, and a bounded list of
//! recent records (informational: the cells hold the counts).

use super::{
    add_f64, add_u64, obj_mut, parse_instant, record_value, rule, str_field, u64_field, Emit, FieldError, Kind,
    Profile, RecordSpec, Rule,
};
use crate::event::Event;
use crate::num::Num;
use serde_json::{json, Map, Value};

/// The `format` value of native files.
pub const NATIVE_FORMAT: &str = "git-tally/2";
/// Default length of the `recent` list.
pub const RECENT_LIMIT: usize = 500;

/// The counters kept for the totals and for every cell. `input_tokens` excludes the
/// cache; `cost_estimated_usd` is the part of `cost_usd` estimated from the price table;
/// `unpriced` counts requests with no cost given and no price known.
pub const COUNTERS: [&str; 11] = [
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_usd",
    "cost_estimated_usd",
    "unpriced",
];

/// Counters that hold dollars (floats); the others are integers.
pub fn is_money(counter: &str) -> bool {
    counter.ends_with("_usd")
}

static RULES: &[Rule] = &[
    rule(&["format"], Kind::Later),
    rule(&["created_at"], Kind::Earlier),
    rule(&["updated_at"], Kind::Later),
    rule(&["recent_limit"], Kind::Scalar),
    rule(&["totals"], Kind::Object),
    rule(&["totals", "*"], Kind::Counter),
    rule(&["hours"], Kind::Map),
    rule(&["hours", "*"], Kind::Map),
    rule(&["hours", "*", "*"], Kind::Map),
    rule(&["hours", "*", "*", "*"], Kind::Map),
    rule(&["hours", "*", "*", "*", "*"], Kind::Map),
    rule(&["hours", "*", "*", "*", "*", "*"], Kind::Object),
    rule(&["hours", "*", "*", "*", "*", "*", "*"], Kind::Counter),
    rule(&["devices"], Kind::Map),
    rule(&["devices", "*"], Kind::Object),
    rule(&["devices", "*", "first_seen"], Kind::Earlier),
    rule(&["devices", "*", "last_seen"], Kind::Later),
    rule(&["recent"], Kind::Records),
];

pub static TALLY: Profile = Profile {
    name: "tally",
    description: "git-tally's native format (counters per UTC hour, device, provider, api and model)",
    detect: |v| is_native_view(v),
    envelope: None,
    envelope_rules: &[],
    rules: RULES,
    records: Some(RecordSpec {
        container: &["recent"],
        identity_of_value: None,
        identity: |_, text| {
            let r = record_value(text)?;
            match r.get("id") {
                Some(Value::String(s)) if !s.is_empty() => {
                    // Ids are per device: the same id on two machines is two requests.
                    let device = r.get("device").and_then(Value::as_str).unwrap_or("");
                    Ok((format!("{device}\u{1f}{s}"), r.get("timestamp").and_then(parse_instant)))
                }
                _ => Err(FieldError::new("id", "a non-empty string")),
            }
        },
        contribute,
        contribution_by_identity: false,
        keep_newest: |root| Some(root.get("recent_limit").and_then(Value::as_u64).map_or(RECENT_LIMIT, |n| n as usize)),
        of_event: Some(|e, id| (Vec::new(), record_of(e, id))),
    }),
    finish: None,
    strict: true,
    empty,
    apply: Some(apply),
    apply_batch: None,
    invariants,
};

/// The rules a native shard's hour cells are read with: none (every number in them is a
/// counter, as in `generic`), but strict: they count whole requests and tokens, and only
/// dollars have fractions.
pub static CELLS: Profile = Profile {
    name: "tally-cells",
    description: "the hour cells of git-tally's ledger shards",
    detect: |_| false,
    envelope: None,
    envelope_rules: &[],
    rules: &[],
    records: None,
    finish: None,
    strict: true,
    empty: || serde_json::json!({}),
    apply: None,
    apply_batch: None,
    invariants: |_, _| {},
};

/// Whether a document is a native view (not a ledger file, which has a `kind`).
pub fn is_native_view(v: &Value) -> bool {
    v.get("format").and_then(Value::as_str) == Some(NATIVE_FORMAT) && v.get("kind").is_none()
}

fn zero_counters() -> Map<String, Value> {
    COUNTERS.iter().map(|k| (k.to_string(), if is_money(k) { json!(0.0) } else { json!(0) })).collect()
}

fn empty() -> Value {
    json!({
        "format": NATIVE_FORMAT,
        "recent_limit": RECENT_LIMIT,
        "totals": zero_counters(),
        "hours": {},
        "devices": {},
        "recent": []
    })
}

/// The UTC hour of an instant, as cells are keyed: `YYYY-MM-DDTHH`.
pub fn hour_key(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    use chrono::{Datelike, Timelike};
    let u = t.naive_utc();
    if !(0..=9999).contains(&u.year()) {
        return u.format("%Y-%m-%dT%H").to_string();
    }
    // As that format writes it, without parsing the pattern for every event.
    format!("{:04}-{:02}-{:02}T{:02}", u.year(), u.month(), u.day(), u.hour())
}

/// What an event adds to its cell, counter by counter (`COUNTERS`).
pub fn event_amounts(e: &Event) -> Map<String, Value> {
    let cost = e.cost_usd.unwrap_or(0.0);
    let mut m = Map::with_capacity(11);
    for (k, v) in [
        ("requests", json!(1)),
        ("failed", json!(e.failed as u64)),
        ("input_tokens", json!(e.input_tokens)),
        ("output_tokens", json!(e.output_tokens)),
        ("reasoning_tokens", json!(e.reasoning_tokens)),
        ("cache_creation_tokens", json!(e.cache_creation_tokens)),
        ("cache_read_tokens", json!(e.cache_read_tokens)),
        ("total_tokens", json!(e.total_tokens)),
        ("cost_usd", json!(cost)),
        ("cost_estimated_usd", json!(if e.cost_estimated { cost } else { 0.0 })),
        ("unpriced", json!(e.cost_usd.is_none() as u64)),
    ] {
        m.insert(k.to_string(), v);
    }
    m
}

/// A part of a cell's key; an empty one is "unknown".
pub fn cell_name(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s.to_string()
    }
}

/// The record kept for an event (in `recent`).
pub fn record_of(e: &Event, id: &str) -> Value {
    let mut r = json!({
        "id": id,
        "timestamp": e.timestamp_text(),
        "device": e.device,
        "provider": e.provider,
        "api": e.api,
        "model": e.model,
    });
    if let Some(s) = e.status {
        r["status"] = json!(s);
    }
    for (k, v) in event_amounts(e) {
        if k != "requests" && k != "unpriced" && k != "cost_estimated_usd" {
            r[&k] = if k == "failed" { json!(e.failed) } else { v };
        }
    }
    if e.cost_estimated {
        r["cost_estimated"] = json!(true);
    }
    if e.cost_usd.is_none() {
        r.as_object_mut().expect("object").remove("cost_usd");
    }
    if let Some(l) = e.latency_ms {
        r["latency_ms"] = json!(l);
    }
    r
}

/// One record's counter values, in `COUNTERS` order.
fn amounts(r: &Value) -> Result<Vec<Num>, FieldError> {
    let failed = match r.get("failed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(FieldError::new("failed", "true or false")),
    };
    let int = |f: &str| u64_field(r, f).map(|n| Num::Int(i128::from(n)));
    let cost = match r.get("cost_usd") {
        None | Some(Value::Null) => None,
        Some(c) => Some(c.as_f64().ok_or_else(|| FieldError::new("cost_usd", "a number"))?),
    };
    let estimated = r.get("cost_estimated").and_then(Value::as_bool).unwrap_or(false);
    Ok(vec![
        Num::Int(1),
        Num::Int(failed as i128),
        int("input_tokens")?,
        int("output_tokens")?,
        int("reasoning_tokens")?,
        int("cache_creation_tokens")?,
        int("cache_read_tokens")?,
        int("total_tokens")?,
        Num::Float(cost.unwrap_or(0.0)),
        Num::Float(if estimated { cost.unwrap_or(0.0) } else { 0.0 }),
        Num::Int(cost.is_none() as i128),
    ])
}

fn contribute(_: &[String], r: &Value, emit: &mut Emit<'_>) -> Result<(), FieldError> {
    let amounts = amounts(r)?;
    let ts = str_field(r, "timestamp")?;
    let t =
        chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| FieldError::new("timestamp", "an RFC 3339 timestamp"))?;
    let hour = hour_key(&t);
    let name = |f: &str| str_field(r, f).map(cell_name);
    let (device, provider, api, model) = (name("device")?, name("provider")?, name("api")?, name("model")?);
    for (k, n) in COUNTERS.iter().zip(amounts) {
        emit(&["totals", k], n);
        emit(&["hours", &hour, &device, &provider, &api, &model, k], n);
    }
    Ok(())
}

/// Applies an event to a native view as one machine would count it (tests compare
/// synced states with this single-machine truth).
fn apply(doc: &mut Value, e: &Event) -> Result<(), FieldError> {
    let id = e.id.clone().unwrap_or_else(|| format!("{}-{}", e.device, e.timestamp.timestamp_nanos_opt().unwrap_or(0)));
    let amounts = event_amounts(e);
    let bump = |target: &mut Value| -> Result<(), FieldError> {
        for (k, v) in &amounts {
            match v {
                Value::Number(n) if n.is_f64() => add_f64(target, k, n.as_f64().unwrap_or(0.0))?,
                Value::Number(n) => add_u64(target, k, n.as_u64().unwrap_or(0))?,
                _ => {}
            }
        }
        Ok(())
    };
    bump(obj_mut(doc, "totals"))?;
    let hour = hour_key(&e.timestamp);
    let cell = obj_mut(
        obj_mut(
            obj_mut(obj_mut(obj_mut(obj_mut(doc, "hours"), &hour), &cell_name(&e.device)), &cell_name(&e.provider)),
            &cell_name(&e.api),
        ),
        &cell_name(&e.model),
    );
    bump(cell)?;
    let ts = e.timestamp_text();
    let t = (e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos());
    let map = doc.as_object_mut().expect("native documents are objects");
    if map.get("created_at").and_then(parse_instant).is_none_or(|c| t < c) {
        map.insert("created_at".into(), json!(ts));
    }
    if map.get("updated_at").and_then(parse_instant).is_none_or(|c| t > c) {
        map.insert("updated_at".into(), json!(ts));
    }
    let dev = obj_mut(obj_mut(doc, "devices"), &cell_name(&e.device));
    if dev.get("first_seen").and_then(parse_instant).is_none_or(|c| t < c) {
        dev["first_seen"] = json!(ts);
    }
    if dev.get("last_seen").and_then(parse_instant).is_none_or(|c| t > c) {
        dev["last_seen"] = json!(ts);
    }
    let limit = doc.get("recent_limit").and_then(Value::as_u64).map_or(RECENT_LIMIT, |n| n as usize);
    let Value::Array(list) = doc.as_object_mut().expect("object").entry("recent").or_insert_with(|| json!([])) else {
        return Err(FieldError::new("recent", "an array"));
    };
    let time = |r: &Value| r.get("timestamp").and_then(parse_instant);
    let at = list.partition_point(|r| time(r) <= Some(t));
    list.insert(at, record_of(e, &id));
    if list.len() > limit {
        let excess = list.len() - limit;
        list.drain(..excess);
    }
    Ok(())
}

fn invariants(doc: &Value, report: &mut super::Report<'_>) {
    let Some(hours) = doc.get("hours").and_then(Value::as_object) else { return };
    for k in COUNTERS {
        let mut sum = 0.0;
        let mut stack: Vec<&Value> = hours.values().collect();
        while let Some(v) = stack.pop() {
            match v.get(k) {
                Some(n) if n.is_number() => sum += n.as_f64().unwrap_or(0.0),
                _ => stack.extend(v.as_object().into_iter().flat_map(|m| m.values()).filter(|x| x.is_object())),
            }
        }
        let total = doc.get("totals").and_then(|t| t.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
        if (sum - total).abs() > 1e-6 * total.abs().max(1.0) {
            report(format!("totals.{k}"), format!("the hours add up to {sum}, the total is {total}"));
        }
    }
}

#[cfg(test)]
mod hour_key_tests {
    #[test]
    fn hour_keys_are_what_chrono_formats() {
        for text in [
            "2026-11-30T23:59:59-08:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:00:00+00:00",
            "2024-02-29T05:30:00+05:30",
        ] {
            let t = chrono::DateTime::parse_from_rfc3339(text).unwrap();
            let want = t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H").to_string();
            assert_eq!(super::hour_key(&t), want, "{text}");
        }
    }
}
