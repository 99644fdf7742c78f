//! Known gaps: tests/failing/<profile>/<case>/ holds cases whose expected result the merge
//! does not reach yet, each with a NOTE.md saying what happens now and what should. This
//! test keeps them visible: it fails if one of them starts passing (move it to cases/).

use git_tally::merge::merge_bytes;
use git_tally::profile;
use std::path::Path;

#[test]
fn known_gaps_still_fail() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/failing");
    let mut fixed = Vec::new();
    for p in std::fs::read_dir(&root).unwrap() {
        let p = p.unwrap().path();
        let prof = profile::by_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
        for c in std::fs::read_dir(&p).unwrap() {
            let c = c.unwrap().path();
            assert!(c.join("NOTE.md").exists(), "{}: a known gap needs a NOTE.md", c.display());
            let read = |f: &str| std::fs::read(c.join(f)).unwrap();
            let m = merge_bytes(Some(prof), &read("base.json"), &read("ours.json"), &read("theirs.json")).unwrap();
            let got = git_tally::json::parse(&m.output).unwrap();
            if got == git_tally::json::parse(&read("expected.json")).unwrap() {
                fixed.push(c.display().to_string());
            }
        }
    }
    assert!(fixed.is_empty(), "these known gaps now pass; move them to tests/cases: {fixed:?}");
}
