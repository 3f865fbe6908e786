//! Owns taking the insignificant whitespace out of a JSON text without parsing it: the same
//! tokens in the same order, so that valid JSON stays the same value and anything else stays
//! invalid. Knows nothing of what the text holds; does no I/O.
//!
//! Why: every plugin reads the object it is given from its first byte, in Wasm, and a
//! pretty-printed review (a hand-written one, or a client that indents) is half whitespace.
//! Taking it out once in the host costs a copy; each plugin that reads the object would
//! otherwise pay for it again, at Wasm's speed (measured: `deny-privileged` 28.9 µs a call on
//! an indented 10 KB Pod review, 21.7 µs on the same review compact). The API server writes
//! compact JSON, and [`is_indented`] finds that there is nothing to do.

/// Whether `text` has a line break or a tab: outside strings (which cannot hold one unescaped)
/// they are whitespace between tokens, so the text is laid out for reading. The API server's
/// compact JSON has none, and this is all it pays.
pub fn is_indented(text: &[u8]) -> bool {
    memchr::memchr3(b'\n', b'\r', b'\t', text).is_some()
}

/// `text` without the whitespace between its tokens. A space is kept where taking it out would
/// join two tokens into one (`1 2`, `true false`, `- 1`), so that text which is not JSON does
/// not become JSON. Strings are copied as they are, escapes and all; a string left open runs to
/// the end. Any bytes are accepted: the result is for a JSON parser to judge.
pub fn compact(text: &[u8]) -> Vec<u8> {
    let mut out = Output::new(text.len());
    // Text is kept in runs: from `run` to the next whitespace outside a string.
    let mut run = 0;
    let mut at = 0;
    loop {
        at = quote_or_whitespace(text, at);
        match text.get(at) {
            None => {
                out.extend(&text[run..]);
                return out.finish();
            }
            Some(b'"') => at = string_end(text, at + 1),
            Some(_) => {
                out.extend(&text[run..at]);
                at = whitespace_end(text, at + 1);
                if out.last().is_some_and(is_word) && text.get(at).copied().is_some_and(is_word) {
                    out.extend(b" ");
                }
                run = at;
            }
        }
    }
}

/// The compacted text, written eight bytes at a time: the runs kept are mostly a few bytes
/// long, too short for a call to `memcpy` to pay. Some bytes written past the end are
/// overwritten by the next run, or cut off at the end.
struct Output {
    bytes: Vec<u8>,
    len: usize,
}

impl Output {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: vec![0; capacity + 8],
            len: 0,
        }
    }

    fn extend(&mut self, run: &[u8]) {
        let mut chunks = run.chunks_exact(8);
        for chunk in &mut chunks {
            self.bytes[self.len..self.len + 8].copy_from_slice(chunk);
            self.len += 8;
        }
        let rest = chunks.remainder();
        let mut tail = [0; 8];
        tail[..rest.len()].copy_from_slice(rest);
        self.bytes[self.len..self.len + 8].copy_from_slice(&tail);
        self.len += rest.len();
    }

    fn last(&self) -> Option<u8> {
        self.len.checked_sub(1).map(|i| self.bytes[i])
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.truncate(self.len);
        self.bytes
    }
}

/// The first quote or whitespace byte at or after `at` (the end of `text` if none).
fn quote_or_whitespace(text: &[u8], mut at: usize) -> usize {
    loop {
        // Bytes below `!` are whitespace or control characters (which JSON allows nowhere
        // unescaped): a control character is kept, and the search goes on after it.
        at = first_flagged(text, at, |word| has_byte(word, b'"') | has_less(word, b'!'));
        match text.get(at) {
            None => return text.len(),
            Some(b) if *b == b'"' || is_whitespace(*b) => return at,
            Some(_) => at += 1,
        }
    }
}

/// The first byte at or after `at` that is not whitespace. An indentation is a run of spaces.
fn whitespace_end(text: &[u8], mut at: usize) -> usize {
    const SPACES: u64 = u64::from_le_bytes([b' '; 8]);
    loop {
        // Spaces give zero bytes: the first other byte has the lowest set bit.
        at = first_flagged(text, at, |word| word ^ SPACES);
        match text.get(at) {
            Some(b) if is_whitespace(*b) => at += 1,
            _ => return at,
        }
    }
}

/// Just past the quote that closes the string whose contents start at `at` (the end of `text`
/// if none does).
fn string_end(text: &[u8], mut at: usize) -> usize {
    loop {
        at = first_flagged(text, at, |word| {
            has_byte(word, b'"') | has_byte(word, b'\\')
        });
        match text.get(at) {
            None => return text.len(),
            Some(b'"') => return at + 1,
            Some(b'\\') => at += 2, // the backslash and the byte it escapes
            Some(_) => at += 1,
        }
    }
}

/// Eight bytes at a time from `at`: the first byte `flags` flags, or where fewer than eight
/// bytes are left (to be looked at one by one). `flags` gives a word whose lowest set bit is in
/// the first byte of interest, zero when there is none. The runs of a Kubernetes object are
/// mostly short, too short for a call to `memchr` to pay.
fn first_flagged(text: &[u8], mut at: usize, flags: impl Fn(u64) -> u64) -> usize {
    while let Some(chunk) = text.get(at..at + 8) {
        let found = flags(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Non-zero when one of the eight bytes of `word` is `byte`; its lowest set bit is in the first
/// such byte (a borrow can flag a byte above a true one, never below).
const fn has_byte(word: u64, byte: u8) -> u64 {
    has_less(word ^ (ONES * byte as u64), 1)
}

/// Non-zero when one of the eight bytes of `word` is below `limit` (at most 128); its lowest set
/// bit is in the first such byte.
const fn has_less(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * limit as u64) & !word & HIGHS
}

const fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\n' | b'\r' | b'\t')
}

/// A byte of a number or a literal (or of something that is not JSON): two of them with
/// whitespace between are two tokens, and must stay two.
fn is_word(byte: u8) -> bool {
    !matches!(
        byte,
        b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"' | b' ' | b'\n' | b'\r' | b'\t'
    )
}

#[cfg(test)]
mod tests {
    use super::{compact, is_indented};

    fn compacted(text: &str) -> String {
        String::from_utf8(compact(text.as_bytes())).unwrap()
    }

    #[test]
    fn takes_out_the_whitespace_between_tokens() {
        let text = "{\n  \"a\" : [ 1 , 2.5e3 , true , null ],\n\t\"b\": { \"c\" : \"x y\" }\r\n}\n";
        assert_eq!(
            compacted(text),
            r#"{"a":[1,2.5e3,true,null],"b":{"c":"x y"}}"#
        );
        assert!(is_indented(text.as_bytes()));
        assert!(!is_indented(compacted(text).as_bytes()));
    }

    #[test]
    fn strings_are_copied_as_they_are() {
        let text = r#"{ "k \" }" : "\\" , "e": "a\"b\\\" c" , "u": "\u0041 \n" }"#;
        assert_eq!(
            compacted(text),
            r#"{"k \" }":"\\","e":"a\"b\\\" c","u":"\u0041 \n"}"#
        );
    }

    /// Valid JSON keeps its value; what is not JSON stays not JSON, with the same complaint
    /// class from serde_json.
    #[test]
    fn valid_stays_the_same_value_and_invalid_stays_invalid() {
        let valid = [
            "{\n \"a\": [1, -2, 3.5e-1, true, false, null, \"s p\", {}, []]\n}",
            " [ ] ",
            "\"lone string with \\\" and spaces \"",
            "  -0.5e+7 ",
            "{\"a\":\"\\\\\"}",
        ];
        for text in valid {
            let before: serde_json::Value = serde_json::from_str(text).unwrap();
            let after: serde_json::Value = serde_json::from_slice(&compact(text.as_bytes()))
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(before, after, "{text:?}");
        }
        let invalid = [
            "[1 2]",
            "[true false]",
            "[- 1]",
            "[1. 5]",
            "[tr ue]",
            "{\"a\": 1 \"b\": 2}",
            "[\"a\" \"b\"]",
            "[\"open\n]",
            "[\"tab\tinside\"]",
            "{\"a\" \n}",
            "[1,\n]",
            "\"ends in a backslash\\",
        ];
        for text in invalid {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text:?}"
            );
            assert!(
                serde_json::from_slice::<serde_json::Value>(&compact(text.as_bytes())).is_err(),
                "{text:?} became JSON: {:?}",
                compacted(text)
            );
        }
    }

    #[test]
    fn any_bytes_are_accepted() {
        for text in [
            &b""[..],
            b"\"",
            b"\\",
            b"\"\\",
            b" \xff\xfe \"\xc3",
            b"\n\n\n",
        ] {
            compact(text);
        }
    }
}
