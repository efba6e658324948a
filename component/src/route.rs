//! Which protocol serves a path. Pure: tested natively, without a store.

use crate::path::CachePath;
use crate::protocol::{bazel, ccache};

/// What a request path addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: what this is (hosts such as Azure Functions probe it for readiness).
    Root,
    /// `GET /healthz`: liveness, answered without touching the store.
    Health,
    /// `GET /status`: version, store kind and counts, as JSON.
    Status,
    Bazel(bazel::Key),
    Ccache(ccache::Key),
}

/// Why no route was found.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// The path belongs to a protocol but its key is malformed: 400.
    BadKey(String),
    /// No protocol serves this path: 404.
    Unknown,
}

/// First path segments that belong to a protocol of their own. A Bazel prefix may not
/// start with one of these, so each path has exactly one meaning.
pub const RESERVED_ROOTS: &[&str] = &["healthz", "status", "ccache"];

pub fn route(path: &CachePath<'_>) -> Result<Route, NoRoute> {
    match path.segments.as_slice() {
        [] => Ok(Route::Root),
        ["healthz"] => Ok(Route::Health),
        ["status"] => Ok(Route::Status),
        ["ccache", rest @ ..] => ccache::parse(rest)
            .map(Route::Ccache)
            .map_err(NoRoute::BadKey),
        segments => match bazel::parse(segments) {
            Some(key) => key.map(Route::Bazel).map_err(NoRoute::BadKey),
            None => Err(NoRoute::Unknown),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;

    fn route_of(p: &str) -> Result<Route, NoRoute> {
        route(&path::parse(p).unwrap())
    }

    #[test]
    fn fixed_endpoints() {
        assert_eq!(route_of("/healthz"), Ok(Route::Health));
        assert_eq!(route_of("/status"), Ok(Route::Status));
        assert_eq!(route_of("/"), Ok(Route::Root));
        assert_eq!(route_of("/nothing/here"), Err(NoRoute::Unknown));
    }

    #[test]
    fn bazel_with_and_without_prefix() {
        let hash = "a".repeat(64);
        assert!(matches!(
            route_of(&format!("/ac/{hash}")),
            Ok(Route::Bazel(_))
        ));
        assert!(matches!(
            route_of(&format!("/team/x/cas/{hash}")),
            Ok(Route::Bazel(_))
        ));
        assert!(matches!(route_of("/cas/abc"), Err(NoRoute::BadKey(_))));
        // A reserved root is never read as a Bazel prefix.
        assert!(matches!(
            route_of(&format!("/status/ac/{hash}")),
            Err(NoRoute::Unknown)
        ));
    }

    #[test]
    fn ccache_owns_its_root_even_for_ac_looking_keys() {
        // ccache's `subdirs` layout puts a key starting with "ac" under /ac/.
        let r = route_of("/ccache/ac/0123456789abcdefghijklmnopqrstu");
        assert!(matches!(r, Ok(Route::Ccache(_))), "{r:?}");
        assert!(matches!(route_of("/ccache"), Err(NoRoute::BadKey(_))));
    }
}
