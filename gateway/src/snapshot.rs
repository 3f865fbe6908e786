//! Owns assembling an immutable [`Snapshot`] (every policy and audit sink with its compiled
//! plugin) from a validated [`Config`] and the [`Runtime`]. Building is blocking and may take
//! seconds; it never runs on the request path. A snapshot is never changed after it is built.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::policy::audit::{AuditRules, SinkPolicy};
use crate::policy::{Matcher, Policy, PolicySet};
use crate::runtime::{Plugin, PluginSpec, Runtime, World};

/// Everything one request needs, fixed for the request's lifetime.
pub struct Snapshot {
    /// Counts successful builds since start; 1 is the first.
    pub generation: u64,
    /// The policy file it was built from.
    pub file: PathBuf,
    /// sha256 over the policy file and every module: equal hashes mean equal behaviour.
    pub content_hash: String,
    /// The policies.
    pub policies: PolicySet<Plugin>,
    /// The audit sinks, in file order.
    pub audit_sinks: Vec<Arc<SinkPolicy<Plugin>>>,
}

impl Snapshot {
    /// Compiles and checks every plugin of `config`. A module that does not compile, does not
    /// implement its declared world, or cannot instantiate under its limits fails the build with
    /// the policy file, the entry's line and the reason.
    pub fn build(
        config: &Config,
        runtime: &Runtime,
        generation: u64,
    ) -> Result<Snapshot, ConfigError> {
        let mut policies = Vec::with_capacity(config.entries.len());
        for resolved in &config.entries {
            let entry = &resolved.entry;
            let plugin = runtime
                .load(PluginSpec {
                    name: entry.name.clone(),
                    kind: entry.kind.into(),
                    bytes: resolved.module_bytes.clone(),
                    settings: resolved.settings_json.clone(),
                    memory_limit: resolved.memory_limit,
                })
                .map_err(|e| ConfigError {
                    file: config.file.clone(),
                    line: resolved.line,
                    message: format!(
                        "policy {:?}: {}: {e}",
                        entry.name,
                        resolved.module_path.display()
                    ),
                })?;
            policies.push(Policy {
                name: entry.name.clone(),
                kind: entry.kind,
                matcher: Matcher::new(entry),
                mode: entry.mode,
                failure_policy: entry.failure_policy,
                timeout: resolved.timeout,
                plugin: Arc::new(plugin),
            });
        }
        let mut audit_sinks = Vec::with_capacity(config.sinks.len());
        for sink in &config.sinks {
            let entry = &sink.entry;
            let plugin = runtime
                .load(PluginSpec {
                    name: entry.name.clone(),
                    kind: World::AuditSink,
                    bytes: sink.module_bytes.clone(),
                    settings: sink.settings_json.clone(),
                    memory_limit: sink.memory_limit,
                })
                .map_err(|e| ConfigError {
                    file: config.file.clone(),
                    line: sink.line,
                    message: format!(
                        "audit sink {:?}: {}: {e}",
                        entry.name,
                        sink.module_path.display()
                    ),
                })?;
            audit_sinks.push(Arc::new(SinkPolicy {
                name: entry.name.clone(),
                rules: AuditRules::new(&entry.rules, &entry.omit_stages, entry.omit_managed_fields),
                outputs: sink.outputs.clone(),
                timeout: sink.timeout,
                max_attempts: sink.max_attempts,
                plugin: Arc::new(plugin),
            }));
        }
        Ok(Snapshot {
            generation,
            file: config.file.clone(),
            content_hash: config.content_hash.clone(),
            policies: PolicySet::new(policies),
            audit_sinks,
        })
    }
}
