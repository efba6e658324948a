//! The `blobcache:store` functions over Azure Blob REST.

use std::rc::Rc;
use std::time::SystemTime;

use blobcache_azure::layout;
use blobcache_azure::ops::Container;
use blobcache_azure::store::commit::{Commit, Step};
use blobcache_azure::store::{self as azure_store, OpenPlan, Options, StoreError};
use sha2::{Digest, Sha256};
use wasip2::io::streams::InputStream;

use crate::bindings::exports::blobcache::store::{store, types};
use crate::config::Settings;
use crate::transport::{Answer, Transport};
use crate::upload::UploadWriter;
use crate::*;

/// The store of this instance, built from its settings on first use.
pub struct AzureStore {
    pub container: Container,
    pub prefix: String,
    pub transport: Transport,
    pub block_size: usize,
    pub parallel_blocks: usize,
}

thread_local! {
    static STORE: std::cell::OnceCell<Result<Rc<AzureStore>, String>> = const { std::cell::OnceCell::new() };
}

/// The configured store, or why there is none (said on every call, so the
/// reason reaches clients and logs).
pub fn azure() -> Result<Rc<AzureStore>, Error> {
    STORE.with(|cell| {
        cell.get_or_init(|| {
            let settings = Settings::load().map_err(|e| e.to_string())?;
            let container =
                Container::new(settings.account, &settings.container).map_err(|e| e.to_string())?;
            Ok(Rc::new(AzureStore {
                container,
                prefix: settings.prefix,
                transport: Transport {
                    timeout: settings.timeout,
                    retry: settings.retry,
                },
                block_size: settings.block_size,
                parallel_blocks: settings.parallel_blocks,
            }))
        })
        .clone()
        .map_err(|why| Error::Other(format!("the Azure store is not configured: {why}")))
    })
}

impl AzureStore {
    pub fn blob_name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn staging_name(&self, key: &str) -> String {
        layout::staging_blob(&self.prefix, key)
    }

    pub fn call(
        &self,
        build: impl Fn(SystemTime) -> blobcache_azure::Operation,
    ) -> Result<Answer, Error> {
        self.transport.call(build, None).map_err(Error::from)
    }

    /// Get Blob Properties of a full blob name, with the answer (whose empty
    /// body serves empty reads).
    pub fn head_blob(&self, name: &str) -> Result<(BlobInfo, Answer), Error> {
        let answer = self.call(|now| self.container.get_properties(name, now))?;
        let info = info(&answer)?;
        Ok((info, answer))
    }
}

blobcache_azure::store_type_conversions!(
    Error,
    BlobInfo,
    WriteOptions,
    WriteMode,
    StagedBlock,
    ListPage,
    ListEntry
);

/// The blob described by an answer's headers.
pub fn info(answer: &Answer) -> Result<BlobInfo, Error> {
    Ok(blob_info(azure_store::stored(&answer.headers)?))
}

pub fn check_key(key: &str) -> Result<(), Error> {
    blobcache_store_rules::check_key(key).map_err(Error::Invalid)
}

pub fn check_block_id(id: &str) -> Result<(), Error> {
    blobcache_store_rules::check_block_id(id).map_err(Error::Invalid)
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Streams a blob through sha256: its digest and length.
fn hash(answer: Answer) -> Result<(String, u64), StoreError> {
    let stream = answer.into_stream().map_err(StoreError::Other)?;
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    loop {
        match stream.blocking_read(256 << 10) {
            Ok(chunk) => {
                hasher.update(&chunk);
                read += chunk.len() as u64;
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(StoreError::Unavailable(e.to_debug_string()))
            }
        }
    }
    Ok((hex::encode(hasher.finalize()), read))
}

fn stream_of(answer: Answer) -> Result<InputStream, Error> {
    answer.into_stream().map_err(Error::Other)
}

impl types::Guest for Adapter {
    type Writer = UploadWriter;
}

impl store::Guest for Adapter {
    fn status() -> StoreStatus {
        let location = match azure() {
            Ok(azure) => format!(
                "{}/{}/{}",
                azure.container.account().endpoint(),
                azure.container.name(),
                azure.prefix
            ),
            Err(e) => format!("{e:?}"),
        };
        StoreStatus {
            kind: "azure".into(),
            location,
            blob_count: None,
            total_bytes: None,
        }
    }

    fn head(key: String) -> Result<BlobInfo, Error> {
        check_key(&key)?;
        let azure = azure()?;
        Ok(azure.head_blob(&azure.blob_name(&key))?.0)
    }

    fn open(key: String, range: Option<ByteRange>) -> Result<(BlobInfo, InputStream), Error> {
        check_key(&key)?;
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let range = range.map(|r| (r.offset, r.length));
        // Empty reads are served by the (empty) body of a HEAD.
        let empty = || {
            let (info, answer) = azure.head_blob(&name)?;
            azure_store::resolve(range, info.size)?;
            Ok((info, stream_of(answer)?))
        };
        let OpenPlan::Get(range) = azure_store::open_plan(range) else {
            return empty();
        };
        let answer = match azure.transport.call(
            |now| azure.container.get_blob(&name, range, None, now),
            None,
        ) {
            Err(e) if azure_store::read_is_empty(&e) => return empty(),
            other => other?,
        };
        let (blob, _, _) = azure_store::opened(&answer.headers, range)?;
        Ok((blob_info(blob), stream_of(answer)?))
    }

    fn create(key: String, options: WriteOptions) -> Result<Writer, Error> {
        check_key(&key)?;
        blobcache_store_rules::check_create(options.staged_under.as_deref())
            .map_err(Error::Invalid)?;
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let ids = layout::BlockIds::upload(crate::transport::random_bytes());
        Ok(Writer::new(UploadWriter::new(
            azure,
            name,
            neutral_options(&options),
            ids,
        )))
    }

    fn stage_block(
        key: String,
        block_id: String,
        expected_size: Option<u64>,
    ) -> Result<Writer, Error> {
        check_key(&key)?;
        check_block_id(&block_id)?;
        let azure = azure()?;
        let name = azure.staging_name(&key);
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ids = layout::BlockIds::staged(&block_id, millis, crate::transport::random_bytes());
        let options = Options::block(expected_size);
        Ok(Writer::new(UploadWriter::new(azure, name, options, ids)))
    }

    fn list_blocks(key: String) -> Result<Vec<StagedBlock>, Error> {
        check_key(&key)?;
        let azure = azure()?;
        let staging = azure.staging_name(&key);
        let answer = azure
            .transport
            .call(
                |now| azure.container.get_uncommitted_blocks(&staging, now),
                None,
            )
            .and_then(Answer::into_small);
        Ok(staged_blocks(azure_store::staged(answer)?.blocks()))
    }

    fn commit_blocks(
        key: String,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo, Error> {
        let azure = azure()?;
        let container = &azure.container;
        let options = neutral_options(&options);
        let mut commit = Commit::of_key(&azure.prefix, &key, block_ids, options, now_unix())?;
        let mut step = commit.start();
        loop {
            step = match step {
                Step::Send => {
                    let mut maybe_applied = false;
                    let answer = azure
                        .transport
                        .call_noting_retries(
                            |now| commit.operation(container, now),
                            None,
                            &mut maybe_applied,
                        )
                        .and_then(Answer::into_small);
                    commit.answered(answer, maybe_applied)
                }
                Step::Wait(delay) => {
                    crate::transport::sleep(delay);
                    Step::Send
                }
                Step::Read => {
                    let read = azure
                        .transport
                        .call(|now| commit.operation(container, now), None)
                        .map_err(StoreError::from)
                        .and_then(hash);
                    commit.read(read)
                }
                Step::Done(result) => return Ok(blob_info(result?)),
            }
        }
    }

    fn delete(key: String) -> Result<(), Error> {
        check_key(&key)?;
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let mut maybe_applied = false;
        let answer = azure.transport.call_noting_retries(
            |now| azure.container.delete_blob(&name, now),
            None,
            &mut maybe_applied,
        );
        Ok(azure_store::deleted(answer.map(drop), maybe_applied)?)
    }

    fn list(prefix: String, cursor: Option<String>, limit: u32) -> Result<ListPage, Error> {
        let azure = azure()?;
        let full_prefix = azure.blob_name(&prefix);
        let answer = azure.call(|now| {
            azure
                .container
                .list_blobs(&full_prefix, cursor.as_deref(), limit, true, now)
        })?;
        let xml = answer.into_bytes().map_err(Error::Unavailable)?;
        Ok(list_page(azure_store::list_page(&azure.prefix, &xml)?))
    }

    fn presign(key: String, access: Access, ttl_seconds: u32) -> Result<Option<String>, Error> {
        check_key(&key)?;
        let azure = azure()?;
        // None with a SAS credential: it cannot sign; the component moves the bytes.
        Ok(azure_store::presign(
            &azure.container,
            &azure.blob_name(&key),
            matches!(access, Access::Write),
            ttl_seconds,
            now_unix(),
        ))
    }
}

pub fn header_text(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
