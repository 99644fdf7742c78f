//! `stats` and `export`: what people look at every day. Reports read the ledger — every
//! device's files in HEAD, this device's own, and the events recorded and not folded yet
//! — or a file named on the command line, and never modify anything.

use super::current_view;
use super::render::{self, Totals};
use crate::cli::{ExportArgs, PeriodArgs, ReportArgs, StatsArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::json;
use crate::period::{self, Period, Spec};
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

/// The period of `--since`/`--until` in the zone of `--timezone` (else TZ, else the
/// system's): a bad TZ or an empty period is a usage error.
fn period_of(p: &PeriodArgs) -> Result<Period> {
    let zone = match p.timezone {
        Some(z) => z,
        None => period::zone(None).map_err(|e| Error::Usage(format!("TZ: {e}; or pass --timezone NAME")))?,
    };
    let period = Period::new(p.since.as_ref(), p.until.as_ref(), zone, chrono::Utc::now())
        .map_err(|e| Error::Usage(e.to_string()))?;
    for n in &period.notes {
        eprintln!("git-tally: note: {n}");
    }
    Ok(period)
}

/// The first and last day (`YYYY-MM-DD`) of the period, for reports whose cells are days. A
/// date given is that day; a time or a duration, the local day it falls on.
fn day_bounds(p: &PeriodArgs, period: &Period) -> (Option<String>, Option<String>) {
    let day = |spec: &Option<Spec>, resolved: Option<chrono::NaiveDate>| match spec {
        Some(Spec::Date(d)) => Some(d.to_string()),
        Some(_) => resolved.map(|d| d.to_string()),
        None => None,
    };
    (day(&p.since, period.first_day()), day(&p.until, period.last_day()))
}

/// Which cells a report keeps: hour cells by the instant they start (exact in any
/// whole-hour zone), day cells by their day; and whether anything is filtered.
fn keep_cells<'a>(p: &'a PeriodArgs, period: &'a Period) -> (impl Fn(&report::Cell) -> bool + 'a, bool) {
    let (since, until) = day_bounds(p, period);
    let filtered = p.since.is_some() || p.until.is_some();
    let keep = move |c: &report::Cell| match report::hour_start(c) {
        Some(t) => period.contains(t),
        None => report::day_in(c, since.as_deref(), until.as_deref()),
    };
    (keep, filtered)
}

/// A report's day rows as dates and renderer totals.
fn day_totals(rows: &[report::Row]) -> Vec<(chrono::NaiveDate, Totals)> {
    rows.iter()
        .filter_map(|r| {
            let d = chrono::NaiveDate::parse_from_str(&r.key, "%Y-%m-%d").ok()?;
            Some((d, Totals::from_counters(&r.counters)))
        })
        .collect()
}

fn today(zone: chrono_tz::Tz) -> chrono::NaiveDate {
    chrono::Utc::now().with_timezone(&zone).date_naive()
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
        if let Some((profile, found)) = read.as_deref().ok().and_then(report::native_cells) {
            return print_stats(args, &path, profile, found, pending);
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
    (totals, mut cells): (Counters, Vec<report::Cell>),
    pending: usize,
) -> Result<i32> {
    let by = By::parse(&args.by).expect("clap checked the value");
    let period = period_of(&args.period)?;
    report::localize(&mut cells, period.zone);
    let (keep, filtered) = keep_cells(&args.period, &period);
    let r = report::report_of(profile, totals.clone(), &cells, by, &keep, filtered);
    if by == By::Api && !cells.iter().any(|c| c.api.is_some()) {
        eprintln!(
            "git-tally: {}: the {} format keeps no api, so there are no rows by api",
            path.display(),
            profile.name
        );
    }
    if args.json {
        let mut v = serde_json::to_value(&r).expect("a report serialises");
        render::round_costs(&mut v);
        v["file"] = Value::from(path.display().to_string());
        v["pending_events"] = Value::from(pending);
        v["timezone"] = Value::from(period.zone.name());
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
        std::mem::forget(cells);
        return Ok(exit::OK);
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let days = report::report_of(profile, totals, &cells, By::Day, &|_| true, false);
    print_table(&r, &day_totals(&days.rows), today(period.zone), path, color, pending);
    // The process ends here: freeing years of parsed cells one by one is wasted time.
    std::mem::forget(cells);
    Ok(exit::OK)
}

fn print_table(
    r: &Report,
    days: &[(chrono::NaiveDate, Totals)],
    today: chrono::NaiveDate,
    path: &Path,
    color: bool,
    pending: usize,
) {
    let (bold, dim, bar_c, reset) =
        if color { ("\x1b[1m", "\x1b[2m", "\x1b[36m", "\x1b[0m") } else { ("", "", "", "") };
    let t = Totals::from_counters(&r.totals);
    let n = render::thousands;
    println!("{bold}{}{reset} {dim}({} profile){reset}", path.display(), r.profile);
    println!(
        "{} requests, {} failed{}; tokens {} in, {} out, {} reasoning, {} cached ({} total); cost {}",
        n(t.requests),
        n(t.failed),
        r.success_rate.map(|s| format!(" ({:.1}% success)", s * 100.0)).unwrap_or_default(),
        n(t.input_tokens),
        n(t.output_tokens),
        n(t.reasoning_tokens),
        n(t.cache_read_tokens),
        n(t.total_tokens),
        render::money(&t)
    );
    if let Some(since) = &r.tracked_since {
        println!("tracked since {since}");
    }
    if pending > 0 {
        println!("{dim}{pending} recorded event(s) not yet folded into the file (git tally sync){reset}");
    }
    let (first, last) = render::last_30_days(days, today);
    println!("last 30 days ({first} to {today})  {bar_c}{}{reset}", render::sparkline(&last));
    println!();
    let rows: Vec<(&str, Totals)> =
        r.rows.iter().map(|row| (row.key.as_str(), Totals::from_counters(&row.counters))).collect();
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(4).max(r.by.len());
    let max = rows.iter().map(|(_, c)| c.requests).max().unwrap_or(1).max(1);
    let tw = rows.iter().map(|(_, c)| n(c.total_tokens).len()).max().unwrap_or(6).max(6);
    println!("{bold}{:<width$}  {:>11}  {:>tw$}  {:>12}{reset}", r.by, "requests", "tokens", "cost");
    let out = std::io::stdout();
    let mut out = out.lock();
    for (key, c) in &rows {
        let bar = "█".repeat(((c.requests * 30) / max) as usize);
        let _ = writeln!(
            out,
            "{key:<width$}  {:>11}  {:>tw$}  {:>12}  {bar_c}{bar}{reset}",
            n(c.requests),
            n(c.total_tokens),
            render::money(c)
        );
    }
    if rows.iter().any(|(_, c)| c.unpriced > 0 || c.cost_estimated_usd > 0.0) {
        let _ = writeln!(out, "{dim}cost: {}{reset}", render::COST_LEGEND);
    }
}

pub fn export(dir: &Path, proxy: Option<&Path>, args: &ExportArgs) -> Result<i32> {
    let period = period_of(&args.period)?;
    let (since, until) = day_bounds(&args.period, &period);
    let (since, until) = (since.as_deref(), until.as_deref());
    let (_, profile, doc, _) = load(dir, proxy, args.file.as_ref())?;
    let mut buf = Vec::new();
    if args.format == "json" {
        let (totals, mut cells) = report::cells(profile, &doc);
        report::localize(&mut cells, period.zone);
        let (keep, filtered) = keep_cells(&args.period, &period);
        let report = |b: By| report::report_of(profile, totals.clone(), &cells, b, &keep, filtered);
        let by = |b: By| report(b).rows;
        let mut v = serde_json::json!({
            "profile": profile.name,
            "timezone": period.zone.name(),
            "totals": report(By::Day).totals,
            "by_day": by(By::Day), "by_model": by(By::Model), "by_provider": by(By::Provider),
            "by_api": by(By::Api), "by_device": by(By::Device),
        });
        render::round_costs(&mut v);
        buf = serde_json::to_vec_pretty(&v).expect("serialises");
        buf.push(b'\n');
    } else {
        let mut w = csv_writer(&mut buf);
        if profile.records.is_some() {
            // One row per record; what the records do not list (the native format keeps the
            // newest ones only) as rows of cells, so that the rows add up to the totals.
            let mut header = vec!["row".to_string(), "requests".to_string()];
            header.extend(report::RECORD_COLUMNS.map(String::from));
            w(&header);
            let (_, mut cells) = report::cells(profile, &doc);
            report::localize(&mut cells, period.zone);
            // The cells and the records of the period only, before what the records do not
            // list is summed per day: a bound inside a day keeps the hours in the period.
            let (keep, _) = keep_cells(&args.period, &period);
            cells.retain(|c| keep(c));
            // A record is in the period when the hour that counts it is (as its cell is).
            let in_period = |ts: &str| match report::hour_of(ts) {
                Some(hour) => period.contains(hour),
                None => since.is_none() && until.is_none(),
            };
            let mut rows = report::record_rows(profile, &doc);
            rows.retain(|row| in_period(&row[1]));
            for row in &rows {
                let mut line = vec!["record".to_string(), "1".to_string()];
                line.extend(row.iter().cloned());
                w(&line);
            }
            if profile.name == "tally" {
                for (key, rest) in report::unlisted(&cells, &rows, period.zone) {
                    let c = &rest;
                    w(&[
                        "cells".to_string(),
                        c.requests.to_string(),
                        String::new(),
                        key.day.clone().unwrap_or_default(),
                        key.device.clone().unwrap_or_default(),
                        key.provider.clone().unwrap_or_default(),
                        key.api.clone().unwrap_or_default(),
                        key.model.clone().unwrap_or_default(),
                        c.failed.to_string(),
                        c.input_tokens.to_string(),
                        c.output_tokens.to_string(),
                        c.reasoning_tokens.to_string(),
                        c.cache_creation_tokens.to_string(),
                        c.cache_read_tokens.to_string(),
                        c.total_tokens.to_string(),
                        render::money_text(c.cost_usd),
                    ]);
                }
            }
        } else {
            // Aggregate-only formats: one row per day, device, provider, api and model.
            let (_, cells) = report::cells(profile, &doc);
            let mut header: Vec<String> = ["day", "device", "provider", "api", "model"].map(String::from).to_vec();
            header.extend(profile::COUNTERS.map(String::from));
            w(&header);
            for c in cells {
                let day = c.day.as_deref().unwrap_or("");
                if since.is_some_and(|s| day < s) || until.is_some_and(|u| day > u) {
                    continue;
                }
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

pub fn html(dir: &Path, proxy: Option<&Path>, args: &ReportArgs) -> Result<i32> {
    let period = period_of(&args.period)?;
    let (since, until) = day_bounds(&args.period, &period);
    let (path, profile, doc, _) = load(dir, proxy, args.file.as_ref())?;
    let (totals, mut cells) = report::cells(profile, &doc);
    report::localize(&mut cells, period.zone);
    let (keep, filtered) = keep_cells(&args.period, &period);
    let by = |b: By| report::report_of(profile, totals.clone(), &cells, b, &keep, filtered);
    let day_report = by(By::Day);
    let days = day_totals(&day_report.rows);
    // Every calendar day from the period's first (or the first with traffic) to its last (or
    // the last with traffic).
    let parse = |d: &Option<String>| d.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let first = parse(&since).or(days.first().map(|d| d.0));
    let last = parse(&until).or(days.last().map(|d| d.0));
    let all_days = match (first, last) {
        (Some(a), Some(b)) => render::every_day(&days, a, b),
        _ => Vec::new(),
    };
    let rows = |b: By| -> Vec<(String, Totals)> {
        by(b).rows.iter().map(|r| (r.key.clone(), Totals::from_counters(&r.counters))).collect()
    };
    let mut notes = Vec::new();
    if let (Some((a, _)), Some((b, _))) = (all_days.first(), all_days.last()) {
        let from = period::day_start(*a, period.zone);
        let to = period::day_start(*b, period.zone) + chrono::Duration::days(1);
        notes.extend(period::offset_note(period.zone, from, to));
    }
    let name = path.display().to_string();
    let subtitle = format!("{} file", profile.name);
    let page = render::html(&render::Page {
        title: &name,
        subtitle: &subtitle,
        totals: &Totals::from_counters(&day_report.totals),
        days: &all_days,
        tables: vec![
            ("model", rows(By::Model)),
            ("provider", rows(By::Provider)),
            ("device", rows(By::Device)),
            ("api", rows(By::Api)),
        ],
        notes,
    });
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
