//! The data-driven merge cases: tests/cases/<profile>/<case>/{base,ours,theirs,expected}.json.
//! Each case is merged with the profile named by its directory, compared with expected
//! (bytes when the case is about layout, JSON values otherwise), and merged again with
//! ours and theirs swapped, which must give the same document.

use crate::common::{diff, pretty};
use git_tally::merge::merge_bytes;
use git_tally::profile;
use std::path::Path;

fn run_case(dir: &Path) -> Result<(), String> {
    let profile_name = dir.parent().unwrap().file_name().unwrap().to_str().unwrap();
    let profile = profile::by_name(profile_name).ok_or(format!("no profile {profile_name}"))?;
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (base, ours, theirs, expected) =
        (read("base.json"), read("ours.json"), read("theirs.json"), read("expected.json"));
    let m = merge_bytes(Some(profile), &base, &ours, &theirs).map_err(|e| format!("merge failed: {e}"))?;
    if !m.conflicts.is_empty() {
        return Err(format!("unexpected conflicts: {:?}", m.conflicts));
    }
    let got = git_tally::json::parse(&m.output).map_err(|e| format!("output is not JSON: {e}"))?;
    let want = git_tally::json::parse(&expected).unwrap();
    if got != want {
        return Err(format!("semantic mismatch:\n{}", diff(&pretty(&want), &pretty(&got))));
    }
    let layout_case = dir.file_name().unwrap().to_str().unwrap().contains("indent");
    if layout_case && m.output != expected {
        return Err(format!(
            "layout mismatch:\n{}",
            diff(&String::from_utf8_lossy(&expected), &String::from_utf8_lossy(&m.output))
        ));
    }
    let swapped =
        merge_bytes(Some(profile), &base, &theirs, &ours).map_err(|e| format!("swapped merge failed: {e}"))?;
    let swapped = git_tally::json::parse(&swapped.output).unwrap();
    if swapped != got {
        return Err(format!("not commutative:\n{}", diff(&pretty(&got), &pretty(&swapped))));
    }
    if profile_name != "generic" {
        let detected = profile::detect(&[git_tally::json::parse(&ours).ok().as_ref()]);
        if detected.name != profile_name {
            return Err(format!("ours detected as {}, not {profile_name}", detected.name));
        }
    }
    Ok(())
}

#[test]
fn merge_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut failures = Vec::new();
    let mut count = 0;
    let mut per_profile = std::collections::BTreeMap::new();
    for p in std::fs::read_dir(&root).unwrap() {
        let p = p.unwrap().path();
        for c in std::fs::read_dir(&p).unwrap() {
            let c = c.unwrap().path();
            count += 1;
            *per_profile.entry(p.file_name().unwrap().to_string_lossy().into_owned()).or_insert(0) += 1;
            if let Err(e) = run_case(&c) {
                failures.push(format!("{}: {e}", c.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    for name in profile::names() {
        let n = per_profile.get(name).copied().unwrap_or(0);
        assert!(n >= 8, "profile {name} has {n} cases, want at least 8");
    }
    assert!(failures.is_empty(), "{} of {count} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
}
