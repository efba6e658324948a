//! How store errors become HTTP statuses: one table for every protocol.

use crate::bindings::blobcache::store::types::Error;

/// The status and one-line reason for a store error.
pub fn status_of(error: &Error) -> (u16, String) {
    match error {
        Error::NotFound => (404, "not found".into()),
        Error::AlreadyExists => (409, "already exists".into()),
        Error::PreconditionFailed => (412, "precondition failed".into()),
        Error::Invalid(reason) => (400, reason.clone()),
        Error::TooLarge(reason) => (413, reason.clone()),
        Error::Full(reason) => (507, format!("store full: {reason}")),
        Error::Unavailable(reason) => (503, format!("store unavailable: {reason}")),
        Error::Other(reason) => (500, format!("store error: {reason}")),
    }
}
