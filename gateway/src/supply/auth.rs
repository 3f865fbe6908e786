//! Owns reading registry credentials from a Docker `config.json` (the `.dockerconfigjson` of an
//! `imagePullSecrets` Secret, or the older `.dockercfg`); no network.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

/// Basic credentials by registry host (`host[:port]`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Reads `path`, with a message naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read registry credentials {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("registry credentials {}: {e}", path.display()))
    }

    /// Parses config.json (`{"auths": {HOST: {"auth": base64(user:password)}}}`) or the older
    /// `.dockercfg` (the map without `auths`).
    pub fn parse(text: &[u8]) -> Result<Credentials, String> {
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        let auths = match value.get("auths") {
            Some(a) => a.clone(),
            None => value,
        };
        let auths: BTreeMap<String, Entry> = serde_json::from_value(auths)
            .map_err(|e| format!("expected {{\"auths\": {{HOST: {{\"auth\": ...}}}}}}: {e}"))?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in auths {
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("{key}: auth is not base64: {e}"))?;
                    let decoded = String::from_utf8(decoded)
                        .map_err(|_| format!("{key}: auth is not UTF-8"))?;
                    let (u, p) = decoded
                        .split_once(':')
                        .ok_or_else(|| format!("{key}: auth is not base64(user:password)"))?;
                    (u.to_owned(), p.to_owned())
                }
                (None, Some(u), Some(p)) => (u, p),
                _ => return Err(format!("{key}: neither auth nor username and password")),
            };
            by_host.insert(host_of(&key), pair);
        }
        Ok(Credentials { by_host })
    }

    /// The credentials for `registry` (`host[:port]`), if any.
    pub fn for_registry(&self, registry: &str) -> Option<&(String, String)> {
        self.by_host.get(registry)
    }
}

/// `https://host:port/v1/` and `host:port` both name `host:port`.
fn host_of(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats() {
        let c = Credentials::parse(
            br#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"YWxpY2U6czNjcjN0"},"r.example":{"username":"bob","password":"pw"}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.for_registry("127.0.0.1:5000").unwrap(),
            &("alice".into(), "s3cr3t".into())
        );
        assert_eq!(c.for_registry("r.example").unwrap().0, "bob");
        assert!(c.for_registry("other").is_none());
        let old = Credentials::parse(br#"{"h:1":{"auth":"dTpw"}}"#).unwrap();
        assert_eq!(old.for_registry("h:1").unwrap(), &("u".into(), "p".into()));
        for bad in [
            &b"{"[..],
            br#"{"auths":{"h":{"auth":"!!"}}}"#,
            br#"{"auths":{"h":{}}}"#,
        ] {
            assert!(Credentials::parse(bad).is_err());
        }
    }
}
