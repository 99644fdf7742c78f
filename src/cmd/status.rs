//! `status [--json]`: what is pending and how the repository stands. Read-only and
//! lock-free: git runs with GIT_OPTIONAL_LOCKS=0, and the lock is only probed.

use crate::cli::StatusArgs;
use crate::error::Result;
use crate::exit;
use crate::lock::Lock;
use crate::store::Store;
use serde_json::json;

pub fn run(store: &Store, args: &StatusArgs) -> Result<i32> {
    let state = store.state();
    let git = store.git_handle().map(|g| g.clone().with_env("GIT_OPTIONAL_LOCKS", "0"));
    let files: Vec<String> = store.config().files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
    let (mut uncommitted, mut ahead, mut behind, mut branch, mut driver) = (Vec::new(), None, None, None, None);
    if let Some(g) = &git {
        let mut args = vec!["status", "--porcelain", "--untracked-files=all", "--"];
        args.extend(files.iter().map(String::as_str));
        uncommitted = g.run(&args)?.lines().filter_map(|l| l.get(3..).map(str::to_string)).collect();
        branch = g.run_optional(&["symbolic-ref", "--short", "-q", "HEAD"])?;
        if let Ok(counts) = g.run(&["rev-list", "--left-right", "--count", "HEAD...@{upstream}"]) {
            let mut it = counts.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
            ahead = it.next();
            behind = it.next();
        }
        driver = Some(g.config_get("merge.tally.driver")?.is_some());
    }
    let holder = Lock::holder(store.state_dir());
    let report = json!({
        "repository": store.top(),
        "enabled": store.config().enabled,
        "device": store.config().device,
        "files": files,
        "pending_events": store.pending_events(),
        "uncommitted_events": state.uncommitted_events,
        "uncommitted_files": uncommitted,
        "branch": branch,
        "ahead": ahead,
        "behind": behind,
        "last_pull": state.last_pull,
        "last_sync": state.last_sync,
        "last_result": state.last_result,
        "lock_holder": holder,
        "driver_registered": driver,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
        return Ok(exit::OK);
    }
    let when = |t: Option<u64>| t.map_or("never".to_string(), |t| format!("{} s ago", crate_now().saturating_sub(t)));
    println!("repository   {}", store.top().display());
    println!("device       {}", store.config().device);
    println!("files        {}", files.join(", "));
    println!(
        "pending      {} event(s) in the journal, {} folded but not committed",
        store.pending_events(),
        state.uncommitted_events
    );
    if !uncommitted.is_empty() {
        println!("changed      {}", uncommitted.join(", "));
    }
    if let Some(b) = branch {
        let ab = match (ahead, behind) {
            (Some(a), Some(b)) => format!("{a} ahead, {b} behind the upstream"),
            _ => "no upstream".into(),
        };
        println!("branch       {b}: {ab}");
    }
    println!("last pull    {}", when(state.last_pull));
    println!("last sync    {} ({})", when(state.last_sync), state.last_result.as_deref().unwrap_or("-"));
    println!("lock         {}", holder.unwrap_or_else(|| "free".into()));
    if let Some(d) = driver {
        println!("driver       {}", if d { "registered" } else { "not registered: run `git tally install`" });
    }
    Ok(exit::OK)
}

fn crate_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
