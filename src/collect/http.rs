//! The proxy's management API (`ureq`): `GET /v0/management/usage-queue?count=N` with
//! `Authorization: Bearer <key>`, a destructive pop answering a JSON array of records.
//!
//! As CLIProxyAPI serves it (internal/api/handlers/management/usage.go): the key is checked
//! before anything is popped (401 wrong or missing key, 403 remote management disabled or
//! the IP banned after five failures, 404 when the management API is off); each element is
//! the record itself, or a JSON string when the record was not valid JSON. No released
//! version offers a claim/ack lease on this queue, so a pop is final the moment the proxy
//! answers: the reply is read to its end whatever happens meanwhile, since a reply abandoned
//! half-read loses what it carried.

use super::{Key, QueueError};
use serde_json::value::RawValue;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Http {
    agent: ureq::Agent,
    base: String,
    key: Key,
}

/// The proxy's `{"error": "..."}` body.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
}

impl Http {
    /// `base` is the URL up to the management API (`http://127.0.0.1:8317`), no trailing `/`.
    pub fn new(base: &str, key: Key) -> Http {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            // No timeout on the reply: a socket read with a timeout is not restarted after a
            // signal, so SIGTERM would abandon a reply, and the records the proxy popped for
            // it. The proxy answers a pop at once.
            .http_status_as_error(false)
            // The key is a bearer token: never carried to wherever a redirect points.
            .max_redirects(0)
            .build();
        Http { agent: ureq::Agent::new_with_config(config), base: base.to_string(), key }
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), QueueError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", format!("Bearer {}", self.key.expose()))
            .call()
            .map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(u64::MAX).read_to_vec().map_err(|e| match e {
            ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::Protocol(_) => {
                QueueError::Lost(format!("{url}: the reply broke off: {e}"))
            }
            e => QueueError::Protocol(format!("{url}: {e}")),
        })?;
        match status {
            200..=299 => Ok((status, body)),
            401 | 403 => Err(QueueError::Auth(format!("HTTP {status}: {}", error_text(&body)))),
            404 => Err(QueueError::Auth(format!(
                "HTTP 404 for {path}: the proxy's management API is off (set remote-management.secret-key), \
                 or this is not CLIProxyAPI v6.10 or later"
            ))),
            500..=599 => Err(QueueError::Unreachable(format!("HTTP {status}: {}", error_text(&body)))),
            _ => Err(QueueError::Protocol(format!("HTTP {status} for {path}: {}", error_text(&body)))),
        }
    }

    /// Whether the proxy has `usage-statistics-enabled`. Also proves the key without popping
    /// anything. `None` when the proxy does not say.
    pub fn statistics_enabled(&self) -> Result<Option<bool>, QueueError> {
        match self.get("/v0/management/usage-statistics-enabled") {
            Ok((_, body)) => Ok(serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("usage-statistics-enabled").and_then(serde_json::Value::as_bool))),
            // An older or slimmer proxy without this endpoint: the pop will tell.
            Err(QueueError::Auth(m)) if m.starts_with("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Pops up to `count` of the oldest queued records (destructive).
    pub fn pop(&self, count: usize) -> Result<Vec<Vec<u8>>, QueueError> {
        let (_, body) = self.get(&format!("/v0/management/usage-queue?count={count}"))?;
        let items: Vec<&RawValue> = serde_json::from_slice(&body).map_err(|e| {
            QueueError::Protocol(format!(
                "the usage queue answered something other than a JSON array ({} bytes; {})",
                body.len(),
                match e.classify() {
                    serde_json::error::Category::Data => "not an array",
                    serde_json::error::Category::Eof => "truncated",
                    _ => "invalid JSON",
                }
            ))
        })?;
        Ok(items
            .into_iter()
            .map(|raw| match serde_json::from_str::<String>(raw.get()) {
                // A record the proxy could not pass as JSON comes as a string: hand its
                // text on, so that it is reported as the invalid record it is.
                Ok(text) => text.into_bytes(),
                Err(_) => raw.get().as_bytes().to_vec(),
            })
            .collect())
    }
}

fn transport(e: &ureq::Error) -> QueueError {
    match e {
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => QueueError::Config(e.to_string()),
        ureq::Error::Tls(_) => QueueError::Config(format!("TLS: {e}")),
        _ => QueueError::Unreachable(e.to_string()),
    }
}

/// The proxy's error text, else the start of the body (a management error never carries a
/// secret; still, only the `error` field or a short prefix is shown).
fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "(no body)".into()
            } else {
                text.chars().take(120).collect()
            }
        }
    }
}
