//! The PROPFIND body check of the WebDAV (sccache) endpoint
//! (`protocol::sccache::check_propfind_body`).
//!
//! Checked: a blank body is accepted; failures are 400; an accepted body has a
//! `propfind` root, so it names one; an accepted document followed by a second
//! root element is refused; well-formed documents built from the input (any
//! prefix, nested properties, comments, text) are accepted when their root is
//! `propfind` and refused otherwise; `parse` of sccache paths keeps segments.
#![no_main]

use blobcache_component::protocol::sccache::{self, check_propfind_body};
use blobcache_fuzz::{from_alphabet, Unstructured};
use libfuzzer_sys::fuzz_target;

const NAME: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";
const TEXT: &[u8] = b"abc xyz 019 .,;:!?-_=+*/()[]{}";

fn element(u: &mut Unstructured<'_>, prefix: &str, depth: usize, out: &mut String) {
    let mut name = from_alphabet(u, NAME, 12);
    if name.is_empty() {
        name.push('p');
    }
    let tag = match prefix.is_empty() {
        true => name,
        false => format!("{prefix}:{name}"),
    };
    let children = match depth {
        0 => 0,
        _ => u.int_in_range(0..=3).unwrap_or(0),
    };
    if children == 0 && u.arbitrary().unwrap_or(false) {
        out.push_str(&format!("<{tag}/>"));
        return;
    }
    out.push_str(&format!("<{tag}>"));
    for _ in 0..children {
        match u.int_in_range(0..=3).unwrap_or(0) {
            0 => out.push_str(&from_alphabet(u, TEXT, 20)),
            1 => out.push_str(&format!("<!--{}-->", from_alphabet(u, TEXT, 10))),
            _ => element(u, prefix, depth - 1, out),
        }
    }
    out.push_str(&format!("</{tag}>"));
}

/// A well-formed document whose root is `root`; the second value says
/// whether it is a propfind.
fn document(u: &mut Unstructured<'_>) -> (String, bool) {
    let prefix = from_alphabet(u, NAME, 3);
    let is_propfind = u.ratio(3, 4).unwrap_or(true);
    let root = match is_propfind {
        true => "propfind".to_string(),
        false => {
            let other = from_alphabet(u, NAME, 10);
            match other.as_str() {
                "" | "propfind" => "propertyupdate".to_string(),
                _ => other,
            }
        }
    };
    let mut out = String::new();
    if u.arbitrary().unwrap_or(false) {
        out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n");
    }
    let qualified = match prefix.is_empty() {
        true => root.clone(),
        false => format!("{prefix}:{root}"),
    };
    let xmlns = match prefix.is_empty() {
        true => " xmlns=\"DAV:\"".to_string(),
        false => format!(" xmlns:{prefix}=\"DAV:\""),
    };
    let mut body = String::new();
    let children = u.int_in_range(0..=4).unwrap_or(0);
    for _ in 0..children {
        element(u, &prefix, 3, &mut body);
    }
    if body.is_empty() && u.arbitrary().unwrap_or(false) {
        out.push_str(&format!("<{qualified}{xmlns}/>"));
    } else {
        out.push_str(&format!("<{qualified}{xmlns}>{body}</{qualified}>"));
    }
    if u.arbitrary().unwrap_or(false) {
        out.push_str("\n  ");
    }
    (out, is_propfind)
}

fuzz_target!(|data: &[u8]| {
    // Any body.
    let result = check_propfind_body(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        assert!(result.is_ok());
    }
    match &result {
        Ok(()) if !data.iter().all(u8::is_ascii_whitespace) => {
            assert!(data.windows(8).any(|w| w == b"propfind"));
            let mut twice = data.to_vec();
            twice.extend_from_slice(b"<propfind/>");
            assert!(
                check_propfind_body(&twice).is_err(),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        Ok(()) => {}
        Err(failure) => assert_eq!(failure.status(), 400),
    }

    // Documents built from the input.
    let mut u = Unstructured::new(data);
    let (doc, is_propfind) = document(&mut u);
    let result = check_propfind_body(doc.as_bytes());
    assert_eq!(result.is_ok(), is_propfind, "{doc}: {result:?}");

    // sccache paths: segments kept, a trailing empty one marks a collection.
    if let Ok(text) = std::str::from_utf8(data) {
        let segments: Vec<&str> = text.split('/').take(40).collect();
        let resource = sccache::parse(&segments);
        let is_collection = matches!(segments.last(), Some(&""));
        assert_eq!(resource.is_collection, is_collection);
        let kept = match is_collection {
            true => &segments[..segments.len() - 1],
            false => &segments[..],
        };
        assert_eq!(resource.segments, kept);
        assert_eq!(resource.store_key(), format!("sccache/{}", kept.join("/")));
    }
});
