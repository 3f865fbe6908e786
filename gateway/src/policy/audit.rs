//! Routing audit events to a sink: its `audit.k8s.io/v1` Policy rules decide each event's level
//! for that sink (first match wins, no match means None), with the semantics of
//! `apiserver/pkg/audit/policy/checker.go`. Pure decisions on a decoded event: no I/O.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AuditRule, GroupResources, OutputSpec};
use crate::wire::audit::{Event, Level, Stage};

/// What a sink's rules decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    /// The level the sink sees the event at: the rule's level, never more than the event
    /// was recorded at (what the API server did not record cannot be added back).
    pub level: Level,
    /// Whether `metadata.managedFields` is stripped from the objects.
    pub omit_managed_fields: bool,
}

/// A sink's compiled rules.
#[derive(Debug, Clone)]
pub struct AuditRules {
    rules: Vec<CompiledRule>,
    omit_managed_fields: bool,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    rule: AuditRule,
    /// The rule's omitted stages merged with the sink's, as bits of [`Stage::bit`].
    omit_stages: u8,
}

impl AuditRules {
    /// Compiles validated rules; `omit_stages` and `omit_managed_fields` are the sink-wide
    /// settings (the Policy's top-level fields).
    pub fn new(rules: &[AuditRule], omit_stages: &[Stage], omit_managed_fields: bool) -> Self {
        let sink_wide = omit_stages.iter().fold(0, |bits, s| bits | s.bit());
        AuditRules {
            rules: rules
                .iter()
                .map(|rule| CompiledRule {
                    omit_stages: rule.omit_stages.iter().fold(sink_wide, |b, s| b | s.bit()),
                    rule: rule.clone(),
                })
                .collect(),
            omit_managed_fields,
        }
    }

    /// The level this sink sees `event` at, or `None` when it does not see it (no rule matches,
    /// the matching rule's level is None, or its stage is omitted).
    pub fn route(&self, event: &Event) -> Option<Routing> {
        let matched = self.rules.iter().find(|r| rule_matches(&r.rule, event))?;
        if matched.rule.level == Level::None || matched.omit_stages & event.stage.bit() != 0 {
            return None;
        }
        Some(Routing {
            level: matched.rule.level.min(event.level),
            omit_managed_fields: matched
                .rule
                .omit_managed_fields
                .unwrap_or(self.omit_managed_fields),
        })
    }
}

/// `ruleMatches`: every non-empty field must match.
fn rule_matches(rule: &AuditRule, event: &Event) -> bool {
    if !rule.users.is_empty() && !rule.users.contains(&event.user.username) {
        return false;
    }
    if !rule.user_groups.is_empty()
        && !event
            .user
            .groups
            .iter()
            .any(|g| rule.user_groups.contains(g))
    {
        return false;
    }
    if !rule.verbs.is_empty() && !rule.verbs.contains(&event.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return resource_matches(rule, event);
    }
    if !rule.non_resource_urls.is_empty() {
        // Resource requests carry an objectRef; everything else is a non-resource request.
        return event.object_ref.is_none()
            && rule
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(event.path(), spec));
    }
    true
}

/// `pathMatches`: `*`, exact, or a prefix ending in `*`.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

/// `ruleMatchesResource`.
fn resource_matches(rule: &AuditRule, event: &Event) -> bool {
    let Some(oref) = &event.object_ref else {
        return false;
    };
    if !rule.namespaces.is_empty() && !rule.namespaces.contains(&oref.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let combined = if oref.subresource.is_empty() {
        oref.resource.clone()
    } else {
        format!("{}/{}", oref.resource, oref.subresource)
    };
    rule.resources
        .iter()
        .filter(|gr| gr.group == oref.api_group || gr.group == "*")
        .any(|gr| group_resources_match(gr, oref, &combined, &event.verb))
}

/// The name the request itself carries (`attrs.GetName()` upstream: the name in the URL), which
/// is what `resourceNames` match. A create of a main resource is sent to the collection, so it
/// has none, even though the API server fills `objectRef.name` in from the object for the
/// later stages: routing on that would send RequestReceived and ResponseComplete of one
/// request different ways.
fn request_name<'a>(oref: &'a crate::wire::audit::ObjectReference, verb: &str) -> &'a str {
    if verb == "create" && oref.subresource.is_empty() {
        ""
    } else {
        &oref.name
    }
}

fn group_resources_match(
    gr: &GroupResources,
    oref: &crate::wire::audit::ObjectReference,
    combined: &str,
    verb: &str,
) -> bool {
    if gr.resources.is_empty() {
        return true;
    }
    if !gr.resource_names.is_empty()
        && !gr
            .resource_names
            .iter()
            .any(|n| n == request_name(oref, verb))
    {
        return false;
    }
    gr.resources.iter().any(|res| {
        res == combined
            || res == "*"
            || (!oref.subresource.is_empty()
                && res.strip_prefix("*/") == Some(oref.subresource.as_str()))
            || res.strip_suffix("/*") == Some(oref.resource.as_str())
    })
}

/// One audit sink, ready to run: its rules, grants, limits and compiled plugin.
pub struct SinkPolicy<P> {
    /// The sink's name.
    pub name: String,
    /// Which events it sees, at which level.
    pub rules: AuditRules,
    /// The outputs granted to it.
    pub outputs: Vec<OutputSpec>,
    /// The per-call deadline.
    pub timeout: Duration,
    /// Failed calls of one batch before it is dead-lettered.
    pub max_attempts: u32,
    /// Batches delivered at once (each in its own instance); outputs get them in spool order.
    pub in_flight: usize,
    /// The plugin.
    pub plugin: Arc<P>,
}

impl<P> SinkPolicy<P> {
    /// Whether `output` is granted to this sink.
    pub fn grants(&self, output: &str) -> bool {
        self.outputs.iter().any(|o| o.name == output)
    }
}

#[cfg(test)]
mod tests;
