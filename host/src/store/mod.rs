//! Native store backends behind `blobcache:store`.
//!
//! [`Backend`] is the native face of the WIT interface: [`dir`] (the default) keeps
//! blobs in a local directory, [`memory`] in process memory, [`azure`] in Azure Blob
//! Storage. `host_impl` binds a backend to the component. Shared pieces live here
//! once: the verifying sink every writer streams into, and the readers. Key, block
//! id and verification rules come from `blobcache-store-rules`, which the store
//! component uses too.

pub mod azure;
pub mod dir;
pub mod edge;
pub(crate) mod eviction;
mod host_impl;
mod key_index;
pub mod memory;
pub(crate) mod metered;
mod sink;
mod streams;

use std::sync::Arc;

use async_trait::async_trait;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

pub use crate::bindings::types::{
    Access, BlobInfo, ByteRange, Error, ListEntry, ListPage, StagedBlock, StoreStatus, WriteMode,
    WriteOptions,
};
pub use blobcache_store_rules::StoreError;
pub use sink::{Sink, SinkStream, Written};
pub use streams::BytesInputStream;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A blob store as the native host sees it. Each method is one WIT function.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn status(&self) -> StoreStatus;
    async fn head(&self, key: &str) -> Result<BlobInfo>;
    async fn open(&self, key: &str, range: Option<ByteRange>)
        -> Result<(BlobInfo, DynInputStream)>;
    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>>;
    async fn stage_block(
        &self,
        key: &str,
        block_id: &str,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>>;
    /// The blocks staged for `key` and not yet committed, sorted by id.
    async fn list_blocks(&self, key: &str) -> Result<Vec<StagedBlock>>;
    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<ListPage>;
    async fn presign(&self, key: &str, access: Access, ttl_seconds: u32) -> Result<Option<String>>;
}

/// An upload in progress. Dropping it without `finish` discards everything.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    /// The stream the content is written to; asked for once.
    fn body(&mut self) -> Result<DynOutputStream>;
    /// Verifies what was written against the options and publishes it atomically.
    async fn finish(self: Box<Self>) -> Result<BlobInfo>;
}

/// The `writer` resource held in the component's resource table.
pub struct PendingWrite {
    pub(crate) writer: Box<dyn BlobWriter>,
    /// The body stream that `write` feeds, taken on its first call.
    pub(crate) chunks: Option<DynOutputStream>,
    /// The first failed `write`: `finish` reports it and publishes nothing.
    pub(crate) failed: Option<Error>,
}

impl PendingWrite {
    pub(crate) fn new(writer: Box<dyn BlobWriter>) -> PendingWrite {
        PendingWrite {
            writer,
            chunks: None,
            failed: None,
        }
    }
}

pub type SharedBackend = Arc<dyn Backend>;

pub use blobcache_store_rules::{
    block_file_name, block_id_of_file_name, MAX_BLOCK_ID_LEN, MAX_KEY_LEN,
};

/// Keys are `/`-separated segments of `[A-Za-z0-9._~:+=@-]`, none empty, `.` or `..`.
/// The component checks the same rules; stores check again so no caller can
/// address anything outside the store.
pub fn check_key(key: &str) -> Result<()> {
    blobcache_store_rules::check_key(key).map_err(Error::Invalid)
}

/// Block ids: 1 to 88 bytes of printable ASCII, opaque to the store.
pub fn check_block_id(id: &str) -> Result<()> {
    blobcache_store_rules::check_block_id(id).map_err(Error::Invalid)
}

blobcache_azure::store_type_conversions!(
    Error,
    BlobInfo,
    WriteOptions,
    WriteMode,
    StagedBlock,
    ListPage,
    ListEntry
);

/// Write options of a staged block: only its size may be checked.
pub fn block_options(expected_size: Option<u64>) -> WriteOptions {
    WriteOptions {
        staged_under: None,
        mode: WriteMode::Overwrite,
        content_type: None,
        metadata: Vec::new(),
        expected_size,
        expected_sha256: None,
        max_size: None,
        if_match: None,
    }
}

/// What `finish` reports for a staged (not yet visible) block.
pub fn block_info(size: u64, sha256: String) -> BlobInfo {
    BlobInfo {
        size,
        etag: etag_for(&sha256),
        last_modified: now_unix(),
        content_type: None,
        sha256: Some(sha256),
        metadata: Vec::new(),
    }
}

/// Writers hand out their body stream once.
pub fn take_body_once(taken: &mut bool) -> Result<()> {
    if std::mem::replace(taken, true) {
        return Err(Error::Invalid("the writer's body was already taken".into()));
    }
    Ok(())
}

/// Checks a finished upload against its options (size, digest).
pub fn verify(options: &WriteOptions, size: u64, sha256: &str) -> Result<()> {
    blobcache_store_rules::verify(
        options.expected_size,
        options.expected_sha256.as_deref(),
        size,
        Some(sha256),
    )
    .map_err(Error::from)
}

/// The quoted etag for content with this digest.
pub fn etag_for(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// The part of a blob of `size` bytes that `range` selects, as `(start, end)`.
pub fn resolve_range(range: Option<ByteRange>, size: u64) -> Result<(u64, u64)> {
    match range {
        None => Ok((0, size)),
        Some(range) => blobcache_store_rules::resolve_range(range.offset, range.length, size)
            .map_err(Error::Invalid),
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// I/O failures are the server's, not the client's: a missing file is a miss only
/// where the caller says so (see [`not_found_is_miss`]).
impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::Full("no space left on the store's disk".into())
            }
            _ => Error::Other(error.to_string()),
        }
    }
}

/// For lookups by key: a missing file means the key holds nothing.
pub fn not_found_is_miss(error: std::io::Error) -> Error {
    match error.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound,
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |offset, length| Some(ByteRange { offset, length });
        assert_eq!(resolve_range(None, 10).unwrap(), (0, 10));
        assert_eq!(resolve_range(r(2, Some(3)), 10).unwrap(), (2, 5));
        assert_eq!(resolve_range(r(8, Some(30)), 10).unwrap(), (8, 10));
        assert_eq!(resolve_range(r(10, None), 10).unwrap(), (10, 10));
        assert!(resolve_range(r(11, None), 10).is_err());
    }
}
