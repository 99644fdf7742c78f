//! Reading any profile's file as usage figures: totals, and rows of counters by day,
//! week, month, model, provider, api or device. Each profile is read from the parts that
//! are exact for it — aggregates that survive trimming, not only the recent records.

use crate::engine::Input;
use crate::profile::Profile;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The counters shown for a total or a row (SPEC §8): input without the cache, output,
/// reasoning, cache creation and cache read kept apart; the cost, the part of it that was
/// estimated from the price table, and the requests no price was known for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub requests: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_creation_tokens: u64,
    #[serde(alias = "cached_tokens")]
    pub cache_read_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
    pub cost_estimated_usd: f64,
    pub unpriced: u64,
}

impl Counters {
    /// The values in the order of [`crate::profile::COUNTERS`] (CSV columns).
    pub fn values(&self) -> [String; 11] {
        [
            self.requests.to_string(),
            self.failed.to_string(),
            self.input_tokens.to_string(),
            self.output_tokens.to_string(),
            self.reasoning_tokens.to_string(),
            self.cache_creation_tokens.to_string(),
            self.cache_read_tokens.to_string(),
            self.total_tokens.to_string(),
            self.cost_usd.to_string(),
            self.cost_estimated_usd.to_string(),
            self.unpriced.to_string(),
        ]
    }

    /// Adds `o` (a report's sums stop at the largest count rather than wrap).
    pub fn add(&mut self, o: &Counters) {
        self.requests = self.requests.saturating_add(o.requests);
        self.failed = self.failed.saturating_add(o.failed);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cache_creation_tokens = self.cache_creation_tokens.saturating_add(o.cache_creation_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(o.cache_read_tokens);
        self.total_tokens = self.total_tokens.saturating_add(o.total_tokens);
        self.cost_usd += o.cost_usd;
        self.cost_estimated_usd += o.cost_estimated_usd;
        self.unpriced = self.unpriced.saturating_add(o.unpriced);
    }
}

/// One cell of usage: which day, machine, provider, api key and model, and its counters.
/// Parts a format does not know are `None`.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// The UTC hour (`YYYY-MM-DDTHH`) where the format keeps hours: reports put it in the
    /// local day of their time zone.
    pub hour: Option<String>,
    pub day: Option<String>,
    pub device: Option<String>,
    pub provider: Option<String>,
    pub api: Option<String>,
    pub model: Option<String>,
    pub counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Day,
    Week,
    Month,
    Model,
    Provider,
    Api,
    Device,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "day" => By::Day,
            "week" => By::Week,
            "month" => By::Month,
            "model" => By::Model,
            "provider" => By::Provider,
            "api" => By::Api,
            "device" => By::Device,
            _ => return None,
        })
    }
}

/// What a report shows: totals and rows, from cells for one breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub profile: String,
    pub totals: Counters,
    pub success_rate: Option<f64>,
    pub tracked_since: Option<String>,
    pub by: String,
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub key: String,
    #[serde(flatten)]
    pub counters: Counters,
}

fn u(v: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_u64).unwrap_or(0)
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A counters object of the native format (`totals`, or a cell).
fn native_counters(c: &Value) -> Counters {
    // One pass over the entries: this runs for every cell of years of data.
    let mut out = Counters::default();
    for (k, v) in c.as_object().into_iter().flatten() {
        let n = v.as_u64().unwrap_or(0);
        match k.as_str() {
            "requests" => out.requests = n,
            "failed" => out.failed = n,
            "input_tokens" => out.input_tokens = n,
            "output_tokens" => out.output_tokens = n,
            "reasoning_tokens" => out.reasoning_tokens = n,
            "cache_creation_tokens" => out.cache_creation_tokens = n,
            "cache_read_tokens" | "cached_tokens" => out.cache_read_tokens = n,
            "total_tokens" => out.total_tokens = n,
            "cost_usd" => out.cost_usd = v.as_f64().unwrap_or(0.0),
            "cost_estimated_usd" => out.cost_estimated_usd = v.as_f64().unwrap_or(0.0),
            "unpriced" => out.unpriced = n,
            _ => {}
        }
    }
    out
}

/// A cell of the native format's `hours` (UTC hour, device, provider, api, model).
fn native_cell([hour, device, provider, api, model]: [&str; 5], counters: Counters) -> Cell {
    Cell {
        hour: Some(hour.to_string()),
        day: hour.get(..10).map(str::to_string),
        device: Some(device.to_string()),
        provider: Some(provider.to_string()),
        api: Some(api.to_string()),
        model: Some(model.to_string()),
        counters,
    }
}

/// `cells` of a native file (or a 0.1 one) read straight from its text, without building a
/// `Value` tree: `stats` over years of hourly data is mostly this read. `None` unless the
/// text is a native file whose hours and counters have the expected types (keys without
/// escapes): `cells` over the parsed document then decides, with the same result.
pub fn native_cells(bytes: &[u8]) -> Option<(&'static Profile, (Counters, Vec<Cell>))> {
    type Models<'a> = BTreeMap<&'a str, Counters>;
    type Apis<'a> = BTreeMap<&'a str, Models<'a>>;
    #[derive(Deserialize)]
    struct Native<'a> {
        format: &'a str,
        #[serde(default)]
        kind: Option<&'a str>,
        #[serde(default)]
        totals: Counters,
        #[serde(borrow, default)]
        hours: BTreeMap<&'a str, BTreeMap<&'a str, BTreeMap<&'a str, Apis<'a>>>>,
        /// 0.1's per-day cells (`git-tally/1`): day, device, provider, model.
        #[serde(borrow, default)]
        days: BTreeMap<&'a str, BTreeMap<&'a str, Apis<'a>>>,
    }
    let doc: Native = serde_json::from_slice(crate::json::body(bytes).ok()?).ok()?;
    let mut totals = Counters::default();
    let mut cells = Vec::new();
    if doc.format == crate::profile::V1_FORMAT {
        for (day, devices) in doc.days {
            for (device, providers) in devices {
                for (provider, models) in providers {
                    for (model, counters) in models {
                        let cell = v1_cell([day, device, provider, model], counters);
                        totals.add(&cell.counters);
                        cells.push(cell);
                    }
                }
            }
        }
        return Some((crate::profile::by_name("tally-v1")?, (doc.totals.max_with(totals), cells)));
    }
    if doc.format != crate::profile::NATIVE_FORMAT || doc.kind.is_some() {
        return None;
    }
    for (hour, devices) in doc.hours {
        for (device, providers) in devices {
            for (provider, apis) in providers {
                for (api, models) in apis {
                    for (model, counters) in models {
                        totals.add(&counters);
                        cells.push(native_cell([hour, device, provider, api, model], counters));
                    }
                }
            }
        }
    }
    Some((crate::profile::by_name("tally")?, (doc.totals.max_with(totals), cells)))
}

/// A cell of 0.1's `days` (day, device, provider, model). 0.1 kept no mark of a cost
/// nobody gave: zero with tokens is that.
fn v1_cell([day, device, provider, model]: [&str; 4], mut counters: Counters) -> Cell {
    if counters.cost_usd == 0.0 && counters.total_tokens > 0 {
        counters.unpriced = counters.requests;
    }
    Cell {
        day: Some(day.to_string()),
        device: Some(device.to_string()),
        provider: Some(provider.to_string()),
        model: Some(model.to_string()),
        counters,
        ..Cell::default()
    }
}

fn day_of(ts: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.format("%Y-%m-%d").to_string())
}

fn ms_day(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d").to_string())
}

/// The records of a document as values (for formats whose breakdowns come from records).
pub fn records(profile: &Profile, doc: &Value) -> Vec<(Vec<String>, Value)> {
    let text = serde_json::to_vec(doc).unwrap_or_default();
    let Ok(mut input) = Input::parse(&text, Some(profile)) else { return Vec::new() };
    input.settle(profile);
    let root = usize::from(profile.envelope.is_some_and(|(_, is_env)| is_env(doc)));
    input
        .containers
        .iter()
        .flat_map(|c| {
            let caps: Vec<String> = profile
                .records
                .as_ref()
                .map(|spec| {
                    spec.container
                        .iter()
                        .zip(&c.path[root..])
                        .filter(|(p, _)| **p == "*")
                        .map(|(_, k)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            c.records.iter().filter_map(move |r| serde_json::from_str(r.get()).ok().map(|v| (caps.clone(), v)))
        })
        .collect()
}

/// Every cell of usage in `doc`.
pub fn cells(profile: &Profile, doc: &Value) -> (Counters, Vec<Cell>) {
    let mut cells = Vec::new();
    match profile.name {
        "tally" => {
            let mut totals = Counters::default();
            fn obj(v: &Value) -> Vec<(&String, &Value)> {
                v.as_object().into_iter().flatten().collect()
            }
            for (hour, devices) in doc.get("hours").map(obj).unwrap_or_default() {
                for (device, providers) in obj(devices) {
                    for (provider, apis) in obj(providers) {
                        for (api, models) in obj(apis) {
                            for (model, c) in obj(models) {
                                let counters = native_counters(c);
                                totals.add(&counters);
                                cells.push(native_cell([hour, device, provider, api, model], counters));
                            }
                        }
                    }
                }
            }
            let totals = native_counters(doc.get("totals").unwrap_or(&Value::Null)).max_with(totals);
            (totals, cells)
        }
        "tally-v1" => {
            let mut totals = Counters::default();
            for (day, devices) in doc.get("days").and_then(Value::as_object).into_iter().flatten() {
                for (device, providers) in devices.as_object().into_iter().flatten() {
                    for (provider, models) in providers.as_object().into_iter().flatten() {
                        for (model, c) in models.as_object().into_iter().flatten() {
                            let cell = v1_cell([day, device, provider, model], native_counters(c));
                            totals.add(&cell.counters);
                            cells.push(cell);
                        }
                    }
                }
            }
            let totals = native_counters(doc.get("totals").unwrap_or(&Value::Null)).max_with(totals);
            (totals, cells)
        }
        "cliproxyapi" => {
            let root = doc.get("usage").filter(|u| u.get("total_requests").is_some()).unwrap_or(doc);
            // Day buckets come from the aggregates (exact after trimming); the token
            // split and model/api breakdowns from the details.
            for (day, n) in root.get("requests_by_day").and_then(Value::as_object).into_iter().flatten() {
                cells.push(Cell {
                    day: Some(day.clone()),
                    counters: Counters {
                        requests: n.as_u64().unwrap_or(0),
                        total_tokens: u(root, &["tokens_by_day", day]),
                        ..Counters::default()
                    },
                    ..Cell::default()
                });
            }
            let mut split = Counters::default();
            let mut detail_cells = Vec::new();
            for (caps, r) in records(profile, doc) {
                let t = r.get("tokens").cloned().unwrap_or_default();
                // CLIProxyAPI counts the cache reads in its input.
                let cache_read = u(&t, &["cached_tokens"]).max(u(&t, &["cache_read_tokens"]));
                let c = Counters {
                    requests: 1,
                    failed: u64::from(r.get("failed").and_then(Value::as_bool).unwrap_or(false)),
                    input_tokens: u(&t, &["input_tokens"]).saturating_sub(cache_read),
                    output_tokens: u(&t, &["output_tokens"]),
                    reasoning_tokens: u(&t, &["reasoning_tokens"]),
                    cache_creation_tokens: u(&t, &["cache_creation_tokens"]),
                    cache_read_tokens: cache_read,
                    total_tokens: u(&t, &["total_tokens"]),
                    unpriced: 1,
                    ..Counters::default()
                };
                split.add(&c);
                detail_cells.push(Cell {
                    hour: None,
                    day: None,
                    device: None,
                    provider: None,
                    api: caps.first().cloned(),
                    model: caps.get(1).cloned(),
                    counters: c,
                });
            }
            let totals = Counters {
                requests: u(root, &["total_requests"]),
                failed: u(root, &["failure_count"]),
                total_tokens: u(root, &["total_tokens"]),
                ..split
            };
            cells.extend(detail_cells);
            (totals, cells)
        }
        "proxypal-aggregate" => {
            let tokens: BTreeMap<String, u64> = doc
                .get("tokensByDay")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e.get("label")?.as_str()?.to_string(), e.get("value")?.as_u64()?)))
                .collect();
            for e in doc.get("requestsByDay").and_then(Value::as_array).into_iter().flatten() {
                let Some(label) = e.get("label").and_then(Value::as_str) else { continue };
                cells.push(Cell {
                    day: Some(label.to_string()),
                    counters: Counters {
                        requests: u(e, &["value"]),
                        total_tokens: tokens.get(label).copied().unwrap_or(0),
                        ..Counters::default()
                    },
                    ..Cell::default()
                });
            }
            for (group, is_model) in [("modelStats", true), ("providerStats", false)] {
                for (name, s) in doc.get(group).and_then(Value::as_object).into_iter().flatten() {
                    let counters = Counters {
                        requests: u(s, &["requests"]),
                        failed: u(s, &["requests"]).saturating_sub(u(s, &["successCount"])),
                        input_tokens: u(s, &["inputTokens"]),
                        output_tokens: u(s, &["outputTokens"]),
                        cache_read_tokens: u(s, &["cachedTokens"]),
                        total_tokens: u(s, &["tokens"]),
                        ..Counters::default()
                    };
                    cells.push(Cell {
                        model: is_model.then(|| name.clone()),
                        provider: (!is_model).then(|| name.clone()),
                        counters,
                        ..Cell::default()
                    });
                }
            }
            let totals = Counters {
                requests: u(doc, &["totalRequests"]),
                failed: u(doc, &["totalFailureCount"]),
                input_tokens: u(doc, &["totalTokensIn"]),
                output_tokens: u(doc, &["totalTokensOut"]),
                cache_read_tokens: u(doc, &["totalTokensCached"]),
                total_tokens: u(doc, &["totalTokensIn"]) + u(doc, &["totalTokensOut"]),
                cost_usd: f(doc, &["totalCostUsd"]),
                ..Counters::default()
            };
            (totals, cells)
        }
        _ => {
            // Record-based formats (history, per-machine files): one cell per record.
            let mut totals = Counters::default();
            for (_, r) in records(profile, doc) {
                let day = match r.get("timestamp") {
                    Some(Value::String(s)) => day_of(s),
                    Some(Value::Number(n)) => n.as_i64().and_then(ms_day),
                    _ => None,
                };
                let input = u(&r, &["input_tokens"]).max(u(&r, &["tokensIn"]));
                let output = u(&r, &["output_tokens"]).max(u(&r, &["tokensOut"]));
                let c = Counters {
                    requests: 1,
                    failed: u64::from(u(&r, &["status"]) >= 400),
                    input_tokens: input,
                    output_tokens: output,
                    cache_creation_tokens: u(&r, &["cache_creation_tokens"]),
                    cache_read_tokens: u(&r, &["cache_read_tokens"]).max(u(&r, &["tokensCached"])),
                    total_tokens: u(&r, &["total_tokens"]).max(input.saturating_add(output)),
                    cost_usd: r.get("cost_usd").and_then(Value::as_f64).unwrap_or(0.0),
                    unpriced: u64::from(r.get("cost_usd").is_none()),
                    ..Counters::default()
                };
                totals.add(&c);
                cells.push(Cell {
                    hour: None,
                    day,
                    device: r.get("machine_name").and_then(Value::as_str).map(str::to_string),
                    provider: r.get("provider").and_then(Value::as_str).map(str::to_string),
                    api: None,
                    model: r.get("model").and_then(Value::as_str).map(str::to_string),
                    counters: c,
                });
            }
            (totals, cells)
        }
    }
}

impl Counters {
    /// The recorded totals, unless the cells add up to more (a file whose totals lag).
    fn max_with(self, other: Counters) -> Counters {
        if other.requests > self.requests {
            other
        } else {
            self
        }
    }
}

fn key_of(cell: &Cell, by: By) -> Option<String> {
    match by {
        By::Day => cell.day.clone(),
        By::Week => cell.day.as_deref().and_then(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().map(|d| d.format("%G-W%V").to_string())
        }),
        By::Month => cell.day.as_ref().map(|d| d.chars().take(7).collect()),
        By::Model => cell.model.clone(),
        By::Provider => cell.provider.clone(),
        By::Api => cell.api.clone(),
        By::Device => cell.device.clone(),
    }
}

/// Totals and rows of `doc` by `by`, keeping days within [since, until] (`YYYY-MM-DD`;
/// UTC days for hour cells).
pub fn report(profile: &Profile, doc: &Value, by: By, since: Option<&str>, until: Option<&str>) -> Report {
    let (totals, cells) = cells(profile, doc);
    let keep = |c: &Cell| day_in(c, since, until);
    report_of(profile, totals, &cells, by, &keep, since.is_some() || until.is_some())
}

/// Whether a cell's day is within [since, until] (`YYYY-MM-DD`); cells without a day only
/// when there are no bounds.
pub fn day_in(c: &Cell, since: Option<&str>, until: Option<&str>) -> bool {
    match &c.day {
        Some(d) => since.is_none_or(|s| d.as_str() >= s) && until.is_none_or(|u| d.as_str() <= u),
        None => since.is_none() && until.is_none(),
    }
}

/// The UTC hour a cell starts at, if it has one.
pub fn hour_start(c: &Cell) -> Option<chrono::DateTime<chrono::Utc>> {
    let h = c.hour.as_deref()?;
    chrono::NaiveDateTime::parse_from_str(&format!("{h}:00:00"), "%Y-%m-%dT%H:%M:%S").ok().map(|t| t.and_utc())
}

/// Puts hour cells in the local day of `zone` (reports' days are the user's days).
pub fn localize(cells: &mut [Cell], zone: chrono_tz::Tz) {
    for c in cells.iter_mut() {
        if let Some(t) = hour_start(c) {
            c.day = Some(crate::period::local_day(t, zone).to_string());
        }
    }
}

/// `report` from cells already read (several breakdowns of one file): the cells `keep`
/// accepts; with `filtered`, the totals are those cells' too.
pub fn report_of(
    profile: &Profile,
    mut totals: Counters,
    cells: &[Cell],
    by: By,
    keep: &dyn Fn(&Cell) -> bool,
    filtered: bool,
) -> Report {
    let mut rows: BTreeMap<String, Counters> = BTreeMap::new();
    // Day-keyed breakdowns use day cells; others use the cells that know the key.
    for c in cells.iter().filter(|c| keep(c)) {
        if let Some(k) = key_of(c, by) {
            rows.entry(k).or_default().add(&c.counters);
        }
    }
    if filtered {
        totals = Counters::default();
        for c in cells.iter().filter(|c| c.day.is_some() && keep(c)) {
            totals.add(&c.counters);
        }
    }
    let tracked_since = cells.iter().filter_map(|c| c.day.clone()).min();
    let success_rate = (totals.requests > 0).then(|| 1.0 - totals.failed as f64 / totals.requests as f64);
    let by_name = format!("{by:?}").to_lowercase();
    Report {
        profile: profile.name.to_string(),
        totals,
        success_rate,
        tracked_since,
        by: by_name,
        rows: rows.into_iter().map(|(key, counters)| Row { key, counters }).collect(),
    }
}

/// What the cells count beyond the records listed (the native format lists the newest
/// records only): per local day, device, provider, api and model, the counters no listed
/// record explains (`requests` among them), where there are any.
pub fn unlisted(cells: &[Cell], rows: &[[String; 14]], zone: chrono_tz::Tz) -> Vec<(Cell, Counters)> {
    type Key = (String, String, String, String, String);
    let key_of = |c: &Cell| -> Key {
        (
            c.day.clone().unwrap_or_default(),
            c.device.clone().unwrap_or_default(),
            c.provider.clone().unwrap_or_default(),
            c.api.clone().unwrap_or_default(),
            c.model.clone().unwrap_or_default(),
        )
    };
    let mut sums: BTreeMap<Key, (Cell, Counters)> = BTreeMap::new();
    for c in cells {
        let e = sums
            .entry(key_of(c))
            .or_insert_with(|| (Cell { hour: None, counters: Counters::default(), ..c.clone() }, Counters::default()));
        e.1.add(&c.counters);
    }
    for r in rows {
        // The local day of the hour that counts the record, as its cell's day is (they
        // differ in a zone half an hour off UTC).
        let day = hour_of(&r[1]).map(|h| h.with_timezone(&zone).date_naive().to_string()).unwrap_or_default();
        let n = |i: usize| r[i].parse::<u64>().unwrap_or(0);
        let key = (day, r[2].clone(), r[3].clone(), r[4].clone(), r[5].clone());
        if let Some((_, c)) = sums.get_mut(&key) {
            c.requests = c.requests.saturating_sub(1);
            c.failed = c.failed.saturating_sub(u64::from(r[6] == "true"));
            c.input_tokens = c.input_tokens.saturating_sub(n(7));
            c.output_tokens = c.output_tokens.saturating_sub(n(8));
            c.reasoning_tokens = c.reasoning_tokens.saturating_sub(n(9));
            c.cache_creation_tokens = c.cache_creation_tokens.saturating_sub(n(10));
            c.cache_read_tokens = c.cache_read_tokens.saturating_sub(n(11));
            c.total_tokens = c.total_tokens.saturating_sub(n(12));
            c.cost_usd = (c.cost_usd - r[13].parse::<f64>().unwrap_or(0.0)).max(0.0);
        }
    }
    // Requests, or tokens alone (a later version of a request counted before a reset).
    sums.into_values()
        .filter(|(_, c)| {
            let tokens =
                [c.input_tokens, c.output_tokens, c.reasoning_tokens, c.cache_creation_tokens, c.cache_read_tokens];
            c.requests > 0 || c.total_tokens > 0 || tokens.iter().any(|&n| n > 0) || c.cost_usd >= 5e-7
        })
        .collect()
}

/// The UTC hour an RFC 3339 time falls in (its start): the ledger counts by these.
pub fn hour_of(ts: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(crate::period::hour_start(t.with_timezone(&chrono::Utc)))
}

/// Columns of a record row in exports.
pub const RECORD_COLUMNS: [&str; 14] = [
    "id",
    "timestamp",
    "device",
    "provider",
    "api",
    "model",
    "failed",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_usd",
];

/// One export row per record, whatever the format calls its fields.
pub fn record_rows(profile: &Profile, doc: &Value) -> Vec<[String; 14]> {
    let text = |r: &Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| match r.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let num = |r: &Value, keys: &[&str]| keys.iter().find_map(|k| r.get(*k).and_then(Value::as_u64)).unwrap_or(0);
    records(profile, doc)
        .into_iter()
        .map(|(caps, r)| {
            let t = r.get("tokens").cloned().unwrap_or(Value::Null);
            let tok = |keys: &[&str]| num(&r, keys).max(num(&t, keys));
            let timestamp = match r.get("timestamp") {
                Some(Value::Number(n)) => n
                    .as_i64()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default(),
                _ => text(&r, &["timestamp"]),
            };
            let failed = r.get("failed").and_then(Value::as_bool).unwrap_or(num(&r, &["status"]) >= 400);
            let cache_read = tok(&["cache_read_tokens", "cached_tokens", "tokensCached"]);
            // CLIProxyAPI details count the cache reads in their input.
            let nested_input = num(&t, &["input_tokens"]);
            let input = if nested_input > 0 {
                nested_input.saturating_sub(cache_read)
            } else {
                num(&r, &["input_tokens", "tokensIn"])
            };
            let output = tok(&["output_tokens", "tokensOut"]);
            let reasoning = tok(&["reasoning_tokens"]);
            let creation = tok(&["cache_creation_tokens"]);
            let total = tok(&["total_tokens"]).max(input.saturating_add(output).saturating_add(reasoning));
            [
                text(&r, &["id", "message_uuid"]),
                timestamp,
                text(&r, &["device", "machine_name"]),
                text(&r, &["provider"]),
                caps.first().cloned().unwrap_or_else(|| text(&r, &["api"])),
                caps.get(1).cloned().unwrap_or_else(|| text(&r, &["model"])),
                failed.to_string(),
                input.to_string(),
                output.to_string(),
                reasoning.to_string(),
                creation.to_string(),
                cache_read.to_string(),
                total.to_string(),
                r.get("cost_usd").and_then(Value::as_f64).unwrap_or(0.0).to_string(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut cells: Vec<Cell>) -> Vec<String> {
        let mut keys: Vec<String> = cells.drain(..).map(|c| format!("{:?}", c)).collect();
        keys.sort();
        keys
    }

    #[test]
    fn native_cells_equal_cells_over_the_parsed_document() {
        let tally = crate::profile::by_name("tally").unwrap();
        let cell = |n: u64| serde_json::json!({"requests": n, "failed": 1, "input_tokens": 10 * n, "cost_usd": 0.5, "extra": "x"});
        let doc = serde_json::json!({
            "format": "git-tally/2", "recent_limit": 5, "totals": {"requests": 99, "cost_usd": 1.5},
            "hours": {
                "2026-10-02T10": {"laptop": {"openai": {"openai": {"gpt-5": cell(3), "gpt-5-mini": cell(4)}}}},
                "2026-10-01T23": {"server": {"anthropic": {"claude-code": {"claude": cell(5)}}}, "laptop": {"openai": {"openai": {"gpt-5": cell(1)}}}}
            },
            "devices": {}, "recent": []
        });
        let text = serde_json::to_vec_pretty(&doc).unwrap();
        let (p, (fast_totals, fast)) = native_cells(&text).expect("a native file");
        assert_eq!(p.name, "tally");
        let (totals, slow) = cells(tally, &doc);
        assert_eq!(fast_totals, totals);
        assert_eq!(fast_totals.requests, 99, "the file's totals where they exceed the cells'");
        assert_eq!(sorted(fast), sorted(slow));

        // Not for the fast path: another format, a counter of the wrong type, an escaped key.
        let mut wrong = doc.clone();
        wrong["hours"]["2026-10-01T23"]["laptop"]["openai"]["openai"]["gpt-5"]["requests"] = "1".into();
        let mut escaped = doc.clone();
        escaped["hours"]["2026-10-01T23"]["laptop"]["openai"]["openai"]["gpt-\"5\""] = cell(1);
        let mut other = doc.clone();
        other["format"] = "other/1".into();
        for d in [wrong, escaped, other] {
            assert!(native_cells(&serde_json::to_vec(&d).unwrap()).is_none(), "{d}");
        }

        // 0.1's per-day format too: `cached_tokens` is cache read; a zero cost with tokens
        // is unpriced.
        let v1 = crate::profile::by_name("tally-v1").unwrap();
        let day = |n: u64, cost: f64| {
            serde_json::json!({"requests": n, "failed": 1, "input_tokens": 10 * n, "cached_tokens": 7 * n,
                               "total_tokens": 11 * n, "cost_usd": cost})
        };
        let doc = serde_json::json!({
            "format": "git-tally/1", "recent_limit": 500, "totals": {"requests": 2},
            "days": {
                "2026-10-01": {"laptop": {"openai": {"gpt-5": day(3, 0.25), "gpt-5-mini": day(4, 0.0)}}},
                "2026-10-02": {"server": {"anthropic": {"claude": day(5, 1.5)}}}
            },
            "devices": {}, "recent": []
        });
        let (p, (fast_totals, fast)) = native_cells(&serde_json::to_vec_pretty(&doc).unwrap()).expect("a 0.1 file");
        assert_eq!(p.name, "tally-v1");
        let (totals, slow) = cells(v1, &doc);
        assert_eq!(fast_totals, totals);
        assert_eq!((fast_totals.requests, fast_totals.cache_read_tokens, fast_totals.unpriced), (12, 84, 4));
        assert_eq!(sorted(fast), sorted(slow));
    }
}
