//! Owns the YAML text `wasmgate manifests` prints: serde_yaml_ng's emitter, with every string a
//! YAML 1.1 reader (kubectl through Go's yaml.v2, PyYAML) would resolve to something other than
//! a string double-quoted. Must not build manifests.
//!
//! serde_yaml_ng quotes what a YAML 1.2 reader misreads (`true`, `null`, `123`) but leaves plain
//! what only YAML 1.1 resolves: `yes`, `no`, `on`, `off`, `y`, `n`, `1_000`, `1:20`
//! (sexagesimal), `2001-12-14` (timestamp), `<<` (merge), `=`. A label value `on` in a rendered
//! selector would reach the API server as the boolean `true` and be refused, or, worse, change
//! meaning. Such strings are swapped for unique plain placeholders before emitting, and the
//! placeholders for the JSON form of the string (a valid YAML double-quoted scalar) after.

use std::sync::LazyLock;

use regex::Regex;
use serde_yaml_ng::Value;

use super::{ManifestError, bad};

/// The YAML 1.1 implicit types a plain scalar can resolve to besides `str`, as the type
/// repository defines them (<https://yaml.org/type/>), with `y`/`n` as Go's yaml.v2 reads them.
static YAML11_NOT_STR: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // bool (yaml.org/type/bool.html)
        r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$",
        // null (yaml.org/type/null.html)
        r"^(?:~|null|Null|NULL|)$",
        // int: binary, octal, decimal, hexadecimal, sexagesimal (yaml.org/type/int.html)
        r"^[-+]?(?:0b[0-1_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
        // float (yaml.org/type/float.html: its fraction admits dots, so `1.2.3` is a float),
        // the exponent's sign optional as PyYAML and yaml.v2 read it
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_.]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        // timestamp (yaml.org/type/timestamp.html)
        r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)$",
        // merge and value keys (yaml.org/type/merge.html, value.html)
        r"^(?:<<|=)$",
    ]
    .iter()
    .map(|re| Regex::new(re).expect("a valid YAML 1.1 resolver pattern"))
    .collect()
});

/// Whether a YAML 1.1 reader resolves the plain scalar `s` to anything but a string. Also true
/// for what Go's number parsers accept once underscores are gone (`1e3`, `0o17`, `0x1p-2`):
/// quoting a string needlessly is harmless, leaving one plain that a reader misreads is not.
pub fn misread_by_yaml11(s: &str) -> bool {
    if YAML11_NOT_STR.iter().any(|re| re.is_match(s)) {
        return true;
    }
    let bare = s.replace('_', "");
    let unsigned = bare.trim_start_matches(['+', '-']);
    let starts_like_number = unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.');
    starts_like_number
        && (bare.parse::<f64>().is_ok()
            || [("0x", 16), ("0o", 8), ("0b", 2)].iter().any(|(p, radix)| {
                unsigned
                    .strip_prefix(p)
                    .is_some_and(|d| i128::from_str_radix(d, *radix).is_ok() || d.contains('p'))
            }))
}

/// One document as YAML: serde_yaml_ng's text with every string [`misread_by_yaml11`] finds
/// double-quoted, as a key or as a value.
pub fn document(doc: &Value) -> Result<String, ManifestError> {
    let mut strings = Vec::new();
    collect(doc, &mut strings);
    // A placeholder prefix no string of the document contains, so a replacement cannot hit
    // the document's own text.
    let mut prefix = "wasmgate-quoted-".to_owned();
    while strings.iter().any(|s| s.contains(&prefix)) {
        prefix.push('x');
    }
    let mut quoted = Vec::new();
    let protected = protect(doc, &prefix, &mut quoted);
    let mut text = serde_yaml_ng::to_string(&protected).map_err(|e| bad(e.to_string()))?;
    // Last first: placeholder 1 is a prefix of placeholder 10 up to its end marker, which the
    // end marker rules out anyway; the order only keeps that obvious.
    for (i, s) in quoted.iter().enumerate().rev() {
        let json = serde_json::to_string(s).map_err(|e| bad(e.to_string()))?;
        text = text.replace(&placeholder(&prefix, i), &json);
    }
    Ok(text)
}

fn placeholder(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}-end")
}

fn collect<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Sequence(items) => items.iter().for_each(|v| collect(v, out)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            collect(k, out);
            collect(v, out);
        }),
        Value::Tagged(t) => collect(&t.value, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn protect(value: &Value, prefix: &str, quoted: &mut Vec<String>) -> Value {
    match value {
        Value::String(s) if misread_by_yaml11(s) => {
            quoted.push(s.clone());
            Value::String(placeholder(prefix, quoted.len() - 1))
        }
        Value::Sequence(items) => {
            Value::Sequence(items.iter().map(|v| protect(v, prefix, quoted)).collect())
        }
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (protect(k, prefix, quoted), protect(v, prefix, quoted)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings a YAML 1.1 reader resolves to another type when plain, one per implicit type.
    const MISREAD: &[&str] = &[
        "yes",
        "Yes",
        "YES",
        "no",
        "No",
        "NO",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "y",
        "Y",
        "n",
        "N",
        "true",
        "False",
        "null",
        "Null",
        "~",
        "",
        "123",
        "-1",
        "+1",
        "0",
        "0123",
        "012",
        "0o12",
        "0x1F",
        "0b101",
        "0b1_0",
        "1_000",
        "1:20",
        "190:20:30",
        "1.5",
        ".5",
        "-.5",
        "1e3",
        "1.0e+3",
        "685_230.15",
        "190:20:30.15",
        ".inf",
        "-.Inf",
        ".NaN",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5",
        "<<",
        "=",
    ];
    /// Strings any YAML reader keeps as strings, plain or quoted.
    const KEPT: &[&str] = &[
        "wasmgate",
        "app.kubernetes.io/name",
        "yesterday",
        "onward",
        "v1",
        "1.2.3",
        "10.0.0.1",
        "64Mi",
        "500m",
        "sha256:abc",
        "*a",
        "&a",
        "!a",
        "|a",
        ">a",
        "%a",
        "@a",
        "`a",
        "- a",
        "a: b",
        "#a",
        "a #b",
        " lead",
        "trail ",
        "'q",
        "\"q",
        "[a",
        "{a",
        "?a",
        ":a",
        "x\ny",
        "nan",
        "inf",
    ];

    /// What a YAML 1.1 reader makes of the scalar after `key: `: a quoted or block scalar is a
    /// string; a plain one is whatever the 1.1 resolver says.
    fn yaml11_reads_string(scalar: &str) -> bool {
        scalar.starts_with(['\'', '"', '|', '>']) || !misread_by_yaml11(scalar)
    }

    #[test]
    fn the_resolver_knows_yaml11_types() {
        for s in MISREAD {
            assert!(misread_by_yaml11(s), "{s:?} should resolve to a non-string");
        }
        for s in [
            "wasmgate",
            "yesterday",
            "onward",
            "v1",
            "64Mi",
            "a: b",
            "nan",
        ] {
            assert!(!misread_by_yaml11(s), "{s:?} is a string in YAML 1.1");
        }
    }

    #[test]
    fn every_string_round_trips_as_a_string_for_yaml11_readers() {
        for s in MISREAD.iter().chain(KEPT) {
            let mut map = serde_yaml_ng::Mapping::new();
            map.insert(Value::from("k"), Value::from(*s));
            map.insert(Value::from(*s), Value::from("v"));
            map.insert(Value::from("seq"), Value::Sequence(vec![Value::from(*s)]));
            let doc = Value::Mapping(map);
            let text = document(&doc).unwrap();
            // The YAML 1.2 reader gets back exactly what was written.
            let back: Value = serde_yaml_ng::from_str(&text).unwrap();
            assert_eq!(back, doc, "{s:?} did not round-trip:\n{text}");
            // And no scalar is left plain that a YAML 1.1 reader misreads: as a value, in a
            // sequence and as a key.
            if s.contains('\n') {
                continue;
            }
            let lines: Vec<&str> = text.lines().collect();
            let value = lines[0].strip_prefix("k: ").unwrap();
            assert!(yaml11_reads_string(value), "{s:?} emitted as {value}");
            let item = lines
                .iter()
                .find_map(|l| l.strip_prefix("- "))
                .unwrap_or_else(|| panic!("no sequence item in\n{text}"));
            assert!(yaml11_reads_string(item), "{s:?} emitted as {item}");
            let key = lines[1].strip_suffix(": v").unwrap();
            assert!(yaml11_reads_string(key), "{s:?} emitted as key {key}");
        }
    }

    #[test]
    fn a_string_holding_the_placeholder_prefix_is_left_alone() {
        let doc = Value::Sequence(vec![
            Value::from("wasmgate-quoted-0-end"),
            Value::from("yes"),
        ]);
        let text = document(&doc).unwrap();
        assert_eq!(text, "- wasmgate-quoted-0-end\n- \"yes\"\n");
    }
}
