//! Each protocol's scenarios, written once and run on every target
//! (see [`crate::targets`]). Adding a protocol means one file here.

mod bazel;
mod ccache;
mod service;

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
