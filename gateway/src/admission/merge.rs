//! Merging the answers of several policies into one AdmissionResponse: denials in file order,
//! warnings and audit annotations checked against what the API server accepts.

use std::collections::BTreeMap;

use crate::config::{FailurePolicy, Mode};
use crate::runtime::{Denial, PluginFailure, Remarks};
use crate::wire::AdmissionResponse;

/// The longest audit-annotation key the API server accepts (the name part of a qualified name).
const MAX_ANNOTATION_KEY: usize = 63;

/// The answers gathered so far for one review.
pub(super) struct Outcome {
    denials: Vec<(u16, String, String)>,
    warnings: Vec<String>,
    annotations: BTreeMap<String, String>,
}

impl Outcome {
    pub(super) fn new() -> Self {
        Outcome {
            denials: Vec::new(),
            warnings: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// A policy's warnings and audit annotations. Annotation keys are prefixed with the policy
    /// name (`<policy>.<key>`) so that two policies cannot collide and the audit log says who
    /// set what; the API server then prefixes the webhook name.
    pub(super) fn remarks(&mut self, policy: &str, remarks: Remarks) {
        for warning in remarks.warnings {
            self.warning(policy, warning);
        }
        for (key, value) in remarks.audit_annotations {
            let full = format!("{policy}.{key}");
            if !valid_annotation_key(&key) || full.len() > MAX_ANNOTATION_KEY {
                tracing::warn!(
                    policy,
                    key,
                    "audit annotation dropped: the key must be 1-63 characters of [A-Za-z0-9._-], alphanumeric at both ends, including the policy-name prefix"
                );
                continue;
            }
            self.annotations.insert(full, value);
        }
    }

    fn warning(&mut self, policy: &str, warning: String) {
        if !valid_warning(&warning) {
            tracing::warn!(
                policy,
                "warning dropped: the API server refuses warnings with control characters"
            );
            return;
        }
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// A policy denied.
    pub(super) fn denied(&mut self, mode: Mode, policy: &str, denial: Denial) {
        match mode {
            Mode::Enforce => self.denials.push((
                denial.code,
                denial.reason,
                format!("{policy}: {}", denial.message),
            )),
            Mode::Monitor => {
                tracing::info!(policy, message = %denial.message, "monitor mode: a deny was turned into a warning");
                self.warning(
                    policy,
                    format!(
                        "policy {policy:?} (monitor mode) would deny: {}",
                        one_line(&denial.message)
                    ),
                );
            }
        }
    }

    /// A policy's plugin failed; its failure policy decides.
    pub(super) fn failed(
        &mut self,
        failure_policy: FailurePolicy,
        policy: &str,
        failure: &PluginFailure,
    ) {
        tracing::warn!(policy, %failure, ?failure_policy, "plugin failure");
        match failure_policy {
            FailurePolicy::Fail => self.denials.push((
                500,
                "InternalError".to_owned(),
                format!("policy {policy:?} failed: plugin {failure}"),
            )),
            FailurePolicy::Ignore => self.warning(
                policy,
                format!(
                    "policy {policy:?} failed and was ignored (failurePolicy Ignore): plugin {}",
                    one_line(&failure.to_string())
                ),
            ),
        }
    }

    /// The response: denied with every denial's message (in file order, the first one's code
    /// and reason) if any policy denied, allowed otherwise.
    pub(super) fn into_response(self, uid: &str) -> AdmissionResponse {
        let mut response = match self.denials.first() {
            None => AdmissionResponse::allow(uid),
            Some((code, reason, _)) => {
                let message = self
                    .denials
                    .iter()
                    .map(|(_, _, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let reason = if reason.is_empty() {
                    "Forbidden"
                } else {
                    reason.as_str()
                };
                AdmissionResponse::deny(uid, *code, reason, message)
            }
        };
        response.warnings = self.warnings;
        response.audit_annotations = self.annotations;
        response
    }
}

/// Warnings become HTTP `Warning` headers; the API server silently drops any with control
/// characters (`NewWarningHeader`), so we drop them visibly instead.
pub fn valid_warning(warning: &str) -> bool {
    !warning.is_empty() && !warning.chars().any(char::is_control)
}

/// An audit-annotation key as the API server accepts it after its `<webhook>/` prefix:
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters, no `/`.
pub fn valid_annotation_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ANNOTATION_KEY
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(message: &str) -> Denial {
        Denial {
            code: 403,
            reason: "Forbidden".into(),
            message: message.into(),
        }
    }

    #[test]
    fn denials_combine_in_order_and_monitor_warns() {
        let mut o = Outcome::new();
        o.denied(Mode::Enforce, "a", denial("first"));
        o.denied(Mode::Monitor, "b", denial("would"));
        o.denied(
            Mode::Enforce,
            "c",
            Denial {
                code: 422,
                reason: "Invalid".into(),
                message: "second".into(),
            },
        );
        let r = o.into_response("u");
        assert!(!r.allowed);
        let status = r.status.unwrap();
        assert_eq!(status.code, Some(403));
        assert_eq!(status.message, "a: first; c: second");
        assert_eq!(
            r.warnings,
            vec![r#"policy "b" (monitor mode) would deny: would"#.to_owned()]
        );
    }

    #[test]
    fn failures_follow_the_failure_policy() {
        let mut o = Outcome::new();
        o.failed(
            FailurePolicy::Ignore,
            "x",
            &PluginFailure::Trap("boom".into()),
        );
        let r = o.into_response("u");
        assert!(r.allowed);
        assert_eq!(
            r.warnings,
            vec![
                r#"policy "x" failed and was ignored (failurePolicy Ignore): plugin trapped: boom"#
                    .to_owned()
            ]
        );
        let mut o = Outcome::new();
        o.failed(
            FailurePolicy::Fail,
            "x",
            &PluginFailure::Trap("boom".into()),
        );
        let r = o.into_response("u");
        assert_eq!(r.status.unwrap().code, Some(500));
    }

    #[test]
    fn remarks_are_checked() {
        let mut o = Outcome::new();
        o.remarks(
            "p",
            Remarks {
                warnings: vec!["ok".into(), "ok".into(), "bad\nline".into()],
                audit_annotations: vec![
                    ("good-key".into(), "v".into()),
                    ("bad/key".into(), "v".into()),
                    ("-x".into(), "v".into()),
                ],
            },
        );
        let r = o.into_response("u");
        assert_eq!(r.warnings, vec!["ok".to_owned()]);
        assert_eq!(
            r.audit_annotations.into_iter().collect::<Vec<_>>(),
            vec![("p.good-key".to_owned(), "v".to_owned())]
        );
    }
}
