//! The Azure Blob Storage store: the `azure` crate's signed requests, sent with
//! reqwest, with retries, timeouts and streaming both ways.
//!
//! Uploads are cut into blocks as they arrive: each full block goes out as Put Block
//! (a few in flight, so memory per upload stays bounded), and `finish` commits them
//! with Put Block List, only after the size and sha256 of everything written have
//! been checked. An upload that fits in one block is a single Put Block List-free
//! Put Blob. Block ids carry a random upload id, so concurrent uploads to one key
//! never mix their blocks. Downloads stream the response body into the component.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use blobcache_azure::ops::{self, Body, Condition, Container, Operation, WriteProperties};
use blobcache_azure::response::{self, AzureError, ErrorKind, RetryPolicy};
use blobcache_azure::{Account, ConfigError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

use super::*;

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
    /// `AZURE_STORAGE_ACCOUNT` + `AZURE_STORAGE_KEY` (+ `AZURE_STORAGE_BLOB_ENDPOINT`).
    pub fn from_env(container: &str, prefix: &str) -> Result<AzureConfig, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let account = match var("AZURE_STORAGE_CONNECTION_STRING") {
            Some(text) => Account::from_connection_string(&text)?,
            None => {
                let (Some(name), Some(key)) =
                    (var("AZURE_STORAGE_ACCOUNT"), var("AZURE_STORAGE_KEY"))
                else {
                    return Err(ConfigError(
                        "--store azure needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY".into(),
                    ));
                };
                Account::new(&name, &key, var("AZURE_STORAGE_BLOB_ENDPOINT").as_deref())?
            }
        };
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
                "Azure rejected the credentials for account {} while trying to {step} ({e}); check the account key",
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
            let jitter = random_unit();
            match self.inner.retry.delay(attempt, retry_after, jitter) {
                Some(delay) => {
                    tracing::debug!("Azure call failed, retrying in {delay:?}: {outcome}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(outcome),
            }
        }
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
        let sha256 = properties
            .metadata
            .iter()
            .find(|(k, _)| k == "sha256")
            .map(|(_, v)| v.clone());
        let metadata = properties
            .metadata
            .into_iter()
            .filter(|(k, _)| k != "sha256")
            .collect();
        BlobInfo {
            size: properties.size,
            etag: properties.etag,
            last_modified: properties.last_modified,
            content_type: properties
                .content_type
                .filter(|t| t != "application/octet-stream"),
            sha256,
            metadata,
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

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
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
        let name = self.blob_name(key);
        let response = self
            .call(|now| self.inner.container.get_properties(&name, now), None)
            .await?;
        let properties =
            response::properties(response.headers()).map_err(|e| Error::Other(e.to_string()))?;
        Ok(Self::info(properties))
    }

    async fn open(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<(BlobInfo, DynInputStream)> {
        check_key(key)?;
        let name = self.blob_name(key);
        let azure_range = range.map(|r| (r.offset, r.length));
        let response = match self
            .call(
                |now| self.inner.container.get_blob(&name, azure_range, None, now),
                None,
            )
            .await
        {
            // A range starting at the end: an empty read, as the other stores give.
            Err(CallError::Service(e)) if e.status == 416 => {
                let info = self.head(key).await?;
                resolve_range(range, info.size)?;
                return Ok((info, Box::new(BytesInputStream::new(Bytes::new()))));
            }
            other => other?,
        };
        let properties =
            response::properties(response.headers()).map_err(|e| Error::Other(e.to_string()))?;
        let body_length = response.content_length().unwrap_or(0);
        let info = Self::info(properties);
        let download = Download {
            store: self.clone(),
            blob: name,
            etag: info.etag.clone(),
            position: range.map_or(0, |r| r.offset),
            remaining: body_length,
        };
        Ok((info, Box::new(ResponseStream::spawn(response, download))))
    }

    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>> {
        check_key(key)?;
        let ids = BlockIds::Upload(random_hex());
        Ok(Box::new(AzureWriter::new(
            self.clone(),
            self.blob_name(key),
            options,
            ids,
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
        let options = block_options(expected_size);
        let ids = BlockIds::Staged(staged_prefix(block_id));
        Ok(Box::new(AzureWriter::new(
            self.clone(),
            self.blob_name(key),
            options,
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
        if options.expected_sha256.is_some() {
            // Azure cannot read uncommitted blocks back, and the blocks were hashed
            // by separate requests: there is nothing to check a digest against.
            return Err(Error::Invalid(
                "the azure store cannot verify a sha256 over blocks staged by separate requests"
                    .into(),
            ));
        }
        let name = self.blob_name(key);
        let response = self
            .call(
                |now| self.inner.container.get_uncommitted_blocks(&name, now),
                None,
            )
            .await?;
        let xml = body_bytes(response).await?;
        let staged = response::uncommitted_blocks(&xml).map_err(|e| Error::Other(e.to_string()))?;
        let mut parts: std::collections::HashMap<String, Vec<(u64, String, u64)>> =
            Default::default();
        for block in staged {
            if let Some((prefix, sub)) = parse_staged_id(&block.name) {
                parts
                    .entry(prefix)
                    .or_default()
                    .push((sub, block.name, block.size));
            }
        }
        let mut azure_ids = Vec::new();
        let mut size = 0u64;
        for id in &block_ids {
            check_block_id(id)?;
            let mut blocks = parts.remove(&staged_prefix(id)).unwrap_or_default();
            if blocks.is_empty() {
                return Err(Error::Invalid(format!("block {id:?} is not staged")));
            }
            blocks.sort();
            for (_, azure_id, block_size) in blocks {
                azure_ids.push(azure_id);
                size += block_size;
            }
        }
        if let Some(max) = options.max_size.filter(|max| size > *max) {
            return Err(Error::TooLarge(format!(
                "blob is over the {max}-byte limit"
            )));
        }
        verify(&options, size, "")?;
        let properties = write_properties(&options, None);
        let response = self
            .call(
                |now| {
                    self.inner
                        .container
                        .put_block_list(&name, &azure_ids, &properties, now)
                },
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
        self.call(|now| self.inner.container.delete_blob(&name, now), None)
            .await?;
        Ok(())
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
        let url = self.inner.container.sas_url(
            &self.blob_name(key),
            permissions,
            Some(now.saturating_sub(300)),
            now + u64::from(ttl_seconds.max(1)),
        );
        Ok(Some(url))
    }
}

/// What a download still has to fetch, to resume it after a failure mid-body.
struct Download {
    store: AzureStore,
    blob: String,
    etag: String,
    position: u64,
    remaining: u64,
}

impl Download {
    /// Streams the rest of the blob into `sender`. A body that fails midway is
    /// resumed with a ranged read of the same version (If-Match), with backoff.
    async fn run(
        mut self,
        first: reqwest::Response,
        sender: mpsc::Sender<std::result::Result<Bytes, String>>,
    ) {
        let mut response = Some(first);
        let mut failures = 0;
        while self.remaining > 0 {
            let current = match response.take() {
                Some(current) => current,
                None => {
                    let range = Some((self.position, Some(self.remaining)));
                    let etag = self.etag.clone();
                    let inner = &self.store.inner;
                    match self
                        .store
                        .call(
                            |now| {
                                inner
                                    .container
                                    .get_blob(&self.blob, range, Some(&etag), now)
                            },
                            None,
                        )
                        .await
                    {
                        Ok(resumed) => resumed,
                        Err(e) => {
                            let _ = sender
                                .send(Err(format!("resuming the download failed: {e}")))
                                .await;
                            return;
                        }
                    }
                }
            };
            let mut body = current.bytes_stream();
            let mut failed = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        let n = chunk.len() as u64;
                        if sender.send(Ok(chunk)).await.is_err() {
                            return; // the component stopped reading
                        }
                        self.position += n;
                        self.remaining = self.remaining.saturating_sub(n);
                    }
                    Err(e) => {
                        failed = Some(describe(&e));
                        break;
                    }
                }
            }
            if let Some(why) = failed {
                match self.store.inner.retry.delay(failures, None, random_unit()) {
                    Some(delay) if self.remaining > 0 => {
                        tracing::debug!(
                            "download of {} broke at byte {}: {why}; resuming",
                            self.blob,
                            self.position
                        );
                        tokio::time::sleep(delay).await;
                        failures += 1;
                    }
                    _ => {
                        let _ = sender.send(Err(why)).await;
                        return;
                    }
                }
            } else if self.remaining > 0 {
                let _ = sender
                    .send(Err("the response body ended early".into()))
                    .await;
                return;
            }
        }
    }
}

/// A response body handed to the component chunk by chunk. A task reads ahead
/// a few chunks and resumes broken downloads; a failure it cannot recover fails
/// the stream (the component then aborts its response, so a client never takes
/// a truncated body for a hit).
struct ResponseStream {
    receiver: mpsc::Receiver<std::result::Result<Bytes, String>>,
    pending: Option<Bytes>,
    done: Option<std::result::Result<(), String>>,
}

impl ResponseStream {
    fn spawn(response: reqwest::Response, download: Download) -> ResponseStream {
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(download.run(response, sender));
        ResponseStream {
            receiver,
            pending: None,
            done: None,
        }
    }
}

impl InputStream for ResponseStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.pending.is_none() && self.done.is_none() {
            match self.receiver.try_recv() {
                Ok(Ok(chunk)) => self.pending = Some(chunk),
                Ok(Err(why)) => self.done = Some(Err(why)),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(Bytes::new()),
                Err(mpsc::error::TryRecvError::Disconnected) => self.done = Some(Ok(())),
            }
        }
        if let Some(mut chunk) = self.pending.take() {
            let part = chunk.split_to(size.min(chunk.len()));
            if !chunk.is_empty() {
                self.pending = Some(chunk);
            }
            return Ok(part);
        }
        match &self.done {
            Some(Err(why)) => Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "Azure download failed: {why}"
            ))),
            _ => Err(StreamError::Closed),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for ResponseStream {
    async fn ready(&mut self) {
        if self.pending.is_some() || self.done.is_some() {
            return;
        }
        match self.receiver.recv().await {
            Some(Ok(chunk)) => self.pending = Some(chunk),
            Some(Err(why)) => self.done = Some(Err(why)),
            None => self.done = Some(Ok(())),
        }
    }
}

/// How a writer names its Azure blocks. Every id of one blob has the same length
/// (Azure requires it), whichever scheme made it.
#[derive(Clone)]
enum BlockIds {
    /// A single-request upload: a random upload id, so concurrent uploads of one
    /// key never share blocks.
    Upload(String),
    /// One staged block of a multi-request upload: named after the caller's block
    /// id, so `commit-blocks` can find its parts in the uncommitted block list.
    Staged(String),
}

impl BlockIds {
    fn id(&self, index: usize) -> String {
        match self {
            BlockIds::Upload(upload) => ops::named_block_id(&format!("u{upload}-{index:010}")),
            BlockIds::Staged(prefix) => ops::named_block_id(&format!("s{prefix}-{index:010}")),
        }
    }

    fn publishes(&self) -> bool {
        matches!(self, BlockIds::Upload(_))
    }
}

/// The part of a staged block's Azure ids that names the caller's block id.
fn staged_prefix(block_id: &str) -> String {
    hex::encode(&Sha256::digest(block_id.as_bytes())[..16])
}

/// The caller-block prefix and part number of an Azure block id made by `BlockIds::Staged`.
fn parse_staged_id(azure_id: &str) -> Option<(String, u64)> {
    let name = ops::block_id_name(azure_id)?;
    let (prefix, part) = name.strip_prefix('s')?.split_once('-')?;
    Some((prefix.to_string(), part.parse().ok()?))
}

fn random_hex() -> String {
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    hex::encode(id)
}

fn header_text(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Content type, metadata and condition of a publish.
fn write_properties(options: &WriteOptions, sha256: Option<&str>) -> WriteProperties {
    let mut metadata = options.metadata.clone();
    if let Some(sha256) = sha256 {
        metadata.push(("sha256".into(), sha256.to_string()));
    }
    WriteProperties {
        content_type: options.content_type.clone(),
        metadata,
        condition: match (&options.mode, &options.if_match) {
            (WriteMode::CreateOnly, _) => Condition::IfNoneExists,
            (WriteMode::Overwrite, Some(etag)) => Condition::IfMatch(etag.clone()),
            (WriteMode::Overwrite, None) => Condition::None,
        },
    }
}

/// An upload in progress: blocks go out as they fill.
struct AzureWriter {
    store: AzureStore,
    blob: String,
    options: WriteOptions,
    state: Arc<Mutex<Option<UploadState>>>,
    slots: Arc<Semaphore>,
    body_taken: bool,
}

struct UploadState {
    ids: BlockIds,
    buffer: BytesMut,
    hasher: Sha256,
    written: u64,
    block_ids: Vec<String>,
    /// The first failure of a write or a block upload.
    failure: Arc<Mutex<Option<Error>>>,
}

impl AzureWriter {
    fn new(store: AzureStore, blob: String, options: WriteOptions, ids: BlockIds) -> AzureWriter {
        let slots = Arc::new(Semaphore::new(store.inner.parallel_blocks));
        let state = UploadState {
            ids,
            buffer: BytesMut::new(),
            hasher: Sha256::new(),
            written: 0,
            block_ids: Vec::new(),
            failure: Arc::new(Mutex::new(None)),
        };
        AzureWriter {
            store,
            blob,
            options,
            state: Arc::new(Mutex::new(Some(state))),
            slots,
            body_taken: false,
        }
    }
}

/// The `output-stream` of an [`AzureWriter`].
struct UploadStream {
    store: AzureStore,
    blob: String,
    max_size: Option<u64>,
    state: Arc<Mutex<Option<UploadState>>>,
    slots: Arc<Semaphore>,
}

impl UploadStream {
    /// Sends the buffered block in the background; the caller holds a free slot.
    fn send_block(&self, state: &mut UploadState, permit: tokio::sync::OwnedSemaphorePermit) {
        let block = state.buffer.split().freeze();
        let id = state.ids.id(state.block_ids.len());
        state.block_ids.push(id.clone());
        let store = self.store.clone();
        let blob = self.blob.clone();
        let failure = state.failure.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let length = block.len() as u64;
            let result = store
                .call(
                    |now| store.inner.container.put_block(&blob, &id, length, now),
                    Some(block),
                )
                .await;
            if let Err(e) = result {
                failure.lock().unwrap().get_or_insert(Error::from(e));
            }
        });
    }
}

impl OutputStream for UploadStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut guard = self.state.lock().unwrap();
        let state = guard.as_mut().ok_or(StreamError::Closed)?;
        if let Some(e) = state.failure.lock().unwrap().clone() {
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        let total = state.written + bytes.len() as u64;
        if let Some(max) = self.max_size.filter(|max| total > *max) {
            let e = Error::TooLarge(format!("blob is over the {max}-byte limit"));
            state.failure.lock().unwrap().get_or_insert(e.clone());
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        state.hasher.update(&bytes);
        state.written = total;
        state.buffer.extend_from_slice(&bytes);
        if state.buffer.len() >= self.store.inner.block_size {
            let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
                StreamError::Trap(wasmtime::format_err!("write without a check-write permit"))
            })?;
            self.send_block(state, permit);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let guard = self.state.lock().unwrap();
        let state = guard.as_ref().ok_or(StreamError::Closed)?;
        if let Some(e) = state.failure.lock().unwrap().clone() {
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        let room =
            self.store.inner.block_size - state.buffer.len().min(self.store.inner.block_size);
        // A write that fills the block needs a free upload slot.
        if self.slots.available_permits() == 0 {
            return Ok(room.saturating_sub(1));
        }
        Ok(room.max(1))
    }
}

#[async_trait::async_trait]
impl Pollable for UploadStream {
    async fn ready(&mut self) {
        // Ready once an upload slot is free (or the upload has failed).
        if let Ok(permit) = self.slots.acquire().await {
            drop(permit);
        }
    }
}

#[async_trait]
impl BlobWriter for AzureWriter {
    fn body(&mut self) -> Result<DynOutputStream> {
        take_body_once(&mut self.body_taken)?;
        Ok(Box::new(UploadStream {
            store: self.store.clone(),
            blob: self.blob.clone(),
            max_size: self.options.max_size,
            state: self.state.clone(),
            slots: self.slots.clone(),
        }))
    }

    async fn finish(self: Box<Self>) -> Result<BlobInfo> {
        let mut state = self
            .state
            .lock()
            .unwrap()
            .take()
            .ok_or(Error::Invalid("writer already finished".into()))?;
        let store = &self.store;
        // Wait for every block in flight.
        let all = store.inner.parallel_blocks as u32;
        let _all_slots = self
            .slots
            .acquire_many(all)
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        if let Some(e) = state.failure.lock().unwrap().clone() {
            return Err(e);
        }
        let sha256 = hex::encode(std::mem::take(&mut state.hasher).finalize());
        // Verified before anything becomes visible.
        verify(&self.options, state.written, &sha256)?;
        let blob = &self.blob;
        let upload_rest =
            !state.buffer.is_empty() && (!state.block_ids.is_empty() || !state.ids.publishes());
        if upload_rest {
            let id = state.ids.id(state.block_ids.len());
            let block = state.buffer.split().freeze();
            let length = block.len() as u64;
            store
                .call(
                    |now| store.inner.container.put_block(blob, &id, length, now),
                    Some(block),
                )
                .await?;
            state.block_ids.push(id);
        }
        if !state.ids.publishes() {
            // A staged block: stored, invisible until `commit-blocks`.
            return Ok(block_info(state.written, sha256));
        }
        let properties = write_properties(&self.options, Some(&sha256));
        let response = if state.block_ids.is_empty() {
            // Small enough for one request.
            let content = state.buffer.split().freeze();
            let length = content.len() as u64;
            store
                .call(
                    |now| {
                        store
                            .inner
                            .container
                            .put_blob(blob, length, &properties, now)
                    },
                    Some(content),
                )
                .await?
        } else {
            let ids = state.block_ids.clone();
            store
                .call(
                    |now| {
                        store
                            .inner
                            .container
                            .put_block_list(blob, &ids, &properties, now)
                    },
                    None,
                )
                .await?
        };
        let etag = header_text(response.headers(), "etag");
        Ok(BlobInfo {
            size: state.written,
            etag,
            last_modified: now_unix(),
            content_type: self.options.content_type.clone(),
            sha256: Some(sha256),
            metadata: self.options.metadata.clone(),
        })
    }
}
