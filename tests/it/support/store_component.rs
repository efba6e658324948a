//! The Azure store component (`adapter/`, built by `host/build.rs` into
//! `target/wasm/blobcache-azure-store.wasm`) as a [`Backend`], so the store contract
//! runs on it as on the native stores: it is loaded in wasmtime with WASI and
//! outgoing wasi:http, configured through its environment, and its exported
//! `blobcache:store` functions are called through host bindings of the
//! `azure-store` world.
//!
//! The component takes content through `writer.write` (it cannot make streams), so
//! a writer here collects what the contract writes and hands it over in chunks at
//! `finish`; test blobs are small.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use blobcache::store::{
    Access, Backend, BlobInfo, BlobWriter, ByteRange, Error, ListEntry, ListPage, StagedBlock,
    StoreStatus, WriteMode, WriteOptions,
};
use bytes::Bytes;
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "blobcache:store/azure-store",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

use bindings::exports::blobcache::store::types as wit;
use bindings::AzureStore;

/// Bytes per `writer.write` call.
const WRITE_CHUNK: usize = 64 << 10;

struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

struct Instance {
    store: Store<State>,
    bindings: AzureStore,
}

/// One instance of the store component, called one function at a time.
#[derive(Clone)]
pub struct ComponentStore {
    instance: Arc<tokio::sync::Mutex<Instance>>,
}

/// Where `host/build.rs` put the store component.
pub fn component_path() -> String {
    env!("BLOBCACHE_WASM").replace("blobcache.wasm", "blobcache-azure-store.wasm")
}

impl ComponentStore {
    /// Instantiates the component with `env` as its environment variables.
    pub async fn new(env: &[(&str, &str)]) -> ComponentStore {
        let engine = Engine::default();
        let component = Component::from_file(&engine, component_path()).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
        let mut wasi = WasiCtx::builder();
        wasi.envs(env);
        let state = State {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
        };
        let mut store = Store::new(&engine, state);
        let bindings = AzureStore::instantiate_async(&mut store, &component, &linker)
            .await
            .unwrap();
        ComponentStore {
            instance: Arc::new(tokio::sync::Mutex::new(Instance { store, bindings })),
        }
    }
}

fn error(e: wit::Error) -> Error {
    match e {
        wit::Error::NotFound => Error::NotFound,
        wit::Error::AlreadyExists => Error::AlreadyExists,
        wit::Error::PreconditionFailed => Error::PreconditionFailed,
        wit::Error::Invalid(why) => Error::Invalid(why),
        wit::Error::TooLarge(why) => Error::TooLarge(why),
        wit::Error::Full(why) => Error::Full(why),
        wit::Error::Unavailable(why) => Error::Unavailable(why),
        wit::Error::Other(why) => Error::Other(why),
    }
}

fn info(i: wit::BlobInfo) -> BlobInfo {
    BlobInfo {
        size: i.size,
        etag: i.etag,
        last_modified: i.last_modified,
        content_type: i.content_type,
        sha256: i.sha256,
        metadata: i.metadata,
    }
}

fn options(o: WriteOptions) -> wit::WriteOptions {
    wit::WriteOptions {
        mode: match o.mode {
            WriteMode::CreateOnly => wit::WriteMode::CreateOnly,
            WriteMode::Overwrite => wit::WriteMode::Overwrite,
        },
        content_type: o.content_type,
        metadata: o.metadata,
        expected_size: o.expected_size,
        expected_sha256: o.expected_sha256,
        max_size: o.max_size,
        if_match: o.if_match,
        staged_under: o.staged_under,
    }
}

/// A trap is a broken test, not a store error.
fn called<T>(result: wasmtime::Result<Result<T, wit::Error>>) -> Result<T, Error> {
    result.expect("the store component trapped").map_err(error)
}

#[async_trait]
impl Backend for ComponentStore {
    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "azure (component)".into(),
            location: component_path(),
            blob_count: None,
            total_bytes: None,
        }
    }

    async fn head(&self, key: &str) -> Result<BlobInfo, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        called(store_api.call_head(&mut *store, key).await).map(info)
    }

    async fn open(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<(BlobInfo, DynInputStream), Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let range = range.map(|r| wit::ByteRange {
            offset: r.offset,
            length: r.length,
        });
        let store_api = bindings.blobcache_store_store();
        let (blob, stream) = called(store_api.call_open(&mut *store, key, range).await)?;
        // The response body's stream moves out of the instance's table, to be read here.
        let stream = store.data_mut().table.delete(stream).unwrap();
        Ok((info(blob), stream))
    }

    async fn create(
        &self,
        key: &str,
        options_: WriteOptions,
    ) -> Result<Box<dyn BlobWriter>, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        let writer = called(
            store_api
                .call_create(&mut *store, key, &options(options_))
                .await,
        )?;
        Ok(Box::new(ComponentWriter::new(self.clone(), writer)))
    }

    async fn stage_block(
        &self,
        key: &str,
        block_id: &str,
        expected_size: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        let writer = called(
            store_api
                .call_stage_block(&mut *store, key, block_id, expected_size)
                .await,
        )?;
        Ok(Box::new(ComponentWriter::new(self.clone(), writer)))
    }

    async fn list_blocks(&self, key: &str) -> Result<Vec<StagedBlock>, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        let blocks = called(store_api.call_list_blocks(&mut *store, key).await)?;
        Ok(blocks
            .into_iter()
            .map(|b| StagedBlock {
                id: b.id,
                size: b.size,
            })
            .collect())
    }

    async fn commit_blocks(
        &self,
        key: &str,
        block_ids: Vec<String>,
        options_: WriteOptions,
    ) -> Result<BlobInfo, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        let committed = store_api
            .call_commit_blocks(&mut *store, key, &block_ids, &options(options_))
            .await;
        called(committed).map(info)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        called(store_api.call_delete(&mut *store, key).await)
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let store_api = bindings.blobcache_store_store();
        let page = called(
            store_api
                .call_list(&mut *store, prefix, cursor.as_deref(), limit)
                .await,
        )?;
        Ok(ListPage {
            entries: page
                .entries
                .into_iter()
                .map(|e| ListEntry {
                    key: e.key,
                    info: info(e.info),
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn presign(
        &self,
        key: &str,
        access: Access,
        ttl_seconds: u32,
    ) -> Result<Option<String>, Error> {
        let mut guard = self.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let access = match access {
            Access::Read => wit::Access::Read,
            Access::Write => wit::Access::Write,
        };
        let store_api = bindings.blobcache_store_store();
        called(
            store_api
                .call_presign(&mut *store, key, access, ttl_seconds)
                .await,
        )
    }
}

/// A `writer` of the component: content collected from the stream the contract
/// writes to, handed to `writer.write` at `finish`.
struct ComponentWriter {
    store: ComponentStore,
    writer: ResourceAny,
    content: Arc<Mutex<Vec<u8>>>,
}

impl ComponentWriter {
    fn new(store: ComponentStore, writer: ResourceAny) -> ComponentWriter {
        ComponentWriter {
            store,
            writer,
            content: Arc::default(),
        }
    }
}

struct Collect(Arc<Mutex<Vec<u8>>>);

impl OutputStream for Collect {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.lock().unwrap().extend_from_slice(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[async_trait]
impl Pollable for Collect {
    async fn ready(&mut self) {}
}

#[async_trait]
impl BlobWriter for ComponentWriter {
    fn body(&mut self) -> Result<DynOutputStream, Error> {
        Ok(Box::new(Collect(self.content.clone())))
    }

    async fn finish(self: Box<Self>) -> Result<BlobInfo, Error> {
        let content = std::mem::take(&mut *self.content.lock().unwrap());
        let mut guard = self.store.instance.lock().await;
        let Instance { store, bindings } = &mut *guard;
        let writer_api = bindings.blobcache_store_types().writer();
        for chunk in content.chunks(WRITE_CHUNK) {
            let written = writer_api.call_write(&mut *store, self.writer, chunk).await;
            // After a failed write, `finish` reports the failure and publishes nothing.
            if called(written).is_err() {
                break;
            }
        }
        called(writer_api.call_finish(&mut *store, self.writer).await).map(info)
    }
}
