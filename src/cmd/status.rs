//! `status [--json]`: what is pending and how the repository stands. Read-only and
//! lock-free: it reads files and refs in-process, and only probes the lock.

use crate::cli::StatusArgs;
use crate::error::Result;
use crate::exit;
use crate::lock::Lock;
use crate::sync::State;
use serde_json::json;
use std::path::Path;

/// Seconds since the epoch as RFC 3339 (UTC).
fn rfc3339(t: Option<u64>) -> Option<String> {
    t.and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub fn run(dir: &Path, proxy: Option<&Path>, args: &StatusArgs) -> Result<i32> {
    let ledger = super::open_ledger(dir, proxy)?;
    let state = State::read(ledger.state());
    let files: Vec<String> = ledger.streams().iter().map(|s| s.file.clone()).collect();
    let pending = ledger.journal().count();
    let uncommitted: usize = ledger.streams().iter().map(|s| crate::ledger::dirty_count(ledger.state(), &s.file)).sum();
    let (mut branch, mut upstream, mut ahead, mut behind, mut driver) = (None, None, None, None, None);
    if ledger.config().enabled {
        if let Ok(s) = crate::sync::Sync::open(dir, |c| super::apply_proxy(c, proxy)) {
            let head = s.repo.head().ok();
            branch = head.as_ref().map(|h| h.name().to_string());
            if let Ok(up) = s.upstream() {
                if let (Some(h), Ok(Some(u))) = (head.as_ref().and_then(|h| h.commit), s.repo.resolve(&up.tracking)) {
                    let base = s.repo.merge_base(h, u).ok().flatten();
                    ahead = s.repo.commits_since(base, h).ok().map(|c| c.len());
                    behind = s.repo.commits_since(base, u).ok().map(|c| c.len());
                }
                upstream = Some(up);
            }
            driver = Some(s.repo.config("merge.tally.driver").is_some());
        }
    }
    let holder = Lock::holder(ledger.state().lock_dir());
    let collector = crate::collect::state::CollectState::read(ledger.state().root());
    let orphans: Vec<serde_json::Value> = ledger
        .orphans()
        .iter()
        .map(|s| json!({"file": s.file, "uncommitted_files": crate::ledger::dirty_count(ledger.state(), &s.file)}))
        .collect();
    let report = json!({
        "repository": ledger.top(),
        "enabled": ledger.config().enabled,
        "device": ledger.name(),
        "device_key": ledger.key(),
        "files": files,
        "pending_events": pending,
        "uncommitted_files": uncommitted,
        "branch": branch,
        "upstream": upstream,
        "ahead": ahead,
        "behind": behind,
        "last_pull": rfc3339(state.last_pull),
        "last_sync": rfc3339(state.last_sync),
        "last_result": state.last_result,
        "lock_holder": holder,
        "driver_registered": driver,
        "collector": collector,
        "unconfigured_files": orphans,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
        return Ok(exit::OK);
    }
    let ago = |t: Option<u64>| match t {
        None => "never".to_string(),
        Some(t) => format!("{} s ago", crate::sync::now_secs().saturating_sub(t)),
    };
    println!("repository   {}", ledger.top().display());
    println!("device       {} ({})", ledger.name(), ledger.key());
    println!("files        {}", files.join(", "));
    for o in ledger.orphans() {
        println!(
            "not in tally.file: {f} — this device's usage of it is kept (sync commits it); `git tally move {f}` counts it in the configured file, `git config --add tally.file {f}` reports it again",
            f = o.file
        );
    }

    println!(
        "pending      {} in the journal, {} changed since the last commit",
        super::sync::plural(pending, "event"),
        super::sync::plural(uncommitted, "ledger file")
    );
    if let Some(b) = &branch {
        let ab = match (&upstream, ahead, behind) {
            (Some(u), Some(a), Some(bh)) => format!("{a} ahead, {bh} behind {}/{}", u.remote, u.branch),
            (Some(u), _, _) => format!("upstream {}/{} (not fetched yet)", u.remote, u.branch),
            _ => "no upstream".into(),
        };
        println!("branch       {b}: {ab}");
    }
    println!("last pull    {}", ago(state.last_pull));
    println!("last sync    {} ({})", ago(state.last_sync), state.last_result.as_deref().unwrap_or("-"));
    println!("lock         {}", holder.unwrap_or_else(|| "free".into()));
    if let Some(d) = driver {
        println!("driver       {}", if d { "registered" } else { "not registered: run `git tally install`" });
    }
    if let Some(c) = &collector {
        // `running` is what the collector last wrote; a killed one could not say otherwise.
        let alive = c.running && Path::new(&format!("/proc/{}", c.pid)).exists();
        println!(
            "collector    {} {} ({}): {} received, {} new, {} already recorded{}; newest record {}",
            match (c.running, alive) {
                (true, true) => "running,",
                (true, false) => "gone (its process ended without stopping);",
                _ => "stopped;",
            },
            c.url,
            c.mode,
            c.received,
            c.recorded,
            c.duplicates,
            if c.invalid > 0 { format!(", {} invalid", c.invalid) } else { String::new() },
            c.last_record.as_deref().unwrap_or("-")
        );
        if let Some(e) = &c.last_error {
            println!("             last error at {}: {}", e.at, e.message);
        }
    }

    Ok(exit::OK)
}
