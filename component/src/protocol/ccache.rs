//! ccache HTTP storage (`remote_storage = http://host/ccache|layout=...`).
//!
//! Every layout is a plain key-value path under `/ccache/`: `subdirs` sends
//! `/ccache/ab/cdef...`, `flat` `/ccache/abcdef...`, `bazel` `/ccache/ac/<64 hex>`.
//! Entries are stored under the path as sent, like any HTTP server would; ccache
//! keys are not content hashes, so nothing is verified. Further leading segments
//! (`/ccache/<team>/...`) act as namespaces.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

use crate::http;
use crate::transfer;

#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    /// `ccache/<path after /ccache/>`.
    pub store_key: String,
}

/// `rest` is the path after `/ccache`; its segments are already validated.
pub fn parse(rest: &[&str]) -> Result<Key, String> {
    if rest.is_empty() {
        return Err("ccache path needs a key after /ccache/".into());
    }
    Ok(Key {
        store_key: format!("ccache/{}", rest.join("/")),
    })
}

pub fn serve(request: &IncomingRequest, out: ResponseOutparam, key: &Key) {
    match http::method(request).as_str() {
        "GET" => transfer::serve_blob(out, &key.store_key, false),
        "HEAD" => transfer::serve_blob(out, &key.store_key, true),
        "PUT" => {
            let length = match transfer::declared_length(request) {
                Ok(length) => length,
                Err((status, reason)) => return http::respond_text(out, status, &reason),
            };
            let options = transfer::overwrite_options(length);
            transfer::receive_blob(request, out, &key.store_key, &options, 200);
        }
        "DELETE" => transfer::delete_blob(out, &key.store_key),
        _ => http::method_not_allowed(out, "GET, HEAD, PUT, DELETE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_maps_to_its_path() {
        assert_eq!(parse(&["ab", "cdef"]).unwrap().store_key, "ccache/ab/cdef");
        assert_eq!(parse(&["abcdef"]).unwrap().store_key, "ccache/abcdef");
        let hex = "0a".repeat(32);
        assert_eq!(
            parse(&["ac", &hex]).unwrap().store_key,
            format!("ccache/ac/{hex}")
        );
        assert!(parse(&[]).is_err());
    }
}
