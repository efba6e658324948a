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

mod bindings;
pub mod config;
mod limits;
pub mod runtime;
pub mod server;
pub mod store;

use std::sync::Arc;

pub use config::{StoreConfig, StoreSpec};
pub use runtime::{Runtime, RuntimeConfig};
pub use store::SharedBackend;

/// Opens the store `config` describes.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<SharedBackend> {
    Ok(match &config.spec {
        StoreSpec::Memory => Arc::new(store::memory::MemoryStore::new()),
        StoreSpec::Dir(path) => {
            Arc::new(store::dir::DirStore::open(path, config.fsync).map_err(|e| {
                anyhow::anyhow!("cannot use store directory {}: {e}", path.display())
            })?)
        }
        StoreSpec::Azure => {
            let azure = config;
            let mut config =
                store::azure::AzureConfig::from_env(&azure.azure_container, &azure.azure_prefix)?;
            config.create_container = azure.azure_create_container;
            Arc::new(store::azure::AzureStore::connect(config).await?)
        }
    })
}
