//! blobcache's integration tests: one binary, organised by feature. Each
//! scenario is written once and run on every target it applies to
//! ([`targets`]: the native host with each store, the composed component under
//! `wasmtime serve`, the Spin build under the real Spin).
//!
//! - [`protocols`]: one file of scenarios per protocol;
//! - [`access`]: access tokens, and the host's guards;
//! - [`clients`]: every real client at once on one listener, with tokens;
//! - [`robustness`], [`large_blobs`], [`abuse`]: the native host's limits and streaming;
//! - [`operations`]: `/metrics` and the access log; [`load`]: load with faults;
//! - [`stores`]: the store contract per operation on every backend, and Azure;
//! - [`hosts`]: what only one host shows (faults under `wasmtime serve` and Spin, the
//!   Functions custom handler, the deployment worlds, Spin variables);
//! - [`support`]: starting servers and peers, speaking raw HTTP/1.1.

#[allow(dead_code)]
mod support;
#[macro_use]
mod targets;

mod abuse;
mod access;
mod clients;
mod hosts;
mod large_blobs;
mod load;
mod operations;
mod protocols;
mod robustness;
mod stores;
