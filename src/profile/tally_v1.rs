//! The native format of git-tally 0.1 (`git-tally/1`): per-day counters by device, provider
//! and model, all-time totals, and a bounded list of recent records. git-tally no longer
//! writes it (its first sync turns such a file into the ledger, SPEC §4b); the merge
//! driver still merges it, for histories made by 0.1.

use super::{
    parse_instant, record_value, rule, str_field, u64_field, Emit, FieldError, Kind, Profile, RecordSpec, Rule,
};
use crate::num::Num;
use serde_json::{json, Value};

/// The `format` value of 0.1 native files.
pub const V1_FORMAT: &str = "git-tally/1";
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

pub static TALLY_V1: Profile = Profile {
    name: "tally-v1",
    description: "git-tally 0.1's native format (git-tally/1: per-day counters), merged for old histories",
    detect: |v| v.get("format").and_then(Value::as_str) == Some(V1_FORMAT),
    envelope: None,
    envelope_rules: &[],
    rules: RULES,
    records: Some(RecordSpec {
        container: &["recent"],
        identity_of_value: None,
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
        of_event: None,
    }),
    finish: None,
    strict: true,
    empty,
    apply: None,
    apply_batch: None,
    invariants,
};

fn empty() -> Value {
    let zero: serde_json::Map<String, Value> =
        COUNTERS.iter().map(|k| (k.to_string(), if *k == "cost_usd" { json!(0.0) } else { json!(0) })).collect();
    json!({
        "format": V1_FORMAT,
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
