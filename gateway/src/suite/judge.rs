//! Compares an admission answer (or an audit sink's lines) with what a case expects, and says
//! both in a few words for the table. Pure: no I/O, no plugin calls.

use std::collections::BTreeMap;

use serde_json::Value;

use super::file::{Expectation, MessageCheck};
use crate::wire::AdmissionResponse;

/// What the gateway answered, in the terms a case checks.
#[derive(Debug)]
pub struct Got {
    /// Allowed or denied.
    pub allowed: bool,
    /// The denial's status code.
    pub code: Option<u16>,
    /// The denial's message.
    pub message: String,
    /// The warnings.
    pub warnings: Vec<String>,
    /// The audit annotations.
    pub audit_annotations: BTreeMap<String, String>,
    /// The JSONPatch operations (empty: no patch).
    pub patch: Vec<Value>,
}

impl Got {
    /// Reads an answer; `Err` when its patch is not base64 of a JSON array (which the server
    /// would have sent as it is).
    pub fn from_response(response: &AdmissionResponse) -> Result<Got, String> {
        use base64::Engine as _;
        let patch = match response.patch() {
            None => Vec::new(),
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("the answer's patch is not base64: {e}"))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("the answer's patch is not a JSON array: {e}"))?
            }
        };
        let status = response.status.clone().unwrap_or_default();
        Ok(Got {
            allowed: response.allowed,
            code: status.code,
            message: status.message,
            warnings: response.warnings.clone(),
            audit_annotations: response.audit_annotations.clone(),
            patch,
        })
    }

    /// A few words for the table: `denied 403: <message>`, `allowed, 2 patch ops`.
    pub fn summary(&self) -> String {
        let mut text = match (self.allowed, self.code) {
            (true, _) => "allowed".to_owned(),
            (false, Some(code)) => format!("denied {code}: {}", self.message),
            (false, None) => format!("denied: {}", self.message),
        };
        if !self.patch.is_empty() {
            text.push_str(&format!(", {}", count(self.patch.len(), "patch op")));
        }
        if !self.warnings.is_empty() {
            text.push_str(&format!(", {}", count(self.warnings.len(), "warning")));
        }
        text
    }
}

/// A few words for the table: `denied containing "x"`, `allowed, patched`.
pub fn expected_summary(expect: &Expectation) -> String {
    let mut text = if expect.allowed {
        "allowed".to_owned()
    } else {
        let mut t = "denied".to_owned();
        if let Some(code) = expect.code {
            t.push_str(&format!(" {code}"));
        }
        if let Some(m) = &expect.message {
            t.push_str(&format!(" {m}"));
        }
        t
    };
    match (&expect.patch, &expect.patched_object) {
        (Some(p), _) if p.is_empty() => text.push_str(", unpatched"),
        (Some(p), _) => text.push_str(&format!(", {}", count(p.len(), "patch op"))),
        (None, Some(_)) => text.push_str(", patched object"),
        (None, None) => {}
    }
    if let Some(w) = &expect.warnings
        && !w.is_empty()
    {
        text.push_str(&format!(", {}", count(w.len(), "warning")));
    }
    text
}

/// `1 warning`, `2 warnings`.
pub(super) fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Every way `got` differs from `expect`, one line each; empty when the case passes.
/// `object` is the request's object, which an expected patched object is computed from.
pub fn judge(expect: &Expectation, got: &Got, object: Option<&Value>) -> Vec<String> {
    let mut misses = Vec::new();
    let verdict = |allowed: bool| if allowed { "allowed" } else { "denied" };
    if expect.allowed != got.allowed {
        let mut line = format!(
            "expected {}, got {}",
            verdict(expect.allowed),
            verdict(got.allowed)
        );
        if !got.allowed {
            line.push_str(&format!(": {:?}", got.message));
        }
        misses.push(line);
    }
    if let Some(check) = &expect.message
        && !got.allowed
        && !check.check(&got.message)
    {
        misses.push(format!(
            "message: expected a message {check}, got {:?}",
            got.message
        ));
    }
    if let Some(code) = expect.code
        && !got.allowed
        && got.code != Some(code)
    {
        misses.push(format!("code: expected {code}, got {:?}", got.code));
    }
    if let Some(warnings) = &expect.warnings
        && *warnings != got.warnings
    {
        misses.push(format!(
            "warnings: expected {warnings:?}, got {:?}",
            got.warnings
        ));
    }
    if let Some(annotations) = &expect.audit_annotations
        && *annotations != got.audit_annotations
    {
        misses.push(format!(
            "auditAnnotations: expected {annotations:?}, got {:?}",
            got.audit_annotations
        ));
    }
    if let Some(patch) = &expect.patch
        && *patch != got.patch
    {
        misses.push(format!(
            "patch: expected {}, got {}",
            Value::Array(patch.clone()),
            Value::Array(got.patch.clone())
        ));
    }
    if let Some(want) = &expect.patched_object {
        match patched(object, &got.patch) {
            Ok(result) if result == *want => {}
            Ok(result) => misses.push(format!(
                "patchedObject: expected {want}, got {result} (the answer's patch: {})",
                Value::Array(got.patch.clone())
            )),
            Err(e) => misses.push(format!("patchedObject: {e}")),
        }
    }
    misses
}

/// The request's object with `patch` applied, as the API server applies the answer's patch.
fn patched(object: Option<&Value>, patch: &[Value]) -> Result<Value, String> {
    let mut object = object
        .cloned()
        .ok_or("the request has no object to patch")?;
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch.to_vec()))
        .map_err(|e| format!("the answer's patch is not a JSON Patch: {e}"))?;
    // `patch_unsafe`: the object is dropped on an error, so nothing needs undoing (and
    // json_patch's undo panics when it cannot undo a move).
    json_patch::patch_unsafe(&mut object, &patch)
        .map_err(|e| format!("the answer's patch does not apply to the object: {e}"))?;
    Ok(object)
}

/// A sink case's expected lines in a few words: `2 lines to alerts`, `no lines`.
pub fn expected_lines_summary(lines: &BTreeMap<String, Vec<MessageCheck>>) -> String {
    lines_summary(
        lines
            .iter()
            .map(|(output, checks)| (output.as_str(), checks.len())),
    )
}

/// The lines a sink wrote, in a few words.
pub fn got_lines_summary(got: &[(String, Vec<String>)]) -> String {
    lines_summary(
        got.iter()
            .map(|(output, lines)| (output.as_str(), lines.len())),
    )
}

fn lines_summary<'a>(counts: impl Iterator<Item = (&'a str, usize)>) -> String {
    let parts: Vec<String> = counts
        .filter(|(_, n)| *n > 0)
        .map(|(output, n)| format!("{n} line{} to {output}", if n == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "no lines".into()
    } else {
        parts.join(", ")
    }
}

/// What differs between the lines a sink was expected to write and those it wrote (`got`, per
/// output): one line per difference, empty when they agree. Every output the sink wrote to
/// must be named, with one check per line, in order.
pub fn judge_lines(
    expected: &BTreeMap<String, Vec<MessageCheck>>,
    got: &[(String, Vec<String>)],
) -> Vec<String> {
    let mut misses = Vec::new();
    let no_lines = Vec::new();
    let outputs = expected
        .keys()
        .map(String::as_str)
        .chain(got.iter().map(|(o, _)| o.as_str()))
        .collect::<std::collections::BTreeSet<_>>();
    for output in outputs {
        let checks = expected.get(output).map_or(&[][..], Vec::as_slice);
        let lines = got
            .iter()
            .find(|(o, _)| o == output)
            .map_or(&no_lines, |(_, l)| l);
        if checks.len() != lines.len() {
            misses.push(format!(
                "output {output}: expected {} line(s), got {}{}",
                checks.len(),
                lines.len(),
                lines.iter().map(|l| format!("\n  {l}")).collect::<String>()
            ));
            continue;
        }
        for (i, (check, line)) in checks.iter().zip(lines).enumerate() {
            if !check.check(line) {
                misses.push(format!(
                    "output {output}, line {}: expected a line {check}, got {line}",
                    i + 1
                ));
            }
        }
    }
    misses
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::suite::MessageCheck;

    fn expect(allowed: bool) -> Expectation {
        Expectation {
            allowed,
            message: None,
            code: None,
            warnings: None,
            audit_annotations: None,
            patch: None,
            patched_object: None,
        }
    }

    fn got(allowed: bool, patch: Vec<Value>) -> Got {
        Got {
            allowed,
            code: (!allowed).then_some(403),
            message: if allowed {
                String::new()
            } else {
                "p: no".into()
            },
            warnings: vec!["careful".into()],
            audit_annotations: BTreeMap::from([("k".into(), "v".into())]),
            patch,
        }
    }

    #[test]
    fn every_difference_is_named() {
        let mut e = expect(false);
        e.message = Some(MessageCheck::Matches(
            regex::Regex::new("^p: yes$").unwrap(),
        ));
        e.code = Some(400);
        e.warnings = Some(vec![]);
        e.audit_annotations = Some(BTreeMap::new());
        let misses = judge(&e, &got(false, vec![]), None);
        assert_eq!(
            misses,
            [
                r#"message: expected a message matching /^p: yes$/, got "p: no""#,
                "code: expected 400, got Some(403)",
                r#"warnings: expected [], got ["careful"]"#,
                r#"auditAnnotations: expected {}, got {"k": "v"}"#,
            ]
        );
        assert!(judge(&expect(false), &got(false, vec![]), None).is_empty());
        assert_eq!(
            judge(&expect(true), &got(false, vec![]), None),
            [r#"expected allowed, got denied: "p: no""#]
        );
    }

    #[test]
    fn a_patched_object_is_the_patch_applied_to_the_request_object() {
        let object = json!({"spec": {"a": 1}});
        let patch = vec![json!({"op": "add", "path": "/spec/b", "value": 2})];
        let mut e = expect(true);
        e.patched_object = Some(json!({"spec": {"a": 1, "b": 2}}));
        assert!(judge(&e, &got(true, patch.clone()), Some(&object)).is_empty());
        e.patched_object = Some(json!({"spec": {"a": 1}}));
        let misses = judge(&e, &got(true, patch.clone()), Some(&object));
        assert_eq!(misses.len(), 1);
        assert!(
            misses[0].starts_with("patchedObject: expected"),
            "{misses:?}"
        );
        e.patch = Some(vec![]);
        assert_eq!(judge(&e, &got(true, patch), Some(&object)).len(), 2);
    }
}
