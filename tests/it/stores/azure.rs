//! The Azure store against Azurite (which checks Shared Key and SAS signatures):
//! every store operation through the library, interoperability with Microsoft's
//! SDK, faults, and large blobs. The protocols run over Azure as the `azure`
//! target of every scenario.

use crate::support::{self, store_component};

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::{sha256_hex, Azurite, Body, Connection, Noise, Server};
use blobcache::store::azure::{AzureConfig, AzureStore};
use blobcache::store::{Access, Backend, Error, WriteMode, WriteOptions};
use bytes::Bytes;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};

const CONTAINER: &str = "cache";

fn azure_server(azurite: &Azurite, extra: &[&str]) -> Server {
    let mut args = vec![
        "--store",
        "azure",
        "--azure-create-container",
        "--azure-container",
        CONTAINER,
    ];
    args.extend_from_slice(extra);
    Server::start_with_env(
        &args,
        &[(
            "AZURE_STORAGE_CONNECTION_STRING",
            &azurite.connection_string(),
        )],
    )
}

async fn library_store(azurite: &Azurite, prefix: &str) -> AzureStore {
    let account =
        blobcache_azure::Account::from_connection_string(&azurite.connection_string()).unwrap();
    let mut config = AzureConfig {
        account,
        container: CONTAINER.into(),
        prefix: prefix.into(),
        create_container: true,
        block_size: 64 << 10,
        parallel_blocks: 3,
        timeout: Duration::from_secs(30),
        retry: Default::default(),
    };
    config.retry.base = Duration::from_millis(10);
    AzureStore::connect(config).await.unwrap()
}

fn options(mode: WriteMode) -> WriteOptions {
    WriteOptions {
        mode,
        content_type: Some("application/x-test".into()),
        metadata: vec![("origin".into(), "test".into())],
        expected_size: None,
        expected_sha256: None,
        max_size: None,
        if_match: None,
        staged_under: None,
    }
}

/// Writes `content` through a store writer, honouring the stream's permits.
async fn write_blob(
    store: &AzureStore,
    key: &str,
    content: &[u8],
    options: WriteOptions,
) -> Result<blobcache::store::BlobInfo, Error> {
    let mut writer = store.create(key, options).await?;
    let mut stream = writer.body()?;
    let mut rest = Bytes::copy_from_slice(content);
    while !rest.is_empty() {
        let permit = match stream.check_write() {
            Ok(0) => {
                stream.ready().await;
                continue;
            }
            Ok(permit) => permit,
            Err(_) => break,
        };
        let chunk = rest.split_to(permit.min(rest.len()).min(10_000));
        if stream.write(chunk).is_err() {
            break;
        }
    }
    drop(stream);
    writer.finish().await
}

async fn read_all(stream: &mut Box<dyn InputStream>) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        stream.ready().await;
        match stream.read(1 << 20) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(StreamError::Closed) => return out,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// What only the Azure store does; the common semantics are in store_contract.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_specific_store_behaviour() {
    let azurite = Azurite::start();
    let store = library_store(&azurite, "ops/").await;
    // Several blocks (64 KiB each, three in flight) and one short block.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha256_hex(&content);
    let mut verified = options(WriteMode::CreateOnly);
    verified.expected_size = Some(content.len() as u64);
    verified.expected_sha256 = Some(digest.clone());
    write_blob(&store, "a/big", &content, verified)
        .await
        .unwrap();

    // Content type, metadata and the verified digest travel with the blob.
    let head = store.head("a/big").await.unwrap();
    assert_eq!(
        (head.size, head.sha256.as_deref()),
        (content.len() as u64, Some(digest.as_str()))
    );
    assert_eq!(head.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(
        head.metadata,
        vec![("origin".to_string(), "test".to_string())]
    );
    let (_, mut stream) = store.open("a/big", None).await.unwrap();
    assert_eq!(read_all(&mut stream).await, content);

    // A mismatching multi-block upload leaves the old blob in place.
    let mut wrong = options(WriteMode::Overwrite);
    wrong.expected_sha256 = Some(sha256_hex(b"not this"));
    let refused = write_blob(&store, "a/big", &content[..200_000], wrong).await;
    assert!(
        matches!(refused, Err(Error::Invalid(ref m)) if m.contains("sha256 mismatch")),
        "{refused:?}"
    );
    assert_eq!(
        store.head("a/big").await.unwrap().sha256.as_deref(),
        Some(digest.as_str())
    );

    // Only a digest the store computed is reported as the blob's sha256.
    let mut forged = options(WriteMode::Overwrite);
    forged.metadata.push(("sha256".into(), "0".repeat(64)));
    write_blob(&store, "a/forged", b"real", forged)
        .await
        .unwrap();
    assert_eq!(
        store.head("a/forged").await.unwrap().sha256,
        Some(sha256_hex(b"real"))
    );

    // A size limit stops the upload as bytes arrive.
    let mut limited = options(WriteMode::Overwrite);
    limited.max_size = Some(100_000);
    assert!(matches!(
        write_blob(&store, "a/limited", &content, limited).await,
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        store.head("a/limited").await,
        Err(Error::NotFound)
    ));
}

/// Stages `content` as block `id` of `key`.
async fn stage(store: &AzureStore, key: &str, id: &str, content: &[u8]) {
    let mut writer = store
        .stage_block(key, id, Some(content.len() as u64))
        .await
        .unwrap();
    let mut stream = writer.body().unwrap();
    let mut rest = Bytes::copy_from_slice(content);
    while !rest.is_empty() {
        match stream.check_write().unwrap() {
            0 => stream.ready().await,
            permit => {
                let chunk = rest.split_to(permit.min(rest.len()));
                stream.write(chunk).unwrap();
            }
        }
    }
    drop(stream);
    writer.finish().await.unwrap();
}

/// The status of a signed request of our own, straight to Azurite.
fn raw_status(
    azurite: &Azurite,
    build: impl Fn(&blobcache_azure::Container) -> blobcache_azure::Operation,
) -> (u16, String) {
    azurite.signed(build, CONTAINER)
}

/// Staged blocks live on the key's staging blob until a commit, never on the key's
/// own blob; a commit, verified or refused, leaves no staging blob behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_blocks_wait_on_a_staging_blob_and_commits_clean_up() {
    let azurite = Azurite::start();
    let store = library_store(&azurite, "ops/").await;
    let now = std::time::SystemTime::now;
    let part: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    stage(&store, "a/staged", "x", &part).await;
    stage(&store, "a/staged", "y", b"tail").await;

    // Nothing on the key itself, committed or not; the staging blob holds the blocks.
    let on_key = raw_status(&azurite, |c| {
        c.get_uncommitted_blocks("ops/a/staged", now())
    });
    assert_eq!(on_key.0, 404, "{}", on_key.1);
    let staging = raw_status(&azurite, |c| {
        c.get_uncommitted_blocks("ops/!staging/a/staged", now())
    });
    assert_eq!(staging.0, 200);
    // Two data parts (64 KiB blocks) for x, one for y, and a name part each.
    assert_eq!(
        staging.1.matches("<Block>").count(),
        2 + 1 + 2,
        "{}",
        staging.1
    );

    // A mismatching digest: nothing published, and the staging blob is gone.
    let mut wrong = options(WriteMode::CreateOnly);
    wrong.expected_sha256 = Some(sha256_hex(b"not this"));
    let ids = vec!["x".to_string(), "y".to_string()];
    let refused = store.commit_blocks("a/staged", ids.clone(), wrong).await;
    assert!(
        matches!(refused, Err(Error::Invalid(ref m)) if m.contains("sha256 mismatch")),
        "{refused:?}"
    );
    assert!(matches!(store.head("a/staged").await, Err(Error::NotFound)));
    let gone = raw_status(&azurite, |c| {
        c.get_properties("ops/!staging/a/staged", now())
    });
    assert_eq!(gone.0, 404);

    // The right digest: published with it, content type and metadata; no staging blob.
    stage(&store, "a/staged", "x", &part).await;
    stage(&store, "a/staged", "y", b"tail").await;
    let mut whole = part.clone();
    whole.extend_from_slice(b"tail");
    let mut right = options(WriteMode::CreateOnly);
    right.expected_sha256 = Some(sha256_hex(&whole));
    let info = store.commit_blocks("a/staged", ids, right).await.unwrap();
    let head = store.head("a/staged").await.unwrap();
    assert_eq!(head.etag, info.etag);
    assert_eq!(head.sha256, Some(sha256_hex(&whole)));
    assert_eq!(head.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(head.metadata, vec![("origin".into(), "test".into())]);
    let (_, mut stream) = store.open("a/staged", None).await.unwrap();
    assert_eq!(read_all(&mut stream).await, whole);
    let gone = raw_status(&azurite, |c| {
        c.get_properties("ops/!staging/a/staged", now())
    });
    assert_eq!(gone.0, 404);
    // Listings never show staging blobs, even while blocks wait there.
    stage(&store, "a/pending", "x", b"p").await;
    let page = store.list("", None, 100).await.unwrap();
    let keys: Vec<String> = page.entries.into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec!["a/staged".to_string()]);
}

/// The host's Azure store and the store component lay data out the same way (one
/// `azure` crate decides for both): blocks staged by either are listed and
/// committed by the other, with the caller's own ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_store_component_share_staged_blocks() {
    let azurite = Azurite::start();
    let host = library_store(&azurite, "mixed/").await;
    let connection = azurite.connection_string();
    let component = store_component::ComponentStore::new(&[
        ("AZURE_STORAGE_CONNECTION_STRING", connection.as_str()),
        ("BLOBCACHE_AZURE_CONTAINER", CONTAINER),
        ("BLOBCACHE_AZURE_PREFIX", "mixed/"),
        ("BLOBCACHE_AZURE_BLOCK_SIZE", "65536"),
    ])
    .await;
    let go_sdk_id = format!("{}==", "Zm9v+/ba".repeat(10) + "xyzw00");
    assert_eq!(go_sdk_id.len(), 88);
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 11) as u8).collect();
    stage(&host, "layer", &go_sdk_id, &big).await;
    let mut writer = component
        .stage_block("layer", "second", Some(4))
        .await
        .unwrap();
    let mut stream = writer.body().unwrap();
    stream.write(Bytes::from_static(b"tail")).unwrap();
    drop(stream);
    writer.finish().await.unwrap();

    let listed: Vec<(String, u64)> = component
        .list_blocks("layer")
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.id, b.size))
        .collect();
    let mut expected = vec![(go_sdk_id.clone(), 150_000), ("second".to_string(), 4)];
    expected.sort();
    assert_eq!(listed, expected);

    let mut whole = big.clone();
    whole.extend_from_slice(b"tail");
    let mut verified = options(WriteMode::CreateOnly);
    verified.expected_sha256 = Some(sha256_hex(&whole));
    host.commit_blocks("layer", vec![go_sdk_id, "second".into()], verified)
        .await
        .unwrap();
    let (info, mut stream) = component.open("layer", None).await.unwrap();
    assert_eq!(info.sha256, Some(sha256_hex(&whole)));
    assert_eq!(read_all(&mut stream).await, whole);
    assert!(host.list_blocks("layer").await.unwrap().is_empty());
}

/// GET of a URL with a plain HTTP/1.1 client: (status, body).
fn plain_get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut connection = Connection::open(authority);
    connection.send("GET", path, &[], Body::Empty);
    let response = connection.receive(false).collect();
    (response.status, response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_work_expire_and_reject_tampering() {
    let azurite = Azurite::start();
    let store = library_store(&azurite, "").await;
    write_blob(
        &store,
        "sas/blob",
        b"signed content",
        options(WriteMode::Overwrite),
    )
    .await
    .unwrap();

    let url = store
        .presign("sas/blob", Access::Read, 60)
        .await
        .unwrap()
        .expect("Azure can sign");
    assert_eq!(plain_get(&url), (200, b"signed content".to_vec()));

    let tampered = url.replace("sp=r", "sp=rw");
    assert_eq!(
        plain_get(&tampered).0,
        403,
        "a changed permission must break the signature"
    );
    let other_blob = url.replace("sas/blob", "sas/other");
    assert_eq!(plain_get(&other_blob).0, 403);

    // A write URL lets a plain client upload with Put Blob.
    let write_url = store
        .presign("sas/upload", Access::Write, 60)
        .await
        .unwrap()
        .unwrap();
    let rest = write_url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut connection = Connection::open(authority);
    connection.send(
        "PUT",
        path,
        &[("x-ms-blob-type", "BlockBlob")],
        Body::Bytes(b"uploaded"),
    );
    assert_eq!(connection.receive(false).collect().status, 201);
    let (_, mut stream) = store.open("sas/upload", None).await.unwrap();
    assert_eq!(read_all(&mut stream).await, b"uploaded");

    let short = store
        .presign("sas/blob", Access::Read, 1)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(plain_get(&short).0, 403, "an expired SAS must be refused");
}

#[test]
fn a_wrong_account_key_is_a_clear_error() {
    let azurite = Azurite::start();
    let wrong = azurite.connection_string().replace("Eby8", "Fby8");
    let stderr = support::start_failure(
        &[
            "--store",
            "azure",
            "--azure-create-container",
            "--azure-container",
            CONTAINER,
        ],
        &[("AZURE_STORAGE_CONNECTION_STRING", &wrong)],
    );
    assert!(stderr.contains("rejected the credentials"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let stderr = support::start_failure(
        &["--store", "azure"],
        &[("AZURE_STORAGE_CONNECTION_STRING", "AccountName=x")],
    );
    assert!(stderr.contains("AccountKey"), "{stderr}");
}

#[test]
fn microsofts_sdk_and_blobcache_read_each_others_blobs() {
    let azurite = Azurite::start();
    let server = azure_server(&azurite, &[]);
    let work = tempfile::tempdir().unwrap();
    let connection = azurite.connection_string();
    let node = |args: &[&str]| {
        let output = Command::new("node")
            .arg(support::repo_root().join("tests/sdk/blob.mjs"))
            .args(args)
            .current_dir(support::repo_root())
            .output()
            .expect("running node");
        assert!(
            output.status.success(),
            "node {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    // blobcache writes (several blocks), the SDK reads.
    let written: Vec<u8> = {
        use std::io::Read;
        let mut bytes = vec![0u8; 20 << 20];
        Noise::new(11).read_exact(&mut bytes).unwrap();
        bytes
    };
    assert_eq!(server.put("/ccache/from-blobcache", &written).status, 200);
    let downloaded = work.path().join("downloaded");
    node(&[
        "download",
        &connection,
        CONTAINER,
        "ccache/from-blobcache",
        downloaded.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&downloaded).unwrap() == written,
        "the SDK read different bytes"
    );

    // The SDK writes (Put Block + Put Block List), blobcache serves it.
    let upload = work.path().join("upload");
    std::fs::write(&upload, &written[..9 << 20]).unwrap();
    node(&[
        "upload",
        &connection,
        CONTAINER,
        "ccache/from-sdk",
        upload.to_str().unwrap(),
        "4194304",
    ]);
    let served = server.get("/ccache/from-sdk");
    assert_eq!(served.status, 200);
    assert!(
        served.body == written[..9 << 20],
        "blobcache served different bytes"
    );
}

#[test]
fn one_gib_through_the_component_with_bounded_memory() {
    let azurite = Azurite::start();
    let server = azure_server(&azurite, &[]);
    let peak = support::large_round_trip(&server, 1 << 30, 3);
    eprintln!("1 GiB through Azure: host peak RSS {} MiB", peak >> 20);
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
}

fn server_behind(proxy: &FaultProxy) -> Server {
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
        blobcache_azure::account::DEV_KEY,
        proxy.endpoint()
    );
    let args = [
        "--store",
        "azure",
        "--azure-create-container",
        "--azure-container",
        CONTAINER,
    ];
    Server::start_with_env(&args, &[("AZURE_STORAGE_CONNECTION_STRING", &connection)])
}

/// The first attempt of every distinct request fails in one of Azure's ways;
/// retries (and resumed downloads) get through.
#[test]
fn requests_succeed_through_transient_faults() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let server = server_behind(&proxy);
    // 20 MiB: three Put Blocks and a Put Block List, each failing once.
    let big = support::noise(21, 20 << 20);
    support::fault_proxy::check_transient_faults(&server, &proxy, &big, true);
}

/// A download cut off mid-body is resumed from where it broke.
#[test]
fn a_download_cut_mid_body_is_resumed() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let server = server_behind(&proxy);
    let content = support::noise(5, 3 << 20);
    assert_eq!(server.put("/ccache/cut", &content).status, 200);
    let cuts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = cuts.clone();
    proxy.set_rule(move |request| {
        let first_get = request.method == "GET"
            && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        first_get.then_some(Fault::CutBody)
    });
    let hit = server.get("/ccache/cut");
    assert_eq!(hit.status, 200);
    assert!(hit.body == content, "resumed download differs");
    assert!(
        cuts.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "no resumed request was made"
    );
}

/// A blob replaced between the cut and the resume: the resume is pinned to the
/// old version (If-Match), so the client gets an aborted response carrying only
/// old bytes, never a splice of two versions.
#[test]
fn a_resume_never_splices_two_versions() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let server = server_behind(&proxy);
    let old = support::noise(1, 3 << 20);
    let new = support::noise(2, 3 << 20);
    assert_eq!(server.put("/ccache/changing", &old).status, 200);
    let work = tempfile::tempdir().unwrap();
    let replacement = work.path().join("new");
    std::fs::write(&replacement, &new).unwrap();
    let connection_string = azurite.connection_string();
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = gets.clone();
    proxy.set_rule(move |request| {
        if request.method != "GET" {
            return None;
        }
        match counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Some(Fault::CutBody),
            1 => {
                // Replace the blob straight in Azurite before the resume goes out.
                let status = Command::new("node")
                    .arg(support::repo_root().join("tests/sdk/blob.mjs"))
                    .args(["upload", &connection_string, CONTAINER, "ccache/changing"])
                    .arg(&replacement)
                    .current_dir(support::repo_root())
                    .status()
                    .unwrap();
                assert!(status.success());
                None
            }
            _ => None,
        }
    });
    let mut connection = Connection::open(&server.addr);
    connection.send("GET", "/ccache/changing", &[], Body::Empty);
    let incoming = connection.receive(false);
    assert_eq!(incoming.status, 200);
    let received = incoming.read_until_close();
    assert!(
        received.len() < old.len(),
        "the response should have been aborted, got all {} bytes",
        received.len()
    );
    assert!(
        old.starts_with(&received),
        "bytes of another version were spliced in"
    );
    assert!(
        gets.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "no resume was attempted"
    );
    // The new version is served whole afterwards.
    proxy.set_rule(|_| None);
    assert!(server.get("/ccache/changing").body == new);
}

/// When Azure keeps failing, clients get a clean 503 with a reason, the server
/// keeps serving, and nothing partial ever becomes readable.
#[test]
fn permanent_faults_give_clean_errors_and_publish_nothing() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let server = server_behind(&proxy);
    let big = support::noise(9, 20 << 20);
    support::fault_proxy::check_permanent_faults(&server, &proxy, &big);
}

/// The native host with a container SAS (made by Microsoft's SDK) instead of
/// the account key: it serves every protocol operation, and hands out no SAS
/// URLs of its own (it has nothing to sign them with).
#[test]
fn a_container_sas_works_instead_of_the_account_key() {
    let azurite = Azurite::start();
    azurite.create_container("sas");
    let sas = azurite.container_sas("sas", "racwdl");
    let server = Server::start_with_env(
        &["--store", "azure", "--azure-container", "sas"],
        &[
            ("AZURE_STORAGE_ACCOUNT", "devstoreaccount1"),
            ("AZURE_STORAGE_SAS_TOKEN", &sas),
            ("AZURE_STORAGE_BLOB_ENDPOINT", &azurite.endpoint()),
        ],
    );
    let big = support::noise(8, 9 << 20);
    let cas = format!("/cas/{}", sha256_hex(&big));
    assert_eq!(server.put(&cas, &big).status, 200);
    assert!(server.get(&cas).body == big);
    assert_eq!(server.get("/ccache/ab/missing").status, 404);

    let failure = support::start_failure(
        &["--store", "azure", "--azure-container", "sas"],
        &[
            ("AZURE_STORAGE_ACCOUNT", "devstoreaccount1"),
            ("AZURE_STORAGE_SAS_TOKEN", &sas.replace("sig=", "sig=x")),
            ("AZURE_STORAGE_BLOB_ENDPOINT", &azurite.endpoint()),
        ],
    );
    assert!(failure.contains("rejected the credentials"), "{failure}");

    // Unreachable: the error names the endpoint, never the signature.
    let closed = format!("http://127.0.0.1:{}/devstoreaccount1", support::free_port());
    let failure = support::start_failure(
        &["--store", "azure", "--azure-container", "sas"],
        &[
            ("AZURE_STORAGE_ACCOUNT", "devstoreaccount1"),
            ("AZURE_STORAGE_SAS_TOKEN", &sas),
            ("AZURE_STORAGE_BLOB_ENDPOINT", &closed),
        ],
    );
    assert!(failure.contains("127.0.0.1"), "{failure}");
    assert!(!failure.contains("sig="), "the SAS leaked: {failure}");
}
