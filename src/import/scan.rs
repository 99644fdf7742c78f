//! Finding the few fields an import needs in a JSON line without parsing the rest of it.
//!
//! A Claude Code transcript line is mostly message content the import never keeps; a JSON
//! parser still walks it a byte at a time. This walks the line's structure only, jumping
//! over strings with a vectorised search for the next quote or backslash, and hands the
//! spans it wants (a string, the `usage` object) to serde. A line this does not follow —
//! an escaped key, anything unbalanced, trailing bytes — is left to the full parser, which
//! also words the error; so the fast path never decides alone that a line is bad.

/// The raw spans of a Claude Code line's fields (string spans include their quotes).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ClaudeFields<'a> {
    pub request_id: Option<&'a [u8]>,
    pub timestamp: Option<&'a [u8]>,
    pub message_id: Option<&'a [u8]>,
    pub model: Option<&'a [u8]>,
    pub usage: Option<&'a [u8]>,
    /// `message` is there but is not an object (null, say).
    pub message_not_object: bool,
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', &b[j..])?;
        if b[k] == b'\\' {
            j = k + 2;
            if j > b.len() {
                return None;
            }
        } else {
            return Some(k + 1);
        }
    }
}

/// The end of the value starting at `b[i]` (after any whitespace was skipped).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number or a literal: up to the next delimiter.
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Walks the object starting at `b[i] == '{'`, calling `each(key, value_start, value_end)`
/// for every member; returns the end of the object. Keys with escapes are not followed.
fn members<'a>(b: &'a [u8], i: usize, mut each: impl FnMut(&'a [u8], usize, usize)) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b'}') {
        return Some(j + 1);
    }
    loop {
        if b.get(j) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, j)?;
        let key = &b[j + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        j = ws(b, key_end);
        if b.get(j) != Some(&b':') {
            return None;
        }
        let start = ws(b, j + 1);
        let end = value_end(b, start)?;
        each(key, start, end);
        j = ws(b, end);
        match b.get(j) {
            Some(b',') => j = ws(b, j + 1),
            Some(b'}') => return Some(j + 1),
            _ => return None,
        }
    }
}

/// The fields of a Claude Code line, or `None` to leave the line to the full parser.
pub(crate) fn claude_fields(line: &[u8]) -> Option<ClaudeFields<'_>> {
    let start = ws(line, 0);
    let mut f = ClaudeFields::default();
    let mut message = None;
    let end = members(line, start, |key, s, e| match key {
        b"requestId" => f.request_id = Some(&line[s..e]),
        b"timestamp" => f.timestamp = Some(&line[s..e]),
        b"message" => message = Some((s, e)),
        _ => {}
    })?;
    if ws(line, end) != line.len() {
        return None;
    }
    if let Some((s, _)) = message {
        if line[s] == b'{' {
            members(line, s, |key, s, e| match key {
                b"id" => f.message_id = Some(&line[s..e]),
                b"model" => f.model = Some(&line[s..e]),
                b"usage" => f.usage = Some(&line[s..e]),
                _ => {}
            })?;
        } else {
            f.message_not_object = true;
        }
    }
    Some(f)
}

/// A string span's text: borrowed when it has no escapes.
pub(crate) fn text(span: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if span.len() >= 2 && span[0] == b'"' && !span.contains(&b'\\') {
        return std::str::from_utf8(&span[1..span.len() - 1]).ok().map(std::borrow::Cow::Borrowed);
    }
    serde_json::from_slice::<String>(span).ok().map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fields_at_their_own_level_only() {
        let line = br#"{"parentUuid":"p","message":{"model":"claude-opus-4-6","id":"msg_1","content":[{"type":"tool_use","id":"toolu_9","input":{"usage":{"input_tokens":999},"model":"x","text":"a \"quoted\" \\ {brace"}}],"usage":{"input_tokens":3,"output_tokens":2}},"requestId":"req_1","type":"assistant","timestamp":"2026-03-11T02:40:21.204Z"}"#;
        let f = claude_fields(line).unwrap();
        assert_eq!(f.message_id, Some(&br#""msg_1""#[..]));
        assert_eq!(f.model, Some(&br#""claude-opus-4-6""#[..]));
        assert_eq!(f.usage, Some(&br#"{"input_tokens":3,"output_tokens":2}"#[..]));
        assert_eq!(f.request_id, Some(&br#""req_1""#[..]));
        assert_eq!(text(f.timestamp.unwrap()).unwrap(), "2026-03-11T02:40:21.204Z");
    }

    #[test]
    fn whitespace_order_and_escapes() {
        let line = b" { \"requestId\" : \"r\\u0031\" , \"message\" : { \"usage\" : { \"input_tokens\" : 1 } , \"id\" : \"m\" } }\n";
        let f = claude_fields(line).unwrap();
        assert_eq!(text(f.request_id.unwrap()).unwrap(), "r1");
        assert_eq!(f.usage, Some(&b"{ \"input_tokens\" : 1 }"[..]));
        let null = claude_fields(br#"{"message":null,"requestId":"r"}"#).unwrap();
        assert!(null.message_not_object && null.usage.is_none());
    }

    #[test]
    fn what_it_does_not_follow_goes_to_the_full_parser() {
        for bad in [
            &br#"{"message":{"usage":{"input_tokens":1}}"#[..], // unbalanced
            br#"{"message":{"usage":{"input_tokens":1}}} x"#,   // trailing bytes
            br#"{"mes\"sage":{}}"#,                             // an escaped key
            br#"{"message":{"content":"unterminated}}"#,
            br#"["not", "an", "object"]"#,
            br#"{"a":1,}"#,
            b"",
        ] {
            assert_eq!(claude_fields(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
