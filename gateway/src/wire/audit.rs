//! `audit.k8s.io/v1` (and `v1beta1`) `Event` and `EventList` as the API server's webhook backend
//! sends them, and the audit levels and stages. Upstream: `k8s.io/apiserver/pkg/apis/audit/v1/types.go`.
//!
//! Each item of a list is decoded on its own (kube-core's `DeserializeGuard` idea): a malformed
//! item becomes an error value with its position, and the rest of the list still decodes. Routing
//! metadata is typed; `requestObject`, `responseObject` and `responseStatus` stay raw JSON text.
//! Unknown fields are ignored, as the API server's own decoder does. `v1beta1` events have the
//! same fields plus `timestamp` and `metadata`, which are ignored, so both map onto one [`Event`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::UserInfo;

/// The `apiVersion` of audit events wasmgate writes.
pub const AUDIT_V1: &str = "audit.k8s.io/v1";
/// The older version some API servers and log files still carry.
pub const AUDIT_V1BETA1: &str = "audit.k8s.io/v1beta1";

/// How much of a request an audit policy records, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Level {
    /// Not recorded.
    None,
    /// Metadata only: no request or response object.
    Metadata,
    /// Metadata and the request object.
    Request,
    /// Metadata, the request object and the response object.
    RequestResponse,
}

impl Level {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// The stage of a request an event was generated in. One event per stage per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Stage {
    /// As soon as the request is received, before it is handled.
    RequestReceived,
    /// Response headers sent, body not yet (long-running requests: watch, exec).
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
    /// The handler panicked.
    Panic,
}

impl Stage {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }

    /// A bit unique to this stage, for stage sets.
    pub fn bit(self) -> u8 {
        match self {
            Stage::RequestReceived => 1,
            Stage::ResponseStarted => 2,
            Stage::ResponseComplete => 4,
            Stage::Panic => 8,
        }
    }
}

/// The object a resource request addressed; absent parts are empty strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ObjectReference {
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub uid: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub api_group: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub resource_version: String,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub subresource: String,
}

/// One audit event. Serializes as an `audit.k8s.io/v1` Event with `kind` and `apiVersion`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `Event` when present (list items usually carry no type metadata).
    #[serde(default, deserialize_with = "null_default", skip_serializing)]
    pub kind: String,
    /// `audit.k8s.io/v1` or `v1beta1` when present.
    #[serde(default, deserialize_with = "null_default", skip_serializing)]
    pub api_version: String,
    /// The level the event was recorded at.
    pub level: Level,
    /// Unique per request (it may come from the client's `Audit-ID` header).
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// The stage.
    pub stage: Stage,
    /// Path and query as sent by the client.
    #[serde(rename = "requestURI", default, deserialize_with = "null_default")]
    pub request_uri: String,
    /// Kubernetes verb, or the lower-cased HTTP method for non-resource requests.
    #[serde(default, deserialize_with = "null_default")]
    pub verb: String,
    /// The authenticated user.
    #[serde(default, deserialize_with = "null_default")]
    pub user: UserInfo,
    /// The user impersonated, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    /// Client addresses; all but the last can be forged by the client.
    #[serde(
        rename = "sourceIPs",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub source_ips: Vec<String>,
    /// The client's user agent.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user_agent: String,
    /// The object addressed, for resource requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// The response's metav1.Status, raw.
    #[serde(
        default,
        deserialize_with = "raw_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_status: Option<Box<RawValue>>,
    /// The request object, raw (level Request and above).
    #[serde(
        default,
        deserialize_with = "raw_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_object: Option<Box<RawValue>>,
    /// The response object, raw (level RequestResponse).
    #[serde(
        default,
        deserialize_with = "raw_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_object: Option<Box<RawValue>>,
    /// RFC 3339 with microseconds.
    #[serde(default, deserialize_with = "null_default")]
    pub request_received_timestamp: String,
    /// RFC 3339 with microseconds.
    #[serde(default, deserialize_with = "null_default")]
    pub stage_timestamp: String,
    /// Annotations from authorization, admission and others.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// Why one item of an EventList was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {index}: {message}")]
pub struct ItemError {
    /// The item's 0-based position in `items`.
    pub index: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Why a body is not an EventList at all.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Not JSON, or `items` is not a list.
    #[error("request body is not a valid audit EventList: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but another kind or group.
    #[error(
        "expected kind EventList in audit.k8s.io/v1 or audit.k8s.io/v1beta1, got apiVersion {api_version:?} kind {kind:?}"
    )]
    WrongType {
        /// What the body said its apiVersion was.
        api_version: String,
        /// What the body said its kind was.
        kind: String,
    },
}

/// One item of a decoded list: its raw JSON text (borrowed from the body) and the decoded event
/// or why it could not be decoded.
#[derive(Debug)]
pub struct Item<'a> {
    /// The item exactly as received.
    pub raw: &'a RawValue,
    /// The event, or why the item is unusable.
    pub event: Result<Event, ItemError>,
}

#[derive(Deserialize)]
struct ListEnvelope<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

/// Decodes an EventList body. Each item is decoded on its own; only a body that is not an
/// EventList at all is an error.
pub fn decode_event_list(body: &[u8]) -> Result<Vec<Item<'_>>, ListError> {
    let envelope: ListEnvelope<'_> = serde_json::from_slice(body)?;
    if envelope.kind != "EventList"
        || !(envelope.api_version == AUDIT_V1 || envelope.api_version == AUDIT_V1BETA1)
    {
        return Err(ListError::WrongType {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    }
    Ok(envelope
        .items
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, raw)| Item {
            raw,
            event: Event::decode(raw.get()).map_err(|message| ItemError { index, message }),
        })
        .collect())
}

impl Event {
    /// Decodes one event (a list item or a log line) and checks what the schema alone cannot.
    pub fn decode(text: &str) -> Result<Event, String> {
        let event: Event = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !(event.kind.is_empty() || event.kind == "Event") {
            return Err(format!("kind {:?} is not Event", event.kind));
        }
        if !(event.api_version.is_empty()
            || event.api_version == AUDIT_V1
            || event.api_version == AUDIT_V1BETA1)
        {
            return Err(format!(
                "apiVersion {:?} is neither {AUDIT_V1} nor {AUDIT_V1BETA1}",
                event.api_version
            ));
        }
        if event.audit_id.is_empty() {
            return Err("auditID is empty".into());
        }
        Ok(event)
    }

    /// The HTTP status code in `responseStatus`, if any.
    pub fn response_code(&self) -> Option<u16> {
        #[derive(Deserialize)]
        struct Code {
            #[serde(default)]
            code: Option<i64>,
        }
        let status = self.response_status.as_ref()?;
        let code = serde_json::from_str::<Code>(status.get()).ok()?.code?;
        u16::try_from(code).ok()
    }

    /// The request path without its query, for non-resource URL matching.
    pub fn path(&self) -> &str {
        self.request_uri
            .split_once('?')
            .map_or(self.request_uri.as_str(), |(path, _)| path)
    }

    /// Serializes the event as an `audit.k8s.io/v1` Event, with `kind` and `apiVersion`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Typed<'a> {
            kind: &'static str,
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            #[serde(flatten)]
            event: &'a Event,
        }
        // Strings, maps and already-valid raw JSON cannot fail to serialize.
        serde_json::to_string(&Typed {
            kind: "Event",
            api_version: AUDIT_V1,
            event: self,
        })
        .unwrap_or_default()
    }
}

/// A `RawValue` that treats JSON `null` as absent.
fn raw_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok((raw.get() != "null").then_some(raw))
}

/// A field whose JSON `null` means its default (Go writes `null` for nil slices and maps that
/// lack `omitempty`).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests;
