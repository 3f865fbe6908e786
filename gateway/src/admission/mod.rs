//! Owns admission decisions: which policies run for a review, validators in parallel,
//! initializers in order, merging verdicts, and the failure-policy rescue. Must not touch sockets
//! or wasmtime types; plugins are called through [`runtime::Plugin`].

mod convert;
mod explain;
mod merge;
pub mod patch;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::config::{FailurePolicy, Mode, PluginKind};
use crate::policy::{Labels, Policy, PolicySet, RequestAttributes, ResourceRef};
use crate::runtime::{Change, Decision, Plugin, PluginFailure};
use crate::telemetry::Metrics;
use crate::wire::{AdmissionRequest, AdmissionResponse, Operation};

use merge::Outcome;
pub use merge::{valid_annotation_key, valid_warning};
use patch::{Document, PatchFailure};

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
    let given = request.object.as_deref();
    let original = given.map(|o| o.get());
    let old_object = request.old_object.as_deref().map(|o| o.get());
    // The object as the initializers so far left it, once one has answered with a change.
    let mut changed: Option<Changed<'_>> = None;
    let mutable =
        matches!(request.operation, Operation::Create | Operation::Update) && original.is_some();
    let mutable_operation = request.operation.as_str();
    let labels = LazyLabels::default();
    for policy in candidates {
        let matches = policy.matcher.matches(attrs, || match &mut changed {
            Some(changed) => (
                labels_of_document(&mut changed.doc),
                old_object.and_then(labels_of),
            ),
            None => labels.get(original, old_object),
        });
        if !matches {
            continue;
        }
        let started = Instant::now();
        let object_text = match &mut changed {
            Some(changed) => match changed.text() {
                Ok(text) => Some(text.to_owned()),
                Err(e) => {
                    return internal_error(
                        &request.uid,
                        format!("cannot write the changed object for the next initializer: {e}"),
                    );
                }
            },
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
                    let current = Changed::of(&mut changed, given)?;
                    let replacement = checked_replacement(&text, &mut current.doc)?;
                    if enforce {
                        current.replace(text, replacement);
                    }
                    true
                }
                Change::Patched(patch) => {
                    let operations = parse_patch(&patch)?;
                    let current = Changed::of(&mut changed, given)?;
                    if enforce {
                        current.patch(operations)?;
                    } else {
                        checked_patch(&mut current.doc.clone(), &operations.0)?;
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

/// The object as the initializers of one review have left it so far: the request's text with
/// each patch applied where it reaches (`patch::Document`; nothing is parsed whole, and the
/// text is written again only if a later initializer needs it), and the answer's JSONPatch made
/// from the plugins' own operations; two whole objects are diffed only when an initializer
/// replaced the object.
struct Changed<'a> {
    /// The request's object, as sent.
    original: &'a RawValue,
    /// The object now.
    doc: Document<'a>,
    /// `doc` as JSON text, once a later initializer needed it and until the next change.
    text: Option<String>,
    /// The operations of every patch applied, in order, as long as no initializer replaced
    /// the object: applied in order to the original they give `doc`.
    operations: Option<Vec<json_patch::PatchOperation>>,
    /// Whether one of `operations` changed anything.
    changed: bool,
}

impl<'a> Changed<'a> {
    /// The current object, the request's `original` at the first change.
    fn of<'c>(
        changed: &'c mut Option<Changed<'a>>,
        original: Option<&'a RawValue>,
    ) -> Result<&'c mut Changed<'a>, PluginFailure> {
        if let Some(changed) = changed {
            return Ok(changed);
        }
        let Some(original) = original else {
            return Err(PluginFailure::InvalidOutput(
                "a change, but the request has no object".into(),
            ));
        };
        Ok(changed.insert(Changed {
            original,
            doc: Document::new(original),
            text: None,
            operations: Some(Vec::new()),
            changed: false,
        }))
    }

    /// The object now, as JSON text.
    fn text(&mut self) -> Result<&str, serde_json::Error> {
        if self.text.is_none() {
            self.text = Some(self.doc.to_text()?);
        }
        Ok(self.text.as_deref().unwrap_or_default())
    }

    fn replace(&mut self, text: String, replacement: Document<'a>) {
        self.doc = replacement;
        self.text = Some(text);
        self.operations = None;
    }

    /// Applies `operations` and checks the result as a replacement is checked; on a failure
    /// the object is as before.
    fn patch(&mut self, operations: json_patch::Patch) -> Result<(), PluginFailure> {
        if checked_patch(&mut self.doc, &operations.0)? {
            self.changed = true;
            self.text = None;
        }
        if let Some(all) = &mut self.operations {
            all.extend(operations.0);
        }
        Ok(())
    }

    /// The answer's JSONPatch from the request's object to this one; `None` when nothing
    /// changed (every operation put back what was there, or a replacement equals the original).
    fn json_patch(self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        match self.operations {
            Some(_) if !self.changed => Ok(None),
            Some(operations) => serde_json::to_vec(&operations).map(Some),
            None => {
                let original: serde_json::Value = serde_json::from_str(self.original.get())?;
                let value = self.doc.to_value()?;
                if value == original {
                    return Ok(None);
                }
                serde_json::to_vec(&json_patch::diff(&original, &value)).map(Some)
            }
        }
    }
}

fn does_not_apply(failure: PatchFailure) -> PluginFailure {
    match failure {
        PatchFailure::DoesNotApply { .. } => {
            PluginFailure::InvalidOutput(format!("the patch does not apply: {failure}"))
        }
        PatchFailure::Unreadable(e) => unreadable(e),
    }
}

/// The request's object, where a change reaches it, is more than the gateway reads.
fn unreadable(e: serde_json::Error) -> PluginFailure {
    PluginFailure::Host(format!(
        "the gateway cannot read the request's object to apply the change: {e}"
    ))
}

/// An initializer's answer as RFC 6902 operations.
fn parse_patch(patch: &str) -> Result<json_patch::Patch, PluginFailure> {
    serde_json::from_str(patch).map_err(|e| {
        PluginFailure::InvalidOutput(format!("the patch is not an RFC 6902 JSON Patch: {e}"))
    })
}

/// Applies an initializer's RFC 6902 patch to `object`, and checks the result as a replacement
/// is checked (a JSON object of the same type and identity; the identity only when an
/// operation reaches it). On a failure `object` is as it was. Whether anything changed.
fn checked_patch(
    object: &mut Document<'_>,
    operations: &[json_patch::PatchOperation],
) -> Result<bool, PluginFailure> {
    if !operations.iter().any(reaches_identity) {
        // Nor can such a patch make the object something other than an object.
        check_object(object)?;
        return object.apply(operations).map_err(does_not_apply);
    }
    let before = identity(object)?;
    let mut next = object.clone();
    let changed = next.apply(operations).map_err(does_not_apply)?;
    check_same_object(&before, &mut next)?;
    *object = next;
    Ok(changed)
}

/// Whether an operation may change what [`identity`] reads: it writes to (or moves away) the
/// root, `apiVersion`, `kind`, `metadata` or one of [`IDENTITY_FIELDS`].
fn reaches_identity(operation: &json_patch::PatchOperation) -> bool {
    let reaches = |path: &json_patch::jsonptr::Pointer| {
        let mut tokens = path.tokens();
        let Some(first) = tokens.next() else {
            return true;
        };
        match first.decoded().as_ref() {
            "apiVersion" | "kind" => true,
            "metadata" => tokens
                .next()
                .is_none_or(|t| IDENTITY_FIELDS.contains(&t.decoded().as_ref())),
            _ => false,
        }
    };
    match operation {
        json_patch::PatchOperation::Test(_) => false,
        json_patch::PatchOperation::Move(op) => reaches(&op.path) || reaches(&op.from),
        op => reaches(op.path()),
    }
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
fn checked_replacement<'a>(
    text: &str,
    before: &mut Document<'_>,
) -> Result<Document<'a>, PluginFailure> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        PluginFailure::InvalidOutput(format!("the replaced object is not JSON: {e}"))
    })?;
    let mut replacement = Document::of_value(value);
    check_same_object(&identity(before)?, &mut replacement)?;
    Ok(replacement)
}

/// What must not change of an object: its apiVersion and kind, and [`IDENTITY_FIELDS`].
type Identity = [Option<serde_json::Value>; 7];

fn identity(object: &mut Document<'_>) -> Result<Identity, PluginFailure> {
    let mut at = |path: &[&str]| object.get(path).map_err(unreadable);
    Ok([
        at(&["apiVersion"])?,
        at(&["kind"])?,
        at(&["metadata", IDENTITY_FIELDS[0]])?,
        at(&["metadata", IDENTITY_FIELDS[1]])?,
        at(&["metadata", IDENTITY_FIELDS[2]])?,
        at(&["metadata", IDENTITY_FIELDS[3]])?,
        at(&["metadata", IDENTITY_FIELDS[4]])?,
    ])
}

/// An initializer's result must be a JSON object.
fn check_object(after: &Document<'_>) -> Result<(), PluginFailure> {
    if after.is_object() {
        Ok(())
    } else {
        Err(PluginFailure::InvalidOutput(
            "the replaced object is not a JSON object".into(),
        ))
    }
}

/// Checks that an initializer's result is a JSON object of the type and identity `before`.
fn check_same_object(before: &Identity, after: &mut Document<'_>) -> Result<(), PluginFailure> {
    check_object(after)?;
    let after = identity(after)?;
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

/// `metadata.labels` of a changed object, as [`labels_of`] reads them from its text.
fn labels_of_document(object: &mut Document<'_>) -> Option<Labels> {
    let metadata = object.get(&["metadata"]).ok()??;
    match metadata.as_object()?.get("labels") {
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
    fn labels_of_a_changed_object_are_read_as_from_its_text() {
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
            let raw = RawValue::from_string(text.to_owned()).unwrap();
            assert_eq!(
                labels_of_document(&mut Document::new(&raw)),
                labels_of(text),
                "{text}"
            );
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                labels_of_document(&mut Document::of_value(value)),
                labels_of(text),
                "{text}, written by a patch"
            );
        }
    }

    #[test]
    fn a_patch_that_changes_identity_is_undone_and_one_that_changes_nothing_is_no_patch() {
        let original = RawValue::from_string(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"x":"1"}}}"#
                .to_owned(),
        )
        .unwrap();
        let mut changed = None;
        let current = Changed::of(&mut changed, Some(&original)).unwrap();
        let rename =
            parse_patch(r#"[{"op":"replace","path":"/metadata/name","value":"b"}]"#).unwrap();
        let refused = current.patch(rename).unwrap_err().to_string();
        assert!(refused.contains("metadata.name"), "{refused}");
        let same =
            parse_patch(r#"[{"op":"add","path":"/metadata/labels/x","value":"1"}]"#).unwrap();
        current.patch(same).unwrap();
        assert_eq!(current.text().unwrap(), original.get());
        assert_eq!(changed.unwrap().json_patch().unwrap(), None);
        let mut changed = None;
        let current = Changed::of(&mut changed, Some(&original)).unwrap();
        let label =
            parse_patch(r#"[{"op":"add","path":"/metadata/labels/y","value":"2"}]"#).unwrap();
        current.patch(label).unwrap();
        assert_eq!(
            current.text().unwrap(),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","labels":{"x":"1","y":"2"}}}"#
        );
        let patch = changed.unwrap().json_patch().unwrap().unwrap();
        assert_eq!(
            String::from_utf8(patch).unwrap(),
            r#"[{"op":"add","path":"/metadata/labels/y","value":"2"}]"#
        );
    }

    #[test]
    fn a_replaced_object_is_diffed_against_the_request_and_later_patches_apply_to_it() {
        let original = RawValue::from_string(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"x":1}}"#.to_owned(),
        )
        .unwrap();
        let mut changed = None;
        let current = Changed::of(&mut changed, Some(&original)).unwrap();
        let text = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"x":2}}"#;
        let replacement = checked_replacement(text, &mut current.doc).unwrap();
        current.replace(text.to_owned(), replacement);
        let renamed = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"}}"#;
        let refused = checked_replacement(renamed, &mut current.doc).unwrap_err();
        assert!(refused.to_string().contains("metadata.name"), "{refused}");
        let back = parse_patch(r#"[{"op":"replace","path":"/spec/x","value":1}]"#).unwrap();
        current.patch(back).unwrap();
        assert_eq!(
            changed.unwrap().json_patch().unwrap(),
            None,
            "replaced, then patched back to the request's object"
        );
        let mut changed = None;
        let current = Changed::of(&mut changed, Some(&original)).unwrap();
        let replacement = checked_replacement(text, &mut current.doc).unwrap();
        current.replace(text.to_owned(), replacement);
        let patch = changed.unwrap().json_patch().unwrap().unwrap();
        assert_eq!(
            String::from_utf8(patch).unwrap(),
            r#"[{"op":"replace","path":"/spec/x","value":2}]"#
        );
    }
}
