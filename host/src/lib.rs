//! blobcache's native host: runs the cache component in wasmtime and binds its
//! `blobcache:store` import to a native backend.
//!
//! What an embedder needs:
//! - [`open_store`] with a [`StoreConfig`] opens a backend (or implement
//!   [`store::Backend`] yourself: `store::dir::DirStore`, `store::memory::MemoryStore`
//!   and `store::azure::AzureStore` are the built-in ones);
//! - [`Runtime::new`] over that store with a [`RuntimeConfig`] (limits, the
//!   component's settings such as `BLOBCACHE_TOKENS` in `component_env`);
//! - [`Runtime::handle`] serves one hyper request with a fresh instance; the
//!   response's [`runtime::ServedBy`] extension names the protocol;
//! - [`server::serve_on_threads`] is the HTTP/1.1 server `blobcache serve` runs
//!   (one event loop per thread); [`server::serve`] runs on the caller's runtime.
//!
//! `host/examples/edge_proxy.rs` embeds the runtime in another hyper server.
//! The wasmtime bindings and the guest limits are internal.

mod bindings;
pub mod config;
mod exchange;
pub mod gc;
mod limits;
pub mod metrics;
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
        StoreSpec::Memory => Arc::new(match config.max_size {
            Some(max) => store::memory::MemoryStore::bounded(max),
            None => store::memory::MemoryStore::new(),
        }),
        StoreSpec::Dir(path) => Arc::new(
            store::dir::DirStore::open_bounded(path, config.fsync, config.max_size).map_err(
                |e| anyhow::anyhow!("cannot use store directory {}: {e}", path.display()),
            )?,
        ),
        StoreSpec::Azure if config.max_size.is_some() => anyhow::bail!(
            "--max-size applies to the dir and memory stores; an Azure container is kept \
             bounded by a lifecycle policy and `blobcache gc` (see the README)"
        ),
        StoreSpec::Azure => Arc::new(open_azure(config).await?),
        StoreSpec::Edge(path) => {
            let local = store::dir::DirStore::open_bounded(path, config.fsync, config.max_size)
                .map_err(|e| {
                    anyhow::anyhow!("cannot use edge directory {}: {e}", path.display())
                })?;
            Arc::new(store::edge::EdgeStore::new(
                Arc::new(local),
                Arc::new(open_azure(config).await?),
            ))
        }
    })
}

async fn open_azure(config: &StoreConfig) -> anyhow::Result<store::azure::AzureStore> {
    let mut azure =
        store::azure::AzureConfig::from_env(&config.azure_container, &config.azure_prefix)?;
    azure.create_container = config.azure_create_container;
    store::azure::AzureStore::connect(azure).await
}
