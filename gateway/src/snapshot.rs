//! Owns assembling an immutable [`Snapshot`] (every policy and audit sink with its compiled
//! plugin) from a validated [`Config`] and the [`Runtime`]. Building is blocking and may take
//! seconds; it never runs on the request path. A snapshot is never changed after it is built.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{
    Config, ConfigError, ContextGrant, ResolvedEntry, ResolvedModule, ResolvedSink,
};
use crate::context::ClusterState;
use crate::policy::audit::{AuditRules, SinkPolicy};
use crate::policy::{Matcher, Policy, PolicySet};
use crate::runtime::{LoadError, Plugin, PluginSpec, Reuse, Runtime, World};

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
    /// The validated policy file this snapshot was built from (what `--register` renders).
    pub config: Arc<Config>,
    /// The module files the policies and sinks were loaded from (watched for hot reload).
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
    context: Vec<ContextGrant>,
}

impl Snapshot {
    /// Compiles and checks every plugin of `config`. A module that does not compile, does not
    /// implement its declared world, or cannot instantiate under its limits fails the build with
    /// the policy file, the entry's line and the reason; settings the plugin refuses (its
    /// `validate-settings` export, wasmgate:plugin@0.2.0) fail it with the line of the entry's
    /// `settings` and the plugin's message. Plugins whose module, settings and limits are
    /// unchanged since `previous` are reused as they are, neither recompiled nor re-checked.
    pub fn build(
        config: &Config,
        runtime: &Runtime,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigError> {
        Self::build_with(config, runtime, generation, previous, None)
    }

    /// [`Snapshot::build`], with the policies' `cluster` lookups answered from `cluster`
    /// (whose caches [`ClusterState::prepare`] started for `config`). Without it, every lookup
    /// is `denied`.
    pub fn build_with(
        config: &Config,
        runtime: &Runtime,
        generation: u64,
        previous: Option<&Snapshot>,
        cluster: Option<&Arc<ClusterState>>,
    ) -> Result<Snapshot, ConfigError> {
        let mut plugins = HashMap::new();
        let mut load =
            |what: &str, world: World, spec: Spec<'_>| -> Result<Arc<Plugin>, ConfigError> {
                let key = PluginKey {
                    name: spec.name.to_owned(),
                    world: world.name(),
                    module_sha256: spec.module.sha256.clone(),
                    settings: spec.module.settings_json.clone(),
                    memory_limit: spec.module.memory_limit,
                    reuse: spec.reuse,
                    context: spec.context.to_vec(),
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
                                name: spec.name.to_owned(),
                                kind: world,
                                bytes: spec.module.bytes.clone(),
                                settings: spec.module.settings_json.clone(),
                                memory_limit: spec.module.memory_limit,
                                timeout: spec.module.timeout,
                                reuse: spec.reuse,
                                cluster: cluster.and_then(|c| c.view(spec.name, spec.context)),
                            })
                            .map_err(|e| {
                                // A refusal of the settings points at them, not at the entry,
                                // and the plugin speaks: its module's path would only hide it.
                                let settings = matches!(
                                    e,
                                    LoadError::SettingsRefused(_) | LoadError::SettingsCheck(_)
                                );
                                ConfigError {
                                    file: config.file.clone(),
                                    line: if settings {
                                        spec.module.settings_line
                                    } else {
                                        spec.module.line
                                    },
                                    message: if settings {
                                        format!("{what} {:?}: {e}", spec.name)
                                    } else {
                                        format!(
                                            "{what} {:?}: {}: {e}",
                                            spec.name,
                                            spec.module.path.display()
                                        )
                                    },
                                }
                            })?,
                    ),
                };
                plugins.insert(key, plugin.clone());
                Ok(plugin)
            };
        let mut policies = Vec::with_capacity(config.entries.len());
        for resolved in &config.entries {
            let plugin = load("policy", resolved.entry.kind.into(), Spec::entry(resolved))?;
            policies.push(policy(resolved, plugin));
        }
        let mut audit_sinks = Vec::with_capacity(config.sinks.len());
        for sink in &config.sinks {
            let plugin = load("audit sink", World::AuditSink, Spec::sink(sink))?;
            audit_sinks.push(Arc::new(sink_policy(sink, plugin)));
        }
        Ok(Snapshot {
            config: Arc::new(config.clone()),
            generation,
            file: config.file.clone(),
            content_hash: config.content_hash.clone(),
            policies: PolicySet::new(policies),
            audit_sinks,
            // Files only: an `oci://` module's cached blob never changes (content-addressed).
            module_paths: config
                .entries
                .iter()
                .map(|e| &e.module)
                .chain(config.sinks.iter().map(|s| &s.module))
                .filter(|m| m.oci.is_none())
                .map(|m| m.path.clone())
                .collect(),
            plugins,
        })
    }
}

/// What loading one plugin needs, from a policy or a sink entry.
struct Spec<'a> {
    name: &'a str,
    module: &'a ResolvedModule,
    /// Warm instances: admission policies may opt in; sinks always get a fresh instance.
    reuse: Option<Reuse>,
    /// What its `cluster` lookups may read (admission policies only).
    context: &'a [ContextGrant],
}

impl<'a> Spec<'a> {
    fn entry(r: &'a ResolvedEntry) -> Self {
        let reuse = r.entry.instance_reuse.map(|r| Reuse {
            max_calls: r.max_calls,
            max_idle: r.max_idle,
        });
        Spec {
            name: &r.entry.name,
            module: &r.module,
            reuse,
            context: &r.entry.context,
        }
    }

    fn sink(r: &'a ResolvedSink) -> Self {
        Spec {
            name: &r.entry.name,
            module: &r.module,
            reuse: None,
            context: &[],
        }
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
        timeout: resolved.module.timeout,
        plugin,
    }
}

fn sink_policy(sink: &ResolvedSink, plugin: Arc<Plugin>) -> SinkPolicy<Plugin> {
    let entry = &sink.entry;
    SinkPolicy {
        name: entry.name.clone(),
        rules: AuditRules::new(&entry.rules, &entry.omit_stages, entry.omit_managed_fields),
        outputs: sink.outputs.clone(),
        timeout: sink.module.timeout,
        max_attempts: sink.max_attempts,
        in_flight: sink.in_flight as usize,
        plugin,
    }
}
