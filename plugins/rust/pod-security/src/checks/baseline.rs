//! The baseline checks (upstream level `Baseline`), in upstream's ID order.

use std::collections::BTreeSet;

use wasmgate_sdk::view::pod::{Container, Handler, Profile, SeLinuxOptions, WindowsOptions};

use super::*;

// === check_appArmorProfile.go ===

fn allowed_apparmor_annotation(value: &str) -> bool {
    value.is_empty() || value == "runtime/default" || value.starts_with("localhost/")
}

fn profile_type(profile: &Profile) -> &str {
    profile.type_.as_deref().unwrap_or_default()
}

fn allowed_apparmor_type(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

pub fn app_armor_profile_1_0(pod: &Pod) -> Outcome {
    let mut setters: Vec<String> = Vec::new();
    let mut bad_values: BTreeSet<String> = BTreeSet::new();
    let pod_profile = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.app_armor_profile.as_ref());
    if let Some(profile) = pod_profile
        && !allowed_apparmor_type(profile_type(profile))
    {
        setters.push("pod".into());
        bad_values.insert(profile_type(profile).into());
    }
    let mut bad_containers: Vec<&str> = Vec::new();
    for c in containers(pod.spec) {
        if let Some(profile) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.app_armor_profile.as_ref())
            && !allowed_apparmor_type(profile_type(profile))
        {
            bad_containers.push(c.name());
            bad_values.insert(profile_type(profile).into());
        }
    }
    if !bad_containers.is_empty() {
        setters.push(containers_phrase(&bad_containers));
    }
    let mut annotations: Vec<String> = pod
        .meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !allowed_apparmor_annotation(v)
        })
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    let mut values: Vec<String> = bad_values.into_iter().collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).into());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    forbid(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

// === check_capabilities_baseline.go ===

const CAPABILITIES_ALLOWED_1_0: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

pub fn capabilities_baseline_1_0(pod: &Pod) -> Outcome {
    let mut bad: Vec<&str> = Vec::new();
    let mut caps: BTreeSet<String> = BTreeSet::new();
    for c in containers(pod.spec) {
        let Some(capabilities) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.capabilities.as_ref())
        else {
            continue;
        };
        let mut valid = true;
        for cap in capabilities.add.iter().flatten() {
            if !CAPABILITIES_ALLOWED_1_0.contains(&cap.as_str()) {
                valid = false;
                caps.insert(cap.clone());
            }
        }
        if !valid {
            bad.push(c.name());
        }
    }
    if bad.is_empty() {
        return None;
    }
    forbid(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&sorted(&caps))
        ),
    )
}

// === check_hostNamespaces.go ===

pub fn host_namespaces_1_0(pod: &Pod) -> Outcome {
    let spec = pod.spec;
    let mut set: Vec<&str> = Vec::new();
    if spec.host_network == Some(true) {
        set.push("hostNetwork=true");
    }
    if spec.host_pid == Some(true) {
        set.push("hostPID=true");
    }
    if spec.host_ipc == Some(true) {
        set.push("hostIPC=true");
    }
    if set.is_empty() {
        return None;
    }
    forbid("host namespaces", set.join(", "))
}

// === check_hostPathVolumes.go ===

pub fn host_path_volumes_1_0(pod: &Pod) -> Outcome {
    let bad: Vec<&str> = pod
        .spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_deref().unwrap_or_default())
        .collect();
    if bad.is_empty() {
        return None;
    }
    forbid(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        ),
    )
}

// === check_hostPorts.go ===

pub fn host_ports_1_0(pod: &Pod) -> Outcome {
    let mut bad: Vec<&str> = Vec::new();
    let mut ports: BTreeSet<String> = BTreeSet::new();
    for c in containers(pod.spec) {
        let mut valid = true;
        for port in c.ports.iter().flatten() {
            let host_port = port.host_port.unwrap_or(0);
            if host_port != 0 {
                valid = false;
                ports.insert(host_port.to_string());
            }
        }
        if !valid {
            bad.push(c.name());
        }
    }
    if bad.is_empty() {
        return None;
    }
    forbid(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            sorted(&ports).join(", ")
        ),
    )
}

// === check_hostProbesAndhostLifecycle.go ===

fn handler_hosts<'a>(handler: Option<&'a Handler>, into: &mut Vec<&'a str>) {
    let Some(handler) = handler else { return };
    for action in [&handler.http_get, &handler.tcp_socket]
        .into_iter()
        .flatten()
    {
        if let Some(host) = action.host.as_deref()
            && !host.is_empty()
        {
            into.push(host);
        }
    }
}

pub fn host_probes_and_host_lifecycle_1_34(pod: &Pod) -> Outcome {
    let mut bad: BTreeSet<&str> = BTreeSet::new();
    let mut hosts: BTreeSet<&str> = BTreeSet::new();
    for c in containers(pod.spec) {
        let mut found: Vec<&str> = Vec::new();
        handler_hosts(c.liveness_probe.as_ref(), &mut found);
        handler_hosts(c.readiness_probe.as_ref(), &mut found);
        handler_hosts(c.startup_probe.as_ref(), &mut found);
        if let Some(lifecycle) = &c.lifecycle {
            handler_hosts(lifecycle.post_start.as_ref(), &mut found);
            handler_hosts(lifecycle.pre_stop.as_ref(), &mut found);
        }
        if !found.is_empty() {
            bad.insert(c.name());
            hosts.extend(found);
        }
    }
    if bad.is_empty() {
        return None;
    }
    let bad: Vec<&str> = bad.into_iter().collect();
    let hosts: Vec<&str> = hosts.into_iter().collect();
    forbid(
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&hosts)
        ),
    )
}

// === check_privileged.go ===

pub fn privileged_1_0(pod: &Pod) -> Outcome {
    let bad: Vec<&str> = containers(pod.spec)
        .filter(|c| c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true))
        .map(Container::name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    forbid(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

// === check_procMount_baseline.go, check_procMount_restricted.go ===

pub fn proc_mount_1_0(pod: &Pod) -> Outcome {
    let mut bad: Vec<&str> = Vec::new();
    let mut types: BTreeSet<String> = BTreeSet::new();
    for c in containers(pod.spec) {
        if let Some(proc_mount) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.proc_mount.as_deref())
            && proc_mount != "Default"
        {
            bad.push(c.name());
            types.insert(proc_mount.to_owned());
        }
    }
    if bad.is_empty() {
        return None;
    }
    forbid(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(&sorted(&types))
        ),
    )
}

pub fn proc_mount_1_35_baseline(pod: &Pod) -> Outcome {
    if user_namespace(pod.spec) {
        return None;
    }
    proc_mount_1_0(pod)
}

// === check_seLinuxOptions.go ===

const SELINUX_TYPES_1_0: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t"];
const SELINUX_TYPES_1_31: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

pub fn se_linux_options_1_0(pod: &Pod) -> Outcome {
    se_linux_options(pod, SELINUX_TYPES_1_0)
}

pub fn se_linux_options_1_31(pod: &Pod) -> Outcome {
    se_linux_options(pod, SELINUX_TYPES_1_31)
}

fn se_linux_options(pod: &Pod, allowed: &[&str]) -> Outcome {
    let mut bad_types: BTreeSet<String> = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |opts: &SeLinuxOptions| {
        let mut ok = true;
        let t = opts.type_.as_deref().unwrap_or_default();
        if !allowed.contains(&t) {
            ok = false;
            bad_types.insert(t.to_owned());
        }
        if !opts.user.as_deref().unwrap_or_default().is_empty() {
            ok = false;
            set_user = true;
        }
        if !opts.role.as_deref().unwrap_or_default().is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut setters: Vec<String> = Vec::new();
    if let Some(opts) = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.se_linux_options.as_ref())
        && !valid(opts)
    {
        setters.push("pod".into());
    }
    let mut bad: Vec<&str> = Vec::new();
    for c in containers(pod.spec) {
        if let Some(opts) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.se_linux_options.as_ref())
            && !valid(opts)
        {
            bad.push(c.name());
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data: Vec<String> = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&sorted(&bad_types))
        ));
    }
    if set_user {
        data.push("user may not be set".into());
    }
    if set_role {
        data.push("role may not be set".into());
    }
    forbid(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

// === check_seccompProfile_baseline.go ===

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

pub(super) fn valid_seccomp_type(t: &str) -> bool {
    matches!(t, "Localhost" | "RuntimeDefault")
}

fn valid_seccomp_annotation(value: &str) -> bool {
    value == "runtime/default" || value == "docker/default" || value.starts_with("localhost/")
}

pub fn seccomp_profile_baseline_1_0(pod: &Pod) -> Outcome {
    let mut forbidden: BTreeSet<String> = BTreeSet::new();
    if let Some(value) = pod.meta.annotation(SECCOMP_POD_ANNOTATION)
        && !valid_seccomp_annotation(value)
    {
        forbidden.insert(format!("{SECCOMP_POD_ANNOTATION}={}", go_quote(value)));
    }
    for c in containers(pod.spec) {
        let key = format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", c.name());
        if let Some(value) = pod.meta.annotation(&key)
            && !valid_seccomp_annotation(value)
        {
            forbidden.insert(format!("{key}={}", go_quote(value)));
        }
    }
    if forbidden.is_empty() {
        return None;
    }
    forbid(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", forbidden.len()),
            sorted(&forbidden).join(", ")
        ),
    )
}

pub(super) fn seccomp_type(profile: &Profile) -> &str {
    profile.type_.as_deref().unwrap_or_default()
}

pub fn seccomp_profile_baseline_1_19(pod: &Pod) -> Outcome {
    let mut setters: Vec<String> = Vec::new();
    let mut values: BTreeSet<String> = BTreeSet::new();
    if let Some(profile) = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
        && !valid_seccomp_type(seccomp_type(profile))
    {
        setters.push("pod".into());
        values.insert(seccomp_type(profile).into());
    }
    let mut bad: Vec<&str> = Vec::new();
    for c in containers(pod.spec) {
        if let Some(profile) = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.seccomp_profile.as_ref())
            && !valid_seccomp_type(seccomp_type(profile))
        {
            bad.push(c.name());
            values.insert(seccomp_type(profile).into());
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    forbid(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&sorted(&values))
        ),
    )
}

// === check_sysctls.go ===

const SYSCTLS_1_0: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];
const SYSCTLS_ADDED_1_27: &[&str] = &["net.ipv4.ip_local_reserved_ports"];
const SYSCTLS_ADDED_1_29: &[&str] = &[
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SYSCTLS_ADDED_1_32: &[&str] = &["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"];

pub fn sysctls_1_0(pod: &Pod) -> Outcome {
    sysctls(pod, &[SYSCTLS_1_0])
}

pub fn sysctls_1_27(pod: &Pod) -> Outcome {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_ADDED_1_27])
}

pub fn sysctls_1_29(pod: &Pod) -> Outcome {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_ADDED_1_27, SYSCTLS_ADDED_1_29])
}

pub fn sysctls_1_32(pod: &Pod) -> Outcome {
    sysctls(
        pod,
        &[
            SYSCTLS_1_0,
            SYSCTLS_ADDED_1_27,
            SYSCTLS_ADDED_1_29,
            SYSCTLS_ADDED_1_32,
        ],
    )
}

fn sysctls(pod: &Pod, allowed: &[&[&str]]) -> Outcome {
    let forbidden: Vec<&str> = pod
        .spec
        .security_context
        .iter()
        .flat_map(|sc| sc.sysctls.iter().flatten())
        .map(|s| s.name.as_deref().unwrap_or_default())
        .filter(|name| !allowed.iter().any(|set| set.contains(name)))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    forbid("forbidden sysctls", forbidden.join(", "))
}

// === check_windowsHostProcess.go ===

pub fn windows_host_process_1_0(pod: &Pod) -> Outcome {
    let host_process =
        |opts: &Option<WindowsOptions>| opts.as_ref().and_then(|o| o.host_process) == Some(true);
    let bad: Vec<&str> = containers(pod.spec)
        .filter(|c| {
            c.security_context
                .as_ref()
                .is_some_and(|sc| host_process(&sc.windows_options))
        })
        .map(Container::name)
        .collect();
    let mut setters: Vec<String> = Vec::new();
    if pod
        .spec
        .security_context
        .as_ref()
        .is_some_and(|sc| host_process(&sc.windows_options))
    {
        setters.push("pod".into());
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    forbid(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}
