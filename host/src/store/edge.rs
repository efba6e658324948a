//! The edge tier: a local directory store (bounded by `--max-size`) in front of
//! a remote store (Azure), for a cache that runs near the builders while its
//! bucket is far away. bazel-remote's disk cache with a proxy backend works
//! the same way.
//!
//! - Reads are served locally when present. On a miss the remote's stream is
//!   handed to the client and copied into a local upload as it passes (never
//!   buffered whole); the copy is published when the stream ends and its
//!   sha256 matches the remote's, and discarded otherwise.
//! - Writes go to both at once and are acknowledged only once the remote has
//!   published them; the local copy is kept when that succeeds, dropped when
//!   it does not. A write that reaches Azure is never lost by the edge.
//! - Staged uploads, listings, deletes and signed URLs go to the remote
//!   (deletes to both).
//!
//! Local hits never touch the remote, so they answer at local speed however
//! slow or broken Azure is; misses then fail with the remote's error. Local
//! copies are not revalidated: an entry another instance overwrote in Azure
//! may be served from the edge until it is evicted (content-addressed keys,
//! most of a build cache, cannot go stale). Within one edge, writes, commits
//! and deletes of a key move its epoch; a fill that started before is
//! dropped, and fills never replace a local copy (create-only), so a slow
//! fill cannot bring back an older version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

use super::*;

pub struct EdgeStore {
    local: SharedBackend,
    remote: SharedBackend,
    epochs: Arc<Epochs>,
}

impl EdgeStore {
    pub fn new(local: SharedBackend, remote: SharedBackend) -> EdgeStore {
        EdgeStore {
            local,
            remote,
            epochs: Arc::new(Epochs::new()),
        }
    }
}

/// A counter per key (hashed into a fixed table, so memory stays bounded; a
/// collision only drops a fill that could have been kept), moved by every
/// write, commit and delete.
struct Epochs {
    slots: Vec<AtomicU64>,
    clock: AtomicU64,
}

impl Epochs {
    const SLOTS: usize = 4096;

    fn new() -> Epochs {
        Epochs {
            slots: (0..Self::SLOTS).map(|_| AtomicU64::new(0)).collect(),
            clock: AtomicU64::new(0),
        }
    }

    fn slot(&self, key: &str) -> &AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.slots[hasher.finish() as usize % Self::SLOTS]
    }

    fn current(&self, key: &str) -> u64 {
        self.slot(key).load(Ordering::Acquire)
    }

    fn bump(&self, key: &str) -> u64 {
        let epoch = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        self.slot(key).store(epoch, Ordering::Release);
        epoch
    }
}

/// How a blob the remote describes is copied to the edge: the same
/// description, verified against the remote's digest, never replacing a copy
/// a write put there meanwhile.
fn fill_options(info: &BlobInfo) -> WriteOptions {
    WriteOptions {
        staged_under: None,
        mode: WriteMode::CreateOnly,
        content_type: info.content_type.clone(),
        metadata: info.metadata.clone(),
        expected_size: Some(info.size),
        expected_sha256: info.sha256.clone(),
        max_size: None,
        if_match: None,
    }
}

#[async_trait]
impl Backend for EdgeStore {
    fn status(&self) -> StoreStatus {
        let local = self.local.status();
        let remote = self.remote.status();
        StoreStatus {
            kind: "edge".into(),
            location: format!(
                "{} in front of {} {}",
                local.location, remote.kind, remote.location
            ),
            blob_count: local.blob_count,
            total_bytes: local.total_bytes,
        }
    }

    async fn head(&self, key: &str) -> Result<BlobInfo> {
        match self.local.head(key).await {
            Ok(info) => Ok(info),
            Err(_) => self.remote.head(key).await,
        }
    }

    async fn open(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<(BlobInfo, DynInputStream)> {
        if let Ok(found) = self.local.open(key, range).await {
            return Ok(found);
        }
        let epoch = self.epochs.current(key);
        // A part of a blob is passed through; only whole reads fill the edge.
        let (info, stream) = self.remote.open(key, range).await?;
        if range.is_some() || info.sha256.is_none() {
            return Ok((info, stream));
        }
        let fill = match self.local.create(key, fill_options(&info)).await {
            Ok(mut writer) => writer.body().ok().map(|body| (writer, body)),
            Err(_) => None,
        };
        let Some((writer, body)) = fill else {
            return Ok((info, stream));
        };
        let tee = FillingStream {
            remote: stream,
            fill: Some((writer, body)),
            remaining: info.size,
            key: key.to_string(),
            epoch,
            epochs: self.epochs.clone(),
        };
        Ok((info, Box::new(tee)))
    }

    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>> {
        let remote = self.remote.create(key, options.clone()).await?;
        let local_options = WriteOptions {
            mode: WriteMode::Overwrite,
            if_match: None,
            ..options
        };
        let local = self.local.create(key, local_options).await.ok();
        Ok(Box::new(WriteThrough {
            remote,
            local,
            local_body: None,
            key: key.to_string(),
            edge: self.local.clone(),
            epochs: self.epochs.clone(),
        }))
    }

    async fn stage_block(
        &self,
        key: &str,
        block_id: &str,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>> {
        self.remote.stage_block(key, block_id, expected_size).await
    }

    async fn list_blocks(&self, key: &str) -> Result<Vec<StagedBlock>> {
        self.remote.list_blocks(key).await
    }

    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo> {
        let info = self.remote.commit_blocks(key, block_ids, options).await?;
        // Whatever the edge held (or is filling) under this key is out of date.
        self.epochs.bump(key);
        let _ = self.local.delete(key).await;
        Ok(info)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.epochs.bump(key);
        let remote = self.remote.delete(key).await;
        let local = self.local.delete(key).await;
        match (remote, local) {
            (Ok(()), _) | (Err(Error::NotFound), Ok(())) => Ok(()),
            (Err(error), _) => Err(error),
        }
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<ListPage> {
        self.remote.list(prefix, cursor, limit).await
    }

    async fn presign(&self, key: &str, access: Access, ttl_seconds: u32) -> Result<Option<String>> {
        self.remote.presign(key, access, ttl_seconds).await
    }
}

/// The remote's content on its way to the client, copied into a local upload
/// as it passes. The local store's stream takes whole chunks at once (a file
/// write); if it ever does not, the copy is abandoned, never the client's read.
struct FillingStream {
    remote: DynInputStream,
    fill: Option<(Box<dyn BlobWriter>, DynOutputStream)>,
    /// Bytes still to come: readers that know the size stop at the last byte
    /// without waiting for the end of the stream, so the copy is published then.
    remaining: u64,
    key: String,
    /// The key's epoch when the read began: a write since makes the copy stale.
    epoch: u64,
    epochs: Arc<Epochs>,
}

impl FillingStream {
    fn copy(&mut self, bytes: &Bytes) {
        self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        let Some((_, body)) = &mut self.fill else {
            return;
        };
        let mut rest = bytes.clone();
        while !rest.is_empty() {
            match body.check_write() {
                Ok(0) | Err(_) => {
                    self.fill = None;
                    return;
                }
                Ok(permit) => {
                    let part = rest.split_to(permit.min(rest.len()));
                    if body.write(part).is_err() {
                        self.fill = None;
                        return;
                    }
                }
            }
        }
    }

    /// The remote stream ended: publish the copy (verified against the
    /// remote's digest) without holding up the client.
    fn publish(&mut self) {
        if let Some((writer, body)) = self.fill.take() {
            drop(body);
            if self.epochs.current(&self.key) != self.epoch {
                return;
            }
            tokio::spawn(async move {
                match writer.finish().await {
                    Ok(_) | Err(Error::AlreadyExists) => {}
                    // The error text may name the digest, which is a key: not logged.
                    Err(_) => tracing::warn!("edge: the local copy of a remote blob failed"),
                }
            });
        }
    }
}

impl InputStream for FillingStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.remote.read(size) {
            Ok(bytes) => {
                self.copy(&bytes);
                if self.remaining == 0 {
                    self.publish();
                }
                Ok(bytes)
            }
            Err(StreamError::Closed) => {
                self.publish();
                Err(StreamError::Closed)
            }
            Err(error) => {
                // A failed remote read: the partial copy is discarded.
                self.fill = None;
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Pollable for FillingStream {
    async fn ready(&mut self) {
        self.remote.ready().await
    }
}

/// An upload written to the remote and the edge at once; acknowledged when
/// the remote has published it.
struct WriteThrough {
    remote: Box<dyn BlobWriter>,
    local: Option<Box<dyn BlobWriter>>,
    key: String,
    edge: SharedBackend,
    epochs: Arc<Epochs>,
    /// The edge's body stream, shared with [`BothStreams`]: none once the edge
    /// fell behind, and then its copy is incomplete and must not be kept.
    local_body: Option<Arc<Mutex<Option<DynOutputStream>>>>,
}

#[async_trait]
impl BlobWriter for WriteThrough {
    fn body(&mut self) -> Result<DynOutputStream> {
        if self.local_body.is_some() {
            return Err(Error::Invalid("the writer's body was already taken".into()));
        }
        let remote = self.remote.body()?;
        let local = self.local.as_mut().and_then(|local| local.body().ok());
        let local = Arc::new(Mutex::new(local));
        self.local_body = Some(local.clone());
        Ok(Box::new(BothStreams { remote, local }))
    }

    async fn finish(self: Box<Self>) -> Result<BlobInfo> {
        let WriteThrough {
            remote,
            local,
            local_body,
            key,
            edge,
            epochs,
        } = *self;
        let info = remote.finish().await?;
        let mine = epochs.bump(&key);
        let complete = local_body.is_some_and(|body| body.lock().unwrap().take().is_some());
        if let (Some(local), true) = (local, complete) {
            if local.finish().await.is_ok() && epochs.current(&key) != mine {
                // Another write of the key finished meanwhile: which copy is
                // newer is unknown, so the edge keeps none (a later read refills).
                let _ = edge.delete(&key).await;
            }
        }
        Ok(info)
    }
}

/// Writes each chunk to the remote's stream and, while it keeps up, the
/// edge's. The remote decides the pace and the outcome.
struct BothStreams {
    remote: DynOutputStream,
    local: Arc<Mutex<Option<DynOutputStream>>>,
}

impl OutputStream for BothStreams {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut local = self.local.lock().unwrap();
        if let Some(stream) = local.as_mut() {
            let fits = stream
                .check_write()
                .is_ok_and(|permit| permit >= bytes.len());
            if !fits || stream.write(bytes.clone()).is_err() {
                // The edge fell behind or failed: it keeps no copy.
                *local = None;
            }
        }
        drop(local);
        self.remote.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        if let Some(stream) = self.local.lock().unwrap().as_mut() {
            let _ = stream.flush();
        }
        self.remote.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.remote.check_write()
    }
}

#[async_trait]
impl Pollable for BothStreams {
    async fn ready(&mut self) {
        self.remote.ready().await
    }
}
