//! Conversions from the wire's AdmissionRequest to the plugin contract's.

use crate::runtime::{self, AdmissionRequest, WitOperation};
use crate::wire;

/// A review the plugin contract cannot express, so the plugin is not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "operation {0:?} cannot be given to a wasmgate:plugin@0.1.0 plugin (it knows CREATE, UPDATE, DELETE and CONNECT)"
)]
pub struct Unrepresentable(pub String);

/// The operation as the plugin contract spells it. The one place that maps the wire's
/// operation to the contract's: `wasmgate:plugin@0.1.0` has a closed `enum operation`, so an
/// operation it does not list cannot be passed on as it came, and the call is not made (the
/// caller applies the policy's failurePolicy: allowing silently would be a bypass). A contract
/// whose operation has an `other(string)` case makes this total.
pub fn wit_operation(operation: &wire::Operation) -> Result<WitOperation, Unrepresentable> {
    Ok(match operation {
        wire::Operation::Create => WitOperation::Create,
        wire::Operation::Update => WitOperation::Update,
        wire::Operation::Delete => WitOperation::Delete,
        wire::Operation::Connect => WitOperation::Connect,
        wire::Operation::Other(other) => return Err(Unrepresentable(other.clone())),
    })
}

/// Builds the WIT request for a review, with `object` as given (the original, or the object as
/// the previous initializer left it).
pub fn request(
    r: &wire::AdmissionRequest,
    object: Option<String>,
) -> Result<AdmissionRequest, Unrepresentable> {
    Ok(AdmissionRequest {
        uid: r.uid.clone(),
        kind: gvk(&r.kind),
        resource: gvr(&r.resource),
        sub_resource: r.sub_resource.clone(),
        request_kind: r.request_kind.as_ref().map(gvk),
        request_resource: r.request_resource.as_ref().map(gvr),
        request_sub_resource: r.request_sub_resource.clone(),
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        operation: wit_operation(&r.operation)?,
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
    })
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
