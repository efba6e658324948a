//! Stores with a maximum size (`--max-size`): least recently used entries go
//! first, a blob being read while it is evicted is still served whole, and the
//! accounting is rebuilt from the directory at start.

use std::io::Read;
use std::time::Duration;

use crate::support::{eventually, sha256_hex, Body, Connection, Server};

const KIB: usize = 1024;

fn blob(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// Bytes of blob files in a directory store.
fn stored_bytes(server: &Server) -> u64 {
    server
        .stored_files()
        .iter()
        .filter(|f| f.starts_with(server.store_dir.join("blobs")))
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn the_least_recently_used_entries_are_evicted_first() {
    for store in ["dir", "memory"] {
        let mut args = vec!["--max-size", "1MiB"];
        if store == "memory" {
            args.extend(["--store", "memory"]);
        }
        let server = Server::start_with(&args);
        let path = |i: usize| format!("/ccache/aa/entry{i}");
        for i in 0..8 {
            assert_eq!(server.put(&path(i), &blob(i, 100 * KIB)).status / 100, 2);
        }
        // Entry 0 is used again, so entries 1.. are now the least recently used.
        assert_eq!(server.get(&path(0)).body, blob(0, 100 * KIB));
        for i in 8..15 {
            assert_eq!(server.put(&path(i), &blob(i, 100 * KIB)).status / 100, 2);
        }
        assert!(
            eventually(Duration::from_secs(10), || server.get(&path(1)).status
                == 404),
            "{store}: entry 1 was not evicted"
        );
        assert_eq!(server.get(&path(0)).body, blob(0, 100 * KIB), "{store}");
        assert_eq!(server.get(&path(14)).body, blob(14, 100 * KIB), "{store}");
        // The directory store evicts in the background: it may be over its
        // budget for a moment after an upload.
        let kept = || -> u64 {
            let status: serde_json::Value =
                serde_json::from_slice(&server.get("/status").body).unwrap();
            status["store"]["total_bytes"].as_u64().unwrap()
        };
        assert!(
            eventually(Duration::from_secs(10), || kept() <= 1 << 20),
            "{store}: {} bytes kept",
            kept()
        );
        let total = kept();
        if store == "dir" {
            assert!(stored_bytes(&server) <= 1 << 20);
        }
        let metrics = server.get("/metrics").text();
        assert!(
            metrics.contains(&format!("blobcache_store_size_bytes {total}")) || store == "dir",
            "{metrics}"
        );
    }
}

#[test]
fn a_blob_evicted_while_it_is_read_is_served_whole() {
    let server = Server::start_with(&["--max-size", "10MiB"]);
    let big = blob(1, 8 << 20);
    let hash = sha256_hex(&big);
    assert_eq!(server.put(&format!("/cas/{hash}"), &big).status, 200);
    let mut reader = Connection::open(&server.addr);
    reader.send("GET", &format!("/cas/{hash}"), &[], Body::Empty);
    let mut incoming = reader.receive(false);
    assert_eq!(incoming.status, 200);
    let mut first = vec![0u8; 64 * KIB];
    let mut got = 0;
    while got < first.len() {
        got += incoming_read(&mut incoming, &mut first[got..]);
    }
    // Newer entries push the blob out while its download is under way.
    for i in 0..3 {
        let content = blob(10 + i, 1 << 20);
        assert_eq!(
            server
                .put(&format!("/cas/{}", sha256_hex(&content)), &content)
                .status,
            200
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || server
            .head(&format!("/cas/{hash}"))
            .status
            == 404),
        "the blob was not evicted"
    );
    let (rest, digest) = {
        let mut hasher_input = first.clone();
        let rest = incoming.read_until_close();
        hasher_input.extend_from_slice(&rest);
        (rest.len(), sha256_hex(&hasher_input))
    };
    assert_eq!(rest + first.len(), big.len());
    assert_eq!(digest, hash);
}

fn incoming_read(incoming: &mut crate::support::Incoming<'_>, buffer: &mut [u8]) -> usize {
    let n = incoming.read(buffer).unwrap();
    assert!(n > 0);
    n
}

#[test]
fn the_accounting_is_rebuilt_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", dir.path().display());
    let path = |i: usize| format!("/ccache/bb/entry{i}");
    {
        let server = Server::start_with(&["--store", &store]);
        for i in 0..20 {
            assert_eq!(server.put(&path(i), &blob(i, 100 * KIB)).status / 100, 2);
        }
    }
    // Stopped with 2 MB stored; started again with a 1 MiB budget, it evicts
    // on its own, before any request.
    let _server = Server::start_with(&["--store", &store, "--max-size", "1MiB"]);
    let blob_bytes = || -> u64 {
        walk(&dir.path().join("blobs"))
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(10), || blob_bytes() <= 1 << 20),
        "{} bytes left",
        blob_bytes()
    );
    assert!(blob_bytes() > 800 * KIB as u64, "evicted far too much");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn sizes_are_checked_and_azure_is_bounded_otherwise() {
    let error = crate::support::start_failure(&["--max-size", "lots"], &[]);
    assert!(error.contains("not a size such as 200GiB"), "{error}");
    let error = crate::support::start_failure(
        &["--store", "azure", "--max-size", "1GiB"],
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )],
    );
    assert!(
        error.contains("lifecycle policy") && error.contains("blobcache gc"),
        "{error}"
    );
}
