//! Owns `wasmgate test`: test suites for policy authors. A suite (`kind: TestSuite`) names a
//! policy file and cases; each case's AdmissionReview is decided by [`Gateway::review`], the
//! code path behind the webhook endpoints and `wasmgate check`, and the answer is compared with
//! what the case expects. An audit-sink case's events go through [`audit::offline`], the
//! delivery path's routing and plugin call without the outputs. Must not open sockets or decide
//! anything itself: no copy of the admission or audit logic lives here.

mod file;
mod judge;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use file::{Case, Endpoint, Expectation, KIND, MessageCheck, SinkCase, Suite};
pub use judge::{Got, judge, judge_lines};
pub use report::{junit, table};

use crate::audit;
use crate::config::{Config, ConfigError, PluginKind};
use crate::context::{ClusterState, Limits};
use crate::gateway::Gateway;
use crate::policy::audit::SinkPolicy;
use crate::runtime::Plugin;
use crate::runtime::Runtime;
use crate::server::DEFAULT_TIMEOUT;
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;

/// How one suite went.
#[derive(Debug)]
pub struct SuiteOutcome {
    /// The suite file, as given.
    pub file: PathBuf,
    /// Its name (`metadata.name`, else the file).
    pub name: String,
    /// Why it could not run (the suite or its policy file refused, with file:line).
    pub error: Option<ConfigError>,
    /// Its cases, in file order (none when it could not run).
    pub cases: Vec<CaseOutcome>,
    /// How long it took, loading the policies included.
    pub elapsed: Duration,
}

/// How one case went.
#[derive(Debug)]
pub struct CaseOutcome {
    /// Its name.
    pub name: String,
    /// The line of its `- name:` in the suite.
    pub line: Option<usize>,
    /// What it expects, in a few words.
    pub expected: String,
    /// What the gateway answered, in a few words.
    pub got: String,
    /// How long the gateway took to answer.
    pub elapsed: Duration,
    /// Passed, failed or could not run.
    pub verdict: Verdict,
}

/// A case's result.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is what the case expects.
    Pass,
    /// The answer differs: one line per difference.
    Fail(Vec<String>),
    /// The case could not be decided (an unknown policy, a review the gateway refuses).
    Error(String),
}

/// The exit status of a run: 0 when every case passed, 1 when a case failed, 2 when a suite or
/// a case could not run.
pub fn exit_status(outcomes: &[SuiteOutcome]) -> u8 {
    let cases = || outcomes.iter().flat_map(|o| &o.cases);
    if outcomes.iter().any(|o| o.error.is_some())
        || cases().any(|c| matches!(c.verdict, Verdict::Error(_)))
    {
        2
    } else if cases().any(|c| matches!(c.verdict, Verdict::Fail(_))) {
        1
    } else {
        0
    }
}

/// Runs every suite of `files`, one after another, each against its own snapshot of its policy
/// file. A suite that cannot run does not stop the others.
pub async fn run(files: &[PathBuf], runtime: &Runtime) -> Vec<SuiteOutcome> {
    let mut outcomes = Vec::with_capacity(files.len());
    for file in files {
        let started = Instant::now();
        let mut outcome = SuiteOutcome {
            file: file.clone(),
            name: file.display().to_string(),
            error: None,
            cases: Vec::new(),
            elapsed: Duration::ZERO,
        };
        match load(file, runtime) {
            Ok((suite, config, snapshot, cluster)) => {
                outcome.name = suite.name.clone();
                let sinks = snapshot.audit_sinks.clone();
                let gateway = Gateway::new(snapshot, cluster.metrics()).with_cluster(cluster);
                for case in &suite.cases {
                    let case_outcome = match &case.sink {
                        Some(sink) => run_sink_case(&sinks, &config, case, sink).await,
                        None => run_case(&gateway, &config, case).await,
                    };
                    outcome.cases.push(case_outcome);
                }
            }
            Err(e) => outcome.error = Some(e),
        }
        outcome.elapsed = started.elapsed();
        outcomes.push(outcome);
    }
    outcomes
}

/// The suite, its policy file, and the snapshot built from it exactly as `serve` builds its own
/// (a plugin that refuses its settings fails here, with the policy file's line).
fn load(
    file: &std::path::Path,
    runtime: &Runtime,
) -> Result<(Suite, Config, Snapshot, Arc<ClusterState>), ConfigError> {
    let mut suite = Suite::load(file)?;
    let config = Config::load(&suite.policy_file)?;
    let metrics = Arc::new(Metrics::new());
    // The suite's cluster state, served through the same caches and lookups as `serve`'s.
    let cluster = match suite.cluster.take() {
        Some(objects) => ClusterState::from_objects(objects, Limits::default(), metrics),
        None => ClusterState::none(metrics),
    };
    cluster.prepare(&config)?;
    let snapshot = tokio::task::block_in_place(|| {
        Snapshot::build_with(&config, runtime, 1, None, Some(&cluster))
    })?;
    Ok((suite, config, snapshot, cluster))
}

async fn run_case(gateway: &Gateway, config: &Config, case: &Case) -> CaseOutcome {
    let mut outcome = CaseOutcome {
        name: case.name.clone(),
        line: case.line,
        expected: judge::expected_summary(&case.expect),
        got: String::new(),
        elapsed: Duration::ZERO,
        verdict: Verdict::Pass,
    };
    let kind = match endpoint(case, config) {
        Ok(kind) => kind,
        Err(e) => {
            outcome.got = "not run".into();
            outcome.verdict = Verdict::Error(e);
            return outcome;
        }
    };
    let started = Instant::now();
    let answer = gateway
        .review(
            kind,
            case.policy.as_deref(),
            &case.body,
            started + DEFAULT_TIMEOUT,
        )
        .await;
    outcome.elapsed = started.elapsed();
    let got = match answer {
        Ok((_, response)) => Got::from_response(&response),
        Err(answer) => {
            let status: serde_json::Value =
                serde_json::from_slice(&answer.body).unwrap_or_default();
            Err(format!(
                "the gateway refuses the request ({}): {}",
                answer.status,
                status["message"]
                    .as_str()
                    .map_or_else(|| String::from_utf8_lossy(&answer.body), Into::into)
            ))
        }
    };
    match got {
        Ok(got) => {
            outcome.got = got.summary();
            let mut misses = judge(&case.expect, &got, case.object.as_ref());
            if !misses.is_empty() {
                misses.extend(explained(gateway, kind, case));
                outcome.verdict = Verdict::Fail(misses);
            }
        }
        Err(e) => {
            outcome.got = "error".into();
            outcome.verdict = Verdict::Error(e);
        }
    }
    outcome
}

async fn run_sink_case(
    sinks: &[Arc<SinkPolicy<Plugin>>],
    config: &Config,
    case: &Case,
    sink: &SinkCase,
) -> CaseOutcome {
    let mut outcome = CaseOutcome {
        name: case.name.clone(),
        line: case.line,
        expected: judge::expected_lines_summary(&sink.lines),
        got: "not run".into(),
        elapsed: Duration::ZERO,
        verdict: Verdict::Pass,
    };
    let Some(policy) = sinks.iter().find(|s| s.name == sink.sink) else {
        outcome.verdict = Verdict::Error(format!(
            "{} has no audit sink named {:?}",
            config.file.display(),
            sink.sink
        ));
        return outcome;
    };
    let started = Instant::now();
    let emitted = audit::offline(policy, &sink.events).await;
    outcome.elapsed = started.elapsed();
    match emitted {
        Ok(emitted) => {
            outcome.got = judge::got_lines_summary(&emitted.lines);
            let misses = judge_lines(&sink.lines, &emitted.lines);
            if !misses.is_empty() {
                outcome.verdict = Verdict::Fail(misses);
            }
        }
        Err(e) => {
            outcome.got = "error".into();
            outcome.verdict = Verdict::Error(e);
        }
    }
    outcome
}

/// Beside a failed case, which policies its request ran and why the others were skipped, as
/// `wasmgate check --explain` says it: a case that fails because its policy never matched says so.
fn explained(gateway: &Gateway, kind: PluginKind, case: &Case) -> Vec<String> {
    let Ok(review) = crate::wire::AdmissionReview::decode(&case.body) else {
        return Vec::new();
    };
    let snapshot = gateway.snapshot();
    let Some(explanation) = crate::admission::explain(
        &snapshot.policies,
        kind,
        case.policy.as_deref(),
        &review.request,
    ) else {
        return Vec::new();
    };
    std::iter::once(format!("{}:", explanation.summary()))
        .chain(explanation.to_string().lines().map(|l| format!("  {l}")))
        .collect()
}

/// The webhook a case calls: the one it names, else its policy's, else the only kind of
/// policy the file has.
fn endpoint(case: &Case, config: &Config) -> Result<PluginKind, String> {
    let kind = match (case.endpoint, &case.policy) {
        (Some(Endpoint::Validate), _) => PluginKind::Validator,
        (Some(Endpoint::Mutate), _) => PluginKind::Initializer,
        (None, Some(name)) => config
            .entries
            .iter()
            .find(|e| e.entry.name == *name)
            .map(|e| e.entry.kind)
            .ok_or_else(|| format!("{} has no policy named {name:?}", config.file.display()))?,
        (None, None) => {
            let mut kinds = config.entries.iter().map(|e| e.entry.kind);
            match kinds.next() {
                None => return Err(format!("{} has no policies", config.file.display())),
                Some(first) if kinds.all(|k| k == first) => first,
                Some(_) => {
                    return Err(format!(
                        "{} has validators and initializers: give the case an endpoint (validate or mutate) or a policy",
                        config.file.display()
                    ));
                }
            }
        }
    };
    if kind == PluginKind::Validator
        && (case.expect.patch.is_some() || case.expect.patched_object.is_some())
    {
        return Err(
            "patch and patchedObject are answers of initializers, but the case calls the validators"
                .into(),
        );
    }
    Ok(kind)
}
