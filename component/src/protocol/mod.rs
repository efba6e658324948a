//! One module per cache protocol. Each exports its entry of the routing table
//! ([`crate::route::Protocol`]): its root, its path rules, how it parses a path
//! into an endpoint, and how it renders failures.

pub mod azure_blob;
pub mod bazel;
pub mod ccache;
pub mod gha;
pub mod gradle;
pub mod nx;
pub mod oci;
pub mod sccache;
pub mod service;
pub mod turbo;

use crate::error::Failure;
use crate::http::Response;

/// The plain-text rendering Bazel, ccache and the service endpoints use.
pub fn render_text(failure: Failure) -> Response {
    failure.to_text()
}

/// The first segment, when more follow it: the namespace of a key path.
pub fn leading_namespace<'a>(segments: &[&'a str]) -> Option<&'a str> {
    match segments {
        [first, _, ..] => Some(first),
        _ => None,
    }
}
