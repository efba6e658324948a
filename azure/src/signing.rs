//! Shared Key request signing and service SAS, exactly as the Blob service defines them.
//!
//! Shared Key string-to-sign (service version 2009-09-19 and later):
//! the verb; Content-Encoding, Content-Language, Content-Length (empty when 0),
//! Content-MD5, Content-Type, Date, If-Modified-Since, If-Match, If-None-Match,
//! If-Unmodified-Since and Range, each on its own line; then the `x-ms-*` headers,
//! lowercased and sorted, as `name:value\n`; then `/<account><encoded path>` and,
//! for each query parameter sorted by lowercase name, `\n<name>:<decoded values,
//! sorted, comma-joined>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::account::{encode_query_value, Account};

/// The standard headers, in string-to-sign order.
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The Shared Key string-to-sign of a request.
pub fn string_to_sign(
    account: &str,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(method.as_str());
    out.push('\n');
    for name in SIGNED_HEADERS {
        let value = header_str(headers, name);
        // Content-Length 0 is signed as an empty line (versions 2015-02-21+).
        if !(name == "content-length" && value == "0") {
            out.push_str(value);
        }
        out.push('\n');
    }
    let mut ms_headers: Vec<(String, &str)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                value.to_str().unwrap_or("").trim(),
            )
        })
        .collect();
    ms_headers.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in ms_headers {
        out.push_str(&name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('/');
    out.push_str(account);
    out.push_str(uri.path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in query_pairs(uri.query().unwrap_or("")) {
        let name = name.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => params.push((name, vec![value])),
        }
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Decoded `name=value` pairs of a query string.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name), decode(value))
    })
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// base64(HMAC-SHA256(key, text)).
pub fn hmac_base64(key: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Adds `Authorization: SharedKey <account>:<signature>` to a request whose
/// headers (including `x-ms-date` and `x-ms-version`) are final.
pub fn sign<B>(account: &Account, request: &mut http::Request<B>) {
    // With a SAS credential the token in the URL is the proof.
    let Some(key) = account.key() else {
        return;
    };
    let text = string_to_sign(
        account.name(),
        request.method(),
        request.uri(),
        request.headers(),
    );
    let signature = hmac_base64(key, &text);
    let value = format!("SharedKey {}:{}", account.name(), signature);
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        value
            .parse()
            .expect("base64 and account names are valid header text"),
    );
}

/// What a service SAS grants on one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobSas {
    /// Permissions in canonical order, e.g. `r`, `cw`.
    pub permissions: String,
    /// ISO 8601 UTC, e.g. `2026-11-26T12:00:00Z`; none for "now".
    pub start: Option<String>,
    pub expiry: String,
    /// `https` or `https,http`; none for either.
    pub protocol: Option<String>,
    pub version: String,
}

/// The service SAS string-to-sign for a blob (versions 2020-12-06 and later).
pub fn sas_string_to_sign(account: &str, container: &str, blob: &str, sas: &BlobSas) -> String {
    [
        sas.permissions.as_str(),
        sas.start.as_deref().unwrap_or(""),
        &sas.expiry,
        &format!("/blob/{account}/{container}/{blob}"),
        "", // signed identifier
        "", // signed IP
        sas.protocol.as_deref().unwrap_or(""),
        &sas.version,
        "b", // signed resource: blob
        "",  // snapshot time
        "",  // encryption scope
        "",  // rscc
        "",  // rscd
        "",  // rsce
        "",  // rscl
        "",  // rsct
    ]
    .join("\n")
}

/// The SAS query string (without `?`) granting `sas` on a blob; none when the
/// account has no key to sign with.
pub fn sas_query(account: &Account, container: &str, blob: &str, sas: &BlobSas) -> Option<String> {
    let signature = hmac_base64(
        account.key()?,
        &sas_string_to_sign(account.name(), container, blob, sas),
    );
    let mut query = format!("sv={}", encode_query_value(&sas.version));
    if let Some(start) = &sas.start {
        query.push_str(&format!("&st={}", encode_query_value(start)));
    }
    query.push_str(&format!(
        "&se={}&sr=b&sp={}",
        encode_query_value(&sas.expiry),
        encode_query_value(&sas.permissions)
    ));
    if let Some(protocol) = &sas.protocol {
        query.push_str(&format!("&spr={}", encode_query_value(protocol)));
    }
    query.push_str(&format!("&sig={}", encode_query_value(&signature)));
    Some(query)
}

/// Unix seconds as the ISO 8601 form SAS uses (`2026-11-26T12:00:00Z`).
pub fn iso8601(unix_seconds: u64) -> String {
    // httpdate gives the civil date; reshape it rather than reimplement the calendar.
    let text = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds),
    );
    // "Thu, 26 Nov 2026 12:00:00 GMT"
    let parts: Vec<&str> = text.split_whitespace().collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .map(|i| i + 1)
    .unwrap_or(1);
    format!("{}-{:02}-{}T{}Z", parts[3], month, parts[1], parts[4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_694_400), "2026-11-26T12:00:00Z");
    }

    #[test]
    fn query_values_are_decoded_sorted_and_joined() {
        let uri: http::Uri = "http://h/acct/c?comp=list&B=2&b=1&prefix=a%2Fb"
            .parse()
            .unwrap();
        let text = string_to_sign("acct", &http::Method::GET, &uri, &http::HeaderMap::new());
        assert!(
            text.ends_with("/acct/acct/c\nb:1,2\ncomp:list\nprefix:a/b"),
            "{text}"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = STANDARD.encode(hex_bytes(
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ));
        assert_eq!(
            hmac_base64(b"Jefe", "what do ya want for nothing?"),
            expected
        );
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }
}
