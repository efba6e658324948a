//! Twirp request decoding of the GitHub Actions cache service
//! (`protocol::gha::message`): JSON and `application/protobuf`.
//!
//! Checked: a decoded request written out again, as JSON (size as a number
//! and as a string) and as protobuf for each method, decodes to the same
//! fields; JSON and protobuf agree on the fields a method carries; failures
//! are 400 `malformed`; `Encoding::of` follows the media type; every reply
//! encodes to JSON with the fields clients read.
#![no_main]

use base64::Engine as _;
use blobcache_component::http::Body;
use blobcache_component::protocol::gha::message::{self, Encoding, Reply, Request};
use blobcache_component::protocol::gha::Method;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const METHODS: [Method; 3] = [
    Method::CreateCacheEntry,
    Method::FinalizeCacheEntryUpload,
    Method::GetCacheEntryDownloadUrl,
];

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The request as `cache.proto` lays out `method`'s message (empty strings
/// left out, as proto3 does; restore keys always written, they repeat).
fn protobuf(method: Method, request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    // Metadata (field 1): skipped by the decoder whatever it holds.
    put_bytes(&mut out, 1, b"\x0a\x05scope");
    if !request.key.is_empty() {
        put_bytes(&mut out, 2, request.key.as_bytes());
    }
    match method {
        Method::CreateCacheEntry => {
            if !request.version.is_empty() {
                put_bytes(&mut out, 3, request.version.as_bytes());
            }
        }
        Method::FinalizeCacheEntryUpload => {
            if let Some(size) = request.size_bytes {
                put_varint(&mut out, 3 << 3);
                put_varint(&mut out, size);
            }
            if !request.version.is_empty() {
                put_bytes(&mut out, 4, request.version.as_bytes());
            }
        }
        Method::GetCacheEntryDownloadUrl => {
            for key in &request.restore_keys {
                put_bytes(&mut out, 3, key.as_bytes());
            }
            if !request.version.is_empty() {
                put_bytes(&mut out, 4, request.version.as_bytes());
            }
        }
    }
    // An unknown field: skipped.
    put_varint(&mut out, 9 << 3);
    put_varint(&mut out, 7);
    out
}

/// The fields `method`'s message carries.
fn carried(method: Method, request: &Request) -> Request {
    Request {
        key: request.key.clone(),
        version: request.version.clone(),
        restore_keys: match method {
            Method::GetCacheEntryDownloadUrl => request.restore_keys.clone(),
            _ => Vec::new(),
        },
        size_bytes: match method {
            Method::FinalizeCacheEntryUpload => request.size_bytes,
            _ => None,
        },
    }
}

fn round_trips(request: &Request) {
    let mut as_json = json!({
        "key": request.key,
        "version": request.version,
        "restore_keys": request.restore_keys,
    });
    if let Some(size) = request.size_bytes {
        as_json["size_bytes"] = json!(size);
    }
    let body = serde_json::to_vec(&as_json).unwrap();
    for method in METHODS {
        let decoded = message::decode(method, Encoding::Json, &body);
        assert_eq!(decoded.as_ref().ok(), Some(request));
    }
    if let Some(size) = request.size_bytes {
        as_json["size_bytes"] = json!(size.to_string());
        let body = serde_json::to_vec(&as_json).unwrap();
        let decoded = message::decode(Method::CreateCacheEntry, Encoding::Json, &body);
        assert_eq!(decoded.as_ref().ok(), Some(request));
    }
    for method in METHODS {
        let expected = carried(method, request);
        let body = protobuf(method, &expected);
        let decoded = message::decode(method, Encoding::Protobuf, &body);
        assert_eq!(
            decoded.as_ref().ok(),
            Some(&expected),
            "{method:?} {body:?}"
        );
    }
}

fn check_failure(result: &Result<Request, blobcache_component::error::Failure>) {
    if let Err(failure) = result {
        assert_eq!(failure.status(), 400);
        assert_eq!(failure.code, Some("malformed"));
    }
}

fn check_encoding(content_type: &str) {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let expected = match media.as_str() {
        "application/json" => Some(Encoding::Json),
        "application/protobuf" | "application/x-protobuf" => Some(Encoding::Protobuf),
        _ => None,
    };
    let got = Encoding::of(Some(content_type));
    assert_eq!(got.as_ref().ok(), expected.as_ref(), "{content_type:?}");
    if let Err(failure) = got {
        assert_eq!(failure.status(), 415);
    }
    assert_eq!(Encoding::of(None).ok(), Some(Encoding::Json));
}

fn check_replies(text: &str, number: u64) {
    let replies = [
        (
            Reply::Created {
                url: text.to_string(),
            },
            json!({"ok": true, "signed_upload_url": text}),
        ),
        (
            Reply::Finalized { entry_id: number },
            json!({"ok": true, "entry_id": number.to_string()}),
        ),
        (
            Reply::Found {
                url: text.to_string(),
                matched: text.chars().rev().collect(),
            },
            json!({"ok": true, "signed_download_url": text, "matched_key": text.chars().rev().collect::<String>()}),
        ),
        (
            Reply::Missed,
            json!({"ok": false, "signed_download_url": "", "matched_key": ""}),
        ),
    ];
    for (reply, expected) in replies {
        let response = message::encode(Encoding::Json, &reply);
        assert_eq!(response.status, 200);
        let Body::Bytes(bytes) = &response.body else {
            panic!("a JSON reply has bytes");
        };
        let value: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(value, expected);
        let response = message::encode(Encoding::Protobuf, &reply);
        assert_eq!(response.status, 200);
        assert!(matches!(response.body, Body::Bytes(_)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // Every decoder sees the body; a success must round-trip.
    let json = message::decode(Method::CreateCacheEntry, Encoding::Json, body);
    check_failure(&json);
    if let Ok(request) = &json {
        round_trips(request);
        for method in METHODS {
            assert_eq!(
                message::decode(method, Encoding::Json, body).as_ref().ok(),
                Some(request)
            );
        }
    }
    for method in METHODS {
        let decoded = message::decode(method, Encoding::Protobuf, body);
        check_failure(&decoded);
        if let Ok(request) = decoded {
            assert_eq!(carried(method, &request), request);
            round_trips(&request);
        }
    }
    // A JSON body that is base64 of the input, as a string field.
    if selector & 1 == 1 {
        let text = base64::engine::general_purpose::STANDARD.encode(body);
        let wrapped = serde_json::to_vec(&json!({"key": text, "size_bytes": selector})).unwrap();
        let decoded =
            message::decode(Method::FinalizeCacheEntryUpload, Encoding::Json, &wrapped).unwrap();
        assert_eq!(decoded.key, text);
        assert_eq!(decoded.size_bytes, Some(u64::from(selector)));
    }
    if let Ok(text) = std::str::from_utf8(body) {
        check_encoding(text);
        let number = blobcache_fuzz::leading_u64(data);
        check_replies(text, number);
    }
});
