//! ccache HTTP storage (`remote_storage = http://host/ccache|layout=...`).
//!
//! Every layout is a plain key-value path under `/ccache/`: `subdirs` sends
//! `/ccache/ab/cdef...`, `flat` `/ccache/abcdef...`, `bazel` `/ccache/ac/<64 hex>`.
//! Entries are stored under the path as sent, like any HTTP server would; ccache
//! keys are not content hashes, so nothing is verified. Further leading segments
//! (`/ccache/<team>/...`) act as namespaces.

use crate::auth::{Caller, Need, Scope};
use crate::blob;
use crate::error::Failure;
use crate::http::{Request, Response};
use crate::route::{Endpoint, PathRules, Protocol, Root};

use super::{leading_namespace, render_text};

pub static PROTOCOL: Protocol = Protocol {
    name: "ccache",
    root: Root::Segment("ccache"),
    paths: PathRules::Keys,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render: render_text,
};

#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    /// `ccache/<path after /ccache/>`.
    pub store_key: String,
    /// The first segment when more follow.
    pub namespace: Option<String>,
}

/// `rest` is the path after `/ccache`; its segments are already validated.
pub fn parse(rest: &[&str]) -> Result<Key, Failure> {
    if rest.is_empty() {
        return Err(Failure::bad_request(
            "ccache path needs a key after /ccache/",
        ));
    }
    Ok(Key {
        store_key: format!("ccache/{}", rest.join("/")),
        namespace: leading_namespace(rest).map(str::to_string),
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
            "GET" | "HEAD" => blob::read(request, &self.store_key),
            "PUT" => {
                blob::overwrite(request, &self.store_key)?;
                Ok(Response::empty(200))
            }
            "DELETE" => {
                blob::delete(&self.store_key)?;
                Ok(Response::empty(200))
            }
            _ => Err(Failure::method_not_allowed("GET, HEAD, PUT, DELETE")),
        }
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

    #[test]
    fn the_first_of_several_segments_is_the_namespace() {
        assert_eq!(
            parse(&["team-a", "ab", "cdef"])
                .unwrap()
                .namespace
                .as_deref(),
            Some("team-a")
        );
        assert_eq!(parse(&["abcdef"]).unwrap().namespace, None);
    }
}
