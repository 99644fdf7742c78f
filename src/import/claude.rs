//! Claude Code transcripts (`projects/**/*.jsonl`): only lines that carry `message.usage`
//! are parsed (no message content is kept), and a streamed message (same `message.id` +
//! `requestId` on several lines) counts once, with the largest token total. A zero-token
//! `<synthetic>` message (Claude Code's own placeholder, never sent to the API) is not a
//! request.

use super::{line_warning, read_lines, resume, scan, Imported, Position};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ledger::Ledger as Store;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default, rename = "requestId")]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize, Clone, Copy, Default, Debug, PartialEq)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
}

impl Usage {
    fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
    }
}

/// Where each transcript was read up to.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Offsets {
    files: BTreeMap<String, Position>,
}

/// The directories Claude Code keeps its data in: CLAUDE_CONFIG_DIR (comma-separated),
/// else ~/.claude and ~/.config/claude.
pub fn default_dirs() -> Vec<PathBuf> {
    if let Some(dirs) = std::env::var_os("CLAUDE_CONFIG_DIR") {
        return dirs.to_string_lossy().split(',').filter(|d| !d.is_empty()).map(PathBuf::from).collect();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    vec![home.join(".claude"), home.join(".config/claude")]
}

/// A request's usage, model and timestamp.
type Entry = (Usage, String, String);

/// What reading some transcripts found.
struct Part {
    entries: Ids<Entry>,
    offsets: Vec<(String, Position)>,
    bytes: u64,
    warnings: Vec<String>,
}

/// Whether an entry with this total and timestamp replaces `old` for the same request:
/// the largest total (a streamed message's last line), ties to the later timestamp. One
/// rule within a transcript and across the two reader threads, so the result does not
/// depend on how the files were split between them.
fn wins(total: u64, timestamp: &str, old: Option<&Entry>) -> bool {
    old.is_none_or(|(u, _, ts)| (total, timestamp) > (u.total(), ts.as_str()))
}

/// Reads `files` from their recorded positions, keeping each request's largest entry.
fn read_all(files: &[PathBuf], starts: &[Option<Position>], progress: &indicatif::ProgressBar) -> Result<Part> {
    let mut part = Part { entries: Ids::default(), offsets: Vec::new(), bytes: 0, warnings: Vec::new() };
    let mut buf = Vec::new();
    for (path, start) in files.iter().zip(starts) {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        // Replaced or truncated: read it again (ids keep it from counting twice).
        let from = resume(*start, &meta).unwrap_or(Position { ino: meta.ino(), ..Position::default() });
        let (entries, warnings) = (&mut part.entries, &mut part.warnings);
        let (at, bytes) = read_lines(path, file, from, &mut buf, |n, line| {
            if usage_finder().find(line).is_none() {
                return;
            }
            let (k, usage, model, ts) = match parse(line) {
                Ok(Some(found)) => found,
                Ok(None) => return,
                Err(e) => {
                    warnings.push(line_warning(path, n, e));
                    return;
                }
            };
            if wins(usage.total(), &ts, entries.get(&k)) {
                entries.insert(k, (usage, model, ts));
            }
        })?;
        part.bytes += bytes;
        part.offsets.push((path.to_string_lossy().into_owned(), at));
        progress.inc(bytes);
    }
    Ok(part)
}

/// The search for `"usage"`, built once: most lines of a transcript are searched.
fn usage_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"usage\""))
}

/// A multiply-rotate hasher for the request ids of local transcripts (the standard SipHash,
/// built against hostile keys, was a tenth of the import's time; these keys are not hostile).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Ids<V> = HashMap<String, V, std::hash::BuildHasherDefault<IdHasher>>;

/// A request found on a line: its id, usage, model and timestamp.
type Found = (String, Usage, String, String);

/// The request a transcript line carries, if any; an error says why the line is unreadable.
/// The structural scan ([`scan::claude_fields`]) finds the fields without parsing the
/// message content; whatever it does not follow is parsed in full, with the same result.
fn parse(line: &[u8]) -> std::result::Result<Option<Found>, String> {
    if let Some(found) = scan::claude_fields(line).and_then(|f| fast(&f)) {
        return Ok(found);
    }
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let parsed =
        serde_json::from_str::<Line<'_>>(text).map_err(|e| format!("not a Claude Code transcript line ({e})"))?;
    let (Some(msg), Some(rid)) = (parsed.message, parsed.request_id) else { return Ok(None) };
    let (Some(id), Some(usage)) = (msg.id, msg.usage) else { return Ok(None) };
    request(&id, &rid, usage, msg.model.as_deref(), parsed.timestamp.as_deref())
}

/// [`parse`] from the scanned spans; `None` to parse the line in full instead.
fn fast(f: &scan::ClaudeFields<'_>) -> Option<Option<Found>> {
    if f.message_not_object {
        return None;
    }
    let Some(usage) = f.usage else { return Some(None) };
    let usage: Option<Usage> = serde_json::from_slice(usage).ok()?;
    let (Some(rid), Some(id), Some(usage)) = (f.request_id, f.message_id, usage) else { return Some(None) };
    let (rid, id) = (scan::text(rid)?, scan::text(id)?);
    let model = match f.model {
        Some(m) => Some(scan::text(m)?),
        None => None,
    };
    let ts = match f.timestamp {
        Some(t) => Some(scan::text(t)?),
        None => None,
    };
    // An error: the full parse words it.
    request(&id, &rid, usage, model.as_deref(), ts.as_deref()).ok()
}

/// One request, unless it is a zero-token `<synthetic>` message; an error when it is not
/// one an event can carry (a count above 2^53, a time outside the years 0001–9999).
fn request(
    id: &str,
    rid: &str,
    usage: Usage,
    model: Option<&str>,
    ts: Option<&str>,
) -> std::result::Result<Option<Found>, String> {
    use crate::event::{check_counts, check_time};
    let u = &usage;
    check_counts(&[
        ("message.usage.input_tokens", u.input_tokens),
        ("message.usage.output_tokens", u.output_tokens),
        ("message.usage.cache_creation_input_tokens", u.cache_creation_input_tokens),
        ("message.usage.cache_read_input_tokens", u.cache_read_input_tokens),
    ])
    .map_err(|e| e.to_string())?;
    if let Some(t) = ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        check_time(&t).map_err(|e| e.to_string())?;
    }
    if usage.total() == 0 && model == Some("<synthetic>") {
        return Ok(None);
    }
    Ok(Some((
        format!("claude-code:{id}:{rid}"),
        usage,
        model.unwrap_or("unknown").to_string(),
        ts.unwrap_or("").to_string(),
    )))
}

pub fn claude_code(store: &Store, dirs: &[PathBuf]) -> Result<Imported> {
    let state = store.state().root().join("import-claude-code.json");
    let mut offsets: Offsets =
        std::fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut files = Vec::new();
    for d in dirs {
        super::jsonl_files(&d.join("projects"), &mut files);
    }
    let mut report = Imported { files: files.len(), ..Imported::default() };
    // Transcripts are independent: read them on two threads, then keep, for each
    // request, the entry with the largest total (ties: the later timestamp).
    let (left, right) = files.split_at(files.len() / 2);
    let starts = |part: &[PathBuf]| -> Vec<Option<Position>> {
        part.iter().map(|p| offsets.files.get(&*p.to_string_lossy()).copied()).collect()
    };
    let (ls, rs) = (starts(left), starts(right));
    // A progress bar on a terminal only: long imports say how far they are.
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let todo: u64 = files
            .iter()
            .zip(ls.iter().chain(&rs))
            .map(|(p, start)| std::fs::metadata(p).map_or(0, |m| m.len()).saturating_sub(start.map_or(0, |s| s.offset)))
            .sum();
        let bar = indicatif::ProgressBar::new(todo);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| read_all(left, &ls, &progress));
        let b = s.spawn(|| read_all(right, &rs, &progress));
        (a.join().expect("import thread"), b.join().expect("import thread"))
    });
    progress.finish_and_clear();
    // The larger part's map is kept and the other's entries moved into it.
    let (mut a, mut b) = (a?, b?);
    if a.entries.len() < b.entries.len() {
        std::mem::swap(&mut a, &mut b);
    }
    let mut entries = std::mem::take(&mut a.entries);
    for part in [a, b] {
        report.bytes_read += part.bytes;
        report.warnings.extend(part.warnings);
        for (path, at) in part.offsets {
            offsets.files.insert(path, at);
        }
        for (k, e) in part.entries {
            match entries.entry(k) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if wins(e.0.total(), &e.2, Some(o.get())) {
                        o.insert(e);
                    }
                }
            }
        }
    }
    report.entries = entries.len();
    let now = chrono::Utc::now().fixed_offset();
    let device = store.config().device.clone();
    let mut events = Vec::with_capacity(entries.len());
    // In time order (then by id, so that the order does not depend on the hash map): a
    // transcript line without a readable timestamp is dated now.
    let mut sorted: Vec<_> = entries
        .into_iter()
        .map(|(key, (u, model, ts))| (chrono::DateTime::parse_from_rfc3339(&ts).unwrap_or(now), key, u, model))
        .collect();
    sorted.sort_unstable_by(|a, b| (a.0.timestamp_nanos_opt(), &a.1).cmp(&(b.0.timestamp_nanos_opt(), &b.1)));
    for (timestamp, key, u, model) in sorted {
        events.push(Event {
            id: Some(key),
            timestamp,
            api: "claude-code".into(),
            provider: "anthropic".into(),
            model,
            source: "claude-code".into(),
            auth_index: String::new(),
            status: None,
            failed: false,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            reasoning_tokens: 0,
            cache_creation_tokens: u.cache_creation_input_tokens,
            cache_read_tokens: u.cache_read_input_tokens,
            total_tokens: u.total(),
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
        });
    }
    let recorded = store.record(events)?;
    report.recorded = recorded.recorded;
    report.already = recorded.duplicates;
    std::fs::create_dir_all(store.state().root()).map_err(|e| Error::io(store.state().root(), e))?;
    crate::fsutil::write_atomic(&state, &serde_json::to_vec(&offsets).expect("serialises"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full parse alone, as the import read lines before the scan.
    fn slow(line: &[u8]) -> std::result::Result<Option<Found>, ()> {
        let text = std::str::from_utf8(line).map_err(|_| ())?;
        let parsed = serde_json::from_str::<Line<'_>>(text).map_err(|_| ())?;
        let (Some(msg), Some(rid)) = (parsed.message, parsed.request_id) else { return Ok(None) };
        let (Some(id), Some(usage)) = (msg.id, msg.usage) else { return Ok(None) };
        request(&id, &rid, usage, msg.model.as_deref(), parsed.timestamp.as_deref()).map_err(|_| ())
    }

    #[test]
    fn the_scan_finds_what_the_full_parse_finds() {
        let sample = include_str!("../../tests/fixtures/claude-code-sample.jsonl");
        let mut lines: Vec<String> = sample.lines().map(str::to_string).collect();
        lines.extend(
            [
                // Key order, whitespace, escapes, nested look-alikes, odd types.
                r#"{"requestId":"r\u0032","timestamp":"t","message":{"usage":{"output_tokens":5,"cache_creation":{"ephemeral_1h_input_tokens":2}},"id":"m\"2","model":"claude-\u00e9"}}"#,
                r#"{"message":{"id":"m3","content":[{"input":{"usage":{"input_tokens":7},"id":"x"}}],"model":"m"},"requestId":"r3"}"#,
                r#"{"message":{"id":"m4","usage":null},"requestId":"r4"}"#,
                r#"{"message":null,"requestId":"r5","usage":{"input_tokens":1}}"#,
                r#"{"message":"text","requestId":"r6","note":"usage"}"#,
                r#"{"message":{"id":"m7","usage":{"input_tokens":1.5}},"requestId":"r7"}"#,
                r#"{"message":{"id":"m8","usage":{"input_tokens":-1}},"requestId":"r8"}"#,
                r#"{"message":{"id":8,"usage":{"input_tokens":1}},"requestId":"r9"}"#,
                r#"{"message":{"id":"m10","usage":{"input_tokens":1}},"requestId":"r10"} trailing"#,
                r#"{"message":{"id":"m11","model":"<synthetic>","usage":{"input_tokens":0,"output_tokens":0}},"requestId":"r11"}"#,
                r#"  {"message":{"id":"m12","usage":{}},"requestId":"r12"}  "#,
            ]
            .map(str::to_string),
        );
        for line in &lines {
            let got = parse(line.as_bytes()).map_err(|_| ());
            assert_eq!(got, slow(line.as_bytes()), "{line}");
        }
        // The sample's first line, found by the scan itself (not by falling back).
        let f = scan::claude_fields(lines[0].as_bytes()).unwrap();
        let found = fast(&f).unwrap().unwrap();
        assert_eq!(found.0, "claude-code:msg_01XkP7qR2vT9sLmN4bW8cY3d:req_011CVa8kQmT3nLp5rXy2ZbW1");
        assert_eq!(
            (found.1.input_tokens, found.1.cache_read_input_tokens, found.2.as_str()),
            (3, 22137, "claude-opus-4-6")
        );
    }
}
