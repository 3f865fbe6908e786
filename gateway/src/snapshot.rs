//! Owns assembling an immutable [`Snapshot`] (every policy with its compiled plugin) from a
//! validated [`Config`] and the [`Runtime`]. Building is blocking and may take seconds; it never
//! runs on the request path. A snapshot is never changed after it is built.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ResolvedEntry};
use crate::policy::{Matcher, Policy, PolicySet};
use crate::runtime::{Plugin, PluginSpec, Reuse, Runtime};

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
    /// The module files the policies were loaded from (watched for hot reload).
    pub module_paths: Vec<PathBuf>,
    /// The compiled plugins by what they were built from, so that a rebuild reuses them.
    plugins: HashMap<PluginKey, Arc<Plugin>>,
}

/// What a compiled plugin depends on: equal keys give interchangeable plugins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PluginKey {
    name: String,
    world: &'static str,
    module_sha256: String,
    settings: String,
    memory_limit: u64,
    reuse: Option<Reuse>,
}

impl Snapshot {
    /// Compiles and checks every plugin of `config`. A module that does not compile, does not
    /// implement its declared world, or cannot instantiate under its limits fails the build with
    /// the policy file, the entry's line and the reason. Plugins whose module, settings and
    /// limits are unchanged since `previous` are reused as they are, neither recompiled nor
    /// re-checked.
    pub fn build(
        config: &Config,
        runtime: &Runtime,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigError> {
        let mut policies = Vec::with_capacity(config.entries.len());
        let mut plugins = HashMap::new();
        for resolved in &config.entries {
            let entry = &resolved.entry;
            let key = PluginKey {
                name: entry.name.clone(),
                world: entry.kind.world(),
                module_sha256: resolved.module_sha256.clone(),
                settings: resolved.settings_json.clone(),
                memory_limit: resolved.memory_limit,
                reuse: resolved.entry.instance_reuse.map(|r| Reuse {
                    max_calls: r.max_calls,
                    max_idle: r.max_idle,
                }),
            };
            let plugin = match previous.and_then(|p| p.plugins.get(&key)) {
                Some(plugin) => {
                    // Unchanged, but a new snapshot starts without warm instances.
                    plugin.discard_warm();
                    plugin.clone()
                }
                None => Arc::new(
                    runtime
                        .load(PluginSpec {
                            name: entry.name.clone(),
                            kind: entry.kind,
                            bytes: resolved.module_bytes.clone(),
                            settings: resolved.settings_json.clone(),
                            memory_limit: resolved.memory_limit,
                            reuse: key.reuse,
                        })
                        .map_err(|e| ConfigError {
                            file: config.file.clone(),
                            line: resolved.line,
                            message: format!(
                                "policy {:?}: {}: {e}",
                                entry.name,
                                resolved.module_path.display()
                            ),
                        })?,
                ),
            };
            plugins.insert(key, plugin.clone());
            policies.push(policy(resolved, plugin));
        }
        Ok(Snapshot {
            generation,
            file: config.file.clone(),
            content_hash: config.content_hash.clone(),
            policies: PolicySet::new(policies),
            module_paths: config
                .entries
                .iter()
                .map(|e| e.module_path.clone())
                .collect(),
            plugins,
        })
    }
}

fn policy(resolved: &ResolvedEntry, plugin: Arc<Plugin>) -> Policy<Plugin> {
    let entry = &resolved.entry;
    Policy {
        name: entry.name.clone(),
        kind: entry.kind,
        matcher: Matcher::new(entry),
        mode: entry.mode,
        failure_policy: entry.failure_policy,
        timeout: resolved.timeout,
        plugin,
    }
}
