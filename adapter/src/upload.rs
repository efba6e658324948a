//! Uploads: content arrives through `writer.write`, is hashed and cut into blocks,
//! and each full block goes out as Put Block while the next one fills: its bytes
//! are handed to the host as its stream takes them, between chunks, so sending
//! overlaps with receiving and hashing. At most `parallel_blocks` are under way,
//! so memory per upload stays about three blocks.
//! `finish` checks size and sha256 of everything written before anything becomes
//! visible, then commits with Put Block List (or, for one block, a single Put Blob).
//!
//! As in the native host, the last block is held back until `finish`, so a staged
//! block's final part can be marked as such (see `azure::layout`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use blobcache_azure::layout::BlockIds;
use blobcache_azure::store::{self as azure_store, Finish, Finished, Options};
use sha2::{Digest, Sha256};
use wasip2::io::streams::OutputStream;

use crate::bindings::exports::blobcache::store::types::GuestWriter;
use crate::store::{blob_info, now_unix, AzureStore};
use crate::transport::{Failure, Sending};
use crate::*;

/// The `writer` resource.
pub struct UploadWriter {
    upload: RefCell<Upload>,
}

struct Upload {
    azure: Rc<AzureStore>,
    blob: String,
    options: Options,
    ids: BlockIds,
    buffer: Vec<u8>,
    hasher: Sha256,
    written: u64,
    /// Azure ids of the blocks sent so far, in order.
    sent: Vec<String>,
    /// Blocks whose answers are still to come, oldest first; each keeps its
    /// bytes for a retry.
    in_flight: VecDeque<PendingBlock>,
    /// The first failure; every later call reports it.
    failure: Option<Error>,
}

struct PendingBlock {
    id: String,
    content: Vec<u8>,
    /// The attempt under way, its body written as the stream takes it; or why it
    /// failed (then the block is sent again when it is completed).
    sending: Result<Sending, Failure>,
}

impl UploadWriter {
    pub fn new(
        azure: Rc<AzureStore>,
        blob: String,
        options: Options,
        ids: BlockIds,
    ) -> UploadWriter {
        let capacity = azure.block_size;
        UploadWriter {
            upload: RefCell::new(Upload {
                azure,
                blob,
                options,
                ids,
                buffer: Vec::with_capacity(capacity),
                hasher: Sha256::new(),
                written: 0,
                sent: Vec::new(),
                in_flight: VecDeque::new(),
                failure: None,
            }),
        }
    }
}

impl Upload {
    fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let total = self.written + chunk.len() as u64;
        if let Some(max) = self.options.max_size.filter(|max| total > *max) {
            return Err(self.fail(Error::TooLarge(format!(
                "blob is over the {max}-byte limit"
            ))));
        }
        self.hasher.update(chunk);
        self.written = total;
        let block_size = self.azure.block_size;
        let mut rest = chunk;
        while !rest.is_empty() {
            // A full block goes out only once more bytes arrive: the last block
            // stays held back for `finish`.
            if self.buffer.len() == block_size {
                let block = std::mem::replace(&mut self.buffer, Vec::with_capacity(block_size));
                if let Err(e) = self.send_block(block) {
                    return Err(self.fail(e));
                }
            }
            let take = rest.len().min(block_size - self.buffer.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        self.pump();
        Ok(())
    }

    fn fail(&mut self, error: Error) -> Error {
        self.failure.get_or_insert(error).clone()
    }

    /// Moves bytes of the blocks under way into their requests, as far as their
    /// streams take them without waiting: the host sends them while the caller
    /// reads (and this component hashes) the next chunk.
    fn pump(&mut self) {
        for block in &mut self.in_flight {
            if let Ok(sending) = &mut block.sending {
                if let Err(why) = sending.pump(&block.content) {
                    block.sending = Err(Failure::Transient(why));
                }
            }
        }
    }

    /// Starts a Put Block of a full (not last) block, first completing the
    /// oldest when enough are under way.
    fn send_block(&mut self, content: Vec<u8>) -> Result<(), Error> {
        while self.in_flight.len() >= self.azure.parallel_blocks {
            self.complete_oldest()?;
        }
        let id = self.ids.id(self.sent.len(), false);
        self.sent.push(id.clone());
        let (container, length) = (&self.azure.container, content.len() as u64);
        let operation = container.put_block(&self.blob, &id, length, std::time::SystemTime::now());
        let sending = self.azure.transport.begin(operation);
        self.in_flight.push_back(PendingBlock {
            id,
            content,
            sending,
        });
        self.pump();
        Ok(())
    }

    /// Finishes writing the oldest Put Block and waits for its answer, retrying
    /// it if it failed.
    fn complete_oldest(&mut self) -> Result<(), Error> {
        let Some(block) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (container, blob) = (&self.azure.container, &self.blob);
        let length = block.content.len() as u64;
        let transport = &self.azure.transport;
        let sent = block
            .sending
            .and_then(|sending| transport.send_rest(sending, &block.content));
        transport
            .complete(
                sent,
                |now| container.put_block(blob, &block.id, length, now),
                Some(&block.content),
            )
            .map(drop)
            .map_err(Error::from)
    }

    /// Sends the held-back last block and waits for it.
    fn send_last(&mut self) -> Result<(), Error> {
        let id = self.ids.id(self.sent.len(), true);
        let content = std::mem::take(&mut self.buffer);
        let (container, blob, length) = (&self.azure.container, &self.blob, content.len() as u64);
        self.azure.transport.call(
            |now| container.put_block(blob, &id, length, now),
            Some(&content),
        )?;
        self.sent.push(id);
        Ok(())
    }

    fn finish(mut self) -> Result<BlobInfo, Error> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        while !self.in_flight.is_empty() {
            self.complete_oldest()?;
        }
        // Verified before anything becomes visible.
        let hasher = std::mem::take(&mut self.hasher);
        let Finished {
            plan,
            sha256,
            properties,
        } = azure_store::finish(
            &self.options,
            &self.ids,
            self.written,
            hasher,
            self.sent.len(),
        )?;
        let azure = self.azure.clone();
        let container = &azure.container;
        let mut maybe_applied = false;
        let published = match plan {
            Finish::StageLast => {
                // The caller's id rides on the name parts; the marked last part
                // then completes the staging.
                for name in self.ids.name_parts() {
                    self.azure.transport.call(
                        |now| container.put_block(&self.blob, &name, 1, now),
                        Some(b"n"),
                    )?;
                }
                self.send_last()?;
                let staged = azure_store::staged_block(self.written, &sha256, now_unix());
                return Ok(blob_info(staged));
            }
            Finish::PutBlob => {
                let length = self.buffer.len() as u64;
                self.azure.transport.call_noting_retries(
                    |now| container.put_blob(&self.blob, length, &properties, now),
                    Some(&self.buffer),
                    &mut maybe_applied,
                )
            }
            Finish::PutBlockList => {
                self.send_last()?;
                self.azure.transport.call_noting_retries(
                    |now| container.put_block_list(&self.blob, &self.sent, &properties, now),
                    None,
                    &mut maybe_applied,
                )
            }
        };
        let written = self.written;
        match published {
            Ok(answer) => Ok(blob_info(azure_store::published(
                &answer.headers,
                written,
                &self.options,
                Some(&sha256),
                now_unix(),
            ))),
            // A refused publish may be ours after all: the blob's digest decides.
            Err(error) => {
                let refused = azure_store::refused(error, maybe_applied)?;
                let current = azure
                    .call(|now| container.get_properties(&self.blob, now))
                    .ok()
                    .and_then(|answer| azure_store::stored(&answer.headers).ok());
                Ok(blob_info(refused.decide(current, &sha256)?))
            }
        }
    }
}

impl GuestWriter for UploadWriter {
    fn body(&self) -> Result<Option<OutputStream>, Error> {
        // A component cannot create a wasi:io stream: content comes through `write`.
        Ok(None)
    }

    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        self.upload.borrow_mut().write(&chunk)
    }

    fn finish(this: Writer) -> Result<BlobInfo, Error> {
        this.into_inner::<UploadWriter>()
            .upload
            .into_inner()
            .finish()
    }
}
