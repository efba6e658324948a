//! Blob operations that several protocols share: read (GET/HEAD with `Range`),
//! write (PUT), delete. They return results; the protocol decides how a success
//! or a [`Failure`] is answered.

use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{
    BlobInfo, ByteRange, Error as StoreError, WriteMode, WriteOptions, Writer,
};
use crate::error::{Failure, Kind};
use crate::http::body::{receive_body_within, ReceiveError};
use crate::http::range::{self, Parsed, RangeSpec};
use crate::http::{Request, Response};
use wasip2::io::streams::InputStream;

/// GET or HEAD of the blob at `key`: 200 with the content (headers only for
/// HEAD), 206 for a satisfiable `Range`, 416 for one past the end.
pub fn read(request: &Request, key: &str) -> Result<Response, Failure> {
    read_with_headers(request, key, |_| Vec::new())
}

/// [`read`], adding the headers `extra` derives from the blob's info (a
/// protocol's own metadata headers) to every answer that has the blob.
pub fn read_with_headers(
    request: &Request,
    key: &str,
    extra: impl Fn(&BlobInfo) -> Vec<(String, String)>,
) -> Result<Response, Failure> {
    read_ranged(request, key, request.header("range"), extra)
}

/// [`read_with_headers`] with the range given apart from `Range` (Azure's
/// `x-ms-range`).
pub fn read_ranged(
    request: &Request,
    key: &str,
    range: Option<String>,
    extra: impl Fn(&BlobInfo) -> Vec<(String, String)>,
) -> Result<Response, Failure> {
    let answer = |status, info: &BlobInfo, length, content| {
        let mut response = Response::blob(status, info, length, content);
        response.headers.extend(extra(info));
        response
    };
    if request.is_head() {
        let info = store::head(key)?;
        return Ok(answer(200, &info, info.size, None));
    }
    let spec = match range.as_deref().map(range::parse) {
        Some(Parsed::One(spec)) if if_range_holds(request, key)? => spec,
        _ => {
            let (info, content) = store::open(key, None)?;
            return Ok(answer(200, &info, info.size, Some(content)));
        }
    };
    read_range(key, spec, true, &answer)
}

/// `If-Range`: a range of a blob the client no longer has is answered with the
/// whole blob, so a resumed download never splices two versions together.
fn if_range_holds(request: &Request, key: &str) -> Result<bool, Failure> {
    let Some(validator) = request.header("if-range") else {
        return Ok(true);
    };
    let info = store::head(key)?;
    let validator = validator.trim();
    Ok(validator == info.etag
        || crate::http::http_date(info.last_modified).is_some_and(|date| date == validator))
}

/// How a read answers once it has the blob: status, info, length, content.
type Answer<'a> = dyn Fn(u16, &BlobInfo, u64, Option<InputStream>) -> Response + 'a;

fn read_range(
    key: &str,
    spec: RangeSpec,
    may_retry: bool,
    answer: &Answer<'_>,
) -> Result<Response, Failure> {
    // A suffix needs the size first; other ranges learn it from `open`.
    let expected = match spec.start() {
        Some(_) => None,
        None => Some(store::head(key)?),
    };
    let size = expected.as_ref().map_or(0, |info| info.size);
    let (start, length) = match (spec, spec.resolve(size)) {
        // `last` may be any number up to u64::MAX: past it, read to the end.
        (RangeSpec::From { first, last }, _) => {
            (first, last.and_then(|last| (last - first).checked_add(1)))
        }
        (RangeSpec::Suffix(_), Some((start, end))) => (start, Some(end - start)),
        (RangeSpec::Suffix(_), None) => return Err(not_satisfiable(size)),
    };
    let opened = store::open(
        key,
        Some(ByteRange {
            offset: start,
            length,
        }),
    );
    let (info, content) = match opened {
        Ok(opened) => opened,
        // The store refuses ranges that start past the end.
        Err(StoreError::Invalid(reason)) => {
            let info = store::head(key)?;
            return Err(match spec.resolve(info.size) {
                None => not_satisfiable(info.size),
                Some(_) => Failure::new(Kind::Internal, reason),
            });
        }
        Err(error) => return Err(error.into()),
    };
    if let Some(expected) = expected {
        if expected.etag != info.etag {
            // Replaced between head and open: resolve once more against the new size.
            drop(content);
            return match may_retry {
                true => read_range(key, spec, false, answer),
                false => Err(Failure::new(
                    Kind::Unavailable,
                    "the blob changed while it was read",
                )),
            };
        }
    }
    match spec.resolve(info.size) {
        None => Err(not_satisfiable(info.size)),
        Some((start, end)) => Ok(answer(206, &info, end - start, Some(content))
            .with_header("content-range", range::content_range(start, end, info.size))),
    }
}

fn not_satisfiable(size: u64) -> Failure {
    Failure::new(
        Kind::RangeNotSatisfiable,
        format!("range not satisfiable: the blob has {size} bytes"),
    )
    .with_header("content-range", format!("bytes */{size}"))
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
        staged_under: None,
    }
}

/// The declared length of the request body: a 400 when malformed, a 413 when
/// over the configured limit (refused before a byte is read).
pub fn declared_length(request: &Request) -> Result<Option<u64>, Failure> {
    let length = request.content_length().map_err(Failure::bad_request)?;
    if let (Some(length), Some(max)) = (length, crate::config::max_blob_size()) {
        if length > max {
            return Err(Failure::new(
                Kind::TooLarge,
                format!("blob of {length} bytes is over the {max}-byte limit"),
            ));
        }
    }
    Ok(length)
}

/// Streams the request body into the store and publishes it only if the store
/// accepts it (size, digest, conditions). Nothing is stored on any failure.
pub fn write(request: &Request, key: &str, options: &WriteOptions) -> Result<BlobInfo, Failure> {
    finish(request, store::create(key, options)?)
}

/// Streams the request body into a block staged for `key` under `block_id`
/// (one part of a multi-request upload); returns the bytes staged. An empty
/// body stages nothing and returns 0: a chunked body's length is unknown
/// until it ends, and stores need not keep empty blocks. More than `budget`
/// bytes (what is left of the upload's size limit) is refused with 413,
/// before the body is read when its length is declared.
pub fn stage(
    request: &Request,
    key: &str,
    block_id: &str,
    expected_size: Option<u64>,
    budget: Option<u64>,
) -> Result<u64, Failure> {
    if let (Some(length), Some(budget)) = (expected_size, budget) {
        if length > budget {
            return Err(Failure::new(
                Kind::TooLarge,
                format!("the upload would be over its limit: {budget} bytes are left"),
            ));
        }
    }
    // A declared length is enforced by the store; only an undeclared one
    // needs counting here.
    let counted = budget.filter(|_| expected_size.is_none());
    let writer = store::stage_block(key, block_id, expected_size)?;
    let (writer, received) = receive(request, writer, counted)?;
    if received == 0 {
        // Dropped unfinished: nothing is staged.
        return Ok(0);
    }
    Ok(Writer::finish(writer)?.size)
}

/// Streams the request body into `writer` and finishes it.
fn finish(request: &Request, writer: Writer) -> Result<BlobInfo, Failure> {
    let (writer, _) = receive(request, writer, None)?;
    Ok(Writer::finish(writer)?)
}

/// Streams the request body into `writer` without finishing it: the writer
/// back and the bytes moved, or why it failed (nothing is published then).
fn receive(
    request: &Request,
    writer: Writer,
    budget: Option<u64>,
) -> Result<(Writer, u64), Failure> {
    match receive_body_within(request, &writer, budget) {
        Ok(received) => Ok((writer, received)),
        Err(ReceiveError::Client(reason)) => Err(Failure::bad_request(reason)),
        Err(ReceiveError::NoStream(e)) => Err(e.into()),
        Err(ReceiveError::OverBudget(budget)) => Err(Failure::new(
            Kind::TooLarge,
            format!("the upload is over its {budget}-byte limit"),
        )),
        Err(ReceiveError::SinkClosed) => Err(Failure::new(
            Kind::Internal,
            "the store closed the upload stream early",
        )),
        // The writer recorded why its stream failed; `finish` reports it and
        // publishes nothing.
        Err(ReceiveError::Store) => Err(match Writer::finish(writer) {
            Err(e) => e.into(),
            Ok(_) => Failure::new(Kind::Internal, "store stream failed"),
        }),
    }
}

/// [`write`] of an opaque blob that may replace what `key` holds, sized by
/// the request (the PUT of ccache, sccache, Gradle and Bazel's action cache).
pub fn overwrite(request: &Request, key: &str) -> Result<BlobInfo, Failure> {
    let options = overwrite_options(declared_length(request)?);
    write(request, key, &options)
}

/// Removes the blob at `key`; not-found when there was none.
pub fn delete(key: &str) -> Result<(), Failure> {
    Ok(store::delete(key)?)
}

/// Publishes a small document held in memory (a manifest, a record).
pub fn put_bytes(key: &str, bytes: &[u8], options: &WriteOptions) -> Result<BlobInfo, Failure> {
    let writer = store::create(key, options)?;
    for chunk in bytes.chunks(64 << 10) {
        writer.write(chunk)?;
    }
    Ok(Writer::finish(writer)?)
}
