//! `import codex` and `import claude-code` against real files: the Codex fixture's
//! documented totals, replays and re-reads counted once, incremental reading (a second run
//! reads nothing, an appended file is read from where it stopped, a replaced one again),
//! and bad lines named by file and line.

use crate::sync::cluster;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Run {
    stdout: String,
    stderr: String,
}

fn import(c: &crate::sync::Cluster, dir: &Path, what: &str, data: &Path) -> Run {
    let out = c.tally(dir).args(["import", what, data.to_str().unwrap()]).output().unwrap();
    let run = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(out.status.success(), "import {what}: {}", run.stderr);
    run
}

/// A Claude Code data directory in the test's directory, with one project in it:
/// `(data, project)`.
fn claude_project(c: &crate::sync::Cluster) -> (PathBuf, PathBuf) {
    let data = c.env.path().join("claude");
    let proj = data.join("projects/-home-dev");
    std::fs::create_dir_all(&proj).unwrap();
    (data, proj)
}

/// Per-key counters from `stats --json --by <by>` after folding what was recorded.
fn stats_by(c: &crate::sync::Cluster, dir: &Path, by: &str) -> BTreeMap<String, [u64; 5]> {
    // stats counts what is recorded, folded or not.
    let out = c.tally(dir).args(["stats", "--json", "--timezone", "UTC", "--by", by]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let cache_read = r.get("cache_read_tokens").map_or(n(r, "cached_tokens"), |x| x.as_u64().unwrap());
            let key = r["key"].as_str().unwrap().to_string();
            (key, [n(r, "requests"), n(r, "input_tokens"), cache_read, n(r, "output_tokens"), n(r, "reasoning_tokens")])
        })
        .collect()
}

/// The fixture's documented figures (shared/README.md), with cached input taken out of
/// input and reasoning out of output: [requests, input, cache read, output, reasoning].
fn documented_by_model() -> BTreeMap<String, [u64; 5]> {
    BTreeMap::from([
        ("gpt-5-codex".to_string(), [2, 30_000 - 22_000, 22_000, 1_400 - 600, 600]),
        ("gpt-5".to_string(), [1, 11_000 - 8_000, 8_000, 600 - 100, 100]),
    ])
}

fn documented_by_day() -> BTreeMap<String, [u64; 5]> {
    let m = documented_by_model();
    BTreeMap::from([("2026-11-03".to_string(), m["gpt-5-codex"]), ("2026-11-04".to_string(), m["gpt-5"])])
}

fn codex_home(c: &crate::sync::Cluster) -> (PathBuf, PathBuf) {
    let home = c.env.path().join("codex");
    let day = home.join("sessions/2026/11/03");
    std::fs::create_dir_all(&day).unwrap();
    (home, day.join("rollout-2026-11-03T09-00-00-019a4f2e.jsonl"))
}

#[test]
fn the_codex_fixture_gives_its_documented_totals_once() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (home, file) = codex_home(&c);
    std::fs::copy(fixture("codex-session-sample.jsonl"), &file).unwrap();
    let before = std::fs::read(&file).unwrap();
    let first = import(&c, dir, "codex", &home);
    // Four token_count lines with usage, one a replay of the previous total: three requests.
    assert!(first.stdout.contains(" 3 request(s) found, 3 recorded"), "{}", first.stdout);
    assert_eq!(stats_by(&c, dir, "model"), documented_by_model());
    assert_eq!(stats_by(&c, dir, "day"), documented_by_day());
    assert_eq!(std::fs::read(&file).unwrap(), before, "read-only");
    // A second run reads nothing.
    let second = import(&c, dir, "codex", &home);
    assert!(second.stdout.contains(" 0 bytes read, 0 request(s) found, 0 recorded"), "{}", second.stdout);
    // The same session again in another file (a resumed session's copied history): its ids
    // are the session and its totals, so nothing counts twice.
    std::fs::copy(fixture("codex-session-sample.jsonl"), home.join("sessions/2026/11/03/rollout-copy.jsonl")).unwrap();
    let third = import(&c, dir, "codex", &home);
    assert!(third.stdout.contains(" 3 request(s) found, 0 recorded, 3 already recorded"), "{}", third.stdout);
    assert_eq!(stats_by(&c, dir, "model"), documented_by_model());
}

#[test]
fn codex_with_the_default_directory_from_codex_home() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (home, file) = codex_home(&c);
    std::fs::copy(fixture("codex-session-sample.jsonl"), &file).unwrap();
    let out = c.tally(dir).args(["import", "codex"]).env("CODEX_HOME", &home).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 3 recorded"));
    // Without CODEX_HOME: ~/.codex.
    let c2 = cluster(1, "tally");
    let dot = c2.env.home().join(".codex/sessions/2026/11/03");
    std::fs::create_dir_all(&dot).unwrap();
    std::fs::copy(fixture("codex-session-sample.jsonl"), dot.join("rollout-a.jsonl")).unwrap();
    let out = c2.tally(&c2.clones[0]).args(["import", "codex"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 3 recorded"), "{}", String::from_utf8_lossy(&out.stdout));
    // A directory without sessions is a mistake to say, not "0 files".
    let out = c2.tally(&c2.clones[0]).args(["import", "codex", c2.env.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Codex sessions in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_codex_session_appended_to_is_read_from_where_it_stopped() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (home, file) = codex_home(&c);
    let text = std::fs::read_to_string(fixture("codex-session-sample.jsonl")).unwrap();
    // Stop in the middle of the sixth line (the second turn's turn_context), as if Codex
    // were writing it: the first five lines hold the first turn and its replay.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let done: usize = lines[..5].iter().map(|l| l.len()).sum();
    let cut = done + lines[5].len() / 2;
    std::fs::write(&file, &text[..cut]).unwrap();
    let first = import(&c, dir, "codex", &home);
    assert!(first.stdout.contains(&format!(" {done} bytes read, 1 request(s) found, 1 recorded")), "{}", first.stdout);
    assert!(first.stderr.is_empty(), "a line being written is not an error: {}", first.stderr);
    // Codex finishes the line and writes the rest: only the new bytes are read, and the
    // model and session total learnt before the stop still apply.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &text.as_bytes()[cut..]))
        .unwrap();
    let second = import(&c, dir, "codex", &home);
    let rest = text.len() - done;
    assert!(
        second.stdout.contains(&format!(" {rest} bytes read, 2 request(s) found, 2 recorded")),
        "{}",
        second.stdout
    );
    assert_eq!(stats_by(&c, dir, "model"), documented_by_model());
}

#[test]
fn a_codex_session_replaced_by_another_file_is_read_again_and_counts_once() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (home, file) = codex_home(&c);
    std::fs::copy(fixture("codex-session-sample.jsonl"), &file).unwrap();
    import(&c, dir, "codex", &home);
    // A new file (another inode) under the same name: the same session and one more turn.
    let mut text = std::fs::read_to_string(fixture("codex-session-sample.jsonl")).unwrap();
    text.push_str(
        r#"{"timestamp":"2026-11-04T00:05:00.000Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":45000,"cached_input_tokens":33000,"output_tokens":2100,"reasoning_output_tokens":700,"total_tokens":47100},"last_token_usage":null}}}"#,
    );
    text.push('\n');
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let again = import(&c, dir, "codex", &home);
    assert!(again.stdout.contains(" 4 request(s) found, 1 recorded, 3 already recorded"), "{}", again.stdout);
    let mut want = documented_by_model();
    // Only totals on that line: the turn is the growth of the session total.
    let gpt5 = want.get_mut("gpt-5").unwrap();
    for (i, add) in [1, 4000 - 3000, 3000, 100, 0].into_iter().enumerate() {
        gpt5[i] += add;
    }
    assert_eq!(stats_by(&c, dir, "model"), want);
}

#[test]
fn bad_codex_lines_are_named_and_the_rest_is_imported() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (home, file) = codex_home(&c);
    let text = std::fs::read_to_string(fixture("codex-session-sample.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.insert(3, r#"{"timestamp":"2026-11-03T09:00:05Z","type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":"#.into());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let run = import(&c, dir, "codex", &home);
    assert!(run.stderr.contains(&format!("warning: {}:4: not a Codex session line", file.display())), "{}", run.stderr);
    assert!(run.stdout.contains(", 1 line(s) skipped"), "{}", run.stdout);
    assert_eq!(stats_by(&c, dir, "model"), documented_by_model());
}

#[test]
fn zero_token_synthetic_messages_are_not_requests() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (data, proj) = claude_project(&c);
    let mut text = std::fs::read_to_string(fixture("claude-code-sample.jsonl")).unwrap();
    text.push_str(r#"{"type":"assistant","timestamp":"2026-03-11T02:41:00.000Z","requestId":"req_synthetic","message":{"id":"msg_synthetic","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"No response requested."}],"usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}"#);
    text.push('\n');
    // A broken line in the middle of a transcript is named, not silently dropped.
    text.push_str("{\"type\":\"assistant\",\"message\":{\"usage\":{\"input_tokens\":-3}}}\n");
    std::fs::write(proj.join("s.jsonl"), text).unwrap();
    let run = import(&c, dir, "claude-code", &data);
    assert!(run.stdout.contains(" 2 request(s) found, 2 recorded"), "{}", run.stdout);
    assert!(run.stderr.contains("s.jsonl:6: not a Claude Code transcript line"), "{}", run.stderr);
    let by_model = stats_by(&c, dir, "model");
    assert_eq!(by_model.keys().collect::<Vec<_>>(), ["claude-opus-4-6"]);
    assert_eq!(by_model["claude-opus-4-6"][0], 2);
}

/// A transcript line with a count no event can carry (above 2^53) or a time outside the
/// years 0001–9999 is named by file and line and skipped, not reported as recorded and
/// then dropped; `record` refuses the same (exit 2), nothing of its batch applied.
#[test]
fn counts_and_times_no_event_can_carry_are_named_by_file_and_line() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (data, proj) = claude_project(&c);
    let line = |n: u32, tokens: u64, ts: &str| {
        format!(
            r#"{{"type":"assistant","timestamp":"{ts}","requestId":"req_{n}","message":{{"id":"msg_{n}","model":"claude-opus-4-6","usage":{{"input_tokens":{tokens},"output_tokens":1}}}}}}"#
        )
    };
    let text = [
        line(1, 10, "2026-03-11T02:41:00Z"),
        line(2, (1 << 53) + 1, "2026-03-11T02:42:00Z"),
        line(3, 10, "0000-12-31T23:30:00-01:00"),
        line(4, 10, "9999-12-31T23:30:00-01:00"),
        line(5, 10, "2026-03-11T02:45:00Z"),
    ]
    .join("\n");
    std::fs::write(proj.join("s.jsonl"), text + "\n").unwrap();
    let run = import(&c, dir, "claude-code", &data);
    assert!(run.stdout.contains(" 2 request(s) found, 2 recorded"), "{}", run.stdout);
    for (n, what) in [(2, "above 2^53"), (3, "outside the years 0001 to 9999"), (4, "outside the years 0001 to 9999")] {
        assert!(run.stderr.contains(&format!("s.jsonl:{n}: ")) && run.stderr.contains(what), "{n}: {}", run.stderr);
    }
    assert_eq!(stats_by(&c, dir, "model")["claude-opus-4-6"][0], 2);
    // Codex: the same count in a turn.
    let (home, file) = codex_home(&c);
    let turn = |ts: &str, n: u64| {
        format!(
            r#"{{"timestamp":"{ts}","type":"event_msg","payload":{{"type":"token_count","info":{{"last_token_usage":{{"input_tokens":{n},"output_tokens":1}}}}}}}}"#
        )
    };
    std::fs::write(
        &file,
        [turn("2026-11-03T09:00:00Z", 5), turn("2026-11-03T09:01:00Z", (1 << 53) + 1)].join("\n") + "\n",
    )
    .unwrap();
    let run = import(&c, dir, "codex", &home);
    assert!(
        run.stderr.contains(&format!("{}:2: ", file.display())) && run.stderr.contains("above 2^53"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains(" 1 request(s) found, 1 recorded"), "{}", run.stdout);
    // record: the whole batch refused.
    for bad in [
        r#"{"model":"m","input_tokens":1,"timestamp":"0000-01-01T00:00:00+01:00"}"#,
        r#"{"model":"m","input_tokens":1,"timestamp":"9999-12-31T23:30:00-01:00"}"#,
        r#"{"model":"m","input_tokens":1,"cost_usd":1e308}"#,
    ] {
        let out = c
            .tally(dir)
            .args(["record", "--event", r#"{"model":"ok","input_tokens":1}"#, "--event", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!stats_by(&c, dir, "model").contains_key("ok"), "nothing of a refused batch");
}

/// With sync on, an import leaves its requests in the journal for the next sync to fold
/// (after it caught up with the remote); a session copied into a new file before that sync
/// is not recorded, or said recorded, again.
#[test]
fn a_session_copied_before_the_next_sync_is_recorded_once() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let (data, proj) = claude_project(&c);
    std::fs::copy(fixture("claude-code-sample.jsonl"), proj.join("s1.jsonl")).unwrap();
    let first = import(&c, dir, "claude-code", &data);
    assert!(!first.stdout.contains(" 0 recorded"), "{}", first.stdout);
    let counted = stats_by(&c, dir, "model");
    std::fs::copy(fixture("claude-code-sample.jsonl"), proj.join("s2-copy.jsonl")).unwrap();
    let again = import(&c, dir, "claude-code", &data);
    assert!(again.stdout.contains(" 0 recorded"), "{}", again.stdout);
    assert_eq!(stats_by(&c, dir, "model"), counted, "before the sync");
    c.sync_until_ok(dir);
    assert_eq!(stats_by(&c, dir, "model"), counted, "after it");
}

/// A transcript read again long after it was first imported (a session resumed months
/// later copies its history into a new file) counts once: the ids of imports outlive
/// `tally.idHorizon`. Time is made to pass by ageing the ids' last-seen day, as a month
/// without imports would (each import synced, whose fold remembers its ids).
#[test]
fn a_transcript_copied_long_after_its_import_counts_once() {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let age_ids = || {
        for f in std::fs::read_dir(dir.join(".git/tally/ids")).unwrap() {
            let p = f.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let old = text.lines().map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v["s"] = Value::from(v["s"].as_i64().unwrap() - 400);
                v.to_string() + "\n"
            });
            std::fs::write(&p, old.collect::<String>()).unwrap();
        }
    };
    // Claude Code.
    let (data, proj) = claude_project(&c);
    std::fs::copy(fixture("claude-code-sample.jsonl"), proj.join("s1.jsonl")).unwrap();
    import(&c, dir, "claude-code", &data);
    c.sync_until_ok(dir);
    let first = stats_by(&c, dir, "model");
    age_ids();
    // Another import past the horizon rewrites the buckets (compacting what is kept).
    std::fs::write(proj.join("other.jsonl"), r#"{"type":"assistant","timestamp":"2026-11-01T10:00:00Z","requestId":"req_new","message":{"id":"msg_new","model":"claude-opus-4-6","usage":{"input_tokens":1,"output_tokens":1}}}"#.to_string() + "\n").unwrap();
    import(&c, dir, "claude-code", &data);
    c.sync_until_ok(dir);
    std::fs::copy(fixture("claude-code-sample.jsonl"), proj.join("s2-resumed.jsonl")).unwrap();
    let run = import(&c, dir, "claude-code", &data);
    assert!(run.stdout.contains(" 0 recorded"), "{}", run.stdout);
    let mut want = first;
    want.get_mut("claude-opus-4-6").unwrap()[0] += 1;
    assert_eq!(stats_by(&c, dir, "model")["claude-opus-4-6"][0], want["claude-opus-4-6"][0]);
    // Codex.
    let (home, file) = codex_home(&c);
    std::fs::copy(fixture("codex-session-sample.jsonl"), &file).unwrap();
    import(&c, dir, "codex", &home);
    c.sync_until_ok(dir);
    age_ids();
    let resumed = file.with_file_name("rollout-2026-12-01T09-00-00-resumed.jsonl");
    std::fs::copy(&file, &resumed).unwrap();
    let run = import(&c, dir, "codex", &home);
    assert!(run.stdout.contains(" 0 recorded"), "{}", run.stdout);
    let by_model = stats_by(&c, dir, "model");
    for (model, counts) in documented_by_model() {
        assert_eq!(by_model[&model], counts, "{model}");
    }
}

/// Per-token prices of the generated models, written by hand from LiteLLM's table:
/// (input, output, cache creation, cache read).
const CLAUDE_PRICES: [(&str, [f64; 4]); 3] = [
    ("claude-opus-4-6", [5e-6, 25e-6, 6.25e-6, 0.5e-6]),
    ("claude-sonnet-4-5-20250929", [3e-6, 15e-6, 3.75e-6, 0.3e-6]),
    ("claude-haiku-4-5-20251001", [1e-6, 5e-6, 1.25e-6, 0.1e-6]),
];

/// A Claude Code tree as the shared generator makes it (three models, a third of the
/// messages streamed over several lines with growing output), with requests every few
/// minutes across local midnights. Returns the raw lines.
fn generate_claude(dir: &Path, files: usize, per_file: usize) -> Vec<String> {
    let mut seed: u64 = 11;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut all = Vec::new();
    let mut t = chrono::DateTime::parse_from_rfc3339("2026-10-30T20:00:00Z").unwrap();
    for f in 0..files {
        let proj = dir.join(format!("projects/-home-dev-p{}", f % 3));
        std::fs::create_dir_all(&proj).unwrap();
        let mut text = String::new();
        for m in 0..per_file {
            t += chrono::Duration::seconds(60 + rand(1800) as i64);
            let model = CLAUDE_PRICES[rand(3) as usize].0;
            let (inp, cc, cr) = (1 + rand(5000), rand(20000), rand(80000));
            let parts = [1, 1, 2, 3][rand(4) as usize];
            for k in 0..parts {
                let out = if k + 1 < parts { 1 + rand(50) } else { 50 + rand(4000) };
                let line = serde_json::json!({
                    "type": "assistant", "sessionId": format!("s{f}"), "requestId": format!("req_{f}_{m}"),
                    "timestamp": (t + chrono::Duration::milliseconds(300 * k)).to_rfc3339(),
                    "message": {"id": format!("msg_{f}_{m}"), "model": model, "role": "assistant",
                        "content": [{"type": "text", "text": "words"}],
                        "usage": {"input_tokens": inp, "cache_creation_input_tokens": cc,
                                  "cache_read_input_tokens": cr, "output_tokens": out}}
                })
                .to_string();
                text.push_str(&line);
                text.push('\n');
                all.push(line);
            }
        }
        std::fs::write(proj.join(format!("s{f}.jsonl")), text).unwrap();
    }
    all
}

/// Per local day, from the raw lines alone: a request is (message.id, requestId), its
/// entry the line with the largest token total; its cost from the prices above.
/// [requests, input, output, cache creation, cache read] and cost.
fn expected_days(lines: &[String], tz: chrono_tz::Tz) -> BTreeMap<String, ([u64; 5], f64)> {
    let mut requests: BTreeMap<(String, String), (u64, Value)> = BTreeMap::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        let u = &v["message"]["usage"];
        let total: u64 = ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
            .iter()
            .map(|k| u[k].as_u64().unwrap())
            .sum();
        let key = (v["message"]["id"].as_str().unwrap().to_string(), v["requestId"].as_str().unwrap().to_string());
        if requests.get(&key).is_none_or(|(t, _)| total >= *t) {
            requests.insert(key, (total, v));
        }
    }
    let mut days: BTreeMap<String, ([u64; 5], f64)> = BTreeMap::new();
    for (_, v) in requests.values() {
        let ts = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
        let day = ts.with_timezone(&tz).date_naive().to_string();
        let u = &v["message"]["usage"];
        let n = |k: &str| u[k].as_u64().unwrap();
        let tokens =
            [1, n("input_tokens"), n("output_tokens"), n("cache_creation_input_tokens"), n("cache_read_input_tokens")];
        let p = CLAUDE_PRICES.iter().find(|(m, _)| *m == v["message"]["model"]).unwrap().1;
        let cost =
            tokens[1] as f64 * p[0] + tokens[2] as f64 * p[1] + tokens[3] as f64 * p[2] + tokens[4] as f64 * p[3];
        let e = days.entry(day).or_default();
        for (sum, n) in e.0.iter_mut().zip(tokens) {
            *sum += n;
        }
        e.1 += cost;
    }
    days
}

fn per_day_matches_the_raw_lines(tz_name: &str, with_cost_and_cache_creation: bool) {
    let c = cluster(1, "tally");
    let dir = &c.clones[0];
    let data = c.env.path().join("claude");
    let lines = generate_claude(&data, 12, 150);
    import(&c, dir, "claude-code", &data);
    // stats counts what is recorded, folded or not.
    let out = c.tally(dir).args(["stats", "--json", "--timezone", tz_name, "--by", "day"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = expected_days(&lines, tz_name.parse().unwrap());
    assert!(want.len() >= 20, "the tree spans many days: {}", want.len());
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
    let mut got: BTreeMap<String, ([u64; 5], f64)> = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        let cache_read = r.get("cache_read_tokens").map_or(n(r, "cached_tokens"), |x| x.as_u64().unwrap());
        let tokens =
            [n(r, "requests"), n(r, "input_tokens"), n(r, "output_tokens"), n(r, "cache_creation_tokens"), cache_read];
        got.insert(r["key"].as_str().unwrap().to_string(), (tokens, r["cost_usd"].as_f64().unwrap_or(0.0)));
    }
    if with_cost_and_cache_creation {
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (day, (tokens, cost)) in &want {
            assert_eq!(got[day].0, *tokens, "{day}");
            assert!((got[day].1 - cost).abs() <= 1e-6, "{day}: cost {} != {cost}", got[day].1);
        }
    } else {
        // What today's cells keep: requests, input, output and cache reads per day.
        let strip = |m: &BTreeMap<String, ([u64; 5], f64)>| -> BTreeMap<String, [u64; 4]> {
            m.iter().map(|(d, (t, _))| (d.clone(), [t[0], t[1], t[2], t[4]])).collect()
        };
        assert_eq!(strip(&got), strip(&want));
    }
}

#[test]
fn claude_code_per_utc_day_tokens_match_the_raw_lines() {
    per_day_matches_the_raw_lines("UTC", false);
}

/// The acceptance of issue 11 in full: local days (the ledger's UTC-hour cells), cache
/// creation and the cost estimated when recorded, per day, against the raw lines.
#[test]
fn claude_code_per_local_day_tokens_and_cost_match_the_raw_lines() {
    per_day_matches_the_raw_lines("America/Los_Angeles", true);
    per_day_matches_the_raw_lines("UTC", true);
}
