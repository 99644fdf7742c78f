//! Generates CLIProxyAPI-shaped usage snapshots for benchmarks (the shape of the seed's
//! gen_usage.py): `gen_usage OUT --seed S --details N [--base BASE --add K]`. With
//! `--base`, OUT is BASE plus K new request details, as another machine would write it.

use chrono::{DateTime, Duration, FixedOffset};
use git_tally::event::Event;
use git_tally::profile;
use serde_json::Value;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic and good enough for synthetic traffic.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone());
    let out = &args[1];
    let seed: u64 = get("--seed").map_or(1, |s| s.parse().unwrap());
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let p = profile::by_name("cliproxyapi").unwrap();
    let mut t: DateTime<FixedOffset> = DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z").unwrap();
    let (mut doc, n): (Value, u64) = match get("--base") {
        Some(base) => {
            t += Duration::days(40);
            (serde_json::from_slice(&std::fs::read(base).unwrap()).unwrap(), get("--add").unwrap().parse().unwrap())
        }
        None => ((p.empty)(), get("--details").map_or(100, |s| s.parse().unwrap())),
    };
    let apis = ["openai-compat", "gemini-cli", "claude-code", "codex"];
    let models = ["gpt-5", "gemini-2.5-pro", "claude-sonnet-4-5", "claude-opus-4-1", "gpt-5-codex"];
    for _ in 0..n {
        t += Duration::seconds(1 + rng.below(600) as i64) + Duration::microseconds(rng.below(1_000_000) as i64);
        let input = 10 + rng.below(50_000);
        let e = Event {
            id: None,
            timestamp: t,
            api: apis[rng.below(4) as usize].into(),
            provider: String::new(),
            model: models[rng.below(5) as usize].into(),
            source: format!("acct{}@example.com", 1 + rng.below(6)),
            auth_index: rng.below(10).to_string(),
            status: None,
            failed: rng.below(100) < 5,
            input_tokens: input,
            output_tokens: 1 + rng.below(8000),
            reasoning_tokens: rng.below(2001),
            cache_creation_tokens: 0,
            cache_read_tokens: rng.below(input + 1),
            total_tokens: 0,
            cost_usd: None,
            cost_estimated: false,
            latency_ms: Some(100 + rng.below(20_000)),
            ttft_ms: None,
            alias: String::new(),
            endpoint: String::new(),
            key_fingerprint: String::new(),
            method: String::new(),
            path: String::new(),
            device: String::new(),
        };
        let e = Event { total_tokens: e.input_with_cache_reads() + e.output_tokens + e.reasoning_tokens, ..e };
        (p.apply.unwrap())(&mut doc, &e).unwrap();
    }
    std::fs::write(out, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}
