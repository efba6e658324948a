//! Nx's self-hosted remote cache (`NX_SELF_HOSTED_REMOTE_CACHE_SERVER`):
//! `GET|PUT /v1/cache/<hash>`, the path fixed by the client.
//!
//! Entries are write-once: a PUT for a hash that exists is answered 409 and
//! changes nothing, so a build that may only read (a pull request's token)
//! can never replace what trusted builds stored (cache poisoning,
//! CVE-2025-36852). The path has no room for a namespace, so a namespaced
//! token works in its own one ([`Namespace::OfToken`]).
//!
//! [`Namespace::OfToken`]: crate::auth::Namespace::OfToken

use crate::auth::{Caller, Need, Scope};
use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{Error as StoreError, WriteMode};
use crate::blob;
use crate::error::{Failure, Kind};
use crate::http::body::drain;
use crate::http::{Request, Response};
use crate::path::is_alphanumeric_key;
use crate::route::{Endpoint, PathRules, Protocol, Root};

use super::render_text;

pub static PROTOCOL: Protocol = Protocol {
    name: "nx",
    root: Root::Segment("v1"),
    paths: PathRules::Keys,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render,
};

/// Plain text, typed exactly `text/plain`: Nx shows a 401's text only then.
fn render(failure: Failure) -> Response {
    let mut response = render_text(failure);
    for (name, value) in &mut response.headers {
        if name == "content-type" {
            *value = "text/plain".into();
        }
    }
    response
}

/// Largest body read and dropped before a 409, so that a client that reads
/// no answer before its upload is sent sees the 409 (which Nx ignores) rather
/// than a closed connection (after which Nx retries, then fails the run).
const MAX_DRAINED: u64 = 256 << 20;

/// Longest task hash accepted (Nx's are decimal or hex, about 20 digits).
const MAX_HASH: usize = 128;

#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: String,
}

impl Entry {
    /// `nx/<hash>`, or `nx/<namespace>/<hash>` for a namespaced token.
    pub fn store_key(&self, caller: &Caller) -> String {
        match caller.namespace() {
            Some(namespace) => format!("nx/{namespace}/{}", self.hash),
            None => format!("nx/{}", self.hash),
        }
    }
}

/// `rest` is the path after `/v1`: `["cache", hash]`.
pub fn parse(rest: &[&str]) -> Result<Entry, Failure> {
    let ["cache", hash] = rest else {
        return Err(Failure::new(
            Kind::NotFound,
            "Nx's cache is at /v1/cache/<hash>",
        ));
    };
    if !is_alphanumeric_key(hash, MAX_HASH) {
        return Err(Failure::bad_request(format!(
            "nx task hash {hash:?} is malformed: expected 1 to {MAX_HASH} letters and digits"
        )));
    }
    Ok(Entry {
        hash: hash.to_string(),
    })
}

impl Endpoint for Entry {
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a> {
        Scope::of_token(Need::for_blob_method(request.method()))
    }

    fn handle(&self, request: &Request, caller: &Caller) -> Result<Response, Failure> {
        let key = self.store_key(caller);
        match request.method() {
            "GET" | "HEAD" => blob::read(request, &key),
            "PUT" => {
                let mut options = blob::overwrite_options(blob::declared_length(request)?);
                options.mode = WriteMode::CreateOnly;
                // Refuse without storing anything when the entry is already
                // there; `create-only` still decides a race.
                match store::head(&key) {
                    Ok(_) => {
                        drain(request, MAX_DRAINED);
                        return Err(exists());
                    }
                    Err(StoreError::NotFound) => {}
                    Err(error) => return Err(error.into()),
                }
                match blob::write(request, &key, &options) {
                    Ok(_) => Ok(Response::empty(200)),
                    Err(failure) if failure.kind == Kind::Conflict => {
                        drain(request, MAX_DRAINED);
                        Err(exists())
                    }
                    Err(failure) => Err(failure),
                }
            }
            _ => Err(Failure::method_not_allowed("GET, HEAD, PUT")),
        }
    }
}

fn exists() -> Failure {
    Failure::new(
        Kind::Conflict,
        "this task hash is already cached; entries are write-once",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_callers_namespace() {
        let entry = parse(&["cache", "12345678901234567890"]).unwrap();
        assert_eq!(entry.store_key(&Caller::Open), "nx/12345678901234567890");
        let team = Caller::Token {
            name: "t".into(),
            access: crate::auth::Access::ReadWrite,
            namespace: Some("team-a".into()),
        };
        assert_eq!(entry.store_key(&team), "nx/team-a/12345678901234567890");
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(parse(&["cache", "ab-cd"]).unwrap_err().status(), 400);
        assert_eq!(
            parse(&["cache", &"1".repeat(129)]).unwrap_err().status(),
            400
        );
        assert_eq!(parse(&["cache"]).unwrap_err().status(), 404);
        assert_eq!(parse(&["other", "123"]).unwrap_err().status(), 404);
    }
}
