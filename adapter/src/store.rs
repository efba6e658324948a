//! The `blobcache:store` functions over Azure Blob REST.

use std::rc::Rc;
use std::time::SystemTime;

use blobcache_azure::layout::{self, StoredBlob};
use blobcache_azure::ops::Container;
use blobcache_azure::response::{self, ErrorKind};
use wasip2::io::streams::InputStream;

use crate::bindings::exports::blobcache::store::{store, types};
use crate::config::Settings;
use crate::transport::{Answer, CallError, Transport};
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

impl From<CallError> for Error {
    fn from(error: CallError) -> Error {
        match error {
            CallError::Unreachable(why) => Error::Unavailable(format!("Azure unreachable: {why}")),
            CallError::Refused(why) => Error::Other(format!(
                "the host refused the request to Azure ({why}); on Spin, check allowed_outbound_hosts"
            )),
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

/// The blob described by an answer's headers.
pub fn info(answer: &Answer) -> Result<BlobInfo, Error> {
    let properties =
        response::properties(&answer.headers).map_err(|e| Error::Other(e.to_string()))?;
    let blob = StoredBlob::from(properties);
    Ok(BlobInfo {
        size: blob.size,
        etag: blob.etag,
        last_modified: blob.last_modified,
        content_type: blob.content_type,
        sha256: blob.sha256,
        metadata: blob.metadata,
    })
}

pub fn check_key(key: &str) -> Result<(), Error> {
    layout::check_key(key).map_err(Error::Invalid)
}

pub fn check_block_id(id: &str) -> Result<(), Error> {
    layout::check_block_id(id).map_err(Error::Invalid)
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        let resolve = |size| match range {
            Some(r) => layout::resolve_range(r.offset, r.length, size).map_err(Error::Invalid),
            None => Ok((0, size)),
        };
        // Azure has no empty range, and answers 416 for reads at the end: both
        // are empty reads, served by the (empty) body of a HEAD.
        let empty = || {
            let (info, answer) = azure.head_blob(&name)?;
            resolve(info.size)?;
            Ok((info, stream_of(answer)?))
        };
        if range.is_some_and(|r| r.length == Some(0)) {
            return empty();
        }
        let azure_range = range.map(|r| (r.offset, r.length));
        let answer = match azure.transport.call(
            |now| azure.container.get_blob(&name, azure_range, None, now),
            None,
        ) {
            Err(CallError::Service(e)) if e.status == 416 => return empty(),
            other => other?,
        };
        let info = info(&answer)?;
        resolve(info.size)?;
        Ok((info, stream_of(answer)?))
    }

    fn create(key: String, options: WriteOptions) -> Result<Writer, Error> {
        check_key(&key)?;
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let ids = layout::BlockIds::upload(crate::transport::random_bytes());
        Ok(Writer::new(UploadWriter::new(azure, name, options, ids)))
    }

    fn stage_block(
        key: String,
        block_id: String,
        expected_size: Option<u64>,
    ) -> Result<Writer, Error> {
        check_key(&key)?;
        check_block_id(&block_id)?;
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ids = layout::BlockIds::staged(&block_id, millis, crate::transport::random_bytes());
        let options = WriteOptions {
            mode: WriteMode::Overwrite,
            content_type: None,
            metadata: Vec::new(),
            expected_size,
            expected_sha256: None,
            max_size: None,
            if_match: None,
        };
        Ok(Writer::new(UploadWriter::new(azure, name, options, ids)))
    }

    fn commit_blocks(
        key: String,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Result<BlobInfo, Error> {
        check_key(&key)?;
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
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let container = &azure.container;
        let staged = match azure
            .transport
            .call(|now| container.get_uncommitted_blocks(&name, now), None)
        {
            Ok(answer) => {
                let xml = answer.into_bytes().map_err(Error::Unavailable)?;
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
        crate::upload::verify(&options, size, None)?;
        let properties = crate::upload::write_properties(&options, None);
        let answer =
            azure.call(|now| container.put_block_list(&name, &azure_ids, &properties, now))?;
        Ok(BlobInfo {
            size,
            etag: header_text(&answer.headers, "etag"),
            last_modified: now_unix(),
            content_type: options.content_type.clone(),
            sha256: None,
            metadata: options.metadata.clone(),
        })
    }

    fn delete(key: String) -> Result<(), Error> {
        check_key(&key)?;
        let azure = azure()?;
        let name = azure.blob_name(&key);
        let mut retried = false;
        match azure.transport.call_noting_retries(
            |now| azure.container.delete_blob(&name, now),
            None,
            &mut retried,
        ) {
            Ok(_) => Ok(()),
            // An earlier attempt deleted it, and its answer was lost.
            Err(CallError::Service(e)) if retried && e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn list(prefix: String, cursor: Option<String>, limit: u32) -> Result<ListPage, Error> {
        let azure = azure()?;
        let full_prefix = azure.blob_name(&prefix);
        let answer = azure.call(|now| {
            azure
                .container
                .list_blobs(&full_prefix, cursor.as_deref(), limit, false, now)
        })?;
        let xml = answer.into_bytes().map_err(Error::Unavailable)?;
        let page = response::list_page(&xml).map_err(|e| Error::Other(e.to_string()))?;
        let entries = page
            .blobs
            .into_iter()
            .filter_map(|blob| {
                Some(ListEntry {
                    key: blob.name.strip_prefix(&azure.prefix)?.to_string(),
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

    fn presign(key: String, access: Access, ttl_seconds: u32) -> Result<Option<String>, Error> {
        check_key(&key)?;
        let azure = azure()?;
        let permissions = match access {
            Access::Read => "r",
            Access::Write => "cw",
        };
        let now = now_unix();
        // Start a little in the past: clocks of client and service differ.
        // None with a SAS credential: it cannot sign; the component moves the bytes.
        Ok(azure.container.sas_url(
            &azure.blob_name(&key),
            permissions,
            Some(now.saturating_sub(300)),
            now + u64::from(ttl_seconds.max(1)),
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
