//! `stats` and `export`: what people look at every day. Reports read the ledger — every
//! device's files in HEAD, this device's own, and the events recorded and not folded yet
//! — or a file named on the command line, and never modify anything.

use super::current_view;
use crate::cli::{ExportArgs, ReportArgs, StatsArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::json;
use crate::profile::{self, Profile};
use crate::report::{self, By, Counters, Report};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The usage file named (a path outside the configured ones is read as it is), or the
/// configured one as the ledger makes it.
fn locate(
    dir: &Path,
    proxy: Option<&Path>,
    file: Option<&PathBuf>,
) -> Result<(PathBuf, Option<(&'static Profile, Value)>)> {
    if let Some(f) = file {
        let path = if f.is_absolute() { f.clone() } else { dir.join(f) };
        // A configured usage file is its ledger's view; any other file (or one outside a
        // repository) is read as it is.
        if crate::config::discover(dir).is_some() {
            if let Some(found) = current_view(dir, proxy, Some(&path))? {
                return Ok(found);
            }
        }
        return Ok((path, None));
    }

    current_view(dir, proxy, None)?.ok_or_else(|| Error::Usage("no usage file is configured".into()))
}

/// The usage file named, or the configured one, parsed with its profile.
fn load(dir: &Path, proxy: Option<&Path>, file: Option<&PathBuf>) -> Result<(PathBuf, &'static Profile, Value, usize)> {
    match locate(dir, proxy, file)? {
        (path, Some((profile, doc))) => Ok((path, profile, doc, 0)),
        (path, None) => load_path(path, 0),
    }
}

fn load_path(path: PathBuf, pending: usize) -> Result<(PathBuf, &'static Profile, Value, usize)> {
    if path.is_dir() {
        return load_machines(path, pending);
    }
    let read = std::fs::read(&path);
    let doc = parse_file(&path, read)?;
    let profile = profile::detect(&[Some(&doc)]);
    Ok((path, profile, doc, pending))
}

/// A usage file's document from what reading it gave; a corrupt ProxyPal aggregate is
/// rebuilt from its history, with a warning.
fn parse_file(path: &Path, read: std::io::Result<Vec<u8>>) -> Result<Value> {
    let parsed = read
        .map_err(|e| Error::io(path, e))
        .and_then(|bytes| json::parse(&bytes).map_err(|p| Error::Failed(format!("{}: {p}", path.display()))));
    Ok(match parsed {
        Ok(doc) => doc,
        Err(e) => {
            match rebuilt_aggregate(path) {
                Some((doc, n)) => {
                    eprintln!("warning: {e}; showing it rebuilt from history.json ({n} requests; `git tally rebuild` writes it)");
                    doc
                }
                None => return Err(e),
            }
        }
    })
}

/// A directory of per-machine files (seed 001): their records together, as one file.
fn load_machines(dir: PathBuf, pending: usize) -> Result<(PathBuf, &'static Profile, Value, usize)> {
    let usage = profile::by_name("ccu-usage").expect("per-machine profile");
    let mut records = Vec::new();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        let Ok(doc) = json::parse(&bytes) else { continue };
        if profile::detect(&[Some(&doc)]).name == "ccu-usage" {
            let machine = doc["machine_name"].clone();
            for mut r in doc["records"].as_array().cloned().unwrap_or_default() {
                r["machine_name"] = machine.clone();
                records.push(r);
            }
        }
    }
    let mut all = (usage.empty)();
    all["records"] = Value::Array(records);
    Ok((dir, usage, all, pending))
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

/// `stats`: the file is read once; a native one straight into day cells.
pub fn stats(dir: &Path, proxy: Option<&Path>, args: &StatsArgs) -> Result<i32> {
    let pending = 0;
    let (path, view) = locate(dir, proxy, args.file.as_ref())?;
    let (profile, doc) = if let Some(v) = view {
        v
    } else if path.is_dir() {
        let (_, profile, doc, _) = load_machines(path.clone(), pending)?;
        (profile, doc)
    } else {
        // Native files are read without a document tree (years of daily cells).
        let read = std::fs::read(&path);
        if let Some(found) = read.as_deref().ok().and_then(report::native_cells) {
            return print_stats(args, &path, profile::by_name("tally").expect("native profile"), found, pending);
        }
        let doc = parse_file(&path, read)?;
        (profile::detect(&[Some(&doc)]), doc)
    };
    let found = report::cells(profile, &doc);
    // The process ends soon: freeing a large parsed file node by node is wasted time.
    std::mem::forget(doc);
    print_stats(args, &path, profile, found, pending)
}

fn print_stats(
    args: &StatsArgs,
    path: &Path,
    profile: &'static Profile,
    (totals, cells): (Counters, Vec<report::Cell>),
    pending: usize,
) -> Result<i32> {
    let by = By::parse(&args.by).expect("clap checked the value");
    let r = report::report_of(profile, totals.clone(), &cells, by, args.since.as_deref(), args.until.as_deref());
    if args.json {
        let mut v = serde_json::to_value(&r).expect("a report serialises");
        v["file"] = Value::from(path.display().to_string());
        v["pending_events"] = Value::from(pending);
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
        std::mem::forget(cells);
        return Ok(exit::OK);
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let days = report::report_of(profile, totals, &cells, By::Day, None, None);
    print_table(&r, &days, path, color, pending);
    // The process ends here: freeing years of parsed cells one by one is wasted time.
    std::mem::forget(cells);
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
        human(t.cache_read_tokens),
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
        let mut w = csv_writer(&mut buf);
        if profile.records.is_some() {
            // One row per record.
            w(&report::RECORD_COLUMNS.map(String::from));
            for row in report::record_rows(profile, &doc) {
                w(&row);
            }
        } else {
            // Aggregate-only formats: one row per day, device, provider, api and model.
            let (_, cells) = report::cells(profile, &doc);
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar chart of one counter by day, as inline SVG; each bar carries its day and value.
fn chart(rows: &[report::Row], class: &str, title: &str, value: fn(&Counters) -> u64) -> String {
    let (w, h, pad) = (900.0, 220.0, 30.0);
    let max = rows.iter().map(|r| value(&r.counters)).max().unwrap_or(0).max(1) as f64;
    let n = rows.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{title}\">"
    );
    for (i, r) in rows.iter().enumerate() {
        let v = value(&r.counters);
        let bh = (h - 2.0 * pad) * v as f64 / max;
        svg.push_str(&format!(
            "<rect class=\"bar {class}\" data-day=\"{}\" data-value=\"{v}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"><title>{}: {v}</title></rect>",
            esc(&r.key),
            pad + i as f64 * bw + bw * 0.1,
            h - pad - bh,
            bw * 0.8,
            bh,
            esc(&r.key)
        ));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        svg.push_str(&format!(
            "<text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            h - 8.0,
            esc(&first.key),
            w - pad,
            h - 8.0,
            esc(&last.key)
        ));
    }
    svg.push_str("</svg></figure>");
    svg
}

fn table(title: &str, rows: &[report::Row]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut t = format!(
        "<section><h2>{title}</h2><table><tr><th>{title}</th><th>requests</th><th>tokens</th><th>cost</th></tr>"
    );
    for r in rows {
        t.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>${:.2}</td></tr>",
            esc(&r.key),
            r.counters.requests,
            r.counters.total_tokens,
            r.counters.cost_usd
        ));
    }
    t.push_str("</table></section>");
    t
}

pub fn html(dir: &Path, proxy: Option<&Path>, args: &ReportArgs) -> Result<i32> {
    let (path, profile, doc, _) = load(dir, proxy, args.file.as_ref())?;
    let (totals, cells) = report::cells(profile, &doc);
    let by = |b: By| report::report_of(profile, totals.clone(), &cells, b, None, None).rows;
    let days = by(By::Day);
    let t = &totals;
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Usage: {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root {{ color-scheme: light dark; --fg: #1b1f24; --bg: #ffffff; --muted: #59636e; --bar: #2f81f7; --bar2: #8250df; --line: #d0d7de; }}
@media (prefers-color-scheme: dark) {{ :root {{ --fg: #e6edf3; --bg: #0d1117; --muted: #9198a1; --bar: #4493f8; --bar2: #ab7df8; --line: #30363d; }} }}
body {{ font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 2rem auto; max-width: 960px; padding: 0 1rem; }}
h1 {{ font-size: 1.4rem; }} .muted {{ color: var(--muted); }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .card {{ border: 1px solid var(--line); border-radius: 8px; padding: .6rem 1rem; }}
.card b {{ display: block; font-size: 1.3rem; }}
figure {{ margin: 1.5rem 0; }} figcaption {{ font-weight: 600; }} svg {{ width: 100%; height: auto; }}
svg text {{ fill: var(--muted); font-size: 12px; }} .bar.requests {{ fill: var(--bar); }} .bar.tokens {{ fill: var(--bar2); }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>Usage: {name}</h1><p class="muted">{profile} file; tracked since {since}</p>
<div class="cards">
<div class="card"><b id="total-requests">{req}</b>requests</div>
<div class="card"><b>{failed}</b>failed</div>
<div class="card"><b id="total-tokens">{tok}</b>tokens</div>
<div class="card"><b>{inp} / {out}</b>tokens in / out</div>
<div class="card"><b>${cost:.2}</b>cost</div>
</div>
{requests_chart}
{tokens_chart}
{models}{providers}{devices}{apis}
</body></html>
"#,
        name = esc(&path.display().to_string()),
        profile = profile.name,
        since = esc(days.first().map_or("-", |r| r.key.as_str())),
        req = t.requests,
        failed = t.failed,
        tok = t.total_tokens,
        inp = t.input_tokens,
        out = t.output_tokens,
        cost = t.cost_usd,
        requests_chart = chart(&days, "requests", "Requests per day", |c| c.requests),
        tokens_chart = chart(&days, "tokens", "Tokens per day", |c| c.total_tokens),
        models = table("model", &by(By::Model)),
        providers = table("provider", &by(By::Provider)),
        devices = table("device", &by(By::Device)),
        apis = table("api", &by(By::Api)),
    );
    crate::fsutil::write_atomic(&args.html, page.as_bytes())?;
    println!("wrote {}", args.html.display());
    Ok(exit::OK)
}

/// ProxyPal's aggregate.json rebuilt from the history.json beside it (seed 003 §7), and how
/// many requests that history held; `None` when `path` is not such a pair.
fn rebuilt_aggregate(path: &Path) -> Option<(Value, usize)> {
    if path.file_name()? != "aggregate.json" {
        return None;
    }
    let history = json::parse(&std::fs::read(path.with_file_name("history.json")).ok()?).ok()?;
    let aggregate = profile::by_name("proxypal-aggregate").expect("profile exists");
    let mut doc = (aggregate.empty)();
    let requests = history.get("requests")?.as_array()?;
    for r in requests {
        let ms = r.get("timestamp").and_then(Value::as_i64)?;
        let ts = chrono::DateTime::from_timestamp_millis(ms)?.fixed_offset();
        let line = serde_json::json!({
            "id": r.get("id"), "timestamp": ts.to_rfc3339(), "provider": r.get("provider"), "model": r.get("model"),
            "status": r.get("status"), "input_tokens": r.get("tokensIn"), "output_tokens": r.get("tokensOut"),
            "cached_tokens": r.get("tokensCached"), "duration_ms": r.get("durationMs"),
        });
        let e = crate::event::Event::parse(&line.to_string(), ts, "history").ok()?;
        (aggregate.apply.expect("aggregate apply"))(&mut doc, &e).ok()?;
    }
    Some((doc, requests.len()))
}

pub fn rebuild(path: &Path) -> Result<i32> {
    let healthy = std::fs::read(path).ok().is_some_and(|b| json::parse(&b).is_ok());
    if healthy {
        println!("{} is readable; nothing to rebuild", path.display());
        return Ok(exit::OK);
    }
    let (doc, n) = rebuilt_aggregate(path).ok_or_else(|| {
        Error::Usage(format!(
            "{}: not a ProxyPal aggregate.json with a readable history.json beside it",
            path.display()
        ))
    })?;
    let bytes = json::Layout::default().write(&doc);
    crate::fsutil::write_atomic(path, &bytes)?;
    eprintln!("warning: {} was missing or corrupt; rebuilt from history.json ({n} requests)", path.display());
    Ok(exit::OK)
}
