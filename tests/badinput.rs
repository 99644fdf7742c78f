//! Bad input through the real driver binary: each case exits with its documented code,
//! names the file (and line or JSON path), and loses nothing: ours and theirs both stay
//! readable in %A between conflict markers.

use crate::common::Env;
use serde_json::json;
use std::path::PathBuf;

struct Case {
    env: Env,
    base: PathBuf,
    ours: PathBuf,
    theirs: PathBuf,
}

fn case(base: &[u8], ours: &[u8], theirs: &[u8]) -> Case {
    let env = Env::new();
    let [b, o, t] = ["base", "ours", "theirs"].map(|n| env.path().join(n));
    std::fs::write(&b, base).unwrap();
    std::fs::write(&o, ours).unwrap();
    std::fs::write(&t, theirs).unwrap();
    Case { env, base: b, ours: o, theirs: t }
}

impl Case {
    /// Runs the driver; returns (exit code, stderr, %A afterwards).
    fn merge(&self) -> (i32, String, String) {
        let out = self
            .env
            .tally(self.env.path())
            .args(["merge", "-p", "usage/usage.json", "-l", "9"])
            .args([&self.base, &self.ours, &self.theirs])
            .output()
            .unwrap();
        let a = String::from_utf8_lossy(&std::fs::read(&self.ours).unwrap()).into_owned();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), a)
    }
}

fn tally_doc(requests: serde_json::Value) -> Vec<u8> {
    let mut d = json!({"format": "git-tally/1", "totals": {"requests": 1}, "days": {}, "recent": []});
    d["totals"]["requests"] = requests;
    serde_json::to_vec_pretty(&d).unwrap()
}

fn assert_kept(a: &str, ours: &[u8], theirs: &[u8]) {
    assert!(a.contains("<<<<<<<<< ") && a.contains(">>>>>>>>> "), "markers of length 9 expected:\n{a}");
    for side in [ours, theirs] {
        for line in String::from_utf8_lossy(side).lines().filter(|l| !l.trim().is_empty()) {
            assert!(a.contains(line), "line {line:?} lost");
        }
    }
}

#[test]
fn truncated_json_conflicts_and_names_the_line() {
    let good = tally_doc(json!(5));
    let theirs = &good[..good.len() - 20];
    let c = case(&tally_doc(json!(1)), &good, theirs);
    let (code, err, a) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("usage/usage.json") && err.contains("theirs") && err.contains("line"), "{err}");
    assert_kept(&a, &good, theirs);
}

#[test]
fn wrong_types_name_the_json_path() {
    let ours = tally_doc(json!("many"));
    let theirs = tally_doc(json!(3));
    let c = case(&tally_doc(json!(1)), &ours, &theirs);
    let (code, err, a) = c.merge();
    assert_eq!(code, 1);
    assert!(
        err.contains("usage/usage.json") && err.contains("$.totals.requests") && err.contains("expected a number"),
        "{err}"
    );
    assert_kept(&a, &ours, &theirs);
}

#[test]
fn numbers_beyond_64_bits_are_refused() {
    let big = b"{\"format\": \"git-tally/1\", \"totals\": {\"requests\": 18446744073709551616}}\n";
    let c = case(&tally_doc(json!(1)), big, &tally_doc(json!(2)));
    let (code, err, _) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("$.totals.requests") && err.contains("too large"), "{err}");
    let neg = b"{\"format\": \"git-tally/1\", \"totals\": {\"requests\": -9223372036854775809}}\n";
    let c = case(&tally_doc(json!(1)), neg, &tally_doc(json!(2)));
    assert_eq!(c.merge().0, 1);
}

#[test]
fn a_sum_that_overflows_is_an_error_not_a_wrap() {
    // Two different large additions (equal ones would be one change made twice, §4.5b).
    let c = case(&tally_doc(json!(0)), &tally_doc(json!(u64::MAX - 1)), &tally_doc(json!(u64::MAX - 2)));

    let (code, err, a) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("does not fit a 64-bit integer") && err.contains("$.totals.requests"), "{err}");
    assert!(a.contains("18446744073709551614"), "both sides kept");
    // A CLIProxyAPI detail without its total, whose parts sum beyond 64 bits: `check`
    // names the record's place (the view of such a file would recompute a wrapped total).
    let detail = br#"{"total_requests":1,"success_count":1,"failure_count":0,"total_tokens":0,"apis":{"k":{"total_requests":1,"total_tokens":0,"models":{"m":{"total_requests":1,"total_tokens":0,"details":[{"timestamp":"2026-01-01T10:00:00Z","source":"s","auth_index":"1","tokens":{"input_tokens":18446744073709551615,"output_tokens":1},"failed":false}]}}}}}"#;
    std::fs::write(c.env.path().join("wrap.json"), detail).unwrap();
    let out = c.env.tally(c.env.path()).args(["check", "--profile", "cliproxyapi", "wrap.json"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("wrap.json: $.apis.k.models.m.details: tokens") && err.contains("64 bits"), "{err}");
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let c = case(b"{}", deep.as_bytes(), b"{\"a\": 1}");
    let (code, err, _) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("usage/usage.json") && err.contains("recursion limit"), "{err}");
}

#[test]
fn conflict_markers_in_an_input_are_named_with_their_line() {
    let ours = b"{\n<<<<<<< HEAD\n  \"requests\": 2\n=======\n  \"requests\": 3\n>>>>>>> other\n}\n";
    let c = case(b"{\"requests\": 1}\n", ours, b"{\"requests\": 4}\n");
    let (code, err, a) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("ours") && err.contains("line 2") && err.contains("conflict markers"), "{err}");
    assert!(a.contains("\"requests\": 4"));
}

#[test]
fn an_empty_side_is_an_error_but_an_empty_base_is_add_add() {
    let c = case(b"{\"requests\": 1}\n", b"", b"{\"requests\": 4}\n");
    let (code, err, _) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("ours: the file is empty"), "{err}");
    let c = case(b"", b"{\"requests\": 1}\n", b"{\"requests\": 4}\n");
    let (code, _, a) = c.merge();
    assert_eq!(code, 0);
    assert_eq!(a, "{\"requests\": 5}\n");
}

#[test]
fn a_100_mb_input_merges() {
    let blob = "x".repeat(100 << 20);
    let doc = |n: u32| format!("{{\"blob\": \"{blob}\", \"n\": {n}}}\n").into_bytes();
    let c = case(&doc(1), &doc(2), &doc(5));
    let (code, err, a) = c.merge();
    assert_eq!(code, 0, "{err}");
    assert!(a.ends_with("\"n\": 6}\n") && a.len() > 100 << 20);
}

#[test]
fn unknown_profile_is_a_usage_error() {
    let c = case(b"{}", b"{}", b"{}");
    let out = c
        .env
        .tally(c.env.path())
        .args(["merge", "--profile", "nope"])
        .args([&c.base, &c.ours, &c.theirs])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown profile \"nope\""));
}

#[test]
fn check_reports_paths_and_exit_codes() {
    let env = Env::new();
    let dir = env.path();
    std::fs::write(
        dir.join("good.json"),
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cliproxyapi-export.json")).unwrap(),
    )
    .unwrap();
    let mut bad: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("good.json")).unwrap()).unwrap();
    bad["usage"]["total_requests"] = json!(12);
    bad["usage"]["apis"]["sk-cpa-dev-bravo-19d2"]["models"]["gemini-2.5-pro"]["total_tokens"] = json!(5);
    std::fs::write(dir.join("bad.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    std::fs::write(dir.join("broken.json"), b"{\"a\": [1, 2}").unwrap();
    env.tally(dir).args(["check", "good.json"]).assert().success();
    let out = env.tally(dir).args(["check", "good.json", "bad.json", "broken.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json: $.usage.total_requests"), "{err}");
    assert!(err.contains(r#"bad.json: $.usage.apis.sk-cpa-dev-bravo-19d2.models["gemini-2.5-pro"].total_tokens: is 5 but its records add up to 24474"#), "{err}");
    assert!(err.contains("broken.json: line 1, column 12"), "{err}");
    env.tally(dir).args(["check", "missing.json"]).assert().code(2);
}

#[test]
fn a_generic_conflict_marks_only_the_conflicting_lines_and_names_the_path() {
    let base = b"{\n  \"owner\": \"ann\",\n  \"requests\": 10,\n  \"tokens\": 100\n}\n";
    let ours = b"{\n  \"owner\": \"bob\",\n  \"requests\": 12,\n  \"tokens\": 100\n}\n";
    let theirs = b"{\n  \"owner\": \"cy\",\n  \"requests\": 15,\n  \"tokens\": 150\n}\n";
    let c = case(base, ours, theirs);
    let (code, err, a) = c.merge();
    assert_eq!(code, 1);
    assert!(err.contains("conflict at $.owner") && !err.contains("$.requests"), "{err}");
    let want = "{\n<<<<<<<<< ours\n  \"owner\": \"bob\",\n||||||||| base\n  \"owner\": \"ann\",\n=========\n  \"owner\": \"cy\",\n>>>>>>>>> theirs\n  \"requests\": 17,\n  \"tokens\": 150\n}\n";
    assert_eq!(a, want);
}

/// The real driver on arbitrary bytes and JSON: exit 0 or 1, never a crash (>128), and a
/// clean exit always leaves valid JSON in %A.
#[test]
fn the_driver_binary_never_crashes_on_garbage() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let env = Env::new();
    let mut runner = TestRunner::new(Config { cases: 40, ..Config::default() });
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "[{}\\[\\]\",:0-9a-z ]{0,80}".prop_map(String::into_bytes),
        Just(b"{\"apis\": {\"k\": {\"models\": {\"m\": {\"details\": [{\"timestamp\": 5}]}}}}}".to_vec()),
        Just(b"{\"format\": \"git-tally/1\", \"recent\": [{\"id\": 1}]}".to_vec()),
    ];
    runner
        .run(&(input.clone(), input.clone(), input), |(o, a, b)| {
            let c = case(&o, &a, &b);
            let (code, err, out) = c.merge();
            prop_assert!(code == 0 || code == 1, "exit {code}: {err}");
            if code == 0 {
                prop_assert!(git_tally::json::parse(out.as_bytes()).is_ok(), "exit 0 with invalid JSON: {out}");
            }
            Ok(())
        })
        .unwrap();
    drop(env);
}

/// Regression: outside a repository `git check-attr --stdin` exits before reading its
/// input; the SIGPIPE that writing to it raises must not kill the driver.
#[test]
fn a_child_git_that_exits_early_does_not_kill_the_driver() {
    let c = case(b"{\"requests\": 1}\n", b"{\"requests\": 2}\n", b"{\"requests\": 3}\n");
    let (code, err, a) = c.merge();
    assert_eq!(code, 0, "{err}");
    assert_eq!(a, "{\"requests\": 4}\n");
}

/// A file that is missing or cannot be written stays so until the user acts: exit 2 naming
/// it, not 3 ("transient, safe to retry"), which a timer would retry for ever.
#[test]
fn files_that_cannot_be_read_or_written_are_usage_errors() {
    let env = Env::new();
    let dir = env.path();
    std::fs::write(dir.join("u.json"), tally_doc(json!(1))).unwrap();
    for args in [
        vec!["check", "nope.json"],
        vec!["stats", "nope.json"],
        vec!["merge", "u.json", "nope.json", "u.json"],
        vec!["export", "--out", "/nonexistent/x.csv", "u.json"],
        vec!["report", "--html", "/nonexistent/x.html", "u.json"],
    ] {
        let out = env.tally(dir).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("nope.json") || err.contains("/nonexistent"), "{args:?}: {err}");
    }
    // A batch with a line that is not UTF-8: an invalid event named by its line.
    let repo = dir.join("repo");
    env.git(dir, &["init", "-q", repo.to_str().unwrap()]);
    env.git(&repo, &["config", "tally.enabled", "false"]);
    let out = env.tally(&repo).arg("record").write_stdin(&b"{\"model\":\"a\"}\n\xff\xfe\n"[..]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 2: not UTF-8") && err.contains("nothing of this batch was recorded"), "{err}");
}
