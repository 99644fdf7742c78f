//! A merge of three usage files as bytes: parse, pick the profile, run the engine, and
//! write the result laid out like ours. When values conflict (only `generic` has such),
//! it also renders the base and theirs variants so that a line-based 3-way merge of the
//! three texts puts markers around the conflicting lines only.

use crate::engine::{self, remove_path, set_path, Conflict, Input, MergeError, Side};
use crate::json::Problem;
use crate::profile::{self, Profile};
use serde_json::Value;

/// A merge result.
#[derive(Debug)]
pub struct Merged {
    pub profile: &'static Profile,
    /// The merged document (ours at conflicting paths), laid out like ours.
    pub output: Vec<u8>,
    pub conflicts: Vec<Conflict>,
    /// With conflicts: the (base, ours, theirs) texts to merge line by line.
    pub variants: Option<[Vec<u8>; 3]>,
}

/// Why three files could not be merged semantically.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{side}: {problem}")]
    Input { side: Side, problem: Problem },
    #[error(transparent)]
    Engine(#[from] MergeError),
}

/// Parses one side; an empty base is the empty document (add/add), an empty side is not.
fn parse_side<'a>(bytes: &'a [u8], side: Side, profile: Option<&Profile>) -> Result<Option<Input<'a>>, Failure> {
    match Input::parse(bytes, profile) {
        Ok(v) => Ok(Some(v)),
        Err(Problem::Empty) if side == Side::Base => Ok(None),
        Err(problem) => Err(Failure::Input { side, problem }),
    }
}

fn skeleton<'i>(input: &'i Option<Input<'_>>) -> Option<&'i Value> {
    input.as_ref().map(|i| &i.skeleton)
}

/// Merges three texts. `profile` overrides detection. Ledger files (SPEC §4b) merge by a
/// join of ours and theirs (the base plays no part: a join never needs one); two sides
/// that hold the same document give it back as ours wrote it (SPEC §4.5b).
pub fn merge_bytes(
    profile: Option<&'static Profile>,
    base: &[u8],
    ours: &[u8],
    theirs: &[u8],
) -> Result<Merged, Failure> {
    // Each side is parsed once, records kept as raw slices: a whole `Value` of a 100k-request
    // file costs more than the merge itself. Both checks below read only the skeletons,
    // unless the sides are ledger files (small) or their skeletons are equal (rare).
    let (ours_in, theirs_in) = (Input::parse(ours, profile), Input::parse(theirs, profile));
    if let (Ok(a), Ok(b)) = (&ours_in, &theirs_in) {
        if crate::ledger::shard::is_ledger_file(&a.skeleton) && crate::ledger::shard::is_ledger_file(&b.skeleton) {
            let fail = |side, e: crate::ledger::shard::BadFile| Failure::Input {
                side,
                problem: crate::json::Problem::Invalid(e.to_string()),
            };
            let fa = crate::ledger::LedgerFile::from_value(&a.to_value()).map_err(|e| fail(Side::Ours, e))?;
            let fb = crate::ledger::LedgerFile::from_value(&b.to_value()).map_err(|e| fail(Side::Theirs, e))?;
            let joined = fa.join(&fb).map_err(|e| fail(Side::Theirs, e))?;
            return Ok(Merged {
                profile: profile::generic(),
                output: joined.render(),
                conflicts: Vec::new(),
                variants: None,
            });
        }
        // Equal documents have equal skeletons (records stand as empty arrays there).
        if a.skeleton == b.skeleton {
            let whole = a.to_value();
            if whole == b.to_value() {
                let p = profile.unwrap_or_else(|| profile::detect(&[Some(&whole)]));
                return Ok(Merged { profile: p, output: ours.to_vec(), conflicts: Vec::new(), variants: None });
            }
        }
    }
    let o = parse_side(base, Side::Base, profile)?;
    let a = Some(ours_in.map_err(|problem| Failure::Input { side: Side::Ours, problem })?);
    let b = Some(theirs_in.map_err(|problem| Failure::Input { side: Side::Theirs, problem })?);
    let profile = profile.unwrap_or_else(|| profile::detect(&[skeleton(&a), skeleton(&b), skeleton(&o)]));
    let outcome = engine::merge(profile, [o, a, b])?;
    let output = outcome.render();
    let variants = (!outcome.conflicts.is_empty()).then(|| {
        let variant = |pick: fn(&Conflict) -> &Option<Value>| {
            let mut v = outcome.skeleton.clone();
            for c in &outcome.conflicts {
                match pick(c) {
                    Some(x) => set_path(&mut v, &c.path, x.clone()),
                    None => remove_path(&mut v, &c.path),
                }
            }
            outcome.render_with(&v)
        };
        [variant(|c| &c.base), output.clone(), variant(|c| &c.theirs)]
    });
    Ok(Merged { profile, output, conflicts: outcome.conflicts, variants })
}

/// Ingests an application's write into the ledger (SPEC §5b): `base` is what the
/// application started from (`None`: nothing, it restarted empty). The result is laid out
/// like the ledger. Values that conflict (generic files only) keep the ledger's.
pub fn ingest_bytes(base: Option<&[u8]>, ledger: &[u8], app: &[u8]) -> Result<(Vec<u8>, &'static Profile), Failure> {
    let o = match base {
        Some(b) => parse_side(b, Side::Base, None)?,
        None => None,
    };
    let a = parse_side(ledger, Side::Ours, None)?;
    let b = parse_side(app, Side::Theirs, None)?;
    let profile = profile::detect(&[skeleton(&a), skeleton(&b), skeleton(&o)]);
    let outcome = engine::ingest(profile, [o, a, b])?;
    Ok((outcome.render(), profile))
}
