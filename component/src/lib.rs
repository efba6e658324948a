//! The blobcache cache component.
//!
//! Serves `wasi:http/incoming-handler` and keeps every byte through the
//! `blobcache:store` import, so the same component runs on any host that provides
//! that interface. Each request gets a fresh instance: nothing is kept between requests.
//!
//! Every request takes one pipeline: parse → route → authorize → handle → respond.
//!
//! - [`route`]: the routing table; each protocol owns a root, Bazel's catch-all is last.
//! - [`auth`]: access tokens, read or read-write, per namespace.
//! - [`protocol`]: one module per protocol; each parses its paths into an
//!   endpoint and renders its own errors.
//! - [`blob`]: the blob operations protocols share, returning results.
//! - [`http`]: the request accessors and the [`http::Response`] value that
//!   every handler returns; sending it splices blob bodies, so blob bytes
//!   never pass through guest memory.
//! - [`path`], [`error`], [`config`]: path rules, failures, settings.

pub mod auth;
pub mod blob;
pub mod config;
pub mod credentials;
pub mod error;
pub mod http;
pub mod ids;
pub mod path;
pub mod protocol;
pub mod route;

/// Bindings for `world`, with WASI mapped onto the `wasip2` crate's types, so
/// blob streams and HTTP body streams are one type.
macro_rules! bindings_for {
    ($world:literal) => {
        wit_bindgen::generate!({
            path: "../wit",
            world: $world,
            with: {
                "wasi:io/streams@0.2.12": wasip2::io::streams,
                "wasi:io/error@0.2.12": wasip2::io::error,
                "wasi:io/poll@0.2.12": wasip2::io::poll,
                "wasi:http/types@0.2.12": wasip2::http::types,
            },
            generate_all,
        });
    };
}

#[allow(clippy::all, missing_docs)]
pub mod bindings {
    bindings_for!("blobcache:store/cache");
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use error::{Failure, Kind};
use http::{Body, Request, Response};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// Names the protocol that served a request, for the host's logs and metrics.
pub const PROTOCOL_HEADER: &str = "blobcache-protocol";

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = Request::new(request);
        let mut response = serve(&request);
        if request.is_head() {
            // Whatever a handler built, HEAD gets the headers only.
            response.body = Body::None;
        }
        response.send(out);
    }
}

/// The pipeline: route, authorize, handle; every failure rendered by the
/// protocol that owns the path.
fn serve(request: &Request) -> Response {
    let (protocol, endpoint) = route::route(request.path_with_query());
    let result = endpoint.and_then(|endpoint| {
        // Fails closed, and tells the operator's log, not the client, why.
        let tokens = config::tokens().map_err(|reason| {
            eprintln!("blobcache: the access token configuration is unusable: {reason}");
            Failure::new(
                Kind::Internal,
                "the access token configuration is unusable; see the server's log",
            )
        })?;
        // An open server never needs the header: skip the host call.
        let authorization = match tokens.is_empty() {
            true => None,
            false => request.header("authorization"),
        };
        let caller = tokens.authorize(authorization.as_deref(), endpoint.scope(request))?;
        endpoint.handle(request, &caller)
    });
    result
        .unwrap_or_else(protocol.render)
        .with_header(PROTOCOL_HEADER, protocol.name)
}

// Exported only in the wasm build: native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
