//! blobcache's native host: runs the cache component in wasmtime and binds its
//! `blobcache:store` import to a native backend.
//!
//! - [`runtime`]: the engine, per-request instances, limits ([`limits`]).
//! - [`server`]: the HTTP/1.1 server in front of the runtime.
//! - [`store`]: the backends (`dir`, `memory`, `azure`) behind the WIT interface.
//! - [`config`]: command-line and environment settings.
//!
//! To serve cache requests from another hyper-based server, build a
//! [`runtime::Runtime`] and call [`runtime::Runtime::handle`] for each request.

pub mod bindings;
pub mod config;
pub mod limits;
pub mod runtime;
pub mod server;
pub mod store;

use std::sync::Arc;

use config::StoreSpec;
use store::SharedBackend;

/// Opens the backend `serve` was asked for.
pub async fn open_store(args: &config::ServeArgs) -> anyhow::Result<SharedBackend> {
    Ok(match args.store_spec() {
        StoreSpec::Memory => Arc::new(store::memory::MemoryStore::new()),
        StoreSpec::Dir(path) => Arc::new(
            store::dir::DirStore::open(&path, !args.no_fsync).map_err(|e| {
                anyhow::anyhow!("cannot use store directory {}: {e}", path.display())
            })?,
        ),
        StoreSpec::Azure => {
            let mut config =
                store::azure::AzureConfig::from_env(&args.azure_container, &args.azure_prefix)?;
            config.create_container = args.azure_create_container;
            Arc::new(store::azure::AzureStore::connect(config).await?)
        }
    })
}
