//! Per-request limits on the guest: memory, a time limit on requests that do
//! not move data, and a minimum transfer rate.
//!
//! A transfer of many gigabytes from a slow client may legitimately take hours,
//! so a wall-clock limit on the whole request would be wrong. What must never
//! happen is a request that holds its slot without moving data: a guest spinning
//! in wasm code, or a client that stalls mid-body. Every chunk that crosses a store
//! stream, and every body frame the client sends or takes, counts as progress;
//! time spent inside a store call (an fsync, an Azure commit) is not held against
//! the request. Two checks use this: the epoch callback traps a guest that runs
//! wasm past its deadline with no progress, and [`watchdog`] stops a request that
//! waits with no progress, or (after its first window) moves less than the
//! minimum rate: a client trickling a byte every few seconds would otherwise hold
//! a slot for as long as it likes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamResult,
};

/// How long a request runs before the watchdog starts watching it.
const WATCH_AFTER: Duration = Duration::from_millis(50);

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
    /// Body bytes the client sent or took (counted in frames).
    client: AtomicU64,
    store_calls: AtomicU64,
    /// Set while waiting on the store; the watchdog reads and clears it.
    store_waited: std::sync::atomic::AtomicBool,
    /// What the request's connection moved on its socket, when the server
    /// counts it: finer-grained than body frames, so a client reading a
    /// download slowly but steadily shows progress between frames.
    connection: Option<ConnectionBytes>,
}

/// Bytes a connection's client has sent, and taken, on its socket; the server
/// puts it in each request's extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnectionBytes(Arc<SocketCounters>);

#[derive(Debug, Default)]
struct SocketCounters {
    read: AtomicU64,
    written: AtomicU64,
    /// The socket, while open (else -1): its unsent bytes are not progress.
    fd: std::sync::atomic::AtomicI32,
}

impl ConnectionBytes {
    /// Bytes read from the client plus bytes it has acknowledged. Counting
    /// writes alone would be too coarse: the kernel takes megabytes into the
    /// send buffer at once, then wakes the writer only when a third of it is
    /// free again, which a slow client may take many seconds to drain.
    pub fn moved(&self) -> u64 {
        let counters = &self.0;
        let unsent = match counters.fd.load(Ordering::Acquire) {
            fd if fd < 0 => 0,
            fd => {
                let mut queued: libc::c_int = 0;
                // SAFETY: TIOCOUTQ writes one int; a stale descriptor fails harmlessly.
                match unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) } {
                    0 => queued.max(0) as u64,
                    _ => 0,
                }
            }
        };
        let written = counters.written.load(Ordering::Relaxed);
        counters.read.load(Ordering::Relaxed) + written.saturating_sub(unsent)
    }
}

impl Progress {
    /// Progress that also counts what the request's connection moves.
    pub fn on_connection(connection: Option<ConnectionBytes>) -> Progress {
        Progress(Arc::new(Counters {
            connection,
            ..Default::default()
        }))
    }

    pub fn bytes(&self) -> u64 {
        let socket = self.0.connection.as_ref().map_or(0, ConnectionBytes::moved);
        self.0.bytes.load(Ordering::Relaxed) + socket
    }

    fn add(&self, n: usize) {
        self.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Body bytes the client sent or took.
    pub fn add_client(&self, n: usize) {
        self.add(n);
        self.0.client.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// What the client has moved: on its socket where the server counts it,
    /// else in body frames. The minimum rate applies to this alone, each byte
    /// counted once.
    pub fn client_bytes(&self) -> u64 {
        match &self.0.connection {
            Some(connection) => connection.moved(),
            None => self.0.client.load(Ordering::Relaxed),
        }
    }

    /// Marks a store call as running until the guard drops.
    pub fn store_call(&self) -> StoreCall {
        self.0.store_calls.fetch_add(1, Ordering::Relaxed);
        StoreCall(self.clone())
    }

    fn in_store_call(&self) -> bool {
        self.0.store_calls.load(Ordering::Relaxed) > 0
    }

    fn mark_store_wait(&self) {
        self.0.store_waited.store(true, Ordering::Relaxed);
    }

    /// Whether the request waited on the store during the window now ending
    /// (or is waiting now); clears the mark.
    fn take_store_wait(&self) -> bool {
        let waited = self.0.store_waited.swap(false, Ordering::Relaxed);
        waited || self.in_store_call()
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
        self.0.mark_store_wait();
        self.0 .0.store_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `request` until it ends, or until a whole `window` passes in which it
/// made no store call and moved no data, or (after the first window, the grace
/// period) less than `min_rate` bytes per second.
pub async fn watchdog<F>(
    request: F,
    progress: Progress,
    window: Duration,
    min_rate: u64,
) -> wasmtime::Result<()>
where
    F: std::future::Future<Output = wasmtime::Result<()>>,
{
    tokio::pin!(request);
    // Most requests end within milliseconds: only longer ones pay for reading
    // the progress counters (a socket ioctl each), and their first window
    // starts this much later.
    tokio::select! {
        // The request first: a timer is registered only once it waits.
        biased;
        result = &mut request => return result,
        () = tokio::time::sleep(WATCH_AFTER) => {}
    }
    let mut seen = progress.bytes();
    let mut client_seen = progress.client_bytes();
    let mut grace = true;
    let least = (min_rate as f64 * window.as_secs_f64()) as u64;
    loop {
        tokio::select! {
            result = &mut request => return result,
            () = tokio::time::sleep(window) => {
                let now = progress.bytes();
                let moved = now.saturating_sub(seen);
                seen = seen.max(now);
                let client = progress.client_bytes();
                let client_moved = client.saturating_sub(client_seen);
                client_seen = client_seen.max(client);
                // Waiting on the store (a call, or a store stream that is not
                // ready) is not held against the request.
                if progress.take_store_wait() {
                    continue;
                }
                if moved == 0 {
                    wasmtime::bail!(Stopped::NoProgress(window));
                }
                if !std::mem::replace(&mut grace, false) && client_moved < least {
                    wasmtime::bail!(Stopped::TooSlow { moved: client_moved, window });
                }
            }
        }
    }
}

/// Why the watchdog stopped a request.
#[derive(Debug)]
pub enum Stopped {
    NoProgress(Duration),
    TooSlow { moved: u64, window: Duration },
}

impl Stopped {
    /// The metric name of the reason.
    pub fn kind(&self) -> &'static str {
        match self {
            Stopped::NoProgress(_) => "stalled",
            Stopped::TooSlow { .. } => "too_slow",
        }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::NoProgress(window) => {
                write!(f, "the request moved no data for {window:?} and was stopped")
            }
            Stopped::TooSlow { moved, window } => write!(
                f,
                "the request moved {moved} bytes in {window:?}, below the minimum transfer rate, and was stopped"
            ),
        }
    }
}

impl std::error::Error for Stopped {}

/// A wait on a store stream: counted as a store call while it lasts (also if
/// its future is dropped), and marked afterwards only if it was a real wait (a
/// local file is always ready).
struct StreamWait<'a> {
    progress: &'a Progress,
    started: std::time::Instant,
}

impl<'a> StreamWait<'a> {
    fn new(progress: &'a Progress) -> Self {
        progress.0.store_calls.fetch_add(1, Ordering::Relaxed);
        StreamWait {
            progress,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for StreamWait<'_> {
    fn drop(&mut self) {
        self.progress.0.store_calls.fetch_sub(1, Ordering::Relaxed);
        if self.started.elapsed() > std::time::Duration::from_millis(20) {
            self.progress.mark_store_wait();
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

/// Waiting for a store stream (an Azure upload or download that is slow) is
/// waiting on the store, as a store call is.
#[async_trait::async_trait]
impl<S: Pollable + Send> Pollable for Counted<S> {
    async fn ready(&mut self) {
        let _waiting = StreamWait::new(&self.progress);
        self.inner.ready().await;
    }
}

/// A connection's socket, counting the bytes read and written into a
/// [`ConnectionBytes`].
pub struct CountedIo<T> {
    inner: T,
    bytes: ConnectionBytes,
}

impl<T: std::os::fd::AsRawFd> CountedIo<T> {
    pub fn new(inner: T, bytes: ConnectionBytes) -> Self {
        bytes.0.fd.store(inner.as_raw_fd(), Ordering::Release);
        CountedIo { inner, bytes }
    }
}

impl<T> CountedIo<T> {
    fn count_read(&self, n: usize) {
        self.bytes.0.read.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn count_written(&self, n: usize) {
        self.bytes.0.written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl<T> Drop for CountedIo<T> {
    fn drop(&mut self) {
        self.bytes.0.fd.store(-1, Ordering::Release);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountedIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.count_read(buf.filled().len() - before);
        result
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountedIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = result {
            self.count_written(n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = result {
            self.count_written(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
