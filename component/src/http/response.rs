//! The value every handler returns, and the one place a response is sent.
//!
//! Handlers choose status, headers and body; [`Response::send`] does the
//! streaming. Blob bodies are spliced from the store's stream into the response:
//! the host moves the bytes, so they never enter guest memory. Short bodies are
//! queued before the head is handed over, so head and body leave in one write.

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use crate::bindings::blobcache::store::types::BlobInfo;

/// Most bytes asked for per splice; the streams' own permits usually bound it lower.
const SPLICE_CHUNK: u64 = 4 << 20;

pub enum Body {
    /// No body is sent at all, whatever `content-length` says (HEAD answers).
    None,
    /// Bytes in memory: error reasons, JSON and XML documents, `ok`.
    Bytes(Vec<u8>),
    /// A blob's content, spliced from the store.
    Blob(InputStream),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    /// A response with `body` and its `content-length`.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("content-length".into(), body.len().to_string()),
            ],
            body: Body::Bytes(body),
        }
    }

    /// A one-line text answer (reasons stay one line).
    pub fn text(status: u16, text: &str) -> Response {
        let mut body = text.replace(['\r', '\n'], " ");
        body.push('\n');
        Response::bytes(status, "text/plain; charset=utf-8", body.into_bytes())
    }

    pub fn json(status: u16, json: &serde_json::Value) -> Response {
        Response::bytes(status, "application/json", json.to_string().into_bytes())
    }

    /// No content (`content-length: 0`): PUT and DELETE successes.
    pub fn empty(status: u16) -> Response {
        Response::bytes_without_type(status, Vec::new())
    }

    fn bytes_without_type(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("content-length".into(), body.len().to_string())],
            body: Body::Bytes(body),
        }
    }

    /// A blob hit: its describing headers, and its content unless `content` is none (HEAD).
    pub fn blob(
        status: u16,
        info: &BlobInfo,
        length: u64,
        content: Option<InputStream>,
    ) -> Response {
        Response {
            status,
            headers: blob_headers(info, length),
            body: content.map_or(Body::None, Body::Blob),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Drops the body but keeps the headers: the answer to HEAD.
    pub fn without_body(mut self) -> Response {
        self.body = Body::None;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sends the response. A blob stream that fails before its first byte turns
    /// into a 500; one that fails midway aborts the response, so a client never
    /// takes a truncated body for a whole one.
    pub fn send(self, out: ResponseOutparam) {
        let Some(fields) = fields(&self.headers) else {
            return Response::text(500, "the component built an invalid header").send(out);
        };
        let response = OutgoingResponse::new(fields);
        let _ = response.set_status_code(self.status);
        match self.body {
            // Not taking the body keeps content-length unchecked.
            Body::None => ResponseOutparam::set(out, Ok(response)),
            Body::Bytes(bytes) => send_bytes(out, response, &bytes),
            Body::Blob(source) => send_blob(out, response, source),
        }
    }
}

fn send_bytes(out: ResponseOutparam, response: OutgoingResponse, bytes: &[u8]) {
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

fn send_blob(out: ResponseOutparam, response: OutgoingResponse, source: InputStream) {
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
            return Response::text(500, &reason).send(out);
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

/// Splices until `source` ends; the error of whichever side failed.
pub fn splice_all(
    source: &InputStream,
    sink: &OutputStream,
) -> Result<u64, wasip2::io::error::Error> {
    let mut total = 0;
    loop {
        match sink.blocking_splice(source, SPLICE_CHUNK) {
            Ok(n) => total += n,
            Err(StreamError::Closed) => return Ok(total),
            Err(StreamError::LastOperationFailed(error)) => return Err(error),
        }
    }
}

/// Headers from name/value pairs; none if one is invalid.
fn fields(pairs: &[(String, String)]) -> Option<Fields> {
    let list: Vec<(String, Vec<u8>)> = pairs
        .iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect();
    Fields::from_list(&list).ok()
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
    if let Some(date) = super::http_date(info.last_modified) {
        headers.push(("last-modified".to_string(), date));
    }
    headers
}
