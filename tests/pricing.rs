//! `git tally prices`: what applies to a model, an unknown model reported as unpriced, and
//! `prices update` from a file and from a URL served by a local HTTP server.

use crate::common::Env;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

/// A LiteLLM-shaped table with prices written by hand.
const TABLE: &str = r#"{
  "sample_spec": {"input_cost_per_token": 0.0, "mode": "one of: chat, embedding"},
  "acme-9000": {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6, "cache_read_input_token_cost": 5e-7,
                "input_cost_per_token_above_200k_tokens": 4e-6, "max_tokens": 8192, "supports_vision": true,
                "litellm_provider": "acme", "mode": "chat"},
  "acme/acme-mini": {"input_cost_per_token": 1e-7, "output_cost_per_token": 4e-7, "litellm_provider": "acme"},
  "acme-image": {"output_cost_per_image": 0.04, "mode": "image_generation"}
}"#;

fn repo(env: &Env) -> std::path::PathBuf {
    env.repo("usage")
}

fn run(env: &Env, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = env.tally(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_known_model_shows_the_entry_that_applies() {
    let env = Env::new();
    let dir = repo(&env);
    let (code, out, err) = run(&env, &dir, &["prices", "anthropic/claude-sonnet-4-5-20250929"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "anthropic/claude-sonnet-4-5-20250929 (matched claude-sonnet-4-5-20250929), provider anthropic"
    );
    assert_eq!(
        lines[1..8],
        [
            "per million tokens:",
            "  input                     $3.00",
            "  output                   $15.00",
            "  reasoning                $15.00",
            "  cache creation            $3.75",
            "  cache creation (1h)       $6.00",
            "  cache read                $0.30",
        ]
    );
    assert!(lines[8].starts_with("price table: the bundled LiteLLM snapshot (2026-11-30;"), "{out}");
}

#[test]
fn an_unknown_model_is_unpriced_not_free() {
    let env = Env::new();
    let dir = repo(&env);
    let (code, out, _) = run(&env, &dir, &["prices", "acme-9000"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("acme-9000: no price known; its requests are unpriced (reports show \"—\"), not free\n"),
        "{out}"
    );
    assert!(!out.contains("$0.00"), "{out}");
}

#[test]
fn update_from_a_file_replaces_the_table_of_this_repository() {
    let env = Env::new();
    let dir = repo(&env);
    let src = env.path().join("litellm.json");
    std::fs::write(&src, TABLE).unwrap();
    let (code, out, err) = run(&env, &dir, &["prices", "update", "--from", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let table = dir.join(".git/tally/prices.json");
    assert_eq!(out, format!("updated {}: 2 models priced, from {}\n", table.display(), src.display()));
    let (code, out, _) = run(&env, &dir, &["prices", "acme-9000"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  input                     $2.00   above 200k: $4.00\n"), "{out}");
    assert!(
        out.contains("  output                    $8.00\n") && out.contains("  cache read                $0.50\n"),
        "{out}"
    );
    assert!(out.contains(&format!("price table: {}", table.display())), "{out}");
    // A bare name finds the entry the table keeps under a provider prefix.
    let (code, out, _) = run(&env, &dir, &["prices", "acme-mini"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("acme-mini (matched acme/acme-mini), provider acme\n"), "{out}");
    // The models of the bundled snapshot are not in the updated table.
    assert_eq!(run(&env, &dir, &["prices", "claude-sonnet-4-5"]).0, 1);
    // Only the fields prices need are kept.
    let kept = std::fs::read_to_string(&table).unwrap();
    assert!(!kept.contains("supports_vision") && !kept.contains("acme-image"), "{kept}");
    // A source that is not price data changes nothing (exit 2, naming it).
    std::fs::write(&src, "<html>rate limited</html>").unwrap();
    let (code, _, err) = run(&env, &dir, &["prices", "update", "--from", src.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("litellm.json: not LiteLLM price data") && err.contains("nothing changed"), "{err}");
    assert_eq!(std::fs::read_to_string(&table).unwrap(), kept);
    let (code, _, err) =
        run(&env, &dir, &["prices", "update", "--from", env.path().join("missing.json").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.json: No such file"), "{err}");
}

/// Serves `responses` (status line and body), one per connection, on a local port; returns
/// the base URL and the request lines it received.
fn serve(responses: Vec<(&'static str, String)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (status, body) in responses {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            seen.push(request.trim_end().to_string());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).unwrap();
        }
        seen
    });
    (url, handle)
}

#[test]
fn update_from_a_url_served_over_http() {
    let env = Env::new();
    let dir = repo(&env);
    let (url, server) = serve(vec![("200 OK", TABLE.to_string()), ("404 Not Found", "gone".to_string())]);
    let from = format!("{url}/model_prices_and_context_window.json");
    let (code, out, err) = run(&env, &dir, &["prices", "update", "--from", &from]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 2 models priced, from http://127.0.0.1:"), "{out}");
    let table = std::fs::read_to_string(dir.join(".git/tally/prices.json")).unwrap();
    assert!(table.contains("\"acme-9000\""), "{table}");
    // A failed download changes nothing and is worth retrying (exit 3).
    let (code, _, err) = run(&env, &dir, &["prices", "update", "--from", &from]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("could not fetch") && err.contains("404"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join(".git/tally/prices.json")).unwrap(), table);
    let seen = server.join().unwrap();
    assert_eq!(seen, ["GET /model_prices_and_context_window.json HTTP/1.1"; 2]);
    // Nothing listening: a transient failure too.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, _, err) = run(&env, &dir, &["prices", "update", "--from", &format!("http://{closed}/p.json")]);
    assert_eq!(code, 3, "{err}");
}
