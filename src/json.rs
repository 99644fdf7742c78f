//! Reading and writing usage files as people and other tools wrote them. A merge must not
//! reformat a file: indent, line endings, BOM and trailing newline are detected from one
//! input and reproduced, and bad input is described by file, line and column.

use serde_json::Value;
use std::fmt;

/// How a JSON file is laid out, so that a rewrite looks like the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub bom: bool,
    pub crlf: bool,
    /// `None` writes JSON on one line.
    pub indent: Option<String>,
    /// On one line: `{"a": 1, "b": 2}` (Python's default) rather than `{"a":1,"b":2}`.
    pub spaced: bool,
    pub trailing_newline: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { bom: false, crlf: false, indent: Some("  ".into()), spaced: false, trailing_newline: true }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Layout {
    /// Detects the layout from the first indented line; cheap on large files.
    pub fn detect(bytes: &[u8]) -> Layout {
        let bom = bytes.starts_with(BOM);
        let body = if bom { &bytes[3..] } else { bytes };
        let trimmed_end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        let trailing_newline = body[trimmed_end..].contains(&b'\n');
        let content = &body[..trimmed_end];
        let Some(nl) = content.iter().position(|&b| b == b'\n') else {
            let spaced = content.windows(3).find(|w| w[0] == b'"' && w[1] == b':').is_some_and(|w| w[2] == b' ');
            return Layout { bom, crlf: false, indent: None, spaced, trailing_newline };
        };
        let crlf = nl > 0 && content[nl - 1] == b'\r';
        let indent: String =
            content[nl + 1..].iter().take_while(|&&b| b == b' ' || b == b'\t').map(|&b| b as char).collect();
        let indent = if indent.is_empty() { "  ".to_string() } else { indent };
        Layout { bom, crlf, indent: Some(indent), spaced: false, trailing_newline }
    }

    /// Whether a record written in this layout can be copied into `other` as it is.
    pub fn same_records(&self, other: &Layout) -> bool {
        self.indent == other.indent && self.crlf == other.crlf && self.spaced == other.spaced
    }

    /// `value` in this layout's style, without BOM, final newline or CRLF.
    pub fn write_bare(&self, value: &Value) -> String {
        let layout = Layout { bom: false, crlf: false, trailing_newline: false, ..self.clone() };
        String::from_utf8(layout.write(value)).expect("serde_json writes UTF-8")
    }

    /// Serialises `value` in this layout.
    pub fn write(&self, value: &impl serde::Serialize) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        if self.bom {
            out.extend_from_slice(BOM);
        }
        match &self.indent {
            Some(indent) => {
                let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
                let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
                serde::Serialize::serialize(value, &mut ser).expect("writing JSON to memory cannot fail");
            }
            None if self.spaced => {
                let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
                serde::Serialize::serialize(value, &mut ser).expect("writing JSON to memory cannot fail");
            }
            None => serde_json::to_writer(&mut out, value).expect("writing JSON to memory cannot fail"),
        }
        if self.trailing_newline {
            out.push(b'\n');
        }
        if self.crlf {
            // JSON strings escape raw newlines, so every b'\n' here is a line break.
            let mut crlf = Vec::with_capacity(out.len() + out.len() / 16);
            for &b in &out {
                if b == b'\n' {
                    crlf.push(b'\r');
                }
                crlf.push(b);
            }
            out = crlf;
        }
        out
    }
}

/// One-line JSON with a space after `:` and `,`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// A whole-file conflict (diff3 style) for inputs that cannot be merged semantically:
/// both sides and the base stay complete, for a person to resolve.
pub fn whole_file_conflict(base: &[u8], ours: &[u8], theirs: &[u8], labels: [&str; 3], marker_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + ours.len() + theirs.len() + 256);
    let mut section = |marker: u8, label: &str, body: &[u8]| {
        out.extend(std::iter::repeat_n(marker, marker_size));
        if !label.is_empty() {
            out.push(b' ');
            out.extend_from_slice(label.as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(body);
        if !body.is_empty() && !body.ends_with(b"\n") {
            out.push(b'\n');
        }
    };
    section(b'<', labels[1], ours);
    section(b'|', labels[0], base);
    section(b'=', "", theirs);
    out.extend(std::iter::repeat_n(b'>', marker_size));
    out.push(b' ');
    out.extend_from_slice(labels[2].as_bytes());
    out.push(b'\n');
    out
}

/// What is wrong with an input file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Empty,
    NotUtf8,
    ConflictMarkers {
        line: usize,
    },
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid JSON that is not what the file must hold.
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(f, "the file is empty"),
            Problem::NotUtf8 => write!(f, "the file is not UTF-8 text"),
            Problem::ConflictMarkers { line } => {
                write!(f, "line {line}: contains merge conflict markers; resolve them first")
            }
            Problem::Syntax { line, column, message } => {
                write!(f, "line {line}, column {column}: invalid JSON: {message}")
            }
            Problem::Invalid(m) => f.write_str(m),
        }
    }
}

/// A document's outline, enough to tell its shape (an export envelope) without the cost
/// of parsing a large file: values of at most `limit` bytes of JSON parsed, larger
/// objects as outlines of their own down to `depth` levels (below, empty), larger arrays
/// as empty arrays. `None` if it is not JSON (an object's members are checked as they
/// are read; a large array is not).
pub fn outline(bytes: &[u8], limit: usize, depth: usize) -> Option<Value> {
    outline_of(std::str::from_utf8(body(bytes).ok()?).ok()?, limit, depth)
}

fn outline_of(text: &str, limit: usize, depth: usize) -> Option<Value> {
    let t = text.trim_start();
    if text.len() <= limit || !(t.starts_with('{') || t.starts_with('[')) {
        return serde_json::from_str(text).ok();
    }
    if t.starts_with('[') {
        return Some(Value::Array(Vec::new()));
    }
    let mut out = serde_json::Map::new();
    if depth > 0 {
        let Members(members) = serde_json::from_str(text).ok()?;
        for (k, raw) in members {
            out.insert(k, outline_of(raw.get(), limit, depth - 1)?);
        }
    }
    Some(Value::Object(out))
}

/// An object's members in order, their values unparsed.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses a usage file. An empty (or whitespace-only) file is `Problem::Empty`; callers
/// decide whether that means "empty document" (a missing ancestor) or an error.
pub fn parse(bytes: &[u8]) -> Result<Value, Problem> {
    let body = body(bytes)?;
    serde_json::from_slice::<Value>(body).map_err(|e| failure(body, Some(&e)))
}

/// The JSON text of a file: without a BOM, and not empty.
pub(crate) fn body(bytes: &[u8]) -> Result<&[u8], Problem> {
    let body = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::Empty);
    }
    Ok(body)
}

/// What is wrong with `body`, which did not parse (`None`: it is not UTF-8). Markers are
/// never valid JSON, so they are looked for only once parsing failed.
pub(crate) fn failure(body: &[u8], error: Option<&serde_json::Error>) -> Problem {
    if let Some(line) = conflict_marker_line(body) {
        return Problem::ConflictMarkers { line };
    }
    match error {
        Some(e) if std::str::from_utf8(body).is_ok() => {
            Problem::Syntax { line: e.line(), column: e.column(), message: strip_position(&e.to_string()) }
        }
        _ => Problem::NotUtf8,
    }
}

pub(crate) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The 1-based line of the first git conflict marker, if any.
pub fn conflict_marker_line(bytes: &[u8]) -> Option<usize> {
    bytes.split(|&b| b == b'\n').position(is_marker).map(|i| i + 1)
}

fn is_marker(line: &[u8]) -> bool {
    for m in [b'<', b'=', b'>', b'|'] {
        let run = line.iter().take_while(|&&b| b == m).count();
        if run >= 7 && (line.len() == run || line[run] == b' ' || line[run] == b'\r') {
            return true;
        }
    }
    false
}

/// Canonical text of a value (sorted keys, compact): used for deterministic tie-breaks.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).expect("serialising a Value cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outline_keeps_small_values_and_the_shape_of_large_ones() {
        let big: Vec<String> = (0..50).map(|i| format!("\"k{i}\": {{\"details\": [1, 2, 3]}}")).collect();
        let text = format!("{{\"version\": 1, \"usage\": {{\"apis\": {{{}}}, \"n\": 2}}}}", big.join(", "));
        let o = outline(text.as_bytes(), 100, 2).expect("JSON");
        assert_eq!(o["version"], 1);
        assert_eq!(o["usage"]["n"], 2);
        // Below the depth, a large object is there but empty.
        assert_eq!(o["usage"]["apis"], serde_json::json!({}));
        // Small enough: all of it.
        assert_eq!(outline(text.as_bytes(), 1 << 20, 0), Some(serde_json::from_str(&text).unwrap()));
        // Member order is the file's.
        let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["version", "usage"]);
        assert_eq!(outline(b"{\"a\": [1, 2", 4, 2), None);
        assert_eq!(outline(b"  ", 4, 2), None);
    }

    #[test]
    fn layout_round_trips_crlf_bom_and_four_spaces() {
        let text = "\u{feff}{\r\n    \"a\": 1,\r\n    \"b\": [\r\n        2\r\n    ]\r\n}\r\n";
        let layout = Layout::detect(text.as_bytes());
        assert!(layout.bom && layout.crlf && layout.trailing_newline);
        assert_eq!(layout.indent.as_deref(), Some("    "));
        let v = parse(text.as_bytes()).unwrap();
        assert_eq!(layout.write(&v), text.as_bytes());
    }

    #[test]
    fn compact_without_newline_stays_compact() {
        let text = br#"{"a":1,"b":{"c":[1,2]}}"#;
        let layout = Layout::detect(text);
        assert_eq!(layout.write(&parse(text).unwrap()), text);
    }

    #[test]
    fn one_line_python_style_keeps_its_spaces() {
        let text = b"{\"a\": 1, \"b\": [1, 2]}\n";
        assert_eq!(Layout::detect(text).write(&parse(text).unwrap()), text);
    }

    #[test]
    fn whole_file_conflict_keeps_everything() {
        let c = whole_file_conflict(b"b\n", b"o", b"t\n", ["base", "ours", "theirs"], 7);
        assert_eq!(c, b"<<<<<<< ours\no\n||||||| base\nb\n=======\nt\n>>>>>>> theirs\n");
    }

    #[test]
    fn problems_are_located() {
        assert_eq!(parse(b"  \n"), Err(Problem::Empty));
        assert_eq!(
            parse(b"{\n<<<<<<< ours\n\"a\":1\n=======\n>>>>>>> theirs\n}"),
            Err(Problem::ConflictMarkers { line: 2 })
        );
        match parse(b"{\n  \"a\": 1,\n  \"b\": ") {
            Err(Problem::Syntax { line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
