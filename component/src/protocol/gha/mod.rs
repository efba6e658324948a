//! The GitHub Actions cache service v2, as BuildKit's `type=gha` and GitHub's
//! `actions/cache` (on self-hosted runners) call it: twirp at
//! `/twirp/github.actions.results.api.v1.CacheService/<method>`, JSON (proto
//! field names, int64 as number or string) or `application/protobuf`.
//!
//! - `CreateCacheEntry {key, version}`: reserves the entry and answers a signed
//!   upload URL; a key that exists or is being written is 409 `already_exists`.
//! - `FinalizeCacheEntryUpload {key, version, size_bytes}`: checks the uploaded
//!   size and makes the entry visible.
//! - `GetCacheEntryDownloadURL {key, restore_keys, version}`: the exact key, then
//!   the newest entry the key prefixes, then each restore key the same way, in
//!   each readable scope in turn; a miss is `200 {"ok":false}`.
//!
//! Bytes never pass through here: the signed URLs are real SAS URLs of the
//! Azure store, or URLs of blobcache's own Azure-compatible endpoint signed by
//! the server (see [`super::azure_blob::signed_url`]). Every state lives in the
//! store, so any instance can take any call.
//!
//! Store keys, under `gha/<namespace or _>/<scope>/`:
//! - `reservations/<version>/<key>`: an upload in progress, naming its data blob;
//! - `data/<id>`: the uploaded bytes;
//! - `entries/<version>/<key>`: a finalized entry, naming its data blob.

mod identity;
#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub mod message;

use serde_json::json;

use crate::auth::{Caller, Scope};
use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{
    Access as StoreAccess, BlobInfo, Error as StoreError, ListEntry, WriteMode,
};
use crate::blob;
use crate::error::{Failure, Kind};
use crate::http::body::read_small;
use crate::http::{Request, Response};
use crate::route::{Endpoint, PathRules, Protocol, Root};

use identity::Identity;
use message::{Encoding, Reply};

pub static PROTOCOL: Protocol = Protocol {
    name: "gha",
    root: Root::Segment("twirp"),
    paths: PathRules::Keys,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render,
};

const SERVICE: &str = "github.actions.results.api.v1.CacheService";
/// Largest request document (a key and ten restore keys are far smaller).
const MAX_DOCUMENT: usize = 64 << 10;
/// Longest key and version (GitHub's limit for keys).
const MAX_KEY: usize = 512;
/// Most restore keys one lookup may name.
const MAX_RESTORE_KEYS: usize = 32;
/// How long signed URLs stay valid.
const URL_TTL_SECS: u32 = 6 * 3600;
/// After this long an unfinished reservation may be taken over: a job that
/// died mid-upload must not lock its key forever.
const RESERVATION_TTL_SECS: u64 = 3600;
/// Most listing pages one prefix lookup reads.
const MAX_LIST_PAGES: usize = 20;

/// Metadata names of reservations and entries.
const DATA_METADATA: &str = "gha_data";
const SIZE_METADATA: &str = "gha_size";
const KEY_METADATA: &str = "gha_key";
const ENTRY_ID_METADATA: &str = "gha_entry_id";
/// When the entry was finalized, in Unix milliseconds: orders entries
/// finalized within one second (BuildKit's `#1`, `#2`, ... index entries).
const FINALIZED_METADATA: &str = "gha_finalized_ms";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    CreateCacheEntry,
    FinalizeCacheEntryUpload,
    GetCacheEntryDownloadUrl,
}

fn parse(rest: &[&str]) -> Result<Method, Failure> {
    let bad_route = |reason: String| Failure::new(Kind::NotFound, reason).with_code("bad_route");
    match rest {
        [SERVICE, "CreateCacheEntry"] => Ok(Method::CreateCacheEntry),
        [SERVICE, "FinalizeCacheEntryUpload"] => Ok(Method::FinalizeCacheEntryUpload),
        [SERVICE, "GetCacheEntryDownloadURL"] => Ok(Method::GetCacheEntryDownloadUrl),
        [SERVICE, method] => Err(bad_route(format!("no method {method} in {SERVICE}"))),
        _ => Err(bad_route(format!("twirp serves {SERVICE} only"))),
    }
}

impl Endpoint for Method {
    fn scope<'a>(&'a self, _: &'a Request) -> Scope<'a> {
        Scope::OWN_CREDENTIALS
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        if request.method() != "POST" {
            return Err(Failure::method_not_allowed("POST").with_code("bad_route"));
        }
        let encoding = Encoding::of(request.header("content-type").as_deref())?;
        let identity = identity::identify(request)?;
        let body = read_small(request, MAX_DOCUMENT)?;
        let message = message::decode(*self, encoding, &body)?;
        check_text("key", &message.key)?;
        check_text("version", &message.version)?;
        let reply = match self {
            Method::CreateCacheEntry => create(request, &identity, &message)?,
            Method::FinalizeCacheEntryUpload => finalize(&identity, &message)?,
            Method::GetCacheEntryDownloadUrl => lookup(request, &identity, &message)?,
        };
        Ok(message::encode(encoding, &reply))
    }
}

/// Keys and versions: 1 to 512 characters, no commas (GitHub's rule: a comma
/// would split a restore-key list).
fn check_text(what: &str, text: &str) -> Result<(), Failure> {
    if text.is_empty() || text.chars().count() > MAX_KEY || text.contains(',') {
        return Err(Failure::bad_request(format!(
            "{what} must be 1 to {MAX_KEY} characters without commas"
        ))
        .with_code("invalid_argument"));
    }
    Ok(())
}

/// Text as one store-key segment, prefix-preserving: `[A-Za-z0-9_~:+@-]` as
/// is, every other byte as `=HH`.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'~' | b':' | b'+' | b'@' | b'-' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("={byte:02X}")),
        }
    }
    out
}

/// Where one scope's entries live for a caller.
struct Place {
    base: String,
}

impl Place {
    fn new(identity: &Identity, scope: &str) -> Place {
        let namespace = identity.namespace.as_deref().unwrap_or("_");
        Place {
            base: format!("gha/{namespace}/{}", encode_segment(scope)),
        }
    }

    fn entry(&self, version: &str, key: &str) -> String {
        format!(
            "{}/entries/{}/{}",
            self.base,
            encode_segment(version),
            encode_segment(key)
        )
    }

    fn reservation(&self, version: &str, key: &str) -> String {
        format!(
            "{}/reservations/{}/{}",
            self.base,
            encode_segment(version),
            encode_segment(key)
        )
    }

    fn data(&self, id: &str) -> String {
        format!("{}/data/{id}", self.base)
    }
}

fn too_long(key: &str) -> Result<(), Failure> {
    blobcache_store_rules::check_key(key).map_err(|_| {
        Failure::bad_request("key and version are too long together once stored")
            .with_code("invalid_argument")
    })
}

fn metadata<'a>(info: &'a BlobInfo, name: &str) -> Option<&'a str> {
    info.metadata
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn create(
    request: &Request,
    identity: &Identity,
    message: &message::Request,
) -> Result<Reply, Failure> {
    let scope = identity.write_scope()?;
    let place = Place::new(identity, scope);
    let entry = place.entry(&message.version, &message.key);
    let reservation = place.reservation(&message.version, &message.key);
    too_long(&entry)?;
    too_long(&reservation)?;
    let exists = || {
        Failure::new(
            Kind::Conflict,
            format!("cache entry {:?} exists or is being written", message.key),
        )
        .with_code("already_exists")
    };
    match store::head(&entry) {
        Ok(_) => return Err(exists()),
        Err(StoreError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    let data = place.data(&crate::ids::random_hex(16));
    // Signed first: a server that cannot sign must not leave the key reserved.
    let url = signed_url(request, &data, StoreAccess::Write)?;
    let now = crate::credentials::now_unix();
    let mut options = blob::overwrite_options(None);
    options.mode = WriteMode::CreateOnly;
    options.content_type = Some("application/json".into());
    options.metadata = vec![
        (DATA_METADATA.into(), data.clone()),
        (KEY_METADATA.into(), message.key.clone()),
    ];
    let record =
        json!({ "key": message.key, "version": message.version, "data": data, "created": now });
    let record = record.to_string().into_bytes();
    match blob::put_bytes(&reservation, &record, &options) {
        Ok(_) => {}
        Err(failure) if failure.kind == Kind::Conflict => {
            // Taken over only when stale, and only from the reservation seen.
            let held = store::head(&reservation)?;
            if now.saturating_sub(held.last_modified) < RESERVATION_TTL_SECS {
                return Err(exists());
            }
            options.mode = WriteMode::Overwrite;
            options.if_match = Some(held.etag);
            blob::put_bytes(&reservation, &record, &options).map_err(|failure| {
                match failure.kind {
                    Kind::PreconditionFailed => exists(),
                    _ => failure,
                }
            })?;
        }
        Err(failure) => return Err(failure),
    }
    Ok(Reply::Created { url })
}

fn finalize(identity: &Identity, message: &message::Request) -> Result<Reply, Failure> {
    let scope = identity.write_scope()?;
    let place = Place::new(identity, scope);
    let reservation = place.reservation(&message.version, &message.key);
    let entry = place.entry(&message.version, &message.key);
    too_long(&entry)?;
    let Some(size) = message.size_bytes else {
        return Err(Failure::bad_request("size_bytes is required").with_code("invalid_argument"));
    };
    let held = match store::head(&reservation) {
        Ok(info) => info,
        Err(StoreError::NotFound) => {
            return Err(Failure::new(
                Kind::NotFound,
                format!(
                    "no upload of {:?} with this version is in progress: CreateCacheEntry first",
                    message.key
                ),
            )
            .with_code("not_found"))
        }
        Err(error) => return Err(error.into()),
    };
    let data = metadata(&held, DATA_METADATA)
        .ok_or_else(|| Failure::new(Kind::Internal, "the reservation names no data blob"))?
        .to_string();
    let uploaded = match store::head(&data) {
        Ok(info) => info.size,
        Err(StoreError::NotFound) => {
            return Err(Failure::new(
                Kind::PreconditionFailed,
                "nothing was uploaded to the signed URL (was Put Block List sent?)",
            )
            .with_code("failed_precondition"))
        }
        Err(error) => return Err(error.into()),
    };
    if uploaded != size {
        return Err(Failure::bad_request(format!(
            "{uploaded} bytes were uploaded, size_bytes says {size}"
        ))
        .with_code("invalid_argument"));
    }
    let id_bytes = wasip2::random::random::get_random_bytes(8);
    // 53 bits: JavaScript clients read it as a number without rounding.
    let entry_id = u64::from_be_bytes(id_bytes.try_into().expect("8 bytes")) >> 11;
    let mut options = blob::overwrite_options(None);
    options.mode = WriteMode::CreateOnly;
    options.content_type = Some("application/json".into());
    options.metadata = vec![
        (DATA_METADATA.into(), data.clone()),
        (SIZE_METADATA.into(), size.to_string()),
        (KEY_METADATA.into(), message.key.clone()),
        (ENTRY_ID_METADATA.into(), entry_id.to_string()),
        (FINALIZED_METADATA.into(), now_millis().to_string()),
    ];
    let record = json!({ "key": message.key, "version": message.version, "data": data,
                         "size": size, "entry_id": entry_id.to_string() });
    blob::put_bytes(&entry, record.to_string().as_bytes(), &options).map_err(|failure| {
        match failure.kind {
            Kind::Conflict => Failure::new(
                Kind::Conflict,
                format!("cache entry {:?} exists already", message.key),
            )
            .with_code("already_exists"),
            _ => failure,
        }
    })?;
    // The entry stands on its own now; a reservation left behind only
    // delays a takeover that can no longer happen.
    let _ = store::delete(&reservation);
    Ok(Reply::Finalized { entry_id })
}

fn lookup(
    request: &Request,
    identity: &Identity,
    message: &message::Request,
) -> Result<Reply, Failure> {
    if message.restore_keys.len() > MAX_RESTORE_KEYS {
        return Err(
            Failure::bad_request(format!("at most {MAX_RESTORE_KEYS} restore keys"))
                .with_code("invalid_argument"),
        );
    }
    for restore_key in &message.restore_keys {
        check_text("restore key", restore_key)?;
    }
    for scope in identity.read_scopes() {
        let place = Place::new(identity, scope);
        let candidates = std::iter::once(&message.key).chain(&message.restore_keys);
        for candidate in candidates {
            if let Some(found) = find(&place, &message.version, candidate)? {
                let data = metadata(&found.info, DATA_METADATA)
                    .ok_or_else(|| Failure::new(Kind::Internal, "an entry names no data blob"))?;
                let matched = metadata(&found.info, KEY_METADATA)
                    .unwrap_or(candidate)
                    .to_string();
                let url = signed_url(request, data, StoreAccess::Read)?;
                return Ok(Reply::Found { url, matched });
            }
        }
    }
    Ok(Reply::Missed)
}

/// The entry for `key` exactly, else the newest whose key starts with it.
fn find(place: &Place, version: &str, key: &str) -> Result<Option<ListEntry>, Failure> {
    let exact = place.entry(version, key);
    if blobcache_store_rules::check_key(&exact).is_err() {
        return Ok(None);
    }
    match store::head(&exact) {
        Ok(info) => return Ok(Some(ListEntry { key: exact, info })),
        Err(StoreError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    let mut newest: Option<ListEntry> = None;
    let mut cursor = None;
    let age = |entry: &ListEntry| {
        metadata(&entry.info, FINALIZED_METADATA)
            .and_then(|ms| ms.parse::<u64>().ok())
            .unwrap_or(entry.info.last_modified.saturating_mul(1000))
    };
    for _ in 0..MAX_LIST_PAGES {
        let page = store::list(&exact, cursor.as_deref(), 1000)?;
        for entry in page.entries {
            let newer = newest
                .as_ref()
                .is_none_or(|best| (age(&entry), &entry.key) > (age(best), &best.key));
            if newer {
                newest = Some(entry);
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(newest)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A URL the client moves the bytes of `key` with: the store's own (Azure
/// SAS), else blobcache's Azure endpoint under the server's signature.
fn signed_url(request: &Request, key: &str, access: StoreAccess) -> Result<String, Failure> {
    if let Some(url) = store::presign(key, access, URL_TTL_SECS)? {
        return Ok(url);
    }
    let permissions = match access {
        StoreAccess::Read => "r",
        StoreAccess::Write => "cw",
    };
    super::azure_blob::signed_url(&request.origin(), key, permissions, URL_TTL_SECS.into())
}

/// Twirp's error answer: `{"code":..,"msg":..}` with the matching status.
pub fn render(failure: Failure) -> Response {
    let code = failure.code.unwrap_or(match failure.kind {
        Kind::BadRequest => "invalid_argument",
        Kind::Unauthorized => "unauthenticated",
        Kind::Forbidden => "permission_denied",
        Kind::NotFound => "not_found",
        Kind::MethodNotAllowed => "bad_route",
        Kind::Conflict => "already_exists",
        Kind::PreconditionFailed => "failed_precondition",
        Kind::TooLarge => "malformed",
        Kind::UnsupportedMediaType => "bad_route",
        Kind::RangeNotSatisfiable => "out_of_range",
        Kind::Full => "resource_exhausted",
        Kind::Unavailable => "unavailable",
        Kind::Internal => "internal",
    });
    let status = match code {
        "malformed" | "invalid_argument" | "out_of_range" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "not_found" | "bad_route" => 404,
        "already_exists" | "aborted" => 409,
        "failed_precondition" => 412,
        "resource_exhausted" => 429,
        "unavailable" => 503,
        _ => 500,
    };
    let mut response = Response::json(status, &json!({ "code": code, "msg": failure.reason }));
    response.headers.extend(failure.headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_prefixes_and_key_rules() {
        let key = "index-buildkit-1-0a1b2c3d#1";
        let encoded = encode_segment(key);
        assert_eq!(encoded, "index-buildkit-1-0a1b2c3d=231");
        assert!(encoded.starts_with(&encode_segment("index-buildkit-1-0a1b2c3d#")));
        assert_eq!(encode_segment("refs/heads/main"), "refs=2Fheads=2Fmain");
        assert_eq!(encode_segment(".."), "=2E=2E");
        assert!(blobcache_store_rules::check_key(&encode_segment("a b/ü.=..")).is_ok());
    }

    #[test]
    fn routes_and_errors() {
        assert!(parse(&[SERVICE, "CreateCacheEntry"]).is_ok());
        assert_eq!(parse(&[SERVICE, "Nope"]).unwrap_err().status(), 404);
        let response = render(Failure::new(Kind::Conflict, "x").with_code("already_exists"));
        assert_eq!(response.status, 409);
        assert_eq!(render(Failure::bad_request("x")).status, 400);
    }
}
