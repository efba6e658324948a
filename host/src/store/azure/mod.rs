//! The Azure Blob Storage store: the `azure` crate's signed requests, sent with
//! reqwest, with retries, timeouts and streaming both ways ([`upload`],
//! [`download`]).

mod download;
mod upload;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use blobcache_azure::layout::{self, StoredBlob};
use blobcache_azure::ops::{Body, Container, Operation};
use blobcache_azure::response::{self, AzureError, ErrorKind, RetryPolicy};
use blobcache_azure::{Account, ConfigError};
use bytes::Bytes;
use wasmtime_wasi::p2::DynInputStream;

use super::*;
use download::{Download, ResponseStream};
use upload::AzureWriter;

/// How to reach the container.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    pub account: Account,
    pub container: String,
    /// Prepended to every key (e.g. `team-a/`).
    pub prefix: String,
    /// Create the container at start when it is missing.
    pub create_container: bool,
    /// Bytes per Put Block; an upload of at most this size is one Put Blob.
    pub block_size: usize,
    /// Put Block requests in flight per upload.
    pub parallel_blocks: usize,
    /// Limit on each HTTP attempt (connect, send, and headers of the answer).
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl AzureConfig {
    /// Settings from the environment: `AZURE_STORAGE_CONNECTION_STRING`, or
    /// `AZURE_STORAGE_ACCOUNT` + `AZURE_STORAGE_KEY` or `AZURE_STORAGE_SAS_TOKEN`
    /// (+ `AZURE_STORAGE_BLOB_ENDPOINT`).
    pub fn from_env(container: &str, prefix: &str) -> Result<AzureConfig, ConfigError> {
        let account = Account::from_settings(|name| std::env::var(name).ok())?;
        Ok(AzureConfig {
            account,
            container: container.to_string(),
            prefix: prefix.to_string(),
            create_container: false,
            block_size: 8 << 20,
            parallel_blocks: 4,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        })
    }
}

#[derive(Clone)]
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    container: Container,
    prefix: String,
    http: reqwest::Client,
    block_size: usize,
    parallel_blocks: usize,
    retry: RetryPolicy,
}

/// A failed call: what the service said, or why it could not be reached.
enum CallError {
    Service(AzureError),
    Unreachable(String),
}

impl From<CallError> for Error {
    fn from(error: CallError) -> Error {
        match error {
            CallError::Unreachable(why) => Error::Unavailable(format!("Azure unreachable: {why}")),
            CallError::Service(e) => match e.kind() {
                ErrorKind::NotFound => Error::NotFound,
                ErrorKind::AlreadyExists => Error::AlreadyExists,
                ErrorKind::PreconditionFailed => Error::PreconditionFailed,
                ErrorKind::TooLarge => Error::TooLarge(e.to_string()),
                ErrorKind::Transient => Error::Unavailable(e.to_string()),
                ErrorKind::Authentication => {
                    Error::Other(format!("Azure authentication failed: {e}"))
                }
                ErrorKind::Invalid | ErrorKind::Other => Error::Other(e.to_string()),
            },
        }
    }
}

impl AzureStore {
    /// Connects, creates the container if asked, and checks the credentials with one
    /// listing call, so a wrong key is a clear startup error.
    pub async fn connect(config: AzureConfig) -> anyhow::Result<AzureStore> {
        let container = Container::new(config.account.clone(), &config.container)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .pool_max_idle_per_host(64)
            .build()?;
        let store = AzureStore {
            inner: Arc::new(Inner {
                container,
                prefix: config.prefix.clone(),
                http,
                block_size: config.block_size.max(64 << 10),
                parallel_blocks: config.parallel_blocks.max(1),
                retry: config.retry.clone(),
            }),
        };
        let startup_error = |step: &str, error: CallError| {
            match error {
            CallError::Service(e) if e.kind() == ErrorKind::Authentication => anyhow::anyhow!(
                "Azure rejected the credentials for account {} while trying to {step} ({e}); check the account key or SAS",
                config.account.name()
            ),
            CallError::Service(e) if e.code == "ContainerNotFound" => anyhow::anyhow!(
                "container {} does not exist in account {} (create it, or pass --azure-create-container)",
                config.container,
                config.account.name()
            ),
            other => anyhow::anyhow!("cannot {step} at {}: {other}", config.account.endpoint()),
        }
        };
        if config.create_container {
            match store
                .call(|now| store.inner.container.create_container(now), None)
                .await
            {
                Ok(_) => {}
                Err(CallError::Service(e)) if e.code == "ContainerAlreadyExists" => {}
                Err(e) => return Err(startup_error("create the container", e)),
            }
        }
        let probe = store
            .call(
                |now| store.inner.container.list_blobs("", None, 1, false, now),
                None,
            )
            .await;
        match probe {
            Ok(_) => Ok(store),
            Err(e) => Err(startup_error("list the container", e)),
        }
    }

    fn blob_name(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Sends an operation, retrying transient failures with backoff and jitter.
    /// `build` is called per attempt so each try is signed with a fresh date.
    async fn call(
        &self,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<Bytes>,
    ) -> Result<reqwest::Response, CallError> {
        self.call_noting_retries(build, content, &mut false).await
    }

    /// Like [`Self::call`]; sets `retried` when an earlier attempt failed in a way
    /// that may still have been applied (its answer was lost or was a 5xx).
    async fn call_noting_retries(
        &self,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<Bytes>,
        retried: &mut bool,
    ) -> Result<reqwest::Response, CallError> {
        let mut attempt = 0;
        loop {
            let operation = build(SystemTime::now());
            let (outcome, retry_after) = match self.send_once(operation, content.clone()).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    let error = response::error(status, &headers, &body);
                    if !response::is_retryable_status(status) {
                        return Err(CallError::Service(error));
                    }
                    (CallError::Service(error), response::retry_after(&headers))
                }
                Err(e) => (CallError::Unreachable(e), None),
            };
            match self.inner.retry.delay(attempt, retry_after, random_unit()) {
                Some(delay) => {
                    tracing::debug!("Azure call failed, retrying in {delay:?}: {outcome}");
                    *retried = true;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(outcome),
            }
        }
    }

    /// Get Blob Properties of a full blob name.
    async fn head_blob(&self, name: &str) -> Result<BlobInfo> {
        let response = self
            .call(|now| self.inner.container.get_properties(name, now), None)
            .await?;
        let properties =
            response::properties(response.headers()).map_err(|e| Error::Other(e.to_string()))?;
        Ok(Self::info(properties))
    }

    async fn send_once(
        &self,
        operation: Operation,
        content: Option<Bytes>,
    ) -> Result<reqwest::Response, String> {
        let (parts, ()) = operation.request.into_parts();
        let mut request = self
            .inner
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers);
        request = match (operation.body, content) {
            (Body::Bytes(bytes), _) => request.body(bytes),
            (Body::Streamed { .. }, Some(bytes)) => request.body(bytes),
            (Body::Streamed { .. }, None) | (Body::Empty, _) => request,
        };
        request.send().await.map_err(|e| describe(&e))
    }

    fn info(properties: response::BlobProperties) -> BlobInfo {
        let blob = StoredBlob::from(properties);
        BlobInfo {
            size: blob.size,
            etag: blob.etag,
            last_modified: blob.last_modified,
            content_type: blob.content_type,
            sha256: blob.sha256,
            metadata: blob.metadata,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Service(e) => write!(f, "{e}"),
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// The error and its causes, with the URL's query left out: with a SAS
/// credential it holds the signature, and these texts reach clients and logs.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if let Some(url) = error.url().filter(|url| url.query().is_some()) {
        let mut bare = url.clone();
        bare.set_query(None);
        text = text.replace(url.as_str(), bare.as_str());
    }
    text
}

/// A (small, XML) response body, read whole.
async fn body_bytes(response: reqwest::Response) -> Result<Bytes> {
    response
        .bytes()
        .await
        .map_err(|e| Error::Unavailable(describe(&e)))
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[async_trait]
impl Backend for AzureStore {
    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "azure".into(),
            location: format!(
                "{}/{}/{}",
                self.inner.container.account().endpoint(),
                self.inner.container.name(),
                self.inner.prefix
            ),
            blob_count: None,
            total_bytes: None,
        }
    }

    async fn head(&self, key: &str) -> Result<BlobInfo> {
        check_key(key)?;
        self.head_blob(&self.blob_name(key)).await
    }

    async fn open(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<(BlobInfo, DynInputStream)> {
        check_key(key)?;
        let name = self.blob_name(key);
        // Azure has no empty range, and answers 416 for reads at the end: both
        // are empty reads here, as in the other stores.
        let empty = || async {
            let info = self.head_blob(&name).await?;
            resolve_range(range, info.size)?;
            Ok::<_, Error>((
                info,
                Box::new(BytesInputStream::new(Bytes::new())) as DynInputStream,
            ))
        };
        if range.is_some_and(|r| r.length == Some(0)) {
            return empty().await;
        }
        let azure_range = range.map(|r| (r.offset, r.length));
        let container = &self.inner.container;
        let response = match self
            .call(
                |now| container.get_blob(&name, azure_range, None, now),
                None,
            )
            .await
        {
            Err(CallError::Service(e)) if e.status == 416 => return empty().await,
            other => other?,
        };
        let properties =
            response::properties(response.headers()).map_err(|e| Error::Other(e.to_string()))?;
        let info = Self::info(properties);
        // The length to expect comes from the blob's size, not from framing.
        let (start, end) = resolve_range(range, info.size)?;
        let download = Download {
            store: self.clone(),
            blob: name,
            etag: info.etag.clone(),
            position: start,
            remaining: end - start,
        };
        Ok((info, Box::new(ResponseStream::spawn(response, download))))
    }

    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>> {
        check_key(key)?;
        Ok(Box::new(AzureWriter::new(
            self.clone(),
            self.blob_name(key),
            options,
            upload::upload_ids()?,
        )))
    }

    async fn stage_block(
        &self,
        key: &str,
        block_id: &str,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>> {
        check_key(key)?;
        check_block_id(block_id)?;
        let ids = upload::staged_ids(block_id)?;
        Ok(Box::new(AzureWriter::new(
            self.clone(),
            self.blob_name(key),
            block_options(expected_size),
            ids,
        )))
    }

    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo> {
        check_key(key)?;
        for id in &block_ids {
            check_block_id(id)?;
        }
        if options.expected_sha256.is_some() {
            // Azure cannot read uncommitted blocks back, and the blocks were hashed
            // by separate requests: there is nothing to check a digest against.
            return Err(Error::Invalid(
                "the azure store cannot verify a sha256 over blocks staged by separate requests"
                    .into(),
            ));
        }
        let name = self.blob_name(key);
        let container = &self.inner.container;
        let staged = match self
            .call(|now| container.get_uncommitted_blocks(&name, now), None)
            .await
        {
            Ok(response) => {
                let xml = body_bytes(response).await?;
                response::uncommitted_blocks(&xml).map_err(|e| Error::Other(e.to_string()))?
            }
            // Nothing at all under this key: nothing was staged.
            Err(CallError::Service(e)) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let (azure_ids, size) = layout::assemble(staged, &block_ids).map_err(Error::Invalid)?;
        if let Some(max) = options.max_size.filter(|max| size > *max) {
            return Err(Error::TooLarge(format!(
                "blob is over the {max}-byte limit"
            )));
        }
        verify(&options, size, "")?;
        let properties = upload::write_properties(&options, None);
        let response = self
            .call(
                |now| container.put_block_list(&name, &azure_ids, &properties, now),
                None,
            )
            .await?;
        Ok(BlobInfo {
            size,
            etag: header_text(response.headers(), "etag"),
            last_modified: now_unix(),
            content_type: options.content_type.clone(),
            sha256: None,
            metadata: options.metadata.clone(),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let name = self.blob_name(key);
        let mut retried = false;
        match self
            .call_noting_retries(
                |now| self.inner.container.delete_blob(&name, now),
                None,
                &mut retried,
            )
            .await
        {
            Ok(_) => Ok(()),
            // An earlier attempt deleted it, and its answer was lost.
            Err(CallError::Service(e)) if retried && e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<ListPage> {
        let full_prefix = self.blob_name(prefix);
        let response = self
            .call(
                |now| {
                    self.inner.container.list_blobs(
                        &full_prefix,
                        cursor.as_deref(),
                        limit,
                        false,
                        now,
                    )
                },
                None,
            )
            .await?;
        let xml = body_bytes(response).await?;
        let page = response::list_page(&xml).map_err(|e| Error::Other(e.to_string()))?;
        let entries = page
            .blobs
            .into_iter()
            .filter_map(|blob| {
                let key = blob.name.strip_prefix(&self.inner.prefix)?.to_string();
                Some(ListEntry {
                    key,
                    size: blob.size,
                    last_modified: blob.last_modified,
                })
            })
            .collect();
        Ok(ListPage {
            entries,
            next_cursor: page.next_marker,
        })
    }

    async fn presign(&self, key: &str, access: Access, ttl_seconds: u32) -> Result<Option<String>> {
        check_key(key)?;
        let permissions = match access {
            Access::Read => "r",
            Access::Write => "cw",
        };
        let now = now_unix();
        // Start a little in the past: clocks of client and service differ.
        // None with a SAS credential: it cannot sign; the component moves the bytes.
        Ok(self.inner.container.sas_url(
            &self.blob_name(key),
            permissions,
            Some(now.saturating_sub(300)),
            now + u64::from(ttl_seconds.max(1)),
        ))
    }
}

fn header_text(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
