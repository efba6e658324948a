//! A [`Backend`] that counts what passes through it: call latency by operation,
//! hits and misses, and errors by kind. [`crate::Runtime`] wraps every store in it,
//! so each backend is measured the same way.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::{
    Access, Backend, BlobInfo, BlobWriter, ByteRange, Error, ListPage, Result, SharedBackend,
    StagedBlock, StoreStatus, WriteOptions,
};
use crate::metrics::Metrics;

pub struct Metered {
    inner: SharedBackend,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn wrap(inner: SharedBackend, metrics: Arc<Metrics>) -> SharedBackend {
        Arc::new(Metered { inner, metrics })
    }

    /// Records one call of `operation` that started at `start`.
    fn record<T>(&self, operation: &'static str, start: Instant, result: &Result<T>) {
        self.metrics.store_call(operation, start.elapsed());
        if let Err(error) = result {
            if let Some(kind) = error_kind(error) {
                self.metrics.error(kind);
            }
        }
    }

    fn lookup<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => self.metrics.lookup(true),
            Err(Error::NotFound) => self.metrics.lookup(false),
            Err(_) => {}
        }
    }
}

/// The metric name of a store error; none for answers that are not failures
/// (a miss, a lost race on a create-only write, a condition that did not hold).
fn error_kind(error: &Error) -> Option<&'static str> {
    match error {
        Error::NotFound | Error::AlreadyExists | Error::PreconditionFailed => None,
        Error::Invalid(_) => Some("store_invalid"),
        Error::TooLarge(_) => Some("store_too_large"),
        Error::Full(_) => Some("store_full"),
        Error::Unavailable(_) => Some("store_unavailable"),
        Error::Other(_) => Some("store_other"),
    }
}

#[async_trait]
impl Backend for Metered {
    fn status(&self) -> StoreStatus {
        self.inner.status()
    }

    async fn head(&self, key: &str) -> Result<BlobInfo> {
        let start = Instant::now();
        let result = self.inner.head(key).await;
        self.record("head", start, &result);
        self.lookup(&result);
        result
    }

    async fn open(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<(BlobInfo, DynInputStream)> {
        let start = Instant::now();
        let result = self.inner.open(key, range).await;
        self.record("open", start, &result);
        self.lookup(&result);
        result
    }

    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>> {
        let start = Instant::now();
        let result = self.inner.create(key, options).await;
        self.record("create", start, &result);
        result.map(|writer| self.writer(writer, "finish"))
    }

    async fn stage_block(
        &self,
        key: &str,
        block_id: &str,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>> {
        let start = Instant::now();
        let result = self.inner.stage_block(key, block_id, expected_size).await;
        self.record("stage_block", start, &result);
        result.map(|writer| self.writer(writer, "finish_block"))
    }

    async fn list_blocks(&self, key: &str) -> Result<Vec<StagedBlock>> {
        let start = Instant::now();
        let result = self.inner.list_blocks(key).await;
        self.record("list_blocks", start, &result);
        result
    }

    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo> {
        let start = Instant::now();
        let result = self.inner.commit_blocks(key, block_ids, options).await;
        self.record("commit_blocks", start, &result);
        result
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let start = Instant::now();
        let result = self.inner.delete(key).await;
        self.record("delete", start, &result);
        result
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<ListPage> {
        let start = Instant::now();
        let result = self.inner.list(prefix, cursor, limit).await;
        self.record("list", start, &result);
        result
    }

    async fn presign(&self, key: &str, access: Access, ttl_seconds: u32) -> Result<Option<String>> {
        let start = Instant::now();
        let result = self.inner.presign(key, access, ttl_seconds).await;
        self.record("presign", start, &result);
        result
    }
}

impl Metered {
    fn writer(&self, inner: Box<dyn BlobWriter>, operation: &'static str) -> Box<dyn BlobWriter> {
        Box::new(MeteredWriter {
            inner,
            metrics: self.metrics.clone(),
            operation,
        })
    }
}

/// Times `finish`: the fsync and rename, or the Azure commit.
struct MeteredWriter {
    inner: Box<dyn BlobWriter>,
    metrics: Arc<Metrics>,
    operation: &'static str,
}

#[async_trait]
impl BlobWriter for MeteredWriter {
    fn body(&mut self) -> Result<DynOutputStream> {
        self.inner.body()
    }

    async fn finish(self: Box<Self>) -> Result<BlobInfo> {
        let start = Instant::now();
        let result = self.inner.finish().await;
        self.metrics.store_call(self.operation, start.elapsed());
        if let Some(kind) = result.as_ref().err().and_then(error_kind) {
            self.metrics.error(kind);
        }
        result
    }
}
