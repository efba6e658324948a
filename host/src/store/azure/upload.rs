//! Uploads to Azure: content is cut into blocks as it arrives and each full block
//! goes out as Put Block (a few in flight, so memory per upload stays bounded).
//! `finish` checks size and sha256 of everything written before anything becomes
//! visible, then commits with Put Block List (or, for one block, a single Put Blob).
//!
//! The last block is always held back until `finish`, so that a staged block's
//! final part can be marked as such: `commit-blocks` then takes only complete
//! stagings, never leftovers of a failed or superseded one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use blobcache_azure::ops::{self, Condition, WriteProperties};
use blobcache_azure::response::{ErrorKind, ListedBlock};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::{header_text, AzureStore, CallError};
use crate::store::*;

/// How a writer names its Azure blocks. Every id is a name of at most 64 bytes,
/// padded, so all ids of one blob have the same length, as Azure requires.
#[derive(Clone)]
pub(super) enum BlockIds {
    /// A single-request upload: a random upload id, so concurrent uploads of
    /// one key never share blocks.
    Upload { upload: String },
    /// One staged block: the caller's block id (hashed), a nonce that orders
    /// re-stagings of the same id, and the part number; the last part is marked.
    Staged { prefix: String, nonce: String },
}

impl BlockIds {
    pub(super) fn upload() -> Result<BlockIds> {
        Ok(BlockIds::Upload {
            upload: random_hex(8)?,
        })
    }

    pub(super) fn staged(block_id: &str) -> Result<BlockIds> {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Time first, so the newest staging sorts last; random bits break ties.
        let nonce = format!("{:012x}{}", millis & 0xffff_ffff_ffff, random_hex(2)?);
        Ok(BlockIds::Staged {
            prefix: staged_prefix(block_id),
            nonce,
        })
    }

    fn id(&self, index: usize, last: bool) -> String {
        match self {
            BlockIds::Upload { upload } => ops::named_block_id(&format!("u{upload}-{index:08}")),
            BlockIds::Staged { prefix, nonce } => {
                let mark = if last { 'L' } else { 'P' };
                ops::named_block_id(&format!("s{prefix}{nonce}{index:08}{mark}"))
            }
        }
    }

    fn publishes(&self) -> bool {
        matches!(self, BlockIds::Upload { .. })
    }
}

/// The part of a staged block's Azure ids that names the caller's block id.
pub(super) fn staged_prefix(block_id: &str) -> String {
    hex::encode(&Sha256::digest(block_id.as_bytes())[..16])
}

/// The newest complete staging of each caller block id, as Azure block ids in
/// order with their sizes. A staging is complete when its parts run from 0 to a
/// part marked last, without gaps.
/// A staged part: index, whether it is the last, Azure block id, size.
type Part = (u64, bool, String, u64);

pub(super) fn complete_stagings(blocks: Vec<ListedBlock>) -> HashMap<String, Vec<(String, u64)>> {
    // prefix -> nonce -> (index, last, azure id, size)
    let mut stagings: HashMap<String, HashMap<String, Vec<Part>>> = HashMap::new();
    for block in blocks {
        let Some(name) = ops::block_id_name(&block.name) else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix('s')
            .filter(|r| r.len() == 32 + 16 + 8 + 1)
        else {
            continue;
        };
        let (prefix, rest) = rest.split_at(32);
        let (nonce, rest) = rest.split_at(16);
        let (index, mark) = rest.split_at(8);
        let Ok(index) = index.parse::<u64>() else {
            continue;
        };
        stagings
            .entry(prefix.to_string())
            .or_default()
            .entry(nonce.to_string())
            .or_default()
            .push((index, mark == "L", block.name, block.size));
    }
    let mut complete = HashMap::new();
    for (prefix, by_nonce) in stagings {
        let mut nonces: Vec<_> = by_nonce.into_iter().collect();
        nonces.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, mut parts) in nonces {
            parts.sort();
            let contiguous = parts.iter().enumerate().all(|(i, part)| part.0 == i as u64);
            let ends_marked =
                parts.last().is_some_and(|p| p.1) && parts.iter().filter(|p| p.1).count() == 1;
            if contiguous && ends_marked {
                complete.insert(
                    prefix,
                    parts
                        .into_iter()
                        .map(|(_, _, id, size)| (id, size))
                        .collect(),
                );
                break;
            }
        }
    }
    complete
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random)
        .map_err(|e| Error::Other(format!("no randomness for block ids: {e}")))?;
    Ok(hex::encode(random))
}

/// Content type, metadata (with our verified digest, never a caller's) and condition.
pub(super) fn write_properties(options: &WriteOptions, sha256: Option<&str>) -> WriteProperties {
    let mut metadata: Vec<(String, String)> = options
        .metadata
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("sha256"))
        .cloned()
        .collect();
    if let Some(sha256) = sha256 {
        metadata.push(("sha256".into(), sha256.to_string()));
    }
    WriteProperties {
        content_type: options.content_type.clone(),
        metadata,
        condition: match (&options.mode, &options.if_match) {
            (WriteMode::CreateOnly, _) => Condition::IfNoneExists,
            (WriteMode::Overwrite, Some(etag)) => Condition::IfMatch(etag.clone()),
            (WriteMode::Overwrite, None) => Condition::None,
        },
    }
}

/// An upload in progress.
pub(super) struct AzureWriter {
    store: AzureStore,
    blob: String,
    options: WriteOptions,
    ids: BlockIds,
    state: Arc<Mutex<Option<UploadState>>>,
    slots: Arc<Semaphore>,
    body_taken: bool,
}

struct UploadState {
    buffer: BytesMut,
    hasher: Sha256,
    written: u64,
    /// Azure ids of the blocks sent so far, in order.
    sent: Vec<String>,
    /// The first failure of a write or of a block upload.
    failure: Arc<Mutex<Option<Error>>>,
}

impl AzureWriter {
    pub(super) fn new(
        store: AzureStore,
        blob: String,
        options: WriteOptions,
        ids: BlockIds,
    ) -> AzureWriter {
        let slots = Arc::new(Semaphore::new(store.inner.parallel_blocks));
        let state = UploadState {
            buffer: BytesMut::new(),
            hasher: Sha256::new(),
            written: 0,
            sent: Vec::new(),
            failure: Arc::new(Mutex::new(None)),
        };
        AzureWriter {
            store,
            blob,
            options,
            ids,
            state: Arc::new(Mutex::new(Some(state))),
            slots,
            body_taken: false,
        }
    }

    /// Sends a block and records its id (waits for the upload).
    async fn send_last(&self, state: &mut UploadState, last: bool) -> Result<()> {
        let id = self.ids.id(state.sent.len(), last);
        let block = state.buffer.split().freeze();
        let length = block.len() as u64;
        let container = &self.store.inner.container;
        self.store
            .call(
                |now| container.put_block(&self.blob, &id, length, now),
                Some(block),
            )
            .await?;
        state.sent.push(id);
        Ok(())
    }

    /// After a publish answered with a conflict, decides whether the blob now
    /// holds exactly what we wrote: a retried attempt may have been applied
    /// before its answer was lost, or a concurrent upload of the same content won.
    async fn resolve_conflict(
        &self,
        error: CallError,
        ambiguous: bool,
        sha256: &str,
    ) -> Result<BlobInfo> {
        let CallError::Service(e) = &error else {
            return Err(error.into());
        };
        let replaced = e.code == "InvalidBlockList";
        let conflict = matches!(
            e.kind(),
            ErrorKind::AlreadyExists | ErrorKind::PreconditionFailed
        );
        if replaced || (conflict && ambiguous) {
            let current = self.store.head_blob(&self.blob).await;
            if let Ok(info) = current {
                if info.sha256.as_deref() == Some(sha256) {
                    return Ok(info);
                }
            }
        }
        if replaced {
            return Err(Error::Unavailable(
                "a concurrent upload of this key replaced this one; retry".into(),
            ));
        }
        Err(error.into())
    }
}

/// The `output-stream` of an [`AzureWriter`].
struct UploadStream {
    store: AzureStore,
    blob: String,
    ids: BlockIds,
    max_size: Option<u64>,
    state: Arc<Mutex<Option<UploadState>>>,
    slots: Arc<Semaphore>,
}

impl UploadStream {
    fn block_size(&self) -> usize {
        self.store.inner.block_size
    }

    /// Sends one full block in the background, holding an upload slot.
    fn send_block(&self, state: &mut UploadState, block: Bytes, permit: OwnedSemaphorePermit) {
        let id = self.ids.id(state.sent.len(), false);
        state.sent.push(id.clone());
        let (store, blob, failure) = (self.store.clone(), self.blob.clone(), state.failure.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let length = block.len() as u64;
            let container = &store.inner.container;
            if let Err(e) = store
                .call(
                    |now| container.put_block(&blob, &id, length, now),
                    Some(block),
                )
                .await
            {
                failure.lock().unwrap().get_or_insert(e.into());
            }
        });
    }
}

fn failed(state: &UploadState) -> Option<Error> {
    state.failure.lock().unwrap().clone()
}

impl OutputStream for UploadStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let block_size = self.block_size();
        let mut guard = self.state.lock().unwrap();
        let state = guard.as_mut().ok_or(StreamError::Closed)?;
        if let Some(e) = failed(state) {
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        let total = state.written + bytes.len() as u64;
        if let Some(max) = self.max_size.filter(|max| total > *max) {
            let e = Error::TooLarge(format!("blob is over the {max}-byte limit"));
            state.failure.lock().unwrap().get_or_insert(e.clone());
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        // A write that overflows the held-back block needs a slot: check before
        // changing anything (`check_write` promised one).
        let needs_send = state.buffer.len() + bytes.len() > block_size;
        let permit = match needs_send {
            true => Some(self.slots.clone().try_acquire_owned().map_err(|_| {
                StreamError::Trap(wasmtime::format_err!("write beyond the check-write permit"))
            })?),
            false => None,
        };
        state.hasher.update(&bytes);
        state.written = total;
        state.buffer.extend_from_slice(&bytes);
        if let Some(permit) = permit {
            let block = state.buffer.split_to(block_size).freeze();
            self.send_block(state, block, permit);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let block_size = self.block_size();
        let guard = self.state.lock().unwrap();
        let state = guard.as_ref().ok_or(StreamError::Closed)?;
        if let Some(e) = failed(state) {
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        if self.slots.available_permits() > 0 {
            Ok(block_size)
        } else {
            // Without a free slot, only what fits in the held-back block.
            Ok(block_size.saturating_sub(state.buffer.len()))
        }
    }
}

#[async_trait::async_trait]
impl Pollable for UploadStream {
    async fn ready(&mut self) {
        let writable = {
            let guard = self.state.lock().unwrap();
            match guard.as_ref() {
                Some(state) => failed(state).is_some() || state.buffer.len() < self.block_size(),
                None => true,
            }
        };
        if !writable {
            if let Ok(permit) = self.slots.acquire().await {
                drop(permit);
            }
        }
    }
}

#[async_trait]
impl BlobWriter for AzureWriter {
    fn body(&mut self) -> Result<DynOutputStream> {
        take_body_once(&mut self.body_taken)?;
        Ok(Box::new(UploadStream {
            store: self.store.clone(),
            blob: self.blob.clone(),
            ids: self.ids.clone(),
            max_size: self.options.max_size,
            state: self.state.clone(),
            slots: self.slots.clone(),
        }))
    }

    async fn finish(self: Box<Self>) -> Result<BlobInfo> {
        let taken = self.state.lock().unwrap().take();
        let mut state = taken.ok_or(Error::Invalid("writer already finished".into()))?;
        // Wait for every block in flight.
        let all = self.store.inner.parallel_blocks as u32;
        let _all_slots = self
            .slots
            .acquire_many(all)
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        if let Some(e) = failed(&state) {
            return Err(e);
        }
        let sha256 = hex::encode(std::mem::take(&mut state.hasher).finalize());
        // Verified before anything becomes visible.
        verify(&self.options, state.written, &sha256)?;
        if !self.ids.publishes() {
            if state.written == 0 {
                return Err(Error::Invalid("an empty block cannot be staged".into()));
            }
            self.send_last(&mut state, true).await?;
            return Ok(block_info(state.written, sha256));
        }
        let properties = write_properties(&self.options, Some(&sha256));
        let container = &self.store.inner.container;
        let mut ambiguous = false;
        let published = if state.sent.is_empty() {
            // Small enough for one request.
            let content = state.buffer.split().freeze();
            let length = content.len() as u64;
            self.store
                .call_noting_retries(
                    |now| container.put_blob(&self.blob, length, &properties, now),
                    Some(content),
                    &mut ambiguous,
                )
                .await
        } else {
            self.send_last(&mut state, true).await?;
            let ids = state.sent.clone();
            self.store
                .call_noting_retries(
                    |now| container.put_block_list(&self.blob, &ids, &properties, now),
                    None,
                    &mut ambiguous,
                )
                .await
        };
        match published {
            Ok(response) => Ok(BlobInfo {
                size: state.written,
                etag: header_text(response.headers(), "etag"),
                last_modified: now_unix(),
                content_type: self.options.content_type.clone(),
                sha256: Some(sha256),
                metadata: self.options.metadata.clone(),
            }),
            Err(error) => self.resolve_conflict(error, ambiguous, &sha256).await,
        }
    }
}
