//! The redaction pass over one object's JSON text: copies the text through, replacing only the
//! values that must not leave, without building a `Value` of the object (no parse into a DOM,
//! no re-encoding of what is kept). Owns the scanning of JSON text; what is sensitive is the
//! [`Redactor`]'s to say, and events are none of its business.
//!
//! Rules (those of the README): in an object, `secret` (inherited, or a member `"kind":
//! "Secret"`) redacts `data`, `stringData` and `value`; a member `"name"` whose value is a
//! sensitive key redacts its `value` and `valueFrom`; a sensitive key redacts its value anywhere;
//! the last-applied annotation is dropped whole in a Secret and redacted inside elsewhere. A map
//! that is redacted keeps its keys; `null` stays `null`. Which object a `kind` or `name` member
//! belongs to is only known once it is read: when it comes after a member it would have changed
//! (rare: the API server writes `kind` and an env entry's `name` first), the object is walked
//! again knowing it.

use std::borrow::Cow;

use wasmgate_sdk::serde_json;

use crate::{LAST_APPLIED, REDACTED, Redactor};

/// The text is not JSON as this pass reads it (the caller says why, with serde_json's message).
#[derive(Debug)]
pub(crate) struct Malformed;

/// `text` with what must not leave replaced by `"[REDACTED]"`; borrowed when nothing was.
/// `secret`: the text is a Secret (or a list or patch of Secrets) whatever its `kind` says.
pub(crate) fn redact<'t>(
    redactor: &Redactor,
    text: &'t str,
    secret: bool,
) -> Result<Cow<'t, str>, Malformed> {
    let mut walk = Walk {
        redactor,
        text,
        bytes: text.as_bytes(),
        pos: 0,
        out: String::new(),
        copied: 0,
        changed: false,
    };
    walk.value(secret)?;
    walk.ws();
    if walk.pos != walk.bytes.len() {
        return Err(Malformed);
    }
    if !walk.changed {
        return Ok(Cow::Borrowed(text));
    }
    walk.out.push_str(&text[walk.copied..]);
    Ok(Cow::Owned(walk.out))
}

/// The quoted replacement of a redacted value.
fn quoted_redacted() -> String {
    format!("\"{REDACTED}\"")
}

struct Walk<'r, 't> {
    redactor: &'r Redactor,
    text: &'t str,
    bytes: &'t [u8],
    /// The next byte to read.
    pos: usize,
    /// What is written so far: `text[..copied]` with its replacements.
    out: String,
    copied: usize,
    changed: bool,
}

/// What a walk of an object's members learnt too late: the flags to walk it again with.
struct Again {
    secret: bool,
    named: bool,
}

impl<'t> Walk<'_, 't> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then `byte`.
    fn eat(&mut self, byte: u8) -> Result<(), Malformed> {
        self.ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// After a member or an item: `true` at `,` (another follows), `false` at `close`.
    fn next_or(&mut self, close: u8) -> Result<bool, Malformed> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Malformed),
        }
    }

    /// `text[start..end]` becomes `with` in the output.
    fn replace(&mut self, start: usize, end: usize, with: &str) {
        self.out.push_str(&self.text[self.copied..start]);
        self.out.push_str(with);
        self.copied = end;
        self.changed = true;
    }

    /// The string at `pos` (a `"`): its span, quotes included, and whether it has escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), Malformed> {
        let start = self.pos;
        if self.peek() != Some(b'"') {
            return Err(Malformed);
        }
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            match self.bytes.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
                None => return Err(Malformed),
            }
        }
        self.pos = i + 1;
        Ok((start, self.pos, escaped))
    }

    /// The text a string spanning `start..end` stands for.
    fn decoded(&self, start: usize, end: usize, escaped: bool) -> Result<Cow<'t, str>, Malformed> {
        let text: &'t str = self.text;
        if escaped {
            serde_json::from_str(&text[start..end])
                .map(Cow::Owned)
                .map_err(|_| Malformed)
        } else {
            Ok(Cow::Borrowed(&text[start + 1..end - 1]))
        }
    }

    /// Skips the value at `pos` (after whitespace) without looking inside; its span.
    fn skip(&mut self) -> Result<(usize, usize), Malformed> {
        self.ws();
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return Err(Malformed),
                    }
                    self.pos += 1;
                }
            }
            // A number or `true`, `false`, `null` (checked by the line's own validation).
            Some(b'-' | b'0'..=b'9' | b'a'..=b'z') => {
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                ) {
                    self.pos += 1;
                }
            }
            _ => return Err(Malformed),
        }
        Ok((start, self.pos))
    }

    /// Walks the value at `pos`, redacting inside it.
    fn value(&mut self, secret: bool) -> Result<(), Malformed> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(secret),
            Some(b'[') => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.value(secret)?;
                    if !self.next_or(b']')? {
                        return Ok(());
                    }
                }
            }
            _ => self.skip().map(drop),
        }
    }

    /// Walks the object at `pos` (a `{`), again when a `kind` or `name` came too late.
    fn object(&mut self, secret: bool) -> Result<(), Malformed> {
        let (open, written, copied, changed) =
            (self.pos, self.out.len(), self.copied, self.changed);
        let mut again = Again {
            secret,
            named: false,
        };
        while let Some(flags) = self.members(again)? {
            (self.pos, self.copied, self.changed) = (open, copied, changed);
            self.out.truncate(written);
            again = flags;
        }
        Ok(())
    }

    /// The members of the object at `pos`; `Some` when a `kind: Secret` or a sensitive `name`
    /// turned up after a member it would have redacted (the walk stops there).
    fn members(&mut self, flags: Again) -> Result<Option<Again>, Malformed> {
        let Again {
            mut secret,
            mut named,
        } = flags;
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(None);
        }
        // Whether a member was walked that `secret` or `named` learnt now would change.
        let (mut walked, mut walked_value) = (false, false);
        loop {
            self.ws();
            let (start, end, escaped) = self.string()?;
            let key = self.decoded(start, end, escaped)?;
            self.eat(b':')?;
            self.ws();
            let is_value = key == "value" || key == "valueFrom";
            let whole = (secret && (key == "data" || key == "stringData" || key == "value"))
                || (named && is_value)
                || self.redactor.sensitive(&key);
            if whole {
                self.redact_all()?;
            } else if key == LAST_APPLIED {
                self.last_applied(secret)?;
            } else if self.peek() == Some(b'"') && (key == "kind" || key == "name") {
                let (start, end, escaped) = self.string()?;
                let text = self.decoded(start, end, escaped)?;
                if key == "kind" && text == "Secret" && !secret {
                    secret = true;
                    if walked {
                        return Ok(Some(Again { secret, named }));
                    }
                } else if key == "name" && !named && self.redactor.sensitive(&text) {
                    named = true;
                    if walked_value {
                        return Ok(Some(Again { secret, named }));
                    }
                }
            } else {
                self.value(secret)?;
            }
            walked = true;
            walked_value |= is_value;
            if !self.next_or(b'}')? {
                return Ok(None);
            }
        }
    }

    /// Replaces the value at `pos`: a map keeps its keys with every value redacted, `null`
    /// stays, anything else becomes `"[REDACTED]"`.
    fn redact_all(&mut self) -> Result<(), Malformed> {
        let redacted = quoted_redacted();
        self.ws();
        if self.peek() != Some(b'{') {
            let (start, end) = self.skip()?;
            if &self.text[start..end] != "null" {
                self.replace(start, end, &redacted);
            }
            return Ok(());
        }
        self.pos += 1;
        self.changed = true;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.string()?;
            self.eat(b':')?;
            let (start, end) = self.skip()?;
            self.replace(start, end, &redacted);
            if !self.next_or(b'}')? {
                return Ok(());
            }
        }
    }

    /// The last-applied annotation at `pos`: a Secret's is dropped whole; another object's is
    /// the object as JSON text, redacted inside and re-encoded (kept as it is when it is not JSON).
    fn last_applied(&mut self, secret: bool) -> Result<(), Malformed> {
        if secret || self.peek() != Some(b'"') {
            return self.redact_all();
        }
        let (start, end, escaped) = self.string()?;
        let inner = self.decoded(start, end, escaped)?;
        if let Ok(Cow::Owned(redacted)) = redact(self.redactor, &inner, false) {
            let encoded = serde_json::to_string(&redacted).map_err(|_| Malformed)?;
            self.replace(start, end, &encoded);
        }
        Ok(())
    }
}
