//! Downloads from Azure, streamed into the component. A task reads ahead a few
//! chunks; a body that breaks midway is resumed with a ranged read pinned to the
//! same version (If-Match), so two versions are never spliced together. The
//! stream ends only on an explicit end marker: a task that dies early fails the
//! stream instead of passing for a complete download.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

use super::{describe, random_unit, AzureStore};

enum Message {
    Chunk(Bytes),
    End,
    Failed(String),
}

/// What a download still has to fetch.
pub(super) struct Download {
    pub(super) store: AzureStore,
    pub(super) blob: String,
    pub(super) etag: String,
    pub(super) position: u64,
    pub(super) remaining: u64,
}

impl Download {
    async fn run(mut self, first: reqwest::Response, sender: mpsc::Sender<Message>) {
        let mut response = Some(first);
        let mut failures = 0;
        while self.remaining > 0 {
            let current = match response.take() {
                Some(current) => current,
                None => match self.resume().await {
                    Ok(resumed) => resumed,
                    Err(why) => {
                        let _ = sender.send(Message::Failed(why)).await;
                        return;
                    }
                },
            };
            let mut body = current.bytes_stream();
            let mut broken = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        let n = (chunk.len() as u64).min(self.remaining);
                        if sender
                            .send(Message::Chunk(chunk.slice(..n as usize)))
                            .await
                            .is_err()
                        {
                            return; // the component stopped reading
                        }
                        self.position += n;
                        self.remaining -= n;
                    }
                    Err(e) => {
                        broken = Some(describe(&e));
                        break;
                    }
                }
            }
            if self.remaining == 0 {
                break;
            }
            let why = broken.unwrap_or_else(|| "the response body ended early".into());
            match self.store.inner.retry.delay(failures, None, random_unit()) {
                Some(delay) => {
                    tracing::debug!(
                        "download of {} broke at byte {}: {why}; resuming",
                        self.blob,
                        self.position
                    );
                    tokio::time::sleep(delay).await;
                    failures += 1;
                }
                None => {
                    let _ = sender.send(Message::Failed(why)).await;
                    return;
                }
            }
        }
        let _ = sender.send(Message::End).await;
    }

    async fn resume(&self) -> Result<reqwest::Response, String> {
        let range = Some((self.position, Some(self.remaining)));
        let container = &self.store.inner.container;
        self.store
            .call(
                |now| container.get_blob(&self.blob, range, Some(&self.etag), now),
                None,
            )
            .await
            .map_err(|e| format!("resuming the download failed: {e}"))
    }
}

/// The `input-stream` the component reads a download from.
pub(super) struct ResponseStream {
    receiver: mpsc::Receiver<Message>,
    pending: Option<Bytes>,
    done: Option<Result<(), String>>,
}

impl ResponseStream {
    pub(super) fn spawn(response: reqwest::Response, download: Download) -> ResponseStream {
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(download.run(response, sender));
        ResponseStream {
            receiver,
            pending: None,
            done: None,
        }
    }

    fn take(&mut self, message: Option<Message>) {
        match message {
            Some(Message::Chunk(chunk)) => self.pending = Some(chunk),
            Some(Message::End) => self.done = Some(Ok(())),
            Some(Message::Failed(why)) => self.done = Some(Err(why)),
            None => self.done = Some(Err("the download stopped without finishing".into())),
        }
    }
}

impl InputStream for ResponseStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.pending.is_none() && self.done.is_none() {
            match self.receiver.try_recv() {
                Ok(message) => self.take(Some(message)),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(Bytes::new()),
                Err(mpsc::error::TryRecvError::Disconnected) => self.take(None),
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
        if self.pending.is_none() && self.done.is_none() {
            let message = self.receiver.recv().await;
            self.take(message);
        }
    }
}
