//! What a request costs when its source does not say: a per-model price table (input,
//! output, reasoning, cache creation, cache read per token, with tiers above a number of
//! tokens), bundled as a trimmed snapshot of LiteLLM's model price data and updatable
//! (`git tally prices update`) into `.git/tally/prices.json`.
//!
//! Costs are estimated once, when an event is recorded ([`estimate`]), so that history does
//! not change when prices do. Model names are matched as ccusage matches them (an exact key,
//! then a provider prefix added or removed, then the longest key found inside the name at
//! word boundaries, never across a version number), so the same transcripts give the same
//! cost in both tools.

use crate::event::Event;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The bundled snapshot (see `src/prices/README.md`).
/// The bundled table as JSON (what `generated` was made from, by `build.rs`).
#[cfg(test)]
const BUNDLED: &str = include_str!("litellm-prices.json");

mod generated {
    include!(concat!(env!("OUT_DIR"), "/bundled_prices.rs"));
}

/// LiteLLM's published price data, the default of `prices update`.
pub const DEFAULT_URL: &str =
    "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json";

/// The file under the state directory (`.git/tally/`) that holds an updated table.
pub const FILE: &str = "prices.json";

/// The key under which a table file says where it came from (LiteLLM's own data has no
/// such key; an entry without prices is not a model).
const META: &str = "_git_tally";

/// The kinds of tokens a request is billed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Input not read from or written to the cache.
    Input,
    /// Output, without reasoning.
    Output,
    /// Reasoning output (OpenAI counts it in its output and bills it at the output price).
    Reasoning,
    /// Written to the cache (Anthropic: the 5-minute cache).
    CacheCreation,
    /// Written to the 1-hour cache (Anthropic's `ephemeral_1h_input_tokens`).
    CacheCreation1h,
    /// Read from the cache.
    CacheRead,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Input, Kind::Output, Kind::Reasoning, Kind::CacheCreation, Kind::CacheCreation1h, Kind::CacheRead];

    /// LiteLLM's name of this price (per token), before any `_above_<n>k_tokens` suffix.
    fn field(self) -> &'static str {
        match self {
            Kind::Input => "input_cost_per_token",
            Kind::Output => "output_cost_per_token",
            Kind::Reasoning => "output_cost_per_reasoning_token",
            Kind::CacheCreation => "cache_creation_input_token_cost",
            Kind::CacheCreation1h => "cache_creation_input_token_cost_above_1hr",
            Kind::CacheRead => "cache_read_input_token_cost",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Output => "output",
            Kind::Reasoning => "reasoning",
            Kind::CacheCreation => "cache creation",
            Kind::CacheCreation1h => "cache creation (1h)",
            Kind::CacheRead => "cache read",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-token prices by [`Kind`]; `None` where the table has none.
pub type Rates = [Option<f64>; 6];

/// A higher price for the tokens of a kind beyond `above` tokens (LiteLLM's
/// `*_above_200k_tokens`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    pub above: u64,
    pub rates: Rates,
}

/// One model's prices.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The table's key (`claude-sonnet-4-5-20250929`, `gemini/gemini-2.5-pro`).
    pub key: String,
    /// LiteLLM's `litellm_provider`.
    pub provider: String,
    /// As the table gives them.
    pub rates: Rates,
    /// Ordered by `above`.
    pub tiers: Vec<Tier>,
}

/// The tokens of one request, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache_creation: u64,
    pub cache_creation_1h: u64,
    pub cache_read: u64,
}

impl Usage {
    pub fn of(e: &Event) -> Usage {
        Usage {
            input: e.input_tokens,
            output: e.output_tokens,
            reasoning: e.reasoning_tokens,
            cache_creation: e.cache_creation_tokens,
            cache_creation_1h: 0,
            cache_read: e.cache_read_tokens,
        }
    }

    fn get(&self, k: Kind) -> u64 {
        match k {
            Kind::Input => self.input,
            Kind::Output => self.output,
            Kind::Reasoning => self.reasoning,
            Kind::CacheCreation => self.cache_creation,
            Kind::CacheCreation1h => self.cache_creation_1h,
            Kind::CacheRead => self.cache_read,
        }
    }

    pub fn is_zero(&self) -> bool {
        Kind::ALL.iter().all(|&k| self.get(k) == 0)
    }
}

impl Entry {
    /// The per-token price of `kind` below the first tier. Missing prices fall back as the
    /// providers bill: reasoning at the output price, cache creation and cache reads at the
    /// input price (no discount known), the 1-hour cache at the cache-creation price.
    pub fn rate(&self, kind: Kind) -> f64 {
        let own = |k: Kind| self.rates[k.index()];
        let input = own(Kind::Input);
        match kind {
            Kind::Input | Kind::Output => own(kind),
            Kind::Reasoning => own(kind).or(own(Kind::Output)),
            Kind::CacheCreation | Kind::CacheRead => own(kind).or(input),
            Kind::CacheCreation1h => own(kind).or(own(Kind::CacheCreation)).or(input),
        }
        .unwrap_or(0.0)
    }

    /// A tier's price of `kind`; `None` keeps the price below the tier.
    fn tier_rate(tier: &Tier, kind: Kind) -> Option<f64> {
        let own = |k: Kind| tier.rates[k.index()];
        match kind {
            Kind::Reasoning => own(kind).or(own(Kind::Output)),
            _ => own(kind),
        }
    }

    /// What `usage` costs in US dollars. Each kind is tiered on its own, as ccusage does:
    /// the tokens beyond a tier's threshold at the tier's price, the rest at the base price.
    /// Reasoning without a price of its own is output (OpenAI counts it so), tiered with it.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let mut usage = *usage;
        if self.rates[Kind::Reasoning.index()].is_none() {
            usage.output = usage.output.saturating_add(usage.reasoning);
            usage.reasoning = 0;
        }
        Kind::ALL
            .iter()
            .map(|&kind| {
                let tokens = usage.get(kind);
                if tokens == 0 {
                    return 0.0;
                }
                let mut price = self.rate(kind);
                let (mut from, mut cost) = (0u64, 0.0);
                for tier in &self.tiers {
                    if tokens <= tier.above {
                        break;
                    }
                    cost += (tier.above - from) as f64 * price;
                    from = tier.above;
                    price = Entry::tier_rate(tier, kind).unwrap_or(price);
                }
                cost + (tokens - from) as f64 * price
            })
            .sum()
    }
}

/// How an event's cost was decided when it was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priced {
    /// The source gave `cost_usd`; kept as given.
    Given,
    /// Estimated from the price table.
    Estimated,
    /// No cost given and no price known for the model: `cost_usd` stays `None` (unpriced,
    /// which reports show as "—", never as free).
    Unpriced,
}

/// Sets `e.cost_usd` from `prices` when the event has none, and says how its cost was
/// decided. The write path calls this once per event, when it is recorded. A request with
/// no tokens at all costs nothing, whatever its model.
pub fn estimate(prices: &Prices, e: &mut Event) -> Priced {
    if e.cost_usd.is_some() {
        return Priced::Given;
    }
    let usage = Usage::of(e);
    if usage.is_zero() {
        e.cost_usd = Some(0.0);
        return Priced::Estimated;
    }
    match prices.cost_of(&e.model, &usage) {
        Some(c) => {
            e.cost_usd = Some(c);
            Priced::Estimated
        }
        None => Priced::Unpriced,
    }
}

/// Where a table came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Bundled,
    File(PathBuf),
}

/// A price table.
#[derive(Debug)]
pub struct Prices {
    entries: Vec<Entry>,
    /// Lower-cased key -> index in `entries`.
    exact: HashMap<String, usize>,
    /// Provider prefixes the keys use (`gemini/`, `xai/`): tried in front of a bare name.
    prefixes: Vec<String>,
    /// What the table says about itself (`_git_tally`), if anything.
    pub about: Option<Value>,
    pub source: Source,
    /// Model name -> match, so that a long import matches each model once.
    memo: Mutex<HashMap<String, Option<usize>>>,
}

/// Why a price table could not be read or fetched.
#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("could not fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{from}: not LiteLLM price data ({message})")]
    Parse { from: String, message: String },
    #[error("{from}: no model with a per-token price in it; is it LiteLLM's model_prices_and_context_window.json?")]
    Empty { from: String },
    #[error(transparent)]
    Write(#[from] crate::error::Error),
}

impl PricesError {
    /// Only a failed download is worth retrying as it is.
    pub fn is_transient(&self) -> bool {
        matches!(self, PricesError::Fetch { .. })
    }
}

impl Prices {
    /// The bundled snapshot.
    pub fn bundled() -> Prices {
        let entries =
            generated::ENTRIES.iter().filter_map(|(key, nums, provider)| priced(key, nums.iter().copied(), provider));
        let about = serde_json::from_str(generated::ABOUT).ok().filter(|v: &Value| !v.is_null());
        Prices::from_entries(entries.collect(), about, Source::Bundled).expect("the bundled price table prices models")
    }

    /// The table under `state_dir` (`.git/tally/prices.json`) when there is one, else the
    /// bundled snapshot. A table file that cannot be read is an error naming it, not a
    /// silent fall back to older prices.
    pub fn load(state_dir: &Path) -> Result<Prices, PricesError> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Prices::parse(&bytes, Source::File(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Prices::bundled()),
            Err(source) => Err(PricesError::Read { path, source }),
        }
    }

    /// A table in LiteLLM's shape: `{model: {input_cost_per_token, …, litellm_provider}}`.
    /// Entries without a per-token input or output price (images, audio, embeddings priced
    /// otherwise) are left out.
    pub fn parse(bytes: &[u8], source: Source) -> Result<Prices, PricesError> {
        let from = match &source {
            Source::Bundled => "the bundled price table".to_string(),
            Source::File(p) => p.display().to_string(),
        };
        // Read straight into entries, without a document of values in between: `record`
        // prices an event with the whole table, and building one cost more than the rest
        // of a `record`.
        let Table { entries, about } = serde_json::from_slice(bytes)
            .map_err(|e| PricesError::Parse { from: from.clone(), message: e.to_string() })?;
        Prices::from_entries(entries, about, source).ok_or(PricesError::Empty { from })
    }

    /// The table of `entries` (`None` when there are none).
    fn from_entries(mut entries: Vec<Entry>, about: Option<Value>, source: Source) -> Option<Prices> {
        if entries.is_empty() {
            return None;
        }
        // A key given twice: the later one, as a JSON object reads.
        entries.reverse();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|a, b| a.key == b.key);
        let mut exact = HashMap::with_capacity(entries.len());
        let mut prefixes: Vec<String> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            exact.entry(e.key.to_ascii_lowercase()).or_insert(i);
            if let Some((p, _)) = e.key.split_once('/') {
                let p = format!("{}/", p.to_ascii_lowercase());
                if !prefixes.contains(&p) {
                    prefixes.push(p);
                }
            }
        }
        Some(Prices { entries, exact, prefixes, about, source, memo: Mutex::new(HashMap::new()) })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry that applies to `model`, if any.
    pub fn lookup(&self, model: &str) -> Option<&Entry> {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = memo.get(model) {
            return found.map(|i| &self.entries[i]);
        }
        let found = self.find(model);
        memo.insert(model.to_string(), found);
        found.map(|i| &self.entries[i])
    }

    /// What `usage` costs with `model`'s prices; `None` when no price is known.
    pub fn cost_of(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.lookup(model).map(|e| e.cost(usage))
    }

    /// What the event costs at these prices (ignoring any `cost_usd` it carries).
    pub fn cost(&self, e: &Event) -> Option<f64> {
        self.cost_of(&e.model, &Usage::of(e))
    }

    fn find(&self, model: &str) -> Option<usize> {
        let name = model.trim().to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        // A routing prefix the table does not use (`openrouter/anthropic/…`, `bedrock/…`):
        // the name after each slash, longest first.
        let mut rest = name.as_str();
        while let Some((_, tail)) = rest.split_once('/') {
            if let Some(&i) = self.exact.get(tail) {
                return Some(i);
            }
            rest = tail;
        }
        // A bare name the table keeps under a provider prefix (`grok-4` as `xai/grok-4`).
        for p in &self.prefixes {
            if let Some(&i) = self.exact.get(&format!("{p}{rest}")) {
                return Some(i);
            }
        }
        // The key that is the name but for separators (`claude-sonnet-4.5`); else the
        // longest key found inside the name; else the shortest key the name is found in
        // (a provider's regional variant is a longer key). At word boundaries and never
        // across a version number: `claude-sonnet-4-5-20251231` is `claude-sonnet-4-5`,
        // `claude-sonnet-4-5` is not `claude-sonnet-4`.
        let norm = normalize(&name);
        let has_digit = norm.bytes().any(|b| b.is_ascii_digit());
        let mut best: Option<((u8, isize), usize, &str)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let key = normalize(&e.key.to_ascii_lowercase());
            let len = key.len() as isize;
            let rank = if key == norm {
                (2, 0)
            } else if contains_key(&norm, &key) {
                (1, len)
            } else if has_digit && contains_key(&key, &norm) {
                (0, -len)
            } else {
                continue;
            };
            // Ties: the first key in order; for a name found inside keys, the last (the
            // newest dated release: an undated name is the current model).
            let better = match best {
                None => true,
                Some((r, _, k)) => rank > r || (rank == r && (e.key.as_str() < k) != (rank.0 == 0)),
            };
            if better {
                best = Some((rank, i, e.key.as_str()));
            }
        }
        best.map(|(_, i, _)| i)
    }
}

/// Separator variants of the same name (`claude-opus-4.5`, `claude-opus-4@20250514`).
fn normalize(s: &str) -> String {
    s.replace(['.', '@', ':', '_'], "-")
}

/// Whether `key` occurs in `name` with a non-alphanumeric byte (or nothing) on each side,
/// and what follows it is not a further version number (`-5` after `claude-sonnet-4`); a
/// date after a version (`-20250929`, `-2025-08-07`) is not a version.
fn contains_key(name: &str, key: &str) -> bool {
    if key.is_empty() {
        return false;
    }
    name.match_indices(key).any(|(at, _)| {
        let before_ok = at == 0 || !name.as_bytes()[at - 1].is_ascii_alphanumeric();
        let after = &name[at + key.len()..];
        before_ok && after_ok(key, after)
    })
}

fn after_ok(key: &str, after: &str) -> bool {
    let Some(&first) = after.as_bytes().first() else { return true };
    if first.is_ascii_alphanumeric() {
        return false;
    }
    if !key.as_bytes().last().is_some_and(u8::is_ascii_digit) || first != b'-' {
        return true;
    }
    let rest = &after[1..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return true;
    }
    let boundary = |s: &str| s.as_bytes().first().is_none_or(|b| !b.is_ascii_alphanumeric());
    // A date: YYYYMMDD, or YYYY-MM-DD.
    let compact = digits == 8 && boundary(&rest[8..]);
    let dashed = digits == 4
        && rest.len() >= 10
        && rest.as_bytes()[4] == b'-'
        && rest.as_bytes()[7] == b'-'
        && rest[5..7].bytes().all(|b| b.is_ascii_digit())
        && rest[8..10].bytes().all(|b| b.is_ascii_digit())
        && boundary(&rest[10..]);
    compact || dashed
}

/// One LiteLLM entry as an [`Entry`]; `None` for what is not priced per token.
fn entry(key: &str, v: &Value) -> Option<Entry> {
    let fields: Vec<(String, Field)> = v
        .as_object()?
        .iter()
        .map(|(f, x)| {
            let x = match x {
                Value::Number(n) => n.as_f64().map_or(Field::Other, Field::Num),
                Value::String(s) => Field::Str(s.clone()),
                _ => Field::Other,
            };
            (f.clone(), x)
        })
        .collect();
    entry_of(key, &fields)
}

/// A field of a table entry, as far as the table needs it.
enum Field {
    Num(f64),
    Str(String),
    /// An entry's fields (a table's top-level values are objects).
    Object(Vec<(String, Field)>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Field, E> {
                Ok(Field::Num(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                Ok(Field::Str(v.to_string()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Field, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Field, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = a.next_entry::<String, Field>()? {
                    out.push(entry);
                }
                Ok(Field::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A whole table: its priced entries and what it says about itself.
struct Table {
    entries: Vec<Entry>,
    about: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Table, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Table;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of models and their prices")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Table, A::Error> {
                let mut t = Table { entries: Vec::new(), about: None };
                while let Some(key) = a.next_key::<String>()? {
                    if key == META {
                        t.about = Some(a.next_value()?);
                    } else if let Field::Object(fields) = a.next_value::<Field>()? {
                        t.entries.extend(entry_of(&key, &fields));
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_map(V)
    }
}

/// An entry from the fields of a table's object.
fn entry_of(key: &str, fields: &[(String, Field)]) -> Option<Entry> {
    let nums = fields.iter().filter_map(|(f, v)| match v {
        Field::Num(n) => Some((f.as_str(), *n)),
        _ => None,
    });
    let provider = fields.iter().rev().find_map(|(f, v)| match v {
        Field::Str(s) if f == "litellm_provider" => Some(s.as_str()),
        _ => None,
    });
    priced(key, nums, provider.unwrap_or(""))
}

/// An entry from its numeric fields (prices and others) and provider; `None` when it has
/// no per-token input or output price.
fn priced<'a>(key: &str, nums: impl Iterator<Item = (&'a str, f64)>, provider: &str) -> Option<Entry> {
    if key == META || key == "sample_spec" {
        return None;
    }
    let mut rates: Rates = [None; 6];
    let mut tiers: Vec<Tier> = Vec::new();
    for (field, price) in nums {
        if !(price.is_finite() && price >= 0.0) {
            continue;
        }
        let (name, above) = match tier_of(field) {
            Some((name, above)) => (name, Some(above)),
            None => (field, None),
        };
        let Some(kind) = Kind::ALL.iter().copied().find(|k| k.field() == name) else { continue };
        match above {
            None => rates[kind.index()] = Some(price),
            Some(above) => {
                let at = match tiers.iter().position(|t| t.above == above) {
                    Some(at) => at,
                    None => {
                        tiers.push(Tier { above, rates: [None; 6] });
                        tiers.len() - 1
                    }
                };
                tiers[at].rates[kind.index()] = Some(price);
            }
        }
    }
    if rates[Kind::Input.index()].is_none() && rates[Kind::Output.index()].is_none() {
        return None;
    }
    tiers.sort_by_key(|t| t.above);
    let provider = provider.to_string();
    Some(Entry { key: key.to_string(), provider, rates, tiers })
}

/// `input_cost_per_token_above_200k_tokens` -> (`input_cost_per_token`, 200_000).
fn tier_of(field: &str) -> Option<(&str, u64)> {
    let stem = field.strip_suffix("k_tokens")?;
    let at = stem.rfind("_above_")?;
    let n: u64 = stem[at + "_above_".len()..].parse().ok()?;
    Some((&field[..at], n * 1000))
}

/// The fields `update` keeps of each entry: the prices the table uses and the provider.
fn kept_field(field: &str) -> bool {
    let name = tier_of(field).map_or(field, |(n, _)| n);
    field == "litellm_provider" || Kind::ALL.iter().any(|k| k.field() == name)
}

/// What `update` wrote.
#[derive(Debug)]
pub struct Updated {
    pub path: PathBuf,
    pub models: usize,
    pub bytes: usize,
}

/// Fetches (a URL) or reads (a file) LiteLLM's price data, keeps the per-token prices of
/// every model that has them, and replaces `state_dir/prices.json` atomically. Nothing is
/// written unless the new table parses and prices at least one model.
pub fn update(state_dir: &Path, from: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Updated, PricesError> {
    let bytes = if from.starts_with("http://") || from.starts_with("https://") {
        fetch(from)?
    } else {
        std::fs::read(from).map_err(|source| PricesError::Read { path: from.into(), source })?
    };
    let doc: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| PricesError::Parse { from: from.to_string(), message: e.to_string() })?;
    let mut out = serde_json::Map::new();
    out.insert(
        META.into(),
        serde_json::json!({"source": from, "updated": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
    );
    let mut models = 0;
    for (k, v) in &doc {
        if entry(k, v).is_none() {
            continue;
        }
        let kept: serde_json::Map<String, Value> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(f, _)| kept_field(f))
            .map(|(f, x)| (f.clone(), x.clone()))
            .collect();
        out.insert(k.clone(), Value::Object(kept));
        models += 1;
    }
    if models == 0 {
        return Err(PricesError::Empty { from: from.to_string() });
    }
    // One model a line: a readable diff when the table is committed somewhere.
    let mut text = String::from("{\n");
    let n = out.len();
    for (i, (k, v)) in out.iter().enumerate() {
        text.push_str(&format!("{}: {}{}\n", Value::from(k.as_str()), v, if i + 1 < n { "," } else { "" }));
    }
    text.push_str("}\n");
    std::fs::create_dir_all(state_dir).map_err(|source| PricesError::Read { path: state_dir.into(), source })?;
    let path = state_dir.join(FILE);
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    Ok(Updated { path, models, bytes: text.len() })
}

fn fetch(url: &str) -> Result<Vec<u8>, PricesError> {
    let fail = |message: String| PricesError::Fetch { url: url.to_string(), message };
    let config = ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(60))).build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    // LiteLLM's file is a few MB; a limit keeps a wrong URL from filling the disk.
    response.into_body().with_config().limit(64 << 20).read_to_vec().map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests;
