//! Owns checking cosign key-based signatures (ECDSA P-256 over a simple-signing payload) against
//! trusted public keys; no network: the caller fetches the signature manifest and payloads.
//!
//! Verification uses RustCrypto's `p256` (ECDSA, SPKI PEM) rather than the `sigstore` crate:
//! `sigstore` pulls in its own OCI client, TUF, Fulcio and Rekor support (hundreds of crates,
//! OpenSSL by default) for keyless signing, which cannot be verified offline anyway.

use std::path::{Path, PathBuf};

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;

/// The media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 ASN.1 DER signature over the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A trusted cosign public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where it was read from (named in errors).
    pub path: PathBuf,
    key: p256::ecdsa::VerifyingKey,
}

impl TrustedKey {
    /// Reads a PEM `PUBLIC KEY` (SPKI) of an ECDSA P-256 key, as `cosign generate-key-pair`
    /// writes `cosign.pub`.
    pub fn load(path: &Path) -> Result<TrustedKey, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read cosign public key {}: {e}", path.display()))?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            format!(
                "{} is not an ECDSA P-256 public key in PEM (as cosign.pub): {e}",
                path.display()
            )
        })?;
        Ok(TrustedKey {
            path: path.to_owned(),
            key,
        })
    }
}

/// Why one signature layer does not vouch for a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No trusted key verifies the signature.
    UntrustedKey,
    /// The signature is not base64 DER.
    Malformed(String),
    /// Signed, but for other content.
    OtherDigest(String),
}

/// Checks one simple-signing layer: `signature_b64` over `payload` by one of `keys`, and the
/// payload's `critical.image.docker-manifest-digest` equal to `manifest_digest`.
pub fn check(
    payload: &[u8],
    signature_b64: &str,
    keys: &[TrustedKey],
    manifest_digest: &str,
) -> Result<(), Refusal> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| Refusal::Malformed(format!("the signature is not base64: {e}")))?;
    let signature = p256::ecdsa::Signature::from_der(&der)
        .map_err(|e| Refusal::Malformed(format!("the signature is not ECDSA DER: {e}")))?;
    if !keys
        .iter()
        .any(|k| k.key.verify(payload, &signature).is_ok())
    {
        return Err(Refusal::UntrustedKey);
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Refusal::Malformed(format!("the signed payload is not JSON: {e}")))?;
    let signed = value
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            Refusal::Malformed(
                "the signed payload has no critical.image.docker-manifest-digest".into(),
            )
        })?;
    if !signed.eq_ignore_ascii_case(manifest_digest) {
        return Err(Refusal::OtherDigest(signed.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn key(seed: u8) -> (p256::ecdsa::SigningKey, TrustedKey) {
        let signing = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosign.pub");
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(&path, pem).unwrap();
        (signing, TrustedKey::load(&path).unwrap())
    }

    #[test]
    fn accepts_only_a_trusted_signature_of_this_digest() {
        let (signing, trusted) = key(7);
        let (_, other) = key(9);
        let digest = format!("sha256:{}", "ab".repeat(32));
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/p"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let sig: p256::ecdsa::DerSignature = signing.sign(payload.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.as_bytes());
        assert_eq!(
            check(
                payload.as_bytes(),
                &b64,
                std::slice::from_ref(&trusted),
                &digest
            ),
            Ok(())
        );
        assert_eq!(
            check(payload.as_bytes(), &b64, &[other], &digest),
            Err(Refusal::UntrustedKey)
        );
        let elsewhere = format!("sha256:{}", "cd".repeat(32));
        assert_eq!(
            check(
                payload.as_bytes(),
                &b64,
                std::slice::from_ref(&trusted),
                &elsewhere
            ),
            Err(Refusal::OtherDigest(digest.clone()))
        );
        let mut tampered = payload.clone().into_bytes();
        tampered[5] ^= 1;
        assert_eq!(
            check(&tampered, &b64, std::slice::from_ref(&trusted), &digest),
            Err(Refusal::UntrustedKey)
        );
        assert!(matches!(
            check(payload.as_bytes(), "!!", &[trusted], &digest),
            Err(Refusal::Malformed(_))
        ));
    }
}
