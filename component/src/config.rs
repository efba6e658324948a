//! Settings the host passes to the component as environment variables
//! (`wasi:cli/environment`), which every host can provide. The Spin build reads
//! Spin variables first (the same names in lowercase), so secrets such as the
//! access tokens can come from Spin's secret providers.

/// A setting: the Spin variable (Spin build), else the environment variable.
/// A Spin variables provider that fails (a vault out of reach) is an error, not
/// an unset setting: for the tokens that would open the server.
fn setting(name: &str) -> Result<Option<String>, String> {
    match spin_variable(name)? {
        Some(value) if !value.is_empty() => Ok(Some(value)),
        _ => Ok(std::env::var(name).ok()),
    }
}

#[cfg(all(feature = "spin", target_arch = "wasm32"))]
fn spin_variable(name: &str) -> Result<Option<String>, String> {
    use spin_sdk::variables::{get, Error};
    match get(&name.to_ascii_lowercase()) {
        Ok(value) => Ok(Some(value)),
        Err(Error::Undefined(_)) => Ok(None),
        Err(Error::InvalidName(why) | Error::Provider(why) | Error::Other(why)) => Err(format!(
            "Spin variable {}: {why}",
            name.to_ascii_lowercase()
        )),
    }
}

#[cfg(not(all(feature = "spin", target_arch = "wasm32")))]
fn spin_variable(_name: &str) -> Result<Option<String>, String> {
    Ok(None)
}

/// Largest blob accepted, from `BLOBCACHE_MAX_BLOB_SIZE` (bytes); none means no limit.
pub fn max_blob_size() -> Option<u64> {
    setting("BLOBCACHE_MAX_BLOB_SIZE")
        .ok()??
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
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(60)
}

/// The access tokens, from `BLOBCACHE_TOKENS` (see [`crate::auth`]); none
/// configured means an open server.
pub fn tokens() -> Result<crate::auth::Tokens, String> {
    match setting("BLOBCACHE_TOKENS")? {
        Some(text) => crate::auth::Tokens::parse(&text),
        None => Ok(crate::auth::Tokens::default()),
    }
}

/// The server secret Azure account keys, GitHub Actions cache JWTs and signed
/// URLs are derived from (`BLOBCACHE_SECRET`; see [`crate::credentials`]).
pub fn secret() -> Result<Option<crate::credentials::Secret>, String> {
    match setting("BLOBCACHE_SECRET")? {
        Some(text) if !text.trim().is_empty() => crate::credentials::Secret::new(&text).map(Some),
        _ => Ok(None),
    }
}

/// The container the Azure-compatible endpoint serves: from
/// `BLOBCACHE_AZURE_ENDPOINT_CONTAINER`, else the Azure store's own container
/// (`BLOBCACHE_AZURE_CONTAINER`: the native host passes it as the former, the
/// composed Azure store reads the latter), else BuildKit's default. So with
/// the Azure store, blob names mean the same blobs through blobcache and directly.
pub fn azure_endpoint_container() -> String {
    [
        "BLOBCACHE_AZURE_ENDPOINT_CONTAINER",
        "BLOBCACHE_AZURE_CONTAINER",
    ]
    .into_iter()
    .find_map(|name| setting(name).ok().flatten().filter(|v| !v.is_empty()))
    .unwrap_or_else(|| "buildkit-cache".into())
}

/// The URL clients reach this server at (`BLOBCACHE_PUBLIC_URL`, e.g. behind a
/// proxy), for the signed URLs it hands out; none to use the request's own.
pub fn public_url() -> Option<String> {
    setting("BLOBCACHE_PUBLIC_URL")
        .ok()
        .flatten()
        .map(|url| url.trim_end_matches('/').to_string())
        .filter(|url| !url.is_empty())
}
