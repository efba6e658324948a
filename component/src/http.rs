//! Moving requests and responses between wasi:http and the store.
//!
//! Bodies are spliced: the host moves bytes from one stream to the other, so a blob
//! never enters guest memory and memory per transfer stays bounded. Uploads to a
//! store that takes chunks instead of a stream (a store component) are copied in
//! bounded chunks.

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use crate::bindings::blobcache::store::types::{BlobInfo, Writer};

/// Most bytes asked for per splice; the streams' own permits usually bound it lower.
const SPLICE_CHUNK: u64 = 4 << 20;
/// Most bytes read per chunk when a store takes content through `write`.
const COPY_CHUNK: u64 = 256 << 10;

/// Answers with a short text body (error reasons, `ok`). Reasons stay one line.
pub fn respond_text(out: ResponseOutparam, status: u16, text: &str) {
    let mut body = text.replace(['\r', '\n'], " ");
    body.push('\n');
    respond_bytes(out, status, "text/plain; charset=utf-8", body.as_bytes());
}

/// Answers with a JSON body.
pub fn respond_json(out: ResponseOutparam, status: u16, json: &serde_json::Value) {
    respond_bytes(out, status, "application/json", json.to_string().as_bytes());
}

/// Answers 405 naming the methods the path supports.
pub fn method_not_allowed(out: ResponseOutparam, allow: &str) {
    let text = format!("method not allowed; allowed: {allow}\n");
    let length = text.len().to_string();
    let headers = fields(&[
        ("allow", allow),
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", &length),
    ]);
    send(out, 405, headers, Some(text.as_bytes()));
}

/// Answers with no body at all (PUT and DELETE successes).
pub fn respond_empty(out: ResponseOutparam, status: u16) {
    send(out, status, fields(&[("content-length", "0")]), Some(b""));
}

fn respond_bytes(out: ResponseOutparam, status: u16, content_type: &str, bytes: &[u8]) {
    let len = bytes.len().to_string();
    let headers = fields(&[("content-type", content_type), ("content-length", &len)]);
    send(out, status, headers, Some(bytes));
}

fn send(out: ResponseOutparam, status: u16, headers: Fields, body: Option<&[u8]>) {
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Some(bytes) = body else {
        ResponseOutparam::set(out, Ok(response));
        return;
    };
    let outgoing = response.body().expect("response body is taken once");
    let stream = outgoing.write().expect("body stream is taken once");
    // Queue the (short) body before handing over the head, so that the host
    // sends head and body in one write.
    let queued = match stream.check_write() {
        Ok(permit) if permit as usize >= bytes.len() => stream.write(bytes).is_ok(),
        _ => false,
    };
    ResponseOutparam::set(out, Ok(response));
    if !queued {
        for chunk in bytes.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return; // client gone; dropping the body without finish aborts it
            }
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Headers from name/value pairs known to be valid.
pub fn fields(pairs: &[(&str, &str)]) -> Fields {
    let list: Vec<(String, Vec<u8>)> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&list).expect("static header names are valid")
}

/// The headers describing a blob in a hit: length, type, etag, last-modified.
pub fn blob_headers(info: &BlobInfo, length: u64) -> Vec<(String, String)> {
    let mut headers = vec![
        ("content-length".to_string(), length.to_string()),
        (
            "content-type".to_string(),
            info.content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
        ),
        ("etag".to_string(), info.etag.clone()),
    ];
    if let Some(date) = http_date(info.last_modified) {
        headers.push(("last-modified".to_string(), date));
    }
    headers
}

/// Sends a blob: headers from `headers`, then the content spliced from `content`
/// (none for HEAD). A stream that fails midway aborts the response, so a client
/// never takes a truncated body for a hit.
pub fn respond_blob(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, String)],
    content: Option<InputStream>,
) {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let response = OutgoingResponse::new(fields(&pairs));
    let _ = response.set_status_code(status);
    let Some(source) = content else {
        // HEAD: headers only. Not taking the body keeps content-length unchecked.
        ResponseOutparam::set(out, Ok(response));
        return;
    };
    let body = response.body().expect("response body is taken once");
    let sink = body.write().expect("body stream is taken once");
    // The host buffers one chunk: queue it before handing over the head, so a
    // small blob leaves in the same write as its headers.
    let copied = match sink.splice(&source, SPLICE_CHUNK) {
        // The store failed before a byte was sent: say so instead of a 200.
        Err(StreamError::LastOperationFailed(error)) => {
            drop(sink);
            drop(body);
            let reason = format!("store read failed: {}", error.to_debug_string());
            return respond_text(out, 500, &reason);
        }
        Ok(_) => {
            ResponseOutparam::set(out, Ok(response));
            splice_all(&source, &sink)
        }
        Err(StreamError::Closed) => {
            ResponseOutparam::set(out, Ok(response));
            Ok(0)
        }
    };
    drop(sink);
    drop(source);
    if copied.is_ok() {
        let _ = OutgoingBody::finish(body, None);
    }
}

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
}

/// Streams the request body into `writer` (without publishing it).
pub fn receive_body(request: &IncomingRequest, writer: &Writer) -> Result<u64, ReceiveError> {
    let body = request
        .consume()
        .map_err(|()| ReceiveError::Client("request body already consumed".into()))?;
    let source = body
        .stream()
        .map_err(|()| ReceiveError::Client("request body unavailable".into()))?;
    let result = if crate::config::copy_uploads() {
        copy_into(&source, writer)
    } else {
        match writer.body() {
            Ok(Some(sink)) => splice_into(&source, sink),
            Ok(None) => copy_into(&source, writer),
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
fn copy_into(source: &InputStream, writer: &Writer) -> Result<u64, ReceiveError> {
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

fn splice_all(source: &InputStream, sink: &OutputStream) -> Result<u64, wasip2::io::error::Error> {
    let mut total = 0;
    loop {
        match sink.blocking_splice(source, SPLICE_CHUNK) {
            Ok(n) => total += n,
            Err(StreamError::Closed) => return Ok(total),
            Err(StreamError::LastOperationFailed(error)) => return Err(error),
        }
    }
}

/// The request's method as a plain string (for matching and messages).
pub fn method(request: &IncomingRequest) -> String {
    match request.method() {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other,
    }
}

/// The first value of a header, if it is valid UTF-8.
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    values
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// The declared body length: none when absent (chunked), an error when malformed.
pub fn content_length(request: &IncomingRequest) -> Result<Option<u64>, String> {
    match header(request, "content-length") {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("content-length {value:?} is not a number")),
    }
}

/// RFC 7231 IMF-fixdate for a Unix timestamp.
pub fn http_date(unix_seconds: u64) -> Option<String> {
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(unix_seconds))?;
    Some(httpdate::fmt_http_date(time))
}
