//! Arithmetic on a profile's counter documents (a usage file without its records), by the
//! profile's rules: the join of two versions of one device's counters (counters by
//! maximum, times later/earlier, series and keyed entries by label), the sum of several
//! devices' counters (what a view shows), and the part of an application's write beyond
//! what it started from.
//!
//! Joins are what make the ledger exact under any history: a device's counters only grow,
//! so of two versions the join is the newer one, and joining again changes nothing.

use crate::engine::{cmp_time, id_text, identity_field, name_kind, rule_kind, scalar_union};
use crate::json::canonical;
use crate::num::Num;
use crate::profile::{Kind, Profile};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// What to do with two documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Two versions of one device's counters: counters by maximum (idempotent).
    Join,
    /// Two devices' counters: counters add up.
    Add,
    /// `a − b` for counters (never below zero), `a`'s values elsewhere: what an
    /// application's write `a` counts beyond the version `b` it started from.
    Sub,
}

/// A number that cannot be a counter (negative, fractional where integers are kept, or
/// beyond 64 bits), at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AlgebraError {
    pub path: String,
    pub message: String,
}

/// Combines `a` and `b` by `op` under `profile`'s rules.
pub fn combine(profile: &Profile, op: Op, a: &Value, b: &Value) -> Result<Value, AlgebraError> {
    let mut path = Vec::new();
    Ok(node(profile, op, &mut path, Some(a), Some(b))?.unwrap_or_else(|| Value::Object(Map::new())))
}

/// Whether `a` counts at least what `b` counts, counter by counter (an application that
/// loaded `b` and went on counting).
pub fn covers(profile: &Profile, a: &Value, b: &Value) -> bool {
    fn walk(profile: &Profile, path: &mut Vec<String>, a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Object(am), Value::Object(bm)) => bm.iter().all(|(k, bv)| {
                path.push(k.clone());
                let ok = match am.get(k) {
                    Some(av) => walk(profile, path, av, bv),
                    None => is_zero_tree(bv),
                };
                path.pop();
                ok
            }),
            (Value::Number(_), Value::Number(_)) => {
                let kind = kind_at(profile, path, &[Some(a), Some(b)]);
                kind != Kind::Counter || num(a) >= num(b)
            }
            (Value::Array(_), Value::Array(_)) => {
                let mut out = true;
                if let Kind::Series { label, value, .. } = kind_at(profile, path, &[Some(a), Some(b)]) {
                    let av = series_map(a, label, value);
                    out = series_map(b, label, value).iter().all(|(l, v)| av.get(l).copied().unwrap_or(0.0) >= *v);
                }
                out
            }
            _ => true,
        }
    }
    walk(profile, &mut Vec::new(), a, b)
}

/// Whether some counter of `a` is below the same counter of `b` (an application that
/// restarted since it wrote `b`), or a creation time differs.
pub fn decreased(profile: &Profile, a: &Value, b: &Value) -> bool {
    fn walk(profile: &Profile, path: &mut Vec<String>, a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Object(am), Value::Object(bm)) => bm.iter().any(|(k, bv)| {
                path.push(k.clone());
                let d = am.get(k).is_some_and(|av| walk(profile, path, av, bv));
                path.pop();
                d
            }),
            (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)) => {
                match kind_at(profile, path, &[Some(a), Some(b)]) {
                    Kind::Counter => num(a) < num(b),
                    Kind::Earlier => a != b,
                    _ => false,
                }
            }
            (Value::Array(_), Value::Array(_)) => {
                if let Kind::Series { label, value, keep } = kind_at(profile, path, &[Some(a), Some(b)]) {
                    // A trimmed label is not a decrease; one still present that went down is.
                    let av = series_map(a, label, value);
                    let _ = keep;
                    series_map(b, label, value).iter().any(|(l, v)| av.get(l).is_some_and(|x| x < v))
                } else {
                    false
                }
            }
            _ => false,
        }
    }
    walk(profile, &mut Vec::new(), a, b)
}

fn is_zero_tree(v: &Value) -> bool {
    match v {
        Value::Number(_) => num(v) == 0.0,
        Value::Object(m) => m.values().all(is_zero_tree),
        _ => true,
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn series_map(v: &Value, label: &str, value: &str) -> HashMap<String, f64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.get(label)?.as_str()?.to_string(), e.get(value).map_or(0.0, num))))
        .collect()
}

fn kind_at(profile: &Profile, path: &[String], vals: &[Option<&Value>]) -> Kind {
    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
    let kind = rule_kind(profile.rules, &keys);
    if kind != Kind::Infer {
        return kind;
    }
    let present: Vec<&Value> = vals.iter().flatten().copied().collect();
    let name = path.last().map_or("", String::as_str);
    if present.iter().all(|v| v.is_object()) {
        Kind::Object
    } else if present.iter().all(|v| v.is_number()) {
        name_kind(name).unwrap_or(Kind::Counter)
    } else if present.iter().all(|v| v.is_string()) {
        name_kind(name).unwrap_or(Kind::Scalar)
    } else {
        Kind::Infer
    }
}

fn text(path: &[String]) -> String {
    let mut s = String::from("$");
    for k in path {
        s.push('.');
        s.push_str(k);
    }
    s
}

fn counter(path: &[String], v: Option<&Value>) -> Result<Num, AlgebraError> {
    match v {
        None | Some(Value::Null) => Ok(Num::ZERO),
        Some(Value::Number(n)) => match Num::from_number(n) {
            Ok(Num::Int(i)) if i < 0 => {
                Err(AlgebraError { path: text(path), message: format!("a counter cannot be negative ({i})") })
            }
            Ok(Num::Float(f)) if f < 0.0 => {
                Err(AlgebraError { path: text(path), message: format!("a counter cannot be negative ({f})") })
            }
            Ok(n) => Ok(n),
            Err(_) => Err(AlgebraError {
                path: text(path),
                message: "a number too large to count exactly (beyond 64-bit integers)".into(),
            }),
        },
        Some(other) => Err(AlgebraError { path: text(path), message: format!("expected a number, found {other}") }),
    }
}

/// The larger of two versions of a counter. Of equal values the one written as dollars
/// (`0.0`) wins over a count (`0`), which is also what a counter absent on one side reads
/// as: the join is the same bytes whichever side comes first, and a device's own file
/// joined with an older version of itself comes out as the device wrote it.
fn max(x: Num, y: Num) -> Num {
    match x.as_f64().partial_cmp(&y.as_f64()) {
        Some(Ordering::Greater) => x,
        Some(Ordering::Less) => y,
        _ if matches!(y, Num::Float(_)) => y,
        _ => x,
    }
}

/// Zero written as `n` is: `0.0` for dollars, `0` for counts.
fn zero_like(n: Num) -> Num {
    match n {
        Num::Float(_) => Num::Float(0.0),
        Num::Int(_) => Num::ZERO,
    }
}

fn to_value(path: &[String], n: Num) -> Result<Value, AlgebraError> {
    n.to_value().map_err(|_| AlgebraError { path: text(path), message: "the counter does not fit 64 bits".into() })
}

fn node(
    profile: &Profile,
    op: Op,
    path: &mut Vec<String>,
    a: Option<&Value>,
    b: Option<&Value>,
) -> Result<Option<Value>, AlgebraError> {
    if op == Op::Sub && a.is_none() {
        return Ok(None);
    }
    match kind_at(profile, path, &[a, b]) {
        Kind::Counter => {
            let (x, y) = (counter(path, a)?, counter(path, b)?);
            let r = match op {
                Op::Join => max(x, y),
                Op::Add => x
                    .plus(y)
                    .map_err(|_| AlgebraError { path: text(path), message: "the sum does not fit 64 bits".into() })?,
                Op::Sub => match x.minus(y) {
                    Ok(d) if d.as_f64() > 0.0 => d,
                    _ => zero_like(x),
                },
            };
            Ok(Some(to_value(path, r)?))
        }
        Kind::Later | Kind::Earlier => {
            let earlier = matches!(kind_at(profile, path, &[a, b]), Kind::Earlier);
            Ok(match (a, b, op) {
                (Some(x), _, Op::Sub) => Some(x.clone()),
                (Some(x), Some(y), _) => {
                    let ord = cmp_time(x, y);
                    let pick_x = if earlier { ord != Ordering::Greater } else { ord != Ordering::Less };
                    Some(if pick_x { x } else { y }.clone())
                }
                (Some(x), None, _) | (None, Some(x), _) => Some(x.clone()),
                (None, None, _) => None,
            })
        }
        Kind::Object | Kind::Map => {
            let (ma, mb) = (a.and_then(Value::as_object), b.and_then(Value::as_object));
            if a.is_some() && ma.is_none() || b.is_some() && mb.is_none() {
                return Ok(scalar(op, a, b));
            }
            let mut keys: Vec<&String> = ma.into_iter().flat_map(|m| m.keys()).collect();
            if op != Op::Sub {
                for k in mb.into_iter().flat_map(|m| m.keys()) {
                    if !ma.is_some_and(|m| m.contains_key(k)) {
                        keys.push(k);
                    }
                }
            }
            if matches!(kind_at(profile, path, &[a, b]), Kind::Map) {
                keys.sort();
            }
            let mut out = Map::new();
            for k in keys {
                path.push(k.clone());
                let child = node(profile, op, path, ma.and_then(|m| m.get(k)), mb.and_then(|m| m.get(k)))?;
                path.pop();
                if let Some(c) = child {
                    out.insert(k.clone(), c);
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Kind::Series { label, value, keep } => {
            let mut labels: Vec<String> = Vec::new();
            let mut entries: HashMap<String, (Option<&Value>, Option<&Value>)> = HashMap::new();
            for (i, v) in [a, b].into_iter().enumerate() {
                for e in v.and_then(Value::as_array).into_iter().flatten() {
                    let Some(l) = e.get(label).and_then(Value::as_str) else {
                        return Err(AlgebraError {
                            path: text(path),
                            message: format!("expected entries with a string {label:?}"),
                        });
                    };
                    let slot = entries.entry(l.to_string()).or_insert_with(|| {
                        labels.push(l.to_string());
                        (None, None)
                    });
                    if i == 0 {
                        slot.0 = Some(e);
                    } else {
                        slot.1 = Some(e);
                    }
                }
            }
            labels.sort();
            let mut out = Vec::new();
            for l in labels {
                let (ea, eb) = entries[&l];
                if op == Op::Sub && ea.is_none() {
                    continue;
                }
                path.push(l.clone());
                path.push(value.to_string());
                let (x, y) =
                    (counter(path, ea.and_then(|e| e.get(value)))?, counter(path, eb.and_then(|e| e.get(value)))?);
                let r = match op {
                    Op::Join => max(x, y),
                    Op::Add => x.plus(y).map_err(|_| AlgebraError {
                        path: text(path),
                        message: "the sum does not fit 64 bits".into(),
                    })?,
                    Op::Sub => match x.minus(y) {
                        Ok(d) if d.as_f64() > 0.0 => d,
                        _ => zero_like(x),
                    },
                };
                let v = to_value(path, r)?;
                path.pop();
                path.pop();
                let mut entry = ea.or(eb).cloned().expect("the label came from an entry");
                entry[value] = v;
                out.push(entry);
            }
            if let Some(keep) = keep {
                if out.len() > keep {
                    let excess = out.len() - keep;
                    out.drain(..excess);
                }
            }
            Ok(Some(Value::Array(out)))
        }
        Kind::LatestEntry { key, by, union } => {
            if op == Op::Sub {
                return Ok(a.cloned());
            }
            let mut order: Vec<String> = Vec::new();
            let mut chosen: HashMap<String, Value> = HashMap::new();
            for e in [a, b].into_iter().flatten().filter_map(Value::as_array).flatten() {
                let Some(k) = e.get(key).and_then(id_text) else {
                    return Err(AlgebraError { path: text(path), message: format!("expected entries with a {key:?}") });
                };
                match chosen.get_mut(&k) {
                    None => {
                        order.push(k.clone());
                        chosen.insert(k, e.clone());
                    }
                    Some(old) => {
                        let lists =
                            [Some(&*old), Some(e)].map(|x| x.and_then(|x| x.get(union)).and_then(Value::as_array));
                        let united =
                            lists.iter().any(Option::is_some).then(|| scalar_union([None, lists[0], lists[1]]));
                        let ord = cmp_time(e.get(by).unwrap_or(&Value::Null), old.get(by).unwrap_or(&Value::Null));
                        if ord == Ordering::Greater || (ord == Ordering::Equal && canonical(e) > canonical(old)) {
                            *old = e.clone();
                        }
                        if let Some(u) = united {
                            old[union] = Value::Array(dedup(u));
                        }
                    }
                }
            }
            order.sort();
            Ok(Some(Value::Array(order.into_iter().map(|k| chosen.remove(&k).expect("chosen")).collect())))
        }
        // Where records live: the container stays (records are placed by the view), the
        // part beyond a base holds none.
        Kind::Records if op == Op::Sub => Ok(None),
        Kind::Records => Ok(a.or(b).cloned()),

        Kind::Derived => Ok(a.or(b).cloned()),
        Kind::Scalar => Ok(scalar(op, a, b)),
        Kind::Infer => {
            let (la, lb) = (a.and_then(Value::as_array), b.and_then(Value::as_array));
            if (la.is_some() || a.is_none()) && (lb.is_some() || b.is_none()) && (la.is_some() || lb.is_some()) {
                if op == Op::Sub {
                    return Ok(a.cloned());
                }
                if let Some(field) = identity_field(&[None, la, lb]) {
                    // Entries by identity, each combined.
                    let mut order: Vec<String> = Vec::new();
                    let mut pairs: HashMap<String, (Option<&Value>, Option<&Value>)> = HashMap::new();
                    for (i, l) in [la, lb].into_iter().enumerate() {
                        for e in l.into_iter().flatten() {
                            let k = id_text(&e[field]).expect("identity_field checked it");
                            let slot = pairs.entry(k.clone()).or_insert_with(|| {
                                order.push(k.clone());
                                (None, None)
                            });
                            if i == 0 {
                                slot.0 = Some(e);
                            } else {
                                slot.1 = Some(e);
                            }
                        }
                    }
                    let mut out = Vec::new();
                    for k in order {
                        let (x, y) = pairs[&k];
                        path.push(k.clone());
                        let merged = if x == y { x.cloned() } else { node(profile, op, path, x, y)? };
                        path.pop();
                        out.extend(merged);
                    }
                    return Ok(Some(Value::Array(out)));
                }
                let scalars = [la, lb].iter().flatten().all(|l| l.iter().all(|e| !e.is_object() && !e.is_array()));
                if scalars {
                    return Ok(Some(Value::Array(dedup(scalar_union([None, la, lb])))));
                }
            }
            Ok(scalar(op, a, b))
        }
    }
}

/// A value without a counting rule: the same on both sides, or one chosen the same way
/// whichever side is which.
fn scalar(op: Op, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
    match (a, b) {
        (Some(x), _) if op == Op::Sub => Some(x.clone()),
        (Some(x), Some(y)) if x == y => Some(x.clone()),
        (Some(x), Some(y)) => Some(if canonical(x) >= canonical(y) { x } else { y }.clone()),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    }
}

/// Keeps the first of equal scalars: a union of two versions of one list.
fn dedup(list: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter().filter(|v| seen.insert(canonical(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::by_name;
    use serde_json::json;

    fn aggregate() -> &'static Profile {
        by_name("proxypal-aggregate").unwrap()
    }

    #[test]
    fn join_takes_the_larger_counter_and_is_idempotent() {
        let p = aggregate();
        let a = json!({"totalRequests": 5, "requestsByDay": [{"label": "2026-11-01", "value": 5}], "createdAt": 100});
        let b = json!({"totalRequests": 7, "requestsByDay": [{"label": "2026-11-01", "value": 3}, {"label": "2026-11-02", "value": 4}], "createdAt": 90});
        let j = combine(p, Op::Join, &a, &b).unwrap();
        assert_eq!(j["totalRequests"], 7);
        assert_eq!(
            j["requestsByDay"],
            json!([{"label": "2026-11-01", "value": 5}, {"label": "2026-11-02", "value": 4}])
        );
        assert_eq!(j["createdAt"], 90);
        assert_eq!(combine(p, Op::Join, &j, &b).unwrap(), j);
        assert_eq!(combine(p, Op::Join, &b, &a).unwrap(), j);
    }

    #[test]
    fn add_and_sub() {
        let p = aggregate();
        let a = json!({"totalRequests": 5, "totalCostUsd": 0.5});
        let b = json!({"totalRequests": 2, "totalCostUsd": 0.25});
        assert_eq!(combine(p, Op::Add, &a, &b).unwrap(), json!({"totalRequests": 7, "totalCostUsd": 0.75}));
        assert_eq!(combine(p, Op::Sub, &a, &b).unwrap(), json!({"totalRequests": 3, "totalCostUsd": 0.25}));
        // Never below zero.
        assert_eq!(combine(p, Op::Sub, &b, &a).unwrap()["totalRequests"], 0);
        assert!(decreased(p, &b, &a));
        assert!(!decreased(p, &a, &b));
        assert!(covers(p, &a, &b));
        assert!(!covers(p, &b, &a));
    }

    #[test]
    fn a_negative_or_oversized_counter_is_an_error_naming_its_path() {
        let p = aggregate();
        let e = combine(p, Op::Add, &json!({"totalRequests": -3}), &json!({})).unwrap_err();
        assert_eq!(e.path, "$.totalRequests");
        let e = combine(p, Op::Join, &json!({"modelStats": {"m": {"requests": 1e30}}}), &json!({})).unwrap_err();
        assert_eq!(e.path, "$.modelStats.m.requests");
    }
}
