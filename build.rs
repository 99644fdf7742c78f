//! Turns the bundled price table (`src/prices/litellm-prices.json`) into Rust data, so that
//! `record` prices an event without parsing 130 KB of JSON first (that parse was most of a
//! `record`'s time). `src/prices` reads the result; a unit test checks it equals the JSON
//! read at run time.

use std::fmt::Write as _;

fn main() {
    // The executable linked at a fixed address: the tables built here and chrono-tz's
    // hold ~50,000 pointers, which a position-independent executable relocates at every
    // start (1.1 ms of a 4 ms `record`; see scripts/bench-sync.sh).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let src = "src/prices/litellm-prices.json";
    println!("cargo:rerun-if-changed={src}");
    let text = std::fs::read_to_string(src).expect("the bundled price table");
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("the bundled price table parses");
    let mut out = String::from("/// An entry: key, numeric fields, `litellm_provider`.\n");
    out.push_str("pub(super) type Bundled = (&'static str, &'static [(&'static str, f64)], &'static str);\n");
    out.push_str("/// The bundled table's entries.\npub(super) static ENTRIES: &[Bundled] = &[\n");
    let mut about = String::from("null");
    for (key, v) in &doc {
        let Some(fields) = v.as_object() else { continue };
        if key == "_git_tally" {
            about = v.to_string();
            continue;
        }
        let mut nums = String::new();
        for (f, x) in fields {
            if let Some(n) = x.as_f64() {
                write!(nums, "({f:?}, {n:?}), ").unwrap();
            }
        }
        let provider = fields.get("litellm_provider").and_then(|p| p.as_str()).unwrap_or("");
        writeln!(out, "    ({key:?}, &[{nums}], {provider:?}),").unwrap();
    }
    out.push_str("];\n");
    writeln!(out, "/// The bundled table's `_git_tally` entry.\npub(super) const ABOUT: &str = {about:?};").unwrap();
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled_prices.rs");
    std::fs::write(dest, out).unwrap();
}
