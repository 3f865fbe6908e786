//! Constructors and builders on the generated WIT types: verdicts, mutations, denials,
//! remarks, and JSON access to the request's objects. No host calls.

use serde_json::Value;

use crate::types::{
    AdmissionRequest, Change, Decision, Denial, Mutation, Operation, Remarks, Verdict,
};

// === impl Denial ===

impl Denial {
    /// A `403 Forbidden` denial with `message`, the usual way to refuse a request.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            code: 403,
            reason: "Forbidden".into(),
            message: message.into(),
        }
    }
}

// === impl Remarks ===

impl Remarks {
    /// No warnings and no audit annotations.
    pub fn none() -> Self {
        Self {
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
        }
    }
}

impl Default for Remarks {
    fn default() -> Self {
        Self::none()
    }
}

// === impl Verdict ===

impl Verdict {
    /// Let the request through, with no remarks.
    pub fn allow() -> Self {
        Self {
            decision: Decision::Allowed,
            remarks: Remarks::none(),
        }
    }

    /// Refuse the request with `403 Forbidden` and `message`.
    pub fn deny(message: impl Into<String>) -> Self {
        Self::denied(Denial::forbidden(message))
    }

    /// Refuse the request with a denial of your own (another code or reason).
    pub fn denied(denial: Denial) -> Self {
        Self {
            decision: Decision::Denied(denial),
            remarks: Remarks::none(),
        }
    }

    /// True when the decision is `allowed`.
    pub fn is_allowed(&self) -> bool {
        matches!(self.decision, Decision::Allowed)
    }

    /// Add a warning for the API client (printable UTF-8, keep it under 120 characters).
    #[must_use]
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.remarks.warnings.push(warning.into());
        self
    }

    /// Add an audit annotation (`key`: at most 63 characters of `[A-Za-z0-9._-]`, no `/`).
    #[must_use]
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.remarks
            .audit_annotations
            .push((key.into(), value.into()));
        self
    }
}

// === impl Mutation ===

impl Mutation {
    /// The object is fine as it is.
    pub fn unchanged() -> Self {
        Self {
            change: Change::Unchanged,
            remarks: Remarks::none(),
        }
    }

    /// The complete new object; the host computes the JSONPatch from the old one to this one.
    pub fn replaced(object: &Value) -> Self {
        Self {
            change: Change::Replaced(object.to_string()),
            remarks: Remarks::none(),
        }
    }

    /// What changed, as RFC 6902 operations against the object the plugin was given (a JSON
    /// array such as `[{"op": "add", "path": "/metadata/labels/team", "value": "blue"}]`). The
    /// host applies them to its own copy to check them; one that does not apply is a plugin
    /// failure. Cheaper than [`Mutation::replaced`] for a change to a few fields of a large
    /// object: nothing re-serializes the whole object. [`json_pointer`] escapes path segments.
    pub fn patched(operations: &Value) -> Self {
        Self {
            change: Change::Patched(operations.to_string()),
            remarks: Remarks::none(),
        }
    }

    /// [`Mutation::patched`] with the operations already written as JSON text (e.g. by
    /// `serde_json::to_string` of typed operations), so no `Value` is built for them.
    pub fn patched_text(operations: String) -> Self {
        Self {
            change: Change::Patched(operations),
            remarks: Remarks::none(),
        }
    }

    /// Refuse the request with `403 Forbidden` and `message`; the rest of the chain does not run.
    pub fn deny(message: impl Into<String>) -> Self {
        Self::denied(Denial::forbidden(message))
    }

    /// Refuse the request with a denial of your own (another code or reason).
    pub fn denied(denial: Denial) -> Self {
        Self {
            change: Change::Denied(denial),
            remarks: Remarks::none(),
        }
    }

    /// Add a warning for the API client (printable UTF-8, keep it under 120 characters).
    #[must_use]
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.remarks.warnings.push(warning.into());
        self
    }

    /// Add an audit annotation (`key`: at most 63 characters of `[A-Za-z0-9._-]`, no `/`).
    #[must_use]
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.remarks
            .audit_annotations
            .push((key.into(), value.into()));
        self
    }
}

// === impl AdmissionRequest ===

impl AdmissionRequest {
    /// The incoming object, parsed: `Ok(None)` when there is none (DELETE), `Err` when it is
    /// not JSON. Return that `Err` from the plugin: it is a plugin failure, not a denial.
    pub fn object_json(&self) -> Result<Option<Value>, String> {
        parse_object("object", self.object.as_deref())
    }

    /// The incoming object deserialized into `T`, typically a partial [`crate::view`] that
    /// skips what it does not name: `Ok(None)` when there is none (DELETE), `Err` when it is not
    /// JSON of that shape.
    pub fn object_as<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, String> {
        self.object
            .as_deref()
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|err| format!("the request's object is not JSON: {err}"))
            })
            .transpose()
    }

    /// The incoming object read into the view `T` (a [`crate::view`] or a struct of the same
    /// kind) by [`crate::view::from_str`]: only the members `T` names are read, and reading
    /// stops after the last of them, so a view of `metadata.labels` does not scan the Pod's
    /// spec. `Ok(None)` for DELETE, `Err` when the object does not have that shape.
    pub fn object_view<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, String> {
        self.object
            .as_deref()
            .map(|text| {
                crate::view::from_str(text)
                    .map_err(|err| format!("the request's object is not JSON of that shape: {err}"))
            })
            .transpose()
    }

    /// The API group and kind of what is being admitted, as the request says: `kind` (the
    /// version the object was sent in), else `requestKind`. `None` when the request names no
    /// kind (a hand-written review); then fall back to the object's own `apiVersion`/`kind`,
    /// as [`Self::kind_of`] does. The API server always sets it, also for sub-resources (a
    /// `pods/ephemeralcontainers` update carries a Pod), and it is the API server's word: an
    /// object's own `kind` is whatever the client wrote, and may be missing.
    pub fn admitted_kind(&self) -> Option<(&str, &str)> {
        [Some(&self.kind), self.request_kind.as_ref()]
            .into_iter()
            .flatten()
            .find(|gvk| !gvk.kind.is_empty())
            .map(|gvk| (gvk.group.as_str(), gvk.kind.as_str()))
    }

    /// The group and kind to treat `object` as: [`Self::admitted_kind`], else the object's
    /// own `apiVersion` and `kind`.
    pub fn kind_of<'a>(&'a self, object: &'a Value) -> (&'a str, &'a str) {
        self.admitted_kind()
            .unwrap_or_else(|| (crate::k8s::group(object), crate::k8s::kind(object)))
    }

    /// The existing object (UPDATE and DELETE), parsed like [`Self::object_json`].
    pub fn old_object_json(&self) -> Result<Option<Value>, String> {
        parse_object("old object", self.old_object.as_deref())
    }
}

/// A JSON Pointer (RFC 6901) to `segments`, for the paths of [`Mutation::patched`]: each segment
/// escaped (`~` as `~0`, `/` as `~1`), so `["metadata", "labels", "example.com/team"]` is
/// `/metadata/labels/example.com~1team`.
pub fn json_pointer<S: AsRef<str>>(segments: impl IntoIterator<Item = S>) -> String {
    let mut pointer = String::new();
    for segment in segments {
        pointer.push('/');
        pointer.push_str(&segment.as_ref().replace('~', "~0").replace('/', "~1"));
    }
    pointer
}

fn parse_object(what: &str, text: Option<&str>) -> Result<Option<Value>, String> {
    text.map(|text| {
        serde_json::from_str(text).map_err(|err| format!("the request's {what} is not JSON: {err}"))
    })
    .transpose()
}

// === impl Operation ===

impl Operation {
    /// The admission.k8s.io/v1 spelling: `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or an
    /// operation newer than this contract as the API server spelled it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Other(other) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_is_403_forbidden_with_remarks() {
        let verdict = Verdict::deny("no")
            .with_warning("careful")
            .with_annotation("k", "v");
        assert!(!verdict.is_allowed());
        assert_eq!(
            verdict.decision,
            Decision::Denied(Denial {
                code: 403,
                reason: "Forbidden".into(),
                message: "no".into(),
            })
        );
        assert_eq!(verdict.remarks.warnings, ["careful"]);
        assert_eq!(
            verdict.remarks.audit_annotations,
            [("k".to_string(), "v".to_string())]
        );
    }

    #[test]
    fn replaced_carries_json_text() {
        let object = serde_json::json!({"kind": "Pod"});
        let Change::Replaced(text) = Mutation::replaced(&object).change else {
            panic!("not replaced");
        };
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), object);
    }

    #[test]
    fn patched_carries_the_operations_and_pointers_escape() {
        let ops = serde_json::json!([{"op": "add", "path": json_pointer(["metadata", "labels", "a/b~c"]), "value": "x"}]);
        let Change::Patched(text) = Mutation::patched(&ops).change else {
            panic!("not patched");
        };
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), ops);
        assert_eq!(ops[0]["path"], "/metadata/labels/a~1b~0c");
        assert_eq!(json_pointer(Vec::<&str>::new()), "");
    }

    #[test]
    fn object_json_distinguishes_none_and_garbage() {
        assert_eq!(parse_object("object", None), Ok(None));
        assert_eq!(
            parse_object("object", Some("{\"a\":1}")),
            Ok(Some(serde_json::json!({"a": 1})))
        );
        let err = parse_object("object", Some("nope")).unwrap_err();
        assert!(
            err.starts_with("the request's object is not JSON: "),
            "{err}"
        );
    }
}
