//! A 2 GiB blob through the component, both ways, with bounded host memory.

use crate::support;
use crate::support::Server;

const TWO_GIB: u64 = 2 << 30;
/// Peak resident memory the host may reach while moving the blob.
const RSS_LIMIT: u64 = 150 << 20;

#[test]
fn two_gib_upload_and_download_stream_with_bounded_memory() {
    let server = Server::start();
    let peak = support::large_round_trip(&server, TWO_GIB, 7);
    eprintln!("2 GiB round trip: host peak RSS {} MiB", peak >> 20);
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {} MiB is over {} MiB",
        peak >> 20,
        RSS_LIMIT >> 20
    );
    std::fs::remove_dir_all(&server.store_dir).unwrap();
}
