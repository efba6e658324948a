//! An Azure-Blob-compatible endpoint, path-style under `/azure`:
//! `/azure/<account>/<container>/<blob>`, the subset BuildKit's `type=azblob`
//! cache and the GitHub Actions cache data plane drive through Microsoft's SDKs.
//!
//! - Container: properties (`?restype=container`), create (it exists already),
//!   List Blobs (`&comp=list`: `prefix`, `marker`, `maxresults`, `include=metadata`).
//! - Blob: HEAD, GET (`Range` or `x-ms-range`: 206), Put Blob, Put Block, Put
//!   Block List, Get Block List, Delete; `If-None-Match: *` and `If-Match` on writes.
//! - Every answer carries `x-ms-request-id`; errors carry `x-ms-error-code` and,
//!   except for HEAD, an XML `<Error>` body; writes answer 201.
//!
//! One container is served (see [`crate::config::azure_endpoint_container`])
//! and a blob name is its store key, unchanged: with the Azure store on that
//! container, blobcache and BuildKit writing to Azure directly see the same
//! blobs. Requests are signed with Shared Key by an account named after a token
//! (its key issued by blobcache, see [`crate::credentials`]), or carry a SAS.

#[doc(hidden)] // public for the fuzz targets (fuzz/)
pub mod credential;
pub mod xml;

use crate::auth::{Access, Caller, Need, Scope};
use crate::bindings::blobcache::store::store;
use crate::bindings::blobcache::store::types::{BlobInfo, WriteMode, WriteOptions};
use crate::blob;
use crate::credentials::SIGNER_ACCOUNT;
use crate::error::{Failure, Kind};
use crate::http::body::read_small;
use crate::http::request::percent_decode_strict;
use crate::http::{Request, Response};
use crate::route::{Endpoint, PathRules, Protocol, Root};

pub use credential::Credential;

pub static PROTOCOL: Protocol = Protocol {
    name: "azure-blob",
    root: Root::Segment(ROOT),
    paths: PathRules::Raw,
    parse: |rest| Ok(Box::new(parse(rest)?)),
    render,
};

/// The endpoint's root; BuildKit carries it in `account_url`.
pub const ROOT: &str = "azure";
/// Largest Put Block List body: 50,000 ids (Azure's cap) of 88 characters fit.
const MAX_BLOCK_LIST: usize = 8 << 20;
/// Most blobs one List Blobs page holds (Azure's cap).
const MAX_LIST_RESULTS: u32 = 5000;
/// Longest blob name (Azure's limit, and the store's key limit).
const MAX_NAME: usize = 1024;
/// Key roots other protocols own; their entries are written only through
/// them, which check what they store (digests, write-once rules).
const RESERVED_ROOTS: &[&str] = &[
    "oci", "nx", "turbo", "ccache", "sccache", "gradle", "gha", "bazel",
];
/// What the GitHub Actions cache keeps under its root: written only through
/// URLs the server signed.
pub const GHA_ROOT: &str = "gha";

#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    account: String,
    /// The container, when the path names one.
    container: Option<String>,
    /// The decoded blob name, when the path names one.
    blob: Option<String>,
}

fn parse(rest: &[&str]) -> Result<Call, Failure> {
    let invalid = |reason: String| Failure::bad_request(reason).with_code("InvalidUri");
    let Some((account, rest)) = rest.split_first() else {
        return Err(invalid(
            "expected /azure/<account>/<container>/<blob>".into(),
        ));
    };
    if account.is_empty()
        || account.len() > 64
        || !account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(invalid(format!("account name {account:?} is malformed")));
    }
    let (container, blob) = match rest {
        [] | [""] => (None, None),
        [container] => (Some(*container), None),
        [container, blob @ ..] => (Some(*container), Some(blob.join("/"))),
    };
    let blob = match blob {
        None => None,
        Some(raw) => Some(percent_decode_strict(&raw).ok_or_else(|| {
            Failure::bad_request("the blob name has a malformed percent escape")
                .with_code("InvalidResourceName")
        })?),
    };
    Ok(Call {
        account: account.to_string(),
        container: container.map(str::to_string),
        blob,
    })
}

impl Endpoint for Call {
    fn scope<'a>(&'a self, _: &'a Request) -> Scope<'a> {
        Scope::OWN_CREDENTIALS
    }

    fn handle(&self, request: &Request, _: &Caller) -> Result<Response, Failure> {
        let version = request.header("x-ms-version");
        let result = self.serve(request);
        let mut response = result.unwrap_or_else(render);
        if let Some(version) = version {
            response = response.with_header("x-ms-version", version);
        }
        Ok(response)
    }
}

/// An operation of the REST subset, from method and query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    ContainerProperties,
    CreateContainer,
    ListBlobs,
    ReadBlob,
    PutBlob,
    PutBlock,
    PutBlockList,
    GetBlockList,
    DeleteBlob,
}

impl Operation {
    fn need(self) -> Need {
        match self {
            Operation::PutBlob
            | Operation::PutBlock
            | Operation::PutBlockList
            | Operation::DeleteBlob
            | Operation::CreateContainer => Need::Write,
            _ => Need::Read,
        }
    }

    /// The SAS permission letters any one of which allows the operation.
    fn sas_permissions(self) -> &'static str {
        match self {
            Operation::ReadBlob | Operation::GetBlockList => "r",
            Operation::PutBlob | Operation::PutBlock | Operation::PutBlockList => "cw",
            Operation::DeleteBlob => "d",
            _ => "",
        }
    }
}

impl Call {
    fn operation(&self, request: &Request) -> Result<Operation, Failure> {
        let restype = request.query_value("restype");
        let comp = request.query_value("comp");
        let method = request.method();
        let operation = match (&self.blob, restype.as_deref(), comp.as_deref(), method) {
            (None, Some("container"), None, "GET" | "HEAD") => Operation::ContainerProperties,
            (None, Some("container"), None, "PUT") => Operation::CreateContainer,
            (None, Some("container"), Some("list"), "GET") => Operation::ListBlobs,
            (Some(_), None, None, "GET" | "HEAD") => Operation::ReadBlob,
            (Some(_), None, None, "PUT") => Operation::PutBlob,
            (Some(_), None, Some("block"), "PUT") => Operation::PutBlock,
            (Some(_), None, Some("blocklist"), "PUT") => Operation::PutBlockList,
            (Some(_), None, Some("blocklist"), "GET" | "HEAD") => Operation::GetBlockList,
            (Some(_), None, None, "DELETE") => Operation::DeleteBlob,
            _ => {
                return Err(Failure::bad_request(format!(
                    "{method} with restype={} and comp={} is not an operation this endpoint serves",
                    restype.as_deref().unwrap_or(""),
                    comp.as_deref().unwrap_or("")
                ))
                .with_code("UnsupportedHttpVerb"))
            }
        };
        Ok(operation)
    }

    fn serve(&self, request: &Request) -> Result<Response, Failure> {
        let Some(container) = self.container.as_deref() else {
            return Err(Failure::bad_request(
                "account-level operations are not served: name a container",
            )
            .with_code("UnsupportedQueryParameter"));
        };
        let now = crate::credentials::now_unix();
        let credential = credential::verify(
            request,
            &self.account,
            (container, self.blob.as_deref()),
            now,
        )?;
        let operation = self.operation(request)?;
        authorize(&credential, operation, self.blob.as_deref())?;
        let served = crate::config::azure_endpoint_container();
        if container != served {
            return Err(match operation {
                Operation::CreateContainer => Failure::new(
                    Kind::Forbidden,
                    format!("this endpoint serves the container {served:?} only"),
                )
                .with_code("AuthorizationFailure"),
                _ => Failure::new(
                    Kind::NotFound,
                    format!("no container {container:?}: this endpoint serves {served:?}"),
                )
                .with_code("ContainerNotFound"),
            });
        }
        let name = self.blob.as_deref().unwrap_or("");
        let response = match operation {
            Operation::ContainerProperties => Response::empty(200)
                .with_header("etag", "\"0x1\"")
                .with_header("last-modified", epoch_date())
                .with_header("x-ms-has-immutability-policy", "false")
                .with_header("x-ms-has-legal-hold", "false"),
            Operation::CreateContainer => {
                return Err(Failure::new(Kind::Conflict, "the container exists")
                    .with_code("ContainerAlreadyExists"))
            }
            Operation::ListBlobs => list_blobs(request, &credential, &self.account, container)?,
            Operation::ReadBlob => read_blob(request, name)?,
            Operation::PutBlob => put_blob(request, name)?,
            Operation::PutBlock => put_block(request, name)?,
            Operation::PutBlockList => put_block_list(request, name)?,
            Operation::GetBlockList => get_block_list(name)?,
            Operation::DeleteBlob => {
                blob::delete(name).map_err(blob_failure)?;
                Response::empty(202)
            }
        };
        Ok(response.with_header("x-ms-request-id", crate::ids::random_uuid()))
    }
}

/// Whether `credential` may do `operation` on `name`: its access, its
/// namespace (names start with `<namespace>/`), a SAS's blob and permissions,
/// and the key roots of other protocols.
fn authorize(
    credential: &Credential,
    operation: Operation,
    name: Option<&str>,
) -> Result<(), Failure> {
    let denied = |reason: String| {
        Failure::new(Kind::Forbidden, reason).with_code("AuthorizationPermissionMismatch")
    };
    let grant = credential.grant();
    if let Credential::Sas { permissions, .. } = credential {
        let allowed = operation.sas_permissions();
        if !permissions.chars().any(|p| allowed.contains(p)) {
            return Err(denied(format!(
                "the SAS (permissions {permissions:?}) does not allow this operation"
            )));
        }
    }
    if operation.need() == Need::Write && grant.access == Access::Read {
        return Err(denied(format!("account {:?} may only read", grant.name)));
    }
    let Some(name) = name else {
        return Ok(());
    };
    check_name(name)?;
    let root = name.split('/').next().unwrap_or("");
    if credential.is_signer() {
        return match root == GHA_ROOT {
            true => Ok(()),
            false => Err(denied(
                "the server signs URLs for its own entries only".into(),
            )),
        };
    }
    if RESERVED_ROOTS.contains(&root) || is_bazel_key(name) {
        return Err(Failure::new(
            Kind::Forbidden,
            format!("names under {root}/ and Bazel's ac/ and cas/ keys belong to other protocols"),
        )
        .with_code("AuthorizationFailure"));
    }
    if let Some(namespace) = &grant.namespace {
        if root != namespace || !name.contains('/') {
            return Err(denied(format!(
                "account {:?} may use names under {namespace}/ only (BuildKit: prefix={namespace})",
                grant.name
            )));
        }
    }
    Ok(())
}

/// A blob name must be a valid store key (`[A-Za-z0-9._~:+=@-]` segments).
fn check_name(name: &str) -> Result<(), Failure> {
    if name.len() > MAX_NAME {
        return Err(
            Failure::bad_request(format!("blob names are at most {MAX_NAME} bytes"))
                .with_code("InvalidResourceName"),
        );
    }
    blobcache_store_rules::check_key(name).map_err(|reason| {
        Failure::bad_request(format!("blob name not served: {reason}"))
            .with_code("InvalidResourceName")
    })
}

/// Bazel's `[<prefix>/]ac|cas/<sha256>` keys: written only through Bazel's
/// protocol, which checks CAS digests.
fn is_bazel_key(name: &str) -> bool {
    let mut segments = name.rsplit('/');
    let (Some(hash), Some(kind)) = (segments.next(), segments.next()) else {
        return false;
    };
    matches!(kind, "ac" | "cas") && crate::path::is_sha256_hex(hash)
}

/// The store failure of a blob operation in Azure's codes.
fn blob_failure(failure: Failure) -> Failure {
    if failure.code.is_some() {
        return failure;
    }
    let code = match failure.kind {
        Kind::NotFound => "BlobNotFound",
        Kind::Conflict => "BlobAlreadyExists",
        Kind::PreconditionFailed => "ConditionNotMet",
        Kind::TooLarge => "RequestBodyTooLarge",
        Kind::RangeNotSatisfiable => "InvalidRange",
        _ => return failure,
    };
    failure.with_code(code)
}

fn read_blob(request: &Request, name: &str) -> Result<Response, Failure> {
    // `x-ms-range` wins over `Range`, as in Azure.
    let range = request
        .header("x-ms-range")
        .or_else(|| request.header("range"));
    blob::read_ranged(request, name, range, blob_headers).map_err(blob_failure)
}

/// What Azure says of a blob besides the HTTP basics.
fn blob_headers(info: &BlobInfo) -> Vec<(String, String)> {
    let mut headers = vec![
        ("x-ms-blob-type".to_string(), "BlockBlob".to_string()),
        ("accept-ranges".to_string(), "bytes".to_string()),
        ("x-ms-server-encrypted".to_string(), "false".to_string()),
    ];
    if let Some(date) = crate::http::http_date(info.last_modified) {
        headers.push(("x-ms-creation-time".to_string(), date));
    }
    for (name, value) in &info.metadata {
        if is_metadata_name(name) {
            headers.push((format!("x-ms-meta-{name}"), value.clone()));
        }
    }
    headers
}

/// Metadata names are C# identifiers in Azure.
fn is_metadata_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The write options a Put Blob or Put Block List asks for: conditions,
/// content type and metadata.
fn write_options(
    request: &Request,
    name: &str,
    expected_size: Option<u64>,
) -> Result<WriteOptions, Failure> {
    let mut options = blob::overwrite_options(expected_size);
    match request.header("if-none-match").as_deref().map(str::trim) {
        None => {}
        Some("*") => options.mode = WriteMode::CreateOnly,
        Some(_) => {
            return Err(
                Failure::bad_request("only If-None-Match: * is served on writes")
                    .with_code("UnsupportedHeader"),
            )
        }
    }
    if let Some(etag) = request.header("if-match") {
        let etag = etag.trim().to_string();
        if etag == "*" {
            // Any existing blob: the current one's etag.
            let info = store::head(name).map_err(|_| {
                Failure::new(Kind::PreconditionFailed, "the blob does not exist")
                    .with_code("ConditionNotMet")
            })?;
            options.if_match = Some(info.etag);
        } else {
            options.if_match = Some(etag);
        }
    }
    options.content_type = request.header("x-ms-blob-content-type");
    for (name, value) in request.header_map().iter() {
        if let Some(meta) = name.as_str().strip_prefix("x-ms-meta-") {
            if !is_metadata_name(meta) {
                return Err(Failure::bad_request(format!(
                    "metadata name {meta:?} is not a C# identifier"
                ))
                .with_code("InvalidMetadata"));
            }
            let value = value
                .to_str()
                .map_err(|_| Failure::bad_request("metadata values must be ASCII"))?;
            options.metadata.push((meta.to_string(), value.to_string()));
        }
    }
    Ok(options)
}

fn written(status: u16, info: &BlobInfo) -> Response {
    let mut response = Response::empty(status)
        .with_header("etag", info.etag.clone())
        .with_header("x-ms-request-server-encrypted", "false");
    if let Some(date) = crate::http::http_date(info.last_modified) {
        response = response.with_header("last-modified", date);
    }
    response
}

fn put_blob(request: &Request, name: &str) -> Result<Response, Failure> {
    match request.header("x-ms-blob-type").as_deref() {
        Some("BlockBlob") => {}
        Some(_) => {
            return Err(
                Failure::bad_request("only block blobs are served").with_code("InvalidHeaderValue")
            )
        }
        None => {
            return Err(
                Failure::bad_request("Put Blob needs x-ms-blob-type: BlockBlob")
                    .with_code("MissingRequiredHeader"),
            )
        }
    }
    let options = write_options(request, name, blob::declared_length(request)?)?;
    let info = blob::write(request, name, &options).map_err(blob_failure)?;
    Ok(written(201, &info))
}

fn put_block(request: &Request, name: &str) -> Result<Response, Failure> {
    let Some(id) = request.query_value("blockid") else {
        return Err(Failure::bad_request("Put Block needs blockid")
            .with_code("MissingRequiredQueryParameter"));
    };
    check_block_id(&id)?;
    let length = blob::declared_length(request)?;
    if length == Some(0) {
        return Err(
            Failure::bad_request("a block must not be empty").with_code("InvalidHeaderValue")
        );
    }
    let staged = blob::stage(request, name, &id, length, crate::config::max_blob_size())
        .map_err(blob_failure)?;
    if staged == 0 {
        return Err(
            Failure::bad_request("a block must not be empty").with_code("InvalidHeaderValue")
        );
    }
    Ok(Response::empty(201).with_header("x-ms-request-server-encrypted", "false"))
}

/// Azure's block ids: base64 of at most 64 bytes.
fn check_block_id(id: &str) -> Result<(), Failure> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(id);
    match decoded {
        Ok(bytes) if !bytes.is_empty() && bytes.len() <= 64 => Ok(()),
        _ => Err(
            Failure::bad_request("blockid must be base64 of 1 to 64 bytes")
                .with_code("InvalidQueryParameterValue"),
        ),
    }
}

fn put_block_list(request: &Request, name: &str) -> Result<Response, Failure> {
    let body = read_small(request, MAX_BLOCK_LIST)?;
    let listed = xml::parse_block_list(&body)
        .map_err(|reason| Failure::bad_request(reason).with_code("InvalidXmlDocument"))?;
    let mut ids = Vec::with_capacity(listed.len());
    for block in listed {
        match block {
            xml::ListedBlock::Staged(id) => {
                check_block_id(&id).map_err(|_| {
                    Failure::bad_request(format!("block id {id:?} is not base64 of 1 to 64 bytes"))
                        .with_code("InvalidBlockId")
                })?;
                ids.push(id);
            }
            xml::ListedBlock::Committed(_) => {
                return Err(Failure::bad_request(
                    "committed blocks cannot be listed again: stage every block of the new content",
                )
                .with_code("InvalidBlockList"))
            }
        }
    }
    if ids.is_empty() {
        return Err(Failure::bad_request("the block list is empty").with_code("InvalidBlockList"));
    }
    let options = write_options(request, name, None)?;
    let info = store::commit_blocks(name, &ids, &options)
        .map_err(Failure::from)
        .map_err(|failure| match failure.kind {
            Kind::BadRequest => failure.with_code("InvalidBlockList"),
            _ => blob_failure(failure),
        })?;
    Ok(written(201, &info))
}

fn get_block_list(name: &str) -> Result<Response, Failure> {
    let staged = store::list_blocks(name)?;
    if staged.is_empty() {
        // Azure answers a blob's (committed) list, or 404 when there is none.
        store::head(name)
            .map_err(Failure::from)
            .map_err(blob_failure)?;
    }
    let staged: Vec<(String, u64)> = staged.into_iter().map(|b| (b.id, b.size)).collect();
    Ok(Response::bytes(
        200,
        "application/xml",
        xml::block_list(&staged).into_bytes(),
    ))
}

fn list_blobs(
    request: &Request,
    credential: &Credential,
    account: &str,
    container: &str,
) -> Result<Response, Failure> {
    if request.query_param("delimiter").is_some() {
        return Err(
            Failure::bad_request("List Blobs with a delimiter is not served")
                .with_code("UnsupportedQueryParameter"),
        );
    }
    let prefix = request.query_value("prefix").unwrap_or_default();
    if let Some(namespace) = &credential.grant().namespace {
        if !prefix.starts_with(&format!("{namespace}/")) {
            return Err(Failure::new(
                Kind::Forbidden,
                format!("account {account:?} lists under prefix {namespace}/ only"),
            )
            .with_code("AuthorizationPermissionMismatch"));
        }
    }
    let max_results = match request.query_value("maxresults") {
        None => MAX_LIST_RESULTS,
        Some(n) => match n.parse::<u32>() {
            Ok(n) if n >= 1 => n.min(MAX_LIST_RESULTS),
            _ => {
                return Err(Failure::bad_request("maxresults must be a positive number")
                    .with_code("OutOfRangeQueryParameterValue"))
            }
        },
    };
    let marker = request.query_value("marker").filter(|m| !m.is_empty());
    let with_metadata = request
        .query_value("include")
        .is_some_and(|include| include.split(',').any(|i| i == "metadata"));
    let page = store::list(&prefix, marker.as_deref(), max_results)?;
    let blobs: Vec<xml::ListedBlob> = page
        .entries
        .into_iter()
        // Names other protocols own are not this endpoint's to show.
        .filter(|entry| {
            let root = entry.key.split('/').next().unwrap_or("");
            !RESERVED_ROOTS.contains(&root) && !is_bazel_key(&entry.key)
        })
        .map(|entry| xml::ListedBlob {
            name: entry.key,
            size: entry.info.size,
            etag: entry.info.etag,
            last_modified: crate::http::http_date(entry.info.last_modified)
                .unwrap_or_else(epoch_date),
            content_type: entry.info.content_type,
            metadata: entry
                .info
                .metadata
                .into_iter()
                .filter(|(name, _)| is_metadata_name(name))
                .collect(),
        })
        .collect();
    let endpoint = format!("/{ROOT}/{account}/");
    let body = xml::list_blobs(
        &xml::Listing {
            service_endpoint: &endpoint,
            container,
            prefix: &prefix,
            marker: marker.as_deref(),
            max_results,
            with_metadata,
            next_marker: page.next_cursor.as_deref(),
        },
        &blobs,
    );
    Ok(Response::bytes(200, "application/xml", body.into_bytes()))
}

fn epoch_date() -> String {
    crate::http::http_date(0).unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 GMT".into())
}

/// Azure's error answer: the status, `x-ms-error-code`, and the XML body
/// (dropped for HEAD by the pipeline).
pub fn render(failure: Failure) -> Response {
    let code = failure.code.unwrap_or(match failure.kind {
        Kind::BadRequest => "InvalidInput",
        Kind::Unauthorized | Kind::Forbidden => "AuthorizationFailure",
        Kind::NotFound => "ResourceNotFound",
        Kind::MethodNotAllowed => "UnsupportedHttpVerb",
        Kind::Conflict => "Conflict",
        Kind::PreconditionFailed => "ConditionNotMet",
        Kind::TooLarge => "RequestBodyTooLarge",
        Kind::UnsupportedMediaType => "InvalidInput",
        Kind::RangeNotSatisfiable => "InvalidRange",
        Kind::Full => "InsufficientStorage",
        Kind::Unavailable => "ServerBusy",
        Kind::Internal => "InternalError",
    });
    let mut response = Response::bytes(
        failure.status(),
        "application/xml",
        xml::error(code, &failure.reason).into_bytes(),
    )
    .with_header("x-ms-error-code", code)
    .with_header("x-ms-request-id", crate::ids::random_uuid());
    response.headers.extend(failure.headers);
    response
}

/// The URL of a blob under the endpoint, signed by the server for `ttl`
/// seconds with `permissions` (`r`, or `cw` for uploads): the GitHub Actions
/// cache data plane on stores that cannot presign.
pub fn signed_url(
    base: &str,
    key: &str,
    permissions: &str,
    ttl_seconds: u64,
) -> Result<String, Failure> {
    use base64::Engine as _;
    let (tokens, secret) = crate::credentials::configured()?;
    let key_bytes = crate::credentials::signer_key(&tokens, secret.as_ref()).ok_or_else(|| {
        Failure::new(
            Kind::Internal,
            "BLOBCACHE_SECRET is needed to sign data-plane URLs when tokens are configured",
        )
    })?;
    let container = crate::config::azure_endpoint_container();
    let endpoint = format!("{base}/{ROOT}/{SIGNER_ACCOUNT}");
    let account = blobcache_azure::account::Account::new(
        SIGNER_ACCOUNT,
        &base64::engine::general_purpose::STANDARD.encode(key_bytes),
        Some(&endpoint),
    )
    .map_err(|e| Failure::new(Kind::Internal, e.0))?;
    let now = crate::credentials::now_unix();
    let sas = blobcache_azure::signing::BlobSas {
        permissions: permissions.into(),
        start: Some(blobcache_azure::signing::iso8601(now.saturating_sub(300))),
        expiry: blobcache_azure::signing::iso8601(now + ttl_seconds),
        protocol: None,
        version: "2024-11-04".into(),
    };
    let query = blobcache_azure::signing::sas_query(&account, &container, key, &sas)
        .expect("the signer account has a key");
    Ok(format!("{endpoint}/{container}/{key}?{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_account_container_and_decoded_blob() {
        let call = parse(&["acct", "buildkit-cache", "app", "blobs%2Fsha256:ab"]).unwrap();
        assert_eq!(call.account, "acct");
        assert_eq!(call.container.as_deref(), Some("buildkit-cache"));
        assert_eq!(call.blob.as_deref(), Some("app/blobs/sha256:ab"));
        let call = parse(&["acct", "c"]).unwrap();
        assert_eq!(call.blob, None);
        assert!(parse(&[]).is_err());
        assert!(parse(&["a/b"]).is_err());
        assert!(parse(&["acct", "c", "bad%zzname"]).is_err());
    }

    #[test]
    fn other_protocols_keys_are_reserved() {
        let shared = Credential::SharedKey(crate::credentials::Grant {
            name: "ci".into(),
            access: Access::ReadWrite,
            namespace: None,
        });
        let put = Operation::PutBlob;
        assert!(authorize(&shared, put, Some("app/blobs/sha256:ab")).is_ok());
        assert!(authorize(&shared, put, Some("oci/_/blobs/sha256:ab")).is_err());
        assert!(authorize(&shared, put, Some("gha/_/x")).is_err());
        let hash = "a".repeat(64);
        assert!(authorize(&shared, put, Some(&format!("team/cas/{hash}"))).is_err());
        assert!(authorize(&shared, put, Some("a/../b")).is_err());
        let team = Credential::SharedKey(crate::credentials::Grant {
            name: "team-a".into(),
            access: Access::Read,
            namespace: Some("team-a".into()),
        });
        assert!(authorize(&team, Operation::ReadBlob, Some("team-a/manifests/x")).is_ok());
        assert!(authorize(&team, Operation::ReadBlob, Some("team-b/manifests/x")).is_err());
        assert!(authorize(&team, put, Some("team-a/manifests/x")).is_err());
        let signer = Credential::Sas {
            grant: crate::credentials::Grant {
                name: SIGNER_ACCOUNT.into(),
                access: Access::ReadWrite,
                namespace: None,
            },
            permissions: "r".into(),
        };
        assert!(authorize(&signer, Operation::ReadBlob, Some("gha/_/data/x")).is_ok());
        assert!(authorize(&signer, put, Some("gha/_/data/x")).is_err());
        assert!(authorize(&signer, Operation::ReadBlob, Some("app/x")).is_err());
    }
}
