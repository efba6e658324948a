//! Settings the host passes to the component as environment variables
//! (`wasi:cli/environment`), which every host can provide.

/// Largest blob accepted, from `BLOBCACHE_MAX_BLOB_SIZE` (bytes); none means no limit.
pub fn max_blob_size() -> Option<u64> {
    std::env::var("BLOBCACHE_MAX_BLOB_SIZE")
        .ok()?
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
    std::env::var("BLOBCACHE_BODY_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(60)
}

/// The access tokens, from `BLOBCACHE_TOKENS` (see [`crate::auth`]); none
/// configured means an open server.
pub fn tokens() -> Result<crate::auth::Tokens, String> {
    match std::env::var("BLOBCACHE_TOKENS") {
        Ok(text) => crate::auth::Tokens::parse(&text),
        Err(_) => Ok(crate::auth::Tokens::default()),
    }
}
