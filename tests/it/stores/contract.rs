//! One contract, every backend: each `blobcache:store` operation is a function
//! here, and [`contract!`] runs every one of them against every store as its own
//! test, so a failure names both (`dir::create_only`, `azure::list_blocks`, ...).
//! Stores: the directory store, the memory store and the Azure store (on
//! Azurite) through the host library, and the Azure store component (`adapter/`,
//! on Azurite) through wasmtime with outgoing wasi:http.

use crate::support::store_component;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{sha256_hex, Azurite};
use blobcache::store::azure::{AzureConfig, AzureStore};
use blobcache::store::dir::DirStore;
use blobcache::store::memory::MemoryStore;
use blobcache::store::{Backend, BlobInfo, ByteRange, Error, WriteMode, WriteOptions};
use bytes::Bytes;
use wasmtime_wasi::p2::{DynOutputStream, Pollable, StreamError};

/// A store under test and whatever must live as long as it (a directory, Azurite).
struct Target {
    store: Arc<dyn Backend>,
    _keep: Box<dyn Any + Send>,
}

async fn dir_store() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirStore::open(dir.path(), true).unwrap());
    Target {
        store,
        _keep: Box::new(dir),
    }
}

async fn memory_store() -> Target {
    Target {
        store: Arc::new(MemoryStore::new()),
        _keep: Box::new(()),
    }
}

async fn azure_store() -> Target {
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
    Target {
        store: Arc::new(AzureStore::connect(config).await.unwrap()),
        _keep: Box::new(azurite),
    }
}

async fn component_store() -> Target {
    let azurite = Azurite::start();
    azurite.create_container("contract");
    let connection = azurite.connection_string();
    let store = store_component::ComponentStore::new(&[
        ("AZURE_STORAGE_CONNECTION_STRING", connection.as_str()),
        ("BLOBCACHE_AZURE_CONTAINER", "contract"),
        ("BLOBCACHE_AZURE_PREFIX", "p/"),
        // Small blocks, so the 200 kB blobs span several Put Blocks.
        ("BLOBCACHE_AZURE_BLOCK_SIZE", "65536"),
    ])
    .await;
    Target {
        store: Arc::new(store),
        _keep: Box::new(azurite),
    }
}

/// One test per (store, operation): `store::operation`.
macro_rules! contract {
    ($($op:ident),* $(,)?) => {
        contract!(@store dir, dir_store, $($op),*);
        contract!(@store memory, memory_store, $($op),*);
        contract!(@store azure, azure_store, $($op),*);
        contract!(@store component, component_store, $($op),*);
    };
    (@store $store:ident, $make:ident, $($op:ident),*) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $op() {
                    let target = super::$make().await;
                    super::$op(target.store.as_ref()).await;
                }
            )*
        }
    };
}

contract!(
    publish_and_read_ranges,
    dropped_writer_publishes_nothing,
    create_checks_size_and_digest,
    create_only,
    if_match,
    stage_and_commit_in_order,
    commit_blocks_checks_size,
    commit_blocks_digest,
    restaging_replaces_a_block,
    commit_blocks_staged_under_another_key,
    block_ids_as_azure_sdks_send_them,
    list_blocks,
    list_pages_with_a_cursor,
    list_entries_describe_blobs,
    delete,
    keys_outside_the_rules,
);

fn options() -> WriteOptions {
    WriteOptions {
        mode: WriteMode::Overwrite,
        content_type: None,
        metadata: Vec::new(),
        expected_size: None,
        expected_sha256: None,
        max_size: None,
        if_match: None,
        staged_under: None,
    }
}

fn content(size: u32) -> Vec<u8> {
    (0..size).map(|i| (i % 253) as u8).collect()
}

/// Writes `content` into a stream, honouring its permits. A stream that fails
/// (a size limit) stops taking bytes; `finish` then reports why.
async fn fill(stream: &mut DynOutputStream, content: &[u8]) {
    let mut rest = Bytes::copy_from_slice(content);
    while !rest.is_empty() {
        match stream.check_write() {
            Ok(0) => stream.ready().await,
            Ok(permit) => {
                let chunk = rest.split_to(permit.min(rest.len()).min(10_000));
                if stream.write(chunk).is_err() {
                    return;
                }
            }
            Err(_) => return,
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

async fn absent(store: &dyn Backend, key: &str) -> bool {
    matches!(store.head(key).await, Err(Error::NotFound))
}

fn range(offset: u64, length: Option<u64>) -> Option<ByteRange> {
    Some(ByteRange { offset, length })
}

async fn publish_and_read_ranges(store: &dyn Backend) {
    let content = content(200_000);
    put(store, "c/blob", &content, options()).await.unwrap();
    assert_eq!(get(store, "c/blob", None).await.unwrap(), content);
    assert_eq!(
        get(store, "c/blob", range(10, Some(5))).await.unwrap(),
        &content[10..15]
    );
    assert_eq!(
        get(store, "c/blob", range(199_990, None)).await.unwrap(),
        &content[199_990..]
    );
    assert_eq!(
        get(store, "c/blob", range(200_000, None)).await.unwrap(),
        b""
    );
    assert_eq!(get(store, "c/blob", range(5, Some(0))).await.unwrap(), b"");
    assert!(matches!(
        store.open("c/blob", range(200_001, None)).await,
        Err(Error::Invalid(_))
    ));
    let info = store.head("c/blob").await.unwrap();
    assert_eq!(info.size, 200_000);
    assert_eq!(info.sha256, Some(sha256_hex(&content)));
}

async fn dropped_writer_publishes_nothing(store: &dyn Backend) {
    let mut writer = store.create("c/dropped", options()).await.unwrap();
    let mut stream = writer.body().unwrap();
    fill(&mut stream, b"never published").await;
    drop(stream);
    drop(writer);
    assert!(absent(store, "c/dropped").await);
}

async fn create_checks_size_and_digest(store: &dyn Backend) {
    let mut sized = options();
    sized.expected_size = Some(3);
    let refused = put(store, "c/sized", b"four", sized).await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    assert!(absent(store, "c/sized").await);
    let mut digest = options();
    digest.expected_sha256 = Some(sha256_hex(b"right"));
    let refused = put(store, "c/digest", b"wrong", digest.clone()).await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    assert!(absent(store, "c/digest").await);
    put(store, "c/digest", b"right", digest).await.unwrap();
    let mut limited = options();
    limited.max_size = Some(3);
    let refused = put(store, "c/limited", b"four", limited).await;
    assert!(matches!(refused, Err(Error::TooLarge(_))), "{refused:?}");
}

async fn create_only(store: &dyn Backend) {
    put(store, "c/blob", b"first", options()).await.unwrap();
    let mut create_only = options();
    create_only.mode = WriteMode::CreateOnly;
    let refused = put(store, "c/blob", b"x", create_only.clone()).await;
    assert!(matches!(refused, Err(Error::AlreadyExists)), "{refused:?}");
    assert_eq!(get(store, "c/blob", None).await.unwrap(), b"first");
    put(store, "c/new", b"x", create_only).await.unwrap();
}

async fn if_match(store: &dyn Backend) {
    put(store, "c/blob", b"first", options()).await.unwrap();
    let etag = store.head("c/blob").await.unwrap().etag;
    let mut stale = options();
    stale.if_match = Some("\"stale\"".into());
    let refused = put(store, "c/blob", b"x", stale).await;
    assert!(
        matches!(refused, Err(Error::PreconditionFailed)),
        "{refused:?}"
    );
    let mut current = options();
    current.if_match = Some(etag);
    put(store, "c/blob", b"new", current).await.unwrap();
    assert_eq!(get(store, "c/blob", None).await.unwrap(), b"new");
}

/// Staged blocks stay invisible until committed; the order of the commit is the
/// order of the content; committed blocks are consumed.
async fn stage_and_commit_in_order(store: &dyn Backend) {
    let part_a: Vec<u8> = (0..150_000u32).map(|i| (i % 7) as u8).collect();
    stage(store, "c/staged", "block-a", &part_a).await.unwrap();
    stage(store, "c/staged", "block-b", b"tail").await.unwrap();
    assert!(absent(store, "c/staged").await, "staged is visible");
    let missing = store
        .commit_blocks("c/staged", vec!["block-a".into(), "nope".into()], options())
        .await;
    assert!(matches!(missing, Err(Error::Invalid(_))), "{missing:?}");
    let mut sized = options();
    sized.expected_size = Some(part_a.len() as u64 + 4);
    sized.content_type = Some("application/x-test".into());
    let info = store
        .commit_blocks("c/staged", vec!["block-b".into(), "block-a".into()], sized)
        .await
        .unwrap();
    assert_eq!(info.size, part_a.len() as u64 + 4);
    let mut expected = b"tail".to_vec();
    expected.extend_from_slice(&part_a);
    assert_eq!(get(store, "c/staged", None).await.unwrap(), expected);
    let head = store.head("c/staged").await.unwrap();
    assert_eq!(head.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(head.etag, info.etag);
    let again = store
        .commit_blocks("c/staged", vec!["block-a".into()], options())
        .await;
    assert!(matches!(again, Err(Error::Invalid(_))), "{again:?}");
}

/// A size that does not match (or is over the limit) publishes nothing and
/// leaves the blocks staged.
async fn commit_blocks_checks_size(store: &dyn Backend) {
    stage(store, "c/sized", "a", b"12345").await.unwrap();
    let mut wrong_size = options();
    wrong_size.expected_size = Some(1);
    let refused = store
        .commit_blocks("c/sized", vec!["a".into()], wrong_size)
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    let mut limited = options();
    limited.max_size = Some(4);
    let refused = store
        .commit_blocks("c/sized", vec!["a".into()], limited)
        .await;
    assert!(matches!(refused, Err(Error::TooLarge(_))), "{refused:?}");
    assert!(absent(store, "c/sized").await);
    store
        .commit_blocks("c/sized", vec!["a".into()], options())
        .await
        .unwrap();
    assert_eq!(get(store, "c/sized", None).await.unwrap(), b"12345");
}

/// The digest of blocks staged by separate requests is checked at commit: a
/// mismatch publishes nothing; the right digest publishes and is reported.
async fn commit_blocks_digest(store: &dyn Backend) {
    let part_a = content(100_000);
    let part_b = content(70_000);
    let mut whole = part_a.clone();
    whole.extend_from_slice(&part_b);
    let ids = vec!["a".to_string(), "b".to_string()];
    stage(store, "c/digest", "a", &part_a).await.unwrap();
    stage(store, "c/digest", "b", &part_b).await.unwrap();
    let mut wrong = options();
    wrong.expected_sha256 = Some(sha256_hex(b"something else"));
    let refused = store.commit_blocks("c/digest", ids.clone(), wrong).await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    assert!(absent(store, "c/digest").await, "a mismatch was published");
    let page = store.list("c/", None, 100).await.unwrap();
    assert!(page.entries.is_empty(), "{:?}", page.entries);
    // A refused commit may consume its blocks (Azure does): stage again.
    stage(store, "c/digest", "a", &part_a).await.unwrap();
    stage(store, "c/digest", "b", &part_b).await.unwrap();
    let mut right = options();
    right.expected_sha256 = Some(sha256_hex(&whole));
    right.expected_size = Some(whole.len() as u64);
    right.mode = WriteMode::CreateOnly;
    right.metadata = vec![("origin".into(), "contract".into())];
    let info = store.commit_blocks("c/digest", ids, right).await.unwrap();
    assert_eq!(info.sha256, Some(sha256_hex(&whole)));
    assert_eq!(get(store, "c/digest", None).await.unwrap(), whole);
    let head = store.head("c/digest").await.unwrap();
    assert_eq!(head.sha256, Some(sha256_hex(&whole)));
    assert_eq!(head.metadata, vec![("origin".into(), "contract".into())]);
    // Create-only and if-match hold for commits too, and their refusals leave
    // the blocks staged.
    stage(store, "c/digest", "a", b"x").await.unwrap();
    let mut create_only = options();
    create_only.mode = WriteMode::CreateOnly;
    let refused = store
        .commit_blocks("c/digest", vec!["a".into()], create_only)
        .await;
    assert!(matches!(refused, Err(Error::AlreadyExists)), "{refused:?}");
    let mut stale = options();
    stale.if_match = Some("\"stale\"".into());
    let refused = store
        .commit_blocks("c/digest", vec!["a".into()], stale)
        .await;
    assert!(
        matches!(refused, Err(Error::PreconditionFailed)),
        "{refused:?}"
    );
    assert_eq!(get(store, "c/digest", None).await.unwrap(), whole);
    let mut current = options();
    current.if_match = Some(head.etag);
    store
        .commit_blocks("c/digest", vec!["a".into()], current)
        .await
        .unwrap();
    assert_eq!(get(store, "c/digest", None).await.unwrap(), b"x");
}

/// Re-staging an id replaces it: leftovers of a longer staging, or parts of a
/// staging that failed, never become part of a commit.
async fn restaging_replaces_a_block(store: &dyn Backend) {
    let long = content(150_000);
    stage(store, "c/restaged", "x", &long).await.unwrap();
    stage(store, "c/restaged", "x", b"short").await.unwrap();
    let mut writer = store.stage_block("c/restaged", "x", Some(1)).await.unwrap();
    let mut stream = writer.body().unwrap();
    fill(&mut stream, &long).await;
    drop(stream);
    let refused = writer.finish().await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    store
        .commit_blocks("c/restaged", vec!["x".into()], options())
        .await
        .unwrap();
    assert_eq!(get(store, "c/restaged", None).await.unwrap(), b"short");
}

/// Blocks staged under an upload's own key publish at a key known only at the
/// end (an OCI upload, keyed by its digest), verified the same way; the
/// staging is consumed, and `create` refuses the option.
async fn commit_blocks_staged_under_another_key(store: &dyn Backend) {
    let first = content(150_000);
    let second = content(70_000);
    stage(store, "c/uploads/session-1", "0000", &first)
        .await
        .unwrap();
    stage(store, "c/uploads/session-1", "0001", &second)
        .await
        .unwrap();
    let whole = [first.clone(), second.clone()].concat();
    let ids = vec!["0000".to_string(), "0001".to_string()];
    let under = |sha256: String| WriteOptions {
        expected_sha256: Some(sha256),
        staged_under: Some("c/uploads/session-1".into()),
        ..options()
    };
    let wrong = store
        .commit_blocks(
            "c/blobs/wrong",
            ids.clone(),
            WriteOptions {
                expected_size: Some(1),
                ..under(sha256_hex(&whole))
            },
        )
        .await;
    assert!(matches!(wrong, Err(Error::Invalid(_))), "{wrong:?}");
    assert!(
        get(store, "c/blobs/wrong", None).await.is_err(),
        "nothing published"
    );
    let target = format!("c/blobs/{}", sha256_hex(&whole));
    let info = store
        .commit_blocks(&target, ids, under(sha256_hex(&whole)))
        .await
        .unwrap();
    assert_eq!(info.size, 220_000);
    assert!(get(store, &target, None).await.unwrap() == whole);
    assert!(store
        .list_blocks("c/uploads/session-1")
        .await
        .unwrap()
        .is_empty());
    assert!(
        get(store, "c/uploads/session-1", None).await.is_err(),
        "the session is no blob"
    );
    let refused = store
        .create(
            "c/x",
            WriteOptions {
                staged_under: Some("c/y".into()),
                ..options()
            },
        )
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))));
}

/// The Go SDK's ids: base64 of 64 bytes, 88 characters with `+/=`; the JS SDK's: 64.
fn go_sdk_id(n: u8) -> String {
    format!("{}{n:02}==", "Ab+/".repeat(21))
}

async fn block_ids_as_azure_sdks_send_them(store: &dyn Backend) {
    let (first, second) = (go_sdk_id(1), go_sdk_id(2));
    assert_eq!(first.len(), 88);
    assert!(first.contains('+') || first.contains('/'), "{first}");
    let js_sdk = "MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw";
    assert_eq!(js_sdk.len(), 64);
    stage(store, "c/sdk", &first, b"one ").await.unwrap();
    stage(store, "c/sdk", &second, b"two ").await.unwrap();
    stage(store, "c/sdk", js_sdk, b"three").await.unwrap();
    let ids = vec![first, second, js_sdk.to_string()];
    store.commit_blocks("c/sdk", ids, options()).await.unwrap();
    assert_eq!(get(store, "c/sdk", None).await.unwrap(), b"one two three");
    let too_long = "a".repeat(89);
    let refused = store.stage_block("c/sdk", &too_long, None).await;
    assert!(matches!(refused, Err(Error::Invalid(_))));
}

/// Staged, uncommitted blocks with the caller's ids and sizes, sorted by id.
async fn list_blocks(store: &dyn Backend) {
    assert!(store.list_blocks("c/none").await.unwrap().is_empty());
    let long = go_sdk_id(3);
    let big = content(150_000);
    stage(store, "c/listed", "b", b"12345").await.unwrap();
    stage(store, "c/listed", &long, &big).await.unwrap();
    stage(store, "c/listed", "a", b"123").await.unwrap();
    stage(store, "c/other", "z", b"1").await.unwrap();
    let listed = |blocks: Vec<blobcache::store::StagedBlock>| {
        blocks
            .into_iter()
            .map(|b| (b.id, b.size))
            .collect::<Vec<_>>()
    };
    let mut expected = vec![
        ("a".to_string(), 3),
        ("b".to_string(), 5),
        (long.clone(), 150_000),
    ];
    expected.sort();
    assert_eq!(
        listed(store.list_blocks("c/listed").await.unwrap()),
        expected
    );
    // Re-staging shows the newest staging.
    stage(store, "c/listed", "a", b"1234567").await.unwrap();
    expected.retain(|(id, _)| id != "a");
    expected.push(("a".into(), 7));
    expected.sort();
    assert_eq!(
        listed(store.list_blocks("c/listed").await.unwrap()),
        expected
    );
    store
        .commit_blocks("c/listed", vec!["a".into(), "b".into()], options())
        .await
        .unwrap();
    assert!(store.list_blocks("c/listed").await.unwrap().is_empty());
    assert_eq!(
        listed(store.list_blocks("c/other").await.unwrap()),
        vec![("z".to_string(), 1)]
    );
}

async fn list_pages_with_a_cursor(store: &dyn Backend) {
    for i in 0..5 {
        put(store, &format!("list/{i}"), b"x", options())
            .await
            .unwrap();
    }
    put(store, "other/0", b"x", options()).await.unwrap();
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list("list/", cursor, 2).await.unwrap();
        assert!(page.entries.len() <= 2);
        keys.extend(page.entries.into_iter().map(|e| e.key));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        (0..5).map(|i| format!("list/{i}")).collect::<Vec<_>>()
    );
}

/// Entries carry what `head` says: size, etag, last-modified (for newest-first
/// restore-key matching), content type and metadata (Azure List Blobs). Staged
/// blocks are not entries.
async fn list_entries_describe_blobs(store: &dyn Backend) {
    let mut described = options();
    described.content_type = Some("application/x-tar".into());
    described.metadata = vec![("tool".into(), "contract".into())];
    put(store, "gha/key-1", b"12345", described).await.unwrap();
    put(store, "gha/key-2", b"123", options()).await.unwrap();
    stage(store, "gha/key-3", "a", b"staged").await.unwrap();
    let page = store.list("gha/", None, 100).await.unwrap();
    let keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["gha/key-1", "gha/key-2"]);
    for entry in &page.entries {
        let head = store.head(&entry.key).await.unwrap();
        assert_eq!(entry.info.size, head.size, "{}", entry.key);
        assert_eq!(entry.info.etag, head.etag, "{}", entry.key);
        assert_eq!(entry.info.content_type, head.content_type, "{}", entry.key);
        assert_eq!(entry.info.metadata, head.metadata, "{}", entry.key);
        assert!(entry.info.last_modified > 1_700_000_000, "{}", entry.key);
        assert!(entry.info.last_modified.abs_diff(head.last_modified) <= 1);
    }
    let first = &page.entries[0].info;
    assert_eq!(first.size, 5);
    assert_eq!(first.content_type.as_deref(), Some("application/x-tar"));
    assert_eq!(first.metadata, vec![("tool".into(), "contract".into())]);
}

async fn delete(store: &dyn Backend) {
    put(store, "c/gone", b"x", options()).await.unwrap();
    store.delete("c/gone").await.unwrap();
    assert!(absent(store, "c/gone").await);
    let again = store.delete("c/gone").await;
    assert!(matches!(again, Err(Error::NotFound)), "{again:?}");
}

async fn keys_outside_the_rules(store: &dyn Backend) {
    for key in ["../escape", "a//b", "", "a b", "!staging/x"] {
        let refused = store.head(key).await;
        assert!(
            matches!(refused, Err(Error::Invalid(_))),
            "{key:?}: {refused:?}"
        );
        let refused = store.stage_block(key, "a", None).await;
        assert!(matches!(refused, Err(Error::Invalid(_))), "{key:?}");
    }
}
