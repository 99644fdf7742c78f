//! Importing Claude Code transcripts (`projects/**/*.jsonl`) into usage events, strictly
//! read-only and streaming: lines are read one at a time from where the previous run
//! stopped, only lines that carry `message.usage` are parsed (no message content is
//! kept), and a streamed message (same `message.id` + `requestId` on several lines) counts
//! once, with the largest token total. Events go through the normal write path.

use crate::error::{Error, Result};
use crate::event::Event;
use crate::ledger::Ledger as Store;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub files: usize,
    pub bytes_read: u64,
    pub entries: usize,
    pub recorded: usize,
    pub already: usize,
}

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
    files: BTreeMap<String, (u64, u64)>,
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

fn transcripts(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => transcripts(&p, out),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "jsonl") => out.push(p),
            _ => {}
        }
    }
}

/// A request's usage, model and timestamp.
type Entry = (Usage, String, String);

/// What reading some transcripts found.
struct Part {
    entries: HashMap<String, Entry>,
    offsets: Vec<(String, (u64, u64))>,
    bytes: u64,
}

/// Whether an entry with this total and timestamp replaces `old` for the same request:
/// the largest total (a streamed message's last line), ties to the later timestamp. One
/// rule within a transcript and across the two reader threads, so the result does not
/// depend on how the files were split between them.
fn wins(total: u64, timestamp: &str, old: Option<&Entry>) -> bool {
    old.is_none_or(|(u, _, ts)| (total, timestamp) > (u.total(), ts.as_str()))
}

/// Reads `files` from their recorded (inode, offset), keeping each request's largest entry.
fn read_all(files: &[PathBuf], starts: &[Option<(u64, u64)>], progress: &indicatif::ProgressBar) -> Result<Part> {
    let mut part = Part { entries: HashMap::new(), offsets: Vec::new(), bytes: 0 };
    let mut line = Vec::with_capacity(64 * 1024);
    for (path, start) in files.iter().zip(starts) {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let (ino, mut offset) = start.unwrap_or((meta.ino(), 0));
        if ino != meta.ino() || offset > meta.len() {
            offset = 0; // replaced or truncated: read it again (ids keep it from counting twice)
        }
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(|e| Error::io(path, e))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break; // end, or a line still being written: next time
            }
            offset += n as u64;
            part.bytes += n as u64;
            let Ok(text) = std::str::from_utf8(&line) else { continue };
            if !text.contains("\"usage\"") {
                continue;
            }
            let Ok(parsed) = serde_json::from_str::<Line<'_>>(text) else { continue };
            let (Some(msg), Some(rid)) = (parsed.message, parsed.request_id) else { continue };
            let (Some(id), Some(usage)) = (msg.id, msg.usage) else { continue };
            let k = format!("claude-code:{id}:{rid}");
            if wins(usage.total(), parsed.timestamp.as_deref().unwrap_or(""), part.entries.get(&k)) {
                let model = msg.model.unwrap_or(Cow::Borrowed("unknown")).into_owned();
                let ts = parsed.timestamp.unwrap_or_default().into_owned();
                part.entries.insert(k, (usage, model, ts));
            }
        }
        part.offsets.push((path.to_string_lossy().into_owned(), (meta.ino(), offset)));
        progress.inc(meta.len().saturating_sub(start.map_or(0, |s| s.1)));
    }
    Ok(part)
}

pub fn claude_code(store: &Store, dirs: &[PathBuf]) -> Result<Imported> {
    let state = store.state().root().join("import-claude-code.json");
    let mut offsets: Offsets =
        std::fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut files = Vec::new();
    for d in dirs {
        transcripts(&d.join("projects"), &mut files);
    }
    let mut report = Imported { files: files.len(), ..Imported::default() };
    // Transcripts are independent: read them on two threads, then keep, for each
    // request, the entry with the largest total (ties: the later timestamp).
    let (left, right) = files.split_at(files.len() / 2);
    let starts = |part: &[PathBuf]| -> Vec<Option<(u64, u64)>> {
        part.iter().map(|p| offsets.files.get(&*p.to_string_lossy()).copied()).collect()
    };
    let (ls, rs) = (starts(left), starts(right));
    // A progress bar on a terminal only: long imports say how far they are.
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let todo: u64 = files
            .iter()
            .zip(ls.iter().chain(&rs))
            .map(|(p, start)| std::fs::metadata(p).map_or(0, |m| m.len()).saturating_sub(start.map_or(0, |s| s.1)))
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
    let device = store.name().to_string();
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
