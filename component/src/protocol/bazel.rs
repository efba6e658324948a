//! Bazel HTTP remote cache: `GET|HEAD|PUT|DELETE <prefix>/ac/<sha256>` and
//! `<prefix>/cas/<sha256>`.
//!
//! The prefix (any leading segments, possibly none) is a namespace: two prefixes
//! never see each other's entries. CAS uploads must hash to their key; the store
//! checks the digest and length before publishing, and a mismatch answers 400.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

use crate::http;
use crate::path::is_sha256_hex;
use crate::route::RESERVED_ROOTS;
use crate::transfer;

/// sha256 of no bytes: always present in the CAS, as Bazel expects.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Action cache: opaque `ActionResult` bytes keyed by the action digest.
    Ac,
    /// Content-addressed storage: the key is the sha256 of the content.
    Cas,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    pub prefix: Vec<String>,
    pub area: Area,
    pub hash: String,
}

impl Key {
    /// `bazel/<prefix>/ac/<hash>` or `bazel/<prefix>/cas/<hash>`.
    pub fn store_key(&self) -> String {
        let area = match self.area {
            Area::Ac => "ac",
            Area::Cas => "cas",
        };
        let mut key = String::from("bazel/");
        for segment in &self.prefix {
            key.push_str(segment);
            key.push('/');
        }
        key.push_str(area);
        key.push('/');
        key.push_str(&self.hash);
        key
    }
}

/// None when the path is not a Bazel path; an error when it is one with a bad key.
pub fn parse(segments: &[&str]) -> Option<Result<Key, String>> {
    let [prefix @ .., area, hash] = segments else {
        return None;
    };
    let area = match *area {
        "ac" => Area::Ac,
        "cas" => Area::Cas,
        _ => return None,
    };
    if prefix
        .first()
        .is_some_and(|root| RESERVED_ROOTS.contains(root))
    {
        return None;
    }
    if !is_sha256_hex(hash) {
        return Some(Err(format!(
            "bazel key {hash:?} is not a sha256: expected 64 lowercase hex digits"
        )));
    }
    let prefix = prefix.iter().map(|s| s.to_string()).collect();
    Some(Ok(Key {
        prefix,
        area,
        hash: hash.to_string(),
    }))
}

pub fn serve(request: &IncomingRequest, out: ResponseOutparam, key: &Key) {
    match http::method(request).as_str() {
        method @ ("GET" | "HEAD") => {
            let head = method == "HEAD";
            if key.area == Area::Cas && key.hash == EMPTY_SHA256 {
                return serve_empty_blob(out);
            }
            transfer::serve_blob(out, &key.store_key(), head)
        }
        "PUT" => put(request, out, key),
        "DELETE" => transfer::delete_blob(out, &key.store_key()),
        _ => http::method_not_allowed(out, "GET, HEAD, PUT, DELETE"),
    }
}

fn put(request: &IncomingRequest, out: ResponseOutparam, key: &Key) {
    let length = match transfer::declared_length(request) {
        Ok(length) => length,
        Err((status, reason)) => return http::respond_text(out, status, &reason),
    };
    let mut options = transfer::overwrite_options(length);
    if key.area == Area::Cas {
        options.expected_sha256 = Some(key.hash.clone());
    }
    transfer::receive_blob(request, out, &key.store_key(), &options, 200);
}

/// Content-length 0 and no body stream: complete for GET and HEAD alike.
fn serve_empty_blob(out: ResponseOutparam) {
    let headers = [
        ("content-length".to_string(), "0".to_string()),
        (
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        ),
        ("etag".to_string(), format!("\"{EMPTY_SHA256}\"")),
    ];
    http::respond_blob(out, 200, &headers, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_area_and_hash() {
        let hash = "0f".repeat(32);
        let key = parse(&["team", "ac", &hash]).unwrap().unwrap();
        assert_eq!(key.store_key(), format!("bazel/team/ac/{hash}"));
        let key = parse(&["cas", &hash]).unwrap().unwrap();
        assert_eq!(key.store_key(), format!("bazel/cas/{hash}"));
    }

    #[test]
    fn bad_hashes_are_errors_not_misses() {
        assert!(parse(&["cas", "abc"]).unwrap().is_err());
        assert!(parse(&["ac", &"0F".repeat(32)]).unwrap().is_err());
        assert!(parse(&["ac", &"0f".repeat(33)]).unwrap().is_err());
    }

    #[test]
    fn other_paths_are_not_bazel() {
        assert!(parse(&["x", "y"]).is_none());
        assert!(parse(&["ac"]).is_none());
    }
}
