//! The Azure Blob store as a wasm component: exports `blobcache:store`, imports
//! only WASI (outgoing `wasi:http` for the REST calls). Composed with the cache
//! component it makes one `wasi:http` proxy component that runs under
//! `wasmtime serve`, on Spin, or on any other wasi:http host.
//!
//! It is built on the same `azure` crate as the native host's Azure store: the
//! same signed requests, block layout and store decisions (`azure::store`: error
//! mapping, retry machine, writer finish plans, the commit machine, conflict
//! settlement), so either can commit what the other staged, and this crate keeps
//! only the wasi:http transport and its streams.
//!
//! - [`config`]: settings from environment variables (and Spin variables);
//! - [`transport`]: requests over outgoing wasi:http with timeouts and retries;
//! - [`store`]: the store functions;
//! - [`upload`]: the writer, which cuts content into Put Blocks as it arrives.
//!
//! Downloads hand the caller the Azure response's body stream itself, so blob
//! bytes move host to host. Uploads cannot: a component cannot create a
//! `wasi:io` output-stream, so `writer.body` returns none and the cache
//! component feeds `writer.write` instead.

pub mod config;
pub mod store;
pub mod transport;
pub mod upload;

/// Bindings for `world`, with WASI mapped onto the `wasip2` crate's types, so
/// streams and HTTP resources are one type with the cache component's.
macro_rules! bindings_for {
    ($world:literal) => {
        wit_bindgen::generate!({
            path: "../wit",
            world: $world,
            with: {
                "wasi:io/streams@0.2.12": wasip2::io::streams,
                "wasi:io/error@0.2.12": wasip2::io::error,
                "wasi:io/poll@0.2.12": wasip2::io::poll,
                "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
                "wasi:http/types@0.2.12": wasip2::http::types,
                "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            },
            generate_all,
        });
    };
}

#[allow(clippy::all, missing_docs)]
pub mod bindings {
    bindings_for!("blobcache:store/azure-store");
}

pub use bindings::exports::blobcache::store::types::{
    Access, BlobInfo, ByteRange, Error, ListEntry, ListPage, StagedBlock, StoreStatus, WriteMode,
    WriteOptions, Writer,
};

/// The exported interfaces' implementation.
pub struct Adapter;

// Exported only in the wasm build: native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
bindings::export!(Adapter with_types_in bindings);
