//! Configuration refused where it is read, in the terms the user wrote it in; the umask
//! honoured; destructive commands that ask; a demo that cleans up after itself.

use crate::common::{have, read_json, Env};
use crate::ops::paths::clone_of_bare;
use crate::sync::event_line;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

fn run(env: &Env, dir: &Path, args: &[&str]) -> Output {
    env.tally(dir).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_tally_file_is_refused_before_anything_is_recorded() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    std::fs::create_dir_all(repo.join("usage")).unwrap();
    let outside = env.path().join("outside.json");
    for (value, why) in [
        ("../outside.json", "`..` leads outside the work tree"),
        (outside.to_str().unwrap(), "outside the work tree"),
        ("usage", "is a directory"),
        (".git/usage.json", "inside .git"),
    ] {
        env.git(&repo, &["config", "tally.file", value]);
        for args in [&["record", "--event", &event_line(0, 0)][..], &["sync"], &["stats"]] {
            let out = run(&env, &repo, args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{value} {args:?}: {err}");
            // One line, naming the key and the value.
            assert!(err.starts_with(&format!("git-tally: git config tally.file = {value:?}: ")), "{err}");
            assert!(err.contains(why) && err.lines().count() == 1, "{value} {args:?}: {err}");
        }
    }
    assert!(!outside.exists());
    assert!(
        std::fs::read_dir(repo.join(".git/tally")).map_or(true, |d| d
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().starts_with("journal"))),
        "nothing journaled"
    );
    // An absolute path inside the work tree is the same file as the relative one.
    env.git(&repo, &["config", "tally.file", repo.join("usage/usage.json").to_str().unwrap()]);
    let out = run(&env, &repo, &["record", "--event", &event_line(0, 0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&env, &repo, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = env.git(&repo, &["ls-files", "usage"]);
    assert!(
        !files.is_empty() && files.lines().all(|f| f.starts_with("usage/usage.ledger/")),
        "the ledger of usage/usage.json: {files}"
    );
}

#[test]
fn a_usage_file_no_attribute_applies_to_is_warned_about_once() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    env.tally(&repo).arg("install").assert().success();
    // A committed usage file (a view is not committed, and no merge applies to it).
    env.git(&repo, &["config", "tally.commitView", "true"]);
    env.git(&repo, &["config", "tally.file", "usage.jsn"]);

    let out = run(&env, &repo, &["record", "--event", &event_line(0, 0)]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: tally.file usage.jsn: no merge=tally attribute applies to it"), "{err}");
    // Read from the cache afterwards: a proxy's log does not repeat it for every write.
    let out = run(&env, &repo, &["record", "--event", &event_line(0, 1)]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
    // The default file, covered by `install`'s patterns: no warning.
    env.git(&repo, &["config", "--unset", "tally.file"]);
    let out = run(&env, &repo, &["record", "--event", &event_line(0, 2)]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn proxy_config_errors_and_a_disabled_sync_speak_the_proxys_terms() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    let yaml = env.path().join("proxy.yaml");
    let y = yaml.to_str().unwrap();
    // Missing: bad configuration, not a transient failure.
    let out = run(&env, &repo, &["--proxy-config", y, "sync"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("--proxy-config {y}: ")), "{}", stderr(&out));
    // Sync disabled: a cron job's sync exits 0 with a note, and says nothing on stderr.
    std::fs::write(&yaml, "gitstore:\n  usage-sync:\n    enabled: false\nstatistics-file: ./local.json\n").unwrap();
    let out = run(&env, &repo, &["--proxy-config", y, "record", "--event", &event_line(0, 0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    for cmd in ["sync", "pull", "flush", "daemon"] {
        let out = run(&env, &repo, &["--proxy-config", y, cmd]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && out.stderr.is_empty(), "{cmd}: {}", stderr(&out));
        assert!(
            stdout.contains(&format!("usage sync is disabled in {y} (gitstore.usage-sync.enabled: false)")),
            "{cmd}: {stdout}"
        );
        assert!(!stdout.contains("tally.enabled"), "{stdout}");
    }
    assert_eq!(read_json(&repo.join("local.json"))["totals"]["requests"], 1);
    // No gitstore section at all.
    std::fs::write(&yaml, "statistics-file: ./local.json\n").unwrap();
    let out = run(&env, &repo, &["--proxy-config", y, "sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no gitstore.usage-sync section"));
    // A usage path outside the repository names the YAML key.
    std::fs::write(&yaml, "gitstore:\n  usage-sync:\n    enabled: true\n    path: ../usage.json\n").unwrap();
    let out = run(&env, &repo, &["--proxy-config", y, "record", "--event", &event_line(0, 1)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{y}: gitstore.usage-sync.path = \"../usage.json\"")), "{}", stderr(&out));
    // Sync off in git config: the same, in git config's terms.
    env.git(&repo, &["config", "tally.enabled", "false"]);
    let out = run(&env, &repo, &["sync"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tally.enabled = false"));
}

/// git-tally started through `sh` with `umask`.
fn with_umask(env: &Env, dir: &Path, umask: &str, args: &[&str]) {
    let mut c = env.command_of(Path::new("/bin/sh"), dir);
    c.args(["-c", &format!("umask {umask}; exec \"$0\" \"$@\""), crate::common::bin().to_str().unwrap()]).args(args);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn new_files_honour_the_umask_and_existing_ones_keep_their_mode() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    let file = repo.join("usage/usage.json");
    with_umask(&env, &repo, "022", &["record", "--event", &event_line(0, 0)]);
    with_umask(&env, &repo, "022", &["sync"]);
    assert_eq!(mode(&file), 0o644, "the usage file, readable by a dashboard running as another user");
    with_umask(&env, &repo, "027", &["export", "--format", "csv", "--out", "usage.csv"]);
    assert_eq!(mode(&repo.join("usage.csv")), 0o640);
    with_umask(&env, &repo, "002", &["report", "--html", "usage.html"]);
    assert_eq!(mode(&repo.join("usage.html")), 0o664);
    let xdg = env.path().join("xdg");
    let mut c = env.command_of(Path::new("/bin/sh"), &repo);
    c.env("XDG_CONFIG_HOME", &xdg).args([
        "-c",
        "umask 022; exec \"$0\" systemd install --no-start",
        crate::common::bin().to_str().unwrap(),
    ]);
    assert!(c.output().unwrap().status.success());
    for unit in std::fs::read_dir(xdg.join("systemd/user")).unwrap() {
        assert_eq!(mode(&unit.unwrap().path()), 0o644);
    }
    with_umask(&env, &repo, "077", &["hooks", "install"]);
    assert_eq!(mode(&repo.join(".git/hooks/pre-commit")), 0o700, "executable, private under umask 077");
    // A file that exists keeps the mode its owner gave it.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    with_umask(&env, &repo, "022", &["record", "--event", &event_line(0, 1)]);
    with_umask(&env, &repo, "022", &["sync"]);
    assert_eq!(read_json(&file)["totals"]["requests"], 2);
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn reset_and_clear_history_ask_or_need_yes() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    let file = repo.join("usage/usage.json");
    env.tally(&repo).args(["record", "--event", &event_line(0, 0), "--event", &event_line(0, 1)]).assert().success();
    env.tally(&repo).arg("sync").assert().success();
    for cmd in ["reset", "clear-history"] {
        let out = run(&env, &repo, &[cmd]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
        assert_eq!(read_json(&file)["totals"]["requests"], 2, "{cmd} without --yes changed nothing");
    }
    let test = "ops::config::reset_and_clear_history_ask_or_need_yes";
    if have("script", test) {
        // On a terminal (script(1) gives it one): asked, and "n" changes nothing.
        let on_tty = |answer: &str| {
            let mut c = env.command_of(Path::new("script"), &repo);
            c.args(["-qec", &format!("{} reset", crate::common::bin().display()), "/dev/null"]);
            c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), answer.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (code, shown) = on_tty("n\n");
        assert!(shown.contains("Zero the aggregates") && shown.contains("[y/N]"), "{shown}");
        assert_eq!(code, Some(1), "{shown}");
        assert_eq!(read_json(&file)["totals"]["requests"], 2);
        let (code, shown) = on_tty("y\n");
        assert_eq!(code, Some(0), "{shown}");
        assert_eq!(read_json(&file)["totals"]["requests"], 0);
    }
    let out = run(&env, &repo, &["clear-history", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_demo_shows_the_race_and_removes_its_directory() {
    let env = Env::new();
    let tmp = env.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = env.tally(env.path()).env("TMPDIR", &tmp).args(["demo", "--events", "50"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("all 100 requests once: yes"), "{stdout}");
    assert!(stdout.contains("the machines raced: ") && stdout.contains("integrated them"), "{stdout}");
    assert!(stdout.contains("removed ") && stdout.contains("--keep"), "{stdout}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the temporary directory is gone");
    let out = env.tally(env.path()).env("TMPDIR", &tmp).args(["demo", "--events", "10", "--keep"]).output().unwrap();
    assert!(out.status.success());
    let kept: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].join("laptop/usage/usage.json").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("git -C {}", kept[0].join("laptop").display())));
}

#[test]
fn usage_of_a_file_no_longer_configured_is_kept_committed_and_named() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    // A typo in tally.file: events recorded, folded (clear-history folds) and not synced.
    env.git(&repo, &["config", "tally.file", "usage/usgae.json"]);
    for i in 0..3 {
        assert!(run(&env, &repo, &["record", "--event", &event_line(0, i)]).status.success());
    }
    assert!(run(&env, &repo, &["clear-history", "--yes"]).status.success());
    // Fixed; more events for the right file.
    env.git(&repo, &["config", "tally.file", "usage/usage.json"]);
    assert!(run(&env, &repo, &["record", "--event", &event_line(0, 3)]).status.success());
    let out = run(&env, &repo, &["status"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("not in tally.file: usage/usgae.json"), "status:\n{said}");
    let out = run(&env, &repo, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["unconfigured_files"][0]["file"], "usage/usgae.json", "{s}");
    let out = run(&env, &repo, &["doctor"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("git tally move usage/usgae.json"), "doctor:\n{said}");
    // Sync commits it with the rest (nothing of it is dropped)...
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    let tree = env.git(&repo, &["ls-tree", "-r", "--name-only", "origin/main"]);
    assert!(tree.lines().any(|l| l.starts_with("usage/usgae.ledger/")), "pushed:\n{tree}");
    assert_eq!(read_json(&repo.join("usage/usage.json"))["totals"]["requests"], 1);
    // ...and naming the file again counts it again.
    env.git(&repo, &["config", "--add", "tally.file", "usage/usgae.json"]);
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    assert_eq!(read_json(&repo.join("usage/usgae.json"))["totals"]["requests"], 3);
    let out = run(&env, &repo, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["unconfigured_files"], serde_json::json!([]), "{s}");
}

#[test]
fn usage_of_a_mistyped_file_moves_into_the_configured_one_once() {
    let env = Env::new();
    let remote = env.path().join("repo-remote.git");
    let repo = clone_of_bare(&env, "repo");
    // A typo in tally.file: three events folded (a reset floor of its own too: one is
    // recorded before a reset, so two count) and synced; fixed, then one for the right file.
    env.git(&repo, &["config", "tally.file", "usage/usgae.json"]);
    assert!(run(&env, &repo, &["record", "--event", &event_line(0, 0)]).status.success());
    assert!(run(&env, &repo, &["reset", "--yes"]).status.success());
    for i in 1..3 {
        assert!(run(&env, &repo, &["record", "--event", &event_line(0, i)]).status.success());
    }
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    env.git(&repo, &["config", "tally.file", "usage/usage.json"]);
    assert!(run(&env, &repo, &["record", "--event", &event_line(0, 3)]).status.success());

    // Wrong names first: exit 2, nothing moved.
    let out = run(&env, &repo, &["move", "usage/nothing.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage/usgae.json"), "names the orphan");
    let out = run(&env, &repo, &["move", "usage/usgae.json", "--to", "usage/other.json"]);
    assert_eq!(out.status.code(), Some(2));

    let out = run(&env, &repo, &["move", "usage/usgae.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&env, &repo, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["unconfigured_files"], serde_json::json!([]), "{s}");
    let out = run(&env, &repo, &["stats", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["totals"]["requests"], 3, "the two after the reset and the new one: {s}");
    // Again: nothing left to move.
    assert_eq!(run(&env, &repo, &["move", "usage/usgae.json"]).status.code(), Some(2));

    // Shared: a fresh clone counts it once, under this device's name.
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    let other = env.path().join("other");
    env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), other.to_str().unwrap()]);
    assert!(run(&env, &other, &["sync"]).status.success(), "sync of the fresh clone");
    let view = read_json(&other.join("usage/usage.json"));
    assert_eq!(view["totals"]["requests"], 3, "{view}");
    assert_eq!(view["devices"].as_object().map(|d| d.len()), Some(1), "one device name: {view}");
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    assert_eq!(read_json(&repo.join("usage/usage.json")), view);
}

#[test]
fn moving_usage_that_the_target_counted_too_is_refused() {
    let env = Env::new();
    let repo = clone_of_bare(&env, "repo");
    // Both files configured: every recorded event is folded into each.
    env.git(&repo, &["config", "tally.file", "usage/usage.json"]);
    env.git(&repo, &["config", "--add", "tally.file", "usage/old.json"]);
    assert!(run(&env, &repo, &["record", "--event", &event_line(0, 0)]).status.success());
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    env.git(&repo, &["config", "--unset-all", "tally.file"]);
    env.git(&repo, &["config", "tally.file", "usage/usage.json"]);
    let out = run(&env, &repo, &["move", "usage/old.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("twice"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
    assert_eq!(read_json(&repo.join("usage/usage.json"))["totals"]["requests"], 1);
}

#[test]
fn a_move_killed_at_any_rename_is_finished_by_running_it_again() {
    let test = "ops::config::a_move_killed_at_any_rename_is_finished_by_running_it_again";
    if !have("strace", test) {
        return;
    }
    let mut killed = 0;
    for n in 1.. {
        assert!(n < 60, "a move never got through");
        let env = Env::new();
        let remote = env.path().join("repo-remote.git");
        let repo = clone_of_bare(&env, "repo");
        env.git(&repo, &["config", "tally.file", "usage/usgae.json"]);
        for i in 0..2 {
            assert!(run(&env, &repo, &["record", "--event", &event_line(0, i)]).status.success());
        }
        assert!(run(&env, &repo, &["sync"]).status.success(), "sync");
        env.git(&repo, &["config", "tally.file", "usage/usage.json"]);
        assert!(run(&env, &repo, &["record", "--event", &event_line(0, 2)]).status.success());
        let out = env
            .command_of(Path::new("strace"), &repo)
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2"])
            .args(["-e", &format!("inject=rename,renameat,renameat2:signal=SIGKILL:when={n}")])
            .arg(crate::common::bin())
            .args(["move", "usage/usgae.json"])
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let was_killed = out.status.signal() == Some(9) || out.status.code() == Some(128 + 9);
        if was_killed {
            killed += 1;
            // Killed after the move was done (writing the view): nothing left to move.
            let again = run(&env, &repo, &["move", "usage/usgae.json"]);
            let said = String::from_utf8_lossy(&again.stderr);
            assert!(
                again.status.success() || (again.status.code() == Some(2) && said.contains("no usage of")),
                "#{n}: the move again: {said}"
            );
        } else {
            assert!(out.status.success(), "#{n}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(run(&env, &repo, &["sync"]).status.success(), "#{n}: sync");
        let tree = env.git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
        assert!(!tree.contains(".git-tally-"), "#{n}: a temporary file committed:\n{tree}");
        let fresh = env.path().join("fresh");
        env.git(env.path(), &["clone", "-q", &format!("file://{}", remote.display()), fresh.to_str().unwrap()]);
        assert!(run(&env, &fresh, &["sync"]).status.success(), "#{n}: the fresh clone's sync");
        assert_eq!(read_json(&fresh.join("usage/usage.json"))["totals"]["requests"], 3, "#{n}: every request once");
        if !was_killed {
            break;
        }
    }
    assert!(killed > 0, "strace killed no move: the test would prove nothing");
}

#[test]
fn without_a_remote_sync_and_pull_commit_locally_and_say_how_to_add_one() {
    let env = Env::new();
    let repo = env.repo("repo");
    let out = run(&env, &repo, &["record", "--event", &event_line(0, 0)]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "recorded 1 event");
    for (i, cmd) in ["sync", "pull"].into_iter().enumerate() {
        assert!(run(&env, &repo, &["record", "--event", &event_line(0, i + 1)]).status.success());
        let out = run(&env, &repo, &[cmd]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {said}");
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 1, "{cmd}: one line: {said}");
        assert!(lines[0].contains("no remote to sync with") && lines[0].contains("git remote add"), "{said}");
        // Folded and committed locally: nothing pending, the ledger in HEAD.
        let status: serde_json::Value =
            serde_json::from_slice(&run(&env, &repo, &["status", "--json"]).stdout).unwrap();
        assert_eq!(status["pending_events"], 0, "{status}");
        let last = status["last_sync"].as_str().unwrap_or_else(|| panic!("{status}"));
        assert!(chrono::DateTime::parse_from_rfc3339(last).is_ok(), "RFC 3339: {last}");
        let tree = env.git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
        assert!(tree.contains("usage/usage.ledger/"), "{cmd}: committed:\n{tree}");
    }
    // Reports work regardless.
    let out = run(&env, &repo, &["stats", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["totals"]["requests"], 3, "{s}");
}
