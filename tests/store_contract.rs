//! One contract, every backend: the same checks of `blobcache:store` semantics
//! run against the directory store, the memory store and the Azure store (on
//! Azurite), through the host library.

#[path = "it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use blobcache::store::azure::{AzureConfig, AzureStore};
use blobcache::store::dir::DirStore;
use blobcache::store::memory::MemoryStore;
use blobcache::store::{Backend, BlobInfo, ByteRange, Error, WriteMode, WriteOptions};
use bytes::Bytes;
use support::{sha256_hex, Azurite};
use wasmtime_wasi::p2::{DynOutputStream, Pollable, StreamError};

fn options() -> WriteOptions {
    WriteOptions {
        mode: WriteMode::Overwrite,
        content_type: None,
        metadata: Vec::new(),
        expected_size: None,
        expected_sha256: None,
        max_size: None,
        if_match: None,
    }
}

/// Writes `content` into a stream, honouring its permits.
async fn fill(stream: &mut DynOutputStream, content: &[u8]) {
    let mut rest = Bytes::copy_from_slice(content);
    while !rest.is_empty() {
        match stream.check_write() {
            Ok(0) => stream.ready().await,
            Ok(permit) => {
                let chunk = rest.split_to(permit.min(rest.len()).min(10_000));
                stream.write(chunk).unwrap();
            }
            Err(e) => panic!("stream failed: {e}"),
        }
    }
}

async fn put(
    store: &dyn Backend,
    key: &str,
    content: &[u8],
    options: WriteOptions,
) -> Result<BlobInfo, Error> {
    let mut writer = store.create(key, options).await?;
    let mut stream = writer.body()?;
    fill(&mut stream, content).await;
    drop(stream);
    writer.finish().await
}

async fn stage(
    store: &dyn Backend,
    key: &str,
    id: &str,
    content: &[u8],
) -> Result<BlobInfo, Error> {
    let mut writer = store
        .stage_block(key, id, Some(content.len() as u64))
        .await?;
    let mut stream = writer.body()?;
    fill(&mut stream, content).await;
    drop(stream);
    writer.finish().await
}

async fn get(store: &dyn Backend, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
    let (_, mut stream) = store.open(key, range).await?;
    let mut out = Vec::new();
    loop {
        stream.ready().await;
        match stream.read(1 << 20) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(StreamError::Closed) => return Ok(out),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

async fn contract(name: &str, store: Arc<dyn Backend>) {
    let store = store.as_ref();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();

    // Publish, read whole and in ranges.
    put(store, "c/blob", &content, options()).await.unwrap();
    assert_eq!(get(store, "c/blob", None).await.unwrap(), content, "{name}");
    let range = |offset, length| Some(ByteRange { offset, length });
    assert_eq!(
        get(store, "c/blob", range(10, Some(5))).await.unwrap(),
        &content[10..15],
        "{name}"
    );
    assert_eq!(
        get(store, "c/blob", range(199_990, None)).await.unwrap(),
        &content[199_990..],
        "{name}"
    );
    assert_eq!(
        get(store, "c/blob", range(200_000, None)).await.unwrap(),
        b"",
        "{name}"
    );
    assert_eq!(store.head("c/blob").await.unwrap().size, 200_000, "{name}");

    // Dropping a writer publishes nothing.
    let mut writer = store.create("c/dropped", options()).await.unwrap();
    let mut stream = writer.body().unwrap();
    fill(&mut stream, b"never published").await;
    drop(stream);
    drop(writer);
    assert!(
        matches!(store.head("c/dropped").await, Err(Error::NotFound)),
        "{name}"
    );

    // Size and digest are checked before publishing.
    let mut sized = options();
    sized.expected_size = Some(3);
    assert!(
        matches!(
            put(store, "c/sized", b"four", sized).await,
            Err(Error::Invalid(_))
        ),
        "{name}"
    );
    let mut digest = options();
    digest.expected_sha256 = Some(sha256_hex(b"right"));
    assert!(
        matches!(
            put(store, "c/digest", b"wrong", digest.clone()).await,
            Err(Error::Invalid(_))
        ),
        "{name}"
    );
    put(store, "c/digest", b"right", digest).await.unwrap();
    assert!(
        matches!(store.head("c/sized").await, Err(Error::NotFound)),
        "{name}"
    );

    // Create-only and if-match.
    let mut create_only = options();
    create_only.mode = WriteMode::CreateOnly;
    assert!(
        matches!(
            put(store, "c/blob", b"x", create_only).await,
            Err(Error::AlreadyExists)
        ),
        "{name}"
    );
    let etag = store.head("c/blob").await.unwrap().etag;
    let mut stale = options();
    stale.if_match = Some("\"stale\"".into());
    assert!(
        matches!(
            put(store, "c/blob", b"x", stale).await,
            Err(Error::PreconditionFailed)
        ),
        "{name}"
    );
    let mut current = options();
    current.if_match = Some(etag);
    put(store, "c/blob", b"new", current).await.unwrap();
    assert_eq!(get(store, "c/blob", None).await.unwrap(), b"new", "{name}");

    // Multi-request uploads: staged blocks stay invisible until committed, in order.
    let part_a: Vec<u8> = (0..150_000u32).map(|i| (i % 7) as u8).collect();
    stage(store, "c/staged", "block-a", &part_a).await.unwrap();
    stage(store, "c/staged", "block-b", b"tail").await.unwrap();
    assert!(
        matches!(store.head("c/staged").await, Err(Error::NotFound)),
        "{name}: staged is visible"
    );
    let missing = store
        .commit_blocks("c/staged", vec!["block-a".into(), "nope".into()], options())
        .await;
    assert!(
        matches!(missing, Err(Error::Invalid(_))),
        "{name}: {missing:?}"
    );
    let mut wrong_size = options();
    wrong_size.expected_size = Some(1);
    let refused = store
        .commit_blocks("c/staged", vec!["block-a".into()], wrong_size)
        .await;
    assert!(
        matches!(refused, Err(Error::Invalid(_))),
        "{name}: {refused:?}"
    );
    assert!(
        matches!(store.head("c/staged").await, Err(Error::NotFound)),
        "{name}"
    );
    // The order of the commit is the order of the content.
    let mut sized = options();
    sized.expected_size = Some(part_a.len() as u64 + 4);
    store
        .commit_blocks("c/staged", vec!["block-b".into(), "block-a".into()], sized)
        .await
        .unwrap();
    let mut expected = b"tail".to_vec();
    expected.extend_from_slice(&part_a);
    assert_eq!(
        get(store, "c/staged", None).await.unwrap(),
        expected,
        "{name}"
    );
    // Committed blocks are consumed.
    let again = store
        .commit_blocks("c/staged", vec!["block-a".into()], options())
        .await;
    assert!(matches!(again, Err(Error::Invalid(_))), "{name}: {again:?}");

    // Re-staging an id replaces it: leftovers of a longer staging, or parts of a
    // staging that failed, never become part of a commit.
    stage(store, "c/restaged", "x", &part_a).await.unwrap();
    stage(store, "c/restaged", "x", b"short").await.unwrap();
    let mut writer = store.stage_block("c/restaged", "x", Some(1)).await.unwrap();
    let mut stream = writer.body().unwrap();
    fill(&mut stream, &part_a).await;
    drop(stream);
    assert!(
        matches!(writer.finish().await, Err(Error::Invalid(_))),
        "{name}: wrong size staged"
    );
    store
        .commit_blocks("c/restaged", vec!["x".into()], options())
        .await
        .unwrap();
    assert_eq!(
        get(store, "c/restaged", None).await.unwrap(),
        b"short",
        "{name}"
    );

    // Listing with a cursor, then delete.
    for i in 0..5 {
        put(store, &format!("list/{i}"), b"x", options())
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list("list/", cursor, 2).await.unwrap();
        assert!(page.entries.len() <= 2, "{name}");
        keys.extend(page.entries.into_iter().map(|e| e.key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        (0..5).map(|i| format!("list/{i}")).collect::<Vec<_>>(),
        "{name}"
    );
    store.delete("list/0").await.unwrap();
    assert!(
        matches!(store.delete("list/0").await, Err(Error::NotFound)),
        "{name}"
    );
    assert!(
        matches!(store.head("../escape").await, Err(Error::Invalid(_))),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract("dir", Arc::new(DirStore::open(dir.path(), true).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_keeps_the_contract() {
    contract("memory", Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store_keeps_the_contract() {
    let azurite = Azurite::start();
    let account =
        blobcache_azure::Account::from_connection_string(&azurite.connection_string()).unwrap();
    let config = AzureConfig {
        account,
        container: "contract".into(),
        prefix: "p/".into(),
        create_container: true,
        // Small blocks, so the 200 kB blobs span several Put Blocks.
        block_size: 64 << 10,
        parallel_blocks: 2,
        timeout: Duration::from_secs(30),
        retry: Default::default(),
    };
    contract(
        "azure",
        Arc::new(AzureStore::connect(config).await.unwrap()),
    )
    .await;
}
