//! Uploads to Azure: content is cut into blocks as it arrives and each full block
//! goes out as Put Block (a few in flight, so memory per upload stays bounded).
//! `finish` checks size and sha256 of everything written before anything becomes
//! visible, then commits with Put Block List (or, for one block, a single Put Blob).
//!
//! The last block is always held back until `finish`, so that a staged block's
//! final part can be marked as such: `commit-blocks` then takes only complete
//! stagings, never leftovers of a failed or superseded one.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use blobcache_azure::layout::BlockIds;
use blobcache_azure::store::{self as azure_store, Finish, Finished, Options};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::{info, AzureStore};
use crate::store::*;

/// Block ids for a single-request upload.
pub(super) fn upload_ids() -> Result<BlockIds> {
    Ok(BlockIds::upload(random_bytes()?))
}

/// Block ids for one staging of `block_id`.
pub(super) fn staged_ids(block_id: &str) -> Result<BlockIds> {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(BlockIds::staged(block_id, millis, random_bytes()?))
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut random = [0u8; N];
    getrandom::fill(&mut random)
        .map_err(|e| Error::Other(format!("no randomness for block ids: {e}")))?;
    Ok(random)
}

/// An upload in progress.
pub(super) struct AzureWriter {
    store: AzureStore,
    blob: String,
    options: Options,
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
        options: Options,
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
        self.put_block(&id, block).await?;
        state.sent.push(id);
        Ok(())
    }

    async fn put_block(&self, id: &str, block: Bytes) -> Result<()> {
        let length = block.len() as u64;
        let container = &self.store.inner.container;
        self.store
            .call(
                |now| container.put_block(&self.blob, id, length, now),
                Some(block),
            )
            .await?;
        Ok(())
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
        // Verified before anything becomes visible.
        let hasher = std::mem::take(&mut state.hasher);
        let finished = azure_store::finish(
            &self.options,
            &self.ids,
            state.written,
            hasher,
            state.sent.len(),
        )?;
        let Finished {
            plan,
            sha256,
            properties,
        } = finished;
        let container = &self.store.inner.container;
        let (published, maybe_applied) = match plan {
            Finish::StageLast => {
                // The caller's id rides on the name parts; the marked last part
                // then completes the staging.
                for name in self.ids.name_parts() {
                    self.put_block(&name, Bytes::from_static(b"n")).await?;
                }
                self.send_last(&mut state, true).await?;
                return Ok(block_info(state.written, sha256));
            }
            Finish::PutBlob => {
                let content = state.buffer.split().freeze();
                let length = content.len() as u64;
                self.store
                    .send(
                        |now| container.put_blob(&self.blob, length, &properties, now),
                        Some(content),
                    )
                    .await
            }
            Finish::PutBlockList => {
                self.send_last(&mut state, true).await?;
                let ids = state.sent.clone();
                self.store
                    .send(
                        |now| container.put_block_list(&self.blob, &ids, &properties, now),
                        None,
                    )
                    .await
            }
        };
        match published {
            Ok(response) => Ok(info(azure_store::published(
                response.headers(),
                state.written,
                &self.options,
                Some(&sha256),
                now_unix(),
            ))),
            // A refused publish may be ours after all: the blob's digest decides.
            Err(error) => {
                let refused = azure_store::refused(error, maybe_applied)?;
                let current = self.store.head_stored(&self.blob).await.ok();
                Ok(info(refused.decide(current, &sha256)?))
            }
        }
    }
}
