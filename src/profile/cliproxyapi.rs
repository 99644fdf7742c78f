//! CLIProxyAPI's usage snapshot (SPEC §3.1), bare or inside its export envelope. Every
//! counter is explained by request details, so merges and file-mode ingestion are exact.

use super::{
    add_u64, day_and_hour, instant_of, obj_mut, parse_instant, read_record, rule, str_field, u64_field, Emit,
    FieldError, Instant, Kind, Profile, RecordSpec, Rule,
};
use crate::event::Event;
use crate::num::Num;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;

const COUNTERS: [&str; 4] = ["total_requests", "success_count", "failure_count", "total_tokens"];
const SERIES: [&str; 4] = ["requests_by_day", "tokens_by_day", "requests_by_hour", "tokens_by_hour"];

static RULES: &[Rule] = &[
    rule(&["total_requests"], Kind::Counter),
    rule(&["success_count"], Kind::Counter),
    rule(&["failure_count"], Kind::Counter),
    rule(&["total_tokens"], Kind::Counter),
    rule(&["apis"], Kind::Map),
    rule(&["apis", "*"], Kind::Object),
    rule(&["apis", "*", "total_requests"], Kind::Counter),
    rule(&["apis", "*", "total_tokens"], Kind::Counter),
    rule(&["apis", "*", "models"], Kind::Map),
    rule(&["apis", "*", "models", "*"], Kind::Object),
    rule(&["apis", "*", "models", "*", "total_requests"], Kind::Counter),
    rule(&["apis", "*", "models", "*", "total_tokens"], Kind::Counter),
    rule(&["apis", "*", "models", "*", "details"], Kind::Records),
    rule(&["requests_by_day"], Kind::Map),
    rule(&["tokens_by_day"], Kind::Map),
    rule(&["requests_by_hour"], Kind::Map),
    rule(&["tokens_by_hour"], Kind::Map),
    rule(&["requests_by_day", "*"], Kind::Counter),
    rule(&["tokens_by_day", "*"], Kind::Counter),
    rule(&["requests_by_hour", "*"], Kind::Counter),
    rule(&["tokens_by_hour", "*"], Kind::Counter),
];

static ENVELOPE_RULES: &[Rule] = &[rule(&["version"], Kind::Later), rule(&["exported_at"], Kind::Later)];

pub static CLIPROXYAPI: Profile = Profile {
    name: "cliproxyapi",
    description: "CLIProxyAPI usage snapshot or export envelope",
    detect,
    envelope: Some(("usage", is_envelope)),
    envelope_rules: ENVELOPE_RULES,
    rules: RULES,
    records: Some(RecordSpec {
        container: &["apis", "*", "models", "*", "details"],
        identity,
        identity_of_value: Some(identity_of_value),
        contribute,
        contribution_by_identity: true,
        keep_newest: |_| None,
        of_event: Some(|e, _| (vec![e.api.clone(), e.model.clone()], detail_of(e))),
    }),
    finish: None,
    strict: true,
    empty,
    apply: Some(apply),
    apply_batch: None,
    invariants,
};

fn is_snapshot(v: &Value) -> bool {
    v.get("apis").is_some_and(Value::is_object)
        || (v.get("total_requests").is_some() && v.get("requests_by_day").is_some())
}

fn is_envelope(v: &Value) -> bool {
    v.get("usage").is_some_and(is_snapshot) && !is_snapshot(v)
}

fn detect(v: &Value) -> bool {
    is_snapshot(v) || is_envelope(v)
}

fn empty() -> Value {
    json!({
        "total_requests": 0, "success_count": 0, "failure_count": 0, "total_tokens": 0,
        "apis": {}, "requests_by_day": {}, "requests_by_hour": {}, "tokens_by_day": {}, "tokens_by_hour": {}
    })
}

struct Detail {
    total: u64,
    failed: bool,
}

fn read_detail(r: &Value) -> Result<Detail, FieldError> {
    let t = match r.get("tokens") {
        None | Some(Value::Null) => &Value::Null,
        Some(t @ Value::Object(_)) => t,
        Some(_) => return Err(FieldError::new("tokens", "an object")),
    };
    let field = |f: &str| u64_field(t, f).map_err(|e| FieldError::new(format!("tokens.{}", e.field), e.expected));
    let input = field("input_tokens")?;
    let output = field("output_tokens")?;
    let reasoning = field("reasoning_tokens")?;
    let total = match t.get("total_tokens") {
        None | Some(Value::Null) => input
            .checked_add(output)
            .and_then(|n| n.checked_add(reasoning))
            .ok_or_else(|| FieldError::new("tokens", "counts whose sum fits in 64 bits"))?,
        Some(_) => field("total_tokens")?,
    };
    let failed = match r.get("failed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(FieldError::new("failed", "true or false")),
    };
    field("cached_tokens")?;
    Ok(Detail { total, failed })
}

/// A request detail as stored, read without building a tree (identity runs per record).
#[derive(serde::Deserialize)]
struct RawDetail<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    auth_index: Option<&'a RawValue>,
    #[serde(default)]
    tokens: Option<RawTokens>,
    #[serde(default)]
    failed: Option<bool>,
}

#[derive(serde::Deserialize, Default)]
struct RawTokens {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

/// [`identity`] of a record as a value, where its fields have the types `identity` reads
/// (`None` otherwise, for `identity` to decide and explain).
fn identity_of_value(caps: &[String], r: &Value) -> Option<(String, Option<Instant>)> {
    let r = r.as_object()?;
    let (secs, nanos) = instant_of(r.get("timestamp")?.as_str()?)?;
    let source = match r.get("source") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(_) => return None,
    };
    let auth = match r.get("auth_index") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(n) => n.as_u64()?.to_string(),
    };
    let t = match r.get("tokens") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => Some(t),
        Some(_) => return None,
    };
    let count = |f: &str| -> Option<Option<u64>> {
        match t.and_then(|t| t.get(f)) {
            None | Some(Value::Null) => Some(None),
            Some(n) => n.as_u64().map(Some),
        }
    };
    let tokens = RawTokens {
        input_tokens: count("input_tokens")?,
        output_tokens: count("output_tokens")?,
        reasoning_tokens: count("reasoning_tokens")?,
        cached_tokens: count("cached_tokens")?,
        total_tokens: count("total_tokens")?,
    };
    let failed = match r.get("failed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    Some(id_of(caps, (secs, nanos), source, &auth, failed, &tokens))
}

fn identity(caps: &[String], text: &str) -> Result<(String, Option<Instant>), FieldError> {
    let r: RawDetail<'_> = read_record(text)?;
    let ts = r.timestamp.ok_or_else(|| FieldError::new("timestamp", "an RFC 3339 timestamp"))?;
    let (secs, nanos) = instant_of(&ts).ok_or_else(|| FieldError::new("timestamp", "an RFC 3339 timestamp"))?;
    let auth = match r.auth_index.map(RawValue::get) {
        None | Some("null") => String::new(),
        Some(a) if a.starts_with('"') => serde_json::from_str::<String>(a).map_err(FieldError::record)?,
        Some(a) => {
            a.parse::<u64>().map_err(|_| FieldError::new("auth_index", "a string or an unsigned integer"))?.to_string()
        }
    };
    let source = r.source.as_deref().unwrap_or("");
    Ok(id_of(caps, (secs, nanos), source, &auth, r.failed.unwrap_or(false), &r.tokens.unwrap_or_default()))
}

/// A detail's identity (see `identity`) from its fields, and its time.
fn id_of(
    caps: &[String],
    (secs, nanos): Instant,
    source: &str,
    auth: &str,
    failed: bool,
    t: &RawTokens,
) -> (String, Option<Instant>) {
    let (input, output, reasoning) =
        (t.input_tokens.unwrap_or(0), t.output_tokens.unwrap_or(0), t.reasoning_tokens.unwrap_or(0));
    let total = match t.total_tokens {
        Some(n) => n,
        None => input.saturating_add(output).saturating_add(reasoning),
    };
    let id = format!(
        "{}\u{1f}{}\u{1f}{secs}.{nanos:09}\u{1f}{source}\u{1f}{auth}\u{1f}{}\u{1f}{input}/{output}/{reasoning}/{}/{total}",
        caps[0],
        caps[1],
        failed as u8,
        t.cached_tokens.unwrap_or(0),
    );
    (id, Some((secs, nanos)))
}

fn contribute(caps: &[String], r: &Value, emit: &mut Emit<'_>) -> Result<(), FieldError> {
    let d = read_detail(r)?;
    let ts = str_field(r, "timestamp")?;
    let (day, hour) = day_and_hour(ts).ok_or_else(|| FieldError::new("timestamp", "an RFC 3339 timestamp"))?;
    let one = Num::Int(1);
    let tokens = Num::Int(i128::from(d.total));
    let (api, model) = (caps[0].as_str(), caps[1].as_str());
    emit(&["total_requests"], one);
    emit(&[if d.failed { "failure_count" } else { "success_count" }], one);
    emit(&["total_tokens"], tokens);
    emit(&["apis", api, "total_requests"], one);
    emit(&["apis", api, "total_tokens"], tokens);
    emit(&["apis", api, "models", model, "total_requests"], one);
    emit(&["apis", api, "models", model, "total_tokens"], tokens);
    emit(&["requests_by_day", &day], one);
    emit(&["tokens_by_day", &day], tokens);
    emit(&["requests_by_hour", &hour], one);
    emit(&["tokens_by_hour", &hour], tokens);
    Ok(())
}

/// The request detail CLIProxyAPI would write for an event (its input counts the cache
/// reads, as CLIProxyAPI counts them).
fn detail_of(e: &Event) -> Value {
    let mut detail = json!({ "timestamp": e.timestamp_text() });
    if let Some(l) = e.latency_ms {
        detail["latency_ms"] = json!(l);
    }
    detail["source"] = json!(e.source);
    detail["auth_index"] = json!(e.auth_index);
    detail["tokens"] = json!({
        "input_tokens": e.input_with_cache_reads(), "output_tokens": e.output_tokens,
        "reasoning_tokens": e.reasoning_tokens, "cached_tokens": e.cache_read_tokens, "total_tokens": e.total_tokens
    });
    detail["failed"] = json!(e.failed);
    detail
}

fn apply(doc: &mut Value, e: &Event) -> Result<(), FieldError> {
    let root = if is_envelope(doc) { doc.get_mut("usage").expect("envelope has usage") } else { doc };
    let total = e.total_tokens;
    let detail = detail_of(e);
    for k in COUNTERS {
        add_u64(root, k, 0)?;
    }
    add_u64(root, "total_requests", 1)?;
    add_u64(root, if e.failed { "failure_count" } else { "success_count" }, 1)?;
    add_u64(root, "total_tokens", total)?;
    let (day, hour) = (e.day(), e.timestamp.format("%H").to_string());
    add_u64(obj_mut(root, "requests_by_day"), &day, 1)?;
    add_u64(obj_mut(root, "tokens_by_day"), &day, total)?;
    add_u64(obj_mut(root, "requests_by_hour"), &hour, 1)?;
    add_u64(obj_mut(root, "tokens_by_hour"), &hour, total)?;
    let api = obj_mut(obj_mut(root, "apis"), &e.api);
    add_u64(api, "total_requests", 1)?;
    add_u64(api, "total_tokens", total)?;
    let model = obj_mut(obj_mut(api, "models"), &e.model);
    add_u64(model, "total_requests", 1)?;
    add_u64(model, "total_tokens", total)?;
    match model.as_object_mut().expect("object").entry("details").or_insert_with(|| json!([])) {
        // Details stay in time order, as the merge writes them.
        Value::Array(a) => {
            let t = (e.timestamp.timestamp(), e.timestamp.timestamp_subsec_nanos());
            let at = a.partition_point(|d| d.get("timestamp").and_then(parse_instant).is_some_and(|x| x <= t));
            a.insert(at, detail);
        }
        _ => return Err(FieldError::new(format!("apis.{}.models.{}.details", e.api, e.model), "an array")),
    }
    Ok(())
}

/// CLIProxyAPI increments every aggregate together, so these sums always hold.
fn invariants(doc: &Value, report: &mut super::Report<'_>) {
    let root = if is_envelope(doc) { &doc["usage"] } else { doc };
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let total = n(root, "total_requests");
    if n(root, "success_count") + n(root, "failure_count") != total {
        report("total_requests".into(), "success_count + failure_count differs from total_requests".into());
    }
    let apis = root.get("apis").and_then(Value::as_object);
    let api_sum: u64 = apis.map_or(0, |m| m.values().map(|a| n(a, "total_requests")).sum());
    if apis.is_some() && api_sum != total {
        report("apis".into(), format!("the apis' total_requests add up to {api_sum}, total_requests is {total}"));
    }
    for (name, api) in apis.into_iter().flatten() {
        let models = api.get("models").and_then(Value::as_object);
        let sum: u64 = models.map_or(0, |m| m.values().map(|m| n(m, "total_requests")).sum());
        if sum != n(api, "total_requests") {
            report(format!("apis.{name}.total_requests"), format!("its models add up to {sum}"));
        }
    }
    for s in SERIES.iter().filter(|s| s.starts_with("requests")) {
        if let Some(m) = root.get(*s).and_then(Value::as_object) {
            let sum: u64 = m.values().filter_map(Value::as_u64).sum();
            if sum != total {
                report((*s).into(), format!("buckets add up to {sum}, total_requests is {total}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_of_a_value_is_identity_of_its_text_or_leaves_it_to_identity() {
        let caps = ["k".to_string(), "m".to_string()];
        let same = [
            r#"{"timestamp": "2026-01-02T03:04:05.5+02:00", "source": "s", "auth_index": "7",
                "tokens": {"input_tokens": 1, "output_tokens": 2, "reasoning_tokens": 3, "cached_tokens": 4}, "failed": true}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "auth_index": 9, "tokens": {"total_tokens": 99, "input_tokens": null}}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "source": null, "auth_index": null, "tokens": null, "failed": null, "x": [1]}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "tokens": {"input_tokens": 18446744073709551615, "output_tokens": 1}}"#,
        ];
        for text in same {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(identity_of_value(&caps, &v), Some(identity(&caps, &v.to_string()).unwrap()), "{text}");
        }
        let left = [
            r#"{"timestamp": 5}"#,
            r#"{"source": "s"}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "auth_index": 1.5}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "auth_index": true}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "tokens": {"input_tokens": -1}}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "tokens": [1]}"#,
            r#"{"timestamp": "2026-01-02T03:04:05Z", "failed": "no"}"#,
        ];
        for text in left {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(identity_of_value(&caps, &v), None, "{text}");
            assert!(identity(&caps, &v.to_string()).is_err(), "{text}");
        }
    }
}
