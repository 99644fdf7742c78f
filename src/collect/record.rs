//! One queue record (CLIProxyAPI v6.10+, `internal/redisqueue/plugin.go`) made into an
//! [`Event`] of this device, with everything secret left behind.
//!
//! Only the fields named in [`Record`] are read at all, so a field the proxy adds tomorrow
//! (a new header, a new credential) never reaches the ledger by accident. `api_key` is kept
//! only as its fingerprint; `fail.body`, `client_ip`, `x_forwarded_for`, `user_agent` and
//! `response_headers` are read only when `--keep` names them, and then travel beside the
//! event ([`Collected::kept`]), never inside it.

use crate::event::{fingerprint, Event};
use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A field that is dropped unless `--keep` names it (each may carry a secret or personal
/// data: a failure body can quote a key, the others identify the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum KeepField {
    /// `fail.body`: the upstream's error text (may quote a key).
    #[value(alias = "fail.body", alias = "fail_body")]
    FailBody,
    /// `client_ip`.
    #[value(alias = "client_ip")]
    ClientIp,
    /// `x_forwarded_for`.
    #[value(alias = "x_forwarded_for")]
    XForwardedFor,
    /// `user_agent`.
    #[value(alias = "user_agent")]
    UserAgent,
    /// `response_headers`: the upstream's response headers.
    #[value(alias = "response_headers")]
    ResponseHeaders,
}

impl KeepField {
    /// The record's own name for the field.
    pub fn name(self) -> &'static str {
        match self {
            KeepField::FailBody => "fail_body",
            KeepField::ClientIp => "client_ip",
            KeepField::XForwardedFor => "x_forwarded_for",
            KeepField::UserAgent => "user_agent",
            KeepField::ResponseHeaders => "response_headers",
        }
    }
}

/// An event and the fields `--keep` asked for (empty unless asked).
#[derive(Clone, Debug, PartialEq)]
pub struct Collected {
    pub event: Event,
    pub kept: Map<String, Value>,
}

/// What one payload from the queue turned out to be.
#[derive(Debug)]
pub enum Payload {
    Usage(Box<Collected>),
    /// `{"support_refresh":true}`, `{"refresh":true}`: the proxy talking to its
    /// subscribers, not a request.
    Control,
}

/// Why a payload is not a usage record. The message never quotes the payload: it may hold
/// an API key.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a JSON object ({0})")]
    Json(String),
    #[error("no usage fields (timestamp, tokens, model): not a CLIProxyAPI usage record")]
    NotUsage,
    #[error("timestamp {0:?} is not RFC 3339")]
    Timestamp(String),
    #[error("token count {field} = {value} is negative")]
    Negative { field: &'static str, value: i64 },
    #[error("token counts overflow a 64-bit integer")]
    Overflow,
    #[error("{0}")]
    Event(#[from] crate::event::EventError),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Tokens {
    input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cached_tokens: i64,
    cache_read_tokens: i64,
    cache_creation_tokens: i64,
    total_tokens: i64,
}

/// The proxy's canonical accounting (token accounting v2): mutually exclusive buckets.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Breakdown {
    schema_version: i64,
    total_tokens: i64,
    input: BreakdownInput,
    output: BreakdownOutput,
    unclassified_tokens: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BreakdownInput {
    total_tokens: i64,
    uncached_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BreakdownOutput {
    total_tokens: i64,
    non_reasoning_tokens: i64,
    reasoning_tokens: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Fail {
    status_code: i64,
}

/// The fields of a queue record git-tally reads; everything else is never parsed.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Record<'a> {
    #[serde(borrow)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    latency_ms: Option<i64>,
    ttft_ms: Option<i64>,
    source: String,
    auth_type: String,
    auth_index: Value,
    tokens: Option<Tokens>,
    token_breakdown: Option<Breakdown>,
    failed: bool,
    fail: Option<Fail>,
    provider: String,
    model: String,
    alias: String,
    endpoint: String,
    api_key: String,
    request_id: String,
    support_refresh: Option<bool>,
    refresh: Option<bool>,
}

/// Token counts as the event keeps them: input without cache reads and cache writes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    input: u64,
    output: u64,
    reasoning: u64,
    cache_read: u64,
    cache_creation: u64,
    total: u64,
}

fn non_negative(field: &'static str, value: i64) -> Result<u64, RecordError> {
    u64::try_from(value).map_err(|_| RecordError::Negative { field, value })
}

impl Breakdown {
    /// The breakdown's counts when it holds the v2 invariants (what the proxy checks in
    /// `TokenBreakdown.Valid`); `None` when absent, empty or inconsistent.
    fn counts(&self) -> Option<Counts> {
        let i = &self.input;
        let o = &self.output;
        let all = [
            self.total_tokens,
            self.unclassified_tokens,
            i.total_tokens,
            i.uncached_tokens,
            i.cache_read_tokens,
            i.cache_write_tokens,
            o.total_tokens,
            o.non_reasoning_tokens,
            o.reasoning_tokens,
        ];
        if self.schema_version != 2 || all.iter().any(|&n| n < 0) {
            return None;
        }
        let sum = |v: &[i64]| v.iter().try_fold(0i64, |a, &b| a.checked_add(b));
        let consistent = sum(&[i.uncached_tokens, i.cache_read_tokens, i.cache_write_tokens]) == Some(i.total_tokens)
            && sum(&[o.non_reasoning_tokens, o.reasoning_tokens]) == Some(o.total_tokens)
            && sum(&[i.total_tokens, o.total_tokens, self.unclassified_tokens]) == Some(self.total_tokens);
        consistent.then_some(Counts {
            input: i.uncached_tokens as u64,
            output: o.total_tokens as u64,
            reasoning: o.reasoning_tokens as u64,
            cache_read: i.cache_read_tokens as u64,
            cache_creation: i.cache_write_tokens as u64,
            total: self.total_tokens as u64,
        })
    }
}

impl Tokens {
    /// The flat `tokens` object, read as CLIProxyAPI documents it: `input_tokens` includes
    /// the cache reads (`cache_read_tokens`, else `cached_tokens`) and cache writes, OpenAI
    /// style. When the cache counts exceed the input, the input cannot include them and is
    /// taken as the uncached part.
    fn counts(&self) -> Result<Counts, RecordError> {
        let input = non_negative("tokens.input_tokens", self.input_tokens)?;
        let output = non_negative("tokens.output_tokens", self.output_tokens)?;
        let reasoning = non_negative("tokens.reasoning_tokens", self.reasoning_tokens)?;
        let read = match self.cache_read_tokens {
            0 => non_negative("tokens.cached_tokens", self.cached_tokens)?,
            n => non_negative("tokens.cache_read_tokens", n)?,
        };
        let creation = non_negative("tokens.cache_creation_tokens", self.cache_creation_tokens)?;
        let cache = read.checked_add(creation).ok_or(RecordError::Overflow)?;
        let uncached = input.checked_sub(cache).unwrap_or(input);
        let total = match non_negative("tokens.total_tokens", self.total_tokens)? {
            0 => [input.max(cache), output, reasoning]
                .iter()
                .try_fold(0u64, |a, &b| a.checked_add(b))
                .ok_or(RecordError::Overflow)?,
            n => n,
        };
        Ok(Counts { input: uncached, output, reasoning, cache_read: read, cache_creation: creation, total })
    }
}

/// The record's `source` as the ledger may keep it: an account name (an OAuth login's
/// e-mail) as it is; a credential — what the proxy gives as the source of an API-key or
/// token login, or anything shaped like a key or token — only as its fingerprint.
fn source_of(source: String, auth_type: &str) -> String {
    let t = source.trim();
    // `Bearer <token>`: the token is the credential.
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim_start(),
        _ => t,
    };
    let login: String =
        auth_type.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    let credential_login = matches!(login.as_str(), "apikey" | "key" | "bearer" | "token" | "accesstoken");
    let key_prefix =
        ["sk-", "sk_", "AIza", "xai-", "gsk_", "pk-", "rk-", "ya29.", "eyJ"].iter().any(|p| t.starts_with(p));
    // Long and unbroken, like a token or base64: no '@', '.', spaces as names and hosts have.
    let token_shaped =
        t.len() >= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'+' | b'='));
    if t.is_empty() || t.starts_with("sha256:") || !(credential_login || key_prefix || token_shaped) {
        return source;
    }
    fingerprint(t)
}

/// A stable id for a record without `request_id`: the same bytes replayed give the same id.
fn content_id(payload: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(payload);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("cpa-{hex}")
}

/// Reads one queue payload. `keep` names the dropped fields to carry beside the event.
pub fn parse(payload: &[u8], device: &str, keep: &[KeepField]) -> Result<Payload, RecordError> {
    let r: Record<'_> = serde_json::from_slice(payload).map_err(|e| RecordError::Json(json_error(&e)))?;
    if r.timestamp.is_none() && r.tokens.is_none() && r.model.is_empty() {
        if r.support_refresh.is_some() || r.refresh.is_some() {
            return Ok(Payload::Control);
        }
        return Err(RecordError::NotUsage);
    }
    let timestamp: DateTime<FixedOffset> = match &r.timestamp {
        Some(t) => DateTime::parse_from_rfc3339(t).map_err(|_| RecordError::Timestamp(t.to_string()))?,
        None => return Err(RecordError::Timestamp(String::new())),
    };
    let counts = match r.token_breakdown.as_ref().and_then(Breakdown::counts) {
        Some(c) => c,
        None => r.tokens.unwrap_or_default().counts()?,
    };
    let key_fingerprint = match r.api_key.trim() {
        "" => String::new(),
        k => fingerprint(k),
    };
    let provider = if r.provider.trim().is_empty() { "unknown".to_string() } else { r.provider };
    let model = if r.model.trim().is_empty() { "unknown".to_string() } else { r.model };
    let status = r.fail.as_ref().and_then(|f| u16::try_from(f.status_code).ok()).filter(|s| (100..600).contains(s));
    let auth_index = match r.auth_index {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let id = match r.request_id.trim() {
        "" => content_id(payload),
        id => id.to_string(),
    };
    let event = Event {
        id: Some(id),
        timestamp,
        // Before v6.10 CLIProxyAPI grouped usage by the client's API key; the fingerprint
        // keeps that grouping without the key.
        api: if key_fingerprint.is_empty() { provider.clone() } else { key_fingerprint.clone() },
        provider,
        alias: if r.alias == model { String::new() } else { r.alias },
        model,
        source: source_of(r.source, &r.auth_type),
        auth_index,
        status,
        failed: r.failed,
        input_tokens: counts.input,
        output_tokens: counts.output,
        reasoning_tokens: counts.reasoning,
        cache_creation_tokens: counts.cache_creation,
        cache_read_tokens: counts.cache_read,
        total_tokens: counts.total,
        cost_usd: None,
        cost_estimated: false,
        latency_ms: r.latency_ms.and_then(|n| u64::try_from(n).ok()),
        ttft_ms: r.ttft_ms.and_then(|n| u64::try_from(n).ok()).filter(|&n| n > 0),
        endpoint: r.endpoint,
        key_fingerprint,
        method: String::new(),
        path: String::new(),
        device: device.to_string(),
    };
    event.check()?;
    let kept = if keep.is_empty() { Map::new() } else { kept_fields(payload, keep) };
    Ok(Payload::Usage(Box::new(Collected { event, kept })))
}

/// The `--keep` fields of a payload, read only when asked for.
fn kept_fields(payload: &[u8], keep: &[KeepField]) -> Map<String, Value> {
    let Ok(Value::Object(mut all)) = serde_json::from_slice::<Value>(payload) else { return Map::new() };
    let mut kept = Map::new();
    for field in keep {
        let value = match field {
            KeepField::FailBody => all.get("fail").and_then(|f| f.get("body")).cloned(),
            other => all.remove(other.name()),
        };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => {
                kept.insert(field.name().to_string(), v);
            }
        }
    }
    kept
}

/// A JSON error without serde's excerpt of the input (which could quote a key).
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "invalid JSON",
        Category::Data => "a field of the wrong type",
        Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"timestamp":"2026-11-20T08:02:19.705000Z","latency_ms":65065,"ttft_ms":938,"source":"acct3@example.com","auth_index":"6","client_ip":"203.0.113.200","x_forwarded_for":"","user_agent":"claude-cli/2.1.39","tokens":{"input_tokens":29148,"output_tokens":1099,"reasoning_tokens":748,"cached_tokens":3193,"cache_read_tokens":3193,"cache_read_tokens_present":true,"cache_creation_tokens":0,"cache_creation_5m_tokens":0,"cache_creation_1h_tokens":0,"total_tokens":30995},"failed":true,"generate":false,"stream":true,"fail":{"status_code":429,"body":"rate limited for sk-live-SECRET"},"accounting_version":2,"token_breakdown":{},"provider":"gemini","executor_type":"oauth","model":"gpt-5-codex","alias":"gpt-5-codex","endpoint":"/v1/messages","auth_type":"oauth","api_key":"sk-live-SECRET-2","request_id":"0c1f3a2e-0000003","reasoning_effort":"","service_tier":""}"#;

    fn usage(payload: &str, keep: &[KeepField]) -> Collected {
        match parse(payload.as_bytes(), "laptop", keep).unwrap() {
            Payload::Usage(c) => *c,
            Payload::Control => panic!("a usage record read as a control message"),
        }
    }

    #[test]
    fn a_sample_record_becomes_an_event_without_secrets() {
        let c = usage(SAMPLE, &[]);
        let e = &c.event;
        assert_eq!(e.id.as_deref(), Some("0c1f3a2e-0000003"));
        assert_eq!((e.input_tokens, e.cache_read_tokens, e.input_with_cache_reads()), (29148 - 3193, 3193, 29148));
        assert_eq!((e.output_tokens, e.reasoning_tokens, e.total_tokens), (1099, 748, 30995));
        assert!(e.failed);
        assert_eq!(e.status, Some(429));
        assert_eq!((e.latency_ms, e.ttft_ms), (Some(65065), Some(938)));
        assert_eq!((e.provider.as_str(), e.model.as_str(), e.alias.as_str()), ("gemini", "gpt-5-codex", ""));
        assert_eq!(
            (e.source.as_str(), e.auth_index.as_str(), e.endpoint.as_str()),
            ("acct3@example.com", "6", "/v1/messages")
        );
        assert_eq!(e.key_fingerprint, fingerprint("sk-live-SECRET-2"));
        assert_eq!(e.api, e.key_fingerprint);
        assert_eq!(e.device, "laptop");
        assert!(c.kept.is_empty());
        let line = e.to_line();
        for secret in ["SECRET", "203.0.113", "claude-cli", "rate limited"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
    }

    #[test]
    fn a_source_that_is_a_credential_is_kept_as_its_fingerprint() {
        let with = |source: &str, auth_type: &str| {
            let text = SAMPLE
                .replace("acct3@example.com", source)
                .replace(r#""auth_type":"oauth""#, &format!(r#""auth_type":"{auth_type}""#));
            usage(&text, &[]).event.source
        };
        // An API-key login's source is its key: kept as a fingerprint, whatever it looks like.
        assert_eq!(with("plain-upstream-key", "api_key"), fingerprint("plain-upstream-key"));
        // Shaped like a key, whatever the login.
        for key in [
            "sk-proj-abc123",
            "AIzaSyD-EXAMPLEEXAMPLEEXAMPLE",
            "0123456789abcdef0123456789abcdef01",
            "ya29.a0AfH6SMBexample",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ] {
            assert_eq!(with(key, "oauth"), fingerprint(key), "{key}");
        }
        // A bearer header's token; a token login of any spelling.
        assert_eq!(with("Bearer sk-live-abc", "oauth"), fingerprint("sk-live-abc"));
        for login in ["api key", "API-Key", "bearer", "access_token"] {
            assert_eq!(with("plain-upstream-key", login), fingerprint("plain-upstream-key"), "{login}");
        }
        // Names stay names.
        for name in ["acct3@example.com", "cli", "project-1", "team.example.com", ""] {
            assert_eq!(with(name, "oauth"), name, "{name}");
        }
    }

    #[test]
    fn keep_carries_only_what_it_names() {
        let c = usage(SAMPLE, &[KeepField::FailBody, KeepField::UserAgent, KeepField::XForwardedFor]);
        assert_eq!(c.kept.get("fail_body"), Some(&Value::from("rate limited for sk-live-SECRET")));
        assert_eq!(c.kept.get("user_agent"), Some(&Value::from("claude-cli/2.1.39")));
        // Empty values are not worth keeping.
        assert!(!c.kept.contains_key("x_forwarded_for"));
        assert!(!c.kept.contains_key("client_ip"));
        assert!(!c.event.to_line().contains("SECRET"));
    }

    #[test]
    fn control_messages_are_not_usage() {
        for m in [r#"{"support_refresh":true}"#, r#"{"refresh":true}"#] {
            assert!(matches!(parse(m.as_bytes(), "d", &[]), Ok(Payload::Control)), "{m}");
        }
        assert!(matches!(parse(b"{}", "d", &[]), Err(RecordError::NotUsage)));
        assert!(matches!(parse(b"[1]", "d", &[]), Err(RecordError::Json(_))));
    }

    #[test]
    fn errors_never_quote_the_payload() {
        let broken = r#"{"api_key":"sk-live-SECRET-9","timestamp":"2026-11-20T08:00:00Z","tokens":{"input_tokens":"#;
        let err = parse(broken.as_bytes(), "d", &[]).unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
        let wrong_type = r#"{"api_key":"sk-live-SECRET-9","timestamp":"2026-11-20T08:00:00Z","tokens":{"input_tokens":"sk-live-SECRET-9"}}"#;
        let err = parse(wrong_type.as_bytes(), "d", &[]).unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
        let negative = r#"{"timestamp":"2026-11-20T08:00:00Z","tokens":{"input_tokens":-5}}"#;
        assert!(matches!(parse(negative.as_bytes(), "d", &[]), Err(RecordError::Negative { .. })));
        let bad_time = r#"{"timestamp":"yesterday","model":"m"}"#;
        assert!(matches!(parse(bad_time.as_bytes(), "d", &[]), Err(RecordError::Timestamp(_))));
    }

    #[test]
    fn a_record_without_request_id_has_a_stable_content_id() {
        let r = r#"{"timestamp":"2026-11-20T08:00:00Z","model":"m","tokens":{"input_tokens":3}}"#;
        let a = usage(r, &[]).event.id.unwrap();
        assert_eq!(a, usage(r, &[]).event.id.unwrap());
        assert!(a.starts_with("cpa-"), "{a}");
        let other = r#"{"timestamp":"2026-11-20T08:00:00Z","model":"m","tokens":{"input_tokens":4}}"#;
        assert_ne!(a, usage(other, &[]).event.id.unwrap());
    }

    #[test]
    fn the_v2_breakdown_wins_over_the_flat_counts() {
        // Anthropic counts input without the cache; the proxy's breakdown says so exactly.
        let r = r#"{"timestamp":"2026-11-20T08:00:00Z","provider":"claude","model":"claude-sonnet-4-5",
            "tokens":{"input_tokens":100,"output_tokens":50,"reasoning_tokens":0,"cached_tokens":400,"cache_read_tokens":400,"cache_creation_tokens":30,"total_tokens":580},
            "token_breakdown":{"schema_version":2,"quality":"complete","total_tokens":580,
              "input":{"total_tokens":530,"uncached_tokens":100,"cache_read_tokens":400,"cache_write_tokens":30},
              "output":{"total_tokens":50,"non_reasoning_tokens":50,"reasoning_tokens":0},"unclassified_tokens":0}}"#;
        let e = usage(r, &[]).event;
        assert_eq!((e.input_tokens, e.cache_read_tokens, e.cache_creation_tokens), (100, 400, 30));
        assert_eq!((e.output_tokens, e.total_tokens), (50, 580));
        // An inconsistent breakdown is ignored: the flat counts apply.
        let bad = r.replace(r#""uncached_tokens":100"#, r#""uncached_tokens":99"#);
        let e = usage(&bad, &[]).event;
        assert_eq!((e.input_tokens, e.cache_read_tokens), (100, 400), "cache above input: input is uncached");
    }

    #[test]
    fn flat_counts_include_cache_writes_in_input() {
        let r = r#"{"timestamp":"2026-11-20T08:00:00Z","model":"m","tokens":{"input_tokens":100,"cache_read_tokens":30,"cache_creation_tokens":20,"output_tokens":5}}"#;
        let e = usage(r, &[]).event;
        assert_eq!((e.input_tokens, e.cache_read_tokens, e.cache_creation_tokens), (50, 30, 20));
        assert_eq!(e.total_tokens, 105);
    }
}
