//! Sends the `azure` crate's signed requests over outgoing wasi:http, with
//! timeouts and the same retry policy as the native host.
//!
//! wasi:http is synchronous here: a request is started, its body written, and its
//! answer awaited by blocking on pollables, each wait bounded by a deadline.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use blobcache_azure::ops::{Body, Operation};
use blobcache_azure::response::RetryPolicy;
use blobcache_azure::store::retry::{self, Attempts};
use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll::{self, Pollable};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// Largest error or XML body read whole (listings are the largest).
const MAX_SMALL_BODY: usize = 16 << 20;
/// Bytes read per call when reading a small body.
const READ_CHUNK: u64 = 64 << 10;

thread_local! {
    /// Bodies whose streams were handed to the caller. A stream is a child of its
    /// body, so the body must outlive it; every request gets a fresh instance,
    /// which frees them.
    static KEPT_BODIES: RefCell<Vec<(IncomingResponse, IncomingBody)>> = const { RefCell::new(Vec::new()) };
}

pub use blobcache_azure::store::CallError;

/// Why an attempt got no answer.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try: connection lost, timeout, broken body.
    Transient(String),
    /// The host will not send it (denied destination, invalid request): final.
    Refused(String),
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure::Transient(why)
    }
}

impl Failure {
    /// A wasi:http error code: the host's refusals are final, the rest transient.
    fn of(code: &ErrorCode) -> Failure {
        let why = format!("{code:?}");
        match code {
            ErrorCode::HttpRequestDenied
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::ConfigurationError
            | ErrorCode::TlsCertificateError
            | ErrorCode::HttpRequestHeaderSectionSize(_)
            | ErrorCode::HttpRequestHeaderSize(_) => Failure::Refused(why),
            _ => Failure::Transient(why),
        }
    }
}

/// A successful answer, its body not yet read.
pub struct Answer {
    pub headers: http::HeaderMap,
    response: IncomingResponse,
}

impl Answer {
    /// The body as a stream for the caller to splice; it ends where the body ends.
    pub fn into_stream(self) -> Result<InputStream, String> {
        let body = self
            .response
            .consume()
            .map_err(|()| "response body already taken".to_string())?;
        let stream = body
            .stream()
            .map_err(|()| "response body stream already taken".to_string())?;
        KEPT_BODIES.with(|kept| kept.borrow_mut().push((self.response, body)));
        Ok(stream)
    }

    /// The whole (small) body.
    pub fn into_bytes(self) -> Result<Vec<u8>, String> {
        read_small_body(&self.response)
    }

    /// The answer with its (small) body read, as the `azure` crate's store
    /// decisions take it.
    pub fn into_small(self) -> Result<blobcache_azure::store::Answer, CallError> {
        let headers = self.headers.clone();
        let body = self.into_bytes().map_err(CallError::Unreachable)?;
        Ok(blobcache_azure::store::Answer {
            headers,
            body: body.into(),
        })
    }
}

/// An operation whose request and body went out.
pub enum InFlight {
    /// The answer is still to come (the timeout counts from `started`).
    Waiting {
        future: FutureIncomingResponse,
        started: u64,
    },
    /// The service answered before the body was through.
    Answered(IncomingResponse),
}

/// How long a request whose body broke waits for an early answer.
const EARLY_ANSWER_WAIT: u64 = 2_000_000_000;

/// A request whose head went out and whose body is being written.
pub struct Sending {
    future: FutureIncomingResponse,
    /// The body's stream (a child of the body, so dropped first) and the body.
    body: Option<(OutputStream, OutgoingBody)>,
    /// Bytes of the body written so far.
    written: usize,
}

impl Sending {
    /// Writes as much of the rest of `bytes` as the stream takes now, without
    /// waiting, so the host sends it while the caller goes on.
    pub fn pump(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some((stream, _)) = &self.body else {
            return Ok(());
        };
        while self.written < bytes.len() {
            match stream.check_write() {
                Ok(0) => return Ok(()),
                Ok(permit) => {
                    let end = bytes
                        .len()
                        .min(self.written.saturating_add(permit as usize));
                    stream.write(&bytes[self.written..end]).map_err(describe)?;
                    self.written = end;
                }
                Err(e) => return Err(describe(e)),
            }
        }
        Ok(())
    }
}

/// How requests are sent: per-attempt timeout and retry policy.
#[derive(Clone, Debug)]
pub struct Transport {
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Transport {
    /// Sends an operation, retrying transient failures with backoff and jitter.
    /// `build` is called per attempt so each try is signed with a fresh date.
    pub fn call(
        &self,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<&[u8]>,
    ) -> Result<Answer, CallError> {
        self.call_noting_retries(build, content, &mut false)
    }

    /// Like [`Self::call`]; sets `retried` when an earlier attempt failed in a way
    /// that may still have been applied (its answer was lost or was a 5xx).
    pub fn call_noting_retries(
        &self,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<&[u8]>,
        retried: &mut bool,
    ) -> Result<Answer, CallError> {
        let first = self
            .start(build(SystemTime::now()), content)
            .and_then(|sent| self.finish(sent));
        self.settle(first, build, content, retried)
    }

    /// Waits for an operation started with [`Self::start`], retrying it whole
    /// (from `content`) if it failed transiently.
    pub fn complete(
        &self,
        sent: Result<InFlight, Failure>,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<&[u8]>,
    ) -> Result<Answer, CallError> {
        let first = sent.and_then(|sent| self.finish(sent));
        self.settle(first, build, content, &mut false)
    }

    fn settle(
        &self,
        mut outcome: Result<IncomingResponse, Failure>,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<&[u8]>,
        retried: &mut bool,
    ) -> Result<Answer, CallError> {
        let mut attempts = Attempts::new(&self.retry);
        loop {
            let (error, retry_after) = match outcome {
                Ok(response) => {
                    let status = response.status();
                    let headers = header_map(&response.headers());
                    if (200..300).contains(&status) {
                        *retried = attempts.maybe_applied();
                        return Ok(Answer { headers, response });
                    }
                    let body = read_small_body(&response).unwrap_or_default();
                    retry::refusal(status, &headers, &body)
                }
                Err(Failure::Transient(why)) => (CallError::Unreachable(why), None),
                Err(Failure::Refused(why)) => (CallError::Refused(why), None),
            };
            match attempts.failed(error, retry_after, random_unit()) {
                Ok(delay) => sleep(delay),
                Err(error) => {
                    *retried = attempts.maybe_applied();
                    return Err(error);
                }
            }
            outcome = self
                .start(build(SystemTime::now()), content)
                .and_then(|sent| self.finish(sent));
        }
    }

    /// Starts one attempt: sends the request head and writes the whole body.
    pub fn start(&self, operation: Operation, content: Option<&[u8]>) -> Result<InFlight, Failure> {
        let built = match &operation.body {
            Body::Bytes(bytes) => Some(bytes.clone()),
            Body::Streamed { .. } | Body::Empty => None,
        };
        let bytes: &[u8] = match (&built, &operation.body, content) {
            (Some(bytes), _, _) => bytes,
            (None, Body::Streamed { .. }, Some(content)) => content,
            _ => &[],
        };
        let sending = self.begin(operation)?;
        self.send_rest(sending, bytes)
    }

    /// Sends the request head; the body is written with [`Sending::pump`] and
    /// [`Self::send_rest`].
    pub fn begin(&self, operation: Operation) -> Result<Sending, Failure> {
        let (parts, ()) = operation.request.into_parts();
        let mut pairs = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            pairs.push((name.as_str().to_string(), value.as_bytes().to_vec()));
        }
        let headers = Fields::from_list(&pairs)
            .map_err(|e| Failure::Refused(format!("request headers refused: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match parts.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_string()),
        };
        let scheme = match parts.uri.scheme_str() {
            Some("http") => Scheme::Http,
            _ => Scheme::Https,
        };
        let set = request
            .set_method(&method)
            .and(request.set_scheme(Some(&scheme)))
            .and(request.set_authority(parts.uri.authority().map(|a| a.as_str())))
            .and(request.set_path_with_query(parts.uri.path_and_query().map(|p| p.as_str())));
        // Errors name the path only: with a SAS credential the query holds the
        // signature, and these texts reach clients.
        let target = format!("{} {}", parts.method, parts.uri.path());
        set.map_err(|()| Failure::Refused(format!("request {target} refused by the host")))?;
        let body = request.body().expect("a new request's body is taken once");
        // The head goes out first: the body's stream only drains once the host
        // is sending the request.
        let future = outgoing_handler::handle(request, Some(self.options())).map_err(|code| {
            match Failure::of(&code) {
                Failure::Refused(why) => Failure::Refused(format!("request {target}: {why}")),
                Failure::Transient(why) => Failure::Transient(format!("request {target}: {why}")),
            }
        })?;
        let stream = body.write().expect("a body's stream is taken once");
        Ok(Sending {
            future,
            body: Some((stream, body)),
            written: 0,
        })
    }

    /// Writes what is left of `bytes` (waiting for the stream, up to the
    /// timeout) and finishes the body; the answer is then awaited with
    /// [`Self::finish`].
    pub fn send_rest(&self, mut sending: Sending, bytes: &[u8]) -> Result<InFlight, Failure> {
        let Some((stream, body)) = sending.body.take() else {
            return Err(Failure::Transient("request body already finished".into()));
        };
        let rest = &bytes[sending.written.min(bytes.len())..];
        let written = write_all(&stream, rest, self.timeout_nanos());
        drop(stream);
        if let Err(why) = written {
            // Finishing would send a truncated body; dropping aborts it.
            drop(body);
            // The service may have answered early (403, 413): that answer, not
            // the broken body, says what went wrong, and whether to retry.
            let answered = sending.future.subscribe();
            if wait(&answered, monotonic_clock::now() + EARLY_ANSWER_WAIT) {
                drop(answered);
                match sending.future.get() {
                    Some(Ok(Ok(response))) => return Ok(InFlight::Answered(response)),
                    Some(Ok(Err(code))) => return Err(Failure::of(&code)),
                    _ => {}
                }
            }
            return Err(why.into());
        }
        OutgoingBody::finish(body, None)
            .map_err(|e| Failure::Transient(format!("request body failed: {e:?}")))?;
        Ok(InFlight::Waiting {
            future: sending.future,
            started: monotonic_clock::now(),
        })
    }

    /// Waits for the answer of a started attempt.
    pub fn finish(&self, sent: InFlight) -> Result<IncomingResponse, Failure> {
        let (future, started) = match sent {
            InFlight::Answered(response) => return Ok(response),
            InFlight::Waiting { future, started } => (future, started),
        };
        let ready = future.subscribe();
        if !wait(&ready, started + self.timeout_nanos()) {
            return Err(format!("no answer within {:?}", self.timeout).into());
        }
        drop(ready);
        match future.get() {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(code))) => Err(Failure::of(&code)),
            Some(Err(())) | None => Err(Failure::Transient("the answer was already taken".into())),
        }
    }

    fn options(&self) -> RequestOptions {
        let options = RequestOptions::new();
        let nanos = Some(self.timeout_nanos());
        // Hosts that do not support a timeout refuse to set it; the deadlines
        // of our own waits still hold.
        let _ = options.set_connect_timeout(nanos);
        let _ = options.set_first_byte_timeout(nanos);
        let _ = options.set_between_bytes_timeout(nanos);
        options
    }

    fn timeout_nanos(&self) -> u64 {
        self.timeout.as_nanos().min(u64::MAX as u128) as u64
    }
}

/// Writes all of `bytes`, waiting for the stream's permits; fails when the
/// stream takes nothing for `stall` nanoseconds.
fn write_all(stream: &OutputStream, mut bytes: &[u8], stall: u64) -> Result<(), String> {
    let mut deadline = monotonic_clock::now() + stall;
    while !bytes.is_empty() {
        let permit = match stream.check_write() {
            Ok(0) => {
                let ready = stream.subscribe();
                if !wait(&ready, deadline) {
                    return Err("request body stalled".into());
                }
                continue;
            }
            Ok(permit) => permit.min(bytes.len() as u64) as usize,
            Err(e) => return Err(describe(e)),
        };
        let (now, rest) = bytes.split_at(permit);
        stream.write(now).map_err(describe)?;
        bytes = rest;
        deadline = monotonic_clock::now() + stall;
    }
    // Flush and wait for it, so a failure of the last bytes is seen here. A
    // stream closed now has taken every byte (the host stops reading once the
    // declared length is in); the answer says whether the request went through.
    match stream.flush() {
        Ok(()) | Err(StreamError::Closed) => {}
        Err(e) => return Err(describe(e)),
    }
    loop {
        match stream.check_write() {
            Ok(0) => {
                if !wait(&stream.subscribe(), deadline) {
                    return Err("request body stalled".into());
                }
            }
            Ok(_) | Err(StreamError::Closed) => return Ok(()),
            Err(e) => return Err(describe(e)),
        }
    }
}

/// Blocks until `ready` fires or the monotonic clock passes `deadline`; false
/// when the deadline came first.
fn wait(ready: &Pollable, deadline: u64) -> bool {
    let timer = monotonic_clock::subscribe_instant(deadline);
    let fired = poll::poll(&[ready, &timer]);
    fired.contains(&0) || ready.ready()
}

fn read_small_body(response: &IncomingResponse) -> Result<Vec<u8>, String> {
    let body = response
        .consume()
        .map_err(|()| "response body already taken".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "response body stream already taken".to_string())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_SMALL_BODY {
                    return Err(format!("response body over {MAX_SMALL_BODY} bytes"));
                }
            }
            Err(StreamError::Closed) => break,
            Err(e) => return Err(describe(e)),
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

fn header_map(fields: &Fields) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in fields.entries() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(&value),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn describe(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".into(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

/// Blocks for `delay`.
pub fn sleep(delay: Duration) {
    let nanos = delay.as_nanos().min(u64::MAX as u128) as u64;
    monotonic_clock::subscribe_duration(nanos).block();
}

/// A random number in `[0, 1)` for backoff jitter.
fn random_unit() -> f64 {
    (wasip2::random::insecure::get_insecure_random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Random bytes for block ids (cryptographic: concurrent uploads must not collide).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let bytes = wasip2::random::random::get_random_bytes(N as u64);
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[..N]);
    array
}
