//! `record`, `pull`, `sync`, `flush`: thin wrappers over [`Store`].

use crate::cli::{FlushArgs, RecordArgs};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::exit;
use crate::store::{Store, Synced};
use std::io::{BufRead, IsTerminal};

pub fn record(store: &Store, args: &RecordArgs) -> Result<i32> {
    let device = store.config().device.clone();
    let now = chrono::Utc::now().fixed_offset();
    let lines: Vec<String> = if !args.events.is_empty() {
        args.events.clone()
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(Error::Usage("give events with --event JSON, or as JSON lines on stdin".into()));
        }
        stdin.lock().lines().collect::<std::io::Result<_>>().map_err(|e| Error::io("stdin", e))?
    };
    let mut events = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
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
            "{} invalid event(s); nothing of this batch was recorded:\n  {}",
            bad.len(),
            bad.join("\n  ")
        )));
    }
    let r = store.record(events)?;
    if let Some(e) = &r.pull_error {
        eprintln!("git-tally: the pull before writing failed (the events are recorded): {e}");
    }
    println!(
        "recorded {} event(s){}",
        r.recorded,
        if r.duplicates > 0 { format!(", {} already recorded (retries)", r.duplicates) } else { String::new() }
    );
    Ok(exit::OK)
}

fn report(what: &str, r: &Synced) {
    let mut parts = Vec::new();
    if r.folded > 0 {
        parts.push(format!("{} event(s) folded", r.folded));
    }
    if r.committed {
        parts.push("committed".to_string());
    }
    if r.integrated {
        parts.push("upstream integrated".to_string());
    }
    if r.pushed {
        parts.push(if r.push_retries > 0 {
            format!("pushed after {} retries", r.push_retries)
        } else {
            "pushed".into()
        });
    }
    println!("{what}: {}", if parts.is_empty() { "up to date".to_string() } else { parts.join(", ") });
}

pub fn pull(store: &Store) -> Result<i32> {
    report("pull", &store.pull()?);
    Ok(exit::OK)
}

pub fn sync(store: &Store) -> Result<i32> {
    report("sync", &store.sync()?);
    Ok(exit::OK)
}

pub fn flush(store: &Store, args: &FlushArgs) -> Result<i32> {
    if !store.config().enabled {
        let n = store.fold()?;
        println!("flush: {n} event(s) folded (tally.enabled is false: no git)");
        return Ok(exit::OK);
    }
    let timeout = args.timeout.unwrap_or(store.config().flush_timeout);
    report("flush", &store.flush(timeout)?);
    Ok(exit::OK)
}
