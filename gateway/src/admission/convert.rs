//! Conversions from the wire's AdmissionRequest to the plugin contract's.

use crate::runtime::{self, AdmissionRequest, WitOperation};
use crate::wire;

/// The operation as the plugin contract spells it: the one place that maps the wire's
/// operation to the contract's. Total: an operation this build does not know (a verb newer than
/// it) goes to the plugin as `other(name)`, spelled as the API server sent it, never as one of the
/// known four. A 0.1.0 plugin, whose `enum operation` has no `other`, is refused the call by the
/// runtime (`UnknownOperation`) and its policy's failurePolicy decides.
pub fn wit_operation(operation: &wire::Operation) -> WitOperation {
    match operation {
        wire::Operation::Create => WitOperation::Create,
        wire::Operation::Update => WitOperation::Update,
        wire::Operation::Delete => WitOperation::Delete,
        wire::Operation::Connect => WitOperation::Connect,
        wire::Operation::Other(other) => WitOperation::Other(other.clone()),
    }
}

/// Builds the WIT request for a review, with `object` as given (the original, or the object as
/// the previous initializer left it).
pub fn request(r: &wire::AdmissionRequest, object: Option<String>) -> AdmissionRequest {
    AdmissionRequest {
        uid: r.uid.clone(),
        kind: gvk(&r.kind),
        resource: gvr(&r.resource),
        sub_resource: r.sub_resource.clone(),
        request_kind: r.request_kind.as_ref().map(gvk),
        request_resource: r.request_resource.as_ref().map(gvr),
        request_sub_resource: r.request_sub_resource.clone(),
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        operation: wit_operation(&r.operation),
        user_info: runtime::UserInfo {
            username: r.user_info.username.clone(),
            uid: r.user_info.uid.clone(),
            groups: r.user_info.groups.clone(),
            extra: r
                .user_info
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        object,
        old_object: r.old_object.as_ref().map(|o| o.get().to_owned()),
        dry_run: r.dry_run.unwrap_or(false),
        options: r.options.as_ref().map(|o| o.get().to_owned()),
    }
}

fn gvk(g: &wire::GroupVersionKind) -> runtime::GroupVersionKind {
    runtime::GroupVersionKind {
        group: g.group.clone(),
        version: g.version.clone(),
        kind: g.kind.clone(),
    }
}

fn gvr(g: &wire::GroupVersionResource) -> runtime::GroupVersionResource {
    runtime::GroupVersionResource {
        group: g.group.clone(),
        version: g.version.clone(),
        resource: g.resource.clone(),
    }
}
