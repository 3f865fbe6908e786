//! Owns the CNCF Wasm OCI artifact layout wasmgate writes and accepts (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) and wasmgate's own
//! annotations; pure data, no I/O.

use serde_json::json;

/// The OCI image manifest media type.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's schema 2 manifest, accepted for signatures pushed by older tools.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The CNCF Wasm config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The CNCF Wasm layer media type.
pub const WASM_LAYER: &str = "application/wasm";
/// Annotation: the WIT world the component implements (`validator`, `initializer`, `audit-sink`).
pub const WORLD_ANNOTATION: &str = "io.wasmgate.world";
/// Annotation: the WIT package it implements (`wasmgate:plugin@0.2.0`).
pub const PACKAGE_ANNOTATION: &str = "io.wasmgate.wit-package";
/// The largest manifest accepted (distribution's own default limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Layer annotation: the file name (`oras pull` writes the layer under it).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// The config blob and manifest for one component whose layer has `layer_digest` and `size`,
/// named `title`. Deterministic: the same component, name and annotations give the same
/// manifest digest.
pub fn build(
    layer_digest: &str,
    size: usize,
    title: &str,
    world: &str,
    package: &str,
) -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": { "target": format!("{}/{world}", package) },
    }))
    .expect("JSON");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": WASM_CONFIG,
        "config": {
            "mediaType": WASM_CONFIG,
            "digest": super::store::digest_of(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": WASM_LAYER,
            "digest": layer_digest,
            "size": size,
            "annotations": { TITLE_ANNOTATION: title },
        }],
        "annotations": {
            WORLD_ANNOTATION: world,
            PACKAGE_ANNOTATION: package,
        },
    }))
    .expect("JSON");
    (config, manifest)
}

/// The one Wasm layer a manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:...`.
    pub digest: String,
    /// Bytes, as the manifest declares.
    pub size: u64,
}

/// Checks that `manifest` is a Wasm artifact (config media type, exactly one `application/wasm`
/// layer) and returns its layer.
pub fn wasm_layer(manifest: &[u8]) -> Result<Layer, String> {
    let m: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let config_type = m
        .pointer("/config/mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if config_type != WASM_CONFIG {
        return Err(format!(
            "not a Wasm artifact: its config media type is {config_type:?}, not {WASM_CONFIG:?}"
        ));
    }
    let layers = m
        .get("layers")
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let [layer] = layers else {
        return Err(format!(
            "not a Wasm artifact: it has {} layers, not exactly one {WASM_LAYER:?}",
            layers.len()
        ));
    };
    let media = layer
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if media != WASM_LAYER {
        return Err(format!(
            "not a Wasm artifact: its layer media type is {media:?}, not {WASM_LAYER:?}"
        ));
    }
    let digest = layer.get("digest").and_then(|v| v.as_str()).unwrap_or("");
    let size = layer
        .get("size")
        .and_then(|v| v.as_u64())
        .ok_or("the layer has no size")?;
    if !digest.starts_with("sha256:") || digest.len() != 71 {
        return Err(format!(
            "the layer digest {digest:?} is not sha256:<64 hex digits>"
        ));
    }
    Ok(Layer {
        digest: digest.to_ascii_lowercase(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_it_builds_it_accepts() {
        let layer = super::super::store::digest_of(b"\0asm");
        let (_, manifest) = build(&layer, 4, "p.wasm", "validator", "wasmgate:plugin@0.2.0");
        assert_eq!(
            wasm_layer(&manifest).unwrap(),
            Layer {
                digest: layer.clone(),
                size: 4
            }
        );
        let (_, again) = build(&layer, 4, "p.wasm", "validator", "wasmgate:plugin@0.2.0");
        assert_eq!(manifest, again, "deterministic");
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json"},"layers":[]}"#;
        assert!(wasm_layer(image).unwrap_err().contains("config media type"));
        let two = format!(r#"{{"config":{{"mediaType":"{WASM_CONFIG}"}},"layers":[{{}},{{}}]}}"#);
        assert!(wasm_layer(two.as_bytes()).unwrap_err().contains("2 layers"));
    }
}
