//! Binds a [`Backend`] to the component's `blobcache:store` import.

use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::{
    Access, BlobInfo, ByteRange, Error, ListPage, PendingWrite, StagedBlock, StoreStatus,
    WriteOptions,
};
use crate::bindings::blobcache::store::{store, types};
use crate::runtime::RequestState;

type Wit<T> = wasmtime::Result<Result<T, Error>>;

impl types::Host for RequestState {}

impl types::HostWriter for RequestState {
    async fn body(
        &mut self,
        writer: Resource<PendingWrite>,
    ) -> Wit<Option<Resource<DynOutputStream>>> {
        let pending = self.table.get_mut(&writer)?;
        if pending.chunks.is_some() {
            return Ok(Err(Error::Invalid(
                "the writer is already fed through write".into(),
            )));
        }
        let stream = match pending.writer.body() {
            Ok(stream) => self.progress.wrap_output(stream),
            Err(e) => return Ok(Err(e)),
        };
        // A child of the writer: the writer cannot finish while its stream lives.
        Ok(Ok(Some(self.table.push_child(stream, &writer)?)))
    }

    async fn write(&mut self, writer: Resource<PendingWrite>, chunk: Vec<u8>) -> Wit<()> {
        let pending = self.table.get_mut(&writer)?;
        if let Some(failed) = &pending.failed {
            return Ok(Err(failed.clone()));
        }
        let stream = match &mut pending.chunks {
            Some(stream) => stream,
            None => match pending.writer.body() {
                Ok(stream) => pending.chunks.insert(self.progress.wrap_output(stream)),
                Err(e) => return Ok(Err(e)),
            },
        };
        let mut rest = bytes::Bytes::from(chunk);
        while !rest.is_empty() {
            let written = match stream.check_write() {
                Ok(0) => {
                    stream.ready().await;
                    continue;
                }
                Ok(permit) => stream.write(rest.split_to(permit.min(rest.len()))),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                // `finish` returns this and publishes nothing.
                let error = match e {
                    wasmtime_wasi::p2::StreamError::LastOperationFailed(cause) => cause
                        .downcast_ref::<Error>()
                        .cloned()
                        .unwrap_or_else(|| Error::Other(format!("upload failed: {cause}"))),
                    other => Error::Other(format!("upload failed: {other}")),
                };
                pending.failed = Some(error.clone());
                return Ok(Err(error));
            }
        }
        Ok(Ok(()))
    }

    async fn finish(&mut self, writer: Resource<PendingWrite>) -> Wit<BlobInfo> {
        let PendingWrite {
            writer,
            chunks,
            failed,
        } = self.table.delete(writer)?;
        drop(chunks);
        let _busy = self.progress.store_call();
        if let Some(failed) = failed {
            // Never finish after a failed write: dropping the writer discards it.
            drop(writer);
            return Ok(Err(failed));
        }
        Ok(writer.finish().await)
    }

    async fn drop(&mut self, writer: Resource<PendingWrite>) -> wasmtime::Result<()> {
        // Dropping the backend writer discards the upload.
        self.table.delete(writer)?;
        Ok(())
    }
}

impl store::Host for RequestState {
    async fn status(&mut self) -> wasmtime::Result<StoreStatus> {
        Ok(self.backend.status())
    }

    async fn head(&mut self, key: String) -> Wit<BlobInfo> {
        let _busy = self.progress.store_call();
        Ok(self.backend.head(&key).await)
    }

    async fn open(
        &mut self,
        key: String,
        range: Option<ByteRange>,
    ) -> Wit<(BlobInfo, Resource<DynInputStream>)> {
        let _busy = self.progress.store_call();
        match self.backend.open(&key, range).await {
            Ok((info, stream)) => {
                let stream = self.table.push(self.progress.wrap_input(stream))?;
                Ok(Ok((info, stream)))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    async fn create(&mut self, key: String, options: WriteOptions) -> Wit<Resource<PendingWrite>> {
        let _busy = self.progress.store_call();
        match self.backend.create(&key, options).await {
            Ok(writer) => Ok(Ok(self.table.push(PendingWrite::new(writer))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn stage_block(
        &mut self,
        key: String,
        block_id: String,
        expected_size: Option<u64>,
    ) -> Wit<Resource<PendingWrite>> {
        let _busy = self.progress.store_call();
        match self
            .backend
            .stage_block(&key, &block_id, expected_size)
            .await
        {
            Ok(writer) => Ok(Ok(self.table.push(PendingWrite::new(writer))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn list_blocks(&mut self, key: String) -> Wit<Vec<StagedBlock>> {
        let _busy = self.progress.store_call();
        Ok(self.backend.list_blocks(&key).await)
    }

    async fn commit_blocks(
        &mut self,
        key: String,
        block_ids: Vec<String>,
        options: WriteOptions,
    ) -> Wit<BlobInfo> {
        let _busy = self.progress.store_call();
        Ok(self.backend.commit_blocks(&key, block_ids, options).await)
    }

    async fn delete(&mut self, key: String) -> Wit<()> {
        let _busy = self.progress.store_call();
        Ok(self.backend.delete(&key).await)
    }

    async fn list(&mut self, prefix: String, cursor: Option<String>, limit: u32) -> Wit<ListPage> {
        let _busy = self.progress.store_call();
        Ok(self.backend.list(&prefix, cursor, limit).await)
    }

    async fn presign(
        &mut self,
        key: String,
        access: Access,
        ttl_seconds: u32,
    ) -> Wit<Option<String>> {
        let _busy = self.progress.store_call();
        Ok(self.backend.presign(&key, access, ttl_seconds).await)
    }
}
