//! Real Turborepo (npm `turbo`, installed into ./node_modules by ./test.sh)
//! running a two-package npm workspace against blobcache's `/v8` API.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{client, repo_root, run_ok, write_files};

/// The turbo binary from ./node_modules; none (or a failure in CI) without it.
pub fn turbo() -> Option<PathBuf> {
    client("turbo", repo_root().join("node_modules/.bin/turbo"))
}

/// 32 bytes or more, as turbo requires of a signature key.
pub const SIGNATURE_KEY: &str = "blobcache-test-signature-key-0123456789";

/// How turbo reaches the cache.
pub struct Remote<'a> {
    pub api: &'a str,
    pub token: &'a str,
    /// `TURBO_TEAM`, sent as `?slug=`.
    pub team: &'a str,
}

/// A git repository holding a workspace of packages `a` and `b` (`b` depends
/// on `a`); each build writes the time in nanoseconds, so an output that
/// came from the cache is told apart from one built again.
pub struct Workspace {
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Workspace {
    pub fn new(signed: bool) -> Option<Workspace> {
        let binary = turbo()?;
        let dir = tempfile::tempdir().unwrap();
        let build = "mkdir -p dist && date +%s%N > dist/out.txt";
        let package = |name: &str, dependencies: &str| {
            format!(
                "{{\"name\":\"{name}\",\"version\":\"1.0.0\",\"dependencies\":{{{dependencies}}},\
                 \"scripts\":{{\"build\":\"{build}\"}}}}"
            )
        };
        let turbo_json = format!(
            "{{\"tasks\":{{\"build\":{{\"dependsOn\":[\"^build\"],\"outputs\":[\"dist/**\"]}}}},\
             \"remoteCache\":{{\"signature\":{signed}}}}}"
        );
        write_files(
            dir.path(),
            &[
                (
                    "package.json",
                    "{\"name\":\"root\",\"private\":true,\"packageManager\":\"npm@10.8.2\",\
                     \"workspaces\":[\"packages/*\"]}",
                ),
                ("packages/a/package.json", &package("a", "")),
                ("packages/b/package.json", &package("b", "\"a\":\"*\"")),
                ("turbo.json", &turbo_json),
                (".gitignore", "node_modules\n.turbo\ndist\n"),
            ],
        );
        // turbo hashes what git tracks: commit, so both runs hash alike.
        for args in [
            &["init", "-q"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.email=ci@example.com",
                "-c",
                "user.name=ci",
                "commit",
                "-qm",
                "workspace",
            ],
        ] {
            run_ok(
                Command::new("git").args(args).current_dir(dir.path()),
                "git",
            );
        }
        Some(Workspace { dir, binary })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `turbo run build`; its output.
    pub fn build(&self, remote: &Remote, signature_key: Option<&str>) -> String {
        let mut command = Command::new(&self.binary);
        command
            // The remote cache alone: a hit can only come from blobcache.
            .args(["run", "build", "--cache=remote:rw"])
            .current_dir(self.path())
            .env("TURBO_API", remote.api)
            .env("TURBO_TOKEN", remote.token)
            .env("TURBO_TEAM", remote.team)
            // No calls beyond the cache: no telemetry, no update check.
            .env("TURBO_TELEMETRY_DISABLED", "1")
            .env("DO_NOT_TRACK", "1")
            .env("TURBO_NO_UPDATE_NOTIFIER", "1")
            .env("TURBO_TELEMETRY_MESSAGE_DISABLED", "1")
            .env_remove("TURBO_REMOTE_CACHE_SIGNATURE_KEY")
            .env_remove("CI");
        if let Some(key) = signature_key {
            command.env("TURBO_REMOTE_CACHE_SIGNATURE_KEY", key);
        }
        run_ok(&mut command, "turbo run build")
    }

    /// Removes every local trace of a build: outputs and turbo's local cache.
    pub fn clean(&self) {
        for dir in [
            ".turbo",
            "packages/a/dist",
            "packages/b/dist",
            "packages/a/.turbo",
            "packages/b/.turbo",
            "node_modules/.cache",
        ] {
            let _ = std::fs::remove_dir_all(self.path().join(dir));
        }
    }

    /// The built outputs of `a` and `b`.
    pub fn outputs(&self) -> Vec<String> {
        ["a", "b"]
            .iter()
            .map(|p| {
                std::fs::read_to_string(self.path().join(format!("packages/{p}/dist/out.txt")))
                    .unwrap()
            })
            .collect()
    }
}

/// The task hashes a run executed (`cache miss, executing <hash>`).
pub fn executed(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.split("cache miss, executing ").nth(1))
        .map(|hash| hash.trim().to_string())
        .collect()
}

/// Cache hits of a run (`cache hit, replaying logs <hash>`); with
/// `--cache=remote:rw` every hit is a remote one.
pub fn replayed(output: &str) -> usize {
    output.matches("cache hit, replaying logs").count()
}

/// Builds, removes outputs and the local cache, builds again: both tasks must
/// be remote hits (`FULL TURBO`) and the outputs those of the first build.
pub fn round_trip(remote: &Remote) -> Option<Workspace> {
    let workspace = Workspace::new(false)?;
    let cold = workspace.build(remote, None);
    assert_eq!(executed(&cold).len(), 2, "first run builds both:\n{cold}");
    let built = workspace.outputs();
    workspace.clean();
    let warm = workspace.build(remote, None);
    assert_eq!(replayed(&warm), 2, "remote hits:\n{warm}");
    assert!(warm.contains("FULL TURBO"), "{warm}");
    assert_eq!(workspace.outputs(), built, "outputs came from the cache");
    Some(workspace)
}
