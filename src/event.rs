//! A usage event: one request as a proxy or agent reports it (SPEC §5). Events are what
//! `record` applies and what the property tests split across machines.

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat};
use serde::Deserialize;
use serde_json::Value;

/// Token counts as CLIProxyAPI nests them. There `input_tokens` includes the tokens read
/// from the cache (`cached_tokens`, `cache_read_tokens`), as OpenAI counts them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Tokens {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_creation_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

/// The wire form of an event (snake_case, aliases accepted, unknown fields ignored).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct Wire {
    id: Option<String>,
    timestamp: Option<String>,
    api: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    source: Option<String>,
    auth_index: Option<Value>,
    status: Option<u16>,
    failed: Option<bool>,
    #[serde(alias = "tokens_in")]
    input_tokens: Option<u64>,
    #[serde(alias = "tokens_out")]
    output_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    #[serde(alias = "tokens_cached", alias = "cached_tokens")]
    cache_read_tokens: Option<u64>,
    cache_creation_tokens: Option<u64>,
    total_tokens: Option<u64>,
    tokens: Option<Tokens>,
    cost_usd: Option<f64>,
    cost_estimated: Option<bool>,
    #[serde(alias = "duration_ms")]
    latency_ms: Option<u64>,
    ttft_ms: Option<u64>,
    alias: Option<String>,
    endpoint: Option<String>,
    api_key: Option<String>,
    method: Option<String>,
    path: Option<String>,
    device: Option<String>,
}

/// A validated event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub timestamp: DateTime<FixedOffset>,
    pub api: String,
    pub provider: String,
    pub model: String,
    pub source: String,
    pub auth_index: String,
    pub status: Option<u16>,
    pub failed: bool,
    /// Input tokens not read from or written to the cache.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Part of `output_tokens` where the source says so (OpenAI); kept apart for reports.
    pub reasoning_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub total_tokens: u64,
    /// The cost the source gave; `None`: estimated from the price table when recorded.
    pub cost_usd: Option<f64>,
    /// Whether `cost_usd` is an estimate from the price table (set when recorded).
    pub cost_estimated: bool,
    pub latency_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    /// The model name the client asked for, when the proxy mapped it to `model`.
    pub alias: String,
    pub endpoint: String,
    /// A fingerprint (`sha256:` and 12 hex digits) of the API key, never the key.
    pub key_fingerprint: String,
    pub method: String,
    pub path: String,
    pub device: String,
}

/// The largest token count an event may carry (2^53: exact as a JSON number everywhere).
pub const MAX_COUNT: u64 = 1 << 53;

/// Why an event was rejected.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-11-22T10:00:00Z")]
    Timestamp(String),
    #[error("token counts overflow a 64-bit integer")]
    Overflow,
    #[error("{0} is above 2^53 (9007199254740992): not a token count")]
    TooLarge(&'static str),
    #[error("cost_usd must be a finite number from 0 to 1e9")]
    Cost,
    #[error("timestamp {0:?} is outside the years 0001 to 9999")]
    Year(String),
}

/// Whether an event id is remembered for good rather than for `tally.idHorizon`: the ids
/// of imported transcripts (`claude-code:…`, `codex:…`). A transcript can be read again at
/// any time (a session resumed months later copies its history into a new file), and
/// counting it once must not depend on when.
pub fn remembered_for_good(id: &str) -> bool {
    id.starts_with("claude-code:") || id.starts_with("codex:")
}

/// The largest cost one event may carry, in dollars: sums of many stay exact and finite.
pub const MAX_COST: f64 = 1e9;

/// Checks token counts by name: none above 2^53 (not real, and sums of them could overflow
/// the ledger).
pub fn check_counts(counts: &[(&'static str, u64)]) -> Result<(), EventError> {
    match counts.iter().find(|(_, n)| *n > MAX_COUNT) {
        Some((name, _)) => Err(EventError::TooLarge(name)),
        None => Ok(()),
    }
}

/// Checks that a time falls within the years 0001–9999, in its own offset and in UTC: the
/// ledger files usage by UTC day, `YYYY-MM-DD`.
pub fn check_time(t: &DateTime<FixedOffset>) -> Result<(), EventError> {
    let ok = |y: i32| (1..=9999).contains(&y);
    match ok(t.year()) && ok(t.to_utc().year()) {
        true => Ok(()),
        false => Err(EventError::Year(t.to_rfc3339())),
    }
}

/// Checks a cost: finite, from 0 to [`MAX_COST`].
fn check_cost(c: Option<f64>) -> Result<(), EventError> {
    match c {
        Some(c) if !(0.0..=MAX_COST).contains(&c) => Err(EventError::Cost),
        _ => Ok(()),
    }
}

impl Event {
    /// Parses one event; `now` and `device` fill what the event leaves out. Top-level token
    /// fields are kept apart (input without the cache); a nested `tokens` object is read as
    /// CLIProxyAPI writes it, where `input_tokens` includes the cache reads.
    pub fn parse(text: &str, now: DateTime<FixedOffset>, device: &str) -> Result<Event, EventError> {
        let w: Wire = serde_json::from_str(text)?;
        let t = w.tokens.unwrap_or_default();
        let cache_read = w.cache_read_tokens.or(t.cache_read_tokens).or(t.cached_tokens).unwrap_or(0);
        let cache_creation = w.cache_creation_tokens.or(t.cache_creation_tokens).unwrap_or(0);
        let input = match w.input_tokens {
            Some(n) => n,
            None => t.input_tokens.unwrap_or(0).saturating_sub(t.cache_read_tokens.or(t.cached_tokens).unwrap_or(0)),
        };
        let output = w.output_tokens.or(t.output_tokens).unwrap_or(0);
        let reasoning = w.reasoning_tokens.or(t.reasoning_tokens).unwrap_or(0);
        let total = match w.total_tokens.or(t.total_tokens) {
            Some(n) => n,
            None => [input, output, reasoning, cache_creation, cache_read]
                .iter()
                .try_fold(0u64, |a, &b| a.checked_add(b))
                .ok_or(EventError::Overflow)?,
        };
        let timestamp = match w.timestamp {
            Some(s) => DateTime::parse_from_rfc3339(&s).map_err(|_| EventError::Timestamp(s))?,
            None => now,
        };
        let failed = w.failed.unwrap_or(matches!(w.status, Some(s) if s >= 400));
        let provider = w.provider.unwrap_or_default();
        let auth_index = match w.auth_index {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let key_fingerprint = match w.api_key.as_deref() {
            None | Some("") => String::new(),
            Some(k) if is_fingerprint(k) => k.to_string(),
            Some(k) => fingerprint(k),
        };
        let e = Event {
            id: w.id.filter(|s| !s.is_empty()),
            timestamp,
            api: w.api.unwrap_or_else(|| if provider.is_empty() { "default".into() } else { provider.clone() }),
            provider: if provider.is_empty() { "unknown".into() } else { provider },
            model: w.model.filter(|m| !m.is_empty()).unwrap_or_else(|| "unknown".into()),
            source: w.source.unwrap_or_default(),
            auth_index,
            status: w.status,
            failed,
            input_tokens: input,
            output_tokens: output,
            reasoning_tokens: reasoning,
            cache_creation_tokens: cache_creation,
            cache_read_tokens: cache_read,
            total_tokens: total,
            cost_usd: w.cost_usd,
            cost_estimated: w.cost_estimated.unwrap_or(false) && w.cost_usd.is_some(),
            latency_ms: w.latency_ms,
            ttft_ms: w.ttft_ms,
            alias: w.alias.unwrap_or_default(),
            endpoint: w.endpoint.unwrap_or_default(),
            key_fingerprint,
            method: w.method.unwrap_or_default(),
            path: w.path.unwrap_or_default(),
            device: w.device.unwrap_or_else(|| device.to_string()),
        };
        e.check()?;
        Ok(e)
    }

    /// Checks what no event may carry, whoever built it: a count above 2^53, a time
    /// outside the years 0001–9999, a cost outside 0–1e9.
    pub fn check(&self) -> Result<(), EventError> {
        check_counts(&[
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
            ("cache_creation_tokens", self.cache_creation_tokens),
            ("cache_read_tokens", self.cache_read_tokens),
            ("total_tokens", self.total_tokens),
        ])?;
        check_time(&self.timestamp)?;
        check_cost(self.cost_usd)
    }

    /// RFC 3339 in the event's own offset, as CLIProxyAPI writes it.
    pub fn timestamp_text(&self) -> String {
        self.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// The event with every field explicit, as the journal stores it (one JSON line): top-level
    /// token fields, which `parse` reads back unchanged.
    pub fn to_line(&self) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            id: &'a Option<String>,
            timestamp: String,
            api: &'a str,
            provider: &'a str,
            model: &'a str,
            source: &'a str,
            auth_index: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<u16>,
            failed: bool,
            input_tokens: u64,
            output_tokens: u64,
            reasoning_tokens: u64,
            cache_creation_tokens: u64,
            cache_read_tokens: u64,
            total_tokens: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            cost_usd: Option<f64>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            cost_estimated: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            latency_ms: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttft_ms: Option<u64>,
            #[serde(skip_serializing_if = "str::is_empty")]
            alias: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            endpoint: &'a str,
            #[serde(skip_serializing_if = "str::is_empty", rename = "api_key")]
            key_fingerprint: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            method: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            path: &'a str,
            device: &'a str,
        }
        serde_json::to_string(&Line {
            id: &self.id,
            timestamp: self.timestamp_text(),
            api: &self.api,
            provider: &self.provider,
            model: &self.model,
            source: &self.source,
            auth_index: &self.auth_index,
            status: self.status,
            failed: self.failed,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cache_creation_tokens: self.cache_creation_tokens,
            cache_read_tokens: self.cache_read_tokens,
            total_tokens: self.total_tokens,
            cost_usd: self.cost_usd,
            cost_estimated: self.cost_estimated,
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            alias: &self.alias,
            endpoint: &self.endpoint,
            key_fingerprint: &self.key_fingerprint,
            method: &self.method,
            path: &self.path,
            device: &self.device,
        })
        .expect("an event serialises")
    }

    /// Input tokens as OpenAI and CLIProxyAPI count them: with the cache reads.
    pub fn input_with_cache_reads(&self) -> u64 {
        self.input_tokens.saturating_add(self.cache_read_tokens)
    }

    /// The id of a journal line, without parsing the rest of it into a tree.
    pub fn id_of_line(line: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Id {
            id: Option<String>,
        }
        serde_json::from_str::<Id>(line).ok().and_then(|l| l.id)
    }

    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp.timestamp_millis()
    }

    pub fn day(&self) -> String {
        self.timestamp.format("%Y-%m-%d").to_string()
    }
}

/// A short, stable fingerprint of an API key: enough to tell keys apart in reports, useless
/// to anyone holding it. The key itself is never kept.
pub fn fingerprint(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap()
    }

    #[test]
    fn aliases_and_defaults() {
        let e =
            Event::parse(r#"{"tokens_in":10,"tokens_out":5,"status":500,"duration_ms":7}"#, now(), "laptop").unwrap();
        assert_eq!((e.input_tokens, e.output_tokens, e.total_tokens), (10, 5, 15));
        assert!(e.failed);
        assert_eq!(e.latency_ms, Some(7));
        assert_eq!(e.device, "laptop");
        assert_eq!(e.timestamp, now());
    }

    #[test]
    fn journal_form_round_trips() {
        let e =
            Event::parse(r#"{"id":"x","tokens_in":3,"status":429,"model":"m","cost_usd":0.5}"#, now(), "d").unwrap();
        let back = Event::parse(&e.to_line(), now(), "other").unwrap();
        assert_eq!(back, e);
        assert_eq!(Event::id_of_line(&e.to_line()).as_deref(), Some("x"));
    }

    #[test]
    fn an_api_key_is_kept_only_as_a_fingerprint() {
        let e = Event::parse(r#"{"api_key":"sk-live-SECRET-1"}"#, now(), "d").unwrap();
        assert!(is_fingerprint(&e.key_fingerprint), "{}", e.key_fingerprint);
        assert!(!e.to_line().contains("SECRET"));
        let back = Event::parse(&e.to_line(), now(), "d").unwrap();
        assert_eq!(back.key_fingerprint, e.key_fingerprint);
    }

    #[test]
    fn nested_tokens_and_bad_timestamp() {
        let e = Event::parse(r#"{"tokens":{"input_tokens":1,"total_tokens":9}}"#, now(), "d").unwrap();
        assert_eq!((e.input_tokens, e.total_tokens), (1, 9));
        // CLIProxyAPI counts cache reads in its input; the event keeps them apart.
        let e = Event::parse(r#"{"tokens":{"input_tokens":100,"cached_tokens":30,"output_tokens":5}}"#, now(), "d")
            .unwrap();
        assert_eq!((e.input_tokens, e.cache_read_tokens, e.input_with_cache_reads()), (70, 30, 100));
        assert!(Event::parse(r#"{"timestamp":"yesterday"}"#, now(), "d").is_err());
    }
}
