//! ccache's HTTP storage on every target: its three layouts, delete, and the
//! real client (Debian's ccache) getting remote hits.

use crate::support;
use crate::targets::{deploy, Target};

on_every_target!(layouts_and_delete);
fn layouts_and_delete(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let subdirs = "/ccache/ac/0123456789abcdefghijklmnopqrstuR"; // a key starting "ac"
    let flat = "/ccache/0123456789abcdefghijklmnopqrstuvM";
    let bazel = format!("/ccache/ac/{}", "0123456789abcdef".repeat(4));
    for path in [subdirs, flat, bazel.as_str()] {
        assert_eq!(server.get(path).status, 404, "{path}");
        assert_eq!(server.head(path).status, 404);
        let body = format!("entry at {path}");
        assert_eq!(server.put(path, body.as_bytes()).status, 200, "{path}");
        assert_eq!(server.get(path).body, body.as_bytes());
        assert_eq!(server.head(path).status, 200);
    }
    assert_eq!(server.delete(flat).status, 200);
    assert_eq!(server.get(flat).status, 404);
    assert_eq!(server.delete(flat).status, 404);
    assert_eq!(server.get(subdirs).status, 200, "other entries stay");
    // ccache keys are not content hashes: nothing is verified.
    assert_eq!(server.put("/ccache/team/ab/cdef", b"anything").status, 200);
}

on_every_target!(real_client_gets_remote_hits);
fn real_client_gets_remote_hits(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    support::ccache::round_trip(&server, "subdirs");
}

#[test]
fn real_client_in_every_layout() {
    let Some(server) = deploy(Target::Dir, &[]) else {
        return;
    };
    for layout in ["subdirs", "flat", "bazel"] {
        support::ccache::round_trip(&server, layout);
    }
}
