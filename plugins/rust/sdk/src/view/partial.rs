//! Reading a view without reading the whole object: a serde `Deserializer` over JSON text that
//! hands a struct only the members it names and stops after the last of them, never scanning
//! the rest. Owns that skipping; everything else (lists, maps, scalars, whole `Value`s) is read
//! by `serde_json` as usual. Only for text the host has already parsed (`object`, `oldObject`):
//! the members it skips are not checked to be JSON.
//!
//! The rule, applied from the top: a struct's members are read in the order they come, those it
//! does not name are skipped, and reading stops once it has seen all it names. The value of the
//! last of them is read the same way (a struct in it stops early too); a value with more named
//! members after it is read whole by serde_json once its end is found, a second pass over it.
//! So a view gains when what it names comes early and what comes before is small. The API server
//! writes members in a fixed order (`kind`, `apiVersion`, `metadata`, `spec`, `status` for
//! built-in kinds, sorted keys for custom resources; in `metadata`, `labels` comes before
//! `annotations` and `managedFields`): a view of `metadata.labels` reads a few hundred bytes of a
//! Pod instead of all of it (require-labels on a 5 KB Pod: 21.6 → 16.4 µs per call, fresh
//! instance included), while a view that names `spec` and a member that a Pod lacks scans the
//! whole spec twice (deny-privileged's `Workload`: 21 → 28 µs, so it reads whole).
//!
//! A struct read this way must not use `#[serde(alias)]` or `#[serde(deny_unknown_fields)]`: it
//! is given only the names serde lists for it, so aliases and unknown members are never seen (a
//! struct with `#[serde(flatten)]` asks for a map and is read whole). A member that appears twice
//! is refused as serde refuses it, unless the second comes after reading has stopped.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_json::Error;

/// Deserializes the view `T` from `json`, reading only the members `T` names, and only as far as
/// the last of them (see the module's rule).
pub fn from_str<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    T::deserialize(Partial { json })
}

/// One JSON value at the start of `json` (after whitespace); the text may run past its end.
struct Partial<'de> {
    json: &'de str,
}

impl<'de> Partial<'de> {
    fn json(&self) -> serde_json::Deserializer<serde_json::de::StrRead<'de>> {
        serde_json::Deserializer::from_str(self.json)
    }

    /// Where the value starts: its first byte that is not whitespace.
    fn start(&self) -> usize {
        let bytes = self.json.as_bytes();
        bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len())
    }

    /// The first byte of the value.
    fn first(&self) -> Option<u8> {
        self.json.as_bytes().get(self.start()).copied()
    }
}

macro_rules! by_serde_json {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            de::Deserializer::$method(&mut self.json(), visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Partial<'de> {
    type Error = Error;

    by_serde_json! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.first() == Some(b'n') {
            de::Deserializer::deserialize_option(&mut self.json(), visitor)
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let start = self.start();
        if self.json.as_bytes().get(start) != Some(&b'{') {
            // Not an object: serde_json says what it is instead.
            return de::Deserializer::deserialize_struct(&mut self.json(), name, fields, visitor);
        }
        visitor.visit_map(Members {
            json: self.json,
            at: start + 1,
            fields,
            seen: vec![false; fields.len()],
            wanted: fields.len(),
            first: true,
            value: 0,
        })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_unit_struct(&mut self.json(), name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple(&mut self.json(), len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple_struct(&mut self.json(), name, len, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_enum(&mut self.json(), name, variants, visitor)
    }
}

/// The members of one object that a struct names, up to the last of them.
struct Members<'de> {
    json: &'de str,
    /// Just after `{` or after the previous member's value.
    at: usize,
    fields: &'static [&'static str],
    seen: Vec<bool>,
    /// Names not seen yet; at zero, reading stops.
    wanted: usize,
    first: bool,
    /// Where the value of the member just given starts.
    value: usize,
}

impl Members<'_> {
    fn skip_whitespace(&mut self) {
        let bytes = self.json.as_bytes();
        while bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_whitespace();
        if self.json.as_bytes().get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.malformed())
        }
    }

    fn malformed(&self) -> Error {
        de::Error::custom(format_args!("not a JSON object at byte {}", self.at))
    }
}

impl<'de> MapAccess<'de> for Members<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let bytes = self.json.as_bytes();
        loop {
            if self.wanted == 0 {
                return Ok(None); // every named member read: the rest is not looked at
            }
            self.skip_whitespace();
            if bytes.get(self.at) == Some(&b'}') {
                return Ok(None);
            }
            if !std::mem::take(&mut self.first) {
                self.expect(b',')?;
                self.skip_whitespace();
            }
            if bytes.get(self.at) != Some(&b'"') {
                return Err(self.malformed());
            }
            let key_end = skip_string(bytes, self.at + 1).ok_or_else(|| self.malformed())?;
            let quoted = &self.json[self.at..key_end];
            self.at = key_end;
            self.expect(b':')?;
            self.skip_whitespace();
            self.value = self.at;
            // Kubernetes' member names carry no escapes; one that does is decoded to compare.
            let key: std::borrow::Cow<str> = if quoted.contains('\\') {
                serde_json::from_str::<String>(quoted)?.into()
            } else {
                quoted[1..quoted.len() - 1].into()
            };
            if let Some(index) = self.fields.iter().position(|field| *field == key) {
                if !std::mem::replace(&mut self.seen[index], true) {
                    self.wanted -= 1;
                }
                let key: de::value::StrDeserializer<Error> = self.fields[index].into_deserializer();
                return seed.deserialize(key).map(Some);
            }
            self.at = skip_value(bytes, self.at).ok_or_else(|| self.malformed())?;
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let start = self.value;
        if self.wanted == 0 {
            // The last member read: where its value ends does not matter.
            return seed.deserialize(Partial {
                json: &self.json[start..],
            });
        }
        // More members to find after this one: its end is needed, so it is found first and the
        // value read whole by serde_json (a second pass over it: a view gains when what it names
        // comes early and is small, as `metadata` is).
        let end = skip_value(self.json.as_bytes(), start).ok_or_else(|| self.malformed())?;
        self.at = end;
        seed.deserialize(&mut serde_json::Deserializer::from_str(
            &self.json[start..end],
        ))
    }
}

/// The index just past the JSON value starting at `at`, `None` if the text ends first.
fn skip_value(bytes: &[u8], mut at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => skip_string(bytes, at + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *bytes.get(at)? {
                    b'"' => {
                        at = skip_string(bytes, at + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let rest = &bytes[at..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(at + len)
        }
    }
}

/// The index just past the closing quote of the string whose contents start at `at`.
fn skip_string(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        // Eight bytes at a time while none of them is a quote or a backslash.
        while let Some(chunk) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().ok()?);
            if has_byte(word, b'"') | has_byte(word, b'\\') != 0 {
                break;
            }
            at += 8;
        }
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// Non-zero when one of the eight bytes of `word` is `byte`.
const fn has_byte(word: u64, byte: u8) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let x = word ^ (ONES * byte as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

#[cfg(test)]
mod tests {
    use super::from_str;
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Labels {
        metadata: Meta,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Meta {
        name: String,
        labels: Option<Value>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "camelCase")]
    struct Workload {
        api_version: String,
        spec: Option<Spec>,
        status: Option<Value>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "camelCase")]
    struct Spec {
        containers: Vec<Container>,
        host_network: bool,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Container {
        name: String,
        image: String,
    }

    /// The same value as serde_json gives, on objects with members in any order, nested,
    /// escaped, empty and absent.
    #[test]
    fn reads_what_serde_json_reads() {
        let objects = [
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","labels":{"team":"x"}},"spec":{"containers":[{"name":"c","image":"i","env":[{"name":"E","value":"}]\"{"}]}],"hostNetwork":true},"status":{}}"#,
            r#"{ "status" : { "phase" : "Running" } , "spec" : { "hostNetwork" : false , "containers" : [ ] } , "metadata" : { "labels" : null , "name" : "b" } , "apiVersion" : "apps/v1" }"#,
            "{\n  \"metadata\": {\n    \"annotations\": {\"a\\\"}\": \"{[\"},\n    \"name\": \"c\"\n  },\n  \"spec\": null\n}",
            r#"{"metadata":{},"x":[1,2.5e3,-3,true,false,null,"s",{"y":[]}],"spec":{}}"#,
            r#"{"met\u0061data":{"name":"escaped key"}}"#,
            "{}",
        ];
        for json in objects {
            assert_eq!(
                from_str::<Labels>(json).unwrap(),
                serde_json::from_str::<Labels>(json).unwrap(),
                "{json}"
            );
            assert_eq!(
                from_str::<Workload>(json).unwrap(),
                serde_json::from_str::<Workload>(json).unwrap(),
                "{json}"
            );
            assert_eq!(
                from_str::<Value>(json).unwrap(),
                serde_json::from_str::<Value>(json).unwrap(),
                "{json}"
            );
        }
    }

    /// Strings are skipped eight bytes at a time: an escaped quote or backslash anywhere in a
    /// word, at any length, must not end them early or late.
    #[test]
    fn skips_strings_with_escapes_at_every_offset() {
        for len in 0..24 {
            for at in 0..=len {
                for escape in [r#"\""#, r"\\", r"\u0022"] {
                    let text = format!("{}{escape}{}", "a".repeat(at), "b".repeat(len - at));
                    let json = format!(
                        r#"{{"kind":"{text}","spec":{{"x":["{text}",{{"{text}":1}}]}},"metadata":{{"uid":"{text}","name":"{text}"}}}}"#
                    );
                    let expected = serde_json::from_str::<Labels>(&json).unwrap();
                    assert_eq!(from_str::<Labels>(&json).unwrap(), expected, "{json}");
                }
            }
        }
    }

    /// Reading stops after the last member the view names: what follows is never scanned, so
    /// even text that is not JSON there goes unnoticed, while the same text before it fails.
    #[test]
    fn stops_after_the_last_named_member() {
        let labels = from_str::<Labels>(
            r#"{"metadata":{"name":"a","labels":{"team":"x"},"managedFields":[NOT JSON"#,
        )
        .unwrap();
        assert_eq!(labels.metadata.name, "a");
        assert_eq!(labels.metadata.labels.unwrap()["team"], "x");
        assert!(from_str::<Labels>(r#"{"spec":[NOT JSON,"metadata":{}}"#).is_err());
    }

    /// Wrong shapes fail as serde_json fails, and a member named twice is refused.
    #[test]
    fn refuses_what_serde_json_refuses() {
        for json in [
            r#"{"metadata":"a string"}"#,
            r#"{"metadata":{"name":7}}"#,
            r#"{"metadata":{"name":"a","name":"b","labels":{}}}"#,
            r#""text""#,
            r#"{"metadata" {}}"#,
        ] {
            assert!(from_str::<Labels>(json).is_err(), "{json}");
            assert!(serde_json::from_str::<Labels>(json).is_err(), "{json}");
        }
    }
}
