//! Responses into typed results: blob properties, listings and errors.

use std::time::Duration;

use quick_xml::events::Event;

/// What kind of failure an error is, for mapping onto callers' own errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    PreconditionFailed,
    /// Wrong key, bad signature, expired SAS.
    Authentication,
    /// The request itself is wrong (bad block list, invalid range...).
    Invalid,
    TooLarge,
    /// Worth retrying: 408, 429, 500, 502, 503, 504.
    Transient,
    Other,
}

/// An error answer from the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureError {
    pub status: u16,
    /// The service's error code (`BlobNotFound`, `ServerBusy`...), empty if none was sent.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for AzureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = if self.code.is_empty() {
            "no error code"
        } else {
            &self.code
        };
        write!(f, "Azure answered {} ({code})", self.status)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for AzureError {}

impl AzureError {
    pub fn kind(&self) -> ErrorKind {
        if is_retryable_status(self.status) {
            return ErrorKind::Transient;
        }
        match (self.status, self.code.as_str()) {
            // A missing container is a broken deployment, not a cache miss.
            (404, "ContainerNotFound") => ErrorKind::Other,
            (404, _) => ErrorKind::NotFound,
            (409, "BlobAlreadyExists" | "ContainerAlreadyExists") => ErrorKind::AlreadyExists,
            (412, _) | (409, "ConditionNotMet") => ErrorKind::PreconditionFailed,
            (403, _) | (401, _) => ErrorKind::Authentication,
            (413, _) | (_, "RequestBodyTooLarge") => ErrorKind::TooLarge,
            (400..=499, _) => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        }
    }
}

/// Statuses worth retrying with backoff; other 4xx are final.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The error in a non-2xx response. The code comes from the XML body, or from
/// `x-ms-error-code` when there is no body (HEAD).
pub fn error(status: u16, headers: &http::HeaderMap, body: &[u8]) -> AzureError {
    let mut code = String::new();
    let mut message = String::new();
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut current = Vec::new();
    let mut buffer = Vec::new();
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(Event::Start(start)) => current = start.name().as_ref().to_vec(),
            Ok(Event::Text(text)) => {
                let text = text.unescape().map(|t| t.into_owned()).unwrap_or_default();
                match current.as_slice() {
                    b"Code" => code = text,
                    b"Message" => message = text.lines().next().unwrap_or("").to_string(),
                    _ => {}
                }
            }
            Ok(Event::End(_)) => current.clear(),
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buffer.clear();
    }
    if code.is_empty() {
        code = header(headers, "x-ms-error-code").unwrap_or_default();
    }
    AzureError {
        status,
        code,
        message,
    }
}

/// How long the service asked us to wait (`Retry-After`, in seconds).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    header(headers, "retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A blob's properties, from the headers of Get Blob or Get Blob Properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobProperties {
    /// The whole blob's size (for ranged reads, from `Content-Range`).
    pub size: u64,
    pub etag: String,
    /// Unix seconds.
    pub last_modified: u64,
    pub content_type: Option<String>,
    /// `x-ms-meta-*` headers, names lowercased, sorted.
    pub metadata: Vec<(String, String)>,
}

pub fn properties(headers: &http::HeaderMap) -> Result<BlobProperties, AzureError> {
    let malformed = |what: &str| AzureError {
        status: 200,
        code: "MalformedResponse".into(),
        message: what.into(),
    };
    let size = match header(headers, "content-range") {
        // "bytes 0-99/12345"
        Some(range) => range
            .rsplit('/')
            .next()
            .and_then(|total| total.parse().ok()),
        None => header(headers, "content-length").and_then(|n| n.parse().ok()),
    }
    .ok_or_else(|| malformed("no usable Content-Length or Content-Range"))?;
    let last_modified = header(headers, "last-modified")
        .and_then(|date| httpdate::parse_http_date(&date).ok())
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut metadata: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix("x-ms-meta-")?;
            Some((name.to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    metadata.sort();
    Ok(BlobProperties {
        size,
        etag: header(headers, "etag").unwrap_or_default(),
        last_modified,
        content_type: header(headers, "content-type"),
        metadata,
    })
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// One blob of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListedBlob {
    pub name: String,
    pub size: u64,
    pub last_modified: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// `CopyStatus`, for the destination of a Copy Blob: `pending`, `success`,
    /// `aborted` or `failed`.
    pub copy_status: Option<String>,
    /// `LastAccessTime` (Unix seconds), listed when the account tracks last
    /// access (Azure updates it at most once a day per blob).
    pub last_access: Option<u64>,
}

/// A page of List Blobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub blobs: Vec<ListedBlob>,
    /// Pass as `marker` for the next page; none after the last page.
    pub next_marker: Option<String>,
}

/// Parses the XML of List Blobs.
pub fn list_page(xml: &[u8]) -> Result<ListPage, AzureError> {
    let malformed = |why: String| AzureError {
        status: 200,
        code: "MalformedResponse".into(),
        message: why,
    };
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut page = ListPage::default();
    let mut blob = ListedBlob::default();
    let mut name_encoded = false;
    let mut buffer = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buffer)
            .map_err(|e| malformed(format!("bad listing XML: {e}")))?;
        match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                if name == "Blob" {
                    blob = ListedBlob::default();
                }
                if name == "Name" {
                    name_encoded = start
                        .attributes()
                        .flatten()
                        .any(|a| a.key.as_ref() == b"Encoded" && a.value.as_ref() == b"true");
                }
                path.push(name);
            }
            Event::End(_) => {
                let closed = path.pop();
                if closed.as_deref() == Some("Blob") {
                    page.blobs.push(std::mem::take(&mut blob));
                }
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| malformed(format!("bad listing XML: {e}")))?
                    .into_owned();
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match names.as_slice() {
                    [.., "Blob", "Name"] => {
                        blob.name = if name_encoded {
                            percent_encoding::percent_decode_str(&text)
                                .decode_utf8_lossy()
                                .into_owned()
                        } else {
                            text
                        }
                    }
                    [.., "Properties", "Content-Length"] => {
                        blob.size = text
                            .parse()
                            .map_err(|_| malformed(format!("bad Content-Length {text:?}")))?
                    }
                    [.., "Properties", "Last-Modified"] => {
                        blob.last_modified = unix_of_http_date(&text).unwrap_or(0)
                    }
                    [.., "Properties", "LastAccessTime"] => {
                        blob.last_access = unix_of_http_date(&text)
                    }
                    [.., "Properties", "Etag"] => blob.etag = text,
                    [.., "Properties", "Content-Type"] => blob.content_type = Some(text),
                    [.., "Properties", "CopyStatus"] => blob.copy_status = Some(text),
                    [.., "Metadata", key] => blob.metadata.push((key.to_ascii_lowercase(), text)),
                    ["EnumerationResults", "NextMarker"] if !text.is_empty() => {
                        page.next_marker = Some(text)
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if !path.is_empty() {
        return Err(malformed("listing XML ended early".into()));
    }
    Ok(page)
}

fn unix_of_http_date(text: &str) -> Option<u64> {
    httpdate::parse_http_date(text)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// One block of a Get Block List answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBlock {
    /// The block id as sent (base64).
    pub name: String,
    pub size: u64,
}

/// Parses Get Block List: the uncommitted blocks, in the order Azure lists them.
pub fn uncommitted_blocks(xml: &[u8]) -> Result<Vec<ListedBlock>, AzureError> {
    let malformed = |why: String| AzureError {
        status: 200,
        code: "MalformedResponse".into(),
        message: why,
    };
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut blocks = Vec::new();
    let mut block = ListedBlock {
        name: String::new(),
        size: 0,
    };
    let mut buffer = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buffer)
            .map_err(|e| malformed(format!("bad block list XML: {e}")))?
        {
            Event::Start(start) => {
                path.push(String::from_utf8_lossy(start.name().as_ref()).into_owned())
            }
            Event::End(_) => {
                let closed = path.pop();
                let in_uncommitted = path.last().is_some_and(|p| p == "UncommittedBlocks");
                if closed.as_deref() == Some("Block") && in_uncommitted {
                    blocks.push(std::mem::replace(
                        &mut block,
                        ListedBlock {
                            name: String::new(),
                            size: 0,
                        },
                    ));
                }
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| malformed(format!("bad block list XML: {e}")))?;
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match names.as_slice() {
                    [.., "UncommittedBlocks", "Block", "Name"] => block.name = text.into_owned(),
                    [.., "UncommittedBlocks", "Block", "Size"] => {
                        block.size = text
                            .parse()
                            .map_err(|_| malformed(format!("bad block size {text:?}")))?
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if !path.is_empty() {
        return Err(malformed("block list XML ended early".into()));
    }
    Ok(blocks)
}

/// Exponential backoff with full jitter, capped, for at most `attempts` tries.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (after `attempt` failures), or none
    /// when no tries are left. `jitter` is a random number in `[0, 1)`; the service's
    /// `Retry-After` is honoured when it asks for longer.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt + 1 >= self.attempts {
            return None;
        }
        let exponential = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let jittered = exponential.mul_f64(jitter.clamp(0.0, 1.0));
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_delay * 6)),
            None => jittered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_from_body_and_from_header() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code><Message>The specified blob does not exist.\nRequestId:1</Message></Error>";
        let e = error(404, &http::HeaderMap::new(), body);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("BlobNotFound", "The specified blob does not exist.")
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let container = error(
            404,
            &http::HeaderMap::new(),
            b"<Error><Code>ContainerNotFound</Code></Error>",
        );
        assert_eq!(container.kind(), ErrorKind::Other);

        let mut headers = http::HeaderMap::new();
        headers.insert("x-ms-error-code", "AuthenticationFailed".parse().unwrap());
        let e = error(403, &headers, b"");
        assert_eq!(
            (e.code.as_str(), e.kind()),
            ("AuthenticationFailed", ErrorKind::Authentication)
        );

        assert_eq!(
            error(
                409,
                &http::HeaderMap::new(),
                b"<Error><Code>BlobAlreadyExists</Code></Error>"
            )
            .kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            error(
                503,
                &http::HeaderMap::new(),
                b"<Error><Code>ServerBusy</Code></Error>"
            )
            .kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            error(400, &http::HeaderMap::new(), b"not xml <<<").kind(),
            ErrorKind::Invalid
        );
    }

    #[test]
    fn properties_of_whole_and_ranged_reads() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-length", "100".parse().unwrap());
        headers.insert("etag", "\"0x8D\"".parse().unwrap());
        headers.insert(
            "last-modified",
            "Thu, 26 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        headers.insert("x-ms-meta-sha256", "ab".parse().unwrap());
        let p = properties(&headers).unwrap();
        assert_eq!(
            (p.size, p.last_modified, p.etag.as_str()),
            (100, 1_795_694_400, "\"0x8D\"")
        );
        assert_eq!(p.metadata, vec![("sha256".to_string(), "ab".to_string())]);
        headers.insert("content-range", "bytes 0-99/12345".parse().unwrap());
        assert_eq!(properties(&headers).unwrap().size, 12345);
        assert!(properties(&http::HeaderMap::new()).is_err());
    }

    #[test]
    fn listing_pages() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="cache">
  <Prefix>bazel/</Prefix><MaxResults>2</MaxResults>
  <Blobs>
    <Blob><Name>bazel/ac/1</Name><Properties><Last-Modified>Thu, 26 Nov 2026 12:00:00 GMT</Last-Modified><LastAccessTime>Fri, 27 Nov 2026 08:00:00 GMT</LastAccessTime><Etag>0x1</Etag><Content-Length>5</Content-Length></Properties><Metadata><Sha256>ab</Sha256></Metadata></Blob>
    <Blob><Name Encoded="true">bazel/a%20b</Name><Properties><Content-Length>0</Content-Length></Properties></Blob>
  </Blobs>
  <NextMarker>2!abc</NextMarker>
</EnumerationResults>"#;
        let page = list_page(xml).unwrap();
        assert_eq!(page.blobs.len(), 2);
        assert_eq!(page.blobs[0].name, "bazel/ac/1");
        assert_eq!(page.blobs[0].size, 5);
        assert_eq!(
            page.blobs[0].metadata,
            vec![("sha256".to_string(), "ab".to_string())]
        );
        assert_eq!(page.blobs[1].name, "bazel/a b");
        assert_eq!(
            page.blobs[0].last_access,
            Some(page.blobs[0].last_modified + 20 * 3600)
        );
        assert_eq!(page.blobs[1].last_access, None);
        assert_eq!(page.next_marker.as_deref(), Some("2!abc"));
        let last =
            list_page(b"<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>").unwrap();
        assert_eq!(last.next_marker, None);
        assert!(list_page(b"<EnumerationResults><Blobs><Blob><Name>x").is_err());
        assert!(list_page(b"<EnumerationResults><Blobs><Blob><Properties><Content-Length>x</Content-Length></Properties></Blob></Blobs></EnumerationResults>").is_err());
    }

    #[test]
    fn uncommitted_block_lists() {
        let xml = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><CommittedBlocks><Block><Name>Y29t</Name><Size>1</Size></Block></CommittedBlocks><UncommittedBlocks><Block><Name>QUFB</Name><Size>10</Size></Block><Block><Name>QkJC</Name><Size>20</Size></Block></UncommittedBlocks></BlockList>";
        let blocks = uncommitted_blocks(xml).unwrap();
        assert_eq!(
            blocks,
            vec![
                ListedBlock {
                    name: "QUFB".into(),
                    size: 10
                },
                ListedBlock {
                    name: "QkJC".into(),
                    size: 20
                },
            ]
        );
        assert!(
            uncommitted_blocks(b"<BlockList><UncommittedBlocks><Block><Size>x</Size>").is_err()
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(0, None, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(policy.delay(3, None, 1.0), Some(Duration::from_millis(800)));
        assert_eq!(policy.delay(3, None, 0.5), Some(Duration::from_millis(400)));
        assert_eq!(
            policy.delay(2, Some(Duration::from_secs(3)), 0.1),
            Some(Duration::from_secs(3))
        );
        assert_eq!(policy.delay(4, None, 1.0), None, "five tries in all");
        let long = RetryPolicy {
            attempts: 100,
            ..RetryPolicy::default()
        };
        assert_eq!(long.delay(40, None, 1.0), Some(Duration::from_secs(10)));
    }
}
