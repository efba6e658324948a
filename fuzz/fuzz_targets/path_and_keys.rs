//! Path splitting (`path::parse`, `parse_collection`, `split_raw`) and the key
//! rules (`path::is_key_char`, `is_alphanumeric_key`, `is_sha256_hex`, the
//! store rules' `check_key` and block-id file names), each against a small
//! reference implementation written from its documentation.
#![no_main]

use blobcache_component::http::request::{percent_decode, percent_decode_strict};
use blobcache_component::path::{self, CachePath, MAX_PATH_LEN, MAX_RAW_PATH_LEN, MAX_SEGMENTS};
use blobcache_fuzz::percent_encode_all;
use blobcache_store_rules as rules;
use libfuzzer_sys::fuzz_target;

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._~:+=@-".contains(c)
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(key_char)
}

/// `path::parse`, as its documentation says.
fn reference_parse(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.len() > MAX_PATH_LEN {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    segments.len() <= MAX_SEGMENTS && segments.iter().all(|s| valid_segment(s))
}

/// `path::parse_collection`: doubled slashes read as one, a trailing `/` kept
/// as a last empty segment.
fn reference_collection(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if path.len() > MAX_PATH_LEN {
        return None;
    }
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let mut segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if !segments.iter().all(|s| valid_segment(s)) {
        return None;
    }
    if rest.ends_with('/') {
        segments.push("");
    }
    (segments.len() <= MAX_SEGMENTS).then_some(segments)
}

fn reference_check_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= rules::MAX_KEY_LEN && key.split('/').all(valid_segment)
}

fn check_path(text: &str) {
    let (path_part, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };

    // parse: agrees with the reference; what it accepts rebuilds the input.
    let parsed = path::parse(text);
    assert_eq!(
        parsed.is_ok(),
        reference_parse(path_part),
        "parse({text:?}) = {parsed:?}"
    );
    if let Ok(p) = &parsed {
        assert_eq!(p.query, query);
        assert!(p.segments.len() <= MAX_SEGMENTS);
        assert!(p.segments.iter().all(|s| valid_segment(s)));
        assert_eq!(format!("/{}", p.segments.join("/")), path_part);
        // Keys the path rules let through are keys for every store.
        if !p.segments.is_empty() {
            let key = p.segments.join("/");
            assert!(rules::check_key(&key).is_ok(), "{key:?}");
        }
        // The lenient rules accept the same path and read it the same way.
        assert_eq!(path::parse_collection(text).as_ref(), Ok(p));
        assert_eq!(path::split_raw(text).as_ref(), Ok(p));
    }
    if let Err(reason) = &parsed {
        assert!(!reason.is_empty());
    }

    // parse_collection: agrees with the reference.
    let collection = path::parse_collection(text);
    let expected = reference_collection(path_part);
    match (&collection, &expected) {
        (Ok(CachePath { segments, query: q }), Some(want)) => {
            assert_eq!(segments, want, "{text:?}");
            assert_eq!(*q, query);
        }
        (Err(_), None) => {}
        _ => panic!("parse_collection({text:?}) = {collection:?}, reference {expected:?}"),
    }

    // split_raw: any path starting with `/` up to its limit, split as sent.
    let raw = path::split_raw(text);
    let raw_ok = path_part.starts_with('/') && path_part.len() <= MAX_RAW_PATH_LEN;
    assert_eq!(raw.is_ok(), raw_ok, "split_raw({text:?})");
    if let Ok(raw) = raw {
        assert_eq!(format!("/{}", raw.segments.join("/")), path_part);
        assert_eq!(raw.query, query);
    }
}

fn check_keys(text: &str) {
    for c in text.chars() {
        assert_eq!(path::is_key_char(c), key_char(c), "{c:?}");
    }
    assert_eq!(
        rules::check_key(text).is_ok(),
        reference_check_key(text),
        "{text:?}"
    );
    let max = text.len() % 70;
    assert_eq!(
        path::is_alphanumeric_key(text, max),
        (1..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
    );
    assert_eq!(
        path::is_sha256_hex(text),
        text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );

    // Block ids and the file names stores keep them under.
    let id_ok = rules::check_block_id(text).is_ok();
    assert_eq!(
        id_ok,
        (1..=rules::MAX_BLOCK_ID_LEN).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_graphic())
    );
    if id_ok {
        let name = rules::block_file_name(text);
        assert!(name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(rules::block_id_of_file_name(&name).as_deref(), Some(text));
    }
    if let Some(id) = rules::block_id_of_file_name(text) {
        assert!(rules::check_block_id(&id).is_ok());
        assert_eq!(rules::block_file_name(&id), text.to_ascii_lowercase());
    }

    // Percent-decoding (query values, Azure blob names).
    if !text.contains('%') {
        assert_eq!(percent_decode_strict(text).as_deref(), Some(text));
        assert_eq!(percent_decode(text), text);
    }
    assert_eq!(
        percent_decode_strict(&percent_encode_all(text)).as_deref(),
        Some(text)
    );
    assert_eq!(percent_decode(&percent_encode_all(text)), text);
    if let Some(decoded) = percent_decode_strict(text) {
        // The strict and the lenient decoder agree where both decode.
        assert_eq!(percent_decode(text), decoded);
        assert!(decoded.len() <= text.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_path(text);
    check_keys(text);
});
