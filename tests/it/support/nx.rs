//! Real Nx (npm `nx`, installed into ./node_modules by ./test.sh) running a
//! one-project workspace against blobcache's `/v1/cache` endpoint as its
//! self-hosted remote cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{client, repo_root, run_ok, write_files};

/// The nx CLI from ./node_modules; none (or a failure in CI) without it.
pub fn nx() -> Option<PathBuf> {
    client("nx", repo_root().join("node_modules/.bin/nx"))
}

/// A workspace whose `build` writes the time in nanoseconds to
/// `dist/out.txt`, so an output that came from the cache is told apart from
/// one built again.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Option<Workspace> {
        nx()?;
        let dir = tempfile::tempdir().unwrap();
        write_files(
            dir.path(),
            &[
                (
                    "package.json",
                    r#"{"name":"ws","private":true,
                        "scripts":{"build":"mkdir -p dist && date +%s%N > dist/out.txt"},
                        "nx":{"targets":{"build":{"cache":true,"outputs":["{projectRoot}/dist"]}}}}"#,
                ),
                ("nx.json", "{}"),
                (".gitignore", "node_modules\ndist\n.nx\n"),
            ],
        );
        // Nx runs from the workspace's own node_modules.
        std::os::unix::fs::symlink(
            repo_root().join("node_modules"),
            dir.path().join("node_modules"),
        )
        .unwrap();
        Some(Workspace { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn nx(&self, server: &str, token: Option<&str>) -> Command {
        let mut command = Command::new(self.path().join("node_modules/.bin/nx"));
        command
            .current_dir(self.path())
            .env("NX_SELF_HOSTED_REMOTE_CACHE_SERVER", server)
            .env("NX_NO_CLOUD", "true")
            .env("NX_DAEMON", "false")
            .env("NX_TUI", "false")
            .env_remove("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN")
            .env_remove("CI");
        if let Some(token) = token {
            command.env("NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN", token);
        }
        command
    }

    /// `nx run ws:build`; its output.
    pub fn build(&self, server: &str, token: Option<&str>) -> String {
        run_ok(
            self.nx(server, token).args(["run", "ws:build"]),
            "nx run ws:build",
        )
    }

    /// `nx reset` and the outputs removed: nothing local is left.
    pub fn clean(&self) {
        run_ok(self.nx("http://127.0.0.1:9", None).arg("reset"), "nx reset");
        let _ = std::fs::remove_dir_all(self.path().join("dist"));
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.path().join("dist/out.txt")).unwrap()
    }
}

/// Builds, resets, builds again: the task must be a remote cache hit, its
/// output that of the first build.
pub fn round_trip(server: &str, token: Option<&str>) -> Option<Workspace> {
    let workspace = Workspace::new()?;
    let cold = workspace.build(server, token);
    assert!(
        cold.contains("Cache:             0/1 hit"),
        "first run builds:\n{cold}"
    );
    let built = workspace.output();
    workspace.clean();
    let warm = workspace.build(server, token);
    assert!(warm.contains("[remote cache]"), "remote cache hit:\n{warm}");
    assert_eq!(workspace.output(), built, "the output came from the cache");
    Some(workspace)
}
