//! Owns the policy file: its YAML schema, defaults and validation, and the errors that name the
//! file, line and reason. Produces plain validated data; must not compile Wasm or open sockets
//! (reading the policy file itself, the modules it names for their pins, and checking that the
//! files an output names exist, is its only I/O).

mod audit;
pub(crate) mod locate;
mod quantity;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use audit::{
    AuditRule, AuditSinkEntry, DEFAULT_MAX_ATTEMPTS, DEFAULT_SINK_TIMEOUT, GroupResources,
    KafkaKey, KafkaSpec, MAX_SINK_TIMEOUT, OutputEntry, OutputKind, OutputSpec, OutputType, Sasl,
    SaslMechanism,
};
pub use quantity::parse_quantity;
pub(crate) use schema::names;
pub use schema::{
    ContextGrant, FailurePolicy, InstanceReuse, LabelSelector, Mode, PluginKind, PolicyEntry,
    PolicyFile, Reinvocation, Rule, Scope, SelectorOperator, SelectorRequirement, Verification,
};

use crate::supply::{OciRef, TrustedKey};
use crate::wire::parse_go_duration;

/// The API version of wasmgate policy files.
pub const API_VERSION: &str = "wasmgate.io/v1alpha1";
/// The kind of wasmgate policy files.
pub const KIND: &str = "PolicySet";
/// A plugin's deadline when its entry names none. Kubewarden's default is the same order of
/// magnitude; admission plugins are expected to answer in microseconds to milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `timeout` an entry may ask for: the API server never waits more than 30 s.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// A plugin's linear-memory cap when its entry names none: ample for Rust and C plugins
/// (tens of KiB to 17 MiB measured), and small enough that 64 in flight fit in 4 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
/// The largest `memoryLimit` an entry may ask for; also the pooling allocator's slot size.
pub const MAX_MEMORY_LIMIT: u64 = 1 << 30;
/// The largest module file a policy or sink may name. Components measured: Rust and C plugins
/// 0.1-2 MiB, JavaScript (StarlingMonkey) about 11 MiB, Python (componentize-py) about 18 MiB;
/// the cap leaves room for larger interpreters and keeps a wrong path (a disk image, a log)
/// from being read whole into memory.
pub const MAX_MODULE_BYTES: u64 = 128 << 20;

/// The most warm instances all policies of a file may keep together (`instanceReuse.maxIdle`
/// summed): half the runtime's warm pool slots, since two snapshots may be alive during a reload.
pub const MAX_WARM_TOTAL: usize = 128;

/// A policy file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The policy file.
    pub file: PathBuf,
    /// The 1-based line the problem is on, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A YAML file of ours (a policy file, a test suite) that does not parse or breaks its
    /// schema (an unknown key, a wrong type), with the parser's line.
    pub fn yaml(file: &Path, e: &serde_yaml_ng::Error) -> Self {
        // The library appends " at line L column C"; we print the line ourselves.
        let mut message = e.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        ConfigError {
            file: file.to_owned(),
            line: e.location().map(|l| l.line()),
            message,
        }
    }
}

/// What policies and audit sinks both resolve to: the module read and pinned, settings as JSON
/// text, durations and quantities parsed.
#[derive(Debug, Clone)]
pub struct ResolvedModule {
    /// The module's absolute path.
    pub path: PathBuf,
    /// The module's bytes.
    pub bytes: std::sync::Arc<Vec<u8>>,
    /// sha256 of the module, hex.
    pub sha256: String,
    /// The settings as JSON text.
    pub settings_json: String,
    /// The per-call deadline.
    pub timeout: Duration,
    /// The linear-memory cap in bytes.
    pub memory_limit: u64,
    /// The line of the entry's `name:` in the file, for later error messages.
    pub line: Option<usize>,
    /// The line of the entry's `settings:`, where a plugin's refusal of its settings points
    /// (the entry's line when it has none).
    pub settings_line: Option<usize>,
    /// Where an `oci://` module came from; `None` for a file.
    pub oci: Option<OciOrigin>,
}

/// An `oci://` module as loaded: what the file says and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciOrigin {
    /// The reference as written.
    pub reference: String,
    /// The manifest digest it was loaded at (a tag's resolution).
    pub digest: String,
    /// The trusted key whose signature was verified, if the module must be signed.
    pub signed_by: Option<PathBuf>,
}

/// A validated policy entry with everything resolved.
#[derive(Debug, Clone)]
pub struct ResolvedEntry {
    /// The entry as written.
    pub entry: PolicyEntry,
    /// Its module, settings and limits.
    pub module: ResolvedModule,
}

/// A validated audit sink with everything resolved.
#[derive(Debug, Clone)]
pub struct ResolvedSink {
    /// The entry as written.
    pub entry: AuditSinkEntry,
    /// Its module, settings and limits.
    pub module: ResolvedModule,
    /// Failed calls of one batch before it is dead-lettered.
    pub max_attempts: u32,
    /// Batches delivered at once.
    pub in_flight: u32,
    /// The granted outputs.
    pub outputs: Vec<OutputSpec>,
}

/// A loaded, validated policy file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// sha256 of the file's bytes together with every module's, hex: the snapshot's identity.
    pub content_hash: String,
    /// The entries, in file order.
    pub entries: Vec<ResolvedEntry>,
    /// The audit sinks, in file order.
    pub sinks: Vec<ResolvedSink>,
}

/// A module read and checked against its pin.
struct Module {
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
    oci: Option<OciOrigin>,
}

impl Config {
    /// Reads and validates `file`, and reads every module it names.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: None,
            message: format!("cannot read policy file: {e}"),
        })?;
        Self::parse(file, &text)
    }

    /// Refuses a file output inside the audit spool directory `spool_dir`: the spool owns what
    /// is there (segments are deleted, dead letters counted), and an output there would fill
    /// the spool's volume and count against nothing. Paths are compared after resolving `..`
    /// and symbolic links of the parts that exist.
    pub fn check_outputs_outside(&self, spool_dir: &Path) -> Result<(), ConfigError> {
        let spool = audit::resolved(spool_dir);
        for sink in &self.sinks {
            for output in &sink.outputs {
                let OutputKind::File { path, .. } = &output.kind else {
                    continue;
                };
                if audit::resolved(path).starts_with(&spool) {
                    return Err(ConfigError {
                        file: self.file.clone(),
                        line: sink.module.line,
                        message: format!(
                            "audit sink {:?}: output {:?} writes to {}, inside the audit spool directory {}; choose a path outside it",
                            sink.entry.name,
                            output.name,
                            path.display(),
                            spool_dir.display()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Validates the text of a policy file located at `file` (modules resolve relative to it).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError {
            file: file.to_owned(),
            line,
            message,
        };
        let parsed: PolicyFile =
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
        let base = file.parent().unwrap_or(Path::new("."));
        let file_keys = trusted_keys(file, text, None, parsed.verification.as_ref())?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut hasher, text.as_bytes());
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::with_capacity(parsed.policies.len());
        for entry in parsed.policies {
            let line = locate::entry_line(text, &entry.name);
            let at = |message: String| {
                let line = locate::field_line(text, line, &message).or(line);
                err(line, format!("policy {:?}: {message}", entry.name))
            };
            validate_name(&entry.name).map_err(at)?;
            if !seen.insert(entry.name.clone()) {
                return Err(at("the name is used twice".into()));
            }
            entry.validate().map_err(at)?;
            let timeout = parse_timeout(entry.timeout.as_deref(), DEFAULT_TIMEOUT, MAX_TIMEOUT)
                .map_err(at)?;
            let memory_limit = parse_memory_limit(entry.memory_limit.as_deref()).map_err(at)?;
            let keys = match &entry.verification {
                Some(_) if !OciRef::is_oci(&entry.module) => {
                    return Err(err(
                        locate::entry_key_line(text, line, "verification").or(line),
                        format!(
                            "policy {:?}: verification applies to oci:// modules; {:?} is a file",
                            entry.name, entry.module
                        ),
                    ));
                }
                Some(v) => trusted_keys(file, text, line, Some(v))?,
                None => file_keys.clone(),
            };
            let Module {
                path: module_path,
                bytes: module_bytes,
                sha256: module_sha256,
                oci,
            } = read_module(
                file,
                text,
                line,
                &format!("policy {:?}", entry.name),
                &entry.module,
                entry.sha256.as_deref(),
                &keys,
            )?;
            sha2::Digest::update(&mut hasher, module_sha256.as_bytes());
            let settings_json = settings_json(entry.settings.as_ref()).map_err(at)?;
            entries.push(ResolvedEntry {
                module: ResolvedModule {
                    path: module_path,
                    bytes: std::sync::Arc::new(module_bytes),
                    sha256: module_sha256,
                    settings_json,
                    timeout,
                    memory_limit,
                    line,
                    settings_line: locate::entry_key_line(text, line, "settings").or(line),
                    oci,
                },
                entry,
            });
        }
        let warm: usize = entries
            .iter()
            .filter_map(|e| e.entry.instance_reuse.map(|r| r.max_idle))
            .sum();
        if warm > MAX_WARM_TOTAL {
            return Err(err(
                None,
                format!(
                    "instanceReuse.maxIdle adds up to {warm} over all policies; at most {MAX_WARM_TOTAL}"
                ),
            ));
        }
        let mut sinks = Vec::with_capacity(parsed.audit_sinks.len());
        for entry in parsed.audit_sinks {
            let line = locate::section_entry_line(text, "auditSinks", &entry.name);
            let what = format!("audit sink {:?}", entry.name);
            let at = |message: String| {
                let line = locate::field_line(text, line, &message).or(line);
                err(line, format!("{what}: {message}"))
            };
            validate_name(&entry.name).map_err(at)?;
            if !seen.insert(entry.name.clone()) {
                return Err(at("the name is used twice".into()));
            }
            let outputs = entry.validate(base).map_err(at)?;
            for output in &outputs {
                let OutputKind::File { path, .. } = &output.kind else {
                    continue;
                };
                let taken = sinks
                    .iter()
                    .flat_map(|s: &ResolvedSink| s.outputs.iter().map(move |o| (&s.entry.name, o)));
                for (other, o) in taken {
                    if matches!(&o.kind, OutputKind::File { path: p, .. } if p == path) {
                        return Err(at(format!(
                            "output {:?} writes to {}, which audit sink {other:?} already writes to",
                            output.name,
                            path.display()
                        )));
                    }
                }
            }
            let timeout = parse_timeout(
                entry.timeout.as_deref(),
                DEFAULT_SINK_TIMEOUT,
                MAX_SINK_TIMEOUT,
            )
            .map_err(at)?;
            let memory_limit = parse_memory_limit(entry.memory_limit.as_deref()).map_err(at)?;
            let max_attempts = entry.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
            if !(1..=audit::MAX_MAX_ATTEMPTS).contains(&max_attempts) {
                return Err(at(format!(
                    "maxAttempts {max_attempts} must be between 1 and {}",
                    audit::MAX_MAX_ATTEMPTS
                )));
            }
            let in_flight = entry.max_in_flight.unwrap_or_else(audit::default_in_flight);
            if !(1..=audit::MAX_IN_FLIGHT).contains(&in_flight) {
                return Err(at(format!(
                    "maxInFlight {in_flight} must be between 1 and {}",
                    audit::MAX_IN_FLIGHT
                )));
            }
            let module = read_module(
                file,
                text,
                line,
                &what,
                &entry.module,
                entry.sha256.as_deref(),
                &file_keys,
            )?;
            sha2::Digest::update(&mut hasher, module.sha256.as_bytes());
            let settings_json = settings_json(entry.settings.as_ref()).map_err(at)?;
            sinks.push(ResolvedSink {
                module: ResolvedModule {
                    path: module.path,
                    bytes: std::sync::Arc::new(module.bytes),
                    sha256: module.sha256,
                    settings_json,
                    timeout,
                    memory_limit,
                    line,
                    settings_line: locate::entry_key_line(text, line, "settings").or(line),
                    oci: module.oci,
                },
                max_attempts,
                in_flight,
                outputs,
                entry,
            });
        }
        Ok(Config {
            file: file.to_owned(),
            content_hash: hex::encode(sha2::Digest::finalize(hasher)),
            entries,
            sinks,
        })
    }
}

/// An entry's `settings` as the JSON text plugins get from `settings()`; `{}` when absent.
fn settings_json(settings: Option<&serde_json::Value>) -> Result<String, String> {
    settings.map_or(Ok("{}".to_owned()), |v| {
        serde_json::to_string(v).map_err(|e| format!("settings: {e}"))
    })
}

/// A `timeout` value: a Go duration, more than zero and at most `max`.
fn parse_timeout(
    value: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let Some(t) = value else { return Ok(default) };
    let d = parse_go_duration(t).map_err(|e| format!("timeout: {e}"))?;
    if d.is_zero() || d > max {
        return Err(format!(
            "timeout {t} must be more than 0 and at most {}s",
            max.as_secs()
        ));
    }
    Ok(d)
}

/// A `memoryLimit` value: a quantity between 1Mi and 1Gi.
fn parse_memory_limit(value: Option<&str>) -> Result<u64, String> {
    let Some(q) = value else {
        return Ok(DEFAULT_MEMORY_LIMIT);
    };
    let bytes = parse_quantity(q).map_err(|e| format!("memoryLimit: {e}"))?;
    if !(1 << 20..=MAX_MEMORY_LIMIT).contains(&bytes) {
        return Err(format!("memoryLimit {q} must be between 1Mi and 1Gi"));
    }
    Ok(bytes)
}

/// The trusted keys of a `verification:` section (paths relative to the policy file), read
/// now so that a missing or malformed key stops the load. Errors point at the section.
fn trusted_keys(
    file: &Path,
    text: &str,
    entry_line: Option<usize>,
    verification: Option<&Verification>,
) -> Result<Vec<TrustedKey>, ConfigError> {
    let Some(v) = verification else {
        return Ok(Vec::new());
    };
    let line = match entry_line {
        Some(_) => locate::entry_key_line(text, entry_line, "verification").or(entry_line),
        None => locate::key_line(text, "verification"),
    };
    let err = |message: String| ConfigError {
        file: file.to_owned(),
        line,
        message,
    };
    if v.cosign_keys.is_empty() {
        return Err(err(
            "verification: cosignKeys lists no key; name at least one trusted cosign public key"
                .into(),
        ));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    v.cosign_keys
        .iter()
        .map(|k| TrustedKey::load(&base.join(k)).map_err(|e| err(format!("verification: {e}"))))
        .collect()
}

/// Reads the module an entry names (relative to the policy file, or pulled from a registry
/// for `oci://`, verified against `keys` when there are any) and checks its pin. Errors point
/// at the entry's `module:` or `sha256:` line.
fn read_module(
    file: &Path,
    text: &str,
    line: Option<usize>,
    what: &str,
    module: &str,
    pin: Option<&str>,
    keys: &[TrustedKey],
) -> Result<Module, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError {
        file: file.to_owned(),
        line,
        message,
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let module_line = locate::key_line_after(text, line, "module").or(line);
    let (path, bytes, oci) = if OciRef::is_oci(module) {
        let reference =
            OciRef::parse(module).map_err(|e| err(module_line, format!("{what}: module {e}")))?;
        let fetched = crate::supply::global()
            .fetch(&reference, keys)
            .map_err(|e| err(module_line, format!("{what}: module {module}: {e}")))?;
        if reference.tag.is_some() {
            tracing::info!(
                reference = module, digest = %fetched.manifest_digest, pulled = fetched.pulled,
                "{what}: tag resolved"
            );
        }
        let origin = OciOrigin {
            reference: module.to_owned(),
            digest: fetched.manifest_digest,
            signed_by: fetched.signed_by,
        };
        (fetched.path, fetched.bytes, Some(origin))
    } else {
        let path = base.join(module);
        let bytes = read_regular_file(&path, MAX_MODULE_BYTES).map_err(|e| {
            err(
                module_line,
                format!("{what}: cannot read module {}: {e}", path.display()),
            )
        })?;
        (path, bytes, None)
    };
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    if let Some(pin) = pin
        && !pin.eq_ignore_ascii_case(&sha256)
    {
        return Err(err(
            locate::key_line_after(text, line, "sha256").or(line),
            format!(
                "{what}: module {} has sha256 {sha256}, but the policy pins {pin}",
                oci.as_ref()
                    .map_or_else(|| path.display().to_string(), |o| o.reference.clone())
            ),
        ));
    }
    Ok(Module {
        path,
        bytes,
        sha256,
        oci,
    })
}

/// Reads `path` whole if it is a regular file (after symbolic links) of at most `cap` bytes.
/// Anything else is refused before a byte is read: a device (`/dev/zero` never ends), a FIFO or
/// socket (reading blocks until someone writes), a directory. The file is opened without
/// blocking and checked again once open, so one swapped for a FIFO meanwhile cannot hang the
/// loader, and at most `cap + 1` bytes are read if it grows meanwhile.
fn read_regular_file(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let check = |meta: &std::fs::Metadata| -> std::io::Result<()> {
        let kind = meta.file_type();
        let not = |what: &str| {
            Err(Error::new(
                ErrorKind::InvalidInput,
                format!("it is {what}, not a regular file"),
            ))
        };
        if kind.is_dir() {
            return not("a directory");
        } else if kind.is_fifo() {
            return not("a FIFO (named pipe)");
        } else if kind.is_socket() {
            return not("a socket");
        } else if kind.is_char_device() {
            return not("a character device");
        } else if kind.is_block_device() {
            return not("a block device");
        } else if !kind.is_file() {
            return not("a special file");
        }
        if meta.len() > cap {
            return Err(Error::new(
                ErrorKind::FileTooLarge,
                format!(
                    "it has {} bytes, more than the {cap} a module may have",
                    meta.len()
                ),
            ));
        }
        Ok(())
    };
    check(&std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::FileTooLarge,
            format!("it grew past the {cap} bytes a module may have while being read"),
        ));
    }
    Ok(bytes)
}

/// Policy names appear in URL paths (`/validate/{name}`) and audit-annotation keys, so they
/// are DNS labels: lowercase alphanumerics and `-`, at most 63 characters.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("the name must be a DNS label: 1-63 lowercase letters, digits or '-', not starting or ending with '-'".into())
    }
}

#[cfg(test)]
mod tests;
