//! Owns writing the gateway's own registration to the API server (`serve --register`): the
//! Validating- and MutatingWebhookConfiguration rendered from the serving snapshot, applied at
//! start, after every reload and after every certificate rotation, by the holder of a Lease
//! only. Knows nothing of admission or HTTP serving: it reads the serving configuration and the
//! CA through the closures it is given.

mod desired;
mod lease;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use tokio::time::Instant;

use crate::config::Config;
use crate::manifests::Options;

pub use desired::{Desired, WebhookKind, ca_bundle_from_pem, ca_from_pem, desired};
pub use lease::Elector;

/// The field manager of every write (server-side apply).
pub const FIELD_MANAGER: &str = "wasmgate";
/// How often the serving snapshot and the CA file are compared with what was last written.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a leader holds the Lease without renewing it by default (`--register-lease-duration`);
/// another replica takes over after it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews the Lease at most: every sixth of the Lease duration, no more
/// often than [`POLL`] and no less often than this.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(2);

/// How often the leader renews a Lease of `duration`.
pub fn renew_interval(duration: Duration) -> Duration {
    (duration / 6).clamp(POLL, RENEW_INTERVAL)
}
/// Even with nothing changed, the leader re-applies this often, repairing edits made by hand.
pub const RESYNC: Duration = Duration::from_secs(60);

/// How long the API server's webhook informer may take to see a written configuration: a
/// reload that removes a policy waits this long between writing the configuration without it
/// and swapping in the snapshot without it.
pub const PROPAGATION: Duration = Duration::from_secs(1);
/// The longest a write before a swap may hold the reload up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `--register` needs.
pub struct Settings {
    /// The API server client (from `--kubeconfig` or the in-cluster configuration).
    pub client: kube::Client,
    /// How the configurations are rendered (the same options as `wasmgate manifests`); its
    /// `ca_pem` is replaced by the CA file's content at every check.
    pub options: Options,
    /// The PEM file the caBundle comes from: its last certificate (a serving chain ends with
    /// its CA), or every certificate with `ca_file_is_bundle`.
    pub ca_file: PathBuf,
    /// `ca_file` is a CA bundle (`--register-ca-file`): publish all of it, so a rotation can
    /// trust the old and the new CA at once.
    pub ca_file_is_bundle: bool,
    /// The Lease's namespace and name.
    pub lease: (String, String),
    /// This replica's identity in the Lease.
    pub identity: String,
    /// How long the Lease holds without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
}

/// The registration: shared by its task and the reload hook ([`Registration::before_swap`]).
#[derive(Clone)]
pub struct Registration {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    /// Whether this replica holds the Lease (only the leader writes).
    leading: AtomicBool,
    /// One write at a time: the task's and the reload hook's.
    writing: tokio::sync::Mutex<()>,
    /// The runtime the hook's writes run on (the hook is called on a blocking thread).
    runtime: tokio::runtime::Handle,
}

/// Connects with `kubeconfig`, or the in-cluster configuration without one.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster()
            .context("--register without --kubeconfig needs the in-cluster configuration")?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

impl Registration {
    /// A registration on the current tokio runtime; nothing is written before
    /// [`Registration::start`].
    pub fn new(settings: Settings) -> Self {
        Registration {
            shared: Arc::new(Shared {
                settings,
                leading: AtomicBool::new(false),
                writing: tokio::sync::Mutex::new(()),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Whether this replica holds the Lease now (background reports are written by it only).
    pub fn is_leading(&self) -> bool {
        self.shared.leading.load(Ordering::SeqCst)
    }

    /// Keeps the cluster's webhook configurations equal to what `config()` renders until
    /// `shutdown` resolves, while this replica holds the Lease; then gives the Lease up.
    pub fn start(
        &self,
        config: impl Fn() -> Arc<Config> + Send + 'static,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let settings = &shared.settings;
            tokio::pin!(shutdown);
            let mut elector = Elector::new(
                settings.client.clone(),
                &settings.lease.0,
                &settings.lease.1,
                settings.identity.clone(),
                settings.lease_duration,
            );
            let lease_duration = settings.lease_duration;
            let renew = renew_interval(lease_duration);
            let mut leading = false;
            let mut renewed: Option<Instant> = None;
            let mut written: Option<(Vec<Desired>, Instant)> = None;
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = &mut shutdown => break,
                }
                if renewed.is_none_or(|at| at.elapsed() >= renew) {
                    let was = leading;
                    leading = match elector.try_acquire_or_renew().await {
                        Ok(held) => held,
                        Err(e) => {
                            tracing::warn!("registration lease: {e}");
                            // A leader that cannot renew stops writing well before its Lease
                            // can be taken over.
                            leading && renewed.is_some_and(|at| at.elapsed() < lease_duration / 2)
                        }
                    };
                    if leading {
                        renewed = Some(Instant::now());
                    } else {
                        renewed = None;
                        written = None;
                    }
                    shared.leading.store(leading, Ordering::SeqCst);
                    if leading != was {
                        tracing::info!(identity = %elector.identity(), leading, "registration leadership changed");
                    }
                }
                if !leading {
                    continue;
                }
                let desired = match shared.render(&config()) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!("cannot render the webhook configurations: {e:#}");
                        continue;
                    }
                };
                let fresh = written
                    .as_ref()
                    .is_some_and(|(w, at)| *w == desired && at.elapsed() < RESYNC);
                if fresh {
                    continue;
                }
                let _writing = shared.writing.lock().await;
                match apply(&settings.client, &desired).await {
                    Ok(()) => {
                        tracing::info!(name = %settings.options.name, "webhook configurations registered");
                        written = Some((desired, Instant::now()));
                    }
                    Err(e) => tracing::warn!("cannot register the webhook configurations: {e}"),
                }
            }
            shared.leading.store(false, Ordering::SeqCst);
            if leading {
                elector.release().await;
            }
        })
    }

    /// The reload hook, called on a blocking thread just before `new` replaces `old` as the
    /// serving configuration. When the reload removes policies and this replica leads, it
    /// writes the configurations of `old` without them and waits [`PROPAGATION`], so that the
    /// API server has stopped calling them (a `Fail` webhook whose endpoint is gone would refuse)
    /// before the gateway stops serving them. Added and changed policies are written after the
    /// swap by the task (see docs/registering.md for why that order is safe).
    pub fn before_swap(&self, old: &Config, new: &Config) {
        let shared = &self.shared;
        if !shared.leading.load(Ordering::SeqCst) {
            return;
        }
        let kept = |e: &crate::config::ResolvedEntry| {
            new.entries
                .iter()
                .any(|n| n.entry.kind == e.entry.kind && n.entry.name == e.entry.name)
        };
        if old.entries.iter().all(kept) {
            return;
        }
        let mut interim = old.clone();
        interim.entries.retain(kept);
        let desired = match shared.render(&interim) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("cannot render the webhook configurations: {e:#}");
                return;
            }
        };
        let written = shared.runtime.block_on(async {
            let _writing = shared.writing.lock().await;
            tokio::time::timeout(WRITE_TIMEOUT, apply(&shared.settings.client, &desired)).await
        });
        match written {
            Ok(Ok(())) => {
                tracing::info!("removed policies unregistered before the swap");
                std::thread::sleep(PROPAGATION);
            }
            Ok(Err(e)) => tracing::warn!("cannot unregister removed policies before the swap: {e}"),
            Err(_) => tracing::warn!(
                "cannot unregister removed policies before the swap: no answer within {WRITE_TIMEOUT:?}"
            ),
        }
    }
}

impl Shared {
    fn render(&self, config: &Config) -> anyhow::Result<Vec<Desired>> {
        use anyhow::Context as _;
        let ca_file = &self.settings.ca_file;
        let pem = std::fs::read_to_string(ca_file)
            .with_context(|| format!("cannot read the CA {}", ca_file.display()))?;
        let ca = if self.settings.ca_file_is_bundle {
            ca_bundle_from_pem(&pem)
        } else {
            ca_from_pem(&pem)
        }
        .with_context(|| format!("{} holds no PEM certificate", ca_file.display()))?;
        let mut options = self.settings.options.clone();
        options.ca_pem = Some(ca.into_bytes());
        Ok(desired(config, &options)?)
    }
}

/// Writes `desired`: server-side apply of each whole object (so webhooks of removed policies
/// go), deletion of a kind no policy needs.
async fn apply(client: &kube::Client, desired: &[Desired]) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for d in desired {
        match d.kind {
            WebhookKind::Validating => {
                let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
                write(&api, d, &params).await?;
            }
            WebhookKind::Mutating => {
                let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
                write(&api, d, &params).await?;
            }
        }
    }
    Ok(())
}

async fn write<K>(api: &Api<K>, d: &Desired, params: &PatchParams) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match &d.object {
        Some(object) => {
            api.patch(&d.name, params, &Patch::Apply(object)).await?;
        }
        None => match api.delete(&d.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}
