//! Settings the host passes to the component as environment variables
//! (`wasi:cli/environment`), which every host can provide. The Spin build reads
//! Spin variables first (the same names in lowercase), so secrets such as the
//! access tokens can come from Spin's secret providers.

/// A setting: the Spin variable (Spin build), else the environment variable.
fn setting(name: &str) -> Option<String> {
    spin_variable(name)
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var(name).ok())
}

#[cfg(all(feature = "spin", target_arch = "wasm32"))]
fn spin_variable(name: &str) -> Option<String> {
    crate::bindings::fermyon::spin::variables::get(&name.to_ascii_lowercase()).ok()
}

#[cfg(not(all(feature = "spin", target_arch = "wasm32")))]
fn spin_variable(_name: &str) -> Option<String> {
    None
}

/// Largest blob accepted, from `BLOBCACHE_MAX_BLOB_SIZE` (bytes); none means no limit.
pub fn max_blob_size() -> Option<u64> {
    setting("BLOBCACHE_MAX_BLOB_SIZE")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// Whether uploads are copied into `writer.write` even when the store offers a
/// stream (`BLOBCACHE_COPY_UPLOADS=1`): the path a store component takes, made
/// reachable on the native host for tests and comparisons.
pub fn copy_uploads() -> bool {
    std::env::var("BLOBCACHE_COPY_UPLOADS").is_ok_and(|v| v == "1")
}

/// Longest wait for more of a request body copied into `writer.write`, from
/// `BLOBCACHE_BODY_STALL_SECS` (default 60). Hosts without a watchdog of their
/// own (`wasmtime serve`, Spin) rely on it to free stalled uploads.
pub fn body_stall_secs() -> u64 {
    setting("BLOBCACHE_BODY_STALL_SECS")
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(60)
}

/// The access tokens, from `BLOBCACHE_TOKENS` (see [`crate::auth`]); none
/// configured means an open server.
pub fn tokens() -> Result<crate::auth::Tokens, String> {
    match setting("BLOBCACHE_TOKENS") {
        Some(text) => crate::auth::Tokens::parse(&text),
        None => Ok(crate::auth::Tokens::default()),
    }
}
