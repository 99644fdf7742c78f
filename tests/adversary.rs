//! Failures found by trying to break git-tally on purpose (a restored backup, a user's own
//! revert pushed by sync, the first commands of a clone racing, a damaged local file moved
//! aside as told, counters beyond 64 bits), each a test through real git and the binary.

use crate::common::Env;
use crate::sync::{cluster, FILE};
use serde_json::Value;
use std::path::Path;

fn event(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","model":"gpt-5","provider":"openai","input_tokens":10,"output_tokens":1,"cost_usd":0.001,"timestamp":"2026-01-05T10:00:00Z"}}"#
    )
}

fn record(env: &Env, dir: &Path, id: &str) {
    let out = env.tally(dir).args(["record", "--event", &event(id)]).output().unwrap();
    assert!(out.status.success(), "record {id}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sync(env: &Env, dir: &Path) -> String {
    let out = env.tally(dir).arg("sync").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sync in {}: {text}", dir.display());
    text
}

fn requests(env: &Env, dir: &Path) -> u64 {
    let out = env.tally(dir).args(["stats", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["totals"]["requests"].as_u64().unwrap()
}

fn fresh(env: &Env, remote: &Path, profile: &str) -> std::path::PathBuf {
    let dir = env.path().join(format!("fresh-{}", std::process::id() ^ rand()));
    env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), dir.to_str().unwrap()]);
    env.git(&dir, &["config", "tally.profile", profile]);
    dir
}

fn rand() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// A clone put back from a backup (or a VM snapshot) goes on recording: what it pushed
/// after the backup stays, and what it records now counts.
fn a_restored_backup(profile: &str) {
    let c = cluster(1, profile);
    let m = &c.clones[0];
    record(&c.env, m, "a1");
    sync(&c.env, m);
    let snap = c.env.path().join("snapshot");
    let cp = std::process::Command::new("cp").arg("-a").arg(m).arg(&snap).status().unwrap();
    assert!(cp.success());
    record(&c.env, m, "a2");
    record(&c.env, m, "a3");
    sync(&c.env, m);
    std::fs::remove_dir_all(m).unwrap();
    std::fs::rename(&snap, m).unwrap();
    record(&c.env, m, "b1");
    sync(&c.env, m);
    sync(&c.env, m);
    let f = fresh(&c.env, &c.remote, profile);
    assert_eq!(requests(&c.env, &f), 4, "{profile}: a fresh clone holds a1 a2 a3 b1");
    assert_eq!(requests(&c.env, m), 4, "{profile}: the restored clone too");
}

/// The same, when the restored clone's first command after the restore folds before any
/// sync: an import, or a `clear-history`. Its new requests land in the hour its stale
/// files already count, where the files its original pushed count more.
fn a_restored_backup_then(step: &str) {
    let c = cluster(1, "tally");
    let m = &c.clones[0];
    let line = |id: &str, second: u32| {
        format!(
            r#"{{"id":"{id}","timestamp":"2026-11-20T10:00:{second:02}Z","provider":"anthropic","api":"claude-code","model":"claude-sonnet-4-5","input_tokens":100,"output_tokens":10}}"#
        )
    };
    let record_line = |l: String| {
        let out = c.env.tally(m).args(["record", "--event", &l]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    for i in 1..=3 {
        record_line(line(&format!("b{i}"), i));
    }
    sync(&c.env, m);
    let snap = c.env.path().join("snapshot");
    assert!(std::process::Command::new("cp").arg("-a").arg(m).arg(&snap).status().unwrap().success());
    for i in 4..=6 {
        record_line(line(&format!("b{i}"), i));
    }
    sync(&c.env, m);
    std::fs::remove_dir_all(m).unwrap();
    std::fs::rename(&snap, m).unwrap();
    match step {
        "import" => {
            let dir = c.env.path().join("claude/projects/p");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("s.jsonl"),
                r#"{"type":"assistant","sessionId":"s","requestId":"rq1","timestamp":"2026-11-20T10:30:00Z","message":{"id":"msg1","model":"claude-sonnet-4-5","usage":{"input_tokens":7,"output_tokens":10}}}"#
                    .to_string()
                    + "\n",
            )
            .unwrap();
            let out = c.env.tally(m).args(["import", "claude-code"]).arg(c.env.path().join("claude")).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        _ => {
            record_line(line("b7", 7));
            let out = c.env.tally(m).args(["clear-history", "-y"]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    sync(&c.env, m);
    sync(&c.env, m);
    let f = fresh(&c.env, &c.remote, "tally");
    assert_eq!(requests(&c.env, &f), 7, "{step}: a fresh clone holds the 6 recorded and the new one");
    assert_eq!(requests(&c.env, m), 7, "{step}: the restored clone too");
}

#[test]
fn a_clone_restored_from_a_backup_loses_nothing_it_imports_first() {
    a_restored_backup_then("import");
}

#[test]
fn a_clone_restored_from_a_backup_loses_nothing_it_clears_first() {
    a_restored_backup_then("clear-history");
}

#[test]
fn a_clone_restored_from_a_backup_loses_nothing_native() {
    a_restored_backup("tally");
}

#[test]
fn a_clone_restored_from_a_backup_loses_nothing_cliproxyapi() {
    a_restored_backup("cliproxyapi");
}

/// The user reverts another device's usage commit in their clone and syncs: sync must not
/// push the ledger lowered (a device's contribution only grows).
#[test]
fn a_users_revert_of_another_devices_usage_is_not_pushed() {
    let c = cluster(2, "tally");
    let (m1, m2) = (&c.clones[0], &c.clones[1]);
    sync(&c.env, m1);
    record(&c.env, m2, "x1");
    sync(&c.env, m2);
    record(&c.env, m2, "x2");
    sync(&c.env, m2);
    sync(&c.env, m1);
    assert_eq!(requests(&c.env, m1), 2);
    c.env.git(m1, &["revert", "--no-edit", "HEAD"]);
    sync(&c.env, m1);
    assert_eq!(requests(&c.env, m1), 2, "the revert lowered nothing");
    sync(&c.env, m2);
    assert_eq!(requests(&c.env, m2), 2);
    assert_eq!(requests(&c.env, &fresh(&c.env, &c.remote, "tally")), 2, "the remote");
}

/// The first commands of a new clone, all at once: one device, every event once.
#[test]
fn the_first_commands_of_a_clone_racing_make_one_device() {
    for attempt in 0..3 {
        let c = cluster(1, "tally");
        let m = &c.clones[0];
        let mut children = Vec::new();
        for i in 0..12 {
            children.push(c.tally(m).args(["record", "--event", &event(&format!("e{i}"))]).spawn().unwrap());
        }
        children.push(c.tally(m).arg("sync").spawn().unwrap());
        let mut acknowledged = 0;
        for (i, mut ch) in children.into_iter().enumerate() {
            let ok = ch.wait().unwrap().success();
            if i < 12 {
                assert!(ok, "attempt {attempt}: record {i}");
                acknowledged += 1;
            }
        }
        for _ in 0..3 {
            c.sync_until_ok(m);
        }
        let f = fresh(&c.env, &c.remote, "tally");
        let keys = std::fs::read_dir(f.join("usage/usage.ledger")).unwrap().count();
        assert_eq!(keys, 1, "attempt {attempt}: one device key");
        assert_eq!(requests(&c.env, &f), acknowledged, "attempt {attempt}: every event once");
    }
}

/// This device's own copy of a file, damaged or lost (moved aside, as an old message
/// told users to): what was synced is taken back from the repository, nothing is lowered.
#[test]
fn a_damaged_or_lost_own_file_loses_nothing_synced() {
    let c = cluster(1, "tally");
    let m = &c.clones[0];
    for id in ["a1", "a2", "a3"] {
        record(&c.env, m, id);
    }
    sync(&c.env, m);
    let own = m.join(".git/tally/own/usage~usage.json/2026-01-05.json");
    std::fs::write(&own, b"{ damaged").unwrap();
    record(&c.env, m, "b1");
    let said = sync(&c.env, m);
    assert!(said.contains("replaced by what the repository holds"), "{said}");
    assert_eq!(requests(&c.env, m), 4);
    // Lost: moved aside.
    std::fs::rename(&own, own.with_extension("aside")).unwrap();
    record(&c.env, m, "b2");
    sync(&c.env, m);
    assert_eq!(requests(&c.env, m), 5);
    assert_eq!(requests(&c.env, &fresh(&c.env, &c.remote, "tally")), 5);
}

/// Token counts beyond 64 bits are an error, never a saturated sum.
#[test]
fn token_counts_beyond_64_bits_are_an_error_not_a_saturated_sum() {
    let c = cluster(1, "tally");
    let m = &c.clones[0];
    let big = r#"{"id":"big","model":"gpt-5","input_tokens":18446744073709551615,"timestamp":"2026-01-05T10:00:00Z"}"#;
    let small = r#"{"id":"small","model":"gpt-5","input_tokens":5,"timestamp":"2026-01-05T10:00:00Z"}"#;
    for e in [big, small] {
        let out = c.env.tally(m).args(["record", "--event", e]).output().unwrap();
        assert!(out.status.success() || out.status.code() == Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = c.env.tally(m).arg("sync").output().unwrap();
    let stats = c.env.tally(m).args(["stats", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&stats.stdout).unwrap_or(Value::Null);
    let input = v["totals"]["input_tokens"].as_u64();
    assert!(
        input != Some(u64::MAX) || !out.status.success(),
        "a saturated sum was accepted: sync {:?}, input_tokens {input:?}",
        out.status.code()
    );
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("64"), "the error says why: {said}");
        assert_eq!(out.status.code(), Some(2), "bad input, not a transient failure: {said}");
    }
    let _ = FILE;
}

/// A line in the journal that no `record` wrote (a damaged file) stopped every later sync
/// with exit 1, and the events beside it never reached the remote.
#[test]
fn a_damaged_journal_line_is_set_aside_and_the_events_beside_it_are_synced() {
    let c = cluster(2, "tally");
    let (a, b) = (&c.clones[0], &c.clones[1]);
    record(&c.env, a, "r1");
    sync(&c.env, a);
    record(&c.env, a, "r2");
    let journal = a.join(".git/tally/journal");
    let segment = std::fs::read_dir(&journal).unwrap().flatten().map(|e| e.path()).max().unwrap();
    let mut text = std::fs::read_to_string(&segment).unwrap();
    text.push_str("{\"bad\n");
    std::fs::write(&segment, text).unwrap();
    record(&c.env, a, "r3");
    let said = sync(&c.env, a);
    assert!(said.contains("line 2") && said.contains("not counted, kept in"), "{said}");
    let kept = std::fs::read_dir(a.join(".git/tally/damaged")).unwrap().flatten().next().unwrap().path();
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "{\"bad\n");
    sync(&c.env, b);
    assert_eq!(requests(&c.env, b), 3, "r1, r2 and r3 on the other clone");
    assert_eq!(requests(&c.env, a), 3);
    assert!(std::fs::read_to_string(b.join(FILE)).unwrap().contains("\"r3\""));
}

/// Two CLIProxyAPI clones, the first with three requests recorded and synced: the
/// application's file is there to be written over.
fn three_requests_synced() -> crate::sync::Cluster {
    let c = cluster(2, "cliproxyapi");
    for id in ["r1", "r2", "r3"] {
        record(&c.env, &c.clones[0], id);
    }
    sync(&c.env, &c.clones[0]);
    c
}

/// An application's write that holds, beside the snapshot, a copy of it under `usage` (the
/// key of CLIProxyAPI's export envelope; the file is not an envelope): the copy's records
/// are not where the format keeps records, and are not counted again under made-up api and
/// model names (found by an adversarial pass: 6 requests and an api named "apis").
#[test]
fn records_outside_the_formats_places_are_not_counted_again() {
    let c = three_requests_synced();
    let (a, b) = (&c.clones[0], &c.clones[1]);
    let path = a.join(FILE);
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["usage"] = doc.clone();
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    sync(&c.env, a);
    sync(&c.env, b);
    for d in [a, b] {
        assert_eq!(requests(&c.env, d), 3, "{}", d.display());
        let view: Value = serde_json::from_slice(&std::fs::read(d.join(FILE)).unwrap()).unwrap();
        assert_eq!(view["total_requests"], 3, "{}", d.display());
        assert!(view["apis"].get("apis").is_none(), "{view}");
    }
}

/// An application write that repeats a key: the last copy is the document (as every JSON
/// reader takes it), so the records under the earlier copy are not counted a second time.
#[test]
fn a_repeated_key_in_an_application_write_counts_its_records_once() {
    let c = three_requests_synced();
    let (a, b) = (&c.clones[0], &c.clones[1]);
    let path = a.join(FILE);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    // `{"apis": <the same apis>, <the file's own members, apis among them>}`.
    let repeated = format!("{{\"apis\": {},{}", doc["apis"], text.trim_start().strip_prefix('{').unwrap());
    assert_eq!(serde_json::from_str::<Value>(&repeated).unwrap(), doc, "the same document to a JSON reader");
    std::fs::write(&path, repeated).unwrap();
    sync(&c.env, a);
    sync(&c.env, b);
    for d in [a, b] {
        assert_eq!(requests(&c.env, d), 3, "{}", d.display());
    }
}
