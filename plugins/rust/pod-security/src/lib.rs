//! `pod-security` (validator): the Pod Security Standards (Baseline, Restricted) exactly as the
//! API server's built-in PodSecurity admission (`k8s.io/pod-security-admission` v0.36) decides
//! them, at a chosen policy version. See README.md. This file owns the settings and the
//! admission flow (which requests are evaluated, enforced, warned about or exempt); the checks
//! are in `checks`, their version table in `registry`.

use serde::Deserialize;
use wasmgate_sdk::validator::{AdmissionRequest, Denial, Operation, Validator, Verdict};
use wasmgate_sdk::view::pod::{PodParts, PodSpec, pod_of};

mod checks;
mod registry;

use registry::Level;

/// `{"level": "restricted", "version": "v1.30", "exemptions": {...}}`, as the API server's
/// `PodSecurityConfiguration` has them (one level: the one enforced).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `privileged`, `baseline` or `restricted`.
    level: String,
    /// `latest` (the default) or `v1.N`.
    #[serde(default = "latest")]
    version: String,
    #[serde(default)]
    exemptions: Exemptions,
}

fn latest() -> String {
    "latest".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Exemptions {
    usernames: Vec<String>,
    namespaces: Vec<String>,
    runtime_classes: Vec<String>,
}

/// The level and version to evaluate, parsed from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Privileged,
    Checked { level: Level, minor: Option<u32> },
}

fn parse_level(level: &str) -> Result<Option<Level>, String> {
    match level {
        "privileged" => Ok(None),
        "baseline" => Ok(Some(Level::Baseline)),
        "restricted" => Ok(Some(Level::Restricted)),
        other => Err(format!(
            "level: {other:?} must be one of privileged, baseline, restricted"
        )),
    }
}

/// `latest` is `None`; `v1.N` (no leading zeros, as upstream's `ParseVersion`) is `Some(N)`.
fn parse_version(version: &str) -> Result<Option<u32>, String> {
    if version == "latest" {
        return Ok(None);
    }
    let bad = || format!("version: {version:?} must be \"latest\" or \"v1.x\"");
    let minor = version.strip_prefix("v1.").ok_or_else(bad)?;
    if minor.is_empty()
        || !minor.bytes().all(|b| b.is_ascii_digit())
        || (minor.len() > 1 && minor.starts_with('0'))
    {
        return Err(bad());
    }
    minor.parse().map(Some).map_err(|_| bad())
}

impl Settings {
    fn policy(&self) -> Result<Policy, String> {
        let minor = parse_version(&self.version)?;
        Ok(match parse_level(&self.level)? {
            None => Policy::Privileged,
            Some(level) => Policy::Checked { level, minor },
        })
    }

    /// `level:version` as upstream prints it, e.g. `restricted:latest`.
    fn label(&self) -> String {
        format!("{}:{}", self.level, self.version)
    }
}

/// A DNS-1123 label (namespace names).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A DNS-1123 subdomain (RuntimeClass names).
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

/// Upstream's `validateExemptions`: no empty or duplicate entries, namespaces DNS labels,
/// runtime classes DNS subdomains.
fn check_list(
    field: &str,
    items: &[String],
    valid: fn(&str) -> bool,
    what: &str,
) -> Result<(), String> {
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() {
            return Err(format!("exemptions.{field}[{i}]: must not be empty"));
        }
        if !valid(item) {
            return Err(format!("exemptions.{field}[{i}]: {item:?} is not {what}"));
        }
        if items[..i].contains(item) {
            return Err(format!("exemptions.{field}[{i}]: duplicate {item:?}"));
        }
    }
    Ok(())
}

/// Pod sub-resources upstream never evaluates (`ignoredPodSubresources`); any other one (e.g.
/// `ephemeralcontainers`, `resize`) carries a Pod and is evaluated.
const IGNORED_POD_SUBRESOURCES: &[&str] = &[
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// The resources with a pod template that upstream evaluates (`defaultPodSpecResources`),
/// with the group and kind of their objects.
fn workload_kind(group: &str, resource: &str) -> Option<&'static str> {
    Some(match (group, resource) {
        ("", "replicationcontrollers") => "ReplicationController",
        ("", "podtemplates") => "PodTemplate",
        ("apps", "replicasets") => "ReplicaSet",
        ("apps", "deployments") => "Deployment",
        ("apps", "statefulsets") => "StatefulSet",
        ("apps", "daemonsets") => "DaemonSet",
        ("batch", "jobs") => "Job",
        ("batch", "cronjobs") => "CronJob",
        _ => return None,
    })
}

struct PodSecurity;

impl Validator for PodSecurity {
    type Settings = Settings;

    fn validate(request: AdmissionRequest, settings: Settings) -> Result<Verdict, String> {
        Ok(admit(&request, &settings))
    }

    fn check_settings(settings: &Settings) -> Result<(), String> {
        settings.policy()?;
        let e = &settings.exemptions;
        check_list("usernames", &e.usernames, |_| true, "a username")?;
        check_list(
            "namespaces",
            &e.namespaces,
            dns_label,
            "a namespace name (a DNS label)",
        )?;
        check_list(
            "runtimeClasses",
            &e.runtime_classes,
            dns_subdomain,
            "a RuntimeClass name (a DNS subdomain)",
        )
    }
}

/// Upstream's `Admission.Validate` for one request, with one level as enforce, warn and audit.
fn admit(request: &AdmissionRequest, settings: &Settings) -> Verdict {
    let Ok(Policy::Checked { level, minor }) = settings.policy() else {
        return Verdict::allow(); // privileged (settings were checked at load)
    };
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let (group, resource) = (
        request.resource.group.as_str(),
        request.resource.resource.as_str(),
    );
    let sub = request.sub_resource.as_str();
    let enforce = if (group, resource) == ("", "pods") {
        if IGNORED_POD_SUBRESOURCES.contains(&sub) {
            return Verdict::allow();
        }
        true
    } else if workload_kind(group, resource).is_some() {
        if !sub.is_empty() {
            return Verdict::allow();
        }
        false
    } else {
        return Verdict::allow();
    };
    let exemptions = &settings.exemptions;
    if !request.namespace.is_empty() && exemptions.namespaces.contains(&request.namespace) {
        return Verdict::allow().with_annotation("exempt", "namespace");
    }
    let user = &request.user_info.username;
    if !user.is_empty() && exemptions.usernames.contains(user) {
        return Verdict::allow().with_annotation("exempt", "user");
    }
    let (kind_group, kind) = if enforce {
        ("", "Pod")
    } else {
        (group, workload_kind(group, resource).unwrap_or_default())
    };
    let Some(json) = request.object.as_deref() else {
        return Verdict::allow();
    };
    let pod = match pod_of(kind_group, kind, json) {
        Ok(Some(pod)) => pod,
        // A workload without a pod template: nothing to evaluate, as upstream.
        Ok(None) => return Verdict::allow(),
        Err(err) if enforce => {
            return Verdict::denied(Denial {
                code: 400,
                reason: "BadRequest".into(),
                message: format!("failed to decode pod: {err}"),
            });
        }
        // Upstream never blocks a workload it cannot read; it records why.
        Err(err) => {
            return Verdict::allow()
                .with_annotation("error", format!("failed to decode object: {err}"));
        }
    };
    if enforce && request.operation == Operation::Update {
        match request
            .old_object
            .as_deref()
            .map(|old| pod_of("", "Pod", old))
        {
            Some(Ok(Some(old))) if !significant_update(&pod, &old) => {
                return Verdict::allow();
            }
            Some(Err(err)) => {
                return Verdict::denied(Denial {
                    code: 400,
                    reason: "BadRequest".into(),
                    message: format!("failed to decode old pod: {err}"),
                });
            }
            _ => {}
        }
    }
    let spec_default = PodSpec::default();
    let meta_default = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&spec_default);
    if let Some(class) = spec.runtime_class_name.as_deref()
        && !class.is_empty()
        && exemptions.runtime_classes.iter().any(|c| c == class)
    {
        return Verdict::allow().with_annotation("exempt", "runtimeClass");
    }
    let target = checks::Pod {
        meta: pod.metadata.as_ref().unwrap_or(&meta_default),
        spec,
    };
    let failures = registry::evaluate(level, minor.unwrap_or(u32::MAX), &target);
    let label = settings.label();
    if failures.is_empty() {
        return if enforce {
            Verdict::allow().with_annotation("enforce-policy", label)
        } else {
            Verdict::allow()
        };
    }
    let detail = forbidden_detail(&failures);
    if enforce {
        Verdict::denied(Denial::forbidden(format!(
            "violates PodSecurity \"{label}\": {detail}"
        )))
        .with_annotation("enforce-policy", label)
    } else {
        let message = format!("would violate PodSecurity \"{label}\": {detail}");
        Verdict::allow()
            .with_warning(message.clone())
            .with_annotation("audit-violations", message)
    }
}

/// `AggregateCheckResult.ForbiddenDetail`: `reason (detail), reason (detail)`.
fn forbidden_detail(failures: &[(&str, checks::Forbidden)]) -> String {
    failures
        .iter()
        .map(|(_, f)| {
            if f.detail.is_empty() {
                f.reason.clone()
            } else {
                format!("{} ({})", f.reason, f.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upstream's `isSignificantPodUpdate`: only a change of container count or image, or a new
/// or changed ephemeral container, is evaluated; any other Pod update is allowed unchecked.
fn significant_update(pod: &PodParts, old: &PodParts) -> bool {
    let empty = PodSpec::default();
    let (new, old) = (
        pod.spec.as_ref().unwrap_or(&empty),
        old.spec.as_ref().unwrap_or(&empty),
    );
    let list = |l: &Option<Vec<wasmgate_sdk::view::pod::Container>>| {
        l.as_deref().unwrap_or_default().len()
    };
    let image = |c: &wasmgate_sdk::view::pod::Container| c.image.clone().unwrap_or_default();
    if list(&new.containers) != list(&old.containers)
        || list(&new.init_containers) != list(&old.init_containers)
    {
        return true;
    }
    let pairs = |a: &Option<Vec<wasmgate_sdk::view::pod::Container>>,
                 b: &Option<Vec<wasmgate_sdk::view::pod::Container>>| {
        a.as_deref()
            .unwrap_or_default()
            .iter()
            .zip(b.as_deref().unwrap_or_default())
            .any(|(x, y)| image(x) != image(y))
    };
    if pairs(&new.containers, &old.containers) || pairs(&new.init_containers, &old.init_containers)
    {
        return true;
    }
    let old_ephemeral = old.ephemeral_containers.as_deref().unwrap_or_default();
    new.ephemeral_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(
            |c| match old_ephemeral.iter().find(|o| o.name() == c.name()) {
                None => true,
                Some(o) => image(c) != image(o),
            },
        )
}

wasmgate_sdk::export_validator!(PodSecurity);

#[cfg(test)]
mod tests;
