//! Gradle's HTTP build cache on every target: entries with and without a
//! namespace, malformed keys, oversize uploads refused before their body, cut
//! uploads; and the real client (Debian's Gradle 4.4.1) loading `FROM-CACHE`.

use super::{cut_upload_stores_nothing, oversize_refused_before_the_body};
use crate::support;
use crate::targets::{deploy, Target};

const KEY: &str = "77f3fde86f99cf771d330febeba41e61";

on_every_target!(entries_and_bad_input);
fn entries_and_bad_input(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_MAX_BLOB_SIZE", "1000000")]) else {
        return;
    };
    let path = format!("/gradle/{KEY}");
    assert_eq!(server.get(&path).status, 404, "a miss");
    assert_eq!(server.put(&path, b"gzipped tar").status, 200);
    assert_eq!(server.get(&path).body, b"gzipped tar");
    assert_eq!(server.head(&path).status, 200);
    // A namespace is a cache of its own.
    let team = format!("/gradle/team-a/{KEY}");
    assert_eq!(server.get(&team).status, 404);
    assert_eq!(server.put(&team, b"team entry").status, 200);
    assert_eq!(server.get(&path).body, b"gzipped tar");

    for bad in [
        "/gradle/abc",
        "/gradle/77F3FDE86F99CF771D330FEBEBA41E61",
        "/gradle/a/b/77f3fde86f99cf771d330febeba41e61",
    ] {
        let refused = server.put(bad, b"x");
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text());
        assert!(refused.text().len() < 200, "a short reason");
    }
    assert_eq!(
        server
            .request("POST", &path, &[], support::Body::Empty)
            .status,
        405
    );

    let other = format!("/gradle/{}", "0".repeat(32));
    let refused = oversize_refused_before_the_body(&server, &other);
    assert_eq!(refused.status, 413, "{}", refused.text());
    cut_upload_stores_nothing(&server, &other, "");
}

on_targets!(real_client_loads_from_cache: dir, azure, wasmtime_serve);
fn real_client_loads_from_cache(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    support::gradle::round_trip(&format!("http://{}/gradle/", server.addr), None);
}
