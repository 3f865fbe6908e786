//! Owns the on-disk content-addressed cache of pulled blobs (manifests, Wasm layers, signature
//! payloads): written atomically, verified against its digest on every read. No network.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest;

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A cache directory: `blobs/sha256/<hex>` holds content, `signatures/<registry>/<repository>/
/// sha256-<hex>` names the digest of the cosign signature manifest last seen for a manifest in
/// that repository (signatures are found per repository, as cosign stores them).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store under `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join("blobs/sha256").join(hex.to_ascii_lowercase()))
    }

    /// The blob `digest` if cached and intact, at most `cap` bytes. A blob whose content no longer
    /// has its digest (disk corruption, tampering) is removed and reported as absent, so that it
    /// is pulled again.
    pub fn get(&self, digest: &str, cap: u64) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > cap {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        if digest_of(&bytes) != digest.to_ascii_lowercase() {
            tracing::warn!(path = %path.display(), digest, "module cache: content does not match its digest; removed, pulled again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Stores `bytes` under their digest, atomically (temp file, fsync, rename).
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let digest = digest_of(bytes);
        let path = self.blob_path(&digest).expect("a digest we computed");
        self.write_atomically(&path, bytes)?;
        Ok(digest)
    }

    /// Where the signature of `manifest_digest` in `repository` (`registry/repo`, already
    /// validated by the reference parser: no `..`, no empty components) is recorded.
    fn signature_path(&self, repository: &str, manifest_digest: &str) -> Option<PathBuf> {
        let hex = manifest_digest.strip_prefix("sha256:")?;
        let safe = repository
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
        safe.then(|| {
            self.dir
                .join("signatures")
                .join(repository.replace(':', "_"))
                .join(format!("sha256-{hex}"))
        })
    }

    /// The signature manifest digest recorded for `manifest_digest` in `repository`.
    pub fn signature_of(&self, repository: &str, manifest_digest: &str) -> Option<String> {
        let text =
            std::fs::read_to_string(self.signature_path(repository, manifest_digest)?).ok()?;
        let d = text.trim();
        self.blob_path(d).map(|_| d.to_owned())
    }

    /// Records `signature_digest` as the signature manifest of `manifest_digest` in
    /// `repository`.
    pub fn set_signature(
        &self,
        repository: &str,
        manifest_digest: &str,
        signature_digest: &str,
    ) -> std::io::Result<()> {
        let path = self
            .signature_path(repository, manifest_digest)
            .ok_or_else(|| std::io::Error::other("not a repository name"))?;
        self.write_atomically(&path, signature_digest.as_bytes())
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let parent = path.parent().expect("under the cache dir");
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_only_intact_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_owned());
        let digest = store.put(b"component bytes").unwrap();
        assert_eq!(store.get(&digest, 1 << 20).unwrap(), b"component bytes");
        assert!(store.get(&digest, 3).is_none(), "over the cap");
        let path = store.blob_path(&digest).unwrap();
        std::fs::write(&path, b"tampered bytes!").unwrap();
        assert!(store.get(&digest, 1 << 20).is_none());
        assert!(!path.exists(), "a corrupt blob is removed");
        assert!(store.get("sha256:../../etc/passwd", 1 << 20).is_none());
    }
}
