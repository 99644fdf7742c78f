//! Claude Code transcripts (`projects/**/*.jsonl`): only lines that carry `message.usage`
//! are parsed (no message content is kept), and a streamed message (same `message.id` +
//! `requestId` on several lines) counts once, with the largest token total. A zero-token
//! `<synthetic>` message (Claude Code's own placeholder, never sent to the API) is not a
//! request.

use super::{line_warning, read_lines, resume, Imported, Position};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::Store;
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

#[derive(Deserialize, Clone, Copy, Default)]
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
    entries: HashMap<String, Entry>,
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
    let mut part = Part { entries: HashMap::new(), offsets: Vec::new(), bytes: 0, warnings: Vec::new() };
    for (path, start) in files.iter().zip(starts) {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        // Replaced or truncated: read it again (ids keep it from counting twice).
        let from = resume(*start, &meta).unwrap_or(Position { ino: meta.ino(), ..Position::default() });
        let (entries, warnings) = (&mut part.entries, &mut part.warnings);
        let (at, bytes) = read_lines(path, file, from, |n, line| {
            let Ok(text) = std::str::from_utf8(line) else {
                if memchr_usage(line) {
                    warnings.push(line_warning(path, n, "not UTF-8"));
                }
                return;
            };
            if !text.contains("\"usage\"") {
                return;
            }
            let parsed = match serde_json::from_str::<Line<'_>>(text) {
                Ok(p) => p,
                Err(e) => {
                    warnings.push(line_warning(path, n, format_args!("not a Claude Code transcript line ({e})")));
                    return;
                }
            };
            let (Some(msg), Some(rid)) = (parsed.message, parsed.request_id) else { return };
            let (Some(id), Some(usage)) = (msg.id, msg.usage) else { return };
            if usage.total() == 0 && msg.model.as_deref() == Some("<synthetic>") {
                return;
            }
            let k = format!("claude-code:{id}:{rid}");
            if wins(usage.total(), parsed.timestamp.as_deref().unwrap_or(""), entries.get(&k)) {
                let model = msg.model.unwrap_or(Cow::Borrowed("unknown")).into_owned();
                let ts = parsed.timestamp.unwrap_or_default().into_owned();
                entries.insert(k, (usage, model, ts));
            }
        })?;
        part.bytes += bytes;
        part.offsets.push((path.to_string_lossy().into_owned(), at));
        progress.inc(bytes);
    }
    Ok(part)
}

fn memchr_usage(line: &[u8]) -> bool {
    line.windows(7).any(|w| w == b"\"usage\"")
}

pub fn claude_code(store: &Store, dirs: &[PathBuf]) -> Result<Imported> {
    let state = store.state_dir().join("import-claude-code.json");
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
    let mut entries: HashMap<String, Entry> = HashMap::new();
    for part in [a?, b?] {
        report.bytes_read += part.bytes;
        report.warnings.extend(part.warnings);
        for (path, at) in part.offsets {
            offsets.files.insert(path, at);
        }
        for (k, e) in part.entries {
            if wins(e.0.total(), &e.2, entries.get(&k)) {
                entries.insert(k, e);
            }
        }
    }
    report.entries = entries.len();
    let now = chrono::Utc::now().fixed_offset();
    let device = store.config().device.clone();
    let mut events = Vec::with_capacity(entries.len());
    let mut sorted: Vec<_> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.1 .2.cmp(&b.1 .2).then_with(|| a.0.cmp(&b.0)));
    for (key, (u, model, ts)) in sorted {
        // A transcript line without a readable timestamp is dated now.
        let timestamp = chrono::DateTime::parse_from_rfc3339(&ts).unwrap_or(now);
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
    std::fs::create_dir_all(store.state_dir()).map_err(|e| Error::io(store.state_dir(), e))?;
    crate::fsutil::write_atomic(&state, &serde_json::to_vec(&offsets).expect("serialises"))?;
    Ok(report)
}
