//! The Azure Blob Storage store: the `azure` crate's signed requests, sent with
//! reqwest, with timeouts and streaming both ways (`upload`, `download`).
//! What to send and what an answer means (retries, error mapping, commit, finish,
//! conflict settlement) is decided in `azure::store`, shared with the store
//! component; this module is the tokio transport that drives those decisions.

mod download;
mod upload;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use blobcache_azure::layout::{self, StoredBlob};
use blobcache_azure::ops::{Body, Container, Operation};
use blobcache_azure::response::{ErrorKind, RetryPolicy};
use blobcache_azure::store::commit::{Commit, Step};
use blobcache_azure::store::retry::{self, Attempts};
use blobcache_azure::store::{self as azure_store, Answer, CallError, OpenPlan, Options};
use blobcache_azure::{Account, ConfigError};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use wasmtime_wasi::p2::DynInputStream;

use super::*;
use crate::store::{blob_info as info, neutral_options as neutral};
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

    /// The prefix every blob name of this store starts with.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// A page of every blob under the store's prefix, staging blobs included,
    /// as Azure lists them (for `blobcache gc`).
    pub async fn list_raw(
        &self,
        marker: Option<String>,
    ) -> Result<blobcache_azure::response::ListPage> {
        let prefix = self.inner.prefix.clone();
        let (answer, _) = self
            .answer(|now| {
                self.inner
                    .container
                    .list_blobs(&prefix, marker.as_deref(), 5000, false, now)
            })
            .await;
        let answer = answer.map_err(|e| Error::Unavailable(e.to_string()))?;
        blobcache_azure::response::list_page(&answer.body).map_err(|e| Error::Other(e.to_string()))
    }

    /// Deletes the blob `name` (a full blob name, as [`AzureStore::list_raw`] gives).
    pub async fn delete_raw(&self, name: &str) -> Result<()> {
        let (answer, maybe_applied) = self
            .answer(|now| self.inner.container.delete_blob(name, now))
            .await;
        azure_store::deleted(answer.map(|_| ()), maybe_applied).map_err(Error::from)
    }

    fn staging_name(&self, key: &str) -> String {
        layout::staging_blob(&self.inner.prefix, key)
    }

    /// Sends an operation, retrying transient failures with backoff and jitter.
    /// `build` is called per attempt so each try is signed with a fresh date.
    async fn call(
        &self,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<Bytes>,
    ) -> Result<reqwest::Response, CallError> {
        self.send(build, content).await.0
    }

    /// Like [`Self::call`], and says whether an earlier attempt failed in a way
    /// that may still have been applied (the retry machine of `azure/` decides).
    async fn send(
        &self,
        build: impl Fn(SystemTime) -> Operation,
        content: Option<Bytes>,
    ) -> (Result<reqwest::Response, CallError>, bool) {
        let mut attempts = Attempts::new(&self.inner.retry);
        loop {
            let operation = build(SystemTime::now());
            let (error, retry_after) = match self.send_once(operation, content.clone()).await {
                Ok(response) if response.status().is_success() => {
                    return (Ok(response), attempts.maybe_applied())
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    retry::refusal(status, &headers, &body)
                }
                Err(e) => (CallError::Unreachable(e), None),
            };
            match attempts.failed(error, retry_after, random_unit()) {
                Ok(delay) => {
                    tracing::debug!("Azure call failed, retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return (Err(error), attempts.maybe_applied()),
            }
        }
    }

    /// [`Self::send`] with the (small) body of the answer read.
    async fn answer(
        &self,
        build: impl Fn(SystemTime) -> Operation,
    ) -> (Result<Answer, CallError>, bool) {
        let (result, maybe_applied) = self.send(build, None).await;
        let answer = match result {
            Ok(response) => {
                let headers = response.headers().clone();
                match response.bytes().await {
                    Ok(body) => Ok(Answer { headers, body }),
                    Err(e) => Err(CallError::Unreachable(describe(&e))),
                }
            }
            Err(e) => Err(e),
        };
        (answer, maybe_applied)
    }

    /// Streams a blob through sha256: its digest and length.
    async fn hash(
        &self,
        build: impl Fn(SystemTime) -> Operation,
    ) -> Result<(String, u64), StoreError> {
        let response = self.call(build, None).await?;
        let mut body = response.bytes_stream();
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Unavailable(describe(&e)))?;
            hasher.update(&chunk);
            read += chunk.len() as u64;
        }
        Ok((hex::encode(hasher.finalize()), read))
    }

    /// Get Blob Properties of a full blob name.
    async fn head_blob(&self, name: &str) -> Result<BlobInfo> {
        Ok(info(self.head_stored(name).await?))
    }

    async fn head_stored(&self, name: &str) -> Result<StoredBlob> {
        let response = self
            .call(|now| self.inner.container.get_properties(name, now), None)
            .await?;
        Ok(azure_store::stored(response.headers())?)
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
        let range = range.map(|r| (r.offset, r.length));
        let empty = || async {
            let info = self.head_blob(&name).await?;
            azure_store::resolve(range, info.size)?;
            Ok::<_, Error>((
                info,
                Box::new(BytesInputStream::new(Bytes::new())) as DynInputStream,
            ))
        };
        let OpenPlan::Get(range) = azure_store::open_plan(range) else {
            return empty().await;
        };
        let container = &self.inner.container;
        let response = match self
            .call(|now| container.get_blob(&name, range, None, now), None)
            .await
        {
            Err(e) if azure_store::read_is_empty(&e) => return empty().await,
            other => other?,
        };
        let (blob, start, end) = azure_store::opened(response.headers(), range)?;
        let download = Download {
            store: self.clone(),
            blob: name,
            etag: blob.etag.clone(),
            position: start,
            remaining: end - start,
        };
        Ok((
            info(blob),
            Box::new(ResponseStream::spawn(response, download)),
        ))
    }

    async fn create(&self, key: &str, options: WriteOptions) -> Result<Box<dyn BlobWriter>> {
        check_key(key)?;
        blobcache_store_rules::check_create(options.staged_under.as_deref())
            .map_err(Error::Invalid)?;
        Ok(Box::new(AzureWriter::new(
            self.clone(),
            self.blob_name(key),
            neutral(&options),
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
        Ok(Box::new(AzureWriter::new(
            self.clone(),
            self.staging_name(key),
            Options::block(expected_size),
            upload::staged_ids(block_id)?,
        )))
    }

    async fn list_blocks(&self, key: &str) -> Result<Vec<StagedBlock>> {
        check_key(key)?;
        let staging = self.staging_name(key);
        let container = &self.inner.container;
        let (answer, _) = self
            .answer(|now| container.get_uncommitted_blocks(&staging, now))
            .await;
        Ok(staged_blocks(azure_store::staged(answer)?.blocks()))
    }

    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo> {
        let container = &self.inner.container;
        let options = neutral(&options);
        let mut commit = Commit::of_key(&self.inner.prefix, key, block_ids, options, now_unix())?;
        let mut step = commit.start();
        loop {
            step = match step {
                Step::Send => {
                    let (answer, maybe_applied) =
                        self.answer(|now| commit.operation(container, now)).await;
                    commit.answered(answer, maybe_applied)
                }
                Step::Wait(delay) => {
                    tokio::time::sleep(delay).await;
                    Step::Send
                }
                Step::Read => {
                    let read = self.hash(|now| commit.operation(container, now)).await;
                    commit.read(read)
                }
                Step::Done(result) => return Ok(info(result?)),
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let name = self.blob_name(key);
        let (answer, maybe_applied) = self
            .answer(|now| self.inner.container.delete_blob(&name, now))
            .await;
        Ok(azure_store::deleted(answer.map(drop), maybe_applied)?)
    }

    async fn list(&self, prefix: &str, cursor: Option<String>, limit: u32) -> Result<ListPage> {
        let full_prefix = self.blob_name(prefix);
        let (answer, _) = self
            .answer(|now| {
                self.inner
                    .container
                    .list_blobs(&full_prefix, cursor.as_deref(), limit, true, now)
            })
            .await;
        let listed = azure_store::list_page(&self.inner.prefix, &answer?.body)?;
        Ok(crate::store::list_page(listed))
    }

    async fn presign(&self, key: &str, access: Access, ttl_seconds: u32) -> Result<Option<String>> {
        check_key(key)?;
        // None with a SAS credential: it cannot sign; the component moves the bytes.
        Ok(azure_store::presign(
            &self.inner.container,
            &self.blob_name(key),
            matches!(access, Access::Write),
            ttl_seconds,
            now_unix(),
        ))
    }
}
