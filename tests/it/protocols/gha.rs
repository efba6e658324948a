//! The GitHub Actions cache service v2: GitHub's own `@actions/cache` saving
//! and restoring through blobcache (block uploads over 128 MiB, restore by
//! prefix, a second save refused, a wrong token), BuildKit's `type=gha` flow
//! replayed with scoped JWTs blobcache issues, twirp answers and bad input, and
//! two instances over one Azurite taking turns.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::azblob::{issue, node, node_output};
use crate::support::{noise, sha256_hex, Azurite, Body, Response, Server};
use crate::targets::{deploy, Target, CONTAINER};

const SERVICE: &str = "/twirp/github.actions.results.api.v1.CacheService";
const SECRET: &str = "a server secret of more than thirty-two characters";
const TOKENS: &str = "ci rw * ci-secret; team rw team-a team-secret; reader read * reader-secret";

fn twirp(server: &Server, method: &str, token: &str, body: &Value) -> (u16, Value) {
    let authorization = format!("Bearer {token}");
    let response = server.request(
        "POST",
        &format!("{SERVICE}/{method}"),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        Body::Bytes(body.to_string().as_bytes()),
    );
    (response.status, json_of(&response))
}

fn json_of(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", response.text()))
}

/// Runs `tests/sdk/actions-cache.mjs` in `dir` against `server` with `token`.
fn actions_cache(server: &Server, token: &str, dir: &Path, args: &[&str]) -> Value {
    let url = format!("http://{}/", server.addr);
    let temp = dir.join("runner-temp");
    std::fs::create_dir_all(&temp).unwrap();
    let env = [
        ("ACTIONS_CACHE_SERVICE_V2", "true"),
        ("ACTIONS_RESULTS_URL", url.as_str()),
        ("ACTIONS_RUNTIME_TOKEN", token),
        ("RUNNER_TEMP", temp.to_str().unwrap()),
        ("GITHUB_SERVER_URL", "https://github.com"),
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = node_output("actions-cache.mjs", &args, &env, dir);
    let last = output.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("actions-cache printed no JSON:\n{output}"))
}

on_targets!(actions_cache_saves_and_restores: dir, azure);
fn actions_cache_saves_and_restores(target: Target) {
    let settings = [("BLOBCACHE_TOKENS", TOKENS), ("BLOBCACHE_SECRET", SECRET)];
    let Some(server) = deploy(target, &settings) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // Random bytes do not compress: the archive is over 128 MiB, so the SDK
    // uploads 64 MiB blocks and a block list instead of one Put Blob.
    let payload = noise(31, 130 << 20);
    std::fs::write(work.path().join("payload.bin"), &payload).unwrap();
    let saved = actions_cache(
        &server,
        "ci-secret",
        work.path(),
        &["save", "deps-linux-1a2b", "payload.bin"],
    );
    assert!(
        saved["cacheId"].as_i64().is_some_and(|id| id > 0),
        "{saved}"
    );
    // The same key again: refused, since an entry exists.
    let again = actions_cache(
        &server,
        "ci-secret",
        work.path(),
        &["save", "deps-linux-1a2b", "payload.bin"],
    );
    assert_eq!(again["cacheId"], -1, "{again}");

    std::fs::remove_file(work.path().join("payload.bin")).unwrap();
    // No exact match: the restore key finds the entry by prefix.
    let restored = actions_cache(
        &server,
        "ci-secret",
        work.path(),
        &["restore", "deps-linux-ffff", "deps-linux-", "payload.bin"],
    );
    assert_eq!(restored["matched"], "deps-linux-1a2b", "{restored}");
    let back = std::fs::read(work.path().join("payload.bin")).unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&payload));

    // A wrong token restores nothing and saves nothing.
    std::fs::remove_file(work.path().join("payload.bin")).unwrap();
    let wrong = actions_cache(
        &server,
        "not-a-token",
        work.path(),
        &["restore", "deps-linux-1a2b", "-", "payload.bin"],
    );
    assert_eq!(wrong["matched"], Value::Null, "{wrong}");
    assert!(!work.path().join("payload.bin").exists());
    std::fs::write(work.path().join("small.txt"), "small").unwrap();
    let refused = actions_cache(
        &server,
        "not-a-token",
        work.path(),
        &["save", "small-1", "small.txt"],
    );
    assert_eq!(refused["cacheId"], -1, "{refused}");
    let (_, lookup) = twirp(
        &server,
        "GetCacheEntryDownloadURL",
        "ci-secret",
        &json!({"key": "small-1", "version": "x"}),
    );
    assert_eq!(lookup["ok"], false);
}

/// The layers a replay exports, written to `dir`.
fn blobs(dir: &Path, sizes: &[usize], seed: u64) -> Vec<Value> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let bytes = noise(seed + i as u64, *size);
            let file = dir.join(format!("blob-{seed}-{i}"));
            std::fs::write(&file, &bytes).unwrap();
            json!({"file": file, "digest": format!("sha256:{}", sha256_hex(&bytes))})
        })
        .collect()
}

fn buildkit(server: &Server, token: &str, mode: &str, blobs: &[Value]) -> Value {
    node(
        "buildkit-gha.mjs",
        &json!({"mode": mode, "url": format!("http://{}/", server.addr), "token": token,
                "indexKey": "index-buildkit-1-0a1b2c3d", "blobs": blobs}),
        &[],
    )
}

on_targets!(buildkit_gha_replay: dir, azure, wasmtime_serve, spin);
fn buildkit_gha_replay(target: Target) {
    let settings = [("BLOBCACHE_TOKENS", TOKENS), ("BLOBCACHE_SECRET", SECRET)];
    let Some(server) = deploy(target, &settings) else {
        return;
    };
    let jwt = |token: &str, scopes: &[&str]| {
        let mut args = vec!["gha-token", token];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        issue(&args, &settings)
    };
    let main = jwt("ci", &["refs/heads/main=rw"]);
    let dir = tempfile::tempdir().unwrap();
    // Under 1 MiB: one Put Blob; over: sequential 1 MiB Put Blocks.
    let layers = blobs(dir.path(), &[600_000, 3_500_000], 3);

    let exported = buildkit(&server, &main, "export", &layers);
    assert_eq!(
        exported["index"]["key"], "index-buildkit-1-0a1b2c3d#1",
        "{exported}"
    );
    let imported = buildkit(&server, &main, "import", &layers);
    assert_eq!(
        imported["index"], "index-buildkit-1-0a1b2c3d#1",
        "{imported}"
    );
    for (got, want) in imported["blobs"].as_array().unwrap().iter().zip(&layers) {
        assert_eq!(
            format!("sha256:{}", got["sha256"].as_str().unwrap()),
            want["digest"].as_str().unwrap()
        );
        assert!(
            got["reopened"]
                .as_str()
                .is_some_and(|r| r.starts_with("bytes 307200-")),
            "{got}"
        );
    }
    // A second export finds the blobs and writes the index one past the newest.
    let again = buildkit(&server, &main, "export", &layers);
    assert!(
        again["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["skipped"] == true),
        "{again}"
    );
    assert_eq!(
        again["index"]["key"], "index-buildkit-1-0a1b2c3d#2",
        "{again}"
    );

    // A branch reads its base branch's cache and writes only its own scope.
    let feature = jwt("ci", &["refs/heads/main=r", "refs/heads/feature=rw"]);
    let from_main = buildkit(&server, &feature, "import", &layers);
    assert_eq!(
        from_main["index"], "index-buildkit-1-0a1b2c3d#2",
        "{from_main}"
    );
    let written = buildkit(&server, &feature, "export", &layers);
    assert_eq!(
        written["index"]["key"], "index-buildkit-1-0a1b2c3d#3",
        "{written}"
    );
    let main_after = buildkit(&server, &main, "import", &layers);
    assert_eq!(
        main_after["index"], "index-buildkit-1-0a1b2c3d#2",
        "main never sees the branch's entries"
    );

    // Namespaced tokens do not see another namespace's entries.
    let team = jwt("team", &["refs/heads/main=rw"]);
    assert_eq!(
        buildkit(&server, &team, "import", &layers)["index"],
        Value::Null
    );
    // A read-only token cannot reserve; a JWT of another server, or tampered, is refused.
    let reader = jwt("reader", &["refs/heads/main=rw"]);
    let (status, body) = twirp(
        &server,
        "CreateCacheEntry",
        &reader,
        &json!({"key": "k", "version": "v"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    let foreign = issue(
        &["gha-token", "ci"],
        &[
            ("BLOBCACHE_TOKENS", TOKENS),
            (
                "BLOBCACHE_SECRET",
                "another secret of at least thirty-two bytes",
            ),
        ],
    );
    let (status, body) = twirp(
        &server,
        "GetCacheEntryDownloadURL",
        &foreign,
        &json!({"key": "k", "version": "v"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    let mut parts: Vec<&str> = main.split('.').collect();
    let forged_claims = base64_url(
        &json!({"sub": "ci", "ac": "[{\"Scope\":\"refs/heads/release\",\"Permission\":3}]",
                                           "nbf": 0, "exp": 4_000_000_000u64})
        .to_string(),
    );
    parts[1] = &forged_claims;
    let (status, _) = twirp(
        &server,
        "GetCacheEntryDownloadURL",
        &parts.join("."),
        &json!({"key": "k", "version": "v"}),
    );
    assert_eq!(status, 401);
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

on_targets!(twirp_answers_and_bad_input: dir, wasmtime_serve);
fn twirp_answers_and_bad_input(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let token = "any-token-on-an-open-server";
    let entry = json!({"key": "deps-1", "version": "v1"});
    let (status, miss) = twirp(&server, "GetCacheEntryDownloadURL", token, &entry);
    assert_eq!(
        (status, &miss["ok"]),
        (200, &json!(false)),
        "a miss is 200 ok:false"
    );

    let (status, created) = twirp(&server, "CreateCacheEntry", token, &entry);
    assert_eq!(status, 200, "{created}");
    let upload = created["signed_upload_url"].as_str().unwrap().to_string();
    let (status, body) = twirp(&server, "CreateCacheEntry", token, &entry);
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_exists")),
        "{body}"
    );
    // Nothing uploaded yet: finalize refuses, and the entry stays invisible.
    let finalize = json!({"key": "deps-1", "version": "v1", "size_bytes": "5"});
    let (status, body) = twirp(&server, "FinalizeCacheEntryUpload", token, &finalize);
    assert_eq!(
        (status, body["code"].as_str()),
        (412, Some("failed_precondition")),
        "{body}"
    );
    // The URL points at blobcache's endpoint, or at Azure itself (a SAS) with the Azure store.
    let put = at_url(&upload, "PUT", &[("x-ms-blob-type", "BlockBlob")], b"hello");
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(put.header("x-ms-request-id").is_some());
    assert_eq!(
        twirp(&server, "GetCacheEntryDownloadURL", token, &entry).1["ok"],
        false,
        "invisible until finalized"
    );
    // The signed URL is for that blob, and for writing only.
    let elsewhere = upload.replace("/data/", "/data/x");
    assert_eq!(
        at_url(&elsewhere, "PUT", &[("x-ms-blob-type", "BlockBlob")], b"x").status,
        403
    );
    assert_eq!(at_url(&upload, "GET", &[], b"").status, 403);
    // The committed size must be the one announced.
    let wrong_size = json!({"key": "deps-1", "version": "v1", "size_bytes": 6});
    let (status, body) = twirp(&server, "FinalizeCacheEntryUpload", token, &wrong_size);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    let (status, done) = twirp(&server, "FinalizeCacheEntryUpload", token, &finalize);
    assert_eq!(status, 200, "{done}");
    assert!(
        done["entry_id"]
            .as_str()
            .is_some_and(|id| id.parse::<u64>().is_ok()),
        "{done}"
    );
    let (_, found) = twirp(
        &server,
        "GetCacheEntryDownloadURL",
        token,
        &json!({"key": "deps-1", "version": "v1"}),
    );
    assert_eq!(found["matched_key"], "deps-1");
    let download = found["signed_download_url"].as_str().unwrap();
    assert_eq!(at_url(download, "GET", &[], b"").body, b"hello");
    // The version is part of the identity.
    let (_, other_version) = twirp(
        &server,
        "GetCacheEntryDownloadURL",
        token,
        &json!({"key": "deps-1", "version": "v2"}),
    );
    assert_eq!(other_version["ok"], false);

    // application/protobuf, as sccache sends it: key "p1", version "v1".
    let request = [0x12, 2, b'p', b'1', 0x1a, 2, b'v', b'1'];
    let response = server.request(
        "POST",
        &format!("{SERVICE}/CreateCacheEntry"),
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/protobuf"),
        ],
        Body::Bytes(&request),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/protobuf")
    );
    assert_eq!(&response.body[..2], &[0x08, 1], "ok = true");

    // Bad input: each a JSON error, nothing reserved.
    let send = |method: &str, headers: &[(&str, &str)], body: &[u8]| {
        let response = server.request(
            "POST",
            &format!("{SERVICE}/{method}"),
            headers,
            Body::Bytes(body),
        );
        (
            response.status,
            json_of(&response)["code"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    let json_headers = [
        ("authorization", "Bearer t"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        send("CreateCacheEntry", &json_headers, b"{\"key\":"),
        (400, "malformed".into())
    );
    assert_eq!(
        send("CreateCacheEntry", &json_headers, b"[1]"),
        (400, "malformed".into())
    );
    assert_eq!(
        send(
            "CreateCacheEntry",
            &json_headers,
            br#"{"key":"a,b","version":"v"}"#
        ),
        (400, "invalid_argument".into())
    );
    assert_eq!(
        send("CreateCacheEntry", &json_headers, br#"{"key":"a"}"#),
        (400, "invalid_argument".into())
    );
    assert_eq!(
        send(
            "CreateCacheEntry",
            &[("content-type", "application/json")],
            br#"{"key":"a","version":"v"}"#
        ),
        (401, "unauthenticated".into())
    );
    assert_eq!(
        send("DeleteCacheEntry", &json_headers, b"{}"),
        (404, "bad_route".into())
    );
    let protobuf = [
        ("authorization", "Bearer t"),
        ("content-type", "application/protobuf"),
    ];
    assert_eq!(
        send("CreateCacheEntry", &protobuf, &[0x12, 9, b'x']),
        (400, "malformed".into())
    );
    // A document over the limit is refused before it is read.
    let mut connection = crate::support::Connection::open(&server.addr);
    connection.write_raw(
        format!(
            "POST {SERVICE}/CreateCacheEntry HTTP/1.1\r\nhost: localhost\r\n\
             authorization: Bearer t\r\ncontent-type: application/json\r\n\
             expect: 100-continue\r\ncontent-length: 100000\r\n\r\n"
        )
        .as_bytes(),
    );
    let huge = connection.receive(false).collect();
    assert_eq!(
        (huge.status, json_of(&huge)["code"].as_str()),
        (400, Some("malformed"))
    );
    assert_eq!(
        twirp(
            &server,
            "GetCacheEntryDownloadURL",
            token,
            &json!({"key": "a", "version": "v"})
        )
        .1["ok"],
        false
    );
    assert_eq!(server.get("/healthz").status, 200);
}

/// Two instances over one Azurite, taking turns: blocks staged on one and
/// committed on the other; a cache entry reserved on one, uploaded and
/// finalized through the other. The Azure store runs on a container SAS, so it
/// cannot sign URLs itself and blobcache's own signed URLs carry the bytes.
#[test]
fn two_instances_over_one_azurite() {
    if !crate::targets::available(Target::Azure) {
        return;
    }
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    let sas = azurite.container_sas(CONTAINER, "racwdl");
    let endpoint = azurite.endpoint();
    let env = [
        ("AZURE_STORAGE_ACCOUNT", "devstoreaccount1"),
        ("AZURE_STORAGE_SAS_TOKEN", sas.as_str()),
        ("AZURE_STORAGE_BLOB_ENDPOINT", endpoint.as_str()),
        ("BLOBCACHE_AZURE_CONTAINER", CONTAINER),
        ("BLOBCACHE_TOKENS", TOKENS),
        ("BLOBCACHE_SECRET", SECRET),
    ];
    let first = Server::start_with_env(&["--store", "azure"], &env);
    let second = Server::start_with_env(&["--store", "azure"], &env);
    let key = issue(&["azure-key", "ci"], &env);

    // The Azure endpoint: Put Block on each, Put Block List on the first.
    let blob = format!("/{CONTAINER}/app/blobs/alternating");
    let block = |i: u8| base64_std(&[i; 8]);
    let parts = [noise(1, 300_000), noise(2, 200_000), noise(3, 1000)];
    for (i, part) in parts.iter().enumerate() {
        let server = if i % 2 == 0 { &first } else { &second };
        let client = crate::support::azblob::SignedClient::new(&server.addr, "ci", &key);
        let staged = client.send(
            "PUT",
            &format!("{blob}?comp=block&blockid={}", percent(&block(i as u8))),
            &[],
            part,
        );
        assert_eq!(staged.status, 201, "{}", staged.text());
    }
    let list: String = (0..3u8)
        .map(|i| format!("<Latest>{}</Latest>", block(i)))
        .collect();
    let commit = crate::support::azblob::SignedClient::new(&first.addr, "ci", &key).send(
        "PUT",
        &format!("{blob}?comp=blocklist"),
        &[],
        format!("<BlockList>{list}</BlockList>").as_bytes(),
    );
    assert_eq!(commit.status, 201, "{}", commit.text());
    let read = crate::support::azblob::SignedClient::new(&second.addr, "ci", &key).send(
        "GET",
        &blob,
        &[],
        b"",
    );
    assert_eq!(read.body, parts.concat());

    // The cache service: reserve on the first, upload and finalize on the second.
    let entry = json!({"key": "deps-2", "version": "v"});
    let (status, created) = twirp(&first, "CreateCacheEntry", "ci-secret", &entry);
    assert_eq!(status, 200, "{created}");
    let url = created["signed_upload_url"].as_str().unwrap();
    assert!(url.contains(&first.addr), "our own signed URL: {url}");
    let path = url.split_once(&first.addr).unwrap().1.to_string();
    let put = second.request(
        "PUT",
        &path,
        &[("x-ms-blob-type", "BlockBlob")],
        Body::Bytes(b"entry"),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let finalize = json!({"key": "deps-2", "version": "v", "size_bytes": 5});
    assert_eq!(
        twirp(&second, "FinalizeCacheEntryUpload", "ci-secret", &finalize).0,
        200
    );
    let (_, found) = twirp(&first, "GetCacheEntryDownloadURL", "ci-secret", &entry);
    let download = found["signed_download_url"].as_str().unwrap();
    let path = download.split_once(&first.addr).unwrap().1;
    assert_eq!(second.get(path).body, b"entry");
}

/// Sends a request to an absolute `http://host:port/path?query` URL.
fn at_url(url: &str, method: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut connection = crate::support::Connection::open(host);
    let body = match body {
        [] => Body::Empty,
        bytes => Body::Bytes(bytes),
    };
    connection.send(method, path, headers, body);
    connection.receive(method == "HEAD").collect()
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn percent(text: &str) -> String {
    text.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// A server with tokens and no secret cannot sign upload URLs: the reservation
/// fails with it, so the key is free once the secret is configured.
#[test]
fn a_server_that_cannot_sign_reserves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", dir.path().display());
    let entry = json!({"key": "deps-3", "version": "v"});
    let unsigned = Server::start_with_env(&["--store", &store], &[("BLOBCACHE_TOKENS", TOKENS)]);
    let (status, body) = twirp(&unsigned, "CreateCacheEntry", "ci-secret", &entry);
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("internal")),
        "{body}"
    );
    drop(unsigned);
    let signing = Server::start_with_env(
        &["--store", &store],
        &[("BLOBCACHE_TOKENS", TOKENS), ("BLOBCACHE_SECRET", SECRET)],
    );
    let (status, body) = twirp(&signing, "CreateCacheEntry", "ci-secret", &entry);
    assert_eq!(status, 200, "{body}");
}
