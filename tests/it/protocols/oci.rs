//! The OCI registry endpoint on every target: uploads of each kind with their
//! digests verified, mounts, manifests and tags, the spec's errors for bad
//! input; BuildKit's `type=registry` cache export and import replayed; chunks
//! of one upload through two processes; and the real client (Debian's
//! skopeo) copying an image in and out, side by side with Debian's
//! `docker-registry`, the reference registry.

use serde_json::json;

use crate::support::{self, oci, sha256_hex, Azurite, Body, Response, Server};
use crate::targets::{deploy, Target, CONTAINER};

const TOKENS: &str = "team-a rw team-a secret-a; team-b rw team-b secret-b; reader read * secret-r";

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn code(response: &Response) -> String {
    let json: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", response.text()));
    json["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A session started by POST: its `Location` path.
fn start_upload(server: &Server, name: &str) -> String {
    let started = server.request(
        "POST",
        &format!("/v2/{name}/blobs/uploads/"),
        &[],
        Body::Empty,
    );
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(started.header("range"), Some("0-0"));
    started.header("location").unwrap().to_string()
}

fn patch(server: &Server, location: &str, start: usize, chunk: &[u8]) -> Response {
    let range = format!("{start}-{}", start + chunk.len() - 1);
    server.request(
        "PATCH",
        location,
        &[
            ("content-range", range.as_str()),
            ("content-type", "application/octet-stream"),
        ],
        Body::Bytes(chunk),
    )
}

fn image_manifest(config: (&str, usize, &str), layers: &[(&str, usize)]) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config.2, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(digest, size)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        })).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// What a registry's HEAD of a manifest says: digest, media type, length.
fn manifest_head(addr: &str, path: &str) -> (String, String, String) {
    let mut connection = support::Connection::open(addr);
    connection.send("HEAD", path, &[("accept", OCI_MANIFEST)], Body::Empty);
    let head = connection.receive(true).collect();
    assert_eq!(head.status, 200, "{addr}{path}");
    let header = |name| head.header(name).unwrap_or_default().to_string();
    (
        header("docker-content-digest"),
        header("content-type"),
        header("content-length"),
    )
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn put_manifest(server: &Server, path: &str, manifest: &[u8], media_type: &str) -> Response {
    server.request(
        "PUT",
        path,
        &[("content-type", media_type)],
        Body::Bytes(manifest),
    )
}

on_every_target!(uploads_manifests_and_bad_input);
fn uploads_manifests_and_bad_input(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let base = server.get("/v2/");
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // A chunked upload: three PATCHes, its status, then PUT with the digest.
    let layer = support::noise(7, 300_000);
    let digest = digest_of(&layer);
    let location = start_upload(&server, "team-a/app");
    let mut sent = 0;
    for chunk in layer.chunks(120_000) {
        let answer = patch(&server, &location, sent, chunk);
        sent += chunk.len();
        assert_eq!(answer.status, 202, "{}", answer.text());
        assert_eq!(answer.header("range").unwrap(), format!("0-{}", sent - 1));
    }
    let status = server.get(&location);
    assert_eq!(
        (status.status, status.header("range")),
        (204, Some("0-299999"))
    );
    // A chunk that does not continue the upload is refused.
    let gap = patch(&server, &location, 1, b"x");
    assert_eq!(
        (gap.status, code(&gap).as_str()),
        (416, "BLOB_UPLOAD_INVALID")
    );
    let put = server.request(
        "PUT",
        &format!("{location}?digest={}", digest.replace(':', "%3A")),
        &[],
        Body::Empty,
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.header("docker-content-digest"), Some(digest.as_str()));
    let blob_path = format!("/v2/team-a/app/blobs/{digest}");
    assert!(server.get(&blob_path).body == layer);
    assert_eq!(server.get(&location).status, 404, "the session is over");
    let ranged = server.request(
        "GET",
        &blob_path,
        &[("range", "bytes=299990-")],
        Body::Empty,
    );
    assert_eq!(
        (ranged.status, ranged.body.as_slice()),
        (206, &layer[299_990..])
    );

    // A chunked upload whose digest does not match publishes nothing.
    let location = start_upload(&server, "team-a/app");
    assert_eq!(patch(&server, &location, 0, b"some bytes").status, 202);
    let wrong = digest_of(b"other bytes");
    let refused = server.request(
        "PUT",
        &format!("{location}?digest={wrong}"),
        &[],
        Body::Empty,
    );
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (400, "DIGEST_INVALID")
    );
    assert_eq!(
        server.head(&format!("/v2/team-a/app/blobs/{wrong}")).status,
        404
    );

    // Monolithic: POST with the digest, and POST then PUT with the body.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = digest_of(&config);
    let posted = server.request(
        "POST",
        &format!("/v2/team-a/app/blobs/uploads/?digest={config_digest}"),
        &[],
        Body::Bytes(&config),
    );
    assert_eq!(posted.status, 201, "{}", posted.text());
    let small = b"a small layer".to_vec();
    let location = start_upload(&server, "team-a/other");
    let put = server.request(
        "PUT",
        &format!("{location}?digest={}", digest_of(&small)),
        &[],
        Body::Bytes(&small),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let lying = start_upload(&server, "team-a/other");
    let refused = server.request(
        "PUT",
        &format!("{lying}?digest={}", digest_of(b"x")),
        &[],
        Body::Bytes(&small),
    );
    assert_eq!(
        (refused.status, code(&refused).as_str()),
        (400, "DIGEST_INVALID")
    );

    // Mounts: within a namespace at once; across namespaces an upload instead.
    let mounted = server.request(
        "POST",
        &format!("/v2/team-a/copy/blobs/uploads/?mount={digest}&from=team-a/app"),
        &[],
        Body::Empty,
    );
    assert_eq!(mounted.status, 201, "{}", mounted.text());
    let elsewhere = server.request(
        "POST",
        &format!("/v2/team-b/app/blobs/uploads/?mount={digest}&from=team-a/app"),
        &[],
        Body::Empty,
    );
    assert_eq!(elsewhere.status, 202);
    assert_eq!(
        server
            .head(&format!("/v2/team-b/app/blobs/{digest}"))
            .status,
        404
    );

    // Manifests: by tag and by digest, with what HEAD must say.
    let manifest = image_manifest(
        (
            &config_digest,
            config.len(),
            "application/vnd.oci.image.config.v1+json",
        ),
        &[(&digest, layer.len())],
    );
    let manifest_digest = digest_of(&manifest);
    let put = put_manifest(
        &server,
        "/v2/team-a/app/manifests/v1",
        &manifest,
        OCI_MANIFEST,
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        put.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    let head = server.head("/v2/team-a/app/manifests/v1");
    assert_eq!(
        head.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    assert_eq!(head.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        head.header("content-length").unwrap(),
        manifest.len().to_string()
    );
    assert!(
        server
            .get(&format!("/v2/team-a/app/manifests/{manifest_digest}"))
            .body
            == manifest
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len()}],
    })
    .to_string()
    .into_bytes();
    let put = put_manifest(
        &server,
        "/v2/team-a/app/manifests/multi",
        &index,
        "application/vnd.oci.image.index.v1+json",
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let tags: serde_json::Value =
        serde_json::from_slice(&server.get("/v2/team-a/app/tags/list").body).unwrap();
    assert_eq!(tags, json!({"name": "team-a/app", "tags": ["multi", "v1"]}));

    // Bad manifests and references: the spec's codes, nothing stored.
    let unknown_layer = image_manifest(
        (
            &config_digest,
            config.len(),
            "application/vnd.oci.image.config.v1+json",
        ),
        &[(&wrong, 3)],
    );
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "/v2/team-a/app/manifests/bad",
            unknown_layer,
            OCI_MANIFEST,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        (
            "/v2/team-a/app/manifests/bad",
            b"{not json".to_vec(),
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        (
            "/v2/team-a/app/manifests/bad",
            manifest.clone(),
            "text/plain",
            400,
            "MANIFEST_INVALID",
        ),
        (
            &format!("/v2/team-a/app/manifests/{wrong}"),
            manifest.clone(),
            OCI_MANIFEST,
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/team-a/app/manifests/-bad",
            manifest.clone(),
            OCI_MANIFEST,
            400,
            "TAG_INVALID",
        ),
        (
            "/v2/Team/app/manifests/v1",
            manifest.clone(),
            OCI_MANIFEST,
            400,
            "NAME_INVALID",
        ),
    ]
    .into_iter()
    .map(|(p, m, t, s, c)| {
        (
            Box::leak(p.to_string().into_boxed_str()) as &str,
            m,
            t,
            s,
            c,
        )
    })
    .collect();
    for (path, body, media_type, status, expected) in &cases {
        let refused = put_manifest(&server, path, body, media_type);
        assert_eq!(
            (refused.status, code(&refused)),
            (*status, expected.to_string()),
            "{path}"
        );
    }
    assert_eq!(server.head("/v2/team-a/app/manifests/bad").status, 404);
    let oversize = crate::protocols::declared_without_body(
        &server,
        "PUT",
        "/v2/team-a/app/manifests/big",
        5 << 20,
    );
    assert_eq!(oversize.status, 413, "{}", oversize.text());
    for (path, expected) in [
        ("/v2/team-a/app/blobs/sha256:abc", "DIGEST_INVALID"),
        (
            &format!("/v2/team-a/app/blobs/{wrong}") as &str,
            "BLOB_UNKNOWN",
        ),
        ("/v2/team-a/app/manifests/nope", "MANIFEST_UNKNOWN"),
        (
            &format!("/v2/team-a/app/blobs/uploads/{}", "0".repeat(32)) as &str,
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ] {
        let refused = server.get(path);
        assert_eq!(code(&refused), expected, "{path}: {}", refused.text());
    }
    let unknown = patch(
        &server,
        &format!("/v2/team-a/app/blobs/uploads/{}", "1".repeat(32)),
        0,
        b"x",
    );
    assert_eq!(
        (unknown.status, code(&unknown).as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    // A cancelled session is gone.
    let location = start_upload(&server, "team-a/app");
    assert_eq!(
        server.request("DELETE", &location, &[], Body::Empty).status,
        204
    );
    assert_eq!(patch(&server, &location, 0, b"x").status, 404);
    assert_eq!(server.get("/healthz").status, 200);
}

// BuildKit's `type=registry` cache export, then its import, as it sends them
// (cache/remotecache/registry and containerd's pusher and fetcher).
on_every_target!(buildkit_registry_cache_replay);
fn buildkit_registry_cache_replay(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let repo = "/v2/team-a/cache";
    let layers: Vec<Vec<u8>> = (0..3)
        .map(|i| support::noise(40 + i, 50_000 + i as usize))
        .collect();
    let cache_config =
        json!({"layers": [{"blob": digest_of(&layers[0]), "parent": -1}], "records": []})
            .to_string()
            .into_bytes();
    // Export: HEAD each blob first; upload the missing ones monolithically.
    for blob in layers.iter().chain(std::iter::once(&cache_config)) {
        let digest = digest_of(blob);
        assert_eq!(server.head(&format!("{repo}/blobs/{digest}")).status, 404);
        let location = start_upload(&server, "team-a/cache");
        let put = server.request(
            "PUT",
            &format!("{location}?digest={digest}"),
            &[("content-type", "application/octet-stream")],
            Body::Bytes(blob),
        );
        assert_eq!(put.status, 201, "{}", put.text());
        assert_eq!(
            server.head(&format!("{repo}/blobs/{digest}")).status,
            200,
            "skipped next time"
        );
    }
    let layer_refs: Vec<(String, usize)> = layers.iter().map(|l| (digest_of(l), l.len())).collect();
    let layer_refs: Vec<(&str, usize)> = layer_refs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let config_digest = digest_of(&cache_config);
    let manifest = image_manifest(
        (
            &config_digest,
            cache_config.len(),
            "application/vnd.buildkit.cacheconfig.v0",
        ),
        &layer_refs,
    );
    assert_eq!(
        server.head(&format!("{repo}/manifests/buildcache")).status,
        404
    );
    let put = put_manifest(
        &server,
        &format!("{repo}/manifests/buildcache"),
        &manifest,
        OCI_MANIFEST,
    );
    assert_eq!(put.status, 201, "{}", put.text());

    // Import: HEAD the tag for its digest, GET by digest, the config, then
    // layers, ranged when resumed.
    let head = server.request(
        "HEAD",
        &format!("{repo}/manifests/buildcache"),
        &[("accept", OCI_MANIFEST)],
        Body::Empty,
    );
    let digest = head.header("docker-content-digest").unwrap().to_string();
    assert_eq!(digest, digest_of(&manifest));
    assert_eq!(
        head.header("content-length").unwrap(),
        manifest.len().to_string()
    );
    let fetched = server.get(&format!("{repo}/manifests/{digest}"));
    assert!(fetched.body == manifest);
    let parsed: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
    assert_eq!(
        parsed["config"]["mediaType"],
        "application/vnd.buildkit.cacheconfig.v0"
    );
    assert!(server.get(&format!("{repo}/blobs/{config_digest}")).body == cache_config);
    for layer in &layers {
        let resumed = server.request(
            "GET",
            &format!("{repo}/blobs/{}", digest_of(layer)),
            &[("range", "bytes=1000-")],
            Body::Empty,
        );
        assert_eq!(resumed.status, 206);
        assert!(resumed.body == layer[1000..]);
    }
}

/// A chunked upload's state is in the store: the native host and the store
/// component under `wasmtime serve`, over one Azurite, take alternate chunks
/// of one upload, and either finishes it.
#[test]
fn chunks_of_one_upload_through_two_processes() {
    if !crate::targets::available(Target::WasmtimeServe)
        || !crate::targets::available(Target::Azure)
    {
        return;
    }
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    let connection = azurite.connection_string();
    let env = [
        ("AZURE_STORAGE_CONNECTION_STRING", connection.as_str()),
        ("BLOBCACHE_AZURE_CONTAINER", CONTAINER),
    ];
    let native = Server::start_with_env(&["--store", "azure"], &env);
    let component = Server::wasmtime_serve(std::path::Path::new(env!("BLOBCACHE_WASM")), &env);
    let layer = support::noise(99, 500_000);
    let location = start_upload(&native, "team-a/app");
    let mut sent = 0;
    for (i, chunk) in layer.chunks(100_000).enumerate() {
        let server = if i % 2 == 0 { &component } else { &native };
        assert_eq!(
            patch(server, &location, sent, chunk).status,
            202,
            "chunk {i}"
        );
        sent += chunk.len();
    }
    let status = native.get(&location);
    assert_eq!(status.header("range"), Some("0-499999"));
    let digest = digest_of(&layer);
    let put = component.request(
        "PUT",
        &format!("{location}?digest={digest}"),
        &[],
        Body::Empty,
    );
    assert_eq!(put.status, 201, "{}", put.text());
    for server in [&native, &component] {
        assert!(server.get(&format!("/v2/team-a/app/blobs/{digest}")).body == layer);
    }
}

// skopeo copies an image (several layers, one over 100 MiB) into blobcache
// and back, and the same into the reference registry: the same digests and
// manifests on both, byte for byte.
on_targets!(skopeo_beside_the_reference_registry: dir, azure, wasmtime_serve);
fn skopeo_beside_the_reference_registry(target: Target) {
    let (Some(skopeo), Some(reference)) = (oci::skopeo(), oci::ReferenceRegistry::start()) else {
        return;
    };
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let layout = oci::Layout::new(&[1_000, 300_000, 101 << 20], "v1");
    let source = format!("oci:{}:v1", layout.path().display());
    let mut copies = Vec::new();
    for registry in [&server.addr, &reference.addr] {
        let image = format!("docker://{registry}/team-a/app:v1");
        oci::copy(&skopeo, &source, &image, None);
        let back = tempfile::tempdir().unwrap();
        oci::copy(
            &skopeo,
            &image,
            &format!("oci:{}:v1", back.path().display()),
            None,
        );
        let head = manifest_head(registry, "/v2/team-a/app/manifests/v1");
        copies.push((oci::layout_blobs(back.path()), head));
    }
    let expected = oci::layout_blobs(layout.path());
    assert_eq!(copies[0].0, expected, "blobcache: byte-identical digests");
    assert_eq!(copies[1].0, expected, "the reference registry: the same");
    assert_eq!(
        copies[0].1, copies[1].1,
        "the same manifest answer: digest, type, length"
    );
    assert_eq!(copies[0].1 .0, layout.manifest_digest);
}

// The real Docker and its embedded BuildKit (logged in with a token to
// blobcache): push, pull, and a build that
// imports its cache from the registry after a prune ("importing cache
// manifest", CACHED steps); the same sequence against the reference registry.
on_targets!(real_docker_beside_the_reference_registry: dir, azure);
fn real_docker_beside_the_reference_registry(target: Target) {
    let (Some(docker), Some(reference)) = (
        support::docker::Docker::start(),
        oci::ReferenceRegistry::start(),
    ) else {
        return;
    };
    let Some(server) = deploy(target, &[("BLOBCACHE_TOKENS", TOKENS)]) else {
        return;
    };
    support::docker::push_pull_and_import_cache(&docker, &server.addr, Some("secret-a"));
    support::docker::push_pull_and_import_cache(&docker, &reference.addr, None);
}

// Tokens: a Basic challenge only (a Bearer one would send clients looking for
// a token service), the token as password, repositories under a team's
// namespace for that team alone; skopeo with credentials.
on_targets!(tokens_and_the_basic_challenge: dir, wasmtime_serve);
fn tokens_and_the_basic_challenge(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_TOKENS", TOKENS)]) else {
        return;
    };
    let challenge = server.get("/v2/");
    assert_eq!(
        (challenge.status, code(&challenge).as_str()),
        (401, "UNAUTHORIZED")
    );
    let challenges: Vec<&str> = challenge
        .headers
        .iter()
        .filter(|(name, _)| name == "www-authenticate")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(challenges, ["Basic realm=\"blobcache\""]);
    let basic = |user: &str, token: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
        )
    };
    let team_a = basic("ci", "secret-a");
    let team_b = basic("ci", "secret-b");
    for token in [&team_a, &team_b] {
        assert_eq!(
            server
                .request("GET", "/v2/", &[("authorization", token)], Body::Empty)
                .status,
            200
        );
    }
    let start = |token: &str, name: &str| {
        server.request(
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            &[("authorization", token)],
            Body::Empty,
        )
    };
    assert_eq!(start(&team_a, "team-a/app").status, 202);
    let denied = start(&team_b, "team-a/app");
    assert_eq!((denied.status, code(&denied).as_str()), (403, "DENIED"));
    assert_eq!(
        start(&basic("ci", "secret-r"), "team-a/app").status,
        403,
        "read-only"
    );

    let (Some(skopeo), layout) = (oci::skopeo(), oci::Layout::new(&[2_000, 40_000], "v1")) else {
        return;
    };
    let source = format!("oci:{}:v1", layout.path().display());
    let image = format!("docker://{}/team-a/app:v1", server.addr);
    oci::copy(&skopeo, &source, &image, Some("ci:secret-a"));
    let back = tempfile::tempdir().unwrap();
    oci::copy(
        &skopeo,
        &image,
        &format!("oci:{}:v1", back.path().display()),
        Some("ci:secret-a"),
    );
    assert_eq!(
        oci::layout_blobs(back.path()),
        oci::layout_blobs(layout.path())
    );
    let read = server.request(
        "GET",
        "/v2/team-a/app/manifests/v1",
        &[("authorization", &team_b)],
        Body::Empty,
    );
    assert_eq!(read.status, 403, "team b cannot read team a's images");
}

// A cache BuildKit's `type=azblob` wrote to Azure (`prefix=team-a/app`, the
// default name `buildkit`), laid out in Azurite by plain Put Blobs as BuildKit
// writes it, read through the registry endpoint as BuildKit's `type=registry`
// importer reads it: builders without the account key use the same cache.
on_targets!(buildkit_azblob_cache_through_the_registry: azure, wasmtime_serve);
fn buildkit_azblob_cache_through_the_registry(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let azurite = server.azurite().unwrap();
    let layers: Vec<Vec<u8>> = (0..3)
        .map(|i| support::noise(70 + i, 40_000 + i as usize))
        .collect();
    let mut config_layers = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let digest = digest_of(layer);
        azurite.put_blob(CONTAINER, &format!("team-a/app/blobs/{digest}"), layer);
        let mut entry = json!({
            "blob": digest,
            "annotations": {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "diffID": format!("sha256:{}", sha256_hex(format!("uncompressed {i}").as_bytes())),
                "size": layer.len(),
                "createdAt": "2026-11-28T10:00:00Z",
            },
        });
        if i == 0 {
            entry["parent"] = json!(-1);
        }
        config_layers.push(entry);
    }
    let cache_config = json!({
        "layers": config_layers,
        "records": [{"digest": "sha256:".to_string() + &"0".repeat(64)}],
    })
    .to_string()
    .into_bytes();
    azurite.put_blob(CONTAINER, "team-a/app/manifests/buildkit", &cache_config);

    // The importer: HEAD the tag, GET by digest, the config, the layers.
    let repo = "/v2/team-a/app";
    let head = server.request(
        "HEAD",
        &format!("{repo}/manifests/buildkit"),
        &[("accept", OCI_MANIFEST)],
        Body::Empty,
    );
    assert_eq!(head.status, 200, "{}", head.text());
    let digest = head.header("docker-content-digest").unwrap().to_string();
    let manifest = server.get(&format!("{repo}/manifests/{digest}"));
    assert_eq!(manifest.status, 200);
    assert_eq!(digest_of(&manifest.body), digest);
    assert_eq!(
        head.header("content-length").unwrap(),
        manifest.body.len().to_string()
    );
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.body).unwrap();
    assert_eq!(parsed["mediaType"], OCI_MANIFEST);
    assert_eq!(
        parsed["config"]["mediaType"],
        "application/vnd.buildkit.cacheconfig.v0"
    );
    let config_digest = parsed["config"]["digest"].as_str().unwrap();
    assert!(server.get(&format!("{repo}/blobs/{config_digest}")).body == cache_config);
    for (i, layer) in layers.iter().enumerate() {
        let descriptor = &parsed["layers"][i];
        assert_eq!(descriptor["digest"], digest_of(layer));
        assert_eq!(descriptor["size"], layer.len());
        assert_eq!(
            descriptor["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert!(descriptor["annotations"]["containerd.io/uncompressed"].is_string());
        assert_eq!(
            descriptor["annotations"]["buildkit/createdat"],
            "2026-11-28T10:00:00Z"
        );
        assert!(
            server
                .get(&format!("{repo}/blobs/{}", digest_of(layer)))
                .body
                == *layer
        );
    }
    // A tag that is neither the registry's nor BuildKit's is unknown, and a
    // document there that is not BuildKit's is no manifest either (not a 500).
    let missing = server.head(&format!("{repo}/manifests/other"));
    assert_eq!(missing.status, 404);
    azurite.put_blob(CONTAINER, "team-a/app/manifests/broken", b"{not json");
    let broken = server.get(&format!("{repo}/manifests/broken"));
    assert_eq!(
        (broken.status, code(&broken).as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    // Names among the protocols' own keys never reach the view: what a
    // ccache client wrote under /ccache/team-b/ is no registry blob.
    let planted = b"planted by a ccache client".to_vec();
    let digest = digest_of(&planted);
    assert_eq!(
        server
            .put(&format!("/ccache/team-b/blobs/{digest}"), &planted)
            .status,
        200
    );
    assert_eq!(
        server
            .get(&format!("/v2/ccache/team-b/blobs/{digest}"))
            .status,
        404
    );
}

// Limits: with BLOBCACHE_MAX_BLOB_SIZE, an upload's chunks share one budget,
// declared or not (a chunked body is counted as it arrives); a refused chunk
// stages nothing. Bad `Content-Range`s and mounts without a source.
on_every_target!(upload_limits_and_odd_requests);
fn upload_limits_and_odd_requests(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_MAX_BLOB_SIZE", "200000")]) else {
        return;
    };
    let location = start_upload(&server, "team-a/app");
    assert_eq!(
        patch(&server, &location, 0, &vec![1u8; 150_000]).status,
        202
    );
    let over = patch(&server, &location, 150_000, &vec![2u8; 60_000]);
    assert_eq!(over.status, 413, "{}", over.text());
    // The same, chunked: no length to refuse it by until it has arrived.
    let mut connection = support::Connection::open(&server.addr);
    connection.write_raw(
        format!(
            "PATCH {location} HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    );
    connection.write_raw(&crate::protocols::chunked(&vec![3u8; 60_000]));
    let chunked = connection.receive(false).collect();
    assert_eq!(chunked.status, 413, "{}", chunked.text());
    let status = server.get(&location);
    assert_eq!(
        status.header("range"),
        Some("0-149999"),
        "nothing more was staged"
    );
    let garbage = server.request(
        "PATCH",
        &location,
        &[("content-range", "bytes=abc")],
        Body::Bytes(b"x"),
    );
    assert_eq!(
        (garbage.status, code(&garbage).as_str()),
        (400, "BLOB_UPLOAD_INVALID")
    );
    let no_source = server.request(
        "POST",
        &format!("/v2/team-a/app/blobs/uploads/?mount={}", digest_of(b"x")),
        &[],
        Body::Empty,
    );
    assert_eq!(no_source.status, 202, "an upload instead of a mount");
}
