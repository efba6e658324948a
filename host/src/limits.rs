//! Per-request limits on the guest: memory, and a time limit on requests that do
//! not move data.
//!
//! A transfer of many gigabytes from a slow client may legitimately take hours,
//! so a wall-clock limit on the whole request would be wrong. What must never
//! happen is a request that holds its slot without moving data: a guest spinning
//! in wasm code, or a client that stalls mid-body. Every chunk that crosses a store
//! stream counts as progress, and time spent inside a store call (an fsync, an
//! Azure commit) is not held against the request. Two checks use this: the epoch
//! callback traps a guest that runs wasm past its deadline with no progress, and
//! [`watchdog`] stops a request that waits with no progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamResult,
};

/// How often the engine's epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(50);

/// Number of epoch ticks in `limit` (at least one).
pub fn ticks(limit: Duration) -> u64 {
    (limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Bytes moved through store streams during one request, and store calls running.
#[derive(Clone, Default)]
pub struct Progress(Arc<Counters>);

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    store_calls: AtomicU64,
}

impl Progress {
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Marks a store call as running until the guard drops.
    pub fn store_call(&self) -> StoreCall {
        self.0.store_calls.fetch_add(1, Ordering::Relaxed);
        StoreCall(self.clone())
    }

    fn in_store_call(&self) -> bool {
        self.0.store_calls.load(Ordering::Relaxed) > 0
    }

    pub fn wrap_input(&self, inner: DynInputStream) -> DynInputStream {
        Box::new(Counted {
            inner,
            progress: self.clone(),
        })
    }

    pub fn wrap_output(&self, inner: DynOutputStream) -> DynOutputStream {
        Box::new(Counted {
            inner,
            progress: self.clone(),
        })
    }
}

pub struct StoreCall(Progress);

impl Drop for StoreCall {
    fn drop(&mut self) {
        self.0 .0.store_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `request` until it ends, or until a whole `limit` passes in which it moved
/// no data and made no store call.
pub async fn watchdog<F>(request: F, progress: Progress, limit: Duration) -> wasmtime::Result<()>
where
    F: std::future::Future<Output = wasmtime::Result<()>>,
{
    tokio::pin!(request);
    let mut seen = progress.bytes();
    loop {
        tokio::select! {
            result = &mut request => return result,
            () = tokio::time::sleep(limit) => {
                let now = progress.bytes();
                if now == seen && !progress.in_store_call() {
                    wasmtime::bail!("the request moved no data for {limit:?} and was stopped");
                }
                seen = now;
            }
        }
    }
}

struct Counted<S> {
    inner: S,
    progress: Progress,
}

impl InputStream for Counted<DynInputStream> {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let bytes = self.inner.read(size)?;
        self.progress.add(bytes.len());
        Ok(bytes)
    }
}

impl OutputStream for Counted<DynOutputStream> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let n = bytes.len();
        self.inner.write(bytes)?;
        self.progress.add(n);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }
}

#[async_trait::async_trait]
impl<S: Pollable + Send> Pollable for Counted<S> {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}
