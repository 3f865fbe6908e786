//! Owns the conversions between the contract versions: what the gateway holds (0.2.0) into what
//! a 0.1.0 plugin takes, and a 0.1.0 plugin's answers back into 0.2.0. Plain `From` impls, one
//! per type, as spin's `conversions.rs`; the one partial conversion (an operation 0.1.0 has no
//! name for) is a `TryFrom`.

use super::bindings::{v1, v2};

/// A request a 0.1.0 plugin cannot be given: its `operation` enum has no `other`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {0:?} is unknown to wasmgate:plugin@0.1.0; rebuild the plugin for 0.2.0")]
pub struct UnknownOperation(pub String);

// === requests: 0.2.0 -> 0.1.0 ===

impl TryFrom<&v2::types::Operation> for v1::types::Operation {
    type Error = UnknownOperation;

    fn try_from(op: &v2::types::Operation) -> Result<Self, Self::Error> {
        use v2::types::Operation as O;
        Ok(match op {
            O::Create => Self::Create,
            O::Update => Self::Update,
            O::Delete => Self::Delete,
            O::Connect => Self::Connect,
            O::Other(other) => return Err(UnknownOperation(other.clone())),
        })
    }
}

impl From<&v2::types::GroupVersionKind> for v1::types::GroupVersionKind {
    fn from(g: &v2::types::GroupVersionKind) -> Self {
        Self {
            group: g.group.clone(),
            version: g.version.clone(),
            kind: g.kind.clone(),
        }
    }
}

impl From<&v2::types::GroupVersionResource> for v1::types::GroupVersionResource {
    fn from(g: &v2::types::GroupVersionResource) -> Self {
        Self {
            group: g.group.clone(),
            version: g.version.clone(),
            resource: g.resource.clone(),
        }
    }
}

impl From<&v2::types::UserInfo> for v1::types::UserInfo {
    fn from(u: &v2::types::UserInfo) -> Self {
        Self {
            username: u.username.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: u.extra.clone(),
        }
    }
}

impl TryFrom<&v2::types::AdmissionRequest> for v1::types::AdmissionRequest {
    type Error = UnknownOperation;

    fn try_from(r: &v2::types::AdmissionRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            uid: r.uid.clone(),
            kind: (&r.kind).into(),
            resource: (&r.resource).into(),
            sub_resource: r.sub_resource.clone(),
            request_kind: r.request_kind.as_ref().map(Into::into),
            request_resource: r.request_resource.as_ref().map(Into::into),
            request_sub_resource: r.request_sub_resource.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            operation: (&r.operation).try_into()?,
            user_info: (&r.user_info).into(),
            object: r.object.clone(),
            old_object: r.old_object.clone(),
            dry_run: r.dry_run,
            options: r.options.clone(),
        })
    }
}

// === answers: 0.1.0 -> 0.2.0 ===

impl From<v1::types::Denial> for v2::types::Denial {
    fn from(d: v1::types::Denial) -> Self {
        Self {
            code: d.code,
            reason: d.reason,
            message: d.message,
        }
    }
}

impl From<v1::types::Remarks> for v2::types::Remarks {
    fn from(r: v1::types::Remarks) -> Self {
        Self {
            warnings: r.warnings,
            audit_annotations: r.audit_annotations,
        }
    }
}

impl From<v1::types::Decision> for v2::types::Decision {
    fn from(d: v1::types::Decision) -> Self {
        match d {
            v1::types::Decision::Allowed => Self::Allowed,
            v1::types::Decision::Denied(denial) => Self::Denied(denial.into()),
        }
    }
}

impl From<v1::types::Verdict> for v2::types::Verdict {
    fn from(v: v1::types::Verdict) -> Self {
        Self {
            decision: v.decision.into(),
            remarks: v.remarks.into(),
        }
    }
}

impl From<v1::types::Change> for v2::types::Change {
    fn from(c: v1::types::Change) -> Self {
        match c {
            v1::types::Change::Unchanged => Self::Unchanged,
            v1::types::Change::Replaced(object) => Self::Replaced(object),
            v1::types::Change::Denied(denial) => Self::Denied(denial.into()),
        }
    }
}

impl From<v1::types::Mutation> for v2::types::Mutation {
    fn from(m: v1::types::Mutation) -> Self {
        Self {
            change: m.change.into(),
            remarks: m.remarks.into(),
        }
    }
}

// === audit events: 0.2.0 -> 0.1.0, emissions back ===

impl From<&v2::audit_types::Level> for v1::audit_types::Level {
    fn from(l: &v2::audit_types::Level) -> Self {
        use v2::audit_types::Level as L;
        match l {
            L::None => Self::None,
            L::Metadata => Self::Metadata,
            L::Request => Self::Request,
            L::RequestResponse => Self::RequestResponse,
        }
    }
}

impl From<&v2::audit_types::Stage> for v1::audit_types::Stage {
    fn from(s: &v2::audit_types::Stage) -> Self {
        use v2::audit_types::Stage as S;
        match s {
            S::RequestReceived => Self::RequestReceived,
            S::ResponseStarted => Self::ResponseStarted,
            S::ResponseComplete => Self::ResponseComplete,
            S::Panic => Self::Panic,
        }
    }
}

impl From<&v2::audit_types::ObjectReference> for v1::audit_types::ObjectReference {
    fn from(o: &v2::audit_types::ObjectReference) -> Self {
        Self {
            resource: o.resource.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
            api_group: o.api_group.clone(),
            api_version: o.api_version.clone(),
            resource_version: o.resource_version.clone(),
            subresource: o.subresource.clone(),
        }
    }
}

impl From<&v2::audit_types::Event> for v1::audit_types::Event {
    fn from(e: &v2::audit_types::Event) -> Self {
        Self {
            level: (&e.level).into(),
            audit_id: e.audit_id.clone(),
            stage: (&e.stage).into(),
            request_uri: e.request_uri.clone(),
            verb: e.verb.clone(),
            user: (&e.user).into(),
            impersonated_user: e.impersonated_user.as_ref().map(Into::into),
            source_ips: e.source_ips.clone(),
            user_agent: e.user_agent.clone(),
            object_ref: e.object_ref.as_ref().map(Into::into),
            response_code: e.response_code,
            response_status: e.response_status.clone(),
            request_object: e.request_object.clone(),
            response_object: e.response_object.clone(),
            request_received_timestamp: e.request_received_timestamp.clone(),
            stage_timestamp: e.stage_timestamp.clone(),
            annotations: e.annotations.clone(),
        }
    }
}

impl From<v1::audit_types::Emission> for v2::audit_types::Emission {
    fn from(e: v1::audit_types::Emission) -> Self {
        Self {
            output: e.output,
            line: e.line,
        }
    }
}

// === host imports: 0.1.0 -> 0.2.0 ===

impl From<v1::host::Level> for v2::host::Level {
    fn from(l: v1::host::Level) -> Self {
        use v1::host::Level as L;
        match l {
            L::Trace => Self::Trace,
            L::Debug => Self::Debug,
            L::Info => Self::Info,
            L::Warn => Self::Warn,
            L::Error => Self::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: v2::types::Operation) -> v2::types::AdmissionRequest {
        let gvk = v2::types::GroupVersionKind {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
        };
        let gvr = v2::types::GroupVersionResource {
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
        };
        v2::types::AdmissionRequest {
            uid: "u".into(),
            kind: gvk.clone(),
            resource: gvr.clone(),
            sub_resource: "scale".into(),
            request_kind: Some(gvk),
            request_resource: Some(gvr),
            request_sub_resource: "scale".into(),
            name: "web".into(),
            namespace: "prod".into(),
            operation,
            user_info: v2::types::UserInfo {
                username: "alice".into(),
                uid: "1".into(),
                groups: vec!["dev".into()],
                extra: vec![("k".into(), vec!["v".into()])],
            },
            object: Some("{}".into()),
            old_object: None,
            dry_run: true,
            options: Some("{\"kind\":\"UpdateOptions\"}".into()),
        }
    }

    #[test]
    fn requests_keep_every_field() {
        let v2 = request(v2::types::Operation::Update);
        let v1 = v1::types::AdmissionRequest::try_from(&v2).unwrap();
        assert!(matches!(v1.operation, v1::types::Operation::Update));
        assert_eq!(
            (v1.uid.as_str(), v1.name.as_str(), v1.namespace.as_str()),
            ("u", "web", "prod")
        );
        assert_eq!(v1.kind.kind, "Deployment");
        assert_eq!(v1.request_resource.unwrap().resource, "deployments");
        assert_eq!(
            (v1.sub_resource.as_str(), v1.request_sub_resource.as_str()),
            ("scale", "scale")
        );
        assert_eq!(v1.user_info.extra, vec![("k".into(), vec!["v".into()])]);
        assert_eq!(v1.user_info.groups, ["dev"]);
        assert_eq!(v1.object.as_deref(), Some("{}"));
        assert!(v1.dry_run);
        assert_eq!(v1.options, v2.options);
    }

    #[test]
    fn an_operation_0_1_0_has_no_name_for_is_refused() {
        let v2 = request(v2::types::Operation::Other("PATCH".into()));
        let Err(e) = v1::types::AdmissionRequest::try_from(&v2) else {
            panic!("converted")
        };
        assert_eq!(e, UnknownOperation("PATCH".into()));
    }

    #[test]
    fn answers_keep_every_field() {
        let denial = v1::types::Denial {
            code: 422,
            reason: "Invalid".into(),
            message: "no".into(),
        };
        let remarks = v1::types::Remarks {
            warnings: vec!["w".into()],
            audit_annotations: vec![("k".into(), "v".into())],
        };
        let verdict: v2::types::Verdict = v1::types::Verdict {
            decision: v1::types::Decision::Denied(denial.clone()),
            remarks: remarks.clone(),
        }
        .into();
        let v2::types::Decision::Denied(d) = verdict.decision else {
            panic!("not denied")
        };
        assert_eq!(
            (d.code, d.reason.as_str(), d.message.as_str()),
            (422, "Invalid", "no")
        );
        assert_eq!(verdict.remarks.warnings, ["w"]);
        assert_eq!(
            verdict.remarks.audit_annotations,
            [("k".to_owned(), "v".to_owned())]
        );
        let mutation: v2::types::Mutation = v1::types::Mutation {
            change: v1::types::Change::Replaced("{\"a\":1}".into()),
            remarks,
        }
        .into();
        assert!(matches!(mutation.change, v2::types::Change::Replaced(t) if t == "{\"a\":1}"));
    }
}
