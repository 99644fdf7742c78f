//! `prices [MODEL]` and `prices update`: which price applies to a model, and refreshing the
//! table from LiteLLM's published data.

use super::open_ledger as open_store;
use crate::cli::{PricesAction, PricesArgs};
use crate::error::{Error, Result};
use crate::exit;
use crate::prices::{self, Kind, Prices, PricesError, Source};
use std::path::Path;

pub fn run(dir: &Path, proxy: Option<&Path>, args: &PricesArgs) -> Result<i32> {
    match &args.action {
        Some(PricesAction::Update { from }) => update(dir, proxy, from.as_deref()),
        None => show(dir, proxy, args.model.as_deref()),
    }
}

fn error(e: PricesError) -> Error {
    match e {
        PricesError::Write(e) => e,
        e if e.is_transient() => Error::Transient(format!("{e} (nothing changed; try again, or use --from FILE)")),
        e => Error::Usage(format!("{e} (nothing changed)")),
    }
}

fn update(dir: &Path, proxy: Option<&Path>, from: Option<&str>) -> Result<i32> {
    let store = open_store(dir, proxy)?;
    let from = from.unwrap_or(prices::DEFAULT_URL);
    let up = prices::update(store.state().root(), from, chrono::Utc::now()).map_err(error)?;
    println!("updated {}: {} models priced, from {from}", up.path.display(), up.models);
    Ok(exit::OK)
}

/// The table in use: this repository's updated one, else the bundled snapshot. Outside a
/// repository, the bundled one.
fn table(dir: &Path, proxy: Option<&Path>) -> Result<Prices> {
    match open_store(dir, proxy) {
        Ok(store) => Prices::load(store.state().root()).map_err(error),
        Err(_) => Ok(Prices::bundled()),
    }
}

fn describe(p: &Prices) -> String {
    let what = match &p.source {
        Source::Bundled => "the bundled LiteLLM snapshot".to_string(),
        Source::File(path) => path.display().to_string(),
    };
    let about = p.about.as_ref().map(|a| {
        let field = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
        match (field("snapshot").or(field("updated")), field("source")) {
            (Some(when), Some(from)) => format!(" ({when}; {from})"),
            (Some(when), None) => format!(" ({when})"),
            _ => String::new(),
        }
    });
    format!("{what}{}, {} models", about.unwrap_or_default(), p.len())
}

/// Dollars per million tokens, as price lists show them.
fn per_million(per_token: f64) -> String {
    let s = format!("{:.4}", per_token * 1e6);
    let s = s.trim_end_matches('0');
    let s = if s.ends_with('.') { format!("{s}00") } else { s.to_string() };
    match s.split_once('.') {
        Some((_, d)) if d.len() < 2 => format!("${s}0"),
        _ => format!("${s}"),
    }
}

fn show(dir: &Path, proxy: Option<&Path>, model: Option<&str>) -> Result<i32> {
    let p = table(dir, proxy)?;
    let Some(model) = model else {
        println!("price table: {}", describe(&p));
        println!("`git tally prices MODEL` shows a model's prices; `git tally prices update` refreshes the table");
        return Ok(exit::OK);
    };
    let Some(e) = p.lookup(model) else {
        println!("{model}: no price known; its requests are unpriced (reports show \"—\"), not free");
        println!("price table: {}; `git tally prices update` fetches LiteLLM's current one", describe(&p));
        return Ok(exit::CONFLICT);
    };
    let matched = if e.key == model { String::new() } else { format!(" (matched {})", e.key) };
    println!("{model}{matched}, provider {}", if e.provider.is_empty() { "-" } else { &e.provider });
    println!("per million tokens:");
    for kind in Kind::ALL {
        let mut line = format!("  {:<20} {:>10}", kind.label(), per_million(e.rate(kind)));
        for t in &e.tiers {
            if let Some(r) = t.rates[kind as usize] {
                line.push_str(&format!("   above {}k: {}", t.above / 1000, per_million(r)));
            }
        }
        println!("{line}");
    }
    println!("price table: {}", describe(&p));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn per_million_reads_like_a_price_list() {
        assert_eq!(super::per_million(3e-6), "$3.00");
        assert_eq!(super::per_million(1.25e-7), "$0.125");
        assert_eq!(super::per_million(3.75e-6), "$3.75");
        assert_eq!(super::per_million(0.0), "$0.00");
        assert_eq!(super::per_million(1.5e-5), "$15.00");
    }
}
