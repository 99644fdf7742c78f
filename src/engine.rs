//! The merge engine: three JSON values in, one value out. It knows nothing of git or files.
//!
//! Records (identified by the profile) merge as sets: what either side has, minus what
//! either side deleted. Every counter is read as the part its records explain plus a
//! residual; residuals merge 3-way and the merged records add their part back (SPEC §4).
//! Only records whose presence or content differs between the versions change a counter,
//! so the cost beyond parsing is proportional to the change, not to the file.

use crate::json::canonical;
use crate::num::{Num, NumProblem};
use crate::profile::{FieldError, Kind, Profile, RecordSpec};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Which input a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Base,
    Ours,
    Theirs,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Base => "base",
            Side::Ours => "ours",
            Side::Theirs => "theirs",
        })
    }
}

/// One step of a JSON path: an object key, or the array entry whose `field` is `id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Elem { field: String, id: String },
}

pub type Path = Vec<Seg>;

/// `$.apis["a b"].models` style text for messages.
pub fn path_text(path: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Key(k) => s.push_str(&format!("[{}]", Value::from(k.as_str()))),
            Seg::Elem { field, id } => s.push_str(&format!("[{field}={id}]")),
        }
    }
    s
}

/// Why a merge could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("{side}: {path}: {message}")]
    Invalid { side: Side, path: String, message: String },
    #[error("{path}: the merged counter does not fit a 64-bit integer")]
    Overflow { path: String },
}

/// A value changed differently on both sides (only `generic` has these).
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub path: Path,
    pub base: Option<Value>,
    pub ours: Option<Value>,
    pub theirs: Option<Value>,
}

/// A merged document; `value` holds ours at every conflicting path.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub value: Value,
    pub conflicts: Vec<Conflict>,
}

type RecKey = (u32, String);

/// Containers are interned so that a record key is small and the same across inputs.
#[derive(Default)]
struct Containers {
    captures: Vec<Vec<String>>,
    ids: HashMap<Vec<String>, u32>,
}

impl Containers {
    fn intern(&mut self, caps: &[String]) -> u32 {
        if let Some(&id) = self.ids.get(caps) {
            return id;
        }
        let id = self.captures.len() as u32;
        self.captures.push(caps.to_vec());
        self.ids.insert(caps.to_vec(), id);
        id
    }
}

/// Merges `ours` and `theirs` against `base`; `None` is the profile's empty document.
pub fn merge(
    profile: &Profile,
    base: Option<Value>,
    ours: Option<Value>,
    theirs: Option<Value>,
) -> Result<Outcome, MergeError> {
    let mut docs = [base, ours, theirs];
    let sides = [Side::Base, Side::Ours, Side::Theirs];
    // A bare CLIProxyAPI snapshot merged with an export envelope is wrapped to match.
    let env = profile.envelope.and_then(|(key, is_env)| docs.iter().flatten().any(is_env).then_some(key));
    if let (Some(key), Some((_, is_env))) = (env, profile.envelope) {
        for doc in docs.iter_mut().flatten() {
            if !is_env(doc) {
                let inner = std::mem::take(doc);
                *doc = Value::Object(Map::from_iter([(key.to_string(), inner)]));
            }
        }
    }
    if profile.strict {
        for (doc, side) in docs.iter().zip(sides) {
            if let Some(d) = doc {
                if !d.is_object() {
                    return Err(invalid(side, &[], format!("expected a JSON object for a {} file", profile.name)));
                }
            }
        }
    }
    let root: Path = env.map(|k| vec![Seg::Key(k.to_string())]).unwrap_or_default();

    let mut containers = Containers::default();
    let mut records: [HashMap<RecKey, Value>; 3] = Default::default();
    if let Some(spec) = &profile.records {
        for ((doc, side), recs) in docs.iter_mut().zip(sides).zip(records.iter_mut()) {
            if let Some(d) = doc {
                let r = at_path_mut(d, &root).expect("root exists");
                *recs = take_records(r, spec, side, &root, &mut containers)?;
            }
        }
    }
    let [o_recs, mut a_recs, mut b_recs] = records;
    let mut merged_recs: Vec<(RecKey, Value)> = Vec::new();
    let mut deltas: HashMap<Path, Num> = HashMap::new();
    if let Some(spec) = &profile.records {
        // A + B − O counts every request once, except those both sides hold: correct by
        // c(A_k) + c(B_k) − c(O_k) − c(R_k) for each such record k. Records dropped on
        // either side (trimmed) keep their counts, as every profile's aggregates do.
        let mut work: Vec<(RecKey, Vec<(Path, Num)>)> = Vec::new();
        for (k, va) in a_recs.drain() {
            let vo = o_recs.get(&k);
            let Some(vb) = b_recs.remove(&k) else {
                if vo.is_none() {
                    merged_recs.push((k, va));
                }
                continue;
            };
            let take_a = prefer_ours(vo, &va, &vb);
            let trivial = vo.is_some() && (spec.contribution_by_identity || (Some(&va) == vo && Some(&vb) == vo));
            if !trivial {
                let caps = &containers.captures[k.0 as usize];
                let mut acc = Vec::new();
                let kept = if take_a { &va } else { &vb };
                let terms = [
                    (Some(&va), 1, Side::Ours),
                    (Some(&vb), 1, Side::Theirs),
                    (vo, -1, Side::Base),
                    (Some(kept), -1, Side::Ours),
                ];
                for (rec, sign, side) in terms {
                    if let Some(rec) = rec {
                        contribution(spec, caps, &root, rec, sign, &mut acc).map_err(|e| invalid(side, &root, e))?;
                    }
                }
                work.push((k.clone(), acc));
            }
            merged_recs.push((k, if take_a { va } else { vb }));
        }
        merged_recs.extend(b_recs.drain().filter(|(k, _)| !o_recs.contains_key(k)));
        // Sum in key order so that float totals do not depend on hash order.
        work.sort_by(|x, y| x.0.cmp(&y.0));
        for (path, n) in work.into_iter().flat_map(|(_, list)| list) {
            let slot = deltas.entry(path.clone()).or_insert(Num::ZERO);
            *slot = slot.plus(n).map_err(|_| MergeError::Overflow { path: path_text(&path) })?;
        }
    }

    let [base, ours, theirs] = docs;
    let mut w = Walker { profile, env, deltas, conflicts: Vec::new() };
    let mut path = Vec::new();
    let mut value =
        w.node(&mut path, base.as_ref(), ours.as_ref(), theirs.as_ref())?.unwrap_or_else(|| (profile.empty)());
    // Counters that only the records know of (inputs whose aggregates lacked them).
    let mut rest: Vec<Path> = w.deltas.keys().cloned().collect();
    rest.sort();
    for p in rest {
        if let Some(v) = w.counter(&p, None, None, None)? {
            set_path(&mut value, &p, v);
        }
    }
    if let Some(spec) = &profile.records {
        place_records(&mut value, spec, &root, &containers, merged_recs);
    }
    if let Some(finish) = profile.finish {
        let r = at_path_mut(&mut value, &root).expect("root exists");
        finish(r).map_err(|e| invalid(Side::Ours, &root, e))?;
    }
    Ok(Outcome { value, conflicts: w.conflicts })
}

fn invalid(side: Side, path: &[Seg], e: impl fmt::Display) -> MergeError {
    MergeError::Invalid { side, path: path_text(path), message: e.to_string() }
}

fn at_path_mut<'v>(v: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(k)?,
            Seg::Elem { field, id } => cur
                .as_array_mut()?
                .iter_mut()
                .find(|e| e.get(field).is_some_and(|x| id_text(x).as_deref() == Some(id.as_str())))?,
        };
    }
    Some(cur)
}

/// Sets `value` at `path`, creating objects on the way; used for paths no input had.
pub fn set_path(root: &mut Value, path: &[Seg], value: Value) {
    let Some((last, init)) = path.split_last() else {
        *root = value;
        return;
    };
    let mut cur = root;
    for seg in init {
        cur = match seg {
            Seg::Key(k) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                cur.as_object_mut().expect("object").entry(k.clone()).or_insert_with(|| Value::Object(Map::new()))
            }
            Seg::Elem { .. } => match at_path_mut(cur, std::slice::from_ref(seg)) {
                Some(c) => c,
                None => return,
            },
        };
    }
    match last {
        Seg::Key(k) => {
            if let Some(m) = cur.as_object_mut() {
                m.insert(k.clone(), value);
            }
        }
        Seg::Elem { .. } => {
            if let Some(slot) = at_path_mut(cur, std::slice::from_ref(last)) {
                *slot = value;
            }
        }
    }
}

/// Removes the value at `path` (used to build the base/theirs variants of a conflict).
pub fn remove_path(root: &mut Value, path: &[Seg]) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let Some(parent) = at_path_mut(root, init) else {
        return;
    };
    match (last, parent) {
        (Seg::Key(k), Value::Object(m)) => {
            m.shift_remove(k);
        }
        (Seg::Elem { field, id }, Value::Array(a)) => {
            a.retain(|e| e.get(field).and_then(id_text).as_deref() != Some(id.as_str()));
        }
        _ => {}
    }
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Takes the records out of `root` (leaving empty arrays), keyed by identity.
fn take_records(
    root: &mut Value,
    spec: &RecordSpec,
    side: Side,
    prefix: &[Seg],
    containers: &mut Containers,
) -> Result<HashMap<RecKey, Value>, MergeError> {
    let mut out = HashMap::new();
    let mut caps = Vec::new();
    let mut path = prefix.to_vec();
    take_at(root, spec.container, spec, side, &mut caps, &mut path, containers, &mut out)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn take_at(
    v: &mut Value,
    pattern: &[&str],
    spec: &RecordSpec,
    side: Side,
    caps: &mut Vec<String>,
    path: &mut Path,
    containers: &mut Containers,
    out: &mut HashMap<RecKey, Value>,
) -> Result<(), MergeError> {
    let Some((first, rest)) = pattern.split_first() else {
        let list = match v {
            Value::Array(a) => std::mem::take(a),
            Value::Null => return Ok(()),
            _ => return Err(invalid(side, path, "expected an array of records")),
        };
        let cid = containers.intern(caps);
        for (i, rec) in list.into_iter().enumerate() {
            if !rec.is_object() {
                path.push(Seg::Key(i.to_string()));
                let e = invalid(side, path, "expected a record object");
                return Err(e);
            }
            let id = (spec.identity)(caps, &rec).map_err(|e| {
                path.push(Seg::Key(i.to_string()));
                invalid(side, path, e)
            })?;
            // Two entries with one identity are one record (CLIProxyAPI's import agrees).
            out.entry((cid, id)).or_insert(rec);
        }
        return Ok(());
    };
    let Value::Object(map) = v else {
        return Err(invalid(side, path, "expected an object"));
    };
    if *first == "*" {
        for (k, child) in map.iter_mut() {
            caps.push(k.clone());
            path.push(Seg::Key(k.clone()));
            take_at(child, rest, spec, side, caps, path, containers, out)?;
            path.pop();
            caps.pop();
        }
    } else if let Some(child) = map.get_mut(*first) {
        path.push(Seg::Key((*first).to_string()));
        take_at(child, rest, spec, side, caps, path, containers, out)?;
        path.pop();
    }
    Ok(())
}

/// Of two versions of one record, whether to keep ours: the changed one wins, and if
/// both changed, a choice that does not depend on which side is ours.
fn prefer_ours(o: Option<&Value>, a: &Value, b: &Value) -> bool {
    if a == b || o == Some(b) {
        true
    } else if o == Some(a) {
        false
    } else {
        canonical(a) >= canonical(b)
    }
}

/// Adds `sign` × what `rec` contributes to each counter path into `acc`.
fn contribution(
    spec: &RecordSpec,
    caps: &[String],
    root: &[Seg],
    rec: &Value,
    sign: i8,
    acc: &mut Vec<(Path, Num)>,
) -> Result<(), FieldError> {
    let mut overflow = false;
    (spec.contribute)(caps, rec, &mut |p: &[&str], n: Num| {
        let n = if sign < 0 { n.negated() } else { n };
        let same = |q: &Path| {
            q.len() == root.len() + p.len()
                && q[root.len()..].iter().zip(p).all(|(s, k)| matches!(s, Seg::Key(x) if x == k))
        };
        match acc.iter_mut().find(|(q, _)| same(q)) {
            Some((_, slot)) => match slot.plus(n) {
                Ok(v) => *slot = v,
                Err(_) => overflow = true,
            },
            None => {
                let mut path = root.to_vec();
                path.extend(p.iter().map(|s| Seg::Key((*s).to_string())));
                acc.push((path, n));
            }
        }
    })?;
    if overflow {
        return Err(FieldError::new("tokens", "counts that fit 64 bits"));
    }
    Ok(())
}

fn place_records(
    value: &mut Value,
    spec: &RecordSpec,
    root: &[Seg],
    containers: &Containers,
    recs: Vec<(RecKey, Value)>,
) {
    let mut groups: Vec<Vec<(RecKey, Value)>> = vec![Vec::new(); containers.captures.len()];
    for (k, v) in recs {
        groups[k.0 as usize].push((k, v));
    }
    let keep = {
        let r = at_path_mut(value, root).expect("root exists");
        (spec.keep_newest)(r)
    };
    for (cid, mut group) in groups.into_iter().enumerate() {
        group.sort_by_cached_key(|(k, v)| ((spec.time)(v), k.1.clone()));
        if let Some(keep) = keep {
            if group.len() > keep {
                let excess = group.len() - keep;
                group.drain(..excess);
            }
        }
        let mut path = root.to_vec();
        let mut caps = containers.captures[cid].iter();
        for seg in spec.container {
            let key = if *seg == "*" { caps.next().expect("one capture per *").clone() } else { (*seg).to_string() };
            path.push(Seg::Key(key));
        }
        let exists = at_path_mut(value, &path).is_some();
        if group.is_empty() && !exists {
            continue;
        }
        set_path(value, &path, Value::Array(group.into_iter().map(|(_, v)| v).collect()));
    }
}

/// The walk over the documents with their records taken out.
struct Walker<'a> {
    profile: &'a Profile,
    env: Option<&'static str>,
    /// Per counter path, what records both sides hold add beyond counting them once.
    deltas: HashMap<Path, Num>,
    conflicts: Vec<Conflict>,
}

/// What to do at a path once rules and inference have spoken.
enum Plan {
    Kind(Kind),
    Array,
}

const ID_FIELDS: [&str; 5] = ["id", "uuid", "key", "label", "date"];

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
        if rel.is_empty() {
            return Kind::Object;
        }
        rules
            .iter()
            .find(|r| {
                r.pattern.len() == rel.len()
                    && r.pattern.iter().zip(rel).all(|(p, s)| {
                        *p == "*"
                            || match s {
                                Seg::Key(k) => k == p,
                                Seg::Elem { id, .. } => id == p,
                            }
                    })
            })
            .map_or(Kind::Infer, |r| r.kind)
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

    fn node(
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
        match v.and_then(Num::from_value) {
            None => Ok(Num::ZERO),
            Some(Ok(n)) => Ok(n),
            Some(Err(_)) => Err(invalid(side, path, "a number too large to count exactly (beyond 64-bit integers)")),
        }
    }

    fn counter(
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
fn name_kind(name: &str) -> Option<Kind> {
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
fn cmp_time(x: &Value, y: &Value) -> Ordering {
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
fn identity_field(lists: &[Option<&Vec<Value>>; 3]) -> Option<&'static str> {
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
/// their first entry so that swapping ours and theirs gives the same result.
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
    let groups = if ga.first() <= gb.first() || gb.is_empty() { [ga, gb] } else { [gb, ga] };
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
fn scalar_union(lists: [Option<&Vec<Value>>; 3]) -> Vec<Value> {
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

/// A problem `check` reports: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub message: String,
}

/// Validates one document: types (by merging it with itself), counters that fall short of
/// what their records contribute, and the profile's own invariants.
pub fn check(profile: &Profile, doc: &Value) -> Result<Vec<Finding>, MergeError> {
    merge(profile, Some(doc.clone()), Some(doc.clone()), Some(doc.clone()))?;
    let mut findings = Vec::new();
    if let Some(spec) = &profile.records {
        let mut copy = doc.clone();
        let env = profile.envelope.filter(|(_, is_env)| is_env(doc)).map(|(k, _)| k);
        let root: Path = env.map(|k| vec![Seg::Key(k.to_string())]).unwrap_or_default();
        let mut containers = Containers::default();
        let r = at_path_mut(&mut copy, &root).expect("root exists");
        let recs = take_records(r, spec, Side::Ours, &root, &mut containers)?;
        let mut keys: Vec<&RecKey> = recs.keys().collect();
        keys.sort();
        let mut explained: HashMap<Path, Num> = HashMap::new();
        for k in keys {
            let mut list = Vec::new();
            contribution(spec, &containers.captures[k.0 as usize], &root, &recs[k], 1, &mut list)
                .map_err(|e| invalid(Side::Ours, &root, e))?;
            for (p, n) in list {
                let slot = explained.entry(p).or_insert(Num::ZERO);
                *slot = slot.plus(n).map_err(|_| MergeError::Overflow { path: path_text(&root) })?;
            }
        }
        let mut paths: Vec<&Path> = explained.keys().collect();
        paths.sort();
        for p in paths {
            let want = explained[p];
            let mut cur = Some(doc);
            for seg in p {
                cur = cur.and_then(|c| match seg {
                    Seg::Key(k) => c.get(k),
                    Seg::Elem { .. } => None,
                });
            }
            let have = cur.and_then(Num::from_value).and_then(Result::ok).unwrap_or(Num::ZERO);
            if have.as_f64() + 1e-9 * want.as_f64().abs() < want.as_f64() {
                let show = |n: Num| n.to_value().map(|v| v.to_string()).unwrap_or_default();
                findings.push(Finding {
                    path: path_text(p),
                    message: format!("is {} but its records add up to {}", show(have), show(want)),
                });
            }
        }
    }
    (profile.invariants)(doc, &mut |path, message| findings.push(Finding { path: format!("$.{path}"), message }));
    Ok(findings)
}

/// The identities of a document's records (for tests and reports); empty for profiles
/// without records.
pub fn record_ids(profile: &Profile, doc: &Value) -> Result<HashSet<String>, MergeError> {
    let Some(spec) = &profile.records else { return Ok(HashSet::new()) };
    let mut copy = doc.clone();
    let env = profile.envelope.filter(|(_, is_env)| is_env(doc)).map(|(k, _)| k);
    let root: Path = env.map(|k| vec![Seg::Key(k.to_string())]).unwrap_or_default();
    let mut containers = Containers::default();
    let Some(r) = at_path_mut(&mut copy, &root) else { return Ok(HashSet::new()) };
    let recs = take_records(r, spec, Side::Ours, &root, &mut containers)?;
    Ok(recs
        .into_keys()
        .map(|(c, id)| format!("{}\u{1e}{id}", containers.captures[c as usize].join("\u{1f}")))
        .collect())
}
