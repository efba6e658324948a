//! Receiving a request body into a store writer.
//!
//! The body is spliced into the store's stream when the store offers one (the
//! native host): bytes move host to host. A store that is itself a component
//! takes chunks through `writer.write` instead, copied in bounded chunks with a
//! stall deadline, since `wasmtime serve` and Spin have no watchdog of their own.

use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use super::response::splice_all;
use super::Request;
use crate::bindings::blobcache::store::types::Writer;

/// Most bytes read per chunk when a store takes content through `write`.
const COPY_CHUNK: u64 = 256 << 10;

/// How receiving a request body into the store went wrong.
#[derive(Debug)]
pub enum ReceiveError {
    /// The client's body failed: disconnect, truncation, bad framing. Answer 400
    /// and drop the writer, which publishes nothing.
    Client(String),
    /// The store's stream failed (too large, disk full, backend error). The
    /// writer's `finish` returns the reason and publishes nothing.
    Store,
    /// The store's stream closed before the body ended; the writer is dropped
    /// unfinished (a partial upload must not be published).
    SinkClosed,
    /// The store could not open the upload stream; the writer is dropped unfinished.
    NoStream(crate::bindings::blobcache::store::types::Error),
    /// More than the budget given to [`receive_body_within`] arrived; the writer
    /// is dropped unfinished.
    OverBudget(u64),
}

/// Streams the request body into `writer` (without publishing it).
pub fn receive_body(request: &Request, writer: &Writer) -> Result<u64, ReceiveError> {
    receive_body_within(request, writer, None)
}

/// [`receive_body`], refusing more than `budget` bytes. A store writer that
/// enforces no limit of its own (a staged block) is given the budget here:
/// the bytes are then copied through the guest, which counts them.
pub fn receive_body_within(
    request: &Request,
    writer: &Writer,
    budget: Option<u64>,
) -> Result<u64, ReceiveError> {
    let body = request
        .incoming()
        .consume()
        .map_err(|()| ReceiveError::Client("request body already consumed".into()))?;
    let source = body
        .stream()
        .map_err(|()| ReceiveError::Client("request body unavailable".into()))?;
    let result = if crate::config::copy_uploads() || budget.is_some() {
        copy_into(&source, writer, budget)
    } else {
        match writer.body() {
            Ok(Some(sink)) => splice_into(&source, sink),
            Ok(None) => copy_into(&source, writer, None),
            Err(e) => Err(ReceiveError::NoStream(e)),
        }
    };
    drop(source);
    drop(wasip2::http::types::IncomingBody::finish(body));
    result
}

/// Splices the body into the store's stream: bytes move host to host.
fn splice_into(source: &InputStream, sink: OutputStream) -> Result<u64, ReceiveError> {
    match splice_all(source, &sink) {
        // "Closed" ends the splice whichever side closed: only a sink that is
        // still open proves the request body really ended.
        Ok(n) => match sink.check_write() {
            Ok(_) => Ok(n),
            Err(StreamError::LastOperationFailed(_)) => Err(ReceiveError::Store),
            Err(StreamError::Closed) => Err(ReceiveError::SinkClosed),
        },
        // Only the store's own stream can say it failed; anything else is the
        // client's body, whatever error it carries.
        Err(error) => match sink.check_write() {
            Err(StreamError::LastOperationFailed(_)) => Err(ReceiveError::Store),
            Ok(_) | Err(StreamError::Closed) => Err(ReceiveError::Client(format!(
                "request body failed: {}",
                error.to_debug_string()
            ))),
        },
    }
}

/// Copies the body into a store that takes chunks (`writer.write`): a store
/// component cannot hand out a stream, so the bytes pass through guest memory.
fn copy_into(
    source: &InputStream,
    writer: &Writer,
    budget: Option<u64>,
) -> Result<u64, ReceiveError> {
    let mut total = 0;
    let stall = crate::config::body_stall_secs();
    loop {
        match read_within(source, COPY_CHUNK, stall.saturating_mul(1_000_000_000)) {
            Ok(None) => {
                return Err(ReceiveError::Client(format!(
                    "request body stalled: nothing arrived for {stall} s"
                )))
            }
            Ok(Some(chunk)) => {
                let length = chunk.len() as u64;
                if budget.is_some_and(|budget| total + length > budget) {
                    return Err(ReceiveError::OverBudget(budget.unwrap_or(0)));
                }
                // The writer records why it failed; `finish` reports it.
                writer.write(&chunk).map_err(|_| ReceiveError::Store)?;
                total += length;
            }
            Err(StreamError::Closed) => return Ok(total),
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(ReceiveError::Client(format!(
                    "request body failed: {}",
                    error.to_debug_string()
                )))
            }
        }
    }
}

/// Reads up to `length` bytes, waiting at most `stall` nanoseconds for any;
/// `None` when nothing arrived in that time. Hosts without a watchdog of their
/// own (`wasmtime serve`, Spin) would otherwise hold a stalled upload forever.
fn read_within(
    source: &InputStream,
    length: u64,
    stall: u64,
) -> Result<Option<Vec<u8>>, StreamError> {
    let chunk = source.read(length)?;
    if !chunk.is_empty() {
        return Ok(Some(chunk));
    }
    let ready = source.subscribe();
    let timer = wasip2::clocks::monotonic_clock::subscribe_duration(stall);
    if !wasip2::io::poll::poll(&[&ready, &timer]).contains(&0) {
        return Ok(None);
    }
    source.read(length).map(Some)
}

/// Why a small document body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum SmallBodyError {
    /// Over the limit, declared or sent: answer 413.
    TooLarge(usize),
    /// Truncated, stalled or broken: answer 400.
    Client(String),
}

/// Reads a small request body (a JSON or XML document) whole, refusing one
/// over `limit` bytes before reading it when its length is declared, and as
/// soon as the limit is passed when it is not.
pub fn read_small(request: &Request, limit: usize) -> Result<Vec<u8>, SmallBodyError> {
    let declared = request.content_length().map_err(SmallBodyError::Client)?;
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(SmallBodyError::TooLarge(limit));
    }
    let body = request
        .incoming()
        .consume()
        .map_err(|()| SmallBodyError::Client("request body already consumed".into()))?;
    let source = body
        .stream()
        .map_err(|()| SmallBodyError::Client("request body unavailable".into()))?;
    let stall = crate::config::body_stall_secs();
    let mut bytes = Vec::new();
    let result = loop {
        match read_within(&source, COPY_CHUNK, stall.saturating_mul(1_000_000_000)) {
            Ok(None) => {
                break Err(SmallBodyError::Client(format!(
                    "request body stalled: nothing arrived for {stall} s"
                )))
            }
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > limit {
                    break Err(SmallBodyError::TooLarge(limit));
                }
            }
            Err(StreamError::Closed) => break Ok(bytes),
            Err(StreamError::LastOperationFailed(error)) => {
                break Err(SmallBodyError::Client(format!(
                    "request body failed: {}",
                    error.to_debug_string()
                )))
            }
        }
    };
    drop(source);
    drop(wasip2::http::types::IncomingBody::finish(body));
    result
}

/// Reads and drops the request body, up to `limit` bytes, so a refusal sent
/// after it (Nx's 409 for an entry it already has) reaches clients that read
/// no answer before their upload is done. Returns whether the whole body was
/// drained; a body over `limit`, stalled or broken is left, and the answer
/// goes out early.
pub fn drain(request: &Request, limit: u64) -> bool {
    if request.content_length().ok().flatten().unwrap_or(0) > limit {
        return false;
    }
    let Ok(body) = request.incoming().consume() else {
        return false;
    };
    let Ok(source) = body.stream() else {
        return false;
    };
    let stall = crate::config::body_stall_secs().saturating_mul(1_000_000_000);
    let mut drained = 0u64;
    let whole = loop {
        // `skip` drops bytes in the host: none are copied into the guest.
        match source.skip(COPY_CHUNK) {
            Ok(0) => {
                let ready = source.subscribe();
                let timer = wasip2::clocks::monotonic_clock::subscribe_duration(stall);
                if !wasip2::io::poll::poll(&[&ready, &timer]).contains(&0) {
                    break false;
                }
            }
            Ok(skipped) => {
                drained += skipped;
                if drained > limit {
                    break false;
                }
            }
            Err(StreamError::Closed) => break true,
            Err(StreamError::LastOperationFailed(_)) => break false,
        }
    };
    drop(source);
    drop(wasip2::http::types::IncomingBody::finish(body));
    whole
}
