//! Bazel HTTP remote cache: `GET|HEAD|PUT|DELETE <prefix>/ac/<sha256>` and
//! `<prefix>/cas/<sha256>`.
//!
//! The prefix (any leading segments, possibly none) is a namespace: two prefixes
//! never see each other's entries, and its first segment is what tokens are
//! scoped to. Bazel owns every path no other protocol's root claims (the
//! routing table's catch-all). CAS uploads must hash to their key; the store
//! checks the digest and length before publishing, and a mismatch answers 400.

use crate::auth::{Caller, Need, Scope};
use crate::blob;
use crate::error::Failure;
use crate::http::{Request, Response};
use crate::path::is_sha256_hex;
use crate::route::{no_protocol, Endpoint, PathRules, Protocol, Root};

use super::render_text;

pub static PROTOCOL: Protocol = Protocol {
    name: "bazel",
    root: Root::CatchAll,
    paths: PathRules::Keys,
    parse: |segments| match parse(segments) {
        Some(key) => Ok(Box::new(key?)),
        None => Err(no_protocol()),
    },
    render: render_text,
};

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
pub fn parse(segments: &[&str]) -> Option<Result<Key, Failure>> {
    let [prefix @ .., area, hash] = segments else {
        return None;
    };
    let area = match *area {
        "ac" => Area::Ac,
        "cas" => Area::Cas,
        _ => return None,
    };
    if !is_sha256_hex(hash) {
        return Some(Err(Failure::bad_request(format!(
            "bazel key {hash:?} is not a sha256: expected 64 lowercase hex digits"
        ))));
    }
    let prefix = prefix.iter().map(|s| s.to_string()).collect();
    Some(Ok(Key {
        prefix,
        area,
        hash: hash.to_string(),
    }))
}

impl Endpoint for Key {
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a> {
        Scope::in_path(
            Need::for_blob_method(request.method()),
            self.prefix.first().map(String::as_str),
        )
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        match request.method() {
            "GET" | "HEAD" if self.area == Area::Cas && self.hash == EMPTY_SHA256 => {
                Ok(empty_blob())
            }
            "GET" | "HEAD" => blob::read(request, &self.store_key()),
            "PUT" => {
                let mut options = blob::overwrite_options(blob::declared_length(request)?);
                if self.area == Area::Cas {
                    options.expected_sha256 = Some(self.hash.clone());
                }
                blob::write(request, &self.store_key(), &options)?;
                Ok(Response::empty(200))
            }
            "DELETE" => {
                blob::delete(&self.store_key())?;
                Ok(Response::empty(200))
            }
            _ => Err(Failure::method_not_allowed("GET, HEAD, PUT, DELETE")),
        }
    }
}

/// Content-length 0 and no body stream: complete for GET and HEAD alike.
fn empty_blob() -> Response {
    Response::empty(200)
        .with_header("content-type", "application/octet-stream")
        .with_header("etag", format!("\"{EMPTY_SHA256}\""))
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
