//! The real Docker (Debian's `docker.io`: dockerd 20.10 and its embedded
//! BuildKit), started as root the way ../shared/PROTOCOLS.md describes: no
//! iptables, no bridge, the vfs storage driver, everything in a temporary
//! directory. Images are built `FROM scratch`, since nothing can be pulled
//! from outside.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{client, eventually, run_ok, write_files};

/// A dockerd of its own, stopped (with what it started) on drop.
pub struct Docker {
    daemon: Child,
    dir: tempfile::TempDir,
    cli: PathBuf,
}

impl Docker {
    pub fn start() -> Option<Docker> {
        let dockerd = client("dockerd", PathBuf::from("/usr/sbin/dockerd"))?;
        // Debian's CLI: it drives the embedded BuildKit without buildx.
        let cli = client("docker", PathBuf::from("/usr/bin/docker"))?;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let socket = path.join("docker.sock");
        let log = std::fs::File::create(path.join("dockerd.log")).unwrap();
        let daemon = Command::new(dockerd)
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg(format!("--data-root={}", path.join("data").display()))
            .arg(format!("--exec-root={}", path.join("exec").display()))
            .arg(format!("--pidfile={}", path.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            // A group of its own, so its containerd stops with it.
            .process_group(0)
            .spawn()
            .unwrap();
        let docker = Docker { daemon, dir, cli };
        let up = eventually(Duration::from_secs(60), || {
            docker
                .command()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(up, "dockerd did not start: {}", docker.log());
        Some(docker)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.cli);
        command
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.path().join("config"))
            .env("DOCKER_BUILDKIT", "1");
        command
    }

    pub fn run(&self, args: &[&str], context: &Path) -> String {
        run_ok(
            self.command().args(args).current_dir(context),
            &format!("docker {}", args.join(" ")),
        )
    }

    /// A build context of two `COPY` steps; `stamp` makes its layers new.
    pub fn context(&self, stamp: &str) -> PathBuf {
        let context = self.dir.path().join(format!("context-{stamp}"));
        write_files(
            &context,
            &[
                (
                    "Dockerfile",
                    "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n",
                ),
                ("a.txt", &format!("first layer {stamp}\n")),
                ("b.txt", &format!("second layer {stamp}\n")),
            ],
        );
        context
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // dockerd shuts down what it started on TERM; the group goes after.
        let group = format!("-{}", self.daemon.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let stopped = eventually(Duration::from_secs(20), || {
            self.daemon.try_wait().is_ok_and(|status| status.is_some())
        });
        if !stopped {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.daemon.wait();
        }
    }
}

/// Push, pull, and a build that imports its cache from `registry` after
/// every local image and build cache is gone, logged in with `password`
/// (an access token) if given. Returns the pushed digest.
pub fn push_pull_and_import_cache(
    docker: &Docker,
    registry: &str,
    password: Option<&str>,
) -> String {
    let image = format!("{registry}/team-a/app:latest");
    let context = docker.context(registry);
    if let Some(password) = password {
        docker.run(
            &[
                "login",
                "--username",
                "ci",
                "--password",
                password,
                registry,
            ],
            &context,
        );
    }
    docker.run(
        &[
            "build",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "-t",
            &image,
            ".",
        ],
        &context,
    );
    let pushed = docker.run(&["push", &image], &context);
    let digest = pushed
        .split("digest: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {pushed}"))
        .to_string();
    docker.run(&["rmi", &image], &context);
    docker.run(&["builder", "prune", "-af"], &context);
    let rebuilt = docker.run(
        &["build", "--cache-from", &image, "-t", "rebuilt", "."],
        &context,
    );
    assert!(
        rebuilt.contains(&format!("importing cache manifest from {image}")),
        "{rebuilt}"
    );
    assert_eq!(
        rebuilt.matches(" CACHED").count(),
        2,
        "both steps from the cache:\n{rebuilt}"
    );
    let pulled = docker.run(&["pull", &image], &context);
    assert!(pulled.contains(&digest), "{pulled}");
    digest
}
