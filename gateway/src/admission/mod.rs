//! Owns admission decisions: which policies run for a review, validators in parallel,
//! initializers in order, merging verdicts, and the failure-policy rescue. Must not touch sockets
//! or wasmtime types; plugins are called through [`runtime::Plugin`].

mod convert;
mod explain;
mod merge;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use tokio::time::Instant;

use crate::config::{FailurePolicy, Mode, PluginKind};
use crate::policy::{Labels, Policy, PolicySet, RequestAttributes, ResourceRef};
use crate::runtime::{Change, Decision, Plugin, PluginFailure};
use crate::telemetry::Metrics;
use crate::wire::{AdmissionRequest, AdmissionResponse, Operation};

use merge::Outcome;
pub use merge::{valid_annotation_key, valid_warning};

pub use convert::wit_operation;
pub use explain::{Explanation, PolicyExplanation, explain};

/// The plugin-contract form of `request`, with its object as sent.
pub fn wit_request(request: &AdmissionRequest) -> crate::runtime::AdmissionRequest {
    convert::request(
        request,
        request.object.as_deref().map(|o| o.get().to_owned()),
    )
}

/// What the matcher reads of a request: the resource as sent, and as the client asked for it
/// when the API server converted it (`matchPolicy: Equivalent`).
pub fn attributes(request: &AdmissionRequest) -> RequestAttributes<'_> {
    let resource = ResourceRef {
        group: &request.resource.group,
        version: &request.resource.version,
        resource: &request.resource.resource,
        sub_resource: &request.sub_resource,
    };
    let requested = request
        .request_resource
        .as_ref()
        .map(|r| ResourceRef {
            group: &r.group,
            version: &r.version,
            resource: &r.resource,
            sub_resource: &request.request_sub_resource,
        })
        .filter(|r| *r != resource);
    RequestAttributes {
        operation: &request.operation,
        resource,
        requested,
        name: &request.name,
        namespace: &request.namespace,
    }
}

/// A `/validate/{policy}` or `/mutate/{policy}` named a policy that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("no {kind} policy named {name:?}")]
pub struct UnknownPolicy {
    /// `validator` or `initializer`.
    pub kind: &'static str,
    /// The name asked for.
    pub name: String,
}

/// Decides one review: runs the matching policies of `kind` (all of them, or only `only`) and
/// merges their answers into one response for `request.uid`.
pub async fn decide(
    policies: &PolicySet<Plugin>,
    kind: PluginKind,
    only: Option<&str>,
    request: &AdmissionRequest,
    deadline: Instant,
    metrics: &Metrics,
) -> Result<AdmissionResponse, UnknownPolicy> {
    let candidates = policies.of_kind(kind, only).ok_or_else(|| UnknownPolicy {
        kind: kind.world(),
        name: only.unwrap_or_default().to_owned(),
    })?;
    let attrs = attributes(request);
    Ok(match kind {
        PluginKind::Validator => validate(candidates, &attrs, request, deadline, metrics).await,
        PluginKind::Initializer => mutate(candidates, &attrs, request, deadline, metrics).await,
    })
}

/// Every matching validator runs at once; the answer waits for the slowest.
async fn validate(
    candidates: Vec<&Arc<Policy<Plugin>>>,
    attrs: &RequestAttributes<'_>,
    request: &AdmissionRequest,
    deadline: Instant,
    metrics: &Metrics,
) -> AdmissionResponse {
    let labels = LazyLabels::default();
    let object = request.object.as_deref().map(|o| o.get());
    let old_object = request.old_object.as_deref().map(|o| o.get());
    let matching: Vec<_> = candidates
        .into_iter()
        .filter(|p| p.matcher.matches(attrs, || labels.get(object, old_object)))
        .cloned()
        .collect();
    let mut outcome = Outcome::new();
    if matching.is_empty() {
        return outcome.into_response(&request.uid);
    }
    let wit_request = Arc::new(convert::request(request, object.map(str::to_owned)));
    let call = |policy: Arc<Policy<Plugin>>| {
        let wit_request = wit_request.clone();
        async move {
            let started = Instant::now();
            let result = policy
                .plugin
                .validate(&wit_request, deadline, policy.timeout)
                .await;
            (policy, result, started.elapsed())
        }
    };
    // One validator runs on this task; several run each on a task of its own, so that they
    // use every core. join_all keeps file order.
    let results = if let [only] = matching.as_slice() {
        vec![call(only.clone()).await]
    } else {
        let tasks = matching.iter().map(|p| tokio::spawn(call(p.clone())));
        let joined = futures_util::future::join_all(tasks).await;
        joined
            .into_iter()
            .zip(&matching)
            .map(|(joined, policy)| {
                joined.unwrap_or_else(|e| {
                    let failure = PluginFailure::Host(format!("the plugin call panicked: {e}"));
                    (policy.clone(), Err(failure), std::time::Duration::ZERO)
                })
            })
            .collect()
    };
    // Results are merged in file order, whatever order they finished in, so that combined
    // messages are stable.
    for (policy, result, elapsed) in results {
        metrics.plugin_call(&policy.name, outcome_label(&result), elapsed);
        match result {
            Ok(verdict) => {
                outcome.remarks(&policy.name, verdict.remarks);
                if let Decision::Denied(denial) = verdict.decision {
                    outcome.denied(policy.mode, &policy.name, denial);
                }
            }
            Err(failure) => outcome.failed(policy.failure_policy, &policy.name, &failure),
        }
    }
    outcome.into_response(&request.uid)
}

/// Matching initializers run one after another in file order, each on the object as the one
/// before it left it. The response carries one JSONPatch from the original object to the last.
async fn mutate(
    candidates: Vec<&Arc<Policy<Plugin>>>,
    attrs: &RequestAttributes<'_>,
    request: &AdmissionRequest,
    deadline: Instant,
    metrics: &Metrics,
) -> AdmissionResponse {
    let mut outcome = Outcome::new();
    let original = request.object.as_deref().map(|o| o.get());
    let old_object = request.old_object.as_deref().map(|o| o.get());
    // The current object, as JSON text and as a value once an initializer has changed it.
    let mut current: Option<(String, serde_json::Value)> = None;
    let mutable =
        matches!(request.operation, Operation::Create | Operation::Update) && original.is_some();
    let mutable_operation = request.operation.as_str();
    for policy in candidates {
        let object_text = current.as_ref().map(|(t, _)| t.as_str()).or(original);
        let labels = LazyLabels::default();
        if !policy
            .matcher
            .matches(attrs, || labels.get(object_text, old_object))
        {
            continue;
        }
        let started = Instant::now();
        let wit_request = Arc::new(convert::request(request, object_text.map(str::to_owned)));
        let result = policy
            .plugin
            .initialize(&wit_request, deadline, policy.timeout)
            .await;
        // A replaced object must be a JSON object of the same apiVersion and kind, a patch must
        // apply and give such an object, and only objects being created or updated can be
        // changed at all.
        let result = result.and_then(|mutation| {
            let change = match mutation.change {
                Change::Replaced(_) | Change::Patched(_) if !mutable => {
                    return Err(PluginFailure::InvalidOutput(format!(
                        "the object of a {mutable_operation} request cannot be changed"
                    )));
                }
                Change::Replaced(text) => {
                    let value = checked_replacement(&text, object_text)?;
                    Some((text, value))
                }
                Change::Patched(patch) => Some(checked_patch(
                    &patch,
                    object_text,
                    current.as_ref().map(|(_, v)| v),
                )?),
                Change::Unchanged => None,
                Change::Denied(denial) => return Ok((mutation.remarks, Err(denial))),
            };
            Ok((mutation.remarks, Ok(change)))
        });
        metrics.plugin_call(&policy.name, outcome_label(&result), started.elapsed());
        match result {
            Ok((remarks, decision)) => {
                outcome.remarks(&policy.name, remarks);
                match decision {
                    Ok(Some(replaced)) if policy.mode == Mode::Enforce => current = Some(replaced),
                    Ok(Some(_)) => {
                        tracing::info!(policy = %policy.name, uid = %request.uid, "monitor mode: the initializer's changes were not applied")
                    }
                    Ok(None) => {}
                    Err(denial) => {
                        outcome.denied(policy.mode, &policy.name, denial);
                        if policy.mode == Mode::Enforce {
                            break;
                        }
                    }
                }
            }
            Err(failure) => {
                outcome.failed(policy.failure_policy, &policy.name, &failure);
                if policy.failure_policy == FailurePolicy::Fail {
                    break;
                }
            }
        }
    }
    let mut response = outcome.into_response(&request.uid);
    if let (true, Some((_, last)), Some(original)) = (response.allowed, &current, original) {
        match serde_json::from_str::<serde_json::Value>(original) {
            Ok(original) => {
                let patch = json_patch::diff(&original, last);
                match serde_json::to_vec(&patch) {
                    Ok(bytes) => response.set_json_patch(&bytes),
                    Err(e) => {
                        return internal_error(
                            &request.uid,
                            format!("cannot encode the JSON patch: {e}"),
                        );
                    }
                }
            }
            Err(e) => {
                return internal_error(
                    &request.uid,
                    format!("the request's object is not valid JSON: {e}"),
                );
            }
        }
    }
    response
}

fn internal_error(uid: &str, message: String) -> AdmissionResponse {
    AdmissionResponse::deny(uid, 500, "InternalError", message)
}

/// Applies an initializer's RFC 6902 patch to a copy of the object it was given (`before_value`
/// when the host already holds it parsed, else `before`), and checks the result as it checks a
/// replacement. Returns the new object as text and value.
fn checked_patch(
    patch: &str,
    before: Option<&str>,
    before_value: Option<&serde_json::Value>,
) -> Result<(String, serde_json::Value), PluginFailure> {
    let operations: json_patch::Patch = serde_json::from_str(patch).map_err(|e| {
        PluginFailure::InvalidOutput(format!("the patch is not an RFC 6902 JSON Patch: {e}"))
    })?;
    let mut object = match (before_value, before) {
        (Some(value), _) => value.clone(),
        (None, Some(text)) => serde_json::from_str(text).map_err(|e| {
            PluginFailure::InvalidOutput(format!("the patched object is not JSON: {e}"))
        })?,
        (None, None) => {
            return Err(PluginFailure::InvalidOutput(
                "a patch, but the request has no object".into(),
            ));
        }
    };
    json_patch::patch(&mut object, &operations)
        .map_err(|e| PluginFailure::InvalidOutput(format!("the patch does not apply: {e}")))?;
    let text = object.to_string();
    let value = checked_replacement(&text, before)?;
    Ok((text, value))
}

/// What identifies an object: an initializer that changes one of these would make the API
/// server refuse the request (or act on another object).
const IDENTITY_FIELDS: [&str; 5] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generateName",
];

/// Parses an initializer's replacement and checks that it is still the same kind of object.
fn checked_replacement(
    text: &str,
    before: Option<&str>,
) -> Result<serde_json::Value, PluginFailure> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        PluginFailure::InvalidOutput(format!("the replaced object is not JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(PluginFailure::InvalidOutput(
            "the replaced object is not a JSON object".into(),
        ));
    }
    let type_of = |v: &serde_json::Value| (v.get("apiVersion").cloned(), v.get("kind").cloned());
    let before = before.and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
    let Some(before) = before else {
        return Ok(value);
    };
    if type_of(&before) != type_of(&value) {
        return Err(PluginFailure::InvalidOutput(
            "an initializer may not change the object's apiVersion or kind".into(),
        ));
    }
    // The API server refuses a patch that renames the object or changes its identity, and
    // would blame the user's request; it is the plugin's fault, so it is a plugin failure.
    for field in IDENTITY_FIELDS {
        let of = |v: &serde_json::Value| v.get("metadata").and_then(|m| m.get(field)).cloned();
        if of(&before) != of(&value) {
            return Err(PluginFailure::InvalidOutput(format!(
                "an initializer may not change metadata.{field}"
            )));
        }
    }
    Ok(value)
}

fn outcome_label<T>(result: &Result<T, PluginFailure>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(PluginFailure::Deadline(_)) => "deadline",
        Err(PluginFailure::MemoryLimit { .. }) => "memory_limit",
        Err(PluginFailure::Trap(_)) => "trap",
        Err(PluginFailure::Returned(_)) => "error",
        Err(PluginFailure::InvalidOutput(_)) => "invalid_output",
        Err(PluginFailure::Host(_)) => "host_error",
    }
}

/// The labels of the new and old object, parsed at most once per review and only if a policy
/// has an object selector.
#[derive(Default)]
struct LazyLabels(OnceLock<(Option<Labels>, Option<Labels>)>);

impl LazyLabels {
    fn get(
        &self,
        object: Option<&str>,
        old_object: Option<&str>,
    ) -> (Option<Labels>, Option<Labels>) {
        self.0
            .get_or_init(|| (object.and_then(labels_of), old_object.and_then(labels_of)))
            .clone()
    }
}

/// `metadata.labels` of an object's JSON text; no labels is an empty set. `None` for JSON
/// without a `metadata` object (options, unreadable text): upstream's `meta.Accessor` fails on
/// such an object and no selector matches it.
pub fn labels_of(object: &str) -> Option<Labels> {
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Metadata,
    }
    #[derive(serde::Deserialize, Default)]
    struct Metadata {
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    }
    serde_json::from_str::<Object>(object)
        .ok()
        .map(|o| o.metadata.labels.unwrap_or_default())
}
