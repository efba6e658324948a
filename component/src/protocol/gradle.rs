//! Gradle's HTTP build cache (`buildCache { remote(HttpBuildCache) { url =
//! "http://host/gradle/" } }`): `GET|HEAD|PUT <url><key>`.
//!
//! Keys are Gradle's cache keys (hex digests); a leading segment before the key
//! (`/gradle/<team>/<key>`) is a namespace. 200 is a hit, 404 a miss; a PUT
//! over the size limit is answered 413, which Gradle takes as "not stored"
//! rather than an error, and when Gradle sends `Expect: 100-continue` the 413
//! goes out before the body is sent.

use crate::auth::{Caller, Need, Scope};
use crate::blob;
use crate::error::Failure;
use crate::http::{Request, Response};
use crate::route::{Endpoint, PathRules, Protocol, Root};

use super::render_text;

pub static PROTOCOL: Protocol = Protocol {
    name: "gradle",
    root: Root::Segment("gradle"),
    paths: PathRules::Keys,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render: render_text,
};

/// Gradle's keys are hex digests: 32 digits (MD5) today, longer ones allowed.
const KEY_LENGTHS: std::ops::RangeInclusive<usize> = 32..=128;

#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    pub namespace: Option<String>,
    pub key: String,
}

impl Key {
    /// `gradle/<key>` or `gradle/<namespace>/<key>`.
    pub fn store_key(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("gradle/{namespace}/{}", self.key),
            None => format!("gradle/{}", self.key),
        }
    }
}

/// `rest` is the path after `/gradle`: `[key]` or `[namespace, key]`.
pub fn parse(rest: &[&str]) -> Result<Key, Failure> {
    let (namespace, key) = match rest {
        [key] => (None, *key),
        [namespace, key] => (Some(namespace.to_string()), *key),
        [] => {
            return Err(Failure::bad_request(
                "gradle path needs a key after /gradle/",
            ))
        }
        _ => {
            return Err(Failure::bad_request(
                "gradle path is /gradle/<key> or /gradle/<namespace>/<key>",
            ))
        }
    };
    let is_hex = key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !is_hex || !KEY_LENGTHS.contains(&key.len()) {
        return Err(Failure::bad_request(format!(
            "gradle cache key {key:?} is not a digest: expected 32 to 128 lowercase hex digits"
        )));
    }
    Ok(Key {
        namespace,
        key: key.to_string(),
    })
}

impl Endpoint for Key {
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a> {
        Scope::in_path(
            Need::for_blob_method(request.method()),
            self.namespace.as_deref(),
        )
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        match request.method() {
            "GET" | "HEAD" => blob::read(request, &self.store_key()),
            "PUT" => {
                // An oversize upload is refused before its body is read:
                // with `Expect: 100-continue`, Gradle never sends it.
                blob::overwrite(request, &self.store_key())?;
                Ok(Response::empty(200))
            }
            _ => Err(Failure::method_not_allowed("GET, HEAD, PUT")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_and_without_namespace() {
        let hex = "0123456789abcdef".repeat(2);
        assert_eq!(parse(&[&hex]).unwrap().store_key(), format!("gradle/{hex}"));
        assert_eq!(
            parse(&["team-a", &hex]).unwrap().store_key(),
            format!("gradle/team-a/{hex}")
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        let hex = "0123456789abcdef".repeat(2);
        for bad in [
            "abc",
            &hex.to_uppercase(),
            &"g".repeat(32),
            &"a".repeat(129),
        ] {
            assert_eq!(parse(&[bad]).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(parse(&[]).unwrap_err().status(), 400);
        assert_eq!(parse(&["a", "b", &hex]).unwrap_err().status(), 400);
    }
}
