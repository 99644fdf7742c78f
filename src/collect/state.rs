//! `.git/tally/collect.json`: what the collector did last, for `status` and `doctor`. Counts
//! of the current (or last) run, the newest record's time and the last error — never a
//! key, never a record's content.

use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file's name under the state directory (`.git/tally/`).
pub const FILE: &str = "collect.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectState {
    /// The queue's URL (URLs carrying credentials are refused, so this holds none).
    pub url: String,
    pub pid: u32,
    /// Whether the collector was running when this was written (false after it stopped).
    pub running: bool,
    /// `draining`, `subscribed`, `polling`, `reconnecting` or `stopped`.
    pub mode: String,
    pub started_at: String,
    pub updated_at: String,
    /// When the last batch was made durable.
    pub last_batch_at: Option<String>,
    /// The timestamp of the newest record collected.
    pub last_record: Option<String>,
    pub received: u64,
    pub recorded: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub last_error: Option<LastError>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub at: String,
    pub message: String,
}

impl CollectState {
    /// The state in `dir` (the repository's `.git/tally/`), if a collector ever ran there.
    pub fn read(dir: &Path) -> Option<CollectState> {
        serde_json::from_slice(&std::fs::read(dir.join(FILE)).ok()?).ok()
    }
}

/// Writes the state now and then: at most once a second while batches flow, at once for
/// errors and changes of mode, so that it costs the write path nothing measurable.
pub(crate) struct StateWriter {
    path: Option<PathBuf>,
    pub state: CollectState,
    written: Option<Instant>,
}

const EVERY: Duration = Duration::from_secs(1);

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl StateWriter {
    pub fn new(dir: Option<&Path>, url: &str) -> StateWriter {
        let state = CollectState {
            url: url.to_string(),
            pid: std::process::id(),
            running: true,
            mode: "starting".into(),
            started_at: now(),
            ..CollectState::default()
        };
        StateWriter { path: dir.map(|d| d.join(FILE)), state, written: None }
    }

    /// Writes when a second has passed since the last write, or when `now` is set.
    pub fn save(&mut self, at_once: bool) {
        let Some(path) = &self.path else { return };
        if !at_once && self.written.is_some_and(|w| w.elapsed() < EVERY) {
            return;
        }
        self.state.updated_at = now();
        let bytes = serde_json::to_vec_pretty(&self.state).expect("the state serialises");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // The state is informational: failing to write it never stops collecting.
        let _ = write_atomic(path, &bytes);
        self.written = Some(Instant::now());
    }

    pub fn mode(&mut self, mode: &str) {
        if self.state.mode != mode {
            self.state.mode = mode.to_string();
            self.save(true);
        }
    }

    pub fn error(&mut self, message: String) {
        self.state.last_error = Some(LastError { at: now(), message });
        self.save(true);
    }
}
