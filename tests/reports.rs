//! Reports and data: stats against each format's own aggregates, clear-history and reset
//! merged with another machine's traffic, restore, and the Claude Code import.

use crate::common::{read_json, Env};
use crate::sync::{cluster, event_line};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const FILE: &str = "usage/usage.json";

fn stats_json(env: &Env, file: &Path, by: &str) -> Value {
    let out = env.tally(env.path()).args(["stats", "--json", "--by", by, file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `stats --json` of the repository at `dir`: the ledger, every device, recorded events too.
pub(crate) fn stats_doc(env: &Env, dir: &Path) -> Value {
    let out = env.tally(dir).args(["stats", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rows(report: &Value, field: &str) -> HashMap<String, u64> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_string(), r[field].as_u64().unwrap()))
        .collect()
}

#[test]
fn stats_reproduce_the_cliproxyapi_export() {
    let env = Env::new();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi-export.json");
    let doc = read_json(&file)["usage"].clone();
    let r = stats_json(&env, &file, "day");
    assert_eq!(r["totals"]["requests"], doc["total_requests"]);
    assert_eq!(r["totals"]["failed"], doc["failure_count"]);
    assert_eq!(r["totals"]["total_tokens"], doc["total_tokens"]);
    let by_day = |k: &str| {
        doc[k].as_object().unwrap().iter().map(|(d, n)| (d.clone(), n.as_u64().unwrap())).collect::<HashMap<_, _>>()
    };
    assert_eq!(rows(&r, "requests"), by_day("requests_by_day"));
    assert_eq!(rows(&r, "total_tokens"), by_day("tokens_by_day"));
    let by_model = stats_json(&env, &file, "model");
    let models: u64 = rows(&by_model, "requests").values().sum();
    assert_eq!(models, doc["total_requests"].as_u64().unwrap());
    // The file is never modified by a report.
    let before = std::fs::read(&file).unwrap();
    env.tally(env.path()).args(["export", "--format", "csv", file.to_str().unwrap()]).assert().success();
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn stats_reproduce_proxypal_and_native_aggregates() {
    let env = Env::new();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let agg = cases.join("proxypal-aggregate/both-add/expected.json");
    let doc = read_json(&agg);
    let r = stats_json(&env, &agg, "day");
    assert_eq!(r["totals"]["requests"], doc["totalRequests"]);
    let want: HashMap<String, u64> = doc["requestsByDay"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["label"].as_str().unwrap().to_string(), e["value"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows(&r, "requests"), want);
    let native = cases.join("tally/both-add/expected.json");
    let doc = read_json(&native);
    let r = stats_json(&env, &native, "day");
    assert_eq!(r["totals"]["requests"], doc["totals"]["requests"]);
    assert_eq!(r["totals"]["total_tokens"], doc["totals"]["total_tokens"]);
    // Cells are UTC hours; the report's days here are UTC days.
    let mut want: HashMap<String, u64> = HashMap::new();
    for (hour, devices) in doc["hours"].as_object().unwrap() {
        for providers in devices.as_object().unwrap().values() {
            for apis in providers.as_object().unwrap().values() {
                for models in apis.as_object().unwrap().values() {
                    for cell in models.as_object().unwrap().values() {
                        *want.entry(hour[..10].to_string()).or_default() += cell["requests"].as_u64().unwrap();
                    }
                }
            }
        }
    }
    assert_eq!(rows(&r, "requests"), want);
    let since = stats_json(&env, &native, "day");
    assert!(since["tracked_since"].is_string());
    let out = env
        .tally(env.path())
        .args(["stats", "--json", "--since", "2026-10-04", native.to_str().unwrap()])
        .output()
        .unwrap();
    let limited: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows(&limited, "requests").keys().all(|d| d.as_str() >= "2026-10-04"));
}

fn two_machines_then(op: &str) -> (Value, Vec<String>) {
    let c = cluster(2, "tally");
    let (a, b) = (&c.clones[0], &c.clones[1]);
    let base: Vec<String> = (0..20).map(|i| event_line(0, i)).collect();
    c.record(a, &base);
    let out = c.tally(a).arg("sync").output().unwrap();
    assert!(out.status.success());
    assert!(c.tally(b).arg("sync").output().unwrap().status.success());
    // Not on a terminal: reset and clear-history need --yes.
    assert!(c.tally(a).args([op, "--yes"]).output().unwrap().status.success(), "{op}");
    let new: Vec<String> = (0..10).map(|i| event_line(1, i)).collect();
    c.record(b, &new);
    for dir in [a, b, a] {
        let out = c.tally(dir).arg("sync").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read(a.join(FILE)).unwrap(), std::fs::read(b.join(FILE)).unwrap());
    let doc = read_json(&a.join(FILE));
    let ids = doc["recent"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    (doc, ids)
}

#[test]
fn clear_history_keeps_aggregates_and_merges_with_new_traffic() {
    let (doc, ids) = two_machines_then("clear-history");
    assert_eq!(doc["totals"]["requests"], 30, "aggregates = before + 10");
    let want: Vec<String> = (0..10).map(|i| format!("m1-e{i}")).collect();
    let mut got = ids;
    got.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(got, want_sorted, "records = only the other machine's new ones");
}

#[test]
fn reset_merges_as_a_reset() {
    let (doc, ids) = two_machines_then("reset");
    assert_eq!(doc["totals"]["requests"], 10);
    assert_eq!(ids.len(), 10);
}

#[test]
fn restore_round_trips_and_stays_inside_the_repository() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let mut versions = Vec::new();
    for i in 0..4 {
        c.record(dir, &[event_line(0, i)]);
        assert!(c.tally(dir).arg("sync").output().unwrap().status.success());
        versions.push(std::fs::read(dir.join(FILE)).unwrap());
    }
    let out = c.tally(dir).args(["restore", "--at", "HEAD~3", "--to", "backup/usage-then.json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dir.join("backup/usage-then.json")).unwrap(), versions[0], "byte for byte");
    let out = c.tally(dir).args(["restore", "--at", "HEAD~3", "--to", "../outside.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!c.env.path().join("outside.json").exists());
    // Nor through a directory that is a link to somewhere else.
    let elsewhere = c.env.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();
    for to in ["link/escaped.json", "link/new/escaped.json"] {
        let out = c.tally(dir).args(["restore", "--at", "HEAD~3", "--to", to]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{to}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("outside the repository"));
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written there");
    let out = c.tally(dir).args(["restore", "--at", "HEAD~3", "--to", "backup/usage-then.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no overwrite without --force");
    let out = c.tally(dir).args(["restore", "--at", "HEAD~2", "--force"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), versions[1]);
    let out = c.tally(dir).arg("history").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 5);
}

#[test]
fn importing_the_claude_code_sample_counts_a_streamed_message_once() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let data = c.env.path().join("claude");
    std::fs::create_dir_all(data.join("projects/-home-dev")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude-code-sample.jsonl"),
        data.join("projects/-home-dev/s.jsonl"),
    )
    .unwrap();
    let out = c.tally(dir).args(["import", "claude-code", data.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = crate::reports::stats_doc(&c.env, dir);
    assert_eq!(doc["totals"]["requests"], 2, "two requests; the streamed one once");
    assert_eq!(doc["totals"]["output_tokens"], 418 + 96, "with the larger output tokens");
}

/// The generator's shape (seed tools/gen_claude_logs.py): files of assistant lines, a third
/// of the messages streamed over several lines with growing output tokens.
fn generate(dir: &Path, files: usize, lines: usize) -> (u64, u64) {
    let mut seed: u64 = 7;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let (mut requests, mut tokens) = (0u64, 0u64);
    let mut t = chrono::DateTime::parse_from_rfc3339("2026-10-01T08:00:00Z").unwrap();
    for f in 0..files {
        let proj = dir.join(format!("projects/-home-dev-proj{}", f % 7));
        std::fs::create_dir_all(&proj).unwrap();
        let mut text = String::new();
        let mut n = 0;
        let mut m = 0;
        while n < lines {
            m += 1;
            t += chrono::Duration::seconds(1 + rand(300) as i64);
            let (inp, cc, cr) = (1 + rand(5000), rand(20000), rand(80000));
            let parts = [1, 1, 2, 3][rand(4) as usize];
            let mut last = 0;
            for k in 0..parts {
                let out = if k + 1 < parts { 1 + rand(50) } else { 50 + rand(4000) };
                last = out;
                text.push_str(&serde_json::json!({
                    "type": "assistant", "sessionId": format!("s{f}"), "timestamp": t.to_rfc3339(), "requestId": format!("req_{f}_{m}"),
                    "message": {"id": format!("msg_{f}_{m}"), "model": "claude-sonnet-4-5", "role": "assistant",
                        "content": [{"type": "text", "text": "secret words"}],
                        "usage": {"input_tokens": inp, "cache_creation_input_tokens": cc, "cache_read_input_tokens": cr, "output_tokens": out}}
                }).to_string());
                text.push('\n');
                n += 1;
            }
            if rand(5) == 0 {
                text.push_str(&format!("{{\"type\":\"user\",\"timestamp\":\"{}\",\"message\":{{\"role\":\"user\",\"content\":\"go on\"}}}}\n", t.to_rfc3339()));
            }
            requests += 1;
            tokens += inp + cc + cr + last;
        }
        std::fs::write(proj.join(format!("session-{f}.jsonl")), text).unwrap();
    }
    (requests, tokens)
}

#[test]
fn importing_a_generated_tree_matches_an_independent_count_and_is_incremental() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let data = c.env.path().join("claude");
    let (requests, tokens) = generate(&data, 200, 1000);
    let snapshot = || -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
        let mut files = Vec::new();
        for d in std::fs::read_dir(data.join("projects")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                let meta = std::fs::metadata(&p).unwrap();
                files.push((p.clone(), std::fs::read(&p).unwrap(), meta.modified().unwrap()));
            }
        }
        files.sort();
        files
    };
    let before = snapshot();
    let import = || {
        let out = c.tally(dir).args(["import", "claude-code", data.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    import();
    assert!(c.tally(dir).arg("sync").output().unwrap().status.success());
    let doc = read_json(&dir.join(FILE));
    assert_eq!(doc["totals"]["requests"], requests);
    assert_eq!(doc["totals"]["total_tokens"], tokens);
    assert_eq!(snapshot(), before, "sources untouched: bytes and mtimes");
    assert!(!std::fs::read_to_string(dir.join(FILE)).unwrap().contains("secret words"), "no content copied");
    let second = import();
    assert!(second.contains(" 0 bytes read") && second.contains(" 0 recorded"), "{second}");
    // New lines in one transcript: only they are read.
    let f = &before[0].0;
    let extra = "{\"type\":\"assistant\",\"timestamp\":\"2026-12-01T00:00:00Z\",\"requestId\":\"req_new\",\"message\":{\"id\":\"msg_new\",\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}}\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(f)
        .and_then(|mut h| std::io::Write::write_all(&mut h, extra.as_bytes()))
        .unwrap();
    let third = import();
    assert!(third.contains(&format!(" {} bytes read", extra.len())) && third.contains(" 1 recorded"), "{third}");
}

#[test]
fn diff_and_textconv_show_the_semantic_change() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    // The usage file is a view; committed too, git's own diff of it uses the textconv.
    c.env.git(dir, &["config", "tally.commitView", "true"]);
    assert!(c.tally(dir).arg("install").output().unwrap().status.success());
    c.record(dir, &[event_line(0, 0)]);
    assert!(c.tally(dir).arg("sync").output().unwrap().status.success());
    c.record(dir, &[event_line(0, 1), event_line(0, 2)]);
    assert!(c.tally(dir).arg("sync").output().unwrap().status.success());
    let out = c.tally(dir).args(["diff", "HEAD~1", "HEAD"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("+2 requests") && text.contains("-    \"requests\": 1,"), "{text}");
    // git's own diff goes through the textconv driver: canonical, sorted keys ("devices"
    // before "format", where the file itself has "format" first).
    let raw = std::fs::read_to_string(dir.join(FILE)).unwrap();
    assert!(raw.find("\"format\"").unwrap() < raw.find("\"devices\"").unwrap());
    let patch = c.env.git(dir, &["log", "-p", "-1", "-U10000", "--", FILE]);
    let (devices, format) = (patch.find("\"devices\"").unwrap(), patch.find("\"format\"").unwrap());
    assert!(devices < format, "{patch}");
}

/// The HTML report in headless Chromium (Debian `chromium`; .ci/run installs it): one bar
/// per day with the right value, read back from the rendered DOM; a screenshot is left in
/// target/tmp for people to look at.
#[test]
fn the_html_report_renders_one_bar_per_day() {
    if !crate::common::have("chromium", "reports::the_html_report_renders_one_bar_per_day") {
        return;
    }
    let env = Env::new();
    let usage = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/tally/both-add/expected.json");
    let page = env.path().join("report.html");
    let out = env
        .tally(env.path())
        .args(["report", "--timezone", "UTC", "--html", page.to_str().unwrap(), usage.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "self-contained: no network references");
    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium (Debian package chromium; .ci/run installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    let bars: Vec<(String, u64)> = dom
        .split("<rect class=\"bar requests\"")
        .skip(1)
        .map(|r| {
            let attr =
                |name: &str| r.split(&format!("{name}=\"")).nth(1).unwrap().split('"').next().unwrap().to_string();
            (attr("data-day"), attr("data-value").parse().unwrap())
        })
        .collect();
    let doc = read_json(&usage);
    // Cells are UTC hours; the page's days are UTC days here (--timezone UTC).
    let mut by_day: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (hour, devices) in doc["hours"].as_object().unwrap() {
        let n: u64 = devices
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .flat_map(|a| a.as_object().unwrap().values())
            .flat_map(|m| m.as_object().unwrap().values())
            .map(|c| c["requests"].as_u64().unwrap())
            .sum();
        *by_day.entry(hour[..10].to_string()).or_default() += n;
    }
    let first = chrono::NaiveDate::parse_from_str(by_day.keys().next().unwrap(), "%Y-%m-%d").unwrap();
    let last = chrono::NaiveDate::parse_from_str(by_day.keys().last().unwrap(), "%Y-%m-%d").unwrap();
    let mut want: Vec<(String, u64)> = first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| (d.to_string(), by_day.get(&d.to_string()).copied().unwrap_or(0)))
        .collect();
    want.sort();
    assert_eq!(bars, want, "one bar per day, in order, with the day's requests");
    assert!(dom.contains(&format!(">{}</b>", doc["totals"]["requests"])), "the totals are on the page");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    chromium(&["--window-size=1000,900", &format!("--screenshot={}", shot.display())]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot in {}", shot.display());
}

#[test]
fn the_per_machine_layout_keeps_a_file_per_device_and_a_manifest() {
    let c = cluster(2, "tally");
    for dir in &c.clones {
        c.env.git(dir, &["config", "--unset", "tally.profile"]);
        c.env.git(dir, &["config", "tally.layout", "per-machine"]);
    }
    let (a, b) = (&c.clones[0], &c.clones[1]);
    c.record(a, &(0..3).map(|i| event_line(0, i)).collect::<Vec<_>>());
    c.record(b, &(0..2).map(|i| event_line(1, i)).collect::<Vec<_>>());
    for dir in [a, b, a] {
        let out = c.tally(dir).arg("sync").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for dir in [a, b] {
        assert_eq!(read_json(&dir.join("usage/usage_data_m0.json"))["statistics"]["total_records"], 3);
        assert_eq!(read_json(&dir.join("usage/usage_data_m1.json"))["statistics"]["total_records"], 2);
        assert_eq!(read_json(&dir.join("usage/usage_data_m1.json"))["machine_name"], "m1");
    }
    let manifest = read_json(&a.join("usage/manifest.json"));
    let machines: HashMap<String, u64> = manifest["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["machine_name"].as_str().unwrap().to_string(), m["total_records"].as_u64().unwrap()))
        .collect();
    assert_eq!(machines, HashMap::from([("m0".to_string(), 3), ("m1".to_string(), 2)]));
    assert_eq!(
        std::fs::read(a.join("usage/manifest.json")).unwrap(),
        std::fs::read(b.join("usage/manifest.json")).unwrap()
    );
    let out = c.tally(a).args(["stats", "--json", "--by", "device", "usage"]).output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["totals"]["requests"], 5);
    assert_eq!(rows(&r, "requests"), HashMap::from([("m0".to_string(), 3), ("m1".to_string(), 2)]));
}

#[test]
fn a_corrupt_proxypal_aggregate_is_rebuilt_from_history_with_a_warning() {
    let env = Env::new();
    let dir = env.path().join("stats");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/proxypal-history/both-add/expected.json");
    let history = read_json(&cases);
    std::fs::copy(&cases, dir.join("history.json")).unwrap();
    std::fs::write(dir.join("aggregate.json"), b"{\"totalRequests\": 12, \"modelSt").unwrap();
    let n = history["requests"].as_array().unwrap().len() as u64;
    let tokens_in: u64 = history["requests"].as_array().unwrap().iter().map(|r| r["tokensIn"].as_u64().unwrap()).sum();
    let out = env.tally(&dir).args(["stats", "--json", "aggregate.json"]).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("rebuilt from history.json"));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["totals"]["requests"], n);
    assert_eq!(r["totals"]["input_tokens"], tokens_in);
    env.tally(&dir).args(["rebuild", "aggregate.json"]).assert().success();
    let rebuilt = read_json(&dir.join("aggregate.json"));
    assert_eq!(rebuilt["totalRequests"], n);
    env.tally(&dir).args(["check", "aggregate.json"]).assert().success();
}

/// The native format lists the newest 500 records: an export of 620 requests writes those
/// as records and the rest as rows of cells, so that the rows add up to every request.
#[test]
fn an_export_never_drops_rows_silently() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let lines: Vec<String> = (0..620).map(|i| event_line(0, i)).collect();
    c.record(dir, &lines);
    c.sync_until_ok(dir);
    let out = c.tally(dir).args(["export", "--format", "csv", "--timezone", "UTC"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (mut records, mut in_cells, mut input) = (0u64, 0u64, 0u64);
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        match f[0] {
            "record" => records += 1,
            "cells" => in_cells += cell_requests(&f, &header),
            other => panic!("a row of an unknown kind {other:?}: {line}"),
        }
        input += f[col("input_tokens")].parse::<u64>().unwrap();
    }
    assert_eq!(records, 500, "the newest records");
    assert_eq!(records + in_cells, 620, "every request in a row");
    let want: u64 = (0..620u64).map(|i| 100 + i).sum();
    assert_eq!(input, want, "and every token");
}

/// The CSV adds up to `stats` whatever the bounds and the zone: tokens a later version of a
/// request added after a reset (no request), a request in an hour that spans local midnight
/// half an hour off UTC, and bounds inside an hour (which take in the whole hour, with a
/// note: usage is kept by UTC hour).
#[test]
fn the_csv_adds_up_to_stats_in_every_period_and_zone() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let ev = |id: &str, at: &str, input: u64| {
        format!(r#"{{"id":"{id}","timestamp":"{at}","model":"gpt-5","provider":"openai","input_tokens":{input}}}"#)
    };
    c.record(dir, &[ev("x", "2026-11-20T10:00:00Z", 100)]);
    c.sync_until_ok(dir);
    assert!(c.tally(dir).args(["reset", "-y"]).status().unwrap().success());
    c.record(
        dir,
        &[
            ev("x", "2026-11-20T10:00:00Z", 500),
            ev("a2", "2026-11-20T10:45:00Z", 200),
            ev("a3", "2026-11-20T18:45:00Z", 300),
        ],
    );
    c.sync_until_ok(dir);
    let totals = |args: &[&str]| -> (u64, u64) {
        let out = c.tally(dir).args(["stats", "--json"]).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["totals"]["requests"].as_u64().unwrap(), v["totals"]["input_tokens"].as_u64().unwrap())
    };
    let csv = |args: &[&str]| -> ((u64, u64), String) {
        let out = c.tally(dir).args(["export", "--format", "csv"]).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let mut sums = (0, 0);
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            sums.0 += f[col("requests")].parse::<u64>().unwrap();
            sums.1 += f[col("input_tokens")].parse::<u64>().unwrap();
        }
        (sums, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // After the reset: the later version's 400 more tokens (no request), a2 and a3.
    assert_eq!(totals(&["--timezone", "UTC"]), (2, 900));
    for args in [
        &["--timezone", "UTC"][..],
        &["--timezone", "Asia/Kolkata"],
        &["--timezone", "Asia/Kolkata", "--since", "2026-11-21"],
        &["--timezone", "Asia/Kolkata", "--until", "2026-11-20"],
        &["--timezone", "UTC", "--since", "2026-11-20T10:30:00Z"],
        &["--timezone", "UTC", "--until", "2026-11-20T10:30:00Z"],
    ] {
        let (sums, _) = csv(args);
        assert_eq!(sums, totals(args), "{args:?}: the CSV rows add up to stats");
    }
    // A bound inside an hour counts the whole hour, and says so.
    assert_eq!(totals(&["--timezone", "UTC", "--until", "2026-11-20T10:30:00Z"]), (1, 600));
    let (_, said) = csv(&["--timezone", "UTC", "--since", "2026-11-20T10:30:00Z"]);
    assert!(said.contains("counts the whole hour (from 2026-11-20T10:00Z)"), "{said}");
}

/// A bound inside a day, on a day whose requests go beyond the native format's 500 listed
/// records: the cells rows of an export hold only the hours in the period, as `stats` does.
#[test]
fn cells_rows_of_an_export_keep_to_the_hours_of_the_period() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let ev = |id: String, at: String| {
        format!(r#"{{"id":"{id}","timestamp":"{at}","model":"gpt-5","provider":"openai","input_tokens":10}}"#)
    };
    let mut lines: Vec<String> = (0..30).map(|i| ev(format!("old{i}"), format!("2026-11-20T01:{i:02}:00Z"))).collect();
    lines.extend((0..500).map(|i| ev(format!("new{i}"), format!("2026-11-20T20:{:02}:{:02}Z", i / 60, i % 60))));
    c.record(dir, &lines);
    c.sync_until_ok(dir);
    for args in [&["--since", "2026-11-20T20:30:00Z"][..], &["--until", "2026-11-20T02:00:00Z"], &[]] {
        let out = c.tally(dir).args(["stats", "--json", "--timezone", "UTC"]).args(args).output().unwrap();
        let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
        let out = c.tally(dir).args(["export", "--format", "csv", "--timezone", "UTC"]).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let csv = String::from_utf8(out.stdout).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let sum: u64 = csv.lines().skip(1).map(|l| cell_requests(&l.split(',').collect::<Vec<_>>(), &header)).sum();
        assert_eq!(sum, stats["totals"]["requests"].as_u64().unwrap(), "{args:?}:\n{csv}");
    }
}

/// A cells row says how many requests it stands for in its `requests` column.
fn cell_requests(f: &[&str], header: &[&str]) -> u64 {
    let i = header.iter().position(|h| *h == "requests").expect("a requests column");
    f[i].parse().unwrap()
}

#[test]
fn export_csv_writes_one_quoted_row_per_record() {
    let env = Env::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi-export.json");
    let out = env.tally(env.path()).args(["export", "--format", "csv", fixture.to_str().unwrap()]).output().unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("row,requests,id,timestamp,device,provider,api,model,failed,"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 13, "a header and one row per detail");
    assert!(csv.lines().skip(1).all(|l| l.starts_with("record,")), "{csv}");
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let weird = serde_json::json!({"id": "q1", "model": "gpt \"5\", large", "input_tokens": 3}).to_string();
    c.record(dir, &[weird]);
    let out = c.tally(dir).args(["export", "--format", "csv", "--out", "out.csv"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(dir.join("out.csv")).unwrap();
    assert!(csv.contains("q1,") && csv.contains("\"gpt \"\"5\"\", large\""), "{csv}");
    assert!(csv.contains("\r\n"), "RFC 4180 line breaks");
}

/// A native usage file with these days: (day, requests, tokens, cost).
fn native_file(days: &[(String, u64, u64, f64)]) -> Value {
    let mut by_day = serde_json::Map::new();
    let (mut requests, mut tokens, mut cost) = (0, 0, 0.0);
    for (day, r, t, c) in days {
        let cell = serde_json::json!({"requests": r, "failed": 0, "input_tokens": t / 2, "output_tokens": t - t / 2,
            "reasoning_tokens": 0, "cached_tokens": 0, "total_tokens": t, "cost_usd": c});
        by_day.insert(day.clone(), serde_json::json!({"laptop": {"anthropic": {"claude-sonnet-4-5": cell}}}));
        requests += r;
        tokens += t;
        cost += c;
    }
    serde_json::json!({"format": "git-tally/1", "recent_limit": 500,
        "totals": {"requests": requests, "failed": 0, "input_tokens": tokens / 2, "output_tokens": tokens - tokens / 2,
                   "reasoning_tokens": 0, "cached_tokens": 0, "total_tokens": tokens, "cost_usd": cost},
        "days": by_day, "devices": {}, "recent": []})
}

fn write_native(env: &Env, name: &str, days: &[(String, u64, u64, f64)]) -> std::path::PathBuf {
    let path = env.path().join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&native_file(days)).unwrap()).unwrap();
    path
}

#[test]
fn since_and_until_refuse_what_they_do_not_understand() {
    let env = Env::new();
    let file = write_native(&env, "usage.json", &[("2026-11-03".into(), 3, 30, 0.5)]);
    let f = file.to_str().unwrap();
    let page = env.path().join("r.html");
    let commands: [Vec<&str>; 3] =
        [vec!["stats", f], vec!["export", "--format", "json", f], vec!["report", "--html", page.to_str().unwrap(), f]];
    for cmd in &commands {
        for bad in
            ["yesterday", "2026-13-45", "2026-11-5", "2026-02-30", "7", "last week", "2026-11-03T09:00", "300000y"]
        {
            for flag in ["--since", "--until"] {
                let out = env.tally(env.path()).args(cmd).args([flag, bad]).output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{cmd:?} {flag} {bad}: {err}");
                assert!(err.contains("use YYYY-MM-DD (2026-11-03), an RFC 3339 time"), "{cmd:?} {flag} {bad}: {err}");
            }
        }
        for good in ["2026-11-03", "7d", "12h", "2026-11-03T09:00:00Z", "2026-11-03T01:00:00-08:00", "900y"] {
            let out = env.tally(env.path()).args(cmd).args(["--since", good]).output().unwrap();
            assert!(out.status.success(), "{cmd:?} --since {good}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out =
            env.tally(env.path()).args(cmd).args(["--since", "2026-11-04", "--until", "2026-11-03"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "an empty period");
        assert!(String::from_utf8_lossy(&out.stderr).contains("the period is empty"));
        let out = env.tally(env.path()).args(cmd).args(["--timezone", "Mars/Olympus"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown time zone \"Mars/Olympus\""));
        let out = env.tally(env.path()).args(cmd).env("TZ", "Mars/Olympus").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("TZ: unknown time zone"));
    }
    // The bound is a day: 2026-11-03 to 2026-11-03 keeps that day.
    let r: Value = serde_json::from_slice(
        &env.tally(env.path())
            .args(["stats", "--json", "--since", "2026-11-03", "--until", "2026-11-03", f])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(r["totals"]["requests"], 3);
}

#[test]
fn json_costs_are_rounded_to_a_millionth() {
    let env = Env::new();
    let file = write_native(
        &env,
        "usage.json",
        &[("2026-11-03".into(), 1, 10, 0.1), ("2026-11-04".into(), 1, 10, 0.2), ("2026-11-05".into(), 1, 10, 0.0)],
    );
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.contains("0.30000000000000004"), "the file itself has the noise: {raw}");
    for args in [vec!["stats", "--json"], vec!["export", "--format", "json"]] {
        let out = env.tally(env.path()).args(&args).arg(&file).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(!text.contains("0.30000000000000004"), "{args:?}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["totals"]["cost_usd"], 0.3, "{args:?}");
    }
}

#[test]
fn the_terminal_table_has_separators_known_costs_and_thirty_calendar_days() {
    let env = Env::new();
    let today = chrono::Utc::now().date_naive();
    let day = |ago: i64| (today - chrono::Duration::days(ago)).to_string();
    // Four days with traffic spread over forty: only two are in the last thirty.
    let file = write_native(
        &env,
        "usage.json",
        &[(day(40), 5, 50, 0.0), (day(35), 1234, 1_234_567, 0.0), (day(20), 3, 30, 1.25), (day(1), 8, 80, 2.5)],
    );
    let out = env.tally(env.path()).args(["stats", "--timezone", "UTC"]).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spark = text.lines().find(|l| l.starts_with("last 30 days")).unwrap_or_else(|| panic!("{text}"));
    assert!(spark.starts_with(&format!("last 30 days ({} to {today})", day(29))), "{spark}");
    let glyphs: Vec<char> = spark.rsplit("  ").next().unwrap().chars().collect();
    assert_eq!(glyphs.len(), 30, "{spark}");
    let lit: Vec<usize> = glyphs.iter().enumerate().filter(|(_, &c)| c != '·').map(|(i, _)| i).collect();
    assert_eq!(lit, [9, 28], "{spark}");
    assert!(text.contains("1,250 requests"), "{text}");
    let row = |d: String| text.lines().find(|l| l.starts_with(&d)).unwrap_or_else(|| panic!("{d}: {text}")).to_string();
    let big = row(day(35));
    assert!(big.contains("1,234") && big.contains("1,234,567"), "{big}");
    assert!(big.contains("—") && !big.contains("$0.00"), "a cost nobody gave is not free: {big}");
    assert!(row(day(1)).contains("$2.50"), "{text}");
}

/// Pixel columns of one colour in `png`: for the row where the colour forms the most runs,
/// the centre of each run.
fn runs_of_colour(png: &Path, rgb: [u8; 3]) -> Vec<f64> {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let mut best: Vec<f64> = Vec::new();
    for y in 0..info.height as usize {
        let row = &buf[y * info.line_size..(y + 1) * info.line_size];
        let is = |x: usize| {
            let p = &row[x * channels..x * channels + 3];
            p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 6)
        };
        let mut runs = Vec::new();
        let mut start = None;
        for x in 0..=info.width as usize {
            match (x < info.width as usize && is(x), start) {
                (true, None) => start = Some(x),
                (false, Some(s)) => {
                    runs.push((s + x - 1) as f64 / 2.0);
                    start = None;
                }
                _ => {}
            }
        }
        if runs.len() > best.len() {
            best = runs;
        }
    }
    best
}

/// The report of traffic with gaps, in headless Chromium: the DOM has one bar for every
/// calendar day in range (zero on days without traffic), and the screenshot shows the gaps
/// at their width: bars where there was traffic, nothing between.
#[test]
fn the_html_report_shows_gaps_in_the_traffic() {
    if !crate::common::have("chromium", "the_html_report_shows_gaps_in_the_traffic") {
        return;
    }
    let env = Env::new();
    let start = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let traffic: Vec<(i64, u64)> = vec![(0, 5), (1, 3), (10, 8), (40, 6)];
    let days: Vec<(String, u64, u64, f64)> = traffic
        .iter()
        .map(|&(off, n)| ((start + chrono::Duration::days(off)).to_string(), n, n * 1000, n as f64 * 0.25))
        .collect();
    let file = write_native(&env, "usage.json", &days);
    let page = env.path().join("report.html");
    let out = env
        .tally(env.path())
        .args(["report", "--timezone", "UTC", "--html", page.to_str().unwrap(), file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg("--force-prefers-reduced-motion")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    let bars: Vec<(String, u64)> = dom
        .split("<rect class=\"bar requests\"")
        .skip(1)
        .map(|r| {
            let attr =
                |name: &str| r.split(&format!("{name}=\"")).nth(1).unwrap().split('"').next().unwrap().to_string();
            (attr("data-day"), attr("data-value").parse().unwrap())
        })
        .collect();
    let want: Vec<(String, u64)> = (0..=40)
        .map(|off| {
            let n = traffic.iter().find(|t| t.0 == off).map_or(0, |t| t.1);
            ((start + chrono::Duration::days(off)).to_string(), n)
        })
        .collect();
    assert_eq!(bars, want, "one bar per calendar day, zero where there was no traffic");
    assert!(dom.contains("2026-10-01 to 2026-11-10 (41 days)"), "the range is stated");
    assert!(dom.contains("class=\"y-label\""), "the axis has a scale");
    assert!(dom.contains("id=\"total-tokens\">22,000<"), "thousands separators");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-gaps.png");
    chromium(&["--window-size=1000,1400", "--hide-scrollbars", &format!("--screenshot={}", shot.display())]);
    // The requests bars' colour (#2f81f7, light scheme): four bars, placed by their day.
    let centres = runs_of_colour(&shot, [0x2f, 0x81, 0xf7]);
    assert_eq!(centres.len(), 4, "four bars with traffic, gaps between them: {centres:?} ({})", shot.display());
    // One day's slot, from the first bar to the last (forty days apart).
    let slot = (centres[3] - centres[0]) / 40.0;
    for (i, &(off, _)) in traffic.iter().enumerate() {
        let expected = centres[0] + slot * off as f64;
        assert!(
            (centres[i] - expected).abs() <= slot * 0.5 + 1.0,
            "bar {i} at {} not {expected}: {centres:?}",
            centres[i]
        );
    }
}
