//! `GET /status`: what is serving, and what the store holds where that is cheap to know.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

use crate::bindings::blobcache::store::store;
use crate::http;

pub fn serve(request: &IncomingRequest, out: ResponseOutparam) {
    if !matches!(http::method(request).as_str(), "GET" | "HEAD") {
        return http::method_not_allowed(out, "GET, HEAD");
    }
    let status = store::status();
    let json = serde_json::json!({
        "service": "blobcache",
        "version": env!("CARGO_PKG_VERSION"),
        "protocols": ["bazel", "ccache"],
        "max_blob_size": crate::config::max_blob_size(),
        "store": {
            "kind": status.kind,
            "location": status.location,
            "blob_count": status.blob_count,
            "total_bytes": status.total_bytes,
        },
    });
    http::respond_json(out, 200, &json);
}
