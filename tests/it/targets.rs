//! The target matrix: every place the component runs, each started the way a
//! user starts it, so a scenario is written once and run on each.
//!
//! | target | host | store |
//! |---|---|---|
//! | `dir` | the `blobcache` binary | directory (the default) |
//! | `memory` | the `blobcache` binary | process memory |
//! | `copy_path` | the `blobcache` binary, uploads copied through `writer.write` | directory |
//! | `azure` | the `blobcache` binary | Azure, on Azurite |
//! | `wasmtime_serve` | `wasmtime serve`, the composed component | the Azure store component, on Azurite |
//! | `spin` | the real Spin (`spin up` of the repository's `spin.toml`), settings as `SPIN_VARIABLE_*` | the Azure store component, on Azurite |
//!
//! Settings are given as the environment variables the README documents
//! (`BLOBCACHE_TOKENS`, `BLOBCACHE_MAX_BLOB_SIZE`, ...); each target passes
//! them its own way (the environment, `wasmtime serve --env`, Spin variables).
//!
//! A target whose tool is missing (the wasmtime CLI, Azurite) is skipped with a
//! message on a developer's machine; in CI (`CI=true`) it fails instead, since
//! the test command installs every tool (and Spin comes with `../shared/tools`).

use std::ops::Deref;
use std::path::Path;

use crate::support::{self, Azurite, Server};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Dir,
    Memory,
    CopyPath,
    Azure,
    WasmtimeServe,
    Spin,
}

impl Target {
    pub fn from_name(name: &str) -> Target {
        match name {
            "dir" => Target::Dir,
            "memory" => Target::Memory,
            "copy_path" => Target::CopyPath,
            "azure" => Target::Azure,
            "wasmtime_serve" => Target::WasmtimeServe,
            "spin" => Target::Spin,
            other => panic!("no target {other}"),
        }
    }

    /// Whether the store is Azure (on Azurite).
    pub fn is_azure(self) -> bool {
        matches!(self, Target::Azure | Target::WasmtimeServe | Target::Spin)
    }

    /// Whether the host is the `blobcache` binary (with its own limits and logs).
    pub fn is_native(self) -> bool {
        matches!(
            self,
            Target::Dir | Target::Memory | Target::CopyPath | Target::Azure
        )
    }

    /// Why this target cannot run here, if it cannot.
    fn missing_tool(self) -> Option<String> {
        if self.is_azure()
            && !support::repo_root()
                .join("node_modules/.bin/azurite-blob")
                .exists()
        {
            return Some("Azurite is not installed (./test.sh installs it)".into());
        }
        if self == Target::WasmtimeServe && !support::wasmtime_cli_path().exists() {
            return Some(format!(
                "the wasmtime CLI is not at {} (./test.sh installs it)",
                support::wasmtime_cli_path().display()
            ));
        }
        if self == Target::Spin && support::spin_cli().is_none() {
            return Some(
                "Spin was not found (neither `spin` on PATH nor ../shared/tools/spin)".into(),
            );
        }
        None
    }
}

/// A running target: the server and what it needs (Azurite), stopped on drop.
pub struct Deployment {
    pub server: Server,
    /// Declared after the server, so it stops after it.
    _azurite: Option<Azurite>,
}

impl Deployment {
    /// The Azurite the store is on, for targets whose store is Azure.
    pub fn azurite(&self) -> Option<&Azurite> {
        self._azurite.as_ref()
    }
}

impl Deref for Deployment {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

/// Container every Azure target stores in.
pub const CONTAINER: &str = "blobcache";

/// Whether `target` can run here; when it cannot, says so (and fails in CI).
pub fn available(target: Target) -> bool {
    let Some(missing) = target.missing_tool() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("target {target:?} cannot run in CI: {missing}");
    }
    eprintln!("SKIPPED on {target:?}: {missing}");
    false
}

/// Starts `target` with `settings`; none when its tool is missing (never in CI).
pub fn deploy(target: Target, settings: &[(&str, &str)]) -> Option<Deployment> {
    if !available(target) {
        return None;
    }
    let azurite = target.is_azure().then(|| {
        let azurite = Azurite::start();
        azurite.create_container(CONTAINER);
        azurite
    });
    let connection = azurite.as_ref().map(Azurite::connection_string);
    let mut env: Vec<(&str, &str)> = settings.to_vec();
    if let Some(connection) = &connection {
        env.push(("AZURE_STORAGE_CONNECTION_STRING", connection));
        env.push(("BLOBCACHE_AZURE_CONTAINER", CONTAINER));
    }
    let server = match target {
        Target::Dir => Server::start_with_env(&[], &env),
        Target::Memory => Server::start_with_env(&["--store", "memory"], &env),
        Target::CopyPath => Server::start_with_env(&["--copy-uploads"], &env),
        Target::Azure => Server::start_with_env(&["--store", "azure"], &env),
        Target::WasmtimeServe => Server::wasmtime_serve(Path::new(env!("BLOBCACHE_WASM")), &env),
        Target::Spin => {
            let azurite = azurite.as_ref().unwrap();
            let outbound = format!("http://127.0.0.1:{}", azurite.port);
            env.push(("AZURE_OUTBOUND_HOST", &outbound));
            Server::spin_up(&env)
        }
    };
    Some(Deployment {
        server,
        _azurite: azurite,
    })
}

/// Runs a scenario `fn(Target)` once per listed target, each as a test named
/// after the target (`<scenario>::<target>`).
macro_rules! on_targets {
    ($scenario:ident: $($target:ident),+ $(,)?) => {
        mod $scenario {
            $(
                #[test]
                fn $target() {
                    super::$scenario($crate::targets::Target::from_name(stringify!($target)));
                }
            )+
        }
    };
}

/// [`on_targets!`] on every target.
macro_rules! on_every_target {
    ($scenario:ident) => {
        on_targets!($scenario: dir, memory, copy_path, azure, wasmtime_serve, spin);
    };
}
