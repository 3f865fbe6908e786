//! Owns TLS: loading the serving certificate, key and optional client CAs into a rustls config
//! (TLS 1.2 and 1.3, ALPN h2 and http/1.1), verifying a connection's client certificate against
//! each route's CA ([`ClientAuth`], [`Peer`]), generating a development CA and certificates, and
//! signing or checking the API server's client certificate against an operator's CA.
//! Must not read policy configuration or know what a route does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// A certificate, key or CA that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

fn tls_err(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Where the serving identity comes from.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate it signed (mTLS on
    /// every route, probes included). Excludes the per-route CAs below.
    pub client_ca: Option<PathBuf>,
    /// PEM CA bundle; when set, `/audit` is answered only to clients that presented a
    /// certificate it signed (the API server's audit client certificate). Other routes do not
    /// ask for one.
    pub audit_client_ca: Option<PathBuf>,
    /// PEM CA bundle; when set, the admission routes (`/validate`, `/mutate`) are answered only
    /// to clients that presented a certificate it signed (the API server's webhook client
    /// certificate, from its AdmissionConfiguration).
    pub admission_client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file the TLS state is built from (for the reloader's watch and fingerprint).
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [Some(&self.cert), Some(&self.key)]
            .into_iter()
            .chain([
                self.client_ca.as_ref(),
                self.audit_client_ca.as_ref(),
                self.admission_client_ca.as_ref(),
            ])
            .flatten()
    }
}

/// What new connections are served with: the rustls config and the per-route client checks,
/// swapped together when a certificate or CA changes.
#[derive(Debug)]
pub struct TlsState {
    /// The rustls config new connections use.
    pub config: Arc<ServerConfig>,
    /// How a connection's client certificate is judged per route.
    pub clients: ClientAuth,
}

/// A route that may require a client certificate of its own CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/audit`.
    Audit,
    /// `/validate...` and `/mutate...`.
    Admission,
}

/// The per-route client certificate verifiers (none: the route is open).
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    audit: Option<Arc<dyn ClientCertVerifier>>,
    admission: Option<Arc<dyn ClientCertVerifier>>,
}

/// What a connection's client may do, decided once after its handshake; carried to every
/// request on the connection as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    audit: Access,
    admission: Access,
}

/// A connection's standing on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The route asks for no client certificate.
    Open,
    /// The client presented a certificate chain the route's CA verifies.
    Verified,
    /// The route needs a client certificate and none was presented (401).
    NoCertificate,
    /// The client presented a certificate the route's CA does not verify (403), with why.
    Untrusted,
}

impl ClientAuth {
    /// Judges the chain a client presented (leaf first; `None` or empty: none) for each route.
    pub fn peer(&self, chain: Option<&[CertificateDer<'_>]>) -> Peer {
        let judge = |verifier: &Option<Arc<dyn ClientCertVerifier>>| {
            let Some(verifier) = verifier else {
                return Access::Open;
            };
            match chain {
                Some([leaf, intermediates @ ..]) => {
                    match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
                        Ok(_) => Access::Verified,
                        Err(e) => {
                            tracing::debug!("client certificate not trusted for a route: {e}");
                            Access::Untrusted
                        }
                    }
                }
                _ => Access::NoCertificate,
            }
        };
        Peer {
            audit: judge(&self.audit),
            admission: judge(&self.admission),
        }
    }
}

impl Peer {
    /// A connection to a server that asks for no client certificate anywhere.
    pub const OPEN: Peer = Peer {
        audit: Access::Open,
        admission: Access::Open,
    };

    /// The connection's standing on `route`.
    pub fn access(&self, route: Route) -> Access {
        match route {
            Route::Audit => self.audit,
            Route::Admission => self.admission,
        }
    }
}

/// Builds the rustls server config from `files` (for callers that need no per-route checks).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(load(files)?.config.clone())
}

/// Reads a PEM CA bundle into a root store.
fn roots(path: &Path, into: &mut RootCertStore) -> Result<(), TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, format!("cannot read client CA: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, format!("bad PEM client CA: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no CERTIFICATE block found"));
    }
    for cert in certs {
        into.add(cert)
            .map_err(|e| tls_err(path, format!("unusable client CA certificate: {e}")))?;
    }
    Ok(())
}

/// A verifier of client certificates signed by the CA in `path` that also lets clients without
/// one through the handshake (the route decides).
fn route_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut store = RootCertStore::empty();
    roots(path, &mut store)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err(path, e))
}

/// Builds what new connections are served with from `files`: the rustls config and, for
/// `--audit-client-ca` and `--admission-client-ca`, the per-route checks.
///
/// With per-route CAs, the handshake asks for a client certificate but does not require one
/// (kubelet's HTTPS probes present none), and accepts a certificate signed by any of the route
/// CAs; each request is then checked against its own route's CA.
pub fn load(files: &TlsFiles) -> Result<Arc<TlsState>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_err(&files.cert, format!("cannot read certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(&files.cert, format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(&files.cert, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_err(&files.key, format!("cannot read private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_err(&files.cert, e))?;
    let mut clients = ClientAuth::default();
    let per_route = [&files.audit_client_ca, &files.admission_client_ca];
    let builder = match &files.client_ca {
        Some(ca) => {
            if let Some(Some(other)) = per_route.iter().find(|p| p.is_some()) {
                return Err(tls_err(
                    other,
                    "a per-route client CA cannot be combined with --client-ca (which already requires a certificate on every route)",
                ));
            }
            let mut store = RootCertStore::empty();
            roots(ca, &mut store)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| tls_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if per_route.iter().all(|p| p.is_none()) => builder.with_no_client_auth(),
        None => {
            let mut any = RootCertStore::empty();
            for path in per_route.into_iter().flatten() {
                roots(path, &mut any)?;
            }
            if let Some(path) = &files.audit_client_ca {
                clients.audit = Some(route_verifier(path, &provider)?);
            }
            if let Some(path) = &files.admission_client_ca {
                clients.admission = Some(route_verifier(path, &provider)?);
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(any), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err(&files.cert, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        tls_err(
            &files.key,
            format!("certificate and key do not form a usable identity: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(TlsState {
        config: Arc::new(config),
        clients,
    }))
}

/// The files of a generated development identity.
#[derive(Debug, Clone)]
pub struct DevIdentity {
    /// The CA certificate to trust (`curl --cacert`, a webhook's `caBundle`).
    pub ca: PathBuf,
    /// The serving certificate and key.
    pub files: TlsFiles,
}

/// Returns the development CA and a serving certificate for `localhost`, `127.0.0.1` and `::1`
/// under `dir`, creating them on first use and reusing them afterwards (so a `--cacert` keeps
/// working across restarts).
pub fn dev_identity(dir: &Path) -> Result<DevIdentity, TlsError> {
    let identity = DevIdentity {
        ca: dir.join("ca.crt"),
        files: TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ..TlsFiles::default()
        },
    };
    if identity.ca.exists() && identity.files.cert.exists() && identity.files.key.exists() {
        return Ok(identity);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| tls_err(dir, format!("cannot create directory: {e}")))?;
    let (ca_pem, cert_pem, key_pem) =
        generate(&["localhost", "127.0.0.1", "::1"]).map_err(|e| tls_err(dir, e))?;
    for (path, pem) in [
        (&identity.ca, ca_pem),
        (&identity.files.cert, cert_pem),
        (&identity.files.key, key_pem),
    ] {
        std::fs::write(path, pem).map_err(|e| tls_err(path, format!("cannot write: {e}")))?;
    }
    Ok(identity)
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses) signed by
/// it. Returns (CA PEM, certificate chain PEM, key PEM).
pub fn generate(names: &[&str]) -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let ca = generate_ca("wasmgate development CA")?;
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("wasmgate"),
    );
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Generates a CA of its own and a client certificate (client authentication only) for
/// `common_name` signed by it: what the API server presents to `/audit` and the admission
/// paths, and the CA the gateway's `--audit-client-ca` then trusts. Returns (CA PEM, certificate
/// PEM, key PEM); the CA's key is dropped, so nothing else can be signed with it.
pub fn generate_client(common_name: &str) -> Result<(String, String, String), rcgen::Error> {
    let ca = generate_ca("wasmgate API server client CA")?;
    let key = rcgen::KeyPair::generate()?;
    let cert = client_params(common_name)?.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// A client certificate's parameters (client authentication only) for `common_name`.
fn client_params(common_name: &str) -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// Signs a new client certificate (client authentication only) for `common_name` with an
/// operator's CA: `ca_pem` (its first certificate is the issuer) and its key `ca_key_pem`
/// (PKCS#8, or what rustls reads: PKCS#1, SEC1). Refuses a key that is not the CA
/// certificate's, and checks the result as the gateway's per-route check will
/// ([`check_client`]). Returns (certificate PEM, key PEM); the CA's key is used for this
/// signature only.
pub fn sign_client(
    common_name: &str,
    ca_pem: &[u8],
    ca_key_pem: &[u8],
) -> Result<(String, String), String> {
    let provider = rustls::crypto::ring::default_provider();
    let ca_certs = pem_certs(ca_pem).map_err(|e| format!("the CA certificate: {e}"))?;
    let ca_key = PrivateKeyDer::from_pem_slice(ca_key_pem)
        .map_err(|e| format!("the CA key: not a PEM private key ({e})"))?;
    let signer = provider
        .key_provider
        .load_private_key(ca_key.clone_key())
        .map_err(|e| format!("the CA key: {e}"))?;
    rustls::sign::CertifiedKey::new(vec![ca_certs[0].clone()], signer)
        .keys_match()
        .map_err(|e| format!("the CA key does not belong to the CA certificate ({e})"))?;
    let ca_key_pkcs8 = match &ca_key {
        PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
        _ => {
            return Err(
                "the CA key: wasmgate signs with a PKCS#8 key (-----BEGIN PRIVATE KEY-----); convert it with `openssl pkcs8 -topk8 -nocrypt -in CA.key -out CA-pkcs8.key`".into(),
            );
        }
    };
    let key_pair = rcgen::KeyPair::try_from(ca_key_pkcs8.as_slice())
        .map_err(|e| format!("the CA key: {e}"))?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_certs[0], key_pair)
        .map_err(|e| format!("the CA certificate: {e}"))?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = client_params(common_name)
        .and_then(|params| params.signed_by(&key, &issuer))
        .map_err(|e| format!("cannot sign the client certificate: {e}"))?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    check_client(ca_pem, cert_pem.as_bytes(), key_pem.as_bytes())?;
    Ok((cert_pem, key_pem))
}

/// Checks that `cert_pem` (a chain, end entity first) with its key `key_pem` is a client
/// certificate the CA bundle `ca_pem` accepts, with the verifier `--audit-client-ca` and
/// `--admission-client-ca` use: signed by one of the CAs, valid now, extended key usage
/// `clientAuth`, and the key the certificate's.
pub fn check_client(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for cert in pem_certs(ca_pem).map_err(|e| format!("the CA certificate: {e}"))? {
        store
            .add(cert)
            .map_err(|e| format!("the CA certificate: unusable: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| format!("the CA certificate: {e}"))?;
    let chain = pem_certs(cert_pem).map_err(|e| format!("the client certificate: {e}"))?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map_err(|e| format!("the client certificate is not one the CA accepts: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the client key: not a PEM private key ({e})"))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the client key: {e}"))?;
    rustls::sign::CertifiedKey::new(chain, signer)
        .keys_match()
        .map_err(|e| format!("the client key does not belong to the client certificate ({e})"))
}

/// The CERTIFICATE blocks of a PEM text; at least one.
fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

fn generate_ca(
    common_name: &str,
) -> Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
}
