//! Codex CLI sessions (`sessions/YYYY/MM/DD/rollout-*.jsonl`): one request per turn, from
//! the `token_count` events. A turn's usage is its `last_token_usage`, or the growth of the
//! session's cumulative `total_token_usage` when only totals are there; a `token_count`
//! that repeats the previous total is a replay (Codex writes one again after a rate-limit
//! update or a resumed session) and counts once; `info: null` carries no usage. The model
//! is the latest `turn_context`'s.
//!
//! Codex counts cached input inside `input_tokens` and reasoning inside `output_tokens`;
//! events keep them apart (input without the cache, output without reasoning). A request's
//! id is its session and the session's cumulative token total after it, so a session read
//! again — a file replaced, a resumed session's copied history — counts once.
//!
//! Lines are read incrementally: besides each file's position, the session, model and last
//! total it had reached are kept, so a file appended to is read from where it stopped.

use super::{line_warning, read_lines, resume, Imported, Position};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ledger::Ledger as Store;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Codex's data directory: `$CODEX_HOME`, else `~/.codex`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CODEX_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".codex")
}

/// Token counts as Codex writes them (cached input inside input, reasoning inside output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Usage {
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    reasoning_output_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    /// The growth from `before` (a total) to `self` (a later total).
    fn since(&self, before: Option<&Usage>) -> Usage {
        let b = before.copied().unwrap_or_default();
        Usage {
            input_tokens: self.input_tokens.saturating_sub(b.input_tokens),
            cached_input_tokens: self.cached_input_tokens.saturating_sub(b.cached_input_tokens),
            output_tokens: self.output_tokens.saturating_sub(b.output_tokens),
            reasoning_output_tokens: self.reasoning_output_tokens.saturating_sub(b.reasoning_output_tokens),
            total_tokens: self.total_tokens.saturating_sub(b.total_tokens),
        }
    }

    /// The session total that identifies a turn: Codex's `total_tokens`, or input + output
    /// where it is missing.
    fn mark(&self) -> u64 {
        if self.total_tokens > 0 {
            self.total_tokens
        } else {
            self.input_tokens.saturating_add(self.output_tokens)
        }
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<Payload<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model_provider: Option<Cow<'a, str>>,
    #[serde(default)]
    info: Option<Info>,
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    total_token_usage: Option<Usage>,
    #[serde(default)]
    last_token_usage: Option<Usage>,
}

/// Where a session file was read up to, and what reading it had learnt by then.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FileState {
    at: Position,
    session: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    /// The last cumulative total seen.
    total: Option<Usage>,
    /// Turns counted (ids of turns in sessions without totals).
    turns: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Offsets {
    files: BTreeMap<String, FileState>,
}

/// One request found: its id, timestamp, model, provider and usage.
struct Turn {
    id: String,
    timestamp: String,
    model: String,
    provider: String,
    usage: Usage,
}

/// Reads one session file from `state`, appending the turns it finds.
fn read_file(path: &Path, state: &mut FileState, turns: &mut Vec<Turn>, warnings: &mut Vec<String>) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if resume(Some(state.at), &meta).is_none() || state.at.ino == 0 {
        // New, replaced or truncated: from the start, learning the session again.
        *state = FileState { at: Position { ino: meta.ino(), ..Position::default() }, ..FileState::default() };
    }
    let fallback_session = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut buf = Vec::new();
    let (at, bytes) = read_lines(path, file, state.at, &mut buf, |n, line| {
        let Ok(text) = std::str::from_utf8(line) else {
            warnings.push(line_warning(path, n, "not UTF-8"));
            return;
        };
        if !(text.contains("token_count") || text.contains("turn_context") || text.contains("session_meta")) {
            return;
        }
        let parsed: Line<'_> = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                // Another kind of line that mentions these words is none of our business;
                // a line that is not JSON, or one of ours of an unexpected shape, is.
                let ours = match serde_json::from_str::<serde_json::Value>(text) {
                    Err(_) => true,
                    Ok(v) => {
                        matches!(v["type"].as_str(), Some("session_meta" | "turn_context"))
                            || (v["type"] == "event_msg" && v["payload"]["type"] == "token_count")
                    }
                };
                if ours {
                    warnings.push(line_warning(path, n, format_args!("not a Codex session line ({e})")));
                }
                return;
            }
        };
        let Some(payload) = parsed.payload else { return };
        match (parsed.kind.as_deref(), payload.kind.as_deref()) {
            (Some("session_meta"), _) => {
                if let Some(id) = payload.id.filter(|s| !s.is_empty()) {
                    state.session = Some(id.into_owned());
                }
                if let Some(p) = payload.model_provider.filter(|s| !s.is_empty()) {
                    state.provider = Some(p.into_owned());
                }
            }
            (Some("turn_context"), _) => {
                if let Some(m) = payload.model.filter(|s| !s.is_empty()) {
                    state.model = Some(m.into_owned());
                }
            }
            (Some("event_msg"), Some("token_count")) => {
                let Some(info) = payload.info else { return }; // `info: null`: no usage
                if let Some(total) = info.total_token_usage {
                    if state.total == Some(total) {
                        return; // a replay of the previous total
                    }
                }
                let usage = match (info.last_token_usage, info.total_token_usage) {
                    (Some(last), _) => last,
                    (None, Some(total)) => total.since(state.total.as_ref()),
                    (None, None) => return,
                };
                if let Some(total) = info.total_token_usage {
                    state.total = Some(total);
                }
                if usage.is_zero() {
                    return;
                }
                // What an event cannot carry is said here, with its line (a count above
                // 2^53, a time outside the years 0001–9999).
                let checked = crate::event::check_counts(&[
                    ("payload.info.last_token_usage.input_tokens", usage.input_tokens),
                    ("payload.info.last_token_usage.output_tokens", usage.output_tokens),
                    ("payload.info.last_token_usage.cached_input_tokens", usage.cached_input_tokens),
                    ("payload.info.last_token_usage.reasoning_output_tokens", usage.reasoning_output_tokens),
                ])
                .and_then(|()| {
                    match parsed.timestamp.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
                        Some(Ok(t)) => crate::event::check_time(&t),
                        _ => Ok(()),
                    }
                });
                if let Err(e) = checked {
                    warnings.push(line_warning(path, n, e));
                    return;
                }
                state.turns += 1;
                let session = state.session.clone().unwrap_or_else(|| fallback_session.clone());
                let id = match info.total_token_usage {
                    Some(total) => format!("codex:{session}:{}", total.mark()),
                    None => format!("codex:{session}:turn-{}", state.turns),
                };
                turns.push(Turn {
                    id,
                    timestamp: parsed.timestamp.unwrap_or_default().into_owned(),
                    model: state.model.clone().unwrap_or_else(|| "unknown".into()),
                    provider: state.provider.clone().unwrap_or_else(|| "openai".into()),
                    usage,
                });
            }
            _ => {}
        }
    })?;
    state.at = at;
    Ok(bytes)
}

/// Imports the sessions under each of `dirs` (`<dir>/sessions/**/*.jsonl`).
pub fn codex(store: &Store, dirs: &[PathBuf]) -> Result<Imported> {
    let state_path = store.state().root().join("import-codex.json");
    let mut offsets: Offsets =
        std::fs::read(&state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    if !dirs.iter().any(|d| d.join("sessions").is_dir()) {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(Error::Usage(format!(
            "no Codex sessions in {} (expected <dir>/sessions/YYYY/MM/DD/rollout-*.jsonl); name Codex's directory, or set CODEX_HOME",
            names.join(", ")
        )));
    }
    let mut files = Vec::new();
    for d in dirs {
        super::jsonl_files(&d.join("sessions"), &mut files);
    }
    let mut report = Imported { files: files.len(), ..Imported::default() };
    let mut turns = Vec::new();
    for path in &files {
        let key = path.to_string_lossy().into_owned();
        let mut state = offsets.files.get(&key).cloned().unwrap_or_default();
        report.bytes_read += read_file(path, &mut state, &mut turns, &mut report.warnings)?;
        offsets.files.insert(key, state);
    }
    report.entries = turns.len();
    let now = chrono::Utc::now().fixed_offset();
    let device = store.config().device.clone();
    let events: Vec<Event> = turns
        .into_iter()
        .map(|t| {
            let u = t.usage;
            let cached = u.cached_input_tokens.min(u.input_tokens);
            let reasoning = u.reasoning_output_tokens.min(u.output_tokens);
            Event {
                id: Some(t.id),
                // A line without a readable timestamp is dated now.
                timestamp: chrono::DateTime::parse_from_rfc3339(&t.timestamp).unwrap_or(now),
                api: "codex".into(),
                provider: t.provider,
                model: t.model,
                source: "codex".into(),
                auth_index: String::new(),
                status: None,
                failed: false,
                input_tokens: u.input_tokens - cached,
                output_tokens: u.output_tokens - reasoning,
                reasoning_tokens: reasoning,
                cache_creation_tokens: 0,
                cache_read_tokens: cached,
                total_tokens: u.input_tokens.saturating_add(u.output_tokens),
                cost_usd: None,
                cost_estimated: false,
                latency_ms: None,
                ttft_ms: None,
                alias: String::new(),
                endpoint: String::new(),
                key_fingerprint: String::new(),
                method: String::new(),
                path: String::new(),
                device: device.clone(),
            }
        })
        .collect();
    let recorded = store.record(events)?;
    report.recorded = recorded.recorded;
    report.already = recorded.duplicates;
    std::fs::create_dir_all(store.state().root()).map_err(|e| Error::io(store.state().root(), e))?;
    crate::fsutil::write_atomic(&state_path, &serde_json::to_vec(&offsets).expect("serialises"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns_of(text: &str) -> (Vec<Turn>, Vec<String>, FileState) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rollout-x.jsonl");
        std::fs::write(&p, text).unwrap();
        let (mut turns, mut warnings, mut state) = (Vec::new(), Vec::new(), FileState::default());
        read_file(&p, &mut state, &mut turns, &mut warnings).unwrap();
        (turns, warnings, state)
    }

    fn tc(total: Option<(u64, u64, u64, u64)>, last: Option<(u64, u64, u64, u64)>) -> String {
        let u = |(i, c, o, r): (u64, u64, u64, u64)| {
            serde_json::json!({"input_tokens": i, "cached_input_tokens": c, "output_tokens": o,
                               "reasoning_output_tokens": r, "total_tokens": i + o})
        };
        let mut info = serde_json::Map::new();
        if let Some(t) = total {
            info.insert("total_token_usage".into(), u(t));
        }
        if let Some(l) = last {
            info.insert("last_token_usage".into(), u(l));
        }
        serde_json::json!({"timestamp": "2026-11-03T09:00:00Z", "type": "event_msg",
                           "payload": {"type": "token_count", "info": info}})
        .to_string()
            + "\n"
    }

    #[test]
    fn totals_only_give_the_growth_and_a_repeated_total_is_a_replay() {
        let ctx = "{\"type\":\"turn_context\",\"payload\":{\"model\":\"gpt-5\"}}\n";
        let text = [
            ctx.to_string(),
            tc(Some((100, 40, 10, 5)), None),
            tc(Some((100, 40, 10, 5)), None),
            tc(Some((250, 140, 30, 5)), None),
        ]
        .concat();
        let (turns, warnings, _) = turns_of(&text);
        assert!(warnings.is_empty(), "{warnings:?}");
        let got: Vec<(u64, u64, u64)> =
            turns.iter().map(|t| (t.usage.input_tokens, t.usage.cached_input_tokens, t.usage.output_tokens)).collect();
        assert_eq!(got, [(100, 40, 10), (150, 100, 20)]);
        assert_eq!(turns[1].id, "codex:rollout-x:280", "session (the file's name without meta) and total");
        assert_eq!(turns[0].model, "gpt-5");
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line_and_the_rest_is_read() {
        let text = [
            "{\"type\":\"turn_context\",\"payload\":{\"model\":\"gpt-5\"}}\n".to_string(),
            "{\"type\":\"event_msg\",\"payload\":{\"type\":\"token_count\",\"info\":{\"total_tok\n".to_string(),
            "{\"type\":\"event_msg\",\"payload\":{\"type\":\"token_count\",\"info\":{\"last_token_usage\":{\"input_tokens\":\"many\"}}}}\n"
                .to_string(),
            // Another kind of line that mentions token_count is not an error.
            "{\"type\":\"response_item\",\"payload\":{\"id\":7,\"text\":\"token_count\"}}\n".to_string(),
            tc(Some((10, 0, 1, 0)), Some((10, 0, 1, 0))),
        ]
        .concat();
        let (turns, warnings, state) = turns_of(&text);
        assert_eq!(turns.len(), 1);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("rollout-x.jsonl:2: not a Codex session line"), "{}", warnings[0]);
        assert!(warnings[1].contains("rollout-x.jsonl:3: "), "{}", warnings[1]);
        assert_eq!(state.at.line, 5);
    }

    #[test]
    fn a_line_being_written_waits_for_the_next_run() {
        let full = tc(Some((10, 0, 1, 0)), Some((10, 0, 1, 0)));
        let text = format!("{full}{}", &full[..full.len() / 2]);
        let (turns, warnings, state) = turns_of(&text);
        assert_eq!((turns.len(), warnings.len()), (1, 0));
        assert_eq!(state.at.offset, full.len() as u64);
    }
}
