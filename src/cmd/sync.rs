//! `record`, `pull`, `sync`, `flush`: thin wrappers over [`Ledger`] and [`Sync`].

use crate::cli::{FlushArgs, RecordArgs};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::exit;
use crate::ledger::{Ledger, NoSource};
use crate::sync::{Plan, Sync, Synced};
use std::io::IsTerminal;

/// "1 event", "3 events".
pub(crate) fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub fn record(
    ledger: &Ledger,
    dir: &std::path::Path,
    proxy: Option<&std::path::Path>,
    args: &RecordArgs,
) -> Result<i32> {
    let device = ledger.name().to_string();
    let now = chrono::Utc::now().fixed_offset();
    // Each line, or `None` for one that is not UTF-8 (an invalid event like any other).
    let lines: Vec<Option<String>> = if !args.events.is_empty() {
        args.events.iter().cloned().map(Some).collect()
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(Error::Usage("give events with --event JSON, or as JSON lines on stdin".into()));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdin.lock(), &mut bytes).map_err(|e| Error::io("stdin", e))?;
        bytes
            .split(|&b| b == b'\n')
            .map(|l| String::from_utf8(l.strip_suffix(b"\r").unwrap_or(l).to_vec()).ok())
            .collect()
    };
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(line) = line else {
            bad.push(format!("line {}: not UTF-8", i + 1));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match Event::parse(line, now, &device) {
            Ok(e) => events.push(e),
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        return Err(Error::Usage(format!(
            "{} invalid; nothing of this batch was recorded:\n  {}",
            plural(bad.len(), "event"),
            bad.join("\n  ")
        )));
    }
    let r = ledger.record(events)?;
    println!(
        "recorded {}{}",
        plural(r.recorded, "event"),
        if r.duplicates > 0 { format!(", {} already recorded (retries)", r.duplicates) } else { String::new() }
    );
    if !ledger.config().enabled {
        // Local only: the usage files are written now.
        let _lock = crate::lock::Lock::acquire(ledger.state().lock_dir(), ledger.config().lock_timeout, "record")?;
        ledger.fold()?;
        for s in ledger.streams() {
            let view = ledger.view(s, &NoSource, false)?;
            ledger.write_view(s, &view, false)?;
        }
        return Ok(exit::OK);
    }
    if let Some(age) = ledger.config().pull_max_age {
        let last = crate::sync::State::read(ledger.state()).last_pull.unwrap_or(0);
        if age.is_zero() || crate::sync::now_secs().saturating_sub(last) >= age.as_secs() {
            pull_in_background(ledger, dir, proxy);
        }
    }
    Ok(exit::OK)
}

/// Pull-before-write without waiting on the network: the events are durable already, so
/// the pull runs as a detached process (its output appended to `.git/tally/pull.log`),
/// unless a sync is fetching or pushing now (it brings the upstream in anyway).
fn pull_in_background(ledger: &Ledger, dir: &std::path::Path, proxy: Option<&std::path::Path>) {
    use std::os::unix::process::CommandExt;
    if crate::lock::Lock::holder(ledger.state().lock_dir()).is_some() {
        return; // a sync or pull is under way
    }
    match crate::lock::Lock::acquire_at(&ledger.state().net_lock(), std::time::Duration::ZERO, "record") {
        Ok(free) => drop(free),
        Err(_) => return, // a sync or pull is fetching or pushing
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let log = std::fs::OpenOptions::new().create(true).append(true).open(ledger.state().root().join("pull.log"));
    let mut c = std::process::Command::new(exe);
    c.arg("-C").arg(dir);
    if let Some(p) = proxy {
        c.arg("--proxy-config").arg(p);
    }
    c.arg("pull").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).process_group(0);
    match log {
        Ok(f) => c.stderr(f),
        Err(_) => c.stderr(std::process::Stdio::null()),
    };
    if let Err(e) = c.spawn() {
        eprintln!("git-tally: the pull before writing did not start (the events are recorded): {e}");
    }
}

pub(crate) fn report(what: &str, r: &Synced) {
    for w in &r.warnings {
        eprintln!("git-tally: warning: {w}");
    }
    let mut parts = Vec::new();
    if r.folded > 0 {
        parts.push(format!("{} folded", plural(r.folded, "event")));
    }
    if r.ingested > 0 {
        parts.push(format!("{} ingested", plural(r.ingested, "application write")));
    }
    if r.committed {
        parts.push("committed".to_string());
    }
    match r.integrated {
        Some(Plan::FastForward) => parts.push("fast-forwarded to the upstream".into()),
        Some(Plan::Replay) => parts.push("replayed onto the upstream".into()),
        Some(Plan::Merge) => parts.push("merged with the upstream".into()),
        Some(Plan::Join) => parts.push("joined with the rewritten upstream".into()),
        Some(Plan::UpToDate) | None => {}
    }
    if r.pushed {
        parts.push(if r.push_retries > 0 {
            format!("pushed after {}", plural(r.push_retries as usize, "retry").replace("retrys", "retries"))
        } else {
            "pushed".into()
        });
    }
    println!("{what}: {}", if parts.is_empty() { "up to date".to_string() } else { parts.join(", ") });
}

pub fn pull(sync: &Sync) -> Result<i32> {
    report("pull", &sync.pull()?);
    Ok(exit::OK)
}

pub fn sync(sync: &Sync) -> Result<i32> {
    report("sync", &sync.sync()?);
    Ok(exit::OK)
}

pub fn flush(sync: &Sync, args: &FlushArgs) -> Result<i32> {
    let timeout = args.timeout.unwrap_or(sync.config().flush_timeout);
    report("flush", &sync.flush(timeout)?);
    Ok(exit::OK)
}
