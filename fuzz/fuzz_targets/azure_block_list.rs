//! The Put Block List body parser of the Azure endpoint
//! (`protocol::azure_blob::xml::parse_block_list`).
//!
//! Checked: ids come out trimmed; a parsed list written out again (compact,
//! or spread over lines with `<Uncommitted>` for `<Latest>`) parses to the
//! same list; the body the `azure` crate sends for Put Block List parses to
//! the ids it was built from; the Get Block List answer the endpoint renders
//! parses, with the `azure` crate's reader, to the blocks it was built from.
#![no_main]

use std::time::UNIX_EPOCH;

use blobcache_azure::ops::Container;
use blobcache_azure::{Account, Body, WriteProperties};
use blobcache_component::protocol::azure_blob::xml::{self, ListedBlock};
use libfuzzer_sys::fuzz_target;

fn write(blocks: &[ListedBlock], staged_tag: &str, separator: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    out.push_str(separator);
    out.push_str("<BlockList>");
    for block in blocks {
        let (tag, id) = match block {
            ListedBlock::Staged(id) => (staged_tag, id),
            ListedBlock::Committed(id) => ("Committed", id),
        };
        out.push_str(separator);
        out.push_str(&format!("<{tag}>{}</{tag}>", xml::escape(id)));
    }
    out.push_str(separator);
    out.push_str("</BlockList>");
    out.push_str(separator);
    out
}

fuzz_target!(|data: &[u8]| {
    // 1. Any body.
    match xml::parse_block_list(data) {
        Ok(blocks) => {
            for block in &blocks {
                let (ListedBlock::Staged(id) | ListedBlock::Committed(id)) = block;
                assert_eq!(id.trim(), id);
            }
            for (tag, separator) in [("Latest", ""), ("Uncommitted", "\n  ")] {
                let again = write(&blocks, tag, separator);
                assert_eq!(
                    xml::parse_block_list(again.as_bytes()).as_ref(),
                    Ok(&blocks),
                    "{again}"
                );
            }
        }
        Err(reason) => assert!(!reason.is_empty()),
    }

    // 2. The input's lines as block ids.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ids: Vec<String> = text.lines().take(64).map(str::to_string).collect();

    // What the azure crate sends for Put Block List parses to the ids it lists
    // (ids as stores take them: printable ASCII, so nothing to trim).
    let valid: Vec<String> = ids
        .iter()
        .filter(|id| blobcache_store_rules::check_block_id(id).is_ok())
        .cloned()
        .collect();
    let account = Account::new("fuzz", "a2V5", Some("http://127.0.0.1:10000/fuzz")).unwrap();
    let container = Container::new(account, "cache").unwrap();
    let operation =
        container.put_block_list("blob", &valid, &WriteProperties::default(), UNIX_EPOCH);
    let Body::Bytes(body) = operation.body else {
        panic!("Put Block List has a body");
    };
    let parsed = xml::parse_block_list(&body);
    let expected: Vec<ListedBlock> = valid.iter().cloned().map(ListedBlock::Staged).collect();
    assert_eq!(
        parsed.as_ref(),
        Ok(&expected),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The endpoint's Get Block List answer reads back with the azure crate
    // (ids as the endpoint stages them: printable ASCII).
    let staged: Vec<(String, u64)> = valid
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let answer = xml::block_list(&staged);
    let read = blobcache_azure::response::uncommitted_blocks(answer.as_bytes())
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    let read: Vec<(String, u64)> = read.into_iter().map(|b| (b.name, b.size)).collect();
    assert_eq!(read, staged, "{answer}");
});
