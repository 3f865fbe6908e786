//! Matching a request against one policy's rules, namespaces and object selector, with the
//! semantics of admissionregistration.k8s.io/v1 (`predicates/rules/rules.go`,
//! `predicates/object/matcher.go` upstream).

use std::collections::{BTreeMap, HashSet};

use crate::config::{LabelSelector, PolicyEntry, Rule, Scope, SelectorOperator};
use crate::wire::Operation;

/// A resource as admission names it: group, version, resource and sub-resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceRef<'a> {
    /// API group of the resource.
    pub group: &'a str,
    /// API version of the resource.
    pub version: &'a str,
    /// The resource, e.g. `pods`.
    pub resource: &'a str,
    /// The sub-resource, e.g. `status`; empty for the main resource.
    pub sub_resource: &'a str,
}

/// What routing needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttributes<'a> {
    /// The operation.
    pub operation: &'a Operation,
    /// The resource the API server sent the request as (`resource`, `subResource`): with
    /// `matchPolicy: Equivalent` possibly converted to the version of the rule that matched.
    pub resource: ResourceRef<'a>,
    /// The resource the client asked for (`requestResource`, `requestSubResource`), when the
    /// API server sent the request as an equivalent one; `None` when they are the same.
    pub requested: Option<ResourceRef<'a>>,
    /// The object's name; for a Namespace object, the namespace it is.
    pub name: &'a str,
    /// The namespace; empty for cluster-scoped objects.
    pub namespace: &'a str,
}

impl RequestAttributes<'_> {
    /// Whether this is a request on a Namespace object (or one of its sub-resources).
    fn is_namespace_object(&self) -> bool {
        self.resource.group.is_empty() && self.resource.resource == "namespaces"
    }

    /// Whether the resource is namespaced. A Namespace object carries its own name in
    /// `namespace` but is cluster-scoped.
    pub fn is_namespaced(&self) -> bool {
        !self.namespace.is_empty() && !self.is_namespace_object()
    }

    /// The namespace that `namespaces`/`excludeNamespaces` judge: the request's namespace, or
    /// for a Namespace object its own name (upstream's namespaceSelector reads a Namespace
    /// object's own labels: `predicates/namespace/matcher.go`, `GetNamespaceLabels`); `None`
    /// for other cluster-scoped objects.
    pub fn selector_namespace(&self) -> Option<&str> {
        if self.is_namespace_object() {
            // On CREATE the URL names no namespace: the name comes from the object.
            return Some(if self.name.is_empty() {
                self.namespace
            } else {
                self.name
            });
        }
        (!self.namespace.is_empty()).then_some(self.namespace)
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

    /// The policy's rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether the policy applies. `labels` yields the labels of the new and the old object
    /// (`None` for an absent object or one without metadata); it is called only when the policy
    /// has an object selector.
    pub fn matches<F>(&self, attrs: &RequestAttributes<'_>, labels: F) -> bool
    where
        F: FnOnce() -> (Option<Labels>, Option<Labels>),
    {
        self.explain(attrs, labels).is_ok()
    }

    /// As [`Matcher::matches`], and when the policy does not apply, which condition failed
    /// (`wasmgate check --explain`; [`Matcher::describe`] words it).
    pub fn explain<F>(&self, attrs: &RequestAttributes<'_>, labels: F) -> Result<(), Skip>
    where
        F: FnOnce() -> (Option<Labels>, Option<Labels>),
    {
        // As the API server with `matchPolicy: Equivalent`: the request as sent (converted to
        // the version of the rule that matched), or as the client asked for it.
        let rules_match = |resource: &ResourceRef<'_>| {
            self.rules
                .iter()
                .any(|rule| rule_mismatch(rule, attrs, resource).is_none())
        };
        if !rules_match(&attrs.resource) && !attrs.requested.as_ref().is_some_and(rules_match) {
            return Err(Skip::Rules);
        }
        match attrs.selector_namespace() {
            Some(namespace) => {
                if self.exclude_namespaces.contains(namespace) {
                    return Err(Skip::ExcludedNamespace);
                }
                if !self.namespaces.is_empty() && !self.namespaces.contains(namespace) {
                    return Err(Skip::NotInNamespaces);
                }
            }
            None if !self.namespaces.is_empty() => return Err(Skip::ClusterScoped),
            None => {}
        }
        match &self.object_selector {
            None => Ok(()),
            // The object of a CONNECT is its options (PodExecOptions, ...), which have no
            // labels: upstream's `meta.Accessor` fails on it and the selector does not match.
            Some(_) if *attrs.operation == Operation::Connect => Err(Skip::Connect),
            Some(selector) => {
                // As upstream (`predicates/object/matcher.go`, `MatchObjectSelector`): the
                // selector is tried on the new object and on the old one, and an absent object
                // (or one without metadata) never matches.
                let (new, old) = labels();
                if [new, old]
                    .iter()
                    .flatten()
                    .any(|l| selector_matches(selector, l))
                {
                    Ok(())
                } else {
                    Err(Skip::ObjectSelector)
                }
            }
        }
    }

    /// Says why a policy was skipped, naming the rule fields and request values that differ.
    pub fn describe(&self, skip: Skip, attrs: &RequestAttributes<'_>) -> String {
        let r = &attrs.resource;
        match skip {
            Skip::Rules => {
                let mut why = Vec::new();
                for (i, rule) in self.rules.iter().enumerate() {
                    let field = rule_mismatch(rule, attrs, r).unwrap_or(RuleField::Resource);
                    why.push(match field {
                        RuleField::Scope => format!(
                            "rules[{i}].scope {:?} (the object is {})",
                            rule.scope,
                            if attrs.is_namespaced() {
                                "namespaced"
                            } else {
                                "cluster-scoped"
                            }
                        ),
                        RuleField::Operation => format!(
                            "rules[{i}].operations {:?} has no {}",
                            rule.operations,
                            attrs.operation.as_str()
                        ),
                        RuleField::Group => format!(
                            "rules[{i}].apiGroups {:?} has no {:?}",
                            rule.api_groups, r.group
                        ),
                        RuleField::Version => format!(
                            "rules[{i}].apiVersions {:?} has no {:?}",
                            rule.api_versions, r.version
                        ),
                        RuleField::Resource => {
                            let asked = if r.sub_resource.is_empty() {
                                r.resource.to_owned()
                            } else {
                                format!("{}/{}", r.resource, r.sub_resource)
                            };
                            format!("rules[{i}].resources {:?} has no {asked:?}", rule.resources)
                        }
                    });
                }
                format!("no rule matches: {}", why.join("; "))
            }
            Skip::ExcludedNamespace => format!(
                "excludeNamespaces has {:?}",
                attrs.selector_namespace().unwrap_or_default()
            ),
            Skip::NotInNamespaces => format!(
                "namespaces does not have {:?}",
                attrs.selector_namespace().unwrap_or_default()
            ),
            Skip::ClusterScoped => {
                "namespaces is set and the object is cluster-scoped (not a Namespace)".into()
            }
            Skip::Connect => {
                "objectSelector never matches CONNECT (its options object has no labels)".into()
            }
            Skip::ObjectSelector => {
                "objectSelector matches neither the new nor the old object's labels".into()
            }
        }
    }
}

/// Why a policy does not apply to a request: the first condition, in the API server's order,
/// that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No rule matches the operation and resource.
    Rules,
    /// The namespace is in `excludeNamespaces`.
    ExcludedNamespace,
    /// `namespaces` is set and does not list the namespace.
    NotInNamespaces,
    /// `namespaces` is set and the object is cluster-scoped.
    ClusterScoped,
    /// An object selector on a CONNECT.
    Connect,
    /// The object selector matches neither object.
    ObjectSelector,
}

/// The first field of a rule that a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleField {
    Scope,
    Operation,
    Group,
    Version,
    Resource,
}

fn rule_mismatch(
    rule: &Rule,
    attrs: &RequestAttributes<'_>,
    resource: &ResourceRef<'_>,
) -> Option<RuleField> {
    let scope_ok = match rule.scope {
        Scope::All => true,
        Scope::Namespaced => attrs.is_namespaced(),
        Scope::Cluster => !attrs.is_namespaced(),
    };
    if !scope_ok {
        Some(RuleField::Scope)
    } else if !listed(&rule.operations, attrs.operation.as_str()) {
        Some(RuleField::Operation)
    } else if !listed(&rule.api_groups, resource.group) {
        Some(RuleField::Group)
    } else if !listed(&rule.api_versions, resource.version) {
        Some(RuleField::Version)
    } else if !resources_match(rule, resource.resource, resource.sub_resource) {
        Some(RuleField::Resource)
    } else {
        None
    }
}

/// Whether `rule` can match a request with one of `operations` on `resource` (of `group`, with
/// `sub_resource`, empty for the main resource), in any version and scope: what the manifests
/// need to know of a policy's rules before any request exists.
pub fn rule_can_match(
    rule: &Rule,
    operations: &[&str],
    group: &str,
    resource: &str,
    sub_resource: &str,
) -> bool {
    rule.operations
        .iter()
        .any(|o| o == "*" || operations.contains(&o.as_str()))
        && listed(&rule.api_groups, group)
        && resources_match(rule, resource, sub_resource)
}

/// Whether `list` (a rule's operations, groups or versions) names `value` or `*`.
fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// Whether any of `rule`'s resources matches `resource` with `sub_resource`.
fn resources_match(rule: &Rule, resource: &str, sub_resource: &str) -> bool {
    rule.resources
        .iter()
        .any(|r| resource_matches(r, resource, sub_resource))
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
