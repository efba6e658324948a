//! Turborepo's remote cache API on every target: artifacts with their
//! duration and signature, teams as namespaces, the batch query, events,
//! preflights, JSON errors for bad input; and the real client (npm `turbo`)
//! getting `FULL TURBO` from blobcache, with signatures on and a tampered
//! artifact refused.

use super::{cut_upload_stores_nothing, declared_without_body};
use crate::support::{self, turbo, Body, Response};
use crate::targets::{deploy, Target};

/// Method, path, headers and body of a request that must be refused.
type BadRequest<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);

fn json(response: &Response) -> serde_json::Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", response.text()))
}

on_every_target!(artifacts_teams_and_queries);
fn artifacts_teams_and_queries(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_MAX_BLOB_SIZE", "1000000")]) else {
        return;
    };
    let status = server.get("/v8/artifacts/status?slug=web");
    assert_eq!(json(&status), serde_json::json!({"status": "enabled"}));

    let path = "/v8/artifacts/fd7a8618ab01c131?slug=web";
    assert_eq!(server.get(path).status, 404, "a miss");
    let headers = [
        ("x-artifact-duration", "1234"),
        ("x-artifact-tag", "c2lnbmF0dXJl+/=="),
    ];
    let put = server.request("PUT", path, &headers, Body::Bytes(b"zstd tar"));
    assert!((200..300).contains(&put.status), "{}", put.text());
    let hit = server.get(path);
    assert_eq!(hit.body, b"zstd tar");
    assert_eq!(hit.header("x-artifact-duration"), Some("1234"));
    assert_eq!(hit.header("x-artifact-tag"), Some("c2lnbmF0dXJl+/=="));
    let head = server.head(path);
    assert_eq!(
        (head.status, head.header("x-artifact-duration")),
        (200, Some("1234"))
    );

    // Teams never see each other's artifacts.
    assert_eq!(
        server
            .get("/v8/artifacts/fd7a8618ab01c131?teamId=team_other")
            .status,
        404
    );
    // An empty teamId names no team: the slug does.
    let by_slug = server.get("/v8/artifacts/fd7a8618ab01c131?teamId=&slug=web");
    assert_eq!(by_slug.body, b"zstd tar");
    assert_eq!(server.get("/v8/artifacts/fd7a8618ab01c131").status, 404);

    let query = server.request(
        "POST",
        "/v8/artifacts?slug=web",
        &[("content-type", "application/json")],
        Body::Bytes(br#"{"hashes":["fd7a8618ab01c131","0000000000000000"]}"#),
    );
    assert_eq!(
        json(&query),
        serde_json::json!({
            "fd7a8618ab01c131": {"size": 8, "taskDurationMs": 1234, "tag": "c2lnbmF0dXJl+/=="},
            "0000000000000000": null,
        })
    );
    let events = br#"[{"sessionId":"5b7c","source":"REMOTE","event":"HIT","hash":"fd7a8618ab01c131","duration":1234}]"#;
    assert_eq!(
        server
            .request(
                "POST",
                "/v8/artifacts/events?slug=web",
                &[],
                Body::Bytes(events)
            )
            .status,
        200
    );

    let preflight = server.request(
        "OPTIONS",
        path,
        &[
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "Authorization"),
        ],
        Body::Empty,
    );
    assert_eq!(preflight.status, 200);
    assert!(preflight
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));

    // Bad input: a JSON error turbo reads, and nothing stored.
    let cases: &[BadRequest] = &[
        ("PUT", "/v8/artifacts/not-a-hash?slug=web", &[], b"x"),
        (
            "PUT",
            "/v8/artifacts/aaaa?slug=web",
            &[("x-artifact-duration", "soon")],
            b"x",
        ),
        (
            "PUT",
            "/v8/artifacts/aaaa?slug=web",
            &[("x-artifact-tag", "<script>")],
            b"x",
        ),
        ("PUT", "/v8/artifacts/aaaa?slug=we%2Fb", &[], b"x"),
        (
            "POST",
            "/v8/artifacts?slug=web",
            &[],
            b"{\"hashes\":[\"aaaa\"",
        ),
        (
            "POST",
            "/v8/artifacts?slug=web",
            &[],
            b"{\"hashes\":[\"../x\"]}",
        ),
        (
            "POST",
            "/v8/artifacts/events?slug=web",
            &[],
            b"[{\"event\":",
        ),
    ];
    for (method, path, headers, body) in cases {
        let refused = server.request(method, path, headers, Body::Bytes(body));
        assert_eq!(refused.status, 400, "{method} {path}: {}", refused.text());
        assert_eq!(json(&refused)["error"]["code"], "bad_request");
    }
    assert_eq!(
        server.get("/v8/artifacts/aaaa?slug=web").status,
        404,
        "nothing stored"
    );
    let oversize = declared_without_body(&server, "POST", "/v8/artifacts?slug=web", 300 << 10);
    assert_eq!(oversize.status, 413, "{}", oversize.text());
    let too_large = declared_without_body(&server, "PUT", "/v8/artifacts/bbbb?slug=web", 1_000_001);
    assert_eq!(
        (too_large.status, json(&too_large)["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(server.request("DELETE", path, &[], Body::Empty).status, 405);
    cut_upload_stores_nothing(&server, "/v8/artifacts/cccc?slug=web", "");
}

on_targets!(real_client_full_turbo: dir, azure, wasmtime_serve);
fn real_client_full_turbo(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let api = format!("http://{}", server.addr);
    turbo::round_trip(&turbo::Remote {
        api: &api,
        token: "unused",
        team: "web",
    });
}

/// With `remoteCache.signature` on, turbo signs what it uploads and checks
/// what it downloads: blobcache keeps and returns the tag, and an artifact
/// replaced by someone without the key is refused by the client.
#[test]
fn real_client_signatures_and_a_tampered_artifact() {
    let Some(server) = deploy(Target::Dir, &[]) else {
        return;
    };
    let api = format!("http://{}", server.addr);
    let remote = turbo::Remote {
        api: &api,
        token: "unused",
        team: "web",
    };
    let Some(workspace) = turbo::Workspace::new(true) else {
        return;
    };
    let key = Some(turbo::SIGNATURE_KEY);
    let cold = workspace.build(&remote, key);
    let hashes = turbo::executed(&cold);
    assert_eq!(hashes.len(), 2, "{cold}");
    for hash in &hashes {
        let stored = server.get(&format!("/v8/artifacts/{hash}?slug=web"));
        assert!(
            stored
                .header("x-artifact-tag")
                .is_some_and(|t| t.len() == 44),
            "signed"
        );
    }
    workspace.clean();
    let warm = workspace.build(&remote, key);
    assert_eq!(turbo::replayed(&warm), 2, "signed hits verify:\n{warm}");

    // Someone without the key replaces one artifact, keeping its tag.
    let victim = format!("/v8/artifacts/{}?slug=web", hashes[1]);
    let original = server.get(&victim);
    let mut tampered = original.body.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let tag = original.header("x-artifact-tag").unwrap();
    let put = server.request(
        "PUT",
        &victim,
        &[("x-artifact-tag", tag)],
        Body::Bytes(&tampered),
    );
    assert!((200..300).contains(&put.status));
    workspace.clean();
    let checked = workspace.build(&remote, key);
    assert_eq!(
        turbo::executed(&checked),
        vec![hashes[1].clone()],
        "the tampered artifact is refused:\n{checked}"
    );
    assert_eq!(turbo::replayed(&checked), 1, "{checked}");
    assert!(
        support::sha256_hex(&server.get(&victim).body) != support::sha256_hex(&tampered),
        "turbo uploaded a good one again"
    );
}
