//! Merging the answers of several policies into one AdmissionResponse: denials in file order,
//! denial codes and warnings and audit annotations checked against what the API server accepts.
//! Plugin output arrives here already bounded (`runtime::output`); the work here is linear in it.

use std::collections::{BTreeMap, HashSet};

use crate::config::{FailurePolicy, Mode};
use crate::runtime::{Denial, PluginFailure, Remarks};
use crate::wire::AdmissionResponse;

/// The longest audit-annotation key the API server accepts (the name part of a qualified name).
const MAX_ANNOTATION_KEY: usize = 63;

/// Characters of warnings the API server passes on to its client unchanged, all together
/// (`truncateAtTotalRunes` in k8s.io/apiserver/pkg/endpoints/filters/warning.go). Past it, the
/// API server cuts every warning to [`WARNING_ITEM_CHARS`] and drops the rest: we do the same
/// cut ourselves, so that what the user sees is what we chose.
pub const WARNING_TOTAL_CHARS: usize = 4096;
/// Characters each warning is cut to once the warnings exceed [`WARNING_TOTAL_CHARS`]
/// (`truncateItemRunes` in the same file).
pub const WARNING_ITEM_CHARS: usize = 256;

/// The answers gathered so far for one review.
pub(super) struct Outcome {
    denials: Vec<(u16, String, String)>,
    warnings: Vec<String>,
    /// The warnings already in `warnings`: de-duplication in constant time per warning.
    seen: HashSet<String>,
    annotations: BTreeMap<String, String>,
}

impl Outcome {
    pub(super) fn new() -> Self {
        Outcome {
            denials: Vec::new(),
            warnings: Vec::new(),
            seen: HashSet::new(),
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
        if !self.seen.contains(&warning) {
            self.seen.insert(warning.clone());
            self.warnings.push(warning);
        }
    }

    /// A policy denied.
    pub(super) fn denied(&mut self, mode: Mode, policy: &str, denial: Denial) {
        match mode {
            Mode::Enforce => self.denials.push((
                denial_code(policy, denial.code),
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
        response.warnings = cut_warnings(self.warnings);
        response.audit_annotations = self.annotations;
        response
    }
}

/// A denial's HTTP code as it may reach the API server: 400-599. Below 400 becomes 400 (what
/// the API server would do itself); above 599 is not an HTTP error status at all and becomes
/// 403, the code of a plain refusal.
fn denial_code(policy: &str, code: u16) -> u16 {
    match code {
        400..=599 => code,
        0..=399 => {
            tracing::warn!(
                policy,
                code,
                "denial code below 400 raised to 400 (a denial must be a client or server error)"
            );
            400
        }
        _ => {
            tracing::warn!(
                policy,
                code,
                "denial code above 599 replaced by 403 (not an HTTP error status)"
            );
            403
        }
    }
}

/// The warnings as the API server will pass them on: unchanged when they hold at most
/// [`WARNING_TOTAL_CHARS`] characters in all; otherwise each is cut to [`WARNING_ITEM_CHARS`]
/// (ending in `…`), they are kept in order while they fit, and a last warning says how many
/// were left out.
pub fn cut_warnings(warnings: Vec<String>) -> Vec<String> {
    let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
    if total <= WARNING_TOTAL_CHARS {
        return warnings;
    }
    // Room for the closing note ("NNNNNN more warnings omitted").
    let budget = WARNING_TOTAL_CHARS - 40;
    let mut kept = Vec::new();
    let mut used = 0;
    let count = warnings.len();
    for warning in warnings {
        let warning = if warning.chars().count() > WARNING_ITEM_CHARS {
            let mut cut: String = warning.chars().take(WARNING_ITEM_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            warning
        };
        let chars = warning.chars().count();
        if used + chars > budget {
            break;
        }
        used += chars;
        kept.push(warning);
    }
    let omitted = count - kept.len();
    if omitted > 0 {
        kept.push(format!(
            "{omitted} more warnings omitted (the API server shows at most {WARNING_TOTAL_CHARS} characters of warnings)"
        ));
    }
    kept
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
    fn denial_codes_stay_in_400_to_599() {
        for (code, sent) in [
            (200, 400),
            (0, 400),
            (404, 404),
            (599, 599),
            (600, 403),
            (999, 403),
        ] {
            let mut o = Outcome::new();
            o.denied(
                Mode::Enforce,
                "p",
                Denial {
                    code,
                    reason: "Custom".into(),
                    message: "no".into(),
                },
            );
            assert_eq!(
                o.into_response("u").status.unwrap().code,
                Some(sent),
                "{code}"
            );
        }
    }

    #[test]
    fn warnings_are_cut_as_the_api_server_would() {
        let short: Vec<String> = (0..10).map(|n| format!("w{n}")).collect();
        assert_eq!(cut_warnings(short.clone()), short);
        let long: Vec<String> = (0..40)
            .map(|n| format!("{n:03}{}", "x".repeat(297)))
            .collect();
        let cut = cut_warnings(long);
        let total: usize = cut.iter().map(|w| w.chars().count()).sum();
        assert!(total <= WARNING_TOTAL_CHARS, "{total}");
        let (last, kept) = cut.split_last().unwrap();
        assert!(
            kept.iter()
                .all(|w| w.chars().count() == WARNING_ITEM_CHARS && w.ends_with('…'))
        );
        assert!(kept[0].starts_with("000x"));
        assert_eq!(
            *last,
            format!(
                "{} more warnings omitted (the API server shows at most 4096 characters of warnings)",
                40 - kept.len()
            )
        );
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
