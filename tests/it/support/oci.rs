//! OCI peers: an OCI image layout written by the test, Debian's `skopeo`
//! (a real registry client) and Debian's `docker-registry` (the CNCF
//! reference registry), to run the same copy against blobcache and the
//! reference side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::{client, eventually, free_port, noise, run_ok, sha256_hex};

pub fn skopeo() -> Option<PathBuf> {
    client("skopeo", PathBuf::from("/usr/bin/skopeo"))
}

/// An image in an OCI layout: layers of the given sizes (gzip media type, so
/// no client recompresses them), a config and a manifest tagged `tag`.
pub struct Layout {
    pub dir: tempfile::TempDir,
    pub manifest_digest: String,
    pub blob_digests: Vec<String>,
}

impl Layout {
    pub fn new(layer_sizes: &[usize], tag: &str) -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let write = |bytes: &[u8]| {
            let hex = sha256_hex(bytes);
            std::fs::write(blobs.join(&hex), bytes).unwrap();
            (format!("sha256:{hex}"), bytes.len())
        };
        let mut layers = Vec::new();
        let mut digests = Vec::new();
        for (i, size) in layer_sizes.iter().enumerate() {
            let (digest, size) = write(&noise(i as u64 + 11, *size));
            layers.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest, "size": size,
            }));
            digests.push(digest);
        }
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": digests},
        });
        let (config_digest, config_size) = write(config.to_string().as_bytes());
        digests.push(config_digest.clone());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config_size,
            },
            "layers": layers,
        });
        let (manifest_digest, manifest_size) = write(manifest.to_string().as_bytes());
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout {
            dir,
            manifest_digest,
            blob_digests: digests,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The sorted names of an OCI layout's blobs (their sha256 digests).
pub fn layout_blobs(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `skopeo copy --preserve-digests` over plain HTTP, with `creds`
/// (`user:password`) for the registry side when given.
pub fn copy(skopeo: &Path, from: &str, to: &str, creds: Option<&str>) -> String {
    let mut command = Command::new(skopeo);
    command.args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    if let Some(creds) = creds {
        let side = if from.starts_with("docker://") {
            "--src-creds"
        } else {
            "--dest-creds"
        };
        command.args([side, creds]);
    }
    // No credentials from the machine's own configuration.
    let auth = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(auth.path(), "{}").unwrap();
    command
        .env("REGISTRY_AUTH_FILE", auth.path())
        .args([from, to]);
    run_ok(&mut command, &format!("skopeo copy {from} {to}"))
}

/// Debian's `docker-registry` on a free port with a directory of its own,
/// stopped on drop.
pub struct ReferenceRegistry {
    process: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl ReferenceRegistry {
    pub fn start() -> Option<ReferenceRegistry> {
        let binary = client("docker-registry", PathBuf::from("/usr/bin/docker-registry"))?;
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let process = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = ReferenceRegistry {
            process,
            addr,
            _dir: dir,
        };
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&registry.addr).is_ok()
        });
        assert!(up, "docker-registry did not start");
        Some(registry)
    }
}

impl Drop for ReferenceRegistry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
