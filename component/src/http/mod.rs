//! The HTTP edge of the component: [`request`] reads what arrived, [`response`]
//! is the value every handler returns and the one place that sends it, [`body`]
//! moves request bodies into the store, [`range`] parses `Range` headers.

pub mod body;
pub mod range;
pub mod request;
pub mod response;

pub use request::Request;
pub use response::{Body, Response};

/// RFC 7231 IMF-fixdate for a Unix timestamp; none past year 9999, which
/// the format cannot write (and `httpdate` panics on).
pub fn http_date(unix_seconds: u64) -> Option<String> {
    if unix_seconds >= 253_402_300_800 {
        return None;
    }
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(unix_seconds))?;
    Some(httpdate::fmt_http_date(time))
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_end_with_year_9999() {
        assert_eq!(
            super::http_date(253_402_300_799).as_deref(),
            Some("Fri, 31 Dec 9999 23:59:59 GMT")
        );
        assert_eq!(super::http_date(253_402_300_800), None);
        assert_eq!(super::http_date(u64::MAX), None);
    }
}
