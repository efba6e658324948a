//! Blob operations as signed `http::Request`s. No I/O: the caller sends them with
//! whatever transport it has (hyper natively, outgoing wasi:http in a component)
//! and hands the response to [`crate::response`].

use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use crate::account::{encode_query_value, Account, ConfigError};
use crate::signing::{self, BlobSas};

/// The service version every request asks for.
pub const API_VERSION: &str = "2021-08-06";

/// What goes in a request's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Empty,
    /// Small bodies the operation builds itself (block lists).
    Bytes(Bytes),
    /// Content the caller streams; the request already declares its length.
    Streamed {
        length: u64,
    },
}

/// A signed request, ready to send.
#[derive(Debug)]
pub struct Operation {
    pub request: http::Request<()>,
    pub body: Body,
}

/// A condition on the blob's current state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    #[default]
    None,
    /// `If-None-Match: *`: create only; 409 `BlobAlreadyExists` if it exists.
    IfNoneExists,
    /// `If-Match: <etag>`: replace only that version; 412 otherwise.
    IfMatch(String),
}

/// Properties set when a blob is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteProperties {
    pub content_type: Option<String>,
    /// Sent as `x-ms-meta-<name>`; names must be valid C# identifiers.
    pub metadata: Vec<(String, String)>,
    pub condition: Condition,
}

/// A container of a storage account: the unit every operation addresses.
#[derive(Clone, Debug)]
pub struct Container {
    account: Account,
    name: String,
}

impl Container {
    pub fn new(account: Account, name: &str) -> Result<Container, ConfigError> {
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !valid {
            return Err(ConfigError(format!(
                "container name {name:?} must be 3-63 lowercase letters, digits and single hyphens"
            )));
        }
        Ok(Container {
            account,
            name: name.to_string(),
        })
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The blob's URL without a query.
    pub fn blob_url(&self, blob: &str) -> String {
        self.account
            .url(&self.account.path(&self.name, Some(blob)), "")
    }

    /// Put Blob: the whole content in one request (up to 5000 MiB).
    pub fn put_blob(
        &self,
        blob: &str,
        length: u64,
        properties: &WriteProperties,
        now: SystemTime,
    ) -> Operation {
        let mut headers = vec![(
            HeaderName::from_static("x-ms-blob-type"),
            "BlockBlob".to_string(),
        )];
        add_write_properties(&mut headers, properties);
        self.build(
            Method::PUT,
            Some(blob),
            "",
            headers,
            Body::Streamed { length },
            now,
        )
    }

    /// Put Block: one uncommitted block of a blob (up to 4000 MiB).
    pub fn put_block(&self, blob: &str, block_id: &str, length: u64, now: SystemTime) -> Operation {
        let query = format!("comp=block&blockid={}", encode_query_value(block_id));
        self.build(
            Method::PUT,
            Some(blob),
            &query,
            Vec::new(),
            Body::Streamed { length },
            now,
        )
    }

    /// Put Block List: commits these blocks, in order, as the blob's content.
    pub fn put_block_list(
        &self,
        blob: &str,
        block_ids: &[String],
        properties: &WriteProperties,
        now: SystemTime,
    ) -> Operation {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in block_ids {
            xml.push_str("<Latest>");
            xml.push_str(&quick_xml::escape::escape(id.as_str()));
            xml.push_str("</Latest>");
        }
        xml.push_str("</BlockList>");
        let mut headers = vec![(
            HeaderName::from_static("content-type"),
            "application/xml".to_string(),
        )];
        // The blob's own content type travels as x-ms-blob-content-type here.
        let mut blob_properties = properties.clone();
        if let Some(content_type) = blob_properties.content_type.take() {
            headers.push((
                HeaderName::from_static("x-ms-blob-content-type"),
                content_type,
            ));
        }
        add_write_properties(&mut headers, &blob_properties);
        self.build(
            Method::PUT,
            Some(blob),
            "comp=blocklist",
            headers,
            Body::Bytes(Bytes::from(xml)),
            now,
        )
    }

    /// Get Blob, optionally a byte range (`offset`, `length`), optionally only if
    /// the blob is still the version with `if_match` as its etag (412 otherwise),
    /// so a resumed download never splices two versions together.
    pub fn get_blob(
        &self,
        blob: &str,
        range: Option<(u64, Option<u64>)>,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Operation {
        let mut headers = Vec::new();
        if let Some(etag) = if_match {
            headers.push((http::header::IF_MATCH, etag.to_string()));
        }
        if let Some((offset, length)) = range {
            // Callers answer zero-length reads themselves: Azure has no empty range.
            let value = match length {
                Some(0) | None => format!("bytes={offset}-"),
                Some(length) => format!("bytes={offset}-{}", offset.saturating_add(length - 1)),
            };
            headers.push((HeaderName::from_static("x-ms-range"), value));
        }
        self.build(Method::GET, Some(blob), "", headers, Body::Empty, now)
    }

    /// Copy Blob: publishes the committed blob at `source` (a URL the service can
    /// read, see [`Container::copy_source_url`]) as `blob`, server-side, only if the
    /// source is still the version `source_etag`. With `sync` it is Copy Blob From
    /// URL (`x-ms-requires-sync`, sources up to 256 MiB): the answer comes when the
    /// copy is complete. Without, Azure may answer `x-ms-copy-status: pending`.
    /// The content type travels with the source; `properties` give the metadata
    /// and the destination's condition.
    pub fn copy_blob(
        &self,
        blob: &str,
        source: &str,
        source_etag: &str,
        sync: bool,
        properties: &WriteProperties,
        now: SystemTime,
    ) -> Operation {
        let mut headers = vec![
            (
                HeaderName::from_static("x-ms-copy-source"),
                source.to_string(),
            ),
            (
                HeaderName::from_static("x-ms-source-if-match"),
                source_etag.to_string(),
            ),
        ];
        if sync {
            headers.push((
                HeaderName::from_static("x-ms-requires-sync"),
                "true".to_string(),
            ));
        }
        let destination = WriteProperties {
            content_type: None,
            ..properties.clone()
        };
        add_write_properties(&mut headers, &destination);
        self.build(Method::PUT, Some(blob), "", headers, Body::Empty, now)
    }

    /// A URL of `blob` that the service itself may read for a copy in the same
    /// account: a read SAS for an hour, or the request URL with the account's SAS.
    pub fn copy_source_url(&self, blob: &str, now_unix: u64) -> String {
        self.sas_url(
            blob,
            "r",
            Some(now_unix.saturating_sub(300)),
            now_unix + 3600,
        )
        .unwrap_or_else(|| {
            self.account
                .request_url(&self.account.path(&self.name, Some(blob)), "")
        })
    }

    /// Get Block List of the uncommitted blocks (staged, not yet committed).
    pub fn get_uncommitted_blocks(&self, blob: &str, now: SystemTime) -> Operation {
        let query = "comp=blocklist&blocklisttype=uncommitted";
        self.build(Method::GET, Some(blob), query, Vec::new(), Body::Empty, now)
    }

    /// Get Blob Properties (HEAD: errors carry their code only in `x-ms-error-code`).
    pub fn get_properties(&self, blob: &str, now: SystemTime) -> Operation {
        self.build(Method::HEAD, Some(blob), "", Vec::new(), Body::Empty, now)
    }

    pub fn delete_blob(&self, blob: &str, now: SystemTime) -> Operation {
        self.build(Method::DELETE, Some(blob), "", Vec::new(), Body::Empty, now)
    }

    /// List Blobs: names starting with `prefix`, from `marker`, at most `max_results`.
    pub fn list_blobs(
        &self,
        prefix: &str,
        marker: Option<&str>,
        max_results: u32,
        include_metadata: bool,
        now: SystemTime,
    ) -> Operation {
        let mut query = String::from("restype=container&comp=list");
        if !prefix.is_empty() {
            query.push_str(&format!("&prefix={}", encode_query_value(prefix)));
        }
        if let Some(marker) = marker {
            query.push_str(&format!("&marker={}", encode_query_value(marker)));
        }
        query.push_str(&format!("&maxresults={}", max_results.clamp(1, 5000)));
        if include_metadata {
            query.push_str("&include=metadata");
        }
        self.build(Method::GET, None, &query, Vec::new(), Body::Empty, now)
    }

    /// Create Container (409 `ContainerAlreadyExists` when it exists).
    pub fn create_container(&self, now: SystemTime) -> Operation {
        self.build(
            Method::PUT,
            None,
            "restype=container",
            Vec::new(),
            Body::Empty,
            now,
        )
    }

    /// A URL with a service SAS granting `permissions` on the blob until `expiry`
    /// (Unix seconds); none when the account has no key to sign with.
    pub fn sas_url(
        &self,
        blob: &str,
        permissions: &str,
        start: Option<u64>,
        expiry: u64,
    ) -> Option<String> {
        let sas = BlobSas {
            permissions: permissions.to_string(),
            start: start.map(signing::iso8601),
            expiry: signing::iso8601(expiry),
            protocol: None,
            version: API_VERSION.to_string(),
        };
        let query = signing::sas_query(&self.account, &self.name, blob, &sas)?;
        Some(format!("{}?{}", self.blob_url(blob), query))
    }

    fn build(
        &self,
        method: Method,
        blob: Option<&str>,
        query: &str,
        headers: Vec<(HeaderName, String)>,
        body: Body,
        now: SystemTime,
    ) -> Operation {
        let url = self
            .account
            .request_url(&self.account.path(&self.name, blob), query);
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .body(())
            .expect("URLs built from validated parts parse");
        let map = request.headers_mut();
        map.insert("x-ms-date", value(&httpdate::fmt_http_date(now)));
        map.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        let length = match &body {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::Streamed { length } => *length,
        };
        // Writes always declare their length, 0 included.
        if method == Method::PUT || method == Method::POST {
            map.insert(http::header::CONTENT_LENGTH, value(&length.to_string()));
        }
        for (name, text) in headers {
            map.insert(name, value(&text));
        }
        signing::sign(&self.account, &mut request);
        Operation { request, body }
    }
}

fn add_write_properties(headers: &mut Vec<(HeaderName, String)>, properties: &WriteProperties) {
    if let Some(content_type) = &properties.content_type {
        headers.push((http::header::CONTENT_TYPE, content_type.clone()));
    }
    for (name, text) in &properties.metadata {
        if let Ok(name) =
            HeaderName::from_bytes(format!("x-ms-meta-{}", name.to_ascii_lowercase()).as_bytes())
        {
            headers.push((name, text.clone()));
        }
    }
    match &properties.condition {
        Condition::None => {}
        Condition::IfNoneExists => headers.push((http::header::IF_NONE_MATCH, "*".into())),
        Condition::IfMatch(etag) => headers.push((http::header::IF_MATCH, etag.clone())),
    }
}

/// Header values built here are ASCII; anything else is replaced, never a panic.
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The id of the `index`th block of a blob: every id of one blob must have the
/// same length, so the index is zero-padded before base64.
pub fn block_id(index: u64) -> String {
    STANDARD.encode(format!("{index:032}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{DEV_ACCOUNT, DEV_ENDPOINT, DEV_KEY};

    fn container() -> Container {
        Container::new(
            Account::new(DEV_ACCOUNT, DEV_KEY, Some(DEV_ENDPOINT)).unwrap(),
            "cache",
        )
        .unwrap()
    }

    fn now() -> SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_694_400)
    }

    #[test]
    fn put_blob_declares_length_type_and_condition() {
        let properties = WriteProperties {
            content_type: Some("application/octet-stream".into()),
            metadata: vec![("sha256".into(), "00ff".into())],
            condition: Condition::IfNoneExists,
        };
        let op = container().put_blob("bazel/cas/x", 11, &properties, now());
        let headers = op.request.headers();
        assert_eq!(
            op.request.uri(),
            "http://127.0.0.1:10000/devstoreaccount1/cache/bazel/cas/x"
        );
        assert_eq!(headers["content-length"], "11");
        assert_eq!(headers["if-none-match"], "*");
        assert_eq!(headers["x-ms-meta-sha256"], "00ff");
        assert_eq!(headers["x-ms-blob-type"], "BlockBlob");
        assert_eq!(headers["x-ms-date"], "Thu, 26 Nov 2026 12:00:00 GMT");
        assert!(headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("SharedKey devstoreaccount1:"));
        assert!(headers.get("date").is_none(), "x-ms-date only, never both");
        assert_eq!(op.body, Body::Streamed { length: 11 });
    }

    #[test]
    fn block_ids_have_one_length_and_are_encoded_in_the_query() {
        assert_eq!(block_id(0).len(), block_id(49_999).len());
        let id = STANDARD.encode([0xfbu8, 0xff, 0xfe]); // "+//+"
        let op = container().put_block("big", &id, 5, now());
        assert_eq!(
            op.request.uri().query(),
            Some("comp=block&blockid=%2B%2F%2F%2B")
        );
    }

    #[test]
    fn block_list_body_and_ranges() {
        let op = container().put_block_list(
            "big",
            &[block_id(0), block_id(1)],
            &WriteProperties::default(),
            now(),
        );
        let Body::Bytes(xml) = &op.body else { panic!() };
        let xml = std::str::from_utf8(xml).unwrap();
        assert!(xml.contains(&format!(
            "<Latest>{}</Latest><Latest>{}</Latest>",
            block_id(0),
            block_id(1)
        )));
        assert_eq!(
            op.request.headers()["content-length"],
            xml.len().to_string().as_str()
        );
        let get = container().get_blob("b", Some((10, Some(5))), None, now());
        assert_eq!(get.request.headers()["x-ms-range"], "bytes=10-14");
        let get = container().get_blob("b", Some((10, None)), Some("\"0x1\""), now());
        assert_eq!(get.request.headers()["x-ms-range"], "bytes=10-");
        assert_eq!(get.request.headers()["if-match"], "\"0x1\"");
        assert!(get.request.headers().get("content-length").is_none());
    }

    #[test]
    fn container_names_are_checked() {
        let account = Account::new(DEV_ACCOUNT, DEV_KEY, None).unwrap();
        for bad in ["ab", "Cache", "a--b", "-ab", "ab-", "a_b"] {
            assert!(Container::new(account.clone(), bad).is_err(), "{bad}");
        }
    }
}
