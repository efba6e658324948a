//! The blobcache cache component.
//!
//! Serves `wasi:http/incoming-handler` and keeps every byte through the
//! `blobcache:store` import, so the same component runs on any host that provides
//! that interface. Each request gets a fresh instance: nothing is kept between requests.
//!
//! Layout: [`path`] and [`route`] decide what a request addresses (pure, natively
//! tested); [`protocol`] holds one module per cache protocol; [`http`] moves
//! bodies between wasi:http and the store by splicing streams, so blob bytes never
//! pass through guest memory.

pub mod config;
pub mod http;
pub mod path;
pub mod protocol;
pub mod route;
pub mod store_error;
pub mod transfer;

#[allow(clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "blobcache:store/cache",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:http/types@0.2.12": wasip2::http::types,
        },
        generate_all,
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = match path::parse(&path_with_query) {
            Ok(path) => path,
            Err(reason) => return http::respond_text(out, 400, &reason),
        };
        match route::route(&path) {
            Ok(route::Route::Health) => http::respond_text(out, 200, "ok"),
            Ok(route::Route::Root) => {
                http::respond_text(out, 200, "blobcache remote build cache; see /status")
            }
            Ok(route::Route::Status) => protocol::status::serve(&request, out),
            Ok(route::Route::Bazel(key)) => protocol::bazel::serve(&request, out, &key),
            Ok(route::Route::Ccache(key)) => protocol::ccache::serve(&request, out, &key),
            Err(route::NoRoute::BadKey(reason)) => http::respond_text(out, 400, &reason),
            Err(route::NoRoute::Unknown) => {
                http::respond_text(out, 404, "no cache protocol is served at this path")
            }
        }
    }
}

// Exported only in the wasm build: native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
bindings::export!(Component with_types_in bindings);
