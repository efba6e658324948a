//! The routing table: each protocol owns a root (the first path segment), and
//! Bazel's catch-all, whose optional prefix may be any other path, comes last.
//! The table itself says which roots are taken, so every path has one meaning.
//!
//! Each protocol also chooses how its paths are checked ([`PathRules`]) and how
//! its errors are rendered, so a protocol whose clients send percent-encoded
//! names can accept them while the others refuse them.

use crate::auth::{Caller, Scope};
use crate::error::{Failure, Kind};
use crate::http::{Request, Response};
use crate::path;
use crate::protocol::{azure_blob, bazel, ccache, gha, gradle, nx, oci, sccache, service, turbo};

/// One served request, once parsed: says what it needs, then does it.
pub trait Endpoint {
    /// The access the request needs, and the namespace it addresses.
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a>;
    /// Serves the request; a failure is rendered by the protocol.
    fn handle(&self, request: &Request, caller: &Caller) -> Result<Response, Failure>;
}

/// How a protocol's paths are checked before it parses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathRules {
    /// [`path::parse`]: plain key characters only, no percent-encoding, no
    /// empty, `.` or `..` segments.
    Keys,
    /// [`path::parse_collection`]: as `Keys`, and a trailing `/` (a WebDAV
    /// collection) arrives as a last, empty segment.
    Collections,
    /// [`path::split_raw`]: segments as sent, unchecked; the protocol decodes
    /// and checks them (the Azure endpoint: blob names may hold `%2F`).
    Raw,
}

pub enum Root {
    /// `/` alone.
    Index,
    /// Paths whose first segment is this.
    Segment(&'static str),
    /// Every path no other protocol owns.
    CatchAll,
}

/// What a protocol made of a path: an endpoint, or a failure to render.
pub type Parsed = Result<Box<dyn Endpoint>, Failure>;

pub struct Protocol {
    /// Names the protocol in logs and metrics (the `blobcache-protocol` header).
    pub name: &'static str,
    pub root: Root,
    pub paths: PathRules,
    /// Parses the segments after the root (all of them for the catch-all).
    pub parse: fn(&[&str]) -> Parsed,
    /// Renders a failure as this protocol's clients expect it.
    pub render: fn(Failure) -> Response,
}

/// Every protocol, rooted ones first, the catch-all last.
pub static TABLE: &[&Protocol] = &[
    &service::INDEX,
    &service::HEALTH,
    &service::STATUS,
    &ccache::PROTOCOL,
    &gradle::PROTOCOL,
    &sccache::PROTOCOL,
    &nx::PROTOCOL,
    &turbo::PROTOCOL,
    &oci::PROTOCOL,
    &azure_blob::PROTOCOL,
    &gha::PROTOCOL,
    &bazel::PROTOCOL,
];

/// The protocol that owns `path_with_query`, and what it made of the path.
pub fn route(path_with_query: &str) -> (&'static Protocol, Parsed) {
    let path = path_with_query.split('?').next().unwrap_or("");
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let protocol = TABLE
        .iter()
        .find(|p| match p.root {
            Root::Index => path == "/",
            Root::Segment(root) => root == first,
            Root::CatchAll => true,
        })
        .copied()
        .expect("the table ends with a catch-all");
    let checked = match protocol.paths {
        PathRules::Keys => path::parse(path_with_query),
        PathRules::Collections => path::parse_collection(path_with_query),
        PathRules::Raw => path::split_raw(path_with_query),
    };
    let parsed = checked.map_err(Failure::bad_request).and_then(|parsed| {
        let rest = match protocol.root {
            // Raw paths keep empty segments: `//azure/a/b` is not under `azure`.
            Root::Segment(root) => match parsed.segments.split_first() {
                Some((first, rest)) if *first == root => rest,
                _ => return Err(Failure::bad_request("path has an empty segment")),
            },
            Root::Index | Root::CatchAll => &parsed.segments[..],
        };
        (protocol.parse)(rest)
    });
    (protocol, parsed)
}

/// The answer for a path no protocol serves.
pub fn no_protocol() -> Failure {
    Failure::new(Kind::NotFound, "no cache protocol is served at this path")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol_of(path: &str) -> (&'static str, Result<(), u16>) {
        let (protocol, parsed) = route(path);
        (protocol.name, parsed.map(|_| ()).map_err(|f| f.status()))
    }

    #[test]
    fn fixed_endpoints() {
        assert_eq!(protocol_of("/healthz"), ("health", Ok(())));
        assert_eq!(protocol_of("/status"), ("status", Ok(())));
        assert_eq!(protocol_of("/"), ("index", Ok(())));
        assert_eq!(protocol_of("/nothing/here"), ("bazel", Err(404)));
    }

    #[test]
    fn bazel_with_and_without_prefix() {
        let hash = "a".repeat(64);
        assert_eq!(protocol_of(&format!("/ac/{hash}")), ("bazel", Ok(())));
        assert_eq!(
            protocol_of(&format!("/team/x/cas/{hash}")),
            ("bazel", Ok(()))
        );
        assert_eq!(protocol_of("/cas/abc"), ("bazel", Err(400)));
        // A root a protocol owns is never read as a Bazel prefix.
        assert_eq!(
            protocol_of(&format!("/status/ac/{hash}")),
            ("status", Err(404))
        );
        assert_eq!(
            protocol_of(&format!("/healthz/cas/{hash}")),
            ("health", Err(404))
        );
    }

    #[test]
    fn ccache_owns_its_root_even_for_ac_looking_keys() {
        // ccache's `subdirs` layout puts a key starting with "ac" under /ac/.
        assert_eq!(
            protocol_of("/ccache/ac/0123456789abcdefghijklmnopqrstu"),
            ("ccache", Ok(()))
        );
        assert_eq!(protocol_of("/ccache"), ("ccache", Err(400)));
    }

    #[test]
    fn each_client_family_owns_its_root() {
        let md5 = "77f3fde86f99cf771d330febeba41e61";
        assert_eq!(protocol_of(&format!("/gradle/{md5}")), ("gradle", Ok(())));
        assert_eq!(
            protocol_of("/v1/cache/10294360055595522611"),
            ("nx", Ok(()))
        );
        assert_eq!(
            protocol_of("/v8/artifacts/fd7a8618ab01c131?slug=a"),
            ("turbo", Ok(()))
        );
        assert_eq!(protocol_of("/v8/artifacts/status"), ("turbo", Ok(())));
        assert_eq!(protocol_of("/sccache/.sccache_check"), ("sccache", Ok(())));
        // Azure clients encode `/` in blob names; that endpoint decodes them itself.
        assert_eq!(
            protocol_of("/azure/acct/buildkit-cache/app%2Fblobs%2Fsha256:ab"),
            ("azure-blob", Ok(()))
        );
        assert_eq!(
            protocol_of("/twirp/github.actions.results.api.v1.CacheService/CreateCacheEntry"),
            ("gha", Ok(()))
        );
        // WebDAV collections end in `/`; other protocols refuse that.
        assert_eq!(protocol_of("/sccache/pre/9/c/2/"), ("sccache", Ok(())));
        assert_eq!(protocol_of("/sccache//.sccache_check"), ("sccache", Ok(())));
        assert_eq!(
            protocol_of(&format!("/gradle/{md5}/")),
            ("gradle", Err(400))
        );
    }

    #[test]
    fn bad_paths_are_refused_by_their_protocol() {
        assert_eq!(protocol_of("/ccache/a%2Fb"), ("ccache", Err(400)));
        assert_eq!(protocol_of("/a/../ac/x"), ("bazel", Err(400)));
        // Raw paths keep empty segments: nothing before the root is skipped.
        assert_eq!(protocol_of("//azure/acct/c/b"), ("azure-blob", Err(400)));
    }

    #[test]
    fn every_root_is_owned_once_and_the_catch_all_is_last() {
        let roots: Vec<&str> = TABLE
            .iter()
            .filter_map(|p| match p.root {
                Root::Segment(root) => Some(root),
                _ => None,
            })
            .collect();
        let mut unique = roots.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), roots.len());
        assert!(matches!(TABLE.last().unwrap().root, Root::CatchAll));
    }
}
