//! ProxyPal's split usage files (SPEC §3.2): `aggregate.json`, all-time counters that are
//! never trimmed, and `history.json`, the last 500 requests with running totals.

use super::{
    add_f64, add_u64, obj_mut, parse_instant, record_value, rule, str_field, u64_field, FieldError, Kind, Profile,
    RecordSpec, Rule,
};
use crate::event::Event;
use crate::num::Num;
use serde_json::{json, Value};

pub const HISTORY_LIMIT: usize = 500;
pub const HOURS_KEPT: usize = 168;

static AGGREGATE_RULES: &[Rule] = &[
    rule(&["createdAt"], Kind::Earlier),
    rule(&["totalCostUsd"], Kind::Counter),
    rule(&["requestsByDay"], Kind::Series { label: "label", value: "value", keep: None }),
    rule(&["tokensByDay"], Kind::Series { label: "label", value: "value", keep: None }),
    rule(&["requestsByHour"], Kind::Series { label: "label", value: "value", keep: Some(HOURS_KEPT) }),
    rule(&["tokensByHour"], Kind::Series { label: "label", value: "value", keep: Some(HOURS_KEPT) }),
    rule(&["modelStats"], Kind::Object),
    rule(&["modelStats", "*"], Kind::Object),
    rule(&["modelStats", "*", "*"], Kind::Counter),
    rule(&["providerStats"], Kind::Object),
    rule(&["providerStats", "*"], Kind::Object),
    rule(&["providerStats", "*", "*"], Kind::Counter),
];

pub static AGGREGATE: Profile = Profile {
    name: "proxypal-aggregate",
    description: "ProxyPal aggregate.json (all-time counters and series)",
    detect: |v| {
        v.get("totalRequests").is_some()
            || v.get("modelStats").is_some_and(Value::is_object)
            || v.get("requestsByDay").is_some_and(Value::is_array)
    },
    envelope: None,
    envelope_rules: &[],
    rules: AGGREGATE_RULES,
    records: None,
    finish: None,
    strict: true,
    empty: || {
        json!({
            "totalRequests": 0, "totalSuccessCount": 0, "totalFailureCount": 0,
            "totalTokensIn": 0, "totalTokensOut": 0, "totalTokensCached": 0, "totalCostUsd": 0.0,
            "requestsByDay": [], "tokensByDay": [], "requestsByHour": [], "tokensByHour": [],
            "modelStats": {}, "providerStats": {}
        })
    },
    apply: Some(apply_aggregate),
    apply_batch: None,
    invariants: aggregate_invariants,
};

fn series_add(doc: &mut Value, key: &str, label: &str, n: u64, keep: Option<usize>) -> Result<(), FieldError> {
    let arr = doc.as_object_mut().expect("object").entry(key).or_insert_with(|| json!([]));
    let Value::Array(list) = arr else {
        return Err(FieldError::new(key, "an array"));
    };
    match list.iter_mut().find(|e| e.get("label").and_then(Value::as_str) == Some(label)) {
        Some(e) => add_u64(e, "value", n)?,
        None => list.push(json!({ "label": label, "value": n })),
    }
    list.sort_by(|a, b| a.get("label").and_then(Value::as_str).cmp(&b.get("label").and_then(Value::as_str)));
    if let Some(keep) = keep {
        if list.len() > keep {
            let excess = list.len() - keep;
            list.drain(..excess);
        }
    }
    Ok(())
}

fn apply_aggregate(doc: &mut Value, e: &Event) -> Result<(), FieldError> {
    let ok = !e.failed;
    let map = doc.as_object_mut().expect("object");
    if map.get("createdAt").and_then(Value::as_i64).is_none_or(|c| c > e.timestamp_ms()) {
        map.insert("createdAt".into(), json!(e.timestamp_ms()));
    }
    add_u64(doc, "totalRequests", 1)?;
    add_u64(doc, if ok { "totalSuccessCount" } else { "totalFailureCount" }, 1)?;
    add_u64(doc, "totalTokensIn", e.input_tokens)?;
    add_u64(doc, "totalTokensOut", e.output_tokens)?;
    add_u64(doc, "totalTokensCached", e.cache_read_tokens)?;
    add_f64(doc, "totalCostUsd", e.cost_usd.unwrap_or(0.0))?;
    let tokens = e.input_tokens + e.output_tokens;
    let day = e.day();
    let hour = e.timestamp.format("%Y-%m-%dT%H").to_string();
    series_add(doc, "requestsByDay", &day, 1, None)?;
    series_add(doc, "tokensByDay", &day, tokens, None)?;
    series_add(doc, "requestsByHour", &hour, 1, Some(HOURS_KEPT))?;
    series_add(doc, "tokensByHour", &hour, tokens, Some(HOURS_KEPT))?;
    for (group, name) in [("modelStats", &e.model), ("providerStats", &e.provider)] {
        let s = obj_mut(obj_mut(doc, group), name);
        add_u64(s, "requests", 1)?;
        add_u64(s, "successCount", ok as u64)?;
        add_u64(s, "tokens", tokens)?;
        add_u64(s, "inputTokens", e.input_tokens)?;
        add_u64(s, "outputTokens", e.output_tokens)?;
        add_u64(s, "cachedTokens", e.cache_read_tokens)?;
    }
    Ok(())
}

fn aggregate_invariants(doc: &Value, report: &mut super::Report<'_>) {
    let n = |k: &str| doc.get(k).and_then(Value::as_u64).unwrap_or(0);
    if n("totalSuccessCount") + n("totalFailureCount") != n("totalRequests") {
        report("totalRequests".into(), "totalSuccessCount + totalFailureCount differs from totalRequests".into());
    }
    for group in ["modelStats", "providerStats"] {
        if let Some(m) = doc.get(group).and_then(Value::as_object) {
            let sum: u64 = m.values().filter_map(|s| s.get("requests").and_then(Value::as_u64)).sum();
            if sum != n("totalRequests") {
                report(group.into(), format!("requests add up to {sum}, totalRequests is {}", n("totalRequests")));
            }
        }
    }
}

static HISTORY_RULES: &[Rule] = &[
    rule(&["requests"], Kind::Records),
    rule(&["totalTokensIn"], Kind::Counter),
    rule(&["totalTokensOut"], Kind::Counter),
    rule(&["totalCostUsd"], Kind::Counter),
];

pub static HISTORY: Profile = Profile {
    name: "proxypal-history",
    description: "ProxyPal history.json (the last 500 requests and running totals)",
    detect: |v| {
        v.get("requests").is_some_and(Value::is_array)
            && (v.get("totalTokensIn").is_some()
                || v.get("totalTokensOut").is_some()
                || v.get("totalCostUsd").is_some())
    },
    envelope: None,
    envelope_rules: &[],
    rules: HISTORY_RULES,
    records: Some(RecordSpec {
        container: &["requests"],
        identity_of_value: None,
        identity: |_, text| {
            let r = record_value(text)?;
            let time = r.get("timestamp").and_then(parse_instant);
            let id = match r.get("id") {
                Some(Value::String(s)) if !s.is_empty() => format!("id:{s}"),
                Some(Value::Number(n)) => format!("id:{n}"),
                _ => format!("at:{}:{}", r.get("timestamp").unwrap_or(&Value::Null), str_field(&r, "path")?),
            };
            Ok((id, time))
        },
        contribute: |_, r, emit| {
            emit(&["totalTokensIn"], Num::Int(i128::from(u64_field(r, "tokensIn")?)));
            emit(&["totalTokensOut"], Num::Int(i128::from(u64_field(r, "tokensOut")?)));
            Ok(())
        },
        contribution_by_identity: false,
        keep_newest: |_| Some(HISTORY_LIMIT),
        of_event: Some(|e, id| (Vec::new(), history_entry(e, id))),
    }),
    finish: None,
    strict: true,
    empty: || json!({ "requests": [], "totalTokensIn": 0, "totalTokensOut": 0, "totalCostUsd": 0.0 }),
    apply: Some(apply_history),
    apply_batch: None,
    invariants: |_, _| {},
};

/// The entry ProxyPal's history lists for a request.
fn history_entry(e: &Event, id: &str) -> Value {
    json!({
        "id": id, "timestamp": e.timestamp_ms(), "provider": e.provider, "model": e.model,
        "method": e.method, "path": e.path, "status": e.status.unwrap_or(if e.failed { 500 } else { 200 }),
        "durationMs": e.latency_ms.unwrap_or(0), "tokensIn": e.input_tokens, "tokensOut": e.output_tokens,
        "tokensCached": e.cache_read_tokens
    })
}

fn apply_history(doc: &mut Value, e: &Event) -> Result<(), FieldError> {
    let id =
        e.id.clone()
            .unwrap_or_else(|| format!("{}-{}", e.device, e.timestamp.timestamp_nanos_opt().unwrap_or_default()));
    let list = doc.as_object_mut().expect("object").entry("requests").or_insert_with(|| json!([]));
    let Value::Array(list) = list else {
        return Err(FieldError::new("requests", "an array"));
    };
    if list.iter().any(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str())) {
        return Ok(());
    }
    list.push(history_entry(e, &id));
    list.sort_by_key(|r| r.get("timestamp").and_then(Value::as_i64));
    if list.len() > HISTORY_LIMIT {
        let excess = list.len() - HISTORY_LIMIT;
        list.drain(..excess);
    }
    add_u64(doc, "totalTokensIn", e.input_tokens)?;
    add_u64(doc, "totalTokensOut", e.output_tokens)?;
    add_f64(doc, "totalCostUsd", e.cost_usd.unwrap_or(0.0))
}
