//! Parsing an input for the merge. Everything but the records becomes a small
//! `serde_json::Value` (the skeleton); the arrays where a profile keeps its records are
//! captured as raw JSON slices of the input. Records are most of a usage file: keeping
//! them as text avoids building, hashing, comparing and freeing a tree per record, and
//! lets the output copy them back byte for byte.

use crate::json::{self, Layout, Problem};
use crate::profile::{self, Profile};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// A record container pattern, relative to the top of the document.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub profile: &'static str,
    pub segs: Vec<&'static str>,
    /// 1 when the pattern starts with the profile's envelope key.
    pub prefix: usize,
}

/// A record array found in an input.
#[derive(Debug)]
pub struct RawContainer<'a> {
    pub pattern: usize,
    /// Keys from the top of the document to the array.
    pub path: Vec<String>,
    pub records: Vec<&'a RawValue>,
}

/// A parsed input: the skeleton, the record arrays, and how the text was laid out.
#[derive(Debug)]
pub struct Input<'a> {
    pub skeleton: Value,
    pub containers: Vec<RawContainer<'a>>,
    pub patterns: Vec<Pattern>,
    pub layout: Layout,
}

/// The container patterns of `only`, or of every profile.
fn patterns(only: Option<&Profile>) -> Vec<Pattern> {
    let mut out = Vec::new();
    for p in profile::all().into_iter().filter(|p| only.is_none_or(|o| o.name == p.name)) {
        let Some(spec) = &p.records else { continue };
        out.push(Pattern { profile: p.name, segs: spec.container.to_vec(), prefix: 0 });
        if let Some((key, _)) = p.envelope {
            let mut segs = vec![key];
            segs.extend_from_slice(spec.container);
            out.push(Pattern { profile: p.name, segs, prefix: 1 });
        }
    }
    out
}

impl<'a> Input<'a> {
    /// Parses `bytes`; with `profile`, only its record containers are captured.
    pub fn parse(bytes: &'a [u8], profile: Option<&Profile>) -> Result<Input<'a>, Problem> {
        let body = json::body(bytes)?;
        let text = std::str::from_utf8(body).map_err(|_| json::failure(body, None))?;
        let patterns = patterns(profile);
        let mut ctx = Ctx { patterns: &patterns, path: Vec::new(), out: Vec::new() };
        let mut de = serde_json::Deserializer::from_str(text);
        let active: Vec<(usize, usize)> = (0..patterns.len()).map(|p| (p, 0)).collect();
        let parsed = NodeSeed { ctx: &mut ctx, active }.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
        let skeleton = parsed.map_err(|e| json::failure(body, Some(&e)))?;
        let containers = ctx.out;
        Ok(Input { skeleton, containers, patterns, layout: Layout::detect(bytes) })
    }

    /// Keeps the containers of `profile` and puts every other one back into the skeleton
    /// as plain values (they were captured before the profile was known).
    pub fn settle(&mut self, profile: &Profile) {
        let containers = std::mem::take(&mut self.containers);
        for c in containers {
            if self.patterns[c.pattern].profile == profile.name {
                self.containers.push(c);
                continue;
            }
            let values: Vec<Value> =
                c.records.iter().map(|r| serde_json::from_str(r.get()).expect("valid JSON parses")).collect();
            let mut cur = &mut self.skeleton;
            for k in &c.path {
                cur = cur.get_mut(k).expect("the container's path exists");
            }
            *cur = Value::Array(values);
        }
    }

    /// The whole document as a value (records included).
    pub fn to_value(&self) -> Value {
        let mut v = self.skeleton.clone();
        for c in &self.containers {
            let mut cur = &mut v;
            for k in &c.path {
                cur = cur.get_mut(k).expect("the container's path exists");
            }
            *cur = Value::Array(c.records.iter().map(|r| serde_json::from_str(r.get()).expect("valid JSON")).collect());
        }
        v
    }
}

struct Ctx<'p, 'a> {
    patterns: &'p [Pattern],
    path: Vec<String>,
    out: Vec<RawContainer<'a>>,
}

/// A node on the way to a record container: `active` holds (pattern, position) pairs
/// still matching this path.
struct NodeSeed<'c, 'p, 'a> {
    ctx: &'c mut Ctx<'p, 'a>,
    active: Vec<(usize, usize)>,
}

impl<'de, 'c, 'p> DeserializeSeed<'de> for NodeSeed<'c, 'p, 'de> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'c, 'p> Visitor<'de> for NodeSeed<'c, 'p, 'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Value, M::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // A repeated key: the last one wins, as in the skeleton (and as serde_json
                // and Go read it), so records captured under the earlier one are dropped.
                let depth = self.ctx.path.len();
                let prefix = &self.ctx.path;
                self.ctx
                    .out
                    .retain(|c| !(c.path.len() > depth && c.path[..depth] == prefix[..] && c.path[depth] == key));
            }
            let pats = self.ctx.patterns;
            let child: Vec<(usize, usize)> = self
                .active
                .iter()
                .filter(|&&(p, pos)| pats[p].segs[pos] == "*" || pats[p].segs[pos] == key)
                .map(|&(p, pos)| (p, pos + 1))
                .collect();
            let done = child.iter().find(|&&(p, pos)| pos == pats[p].segs.len()).map(|&(p, _)| p);
            let value = if let Some(p) = done {
                let raw: &'de RawValue = map.next_value()?;
                match serde_json::from_str::<Vec<&'de RawValue>>(raw.get()) {
                    Ok(records) => {
                        let mut path = self.ctx.path.clone();
                        path.push(key.clone());
                        self.ctx.out.push(RawContainer { pattern: p, path, records });
                        Value::Array(Vec::new())
                    }
                    // Not an array: the engine reports the wrong type at this path.
                    Err(_) => serde_json::from_str(raw.get()).map_err(de::Error::custom)?,
                }
            } else if child.is_empty() {
                map.next_value::<Value>()?
            } else {
                self.ctx.path.push(key.clone());
                let v = map.next_value_seed(NodeSeed { ctx: &mut *self.ctx, active: child })?;
                self.ctx.path.pop();
                v
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_captured_raw_and_the_rest_is_a_skeleton() {
        let text = br#"{"total_requests": 2, "apis": {"k": {"models": {"m": {"details": [{"a": 1}, {"b": [2]}]}}}}}"#;
        let input = Input::parse(text, None).unwrap();
        assert_eq!(input.containers.len(), 1);
        let c = &input.containers[0];
        assert_eq!(c.path, ["apis", "k", "models", "m", "details"]);
        assert_eq!(c.records.iter().map(|r| r.get()).collect::<Vec<_>>(), [r#"{"a": 1}"#, r#"{"b": [2]}"#]);
        assert_eq!(input.skeleton["apis"]["k"]["models"]["m"]["details"], Value::Array(vec![]));
        assert_eq!(input.to_value(), serde_json::from_slice::<Value>(text).unwrap());
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value_and_its_records_only() {
        // The records under an earlier copy of a key are not records of the document: a
        // JSON reader (serde_json's, Go's) keeps the last value.
        let text = br#"{"apis": {"k": {"models": {"m": {"details": [{"a": 1}]}}}}, "apis": {"k": {"models": {"m": {"details": [{"b": 2}], "details": [{"c": 3}]}}}}}"#;
        let input = Input::parse(text, None).unwrap();
        let got: Vec<_> = input.containers.iter().flat_map(|c| c.records.iter().map(|r| r.get())).collect();
        assert_eq!(got, [r#"{"c": 3}"#]);
        assert_eq!(input.to_value(), serde_json::from_slice::<Value>(text).unwrap());
    }

    #[test]
    fn settle_returns_foreign_containers_to_the_skeleton() {
        let text = br#"{"records": [{"x": 1}], "n": 1}"#;
        let mut input = Input::parse(text, None).unwrap();
        input.settle(profile::generic());
        assert!(input.containers.is_empty());
        assert_eq!(input.skeleton, serde_json::json!({"records": [{"x": 1}], "n": 1}));
    }
}
