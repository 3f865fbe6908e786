//! Owns admission decisions: which policies run for a review, validators in parallel,
//! initializers in order, merging verdicts, and the failure-policy rescue. Must not touch sockets
//! or wasmtime types; plugins are called through [`runtime::Plugin`].

mod convert;
mod explain;
mod merge;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
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
            // A panic in the host's side of one call fails that policy (its failurePolicy
            // applies), as when each call was a task of its own, not the whole connection.
            let call = policy
                .plugin
                .validate(&wit_request, deadline, policy.timeout);
            let result = std::panic::AssertUnwindSafe(call)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(panicked(&*panic)));
            (policy, result, started.elapsed())
        }
    };
    // The validators run together on this task, without a hand-off to other threads: a
    // well-behaved call takes tens of microseconds, less than waking another worker costs. A
    // call waiting in a host call lets the others run meanwhile, and one that runs long (past
    // `runtime::SLOW_AFTER`) moves to the slow lane's threads and goes on there in parallel.
    // join_all keeps file order.
    let results = futures_util::future::join_all(matching.iter().map(|p| call(p.clone()))).await;
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

/// The failure a call that panicked ends with, with the panic's message when it has one.
fn panicked(panic: &(dyn std::any::Any + Send)) -> PluginFailure {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    PluginFailure::Host(format!("the plugin call panicked: {message}"))
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
    // The object as the initializers so far left it, once one has answered with a change.
    let mut changed: Option<Changed> = None;
    let mutable =
        matches!(request.operation, Operation::Create | Operation::Update) && original.is_some();
    let mutable_operation = request.operation.as_str();
    let labels = LazyLabels::default();
    for policy in candidates {
        let matches = policy.matcher.matches(attrs, || match &changed {
            Some(changed) => (
                labels_of_value(&changed.value),
                old_object.and_then(labels_of),
            ),
            None => labels.get(original, old_object),
        });
        if !matches {
            continue;
        }
        let started = Instant::now();
        let object_text = match &mut changed {
            Some(changed) => Some(changed.text().to_owned()),
            None => original.map(str::to_owned),
        };
        let wit_request = Arc::new(convert::request(request, object_text));
        let result = policy
            .plugin
            .initialize(&wit_request, deadline, policy.timeout)
            .await;
        let enforce = policy.mode == Mode::Enforce;
        // A replaced object must be a JSON object of the same apiVersion and kind, a patch must
        // apply and give such an object, and only objects being created or updated can be
        // changed at all. Monitor mode checks a change the same way and does not apply it.
        let result = result.and_then(|mutation| {
            let applied = match mutation.change {
                Change::Replaced(_) | Change::Patched(_) if !mutable => {
                    return Err(PluginFailure::InvalidOutput(format!(
                        "the object of a {mutable_operation} request cannot be changed"
                    )));
                }
                Change::Replaced(text) => {
                    let current = Changed::of(&mut changed, original)?;
                    let value = checked_replacement(&text, &current.value)?;
                    if enforce {
                        current.replace(text, value);
                    }
                    true
                }
                Change::Patched(patch) => {
                    let operations = parse_patch(&patch)?;
                    let current = Changed::of(&mut changed, original)?;
                    if enforce {
                        current.patch(operations, wit_request.object.as_deref())?;
                    } else {
                        checked_patch(&mut current.value.clone(), &operations.0)?;
                    }
                    true
                }
                Change::Unchanged => false,
                Change::Denied(denial) => return Ok((mutation.remarks, Err(denial))),
            };
            Ok((mutation.remarks, Ok(applied)))
        });
        metrics.plugin_call(&policy.name, outcome_label(&result), started.elapsed());
        match result {
            Ok((remarks, decision)) => {
                outcome.remarks(&policy.name, remarks);
                match decision {
                    Ok(true) if !enforce => {
                        tracing::info!(policy = %policy.name, uid = %request.uid, "monitor mode: the initializer's changes were not applied")
                    }
                    Ok(_) => {}
                    Err(denial) => {
                        outcome.denied(policy.mode, &policy.name, denial);
                        if enforce {
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
    if let (true, Some(changed)) = (response.allowed, changed) {
        match changed.json_patch() {
            Ok(Some(bytes)) => response.set_json_patch(&bytes),
            Ok(None) => {}
            Err(e) => {
                return internal_error(&request.uid, format!("cannot encode the JSON patch: {e}"));
            }
        }
    }
    response
}

fn internal_error(uid: &str, message: String) -> AdmissionResponse {
    AdmissionResponse::deny(uid, 500, "InternalError", message)
}

/// The object as the initializers of one review have left it so far: parsed once from the
/// request, then changed in place by each patch (nothing is re-serialized unless a later
/// initializer needs the text), and the answer's JSONPatch made from the plugins' own
/// operations; two whole objects are diffed only when an initializer replaced the object.
struct Changed {
    /// The request's object, as sent.
    original: serde_json::Value,
    /// The object now.
    value: serde_json::Value,
    /// `value` as JSON text, while it is known (after a patch it is written when needed).
    text: Option<String>,
    /// The operations of every patch applied, in order, as long as no initializer replaced
    /// the object: applied in order to the original they give `value`.
    operations: Option<Vec<json_patch::PatchOperation>>,
}

impl Changed {
    /// The current object, parsed from the request's `original` at the first change.
    fn of<'a>(
        changed: &'a mut Option<Changed>,
        original: Option<&str>,
    ) -> Result<&'a mut Changed, PluginFailure> {
        if let Some(changed) = changed {
            return Ok(changed);
        }
        let Some(text) = original else {
            return Err(PluginFailure::InvalidOutput(
                "a change, but the request has no object".into(),
            ));
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            PluginFailure::Host(format!(
                "the gateway cannot read the request's object to apply the change: {e}"
            ))
        })?;
        Ok(changed.insert(Changed {
            original: value.clone(),
            value,
            text: Some(text.to_owned()),
            operations: Some(Vec::new()),
        }))
    }

    /// The object now, as JSON text.
    fn text(&mut self) -> &str {
        self.text.get_or_insert_with(|| self.value.to_string())
    }

    fn replace(&mut self, text: String, value: serde_json::Value) {
        self.value = value;
        self.text = Some(text);
        self.operations = None;
    }

    /// Applies `operations` in place and checks the result as a replacement is checked. On a
    /// failure the object is as before: `json_patch` undoes a patch that does not apply, and
    /// an object whose type or identity a patch changed is read again from `given` (the text
    /// the plugin was given).
    fn patch(
        &mut self,
        operations: json_patch::Patch,
        given: Option<&str>,
    ) -> Result<(), PluginFailure> {
        let before = identity(&self.value);
        json_patch::patch(&mut self.value, &operations.0).map_err(does_not_apply)?;
        if let Err(failure) = check_same_object(&before, &self.value) {
            self.value = match given.map(serde_json::from_str) {
                Some(Ok(value)) => value,
                _ => self.original.clone(),
            };
            return Err(failure);
        }
        self.text = None;
        if let Some(all) = &mut self.operations {
            all.extend(operations.0);
        }
        Ok(())
    }

    /// The answer's JSONPatch from the request's object to this one; `None` when they are
    /// equal (an initializer's patch that changed nothing is no change).
    fn json_patch(self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        if self.value == self.original {
            return Ok(None);
        }
        match self.operations {
            Some(operations) => serde_json::to_vec(&operations).map(Some),
            None => serde_json::to_vec(&json_patch::diff(&self.original, &self.value)).map(Some),
        }
    }
}

fn does_not_apply(e: json_patch::PatchError) -> PluginFailure {
    PluginFailure::InvalidOutput(format!("the patch does not apply: {e}"))
}

/// An initializer's answer as RFC 6902 operations.
fn parse_patch(patch: &str) -> Result<json_patch::Patch, PluginFailure> {
    serde_json::from_str(patch).map_err(|e| {
        PluginFailure::InvalidOutput(format!("the patch is not an RFC 6902 JSON Patch: {e}"))
    })
}

/// Applies an initializer's RFC 6902 patch to `object` in place, and checks the result as a
/// replacement is checked (a JSON object of the same type and identity). A patch that does not
/// apply leaves `object` as it was; one that fails the checks leaves it patched.
fn checked_patch(
    object: &mut serde_json::Value,
    operations: &[json_patch::PatchOperation],
) -> Result<(), PluginFailure> {
    let before = identity(object);
    json_patch::patch(object, operations).map_err(does_not_apply)?;
    check_same_object(&before, object)
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

/// Parses an initializer's replacement and checks that it is still the same kind of object
/// as `before`.
fn checked_replacement(
    text: &str,
    before: &serde_json::Value,
) -> Result<serde_json::Value, PluginFailure> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        PluginFailure::InvalidOutput(format!("the replaced object is not JSON: {e}"))
    })?;
    check_same_object(&identity(before), &value)?;
    Ok(value)
}

/// What must not change of an object: its apiVersion and kind, and [`IDENTITY_FIELDS`].
type Identity = [Option<serde_json::Value>; 7];

fn identity(object: &serde_json::Value) -> Identity {
    let meta = |field: &str| object.get("metadata").and_then(|m| m.get(field)).cloned();
    [
        object.get("apiVersion").cloned(),
        object.get("kind").cloned(),
        meta(IDENTITY_FIELDS[0]),
        meta(IDENTITY_FIELDS[1]),
        meta(IDENTITY_FIELDS[2]),
        meta(IDENTITY_FIELDS[3]),
        meta(IDENTITY_FIELDS[4]),
    ]
}

/// Checks that an initializer's result is a JSON object of the type and identity `before`.
fn check_same_object(before: &Identity, after: &serde_json::Value) -> Result<(), PluginFailure> {
    if !after.is_object() {
        return Err(PluginFailure::InvalidOutput(
            "the replaced object is not a JSON object".into(),
        ));
    }
    let after = identity(after);
    if before[..2] != after[..2] {
        return Err(PluginFailure::InvalidOutput(
            "an initializer may not change the object's apiVersion or kind".into(),
        ));
    }
    // The API server refuses a patch that renames the object or changes its identity, and
    // would blame the user's request; it is the plugin's fault, so it is a plugin failure.
    for (i, field) in IDENTITY_FIELDS.iter().enumerate() {
        if before[i + 2] != after[i + 2] {
            return Err(PluginFailure::InvalidOutput(format!(
                "an initializer may not change metadata.{field}"
            )));
        }
    }
    Ok(())
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

/// `metadata.labels` of a parsed object, as [`labels_of`] reads them from its text.
fn labels_of_value(object: &serde_json::Value) -> Option<Labels> {
    let metadata = object.get("metadata")?.as_object()?;
    match metadata.get("labels") {
        None | Some(serde_json::Value::Null) => Some(Labels::default()),
        Some(labels) => labels
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_a_parsed_object_are_read_as_from_its_text() {
        for text in [
            r#"{"metadata":{"labels":{"a":"1","b":"2"}}}"#,
            r#"{"metadata":{}}"#,
            r#"{"metadata":{"labels":null}}"#,
            r#"{"metadata":{"labels":{}}}"#,
            r#"{"metadata":{"labels":{"a":1}}}"#,
            r#"{"metadata":{"labels":["a"]}}"#,
            r#"{"metadata":null}"#,
            r#"{"metadata":"x"}"#,
            r#"{"kind":"Pod"}"#,
            r#"[1,2]"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(labels_of_value(&value), labels_of(text), "{text}");
        }
    }

    #[test]
    fn a_patch_that_changes_identity_is_undone_and_one_that_changes_nothing_is_no_patch() {
        let original =
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"x":"1"}}}"#;
        let mut changed = None;
        let current = Changed::of(&mut changed, Some(original)).unwrap();
        let rename =
            parse_patch(r#"[{"op":"replace","path":"/metadata/name","value":"b"}]"#).unwrap();
        assert!(current.patch(rename, Some(original)).is_err());
        let same =
            parse_patch(r#"[{"op":"add","path":"/metadata/labels/x","value":"1"}]"#).unwrap();
        current.patch(same, Some(original)).unwrap();
        assert_eq!(changed.unwrap().json_patch().unwrap(), None);
        let mut changed = None;
        let current = Changed::of(&mut changed, Some(original)).unwrap();
        let label =
            parse_patch(r#"[{"op":"add","path":"/metadata/labels/y","value":"2"}]"#).unwrap();
        current.patch(label, Some(original)).unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"x":"1","y":"2"}}}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(current.text()).unwrap(),
            expected
        );
        let patch = changed.unwrap().json_patch().unwrap().unwrap();
        assert_eq!(
            String::from_utf8(patch).unwrap(),
            r#"[{"op":"add","path":"/metadata/labels/y","value":"2"}]"#
        );
    }
}
