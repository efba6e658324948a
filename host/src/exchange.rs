//! One request and its response as the host sees them: bytes each way, the
//! protocol that answered, the status. Both bodies count their frames here (for
//! metrics, and as progress for the request's time limits), and when the last
//! body is gone the access log gets one line.
//!
//! The log line names no path, key, token or signature: paths hold cache keys
//! (and, for signed URLs, signatures), so only the protocol is logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::limits::Progress;
use crate::metrics::{Method, Metrics, RequestLabels};

/// The tracing target of access-log lines (`BLOBCACHE_LOG=blobcache::access=off`
/// silences them).
pub const ACCESS_LOG: &str = "blobcache::access";

pub struct Exchange {
    start: Instant,
    method: Method,
    peer: Option<SocketAddr>,
    protocol: OnceLock<&'static str>,
    status: AtomicU16,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    metrics: Arc<Metrics>,
    progress: Progress,
}

impl Exchange {
    pub fn new(
        method: &http::Method,
        peer: Option<SocketAddr>,
        metrics: Arc<Metrics>,
        progress: Progress,
    ) -> Arc<Exchange> {
        Arc::new(Exchange {
            start: Instant::now(),
            method: Method::of(method),
            peer,
            protocol: OnceLock::new(),
            status: AtomicU16::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            metrics,
            progress,
        })
    }

    /// The response head is ready: counts the request under its protocol and status.
    pub fn answered(&self, protocol: &'static str, status: u16) {
        let _ = self.protocol.set(protocol);
        self.status.store(status, Ordering::Relaxed);
        self.metrics.request(
            RequestLabels {
                protocol,
                method: self.method,
                status,
            },
            self.start.elapsed(),
        );
    }

    fn received(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.received(n);
        self.progress.add_client(n);
    }

    fn sent(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.sent(n);
        self.progress.add_client(n);
    }

    /// `body`, counting each data frame as received.
    pub fn count_request<B>(
        self: &Arc<Self>,
        body: B,
    ) -> impl hyper::body::Body<Data = Bytes, Error = B::Error>
    where
        B: hyper::body::Body<Data = Bytes>,
    {
        self.counted(body, Exchange::received)
    }

    /// `body`, counting each data frame as sent.
    pub fn count_response<B>(
        self: &Arc<Self>,
        body: B,
    ) -> impl hyper::body::Body<Data = Bytes, Error = B::Error>
    where
        B: hyper::body::Body<Data = Bytes>,
    {
        self.counted(body, Exchange::sent)
    }

    fn counted<B>(
        self: &Arc<Self>,
        body: B,
        count: fn(&Exchange, usize),
    ) -> impl hyper::body::Body<Data = Bytes, Error = B::Error>
    where
        B: hyper::body::Body<Data = Bytes>,
    {
        let exchange = self.clone();
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                count(&exchange, data.len());
            }
            frame
        })
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let status = self.status.load(Ordering::Relaxed);
        tracing::info!(
            target: ACCESS_LOG,
            method = self.method.as_str(),
            protocol = self.protocol.get().copied().unwrap_or("none"),
            status,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out.load(Ordering::Relaxed),
            // To the microsecond: more digits are noise in a log line.
            duration_ms = (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            peer = self.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            "request"
        );
    }
}
