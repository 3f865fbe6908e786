//! Matching a request against one policy's rules, namespaces and object selector, with the
//! semantics of admissionregistration.k8s.io/v1 (`predicates/rules/rules.go`,
//! `predicates/object/matcher.go` upstream).

use std::collections::{BTreeMap, HashSet};

use crate::config::{LabelSelector, PolicyEntry, Rule, Scope, SelectorOperator};
use crate::wire::Operation;

/// What routing needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttributes<'a> {
    /// The operation.
    pub operation: Operation,
    /// API group of the resource.
    pub group: &'a str,
    /// API version of the resource.
    pub version: &'a str,
    /// The resource, e.g. `pods`.
    pub resource: &'a str,
    /// The sub-resource, e.g. `status`; empty for the main resource.
    pub sub_resource: &'a str,
    /// The namespace; empty for cluster-scoped objects.
    pub namespace: &'a str,
}

impl RequestAttributes<'_> {
    /// Whether the resource is namespaced. A Namespace object carries its own name in
    /// `namespace` but is cluster-scoped.
    pub fn is_namespaced(&self) -> bool {
        let is_namespace_object = self.group.is_empty() && self.resource == "namespaces";
        !self.namespace.is_empty() && !is_namespace_object
    }
}

/// An object's labels, read lazily: most policies have no object selector.
pub type Labels = BTreeMap<String, String>;

/// A policy's compiled match conditions.
#[derive(Debug, Clone)]
pub struct Matcher {
    rules: Vec<Rule>,
    namespaces: HashSet<String>,
    exclude_namespaces: HashSet<String>,
    object_selector: Option<LabelSelector>,
}

impl Matcher {
    /// Compiles the match conditions of a validated entry.
    pub fn new(entry: &PolicyEntry) -> Self {
        Matcher {
            rules: entry.rules.clone(),
            namespaces: entry.namespaces.iter().cloned().collect(),
            exclude_namespaces: entry.exclude_namespaces.iter().cloned().collect(),
            object_selector: entry
                .object_selector
                .clone()
                .filter(|s| !s.match_labels.is_empty() || !s.match_expressions.is_empty()),
        }
    }

    /// Whether the policy applies. `labels` yields the labels of the new and the old object
    /// (`None` for an absent object); it is called only when the policy has an object selector.
    pub fn matches<F>(&self, attrs: &RequestAttributes<'_>, labels: F) -> bool
    where
        F: FnOnce() -> (Option<Labels>, Option<Labels>),
    {
        if !self.rules.iter().any(|rule| rule_matches(rule, attrs)) {
            return false;
        }
        if attrs.is_namespaced() {
            if self.exclude_namespaces.contains(attrs.namespace) {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.contains(attrs.namespace) {
                return false;
            }
        } else if !self.namespaces.is_empty() {
            return false;
        }
        match &self.object_selector {
            None => true,
            Some(selector) => {
                // As upstream: the selector is tried on the new object and on the old one, and
                // an absent object never matches.
                let (new, old) = labels();
                [new, old]
                    .iter()
                    .flatten()
                    .any(|l| selector_matches(selector, l))
            }
        }
    }
}

fn rule_matches(rule: &Rule, attrs: &RequestAttributes<'_>) -> bool {
    let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
    let scope_ok = match rule.scope {
        Scope::All => true,
        Scope::Namespaced => attrs.is_namespaced(),
        Scope::Cluster => !attrs.is_namespaced(),
    };
    scope_ok
        && rule
            .operations
            .iter()
            .any(|o| o == "*" || o == attrs.operation.as_str())
        && any(&rule.api_groups, attrs.group)
        && any(&rule.api_versions, attrs.version)
        && rule
            .resources
            .iter()
            .any(|r| resource_matches(r, attrs.resource, attrs.sub_resource))
}

/// `pods` matches only the main resource; `pods/status` only that sub-resource; `*` every main
/// resource (no sub-resources); `pods/*` pods and all its sub-resources; `*/scale` the scale
/// sub-resource of anything; `*/*` everything.
fn resource_matches(pattern: &str, resource: &str, sub_resource: &str) -> bool {
    let (res, sub) = match pattern.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (pattern, None),
    };
    let res_ok = res == "*" || res == resource;
    match sub {
        None => res_ok && sub_resource.is_empty(),
        Some("*") => res_ok,
        Some(s) => res_ok && s == sub_resource,
    }
}

fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator {
                SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

#[cfg(test)]
mod tests;
