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
