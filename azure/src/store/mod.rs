//! The Azure store's decisions, made once for both transports: the native host
//! (reqwest on tokio, `host/src/store/azure/`) and the store component (outgoing
//! wasi:http, `adapter/`). Each turns answers into store results with these
//! functions and small state machines, and keeps only its transport and streams.
//!
//! Types here are neutral: [`Options`] for the WIT `write-options`,
//! [`StoredBlob`] for `blob-info`, [`StoreError`] for `error`; each side converts
//! its own bindgen types with one `From`.

pub mod commit;
pub mod retry;

use std::fmt;

use blobcache_store_rules as rules;
pub use blobcache_store_rules::StoreError;
use bytes::Bytes;

use crate::layout::{self, PublishConflict, Staged, StoredBlob};
use crate::ops::{Container, WriteProperties};
use crate::response::{self, AzureError, ErrorKind};

/// The conversions between the neutral types here and one bindgen family of the
/// `blobcache:store` types (the host's `wasmtime::component::bindgen!` and the
/// store component's `wit_bindgen::generate!` make different ones), named by the
/// types in scope where it is invoked: `From<StoreError>` and `From<CallError>`
/// for the error, `neutral_options`, `blob_info`, `staged_blocks` and `list_page`.
#[macro_export]
macro_rules! store_type_conversions {
    (
        $Error:ident,
        $BlobInfo:ident,
        $WriteOptions:ident,
        $WriteMode:ident,
        $StagedBlock:ident,
        $ListPage:ident,
        $ListEntry:ident
    ) => {
        impl From<$crate::store::StoreError> for $Error {
            fn from(error: $crate::store::StoreError) -> $Error {
                use $crate::store::StoreError as E;
                match error {
                    E::NotFound => $Error::NotFound,
                    E::AlreadyExists => $Error::AlreadyExists,
                    E::PreconditionFailed => $Error::PreconditionFailed,
                    E::Invalid(why) => $Error::Invalid(why),
                    E::TooLarge(why) => $Error::TooLarge(why),
                    E::Full(why) => $Error::Full(why),
                    E::Unavailable(why) => $Error::Unavailable(why),
                    E::Other(why) => $Error::Other(why),
                }
            }
        }

        /// Azure's answers mean the same in every transport: one mapping, in `azure/`.
        impl From<$crate::store::CallError> for $Error {
            fn from(error: $crate::store::CallError) -> $Error {
                $crate::store::StoreError::from(error).into()
            }
        }

        /// The WIT write options as the `azure` crate's neutral ones.
        pub fn neutral_options(options: &$WriteOptions) -> $crate::store::Options {
            $crate::store::Options {
                create_only: matches!(options.mode, $WriteMode::CreateOnly),
                content_type: options.content_type.clone(),
                metadata: options.metadata.clone(),
                expected_size: options.expected_size,
                expected_sha256: options.expected_sha256.clone(),
                max_size: options.max_size,
                if_match: options.if_match.clone(),
                staged_under: options.staged_under.clone(),
            }
        }

        /// Staged blocks (caller id, size) as the WIT `staged-block`s.
        pub fn staged_blocks(blocks: Vec<(String, u64)>) -> Vec<$StagedBlock> {
            let blocks = blocks.into_iter();
            blocks.map(|(id, size)| $StagedBlock { id, size }).collect()
        }

        /// A page of listed blobs as the WIT `list-page`.
        pub fn list_page(listed: $crate::store::Listed) -> $ListPage {
            let entries = listed.entries.into_iter();
            $ListPage {
                entries: entries
                    .map(|(key, blob)| $ListEntry {
                        key,
                        info: blob_info(blob),
                    })
                    .collect(),
                next_cursor: listed.next_cursor,
            }
        }

        /// A stored blob as the WIT `blob-info`.
        pub fn blob_info(blob: $crate::layout::StoredBlob) -> $BlobInfo {
            $BlobInfo {
                size: blob.size,
                etag: blob.etag,
                last_modified: blob.last_modified,
                content_type: blob.content_type,
                sha256: blob.sha256,
                metadata: blob.metadata,
            }
        }
    };
}

/// The WIT `write-options`, neutral.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub create_only: bool,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub expected_size: Option<u64>,
    pub expected_sha256: Option<String>,
    pub max_size: Option<u64>,
    pub if_match: Option<String>,
    /// `commit-blocks`: the key the blocks were staged under, if not the target's.
    pub staged_under: Option<String>,
}

impl Options {
    /// Options of a staged block: only its size may be checked.
    pub fn block(expected_size: Option<u64>) -> Options {
        Options {
            expected_size,
            ..Options::default()
        }
    }

    /// Content type, metadata with our verified digest, and the condition.
    pub fn properties(&self, sha256: Option<&str>) -> WriteProperties {
        layout::write_properties(
            self.create_only,
            self.if_match.as_deref(),
            self.content_type.as_deref(),
            &self.metadata,
            sha256,
        )
    }

    /// Size and digest of finished content against what the caller expected.
    pub fn verify(&self, size: u64, sha256: Option<&str>) -> Result<(), StoreError> {
        rules::verify(
            self.expected_size,
            self.expected_sha256.as_deref(),
            size,
            sha256,
        )
    }
}

/// A failed call: what the service said, why it could not be reached, or why
/// the host would not send it (no retry can change that).
#[derive(Debug)]
pub enum CallError {
    Service(AzureError),
    Unreachable(String),
    Refused(String),
}

impl CallError {
    pub(crate) fn is(&self, kind: ErrorKind) -> bool {
        matches!(self, CallError::Service(e) if e.kind() == kind)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Service(e) => write!(f, "{e}"),
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Refused(why) => write!(f, "refused by the host: {why}"),
        }
    }
}

/// Azure's answer → the store error callers see.
impl From<CallError> for StoreError {
    fn from(error: CallError) -> StoreError {
        match error {
            CallError::Unreachable(why) => {
                StoreError::Unavailable(format!("Azure unreachable: {why}"))
            }
            CallError::Refused(why) => StoreError::Other(format!(
                "the host refused the request to Azure ({why}); on Spin, check allowed_outbound_hosts"
            )),
            CallError::Service(e) => match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound,
                ErrorKind::AlreadyExists => StoreError::AlreadyExists,
                ErrorKind::PreconditionFailed => StoreError::PreconditionFailed,
                ErrorKind::TooLarge => StoreError::TooLarge(e.to_string()),
                ErrorKind::Transient => StoreError::Unavailable(e.to_string()),
                ErrorKind::Authentication => {
                    StoreError::Other(format!("Azure authentication failed: {e}"))
                }
                ErrorKind::Invalid | ErrorKind::Other => StoreError::Other(e.to_string()),
            },
        }
    }
}

/// A successful answer whose (small) body was read whole.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// What a blob's headers say of it. The destination of a Copy Blob that is still
/// running, or that failed, is not a published blob: it reads as absent.
pub fn stored(headers: &http::HeaderMap) -> Result<StoredBlob, StoreError> {
    let copy = headers
        .get("x-ms-copy-status")
        .and_then(|v| v.to_str().ok());
    if copy.is_some_and(|status| !copy_succeeded(status)) {
        return Err(StoreError::NotFound);
    }
    let properties = response::properties(headers).map_err(|e| StoreError::Other(e.to_string()))?;
    Ok(StoredBlob::from(properties))
}

/// Whether a copy status means the content is all there.
fn copy_succeeded(status: &str) -> bool {
    status.eq_ignore_ascii_case("success")
}

/// A byte range as `(offset, length)`.
pub type Range = Option<(u64, Option<u64>)>;

/// How to serve `open`: Azure has no empty range, so a zero-length read is a
/// HEAD with an empty body; anything else is a Get Blob (of the range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenPlan {
    Empty,
    Get(Range),
}

pub fn open_plan(range: Range) -> OpenPlan {
    match range {
        Some((_, Some(0))) => OpenPlan::Empty,
        range => OpenPlan::Get(range),
    }
}

/// Whether a failed Get Blob is an empty read (416: the range starts at the end),
/// to be served as [`OpenPlan::Empty`].
pub fn read_is_empty(error: &CallError) -> bool {
    matches!(error, CallError::Service(e) if e.status == 416)
}

/// The blob and the bytes `start..end` that a read of `range` streams, from the
/// answer's headers (the length comes from the blob's size, not from framing).
pub fn opened(
    headers: &http::HeaderMap,
    range: Range,
) -> Result<(StoredBlob, u64, u64), StoreError> {
    let blob = stored(headers)?;
    let (start, end) = resolve(range, blob.size)?;
    Ok((blob, start, end))
}

/// The bytes `start..end` a range selects in a blob of `size` bytes.
pub fn resolve(range: Range, size: u64) -> Result<(u64, u64), StoreError> {
    match range {
        None => Ok((0, size)),
        Some((offset, length)) => {
            rules::resolve_range(offset, length, size).map_err(StoreError::Invalid)
        }
    }
}

/// The result of Delete Blob: a miss after an attempt that may have been applied
/// means that attempt deleted it and its answer was lost.
pub fn deleted(result: Result<(), CallError>, maybe_applied: bool) -> Result<(), StoreError> {
    match result {
        Err(e) if maybe_applied && e.is(ErrorKind::NotFound) => Ok(()),
        other => other.map_err(StoreError::from),
    }
}

/// One page of `list`: keys with what the listing says of them.
pub struct Listed {
    pub entries: Vec<(String, StoredBlob)>,
    pub next_cursor: Option<String>,
}

/// A List Blobs answer (asked with metadata) as a page of keys: names outside the
/// prefix and staging blobs are left out.
pub fn list_page(prefix: &str, xml: &[u8]) -> Result<Listed, StoreError> {
    let page = response::list_page(xml).map_err(|e| StoreError::Other(e.to_string()))?;
    let entries = page
        .blobs
        .into_iter()
        .filter(|blob| blob.copy_status.as_deref().is_none_or(copy_succeeded))
        .filter_map(|blob| {
            let key = layout::listed_key(prefix, &blob.name)?.to_string();
            Some((key, StoredBlob::from(blob)))
        })
        .collect();
    Ok(Listed {
        entries,
        next_cursor: page.next_marker,
    })
}

/// A SAS URL for `blob`; none with a SAS credential (it cannot sign). Starts a
/// little in the past: clocks of client and service differ.
pub fn presign(
    container: &Container,
    blob: &str,
    write: bool,
    ttl_seconds: u32,
    now_unix: u64,
) -> Option<String> {
    let permissions = if write { "cw" } else { "r" };
    container.sas_url(
        blob,
        permissions,
        Some(now_unix.saturating_sub(300)),
        now_unix + u64::from(ttl_seconds.max(1)),
    )
}

/// The staged blocks, from Get Block List of a staging blob; a missing staging
/// blob holds nothing.
pub fn staged(result: Result<Answer, CallError>) -> Result<Staged, StoreError> {
    let blocks = match result {
        Ok(answer) => response::uncommitted_blocks(&answer.body)
            .map_err(|e| StoreError::Other(e.to_string()))?,
        Err(e) if e.is(ErrorKind::NotFound) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(Staged::new(blocks))
}

/// What a writer's `finish` does once every block in flight has landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A staged block: send the name parts and the last part; nothing is published.
    StageLast,
    /// Nothing was sent yet: the whole content in one Put Blob.
    PutBlob,
    /// Send the last block, then Put Block List.
    PutBlockList,
}

/// A writer's plan once every block in flight has landed: how to complete, the
/// content's sha256, and the properties to publish with.
pub struct Finished {
    pub plan: Finish,
    pub sha256: String,
    pub properties: WriteProperties,
}

/// Verifies a finished upload of `written` bytes (hashed by `hasher`) and says how
/// to complete it; nothing is sent when verification fails.
pub fn finish(
    options: &Options,
    ids: &layout::BlockIds,
    written: u64,
    hasher: sha2::Sha256,
    blocks_sent: usize,
) -> Result<Finished, StoreError> {
    use sha2::Digest as _;
    let sha256 = hex::encode(hasher.finalize());
    options.verify(written, Some(&sha256))?;
    let plan = match (ids.publishes(), blocks_sent) {
        (false, _) if written == 0 => {
            return Err(StoreError::Invalid(
                "an empty block cannot be staged".into(),
            ))
        }
        (false, _) => Finish::StageLast,
        (true, 0) => Finish::PutBlob,
        (true, _) => Finish::PutBlockList,
    };
    Ok(Finished {
        plan,
        properties: options.properties(Some(&sha256)),
        sha256,
    })
}

/// What a successful publish of `size` bytes made, from its answer's headers.
pub fn published(
    headers: &http::HeaderMap,
    size: u64,
    options: &Options,
    sha256: Option<&str>,
    now_unix: u64,
) -> StoredBlob {
    StoredBlob {
        size,
        etag: headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        last_modified: now_unix,
        content_type: options.content_type.clone(),
        sha256: sha256.map(str::to_string),
        metadata: options.metadata.clone(),
    }
}

/// What a staged block's `finish` reports (it is not visible yet).
pub fn staged_block(size: u64, sha256: &str, now_unix: u64) -> StoredBlob {
    StoredBlob {
        size,
        etag: format!("\"{sha256}\""),
        last_modified: now_unix,
        content_type: None,
        sha256: Some(sha256.to_string()),
        metadata: Vec::new(),
    }
}

/// A refused publish being settled: it may be ours after all (see
/// [`PublishConflict`]); then the blob's current digest decides.
pub struct Refused {
    error: CallError,
    replaced: bool,
}

/// Classifies a failed publish: `Err` when the refusal stands, else a [`Refused`]
/// to decide after a Get Blob Properties of the target.
pub fn refused(error: CallError, maybe_applied: bool) -> Result<Refused, StoreError> {
    let CallError::Service(e) = &error else {
        return Err(error.into());
    };
    match layout::publish_conflict(e, maybe_applied) {
        PublishConflict::Final => Err(error.into()),
        conflict => Ok(Refused {
            error,
            replaced: conflict == PublishConflict::Replaced,
        }),
    }
}

impl Refused {
    /// Decides with what the target holds now (none if it could not be read).
    pub fn decide(
        self,
        current: Option<StoredBlob>,
        sha256: &str,
    ) -> Result<StoredBlob, StoreError> {
        if let Some(blob) = current.filter(|b| b.sha256.as_deref() == Some(sha256)) {
            return Ok(blob);
        }
        if self.replaced {
            return Err(StoreError::Unavailable(
                "a concurrent upload of this key replaced this one; retry".into(),
            ));
        }
        Err(self.error.into())
    }
}

#[cfg(test)]
mod copy_visibility_tests {
    use super::*;

    fn headers(copy_status: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-length", "5".parse().unwrap());
        headers.insert("etag", "\"0x1\"".parse().unwrap());
        headers.insert(
            "last-modified",
            "Thu, 26 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        if let Some(status) = copy_status {
            headers.insert("x-ms-copy-status", status.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_copy_destination_is_published_only_once_the_copy_succeeded() {
        assert!(stored(&headers(None)).is_ok());
        assert!(stored(&headers(Some("success"))).is_ok());
        for status in ["pending", "failed", "aborted"] {
            assert_eq!(
                stored(&headers(Some(status))).unwrap_err(),
                StoreError::NotFound,
                "{status}"
            );
        }
        let xml = b"<EnumerationResults><Blobs>\
            <Blob><Name>a</Name><Properties><Content-Length>1</Content-Length><CopyStatus>pending</CopyStatus></Properties></Blob>\
            <Blob><Name>b</Name><Properties><Content-Length>1</Content-Length><CopyStatus>success</CopyStatus></Properties></Blob>\
            <Blob><Name>c</Name><Properties><Content-Length>1</Content-Length></Properties></Blob>\
            </Blobs></EnumerationResults>";
        let keys: Vec<String> = list_page("", xml)
            .unwrap()
            .entries
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
