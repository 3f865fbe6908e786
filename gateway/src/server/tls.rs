//! Owns TLS: loading the serving certificate, key and optional client CA into a rustls config
//! (TLS 1.2 and 1.3, ALPN h2 and http/1.1), and generating a development CA and certificate.
//! Must not read policy configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Builds the rustls server config from `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
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
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let ca_certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| tls_err(ca, format!("cannot read client CA: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_err(ca, format!("bad PEM client CA: {e}")))?;
            for cert in ca_certs {
                roots
                    .add(cert)
                    .map_err(|e| tls_err(ca, format!("unusable client CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(tls_err(ca, "no CERTIFICATE block found"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_err(ca, e))?;
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
    Ok(Arc::new(config))
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
            client_ca: None,
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
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wasmgate development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
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
