//! The service's own endpoints: `/` (what this is; hosts such as Azure
//! Functions probe it), `/healthz` (liveness, without touching the store) and
//! `/status` (version, protocols, store facts as JSON).

use crate::auth::{Caller, Scope};
use crate::bindings::blobcache::store::store;
use crate::error::Failure;
use crate::http::{Request, Response};
use crate::route::{no_protocol, Endpoint, PathRules, Protocol, Root, TABLE};

use super::render_text;

pub static INDEX: Protocol = Protocol {
    name: "index",
    root: Root::Index,
    paths: PathRules::Keys,
    parse: |_| Ok(Box::new(Fixed("blobcache remote build cache; see /status"))),
    render: render_text,
};

pub static HEALTH: Protocol = Protocol {
    name: "health",
    root: Root::Segment("healthz"),
    paths: PathRules::Keys,
    parse: |rest| match rest {
        [] => Ok(Box::new(Fixed("ok"))),
        _ => Err(no_protocol()),
    },
    render: render_text,
};

pub static STATUS: Protocol = Protocol {
    name: "status",
    root: Root::Segment("status"),
    paths: PathRules::Keys,
    parse: |rest| match rest {
        [] => Ok(Box::new(Status)),
        _ => Err(no_protocol()),
    },
    render: render_text,
};

/// A fixed text answer to GET and HEAD, open to everyone.
struct Fixed(&'static str);

impl Endpoint for Fixed {
    fn scope<'a>(&'a self, _: &'a Request) -> Scope<'a> {
        Scope::OPEN
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        match request.method() {
            "GET" => Ok(Response::text(200, self.0)),
            "HEAD" => Ok(Response::text(200, self.0).without_body()),
            _ => Err(Failure::method_not_allowed("GET, HEAD")),
        }
    }
}

/// `/status` is open, but names where the data lives only to callers with a
/// token when tokens are configured.
struct Status;

impl Endpoint for Status {
    fn scope<'a>(&'a self, _: &'a Request) -> Scope<'a> {
        Scope::OPEN
    }

    fn handle(&self, request: &Request, caller: &Caller) -> Result<Response, Failure> {
        if !matches!(request.method(), "GET" | "HEAD") {
            return Err(Failure::method_not_allowed("GET, HEAD"));
        }
        let status = store::status();
        let protocols: Vec<&str> = TABLE
            .iter()
            .filter(|p| !matches!(p.root, Root::Index) && p.name != "health" && p.name != "status")
            .map(|p| p.name)
            .collect();
        let mut store = serde_json::json!({
            "kind": status.kind,
            "blob_count": status.blob_count,
            "total_bytes": status.total_bytes,
        });
        if caller.is_trusted() {
            store["location"] = status.location.into();
        }
        let json = serde_json::json!({
            "service": "blobcache",
            "version": env!("CARGO_PKG_VERSION"),
            "protocols": protocols,
            "access": match caller {
                Caller::Open => "open",
                _ => "tokens",
            },
            "max_blob_size": crate::config::max_blob_size(),
            "store": store,
        });
        let response = Response::json(200, &json);
        Ok(match request.is_head() {
            true => response.without_body(),
            false => response,
        })
    }
}
