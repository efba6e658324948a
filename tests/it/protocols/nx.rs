//! Nx's self-hosted remote cache on every target: write-once entries (409,
//! nothing replaced), malformed hashes, cut uploads; and the real client (npm
//! `nx`) reading a remote cache hit after `nx reset`.

use super::cut_upload_stores_nothing;
use crate::support::{self, Body};
use crate::targets::{deploy, Target};

on_every_target!(write_once_entries_and_bad_input);
fn write_once_entries_and_bad_input(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let path = "/v1/cache/10294360055595522611";
    assert_eq!(server.get(path).status, 404, "a miss");
    assert_eq!(server.put(path, b"outputs v1").status, 200, "exactly 200");
    assert_eq!(server.get(path).body, b"outputs v1");
    // Write-once: a second upload is refused and replaces nothing.
    let again = server.put(path, b"poisoned outputs");
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(server.get(path).body, b"outputs v1");
    // A large second upload (two builders that both missed) still gets its
    // 409 after sending the whole body, for clients that read only then.
    let large = vec![7u8; 16 << 20];
    assert_eq!(server.put(path, &large).status, 409);
    assert_eq!(server.get(path).body, b"outputs v1");

    for bad in ["/v1/cache/12-34", "/v1/cache/a.b"] {
        assert_eq!(server.put(bad, b"x").status, 400, "{bad}");
    }
    assert_eq!(server.get("/v1/other/123").status, 404);
    assert_eq!(server.request("POST", path, &[], Body::Empty).status, 405);

    // A cut upload stores nothing, so the hash stays free for a whole one.
    let cut = "/v1/cache/555";
    cut_upload_stores_nothing(&server, cut, "");
    assert_eq!(server.put(cut, b"whole").status, 200);
}

on_targets!(real_client_reads_remote_hits: dir, azure, wasmtime_serve);
fn real_client_reads_remote_hits(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    support::nx::round_trip(&format!("http://{}", server.addr), None);
}
