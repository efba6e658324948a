//! Every protocol path, against the real binary, with each native store.

mod support;

use support::{sha256_hex, Server};

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Each native store, and the dir store with uploads copied through
/// `writer.write` (the path the component takes with a store component).
fn servers() -> Vec<(&'static str, Server)> {
    vec![
        ("dir", Server::start()),
        ("memory", Server::start_with(&["--store", "memory"])),
        (
            "dir, copied uploads",
            Server::start_with(&["--copy-uploads"]),
        ),
    ]
}

#[test]
fn bazel_cas_round_trip_and_verification() {
    for (store, server) in servers() {
        let content = b"a compiled object file".to_vec();
        let hash = sha256_hex(&content);
        let path = format!("/cas/{hash}");

        assert_eq!(server.get(&path).status, 404, "{store}: miss before upload");
        assert_eq!(server.head(&path).status, 404);
        assert_eq!(server.put(&path, &content).status, 200, "{store}");
        let hit = server.get(&path);
        assert_eq!(hit.status, 200);
        assert_eq!(hit.body, content);
        assert_eq!(
            hit.header("content-length"),
            Some(content.len().to_string().as_str())
        );
        assert_eq!(hit.header("etag"), Some(format!("\"{hash}\"").as_str()));
        let head = server.head(&path);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(content.len().to_string().as_str())
        );
        assert!(head.body.is_empty());

        // Content that does not hash to its key is refused and stores nothing.
        let other = sha256_hex(b"something else");
        let refused = server.put(&format!("/cas/{other}"), &content);
        assert_eq!(refused.status, 400, "{store}: {}", refused.text());
        assert!(
            refused.text().contains("sha256 mismatch"),
            "{}",
            refused.text()
        );
        assert!(
            refused.body.len() < 1024,
            "error bodies stay small for Bazel"
        );
        assert_eq!(server.get(&format!("/cas/{other}")).status, 404);

        // A mismatching re-upload does not replace the good entry.
        assert_eq!(server.put(&path, b"tampered").status, 400);
        assert_eq!(server.get(&path).body, content);
    }
}

#[test]
fn bazel_action_cache_and_prefix_namespaces() {
    for (store, server) in servers() {
        let action = sha256_hex(b"action");
        assert_eq!(
            server.put(&format!("/ac/{action}"), b"result v1").status,
            200
        );
        assert_eq!(server.get(&format!("/ac/{action}")).body, b"result v1");
        // AC entries are opaque and may be replaced.
        assert_eq!(
            server.put(&format!("/ac/{action}"), b"result v2").status,
            200
        );
        assert_eq!(server.get(&format!("/ac/{action}")).body, b"result v2");

        // A prefix is a namespace of its own.
        assert_eq!(
            server.get(&format!("/team-a/ac/{action}")).status,
            404,
            "{store}"
        );
        assert_eq!(
            server
                .put(&format!("/team-a/ac/{action}"), b"team a")
                .status,
            200
        );
        assert_eq!(server.get(&format!("/team-a/ac/{action}")).body, b"team a");
        assert_eq!(server.get(&format!("/ac/{action}")).body, b"result v2");
        assert_eq!(server.get(&format!("/x/y/z/ac/{action}")).status, 404);
    }
}

#[test]
fn empty_blob_is_always_present() {
    let server = Server::start();
    let hit = server.get(&format!("/cas/{EMPTY_SHA256}"));
    assert_eq!(hit.status, 200);
    assert!(hit.body.is_empty());
    assert_eq!(
        server.head(&format!("/prefix/cas/{EMPTY_SHA256}")).status,
        200
    );
    assert_eq!(
        server.get(&format!("/ac/{EMPTY_SHA256}")).status,
        404,
        "only in the CAS"
    );
}

#[test]
fn ccache_layouts_and_delete() {
    for (store, server) in servers() {
        let subdirs = "/ccache/ac/0123456789abcdefghijklmnopqrstuR"; // a key starting "ac"
        let flat = "/ccache/0123456789abcdefghijklmnopqrstuvM";
        let bazel = format!("/ccache/ac/{}", "0123456789abcdef".repeat(4));
        for path in [subdirs, flat, bazel.as_str()] {
            assert_eq!(server.get(path).status, 404, "{store} {path}");
            assert_eq!(server.head(path).status, 404);
            let body = format!("entry at {path}");
            assert_eq!(
                server.put(path, body.as_bytes()).status,
                200,
                "{store} {path}"
            );
            assert_eq!(server.get(path).body, body.as_bytes());
            assert_eq!(server.head(path).status, 200);
        }
        assert_eq!(server.delete(flat).status, 200);
        assert_eq!(server.get(flat).status, 404);
        assert_eq!(server.delete(flat).status, 404);
        assert_eq!(
            server.get(subdirs).status,
            200,
            "{store}: other entries stay"
        );
        // ccache keys are not content hashes: nothing is verified.
        assert_eq!(server.put("/ccache/team/ab/cdef", b"anything").status, 200);
    }
}

#[test]
fn status_and_health() {
    for (store, server) in servers() {
        let health = server.get("/healthz");
        assert_eq!((health.status, health.text().trim()), (200, "ok"));
        let status = server.get("/status");
        assert_eq!(status.status, 200);
        assert_eq!(status.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
        assert_eq!(json["service"], "blobcache");
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
        let kind = store.split(',').next().unwrap();
        assert_eq!(json["store"]["kind"], kind);
        if store == "memory" {
            server.put("/ccache/ab/cd", b"12345");
            let json: serde_json::Value =
                serde_json::from_slice(&server.get("/status").body).unwrap();
            assert_eq!(json["store"]["blob_count"], 1);
            assert_eq!(json["store"]["total_bytes"], 5);
        }
    }
}

#[test]
fn bad_keys_get_a_reason_and_store_nothing() {
    let server = Server::start();
    let hex = "ab".repeat(32);
    let cases = [
        ("/cas/xyz", "not a sha256"),
        (&format!("/cas/{}", "zz".repeat(32)), "not a sha256"),
        (&format!("/ac/{}", "AB".repeat(32)), "not a sha256"),
        (&format!("/cas/{hex}0"), "not a sha256"),
        (&format!("/a/../cas/{hex}"), "\"..\""),
        (&format!("/./cas/{hex}"), "\".\""),
        (&format!("/a%2Fb/cas/{hex}"), "encoded separator"),
        (&format!("/a%5cb/ac/{hex}"), "encoded separator"),
        ("/ccache/a%2e%2e/b", "percent-encoded"),
        (&format!("//cas/{hex}"), "empty segment"),
        ("/ccache/ab//cd", "empty segment"),
        ("/ccache/ab/cd/", "empty segment"),
        ("/ccache/a*b", "not allowed"),
        ("/ccache/a,b", "not allowed"),
        ("/ccache", "needs a key"),
        (&format!("/ccache/{}", "a".repeat(1100)), "longer than"),
        (&format!("/ccache{}", "/a".repeat(40)), "segments"),
    ];
    for (path, reason) in cases {
        for method in ["GET", "PUT"] {
            let body = support::Body::Bytes(b"data");
            let response = server.request(method, path, &[], body);
            assert_eq!(response.status, 400, "{method} {path}: {}", response.text());
            let text = response.text();
            assert!(
                text.contains(reason),
                "{method} {path}: {text:?} lacks {reason:?}"
            );
            assert_eq!(
                text.trim_end().lines().count(),
                1,
                "one-line reason: {text:?}"
            );
        }
    }
    assert!(
        server
            .stored_files()
            .iter()
            .all(|f| !f.starts_with(server.store_dir.join("blobs"))),
        "bad requests stored something: {:?}",
        server.stored_files()
    );
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the server keeps serving"
    );
}

#[test]
fn unknown_paths_and_methods() {
    let server = Server::start();
    assert_eq!(
        server.get("/").status,
        200,
        "the root answers, for hosts that probe it"
    );
    assert_eq!(server.get("/no/such/thing").status, 404);
    let hex = "ab".repeat(32);
    let post = server.request(
        "POST",
        &format!("/cas/{hex}"),
        &[],
        support::Body::Bytes(b"x"),
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    assert_eq!(
        server
            .request("DELETE", "/status", &[], support::Body::Empty)
            .status,
        405
    );
}

#[test]
fn max_blob_size_is_enforced_before_and_during_upload() {
    for copied in [false, true] {
        let mut args = vec!["--max-blob-size", "1000"];
        if copied {
            args.push("--copy-uploads");
        }
        max_blob_size_is_enforced(&Server::start_with(&args));
    }
}

fn max_blob_size_is_enforced(server: &Server) {
    let small = vec![7u8; 1000];
    assert_eq!(server.put("/ccache/ok", &small).status, 200);
    let big = vec![7u8; 1001];
    let refused = server.put("/ccache/big", &big);
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert_eq!(server.get("/ccache/big").status, 404);

    // Without a content-length the limit is enforced as bytes arrive.
    let mut connection = support::Connection::open(&server.addr);
    let chunked = format!("{:x}\r\n{}\r\n0\r\n\r\n", 1500, "x".repeat(1500));
    connection.write_raw(
        format!("PUT /ccache/chunked HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n{chunked}")
            .as_bytes(),
    );
    let response = connection.receive(false).collect();
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(server.get("/ccache/chunked").status, 404);
}

#[test]
fn compiled_component_is_reused_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let first = Server::start_with(&["--compile-cache", cache_arg]);
    assert_eq!(first.get("/healthz").status, 200);
    drop(first);
    let compiled: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(compiled.len(), 1, "one compiled artifact: {compiled:?}");
    let written = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();

    let second = Server::start_with(&["--compile-cache", cache_arg]);
    assert_eq!(second.get("/healthz").status, 200);
    assert!(
        second.log_text().contains("loaded the compiled component"),
        "{}",
        second.log_text()
    );
    assert!(
        !second.log_text().contains("compiling the component"),
        "{}",
        second.log_text()
    );
    let after = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();
    assert_eq!(
        written, after,
        "the restart loaded the artifact instead of recompiling"
    );
}
