//! The merge engine: three JSON values in, one value out. It knows nothing of git or files.
//!
//! Records (identified by the profile) merge as sets: what either side has, minus what
//! either side deleted. Every counter is read as the part its records explain plus a
//! residual; residuals merge 3-way and the merged records add their part back (SPEC §4).
//! Only records whose presence or content differs between the versions change a counter,
//! so the cost beyond parsing is proportional to the change, not to the file.

mod input;
mod render;
mod walk;

pub use input::Input;
pub(crate) use walk::{cmp_time, identity_field, name_kind, rule_kind, scalar_union};

use crate::json::{canonical, Layout};
use crate::num::Num;
use crate::profile::{FieldError, Instant, Profile, RecordSpec};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use walk::Walker;

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

/// A merged document: the skeleton (ours at every conflicting path) and the merged
/// records of each container, rendered into bytes by [`Outcome::render`].
#[derive(Debug)]
pub struct Outcome<'a> {
    pub skeleton: Value,
    pub conflicts: Vec<Conflict>,
    placed: Vec<Placed<'a>>,
    layout: Layout,
}

/// The merged records of one container, in output order.
#[derive(Debug)]
struct Placed<'a> {
    path: Vec<String>,
    records: Vec<Rec<'a>>,
}

/// A record as found in one input: its text, and whether that text can be copied into the
/// output as it is (same layout and depth as the output).
#[derive(Clone, Copy, Debug)]
struct Rec<'a> {
    raw: &'a RawValue,
    time: Option<Instant>,
    verbatim: bool,
}

type RecKey = (u32, String);

/// Containers are interned so that a record key is small and the same across inputs.
#[derive(Default)]
struct Containers {
    captures: Vec<Vec<String>>,
    ids: HashMap<Vec<String>, u32>,
}

impl Containers {
    fn intern(&mut self, caps: Vec<String>) -> u32 {
        if let Some(&id) = self.ids.get(&caps) {
            return id;
        }
        let id = self.captures.len() as u32;
        self.captures.push(caps.clone());
        self.ids.insert(caps, id);
        id
    }
}

const SIDES: [Side; 3] = [Side::Base, Side::Ours, Side::Theirs];

/// Merges parsed inputs (base, ours, theirs); `None` is the profile's empty document.
/// Ours decides the layout of the output.
pub fn merge<'a>(profile: &Profile, inputs: [Option<Input<'a>>; 3]) -> Result<Outcome<'a>, MergeError> {
    merge_with(profile, inputs, false)
}

/// Ingests an application's write (theirs) into the ledger (ours) against the version the
/// application started from (base): like `merge`, except that a record the application
/// no longer lists is not a deletion — a record leaves the ledger only when the ledger
/// itself drops it (SPEC §5b).
pub fn ingest<'a>(profile: &Profile, inputs: [Option<Input<'a>>; 3]) -> Result<Outcome<'a>, MergeError> {
    merge_with(profile, inputs, true)
}

fn merge_with<'a>(profile: &Profile, inputs: [Option<Input<'a>>; 3], ingest: bool) -> Result<Outcome<'a>, MergeError> {
    let layout = inputs[1].as_ref().or(inputs[2].as_ref()).map(|i| i.layout.clone()).unwrap_or_default();
    let mut inputs = inputs;
    for i in inputs.iter_mut().flatten() {
        i.settle(profile);
    }
    // A bare CLIProxyAPI snapshot merged with an export envelope is wrapped to match.
    let env =
        profile.envelope.and_then(|(key, is_env)| inputs.iter().flatten().any(|i| is_env(&i.skeleton)).then_some(key));
    let mut wrapped = [false; 3];
    if let (Some(key), Some((_, is_env))) = (env, profile.envelope) {
        for (i, w) in inputs.iter_mut().zip(wrapped.iter_mut()) {
            if let Some(i) = i {
                if !is_env(&i.skeleton) {
                    let inner = std::mem::take(&mut i.skeleton);
                    i.skeleton = Value::Object(Map::from_iter([(key.to_string(), inner)]));
                    for c in &mut i.containers {
                        c.path.insert(0, key.to_string());
                    }
                    *w = true;
                }
            }
        }
    }
    if profile.strict {
        for (i, side) in inputs.iter().zip(SIDES) {
            if let Some(i) = i {
                if !i.skeleton.is_object() {
                    return Err(invalid(side, &[], format!("expected a JSON object for a {} file", profile.name)));
                }
            }
        }
    }
    let root: Path = env.map(|k| vec![Seg::Key(k.to_string())]).unwrap_or_default();

    let mut containers = Containers::default();
    let mut records: [HashMap<RecKey, Rec<'a>>; 3] = Default::default();
    if let Some(spec) = &profile.records {
        for (((input, side), recs), was_wrapped) in inputs.iter().zip(SIDES).zip(records.iter_mut()).zip(wrapped) {
            if let Some(input) = input {
                let same_layout = input.layout.same_records(&layout) && !was_wrapped;
                *recs = index_records(input, spec, side, &root, same_layout, &mut containers)?;
            }
        }
    }
    let [o_recs, mut a_recs, mut b_recs] = records;
    let mut merged: Vec<(RecKey, Rec<'a>)> = Vec::new();
    let mut deltas: HashMap<Path, Num> = HashMap::new();
    if let Some(spec) = &profile.records {
        // A + B − O counts every request once, except those both sides hold: correct by
        // c(A_k) + c(B_k) − c(O_k) − c(R_k) for each such record k. Records dropped on
        // either side (trimmed) keep their counts, as every profile's aggregates do.
        let mut work: Vec<(RecKey, Vec<(Path, Num)>)> = Vec::new();
        for (k, va) in a_recs.drain() {
            let vo = o_recs.get(&k);
            let Some(vb) = b_recs.remove(&k) else {
                if vo.is_none() || ingest {
                    merged.push((k, va));
                }
                continue;
            };
            let take_a = prefer_ours(vo.map(|r| r.raw), va.raw, vb.raw);
            let trivial = vo.is_some()
                && (spec.contribution_by_identity || (vo.is_some_and(|o| same(o.raw, va.raw) && same(o.raw, vb.raw))));
            if !trivial {
                let caps = &containers.captures[k.0 as usize];
                let mut acc = Vec::new();
                let kept = if take_a { va } else { vb };
                let terms = [
                    (Some(va), 1, Side::Ours),
                    (Some(vb), 1, Side::Theirs),
                    (vo.copied(), -1, Side::Base),
                    (Some(kept), -1, Side::Ours),
                ];
                for (rec, sign, side) in terms {
                    if let Some(rec) = rec {
                        contribution(spec, caps, &root, rec.raw, sign, &mut acc)
                            .map_err(|e| invalid(side, &container_path(&root, spec, caps), e))?;
                    }
                }
                work.push((k.clone(), acc));
            }
            merged.push((k, if take_a { va } else { vb }));
        }
        merged.extend(b_recs.drain().filter(|(k, _)| !o_recs.contains_key(k)));
        // Sum in key order so that float totals do not depend on hash order.
        work.sort_by(|x, y| x.0.cmp(&y.0));
        for (path, n) in work.into_iter().flat_map(|(_, list)| list) {
            let slot = deltas.entry(path.clone()).or_insert(Num::ZERO);
            *slot = slot.plus(n).map_err(|_| MergeError::Overflow { path: path_text(&path) })?;
        }
    }

    let [base, ours, theirs] = inputs.map(|i| i.map(|i| i.skeleton));
    let mut w = Walker { profile, env, deltas, conflicts: Vec::new() };
    let mut path = Vec::new();
    let mut skeleton = w.node(&mut path, base.as_ref(), ours.as_ref(), theirs.as_ref())?.unwrap_or_else(|| {
        let empty = (profile.empty)();
        match env {
            Some(k) => Value::Object(Map::from_iter([(k.to_string(), empty)])),
            None => empty,
        }
    });
    // Counters that only the records know of (inputs whose aggregates lacked them).
    let mut rest: Vec<Path> = w.deltas.keys().cloned().collect();
    rest.sort();
    for p in rest {
        if let Some(v) = w.counter(&p, None, None, None)? {
            set_path(&mut skeleton, &p, v);
        }
    }
    let placed = match &profile.records {
        Some(spec) => place(&mut skeleton, spec, &root, &containers, merged),
        None => Vec::new(),
    };
    if let (Some(finish), Some(spec)) = (profile.finish, &profile.records) {
        let _ = spec;
        let texts: Vec<&str> = placed.iter().flat_map(|p| p.records.iter().map(|r| r.raw.get())).collect();
        let r = at_path_mut(&mut skeleton, &root).expect("root exists");
        finish(r, &texts).map_err(|e| invalid(Side::Ours, &root, e))?;
    }
    Ok(Outcome { skeleton, conflicts: w.conflicts, placed, layout })
}

/// Whether two records are the same: equal text, or equal values.
fn same(a: &RawValue, b: &RawValue) -> bool {
    a.get() == b.get() || serde_json::from_str::<Value>(a.get()).ok() == serde_json::from_str::<Value>(b.get()).ok()
}

/// Identities of an input's records, checked against the profile.
fn index_records<'a>(
    input: &Input<'a>,
    spec: &RecordSpec,
    side: Side,
    root: &[Seg],
    verbatim: bool,
    containers: &mut Containers,
) -> Result<HashMap<RecKey, Rec<'a>>, MergeError> {
    let n: usize = input.containers.iter().map(|c| c.records.len()).sum();
    let mut out = HashMap::with_capacity(n);
    for c in &input.containers {
        // Captures: the keys standing where the pattern has `*`, relative to the root.
        let rel = &c.path[root.len()..];
        let caps: Vec<String> =
            spec.container.iter().zip(rel).filter(|(p, _)| **p == "*").map(|(_, k)| k.clone()).collect();
        let cid = containers.intern(caps);
        let caps = &containers.captures[cid as usize];
        for (i, raw) in c.records.iter().enumerate() {
            let (id, time) = (spec.identity)(caps, raw.get()).map_err(|e| {
                let mut p: Path = c.path.iter().map(|k| Seg::Key(k.clone())).collect();
                p.push(Seg::Key(i.to_string()));
                invalid(side, &p, e)
            })?;
            // Records are a multiset (SPEC §4.5c): two entries with one identity are two
            // requests that happened to look alike. The n-th copy gets a key of its own, so
            // a merge keeps as many copies as the side with more, and a side that drops one
            // of them deletes that one.
            let mut key = (cid, id);
            if out.contains_key(&key) {
                let first = key.1.clone();
                let mut n = 1;
                while out.contains_key(&key) {
                    key.1 = format!("{first}\u{1f}#{n}");
                    n += 1;
                }
            }
            out.insert(key, Rec { raw, time, verbatim });
        }
    }
    Ok(out)
}

/// Where a record of `caps` lives: `root`, then the profile's container with its wildcards
/// filled in (`apis.k.models.m.details`), for messages that name a bad record's place.
fn container_path(root: &[Seg], spec: &RecordSpec, caps: &[String]) -> Path {
    let mut caps = caps.iter();
    let mut path = root.to_vec();
    for seg in spec.container {
        let key = if *seg == "*" { caps.next().map_or("*", String::as_str) } else { seg };
        path.push(Seg::Key(key.to_string()));
    }
    path
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

pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Of two versions of one record, whether to keep ours: the changed one wins, and if
/// both changed, a choice that does not depend on which side is ours.
fn prefer_ours(o: Option<&RawValue>, a: &RawValue, b: &RawValue) -> bool {
    if a.get() == b.get() || same(a, b) || o.is_some_and(|o| same(o, b)) {
        true
    } else if o.is_some_and(|o| same(o, a)) {
        false
    } else {
        let canon = |r: &RawValue| serde_json::from_str::<Value>(r.get()).map(|v| canonical(&v)).unwrap_or_default();
        canon(a) >= canon(b)
    }
}

/// Adds `sign` × what `rec` contributes to each counter path into `acc`.
fn contribution(
    spec: &RecordSpec,
    caps: &[String],
    root: &[Seg],
    raw: &RawValue,
    sign: i8,
    acc: &mut Vec<(Path, Num)>,
) -> Result<(), FieldError> {
    let rec: Value = serde_json::from_str(raw.get()).map_err(|e| FieldError::new("record", e.to_string()))?;
    let mut overflow = false;
    (spec.contribute)(caps, &rec, &mut |p: &[&str], n: Num| {
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

/// Orders each container's merged records (by time, then identity), keeps the newest as
/// the profile asks, and marks where they go in the skeleton.
fn place<'a>(
    skeleton: &mut Value,
    spec: &RecordSpec,
    root: &[Seg],
    containers: &Containers,
    recs: Vec<(RecKey, Rec<'a>)>,
) -> Vec<Placed<'a>> {
    let mut groups: Vec<Vec<(RecKey, Rec<'a>)>> = (0..containers.captures.len()).map(|_| Vec::new()).collect();
    for (k, r) in recs {
        groups[k.0 as usize].push((k, r));
    }
    let keep = (spec.keep_newest)(at_path_mut(skeleton, root).expect("root exists"));
    let mut placed = Vec::new();
    for (cid, mut group) in groups.into_iter().enumerate() {
        group.sort_unstable_by(|(ka, a), (kb, b)| a.time.cmp(&b.time).then_with(|| ka.1.cmp(&kb.1)));
        if let Some(keep) = keep {
            if group.len() > keep {
                let excess = group.len() - keep;
                group.drain(..excess);
            }
        }
        let mut path: Vec<String> = root
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Elem { .. } => unreachable!("roots are keys"),
            })
            .collect();
        let mut caps = containers.captures[cid].iter();
        for seg in spec.container {
            path.push(if *seg == "*" { caps.next().expect("one capture per *").clone() } else { (*seg).to_string() });
        }
        let segs: Path = path.iter().map(|k| Seg::Key(k.clone())).collect();
        if group.is_empty() && at_path_mut(skeleton, &segs).is_none() {
            continue;
        }
        set_path(skeleton, &segs, Value::Array(Vec::new()));
        placed.push(Placed { path, records: group.into_iter().map(|(_, r)| r).collect() });
    }
    placed
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
    let text = serde_json::to_vec(doc).expect("a value serialises");
    let parse = || Input::parse(&text, Some(profile)).map_err(|p| invalid(Side::Ours, &[], p));
    merge(profile, [Some(parse()?), Some(parse()?), Some(parse()?)])?;
    let mut findings = Vec::new();
    if let Some(spec) = &profile.records {
        let (recs, containers, root) = records_of(profile, spec, &text)?;
        let mut keys: Vec<&RecKey> = recs.keys().collect();
        keys.sort();
        let mut explained: HashMap<Path, Num> = HashMap::new();
        for k in keys {
            let mut list = Vec::new();
            let caps = &containers.captures[k.0 as usize];
            contribution(spec, caps, &root, recs[k].raw, 1, &mut list)
                .map_err(|e| invalid(Side::Ours, &container_path(&root, spec, caps), e))?;
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

type Indexed<'t> = (HashMap<RecKey, Rec<'t>>, Containers, Path);

fn records_of<'t>(profile: &Profile, spec: &RecordSpec, text: &'t [u8]) -> Result<Indexed<'t>, MergeError> {
    let mut input = Input::parse(text, Some(profile)).map_err(|p| invalid(Side::Ours, &[], p))?;
    input.settle(profile);
    let env = profile.envelope.filter(|(_, is_env)| is_env(&input.skeleton)).map(|(k, _)| k);
    let root: Path = env.map(|k| vec![Seg::Key(k.to_string())]).unwrap_or_default();
    let mut containers = Containers::default();
    let recs = index_records(&input, spec, Side::Ours, &root, true, &mut containers)?;
    Ok((recs, containers, root))
}

/// The identities of a document's records (for tests and reports); empty for profiles
/// without records.
pub fn record_ids(profile: &Profile, doc: &Value) -> Result<HashSet<String>, MergeError> {
    let Some(spec) = &profile.records else { return Ok(HashSet::new()) };
    let text = serde_json::to_vec(doc).expect("a value serialises");
    let (recs, containers, _) = records_of(profile, spec, &text)?;
    Ok(recs
        .into_keys()
        .map(|(c, id)| format!("{}\u{1e}{id}", containers.captures[c as usize].join("\u{1f}")))
        .collect())
}

/// Merges values rather than files (tests, embedding): `None` is the empty document.
pub fn merge_values(
    profile: &Profile,
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
) -> Result<(Value, Vec<Conflict>), MergeError> {
    let texts = [base, ours, theirs].map(|v| v.map(|v| serde_json::to_vec_pretty(v).expect("a value serialises")));
    let mut inputs: [Option<Input<'_>>; 3] = [None, None, None];
    for ((slot, text), side) in inputs.iter_mut().zip(&texts).zip(SIDES) {
        if let Some(t) = text {
            *slot = Some(Input::parse(t, Some(profile)).map_err(|p| invalid(side, &[], p))?);
        }
    }
    let out = merge(profile, inputs)?;
    Ok((out.to_value(), out.conflicts))
}
