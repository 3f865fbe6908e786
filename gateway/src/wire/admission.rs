//! `admission.k8s.io/v1` and `v1beta1` AdmissionReview, as kube-apiserver sends and reads it.
//! Upstream: `k8s.io/api/admission/v1/types.go`. The envelope and routing metadata are typed;
//! `object`, `oldObject` and `options` stay raw JSON text and are never re-serialized. Unknown
//! fields are ignored, as the API server's own decoder does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The two AdmissionReview versions the API server speaks; a response uses the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewVersion {
    /// `admission.k8s.io/v1`
    V1,
    /// `admission.k8s.io/v1beta1`
    V1beta1,
}

impl ReviewVersion {
    /// The `apiVersion` string of this version.
    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1beta1 => "admission.k8s.io/v1beta1",
        }
    }
}

/// Why a request body is not an AdmissionReview we can answer.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but another kind or group.
    #[error(
        "expected kind AdmissionReview in admission.k8s.io/v1 or admission.k8s.io/v1beta1, got apiVersion {api_version:?} kind {kind:?}"
    )]
    WrongType {
        /// What the body said its apiVersion was.
        api_version: String,
        /// What the body said its kind was.
        kind: String,
    },
    /// The envelope has no `request`.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// The request has no `uid` to echo.
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    /// `object` or `oldObject` is JSON only to a lenient reader (a lone UTF-16 surrogate escape
    /// such as `"\ud800"`), which a plugin's strict parser would refuse.
    #[error("AdmissionReview request.{field} is not valid JSON: {error}")]
    InvalidObject {
        /// `object` or `oldObject`.
        field: &'static str,
        /// What a strict parser says.
        error: serde_json::Error,
    },
}

/// A decoded AdmissionReview request.
#[derive(Debug)]
pub struct AdmissionReview {
    /// The version to answer in.
    pub version: ReviewVersion,
    /// The request itself.
    pub request: AdmissionRequest,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<AdmissionRequest>,
}

impl AdmissionReview {
    /// Decodes a request body. Field names are case-sensitive, unknown fields are ignored.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_slice(body)?;
        let version = match (envelope.api_version.as_str(), envelope.kind.as_str()) {
            ("admission.k8s.io/v1", "AdmissionReview") => ReviewVersion::V1,
            ("admission.k8s.io/v1beta1", "AdmissionReview") => ReviewVersion::V1beta1,
            _ => {
                return Err(DecodeError::WrongType {
                    api_version: envelope.api_version,
                    kind: envelope.kind,
                });
            }
        };
        let request = envelope.request.ok_or(DecodeError::MissingRequest)?;
        if request.uid.is_empty() {
            return Err(DecodeError::MissingUid);
        }
        for (field, raw) in [
            ("object", &request.object),
            ("oldObject", &request.old_object),
        ] {
            if let Some(raw) = raw {
                strictly_json(raw.get())
                    .map_err(|error| DecodeError::InvalidObject { field, error })?;
            }
        }
        Ok(AdmissionReview { version, request })
    }
}

/// The objects are kept as raw text for the plugins, and serde_json's raw reader accepts a lone
/// surrogate escape (`"\ud800"`) that every strict parser, the plugins' included, refuses. The
/// API server never sends one (Go writes non-ASCII as UTF-8), so a scan for a surrogate escape
/// is all the common path pays; only text with one is parsed in full. Nesting deeper than
/// serde_json's 128 levels and numbers beyond f64 are JSON all the same (RFC 8259 leaves their
/// limits to each parser, and the API server nests to 10,000): they are passed on as sent.
fn strictly_json(raw: &str) -> Result<(), serde_json::Error> {
    // Splitting at `\` finds each backslash with the standard library's memchr, far faster
    // than a substring search for `\u`; the text after each one starts `u` and `d8`-`df` for
    // a surrogate escape (an escaped backslash before a `u` gives a false alarm: a full parse).
    let surrogate_escape = raw.split('\\').skip(1).any(|after| {
        matches!(
            after.as_bytes(),
            [
                b'u',
                b'd' | b'D',
                b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F',
                ..,
            ]
        )
    });
    if surrogate_escape {
        serde_json::from_str::<serde_json::Value>(raw)?;
    }
    Ok(())
}

/// `{group, version, kind}`; the core group is `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    #[allow(missing_docs)]
    pub group: String,
    #[serde(default)]
    #[allow(missing_docs)]
    pub version: String,
    #[serde(default)]
    #[allow(missing_docs)]
    pub kind: String,
}

/// `{group, version, resource}`; the core group is `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    #[allow(missing_docs)]
    pub group: String,
    #[serde(default)]
    #[allow(missing_docs)]
    pub version: String,
    #[serde(default)]
    #[allow(missing_docs)]
    pub resource: String,
}

/// The admission operation. A PATCH arrives as `CREATE` or `UPDATE`. Any other string is kept
/// as it came (`Other`), as Kubernetes' own `admission/v1.Operation` (a string type) would: a
/// newer API server may send an operation this build does not know, and only rules with
/// `operations: ["*"]` match it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    /// An operation this build does not know, spelled as it came.
    Other(String),
}

impl Operation {
    /// The wire spelling, e.g. `CREATE`.
    pub fn as_str(&self) -> &str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
            Operation::Other(other) => other,
        }
    }

    /// Parses the wire spelling; case-sensitive, as the API server's constants are.
    pub fn parse(s: &str) -> Self {
        match s {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            other => Operation::Other(other.to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Operation::parse(&s))
    }
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// authentication/v1 UserInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[allow(missing_docs)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// `AdmissionRequest`: routing metadata typed, objects raw.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct AdmissionRequest {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: String,
    #[serde(default)]
    pub request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub request_sub_resource: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object as sent; `None` when absent or JSON `null` (DELETE).
    #[serde(default, deserialize_with = "raw_or_null")]
    pub object: Option<Box<RawValue>>,
    /// The old object; `None` when absent or `null` (CREATE, CONNECT).
    #[serde(default, deserialize_with = "raw_or_null")]
    pub old_object: Option<Box<RawValue>>,
    /// Absent in hand-written reviews; the API server always sets it.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// The operation's options object; `None` when absent or `null`.
    #[serde(default, deserialize_with = "raw_or_null")]
    pub options: Option<Box<RawValue>>,
}

/// A `RawValue` that treats JSON `null` as absent.
fn raw_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok((raw.get() != "null").then_some(raw))
}

/// metav1.Status, as much of it as a webhook answers with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Status {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub status: String,
}

/// `AdmissionResponse`. Build with [`AdmissionResponse::allow`] or [`AdmissionResponse::deny`];
/// the patch can only be set with its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AdmissionResponse {
    /// Echo of `request.uid`.
    pub uid: String,
    /// The decision.
    pub allowed: bool,
    /// Why it was denied; only sent when `allowed` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Standard padded base64 of an RFC 6902 JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Key → value; the API server prefixes keys with the webhook name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    /// Shown to the API client as `Warning` headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// An allowing response for `uid`.
    pub fn allow(uid: impl Into<String>) -> Self {
        AdmissionResponse {
            uid: uid.into(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            audit_annotations: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// A denying response. The API server raises codes below 400 to 400 itself; we do it here
    /// so that what we log is what the user sees.
    #[must_use]
    pub fn deny(uid: impl Into<String>, code: u16, reason: &str, message: String) -> Self {
        let mut response = Self::allow(uid);
        response.allowed = false;
        response.status = Some(Status {
            code: Some(code.max(400)),
            message,
            reason: reason.to_owned(),
            status: "Failure".to_owned(),
        });
        response
    }

    /// Attaches a JSON Patch (the serialized RFC 6902 array). Empty patches are not attached:
    /// the API server treats `[]` as a no-op, and we never send what means nothing.
    pub fn set_json_patch(&mut self, patch_json: &[u8]) {
        use base64::Engine as _;
        if patch_json == b"[]" || patch_json.is_empty() {
            return;
        }
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch_json));
        self.patch_type = Some("JSONPatch");
    }

    /// The base64 patch, if any.
    pub fn patch(&self) -> Option<&str> {
        self.patch.as_deref()
    }

    /// Wraps the response in an AdmissionReview of `version` and serializes it.
    pub fn into_review_json(self, version: ReviewVersion) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            kind: &'static str,
            response: &'a AdmissionResponse,
        }
        let out = Out {
            api_version: version.api_version(),
            kind: "AdmissionReview",
            response: &self,
        };
        // Serializing plain strings, bools and maps of strings cannot fail.
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
