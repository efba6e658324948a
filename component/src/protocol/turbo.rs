//! Turborepo's remote cache API (`TURBO_API=http://host`, the `/v8` paths
//! fixed by the client):
//!
//! - `GET /v8/artifacts/status`: `{"status":"enabled"}`;
//! - `HEAD|GET|PUT /v8/artifacts/<hash>`: the artifact (a compressed tar);
//! - `POST /v8/artifacts`: which of `{"hashes":[...]}` are cached;
//! - `POST /v8/artifacts/events`: the client's hit and miss events, accepted;
//! - `OPTIONS` on any of them: the CORS preflight turbo sends with `--preflight`.
//!
//! Every request names its team (`?teamId=team_...` or `?slug=...`), which is
//! the namespace: teams never see each other's artifacts, and a token scoped
//! to a namespace works for that team only. The task duration and the
//! client's signature (`x-artifact-duration`, `x-artifact-tag`) are stored with
//! the artifact and sent back with it; turbo verifies the signature itself.
//! Errors are `{"error":{"code":..,"message":..}}`, the shape turbo reads.

use serde::Deserialize;

use crate::auth::{Caller, Need, Scope};
use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{BlobInfo, Error as StoreError};
use crate::blob;
use crate::error::{Failure, Kind};
use crate::http::body::read_small;
use crate::http::{Request, Response};
use crate::path::{is_alphanumeric_key, is_key_char};
use crate::route::{Endpoint, PathRules, Protocol, Root};

pub static PROTOCOL: Protocol = Protocol {
    name: "turbo",
    root: Root::Segment("v8"),
    paths: PathRules::Keys,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render,
};

/// Longest artifact hash accepted (turbo's are 16 hex digits).
const MAX_HASH: usize = 128;
/// Most hashes one batch query may ask about.
const MAX_QUERY_HASHES: usize = 1000;
/// Largest JSON document accepted (a batch query of 1000 long hashes fits).
const MAX_DOCUMENT: usize = 256 << 10;
/// Longest `x-artifact-tag` stored (an HMAC-SHA256 in base64 is 44 bytes).
const MAX_TAG: usize = 1024;

/// Metadata names the headers are stored under.
const DURATION_METADATA: &str = "turbo_duration";
const TAG_METADATA: &str = "turbo_tag";

#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    Status,
    Artifact(String),
    Query,
    Events,
}

/// `rest` is the path after `/v8`; the team comes from the query, in `handle`.
pub fn parse(rest: &[&str]) -> Result<Call, Failure> {
    match rest {
        ["artifacts"] => Ok(Call::Query),
        ["artifacts", "status"] => Ok(Call::Status),
        ["artifacts", "events"] => Ok(Call::Events),
        ["artifacts", hash] if is_alphanumeric_key(hash, MAX_HASH) => {
            Ok(Call::Artifact(hash.to_string()))
        }
        ["artifacts", hash] => Err(Failure::bad_request(format!(
            "artifact hash {hash:?} is malformed: expected 1 to {MAX_HASH} letters and digits"
        ))),
        _ => Err(Failure::new(
            Kind::NotFound,
            "Turborepo's API is at /v8/artifacts",
        )),
    }
}

/// The artifact's team: `teamId` when given (turbo sends it for `team_` ids),
/// else `slug`. None when the request names no team.
fn team(request: &Request) -> Result<Option<&str>, Failure> {
    let named = |name| request.query_param(name).filter(|team| !team.is_empty());
    let team = named("teamId").or_else(|| named("slug"));
    match team {
        Some(team) if team.len() > 128 || !team.chars().all(is_key_char) => {
            Err(Failure::bad_request(
                "team is malformed: expected up to 128 letters, digits and ._~:+=@-",
            ))
        }
        team => Ok(team),
    }
}

fn store_key(team: Option<&str>, hash: &str) -> String {
    match team {
        Some(team) => format!("turbo/{team}/{hash}"),
        None => format!("turbo/{hash}"),
    }
}

impl Endpoint for Call {
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a> {
        let need = match (self, request.method()) {
            // Preflights carry no credentials a browser would trust.
            (_, "OPTIONS") => Need::Nothing,
            (Call::Artifact(_), "PUT") => Need::Write,
            _ => Need::Read,
        };
        // A malformed team is refused in `handle`; here it addresses nothing.
        Scope::in_path(need, team(request).ok().flatten())
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        let team = team(request)?;
        if request.method() == "OPTIONS" {
            return Ok(preflight(self));
        }
        match (self, request.method()) {
            (Call::Status, "GET" | "HEAD") => Ok(Response::json(
                200,
                &serde_json::json!({ "status": "enabled" }),
            )),
            (Call::Artifact(hash), "GET" | "HEAD") => {
                blob::read_with_headers(request, &store_key(team, hash), artifact_headers)
            }
            (Call::Artifact(hash), "PUT") => put(request, team, hash),
            (Call::Query, "POST") => query(request, team),
            (Call::Events, "POST") => events(request),
            (Call::Status, _) => Err(Failure::method_not_allowed("GET, HEAD, OPTIONS")),
            (Call::Artifact(_), _) => Err(Failure::method_not_allowed("GET, HEAD, PUT, OPTIONS")),
            (Call::Query | Call::Events, _) => Err(Failure::method_not_allowed("POST, OPTIONS")),
        }
    }
}

fn put(request: &Request, team: Option<&str>, hash: &str) -> Result<Response, Failure> {
    let mut options = blob::overwrite_options(blob::declared_length(request)?);
    if let Some(duration) = request.header("x-artifact-duration") {
        let duration = duration.trim();
        if duration.parse::<u64>().is_err() {
            return Err(Failure::bad_request(
                "x-artifact-duration is not a whole number of milliseconds",
            ));
        }
        options
            .metadata
            .push((DURATION_METADATA.into(), duration.into()));
    }
    if let Some(tag) = request.header("x-artifact-tag") {
        let tag = tag.trim();
        let is_base64 = tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'));
        if tag.is_empty() || tag.len() > MAX_TAG || !is_base64 {
            return Err(Failure::bad_request(format!(
                "x-artifact-tag is not a signature: expected 1 to {MAX_TAG} base64 characters"
            )));
        }
        options.metadata.push((TAG_METADATA.into(), tag.into()));
    }
    let key = store_key(team, hash);
    blob::write(request, &key, &options)?;
    // Vercel's answer names where the artifact went; turbo ignores the body.
    Ok(Response::json(
        202,
        &serde_json::json!({ "urls": [key.trim_start_matches("turbo/")] }),
    ))
}

/// `x-artifact-duration` and `x-artifact-tag`, as they were stored.
fn artifact_headers(info: &BlobInfo) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (name, value) in &info.metadata {
        match name.as_str() {
            DURATION_METADATA => headers.push(("x-artifact-duration".into(), value.clone())),
            TAG_METADATA => headers.push(("x-artifact-tag".into(), value.clone())),
            _ => {}
        }
    }
    headers
}

fn metadata<'a>(info: &'a BlobInfo, name: &str) -> Option<&'a str> {
    info.metadata
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Deserialize)]
struct Query {
    hashes: Vec<String>,
}

/// `{"hashes":[...]}` → `{"<hash>": {"size", "taskDurationMs", "tag"} | null}`.
fn query(request: &Request, team: Option<&str>) -> Result<Response, Failure> {
    let document = read_small(request, MAX_DOCUMENT)?;
    let query: Query = serde_json::from_slice(&document).map_err(|e| {
        Failure::bad_request(format!("batch query is not {{\"hashes\":[...]}}: {e}"))
    })?;
    if query.hashes.len() > MAX_QUERY_HASHES {
        return Err(Failure::bad_request(format!(
            "batch query asks about more than {MAX_QUERY_HASHES} hashes"
        )));
    }
    if let Some(bad) = query
        .hashes
        .iter()
        .find(|hash| !is_alphanumeric_key(hash, MAX_HASH))
    {
        return Err(Failure::bad_request(format!(
            "artifact hash {bad:?} is malformed: expected 1 to {MAX_HASH} letters and digits"
        )));
    }
    let mut answer = serde_json::Map::new();
    for hash in query.hashes {
        let found = match store::head(&store_key(team, &hash)) {
            Ok(info) => {
                let duration: u64 = metadata(&info, DURATION_METADATA)
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                let mut entry = serde_json::json!({
                    "size": info.size,
                    "taskDurationMs": duration,
                });
                if let Some(tag) = metadata(&info, TAG_METADATA) {
                    entry["tag"] = tag.into();
                }
                entry
            }
            Err(StoreError::NotFound) => serde_json::Value::Null,
            Err(error) => return Err(error.into()),
        };
        answer.insert(hash, found);
    }
    Ok(Response::json(200, &serde_json::Value::Object(answer)))
}

/// One event as turbo sends it; checked so a broken document is a 400, then
/// dropped (blobcache counts hits and misses itself).
#[derive(Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct Event {
    session_id: String,
    source: String,
    event: String,
    hash: String,
    duration: Option<u64>,
}

fn events(request: &Request) -> Result<Response, Failure> {
    let document = read_small(request, MAX_DOCUMENT)?;
    serde_json::from_slice::<Vec<Event>>(&document)
        .map_err(|e| Failure::bad_request(format!("events are not a list of cache events: {e}")))?;
    Ok(Response::empty(200))
}

/// The CORS answer turbo's `--preflight` needs to send its token on.
fn preflight(call: &Call) -> Response {
    let methods = match call {
        Call::Status => "GET, HEAD, OPTIONS",
        Call::Artifact(_) => "GET, HEAD, PUT, OPTIONS",
        Call::Query | Call::Events => "POST, OPTIONS",
    };
    Response::empty(200)
        .with_header("access-control-allow-origin", "*")
        .with_header("access-control-allow-methods", methods)
        .with_header(
            "access-control-allow-headers",
            "Authorization, Content-Type, User-Agent, x-artifact-duration, x-artifact-tag, \
             x-artifact-client-ci, x-artifact-client-interactive, x-artifact-sha, \
             x-artifact-dirty-hash",
        )
        .with_header("access-control-max-age", "600")
}

/// `{"error":{"code":..,"message":..}}` with the failure's status and headers.
/// 403 says `forbidden`, which makes turbo stop trying for the run.
fn render(failure: Failure) -> Response {
    let code = match failure.kind {
        Kind::BadRequest => "bad_request",
        Kind::Unauthorized => "unauthorized",
        Kind::Forbidden => "forbidden",
        Kind::NotFound => "not_found",
        Kind::MethodNotAllowed => "method_not_allowed",
        Kind::Conflict => "conflict",
        Kind::PreconditionFailed => "precondition_failed",
        Kind::TooLarge => "payload_too_large",
        Kind::UnsupportedMediaType => "unsupported_media_type",
        Kind::RangeNotSatisfiable => "range_not_satisfiable",
        Kind::Full => "storage_full",
        Kind::Unavailable => "service_unavailable",
        Kind::Internal => "internal_error",
    };
    let body = serde_json::json!({ "error": { "code": code, "message": failure.reason } });
    let mut response = Response::json(failure.status(), &body);
    response.headers.extend(failure.headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse(&["artifacts", "status"]), Ok(Call::Status));
        assert_eq!(parse(&["artifacts", "events"]), Ok(Call::Events));
        assert_eq!(parse(&["artifacts"]), Ok(Call::Query));
        assert_eq!(
            parse(&["artifacts", "fd7a8618ab01c131"]),
            Ok(Call::Artifact("fd7a8618ab01c131".into()))
        );
        assert_eq!(parse(&["artifacts", "a.b"]).unwrap_err().status(), 400);
        assert_eq!(parse(&["teams"]).unwrap_err().status(), 404);
        assert_eq!(parse(&[]).unwrap_err().status(), 404);
    }

    #[test]
    fn teams_are_namespaces_and_hashes_stay_apart() {
        assert_eq!(store_key(Some("team_1"), "ab"), "turbo/team_1/ab");
        assert_eq!(store_key(None, "ab"), "turbo/ab");
    }

    #[test]
    fn errors_are_json_turbo_reads() {
        let response = render(Failure::new(Kind::Forbidden, "no"));
        assert_eq!(response.status, 403);
        let crate::http::Body::Bytes(body) = response.body else {
            panic!("a JSON body")
        };
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "forbidden");
        assert_eq!(json["error"]["message"], "no");
    }
}
