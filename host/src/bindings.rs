//! Host bindings for `blobcache:store`, generated from `wit/`.
//!
//! `wasi:io` maps onto wasmtime-wasi's streams, so blob streams and HTTP body streams
//! are one resource type and the guest can splice between them.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "blobcache:store/store-host",
    imports: { default: async | trappable },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "blobcache:store/types.writer": crate::store::PendingWrite,
    },
    require_store_data_send: true,
});

pub use self::blobcache::store::types;
