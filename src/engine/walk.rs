//! The walk over the three skeletons (documents with their records taken out): one
//! decision per path, by the profile's rules or, where none applies, by the generic
//! inference from values and key names.

use super::{id_text, invalid, path_text, Conflict, MergeError, Path, Seg, Side};
use crate::json::canonical;
use crate::num::{Num, NumProblem};
use crate::profile::{Kind, Profile};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// The walk over the documents with their records taken out.
pub(super) struct Walker<'a> {
    pub(super) profile: &'a Profile,
    pub(super) env: Option<&'static str>,
    /// Per counter path, what records both sides hold add beyond counting them once.
    pub(super) deltas: HashMap<Path, Num>,
    pub(super) conflicts: Vec<Conflict>,
}

/// What to do at a path once rules and inference have spoken.
enum Plan {
    Kind(Kind),
    Array,
}

const ID_FIELDS: [&str; 5] = ["id", "uuid", "key", "label", "date"];

/// Whether the counter at `path` counts money (`cost_usd`, `totalCostUsd`, `total_cost`):
/// the only counters with fractions.
fn is_money(path: &[Seg]) -> bool {
    match path.last() {
        Some(Seg::Key(k)) => {
            let k = k.to_ascii_lowercase();
            k.contains("cost") || k.ends_with("usd")
        }
        _ => false,
    }
}

impl Walker<'_> {
    fn kind(&self, path: &[Seg]) -> Kind {
        let (rules, rel) = match self.env {
            Some(env) => match path.first() {
                None => return Kind::Object,
                Some(Seg::Key(k)) if k == env => (self.profile.rules, &path[1..]),
                _ => (self.profile.envelope_rules, path),
            },
            None => (self.profile.rules, path),
        };
        let keys: Vec<&str> = rel
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.as_str(),
                Seg::Elem { id, .. } => id.as_str(),
            })
            .collect();
        rule_kind(rules, &keys)
    }

    fn plan(&self, path: &[Seg], vals: [Option<&Value>; 3]) -> Plan {
        let kind = self.kind(path);
        if kind != Kind::Infer {
            return Plan::Kind(kind);
        }
        let present: Vec<&Value> = vals.iter().flatten().copied().collect();
        let name = match path.last() {
            Some(Seg::Key(k)) => k.as_str(),
            _ => "",
        };
        if present.iter().all(|v| v.is_object()) {
            Plan::Kind(Kind::Object)
        } else if present.iter().all(|v| v.is_array()) {
            Plan::Array
        } else if present.iter().all(|v| v.is_number()) {
            Plan::Kind(name_kind(name).unwrap_or(Kind::Counter))
        } else if present.iter().all(|v| v.is_string()) {
            Plan::Kind(name_kind(name).unwrap_or(Kind::Scalar))
        } else {
            Plan::Kind(Kind::Scalar)
        }
    }

    pub(super) fn node(
        &mut self,
        path: &mut Path,
        o: Option<&Value>,
        a: Option<&Value>,
        b: Option<&Value>,
    ) -> Result<Option<Value>, MergeError> {
        match self.plan(path, [o, a, b]) {
            Plan::Array => self.array(path, o, a, b),
            Plan::Kind(kind) => match kind {
                Kind::Counter => match self.type_check(path, [o, a, b], Value::is_number, "a number")? {
                    true => self.counter(path, o, a, b),
                    false => Ok(self.scalar(path, o, a, b)),
                },
                Kind::Later | Kind::Earlier => Ok(self.time(kind == Kind::Earlier, o, a, b)),
                Kind::Scalar | Kind::Infer => Ok(self.scalar(path, o, a, b)),
                Kind::Object | Kind::Map => match self.type_check(path, [o, a, b], Value::is_object, "an object")? {
                    true => self.object(path, o, a, b, kind == Kind::Map),
                    false => Ok(self.scalar(path, o, a, b)),
                },
                Kind::Series { label, value, keep } => {
                    self.type_check(path, [o, a, b], Value::is_array, "an array")?;
                    self.series(path, [o, a, b], label, value, keep)
                }
                Kind::LatestEntry { key, by, union } => {
                    self.type_check(path, [o, a, b], Value::is_array, "an array")?;
                    self.latest(path, [o, a, b], key, by, union)
                }
                // Kept in place (and key order) if both sides still have the container;
                // `place_records` recreates it wherever merged records need it.
                Kind::Records => Ok((a.is_some() && b.is_some() || o.is_none() && (a.is_some() || b.is_some()))
                    .then(|| Value::Array(Vec::new()))),
                Kind::Derived => Ok(a.or(b).cloned()),
            },
        }
    }

    /// True when every present value passes; strict profiles reject the others.
    fn type_check(
        &self,
        path: &[Seg],
        vals: [Option<&Value>; 3],
        ok: fn(&Value) -> bool,
        expected: &str,
    ) -> Result<bool, MergeError> {
        for (v, side) in vals.iter().zip([Side::Base, Side::Ours, Side::Theirs]) {
            if let Some(v) = v {
                if !ok(v) && !v.is_null() {
                    if self.profile.strict {
                        return Err(invalid(side, path, format!("expected {expected}, found {}", type_name(v))));
                    }
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn num(&self, path: &[Seg], v: Option<&Value>, side: Side) -> Result<Num, MergeError> {
        let n = match v.and_then(Num::from_value) {
            None => return Ok(Num::ZERO),
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return Err(invalid(side, path, "a number too large to count exactly (beyond 64-bit integers)"))
            }
        };
        // A usage format's counters count requests, tokens and dollars: below zero, or a
        // fraction of a request or token, no merge can be exact (and `generic` files may
        // hold any number).
        if self.profile.strict {
            if n.as_f64() < 0.0 {
                return Err(invalid(side, path, format!("a counter cannot be negative ({})", v.expect("a number"))));
            }
            if matches!(n, Num::Float(f) if f.fract() != 0.0) && !is_money(path) {
                return Err(invalid(side, path, format!("a count cannot be fractional ({})", v.expect("a number"))));
            }
        }
        Ok(n)
    }

    pub(super) fn counter(
        &mut self,
        path: &[Seg],
        o: Option<&Value>,
        a: Option<&Value>,
        b: Option<&Value>,
    ) -> Result<Option<Value>, MergeError> {
        let overflow = |_: NumProblem| MergeError::Overflow { path: path_text(path) };
        let no = self.num(path, o, Side::Base)?;
        let na = self.num(path, a, Side::Ours)?;
        let nb = self.num(path, b, Side::Theirs)?;
        let d = self.deltas.remove(path).unwrap_or(Num::ZERO);
        let da = na.minus(no).map_err(overflow)?;
        let db = nb.minus(no).map_err(overflow)?;
        let m = if decreased(da, no) && decreased(db, no) {
            // Both sides reset: what each counted since its reset adds up.
            na.plus(nb).and_then(|s| s.minus(d)).map_err(overflow)?
        } else {
            da.plus(db).and_then(|s| no.plus(s)).and_then(|s| s.minus(d)).map_err(overflow)?
        };
        let gone = (o.is_some() && (a.is_none() || b.is_none())) || (a.is_none() && b.is_none());
        if m.is_zero() && gone {
            return Ok(None);
        }
        m.to_value().map(Some).map_err(overflow)
    }

    fn time(&self, earlier: bool, o: Option<&Value>, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
        if deleted_on_one_side(o, a, b) {
            return None;
        }
        match (a, b) {
            (Some(x), Some(y)) => {
                let ord = cmp_time(x, y);
                let pick_x = if earlier { ord != Ordering::Greater } else { ord != Ordering::Less };
                Some(if pick_x { x } else { y }.clone())
            }
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        }
    }

    fn scalar(&mut self, path: &[Seg], o: Option<&Value>, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
        if a == b || b == o {
            a.cloned()
        } else if a == o {
            b.cloned()
        } else {
            self.conflicts.push(Conflict {
                path: path.to_vec(),
                base: o.cloned(),
                ours: a.cloned(),
                theirs: b.cloned(),
            });
            a.cloned()
        }
    }

    fn object(
        &mut self,
        path: &mut Path,
        o: Option<&Value>,
        a: Option<&Value>,
        b: Option<&Value>,
        sorted: bool,
    ) -> Result<Option<Value>, MergeError> {
        let (mo, ma, mb) = (obj(o), obj(a), obj(b));
        let mut keys: Vec<&String> = Vec::new();
        let mut seen: HashSet<&String> = HashSet::new();
        for m in [ma, mb, mo].into_iter().flatten() {
            for k in m.keys() {
                if seen.insert(k) {
                    keys.push(k);
                }
            }
        }
        if sorted {
            keys.sort();
        }
        let mut out = Map::new();
        for k in keys {
            path.push(Seg::Key(k.clone()));
            let child =
                self.node(path, mo.and_then(|m| m.get(k)), ma.and_then(|m| m.get(k)), mb.and_then(|m| m.get(k)))?;
            path.pop();
            if let Some(c) = child {
                out.insert(k.clone(), c);
            }
        }
        let gone = (o.is_some() && (a.is_none() || b.is_none())) || (a.is_none() && b.is_none());
        Ok(if out.is_empty() && gone { None } else { Some(Value::Object(out)) })
    }

    fn series<'v>(
        &mut self,
        path: &mut Path,
        vals: [Option<&'v Value>; 3],
        label: &str,
        value: &str,
        keep: Option<usize>,
    ) -> Result<Option<Value>, MergeError> {
        let mut idx: [HashMap<String, &'v Value>; 3] = Default::default();
        let mut labels: Vec<String> = Vec::new();
        for (i, (v, side)) in vals.iter().zip([Side::Base, Side::Ours, Side::Theirs]).enumerate() {
            for e in v.and_then(Value::as_array).into_iter().flatten() {
                let Some(l) = e.get(label).and_then(Value::as_str) else {
                    return Err(invalid(side, path, format!("expected entries with a string {label:?}")));
                };
                if idx[i].insert(l.to_string(), e).is_none() && !labels.iter().any(|x| x == l) {
                    labels.push(l.to_string());
                }
            }
        }
        labels.sort();
        let mut out = Vec::new();
        for l in labels {
            let [eo, ea, eb] = [0, 1, 2].map(|i| idx[i].get(&l).copied());
            path.push(Seg::Elem { field: label.to_string(), id: l.clone() });
            path.push(Seg::Key(value.to_string()));
            let get = |e: Option<&'v Value>| -> Option<&'v Value> { e.map(|e| e.get(value).unwrap_or(&Value::Null)) };
            let merged = self.counter(path, get(eo), get(ea), get(eb))?;
            path.pop();
            path.pop();
            if let Some(v) = merged {
                let mut entry = ea.or(eb).or(eo).cloned().expect("label came from an entry");
                entry[value] = v;
                out.push(entry);
            }
        }
        if let Some(keep) = keep {
            if out.len() > keep {
                let excess = out.len() - keep;
                out.drain(..excess);
            }
        }
        let gone = vals[1].is_none() && vals[2].is_none();
        Ok(if out.is_empty() && gone { None } else { Some(Value::Array(out)) })
    }

    fn latest(
        &mut self,
        path: &mut Path,
        vals: [Option<&Value>; 3],
        key: &str,
        by: &str,
        union: &str,
    ) -> Result<Option<Value>, MergeError> {
        let mut idx: [Vec<(String, &Value)>; 3] = Default::default();
        for (i, (v, side)) in vals.iter().zip([Side::Base, Side::Ours, Side::Theirs]).enumerate() {
            for e in v.and_then(Value::as_array).into_iter().flatten() {
                let Some(k) = e.get(key).and_then(id_text) else {
                    return Err(invalid(side, path, format!("expected entries with a {key:?}")));
                };
                idx[i].push((k, e));
            }
        }
        let find = |i: usize, k: &str| idx[i].iter().find(|(x, _)| x == k).map(|(_, e)| *e);
        let order = merged_order(&idx.each_ref().map(|l| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()));
        let mut out = Vec::new();
        for k in order {
            let (eo, ea, eb) = (find(0, &k), find(1, &k), find(2, &k));
            if deleted_on_one_side(eo, ea, eb) {
                continue;
            }
            let chosen = match (ea, eb) {
                (Some(x), Some(y)) if x == y => x,
                (Some(x), Some(y)) => {
                    match cmp_time(x.get(by).unwrap_or(&Value::Null), y.get(by).unwrap_or(&Value::Null)) {
                        Ordering::Greater => x,
                        Ordering::Less => y,
                        Ordering::Equal if Some(x) == eo => y,
                        Ordering::Equal if Some(y) == eo => x,
                        Ordering::Equal if canonical(x) >= canonical(y) => x,
                        Ordering::Equal => y,
                    }
                }
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => continue,
            };
            let mut entry = chosen.clone();
            let lists = [eo, ea, eb].map(|e| e.and_then(|e| e.get(union)).and_then(Value::as_array));
            if lists.iter().any(Option::is_some) {
                entry[union] = Value::Array(scalar_union(lists));
            }
            out.push(entry);
        }
        Ok(Some(Value::Array(out)))
    }

    /// Generic arrays: by identity field, as an ordered union of scalars, or 3-way.
    fn array(
        &mut self,
        path: &mut Path,
        o: Option<&Value>,
        a: Option<&Value>,
        b: Option<&Value>,
    ) -> Result<Option<Value>, MergeError> {
        let lists: [Option<&Vec<Value>>; 3] = [o, a, b].map(|v| v.and_then(Value::as_array));
        if let Some(field) = identity_field(&lists) {
            let keyed = lists.map(|l| {
                l.map(|l| l.iter().map(|e| (id_text(&e[field]).expect("checked"), e)).collect::<Vec<_>>())
                    .unwrap_or_default()
            });
            let order = merged_order(&keyed.each_ref().map(|l| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()));
            let maps: [HashMap<&str, &Value>; 3] =
                keyed.each_ref().map(|l| l.iter().map(|(k, e)| (k.as_str(), *e)).collect());
            let mut out = Vec::new();
            for k in order {
                let [eo, ea, eb] = [0, 1, 2].map(|i| maps[i].get(k.as_str()).copied());
                path.push(Seg::Elem { field: field.to_string(), id: k.clone() });
                // The same record added on both sides is one record.
                let merged =
                    if eo.is_none() && ea.is_some() && ea == eb { ea.cloned() } else { self.node(path, eo, ea, eb)? };
                path.pop();
                if let Some(mut m) = merged {
                    if let (Some(obj), Some(idv)) = (m.as_object_mut(), ea.or(eb).or(eo).and_then(|e| e.get(field))) {
                        if !obj.contains_key(field) {
                            obj.insert(field.to_string(), idv.clone());
                        }
                    }
                    out.push(m);
                }
            }
            let gone = (o.is_some() && (a.is_none() || b.is_none())) || (a.is_none() && b.is_none());
            return Ok(if out.is_empty() && gone { None } else { Some(Value::Array(out)) });
        }
        let scalars = lists.iter().flatten().all(|l| l.iter().all(|e| !e.is_object() && !e.is_array()));
        if scalars {
            if deleted_on_one_side(o, a, b) {
                return Ok(None);
            }
            return Ok(Some(Value::Array(scalar_union(lists))));
        }
        Ok(self.scalar(path, o, a, b))
    }
}

/// The kind the first matching rule gives a path (relative to the profile's root):
/// `Object` at the root, `Infer` where no rule matches.
pub(crate) fn rule_kind(rules: &[crate::profile::Rule], path: &[&str]) -> Kind {
    if path.is_empty() {
        return Kind::Object;
    }
    rules
        .iter()
        .find(|r| r.pattern.len() == path.len() && r.pattern.iter().zip(path).all(|(p, s)| *p == "*" || p == s))
        .map_or(Kind::Infer, |r| r.kind)
}

fn obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn decreased(delta: Num, base: Num) -> bool {
    match delta {
        Num::Int(i) => i < 0,
        Num::Float(f) => f < -1e-9 * base.as_f64().abs().max(1.0),
    }
}

fn deleted_on_one_side(o: Option<&Value>, a: Option<&Value>, b: Option<&Value>) -> bool {
    o.is_some() && ((a.is_none() && b == o) || (b.is_none() && a == o))
}

/// The generic rules' reading of a key name: times, dates and versions are "later",
/// creation times "earlier", ids 3-way scalars; `None` leaves numbers as counters.
pub(crate) fn name_kind(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    if lower == "id" || lower == "uuid" || lower.ends_with("_id") || name.ends_with("Id") || lower.ends_with("uuid") {
        return Some(Kind::Scalar);
    }
    if lower.contains("created") || lower.contains("first") || lower.starts_with("oldest") || lower == "since" {
        return Some(Kind::Earlier);
    }
    let later = ["time", "date", "version", "updated", "last", "newest", "modified", "until"];
    if later.iter().any(|w| lower.contains(w)) || lower.ends_with("_at") || name.ends_with("At") {
        return Some(Kind::Later);
    }
    None
}

/// Orders times (RFC 3339 or epoch numbers) and versions; ties broken canonically.
pub(crate) fn cmp_time(x: &Value, y: &Value) -> Ordering {
    use crate::profile::parse_instant;
    let ord = match (x, y) {
        (Value::Number(a), Value::Number(b)) => {
            a.as_f64().unwrap_or(0.0).partial_cmp(&b.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Value::String(a), Value::String(b)) => match (parse_instant(x), parse_instant(y)) {
            (Some(p), Some(q)) => p.cmp(&q),
            _ => cmp_version(a, b),
        },
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    };
    ord.then_with(|| canonical(x).cmp(&canonical(y)))
}

fn cmp_version(a: &str, b: &str) -> Ordering {
    let mut pa = a.split(['.', '-']);
    let mut pb = b.split(['.', '-']);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(i), Ok(j)) => i.cmp(&j),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The identity field shared by every entry of every present array, unique per array.
pub(crate) fn identity_field(lists: &[Option<&Vec<Value>>; 3]) -> Option<&'static str> {
    let present: Vec<&Vec<Value>> = lists.iter().flatten().copied().collect();
    if present.iter().all(|l| l.is_empty()) {
        return None;
    }
    ID_FIELDS.into_iter().find(|f| {
        present.iter().all(|l| {
            let mut seen = HashSet::new();
            l.iter().all(|e| e.get(*f).and_then(id_text).is_some_and(|id| seen.insert(id)))
        })
    })
}

/// Base order first, then each side's new entries as a group; the groups are ordered by
/// their entries (the whole group: both sides may add the same entry first) so that
/// swapping ours and theirs gives the same result.
fn merged_order(keys: &[Vec<String>; 3]) -> Vec<String> {
    let mut seen: HashSet<&String> = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for k in &keys[0] {
        if seen.insert(k) {
            out.push(k.clone());
        }
    }
    let new = |i: usize| keys[i].iter().filter(|k| !keys[0].contains(k)).collect::<Vec<_>>();
    let (ga, gb) = (new(1), new(2));
    let groups = if ga <= gb { [ga, gb] } else { [gb, ga] };
    for g in groups {
        for k in g {
            if seen.insert(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

/// Ordered multiset union of scalar arrays: changes made on both sides count once.
pub(crate) fn scalar_union(lists: [Option<&Vec<Value>>; 3]) -> Vec<Value> {
    let mut counts: [HashMap<String, i64>; 3] = Default::default();
    let mut firsts: HashMap<String, &Value> = HashMap::new();
    let mut keys: [Vec<String>; 3] = Default::default();
    for i in 0..3 {
        for v in lists[i].into_iter().flatten() {
            let c = canonical(v);
            *counts[i].entry(c.clone()).or_insert(0) += 1;
            firsts.entry(c.clone()).or_insert(v);
            keys[i].push(c);
        }
    }
    let mut out = Vec::new();
    for k in merged_order(&keys) {
        let [co, ca, cb] = [0, 1, 2].map(|i| counts[i].get(&k).copied().unwrap_or(0));
        let (da, db) = (ca - co, cb - co);
        let n = if da.signum() == db.signum() { co + if da.abs() >= db.abs() { da } else { db } } else { co + da + db };
        for _ in 0..n.max(0) {
            out.push(firsts[&k].clone());
        }
    }
    out
}
