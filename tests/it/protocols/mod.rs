//! Each protocol's scenarios, written once and run on every target
//! (see [`crate::targets`]). Adding a protocol means one file here.

mod azure_blob;
mod bazel;
mod ccache;
mod gha;
mod gradle;
mod nx;
mod oci;
mod sccache;
mod service;
mod turbo;

use std::time::Duration;

use crate::support::{Connection, Server};

/// Sends a PUT to `path` whose body stops short of its `content-length`, then
/// hangs up: the read that follows must miss, and the server keep serving.
pub fn cut_upload_stores_nothing(server: &Server, path: &str, headers: &str) {
    let mut connection = Connection::open(&server.addr);
    connection.write_raw(
        format!(
            "PUT {path} HTTP/1.1\r\nhost: localhost\r\n{headers}content-length: 100000\r\n\r\n"
        )
        .as_bytes(),
    );
    connection.write_raw(&[7u8; 60_000]);
    std::thread::sleep(Duration::from_millis(200));
    connection.shutdown();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.get(path).status,
        404,
        "{path}: a cut upload stores nothing"
    );
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the server keeps serving"
    );
}

/// A PUT declaring more than `BLOBCACHE_MAX_BLOB_SIZE` with `Expect:
/// 100-continue` is refused with 413 before the client sends its body.
pub fn oversize_refused_before_the_body(server: &Server, path: &str) -> crate::support::Response {
    let answer = declared_without_body(server, "PUT", path, 5_000_000);
    assert_eq!(server.get(path).status, 404, "{path}: nothing stored");
    answer
}

/// The answer to a request declaring a `length`-byte body (with `Expect:
/// 100-continue`) of which nothing is sent: only an answer given without the
/// body can arrive.
pub fn declared_without_body(
    server: &Server,
    method: &str,
    path: &str,
    length: u64,
) -> crate::support::Response {
    let mut connection = Connection::open(&server.addr);
    connection.write_raw(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nexpect: 100-continue\r\n\
             content-length: {length}\r\n\r\n"
        )
        .as_bytes(),
    );
    connection.receive(false).collect()
}

/// A body in HTTP/1.1 chunked framing.
pub fn chunked(bytes: &[u8]) -> Vec<u8> {
    let mut framed = Vec::new();
    for chunk in bytes.chunks(100_000) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    framed
}
