//! Why a request failed, independent of how a protocol words it.
//!
//! Shared code (path checks, auth, blob operations, store errors) returns a
//! [`Failure`]; each protocol renders it in its clients' format (plain text for
//! Bazel and ccache; JSON, XML or twirp for the protocols that want them).

use crate::bindings::blobcache::store::types::Error as StoreError;
use crate::http::Response;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PreconditionFailed,
    TooLarge,
    UnsupportedMediaType,
    RangeNotSatisfiable,
    Full,
    Unavailable,
    Internal,
}

impl Kind {
    pub fn status(self) -> u16 {
        match self {
            Kind::BadRequest => 400,
            Kind::Unauthorized => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::Conflict => 409,
            Kind::PreconditionFailed => 412,
            Kind::TooLarge => 413,
            Kind::UnsupportedMediaType => 415,
            Kind::RangeNotSatisfiable => 416,
            Kind::Internal => 500,
            Kind::Unavailable => 503,
            Kind::Full => 507,
        }
    }
}

/// A failed request: what kind of failure, a one-line reason for the client, and
/// headers the answer must carry (`Allow`, `WWW-Authenticate`, `Content-Range`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The error code in the protocol's own vocabulary (OCI's `BLOB_UNKNOWN`),
    /// when the code that failed knows it; protocols without codes ignore it.
    pub code: Option<&'static str>,
}

impl Failure {
    pub fn new(kind: Kind, reason: impl Into<String>) -> Failure {
        Failure {
            kind,
            reason: reason.into(),
            headers: Vec::new(),
            code: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Failure {
        Failure::new(Kind::BadRequest, reason)
    }

    /// 405 naming the methods the path supports.
    pub fn method_not_allowed(allow: &str) -> Failure {
        Failure::new(
            Kind::MethodNotAllowed,
            format!("method not allowed; allowed: {allow}"),
        )
        .with_header("allow", allow)
    }

    pub fn with_code(mut self, code: &'static str) -> Failure {
        self.code = Some(code);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Failure {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The plain-text rendering: the reason on one line, plus the headers.
    pub fn to_text(&self) -> Response {
        let mut response = Response::text(self.status(), &self.reason);
        response.headers.extend(self.headers.iter().cloned());
        response
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        match error {
            StoreError::NotFound => Failure::new(Kind::NotFound, "not found"),
            StoreError::AlreadyExists => Failure::new(Kind::Conflict, "already exists"),
            StoreError::PreconditionFailed => {
                Failure::new(Kind::PreconditionFailed, "precondition failed")
            }
            StoreError::Invalid(reason) => Failure::new(Kind::BadRequest, reason),
            StoreError::TooLarge(reason) => Failure::new(Kind::TooLarge, reason),
            StoreError::Full(reason) => Failure::new(Kind::Full, format!("store full: {reason}")),
            StoreError::Unavailable(reason) => {
                Failure::new(Kind::Unavailable, format!("store unavailable: {reason}"))
            }
            StoreError::Other(reason) => {
                Failure::new(Kind::Internal, format!("store error: {reason}"))
            }
        }
    }
}

impl From<crate::http::body::SmallBodyError> for Failure {
    fn from(error: crate::http::body::SmallBodyError) -> Failure {
        use crate::http::body::SmallBodyError;
        match error {
            SmallBodyError::TooLarge(limit) => Failure::new(
                Kind::TooLarge,
                format!("request document is over the {limit}-byte limit"),
            ),
            SmallBodyError::Client(reason) => Failure::bad_request(reason),
        }
    }
}
