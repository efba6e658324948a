//! The memory store: blobs in process memory, gone at exit. For tests, demos and
//! short-lived CI caches. With a byte budget, publishing evicts the least
//! recently used blobs first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::sink::SharedSink;
use super::*;

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Ordered so that `list` pages through keys in order.
    blobs: RwLock<BTreeMap<String, (Bytes, BlobInfo)>>,
    blocks: Mutex<HashMap<(String, String), Bytes>>,
    /// Most bytes of blob content kept; none for no limit.
    max_size: Option<u64>,
    /// When each blob was last served or written, in ticks of `clock`.
    recency: Mutex<HashMap<String, u64>>,
    clock: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A memory store that keeps at most `max_size` bytes of blob content.
    pub fn bounded(max_size: u64) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                max_size: Some(max_size),
                ..Inner::default()
            }),
        }
    }

    fn used(&self, key: &str) {
        if self.inner.max_size.is_some() {
            let tick = self
                .inner
                .clock
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner
                .recency
                .lock()
                .unwrap()
                .insert(key.to_string(), tick);
        }
    }

    /// Evicts least recently used blobs (never `keep`) until the content fits.
    fn evict(&self, blobs: &mut BTreeMap<String, (Bytes, BlobInfo)>, keep: &str) {
        let Some(max) = self.inner.max_size else {
            return;
        };
        let mut total: u64 = blobs.values().map(|(data, _)| data.len() as u64).sum();
        let mut recency = self.inner.recency.lock().unwrap();
        while total > max {
            // A blob with no recency (a delete raced its publish) goes first.
            let victim = blobs
                .keys()
                .filter(|key| key.as_str() != keep)
                .min_by_key(|key| recency.get(key.as_str()).copied().unwrap_or(0))
                .cloned();
            let Some(victim) = victim else { break };
            recency.remove(&victim);
            if let Some((data, _)) = blobs.remove(&victim) {
                total -= data.len() as u64;
            }
        }
    }

    fn publish(
        &self,
        key: &str,
        content: Vec<u8>,
        sha256: String,
        options: &WriteOptions,
    ) -> Result<BlobInfo> {
        verify(options, content.len() as u64, &sha256)?;
        let info = BlobInfo {
            size: content.len() as u64,
            etag: etag_for(&sha256),
            last_modified: now_unix(),
            content_type: options.content_type.clone(),
            sha256: Some(sha256),
            metadata: options.metadata.clone(),
        };
        let mut blobs = self.inner.blobs.write().unwrap();
        let current = blobs.get(key);
        if options.mode == WriteMode::CreateOnly && current.is_some() {
            return Err(Error::AlreadyExists);
        }
        if let Some(expected) = &options.if_match {
            if current.is_none_or(|(_, info)| info.etag != *expected) {
                return Err(Error::PreconditionFailed);
            }
        }
        if self
            .inner
            .max_size
            .is_some_and(|max| content.len() as u64 > max)
        {
            return Err(Error::Full(
                "the blob is larger than the memory store's budget".into(),
            ));
        }
        blobs.insert(key.to_string(), (Bytes::from(content), info.clone()));
        self.used(key);
        self.evict(&mut blobs, key);
        Ok(info)
    }
}

#[async_trait]
impl Backend for MemoryStore {
    fn status(&self) -> StoreStatus {
        let blobs = self.inner.blobs.read().unwrap();
        StoreStatus {
            kind: "memory".into(),
            location: "process memory".into(),
            blob_count: Some(blobs.len() as u64),
            total_bytes: Some(blobs.values().map(|(_, info)| info.size).sum()),
        }
    }

    async fn head(&self, key: &str) -> Result<BlobInfo> {
        check_key(key)?;
        let info = self
            .inner
            .blobs
            .read()
            .unwrap()
            .get(key)
            .map(|(_, info)| info.clone())
            .ok_or(Error::NotFound)?;
        self.used(key);
        Ok(info)
    }

    async fn open(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<(BlobInfo, DynInputStream)> {
        check_key(key)?;
        let (data, info) = self
            .inner
            .blobs
            .read()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or(Error::NotFound)?;
        self.used(key);
        let (start, end) = resolve_range(range, info.size)?;
        let slice = data.slice(start as usize..end as usize);
        Ok((info, Box::new(BytesInputStream::new(slice))))
    }

    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>> {
        check_key(key)?;
        blobcache_store_rules::check_create(options.staged_under.as_deref())
            .map_err(Error::Invalid)?;
        Ok(Box::new(MemoryWriter::new(
            self.clone(),
            Target::Blob(key.to_string()),
            options,
        )))
    }

    async fn stage_block(
        &self,
        key: &str,
        block_id: &str,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>> {
        check_key(key)?;
        check_block_id(block_id)?;
        let options = block_options(expected_size);
        let target = Target::Block(key.to_string(), block_id.to_string());
        Ok(Box::new(MemoryWriter::new(self.clone(), target, options)))
    }

    async fn list_blocks(&self, key: &str) -> Result<Vec<StagedBlock>> {
        check_key(key)?;
        let blocks = self.inner.blocks.lock().unwrap();
        let mut staged: Vec<StagedBlock> = blocks
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, id), content)| StagedBlock {
                id: id.clone(),
                size: content.len() as u64,
            })
            .collect();
        staged.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(staged)
    }

    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo> {
        check_key(key)?;
        let staging = blobcache_store_rules::staging_key(key, options.staged_under.as_deref())
            .map_err(Error::Invalid)?
            .to_string();
        // Cheap handles under the lock; the copy and the hash outside it, so
        // a large commit does not stall every other upload.
        let parts: Vec<Bytes> = {
            let blocks = self.inner.blocks.lock().unwrap();
            block_ids
                .iter()
                .map(|id| {
                    blocks
                        .get(&(staging.clone(), id.clone()))
                        .cloned()
                        .ok_or_else(|| Error::Invalid(format!("block {id:?} is not staged")))
                })
                .collect::<Result<_>>()?
        };
        let mut sink = Sink::new(Vec::new(), options.max_size);
        for part in &parts {
            sink.write(part)?;
        }
        let written = sink.finish()?;
        let info = self.publish(key, written.writer, written.sha256, &options)?;
        self.inner
            .blocks
            .lock()
            .unwrap()
            .retain(|(k, _), _| *k != staging);
        Ok(info)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.inner
            .blobs
            .write()
            .unwrap()
            .remove(key)
            .map(|_| ())
            .ok_or(Error::NotFound)?;
        self.inner.recency.lock().unwrap().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<ListPage> {
        let limit = limit.clamp(1, 10_000) as usize;
        let blobs = self.inner.blobs.read().unwrap();
        let start = cursor.unwrap_or_default();
        let mut entries = Vec::new();
        for (key, (_, info)) in blobs.range(start.clone()..) {
            if key == &start {
                continue;
            }
            if !key.starts_with(prefix) {
                if key.as_str() > prefix && !entries.is_empty() {
                    break;
                }
                continue;
            }
            entries.push(ListEntry {
                key: key.clone(),
                info: info.clone(),
            });
            if entries.len() == limit {
                let next = Some(key.clone());
                return Ok(ListPage {
                    entries,
                    next_cursor: next,
                });
            }
        }
        Ok(ListPage {
            entries,
            next_cursor: None,
        })
    }

    async fn presign(&self, _key: &str, _access: Access, _ttl: u32) -> Result<Option<String>> {
        Ok(None)
    }
}

enum Target {
    Blob(String),
    Block(String, String),
}

struct MemoryWriter {
    store: MemoryStore,
    target: Target,
    options: WriteOptions,
    sink: SharedSink<Vec<u8>>,
    body_taken: bool,
}

impl MemoryWriter {
    fn new(store: MemoryStore, target: Target, options: WriteOptions) -> Self {
        let sink = Arc::new(Mutex::new(Some(Sink::new(Vec::new(), options.max_size))));
        MemoryWriter {
            store,
            target,
            options,
            sink,
            body_taken: false,
        }
    }
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    fn body(&mut self) -> Result<DynOutputStream> {
        take_body_once(&mut self.body_taken)?;
        Ok(Box::new(SinkStream::new(self.sink.clone())))
    }

    async fn finish(self: Box<Self>) -> Result<BlobInfo> {
        let sink = self
            .sink
            .lock()
            .unwrap()
            .take()
            .ok_or(Error::Invalid("writer already finished".into()))?;
        let written = sink.finish()?;
        match self.target {
            Target::Blob(key) => {
                self.store
                    .publish(&key, written.writer, written.sha256, &self.options)
            }
            Target::Block(key, id) => {
                verify(&self.options, written.size, &written.sha256)?;
                let info = block_info(written.size, written.sha256);
                self.store
                    .inner
                    .blocks
                    .lock()
                    .unwrap()
                    .insert((key, id), Bytes::from(written.writer));
                Ok(info)
            }
        }
    }
}
