//! Shared Key and SAS: the `azure` crate's signing code, which blobcache's
//! own Azure calls sign with and its Azure endpoint verifies with
//! (`component::protocol::azure_blob::credential`).
//!
//! Checked:
//! - every operation the `azure` crate builds (any blob name, block id,
//!   prefix, marker, metadata) verifies as the endpoint verifies it: the
//!   `SharedKey <account>:<signature>` header split the same way, the
//!   string-to-sign rebuilt from the origin-form target the server sees; a key
//!   with one bit flipped does not verify; the path routes to the endpoint;
//! - the string-to-sign of any method, target and headers: the method and
//!   the eleven standard headers on lines of their own, one line per `x-ms-`
//!   header, then `/<account><path>`; the same whatever the order of the
//!   query parameters, the case of their names and the order of the headers;
//!   a signature verifies, one with a bit flipped does not;
//! - a SAS: the query `sas_query` writes, read back the endpoint's way
//!   (first `name=`, percent-decoded), gives the same fields and a signature
//!   that verifies; other permissions do not; ISO 8601 times round-trip.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use blobcache_azure::ops::Container;
use blobcache_azure::signing::{
    hmac_base64, iso8601, sas_query, sas_string_to_sign, string_to_sign, BlobSas,
};
use blobcache_azure::{Account, Condition, WriteProperties};
use blobcache_component::http::request::percent_decode;
use blobcache_component::protocol::azure_blob::credential::parse_iso8601;
use blobcache_component::route;
use blobcache_fuzz::{any_text, from_alphabet, pick, Unstructured, LOWER_DIGITS, PRINTABLE};
use libfuzzer_sys::fuzz_target;

/// Year 10000, which neither httpdate nor ISO 8601 as SAS uses can write.
const YEAR_10000: u64 = 253_402_300_800;

/// The endpoint's check: the header's account and signature, the
/// string-to-sign over the target as the server receives it.
fn verifies(account: &str, key: &[u8], request: &http::Request<()>) -> bool {
    let Some(value) = request.headers().get("authorization") else {
        return false;
    };
    let Some((signer, signature)) = value
        .to_str()
        .unwrap()
        .trim()
        .strip_prefix("SharedKey ")
        .and_then(|rest| rest.trim().rsplit_once(':'))
    else {
        return false;
    };
    if signer != account {
        return false;
    }
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let uri: http::Uri = target
        .parse()
        .expect("a request target the client sent parses");
    let text = string_to_sign(account, request.method(), &uri, request.headers());
    hmac_base64(key, &text) == signature
}

fn account_name(u: &mut Unstructured<'_>) -> String {
    let mut name = from_alphabet(u, LOWER_DIGITS, 24);
    if name.is_empty() {
        name.push('a');
    }
    name
}

fn key(u: &mut Unstructured<'_>) -> Vec<u8> {
    let mut key: Vec<u8> = u.arbitrary().unwrap_or_default();
    key.truncate(64);
    if key.is_empty() {
        key.push(1);
    }
    key
}

fn operations(u: &mut Unstructured<'_>) {
    let name = account_name(u);
    let key = key(u);
    let endpoint = format!("http://127.0.0.1:8080/azure/{name}");
    let account = Account::new(&name, &STANDARD.encode(&key), Some(&endpoint)).unwrap();
    let container_name = match u.arbitrary().unwrap_or(false) {
        true => "buildkit-cache".to_string(),
        false => {
            let raw = from_alphabet(u, b"abc123-", 20);
            let parts: Vec<&str> = raw.split('-').filter(|p| !p.is_empty()).collect();
            format!("c{}", parts.join("-"))
        }
    };
    let container_name = match container_name.len() < 3 {
        true => "c00".to_string(),
        false => container_name,
    };
    let container = Container::new(account, &container_name).unwrap();
    let blob = any_text(u, 100);
    let now = UNIX_EPOCH + Duration::from_secs(u.int_in_range(0..=YEAR_10000 - 1).unwrap_or(0));
    let properties = WriteProperties {
        content_type: u
            .arbitrary::<bool>()
            .unwrap_or(false)
            .then(|| from_alphabet(u, PRINTABLE, 30)),
        metadata: (0..u.int_in_range(0..=3).unwrap_or(0))
            .map(|_| {
                (
                    from_alphabet(u, b"abcXYZ_09", 10),
                    from_alphabet(u, PRINTABLE, 20),
                )
            })
            .collect(),
        condition: match u.int_in_range(0..=2).unwrap_or(0) {
            0 => Condition::None,
            1 => Condition::IfNoneExists,
            _ => Condition::IfMatch(from_alphabet(u, PRINTABLE, 20)),
        },
    };
    let block_id = any_text(u, 88);
    let operation = match u.int_in_range(0..=8).unwrap_or(0) {
        0 => container.put_blob(&blob, u.arbitrary().unwrap_or(0), &properties, now),
        1 => container.put_block(&blob, &block_id, u.arbitrary().unwrap_or(0), now),
        2 => container.put_block_list(
            &blob,
            &[block_id.clone(), STANDARD.encode(&block_id)],
            &properties,
            now,
        ),
        3 => {
            let range = u.arbitrary::<Option<(u64, Option<u64>)>>().unwrap_or(None);
            let if_match = u
                .arbitrary::<bool>()
                .unwrap_or(false)
                .then(|| from_alphabet(u, PRINTABLE, 20));
            container.get_blob(&blob, range, if_match.as_deref(), now)
        }
        4 => container.get_uncommitted_blocks(&blob, now),
        5 => container.get_properties(&blob, now),
        6 => container.delete_blob(&blob, now),
        7 => {
            let marker = any_text(u, 40);
            let marker = (!marker.is_empty()).then_some(marker.as_str());
            container.list_blobs(
                &blob,
                marker,
                u.arbitrary().unwrap_or(1),
                u.arbitrary().unwrap_or(false),
                now,
            )
        }
        _ => container.create_container(now),
    };
    let request = &operation.request;
    assert!(verifies(&name, &key, request), "{request:?}");
    let mut other = key.clone();
    let bit = u.choose_index(other.len() * 8).unwrap_or(0);
    other[bit / 8] ^= 1 << (bit % 8);
    assert!(!verifies(&name, &other, request));
    assert!(!verifies(&format!("{name}x"), &key, request));
    // The date the server checks is one it can read.
    let date = request
        .headers()
        .get("x-ms-date")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(httpdate::parse_http_date(date).ok(), Some(now));

    // The target routes to the Azure endpoint, which takes the path apart.
    let target = request.uri().path_and_query().unwrap().as_str();
    let (protocol, parsed) = route::route(target);
    assert_eq!(protocol.name, "azure-blob", "{target}");
    assert!(parsed.is_ok(), "{target}");
}

fn header_map<'a>(headers: impl Iterator<Item = &'a (&'static str, String)>) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, http::HeaderValue::from_str(value).unwrap());
    }
    map
}

fn canonical(u: &mut Unstructured<'_>) {
    let account = account_name(u);
    let method = http::Method::from_bytes(from_alphabet(u, b"GETPUTDELHADOSgetx-", 8).as_bytes())
        .unwrap_or(http::Method::GET);
    let path = from_alphabet(u, b"abc/%20AZ._~-:", 40);
    let pairs: Vec<(String, String)> = (0..u.int_in_range(0..=5).unwrap_or(0))
        .map(|_| {
            (
                from_alphabet(u, b"abcAB%2f0=+", 8),
                from_alphabet(u, b"abcAB%2f0a=+,:", 12),
            )
        })
        .collect();
    let query = |pairs: &[(String, String)]| -> String {
        pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let Ok(uri) = format!("/{path}?{}", query(&pairs)).parse::<http::Uri>() else {
        return;
    };
    let names = [
        "content-type",
        "content-length",
        "content-md5",
        "range",
        "if-match",
        "date",
        "x-ms-date",
        "x-ms-version",
        "x-ms-blob-type",
        "x-ms-meta-a",
        "x-ms-meta-b",
        "x-ms-range",
        "x-other",
        "authorization",
    ];
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    for _ in 0..u.int_in_range(0..=8).unwrap_or(0) {
        let name = pick(u, &names);
        if headers.iter().all(|(n, _)| *n != name) {
            headers.push((name, from_alphabet(u, PRINTABLE, 20)));
        }
    }
    let map = header_map(headers.iter());
    let text = string_to_sign(&account, &method, &uri, &map);

    // Its layout.
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[0], method.as_str());
    let ms_headers = headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .count();
    let resource = lines[12 + ms_headers];
    assert!(
        resource.starts_with(&format!("/{account}{}", uri.path())),
        "{text:?}"
    );
    for (i, name) in ["content-type", "content-md5", "range", "if-match", "date"]
        .iter()
        .enumerate()
    {
        let line = [5, 4, 11, 8, 6][i];
        let value = headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str());
        assert_eq!(lines[line], value, "{name}");
    }

    // The same request, written differently.
    let mut reordered = pairs.clone();
    reordered.reverse();
    for pair in &mut reordered {
        // Names in upper case (only the name: it ends at the first `=`).
        pair.0 = match pair.0.split_once('=') {
            Some((name, rest)) => format!("{}={rest}", name.to_ascii_uppercase()),
            None => pair.0.to_ascii_uppercase(),
        };
    }
    let uri2: http::Uri = format!("/{path}?{}", query(&reordered)).parse().unwrap();
    let reversed = header_map(headers.iter().rev());
    assert_eq!(string_to_sign(&account, &method, &uri2, &reversed), text);

    // Signed, it verifies; changed, it does not.
    let key = key(u);
    let signature = hmac_base64(&key, &text);
    assert_eq!(hmac_base64(&key, &text), signature);
    let mut bytes = STANDARD.decode(&signature).unwrap();
    let bit = u.choose_index(bytes.len() * 8).unwrap_or(0);
    bytes[bit / 8] ^= 1 << (bit % 8);
    assert_ne!(STANDARD.encode(&bytes), signature);
    let changed = format!("{text}\nx:1");
    assert_ne!(hmac_base64(&key, &changed), signature);
    let other_method = match method == http::Method::PUT {
        true => http::Method::GET,
        false => http::Method::PUT,
    };
    assert_ne!(string_to_sign(&account, &other_method, &uri, &map), text);
}

fn sas(u: &mut Unstructured<'_>) {
    let name = account_name(u);
    let key = key(u);
    let account = Account::new(
        &name,
        &STANDARD.encode(&key),
        Some("http://127.0.0.1:8080/azure/x"),
    )
    .unwrap();
    let container = from_alphabet(u, LOWER_DIGITS, 20);
    let blob = any_text(u, 80);
    let time = |u: &mut Unstructured<'_>| match u.arbitrary::<bool>().unwrap_or(true) {
        true => iso8601(u.int_in_range(0..=YEAR_10000 - 1).unwrap_or(0)),
        false => any_text(u, 30),
    };
    let permissions = match u.arbitrary::<bool>().unwrap_or(true) {
        true => pick(u, &["r", "cw", "racwd", "w"]).to_string(),
        false => any_text(u, 10),
    };
    let sas = BlobSas {
        permissions,
        start: u.arbitrary::<bool>().unwrap_or(false).then(|| time(u)),
        expiry: time(u),
        protocol: u
            .arbitrary::<bool>()
            .unwrap_or(false)
            .then(|| pick(u, &["https", "https,http"]).to_string()),
        version: match u.arbitrary::<bool>().unwrap_or(true) {
            true => "2024-11-04".to_string(),
            false => any_text(u, 12),
        },
    };
    let query = sas_query(&account, &container, &blob, &sas).unwrap();
    // The endpoint's reading: the first `name=`, percent-decoded.
    let value = |wanted: &str| {
        query.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (n == wanted).then(|| percent_decode(v))
        })
    };
    assert_eq!(value("sr").as_deref(), Some("b"));
    let read = BlobSas {
        permissions: value("sp").unwrap(),
        start: value("st"),
        expiry: value("se").unwrap(),
        protocol: value("spr"),
        version: value("sv").unwrap(),
    };
    assert_eq!(read, sas, "{query}");
    let signature = STANDARD.decode(value("sig").unwrap().trim()).unwrap();
    let expected = hmac_base64(&key, &sas_string_to_sign(&name, &container, &blob, &read));
    assert_eq!(STANDARD.decode(expected).unwrap(), signature);
    let mut wider = read.clone();
    wider.permissions.push('w');
    let forged = hmac_base64(&key, &sas_string_to_sign(&name, &container, &blob, &wider));
    assert_ne!(STANDARD.decode(forged).unwrap(), signature);
    let other_blob = format!("{blob}x");
    let forged = hmac_base64(
        &key,
        &sas_string_to_sign(&name, &container, &other_blob, &read),
    );
    assert_ne!(STANDARD.decode(forged).unwrap(), signature);

    // ISO 8601 as SAS writes it, read back by the endpoint.
    let t = u.int_in_range(0..=YEAR_10000 - 1).unwrap_or(0);
    assert_eq!(parse_iso8601(&iso8601(t)), Some(t), "{}", iso8601(t));
    if let Some(t) = parse_iso8601(&read.expiry) {
        assert!(t <= YEAR_10000);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    match selector % 3 {
        0 => operations(&mut u),
        1 => canonical(&mut u),
        _ => sas(&mut u),
    }
});
