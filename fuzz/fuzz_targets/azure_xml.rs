//! The `azure` crate's readers of Azure's answers (`response::error`,
//! `list_page`, `uncommitted_blocks`, `properties`) and what the store makes
//! of them (`layout::Staged`, `store::list_page`).
//!
//! Checked: an error keeps the first line of its message and falls back to
//! `x-ms-error-code`; a listing read back from the List Blobs XML the Azure
//! endpoint renders (`component::...::xml::list_blobs`) has the blobs it was
//! built from; a parsed listing re-rendered reads the same; Get Block List
//! answers of stagings made with `layout::BlockIds` give back the caller's
//! ids and sizes, and `assemble` agrees with `blocks`.
#![no_main]

use blobcache_azure::layout::{BlockIds, Staged};
use blobcache_azure::response::{self, ListedBlock};
use blobcache_component::protocol::azure_blob::xml;
use blobcache_fuzz::{from_alphabet, Unstructured, LOWER_DIGITS, PRINTABLE};
use libfuzzer_sys::fuzz_target;

fn check_error(data: &[u8]) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-ms-error-code",
        http::HeaderValue::from_static("FromHeader"),
    );
    let status = u16::from(data.first().copied().unwrap_or(0)) + 300;
    let error = response::error(status, &headers, data);
    assert_eq!(error.status, status);
    assert!(!error.message.contains('\n'));
    assert!(!error.code.is_empty());
    let _ = error.kind();
    let _ = error.to_string();
    let bare = response::error(status, &http::HeaderMap::new(), data);
    if bare.code.is_empty() {
        assert_eq!(error.code, "FromHeader");
    } else {
        assert_eq!(error.code, bare.code);
    }
    assert_eq!(error.message, bare.message);
}

/// A listing as the endpoint renders it, then read by the azure crate.
fn render_and_read(blobs: &[xml::ListedBlob], next_marker: Option<&str>) -> response::ListPage {
    let listing = xml::Listing {
        service_endpoint: "/azure/acct/",
        container: "cache",
        prefix: "",
        marker: None,
        max_results: 5000,
        with_metadata: true,
        next_marker,
    };
    let rendered = xml::list_blobs(&listing, blobs);
    response::list_page(rendered.as_bytes()).unwrap_or_else(|e| panic!("{e}: {rendered}"))
}

fn check_listing_round_trip(u: &mut Unstructured<'_>) {
    let count = u.int_in_range(0..=4).unwrap_or(0);
    let mut blobs = Vec::new();
    for _ in 0..count {
        let seconds = u.int_in_range(0..=253_402_300_799u64).unwrap_or(0);
        let metadata = (0..u.int_in_range(0..=2).unwrap_or(0))
            .map(|_| {
                let mut name = String::from("m");
                name.push_str(&from_alphabet(u, LOWER_DIGITS, 8));
                (name, from_alphabet(u, PRINTABLE, 12))
            })
            .collect();
        blobs.push(xml::ListedBlob {
            name: from_alphabet(u, PRINTABLE, 40),
            size: u.arbitrary().unwrap_or(0),
            etag: from_alphabet(u, PRINTABLE, 20),
            last_modified: blobcache_component::http::http_date(seconds).unwrap(),
            content_type: u
                .arbitrary::<bool>()
                .unwrap_or(false)
                .then(|| from_alphabet(u, PRINTABLE, 20)),
            metadata,
        });
    }
    let next_marker = u
        .arbitrary::<bool>()
        .unwrap_or(false)
        .then(|| from_alphabet(u, PRINTABLE, 20));
    let page = render_and_read(&blobs, next_marker.as_deref());
    assert_eq!(page.blobs.len(), blobs.len());
    for (read, sent) in page.blobs.iter().zip(&blobs) {
        assert_eq!(read.name, sent.name);
        assert_eq!(read.size, sent.size);
        assert_eq!(read.etag, sent.etag);
        assert_eq!(
            blobcache_component::http::http_date(read.last_modified).as_ref(),
            Some(&sent.last_modified)
        );
        let content_type = sent
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        assert_eq!(
            read.content_type.as_deref(),
            Some(content_type).filter(|t| !t.is_empty())
        );
        let metadata: Vec<(String, String)> = sent
            .metadata
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .cloned()
            .collect();
        assert_eq!(read.metadata, metadata);
    }
    assert_eq!(page.next_marker, next_marker.filter(|m| !m.is_empty()));
}

fn check_listing(data: &[u8]) {
    let Ok(page) = response::list_page(data) else {
        return;
    };
    // Rendered again by the endpoint (names as read), it reads the same.
    let blobs: Vec<xml::ListedBlob> = page
        .blobs
        .iter()
        .filter(|b| b.last_modified < 253_402_300_800)
        .map(|b| xml::ListedBlob {
            name: b.name.clone(),
            size: b.size,
            etag: b.etag.clone(),
            last_modified: blobcache_component::http::http_date(b.last_modified).unwrap(),
            content_type: b.content_type.clone(),
            metadata: Vec::new(),
        })
        .collect();
    let again = render_and_read(&blobs, page.next_marker.as_deref());
    assert_eq!(again.blobs.len(), blobs.len());
    for (read, sent) in again.blobs.iter().zip(&blobs) {
        assert_eq!(read.name, sent.name);
        assert_eq!(read.size, sent.size);
    }
    // The store's view: keys under a prefix, never a staging blob.
    if let Ok(listed) = blobcache_azure::store::list_page("p/", data) {
        for (key, _) in &listed.entries {
            assert!(blobcache_store_rules::check_key(key).is_ok(), "{key:?}");
        }
    }
}

/// Stagings of caller ids, as a store makes them, listed by Get Block List.
fn check_stagings(u: &mut Unstructured<'_>) {
    let mut listed: Vec<(String, u64)> = Vec::new();
    let mut expected: Vec<(String, u128)> = Vec::new();
    let count = u.int_in_range(0..=3).unwrap_or(0);
    for n in 0..count {
        // Caller ids are printable ASCII up to 88 bytes; make them distinct.
        let mut id = from_alphabet(u, PRINTABLE, 80).trim().to_string();
        id.push_str(&format!("#{n}"));
        let ids = BlockIds::staged(
            &id,
            u.arbitrary().unwrap_or(0),
            u.arbitrary().unwrap_or([0; 2]),
        );
        let parts = u.int_in_range(1..=3).unwrap_or(1);
        let mut total = 0u128;
        for name_part in ids.name_parts() {
            listed.push((name_part, 1));
        }
        for index in 0..parts {
            // Azure's largest block: 4000 MiB.
            let size: u64 = u.int_in_range(0..=4000 << 20).unwrap_or(0);
            total += u128::from(size);
            listed.push((ids.id(index, index + 1 == parts), size));
        }
        expected.push((id, total));
    }
    // Azure lists them in any order, and sends what it likes around them.
    if u.arbitrary().unwrap_or(false) {
        listed.reverse();
    }
    let answer = xml::block_list(&listed);
    let blocks = response::uncommitted_blocks(answer.as_bytes()).unwrap();
    assert_eq!(blocks.len(), listed.len());
    check_staged(blocks, Some(&expected));
}

fn check_staged(blocks: Vec<ListedBlock>, expected: Option<&[(String, u128)]>) {
    let staged = Staged::new(blocks);
    let found = staged.blocks();
    for (id, size) in &found {
        let assembled = staged.assemble(std::slice::from_ref(id));
        assert_eq!(assembled.map(|(_, total)| total), Ok(*size), "{id:?}");
    }
    if let Some(expected) = expected {
        let mut expected: Vec<(String, u128)> = expected.to_vec();
        expected.sort();
        let found: Vec<(String, u128)> = found
            .into_iter()
            .map(|(id, s)| (id, u128::from(s)))
            .collect();
        assert_eq!(found, expected);
        let ids: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
        let total: u128 = expected.iter().map(|(_, s)| s).sum();
        let (_, size) = staged.assemble(&ids).unwrap();
        assert_eq!(u128::from(size), total);
    }
}

fuzz_target!(|data: &[u8]| {
    check_error(data);
    check_listing(data);
    if let Ok(blocks) = response::uncommitted_blocks(data) {
        check_staged(blocks, None);
    }
    let mut headers = http::HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(16) {
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(&line[..colon]),
                http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) {
                headers.append(name, value);
            }
        }
    }
    if let Ok(properties) = response::properties(&headers) {
        assert!(properties.metadata.windows(2).all(|w| w[0] <= w[1]));
    }
    let _ = response::retry_after(&headers);

    let mut u = Unstructured::new(data);
    check_listing_round_trip(&mut u);
    check_stagings(&mut u);
});
