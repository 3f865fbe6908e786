//! Owns the plugin supply chain from OCI registries: resolving `oci://` references, pulling
//! artifacts (bounded in size and time) into the content-addressed module cache, verifying
//! cosign signatures, and pushing. Knows nothing of HTTP serving, admission or the Wasm runtime:
//! it hands the config loader verified bytes.

pub mod artifact;
pub mod auth;
pub mod cosign;
pub mod reference;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

pub use cosign::TrustedKey;
pub use reference::OciRef;
use store::{Store, digest_of};

/// Default --pull-timeout: one whole pull (manifest, layer, signature).
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest signature manifest or payload read (cosign's are a few hundred bytes).
const MAX_SIGNATURE_BYTES: u64 = 256 << 10;

/// How modules are pulled: `serve`'s `--registry-*`, `--module-cache`, `--pull-*` flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The content-addressed module cache.
    pub cache_dir: PathBuf,
    /// A Docker config.json with registry credentials.
    pub credentials: Option<PathBuf>,
    /// CA certificates (PEM) trusted for registries, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// The largest Wasm layer pulled, in bytes.
    pub max_bytes: u64,
    /// The longest one pull may take.
    pub timeout: Duration,
}

impl Settings {
    /// Defaults: cache under `cache_base/modules`, no credentials, HTTPS only, the config
    /// loader's module size cap, [`DEFAULT_PULL_TIMEOUT`].
    pub fn with_cache(cache_dir: PathBuf) -> Settings {
        Settings {
            cache_dir,
            credentials: None,
            ca_file: None,
            insecure: Vec::new(),
            max_bytes: crate::config::MAX_MODULE_BYTES,
            timeout: DEFAULT_PULL_TIMEOUT,
        }
    }
}

/// Registry access with its settings read and checked.
#[derive(Debug)]
pub struct Supply {
    settings: Settings,
    credentials: auth::Credentials,
    ca_pem: Option<Vec<u8>>,
    store: Store,
}

/// A module pulled (or read from the cache) and verified.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// The manifest digest the module was loaded at.
    pub manifest_digest: String,
    /// The Wasm layer's digest (`sha256:` of `bytes`).
    pub layer_digest: String,
    /// Where the layer sits in the cache.
    pub path: PathBuf,
    /// Whether the registry was contacted.
    pub pulled: bool,
    /// The trusted key whose signature was verified, if keys were given.
    pub signed_by: Option<PathBuf>,
}

static GLOBAL: OnceLock<Arc<Supply>> = OnceLock::new();

/// Sets the process's registry settings (once, before the first policy file is loaded).
pub fn configure(settings: Settings) -> Result<(), String> {
    let supply = Arc::new(Supply::new(settings)?);
    GLOBAL
        .set(supply)
        .map_err(|_| "registry settings are already configured".to_owned())
}

/// The process's registry settings: what [`configure`] set, else the defaults with the cache
/// under `$WASMGATE_CACHE/modules` (or `~/.cache/wasmgate/modules`).
pub fn global() -> Arc<Supply> {
    GLOBAL
        .get_or_init(|| {
            Arc::new(
                Supply::new(Settings::with_cache(default_cache_dir()))
                    .expect("defaults read no file"),
            )
        })
        .clone()
}

/// `$WASMGATE_CACHE/modules`, else `$XDG_CACHE_HOME/wasmgate/modules`, else
/// `~/.cache/wasmgate/modules`, else `.wasmgate/modules`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("WASMGATE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("wasmgate")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmgate")))
        .unwrap_or_else(|| PathBuf::from(".wasmgate"))
        .join("modules")
}

impl Supply {
    /// Reads the credentials and CA files now, so that a bad one stops start-up.
    pub fn new(settings: Settings) -> Result<Supply, String> {
        let credentials = match &settings.credentials {
            Some(path) => auth::Credentials::load(path)?,
            None => auth::Credentials::default(),
        };
        let ca_pem = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read registry CA {}: {e}", path.display()))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!(
                        "registry CA {} holds no PEM certificate",
                        path.display()
                    ));
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Supply {
            store: Store::new(settings.cache_dir.clone()),
            settings,
            credentials,
            ca_pem,
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn client(&self) -> oci_client::Client {
        // reqwest's rustls takes the process's crypto provider; the gateway uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if self.settings.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(self.settings.insecure.clone())
            },
            extra_root_certificates: self
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(self.settings.timeout.min(Duration::from_secs(10))),
            read_timeout: Some(self.settings.timeout),
            ..ClientConfig::default()
        };
        oci_client::Client::new(config)
    }

    fn auth(&self, r: &OciRef) -> RegistryAuth {
        match self.credentials.for_registry(&r.registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Resolves `r`, loads its Wasm layer from the cache or the registry, and, when `keys` is not
    /// empty, checks a cosign signature by one of them. Blocking (runs its own I/O thread); a
    /// reference pinned by digest whose content and signature are cached needs no registry.
    pub fn fetch(&self, r: &OciRef, keys: &[TrustedKey]) -> Result<Fetched, String> {
        if r.tag.is_none()
            && let Some(fetched) = self.cached(r, keys)
        {
            return Ok(fetched);
        }
        let timeout = self.settings.timeout;
        self.block_on(async {
            tokio::time::timeout(timeout, self.pull(r, keys))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the pull from {} did not finish within {timeout:?} (--pull-timeout)",
                        r.registry
                    ))
                })
        })
    }

    /// Runs `fut` to completion on a thread of its own, with its own runtime, so that callers
    /// on a runtime thread or not can block on it.
    fn block_on<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a current-thread runtime")
                        .block_on(fut)
                })
                .join()
                .expect("the pull thread does not panic")
        })
    }

    fn cached(&self, r: &OciRef, keys: &[TrustedKey]) -> Option<Fetched> {
        let digest = r.digest.as_deref()?;
        let manifest = self.store.get(digest, artifact::MAX_MANIFEST_BYTES)?;
        let layer = artifact::wasm_layer(&manifest).ok()?;
        if layer.size > self.settings.max_bytes {
            return None;
        }
        let bytes = self.store.get(&layer.digest, self.settings.max_bytes)?;
        let signed_by = if keys.is_empty() {
            None
        } else {
            let sig = self.store.signature_of(&r.repository_name(), digest)?;
            let sig_manifest = self.store.get(&sig, MAX_SIGNATURE_BYTES)?;
            let layers = signature_layers(&sig_manifest).ok()?;
            let mut verified = None;
            for (payload_digest, signature) in layers {
                let payload = self.store.get(&payload_digest, MAX_SIGNATURE_BYTES)?;
                if let Some(k) = keys.iter().find(|k| {
                    cosign::check(&payload, &signature, std::slice::from_ref(k), digest).is_ok()
                }) {
                    verified = Some(k.path.clone());
                    break;
                }
            }
            Some(verified?)
        };
        Some(Fetched {
            path: self
                .store
                .dir()
                .join("blobs/sha256")
                .join(&layer.digest[7..]),
            bytes,
            manifest_digest: digest.to_owned(),
            layer_digest: layer.digest,
            pulled: false,
            signed_by,
        })
    }

    async fn pull(&self, r: &OciRef, keys: &[TrustedKey]) -> Result<Fetched, String> {
        let client = self.client();
        let auth = self.auth(r);
        let digest = match (&r.tag, &r.digest) {
            (Some(tag), pinned) => {
                let resolved = client
                    .fetch_manifest_digest(&r.at_tag(tag).client_ref(), &auth)
                    .await
                    .map_err(|e| describe(&e, &format!("tag {tag:?}")))?;
                if let Some(pinned) = pinned
                    && !pinned.eq_ignore_ascii_case(&resolved)
                {
                    return Err(format!(
                        "tag {tag:?} now resolves to {resolved}, but the reference pins {pinned} (the tag was moved)"
                    ));
                }
                resolved
            }
            (None, Some(d)) => d.clone(),
            (None, None) => unreachable!("a reference has a tag or a digest"),
        };
        let at = r.at_digest(&digest);
        let manifest = match self.store.get(&digest, artifact::MAX_MANIFEST_BYTES) {
            Some(m) => m,
            None => {
                let (m, _) = client
                    .pull_manifest_raw(
                        &at.client_ref(),
                        &auth,
                        &[artifact::MANIFEST, artifact::DOCKER_MANIFEST],
                    )
                    .await
                    .map_err(|e| describe(&e, &format!("manifest {digest}")))?;
                if m.len() as u64 > artifact::MAX_MANIFEST_BYTES {
                    return Err(format!(
                        "the manifest has {} bytes, more than {}",
                        m.len(),
                        artifact::MAX_MANIFEST_BYTES
                    ));
                }
                if digest_of(&m) != digest {
                    return Err(format!(
                        "the registry answered {digest} with a manifest whose digest is {}",
                        digest_of(&m)
                    ));
                }
                self.store.put(&m).map_err(|e| self.cache_error(e))?;
                m.to_vec()
            }
        };
        let layer = artifact::wasm_layer(&manifest)?;
        if layer.size > self.settings.max_bytes {
            return Err(format!(
                "its Wasm layer has {} bytes, more than the {} a module may have (--pull-max-bytes)",
                layer.size, self.settings.max_bytes
            ));
        }
        let bytes = match self.store.get(&layer.digest, self.settings.max_bytes) {
            Some(b) => b,
            None => {
                let b = self
                    .pull_blob(&client, &at, &layer.digest, self.settings.max_bytes)
                    .await?;
                self.store.put(&b).map_err(|e| self.cache_error(e))?;
                b
            }
        };
        let signed_by = if keys.is_empty() {
            None
        } else {
            Some(self.verify(&client, &auth, r, &digest, keys).await?)
        };
        Ok(Fetched {
            path: self
                .store
                .dir()
                .join("blobs/sha256")
                .join(&layer.digest[7..]),
            bytes,
            manifest_digest: digest,
            layer_digest: layer.digest,
            pulled: true,
            signed_by,
        })
    }

    /// Pulls blob `digest`, at most `cap` bytes, and checks its digest.
    async fn pull_blob(
        &self,
        client: &oci_client::Client,
        at: &OciRef,
        digest: &str,
        cap: u64,
    ) -> Result<Vec<u8>, String> {
        let what = format!("blob {digest}");
        let mut stream = client
            .pull_blob_stream(&at.client_ref(), digest)
            .await
            .map_err(|e| describe(&e, &what))?;
        if let Some(len) = stream.content_length
            && len > cap
        {
            return Err(format!(
                "{what} has {len} bytes, more than the {cap} allowed (--pull-max-bytes)"
            ));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| format!("{what}: {}", chain(&e)))?;
            if (bytes.len() + chunk.len()) as u64 > cap {
                return Err(format!(
                    "{what} is larger than the {cap} bytes allowed (--pull-max-bytes)"
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(format!(
                "{what}: the content pulled has digest {actual} (tampered or corrupt)"
            ));
        }
        Ok(bytes)
    }

    /// Finds a cosign signature of `digest` by one of `keys` under the `sha256-<hex>.sig` tag.
    async fn verify(
        &self,
        client: &oci_client::Client,
        auth: &RegistryAuth,
        r: &OciRef,
        digest: &str,
        keys: &[TrustedKey],
    ) -> Result<PathBuf, String> {
        let tag = format!("sha256-{}.sig", &digest[7..]);
        let sig_ref = r.at_tag(&tag);
        let (sig_manifest, sig_digest) = client
            .pull_manifest_raw(
                &sig_ref.client_ref(),
                auth,
                &[artifact::MANIFEST, artifact::DOCKER_MANIFEST],
            )
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    format!(
                        "it is not signed: there is no cosign signature (tag {tag}) in the registry"
                    )
                } else {
                    describe(&e, &format!("signature tag {tag}"))
                }
            })?;
        if sig_manifest.len() as u64 > MAX_SIGNATURE_BYTES {
            return Err(format!(
                "the signature manifest {tag} is larger than {MAX_SIGNATURE_BYTES} bytes"
            ));
        }
        let layers = signature_layers(&sig_manifest)?;
        let mut reasons = Vec::new();
        for (payload_digest, signature) in &layers {
            let payload = self
                .pull_blob(client, &sig_ref, payload_digest, MAX_SIGNATURE_BYTES)
                .await?;
            for key in keys {
                match cosign::check(&payload, signature, std::slice::from_ref(key), digest) {
                    Ok(()) => {
                        let _ = self.store.put(&payload);
                        let stored = self
                            .store
                            .put(&sig_manifest)
                            .map_err(|e| self.cache_error(e))?;
                        debug_assert!(sig_digest.is_empty() || stored == sig_digest);
                        self.store
                            .set_signature(&r.repository_name(), digest, &stored)
                            .map_err(|e| self.cache_error(e))?;
                        return Ok(key.path.clone());
                    }
                    Err(cosign::Refusal::UntrustedKey) => {}
                    Err(cosign::Refusal::OtherDigest(other)) => reasons.push(format!(
                        "a signature by {} is for {other}, not for {digest}",
                        key.path.display()
                    )),
                    Err(cosign::Refusal::Malformed(m)) => reasons.push(m),
                }
            }
        }
        if reasons.is_empty() {
            Err(format!(
                "none of its {} cosign signature(s) is by a trusted key ({})",
                layers.len(),
                keys.iter()
                    .map(|k| k.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            Err(format!(
                "no valid signature by a trusted key: {}",
                reasons.join("; ")
            ))
        }
    }

    fn cache_error(&self, e: std::io::Error) -> String {
        format!(
            "cannot write the module cache {}: {e}",
            self.store.dir().display()
        )
    }

    /// Pushes a component named `title` as a Wasm artifact to `r` (its tag, or untagged by
    /// digest) and returns the manifest digest. `world` and `package` become annotations.
    pub fn push(
        &self,
        bytes: &[u8],
        title: &str,
        r: &OciRef,
        world: &str,
        package: &str,
    ) -> Result<String, String> {
        let layer_digest = digest_of(bytes);
        let (config, manifest) = artifact::build(&layer_digest, bytes.len(), title, world, package);
        let manifest_digest = digest_of(&manifest);
        let target = match &r.tag {
            Some(t) => r.at_tag(t),
            None => r.at_digest(&manifest_digest),
        };
        if let Some(pinned) = &r.digest
            && pinned != &manifest_digest
        {
            return Err(format!(
                "the artifact's digest is {manifest_digest}, not the {pinned} the reference names"
            ));
        }
        let timeout = self.settings.timeout;
        self.block_on(async {
            let client = self.client();
            let auth = self.auth(r);
            let work = async {
                let cref = target.client_ref();
                client
                    .auth(&cref, &auth, oci_client::RegistryOperation::Push)
                    .await
                    .map_err(|e| describe(&e, "authentication"))?;
                for blob in [bytes.to_vec(), config.clone()] {
                    let d = digest_of(&blob);
                    client
                        .push_blob(&cref, blob, &d)
                        .await
                        .map_err(|e| describe(&e, &format!("blob {d}")))?;
                }
                client
                    .push_manifest_raw(
                        &cref,
                        manifest.clone(),
                        http::HeaderValue::from_static(artifact::MANIFEST),
                    )
                    .await
                    .map_err(|e| describe(&e, "manifest"))?;
                Ok::<_, String>(())
            };
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| Err(format!("the push did not finish within {timeout:?}")))
        })?;
        let _ = self.store.put(&manifest);
        let _ = self.store.put(bytes);
        Ok(manifest_digest)
    }
}

/// `(payload digest, base64 signature)` of each simple-signing layer of a cosign manifest.
fn signature_layers(manifest: &[u8]) -> Result<Vec<(String, String)>, String> {
    let m: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| format!("the signature manifest is not JSON: {e}"))?;
    let layers: Vec<(String, String)> = m
        .get("layers")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter(|l| l.get("mediaType").and_then(|v| v.as_str()) == Some(cosign::SIMPLE_SIGNING))
        .filter_map(|l| {
            let digest = l.get("digest")?.as_str()?.to_owned();
            let sig = l.pointer(&format!(
                "/annotations/{}",
                cosign::SIGNATURE_ANNOTATION.replace('/', "~1")
            ))?;
            Some((digest, sig.as_str()?.to_owned()))
        })
        .collect();
    if layers.is_empty() {
        return Err(
            "the signature manifest has no cosign simple-signing layer with a signature".into(),
        );
    }
    Ok(layers)
}

fn is_not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::ServerError { code, .. } => *code == 404,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
                    | oci_client::errors::OciErrorCode::BlobUnknown
            )
        }),
        _ => false,
    }
}

/// One line for a registry error: not found, unauthorized, unreachable or what the client said.
fn describe(e: &oci_client::errors::OciDistributionError, what: &str) -> String {
    use oci_client::errors::OciDistributionError as E;
    if is_not_found(e) {
        return format!("{what} not found in the registry");
    }
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            format!(
                "{what}: the registry refused the credentials ({}); see --registry-auth",
                chain(e)
            )
        }
        E::RequestError(r) if r.is_connect() || r.is_timeout() => {
            format!("{what}: cannot reach the registry: {}", chain(e))
        }
        _ => format!("{what}: {}", chain(e)),
    }
}

/// An error with its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
