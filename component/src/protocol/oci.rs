//! The OCI distribution API (`/v2/`): what `docker push/pull`, skopeo and
//! BuildKit's `type=registry` cache speak.
//!
//! - `GET /v2/`: the API check (and the 401 challenge when tokens are on);
//! - blobs: `HEAD|GET /v2/<name>/blobs/<digest>` (with `Range`);
//! - uploads: `POST /v2/<name>/blobs/uploads/` (with `?digest=` for a
//!   monolithic upload, `?mount=&from=` for a cross-repository mount), then
//!   `PATCH` chunks, `PUT ?digest=` to finish, `GET` for the status and
//!   `DELETE` to cancel;
//! - manifests: `HEAD|GET|PUT /v2/<name>/manifests/<tag or digest>`;
//! - `GET /v2/<name>/tags/list`.
//!
//! The first component of a repository name with several (`team-a/app`) is
//! its namespace. Blobs are content-addressed and shared by the repositories
//! of a namespace (so mounts within it are free); manifests and tags belong to
//! one repository. Uploads keep no state in the process: a session is a small
//! marker blob, and its chunks are blocks staged in the store, so any instance
//! of any process can take the next request. Every upload is verified against
//! its digest before it is published, on every path. Store keys:
//!
//! ```text
//! oci/<namespace>/blobs/sha256:<hex>                  layers, configs
//! oci/<namespace>/uploads/<id>                         session marker (+ staged chunks)
//! oci/<namespace>/repos/<name>/_manifests/sha256:<hex> manifests by digest
//! oci/<namespace>/repos/<name>/_tags/<tag>             the tagged manifest, with its digest
//! ```
//!
//! A name without a namespace uses `_`, which no namespace can be. `_manifests`
//! and `_tags` cannot be name components, so no name reaches another's keys.
//!
//! **Caches BuildKit's `type=azblob` wrote** (with `prefix=<repository>`, into
//! the container blobcache's Azure store uses) are served too, so builders
//! without the account key can import them with `type=registry`: a tag
//! `<name>` the repository does not have is looked up as BuildKit's
//! `<repository>/manifests/<name>` (its cache config, with each layer's
//! media type, size and diff id), and answered as the image manifest
//! BuildKit's registry importer reads (config of type
//! `application/vnd.buildkit.cacheconfig.v0`); blobs the registry does not
//! have are looked up at `<repository>/blobs/<digest>`. The config and the
//! manifest are derived once and kept as registry content, so their digests
//! resolve like any other.

use crate::auth::{Caller, Need, Scope};
use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{BlobInfo, Error as StoreError, WriteMode};
use crate::blob;
use crate::blob::put_bytes;
use crate::error::{Failure, Kind};
use crate::http::body::read_small;
use crate::http::{Request, Response};
use crate::ids::hex;
use crate::route::{Endpoint, PathRules, Protocol, Root};

pub static PROTOCOL: Protocol = Protocol {
    name: "oci",
    root: Root::Segment("v2"),
    paths: PathRules::Collections,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render,
};

/// The first segments of the store keys the protocols write; names starting
/// with one never reach the azblob view.
const PROTOCOL_KEY_ROOTS: &[&str] = &["oci", "bazel", "ccache", "sccache", "gradle", "turbo", "nx"];

/// Sent with every answer; Docker checks it on `/v2/`.
const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// Largest manifest accepted (the distribution registry's limit).
const MAX_MANIFEST: usize = 4 << 20;
/// Most tags one listing returns.
const MAX_TAGS: usize = 10_000;
/// Metadata name of a tag's manifest digest.
const DIGEST_METADATA: &str = "oci_digest";

/// The manifest types accepted, as their `Content-Type`.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    Base,
    Blob { name: Name, digest: String },
    StartUpload { name: Name },
    Upload { name: Name, id: String },
    Manifest { name: Name, reference: Reference },
    Tags { name: Name },
}

/// A repository name, checked against the distribution spec's grammar.
#[derive(Debug, PartialEq, Eq)]
pub struct Name(String);

#[derive(Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(String),
}

impl Name {
    fn parse(segments: &[&str]) -> Result<Name, Failure> {
        let name = segments.join("/");
        let valid = !segments.is_empty()
            && name.len() <= 255
            && segments
                .iter()
                .all(|component| is_name_component(component));
        match valid {
            true => Ok(Name(name)),
            false => Err(Failure::bad_request(format!(
                "repository name {name:?} is invalid: lowercase letters and digits, \
                 separated by . _ __ or -"
            ))
            .with_code("NAME_INVALID")),
        }
    }

    /// The namespace tokens are scoped to: the first of several components.
    fn namespace(&self) -> Option<&str> {
        self.0.split_once('/').map(|(first, _)| first)
    }

    fn prefix(&self) -> String {
        format!("oci/{}", self.namespace().unwrap_or("_"))
    }

    fn blob_key(&self, digest: &str) -> String {
        format!("{}/blobs/{digest}", self.prefix())
    }

    fn upload_key(&self, id: &str) -> String {
        format!("{}/uploads/{id}", self.prefix())
    }

    fn manifest_key(&self, digest: &str) -> String {
        format!("{}/repos/{}/_manifests/{digest}", self.prefix(), self.0)
    }

    fn tags_prefix(&self) -> String {
        format!("{}/repos/{}/_tags/", self.prefix(), self.0)
    }

    /// Where BuildKit's `type=azblob` with `prefix=<name>` keeps a blob; none
    /// for names whose keys would fall among the protocols' own (`oci/...`,
    /// `ccache/...`), where other clients write what they like.
    fn azblob_blob_key(&self, digest: &str) -> Option<String> {
        self.outside_protocol_keys()
            .then(|| format!("{}/blobs/{digest}", self.0))
    }

    /// Where BuildKit's `type=azblob` with `prefix=<name>` keeps cache `tag`.
    fn azblob_manifest_key(&self, tag: &str) -> Option<String> {
        self.outside_protocol_keys()
            .then(|| format!("{}/manifests/{tag}", self.0))
    }

    fn outside_protocol_keys(&self) -> bool {
        let first = self.0.split('/').next().unwrap_or_default();
        !PROTOCOL_KEY_ROOTS.contains(&first)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_name_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            if !matches!(separator.as_str(), "" | "." | "_" | "__")
                && !separator.bytes().all(|s| s == b'-')
            {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

/// `sha256:<64 lowercase hex>`: the only algorithm served.
#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub fn parse_digest(digest: &str) -> Result<String, Failure> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if crate::path::is_sha256_hex(hex) => Ok(digest.to_string()),
        _ => Err(Failure::bad_request(format!(
            "digest {digest:?} is invalid: expected sha256:<64 lowercase hex digits>"
        ))
        .with_code("DIGEST_INVALID")),
    }
}

fn parse_reference(reference: &str) -> Result<Reference, Failure> {
    if reference.contains(':') {
        return parse_digest(reference).map(Reference::Digest);
    }
    let bytes = reference.as_bytes();
    let valid = (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    match valid {
        true => Ok(Reference::Tag(reference.to_string())),
        false => Err(
            Failure::bad_request(format!("tag {reference:?} is invalid")).with_code("TAG_INVALID"),
        ),
    }
}

/// An upload id: 32 lowercase hex digits, as [`new_upload_id`] makes them.
fn parse_upload_id(id: &str) -> Result<String, Failure> {
    let valid = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match valid {
        true => Ok(id.to_string()),
        false => Err(upload_unknown()),
    }
}

/// `rest` is the path after `/v2`; a last empty segment marks a trailing `/`.
pub fn parse(rest: &[&str]) -> Result<Call, Failure> {
    let rest = match rest.split_last() {
        Some((&"", init)) => init,
        _ => rest,
    };
    match rest {
        [] => Ok(Call::Base),
        [name @ .., "blobs", "uploads"] => Ok(Call::StartUpload {
            name: Name::parse(name)?,
        }),
        [name @ .., "blobs", "uploads", id] => Ok(Call::Upload {
            name: Name::parse(name)?,
            id: parse_upload_id(id)?,
        }),
        [name @ .., "blobs", digest] => Ok(Call::Blob {
            name: Name::parse(name)?,
            digest: parse_digest(digest)?,
        }),
        [name @ .., "manifests", reference] => Ok(Call::Manifest {
            name: Name::parse(name)?,
            reference: parse_reference(reference)?,
        }),
        [name @ .., "tags", "list"] => Ok(Call::Tags {
            name: Name::parse(name)?,
        }),
        _ => Err(
            Failure::new(Kind::NotFound, "no registry endpoint at this path")
                .with_code("NAME_UNKNOWN"),
        ),
    }
}

impl Call {
    fn name(&self) -> Option<&Name> {
        match self {
            Call::Base => None,
            Call::Blob { name, .. }
            | Call::StartUpload { name }
            | Call::Upload { name, .. }
            | Call::Manifest { name, .. }
            | Call::Tags { name } => Some(name),
        }
    }
}

impl Endpoint for Call {
    fn scope<'a>(&'a self, request: &'a Request) -> Scope<'a> {
        let need = match (self, request.method()) {
            (Call::StartUpload { .. } | Call::Upload { .. }, _) => Need::Write,
            (Call::Manifest { .. }, "PUT" | "DELETE") => Need::Write,
            _ => Need::Read,
        };
        match self.name() {
            Some(name) => Scope::in_path(need, name.namespace()),
            // The API check: any valid token, whatever its namespace.
            None => Scope::of_token(need),
        }
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        let response = match (self, request.method()) {
            (Call::Base, "GET" | "HEAD") => Response::json(200, &serde_json::json!({})),
            (Call::Blob { name, digest }, "GET" | "HEAD") => get_blob(request, name, digest)?,
            (Call::StartUpload { name }, "POST") => start_upload(request, name)?,
            (Call::Upload { name, id }, "PATCH") => patch_upload(request, name, id)?,
            (Call::Upload { name, id }, "PUT") => finish_upload(request, name, id)?,
            (Call::Upload { name, id }, "GET") => upload_status(name, id)?,
            (Call::Upload { name, id }, "DELETE") => cancel_upload(name, id)?,
            (Call::Manifest { name, reference }, "GET" | "HEAD") => {
                get_manifest(request, name, reference)?
            }
            (Call::Manifest { name, reference }, "PUT") => put_manifest(request, name, reference)?,
            (Call::Tags { name }, "GET") => list_tags(request, name)?,
            (Call::Base | Call::Tags { .. }, _) => return Err(unsupported("GET, HEAD")),
            (Call::Blob { .. }, _) => return Err(unsupported("GET, HEAD")),
            (Call::StartUpload { .. }, _) => return Err(unsupported("POST")),
            (Call::Upload { .. }, _) => return Err(unsupported("GET, PATCH, PUT, DELETE")),
            (Call::Manifest { .. }, _) => return Err(unsupported("GET, HEAD, PUT")),
        };
        Ok(response.with_header(API_VERSION.0, API_VERSION.1))
    }
}

fn unsupported(allow: &str) -> Failure {
    Failure::method_not_allowed(allow).with_code("UNSUPPORTED")
}

fn upload_unknown() -> Failure {
    Failure::new(Kind::NotFound, "upload session unknown").with_code("BLOB_UPLOAD_UNKNOWN")
}

fn blob_unknown(failure: Failure) -> Failure {
    match failure.kind {
        Kind::NotFound => failure.with_code("BLOB_UNKNOWN"),
        _ => failure,
    }
}

fn get_blob(request: &Request, name: &Name, digest: &str) -> Result<Response, Failure> {
    let digest_header = |_: &BlobInfo| vec![("docker-content-digest".into(), digest.to_string())];
    match blob::read_with_headers(request, &name.blob_key(digest), digest_header) {
        // Not pushed here: perhaps a layer BuildKit's azblob cache wrote.
        Err(failure) if failure.kind == Kind::NotFound => match name.azblob_blob_key(digest) {
            Some(key) => {
                // A digest the store computed must be the one asked for.
                if let Ok(info) = store::head(&key) {
                    if info
                        .sha256
                        .is_some_and(|hex| digest != format!("sha256:{hex}"))
                    {
                        return Err(blob_unknown(failure));
                    }
                }
                blob::read_with_headers(request, &key, digest_header).map_err(blob_unknown)
            }
            None => Err(blob_unknown(failure)),
        },
        other => other,
    }
}

/// 201 for a blob that is now in the repository.
fn blob_created(name: &Name, digest: &str) -> Response {
    Response::empty(201)
        .with_header("location", format!("/v2/{}/blobs/{digest}", name.0))
        .with_header("docker-content-digest", digest)
}

fn start_upload(request: &Request, name: &Name) -> Result<Response, Failure> {
    // A mount from a repository of the same namespace: the blob is already
    // shared there. Across namespaces the caller may not read the source, so
    // the client uploads instead (202), as the spec allows.
    if let Some(digest) = request.query_value("mount") {
        let digest = parse_digest(&digest)?;
        let from = request.query_value("from").unwrap_or_default();
        // Without a usable `from`, the client uploads instead (202).
        let from = Name::parse(&from.split('/').collect::<Vec<_>>()).ok();
        if from.is_some_and(|from| from.namespace() == name.namespace()) {
            match store::head(&name.blob_key(&digest)) {
                Ok(_) => return Ok(blob_created(name, &digest)),
                Err(StoreError::NotFound) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    // A monolithic upload in the POST itself.
    if let Some(digest) = request.query_value("digest") {
        let digest = parse_digest(&digest)?;
        put_blob(request, name, &digest)?;
        return Ok(blob_created(name, &digest));
    }
    let id = new_upload_id();
    let marker = blob::overwrite_options(Some(name.0.len() as u64));
    put_bytes(&name.upload_key(&id), name.0.as_bytes(), &marker)?;
    Ok(upload_answer(202, name, &id, 0))
}

/// A whole blob in one request body, verified against `digest`.
fn put_blob(request: &Request, name: &Name, digest: &str) -> Result<(), Failure> {
    let mut options = blob::overwrite_options(blob::declared_length(request)?);
    options.expected_sha256 = Some(digest["sha256:".len()..].to_string());
    blob::write(request, &name.blob_key(digest), &options).map_err(digest_mismatch)?;
    Ok(())
}

/// A verification failure of an upload, in the spec's words.
fn digest_mismatch(failure: Failure) -> Failure {
    match failure.kind {
        Kind::BadRequest => failure.with_code("DIGEST_INVALID"),
        _ => failure,
    }
}

/// 32 hex digits from the host's random source.
fn new_upload_id() -> String {
    crate::ids::random_hex(16)
}

/// 202/204 naming the session and the bytes it holds (`Range: 0-<last>`).
fn upload_answer(status: u16, name: &Name, id: &str, size: u64) -> Response {
    Response::empty(status)
        .with_header("location", format!("/v2/{}/blobs/uploads/{id}", name.0))
        .with_header("range", format!("0-{}", size.saturating_sub(1)))
        .with_header("docker-upload-uuid", id)
}

/// The chunks a session holds, in order; 404 for a session that does not exist.
fn session_chunks(name: &Name, id: &str) -> Result<(Vec<String>, u64), Failure> {
    let key = name.upload_key(id);
    match store::head(&key) {
        Ok(_) => {}
        Err(StoreError::NotFound) => return Err(upload_unknown()),
        Err(error) => return Err(error.into()),
    }
    let blocks = store::list_blocks(&key)?;
    let size = blocks.iter().map(|block| block.size).sum();
    Ok((blocks.into_iter().map(|block| block.id).collect(), size))
}

/// The id of the chunk after `count` others: ids sort in upload order.
fn chunk_id(count: usize) -> String {
    format!("{count:010}")
}

/// Stages the request body as the session's next chunk, if it has one.
fn stage_chunk(
    request: &Request,
    name: &Name,
    id: &str,
    chunks: &[String],
    size: u64,
) -> Result<u64, Failure> {
    if let Some(range) = request.header("content-range") {
        let start = range
            .trim()
            .trim_start_matches("bytes=")
            .split_once('-')
            .and_then(|(start, end)| Some((start.parse::<u64>().ok()?, end.parse::<u64>().ok()?)))
            .filter(|(start, end)| start <= end)
            .map(|(start, _)| start)
            .ok_or_else(|| {
                Failure::bad_request(format!("Content-Range {range:?} is not <start>-<end>"))
                    .with_code("BLOB_UPLOAD_INVALID")
            })?;
        if start != size {
            return Err(Failure::new(
                Kind::RangeNotSatisfiable,
                format!("chunk must start at byte {size}"),
            )
            .with_code("BLOB_UPLOAD_INVALID")
            .with_header("range", format!("0-{}", size.saturating_sub(1)))
            .with_header("location", format!("/v2/{}/blobs/uploads/{id}", name.0)));
        }
    }
    // A body of unknown length (chunked; hosts do not pass on
    // `transfer-encoding`) may still be empty: `stage` then stages nothing.
    let declared = blob::declared_length(request)?;
    if declared == Some(0) {
        return Ok(0);
    }
    // What is left of the size limit for the whole upload.
    let budget = crate::config::max_blob_size().map(|max| max.saturating_sub(size));
    let staged = blob::stage(
        request,
        &name.upload_key(id),
        &chunk_id(chunks.len()),
        declared,
        budget,
    )?;
    Ok(staged)
}

fn patch_upload(request: &Request, name: &Name, id: &str) -> Result<Response, Failure> {
    let (chunks, size) = session_chunks(name, id)?;
    let staged = stage_chunk(request, name, id, &chunks, size)?;
    Ok(upload_answer(202, name, id, size + staged))
}

fn finish_upload(request: &Request, name: &Name, id: &str) -> Result<Response, Failure> {
    let digest = parse_digest(&request.query_value("digest").unwrap_or_default())?;
    let (mut chunks, size) = session_chunks(name, id)?;
    if stage_chunk(request, name, id, &chunks, size)? > 0 {
        chunks.push(chunk_id(chunks.len()));
    }
    let upload_key = name.upload_key(id);
    let mut options = blob::overwrite_options(None);
    options.expected_sha256 = Some(digest["sha256:".len()..].to_string());
    options.staged_under = Some(upload_key.clone());
    store::commit_blocks(&name.blob_key(&digest), &chunks, &options)
        .map_err(|error| digest_mismatch(error.into()))?;
    let _ = store::delete(&upload_key);
    Ok(blob_created(name, &digest))
}

fn upload_status(name: &Name, id: &str) -> Result<Response, Failure> {
    let (_, size) = session_chunks(name, id)?;
    Ok(upload_answer(204, name, id, size))
}

/// Ends the session; its staged chunks are left to the store's expiry.
fn cancel_upload(name: &Name, id: &str) -> Result<Response, Failure> {
    session_chunks(name, id)?;
    store::delete(&name.upload_key(id))?;
    Ok(Response::empty(204))
}

fn get_manifest(
    request: &Request,
    name: &Name,
    reference: &Reference,
) -> Result<Response, Failure> {
    let (key, digest) = match reference {
        Reference::Digest(digest) => (name.manifest_key(digest), Some(digest.clone())),
        Reference::Tag(tag) => (format!("{}{tag}", name.tags_prefix()), None),
    };
    let headers = move |info: &BlobInfo| {
        let digest = digest.clone().or_else(|| {
            info.metadata
                .iter()
                .find(|(n, _)| n == DIGEST_METADATA)
                .map(|(_, v)| v.clone())
        });
        digest
            .map(|d| vec![("docker-content-digest".to_string(), d)])
            .unwrap_or_default()
    };
    let unknown = |failure: Failure| match failure.kind {
        Kind::NotFound => failure.with_code("MANIFEST_UNKNOWN"),
        _ => failure,
    };
    match (blob::read_with_headers(request, &key, headers), reference) {
        (Err(failure), Reference::Tag(tag)) if failure.kind == Kind::NotFound => {
            let digest = from_azblob_cache(name, tag).map_err(unknown)?;
            get_manifest(request, name, &Reference::Digest(digest))
        }
        (answer, _) => answer.map_err(unknown),
    }
}

/// BuildKit's cache config (`v1.CacheConfig`), as far as it is read here.
#[derive(serde::Deserialize)]
struct AzblobCacheConfig {
    #[serde(default)]
    layers: Vec<AzblobLayer>,
}

#[derive(serde::Deserialize)]
struct AzblobLayer {
    blob: String,
    annotations: Option<AzblobLayerAnnotations>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzblobLayerAnnotations {
    media_type: Option<String>,
    #[serde(rename = "diffID")]
    diff_id: Option<String>,
    size: Option<u64>,
    created_at: Option<String>,
}

/// The image manifest for cache `tag` of BuildKit's `type=azblob` layout,
/// kept with its config as registry content; returns its digest.
fn from_azblob_cache(name: &Name, tag: &str) -> Result<String, Failure> {
    let key = name
        .azblob_manifest_key(tag)
        .ok_or_else(|| Failure::new(Kind::NotFound, "manifest unknown"))?;
    let config = read_document(&key, MAX_MANIFEST)?;
    // A document that is not BuildKit's is no manifest of this repository.
    let unusable = |why: &str| {
        Failure::new(
            Kind::NotFound,
            format!("{key} is not a BuildKit cache config: {why}"),
        )
    };
    let parsed: AzblobCacheConfig =
        serde_json::from_slice(&config).map_err(|e| unusable(&e.to_string()))?;
    let mut layers = Vec::new();
    for layer in parsed.layers {
        let annotations = layer
            .annotations
            .ok_or_else(|| unusable("a layer has no annotations"))?;
        let size = annotations
            .size
            .ok_or_else(|| unusable("a layer has no size"))?;
        let mut descriptor_annotations = serde_json::Map::new();
        if let Some(diff_id) = annotations.diff_id {
            descriptor_annotations.insert("containerd.io/uncompressed".into(), diff_id.into());
        }
        if let Some(created) = annotations.created_at.filter(|t| !t.starts_with("0001-")) {
            descriptor_annotations.insert("buildkit/createdat".into(), created.into());
        }
        layers.push(serde_json::json!({
            "mediaType": annotations.media_type.unwrap_or_else(|| "application/vnd.oci.image.layer.v1.tar+gzip".into()),
            "digest": parse_digest(&layer.blob).map_err(|_| unusable("a layer digest is invalid"))?,
            "size": size,
            "annotations": descriptor_annotations,
        }));
    }
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[0],
        "config": {
            "mediaType": "application/vnd.buildkit.cacheconfig.v0",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    })
    .to_string()
    .into_bytes();
    let digest = format!("sha256:{}", sha256_hex(&manifest));
    let mut options = blob::overwrite_options(Some(config.len() as u64));
    options.expected_sha256 = Some(config_digest["sha256:".len()..].to_string());
    put_bytes(&name.blob_key(&config_digest), &config, &options)?;
    let mut options = blob::overwrite_options(Some(manifest.len() as u64));
    options.content_type = Some(MANIFEST_TYPES[0].into());
    put_bytes(&name.manifest_key(&digest), &manifest, &options)?;
    Ok(digest)
}

/// A small blob read whole (a manifest, a cache config), at most `limit` bytes.
fn read_document(key: &str, limit: usize) -> Result<Vec<u8>, Failure> {
    let (info, stream) = store::open(key, None)?;
    if info.size > limit as u64 {
        return Err(Failure::new(
            Kind::TooLarge,
            format!("{key} is over {limit} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(info.size as usize);
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(Failure::new(Kind::Unavailable, e.to_debug_string()))
            }
        }
        if bytes.len() > limit {
            return Err(Failure::new(
                Kind::TooLarge,
                format!("{key} is over {limit} bytes"),
            ));
        }
    }
    Ok(bytes)
}

/// What a manifest refers to, read from its JSON.
#[doc(hidden)] // public for the fuzz targets (fuzz/)
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDocument {
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[doc(hidden)] // public for the fuzz targets (fuzz/)
#[derive(serde::Deserialize)]
pub struct Descriptor {
    pub digest: String,
}

fn put_manifest(
    request: &Request,
    name: &Name,
    reference: &Reference,
) -> Result<Response, Failure> {
    let invalid = |why: String| Failure::bad_request(why).with_code("MANIFEST_INVALID");
    let bytes = read_small(request, MAX_MANIFEST).map_err(|error| {
        let failure: Failure = error.into();
        match failure.kind {
            Kind::TooLarge => failure.with_code("MANIFEST_INVALID"),
            _ => failure,
        }
    })?;
    let document: ManifestDocument = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("manifest is not JSON of a manifest: {e}")))?;
    let declared = request
        .header("content-type")
        .map(|t| t.split(';').next().unwrap_or("").trim().to_string());
    let media_type = declared
        .filter(|t| !t.is_empty())
        .or_else(|| document.media_type.clone())
        .ok_or_else(|| invalid("manifest has no media type".into()))?;
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "manifest type {media_type:?} is not served"
        )));
    }
    // Everything it refers to must be here: blobs for images, manifests of
    // this repository for indexes.
    for descriptor in document.config.iter().chain(&document.layers) {
        let digest = parse_digest(&descriptor.digest)?;
        match store::head(&name.blob_key(&digest)) {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(
                    Failure::bad_request(format!("blob {digest} is not in the registry"))
                        .with_code("MANIFEST_BLOB_UNKNOWN"),
                )
            }
            Err(error) => return Err(error.into()),
        }
    }
    for descriptor in &document.manifests {
        let digest = parse_digest(&descriptor.digest)?;
        match store::head(&name.manifest_key(&digest)) {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(Failure::bad_request(format!(
                    "manifest {digest} is not in this repository"
                ))
                .with_code("MANIFEST_UNKNOWN"))
            }
            Err(error) => return Err(error.into()),
        }
    }
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    if let Reference::Digest(expected) = reference {
        if *expected != digest {
            return Err(Failure::bad_request(format!(
                "manifest digest is {digest}, not {expected}"
            ))
            .with_code("DIGEST_INVALID"));
        }
    }
    let mut options = blob::overwrite_options(Some(bytes.len() as u64));
    options.content_type = Some(media_type);
    options.mode = WriteMode::Overwrite;
    put_bytes(&name.manifest_key(&digest), &bytes, &options)?;
    if let Reference::Tag(tag) = reference {
        options.metadata = vec![(DIGEST_METADATA.into(), digest.clone())];
        put_bytes(&format!("{}{tag}", name.tags_prefix()), &bytes, &options)?;
    }
    Ok(Response::empty(201)
        .with_header("location", format!("/v2/{}/manifests/{digest}", name.0))
        .with_header("docker-content-digest", digest))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn list_tags(request: &Request, name: &Name) -> Result<Response, Failure> {
    let prefix = name.tags_prefix();
    // Tags after `last` only, so a long listing pages within the cap.
    let last = request.query_value("last");
    let mut tags = Vec::new();
    let mut cursor = None;
    loop {
        let page = store::list(&prefix, cursor.as_deref(), 1000)?;
        tags.extend(
            page.entries
                .into_iter()
                .filter_map(|entry| entry.key.strip_prefix(&prefix).map(str::to_string))
                .filter(|tag| last.as_ref().is_none_or(|last| tag > last)),
        );
        if tags.len() > MAX_TAGS {
            return Err(Failure::new(
                Kind::TooLarge,
                format!("more than {MAX_TAGS} tags: page with n and last"),
            ));
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    tags.sort();
    let mut response_headers = Vec::new();
    if let Some(n) = request
        .query_param("n")
        .and_then(|n| n.parse::<usize>().ok())
    {
        if tags.len() > n {
            tags.truncate(n);
            if let Some(last) = tags.last() {
                response_headers.push((
                    "link".to_string(),
                    format!("</v2/{}/tags/list?n={n}&last={last}>; rel=\"next\"", name.0),
                ));
            }
        }
    }
    let paged = last.is_some() || request.query_param("n").is_some();
    if tags.is_empty() && !paged {
        return Err(
            Failure::new(Kind::NotFound, "repository has no tags").with_code("NAME_UNKNOWN")
        );
    }
    let mut response = Response::json(200, &serde_json::json!({ "name": name.0, "tags": tags }));
    response.headers.extend(response_headers);
    Ok(response)
}

/// `{"errors":[{"code","message","detail"}]}`, with the spec's codes, and the
/// API version header every registry answer carries. The challenge is Basic
/// only: a Bearer challenge sends clients looking for a token service.
fn render(failure: Failure) -> Response {
    let code = failure.code.unwrap_or(match failure.kind {
        Kind::Unauthorized => "UNAUTHORIZED",
        Kind::Forbidden => "DENIED",
        Kind::NotFound => "NAME_UNKNOWN",
        Kind::MethodNotAllowed => "UNSUPPORTED",
        Kind::TooLarge => "SIZE_INVALID",
        Kind::Unavailable => "UNAVAILABLE",
        Kind::Full | Kind::Internal => "UNKNOWN",
        _ => "UNSUPPORTED",
    });
    let body = serde_json::json!({
        "errors": [{ "code": code, "message": failure.reason, "detail": null }]
    });
    let mut response =
        Response::json(failure.status(), &body).with_header(API_VERSION.0, API_VERSION.1);
    response.headers.extend(
        failure
            .headers
            .into_iter()
            .filter(|(name, value)| name != "www-authenticate" || value.starts_with("Basic")),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "app",
            "team-a/app",
            "a/b/c",
            "my_app",
            "a__b",
            "a---b",
            "a.b",
        ] {
            assert!(
                Name::parse(&good.split('/').collect::<Vec<_>>()).is_ok(),
                "{good}"
            );
        }
        for bad in ["App", "-a", "a-", "a___b", "a..b", "_tags", "a.-b"] {
            assert!(
                Name::parse(&bad.split('/').collect::<Vec<_>>()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse(&[""]), Ok(Call::Base));
        assert_eq!(parse(&[]), Ok(Call::Base));
        assert!(matches!(
            parse(&["team-a", "app", "blobs", "uploads", ""]),
            Ok(Call::StartUpload { .. })
        ));
        assert!(matches!(
            parse(&["app", "blobs", &digest]),
            Ok(Call::Blob { .. })
        ));
        assert!(matches!(
            parse(&["app", "manifests", "v1.0"]),
            Ok(Call::Manifest {
                reference: Reference::Tag(_),
                ..
            })
        ));
        assert!(matches!(
            parse(&["app", "manifests", &digest]),
            Ok(Call::Manifest {
                reference: Reference::Digest(_),
                ..
            })
        ));
        assert!(matches!(
            parse(&["a", "tags", "list"]),
            Ok(Call::Tags { .. })
        ));
        let code = |path: &[&str]| parse(path).unwrap_err().code;
        assert_eq!(
            code(&["app", "blobs", "sha256:abc"]),
            Some("DIGEST_INVALID")
        );
        assert_eq!(code(&["app", "blobs", "md5:abc"]), Some("DIGEST_INVALID"));
        assert_eq!(code(&["App", "blobs", &digest]), Some("NAME_INVALID"));
        assert_eq!(code(&["app", "manifests", "-x"]), Some("TAG_INVALID"));
        assert_eq!(
            code(&["app", "blobs", "uploads", "nope"]),
            Some("BLOB_UPLOAD_UNKNOWN")
        );
    }

    #[test]
    fn keys_by_namespace() {
        let name = Name::parse(&["team-a", "app"]).unwrap();
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(name.blob_key(&digest), format!("oci/team-a/blobs/{digest}"));
        assert_eq!(
            name.manifest_key(&digest),
            format!("oci/team-a/repos/team-a/app/_manifests/{digest}")
        );
        let plain = Name::parse(&["app"]).unwrap();
        assert_eq!(plain.tags_prefix(), "oci/_/repos/app/_tags/");
    }
}
