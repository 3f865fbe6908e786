//! The check registry of `k8s.io/pod-security-admission/policy` (`registry.go`, v0.36): which
//! version of which check runs for a level and policy version, in upstream's order (baseline
//! check IDs sorted, then restricted ones), with restricted checks overriding the baseline
//! checks they replace. Knows nothing of requests or settings.

use crate::checks::{self, Forbidden, Pod};

/// A Pod Security Standards level that runs checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Baseline,
    Restricted,
}

type CheckFn = fn(&Pod) -> checks::Outcome;

/// One check: its upstream ID and level, its versions (the first policy minor version each
/// applies from, strictly increasing), and the baseline checks it overrides at the versions it
/// has.
struct Check {
    id: &'static str,
    level: Level,
    versions: &'static [(u32, CheckFn)],
    overrides: &'static [&'static str],
}

/// Every check, as registered upstream (`check_*.go`).
const CHECKS: &[Check] = &[
    Check {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        versions: &[
            (8, checks::allow_privilege_escalation_1_8),
            (25, checks::allow_privilege_escalation_1_25),
        ],
        overrides: &[],
    },
    Check {
        id: "appArmorProfile",
        level: Level::Baseline,
        versions: &[(0, checks::app_armor_profile_1_0)],
        overrides: &[],
    },
    Check {
        id: "capabilities_baseline",
        level: Level::Baseline,
        versions: &[(0, checks::capabilities_baseline_1_0)],
        overrides: &[],
    },
    Check {
        id: "capabilities_restricted",
        level: Level::Restricted,
        versions: &[
            (22, checks::capabilities_restricted_1_22),
            (25, checks::capabilities_restricted_1_25),
        ],
        overrides: &["capabilities_baseline"],
    },
    Check {
        id: "hostNamespaces",
        level: Level::Baseline,
        versions: &[(0, checks::host_namespaces_1_0)],
        overrides: &[],
    },
    Check {
        id: "hostPathVolumes",
        level: Level::Baseline,
        versions: &[(0, checks::host_path_volumes_1_0)],
        overrides: &[],
    },
    Check {
        id: "hostPorts",
        level: Level::Baseline,
        versions: &[(0, checks::host_ports_1_0)],
        overrides: &[],
    },
    Check {
        id: "hostProbesAndHostLifecycle",
        level: Level::Baseline,
        versions: &[(34, checks::host_probes_and_host_lifecycle_1_34)],
        overrides: &[],
    },
    Check {
        id: "privileged",
        level: Level::Baseline,
        versions: &[(0, checks::privileged_1_0)],
        overrides: &[],
    },
    Check {
        id: "procMount",
        level: Level::Baseline,
        versions: &[
            (0, checks::proc_mount_1_0),
            (35, checks::proc_mount_1_35_baseline),
        ],
        overrides: &[],
    },
    Check {
        id: "procMount_restricted",
        level: Level::Restricted,
        versions: &[(35, checks::proc_mount_1_0)],
        overrides: &["procMount"],
    },
    Check {
        id: "restrictedVolumes",
        level: Level::Restricted,
        versions: &[(0, checks::restricted_volumes_1_0)],
        overrides: &["hostPathVolumes"],
    },
    Check {
        id: "runAsNonRoot",
        level: Level::Restricted,
        versions: &[
            (0, checks::run_as_non_root_1_0),
            (35, checks::run_as_non_root_1_35),
        ],
        overrides: &[],
    },
    Check {
        id: "runAsUser",
        level: Level::Restricted,
        versions: &[
            (23, checks::run_as_user_1_23),
            (35, checks::run_as_user_1_35),
        ],
        overrides: &[],
    },
    Check {
        id: "seLinuxOptions",
        level: Level::Baseline,
        versions: &[
            (0, checks::se_linux_options_1_0),
            (31, checks::se_linux_options_1_31),
        ],
        overrides: &[],
    },
    Check {
        id: "seccompProfile_baseline",
        level: Level::Baseline,
        versions: &[
            (0, checks::seccomp_profile_baseline_1_0),
            (19, checks::seccomp_profile_baseline_1_19),
        ],
        overrides: &[],
    },
    Check {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        versions: &[
            (19, checks::seccomp_profile_restricted_1_19),
            (25, checks::seccomp_profile_restricted_1_25),
        ],
        overrides: &["seccompProfile_baseline"],
    },
    Check {
        id: "sysctls",
        level: Level::Baseline,
        versions: &[
            (0, checks::sysctls_1_0),
            (27, checks::sysctls_1_27),
            (29, checks::sysctls_1_29),
            (32, checks::sysctls_1_32),
        ],
        overrides: &[],
    },
    Check {
        id: "windowsHostProcess",
        level: Level::Baseline,
        versions: &[(0, checks::windows_host_process_1_0)],
        overrides: &[],
    },
];

/// The newest policy minor version any check has (`latest` evaluates as this one, and so does
/// any newer pinned version, as upstream's `maxVersion`).
pub fn max_minor() -> u32 {
    CHECKS
        .iter()
        .filter_map(|c| c.versions.last().map(|(minor, _)| *minor))
        .max()
        .unwrap_or(0)
}

/// The version of `check` that applies at policy version `v1.minor`, if any.
fn at(check: &Check, minor: u32) -> Option<CheckFn> {
    check
        .versions
        .iter()
        .rev()
        .find(|(from, _)| *from <= minor)
        .map(|(_, f)| *f)
}

/// The checks that run at `level` and `v1.minor`, with their IDs, in upstream's order.
pub fn checks_for(level: Level, minor: u32) -> Vec<(&'static str, CheckFn)> {
    let minor = minor.min(max_minor());
    let overridden: Vec<&str> = match level {
        Level::Baseline => Vec::new(),
        Level::Restricted => CHECKS
            .iter()
            .filter(|c| c.level == Level::Restricted && at(c, minor).is_some())
            .flat_map(|c| c.overrides.iter().copied())
            .collect(),
    };
    let mut picked: Vec<(Level, &'static str, CheckFn)> = CHECKS
        .iter()
        .filter(|c| level == Level::Restricted || c.level == Level::Baseline)
        .filter(|c| !overridden.contains(&c.id))
        .filter_map(|c| at(c, minor).map(|f| (c.level, c.id, f)))
        .collect();
    // Baseline IDs first, then restricted, each sorted bytewise (Go's `slices.Sort`).
    picked.sort_by(|a, b| {
        let rank = |l: Level| (l == Level::Restricted) as u8;
        (rank(a.0), a.1.as_bytes()).cmp(&(rank(b.0), b.1.as_bytes()))
    });
    picked.into_iter().map(|(_, id, f)| (id, f)).collect()
}

/// Runs the checks of `level` at `v1.minor` on `pod`: the failures, in order, with the ID of
/// the check that failed.
pub fn evaluate(level: Level, minor: u32, pod: &Pod) -> Vec<(&'static str, Forbidden)> {
    checks_for(level, minor)
        .into_iter()
        .filter_map(|(id, check)| check(pod).map(|f| (id, f)))
        .collect()
}
