//! `daemon`: syncs every `tally.syncInterval`, and soon after changes under the debounce
//! rules (per usage file: its own writes or `record`'s journal); flushes and exits 0 on
//! SIGTERM/SIGINT. A transient failure (remote down) is logged and retried with backoff,
//! never a reason to exit. One line per sync on stderr.

use crate::debounce::Debouncer;
use crate::error::{Error, Result};
use crate::exit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    if m.is_dir() {
        // The journal: its segments' sizes and times.
        let mut latest = SystemTime::UNIX_EPOCH;
        let mut size = 0;
        for e in std::fs::read_dir(p).ok()?.flatten() {
            if let Ok(m) = e.metadata() {
                latest = latest.max(m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                size += m.len() + 1;
            }
        }
        return Some((latest, size));
    }
    Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

struct Watch {
    file: PathBuf,
    journal: PathBuf,
    seen: (Stamp, Stamp),
}

impl Watch {
    fn now(&self) -> (Stamp, Stamp) {
        (stamp(&self.file), stamp(&self.journal))
    }
}

pub fn run(dir: &Path, proxy: Option<&Path>) -> Result<i32> {
    let store = super::open_sync(dir, proxy)?;
    let config = store.config().clone();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| Error::io("signal handler", e))?;
    }
    // The collector (tally.collect): its own thread and ledger, stopped with the daemon
    // and joined before the last flush, so that what it wrote is pushed.
    let collector = match &config.collect {
        Some(url) => {
            let args = crate::cli::CollectArgs {
                from: crate::cli::CollectFrom::Cliproxyapi,
                url: Some(url.clone()),
                key_file: None,
                once: false,
                batch: crate::collect::DEFAULT_BATCH,
                interval: Duration::from_secs(1),
                keep: Vec::new(),
            };
            let (mut ledger, opts) = super::collect::prepare(dir, config.clone(), url, &args)?;
            let stop = Arc::clone(&stop);
            eprintln!("git-tally daemon: collecting from {}", opts.source.url());
            Some(std::thread::spawn(move || match super::collect::collect_into(&opts, &mut ledger, &stop) {
                Ok(o) => eprintln!("git-tally daemon: the collector stopped: {} record(s) received", o.received),
                Err(e) => eprintln!("git-tally daemon: the collector stopped: {e} (syncing goes on)"),
            }))
        }
        None => None,
    };
    let journal = store.ledger.state().journal_dir();
    let mut watches: Vec<Watch> = store
        .ledger
        .streams()
        .iter()
        .map(|s| {
            let file = store.repo.top().join(&s.file);
            Watch { seen: (stamp(&file), stamp(&journal)), file, journal: journal.clone() }
        })
        .collect();
    let mut debounce: Debouncer<PathBuf, ()> = Debouncer::new(config.debounce);
    let start = Instant::now();
    let mut last_interval = Duration::ZERO;
    let mut retry_at: Option<Duration> = None;
    let mut backoff = Duration::from_secs(5);
    let mut pending = false;
    eprintln!(
        "git-tally daemon: {} ({}; debounce {:?}, interval {})",
        store.repo.top().display(),
        config.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
        config.debounce,
        if config.sync_interval.is_zero() {
            "only at shutdown".to_string()
        } else {
            format!("{:?}", config.sync_interval)
        }
    );
    let sync = |why: &str, watches: &mut Vec<Watch>| -> std::result::Result<(), Error> {
        let t = Instant::now();
        let result = store.sync();
        for w in watches.iter_mut() {
            w.seen = w.now();
        }
        match &result {
            Ok(r) => eprintln!(
                "git-tally daemon: sync ({why}): {} event(s), {}{} in {} ms",
                r.folded,
                if r.pushed { "pushed" } else { "up to date" },
                if r.integrated.is_some() { ", upstream integrated" } else { "" },
                t.elapsed().as_millis()
            ),
            Err(e) => eprintln!("git-tally daemon: sync ({why}) failed after {} ms: {e}", t.elapsed().as_millis()),
        }
        result.map(drop)
    };
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        let mut due: Vec<String> = Vec::new();
        for w in &mut watches {
            let current = w.now();
            if current != w.seen {
                w.seen = current;
                if debounce.change(w.file.clone(), (), now).is_some() {
                    due.push(format!("{} changed", w.file.display()));
                }
            }
        }
        due.extend(debounce.tick(now).into_iter().map(|(f, _)| format!("{} changed, debounced", f.display())));
        if !config.sync_interval.is_zero() && now >= last_interval + config.sync_interval {
            last_interval = now;
            due.push("interval".into());
        }
        if !due.is_empty() || (pending && retry_at.is_some_and(|r| now >= r)) {
            let why = if due.is_empty() { "retry".to_string() } else { due.join("; ") };
            match sync(&why, &mut watches) {
                Ok(()) => {
                    pending = false;
                    retry_at = None;
                    backoff = Duration::from_secs(5);
                }
                Err(_) => {
                    // Remote down, lock busy, a conflict to resolve: keep running, try again.
                    pending = true;
                    retry_at = Some(now + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(c) = collector {
        let _ = c.join(); // it writes what it holds, then returns
    }
    let queued = debounce.shutdown();

    eprintln!("git-tally daemon: stopping; flushing ({} queued change(s))", queued.len());
    let t = Instant::now();
    match store.flush(config.flush_timeout) {
        Ok(r) => eprintln!(
            "git-tally daemon: flush: {} event(s), {} in {} ms",
            r.folded,
            if r.pushed { "pushed" } else { "up to date" },
            t.elapsed().as_millis()
        ),
        Err(e) => eprintln!("git-tally daemon: flush failed (committed locally where possible): {e}"),
    }
    Ok(exit::OK)
}
