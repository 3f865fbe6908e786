//! The container image: `scripts/build-image` writes an OCI archive that umoci reads, whose
//! config runs the gateway as a non-root user, whose root filesystem holds the binary and the
//! libraries it loads and nothing to run a shell with, and whose binary runs in it alone.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::repo;

/// Runs `program` with `args`, failing the test with its output unless it succeeds; its stdout.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let program = program.as_ref();
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program:?}: {e}"));
    assert!(
        output.status.success(),
        "{program:?} {args:?}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn build(out: &Path) -> String {
    let script = repo().join("scripts/build-image");
    run(
        &script,
        &[
            "--binary",
            env!("CARGO_BIN_EXE_wasmgate"),
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .trim()
    .to_owned()
}

/// Every path under `root`, relative, with a trailing `/` for directories.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() && !path.is_symlink() {
                out.insert(format!("{rel}/"));
                stack.push(path);
            } else {
                out.insert(rel);
            }
        }
    }
    out
}

#[test]
fn the_image_is_a_non_root_oci_archive_whose_binary_runs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wasmgate.tar");
    let reference = build(&archive);
    let version = env!("CARGO_PKG_VERSION");

    // NAME@sha256:<64 hex>, and the same line beside the archive.
    let (name, digest) = reference.split_once("@sha256:").expect(&reference);
    assert_eq!(name, "wasmgate");
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{reference}"
    );
    let ref_file = std::fs::read_to_string(dir.path().join("wasmgate.tar.ref")).unwrap();
    assert_eq!(ref_file.trim(), reference);
    // The same binary gives the same image, byte for byte.
    assert_eq!(build(&dir.path().join("again.tar")), reference);

    // The archive is an OCI layout whose index names the manifest by that digest.
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-xf",
            archive.to_str().unwrap(),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], format!("sha256:{digest}"));
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        format!("docker.io/library/wasmgate:{version}")
    );

    // umoci reads it (checking every blob's digest) and unpacks a runtime bundle.
    let umoci = run(repo().join("scripts/build-image"), &["--umoci"]);
    let umoci = umoci.trim();
    let image = format!("{}:{version}", layout.display());
    let stat = run(umoci, &["stat", "--json", "--image", &image]);
    let stat: Value = serde_json::from_str(&stat).unwrap();
    assert_eq!(stat["history"].as_array().map(Vec::len), Some(2), "{stat}");
    let bundle = dir.path().join("bundle");
    run(
        umoci,
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["user"]["uid"], 65532);
    assert_eq!(config["process"]["user"]["gid"], 65532);
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/usr/bin/wasmgate"])
    );

    // The root filesystem: the binary, the loader and libraries, the CA bundle, the user, the
    // mount points. No shell, no coreutils, no package manager.
    let rootfs = bundle.join("rootfs");
    let files = tree(&rootfs);
    assert!(files.contains("usr/bin/wasmgate"), "{files:#?}");
    assert!(files.contains("etc/passwd"), "{files:#?}");
    for mount in [
        "tmp/",
        "etc/wasmgate/policies/",
        "etc/wasmgate/tls/",
        "var/cache/wasmgate/",
        "var/lib/wasmgate/spool/",
        "var/log/wasmgate/",
    ] {
        assert!(files.contains(mount), "no {mount} in {files:#?}");
    }
    let executables: Vec<&String> = files
        .iter()
        .filter(|f| !f.ends_with('/'))
        .filter(|f| f.starts_with("bin/") || f.starts_with("sbin/") || f.starts_with("usr/bin/"))
        .collect();
    assert_eq!(executables, ["usr/bin/wasmgate"], "{files:#?}");
    for file in &files {
        let allowed = file.ends_with('/')
            || file == "usr/bin/wasmgate"
            || file.starts_with("etc/")
            || file.contains(".so");
        assert!(allowed, "unexpected file in the image: {file}");
    }

    // The binary runs in that filesystem alone, as the image's user.
    let rootfs = rootfs.to_str().unwrap();
    let root = run("id", &["-u"]).trim() == "0";
    let chroot = |args: &[&str]| {
        if root {
            let mut all = vec!["--userspec=65532:65532", rootfs, "/usr/bin/wasmgate"];
            all.extend(args);
            run("chroot", &all)
        } else {
            let mut all = vec![
                "--user",
                "--map-root-user",
                "chroot",
                rootfs,
                "/usr/bin/wasmgate",
            ];
            all.extend(args);
            run("unshare", &all)
        }
    };
    assert_eq!(chroot(&["--version"]).trim(), format!("wasmgate {version}"));
    let kubeconfig = chroot(&[
        "manifests",
        "--kind",
        "audit-kubeconfig",
        "--url",
        "https://gateway.example:8443",
    ]);
    assert!(
        kubeconfig.contains("server: https://gateway.example:8443/audit"),
        "{kubeconfig}"
    );
}
