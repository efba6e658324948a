//! The composed component (cache + Azure store component) on hosts other than
//! blobcache's own: `target/wasm/blobcache.wasm` under `wasmtime serve` and
//! `target/wasm/blobcache-spin.wasm` under the real Spin (`spin up` of the
//! committed `spin.toml`), against Azurite; only WASI (and Spin's variables)
//! satisfied by the host. The protocol scenarios run on both as targets; these
//! are what only such hosts show: a large blob with the host's memory bounded,
//! Azure faults through the fault proxy, a SAS, stalled uploads.

use std::path::Path;
use std::time::Duration;

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::{self, Azurite, Body, Connection, Server};
use crate::targets::Target;

const CONTAINER: &str = "served";

/// The composed component on `target`'s host, with `settings` (environment
/// variable names; Spin gets them as `SPIN_VARIABLE_*`) and outbound requests
/// allowed to `127.0.0.1:port` (Azurite, or the fault proxy in front of it).
fn start(target: Target, settings: &[(&str, &str)], port: u16) -> Option<Server> {
    if !crate::targets::available(target) {
        return None;
    }
    Some(match target {
        Target::WasmtimeServe => {
            Server::wasmtime_serve(Path::new(env!("BLOBCACHE_WASM")), settings)
        }
        Target::Spin => {
            let outbound = format!("http://127.0.0.1:{port}");
            let mut variables = settings.to_vec();
            variables.push(("AZURE_OUTBOUND_HOST", &outbound));
            Server::spin_up(&variables)
        }
        other => panic!("{other:?} is not a host of the composed component"),
    })
}

/// The composed component storing into [`CONTAINER`] on `azurite`.
fn serve(target: Target, azurite: &Azurite, extra: &[(&str, &str)]) -> Option<Server> {
    azurite.create_container(CONTAINER);
    let connection = azurite.connection_string();
    let mut env = vec![
        ("AZURE_STORAGE_CONNECTION_STRING", connection.as_str()),
        ("BLOBCACHE_AZURE_CONTAINER", CONTAINER),
    ];
    env.extend_from_slice(extra);
    start(target, &env, azurite.port)
}

on_targets!(a_large_blob_streams_through_with_bounded_memory: wasmtime_serve, spin);
fn a_large_blob_streams_through_with_bounded_memory(target: Target) {
    const SIZE: u64 = 512 << 20;
    /// Peak resident memory of the whole host process.
    const RSS_LIMIT: u64 = 200 << 20;
    let azurite = Azurite::start();
    let Some(server) = serve(target, &azurite, &[]) else {
        return;
    };
    let peak = support::large_round_trip(&server, SIZE, 11);
    eprintln!("512 MiB through {target:?}: peak RSS {} MiB", peak >> 20);
    assert!(
        peak < RSS_LIMIT,
        "{target:?} peaked at {} MiB moving 512 MiB",
        peak >> 20
    );
}

#[test]
fn a_missing_setting_is_named_in_the_answer() {
    let Some(server) = start(Target::WasmtimeServe, &[], 0) else {
        return;
    };
    let response = server.get(&format!("/cas/{}", "1".repeat(64)));
    assert_eq!(response.status, 500, "{}", response.text());
    assert!(
        response.text().contains("AZURE_STORAGE_CONNECTION_STRING"),
        "{}",
        response.text()
    );
}

/// The composed component with Azurite behind the fault-injecting proxy.
fn serve_behind(target: Target, azurite: &Azurite, proxy: &FaultProxy) -> Option<Server> {
    azurite.create_container(CONTAINER);
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
        blobcache_azure::account::DEV_KEY,
        proxy.endpoint()
    );
    start(
        target,
        &[
            ("AZURE_STORAGE_CONNECTION_STRING", &connection),
            ("BLOBCACHE_AZURE_CONTAINER", CONTAINER),
            ("BLOBCACHE_AZURE_BLOCK_SIZE", "1048576"),
        ],
        proxy.port,
    )
}

on_targets!(the_store_component_retries_transient_faults: wasmtime_serve, spin);
/// The first attempt of every distinct request fails in one of Azure's ways;
/// the store component's retries get through, as the native host's do.
fn the_store_component_retries_transient_faults(target: Target) {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let Some(server) = serve_behind(target, &azurite, &proxy) else {
        return;
    };
    // 5 MiB in 1 MiB blocks: five Put Blocks and a Put Block List, each failing once.
    let big = support::noise(3, 5 << 20);
    support::fault_proxy::check_transient_faults(&server, &proxy, &big, false);
}

on_targets!(permanent_faults_give_clean_errors_and_publish_nothing: wasmtime_serve, spin);
/// When Azure keeps failing: a clean 503 naming the cause, nothing partial ever
/// readable, and the server keeps serving.
fn permanent_faults_give_clean_errors_and_publish_nothing(target: Target) {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let Some(server) = serve_behind(target, &azurite, &proxy) else {
        return;
    };
    let big = support::noise(4, 3 << 20);
    support::fault_proxy::check_permanent_faults(&server, &proxy, &big);
}

on_targets!(a_download_cut_mid_body_fails_the_response_visibly: wasmtime_serve, spin);
/// A download cut mid-body is not resumed by the store component: the client's
/// response is cut too (never a complete-looking short body), and the next
/// request gets the whole blob.
fn a_download_cut_mid_body_fails_the_response_visibly(target: Target) {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let Some(server) = serve_behind(target, &azurite, &proxy) else {
        return;
    };
    let content = support::noise(6, 2 << 20);
    assert_eq!(server.put("/ccache/cut", &content).status, 200);
    let mut cut_once = false;
    proxy.set_rule(move |request| {
        (request.method == "GET" && !std::mem::replace(&mut cut_once, true))
            .then_some(Fault::CutBody)
    });
    let mut connection = Connection::open(&server.addr);
    connection.send("GET", "/ccache/cut", &[], Body::Empty);
    let incoming = connection.receive(false);
    assert_eq!(incoming.status, 200);
    let received = incoming.read_until_close();
    assert!(
        received.len() < content.len(),
        "a cut download arrived whole ({} bytes)",
        received.len()
    );
    assert!(server.get("/ccache/cut").body == content);
}

/// With a container SAS (made by Microsoft's SDK) instead of the account key,
/// every operation works; a tampered SAS is refused by Azure and stores nothing.
#[test]
fn a_container_sas_works_instead_of_the_account_key() {
    let target = Target::WasmtimeServe;
    let azurite = Azurite::start();
    azurite.create_container("sas");
    let sas = azurite.container_sas("sas", "racwdl");
    let endpoint = azurite.endpoint();
    let with_sas = |token: &str| {
        start(
            target,
            &[
                ("AZURE_STORAGE_ACCOUNT", "devstoreaccount1"),
                ("AZURE_STORAGE_SAS_TOKEN", token),
                ("AZURE_STORAGE_BLOB_ENDPOINT", &endpoint),
                ("BLOBCACHE_AZURE_CONTAINER", "sas"),
                ("BLOBCACHE_AZURE_BLOCK_SIZE", "65536"),
            ],
            azurite.port,
        )
    };
    let Some(server) = with_sas(&sas) else {
        return;
    };
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let cas = format!("/cas/{}", support::sha256_hex(&blob));
    assert_eq!(server.get(&cas).status, 404);
    let put = server.put(&cas, &blob);
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(server.get(&cas).body == blob);
    assert_eq!(server.head(&cas).status, 200);
    assert_eq!(server.delete("/ccache/ab/none").status, 404);

    let tampered = sas.replace("sig=", "sig=x");
    let refused = with_sas(&tampered).unwrap();
    let other = b"never stored";
    let path = format!("/cas/{}", support::sha256_hex(other));
    let put = refused.put(&path, other);
    assert_eq!(put.status, 500, "{}", put.text());
    assert!(
        put.text().contains("authentication failed"),
        "{}",
        put.text()
    );
    assert_eq!(server.get(&path).status, 404);
    // Blocks too: Azure's early refusal is the answer (not retried as a
    // broken connection), and no text carries the signature.
    let blocks = format!("/ccache/{}", "e".repeat(40));
    let started = std::time::Instant::now();
    let put = refused.put(&blocks, &blob);
    assert_eq!(put.status, 500, "{}", put.text());
    assert!(
        put.text().contains("authentication failed"),
        "{}",
        put.text()
    );
    assert!(!put.text().contains("sig="), "{}", put.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refusal was retried: {:?}",
        started.elapsed()
    );
    assert_eq!(server.get(&blocks).status, 404);
}

on_targets!(a_stalled_upload_is_ended_and_stores_nothing: wasmtime_serve, spin);
/// `wasmtime serve` and Spin have no watchdog: an upload whose client stops
/// sending is ended by the component's own stall deadline, with a 400 and
/// nothing stored.
fn a_stalled_upload_is_ended_and_stores_nothing(target: Target) {
    let azurite = Azurite::start();
    let Some(server) = serve(target, &azurite, &[("BLOBCACHE_BODY_STALL_SECS", "2")]) else {
        return;
    };
    let path = format!("/ac/{}", "9f".repeat(32));
    let mut connection = Connection::open(&server.addr);
    connection.write_raw(
        format!("PUT {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n")
            .as_bytes(),
    );
    connection.write_raw(&[5u8; 30_000]);
    // The connection stays open, silent.
    let started = std::time::Instant::now();
    let response = connection.receive(false).collect();
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(response.text().contains("stalled"), "{}", response.text());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        server.get(&path).status,
        404,
        "a stalled upload is not stored"
    );
}
