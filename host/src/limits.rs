//! Per-request limits on the guest: memory, and a time limit on guest execution
//! that does not move blob bytes.
//!
//! A transfer of many gigabytes from a slow client may legitimately take hours,
//! so a wall-clock limit on the whole request would be wrong. What must never
//! happen is a guest spinning without doing I/O. Every chunk that crosses a store
//! stream counts as progress; the epoch callback traps a guest that has run past
//! its deadline with no progress since the last check.

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

/// Bytes moved through store streams during one request.
#[derive(Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
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
