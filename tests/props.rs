//! Properties of the merge, checked on random inputs (proptest):
//! - exactness: random events split across base/ours/theirs merge to one machine
//!   applying every event once, for every profile with events;
//! - commutativity: merge(O,A,B) == merge(O,B,A);
//! - robustness: arbitrary JSON and arbitrary bytes never panic the merge, and a clean
//!   merge never drops a record that ours or theirs holds and neither side deleted.

use chrono::{DateTime, Duration, FixedOffset};
use git_tally::engine::{self, record_ids};
use git_tally::event::Event;
use git_tally::merge::merge_bytes;
use git_tally::profile::{self, Profile};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashSet;

#[derive(Clone, Debug)]
struct Spec {
    device: u8,
    model: u8,
    provider: u8,
    input: u32,
    output: u16,
    reasoning: u8,
    cached: u16,
    failed: bool,
    eighths: u8,
    tz: u8,
    /// 0 base, 1 ours only, 2 theirs only, 3 both sides (not in base).
    tag: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..3, 0u8..4, 0u8..3, 0u32..200_000, 0u16..5000, 0u8..200, 0u16..3000, any::<bool>(), 0u8..16, 0u8..3, 0u8..4)
        .prop_map(|(device, model, provider, input, output, reasoning, cached, failed, eighths, tz, tag)| Spec {
            device,
            model,
            provider,
            input,
            output,
            reasoning,
            cached,
            failed,
            eighths,
            tz,
            tag,
        })
}

fn to_event(i: usize, s: &Spec) -> Event {
    let offsets = ["+00:00", "+09:00", "-05:00"];
    let t0 = DateTime::parse_from_rfc3339(&format!("2026-10-01T00:00:00{}", offsets[s.tz as usize])).unwrap();
    // Unique instants: events are 53 minutes apart, plus the offset's own shift.
    let ts: DateTime<FixedOffset> = t0 + Duration::minutes(53 * i as i64);
    let line = json!({
        "id": format!("e{i}"),
        "timestamp": ts.to_rfc3339(),
        "device": (["laptop", "server", "ci"][s.device as usize]),
        "provider": (["openai", "anthropic", "google"][s.provider as usize]),
        "model": (["gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro", "gpt-5-codex"][s.model as usize]),
        "source": format!("acct{}@example.com", s.device),
        "auth_index": s.provider.to_string(),
        "input_tokens": s.input, "output_tokens": s.output, "reasoning_tokens": s.reasoning, "cached_tokens": s.cached,
        "failed": s.failed,
        "cost_usd": f64::from(s.eighths) / 8.0,
    });
    Event::parse(&line.to_string(), ts, "unused").unwrap()
}

fn doc(p: &Profile, start: &Value, events: &[&Event]) -> Value {
    let mut d = start.clone();
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.timestamp);
    for e in sorted {
        (p.apply.unwrap())(&mut d, e).unwrap();
    }
    d
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

/// Splits events by tag; `overlap` false folds "both sides" into ours only, and
/// `free_overlap` zeroes the cost of shared events (for files whose cost no record explains).
fn check_split(
    p: &'static Profile,
    start: Value,
    specs: &[Spec],
    overlap: bool,
    free_overlap: bool,
) -> Result<(), TestCaseError> {
    let mut specs = specs.to_vec();
    for s in &mut specs {
        if s.tag == 3 && !overlap {
            s.tag = 1;
        }
        if s.tag == 3 && free_overlap {
            s.eighths = 0;
        }
    }
    let events: Vec<Event> = specs.iter().enumerate().map(|(i, s)| to_event(i, s)).collect();
    let pick = |tags: &[u8]| -> Vec<&Event> {
        events.iter().zip(&specs).filter(|(_, s)| tags.contains(&s.tag)).map(|(e, _)| e).collect()
    };
    let o = doc(p, &start, &pick(&[0]));
    let a = doc(p, &start, &pick(&[0, 1, 3]));
    let b = doc(p, &start, &pick(&[0, 2, 3]));
    let want = doc(p, &start, &pick(&[0, 1, 2, 3]));
    let m = merge_bytes(Some(p), &bytes(&o), &bytes(&a), &bytes(&b)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(m.conflicts.is_empty());
    let got: Value = serde_json::from_slice(&m.output).unwrap();
    prop_assert_eq!(&got, &want);
    let swapped = merge_bytes(Some(p), &bytes(&o), &bytes(&b), &bytes(&a)).unwrap();
    prop_assert_eq!(serde_json::from_slice::<Value>(&swapped.output).unwrap(), got);
    Ok(())
}

fn p(name: &str) -> &'static Profile {
    profile::by_name(name).unwrap()
}

proptest! {
    // 64 cases in the test suite; PROPTEST_CASES=N for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn cliproxyapi_merge_is_exact(specs in prop::collection::vec(spec(), 0..40)) {
        check_split(p("cliproxyapi"), (p("cliproxyapi").empty)(), &specs, true, false)?;
    }

    #[test]
    fn cliproxyapi_envelope_merge_is_exact(specs in prop::collection::vec(spec(), 0..30)) {
        let start = json!({"version": 1, "exported_at": "2026-10-01T00:00:00Z", "usage": (p("cliproxyapi").empty)()});
        check_split(p("cliproxyapi"), start, &specs, true, false)?;
    }

    #[test]
    fn tally_merge_is_exact(specs in prop::collection::vec(spec(), 0..40)) {
        check_split(p("tally"), (p("tally").empty)(), &specs, true, false)?;
    }

    #[test]
    fn tally_merge_with_a_short_recent_list_is_exact(specs in prop::collection::vec(spec(), 0..40)) {
        let mut start = (p("tally").empty)();
        start["recent_limit"] = json!(4);
        check_split(p("tally"), start, &specs, false, false)?;
    }

    #[test]
    fn proxypal_aggregate_merge_is_exact(specs in prop::collection::vec(spec(), 0..40)) {
        check_split(p("proxypal-aggregate"), (p("proxypal-aggregate").empty)(), &specs, false, false)?;
    }

    #[test]
    fn proxypal_history_merge_is_exact(specs in prop::collection::vec(spec(), 0..40)) {
        check_split(p("proxypal-history"), (p("proxypal-history").empty)(), &specs, true, true)?;
    }

    #[test]
    fn ccu_usage_merge_is_exact(specs in prop::collection::vec(spec(), 0..40)) {
        // A per-machine file: one machine name, whichever device the events name.
        let mut start = (p("ccu-usage").empty)();
        start["machine_name"] = json!("laptop");
        check_split(p("ccu-usage"), start, &specs, true, true)?;
    }

    #[test]
    fn generic_counters_add_their_deltas(
        base in prop::collection::btree_map("[a-e]{1,2}", 0u32..1000, 0..8),
        inc_a in prop::collection::btree_map("[a-g]{1,2}", 0u32..1000, 0..8),
        inc_b in prop::collection::btree_map("[a-g]{1,2}", 0u32..1000, 0..8),
    ) {
        let with = |inc: &std::collections::BTreeMap<String, u32>| {
            let mut m = base.clone();
            for (k, v) in inc { *m.entry(k.clone()).or_insert(0) += v; }
            json!({"counts": m})
        };
        let mut want = base.clone();
        for (k, v) in inc_a.iter().chain(&inc_b) { *want.entry(k.clone()).or_insert(0) += v; }
        let o = json!({"counts": base});
        let m = merge_bytes(Some(profile::generic()), &bytes(&o), &bytes(&with(&inc_a)), &bytes(&with(&inc_b))).unwrap();
        prop_assert!(m.conflicts.is_empty());
        prop_assert_eq!(serde_json::from_slice::<Value>(&m.output).unwrap(), json!({"counts": want}));
    }

    #[test]
    fn clean_generic_merges_commute(o in json_value(), a in json_value(), b in json_value()) {
        let g = profile::generic();
        let x = engine::merge_values(g, Some(&o), Some(&a), Some(&b));
        let y = engine::merge_values(g, Some(&o), Some(&b), Some(&a));
        match (x, y) {
            (Ok((x, cx)), Ok((y, cy))) => {
                let paths = |c: &[engine::Conflict]| c.iter().map(|c| c.path.clone()).collect::<HashSet<_>>();
                prop_assert_eq!(paths(&cx), paths(&cy));
                if cx.is_empty() {
                    prop_assert_eq!(x, y);
                }
            }
            (Err(_), Err(_)) => {}
            (x, y) => prop_assert!(false, "one order failed: {:?} / {:?}", x.err(), y.err()),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(o in prop::collection::vec(any::<u8>(), 0..300), a in prop::collection::vec(any::<u8>(), 0..300), b in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = merge_bytes(None, &o, &a, &b);
    }

    #[test]
    fn arbitrary_json_never_panics(o in json_value(), a in json_value(), b in json_value()) {
        for prof in profile::all() {
            let _ = merge_bytes(Some(prof), &bytes(&o), &bytes(&a), &bytes(&b));
        }
    }

    /// Valid documents with random damage: a clean merge keeps every record that ours or
    /// theirs holds unless one side deleted it from the base.
    #[test]
    fn clean_merges_never_drop_records(
        specs in prop::collection::vec(spec(), 1..25),
        damage in prop::collection::vec((0u8..3, prop::collection::vec(any::<u16>(), 1..6), json_value()), 0..3),
        which in 0usize..5,
    ) {
        let prof = [p("cliproxyapi"), p("tally"), p("proxypal-history"), p("ccu-usage"), p("tally")][which];
        let events: Vec<Event> = specs.iter().enumerate().map(|(i, s)| to_event(i, s)).collect();
        let pick = |tags: &[u8]| events.iter().zip(&specs).filter(|(_, s)| tags.contains(&s.tag)).map(|(e, _)| e).collect::<Vec<_>>();
        let start = (prof.empty)();
        let mut docs = [doc(prof, &start, &pick(&[0])), doc(prof, &start, &pick(&[0, 1, 3])), doc(prof, &start, &pick(&[0, 2, 3]))];
        for (side, path, value) in &damage {
            mutate(&mut docs[*side as usize], path, value.clone());
        }
        let [o, a, b] = &docs;
        if let Ok(m) = merge_bytes(Some(prof), &bytes(o), &bytes(a), &bytes(b)) {
            if m.conflicts.is_empty() {
                let ids = |v: &Value| record_ids(prof, v);
                let (io, ia, ib) = (ids(o), ids(a), ids(b));
                prop_assert!(io.is_ok() && ia.is_ok() && ib.is_ok(), "a clean merge of inputs with invalid records");
                let (io, ia, ib) = (io.unwrap(), ia.unwrap(), ib.unwrap());
                let got = ids(&serde_json::from_slice(&m.output).unwrap()).unwrap();
                let limit = prof.records.as_ref().and_then(|r| (r.keep_newest)(&serde_json::from_slice(&m.output).unwrap()));
                for id in ia.union(&ib) {
                    let deleted = io.contains(id) && !(ia.contains(id) && ib.contains(id));
                    if !deleted && limit.is_none_or(|l| got.len() < l) {
                        prop_assert!(got.contains(id), "record {id} dropped");
                    }
                }
            }
        }
    }
}

/// Replaces the value found by following `path` (indices into keys or entries).
fn mutate(v: &mut Value, path: &[u16], new: Value) {
    let Some((&first, rest)) = path.split_first() else {
        *v = new;
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let i = first as usize % m.len();
            let key = m.keys().nth(i).unwrap().clone();
            mutate(m.get_mut(&key).unwrap(), rest, new);
        }
        Value::Array(a) if !a.is_empty() => {
            let i = first as usize % a.len();
            mutate(&mut a[i], rest, new);
        }
        _ => *v = new,
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z0-9 :TZ-]{0,12}".prop_map(Value::from),
        Just(json!("2026-10-01T00:00:00Z")),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("label".to_string()),
                    Just("created_at".to_string()),
                    "[a-e]{1,3}"
                ],
                inner.clone(),
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
            prop::collection::vec(("[a-c]{1,2}", inner), 0..4)
                .prop_map(|v| Value::Array(v.into_iter().map(|(id, x)| json!({"id": id, "x": x})).collect())),
        ]
    })
}

fn manifest() -> impl Strategy<Value = Value> {
    let machine =
        ("[a-d]", 1u8..28, 0u32..500, prop::collection::vec("b[1-4]", 0..3)).prop_map(|(name, day, n, backups)| {
            json!({"machine_name": name, "last_sync": format!("2026-10-{day:02}T12:00:00Z"), "last_record_date": null,
               "total_records": n, "current_file": "x.json", "backups": backups})
        });
    (prop::collection::vec(machine, 0..5), 1u8..28, 1u32..90).prop_map(|(machines, day, ret)| {
        let mut seen = HashSet::new();
        let machines: Vec<Value> =
            machines.into_iter().filter(|m| seen.insert(m["machine_name"].as_str().unwrap().to_string())).collect();
        json!({"version": "1.0", "last_updated": format!("2026-10-{day:02}T12:00:00Z"), "machines": machines, "backup_retention_days": ret})
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Manifests: swapping ours and theirs gives the same document and the same
    /// conflicts; every machine either side lists survives unless a side removed it.
    #[test]
    fn ccu_manifest_merges_commute(o in manifest(), a in manifest(), b in manifest()) {
        let m = p("ccu-manifest");
        let x = engine::merge_values(m, Some(&o), Some(&a), Some(&b)).unwrap();
        let y = engine::merge_values(m, Some(&o), Some(&b), Some(&a)).unwrap();
        if x.1.is_empty() && y.1.is_empty() {
            prop_assert_eq!(&x.0, &y.0);
        }
        let names = |v: &Value| v["machines"].as_array().unwrap().iter().map(|m| m["machine_name"].as_str().unwrap().to_string()).collect::<HashSet<_>>();
        let (no, na, nb, nx) = (names(&o), names(&a), names(&b), names(&x.0));
        for n in na.union(&nb) {
            let removed = no.contains(n) && !(na.contains(n) && nb.contains(n));
            prop_assert!(removed || nx.contains(n), "machine {} dropped", n);
        }
    }
}
