//! Owns the syntax of `oci://` module references; knows nothing of registries or the network.

use std::fmt;

/// The scheme of a module that lives in an OCI registry.
pub const SCHEME: &str = "oci://";

/// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`: at least one of tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path, lowercase, `/`-separated.
    pub repository: String,
    /// The tag, resolved to a digest at every load.
    pub tag: Option<String>,
    /// The manifest digest the reference pins (`sha256:` and 64 lowercase hex digits).
    pub digest: Option<String>,
}

impl OciRef {
    /// Whether `module` names an OCI artifact rather than a file.
    pub fn is_oci(module: &str) -> bool {
        module.starts_with(SCHEME)
    }

    /// Parses `oci://...`, with a message naming what is wrong.
    pub fn parse(text: &str) -> Result<OciRef, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{text:?} does not start with {SCHEME}"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (rest, None),
        };
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| {
                format!("{text:?}: the digest must be sha256:<64 hex digits>, got {d:?}")
            })?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{text:?}: the digest must be sha256:<64 hex digits>, got {d:?}"
                ));
            }
        }
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected oci://REGISTRY/REPOSITORY"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(format!(
                "{text:?}: {registry:?} is not a registry host[:port]"
            ));
        }
        // A tag follows the last `:` after the last `/`.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(format!(
                "{text:?}: repository {repository:?} must be lowercase path components of letters, digits, '.', '_', '-'"
            ));
        }
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(format!("{text:?}: {tag:?} is not a valid tag"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "{text:?}: name a tag (:TAG) or pin a digest (@sha256:DIGEST); pinning a digest is recommended"
            ));
        }
        Ok(OciRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(|d| d.to_ascii_lowercase()),
        })
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> OciRef {
        OciRef {
            tag: None,
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> OciRef {
        OciRef {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// The reference as oci-client takes it.
    pub fn client_ref(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
                d.clone(),
            ),
            (None, Some(d)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => unreachable!("parse requires a tag or a digest"),
        }
    }

    /// `REGISTRY/REPOSITORY`, as cosign signs it (`docker-reference`).
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_digests_and_ports() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&format!("oci://127.0.0.1:5000/team/policy:v1@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/policy");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(
            r.to_string(),
            format!("oci://127.0.0.1:5000/team/policy:v1@{d}")
        );
        let r = OciRef::parse("oci://localhost:5000/p:latest").unwrap();
        assert_eq!((r.repository.as_str(), r.digest), ("p", None));
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for (bad, why) in [
            ("oci://host/repo", "name a tag"),
            ("oci://host", "expected oci://REGISTRY/REPOSITORY"),
            ("oci://host/Repo:v1", "must be lowercase"),
            ("oci://host/repo@sha256:abc", "64 hex digits"),
            ("oci://host/repo@md5:abc", "must be sha256"),
            ("oci://host/repo:v 1", "not a valid tag"),
            ("http://host/repo:v1", "does not start with oci://"),
        ] {
            let e = OciRef::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
