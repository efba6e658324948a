//! The three request and response messages, in twirp's two encodings: JSON
//! with proto field names (`size_bytes` as a number from Go, a string from
//! JavaScript) and `application/protobuf` (sccache's OpenDAL sends that).
//! Pure: tested natively.

use serde_json::{json, Value};

use super::Method;
use crate::error::{Failure, Kind};
use crate::http::Response;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    pub fn of(content_type: Option<&str>) -> Result<Encoding, Failure> {
        let media = content_type
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Ok(Encoding::Json),
            "application/protobuf" | "application/x-protobuf" => Ok(Encoding::Protobuf),
            _ => Err(Failure::new(
                Kind::UnsupportedMediaType,
                format!("twirp takes application/json or application/protobuf, not {media:?}"),
            )
            .with_code("bad_route")),
        }
    }
}

/// The fields of any of the three requests (the metadata field is ignored:
/// scopes come from the token).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub key: String,
    pub version: String,
    pub restore_keys: Vec<String>,
    pub size_bytes: Option<u64>,
}

pub enum Reply {
    Created { url: String },
    Finalized { entry_id: u64 },
    Found { url: String, matched: String },
    Missed,
}

fn malformed(reason: impl Into<String>) -> Failure {
    Failure::bad_request(reason).with_code("malformed")
}

pub fn decode(method: Method, encoding: Encoding, body: &[u8]) -> Result<Request, Failure> {
    match encoding {
        Encoding::Json => decode_json(body),
        Encoding::Protobuf => decode_protobuf(method, body),
    }
}

fn decode_json(body: &[u8]) -> Result<Request, Failure> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| malformed("the body is not a JSON object"))?;
    let text = |name: &str| -> Result<String, Failure> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(malformed(format!("{name} is not a string"))),
        }
    };
    let restore_keys = match object.get("restore_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| malformed("restore_keys holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("restore_keys is not a list")),
    };
    // int64 in proto3 JSON: a number, or a decimal string.
    let size_bytes = match object.get("size_bytes") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| malformed("size_bytes is not a whole number of bytes"))?,
        ),
        Some(Value::String(s)) => Some(
            s.parse::<u64>()
                .map_err(|_| malformed("size_bytes is not a whole number of bytes"))?,
        ),
        Some(_) => return Err(malformed("size_bytes is not a number")),
    };
    Ok(Request {
        key: text("key")?,
        version: text("version")?,
        restore_keys,
        size_bytes,
    })
}

/// Field numbers per message, from the service's `cache.proto`.
fn decode_protobuf(method: Method, body: &[u8]) -> Result<Request, Failure> {
    let mut request = Request::default();
    let mut reader = Protobuf { bytes: body, at: 0 };
    while let Some((field, value)) = reader.next_field()? {
        match (method, field, value) {
            (_, 1, _) => {} // metadata: scopes come from the token
            (_, 2, Field::Bytes(b)) => request.key = utf8(b)?,
            (Method::CreateCacheEntry, 3, Field::Bytes(b)) => request.version = utf8(b)?,
            (Method::FinalizeCacheEntryUpload, 3, Field::Varint(n)) => request.size_bytes = Some(n),
            (Method::FinalizeCacheEntryUpload, 4, Field::Bytes(b)) => request.version = utf8(b)?,
            (Method::GetCacheEntryDownloadUrl, 3, Field::Bytes(b)) => {
                request.restore_keys.push(utf8(b)?)
            }
            (Method::GetCacheEntryDownloadUrl, 4, Field::Bytes(b)) => request.version = utf8(b)?,
            (_, 2..=4, _) => {
                return Err(malformed(format!("field {field} has the wrong wire type")))
            }
            _ => {} // unknown fields are skipped, as proto3 does
        }
    }
    Ok(request)
}

fn utf8(bytes: &[u8]) -> Result<String, Failure> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string field is not UTF-8"))
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Protobuf<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Protobuf<'a> {
    fn varint(&mut self) -> Result<u64, Failure> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| malformed("the protobuf body ends inside a varint"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a protobuf varint is over 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Failure> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| malformed("a protobuf field runs past the body"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Field<'a>)>, Failure> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err(malformed("protobuf field number 0"));
        }
        let value = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let length = usize::try_from(self.varint()?)
                    .map_err(|_| malformed("a protobuf length is too large"))?;
                Field::Bytes(self.take(length)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            wire => {
                return Err(malformed(format!(
                    "protobuf wire type {wire} is not served"
                )))
            }
        };
        Ok(Some((field, value)))
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_string(out: &mut Vec<u8>, field: u64, text: &str) {
    if text.is_empty() {
        return;
    }
    put_varint(out, (field << 3) | 2);
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_bool(out: &mut Vec<u8>, field: u64, value: bool) {
    if value {
        put_varint(out, field << 3);
        out.push(1);
    }
}

pub fn encode(encoding: Encoding, reply: &Reply) -> Response {
    match encoding {
        Encoding::Json => Response::json(200, &reply_json(reply)),
        Encoding::Protobuf => {
            let mut out = Vec::new();
            match reply {
                Reply::Created { url } => {
                    put_bool(&mut out, 1, true);
                    put_string(&mut out, 2, url);
                }
                Reply::Finalized { entry_id } => {
                    put_bool(&mut out, 1, true);
                    put_varint(&mut out, 2 << 3);
                    put_varint(&mut out, *entry_id);
                }
                Reply::Found { url, matched } => {
                    put_bool(&mut out, 1, true);
                    put_string(&mut out, 2, url);
                    put_string(&mut out, 3, matched);
                }
                Reply::Missed => {}
            }
            Response::bytes(200, "application/protobuf", out)
        }
    }
}

fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Created { url } => json!({ "ok": true, "signed_upload_url": url }),
        // int64 as a string, as proto3 JSON (and BuildKit's Go type) want it.
        Reply::Finalized { entry_id } => json!({ "ok": true, "entry_id": entry_id.to_string() }),
        Reply::Found { url, matched } => {
            json!({ "ok": true, "signed_download_url": url, "matched_key": matched })
        }
        Reply::Missed => json!({ "ok": false, "signed_download_url": "", "matched_key": "" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_takes_sizes_as_numbers_or_strings() {
        let go = decode_json(br#"{"key":"k","version":"v","size_bytes":42}"#).unwrap();
        let js = decode_json(br#"{"key":"k","version":"v","size_bytes":"42"}"#).unwrap();
        assert_eq!(go.size_bytes, Some(42));
        assert_eq!(go, js);
        assert!(decode_json(br#"{"key":1}"#).is_err());
        assert!(decode_json(br#"{"size_bytes":"-1"}"#).is_err());
        assert!(decode_json(br#"["key"]"#).is_err());
        assert!(decode_json(b"{").is_err());
    }

    #[test]
    fn protobuf_requests_decode_per_method() {
        let mut body = Vec::new();
        // metadata (field 1) is skipped whatever it holds.
        put_string(&mut body, 1, "\x0a\x03abc");
        put_string(&mut body, 2, "key-1");
        put_varint(&mut body, 3 << 3);
        put_varint(&mut body, 300);
        put_string(&mut body, 4, "v1");
        let finalize = decode_protobuf(Method::FinalizeCacheEntryUpload, &body).unwrap();
        assert_eq!(finalize.key, "key-1");
        assert_eq!(finalize.size_bytes, Some(300));
        assert_eq!(finalize.version, "v1");
        // Field 3 is a string in the other messages: the wrong wire type is refused.
        assert!(decode_protobuf(Method::CreateCacheEntry, &body).is_err());
        assert!(decode_protobuf(Method::CreateCacheEntry, &body[..body.len() - 1]).is_err());
        assert!(decode_protobuf(Method::CreateCacheEntry, &[0xff; 11]).is_err());
    }
}
