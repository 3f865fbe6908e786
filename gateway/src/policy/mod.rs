//! Owns the compiled policy set: which policies apply to a request (rules, namespaces, object
//! selector), in which order, with which mode and failure policy; and which audit events each
//! audit sink sees, at which level. Pure decisions: no I/O, no Wasm, no HTTP.

pub mod audit;
mod equivalence;
mod lint;
mod matcher;

use std::sync::Arc;
use std::time::Duration;

pub use equivalence::aggregation_conflict;
pub use lint::rule_warnings;
pub use matcher::{Labels, Matcher, RequestAttributes, ResourceRef, Skip, rule_can_match};

use crate::config::{FailurePolicy, Mode, PluginKind};

/// One admission policy, ready to run: its matcher and its compiled plugin.
pub struct Policy<P> {
    /// The policy's name.
    pub name: String,
    /// Validator or initializer.
    pub kind: PluginKind,
    /// When it applies.
    pub matcher: Matcher,
    /// Enforce or monitor.
    pub mode: Mode,
    /// What a plugin failure does.
    pub failure_policy: FailurePolicy,
    /// The per-call deadline.
    pub timeout: Duration,
    /// The plugin that decides.
    pub plugin: Arc<P>,
}

/// All policies of one snapshot, by kind and in file order.
pub struct PolicySet<P> {
    validators: Vec<Arc<Policy<P>>>,
    initializers: Vec<Arc<Policy<P>>>,
}

impl<P> PolicySet<P> {
    /// Groups `policies` by kind, keeping their order.
    pub fn new(policies: Vec<Policy<P>>) -> Self {
        let (mut validators, mut initializers) = (Vec::new(), Vec::new());
        for policy in policies {
            match policy.kind {
                PluginKind::Validator => validators.push(Arc::new(policy)),
                PluginKind::Initializer => initializers.push(Arc::new(policy)),
            }
        }
        PolicySet {
            validators,
            initializers,
        }
    }

    /// The policies of `kind`, in file order; only the one named `only` if given.
    /// `None` when `only` names no policy of that kind.
    pub fn of_kind<'a>(
        &'a self,
        kind: PluginKind,
        only: Option<&str>,
    ) -> Option<Vec<&'a Arc<Policy<P>>>> {
        let all = match kind {
            PluginKind::Validator => &self.validators,
            PluginKind::Initializer => &self.initializers,
        };
        match only {
            None => Some(all.iter().collect()),
            Some(name) => all.iter().find(|p| p.name == name).map(|p| vec![p]),
        }
    }

    /// Every policy, validators first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy<P>>> {
        self.validators.iter().chain(self.initializers.iter())
    }

    /// How many policies there are.
    pub fn len(&self) -> usize {
        self.validators.len() + self.initializers.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
