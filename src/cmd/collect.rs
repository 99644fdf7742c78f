//! `collect cliproxyapi`: finds the URL and the key, opens this repository's ledger, runs
//! [`crate::collect::run`] until the queue is drained (`--once`) or SIGTERM/SIGINT, and
//! prints one line per batch on stderr.

use crate::cli::CollectArgs;
use crate::collect::{self, Options, Progress, Source};
use crate::config::{Config, ProxyConfig};
use crate::error::{Error, Result};
use crate::exit;
use crate::ledger::Ledger;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub fn run(dir: &Path, proxy: Option<&Path>, args: &CollectArgs) -> Result<i32> {
    let mut config = Config::load_at(dir)?;
    if let Some(p) = proxy {
        ProxyConfig::read(p)?.apply(&mut config)?;
    }
    let url = args.url.clone().or_else(|| config.collect.clone()).ok_or_else(|| {
        Error::Usage(
            "no queue to collect from: give --url redis://127.0.0.1:8317 (the proxy's address), or set git config \
             tally.collect"
                .into(),
        )
    })?;
    let (mut store, opts) = prepare(dir, config, &url, args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| Error::io("signal handler", e))?;
    }
    let url = opts.source.url();
    let outcome = collect_into(&opts, &mut store, &stop)?;
    println!(
        "collected {} record(s) from {url}: {} new, {} already recorded{}",
        outcome.received,
        outcome.recorded,
        outcome.duplicates,
        if outcome.invalid > 0 { format!(", {} invalid (skipped)", outcome.invalid) } else { String::new() }
    );
    // A record skipped as invalid is lost to the ledger: a one-shot run says so in its code.
    Ok(if args.once && outcome.invalid > 0 { exit::CONFLICT } else { exit::OK })
}

/// The ledger and the collector's options for `url`: the key found, the write path made
/// never to wait on the network.
pub(crate) fn prepare(dir: &Path, mut config: Config, url: &str, args: &CollectArgs) -> Result<(Ledger, Options)> {
    // The collector must keep reading the proxy: recording never waits on the network (a
    // sync is the daemon's job).
    config.pull_max_age = None;
    let source = Source::parse(url)?;
    let store = super::ledger_with(dir, config.clone())?;
    let (key, warnings) = collect::load_key(args.key_file.as_deref(), config.collect_key_file.as_deref(), store.top())?;
    for w in warnings {
        eprintln!("git-tally collect: warning: {w}");
    }
    let opts = Options {
        source,
        key,
        once: args.once,
        batch: args.batch as usize,
        interval: args.interval,
        keep: args.keep.clone(),
        device: config.device.clone(),
        state_dir: Some(store.state().root().to_path_buf()),
    };
    Ok((store, opts))
}

/// Runs the collector into the ledger until `stop` (or the queue is drained, `--once`),
/// one line per batch on stderr. Events taken from the queue that could not be recorded
/// are printed, to be recorded by hand.
pub(crate) fn collect_into(opts: &Options, store: &mut Ledger, stop: &AtomicBool) -> Result<collect::Outcome> {
    let url = opts.source.url();
    collect::run(opts, store, stop, &mut |p| print_progress(&url, p)).map_err(|e| {
        if let collect::CollectError::Write { unwritten, .. } = &e {
            eprintln!(
                "git-tally collect: {} event(s) were taken from the queue but not recorded; once the ledger can be \
                 written again, record them with `git tally record` from these lines:",
                unwritten.len()
            );
            for line in unwritten {
                eprintln!("{line}");
            }
        }
        Error::from(e)
    })
}

fn print_progress(url: &str, p: Progress<'_>) {
    match p {
        Progress::Connected { url, what } => eprintln!("git-tally collect: {url}: {what}"),
        Progress::Batch(b) => {
            let mut parts = vec![format!("{} new", b.new)];
            if b.duplicates > 0 {
                parts.push(format!("{} already recorded", b.duplicates));
            }
            if b.invalid > 0 {
                parts.push(format!("{} invalid", b.invalid));
            }
            if b.control > 0 {
                parts.push(format!("{} control message(s)", b.control));
            }
            let newest = b
                .newest
                .map(|t| format!(", newest {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                .unwrap_or_default();
            eprintln!(
                "git-tally collect: {} {} record(s): {}{newest} ({} ms)",
                b.received,
                b.via.map_or("", |v| v.name()),
                parts.join(", "),
                b.took.as_millis()
            );
        }
        Progress::Invalid { position, of, via, error } => {
            eprintln!("git-tally collect: skipped {} record {position} of {of}: {error}", via.name())
        }
        Progress::Retrying { error, delay } => {
            eprintln!("git-tally collect: {url}: {error}; trying again in {}", humantime::format_duration(delay))
        }
        Progress::WriteRetrying { error, held, delay } => eprintln!(
            "git-tally collect: could not record {held} event(s) ({error}); holding them, trying again in {}",
            humantime::format_duration(delay)
        ),
        Progress::Warning(w) => eprintln!("git-tally collect: warning: {w}"),
    }
}
