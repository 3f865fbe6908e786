//! Turning spooled events into what one sink sees: decode, route by the sink's rules, strip to
//! the level they give (and `managedFields` if asked), and convert to the plugin contract's
//! event type. CPU work on whole batches: run it on the blocking pool.

use std::ops::Range;

use serde_json::value::RawValue;

use super::spool::record::Record;
use crate::policy::audit::{AuditRules, Routing};
use crate::runtime::{self, AuditEvent, AuditLevel, AuditObjectReference, AuditStage};
use crate::wire::audit::{Event, Level, Stage};

/// Events one plugin call gets at most. The API server sends batches of 400; a larger batch
/// (from another client) is delivered in pieces, each with its own place in the cursor.
pub const MAX_EVENTS_PER_CALL: usize = 500;
/// JSON bytes one plugin call gets at most, so that a batch of large objects fits in a sink's
/// default 64 MiB of memory with room for its own copies. A single larger event still goes
/// alone.
pub const MAX_BYTES_PER_CALL: usize = 8 << 20;

/// Where the piece of a record starting at item `start` ends.
pub fn chunk_end(record: &Record, start: usize) -> usize {
    let mut bytes = 0;
    let mut end = start;
    while end < record.len() && end - start < MAX_EVENTS_PER_CALL {
        bytes += record.json(end).len();
        if bytes > MAX_BYTES_PER_CALL && end > start {
            break;
        }
        end += 1;
    }
    end
}

/// A piece of a record, routed for one sink.
#[derive(Debug, Default)]
pub struct Routed {
    /// The events the sink sees, stripped to their level.
    pub events: Vec<Event>,
    /// How many events its rules filtered out.
    pub filtered: usize,
    /// Items that no longer decode (spooled by another version?), with why.
    pub undecodable: Vec<(usize, String)>,
}

/// Routes items `range` of `record` for a sink with `rules`.
pub fn route(rules: &AuditRules, record: &Record, range: Range<usize>) -> Routed {
    let mut routed = Routed::default();
    for i in range {
        let decoded = std::str::from_utf8(record.json(i))
            .map_err(|e| e.to_string())
            .and_then(Event::decode);
        match decoded {
            Err(e) => routed.undecodable.push((i, e)),
            Ok(event) => match route_event(rules, event) {
                None => routed.filtered += 1,
                Some(event) => routed.events.push(event),
            },
        }
    }
    routed
}

/// One decoded event as a sink with `rules` sees it (stripped to its level), or `None` when
/// its rules filter it out.
pub fn route_event(rules: &AuditRules, mut event: Event) -> Option<Event> {
    let routing = rules.route(&event)?;
    strip(&mut event, routing);
    Some(event)
}

/// Annotation key prefixes the API server records at a level above Metadata, with that level.
/// Upstream keeps an annotation in an event only when it was added at or below the event's
/// level (`admission/audit.go`, `attributesRecord.getAnnotations`); the only admission
/// annotation added above Metadata is the mutating webhook's whole JSON patch, at Request
/// (`mutating/dispatcher.go`, `PatchAuditAnnotationPrefix`). Every other annotation is
/// Metadata.
const ANNOTATION_LEVELS: &[(&str, Level)] = &[("patch.webhook.admission.k8s.io/", Level::Request)];

/// The level an annotation was recorded at.
pub fn annotation_level(key: &str) -> Level {
    ANNOTATION_LEVELS
        .iter()
        .find(|(prefix, _)| key.starts_with(prefix))
        .map_or(Level::Metadata, |(_, level)| *level)
}

/// Strips an event to the level its sink sees it at: objects, and annotations recorded above
/// that level (a Secret's patch must not reach a sink that sees Secrets at Metadata).
pub fn strip(event: &mut Event, routing: Routing) {
    event.level = routing.level;
    event
        .annotations
        .retain(|key, _| annotation_level(key) <= routing.level);
    if routing.level < Level::Request {
        event.request_object = None;
    }
    if routing.level < Level::RequestResponse {
        event.response_object = None;
    }
    if routing.omit_managed_fields {
        for raw in [&mut event.request_object, &mut event.response_object]
            .into_iter()
            .flatten()
        {
            if let Some(stripped) = without_managed_fields(raw) {
                *raw = stripped;
            }
        }
    }
}

/// The object without `metadata.managedFields` (also in each of a list's `items`); `None`
/// when there was nothing to remove.
fn without_managed_fields(raw: &RawValue) -> Option<Box<RawValue>> {
    if !raw.get().contains("\"managedFields\"") {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    let strip = |object: &mut serde_json::Value| {
        object
            .get_mut("metadata")
            .and_then(|m| m.as_object_mut())
            .and_then(|m| m.remove("managedFields"))
            .is_some()
    };
    let mut changed = strip(&mut value);
    if let Some(items) = value.get_mut("items").and_then(|i| i.as_array_mut()) {
        for item in items {
            changed |= strip(item);
        }
    }
    changed
        .then(|| serde_json::value::to_raw_value(&value).ok())
        .flatten()
}

/// The plugin contract's view of an event.
pub fn to_wit(event: &Event) -> AuditEvent {
    let user = |u: &crate::wire::UserInfo| runtime::UserInfo {
        username: u.username.clone(),
        uid: u.uid.clone(),
        groups: u.groups.clone(),
        extra: u
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    AuditEvent {
        level: match event.level {
            Level::None => AuditLevel::None,
            Level::Metadata => AuditLevel::Metadata,
            Level::Request => AuditLevel::Request,
            Level::RequestResponse => AuditLevel::RequestResponse,
        },
        audit_id: event.audit_id.clone(),
        stage: match event.stage {
            Stage::RequestReceived => AuditStage::RequestReceived,
            Stage::ResponseStarted => AuditStage::ResponseStarted,
            Stage::ResponseComplete => AuditStage::ResponseComplete,
            Stage::Panic => AuditStage::Panic,
        },
        request_uri: event.request_uri.clone(),
        verb: event.verb.clone(),
        user: user(&event.user),
        impersonated_user: event.impersonated_user.as_ref().map(user),
        source_ips: event.source_ips.clone(),
        user_agent: event.user_agent.clone(),
        object_ref: event.object_ref.as_ref().map(|o| AuditObjectReference {
            resource: o.resource.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            api_group: o.api_group.clone(),
            api_version: o.api_version.clone(),
            resource_version: o.resource_version.clone(),
            subresource: o.subresource.clone(),
        }),
        response_code: event.response_code(),
        response_status: event.response_status.as_ref().map(|r| r.get().to_owned()),
        request_object: event.request_object.as_ref().map(|r| r.get().to_owned()),
        response_object: event.response_object.as_ref().map(|r| r.get().to_owned()),
        request_received_timestamp: event.request_received_timestamp.clone(),
        stage_timestamp: event.stage_timestamp.clone(),
        annotations: event
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::decode(
            &serde_json::json!({
                "level": "RequestResponse", "auditID": "id", "stage": "ResponseComplete",
                "verb": "create", "requestURI": "/api/v1/namespaces/ns/secrets",
                "user": {"username": "u"},
                "objectRef": {"resource": "secrets", "namespace": "ns", "apiVersion": "v1"},
                "requestObject": {"kind": "Secret", "data": {"k": "c2VjcmV0"}},
                "responseObject": {"kind": "Secret", "data": {"k": "c2VjcmV0"}},
                "annotations": {
                    "authorization.k8s.io/decision": "allow",
                    "mutation.webhook.admission.k8s.io/round_0_index_0": "{\"mutated\":true}",
                    "patch.webhook.admission.k8s.io/round_0_index_0":
                        "{\"patch\":[{\"op\":\"add\",\"path\":\"/data/x\",\"value\":\"c2VjcmV0\"}]}",
                },
            })
            .to_string(),
        )
        .unwrap()
    }

    fn keys(event: &Event) -> Vec<&str> {
        event.annotations.keys().map(String::as_str).collect()
    }

    #[test]
    fn annotations_follow_the_level() {
        let at = |level| {
            let mut e = event();
            strip(
                &mut e,
                Routing {
                    level,
                    omit_managed_fields: false,
                },
            );
            e
        };
        let metadata = at(Level::Metadata);
        assert_eq!(
            keys(&metadata),
            [
                "authorization.k8s.io/decision",
                "mutation.webhook.admission.k8s.io/round_0_index_0"
            ],
            "the patch is a Request-level annotation"
        );
        assert!(metadata.request_object.is_none() && metadata.response_object.is_none());
        let request = at(Level::Request);
        assert_eq!(keys(&request).len(), 3);
        assert!(request.request_object.is_some() && request.response_object.is_none());
        assert_eq!(keys(&at(Level::RequestResponse)).len(), 3);
    }
}
