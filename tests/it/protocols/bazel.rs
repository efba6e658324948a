//! Bazel's HTTP remote cache on every target: CAS verification, the action
//! cache, prefixes as namespaces, the empty blob, ranges, size limits, cut
//! uploads and malformed keys; and the real client (Debian's Bazel) getting
//! remote cache hits.

use std::time::Duration;

use crate::protocols::chunked;
use crate::support::{sha256_hex, Body, Connection};
use crate::targets::{deploy, Target};

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A blob of several Azure blocks with the store component's 64 KiB blocks.
fn multi_block_blob() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

on_every_target!(cas_round_trip_and_verification);
fn cas_round_trip_and_verification(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_AZURE_BLOCK_SIZE", "65536")]) else {
        return;
    };
    let content = multi_block_blob();
    let hash = sha256_hex(&content);
    let path = format!("/cas/{hash}");

    assert_eq!(server.get(&path).status, 404, "a miss before the upload");
    assert_eq!(server.head(&path).status, 404);
    let put = server.put(&path, &content);
    assert_eq!(put.status, 200, "{}", put.text());
    let hit = server.get(&path);
    assert_eq!(hit.status, 200);
    assert!(hit.body == content, "read back byte for byte");
    assert_eq!(hit.header("content-length"), Some("300000"));
    if !target.is_azure() {
        assert_eq!(hit.header("etag"), Some(format!("\"{hash}\"").as_str()));
    }
    let head = server.head(&path);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("300000"));
    assert!(head.body.is_empty());

    // Content that does not hash to its key is refused and stores nothing.
    let other = sha256_hex(b"something else");
    let refused = server.put(&format!("/cas/{other}"), &content);
    assert_eq!(refused.status, 400, "{}", refused.text());
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
    assert!(server.get(&path).body == content);
}

on_every_target!(action_cache_and_prefix_namespaces);
fn action_cache_and_prefix_namespaces(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let action = sha256_hex(b"action");
    let ac = format!("/ac/{action}");
    assert_eq!(server.put(&ac, b"result v1").status, 200);
    assert_eq!(server.get(&ac).body, b"result v1");
    // AC entries are opaque and may be replaced.
    assert_eq!(server.put(&ac, b"result v2").status, 200);
    assert_eq!(server.get(&ac).body, b"result v2");

    // A prefix is a namespace of its own.
    let team = format!("/team-a/ac/{action}");
    assert_eq!(server.get(&team).status, 404);
    assert_eq!(server.put(&team, b"team a").status, 200);
    assert_eq!(server.get(&team).body, b"team a");
    assert_eq!(server.get(&ac).body, b"result v2");
    assert_eq!(server.get(&format!("/x/y/z/ac/{action}")).status, 404);

    assert_eq!(server.delete(&team).status, 200);
    assert_eq!(server.get(&team).status, 404);
    assert_eq!(server.delete(&team).status, 404);
}

on_every_target!(empty_blob_is_always_present);
fn empty_blob_is_always_present(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let hit = server.get(&format!("/cas/{EMPTY_SHA256}"));
    assert_eq!(hit.status, 200);
    assert!(hit.body.is_empty());
    assert_eq!(hit.header("content-length"), Some("0"));
    let head = server.head(&format!("/prefix/cas/{EMPTY_SHA256}"));
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("0"))
    );
    assert_eq!(
        server.get(&format!("/ac/{EMPTY_SHA256}")).status,
        404,
        "only in the CAS"
    );
}

on_every_target!(ranges);
fn ranges(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let path = format!("/cas/{}", sha256_hex(&content));
    assert_eq!(server.put(&path, &content).status, 200);
    let get = |range: &str| server.request("GET", &path, &[("range", range)], Body::Empty);

    let part = get("bytes=10-19");
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(part.header("content-length"), Some("10"));
    assert_eq!(part.body, &content[10..20]);

    let rest = get("bytes=990-");
    assert_eq!(rest.status, 206);
    assert_eq!(rest.header("content-range"), Some("bytes 990-999/1000"));
    assert_eq!(rest.body, &content[990..]);

    let suffix = get("bytes=-5");
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.header("content-range"), Some("bytes 995-999/1000"));
    assert_eq!(suffix.body, &content[995..]);

    let clipped = get("bytes=900-5000");
    assert_eq!(clipped.status, 206);
    assert_eq!(clipped.header("content-range"), Some("bytes 900-999/1000"));
    assert_eq!(clipped.body, &content[900..]);

    for past in ["bytes=1000-", "bytes=5000-6000"] {
        let refused = get(past);
        assert_eq!(refused.status, 416, "{past}: {}", refused.text());
        assert_eq!(refused.header("content-range"), Some("bytes */1000"));
    }
    let huge = get("bytes=0-18446744073709551615");
    assert_eq!(huge.status, 206, "{}", huge.text());
    assert_eq!(huge.header("content-range"), Some("bytes 0-999/1000"));
    assert!(huge.body == content);

    // If-Range: a range of the version the client has, else the whole blob.
    let etag = server.head(&path).header("etag").unwrap().to_string();
    let same = server.request(
        "GET",
        &path,
        &[("range", "bytes=0-9"), ("if-range", &etag)],
        Body::Empty,
    );
    assert_eq!(same.status, 206);
    let changed = server.request(
        "GET",
        &path,
        &[("range", "bytes=0-9"), ("if-range", "\"another version\"")],
        Body::Empty,
    );
    assert_eq!(changed.status, 200);
    assert!(changed.body == content);

    // HEAD sends no body: the next answer on the same connection is intact.
    let mut connection = Connection::open(&server.addr);
    connection.send("HEAD", &path, &[("range", "bytes=0-9")], Body::Empty);
    let head = connection.receive(true).collect();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    connection.send("GET", &path, &[], Body::Empty);
    let after = connection.receive(false).collect();
    assert_eq!(after.status, 200);
    assert!(after.body == content);

    // Several ranges, or another unit, are answered with the whole blob.
    for ignored in ["bytes=0-1,5-6", "items=0-1"] {
        let whole = get(ignored);
        assert_eq!(whole.status, 200, "{ignored}");
        assert!(whole.body == content);
    }
    let missing = server.request(
        "GET",
        &format!("/cas/{}", "9".repeat(64)),
        &[("range", "bytes=0-1")],
        Body::Empty,
    );
    assert_eq!(missing.status, 404);
}

on_every_target!(size_limit_before_and_during_upload);
fn size_limit_before_and_during_upload(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_MAX_BLOB_SIZE", "1000")]) else {
        return;
    };
    let ok = format!("/ac/{}", "1".repeat(64));
    assert_eq!(server.put(&ok, &[7u8; 1000]).status, 200);
    let big = format!("/ac/{}", "2".repeat(64));
    let refused = server.put(&big, &[7u8; 1001]);
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert_eq!(server.get(&big).status, 404);

    // Without a content-length the limit is enforced as bytes arrive.
    let streamed = format!("/ac/{}", "3".repeat(64));
    let mut connection = Connection::open(&server.addr);
    connection.send(
        "PUT",
        &streamed,
        &[("transfer-encoding", "chunked")],
        Body::Bytes(&chunked(&[1u8; 1500])),
    );
    let response = connection.receive(false).collect();
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(server.get(&streamed).status, 404);
}

on_every_target!(cut_uploads_store_nothing);
fn cut_uploads_store_nothing(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_AZURE_BLOCK_SIZE", "65536")]) else {
        return;
    };
    let blob = multi_block_blob();
    // AC values are not verified, so only the truncation can stop them.
    for (index, framing) in ["content-length: 300000", "transfer-encoding: chunked"]
        .iter()
        .enumerate()
    {
        let cut = format!("/ac/{}", format!("c{index}").repeat(32));
        let mut connection = Connection::open(&server.addr);
        connection.write_raw(
            format!("PUT {cut} HTTP/1.1\r\nhost: localhost\r\n{framing}\r\n\r\n").as_bytes(),
        );
        let partial = match index {
            0 => blob[..200_000].to_vec(),
            _ => chunked(&blob[..200_000])[..150_000].to_vec(),
        };
        connection.write_raw(&partial);
        std::thread::sleep(Duration::from_millis(200));
        connection.shutdown();
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(server.get(&cut).status, 404, "{framing}: nothing stored");
    }
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the server keeps serving"
    );
}

on_every_target!(bad_keys_get_a_reason_and_store_nothing);
fn bad_keys_get_a_reason_and_store_nothing(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
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
            let response = server.request(method, path, &[], Body::Bytes(b"data"));
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
    if target == Target::Dir {
        assert!(
            server
                .stored_files()
                .iter()
                .all(|f| !f.starts_with(server.store_dir.join("blobs"))),
            "bad requests stored something: {:?}",
            server.stored_files()
        );
    }
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the server keeps serving"
    );
}

on_targets!(real_client_gets_remote_hits: dir, azure, wasmtime_serve);
fn real_client_gets_remote_hits(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    crate::support::bazel::round_trip(&format!("http://{}/team-a", server.addr), None);
}
