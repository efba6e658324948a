//! Blob operations over HTTP that several protocols share: serve a blob (GET/HEAD),
//! receive one (PUT), delete one. Protocols choose the key and the write options;
//! these functions do the streaming and map store errors to statuses.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{WriteMode, WriteOptions, Writer};
use crate::http::{self, ReceiveError};
use crate::store_error::status_of;

/// GET (or HEAD, with `head`) of the blob at `key`: 200 with the content, or the
/// store's error (404 for a miss).
pub fn serve_blob(out: ResponseOutparam, key: &str, head: bool) {
    if head {
        match store::head(key) {
            Ok(info) => http::respond_blob(out, 200, &http::blob_headers(&info, info.size), None),
            Err(e) => respond_error(out, &e),
        }
        return;
    }
    match store::open(key, None) {
        Ok((info, content)) => http::respond_blob(
            out,
            200,
            &http::blob_headers(&info, info.size),
            Some(content),
        ),
        Err(e) => respond_error(out, &e),
    }
}

/// Options for a plain overwrite of an opaque blob, sized by the request.
pub fn overwrite_options(expected_size: Option<u64>) -> WriteOptions {
    WriteOptions {
        mode: WriteMode::Overwrite,
        content_type: None,
        metadata: Vec::new(),
        expected_size,
        expected_sha256: None,
        max_size: crate::config::max_blob_size(),
        if_match: None,
    }
}

/// The declared length of the request body, or the 4xx to answer: malformed, or
/// over the configured limit (refused before a byte is read).
pub fn declared_length(request: &IncomingRequest) -> Result<Option<u64>, (u16, String)> {
    let length = http::content_length(request).map_err(|reason| (400, reason))?;
    if let (Some(length), Some(max)) = (length, crate::config::max_blob_size()) {
        if length > max {
            return Err((
                413,
                format!("blob of {length} bytes is over the {max}-byte limit"),
            ));
        }
    }
    Ok(length)
}

/// PUT: streams the body into the store and publishes it only if the store accepts it
/// (size, digest, conditions). Answers `success` on success; nothing is stored otherwise.
pub fn receive_blob(
    request: &IncomingRequest,
    out: ResponseOutparam,
    key: &str,
    options: &WriteOptions,
    success: u16,
) {
    let writer = match store::create(key, options) {
        Ok(writer) => writer,
        Err(e) => return respond_error(out, &e),
    };
    match http::receive_body(request, &writer) {
        Ok(_) => {}
        Err(ReceiveError::Client(reason)) => return http::respond_text(out, 400, &reason),
        Err(ReceiveError::NoStream(e)) => return respond_error(out, &e),
        Err(ReceiveError::SinkClosed) => {
            return http::respond_text(out, 500, "the store closed the upload stream early")
        }
        // The writer recorded why its stream failed; `finish` reports it and
        // publishes nothing.
        Err(ReceiveError::Store) => {
            return match Writer::finish(writer) {
                Err(e) => respond_error(out, &e),
                Ok(_) => http::respond_text(out, 500, "store stream failed"),
            }
        }
    }
    match Writer::finish(writer) {
        Ok(_) => http::respond_empty(out, success),
        Err(e) => respond_error(out, &e),
    }
}

/// DELETE: 200 when removed, 404 when there was nothing.
pub fn delete_blob(out: ResponseOutparam, key: &str) {
    match store::delete(key) {
        Ok(()) => http::respond_empty(out, 200),
        Err(e) => respond_error(out, &e),
    }
}

pub fn respond_error(
    out: ResponseOutparam,
    error: &crate::bindings::blobcache::store::types::Error,
) {
    let (status, reason) = status_of(error);
    http::respond_text(out, status, &reason);
}
