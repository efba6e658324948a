//! The Azure-compatible endpoint (`/azure/<account>/<container>/<blob>`):
//! BuildKit's `type=azblob` export and import replayed with Microsoft's SDK on
//! every store, accounts with keys blobcache issues per token, the same blob
//! names as BuildKit writing to Azure directly, and bad input refused with
//! Azure's error codes while nothing is stored.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::azblob::{issue, node, SignedClient, DEV_ACCOUNT, DEV_KEY};
use crate::support::{noise, sha256_hex};
use crate::targets::{deploy, Target, CONTAINER};

/// A layer file and its digest.
struct Layer {
    file: PathBuf,
    digest: String,
}

fn layers(dir: &Path, sizes: &[usize], seed: u64) -> Vec<Layer> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let bytes = noise(seed + i as u64, *size);
            let file = dir.join(format!("layer-{seed}-{i}"));
            std::fs::write(&file, &bytes).unwrap();
            Layer {
                file,
                digest: format!("sha256:{}", sha256_hex(&bytes)),
            }
        })
        .collect()
}

/// The plan `tests/sdk/buildkit-azblob.mjs` runs.
fn plan(
    account_url: &str,
    account: &str,
    key: &str,
    container: &str,
    prefix: &str,
    layers: &[Layer],
) -> Value {
    json!({
        "accountUrl": account_url,
        "account": account,
        "key": key,
        "container": container,
        "prefix": prefix,
        "name": "buildkit",
        "layers": layers.iter().map(|l| json!({"file": l.file, "digest": l.digest})).collect::<Vec<_>>(),
    })
}

/// The container the endpoint serves: the Azure store's own, else BuildKit's default.
fn served_container(target: Target) -> &'static str {
    match target.is_azure() {
        true => CONTAINER,
        false => "buildkit-cache",
    }
}

fn with(plan: &Value, changes: Value) -> Value {
    let mut plan = plan.clone();
    for (name, value) in changes.as_object().unwrap() {
        plan[name] = value.clone();
    }
    plan
}

fn replay(plan: &Value, mode: &str) -> Value {
    node(
        "buildkit-azblob.mjs",
        &with(plan, json!({"mode": mode})),
        &[],
    )
}

/// An import found every layer whole.
fn assert_imported(result: &Value, layers: &[Layer]) {
    let got: Vec<(String, String)> = result["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers imported: {result}"))
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                format!("sha256:{}", l["sha256"].as_str().unwrap_or("missing")),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = layers
        .iter()
        .map(|l| (l.digest.clone(), l.digest.clone()))
        .collect();
    assert_eq!(got, expected, "{result}");
}

on_targets!(buildkit_azblob_replay: dir, memory, azure, wasmtime_serve, spin);
fn buildkit_azblob_replay(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    // The endpoint serves the store's container with the Azure store, else BuildKit's default.
    let container = served_container(target);
    let dir = tempfile::tempdir().unwrap();
    // Under 32 MiB: one Put Blob; at or above: 32 MiB Put Blocks and a Put Block List.
    let layers = layers(dir.path(), &[2 << 20, 40 << 20, 1000], 1);
    let url = format!("http://{}/azure/{DEV_ACCOUNT}", server.addr);
    let plan = plan(&url, DEV_ACCOUNT, DEV_KEY, container, "app", &layers);

    let exported = replay(&plan, "export");
    assert_eq!(exported["container"], "existed", "{exported}");
    let uploads: Vec<&str> = exported["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["upload"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(uploads, ["put-blob", "blocks", "put-blob"], "{exported}");
    // A second export finds every layer by HEAD and uploads nothing.
    let again = replay(&plan, "export");
    assert!(
        again["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["skipped"] == true),
        "{again}"
    );
    assert_imported(&replay(&plan, "import"), &layers);
    // Older BuildKit sends `/` unescaped: the same blobs.
    assert_imported(
        &replay(&with(&plan, json!({"escapeSlash": false})), "import"),
        &layers,
    );

    // Listing pages through `marker` and `maxresults`.
    let listed = replay(
        &with(
            &plan,
            json!({"op": "list", "prefix": "app/", "pageSize": 2}),
        ),
        "call",
    );
    let names: Vec<&str> = listed["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[0].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{listed}");
    assert!(names.contains(&"app/manifests/buildkit"), "{listed}");
    // A store may end a full page with a cursor to an empty one.
    assert!(listed["pages"].as_u64().unwrap() >= 2, "{listed}");

    // Create-only over an existing blob: 409 BlobAlreadyExists.
    let blob = format!("app/blobs/{}", layers[0].digest);
    let conflict = replay(
        &with(
            &plan,
            json!({"op": "put", "blob": blob, "body": "other", "ifNoneMatch": true}),
        ),
        "call",
    );
    assert_eq!(
        (conflict["status"].as_u64(), conflict["code"].as_str()),
        (Some(409), Some("BlobAlreadyExists")),
        "{conflict}"
    );
    // A plain Put Blob answers 201 with a request id.
    let put = replay(
        &with(
            &plan,
            json!({"op": "put", "blob": "app/manifests/other", "body": "{}"}),
        ),
        "call",
    );
    assert_eq!(put["status"], 201, "{put}");
    assert!(
        put["requestId"].as_str().is_some_and(|id| id.len() == 36),
        "{put}"
    );

    // Raw requests: errors in x-ms-error-code (HEAD has no body), ranges.
    let client = SignedClient::new(&server.addr, DEV_ACCOUNT, DEV_KEY);
    let missing = client.send(
        "HEAD",
        &format!("/{container}/app/blobs/sha256:{}", "0".repeat(64)),
        &[],
        b"",
    );
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-ms-error-code"), Some("BlobNotFound"));
    assert!(missing.header("x-ms-request-id").is_some());
    assert!(missing.body.is_empty());
    let path = format!("/{container}/{blob}");
    let whole = std::fs::read(&layers[0].file).unwrap();
    for header in ["range", "x-ms-range"] {
        let part = client.send("GET", &path, &[(header, "bytes=10-19")], b"");
        assert_eq!(part.status, 206, "{header}");
        assert_eq!(part.body, &whole[10..20], "{header}");
    }
    // x-ms-range wins over Range.
    let both = client.send(
        "GET",
        &path,
        &[("range", "bytes=0-1"), ("x-ms-range", "bytes=5-6")],
        b"",
    );
    assert_eq!(both.body, &whole[5..7]);
    let head = client.send("HEAD", &path, &[], b"");
    assert_eq!(head.header("content-length"), Some("2097152"));
    assert_eq!(head.header("x-ms-blob-type"), Some("BlockBlob"));
    assert!(head
        .header("last-modified")
        .is_some_and(|d| d.ends_with(" GMT")));

    // Another container: not found, and not created.
    let other = replay(&with(&plan, json!({"container": "elsewhere"})), "export");
    assert_eq!(other["error"]["status"], 403, "{other}");

    // Delete answers 202, then the blob is gone.
    let deleted = replay(
        &with(
            &plan,
            json!({"op": "delete", "blob": "app/manifests/other"}),
        ),
        "call",
    );
    assert_eq!(deleted["status"], 202, "{deleted}");
    let gone = replay(
        &with(&plan, json!({"op": "head", "blob": "app/manifests/other"})),
        "call",
    );
    assert_eq!(gone["status"], 404, "{gone}");
}

on_targets!(keys_issued_per_token: dir, wasmtime_serve);
fn keys_issued_per_token(target: Target) {
    let tokens = "teama rw team-a secret-a; teamb rw team-b secret-b; audit read team-a secret-r";
    let secret = "a server secret of more than thirty-two characters";
    let settings = [("BLOBCACHE_TOKENS", tokens), ("BLOBCACHE_SECRET", secret)];
    let Some(server) = deploy(target, &settings) else {
        return;
    };
    let key = |account: &str| issue(&["azure-key", account], &settings);
    let (key_a, key_b, key_audit) = (key("teama"), key("teamb"), key("audit"));
    let container = served_container(target);
    let dir = tempfile::tempdir().unwrap();
    let layers = layers(dir.path(), &[300_000], 7);
    let url = |account: &str| format!("http://{}/azure/{account}", server.addr);
    let team_a = plan(&url("teama"), "teama", &key_a, container, "team-a", &layers);

    assert_eq!(replay(&team_a, "export")["manifest"], 201);
    assert_imported(&replay(&team_a, "import"), &layers);

    // A key of another account: 403 AuthenticationFailed, nothing stored.
    let forged = with(&team_a, json!({"key": key_b, "prefix": "team-a/forged"}));
    let refused = replay(&forged, "export");
    assert_eq!(refused["error"]["status"], 403, "{refused}");
    assert_eq!(
        refused["error"]["code"], "AuthenticationFailed",
        "{refused}"
    );
    let nothing = replay(&with(&team_a, json!({"prefix": "team-a/forged"})), "import");
    assert_eq!(nothing["manifest"], Value::Null, "{nothing}");
    // A team writes only under its own namespace.
    let outside = replay(&with(&team_a, json!({"prefix": "app"})), "export");
    assert_eq!(
        outside["error"]["code"], "AuthorizationPermissionMismatch",
        "{outside}"
    );
    // A read-only key reads, and cannot write.
    let audit = with(
        &team_a,
        json!({"accountUrl": url("audit"), "account": "audit", "key": key_audit}),
    );
    assert_imported(&replay(&audit, "import"), &layers);
    let written = replay(
        &with(
            &audit,
            json!({"op": "put", "blob": "team-a/manifests/x", "body": "{}"}),
        ),
        "call",
    );
    assert_eq!(
        (written["status"].as_u64(), written["code"].as_str()),
        (Some(403), Some("AuthorizationPermissionMismatch")),
        "{written}"
    );
    // A second team's key does not read the first team's cache.
    let team_b = with(
        &team_a,
        json!({"accountUrl": url("teamb"), "account": "teamb", "key": key_b}),
    );
    let read = replay(
        &with(
            &team_b,
            json!({"op": "get", "blob": format!("team-a/blobs/{}", layers[0].digest)}),
        ),
        "call",
    );
    assert_eq!(read["status"], 403, "{read}");
    // With tokens configured, the development account opens nothing.
    let dev = replay(
        &with(
            &team_a,
            json!({"accountUrl": url(DEV_ACCOUNT), "account": DEV_ACCOUNT, "key": DEV_KEY}),
        ),
        "import",
    );
    assert_eq!(dev["error"]["code"], "AuthenticationFailed", "{dev}");

    // x-ms-date must be near the server's clock.
    let client = SignedClient::new(&server.addr, "teama", &key_a);
    let path = format!("/{container}/team-a/manifests/buildkit");
    assert_eq!(client.send("HEAD", &path, &[], b"").status, 200);
    let old = httpdate::fmt_http_date(
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    let stale = client.send("GET", &path, &[("x-ms-date", &old)], b"");
    assert_eq!(
        (stale.status, stale.header("x-ms-error-code")),
        (403, Some("AuthenticationFailed")),
        "{}",
        stale.text()
    );
}

on_targets!(same_names_as_buildkit_writing_to_azure: azure);
fn same_names_as_buildkit_writing_to_azure(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let azurite = server.azurite().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layers = layers(dir.path(), &[1 << 20, 33 << 20], 21);
    let through_blobcache = format!("http://{}/azure/{DEV_ACCOUNT}", server.addr);

    // BuildKit wrote to Azure directly; the team moves to blobcache and keeps its cache.
    let direct = plan(
        &azurite.endpoint(),
        DEV_ACCOUNT,
        DEV_KEY,
        CONTAINER,
        "direct",
        &layers,
    );
    replay(&direct, "export");
    let via = with(&direct, json!({"accountUrl": through_blobcache}));
    assert_imported(&replay(&via, "import"), &layers);

    // And back: what blobcache wrote, BuildKit reads from Azure directly.
    let written = with(&via, json!({"prefix": "moved"}));
    replay(&written, "export");
    let read_directly = with(&written, json!({"accountUrl": azurite.endpoint()}));
    assert_imported(&replay(&read_directly, "import"), &layers);
}

on_targets!(bad_input_changes_nothing: dir, wasmtime_serve);
fn bad_input_changes_nothing(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_MAX_BLOB_SIZE", "1000000")]) else {
        return;
    };
    let client = SignedClient::new(&server.addr, DEV_ACCOUNT, DEV_KEY);
    let container = served_container(target);
    let blob = &format!("/{container}/app/blobs/target");
    let refused = |response: &crate::support::Response, status: u16, code: &str| {
        assert_eq!(
            (response.status, response.header("x-ms-error-code")),
            (status, Some(code)),
            "{}",
            response.text()
        );
        if response.status != 404 {
            assert!(
                response.text().contains(&format!("<Code>{code}</Code>")),
                "{}",
                response.text()
            );
        }
        assert_eq!(
            client.send("HEAD", blob, &[], b"").status,
            404,
            "nothing is stored"
        );
    };
    let put = [("x-ms-blob-type", "BlockBlob")];

    // A block staged, then lists that do not commit it.
    let block = "QUFBQQ==";
    let staged = client.send(
        "PUT",
        &format!("{blob}?comp=block&blockid={block}"),
        &[],
        b"first block",
    );
    assert_eq!(staged.status, 201, "{}", staged.text());
    let staged_list = client.send(
        "GET",
        &format!("{blob}?comp=blocklist&blocklisttype=uncommitted"),
        &[],
        b"",
    );
    assert!(
        staged_list
            .text()
            .contains("<Block><Name>QUFBQQ==</Name><Size>11</Size></Block>"),
        "{}",
        staged_list.text()
    );
    let list = |xml: &str| {
        client.send(
            "PUT",
            &format!("{blob}?comp=blocklist"),
            &[],
            xml.as_bytes(),
        )
    };
    refused(
        &list("<BlockList><Latest>QUFBQQ==</Latest>"),
        400,
        "InvalidXmlDocument",
    );
    refused(
        &list("<Blocks><Latest>QUFBQQ==</Latest></Blocks>"),
        400,
        "InvalidXmlDocument",
    );
    refused(
        &list("<BlockList><Latest>QkJCQg==</Latest></BlockList>"),
        400,
        "InvalidBlockList",
    );
    refused(
        &list("<BlockList><Latest>not base64!</Latest></BlockList>"),
        400,
        "InvalidBlockId",
    );
    refused(
        &list("<BlockList><Committed>QUFBQQ==</Committed></BlockList>"),
        400,
        "InvalidBlockList",
    );
    let bad_id = client.send(
        "PUT",
        &format!("{blob}?comp=block&blockid=%25%25"),
        &[],
        b"x",
    );
    refused(&bad_id, 400, "InvalidQueryParameterValue");
    let conditional = client.send(
        "PUT",
        &format!("{blob}?comp=blocklist"),
        &[("if-match", "\"0x8D0000000000000\"")],
        b"<BlockList><Latest>QUFBQQ==</Latest></BlockList>",
    );
    refused(&conditional, 412, "ConditionNotMet");
    // Bodies cut short (a block, a blob): nothing is stored.
    client.send_cut(
        &format!("{blob}?comp=block&blockid=QkJCQg%3D%3D"),
        &[],
        100_000,
        60_000,
    );
    client.send_cut(blob, &put, 100_000, 60_000);
    assert_eq!(client.send("HEAD", blob, &[], b"").status, 404);
    let blocks = client.send(
        "GET",
        &format!("{blob}?comp=blocklist&blocklisttype=uncommitted"),
        &[],
        b"",
    );
    assert!(!blocks.text().contains("QkJCQg=="), "{}", blocks.text());
    // The staged block still commits.
    let committed = list("<BlockList><Latest>QUFBQQ==</Latest></BlockList>");
    assert_eq!(committed.status, 201, "{}", committed.text());
    assert_eq!(client.send("GET", blob, &[], b"").body, b"first block");
    assert_eq!(client.send("DELETE", blob, &[], b"").status, 202);

    // Names: over-long, outside the key rules, or owned by other protocols.
    let long = format!("/{container}/{}", "n".repeat(1100));
    assert_eq!(
        client
            .send("PUT", &long, &put, b"x")
            .header("x-ms-error-code"),
        Some("InvalidResourceName")
    );
    let spaced = client.send("PUT", &format!("/{container}/a%20b"), &put, b"x");
    assert_eq!(
        spaced.header("x-ms-error-code"),
        Some("InvalidResourceName")
    );
    let reserved = client.send(
        "PUT",
        &format!("/{container}/oci/_/blobs/sha256:{}", "a".repeat(64)),
        &put,
        b"x",
    );
    assert_eq!(reserved.status, 403);
    let bazel = client.send(
        "PUT",
        &format!("/{container}/team/cas/{}", "a".repeat(64)),
        &put,
        b"x",
    );
    assert_eq!(bazel.status, 403);

    // A signature over another path.
    let other = client.send_signed_as(
        "PUT",
        blob,
        &format!("/{container}/app/blobs/other"),
        &put,
        b"x",
    );
    refused(&other, 403, "AuthenticationFailed");
    // Not signed at all.
    let unsigned = server.request(
        "PUT",
        &format!("/azure/{DEV_ACCOUNT}{blob}"),
        &put,
        crate::support::Body::Bytes(b"x"),
    );
    assert_eq!(unsigned.status, 403);
    // Over the size limit: refused before the body is read.
    let large = client.declared_without_body(blob, &put, 1_000_001);
    refused(&large, 413, "RequestBodyTooLarge");
    // A SAS that expired, and one whose signature was made for reading.
    let sas = |permissions: &str, expiry: u64| {
        let account = blobcache_azure::Account::new(DEV_ACCOUNT, DEV_KEY, None).unwrap();
        let sas = blobcache_azure::signing::BlobSas {
            permissions: permissions.into(),
            start: None,
            expiry: blobcache_azure::signing::iso8601(expiry),
            protocol: None,
            version: "2024-11-04".into(),
        };
        blobcache_azure::signing::sas_query(&account, container, "app/blobs/target", &sas).unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with_sas = |query: String| {
        server.request(
            "PUT",
            &format!("/azure/{DEV_ACCOUNT}{blob}?{query}"),
            &put,
            crate::support::Body::Bytes(b"x"),
        )
    };
    refused(&with_sas(sas("cw", now - 60)), 403, "AuthenticationFailed");
    refused(
        &with_sas(sas("r", now + 600)),
        403,
        "AuthorizationPermissionMismatch",
    );
    let tampered = sas("r", now + 600).replace("sp=r", "sp=cw");
    refused(&with_sas(tampered), 403, "AuthenticationFailed");
    // A valid SAS writes.
    assert_eq!(with_sas(sas("cw", now + 600)).status, 201);
    assert_eq!(
        server.get("/healthz").status,
        200,
        "the server keeps serving"
    );
}
