//! `git-tally merge %O %A %B`: the git merge driver. A clean semantic merge exits 0; a
//! conflict (or input that is not a valid usage file) leaves line-local conflict markers
//! in %A, names the problem on stderr and exits 1, so git stops with stages 2 and 3
//! intact. A bug aborts the process (panic = "abort"), which git treats as a failed merge.

use super::profile_arg;
use crate::cli::MergeArgs;
use crate::engine::path_text;
use crate::error::{Error, Result};
use crate::exit;
use crate::fsutil::write_atomic;
use crate::git;
use crate::json;
use crate::merge::merge_bytes;
use crate::profile::{self, Profile};
use std::path::Path;

pub fn run(dir: &Path, args: &MergeArgs) -> Result<i32> {
    let name = args.path.clone().unwrap_or_else(|| args.ours.display().to_string());
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    let (base, ours, theirs) = (read(&args.base)?, read(&args.ours)?, read(&args.theirs)?);
    let labels = [
        args.base_label.as_deref().unwrap_or("base"),
        args.ours_label.as_deref().unwrap_or("ours"),
        args.theirs_label.as_deref().unwrap_or("theirs"),
    ];
    // A line merge of broken JSON could quietly apply a truncation: keep every side whole.
    let whole_file = |why: &str| -> Result<i32> {
        write_atomic(&args.ours, &json::whole_file_conflict(&base, &ours, &theirs, labels, args.marker_size))?;
        eprintln!("git-tally: {name}: {why}");
        Ok(exit::CONFLICT)
    };
    if std::env::var("GIT_TALLY_MERGE").as_deref() == Ok("0") {
        let (text, conflicts) = git::merge_file(dir, &base, &ours, &theirs, labels, args.marker_size)?;
        write_atomic(&args.ours, &text)?;
        return Ok(if conflicts == 0 { exit::OK } else { exit::CONFLICT });
    }
    let profile = match profile_arg(args.profile.as_deref())? {
        Some(p) => Some(p),
        None => configured_profile(dir, args.path.as_deref())?,
    };
    match merge_bytes(profile, &base, &ours, &theirs) {
        Ok(m) if m.conflicts.is_empty() => {
            write_atomic(&args.ours, &m.output)?;
            Ok(exit::OK)
        }
        Ok(m) => {
            let [vb, vo, vt] = m.variants.expect("variants come with conflicts");
            let (text, _) = git::merge_file(dir, &vb, &vo, &vt, labels, args.marker_size)?;
            write_atomic(&args.ours, &text)?;
            eprintln!(
                "git-tally: {name}: {} value(s) changed differently on both sides ({} profile):",
                m.conflicts.len(),
                m.profile.name
            );
            for c in &m.conflicts {
                eprintln!("  conflict at {}", path_text(&c.path));
            }
            eprintln!("  resolve the markers in {name}, then `git tally check {name}` and `git add {name}`");
            Ok(exit::CONFLICT)
        }
        Err(f) => whole_file(&format!(
            "cannot merge semantically: {f}\n  left ours, base and theirs whole between conflict markers: resolve them, then `git tally check {name}`"
        )),
    }
}

/// `tally-profile` attribute of the path, else `tally.profile` from git config.
fn configured_profile(dir: &Path, path: Option<&str>) -> Result<Option<&'static Profile>> {
    let name = git::profile_of(dir, path);
    match name {
        None => Ok(None),
        Some(n) => profile::by_name(&n).map(Some).ok_or_else(|| {
            Error::Usage(format!(
                "unknown profile {n:?} in git config/attributes; known: {}",
                profile::names().join(", ")
            ))
        }),
    }
}
