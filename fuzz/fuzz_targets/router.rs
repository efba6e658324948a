//! Routing (`route::route` over `route::TABLE`): which protocol owns a path,
//! and what it makes of it. Pure: no request object, no store.
//!
//! Checked: the owner is the one the table's rules name (the index for `/`,
//! the protocol whose root is the first segment, else the catch-all); the
//! query never changes the owner or the outcome; a path that fails its
//! protocol's path rules is a 400 of that protocol; a rooted protocol is
//! handed only the segments after its root (a raw path whose first segment
//! is not the root is a 400); failures render with their status.
#![no_main]

use blobcache_component::path;
use blobcache_component::route::{self, PathRules, Root, TABLE};
use libfuzzer_sys::fuzz_target;

fn outcome(
    path_with_query: &str,
) -> (
    &'static str,
    Result<(), (u16, String, Option<&'static str>)>,
) {
    let (protocol, parsed) = route::route(path_with_query);
    let result = match parsed {
        Ok(_endpoint) => Ok(()),
        Err(failure) => {
            let status = failure.status();
            assert!((400..600).contains(&status), "{status}");
            assert!(!failure.reason.is_empty());
            // Renders without the host (the Azure endpoint's render asks the
            // host for a request id, so it is left out).
            if protocol.name != "azure-blob" {
                let response = (protocol.render)(failure.clone());
                assert!((400..600).contains(&response.status));
                if protocol.name != "gha" {
                    assert_eq!(response.status, status);
                }
            }
            Err((status, failure.reason, failure.code))
        }
    };
    (protocol.name, result)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (protocol, parsed) = route::route(text);
    let ok = parsed.is_ok();
    drop(parsed);

    // The owner, from the table's own rules.
    let path = text.split('?').next().unwrap_or("");
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let expected = if path == "/" {
        TABLE.iter().find(|p| matches!(p.root, Root::Index))
    } else {
        TABLE
            .iter()
            .find(|p| matches!(p.root, Root::Segment(root) if root == first))
            .or_else(|| TABLE.iter().find(|p| matches!(p.root, Root::CatchAll)))
    };
    assert_eq!(protocol.name, expected.unwrap().name, "{text:?}");

    // The path rules decide before the protocol does.
    let checked = match protocol.paths {
        PathRules::Keys => path::parse(text),
        PathRules::Collections => path::parse_collection(text),
        PathRules::Raw => path::split_raw(text),
    };
    match &checked {
        Err(_) => {
            assert!(!ok);
            let (_, result) = outcome(text);
            assert_eq!(result.unwrap_err().0, 400, "{text:?}");
        }
        Ok(checked) => {
            // A rooted protocol parses only what follows its root: raw paths
            // keep empty segments, and `//azure/a/b` is not under `azure`.
            if let Root::Segment(root) = protocol.root {
                if checked.segments.first() != Some(&root) {
                    assert!(
                        !ok,
                        "{text:?} went to {} without starting with its root",
                        protocol.name
                    );
                    let (_, result) = outcome(text);
                    assert_eq!(result.unwrap_err().0, 400, "{text:?}");
                }
            }
        }
    }

    // The query changes neither the owner nor the outcome.
    if let Some((path_only, _)) = text.split_once('?') {
        assert_eq!(outcome(path_only), outcome(text), "{text:?}");
    }
    let with_query = format!("{text}?x=1&y");
    if !text.contains('?') {
        assert_eq!(outcome(&with_query), outcome(text), "{text:?}");
    }
});
