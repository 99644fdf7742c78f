//! `demo`: a throwaway bare remote and two "machines" (clones) record concurrent traffic
//! and sync through the library API; the result is checked against one machine applying
//! every request once, and the merged statistics are shown, with how often the machines
//! raced: upstream integrations, rejected pushes retried, busy locks waited out. The
//! temporary directory is removed at the end unless `--keep` (or `--dir`) says otherwise.

use crate::cli::DemoArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::exit;
use crate::git::{Git, Scope};
use crate::profile;
use crate::sync::Sync as Store;
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

const MACHINES: [&str; 2] = ["laptop", "server"];

fn events(machine: usize, n: usize) -> Vec<Event> {
    let start = Utc::now().fixed_offset() - Duration::days(6);
    let models = [("openai", "gpt-5"), ("anthropic", "claude-sonnet-4-5"), ("google", "gemini-2.5-pro")];
    (0..n)
        .map(|i| {
            let (provider, model) = models[(i * 7 + machine) % 3];
            let ts = start + Duration::seconds(((i * 2 + machine) * 1297) as i64);
            let line = json!({
                "id": format!("{}-{i}", MACHINES[machine]), "timestamp": ts.to_rfc3339(), "provider": provider,
                "model": model, "input_tokens": 200 + (i * 37) % 4000, "output_tokens": 20 + (i * 13) % 900,
                "status": if i % 29 == 0 { 429 } else { 200 }, "cost_usd": ((i % 9) as f64) * 0.001,
            });
            Event::parse(&line.to_string(), ts, MACHINES[machine]).expect("demo events are valid")
        })
        .collect()
}

/// What the machines' syncs saw, counted across both.
#[derive(Default)]
struct Races {
    syncs: AtomicUsize,
    /// Syncs that found the other machine's commits upstream and integrated them.
    integrations: AtomicUsize,
    /// Pushes rejected because the other machine pushed first, then retried.
    push_retries: AtomicUsize,
    /// Syncs retried whole after a transient failure (the lock or the remote busy).
    sync_retries: AtomicUsize,
}

pub fn run(args: &DemoArgs) -> Result<i32> {
    // A temporary directory is removed when `temp` drops, unless kept.
    let (root, temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            (d.clone(), None)
        }
        None => {
            let t =
                tempfile::Builder::new().prefix("git-tally-demo-").tempdir().map_err(|e| Error::io("temp dir", e))?;
            if args.keep {
                (t.keep(), None)
            } else {
                (t.path().to_path_buf(), Some(t))
            }
        }
    };
    let kept = temp.is_none();
    let remote = root.join("remote.git");
    Git::new(&root).init_bare(&remote, "main")?;
    let mut clones: Vec<PathBuf> = Vec::new();
    for m in MACHINES {
        let dir = root.join(m);
        Git::new(&root).clone_into(&format!("file://{}", remote.display()), &dir)?;
        let git = Git::new(&dir);
        for (k, v) in [("user.name", m), ("user.email", &format!("{m}@demo.invalid")), ("commit.gpgsign", "false")] {
            git.config_set(Scope::Local, k, v)?;
        }
        clones.push(dir);
    }
    println!(
        "two machines ({}) share {}; each serves {} requests and syncs as it goes",
        MACHINES.join(", "),
        remote.display(),
        args.events
    );
    let per_machine: Vec<Vec<Event>> = (0..MACHINES.len()).map(|m| events(m, args.events)).collect();
    let races = Races::default();
    let races = &races;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = clones
            .iter()
            .zip(&per_machine)
            .enumerate()
            .map(|(m, (dir, evs))| {
                s.spawn(move || -> Result<()> {
                    let config =
                        Config { device: MACHINES[m].into(), push_retries: 20, ..Config::load(&Git::new(dir))? };
                    let repo = crate::git::Repo::open(dir).map_err(|e| Error::Failed(e.to_string()))?;
                    let store = Store::open_with(repo, config)?;
                    for chunk in evs.chunks(25) {
                        store.ledger.record(chunk.to_vec())?;
                        retry_sync(&store, races)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("demo thread")?;
        }
        Ok(())
    })?;
    for (m, dir) in clones.iter().enumerate() {
        retry_sync(
            &Store::open(dir, |c| {
                c.device = MACHINES[m].into();
                Ok(())
            })?,
            races,
        )?;
    }
    let files: Vec<Vec<u8>> = clones
        .iter()
        .map(|d| std::fs::read(d.join(crate::config::DEFAULT_FILE)))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("usage file", e))?;
    let identical = files.windows(2).all(|w| w[0] == w[1]);
    let p = profile::by_name("tally").expect("native profile");
    let mut all: Vec<&Event> = per_machine.iter().flatten().collect();
    all.sort_by_key(|e| e.timestamp);
    let mut truth = (p.empty)();
    for e in &all {
        (p.apply.expect("native apply"))(&mut truth, e).map_err(|e| Error::Failed(e.to_string()))?;
    }
    let merged: Value = serde_json::from_slice(&files[0]).map_err(|e| Error::Failed(e.to_string()))?;
    let exact = same_within(&merged, &truth);
    println!("both machines hold byte-identical files: {}", if identical { "yes" } else { "NO" });
    println!(
        "the file equals one machine applying all {} requests once: {}",
        all.len(),
        if exact { "yes" } else { "NO" }
    );
    let n = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let count = |k: usize, one: &str, many: &str| if k == 1 { format!("1 {one}") } else { format!("{k} {many}") };
    println!(
        "the machines raced: {}, {} found the other machine's commits upstream and integrated them (merged in-process, no conflict); {} rejected and retried; {} out a busy lock or remote",
        count(n(&races.syncs), "sync", "syncs"),
        count(n(&races.integrations), "of which", "of which"),
        count(n(&races.push_retries), "push was", "pushes were"),
        count(n(&races.sync_retries), "sync waited", "syncs waited"),
    );
    print_stats(&merged);
    if kept {
        println!(
            "\nfiles: {}",
            clones
                .iter()
                .map(|d| d.join(crate::config::DEFAULT_FILE).display().to_string())
                .collect::<Vec<_>>()
                .join("\n       ")
        );
        println!("history: git -C {} log --oneline", clones[0].display());
    } else {
        println!("\nremoved {} (run with --keep to look around)", root.display());
    }
    Ok(if identical && exact { exit::OK } else { exit::CONFLICT })
}

/// Equal, with costs (floats) equal to 1e-9 relative: sums in another order may differ
/// in the last bits (SPEC §4.10).
fn same_within(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_within(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_within(v, w)),
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

fn retry_sync(store: &Store, races: &Races) -> Result<()> {
    let mut last = None;
    for _ in 0..10 {
        races.syncs.fetch_add(1, Ordering::Relaxed);
        match store.sync() {
            Ok(s) => {
                if s.integrated.is_some() {
                    races.integrations.fetch_add(1, Ordering::Relaxed);
                }
                races.push_retries.fetch_add(s.push_retries as usize, Ordering::Relaxed);
                return Ok(());
            }
            Err(e @ Error::Transient(_)) => {
                races.sync_retries.fetch_add(1, Ordering::Relaxed);
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("tried"))
}

fn print_stats(doc: &Value) {
    let t = &doc["totals"];
    println!(
        "\ntotals: {} requests ({} failed), {} tokens in, {} tokens out, ${:.3}",
        t["requests"],
        t["failed"],
        t["input_tokens"],
        t["output_tokens"],
        t["cost_usd"].as_f64().unwrap_or(0.0)
    );
    let mut by_device: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut by_model: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    // The native view's cells: hour → device → provider → api → model → counters.
    fn children(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
        v.as_object().into_iter().flatten()
    }
    for (_, devices) in children(&doc["hours"]) {
        for (device, providers) in children(devices) {
            for (_, models) in children(providers).flat_map(|(_, apis)| children(apis)) {
                for (model, c) in children(models) {
                    let (r, tok) = (c["requests"].as_u64().unwrap_or(0), c["total_tokens"].as_u64().unwrap_or(0));
                    let d = by_device.entry(device.clone()).or_default();
                    d.0 += r;
                    d.1 += tok;
                    let m = by_model.entry(model.clone()).or_default();
                    m.0 += r;
                    m.1 += tok;
                }
            }
        }
    }
    for (title, table) in [("device", &by_device), ("model", &by_model)] {
        println!("{title:<20} {:>9} {:>12}", "requests", "tokens");
        for (k, (r, tok)) in table {
            println!("  {k:<18} {r:>9} {tok:>12}");
        }
    }
}
