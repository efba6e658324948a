//! `input-stream`s that hand blob content to the component.

use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

/// Largest chunk handed out per read; bounds memory per transfer.
pub const READ_CHUNK: usize = 256 << 10;

/// Reads `start..end` of a file with positioned reads.
///
/// Reads are synchronous: from the page cache they take microseconds, and avoiding a
/// thread hop per chunk is what lets a GET run at memory speed.
pub struct FileInputStream {
    file: File,
    position: u64,
    end: u64,
}

impl FileInputStream {
    pub fn new(file: File, start: u64, end: u64) -> Self {
        FileInputStream {
            file,
            position: start,
            end,
        }
    }
}

impl InputStream for FileInputStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let remaining = self.end - self.position;
        if remaining == 0 {
            return Err(StreamError::Closed);
        }
        let want = size.min(READ_CHUNK).min(remaining as usize);
        let mut buffer = BytesMut::zeroed(want);
        let got = self
            .file
            .read_at(&mut buffer, self.position)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))?;
        if got == 0 && want > 0 {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "blob file ended early"
            )));
        }
        buffer.truncate(got);
        self.position += got as u64;
        Ok(buffer.freeze())
    }
}

#[async_trait::async_trait]
impl Pollable for FileInputStream {
    async fn ready(&mut self) {}
}

/// Hands out an in-memory blob in chunks.
pub struct BytesInputStream {
    data: Bytes,
}

impl BytesInputStream {
    pub fn new(data: Bytes) -> Self {
        BytesInputStream { data }
    }
}

impl InputStream for BytesInputStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.data.is_empty() {
            return Err(StreamError::Closed);
        }
        let n = size.min(READ_CHUNK).min(self.data.len());
        Ok(self.data.split_to(n))
    }
}

#[async_trait::async_trait]
impl Pollable for BytesInputStream {
    async fn ready(&mut self) {}
}
