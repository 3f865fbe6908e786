//! The test-suite file (`kind: TestSuite`): its YAML schema and its validation into cases ready
//! to run, each with the AdmissionReview body it sends. Errors name the file, line and reason
//! with the policy file's own error type and line finder. Reads the suite and the review files
//! it names; must not load policies or call plugins.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{API_VERSION, ConfigError, locate};

/// The kind of wasmgate test-suite files.
pub const KIND: &str = "TestSuite";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuiteFile {
    api_version: String,
    kind: String,
    /// Free metadata, as in a policy file; `name` names the suite in the table.
    #[serde(default)]
    metadata: Option<Value>,
    /// The policy file, relative to the suite.
    policy: String,
    /// The cluster state `context:` grants read: a file of objects (relative to the suite), or
    /// the objects themselves.
    #[serde(default)]
    cluster: Option<Value>,
    cases: Vec<CaseSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaseSpec {
    name: String,
    #[serde(default)]
    endpoint: Option<Endpoint>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    request: Option<RequestSpec>,
    /// An audit-sink case: the sink (by name) the events are delivered to.
    #[serde(default)]
    sink: Option<String>,
    /// The audit events (audit.k8s.io/v1 Event) of a sink case, one batch.
    #[serde(default)]
    events: Option<Vec<Value>>,
    expect: ExpectSpec,
}

/// Which webhook a case calls, as `/validate` and `/mutate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/validate`: the validators.
    Validate,
    /// `/mutate`: the initializers.
    Mutate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestSpec {
    /// A whole AdmissionReview (JSON, or YAML by its extension), relative to the suite.
    #[serde(default)]
    review: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    kind: Option<Gvk>,
    #[serde(default)]
    resource: Option<Gvr>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Gvk {
    #[serde(default)]
    group: String,
    version: String,
    kind: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Gvr {
    #[serde(default)]
    group: String,
    version: String,
    resource: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectSpec {
    #[serde(default)]
    allowed: Option<bool>,
    /// A sink case's lines, per output.
    #[serde(default)]
    lines: Option<BTreeMap<String, Vec<MessageSpec>>>,
    #[serde(default)]
    message: Option<MessageSpec>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
    #[serde(default)]
    audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    patch: Option<Vec<Value>>,
    #[serde(default)]
    patched_object: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageSpec {
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    matches: Option<String>,
}

/// A suite ready to run.
#[derive(Debug)]
pub struct Suite {
    /// The suite file, as given.
    pub file: PathBuf,
    /// `metadata.name`, else the file's path.
    pub name: String,
    /// The policy file the cases run against.
    pub policy_file: PathBuf,
    /// The cases, in file order.
    pub cases: Vec<Case>,
    /// The cluster state the policies' `context:` grants read; `None`: no cluster access.
    pub cluster: Option<crate::context::file::Objects>,
}

/// One case: the request it sends and what it expects.
#[derive(Debug)]
pub struct Case {
    /// Its name, unique in the suite.
    pub name: String,
    /// The line of its `- name:` in the suite file.
    pub line: Option<usize>,
    /// The endpoint it asked for; `None`: the one the policy file's policies give.
    pub endpoint: Option<Endpoint>,
    /// Only this policy (as `/validate/{policy}`).
    pub policy: Option<String>,
    /// The AdmissionReview sent, as the API server would send it.
    pub body: Vec<u8>,
    /// The request's object, which an expected `patchedObject` is the patch applied to.
    pub object: Option<Value>,
    /// What is expected (of an admission case; unused by a sink case).
    pub expect: Expectation,
    /// An audit-sink case: no admission request (`body` is empty), its events and lines.
    pub sink: Option<SinkCase>,
}

/// An audit-sink case: a batch of audit events delivered to one sink, and its expected lines.
#[derive(Debug)]
pub struct SinkCase {
    /// The sink's name in the policy file.
    pub sink: String,
    /// The events, as JSON (the API server's audit.k8s.io/v1 Events).
    pub events: Vec<String>,
    /// Per output, the lines expected there, one check each, in order. An output not named
    /// expects no line.
    pub lines: BTreeMap<String, Vec<MessageCheck>>,
}

/// What a case expects of the answer. `None`: not checked.
#[derive(Debug)]
pub struct Expectation {
    /// Allowed or denied.
    pub allowed: bool,
    /// The denial's message.
    pub message: Option<MessageCheck>,
    /// The denial's status code.
    pub code: Option<u16>,
    /// The warnings, exactly and in order.
    pub warnings: Option<Vec<String>>,
    /// The audit annotations, exactly.
    pub audit_annotations: Option<BTreeMap<String, String>>,
    /// The JSONPatch of the answer, exactly (`[]`: no patch).
    pub patch: Option<Vec<Value>>,
    /// The request's object with the answer's patch applied.
    pub patched_object: Option<Value>,
}

/// How a message is checked.
#[derive(Debug)]
pub enum MessageCheck {
    /// Contains this text.
    Contains(String),
    /// Matches this regular expression (anywhere in the message, unless anchored).
    Matches(regex::Regex),
}

impl Expectation {
    /// Nothing expected: the placeholder of a sink case, which expects lines instead.
    fn none() -> Expectation {
        Expectation {
            allowed: false,
            message: None,
            code: None,
            warnings: None,
            audit_annotations: None,
            patch: None,
            patched_object: None,
        }
    }
}

impl MessageCheck {
    /// Whether `message` passes.
    pub fn check(&self, message: &str) -> bool {
        match self {
            MessageCheck::Contains(text) => message.contains(text.as_str()),
            MessageCheck::Matches(re) => re.is_match(message),
        }
    }
}

impl std::fmt::Display for MessageCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageCheck::Contains(text) => write!(f, "containing {text:?}"),
            MessageCheck::Matches(re) => write!(f, "matching /{}/", re.as_str()),
        }
    }
}

impl Suite {
    /// Reads and validates the suite `file`, and the review files its cases name.
    pub fn load(file: &Path) -> Result<Suite, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: None,
            message: format!("cannot read test suite: {e}"),
        })?;
        Self::parse(file, &text)
    }

    /// Validates the text of a suite located at `file` (paths resolve relative to it).
    pub fn parse(file: &Path, text: &str) -> Result<Suite, ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError {
            file: file.to_owned(),
            line,
            message,
        };
        let parsed: SuiteFile =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::yaml(file, &e))?;
        if parsed.api_version != API_VERSION || parsed.kind != KIND {
            return Err(err(
                locate::key_line(text, "apiVersion"),
                format!(
                    "expected apiVersion {API_VERSION} and kind {KIND}, got {:?} and {:?}",
                    parsed.api_version, parsed.kind
                ),
            ));
        }
        if parsed.cases.is_empty() {
            return Err(err(
                locate::key_line(text, "cases"),
                "a suite needs at least one case".into(),
            ));
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let cluster = match parsed.cluster {
            None => None,
            Some(Value::String(path)) => Some(crate::context::file::load(&base.join(path))),
            Some(Value::Array(objects)) => Some(crate::context::file::group(objects)),
            Some(_) => Some(Err(
                "expected a file of objects (relative to the suite) or a list of objects".into(),
            )),
        }
        .transpose()
        .map_err(|e| err(locate::key_line(text, "cluster"), format!("cluster: {e}")))?;
        let mut seen = HashSet::new();
        let mut cases = Vec::with_capacity(parsed.cases.len());
        for (index, spec) in parsed.cases.into_iter().enumerate() {
            let line = locate::section_entry_line(text, "cases", &spec.name);
            let at = |key: Option<&str>, message: String| {
                let line = key
                    .and_then(|k| locate::key_line_after(text, line.map(|l| l - 1), k))
                    .or(line);
                err(line, format!("case {:?}: {message}", spec.name))
            };
            if spec.name.trim().is_empty() {
                return Err(at(None, "the name is empty".into()));
            }
            if !seen.insert(spec.name.clone()) {
                return Err(at(None, "the name is used twice".into()));
            }
            if let Some(sink) = spec.sink {
                cases.push(Case {
                    name: spec.name.clone(),
                    line,
                    endpoint: None,
                    policy: None,
                    body: Vec::new(),
                    object: None,
                    expect: Expectation::none(),
                    sink: Some(sink_case(
                        sink,
                        spec.events,
                        spec.request.is_some() || spec.endpoint.is_some() || spec.policy.is_some(),
                        spec.expect,
                        &at,
                    )?),
                });
                continue;
            }
            if spec.events.is_some() || spec.expect.lines.is_some() {
                let key = if spec.events.is_some() {
                    "events"
                } else {
                    "lines"
                };
                return Err(at(
                    Some(key),
                    format!("{key} belongs to an audit-sink case: name its sink with sink: <name>"),
                ));
            }
            let Some(request_spec) = spec.request else {
                return Err(at(
                    None,
                    "missing field `request` (or `sink` and `events` for an audit-sink case)"
                        .into(),
                ));
            };
            let expect = expectation(spec.expect, &at)?;
            if spec.endpoint == Some(Endpoint::Validate)
                && (expect.patch.is_some() || expect.patched_object.is_some())
            {
                return Err(at(
                    Some("endpoint"),
                    "patch and patchedObject are answers of initializers: this case calls endpoint validate".into(),
                ));
            }
            let uid = format!("wasmgate-test-{:04}", index + 1);
            let (body, object) = request(base, request_spec, &uid, &at)?;
            cases.push(Case {
                name: spec.name.clone(),
                line,
                endpoint: spec.endpoint,
                policy: spec.policy,
                body,
                object,
                expect,
                sink: None,
            });
        }
        Ok(Suite {
            cluster,
            file: file.to_owned(),
            name: parsed
                .metadata
                .as_ref()
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map_or_else(|| file.display().to_string(), str::to_owned),
            policy_file: base.join(parsed.policy),
            cases,
        })
    }
}

type At<'a> = dyn Fn(Option<&str>, String) -> ConfigError + 'a;

/// A sink case from its parts, refusing what belongs to admission cases.
fn sink_case(
    sink: String,
    events: Option<Vec<Value>>,
    has_request: bool,
    expect: ExpectSpec,
    at: &At<'_>,
) -> Result<SinkCase, ConfigError> {
    if has_request {
        return Err(at(
            Some("sink"),
            "an audit-sink case has events, not request, endpoint or policy".into(),
        ));
    }
    let admission = [
        ("allowed", expect.allowed.is_some()),
        ("message", expect.message.is_some()),
        ("code", expect.code.is_some()),
        ("warnings", expect.warnings.is_some()),
        ("auditAnnotations", expect.audit_annotations.is_some()),
        ("patch", expect.patch.is_some()),
        ("patchedObject", expect.patched_object.is_some()),
    ];
    if let Some((key, _)) = admission.iter().find(|(_, set)| *set) {
        return Err(at(
            Some(key),
            format!("{key} is an admission answer: an audit-sink case expects lines"),
        ));
    }
    let Some(events) = events.filter(|e| !e.is_empty()) else {
        return Err(at(
            Some("sink"),
            "an audit-sink case needs events (at least one audit.k8s.io/v1 Event)".into(),
        ));
    };
    let Some(lines) = expect.lines else {
        return Err(at(
            Some("expect"),
            "an audit-sink case expects lines: {<output>: [checks]} ({} for none)".into(),
        ));
    };
    let lines = lines
        .into_iter()
        .map(|(output, checks)| {
            let checks = checks
                .into_iter()
                .map(|c| message_check(c, "lines", at))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((output, checks))
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(SinkCase {
        sink,
        events: events.iter().map(Value::to_string).collect(),
        lines,
    })
}

/// A `{contains: ...}` or `{matches: ...}` check.
fn message_check(spec: MessageSpec, key: &str, at: &At<'_>) -> Result<MessageCheck, ConfigError> {
    match spec {
        MessageSpec {
            contains: Some(text),
            matches: None,
        } => Ok(MessageCheck::Contains(text)),
        MessageSpec {
            contains: None,
            matches: Some(pattern),
        } => Ok(MessageCheck::Matches(regex::Regex::new(&pattern).map_err(
            |e| {
                at(
                    Some("matches"),
                    format!("{key}.matches is not a regular expression: {e}"),
                )
            },
        )?)),
        _ => Err(at(
            Some(key),
            format!("{key} takes exactly one of contains or matches"),
        )),
    }
}

fn expectation(spec: ExpectSpec, at: &At<'_>) -> Result<Expectation, ConfigError> {
    let Some(allowed) = spec.allowed else {
        return Err(at(
            Some("expect"),
            "missing field `allowed` in expect".into(),
        ));
    };
    if allowed && (spec.message.is_some() || spec.code.is_some()) {
        let key = if spec.message.is_some() {
            "message"
        } else {
            "code"
        };
        return Err(at(
            Some(key),
            format!("{key} describes a denial, but the case expects allowed: true"),
        ));
    }
    if let Some(code) = spec.code
        && !(400..=599).contains(&code)
    {
        return Err(at(
            Some("code"),
            format!(
                "code {code}: a denial's code is between 400 and 599 (the API server raises lower codes to 400)"
            ),
        ));
    }
    let message = match spec.message {
        None => None,
        Some(spec) => Some(message_check(spec, "message", at)?),
    };
    Ok(Expectation {
        allowed,
        message,
        code: spec.code,
        warnings: spec.warnings,
        audit_annotations: spec.audit_annotations,
        patch: spec.patch,
        patched_object: spec.patched_object,
    })
}

/// The AdmissionReview body of a case, and its request's object.
fn request(
    base: &Path,
    spec: RequestSpec,
    uid: &str,
    at: &At<'_>,
) -> Result<(Vec<u8>, Option<Value>), ConfigError> {
    if let Some(review) = &spec.review {
        let others = [
            ("object", spec.object.is_some()),
            ("oldObject", spec.old_object.is_some()),
            ("operation", spec.operation.is_some()),
            ("namespace", spec.namespace.is_some()),
            ("name", spec.name.is_some()),
            ("user", spec.user.is_some()),
            ("groups", spec.groups.is_some()),
            ("subResource", spec.sub_resource.is_some()),
            ("dryRun", spec.dry_run.is_some()),
            ("kind", spec.kind.is_some()),
            ("resource", spec.resource.is_some()),
        ];
        if let Some((key, _)) = others.iter().find(|(_, set)| *set) {
            return Err(at(
                Some("review"),
                format!(
                    "request.review is a whole AdmissionReview: give it or {key} and the other request fields, not both"
                ),
            ));
        }
        return review_file(&base.join(review), at);
    }
    let operation = match spec.operation.as_deref() {
        Some(op @ ("CREATE" | "UPDATE" | "DELETE" | "CONNECT")) => op.to_owned(),
        Some(other) => {
            return Err(at(
                Some("operation"),
                format!("operation {other:?} is not one of CREATE, UPDATE, DELETE, CONNECT"),
            ));
        }
        // As the API server sends them: CREATE has an object, UPDATE both, DELETE the old one.
        None => match (&spec.object, &spec.old_object) {
            (Some(_), None) => "CREATE".into(),
            (Some(_), Some(_)) => "UPDATE".into(),
            (None, Some(_)) => "DELETE".into(),
            (None, None) => {
                return Err(at(
                    Some("request"),
                    "the request needs an object, an oldObject or a review".into(),
                ));
            }
        },
    };
    match operation.as_str() {
        "CREATE" | "UPDATE" if spec.object.is_none() => {
            return Err(at(
                Some("request"),
                format!("a {operation} request needs an object"),
            ));
        }
        "UPDATE" if spec.old_object.is_none() => {
            return Err(at(
                Some("request"),
                "an UPDATE request needs an oldObject".into(),
            ));
        }
        "DELETE" if spec.object.is_some() => {
            return Err(at(
                Some("object"),
                "a DELETE request has no object (give the deleted one as oldObject)".into(),
            ));
        }
        _ => {}
    }
    let described = spec.object.as_ref().or(spec.old_object.as_ref());
    let kind = match (spec.kind, described.and_then(object_kind)) {
        (Some(kind), _) | (None, Some(kind)) => kind,
        (None, None) => {
            return Err(at(
                Some("request"),
                "the object has no apiVersion and kind: give them, or request.kind".into(),
            ));
        }
    };
    let resource = spec.resource.unwrap_or_else(|| Gvr {
        group: kind.group.clone(),
        version: kind.version.clone(),
        resource: guess_resource(&kind.kind),
    });
    let metadata = |key: &str| {
        described
            .and_then(|o| o.get("metadata"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let namespace = spec
        .namespace
        .or_else(|| metadata("namespace"))
        .unwrap_or_default();
    let name = spec.name.or_else(|| metadata("name")).unwrap_or_default();
    let sub_resource = spec.sub_resource.unwrap_or_default();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "subResource": sub_resource,
            "requestKind": kind,
            "requestResource": resource,
            "requestSubResource": sub_resource,
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": spec.user.unwrap_or_else(|| "wasmgate-test".into()),
                "groups": spec.groups.unwrap_or_else(|| vec!["system:authenticated".into()]),
            },
            "object": spec.object,
            "oldObject": spec.old_object,
            "dryRun": spec.dry_run.unwrap_or(false),
        }
    });
    let object = review["request"]["object"].clone();
    Ok((
        serde_json::to_vec(&review).unwrap_or_default(),
        (!object.is_null()).then_some(object),
    ))
}

/// A review file: sent as it is (JSON), or converted from YAML when its name ends so.
fn review_file(path: &Path, at: &At<'_>) -> Result<(Vec<u8>, Option<Value>), ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        at(
            Some("review"),
            format!("cannot read review {}: {e}", path.display()),
        )
    })?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let parsed: Result<Value, String> = if yaml {
        serde_yaml_ng::from_slice(&bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let review = parsed.map_err(|e| {
        at(
            Some("review"),
            format!("review {} does not parse: {e}", path.display()),
        )
    })?;
    let object = review
        .get("request")
        .and_then(|r| r.get("object"))
        .filter(|o| !o.is_null())
        .cloned();
    // JSON is sent byte for byte, as the API server's body would be.
    let body = if yaml {
        serde_json::to_vec(&review).unwrap_or_default()
    } else {
        bytes
    };
    Ok((body, object))
}

/// `{group, version, kind}` from an object's `apiVersion` and `kind`.
fn object_kind(object: &Value) -> Option<Gvk> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Some(Gvk {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    })
}

/// The resource of a kind as Kubernetes guesses it without discovery
/// (`meta.UnsafeGuessKindToResource`), the same guess a suite's `cluster:` objects get.
/// Right for the built-in kinds a policy meets; a suite gives `request.resource` otherwise.
use crate::context::file::guess_resource;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_resources_as_kubernetes_does() {
        assert_eq!(guess_resource("Pod"), "pods");
        assert_eq!(guess_resource("Ingress"), "ingresses");
        assert_eq!(guess_resource("NetworkPolicy"), "networkpolicies");
        assert_eq!(
            guess_resource("PersistentVolumeClaim"),
            "persistentvolumeclaims"
        );
    }

    #[test]
    fn builds_the_review_the_api_server_would_send() {
        let text = "apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\npolicy: p.yaml\ncases:\n  - name: a\n    request:\n      object: {apiVersion: apps/v1, kind: Deployment, metadata: {name: web, namespace: prod}}\n      oldObject: {apiVersion: apps/v1, kind: Deployment, metadata: {name: web, namespace: prod}}\n      user: alice\n      groups: [dev]\n    expect:\n      allowed: true\n";
        let suite = Suite::parse(Path::new("dir/s.yaml"), text).unwrap();
        assert_eq!(suite.policy_file, Path::new("dir/p.yaml"));
        let review: Value = serde_json::from_slice(&suite.cases[0].body).unwrap();
        let request = &review["request"];
        assert_eq!(request["operation"], "UPDATE");
        assert_eq!(
            request["resource"],
            json!({"group": "apps", "version": "v1", "resource": "deployments"})
        );
        assert_eq!(request["namespace"], "prod");
        assert_eq!(request["name"], "web");
        assert_eq!(request["userInfo"]["username"], "alice");
        assert_eq!(request["userInfo"]["groups"], json!(["dev"]));
        assert_eq!(suite.cases[0].line, Some(5));
        crate::wire::AdmissionReview::decode(&suite.cases[0].body).unwrap();
    }

    #[test]
    fn refuses_with_the_line() {
        let head = "apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\npolicy: p.yaml\ncases:\n  - name: a\n    request:\n      object: {apiVersion: v1, kind: Pod}\n";
        let cases = [
            (
                "    expect:\n      allowed: true\n      colour: red\n",
                10,
                "unknown field `colour`",
            ),
            (
                "    expect:\n      allowed: true\n      code: 403\n",
                10,
                "code describes a denial",
            ),
            (
                "    expect:\n      allowed: false\n      message: {contains: a, matches: b}\n",
                10,
                "exactly one of",
            ),
            (
                "    expect:\n      allowed: false\n      message:\n        matches: '('\n",
                11,
                "not a regular expression",
            ),
            (
                "    endpoint: validate\n    expect:\n      allowed: true\n      patch: []\n",
                8,
                "answers of initializers",
            ),
        ];
        for (tail, line, message) in cases {
            let e = Suite::parse(Path::new("s.yaml"), &format!("{head}{tail}")).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        let e = Suite::parse(
            Path::new("s.yaml"),
            "apiVersion: wasmgate.io/v1alpha1\nkind: TestSuite\npolicy: p.yaml\ncases:\n  - name: a\n    request:\n      operation: UPDATE\n      object: {apiVersion: v1, kind: Pod}\n    expect: {allowed: true}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("needs an oldObject"), "{e}");
    }
}
