//! Prices against costs computed by hand from the per-token prices written in each test.

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[track_caller]
fn assert_cost(got: Option<f64>, want: f64) {
    let got = got.expect("a price is known");
    assert!(close(got, want), "cost {got} != {want}");
}

fn table(json: &str) -> Prices {
    Prices::parse(json.as_bytes(), Source::File("test.json".into())).unwrap()
}

/// A Claude-like model with LiteLLM's `_above_200k_tokens` tier on every kind.
fn tiered() -> Prices {
    table(
        r#"{"claude-tiered": {
            "input_cost_per_token": 3e-6, "input_cost_per_token_above_200k_tokens": 6e-6,
            "output_cost_per_token": 1.5e-5, "output_cost_per_token_above_200k_tokens": 2.25e-5,
            "cache_creation_input_token_cost": 3.75e-6, "cache_creation_input_token_cost_above_200k_tokens": 7.5e-6,
            "cache_read_input_token_cost": 3e-7, "cache_read_input_token_cost_above_200k_tokens": 6e-7,
            "input_cost_per_token_above_200k_tokens_priority": 1.0,
            "litellm_provider": "anthropic", "mode": "chat"}}"#,
    )
}

fn usage(input: u64, output: u64, cache_creation: u64, cache_read: u64) -> Usage {
    Usage { input, output, cache_creation, cache_read, ..Usage::default() }
}

#[test]
fn claude_without_cache() {
    // claude-sonnet-4-5: $3 in, $15 out per million.
    let p = Prices::bundled();
    assert_cost(p.cost_of("claude-sonnet-4-5", &usage(1000, 500, 0, 0)), 1000.0 * 3e-6 + 500.0 * 15e-6);
}

#[test]
fn claude_with_cache_reads_and_writes() {
    // claude-opus-4-6: $5 in, $25 out, $6.25 cache write, $0.50 cache read per million; the
    // fixture's first request.
    let p = Prices::bundled();
    let want = 3.0 * 5e-6 + 418.0 * 25e-6 + 2285.0 * 6.25e-6 + 22137.0 * 0.5e-6;
    assert_cost(p.cost_of("claude-opus-4-6", &usage(3, 418, 2285, 22137)), want);
    assert!(close(want, 0.03581475), "{want}");
}

#[test]
fn above_200k_tokens_the_excess_of_each_kind_at_the_higher_price() {
    let p = tiered();
    let want = (200_000.0 * 3e-6 + 100_000.0 * 6e-6) // input
        + 1000.0 * 1.5e-5 // output, below the tier
        + (200_000.0 * 3.75e-6 + 50_000.0 * 7.5e-6) // cache creation
        + 100_000.0 * 3e-7; // cache read, below the tier
    assert_cost(p.cost_of("claude-tiered", &usage(300_000, 1000, 250_000, 100_000)), want);
    assert!(close(want, 2.37), "{want}");
    // Exactly at the threshold: all at the base price; one token over: that one higher.
    assert_cost(p.cost_of("claude-tiered", &usage(200_000, 0, 0, 0)), 0.6);
    assert_cost(p.cost_of("claude-tiered", &usage(200_001, 0, 0, 0)), 0.6 + 6e-6);
    // The bundled Vertex entry carries the same tier.
    let v = Prices::bundled();
    let e = v.lookup("vertex_ai/claude-sonnet-4-5").unwrap();
    assert_eq!(e.tiers.len(), 1);
    assert_eq!(e.tiers[0].above, 200_000);
    assert_cost(v.cost_of("vertex_ai/claude-sonnet-4-5", &usage(250_000, 0, 0, 0)), 200_000.0 * 3e-6 + 50_000.0 * 6e-6);
}

#[test]
fn openai_cached_input_and_reasoning() {
    // gpt-5: $1.25 in, $0.125 cached, $10 out per million; reasoning billed as output.
    // The Codex fixture's first turn: 12,000 input of which 8,000 cached, 500 output of which
    // 200 reasoning -> the event keeps 4,000 input, 8,000 cache read, 300 output, 200 reasoning.
    let p = Prices::bundled();
    let u = Usage { input: 4000, cache_read: 8000, output: 300, reasoning: 200, ..Usage::default() };
    let want = 4000.0 * 1.25e-6 + 8000.0 * 0.125e-6 + 500.0 * 10e-6;
    assert_cost(p.cost_of("gpt-5", &u), want);
    assert!(close(want, 0.011), "{want}");
    assert_cost(p.cost_of("gpt-5-codex", &u), want);
}

#[test]
fn reasoning_is_tiered_with_the_output_it_is_part_of() {
    let p = table(
        r#"{"o-tiered": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-5,
            "output_cost_per_token_above_200k_tokens": 2e-5}}"#,
    );
    let u = Usage { output: 150_000, reasoning: 100_000, ..Usage::default() };
    assert_cost(p.cost_of("o-tiered", &u), 200_000.0 * 1e-5 + 50_000.0 * 2e-5);
}

#[test]
fn missing_cache_prices_fall_back_to_the_input_price() {
    let p = table(r#"{"plain": {"input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6}}"#);
    assert_cost(p.cost_of("plain", &usage(10, 10, 10, 10)), 10.0 * 2e-6 + 10.0 * 4e-6 + 20.0 * 2e-6);
}

#[test]
fn model_names_match_as_ccusage_matches_them() {
    let p = Prices::bundled();
    let key = |m: &str| p.lookup(m).map(|e| e.key.clone());
    let cases = [
        ("claude-sonnet-4-5", Some("claude-sonnet-4-5")),
        ("claude-sonnet-4-5-20250929", Some("claude-sonnet-4-5-20250929")),
        ("CLAUDE-Sonnet-4-5", Some("claude-sonnet-4-5")),
        ("anthropic/claude-sonnet-4-5", Some("claude-sonnet-4-5")),
        ("openrouter/anthropic/claude-opus-4.6", Some("claude-opus-4-6")),
        // The key but for separators, before any longer key holding it (a region's price).
        ("claude-sonnet-4.5", Some("claude-sonnet-4-5")),
        ("claude-haiku-4.5", Some("claude-haiku-4-5")),
        // Found only inside dated keys of equal length: the newest release.
        ("claude-3.7-sonnet", Some("anthropic.claude-3-7-sonnet-20250219-v1:0")),
        ("  claude-opus-4-6\t", Some("claude-opus-4-6")),
        // A date the table does not know, after a version it knows.
        ("claude-sonnet-4-5-20261231", Some("claude-sonnet-4-5")),
        ("gpt-5-2026-01-01", Some("gpt-5")),
        ("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0")),
        ("openai/gpt-5", Some("gpt-5")),
        ("gpt-5-codex", Some("gpt-5-codex")),
        ("grok-4.20", Some("xai/grok-4.20")),
        // The table has only grok-4.20: 4 is another version.
        ("grok-4", None),
        ("claude-sonnet-4-5@20250929", Some("vertex_ai/claude-sonnet-4-5@20250929")),
        // Never across a version: 4.9 is not 4.
        ("claude-sonnet-4-9", None),
        ("unknown", None),
        ("<synthetic>", None),
        ("", None),
        ("my-own-model", None),
    ];
    for (model, want) in cases {
        assert_eq!(key(model).as_deref(), want, "{model:?}");
    }
}

#[test]
fn estimate_keeps_a_given_cost_and_says_what_it_did() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-03T09:00:00Z").unwrap();
    let p = Prices::bundled();
    let ev = |json: &str| Event::parse(json, now, "laptop").unwrap();

    let mut given = ev(r#"{"model":"gpt-5","input_tokens":1000,"cost_usd":0.5}"#);
    assert_eq!(estimate(&p, &mut given), Priced::Given);
    assert_eq!(given.cost_usd, Some(0.5));

    let mut e = ev(
        r#"{"model":"gpt-5","input_tokens":4000,"cache_read_tokens":8000,"output_tokens":300,"reasoning_tokens":200}"#,
    );
    assert_eq!(estimate(&p, &mut e), Priced::Estimated);
    assert!(close(e.cost_usd.unwrap(), 0.011));
    assert_eq!(p.cost(&e), e.cost_usd);

    let mut unknown = ev(r#"{"model":"acme-9000","input_tokens":10}"#);
    assert_eq!(estimate(&p, &mut unknown), Priced::Unpriced);
    assert_eq!(unknown.cost_usd, None, "unpriced, not free");

    let mut empty = ev(r#"{"model":"acme-9000","status":500}"#);
    assert_eq!(estimate(&p, &mut empty), Priced::Estimated);
    assert_eq!(empty.cost_usd, Some(0.0), "no tokens, no cost");
}

#[test]
fn tables_that_are_not_price_data_are_refused() {
    let bad = Prices::parse(b"[1,2]", Source::File("x.json".into())).unwrap_err();
    assert!(bad.to_string().starts_with("x.json: not LiteLLM price data"), "{bad}");
    let empty = Prices::parse(br#"{"a": {"mode": "chat"}}"#, Source::File("y.json".into())).unwrap_err();
    assert!(matches!(empty, PricesError::Empty { .. }), "{empty}");
}

#[test]
fn update_keeps_the_prices_and_load_prefers_the_updated_table() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("litellm.json");
    std::fs::write(
        &src,
        r#"{"sample_spec": {"input_cost_per_token": 0.0, "mode": "one of: chat"},
            "acme-9000": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "max_tokens": 10,
                          "supports_vision": true, "litellm_provider": "acme", "mode": "chat"},
            "dall-e": {"input_cost_per_pixel": 1e-8, "mode": "image_generation"}}"#,
    )
    .unwrap();
    let state = dir.path().join("tally");
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().to_utc();
    let up = update(&state, src.to_str().unwrap(), now).unwrap();
    assert_eq!(up.models, 1);
    let p = Prices::load(&state).unwrap();
    assert_eq!(p.source, Source::File(state.join(FILE)));
    assert_eq!(p.len(), 1);
    assert_cost(p.cost_of("acme-9000", &usage(1000, 1000, 0, 0)), 1000.0 * 1e-6 + 1000.0 * 2e-6);
    assert_eq!(p.about.as_ref().unwrap()["updated"], "2026-11-30T12:00:00Z");
    let text = std::fs::read_to_string(state.join(FILE)).unwrap();
    assert!(!text.contains("supports_vision") && !text.contains("sample_spec"), "{text}");
    // A bad source changes nothing.
    std::fs::write(&src, "{\"truncated\": ").unwrap();
    let err = update(&state, src.to_str().unwrap(), now).unwrap_err();
    assert!(err.to_string().contains("litellm.json: not LiteLLM price data"), "{err}");
    assert_eq!(std::fs::read_to_string(state.join(FILE)).unwrap(), text);
    // Without a table of its own, the bundled one.
    assert_eq!(Prices::load(dir.path()).unwrap().source, Source::Bundled);
}

#[test]
fn the_bundled_table_built_into_the_binary_is_the_json_it_was_made_from() {
    let built = Prices::bundled();
    let read = Prices::parse(BUNDLED.as_bytes(), Source::Bundled).unwrap();
    assert!(built.len() > 100, "{} models", built.len());
    assert_eq!(built.entries, read.entries);
    assert_eq!(built.exact, read.exact);
    assert_eq!(built.prefixes, read.prefixes);
    assert_eq!(built.about, read.about);
    assert!(built.about.is_some());
}

#[test]
fn a_table_read_as_json_keeps_the_later_of_a_key_given_twice_and_ignores_other_values() {
    let t = table(
        r#"{"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
            "x": [1, 2], "y": "text", "z": {"input_cost_per_token": "free", "supports": {"a": [true, null]}},
            "m": {"input_cost_per_token": 3e-6, "output_cost_per_token": 4e-6, "litellm_provider": "p"}}"#,
    );
    assert_eq!(t.len(), 1);
    let e = t.lookup("m").unwrap();
    assert_eq!((e.rates[Kind::Input.index()], e.provider.as_str()), (Some(3e-6), "p"));
}
