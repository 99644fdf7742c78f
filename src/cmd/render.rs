//! Charts and numbers that do not mislead, from plain data (a list of days and their
//! counters, and the range to draw): every calendar day in the range has a bar (a day
//! without traffic is drawn as zero, not left out), axes have a scale, numbers have
//! thousands separators, a cost nobody knows is "—" (never `$0.00`) and an estimated cost
//! is marked. Whatever stores usage, a report feeds these the same way.

use chrono::NaiveDate;
use serde_json::Value;

/// One day's (or one row's) usage, as the renderers need it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub total_tokens: u64,
    /// The known cost: given by the sources, plus what was estimated.
    pub cost_usd: f64,
    /// The part of `cost_usd` estimated from the price table.
    pub cost_estimated_usd: f64,
    /// Requests with tokens whose cost nobody knows (no cost given, no price known).
    pub unpriced: u64,
}

impl Totals {
    /// A report's counters: the estimated part of the cost and the requests nobody knows
    /// the cost of come from the ledger.
    pub fn from_counters(c: &crate::report::Counters) -> Totals {
        Totals {
            requests: c.requests,
            failed: c.failed,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            reasoning_tokens: c.reasoning_tokens,
            cache_creation_tokens: c.cache_creation_tokens,
            cache_read_tokens: c.cache_read_tokens,
            total_tokens: c.total_tokens,
            cost_usd: c.cost_usd,
            cost_estimated_usd: c.cost_estimated_usd,
            unpriced: c.unpriced,
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.failed += o.failed;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cache_creation_tokens += o.cache_creation_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.total_tokens += o.total_tokens;
        self.cost_usd += o.cost_usd;
        self.cost_estimated_usd += o.cost_estimated_usd;
        self.unpriced += o.unpriced;
    }

    /// Whether no part of the cost is known.
    pub fn cost_unknown(&self) -> bool {
        self.unpriced > 0 && self.unpriced >= self.requests && self.cost_usd == 0.0
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars with cents and thousands separators: `$1,234.56`.
pub fn dollars(x: f64) -> String {
    let cents = (x * 100.0).round().max(0.0) as u64;
    format!("${}.{:02}", thousands(cents / 100), cents % 100)
}

/// A cost as a person should read it: "—" when nobody knows it, `~` before a cost that
/// is (partly) estimated from the price table, `+—` after one that leaves out requests of
/// unknown cost. [`COST_LEGEND`] explains the marks.
pub fn money(t: &Totals) -> String {
    if t.cost_unknown() {
        return "—".into();
    }
    let mut s = String::new();
    if t.cost_estimated_usd > 0.0 {
        s.push('~');
    }
    s.push_str(&dollars(t.cost_usd));
    if t.unpriced > 0 {
        s.push_str("+—");
    }
    s
}

pub const COST_LEGEND: &str =
    "~ estimated from the price table; — no cost known (no price for the model); +— plus requests of unknown cost";

/// Every calendar day from `first` to `last` with its totals (zero where `days` has none).
/// `days` need not be sorted; days outside the range are left out.
pub fn every_day(days: &[(NaiveDate, Totals)], first: NaiveDate, last: NaiveDate) -> Vec<(NaiveDate, Totals)> {
    let mut by_day: std::collections::BTreeMap<NaiveDate, Totals> = std::collections::BTreeMap::new();
    for (d, t) in days {
        if (first..=last).contains(d) {
            by_day.entry(*d).or_default().add(t);
        }
    }
    crate::period::days(first, last).map(|d| (d, by_day.remove(&d).unwrap_or_default())).collect()
}

/// A sparkline of `values`, one glyph each; a zero is `·` so that every day keeps its place.
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values.iter().map(|&v| if v == 0 { '·' } else { BARS[((v * 7) / max) as usize] }).collect()
}

/// Requests of the 30 calendar days up to `today`, oldest first, and the first of them.
pub fn last_30_days(days: &[(NaiveDate, Totals)], today: NaiveDate) -> (NaiveDate, Vec<u64>) {
    let first = today - chrono::Duration::days(29);
    (first, every_day(days, first, today).iter().map(|(_, t)| t.requests).collect())
}

/// A round step for an axis whose values go up to `max`: the smallest 1, 2 or 5 times a
/// power of ten that needs at most ten gridlines (at least 1 for counts).
pub fn axis_step(max: f64, integer: bool) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let pow = 10f64.powf((max / 10.0).log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * pow).find(|s| max / s <= 10.0 + 1e-9).unwrap_or(10.0 * pow);
    if integer {
        step.max(1.0)
    } else {
        step
    }
}

/// A cost to a millionth of a dollar: `0.2`, not `0.20000000000000012`.
fn to_millionth(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A cost as CSV text, rounded as JSON reports round it.
pub fn money_text(x: f64) -> String {
    to_millionth(x).to_string()
}

/// Rounds every `cost_usd`-like number in `v` to a millionth of a dollar, so that JSON
/// shows `0.2`, not `0.20000000000000012`.
pub fn round_costs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if k.starts_with("cost") {
                    if let Some(f) = x.as_f64().filter(|_| x.is_f64()) {
                        *x = serde_json::Number::from_f64(to_millionth(f)).map_or(Value::Null, Value::Number);
                        continue;
                    }
                }
                round_costs(x);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round_costs),
        _ => {}
    }
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A bar chart of one value by day, as inline SVG: a bar for every day given (zero-height
/// for a day without traffic), a y axis with round gridlines and labels, and day labels
/// spread along the x axis. Each bar carries `data-day` and `data-value`.
pub fn chart(
    days: &[(NaiveDate, Totals)],
    class: &str,
    title: &str,
    value: fn(&Totals) -> f64,
    label: fn(f64) -> String,
) -> String {
    let (w, h) = (900.0, 260.0);
    let (left, right, top, bottom) = (70.0, 10.0, 10.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let max = days.iter().map(|(_, t)| value(t)).fold(0.0, f64::max);
    let step = axis_step(max, days.iter().all(|(_, t)| value(t).fract() == 0.0));
    let top_value = if max <= 0.0 { step } else { (max / step).ceil() * step };
    let y = |v: f64| top + ph - ph * v / top_value;
    let mut svg = format!(
        "<figure><figcaption>{t}</figcaption><svg class=\"chart {class}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\">",
        t = esc(title)
    );
    // Scale: gridlines and their values.
    let mut v = 0.0;
    while v <= top_value + step / 2.0 {
        svg.push_str(&format!(
            "<line class=\"grid\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/><text class=\"y-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            esc(&label(v)),
            yy = y(v),
        ));
        v += step;
    }
    let n = days.len().max(1) as f64;
    let bw = pw / n;
    for (i, (day, t)) in days.iter().enumerate() {
        let v = value(t);
        let bh = (ph * v / top_value).max(0.0);
        let shown = label(v);
        svg.push_str(&format!(
            "<rect class=\"bar {class}\" data-day=\"{day}\" data-value=\"{v}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"><title>{day}: {}</title></rect>",
            left + i as f64 * bw + bw * 0.1,
            top + ph - bh,
            (bw * 0.8).max(0.5),
            bh,
            esc(&shown),
        ));
    }
    // Day labels: the first, the last, and about eight between.
    let every = (days.len() / 8).max(1);
    for (i, (day, _)) in days.iter().enumerate() {
        if i % every == 0 || i + 1 == days.len() {
            if i + 1 != days.len() && days.len() - i < every / 2 {
                continue; // too close to the last label
            }
            // The first and last labels stay inside the chart.
            let (x, anchor) = if i == 0 {
                (left, "start")
            } else if i + 1 == days.len() {
                (w - right, "end")
            } else {
                (left + (i as f64 + 0.5) * bw, "middle")
            };
            svg.push_str(&format!(
                "<text class=\"x-label\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{day}</text>",
                h - bottom + 18.0
            ));
        }
    }
    svg.push_str(&format!(
        "<line class=\"axis\" x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        top + ph,
        w - right,
        top + ph,
        top + ph
    ));
    svg.push_str("</svg></figure>");
    svg
}

/// A breakdown table (by model, provider, api or device).
pub fn table(title: &str, rows: &[(String, Totals)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut t = format!(
        "<section><h2>By {title}</h2><table class=\"by-{title}\"><tr><th>{title}</th><th>requests</th><th>input</th><th>output</th><th>cache write</th><th>cache read</th><th>tokens</th><th>cost</th></tr>"
    );
    for (key, c) in rows {
        t.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(key),
            thousands(c.requests),
            thousands(c.input_tokens),
            thousands(c.output_tokens),
            thousands(c.cache_creation_tokens),
            thousands(c.cache_read_tokens),
            thousands(c.total_tokens),
            esc(&money(c)),
        ));
    }
    t.push_str("</table></section>");
    t
}

/// What the HTML page shows.
pub struct Page<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    pub totals: &'a Totals,
    /// Every day of the range, in order (see [`every_day`]).
    pub days: &'a [(NaiveDate, Totals)],
    /// Breakdowns: (name, rows).
    pub tables: Vec<(&'a str, Vec<(String, Totals)>)>,
    /// Said under the title (a time zone that is not whole-hour, an approximation).
    pub notes: Vec<String>,
}

/// The self-contained HTML report (no network needed to view it).
pub fn html(p: &Page<'_>) -> String {
    let t = p.totals;
    let range = match (p.days.first(), p.days.last()) {
        (Some((a, _)), Some((b, _))) => format!("{a} to {b} ({} days)", p.days.len()),
        _ => "no usage in this period".into(),
    };
    let charts = if p.days.is_empty() {
        String::new()
    } else {
        let mut c = chart(p.days, "requests", "Requests per day", |t| t.requests as f64, |v| thousands(v as u64));
        c.push_str(&chart(p.days, "tokens", "Tokens per day", |t| t.total_tokens as f64, |v| thousands(v as u64)));
        if p.days.iter().any(|(_, t)| t.cost_usd > 0.0) {
            c.push_str(&chart(
                p.days,
                "cost",
                "Cost per day (known costs, USD)",
                |t| t.cost_usd,
                |v| {
                    if v >= 100.0 {
                        format!("${}", thousands(v.round() as u64))
                    } else {
                        dollars(v)
                    }
                },
            ));
        }
        c
    };
    let notes: String = p.notes.iter().map(|n| format!("<p class=\"note\">{}</p>", esc(n))).collect();
    let tables: String = p.tables.iter().map(|(name, rows)| table(name, rows)).collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Usage: {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root {{ color-scheme: light dark; --fg: #1b1f24; --bg: #ffffff; --muted: #59636e; --bar: #2f81f7; --bar2: #8250df; --bar3: #1a7f37; --line: #d0d7de; }}
@media (prefers-color-scheme: dark) {{ :root {{ --fg: #e6edf3; --bg: #0d1117; --muted: #9198a1; --bar: #4493f8; --bar2: #ab7df8; --bar3: #3fb950; --line: #30363d; }} }}
body {{ font: 15px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 2rem auto; max-width: 960px; padding: 0 1rem; }}
h1 {{ font-size: 1.4rem; }} .muted, .note {{ color: var(--muted); }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .card {{ border: 1px solid var(--line); border-radius: 8px; padding: .6rem 1rem; }}
.card b {{ display: block; font-size: 1.3rem; }}
figure {{ margin: 1.5rem 0; }} figcaption {{ font-weight: 600; }} svg {{ width: 100%; height: auto; }}
svg text {{ fill: var(--muted); font-size: 11px; }} .grid {{ stroke: var(--line); stroke-width: 1; }} .axis {{ stroke: var(--muted); stroke-width: 1; }}
.bar.requests {{ fill: var(--bar); }} .bar.tokens {{ fill: var(--bar2); }} .bar.cost {{ fill: var(--bar3); }}
table {{ border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }} td, th {{ border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head><body>
<h1>Usage: {title}</h1><p class="muted">{subtitle}; {range}</p>
{notes}<div class="cards">
<div class="card"><b id="total-requests">{req}</b>requests</div>
<div class="card"><b id="total-failed">{failed}</b>failed</div>
<div class="card"><b id="total-tokens">{tok}</b>tokens</div>
<div class="card"><b>{inp} / {out}</b>tokens in / out</div>
<div class="card"><b>{cw} / {cr}</b>cache write / read</div>
<div class="card"><b id="total-cost">{cost}</b>cost</div>
</div>
<p class="note">{legend}</p>
{charts}
{tables}
</body></html>
"#,
        title = esc(p.title),
        subtitle = esc(p.subtitle),
        req = thousands(t.requests),
        failed = thousands(t.failed),
        tok = thousands(t.total_tokens),
        inp = thousands(t.input_tokens),
        out = thousands(t.output_tokens),
        cw = thousands(t.cache_creation_tokens),
        cr = thousands(t.cache_read_tokens),
        cost = esc(&money(t)),
        legend = esc(COST_LEGEND),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn req(n: u64) -> Totals {
        Totals { requests: n, total_tokens: 10 * n, ..Totals::default() }
    }

    #[test]
    fn numbers_read_like_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(dollars(7751.489), "$7,751.49");
        assert_eq!(dollars(0.004), "$0.00");
    }

    #[test]
    fn costs_say_what_is_known() {
        let unknown = Totals { requests: 3, total_tokens: 9, unpriced: 3, ..Totals::default() };
        assert_eq!(money(&unknown), "—", "never $0.00 for a cost nobody knows");
        let given = Totals { requests: 3, cost_usd: 1.5, ..Totals::default() };
        assert_eq!(money(&given), "$1.50");
        let estimated = Totals { requests: 3, cost_usd: 1.5, cost_estimated_usd: 1.0, ..Totals::default() };
        assert_eq!(money(&estimated), "~$1.50");
        let partly = Totals { requests: 3, cost_usd: 1.5, unpriced: 1, ..Totals::default() };
        assert_eq!(money(&partly), "$1.50+—");
        let free = Totals { requests: 2, ..Totals::default() };
        assert_eq!(money(&free), "$0.00", "no tokens, no cost");
    }

    #[test]
    fn every_calendar_day_is_there() {
        let days = vec![(d("2026-11-05"), req(2)), (d("2026-11-01"), req(1)), (d("2026-12-01"), req(9))];
        let all = every_day(&days, d("2026-10-31"), d("2026-11-06"));
        let got: Vec<(String, u64)> = all.iter().map(|(d, t)| (d.to_string(), t.requests)).collect();
        assert_eq!(
            got,
            [
                ("2026-10-31", 0),
                ("2026-11-01", 1),
                ("2026-11-02", 0),
                ("2026-11-03", 0),
                ("2026-11-04", 0),
                ("2026-11-05", 2),
                ("2026-11-06", 0)
            ]
            .map(|(a, b)| (a.to_string(), b))
        );
    }

    #[test]
    fn the_sparkline_covers_thirty_calendar_days() {
        // Four days with traffic spread over forty: the last thirty calendar days hold two.
        let days = vec![
            (d("2026-10-01"), req(5)),
            (d("2026-10-10"), req(5)),
            (d("2026-11-01"), req(8)),
            (d("2026-11-30"), req(4)),
        ];
        let (first, values) = last_30_days(&days, d("2026-11-30"));
        assert_eq!(first, d("2026-11-01"));
        assert_eq!(values.len(), 30);
        assert_eq!((values[0], values[29], values.iter().filter(|&&v| v > 0).count()), (8, 4, 2));
        let line = sparkline(&values);
        assert_eq!(line.chars().count(), 30);
        assert_eq!(line.chars().filter(|&c| c == '·').count(), 28);
    }

    #[test]
    fn axis_steps_are_round() {
        for (max, integer, step) in [
            (7.0, true, 1.0),
            (3.0, true, 1.0),
            (3.0, false, 0.5),
            (45.0, true, 5.0),
            (1234.0, true, 200.0),
            (88_844.0, true, 10_000.0),
            (0.0, true, 1.0),
            (0.37, false, 0.05),
        ] {
            let got = axis_step(max, integer);
            assert!((got - step).abs() < 1e-9, "{max}: {got} != {step}");
        }
    }

    #[test]
    fn json_costs_are_rounded_to_a_millionth() {
        let mut v = serde_json::json!({"totals": {"cost_usd": 0.1 + 0.1 + 0.00000000000000012, "requests": 3},
            "rows": [{"cost_usd": 1.0000004, "cost_estimated_usd": 0.30000000000000004, "key": "cost"}]});
        round_costs(&mut v);
        assert_eq!(
            v.to_string(),
            r#"{"totals":{"cost_usd":0.2,"requests":3},"rows":[{"cost_usd":1.0,"cost_estimated_usd":0.3,"key":"cost"}]}"#
        );
    }

    #[test]
    fn a_chart_has_a_bar_for_every_day_and_a_scale() {
        let days =
            every_day(&[(d("2026-11-01"), req(1200)), (d("2026-11-04"), req(3))], d("2026-11-01"), d("2026-11-04"));
        let svg = chart(&days, "requests", "Requests", |t| t.requests as f64, |v| thousands(v as u64));
        assert_eq!(svg.matches("<rect class=\"bar requests\"").count(), 4);
        assert!(svg.contains("data-day=\"2026-11-02\" data-value=\"0\""), "{svg}");
        assert!(svg.contains(">1,200<") || svg.contains(">1,400<"), "a labelled scale: {svg}");
        assert!(svg.contains("<title>2026-11-01: 1,200</title>"));
    }
}
