//! `exec-alert` (audit-sink): emits one alert line per suspicious request, the kind of rule
//! audit detectors ship: a shell in a pod (`pods/exec`, `pods/attach`), a read of Secrets by a
//! user who is not a system identity, and a binding to `cluster-admin`. See README.md.

use serde::{Deserialize, Serialize};
use wasmgate_sdk::audit_sink::{Emission, Event, Guest, ObjectReference, Stage};
use wasmgate_sdk::{Value, serde_json};

/// Groups every user of their kind is in: membership says nothing about who the user is.
/// `system:masters` is how humans get cluster-admin, so it does not make a system identity.
const NOT_SYSTEM_GROUPS: &[&str] = &[
    "system:authenticated",
    "system:unauthenticated",
    "system:masters",
];

/// `{"output": "alerts"}`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// The output alert lines go to.
    output: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            output: "alerts".into(),
        }
    }
}

/// One alert line.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Alert<'a> {
    /// `pod-exec`, `pod-attach`, `secret-read`, `cluster-admin-binding`.
    alert: &'static str,
    /// `warning` or `critical`.
    severity: &'static str,
    message: String,
    #[serde(rename = "auditID")]
    audit_id: &'a str,
    stage: &'static str,
    verb: &'a str,
    user: &'a str,
    groups: &'a [String],
    #[serde(rename = "sourceIPs")]
    source_ips: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_code: Option<u16>,
    #[serde(rename = "requestURI")]
    request_uri: &'a str,
    timestamp: &'a str,
}

struct ExecAlert;

impl Guest for ExecAlert {
    fn deliver(batch: Vec<Event>) -> Result<Vec<Emission>, String> {
        let settings: Settings = wasmgate_sdk::settings()?;
        alerts(&batch)
            .into_iter()
            .map(|alert| {
                let line = serde_json::to_string(&alert).map_err(|e| e.to_string())?;
                Ok(Emission::new(&settings.output, line))
            })
            .collect()
    }
}

/// The alerts of a batch, one per request. kubectl (1.30 and later) tries an exec or attach
/// over WebSocket (`get`) and, when that is refused, again over SPDY (`create`): two HTTP
/// requests for one command. kubectl's refused WebSocket attempt is never alerted (see
/// [`shell`]); for other clients that do the same, a refused attempt whose twin (same user,
/// URI and source) was already alerted in this batch is not alerted again.
fn alerts(batch: &[Event]) -> Vec<Alert<'_>> {
    let mut refused_shells = std::collections::HashSet::new();
    batch
        .iter()
        .filter_map(alert)
        .filter(|a| {
            let refused_shell = matches!(a.alert, "pod-exec" | "pod-attach")
                && a.response_code.is_some_and(|c| c >= 400);
            !refused_shell || refused_shells.insert((a.user, a.request_uri, a.source_ips))
        })
        .collect()
}

/// The alert `event` raises, if any.
fn alert(event: &Event) -> Option<Alert<'_>> {
    let oref = event.object_ref.as_ref()?;
    let (alert, severity, message) = if let Some(kind) = shell(event, oref) {
        let verb = if kind == "pod-exec" {
            "exec into"
        } else {
            "attach to"
        };
        (
            kind,
            "warning",
            format!(
                "{} {verb} pod {}/{}{}",
                event.user.username,
                oref.namespace,
                oref.name,
                outcome(event)
            ),
        )
    } else if secret_read(event, oref) {
        let what = if oref.name.is_empty() {
            format!("secrets in {}", or_all(&oref.namespace))
        } else {
            format!("secret {}/{}", oref.namespace, oref.name)
        };
        (
            "secret-read",
            "warning",
            format!(
                "{} ({}) read {what}{}",
                event.user.username,
                event.verb,
                outcome(event)
            ),
        )
    } else if let Some(kind) = cluster_admin_binding(event, oref) {
        let name = if oref.namespace.is_empty() {
            oref.name.clone()
        } else {
            format!("{}/{}", oref.namespace, oref.name)
        };
        (
            "cluster-admin-binding",
            "critical",
            format!(
                "{} bound cluster-admin with {kind} {name} ({}){}",
                event.user.username,
                event.verb,
                outcome(event)
            ),
        )
    } else {
        return None;
    };
    Some(Alert {
        alert,
        severity,
        message,
        audit_id: &event.audit_id,
        stage: event.stage.as_str(),
        verb: &event.verb,
        user: &event.user.username,
        groups: &event.user.groups,
        source_ips: &event.source_ips,
        response_code: event.response_code,
        request_uri: &event.request_uri,
        timestamp: &event.stage_timestamp,
    })
}

/// `pods/exec` or `pods/attach`, alerted once per request: when its response starts with the
/// upgrade (101: a session, alerted as it begins), or when it completes with another code
/// (refused; its ResponseStarted, with the same code, is not alerted).
fn shell(event: &Event, oref: &ObjectReference) -> Option<&'static str> {
    if oref.resource != "pods" || !oref.api_group.is_empty() {
        return None;
    }
    let kind = match oref.subresource.as_str() {
        "exec" => "pod-exec",
        "attach" => "pod-attach",
        _ => return None,
    };
    let upgraded = event.response_code == Some(101);
    if !upgraded && event.verb == "get" && event.user_agent.starts_with(KUBECTL) {
        // kubectl's WebSocket attempt, refused: kubectl always retries over SPDY (`create`),
        // and that request is the one alerted, whichever batch it arrives in.
        return None;
    }
    let once = match event.stage {
        Stage::ResponseStarted => upgraded,
        Stage::ResponseComplete => !upgraded,
        Stage::RequestReceived | Stage::Panic => false,
    };
    once.then_some(kind)
}

/// A get, list or watch of Secrets by someone who is not a system identity, once per request:
/// when a get or list completes, when a watch starts.
fn secret_read(event: &Event, oref: &ObjectReference) -> bool {
    let once = match event.verb.as_str() {
        "get" | "list" => event.stage == Stage::ResponseComplete,
        "watch" => event.stage == Stage::ResponseStarted,
        _ => false,
    };
    once && oref.resource == "secrets"
        && oref.api_group.is_empty()
        && oref.subresource.is_empty()
        && !is_system(&event.user.username, &event.user.groups)
}

/// A user is a system identity when its name starts with `system:` (service accounts, nodes,
/// control-plane components) or it is in a `system:` group other than [`NOT_SYSTEM_GROUPS`]
/// (`system:serviceaccounts`, `system:nodes`, `system:bootstrappers`, ...).
fn is_system(username: &str, groups: &[String]) -> bool {
    username.starts_with("system:")
        || groups
            .iter()
            .any(|g| g.starts_with("system:") && !NOT_SYSTEM_GROUPS.contains(&g.as_str()))
}

/// kubectl's User-Agent prefix (`kubectl/v1.36.3 (linux/amd64) kubernetes/...`).
const KUBECTL: &str = "kubectl/";

/// The API server itself: at start-up it creates (and reconciles) the default bindings,
/// `cluster-admin` to `system:masters` among them. That is not an alert.
const API_SERVER_USER: &str = "system:apiserver";

/// A ClusterRoleBinding, or a RoleBinding, created or changed to grant the `cluster-admin`
/// ClusterRole, by anyone but the API server. Needs the request or response object (level
/// Request or more).
fn cluster_admin_binding(event: &Event, oref: &ObjectReference) -> Option<&'static str> {
    if event.user.username == API_SERVER_USER {
        return None;
    }
    let kind = match oref.resource.as_str() {
        "clusterrolebindings" => "ClusterRoleBinding",
        "rolebindings" => "RoleBinding",
        _ => return None,
    };
    if oref.api_group != "rbac.authorization.k8s.io"
        || event.stage != Stage::ResponseComplete
        || !matches!(event.verb.as_str(), "create" | "update" | "patch")
    {
        return None;
    }
    let grants = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|o| {
                o.pointer("/roleRef/kind").and_then(Value::as_str) == Some("ClusterRole")
                    && o.pointer("/roleRef/name").and_then(Value::as_str) == Some("cluster-admin")
            })
    };
    (grants(&event.request_object) || grants(&event.response_object)).then_some(kind)
}

/// `" (refused: 403)"` when the API server did not let the request through.
fn outcome(event: &Event) -> String {
    match event.response_code {
        Some(code) if code >= 400 => format!(" (refused: {code})"),
        _ => String::new(),
    }
}

fn or_all(namespace: &str) -> &str {
    if namespace.is_empty() {
        "all namespaces"
    } else {
        namespace
    }
}

wasmgate_sdk::export_audit_sink!(ExecAlert);

#[cfg(test)]
mod tests;
