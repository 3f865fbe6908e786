//! Owns the account of which policies a review runs and why the others are skipped, with
//! warnings for rules that can never match: what `wasmgate check --explain` prints (and what a
//! test runner can show beside a failed case). Returns it; prints nothing and runs no plugin.

use std::fmt;

use crate::config::PluginKind;
use crate::policy::{PolicySet, rule_warnings};
use crate::wire::AdmissionRequest;

use super::{attributes, labels_of};

/// Which policies of one kind a review runs, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Validators or initializers.
    pub kind: PluginKind,
    /// Each candidate policy.
    pub policies: Vec<PolicyExplanation>,
}

/// One policy's part of an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyExplanation {
    /// The policy's name.
    pub name: String,
    /// `None` when it matched (and runs); else which rule field or selector failed, and how.
    pub skipped: Option<String>,
    /// Rules of the policy that can never match a built-in resource.
    pub warnings: Vec<String>,
}

impl Explanation {
    /// How many policies matched.
    pub fn matched(&self) -> usize {
        self.policies.iter().filter(|p| p.skipped.is_none()).count()
    }

    /// One line: `2 of 3 validators matched and ran`.
    pub fn summary(&self) -> String {
        format!(
            "{} of {} {}s matched and ran",
            self.matched(),
            self.policies.len(),
            self.kind.world()
        )
    }
}

/// One line per policy (`NAME: matched, ran` or `NAME: skipped: WHY`), then its warnings
/// (`NAME: warning: ...`).
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for policy in &self.policies {
            match &policy.skipped {
                None => writeln!(f, "{}: matched, ran", policy.name)?,
                Some(why) => writeln!(f, "{}: skipped: {why}", policy.name)?,
            }
            for warning in &policy.warnings {
                writeln!(f, "{}: warning: {warning}", policy.name)?;
            }
        }
        Ok(())
    }
}

/// Which of `policies` of `kind` (only the one named `only`, if given) `request` runs, decided
/// exactly as the server decides. `None` when `only` names no policy of that kind.
pub fn explain<P>(
    policies: &PolicySet<P>,
    kind: PluginKind,
    only: Option<&str>,
    request: &AdmissionRequest,
) -> Option<Explanation> {
    let candidates = policies.of_kind(kind, only)?;
    let attrs = attributes(request);
    let labels = || {
        let of = |o: &Option<Box<serde_json::value::RawValue>>| {
            o.as_deref().and_then(|o| labels_of(o.get()))
        };
        (of(&request.object), of(&request.old_object))
    };
    let policies = candidates
        .iter()
        .map(|policy| PolicyExplanation {
            name: policy.name.clone(),
            skipped: policy
                .matcher
                .explain(&attrs, labels)
                .err()
                .map(|skip| policy.matcher.describe(skip, &attrs)),
            warnings: rule_warnings(policy.matcher.rules()),
        })
        .collect();
    Some(Explanation { kind, policies })
}
