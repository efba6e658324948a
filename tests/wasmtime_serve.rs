//! The composed component (cache + Azure store component, `target/wasm/blobcache.wasm`)
//! running under `wasmtime serve` (wasmtime-cli from crates.io) against Azurite:
//! no blobcache host involved, only WASI imports satisfied by wasmtime.

mod support;

use std::path::Path;

use support::{Azurite, Body, Connection, Server};

const CONTAINER: &str = "served";

fn composed() -> &'static Path {
    Path::new(env!("BLOBCACHE_WASM"))
}

/// The composed component on `wasmtime serve`, storing into `container` on Azurite.
fn serve(azurite: &Azurite, container: &str, extra: &[(&str, &str)]) -> Server {
    let connection = azurite.connection_string();
    let mut env = vec![
        ("AZURE_STORAGE_CONNECTION_STRING", connection.as_str()),
        ("BLOBCACHE_AZURE_CONTAINER", container),
    ];
    env.extend_from_slice(extra);
    Server::wasmtime_serve(composed(), &env)
}

#[test]
fn bazel_protocol_through_the_composed_component() {
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    // Small blocks, so an upload of a few hundred KiB spans several Put Blocks.
    let server = serve(
        &azurite,
        CONTAINER,
        &[
            ("BLOBCACHE_AZURE_BLOCK_SIZE", "65536"),
            ("BLOBCACHE_MAX_BLOB_SIZE", "1000000"),
        ],
    );

    let status: serde_json::Value = serde_json::from_slice(&server.get("/status").body).unwrap();
    assert_eq!(status["store"]["kind"], "azure", "{status}");

    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = support::sha256_hex(&blob);
    let cas = format!("/cas/{digest}");
    assert_eq!(server.get(&cas).status, 404, "a miss before the upload");
    let put = server.put(&cas, &blob);
    assert_eq!(put.status, 200, "{}", put.text());
    let got = server.get(&cas);
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body, blob,
        "multi-block CAS blob read back byte for byte"
    );
    let head = server.head(&cas);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("300000"));

    // The AC holds opaque bytes; the empty blob is always present.
    let ac = format!("/ac/{}", "ab".repeat(32));
    assert_eq!(server.put(&ac, b"action result").status, 200);
    assert_eq!(server.get(&ac).body, b"action result");
    let empty = support::sha256_hex(b"");
    assert_eq!(server.get(&format!("/cas/{empty}")).status, 200);

    // Wrong digest: 400 and nothing stored.
    let wrong = format!("/cas/{}", "0".repeat(64));
    let mismatch = server.put(&wrong, &blob);
    assert_eq!(mismatch.status, 400, "{}", mismatch.text());
    assert!(
        mismatch.text().contains("sha256 mismatch"),
        "{}",
        mismatch.text()
    );
    assert_eq!(
        server.get(&wrong).status,
        404,
        "a mismatching upload is not stored"
    );

    // Over the size limit while streaming (chunked, so no early refusal): 413.
    let big: Vec<u8> = vec![1; 1_200_000];
    let big_digest = support::sha256_hex(&big);
    let mut connection = Connection::open(&server.addr);
    let path = format!("/cas/{big_digest}");
    connection.send(
        "PUT",
        &path,
        &[("transfer-encoding", "chunked")],
        Body::Bytes(&chunked(&big)),
    );
    let refused = connection.receive(false).collect();
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert_eq!(
        server.get(&path).status,
        404,
        "an oversize upload is not stored"
    );

    // A client that hangs up mid-upload publishes nothing (AC values are not
    // verified, so only the truncation can stop it).
    let cut = format!("/ac/{}", "cd".repeat(32));
    let mut connection = Connection::open(&server.addr);
    connection.write_raw(
        format!("PUT {cut} HTTP/1.1\r\nhost: x\r\ncontent-length: 300000\r\n\r\n").as_bytes(),
    );
    connection.write_raw(&blob[..200_000]);
    connection.shutdown();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        server.get(&cut).status,
        404,
        "a truncated upload is not stored"
    );
    assert_eq!(server.get(&cas).status, 200, "the server keeps serving");
}

/// A body in HTTP/1.1 chunked framing.
fn chunked(bytes: &[u8]) -> Vec<u8> {
    let mut framed = Vec::new();
    for chunk in bytes.chunks(100_000) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    framed
}

#[test]
fn ccache_gets_remote_hits_through_the_composed_component() {
    let azurite = Azurite::start();
    azurite.create_container("ccache");
    let server = serve(&azurite, "ccache", &[]);
    support::ccache::round_trip(&server, "subdirs");
}

#[test]
fn a_large_blob_streams_through_with_bounded_memory() {
    const SIZE: u64 = 512 << 20;
    /// Peak resident memory of the whole wasmtime process.
    const RSS_LIMIT: u64 = 200 << 20;
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    let server = serve(&azurite, CONTAINER, &[]);
    let peak = support::large_round_trip(&server, SIZE, 11);
    eprintln!(
        "512 MiB through wasmtime serve: peak RSS {} MiB",
        peak >> 20
    );
    assert!(
        peak < RSS_LIMIT,
        "wasmtime serve peaked at {} MiB moving 512 MiB",
        peak >> 20
    );
}

#[test]
fn a_missing_setting_is_named_in_the_answer() {
    let server = Server::wasmtime_serve(composed(), &[]);
    let response = server.get(&format!("/cas/{}", "1".repeat(64)));
    assert_eq!(response.status, 500, "{}", response.text());
    assert!(
        response.text().contains("AZURE_STORAGE_CONNECTION_STRING"),
        "{}",
        response.text()
    );
}
