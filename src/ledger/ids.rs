//! Event ids this device remembers (SPEC §4b.6): a retried event counts once, and a later
//! version of an event (a streamed message completed) replaces the earlier by the
//! difference. Kept for `tally.idHorizon` after they were last seen, in 256 bucket files
//! by hash, so a lookup reads one small file however many ids there are.

use super::state::StateDir;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// What is remembered of an event: where its first version counted and what its latest
/// version contributed, so that a later version adds only the difference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub id: String,
    /// The UTC day of the shard it counted in.
    #[serde(rename = "d")]
    pub day: String,
    /// Its native cell (hour, provider, api, model), if a native stream counted it.
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub cell: Vec<String>,
    /// Its total tokens: a version with a larger total supersedes it.
    #[serde(rename = "t")]
    pub total: u64,
    /// What it added to its cell, counter by counter.
    #[serde(rename = "a", default, skip_serializing_if = "Value::is_null")]
    pub amounts: Value,
    /// Days since the epoch when it was last seen (for the horizon).
    #[serde(rename = "s")]
    pub seen: i64,
    /// Remembered past the horizon ([`crate::event::remembered_for_good`]); once past it,
    /// without its cell and amounts (no later version is counted then).
    #[serde(rename = "k", default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
}

impl Remembered {
    /// Whether it is kept past the horizon without its amounts: a later version of it can
    /// no longer be counted by the difference, so it counts as seen.
    pub fn compacted(&self) -> bool {
        self.keep && self.amounts.is_null()
    }
}

pub struct Ids<'a> {
    state: &'a StateDir,
    horizon_days: i64,
    /// Days since the epoch, today: an entry last seen before the horizon is forgotten.
    today: i64,
}

fn bucket_of(id: &str) -> u8 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h >> 56) as u8
}

impl<'a> Ids<'a> {
    pub fn new(state: &'a StateDir, horizon_days: i64) -> Ids<'a> {
        Ids::on(state, horizon_days, super::today())
    }

    /// The ids as they stand on day `today` (days since the epoch).
    pub fn on(state: &'a StateDir, horizon_days: i64, today: i64) -> Ids<'a> {
        Ids { state, horizon_days, today }
    }

    fn bucket(&self, b: u8) -> PathBuf {
        self.state.ids_dir().join(format!("{b:02x}.jsonl"))
    }

    /// A bucket's text (empty when there is none).
    fn bucket_text(&self, b: u8) -> Result<String> {
        let p = self.bucket(b);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// The remembered entries among `ids`. An entry last seen before the horizon is
    /// forgotten whether or not its bucket was rewritten since (buckets drop such entries
    /// only when they are written).
    pub fn lookup<'i>(&self, ids: impl IntoIterator<Item = &'i str>) -> Result<HashMap<String, Remembered>> {
        let mut by_bucket: BTreeMap<u8, std::collections::HashSet<&str>> = BTreeMap::new();
        for id in ids {
            by_bucket.entry(bucket_of(id)).or_default().insert(id);
        }
        let mut out = HashMap::new();
        for (b, wanted) in by_bucket {
            let text = self.bucket_text(b)?;
            // Each line's id and day first (no values built); only a wanted line whole. A
            // line that does not parse (a damaged file) is forgotten, not fatal: the ids
            // only save work and double counts of retries.
            for line in text.lines() {
                let Ok(head) = serde_json::from_str::<Head>(line) else { continue };
                if !wanted.contains(&head.id.as_ref()) || (!head.kept() && head.seen < self.today - self.horizon_days) {
                    continue;
                }
                if let Ok(r) = serde_json::from_str::<Remembered>(line) {
                    out.insert(r.id.clone(), r);
                }
            }
        }
        Ok(out)
    }

    /// Remembers (or updates) entries; each bucket touched is rewritten atomically, without
    /// the entries last seen before the horizon (those kept for good lose their amounts).
    pub fn remember(&self, entries: Vec<Remembered>, today: i64) -> Result<()> {
        let mut by_bucket: BTreeMap<u8, Vec<Remembered>> = BTreeMap::new();
        for e in entries {
            by_bucket.entry(bucket_of(&e.id)).or_default().push(e);
        }
        if by_bucket.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(self.state.ids_dir()).map_err(|e| Error::io(self.state.ids_dir(), e))?;
        let mut durable = crate::fsutil::Durable::default();
        for (b, new) in by_bucket {
            // The lines kept as they are (by id, sorted), those past the horizon dropped,
            // the new ones in their place.
            let text = self.bucket_text(b)?;
            let mut lines: BTreeMap<String, String> = BTreeMap::new();
            for line in text.lines() {
                let Ok(head) = serde_json::from_str::<Head>(line) else { continue };
                if head.seen >= today - self.horizon_days || (head.keep && head.amounts.is_none()) {
                    lines.insert(head.id.into_owned(), line.to_string());
                } else if head.kept() {
                    let Ok(mut r) = serde_json::from_str::<Remembered>(line) else { continue };
                    (r.amounts, r.cell, r.keep) = (Value::Null, Vec::new(), true);
                    lines.insert(r.id.clone(), serde_json::to_string(&r).expect("serialises"));
                }
            }
            for e in new {
                lines.insert(e.id.clone(), serde_json::to_string(&e).expect("serialises"));
            }
            let mut text = String::with_capacity(text.len() + 256);
            for line in lines.values() {
                text.push_str(line);
                text.push('\n');
            }
            durable.write(&self.bucket(b), text.as_bytes())?;
        }
        durable.finish();
        Ok(())
    }
}

/// What a bucket's line is looked up and expired by, read without the rest.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "s")]
    seen: i64,
    #[serde(rename = "k", default)]
    keep: bool,
    #[serde(rename = "a", default)]
    amounts: Option<serde::de::IgnoredAny>,
}

impl Head<'_> {
    /// Kept past the horizon: flagged so, or an import's id written before the flag was.
    fn kept(&self) -> bool {
        self.keep || crate::event::remembered_for_good(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_ids_are_found_and_expire_after_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let ids = Ids::on(&state, 30, 100);
        let e = |id: &str, seen| Remembered {
            id: id.into(),
            day: "2026-11-01".into(),
            total: 5,
            seen,
            ..Default::default()
        };
        ids.remember(vec![e("a", 100), e("b", 100)], 100).unwrap();
        let found = ids.lookup(["a", "c"]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found["a"].total, 5);
        // 30 days later "a" is still remembered; 31 days later it is forgotten, before
        // anything rewrites its bucket.
        assert!(Ids::on(&state, 30, 130).lookup(["a"]).unwrap().contains_key("a"));
        let later = Ids::on(&state, 30, 131);
        assert!(later.lookup(["a", "b"]).unwrap().is_empty(), "forgotten after the horizon");
        later.remember(vec![e("a", 131)], 131).unwrap();
        assert!(later.lookup(["a"]).unwrap().contains_key("a"), "re-remembered");
    }

    #[test]
    fn ids_kept_for_good_outlive_the_horizon_without_their_amounts() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let id = "claude-code:msg_1:req_1";
        let kept = Remembered {
            id: id.into(),
            day: "2026-11-01".into(),
            cell: vec!["2026-11-01T10".into()],
            total: 5,
            amounts: serde_json::json!({"requests": 1}),
            seen: 100,
            keep: true,
        };
        let ids = Ids::on(&state, 30, 100);
        ids.remember(vec![kept.clone()], 100).unwrap();
        let later = Ids::on(&state, 30, 400);
        assert_eq!(later.lookup([id]).unwrap()[id], kept, "found as it was, past the horizon");
        // The bucket rewritten past the horizon: still there, compacted.
        let same_bucket = (0..).map(|i| format!("x{i}")).find(|x| bucket_of(x) == bucket_of(id)).unwrap();
        later.remember(vec![Remembered { id: same_bucket, seen: 400, ..Default::default() }], 400).unwrap();
        let found = &later.lookup([id]).unwrap()[id];
        assert!(found.compacted() && found.total == 5 && found.cell.is_empty(), "{found:?}");
        assert!(!kept.compacted());
        // An import's id written before the flag was (no `k`): kept and compacted alike.
        let old = "codex:s:10";
        let line = format!("{{\"id\":\"{old}\",\"d\":\"2026-11-01\",\"t\":10,\"a\":{{\"requests\":1}},\"s\":100}}\n");
        let bucket = state.ids_dir().join(format!("{:02x}.jsonl", bucket_of(old)));
        let mut text = std::fs::read_to_string(&bucket).unwrap_or_default();
        text.push_str(&line);
        std::fs::write(&bucket, text).unwrap();
        assert!(later.lookup([old]).unwrap().contains_key(old), "found past the horizon");
        let other = (0..).map(|i| format!("y{i}")).find(|x| bucket_of(x) == bucket_of(old)).unwrap();
        later.remember(vec![Remembered { id: other, seen: 400, ..Default::default() }], 400).unwrap();
        assert!(later.lookup([old]).unwrap()[old].compacted());
    }
}
