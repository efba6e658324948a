//! The edge tier (`--store edge:PATH`): a bounded local directory in front of
//! Azure (Azurite, behind the fault proxy). Writes reach Azure before they are
//! acknowledged; misses are filled from Azure as they stream; with Azure slow
//! or failing, local hits still answer at local speed and misses fail cleanly.

use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::{self, eventually, sha256_hex, Azurite, Server};

const CONTAINER: &str = "edge";

fn connection_string(endpoint: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
        blobcache_azure::account::DEV_KEY,
        endpoint
    )
}

fn edge_server(proxy: &FaultProxy, edge_dir: &std::path::Path) -> Server {
    let store = format!("edge:{}", edge_dir.display());
    Server::start_with_env(
        &[
            "--store",
            &store,
            "--max-size",
            "64MiB",
            "--azure-create-container",
            "--azure-container",
            CONTAINER,
        ],
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &connection_string(&proxy.endpoint()),
        )],
    )
}

fn local_blob_count(edge_dir: &std::path::Path) -> usize {
    std::fs::read_dir(edge_dir.join("blobs"))
        .unwrap()
        .flatten()
        .map(|shard| std::fs::read_dir(shard.path()).unwrap().count())
        .sum()
}

#[test]
fn the_edge_serves_hits_locally_and_fills_misses_from_azure() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let edge_dir = tempfile::tempdir().unwrap();
    let edge = edge_server(&proxy, edge_dir.path());

    // Written through the edge: in Azure before the answer, and kept locally.
    let written = support::noise(3, 3 << 20);
    let written_hash = sha256_hex(&written);
    assert_eq!(
        edge.put(&format!("/cas/{written_hash}"), &written).status,
        200
    );
    let (status, listing) = azurite.signed(
        |c| c.list_blobs("", None, 100, false, std::time::SystemTime::now()),
        CONTAINER,
    );
    assert_eq!(status, 200);
    assert!(
        listing.contains(&written_hash),
        "the write did not reach Azure: {listing}"
    );
    assert_eq!(local_blob_count(edge_dir.path()), 1);

    // Written by another instance straight to Azure: a miss at the edge,
    // served from Azure and kept.
    let central = Server::start_with_env(
        &["--store", "azure", "--azure-container", CONTAINER],
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &azurite.connection_string(),
        )],
    );
    let remote = support::noise(4, 2 << 20);
    let remote_hash = sha256_hex(&remote);
    assert_eq!(
        central.put(&format!("/cas/{remote_hash}"), &remote).status,
        200
    );
    let filled = edge.get(&format!("/cas/{remote_hash}"));
    assert_eq!(filled.status, 200);
    assert!(filled.body == remote);
    assert!(
        eventually(Duration::from_secs(5), || local_blob_count(edge_dir.path())
            == 2),
        "the miss was not kept locally"
    );

    // Azure slow (every answer 3 s late), then failing (503 to everything):
    // local hits answer at local speed and never reach it.
    let slow: fn() -> Fault = || Fault::Delay(Duration::from_secs(3));
    let failing: fn() -> Fault = || Fault::Status(503, "ServerBusy");
    for fault in [slow, failing] {
        proxy.set_rule(move |_| Some(fault()));
        for (hash, content) in [(&written_hash, &written), (&remote_hash, &remote)] {
            let started = Instant::now();
            let hit = edge.get(&format!("/cas/{hash}"));
            assert_eq!(hit.status, 200);
            assert!(hit.body == *content);
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "a local hit took {:?}",
                started.elapsed()
            );
        }
    }
    let injected = proxy.injected.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(injected, 0, "local hits reached Azure");

    // A miss fails cleanly, and a write Azure refuses is not acknowledged nor
    // kept at the edge.
    let absent = sha256_hex(b"nowhere");
    let miss = edge.get(&format!("/cas/{absent}"));
    assert!(miss.status >= 500, "{} {}", miss.status, miss.text());
    let refused = support::noise(9, 1 << 20);
    let refused_hash = sha256_hex(&refused);
    let put = edge.put(&format!("/cas/{refused_hash}"), &refused);
    assert!(put.status >= 500, "{} {}", put.status, put.text());
    assert_eq!(
        local_blob_count(edge_dir.path()),
        2,
        "a refused write was kept"
    );
    assert_eq!(edge.get("/healthz").status, 200);
}

/// A read cut by Azure mid-body keeps nothing at the edge (no partial entry),
/// and the next read fills it whole.
#[test]
fn a_fill_cut_short_keeps_nothing() {
    let azurite = Azurite::start();
    let direct = FaultProxy::start(azurite.port);
    let edge_dir = tempfile::tempdir().unwrap();
    let edge = edge_server(&direct, edge_dir.path());
    let content = support::noise(6, 4 << 20);
    let hash = sha256_hex(&content);
    let central = Server::start_with_env(
        &["--store", "azure", "--azure-container", CONTAINER],
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &azurite.connection_string(),
        )],
    );
    assert_eq!(central.put(&format!("/cas/{hash}"), &content).status, 200);
    // Every GET is cut: the store's resumes are cut too, until it gives up.
    direct.set_rule(|request| (request.method == "GET").then_some(Fault::CutBody));
    let mut connection = support::Connection::open(&edge.addr);
    connection.send("GET", &format!("/cas/{hash}"), &[], support::Body::Empty);
    let incoming = connection.receive(false);
    let complete = incoming.status == 200 && incoming.read_until_close() == content;
    assert!(!complete, "the cut download arrived whole");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        local_blob_count(edge_dir.path()),
        0,
        "a partial copy was kept"
    );
    direct.set_rule(|_| None);
    assert!(edge.get(&format!("/cas/{hash}")).body == content);
    assert!(eventually(Duration::from_secs(5), || local_blob_count(
        edge_dir.path()
    ) == 1));
}

/// A fill that began before a delete of its key is not kept: the edge must
/// not bring back an entry deleted meanwhile.
#[test]
fn a_fill_older_than_a_delete_is_dropped() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let edge_dir = tempfile::tempdir().unwrap();
    let edge = edge_server(&proxy, edge_dir.path());
    let content = support::noise(8, 16 << 20);
    assert_eq!(edge.put("/ccache/aa/entry", &content).status, 200);
    // Only Azure has it now.
    for file in walk_blobs(edge_dir.path()) {
        std::fs::remove_file(file).unwrap();
    }
    let mut reader = support::Connection::open(&edge.addr);
    reader.send("GET", "/ccache/aa/entry", &[], support::Body::Empty);
    let mut incoming = reader.receive(false);
    assert_eq!(incoming.status, 200);
    let mut first = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut incoming, &mut first).unwrap();
    assert_eq!(edge.delete("/ccache/aa/entry").status / 100, 2);
    let rest = incoming.read_until_close();
    assert_eq!(first.len() + rest.len(), content.len());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        local_blob_count(edge_dir.path()),
        0,
        "the deleted entry came back"
    );
    assert_eq!(edge.get("/ccache/aa/entry").status, 404);
}

fn walk_blobs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).unwrap().flatten())
        .map(|entry| entry.path())
        .collect()
}
