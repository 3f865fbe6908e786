//! The checks of `k8s.io/pod-security-admission/policy` (v0.36), one function per check
//! version, each a transcription of its Go counterpart (`check_<id>.go`) with the same
//! `ForbiddenReason` and `ForbiddenDetail` strings: the baseline checks in `baseline`, the
//! restricted ones in `restricted`, their shared helpers (`helpers.go`, `visitor.go`) here.
//! Pure functions of the pod: no I/O, no knowledge of versions or levels (that is `registry`).

mod baseline;
mod restricted;

pub use baseline::*;
pub use restricted::*;

use std::collections::BTreeSet;

use wasmgate_sdk::view::pod::{Container, PodMeta, PodSpec};

/// A failed check: what upstream calls `ForbiddenReason` and `ForbiddenDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: String,
    pub detail: String,
}

/// A check's verdict: `None` allows.
pub type Outcome = Option<Forbidden>;

/// What a check sees: the pod's metadata and spec (defaults when absent, as Go's zero values).
pub struct Pod<'a> {
    pub meta: &'a PodMeta,
    pub spec: &'a PodSpec,
}

pub(super) fn forbid(reason: &str, detail: String) -> Outcome {
    Some(Forbidden {
        reason: reason.to_owned(),
        detail,
    })
}

// === helpers.go, visitor.go ===

/// `joinQuote`: `"a", "b"`.
pub(super) fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let inner: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("\"{}\"", inner.join("\", \""))
}

pub(super) fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

/// `container "a"` or `containers "a", "b"`.
pub(super) fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

pub(super) fn sorted(set: &BTreeSet<String>) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

/// `relaxPolicyForUserNamespacePod`: `hostUsers: false`.
pub(super) fn user_namespace(spec: &PodSpec) -> bool {
    spec.host_users == Some(false)
}

pub(super) fn windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().and_then(|os| os.name.as_deref()) == Some("windows")
}

/// `visitContainers`: init containers, containers, ephemeral containers, each in list order.
pub(super) fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    [
        &spec.init_containers,
        &spec.containers,
        &spec.ephemeral_containers,
    ]
    .into_iter()
    .flat_map(|list| list.as_deref().unwrap_or_default())
}

/// Go's `%q` of a string (`strconv.Quote`): double quotes, with `"`, `\` and non-printable
/// characters escaped.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
