//! The HTTP edge of the component: [`request`] reads what arrived, [`response`]
//! is the value every handler returns and the one place that sends it, [`body`]
//! moves request bodies into the store, [`range`] parses `Range` headers.

pub mod body;
pub mod range;
pub mod request;
pub mod response;

pub use request::Request;
pub use response::{Body, Response};

/// RFC 7231 IMF-fixdate for a Unix timestamp.
pub fn http_date(unix_seconds: u64) -> Option<String> {
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(unix_seconds))?;
    Some(httpdate::fmt_http_date(time))
}
