//! The verifying sink every upload streams into: counts bytes, hashes them with
//! sha256 (natively, where SHA-NI makes it nearly free), enforces the size limit,
//! and remembers the first failure so `finish` can report it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::Error;

/// Largest write the stream permits at once.
const WRITE_PERMIT: usize = 1 << 20;

pub struct Sink<W> {
    writer: W,
    hasher: Sha256,
    written: u64,
    max_size: Option<u64>,
    failure: Option<Error>,
}

/// What a sink produced: the underlying writer, the byte count and the digest.
pub struct Written<W> {
    pub writer: W,
    pub size: u64,
    pub sha256: String,
}

impl<W: Write> Sink<W> {
    pub fn new(writer: W, max_size: Option<u64>) -> Self {
        Sink {
            writer,
            hasher: Sha256::new(),
            written: 0,
            max_size,
            failure: None,
        }
    }

    /// Appends `bytes`; after the first failure every call fails with it.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let total = self.written + bytes.len() as u64;
        if let Some(max) = self.max_size.filter(|max| total > *max) {
            return Err(self.fail(Error::TooLarge(format!(
                "blob is over the {max}-byte limit"
            ))));
        }
        if let Err(e) = self.writer.write_all(bytes) {
            return Err(self.fail(e.into()));
        }
        self.hasher.update(bytes);
        self.written = total;
        Ok(())
    }

    fn fail(&mut self, error: Error) -> Error {
        self.failure = Some(error.clone());
        error
    }

    /// Flushes and hands back the writer, or the failure that stopped the upload.
    pub fn finish(mut self) -> Result<Written<W>, Error> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        self.writer.flush()?;
        Ok(Written {
            writer: self.writer,
            size: self.written,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// A sink shared between the writer (which finishes it) and the stream the
/// component writes to.
pub type SharedSink<W> = Arc<Mutex<Option<Sink<W>>>>;

/// The `output-stream` side of a sink.
pub struct SinkStream<W> {
    sink: SharedSink<W>,
}

impl<W> SinkStream<W> {
    pub fn new(sink: SharedSink<W>) -> Self {
        SinkStream { sink }
    }
}

impl<W: Write + Send + 'static> OutputStream for SinkStream<W> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut guard = self.sink.lock().unwrap();
        let sink = guard.as_mut().ok_or(StreamError::Closed)?;
        sink.write(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let guard = self.sink.lock().unwrap();
        match guard.as_ref() {
            None => Err(StreamError::Closed),
            Some(Sink {
                failure: Some(e), ..
            }) => Err(StreamError::LastOperationFailed(e.clone().into())),
            Some(_) => Ok(WRITE_PERMIT),
        }
    }
}

#[async_trait::async_trait]
impl<W: Send + 'static> Pollable for SinkStream<W> {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_counts_and_limits() {
        let mut sink = Sink::new(Vec::new(), Some(5));
        sink.write(b"abc").unwrap();
        let written = Sink::finish(sink).unwrap();
        assert_eq!(written.size, 3);
        assert_eq!(
            written.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        let mut sink = Sink::new(Vec::new(), Some(5));
        sink.write(b"abc").unwrap();
        assert!(matches!(sink.write(b"def"), Err(Error::TooLarge(_))));
        assert!(sink.write(b"").is_err(), "a failed sink stays failed");
        assert!(matches!(Sink::finish(sink), Err(Error::TooLarge(_))));
    }
}
