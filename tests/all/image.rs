//! The container image: `scripts/build-image` writes an OCI archive that umoci reads, whose
//! config runs the gateway as a non-root user, whose root filesystem holds the static binary
//! and no shared library, loader or shell, and whose binary runs in it alone; a dynamic binary
//! is refused.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::repo;

/// The profile the tests build their images with: their own build (`dist`, what is shipped,
/// would be a second, whole-program optimised build of everything).
const PROFILE: (&str, &str) = ("WASMGATE_IMAGE_PROFILE", "release");

/// Runs `program` with `args`, failing the test with its output unless it succeeds; its stdout.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let program = program.as_ref();
    let output = Command::new(program)
        .args(args)
        .env(PROFILE.0, PROFILE.1)
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

/// The static binary `scripts/build-image` puts in the image, built (or found up to date) by
/// the script itself.
fn static_binary() -> String {
    run(repo().join("scripts/build-image"), &["--static-binary"])
        .trim()
        .to_owned()
}

fn build(binary: &str, out: &Path) -> String {
    let script = repo().join("scripts/build-image");
    run(
        &script,
        &["--binary", binary, "--out", out.to_str().unwrap()],
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
    let binary = static_binary();
    let reference = build(&binary, &archive);
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
    assert_eq!(build(&binary, &dir.path().join("again.tar")), reference);

    // The archive is an OCI layout whose index names the manifest by that digest.
    let layout = oci_layout(&archive, dir.path());
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

    // The root filesystem: the binary, the CA bundle, the user, the mount points. No loader or
    // shared library, no shell, no coreutils, no package manager.
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
        let allowed = file.ends_with('/') || file == "usr/bin/wasmgate" || file.starts_with("etc/");
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

#[test]
fn a_dynamically_linked_binary_is_refused() {
    // The tests' own build of the binary is dynamic (it needs the loader and libc).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dynamic.tar");
    let output = Command::new(repo().join("scripts/build-image"))
        .env(PROFILE.0, PROFILE.1)
        .args(["--binary", env!("CARGO_BIN_EXE_wasmgate")])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is dynamically linked") && stderr.contains("--static-binary"),
        "{stderr}"
    );
    assert!(!out.exists(), "an archive was written for a dynamic binary");
}

/// The OCI archive at `archive` extracted as a layout directory `dir`/layout.
fn oci_layout(archive: &Path, dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("layout");
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
    layout
}

/// Unpacks the OCI archive at `archive` with umoci into `dir`/bundle; the bundle's root
/// filesystem.
fn unpack(archive: &Path, dir: &Path) -> std::path::PathBuf {
    let layout = oci_layout(archive, dir);
    let umoci = run(repo().join("scripts/build-image"), &["--umoci"]);
    let image = format!("{}:{}", layout.display(), env!("CARGO_PKG_VERSION"));
    let bundle = dir.join("bundle");
    run(
        umoci.trim(),
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

/// A DNS server for the test on `addr` (UDP): `name` has one A record, 127.0.0.1; every other
/// name is NXDOMAIN (an AAAA question for `name`: no answer). Counts the questions for `name`.
struct Dns {
    stop: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    fn start(socket: UdpSocket, name: &str) -> Dns {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let (done, count, name) = (stop.clone(), asked.clone(), name.to_owned());
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !done.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = Dns::answer(&buf[..len], &name, &count) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Dns {
            stop,
            asked,
            thread: Some(thread),
        }
    }

    /// The reply to one query (RFC 1035 4.1: header, one question, at most one A answer).
    fn answer(query: &[u8], name: &str, asked: &AtomicUsize) -> Option<Vec<u8>> {
        let mut at = 12;
        let mut labels = Vec::new();
        while *query.get(at)? != 0 {
            let len = query[at] as usize;
            labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).into_owned());
            at += 1 + len;
        }
        let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
        let question = query.get(12..at + 5)?;
        let ours = labels.join(".").eq_ignore_ascii_case(name);
        if ours {
            asked.fetch_add(1, Ordering::Relaxed);
        }
        let a = ours && qtype == 1;
        let mut reply = query[..2].to_vec();
        // QR, RD, RA; RCODE 0 for our name, 3 (NXDOMAIN) for any other.
        reply.extend_from_slice(&(if ours { 0x8180u16 } else { 0x8183 }).to_be_bytes());
        for count in [1u16, u16::from(a), 0, 0] {
            reply.extend_from_slice(&count.to_be_bytes());
        }
        reply.extend_from_slice(question);
        if a {
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
        }
        Some(reply)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A child process killed (and reaped) on drop, also when the test fails, with its own
/// children first: `unshare --fork`'s child is the first process of its PID namespace, and
/// killing it ends the namespace. `--kill-child` alone does not reach it once `chroot
/// --userspec` has changed its credentials (which clears the parent-death signal): each such
/// gateway outlived its test.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = self.0.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", child]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wasmgate serve --register` in the image's root filesystem alone (chroot, as the
/// image's user) with a kubeconfig naming the API server `https://{host}:{port}`, and waits for
/// its connection on `listener` (127.0.0.1:port): the name was resolved inside the image.
fn connects_by_name(rootfs: &Path, root: bool, host: &str, listener: &TcpListener) {
    let port = listener.local_addr().unwrap().port();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{host}:{port}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: wasmgate}}\nusers:\n- name: u\n  user: {{token: t}}\ncurrent-context: c\n"
    );
    std::fs::write(rootfs.join("etc/wasmgate/kubeconfig"), kubeconfig).unwrap();
    let args = [
        "/usr/bin/wasmgate",
        "serve",
        "--listen=127.0.0.1:0",
        "--config=/etc/wasmgate/policies/policies.yaml",
        "--tls-cert=/etc/wasmgate/tls/tls.crt",
        "--tls-key=/etc/wasmgate/tls/tls.key",
        "--cache-dir=/var/cache/wasmgate",
        "--spool-dir=/var/lib/wasmgate/spool",
        "--state-dir=/tmp/wasmgate",
        "--kubeconfig=/etc/wasmgate/kubeconfig",
        "--register",
        "--register-lease-duration=5s",
    ];
    // As in a container: its own mount and PID namespaces with /proc mounted (the gateway reads
    // /proc/self), the image's root, the image's user.
    std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    let mut command = Command::new("unshare");
    if !root {
        command.args(["--user", "--map-root-user"]);
    }
    command
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!("--mount-proc={}", rootfs.join("proc").display()))
        .arg("chroot");
    if root {
        command.arg("--userspec=65532:65532");
    }
    command.arg(rootfs);
    let log = rootfs.join("tmp/serve.log");
    let child = command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        let exited = child.0.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            panic!(
                "wasmgate in the image did not connect to https://{host}:{port} ({exited:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_static_binary_resolves_names_from_the_pods_hosts_file_and_dns() {
    // In a Pod the kubelet mounts /etc/hosts and /etc/resolv.conf (the cluster's DNS) into the
    // image; the image has no libnss_*, and its nsswitch.conf names the static glibc's built-in
    // `files dns`. The gateway resolves the names of its outputs (Kafka bootstrap, HTTP),
    // registries and a kubeconfig's server with getaddrinfo: here a kubeconfig's server, once
    // from the hosts file and once from DNS.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wasmgate.tar");
    build(&static_binary(), &archive);
    let rootfs = unpack(&archive, dir.path());
    let root = run("id", &["-u"]).trim() == "0";

    let pki = crate::harness::Pki::new(&["localhost"]);
    std::fs::write(rootfs.join("etc/wasmgate/tls/tls.crt"), &pki.cert).unwrap();
    std::fs::write(rootfs.join("etc/wasmgate/tls/tls.key"), &pki.key).unwrap();
    std::fs::write(
        rootfs.join("etc/wasmgate/policies/policies.yaml"),
        crate::harness::policy_file(""),
    )
    .unwrap();
    if root {
        // As the kubelet mounts them: readable by the image's user.
        run(
            "chown",
            &[
                "-R",
                "65532:65532",
                rootfs.join("etc/wasmgate").to_str().unwrap(),
            ],
        );
    }

    // The hosts file, as the kubelet writes it (plus a hostAliases entry).
    std::fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n10.244.0.7\twasmgate-0\n127.0.0.1\tapiserver.hosts.test\n",
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    connects_by_name(&rootfs, root, "apiserver.hosts.test", &listener);

    // DNS: a resolv.conf naming a server on a loopback address of its own (port 53, which
    // resolv.conf cannot change: binding it needs root).
    if !root {
        eprintln!("not root: the DNS half of this test needs port 53 and is not run");
        return;
    }
    let socket = (0..64)
        .find_map(|i| UdpSocket::bind((Ipv4Addr::new(127, 53, 101, 1 + i), 53)).ok())
        .expect("no free 127.53.101.x:53");
    let server = socket.local_addr().unwrap().ip();
    let dns = Dns::start(socket, "apiserver.dns.test");
    std::fs::write(
        rootfs.join("etc/resolv.conf"),
        format!("search wasmgate.svc.cluster.local svc.cluster.local\nnameserver {server}\noptions ndots:5 timeout:1 attempts:2\n"),
    )
    .unwrap();
    connects_by_name(&rootfs, root, "apiserver.dns.test", &listener);
    assert!(
        dns.asked.load(Ordering::Relaxed) > 0,
        "the DNS server was not asked"
    );
    // And the hosts file still answers first with a DNS server that knows nothing of the name.
    connects_by_name(&rootfs, root, "apiserver.hosts.test", &listener);
}
