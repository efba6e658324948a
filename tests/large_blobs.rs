//! A 2 GiB blob through the component, both ways, with bounded host memory.

mod support;

use support::{noise_digest, Body, Connection, Noise, Server};

const TWO_GIB: u64 = 2 << 30;
/// Peak resident memory the host may reach while moving the blob.
const RSS_LIMIT: u64 = 150 << 20;

#[test]
fn two_gib_upload_and_download_stream_with_bounded_memory() {
    let server = Server::start();
    let digest = noise_digest(7, TWO_GIB);
    let path = format!("/cas/{digest}");

    let mut connection = Connection::open(&server.addr);
    let mut source = Noise::new(7);
    connection.send(
        "PUT",
        &path,
        &[],
        Body::Stream {
            length: TWO_GIB,
            source: &mut source,
        },
    );
    let response = connection.receive(false).collect();
    assert_eq!(response.status, 200, "{}", response.text());

    let mut connection = Connection::open(&server.addr);
    connection.send("GET", &path, &[], Body::Empty);
    let incoming = connection.receive(false);
    assert_eq!(incoming.status, 200);
    assert_eq!(incoming.digest(), (TWO_GIB, digest.clone()));

    let peak = server.peak_rss();
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {} MiB is over {} MiB",
        peak >> 20,
        RSS_LIMIT >> 20
    );
    eprintln!("2 GiB round trip: host peak RSS {} MiB", peak >> 20);
    std::fs::remove_dir_all(&server.store_dir).unwrap();
}
