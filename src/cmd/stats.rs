//! `stats` and `export`: what people look at every day. Reports read the usage file
//! (folding nothing: pending journal events are listed separately) and never modify it.

use super::open_store;
use crate::cli::{ExportArgs, StatsArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::json;
use crate::profile::{self, Profile};
use crate::report::{self, By, Counters, Report};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The usage file named, or the configured one, parsed with its profile.
fn load(dir: &Path, proxy: Option<&Path>, file: Option<&PathBuf>) -> Result<(PathBuf, &'static Profile, Value, usize)> {
    let (path, pending) = match file {
        Some(f) => (if f.is_absolute() { f.clone() } else { dir.join(f) }, 0),
        None => {
            let store = open_store(dir, proxy)?;
            (store.file(), store.pending_events())
        }
    };
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let doc = json::parse(&bytes).map_err(|p| Error::Failed(format!("{}: {p}", path.display())))?;
    let profile = profile::detect(&[Some(&doc)]);
    Ok((path, profile, doc, pending))
}

fn human(n: u64) -> String {
    match n {
        n if n >= 10_000_000_000 => format!("{:.1}G", n as f64 / 1e9),
        n if n >= 10_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 100_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values.iter().map(|&v| if v == 0 { ' ' } else { BARS[((v * 7) / max) as usize] }).collect()
}

pub fn stats(dir: &Path, proxy: Option<&Path>, args: &StatsArgs) -> Result<i32> {
    let by = By::parse(&args.by).expect("clap checked the value");
    let (path, profile, doc, pending) = load(dir, proxy, args.file.as_ref())?;
    let (totals, cells) = report::cells(profile, &doc);
    let r = report::report_of(profile, totals.clone(), &cells, by, args.since.as_deref(), args.until.as_deref());
    if args.json {
        let mut v = serde_json::to_value(&r).expect("a report serialises");
        v["file"] = Value::from(path.display().to_string());
        v["pending_events"] = Value::from(pending);
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
        std::mem::forget((doc, cells));
        return Ok(exit::OK);
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let days = report::report_of(profile, totals, &cells, By::Day, None, None);
    print_table(&r, &days, &path, color, pending);
    // The process ends here: freeing years of parsed cells one by one is wasted time.
    std::mem::forget((doc, cells));
    Ok(exit::OK)
}

fn print_table(r: &Report, days: &Report, path: &Path, color: bool, pending: usize) {
    let (bold, dim, bar_c, reset) =
        if color { ("\x1b[1m", "\x1b[2m", "\x1b[36m", "\x1b[0m") } else { ("", "", "", "") };
    let t = &r.totals;
    println!("{bold}{}{reset} {dim}({} profile){reset}", path.display(), r.profile);
    println!(
        "{} requests, {} failed{}; tokens {} in, {} out, {} reasoning, {} cached ({} total); ${:.2}",
        t.requests,
        t.failed,
        r.success_rate.map(|s| format!(" ({:.1}% success)", s * 100.0)).unwrap_or_default(),
        human(t.input_tokens),
        human(t.output_tokens),
        human(t.reasoning_tokens),
        human(t.cached_tokens),
        human(t.total_tokens),
        t.cost_usd
    );
    if let Some(since) = &r.tracked_since {
        println!("tracked since {since}");
    }
    if pending > 0 {
        println!("{dim}{pending} recorded event(s) not yet folded into the file (git tally sync){reset}");
    }
    let last: Vec<u64> = days.rows.iter().rev().take(30).rev().map(|row| row.counters.requests).collect();
    if !last.is_empty() {
        println!("last {} days  {bar_c}{}{reset}", last.len(), sparkline(&last));
    }
    println!();
    let width = r.rows.iter().map(|row| row.key.chars().count()).max().unwrap_or(4).max(r.by.len());
    let max = r.rows.iter().map(|row| row.counters.requests).max().unwrap_or(1).max(1);
    println!("{bold}{:<width$}  {:>9}  {:>10}  {:>9}{reset}", r.by, "requests", "tokens", "cost");
    let out = std::io::stdout();
    let mut out = out.lock();
    for row in &r.rows {
        let c: &Counters = &row.counters;
        let bar = "█".repeat(((c.requests * 30) / max) as usize);
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>10}  {:>9}  {bar_c}{bar}{reset}",
            row.key,
            c.requests,
            human(c.total_tokens),
            format!("${:.2}", c.cost_usd)
        );
    }
}

pub fn export(dir: &Path, proxy: Option<&Path>, args: &ExportArgs) -> Result<i32> {
    let (_, profile, doc, _) = load(dir, proxy, args.file.as_ref())?;
    let mut buf = Vec::new();
    if args.format == "json" {
        let by = |b: By| report::report(profile, &doc, b, None, None).rows;
        let v = serde_json::json!({
            "profile": profile.name,
            "totals": report::report(profile, &doc, By::Day, None, None).totals,
            "by_day": by(By::Day), "by_model": by(By::Model), "by_provider": by(By::Provider),
            "by_api": by(By::Api), "by_device": by(By::Device),
        });
        buf = serde_json::to_vec_pretty(&v).expect("serialises");
        buf.push(b'\n');
    } else {
        let (_, cells) = report::cells(profile, &doc);
        let mut w = csv_writer(&mut buf);
        let mut header: Vec<String> = ["day", "device", "provider", "api", "model"].map(String::from).to_vec();
        header.extend(profile::COUNTERS.map(String::from));
        w(&header);
        for c in cells {
            let mut row = vec![
                c.day.unwrap_or_default(),
                c.device.unwrap_or_default(),
                c.provider.unwrap_or_default(),
                c.api.unwrap_or_default(),
                c.model.unwrap_or_default(),
            ];
            row.extend(c.counters.values());
            w(&row);
        }
    }
    match &args.out {
        Some(p) => crate::fsutil::write_atomic(p, &buf)?,
        None => std::io::stdout().write_all(&buf).map_err(|e| Error::io("stdout", e))?,
    }
    Ok(exit::OK)
}

/// RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_writer(buf: &mut Vec<u8>) -> impl FnMut(&[String]) + '_ {
    move |fields: &[String]| {
        let line: Vec<String> =
            fields
                .iter()
                .map(|f| {
                    if f.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", f.replace('"', "\"\""))
                    } else {
                        f.clone()
                    }
                })
                .collect();
        buf.extend_from_slice(line.join(",").as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}
