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

/// The annotation the API server's truncate backend sets on an event it cut down
/// (`k8s.io/apiserver/plugin/pkg/audit/truncate`).
pub const TRUNCATED_ANNOTATION: &str = "audit.k8s.io/truncated";

/// Cuts an event down as the API server's truncate backend does: `requestObject` and
/// `responseObject` dropped, annotation `audit.k8s.io/truncated: "true"` added; every other
/// field kept. `text` must be a JSON object (a decoded [`Event`]).
pub fn truncate_event(text: &str) -> Result<String, String> {
    let mut event: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    event.remove("requestObject");
    event.remove("responseObject");
    let annotations = event
        .entry("annotations")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !annotations.is_object() {
        *annotations = serde_json::Value::Object(Default::default());
    }
    if let Some(map) = annotations.as_object_mut() {
        map.insert(TRUNCATED_ANNOTATION.into(), "true".into());
    }
    serde_json::to_string(&event).map_err(|e| e.to_string())
}

/// Takes the items of an EventList as [`decode_event_list_streaming`] finds them.
pub trait ItemSink {
    /// The list's `kind` and `apiVersion` are known to be an EventList's: before its first
    /// item when they come first (as the API server writes them), else after the last.
    fn verified(&mut self) -> Result<(), String>;
    /// Item `index`, exactly as received (not yet checked to be an event). An `Err` stops the
    /// decoding with that message.
    fn item(&mut self, index: usize, raw: Box<RawValue>) -> Result<(), String>;
}

/// Why a streamed EventList stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The body is not an EventList.
    #[error(transparent)]
    List(#[from] ListError),
    /// The sink stopped it.
    #[error("{0}")]
    Stopped(String),
}

/// Decodes an EventList from `reader` one item at a time, handing each to `sink` as it is
/// read: the list is never held whole, so memory stays at one item, whatever the list. Returns
/// the number of items.
pub fn decode_event_list_streaming(
    reader: impl std::io::Read,
    sink: &mut impl ItemSink,
) -> Result<usize, StreamError> {
    decode_event_list_from(serde_json::Deserializer::from_reader(reader), sink)
}

/// [`decode_event_list_streaming`] of a body held whole: the same items handed to `sink` the
/// same way, decoded from memory (serde_json reads an `io::Read` one call per byte: a tenth of
/// the gateway's CPU under audit load).
pub fn decode_event_list_slice(
    body: &[u8],
    sink: &mut impl ItemSink,
) -> Result<usize, StreamError> {
    decode_event_list_from(serde_json::Deserializer::from_slice(body), sink)
}

fn decode_event_list_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    sink: &mut impl ItemSink,
) -> Result<usize, StreamError> {
    let mut state = StreamState {
        sink,
        kind: None,
        api_version: None,
        verified: false,
        items: 0,
        stopped: None,
        wrong: None,
    };
    let decoded = de
        .deserialize_map(EnvelopeVisitor(&mut state))
        .and_then(|()| de.end());
    if let Some(wrong) = state.wrong.take() {
        return Err(StreamError::List(wrong));
    }
    if let Some(message) = state.stopped.take() {
        return Err(StreamError::Stopped(message));
    }
    decoded.map_err(ListError::Json)?;
    if !state.verified {
        state.verify()?;
        state.sink.verified().map_err(StreamError::Stopped)?;
    }
    Ok(state.items)
}

struct StreamState<'s, S> {
    sink: &'s mut S,
    kind: Option<String>,
    api_version: Option<String>,
    verified: bool,
    items: usize,
    /// Set when the sink stops the decoding (the deserializer's error says only "custom").
    stopped: Option<String>,
    /// Set when the type fields are wrong.
    wrong: Option<ListError>,
}

impl<S: ItemSink> StreamState<'_, S> {
    fn verify(&self) -> Result<(), ListError> {
        let kind = self.kind.as_deref().unwrap_or_default();
        let api_version = self.api_version.as_deref().unwrap_or_default();
        if kind != "EventList" || !(api_version == AUDIT_V1 || api_version == AUDIT_V1BETA1) {
            return Err(ListError::WrongType {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            });
        }
        Ok(())
    }

    /// Once both type fields are known, checks them and tells the sink.
    fn check_type<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.verified || self.kind.is_none() || self.api_version.is_none() {
            return Ok(());
        }
        if let Err(e) = self.verify() {
            let error = E::custom(&e);
            self.wrong = Some(e);
            return Err(error);
        }
        self.verified = true;
        self.sink.verified().map_err(|m| self.stop(m))
    }

    fn stop<E: serde::de::Error>(&mut self, message: String) -> E {
        let error = E::custom(&message);
        self.stopped = Some(message);
        error
    }
}

struct EnvelopeVisitor<'a, 's, S>(&'a mut StreamState<'s, S>);

impl<'de, S: ItemSink> serde::de::Visitor<'de> for EnvelopeVisitor<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an audit EventList object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "kind" => {
                    state.kind = Some(map.next_value::<Option<String>>()?.unwrap_or_default());
                    state.check_type()?;
                }
                "apiVersion" => {
                    state.api_version =
                        Some(map.next_value::<Option<String>>()?.unwrap_or_default());
                    state.check_type()?;
                }
                "items" => map.next_value_seed(ItemsSeed(&mut *state))?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ItemsSeed<'a, 's, S>(&'a mut StreamState<'s, S>);

impl<'de, S: ItemSink> serde::de::DeserializeSeed<'de> for ItemsSeed<'_, '_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: ItemSink> serde::de::Visitor<'de> for ItemsSeed<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of audit events")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            let index = state.items;
            state.items += 1;
            if let Err(message) = state.sink.item(index, raw) {
                return Err(state.stop(message));
            }
        }
        Ok(())
    }
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
