//! `collect`: today's CLIProxyAPI (v6.10+) keeps no usage file; it hands each request's
//! record to a queue on its own port, kept 60 s by default and popped destructively by
//! whoever asks first (SPEC §5c). This module drains that queue into this device's ledger.
//!
//! The one promise it keeps: a batch is durable in the journal ([`Sink::record`] returned)
//! before the next pop. So a crash loses at most what the proxy had handed over and was not
//! yet written, and nothing is ever counted twice: a record's `request_id` is its event id,
//! and the write path counts an id once.
//!
//! Two transports: the RESP listener ([`resp`]: drain with `LPOP`, then `SUBSCRIBE`) and the
//! management API ([`http`]: a destructive pop, polled). Records are read by [`record`],
//! which keeps nothing secret. [`run`] is the whole loop, usable from the CLI or from a
//! daemon thread: it reports through a callback, stops when the stop flag is raised, and
//! keeps `.git/tally/collect.json` ([`state`]) for `status`.

mod http;
pub mod record;
mod resp;
pub mod state;

pub use record::{Collected, KeepField, Payload, RecordError};
pub use state::CollectState;

use crate::event::Event;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The port CLIProxyAPI listens on by default (RESP and HTTP share it).
pub const DEFAULT_PORT: u16 = 8317;
/// The environment variable that may hold the management key.
pub const KEY_ENV: &str = "CLIPROXYAPI_MANAGEMENT_KEY";
/// Records asked for per pop, by default: large enough that the write path's cost per
/// batch (an fsync, the ids it checks) stays small beside the records, small enough that a
/// crash has little in flight (about 3 MB of records).
pub const DEFAULT_BATCH: u32 = 2000;

/// How long a subscription read waits before looking at the stop flag (and writing what
/// it holds).
const POLL: Duration = Duration::from_millis(200);
/// Published records are written at least this often, however steadily they arrive.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// Reconnection backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long `--once` keeps trying to write records it already popped before giving up.
const ONCE_WRITE_PATIENCE: Duration = Duration::from_secs(120);

/// The management key. It is never printed (`Debug` hides it) and never written anywhere
/// but into the request that needs it.
#[derive(Clone)]
pub struct Key(Arc<str>);

impl Key {
    /// A key from the text of a key file or variable (surrounding whitespace removed).
    pub fn new(text: &str) -> Option<Key> {
        let k = text.trim();
        (!k.is_empty()).then(|| Key(Arc::from(k)))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(hidden)")
    }
}

/// The management key: `flag` (`--key-file`), else the environment ([`KEY_ENV`]), else
/// `configured` (`tally.collectKeyFile`). A key file inside the repository `top` is refused:
/// it could be committed. Also returns warnings (a key file others can read).
pub fn load_key(
    flag: Option<&Path>,
    configured: Option<&Path>,
    top: &Path,
) -> Result<(Key, Vec<String>), CollectError> {
    let from_file = |path: &Path, how: &str| -> Result<(Key, Vec<String>), CollectError> {
        let bad = |why: String| CollectError::Config(format!("{how} {}: {why}", path.display()));
        let full = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
        if let Ok(top) = std::fs::canonicalize(top) {
            if full.starts_with(&top) {
                return Err(bad(format!(
                    "the key file is inside the usage repository ({}), where it could be committed; move it out \
                     (for example to ~/.config/git-tally/cliproxyapi.key, mode 600)",
                    top.display()
                )));
            }
        }
        let mut warnings = Vec::new();
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(&full).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            warnings.push(format!("{} can be read by other users; chmod 600 it", path.display()));
        }
        let text = std::fs::read_to_string(&full).map_err(|e| bad(e.to_string()))?;
        let key = Key::new(&text).ok_or_else(|| bad("the file is empty".into()))?;
        Ok((key, warnings))
    };
    if let Some(path) = flag {
        return from_file(path, "--key-file");
    }
    if let Some(text) = std::env::var_os(KEY_ENV) {
        let key = Key::new(&text.to_string_lossy())
            .ok_or_else(|| CollectError::Config(format!("{KEY_ENV} is set but empty")))?;
        return Ok((key, Vec::new()));
    }
    if let Some(path) = configured {
        return from_file(path, "git config tally.collectKeyFile");
    }
    Err(CollectError::Config(format!(
        "no management key: give --key-file FILE (a file holding the proxy's remote-management.secret-key), or set \
         {KEY_ENV}, or git config tally.collectKeyFile"
    )))
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The proxy's `usage-statistics-enabled`, where it says (the management API does).
    pub statistics_enabled: Option<bool>,
}

/// For `doctor`: whether the proxy answers at `source` and accepts `key`. Pops nothing.
pub fn check(source: &Source, key: &Key) -> Result<Checked, CollectError> {
    let url = source.url();
    let fail = |e: QueueError| match e {
        QueueError::Auth(message) => CollectError::Auth { url: url.clone(), message },
        QueueError::Protocol(message) => CollectError::Protocol { url: url.clone(), message },
        QueueError::Config(m) => CollectError::Config(m),
        e => CollectError::Unreachable { url: url.clone(), message: e.to_string() },
    };
    match source {
        Source::Resp { host, port } => {
            resp::Resp::new(host, *port, key.clone()).connect().map_err(fail)?;
            Ok(Checked { statistics_enabled: None })
        }
        Source::Http { base } => {
            let enabled = http::Http::new(base, key.clone()).statistics_enabled().map_err(fail)?;
            Ok(Checked { statistics_enabled: enabled })
        }
    }
}

/// Where the queue is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The RESP listener: `redis://host[:port]`.
    Resp { host: String, port: u16 },
    /// The management API: `http(s)://host[:port][/prefix]`, without a trailing `/`.
    Http { base: String },
}

impl Source {
    /// Reads `redis://host:port`, `http://host:port` or `https://…`. A URL holding a user or
    /// password is refused: the key belongs in a key file, not in shell history or git
    /// config.
    pub fn parse(url: &str) -> Result<Source, CollectError> {
        let shown = redacted(url);
        let bad = |why: &str| CollectError::Config(format!("--url {shown:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected redis://host:port (the proxy's RESP listener) or http(s)://host:port (its management API)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "a URL must not carry the key or a user; give the key with --key-file or CLIPROXYAPI_MANAGEMENT_KEY",
            ));
        }
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => {
                if !path.is_empty() {
                    return Err(bad("a redis:// URL names only host and port (the queue is always `usage`)"));
                }
                let (host, port) = split_port(authority).map_err(|w| bad(&w))?;
                Ok(Source::Resp { host, port: port.unwrap_or(DEFAULT_PORT) })
            }
            "http" | "https" => {
                if path.contains(['?', '#']) {
                    return Err(bad("no query or fragment, please: the URL is the proxy's base address"));
                }
                split_port(authority).map_err(|w| bad(&w))?;
                Ok(Source::Http { base: format!("{}://{authority}{path}", scheme.to_ascii_lowercase()) })
            }
            "rediss" => Err(bad("CLIProxyAPI's RESP listener has no TLS; use redis:// on the proxy's machine, or https:// for its management API")),
            other => Err(bad(&format!("unknown scheme {other:?}; expected redis, http or https"))),
        }
    }

    /// The URL as shown and kept in the state file (it holds no secret).
    pub fn url(&self) -> String {
        match self {
            Source::Resp { host, port } if host.contains(':') => format!("redis://[{host}]:{port}"),
            Source::Resp { host, port } => format!("redis://{host}:{port}"),
            Source::Http { base } => base.clone(),
        }
    }
}

/// `url` with any user or password replaced by `***`, for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

fn split_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?),
        None => None,
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((host.to_string(), port))
}

/// What the collector is told to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub source: Source,
    pub key: Key,
    /// Drain what is queued, then stop (no subscription, no polling).
    pub once: bool,
    /// Records asked for per pop (and written per batch at most).
    pub batch: usize,
    /// Between two polls of the management API that found the queue empty.
    pub interval: Duration,
    /// Fields carried beside the events instead of dropped.
    pub keep: Vec<KeepField>,
    /// This device's name, given to every event.
    pub device: String,
    /// The state directory (`.git/tally/`) for `collect.json`; `None`: keep no state.
    pub state_dir: Option<PathBuf>,
}

/// What a [`Sink`] made of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Events recorded now.
    pub new: usize,
    /// Events whose id was recorded before (a replayed record): counted once.
    pub duplicates: usize,
}

/// The write path, and the only one: a batch is durable when `record` returns `Ok`.
pub trait Sink {
    fn record(&mut self, batch: &[Collected]) -> crate::error::Result<Written>;
}

/// This device's ledger: a batch is in the journal, fsynced, when `record` returns. Fields
/// kept with `--keep` go to `collect-kept.jsonl` beside the journal (local, never
/// committed): the ledger's events have no place for them.
impl Sink for crate::ledger::Ledger {
    fn record(&mut self, batch: &[Collected]) -> crate::error::Result<Written> {
        let events: Vec<Event> = batch.iter().map(|c| c.event.clone()).collect();
        let r = crate::ledger::Ledger::record(self, events)?;
        write_kept(self.state().root(), batch)?;
        Ok(Written { new: r.recorded, duplicates: r.duplicates })
    }
}

/// The file `--keep` fields are appended to, under the state directory.
pub const KEPT_FILE: &str = "collect-kept.jsonl";

fn write_kept(dir: &Path, batch: &[Collected]) -> crate::error::Result<()> {
    use std::io::Write;
    let mut text = String::new();
    for c in batch.iter().filter(|c| !c.kept.is_empty()) {
        let mut line = c.kept.clone();
        line.insert("id".into(), c.event.id.clone().into());
        line.insert("timestamp".into(), c.event.timestamp_text().into());
        text.push_str(&serde_json::Value::Object(line).to_string());
        text.push('\n');
    }
    if text.is_empty() {
        return Ok(());
    }
    let path = dir.join(KEPT_FILE);
    // Failure bodies and client addresses: readable by this user only.
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| crate::error::Error::io(&path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| crate::error::Error::io(&path, e))
}

/// How records reached the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Popped from what the proxy had queued (`LPOP`).
    Queued,
    /// Published to the subscription.
    Published,
    /// Popped through the management API.
    Polled,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Queued => "queued",
            Via::Published => "published",
            Via::Polled => "polled",
        }
    }
}

/// One batch made durable.
#[derive(Clone, Debug, Default)]
pub struct BatchReport {
    pub via: Option<Via>,
    /// Payloads received (records, control messages and invalid ones).
    pub received: usize,
    pub new: usize,
    pub duplicates: usize,
    pub control: usize,
    pub invalid: usize,
    /// The newest record's timestamp.
    pub newest: Option<chrono::DateTime<chrono::FixedOffset>>,
    pub took: Duration,
}

/// What the collector tells its caller as it goes (the CLI prints one line each).
#[derive(Debug)]
pub enum Progress<'a> {
    /// Connected and authenticated; `what` says what it does now.
    Connected {
        url: &'a str,
        what: &'static str,
    },
    Batch(&'a BatchReport),
    /// A payload that is not a usage record; skipped (it is already off the queue).
    Invalid {
        position: usize,
        of: usize,
        via: Via,
        error: &'a RecordError,
    },
    /// The proxy went away; trying again after `delay`.
    Retrying {
        error: &'a QueueError,
        delay: Duration,
    },
    /// The ledger refused a batch; it is held and written again after `delay`.
    WriteRetrying {
        error: &'a crate::error::Error,
        held: usize,
        delay: Duration,
    },
    /// Something the user should know (a second collector, statistics off on the proxy).
    Warning(String),
}

/// A failure talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The proxy refused the key (or management is off): final, never retried.
    #[error("{0}")]
    Auth(String),
    /// Not reachable now (refused, timed out, 5xx): retried with backoff.
    #[error("{0}")]
    Unreachable(String),
    /// A connection that broke mid-way (the proxy restarting): retried with backoff.
    #[error("connection lost: {0}")]
    Lost(String),
    /// An answer that is not what CLIProxyAPI says.
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Config(String),
}

/// Why `run` stopped without success.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(
        "{url}: the proxy refused the management key ({message}); check that the key file (or {KEY_ENV}) holds \
         the proxy's remote-management.secret-key, that remote management is allowed for this address, and that \
         the proxy is CLIProxyAPI v6.10 or later; nothing was popped"
    )]
    Auth { url: String, message: String },
    #[error("{url}: unreachable: {message}; is the proxy running, and is the URL its address and port?")]
    Unreachable { url: String, message: String },
    #[error("{url}: {message}; is the URL the proxy's own port (CLIProxyAPI v6.10 or later)?")]
    Protocol { url: String, message: String },
    #[error("{0}")]
    Config(String),
    /// The ledger refused records that are already off the queue; `unwritten` holds them as
    /// `record` lines (no secret in them), for the caller to show.
    #[error("could not record {} event(s) already taken from the queue: {source}", unwritten.len())]
    Write { source: crate::error::Error, unwritten: Vec<String> },
}

impl CollectError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CollectError::Auth { .. } | CollectError::Protocol { .. } | CollectError::Config(_) => crate::exit::USAGE,
            CollectError::Unreachable { .. } => crate::exit::TRANSIENT,
            CollectError::Write { source, .. } => source.exit_code(),
        }
    }
}

impl From<CollectError> for crate::error::Error {
    fn from(e: CollectError) -> Self {
        match e.exit_code() {
            crate::exit::USAGE => crate::error::Error::Usage(e.to_string()),
            crate::exit::TRANSIENT => crate::error::Error::Transient(e.to_string()),
            _ => crate::error::Error::Failed(e.to_string()),
        }
    }
}

/// What a run did, in total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub received: u64,
    pub recorded: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub batches: u64,
}

/// Why a session ended early: the queue failed (maybe retried), or the run must end.
enum Interrupt {
    Queue(QueueError),
    Fatal(CollectError),
}

impl From<QueueError> for Interrupt {
    fn from(e: QueueError) -> Self {
        Interrupt::Queue(e)
    }
}

/// The state of one run, shared by both transports.
struct Run<'a> {
    opts: &'a Options,
    url: String,
    sink: &'a mut dyn Sink,
    stop: &'a AtomicBool,
    progress: &'a mut dyn FnMut(Progress<'_>),
    state: state::StateWriter,
    outcome: Outcome,
}

impl Run<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`, waking early when stopped.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Reads `payloads` and makes their usage records durable before returning.
    fn take(&mut self, payloads: Vec<Vec<u8>>, via: Via) -> Result<(), CollectError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let mut report = BatchReport { via: Some(via), received: payloads.len(), ..BatchReport::default() };
        let mut batch = Vec::with_capacity(payloads.len());
        let of = payloads.len();
        for (i, p) in payloads.iter().enumerate() {
            match record::parse(p, &self.opts.device, &self.opts.keep) {
                Ok(Payload::Usage(c)) => {
                    report.newest = report.newest.max(Some(c.event.timestamp));
                    batch.push(*c);
                }
                Ok(Payload::Control) => report.control += 1,
                Err(error) => {
                    report.invalid += 1;
                    (self.progress)(Progress::Invalid { position: i + 1, of, via, error: &error });
                    self.state.error(format!("a {} record ({} of {of}) was skipped: {error}", via.name(), i + 1));
                }
            }
        }
        drop(payloads);
        let written = if batch.is_empty() { Written::default() } else { self.write(&batch)? };
        report.new = written.new;
        report.duplicates = written.duplicates;
        report.took = t.elapsed();
        let o = &mut self.outcome;
        o.received += report.received as u64;
        o.recorded += written.new as u64;
        o.duplicates += written.duplicates as u64;
        o.invalid += report.invalid as u64;
        o.batches += 1;
        let s = &mut self.state.state;
        s.received = o.received;
        s.recorded = o.recorded;
        s.duplicates = o.duplicates;
        s.invalid = o.invalid;
        if !batch.is_empty() {
            s.last_batch_at = Some(state::now());
        }
        if let Some(t) = report.newest {
            let text = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            if s.last_record.as_deref().is_none_or(|l| newer(&text, l)) {
                s.last_record = Some(text);
            }
        }
        self.state.save(false);
        (self.progress)(Progress::Batch(&report));
        Ok(())
    }

    /// Writes `batch`, retrying a transient refusal (a busy lock) for as long as the run
    /// goes on: these records are off the queue, so giving up loses them.
    fn write(&mut self, batch: &[Collected]) -> Result<Written, CollectError> {
        let start = Instant::now();
        let mut delay = BACKOFF_FIRST;
        loop {
            let error = match self.sink.record(batch) {
                Ok(w) => return Ok(w),
                Err(e) => e,
            };
            self.state.error(format!("writing {} event(s): {error}", batch.len()));
            let patience_left = !self.opts.once || start.elapsed() < ONCE_WRITE_PATIENCE;
            // Any file-system error is waited out too (a full disk, a permission someone
            // fixes): giving up would leave these records only in a message.
            let retried =
                error.exit_code() == crate::exit::TRANSIENT || matches!(error, crate::error::Error::Io { .. });
            if !retried || self.stopped() || !patience_left {
                return Err(CollectError::Write {
                    source: error,
                    unwritten: batch.iter().map(|c| c.event.to_line()).collect(),
                });
            }
            (self.progress)(Progress::WriteRetrying { error: &error, held: batch.len(), delay });
            self.sleep(delay);
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    fn connected(&mut self, what: &'static str, mode: &str) {
        let url = self.url.clone();
        (self.progress)(Progress::Connected { url: &url, what });
        self.state.mode(mode);
    }

    /// Turns a queue error into the run's end (`Err`) or a reconnection (`Ok`, after the
    /// backoff delay).
    fn failed(&mut self, e: QueueError, backoff: &mut Duration) -> Result<(), CollectError> {
        let url = self.url.clone();
        let message = e.to_string();
        self.state.error(message.clone());
        let fatal = match e {
            QueueError::Auth(message) => CollectError::Auth { url, message },
            QueueError::Protocol(message) => CollectError::Protocol { url, message },
            QueueError::Config(m) => CollectError::Config(m),
            QueueError::Unreachable(_) | QueueError::Lost(_) if self.opts.once => {
                CollectError::Unreachable { url, message }
            }
            e => {
                self.state.mode("reconnecting");
                (self.progress)(Progress::Retrying { error: &e, delay: *backoff });
                self.sleep(*backoff);
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
                return Ok(());
            }
        };
        Err(fatal)
    }
}

/// Whether RFC 3339 text `a` is a later instant than `b`.
fn newer(a: &str, b: &str) -> bool {
    match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => true,
    }
}

/// Drains the queue into `sink` until it is empty (`once`) or `stop` is raised; reconnects
/// with backoff when the proxy goes away. Every batch is durable before the next pop; when
/// it returns `Ok`, everything received is written.
pub fn run(
    opts: &Options,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Outcome, CollectError> {
    if opts.batch == 0 {
        return Err(CollectError::Config("--batch must be at least 1".into()));
    }
    let url = opts.source.url();
    let _guard = second_collector_guard(&url, opts, progress);
    let mut run = Run {
        opts,
        url: url.clone(),
        sink,
        stop,
        progress,
        state: state::StateWriter::new(opts.state_dir.as_deref(), &url),
        outcome: Outcome::default(),
    };
    run.state.save(true);
    let result = match &opts.source {
        Source::Resp { host, port } => run_resp(&mut run, &resp::Resp::new(host, *port, opts.key.clone())),
        Source::Http { base } => run_http(&mut run, &http::Http::new(base, opts.key.clone())),
    };
    run.state.state.running = false;
    run.state.state.mode = "stopped".into();
    run.state.save(true);
    result.map(|()| run.outcome)
}

fn run_resp(run: &mut Run<'_>, resp: &resp::Resp) -> Result<(), CollectError> {
    let mut backoff = BACKOFF_FIRST;
    loop {
        if run.stopped() {
            return Ok(());
        }
        match resp_session(run, resp, &mut backoff) {
            Ok(()) => return Ok(()),
            Err(Interrupt::Fatal(e)) => return Err(e),
            Err(Interrupt::Queue(e)) => run.failed(e, &mut backoff)?,
        }
    }
}

/// One connection's life: subscribe (unless `once`), drain what was queued, then write
/// what is published until stopped or the connection breaks.
///
/// Subscribing first matters: while anyone is subscribed, CLIProxyAPI queues nothing, so
/// once the drain finds the queue empty nothing can be left behind in it.
fn resp_session(run: &mut Run<'_>, resp: &resp::Resp, backoff: &mut Duration) -> Result<(), Interrupt> {
    let mut sub_con = if run.opts.once { None } else { Some(resp.connect()?) };
    let mut subscription = match &mut sub_con {
        Some(con) => Some(resp::Subscription::start(con, POLL)?),
        None => None,
    };
    let mut pop_con = resp.connect()?;
    *backoff = BACKOFF_FIRST;
    run.connected("draining the queue", "draining");
    loop {
        let (items, error) = resp::Resp::pop(&mut pop_con, run.opts.batch)?;
        let full = items.len() >= run.opts.batch;
        run.take(items, Via::Queued).map_err(Interrupt::Fatal)?;
        if let Some(e) = error {
            return Err(Interrupt::Queue(e));
        }
        // What is published meanwhile is written as it comes, not after a long drain: it is
        // off the proxy already, and a subscriber that falls far behind is dropped.
        if let Some(sub) = subscription.as_mut() {
            let (published, error) = sub.ready(run.opts.batch, POLL);
            run.take(published, Via::Published).map_err(Interrupt::Fatal)?;
            if let Some(e) = error {
                return Err(Interrupt::Queue(e));
            }
        }
        if !full || run.stopped() {
            break;
        }
    }
    drop(pop_con);
    let Some(mut sub) = subscription else { return Ok(()) };
    run.connected("subscribed", "subscribed");
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut since = Instant::now();
    loop {
        if run.stopped() {
            held.extend(sub.finish());
            return run.take(held, Via::Published).map_err(Interrupt::Fatal);
        }
        match sub.next() {
            Ok(Some(payload)) => {
                if held.is_empty() {
                    since = Instant::now();
                }
                held.push(payload);
                if held.len() >= run.opts.batch || since.elapsed() >= MAX_HOLD {
                    run.take(std::mem::take(&mut held), Via::Published).map_err(Interrupt::Fatal)?;
                }
            }
            Ok(None) => run.take(std::mem::take(&mut held), Via::Published).map_err(Interrupt::Fatal)?,
            Err(e) => {
                run.take(std::mem::take(&mut held), Via::Published).map_err(Interrupt::Fatal)?;
                return Err(Interrupt::Queue(e));
            }
        }
    }
}

fn run_http(run: &mut Run<'_>, http: &http::Http) -> Result<(), CollectError> {
    let mut backoff = BACKOFF_FIRST;
    let mut checked = false;
    while !run.stopped() {
        if !checked {
            // Proves the key without popping anything.
            match http.statistics_enabled() {
                Ok(enabled) => {
                    checked = true;
                    backoff = BACKOFF_FIRST;
                    if enabled == Some(false) {
                        (run.progress)(Progress::Warning(
                            "the proxy has usage-statistics-enabled: false, so it queues no usage; set it to true \
                             in its config.yaml"
                                .into(),
                        ));
                    }
                    run.connected("polling the management API", "polling");
                }
                Err(e) => {
                    run.failed(e, &mut backoff)?;
                    continue;
                }
            }
        }
        match http.pop(run.opts.batch) {
            Ok(items) => {
                backoff = BACKOFF_FIRST;
                let full = items.len() >= run.opts.batch;
                run.take(items, Via::Polled)?;
                if full {
                    continue;
                }
                if run.opts.once {
                    return Ok(());
                }
                run.sleep(run.opts.interval);
            }
            Err(e) => {
                // After a failure, prove the key again before the next pop.
                checked = false;
                run.failed(e, &mut backoff)?;
            }
        }
    }
    Ok(())
}

/// A lock per queue URL, shared by every git-tally on this machine: a second collector
/// draining the same proxy (the daemon and a manual run, or two repositories) is told so.
struct Guard {
    _file: std::fs::File,
}

fn second_collector_guard(url: &str, opts: &Options, progress: &mut dyn FnMut(Progress<'_>)) -> Option<Guard> {
    use fs2::FileExt;
    use std::io::{Read, Seek, Write};
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let path = std::env::temp_dir().join(format!("git-tally-collect-{hash:016x}.lock"));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).ok()?;
    if file.try_lock_exclusive().is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let how = match (&opts.source, opts.once) {
            (Source::Resp { .. }, false) => {
                "both subscribe, so each gets every new record, but what was queued goes to only one of them"
            }
            _ => "each record goes to only one of them, so each ledger sees part of the traffic",
        };
        progress(Progress::Warning(format!(
            "another git-tally collect is already draining {url} on this machine ({}): {how}. Run one collector per proxy.",
            holder.trim()
        )));
        return None;
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let where_ = opts.state_dir.as_deref().and_then(Path::parent).map(|p| p.display().to_string());
    let _ = write!(file, "pid {}{}", std::process::id(), where_.map(|w| format!(", for {w}")).unwrap_or_default());
    Some(Guard { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Source::parse("redis://127.0.0.1:6390").unwrap(),
            Source::Resp { host: "127.0.0.1".into(), port: 6390 }
        );
        assert_eq!(Source::parse("redis://localhost").unwrap().url(), "redis://localhost:8317");
        assert_eq!(Source::parse("redis://[::1]:7000").unwrap().url(), "redis://[::1]:7000");
        assert_eq!(
            Source::parse("http://127.0.0.1:8317/").unwrap(),
            Source::Http { base: "http://127.0.0.1:8317".into() }
        );
        assert_eq!(Source::parse("HTTP://h/cpa/").unwrap().url(), "http://h/cpa");
        for bad in [
            "127.0.0.1:8317",
            "redis://:secret@127.0.0.1:8317",
            "http://user:pw@h",
            "redis://h:notaport",
            "ftp://h",
            "redis://h:1/db",
            "http://",
        ] {
            let err = Source::parse(bad).unwrap_err();
            assert!(matches!(err, CollectError::Config(_)), "{bad}");
            assert!(!err.to_string().contains("secret") && !err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn a_key_never_shows() {
        let k = Key::new("  sk-management-1\n").unwrap();
        assert_eq!(k.expose(), "sk-management-1");
        assert_eq!(format!("{k:?}"), "Key(hidden)");
        assert!(Key::new(" \n").is_none());
    }
}
