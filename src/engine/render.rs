//! Writing a merged document: the skeleton is serialised in ours' layout with a unique
//! placeholder in each record array, then the record arrays are spliced in. A record whose
//! input had the output's layout is copied byte for byte; any other is re-serialised.

use super::{Outcome, Placed};
use serde_json::Value;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

impl Outcome<'_> {
    /// The merged document as bytes, laid out like ours.
    pub fn render(&self) -> Vec<u8> {
        self.render_with(&self.skeleton)
    }

    /// Renders `skeleton` (the merged one, or a conflict variant of it) with the records.
    pub fn render_with(&self, skeleton: &Value) -> Vec<u8> {
        if self.placed.is_empty() {
            return self.layout.write(skeleton);
        }
        let nonce = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let mut skel = skeleton.clone();
        let mut needles = Vec::with_capacity(self.placed.len());
        for (i, p) in self.placed.iter().enumerate() {
            let marker = Value::String(format!("\u{0}git-tally:{nonce:016x}:{i}"));
            needles.push(serde_json::to_string(&marker).expect("a string serialises"));
            let mut cur = &mut skel;
            for k in &p.path {
                cur = cur.get_mut(k).expect("placed paths exist in the skeleton");
            }
            *cur = marker;
        }
        let text = self.layout.write(&skel);
        let mut found: Vec<(usize, usize)> = needles
            .iter()
            .enumerate()
            .map(|(i, n)| (find(&text, n.as_bytes()).expect("the marker was written"), i))
            .collect();
        found.sort_unstable();
        let size: usize = self.placed.iter().flat_map(|p| &p.records).map(|r| r.raw.get().len() + 16).sum();
        let mut out = Vec::with_capacity(text.len() + size);
        let mut at = 0;
        for (pos, i) in found {
            out.extend_from_slice(&text[at..pos]);
            self.array(&mut out, &self.placed[i]);
            at = pos + needles[i].len();
        }
        out.extend_from_slice(&text[at..]);
        out
    }

    /// The merged document as a value (for tests and reports).
    pub fn to_value(&self) -> Value {
        crate::json::parse(&self.render()).expect("rendered output is valid JSON")
    }

    fn array(&self, out: &mut Vec<u8>, placed: &Placed<'_>) {
        if placed.records.is_empty() {
            out.extend_from_slice(b"[]");
            return;
        }
        let depth = placed.path.len();
        let n = placed.records.len();
        match &self.layout.indent {
            Some(indent) => {
                let nl: &[u8] = if self.layout.crlf { b"\r\n" } else { b"\n" };
                out.push(b'[');
                out.extend_from_slice(nl);
                for (i, r) in placed.records.iter().enumerate() {
                    for _ in 0..=depth {
                        out.extend_from_slice(indent.as_bytes());
                    }
                    out.extend_from_slice(self.record_text(r, depth + 1).as_bytes());
                    if i + 1 < n {
                        out.push(b',');
                    }
                    out.extend_from_slice(nl);
                }
                for _ in 0..depth {
                    out.extend_from_slice(indent.as_bytes());
                }
                out.push(b']');
            }
            None => {
                out.push(b'[');
                for (i, r) in placed.records.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(if self.layout.spaced { b", " } else { b"," });
                    }
                    out.extend_from_slice(self.record_text(r, 0).as_bytes());
                }
                out.push(b']');
            }
        }
    }

    fn record_text<'r>(&self, r: &'r super::Rec<'_>, depth: usize) -> Cow<'r, str> {
        if r.verbatim {
            return Cow::Borrowed(r.raw.get());
        }
        let v: Value = serde_json::from_str(r.raw.get()).expect("records are valid JSON");
        let text = self.layout.write_bare(&v);
        match &self.layout.indent {
            Some(indent) => {
                let nl = if self.layout.crlf { "\r\n" } else { "\n" };
                Cow::Owned(text.replace('\n', &format!("{nl}{}", indent.repeat(depth))))
            }
            None => Cow::Owned(text),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
