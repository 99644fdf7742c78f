//! A usage event: one request as a proxy or agent reports it (SPEC §5). Events are what
//! `record` applies and what the property tests split across machines.

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::Deserialize;
use serde_json::Value;

/// Token counts as CLIProxyAPI nests them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Tokens {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
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
    #[serde(alias = "tokens_cached")]
    cached_tokens: Option<u64>,
    total_tokens: Option<u64>,
    tokens: Option<Tokens>,
    cost_usd: Option<f64>,
    #[serde(alias = "duration_ms")]
    latency_ms: Option<u64>,
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
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms: Option<u64>,
    pub method: String,
    pub path: String,
    pub device: String,
}

/// Why an event was rejected.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-11-22T10:00:00Z")]
    Timestamp(String),
    #[error("token counts overflow a 64-bit integer")]
    Overflow,
    #[error("cost_usd must be a finite, non-negative number")]
    Cost,
}

impl Event {
    /// Parses one event; `now` and `device` fill what the event leaves out.
    pub fn parse(text: &str, now: DateTime<FixedOffset>, device: &str) -> Result<Event, EventError> {
        let w: Wire = serde_json::from_str(text)?;
        let t = w.tokens.unwrap_or_default();
        let input = w.input_tokens.or(t.input_tokens).unwrap_or(0);
        let output = w.output_tokens.or(t.output_tokens).unwrap_or(0);
        let reasoning = w.reasoning_tokens.or(t.reasoning_tokens).unwrap_or(0);
        let cached = w.cached_tokens.or(t.cached_tokens).unwrap_or(0);
        let total = match w.total_tokens.or(t.total_tokens) {
            Some(n) => n,
            None => input.checked_add(output).and_then(|s| s.checked_add(reasoning)).ok_or(EventError::Overflow)?,
        };
        let timestamp = match w.timestamp {
            Some(s) => DateTime::parse_from_rfc3339(&s).map_err(|_| EventError::Timestamp(s))?,
            None => now,
        };
        let cost = w.cost_usd.unwrap_or(0.0);
        if !cost.is_finite() || cost < 0.0 {
            return Err(EventError::Cost);
        }
        let failed = w.failed.unwrap_or(matches!(w.status, Some(s) if s >= 400));
        let provider = w.provider.unwrap_or_default();
        let auth_index = match w.auth_index {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        Ok(Event {
            id: w.id.filter(|s| !s.is_empty()),
            timestamp,
            api: w.api.unwrap_or_else(|| if provider.is_empty() { "default".into() } else { provider.clone() }),
            provider: if provider.is_empty() { "unknown".into() } else { provider },
            model: w.model.unwrap_or_else(|| "unknown".into()),
            source: w.source.unwrap_or_default(),
            auth_index,
            status: w.status,
            failed,
            input_tokens: input,
            output_tokens: output,
            reasoning_tokens: reasoning,
            cached_tokens: cached,
            total_tokens: total,
            cost_usd: cost,
            latency_ms: w.latency_ms,
            method: w.method.unwrap_or_default(),
            path: w.path.unwrap_or_default(),
            device: w.device.unwrap_or_else(|| device.to_string()),
        })
    }

    /// RFC 3339 in the event's own offset, as CLIProxyAPI writes it.
    pub fn timestamp_text(&self) -> String {
        self.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// The event with every field explicit, as the journal stores it (one JSON line).
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
            status: Option<u16>,
            failed: bool,
            input_tokens: u64,
            output_tokens: u64,
            reasoning_tokens: u64,
            cached_tokens: u64,
            total_tokens: u64,
            cost_usd: f64,
            latency_ms: Option<u64>,
            method: &'a str,
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
            cached_tokens: self.cached_tokens,
            total_tokens: self.total_tokens,
            cost_usd: self.cost_usd,
            latency_ms: self.latency_ms,
            method: &self.method,
            path: &self.path,
            device: &self.device,
        })
        .expect("an event serialises")
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
    fn nested_tokens_and_bad_timestamp() {
        let e = Event::parse(r#"{"tokens":{"input_tokens":1,"total_tokens":9}}"#, now(), "d").unwrap();
        assert_eq!((e.input_tokens, e.total_tokens), (1, 9));
        assert!(Event::parse(r#"{"timestamp":"yesterday"}"#, now(), "d").is_err());
    }
}
