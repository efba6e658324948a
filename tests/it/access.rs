//! Access tokens on every target, tried as an attacker on the network would
//! try them; and the host's own guards: loopback Host names, no open
//! non-loopback listener by accident, token configuration checked at start.

use crate::support::{self, Body, Server};
use crate::targets::{deploy, Deployment, Target};
use base64::Engine;

/// `ci` is given as the SHA-256 of its secret (`ci-secret`), so the
/// configuration holds no secret.
const TOKENS: &str =
    "ci rw * sha256:5d2df3b4e0ddb0e0ad08e3b2c1d4a36b0a56bc3b7b4a0f1c8a25d0f5a7d5f9e3; \
    team-a rw team-a secret-a; team-b rw team-b secret-b; reader read * secret-r";

fn tokens() -> String {
    let digest = support::sha256_hex(b"ci-secret");
    TOKENS.replace(
        "5d2df3b4e0ddb0e0ad08e3b2c1d4a36b0a56bc3b7b4a0f1c8a25d0f5a7d5f9e3",
        &digest,
    )
}

fn with_token(
    server: &Deployment,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> support::Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    let body = match method {
        "PUT" => Body::Bytes(body),
        _ => Body::Empty,
    };
    server.request(method, path, &headers, body)
}

fn basic(user: &str, password: &str, url_safe: bool) -> String {
    let pair = format!("{user}:{password}");
    let encoded = match url_safe {
        true => base64::engine::general_purpose::URL_SAFE.encode(pair),
        false => base64::engine::general_purpose::STANDARD.encode(pair),
    };
    format!("Basic {encoded}")
}

on_every_target!(tokens_guard_every_entry);
fn tokens_guard_every_entry(target: Target) {
    let tokens = tokens();
    let Some(server) = deploy(target, &[("BLOBCACHE_TOKENS", &tokens)]) else {
        return;
    };
    let content = b"an object file".to_vec();
    let cas_a = format!("/team-a/cas/{}", support::sha256_hex(&content));
    let ac_a = format!("/team-a/ac/{}", "a1".repeat(32));
    let ccache_a = "/ccache/team-a/ab/cdef0123";
    let ac_root = format!("/ac/{}", "a2".repeat(32));
    let admin = Some("Bearer ci-secret");
    let team_a = Some("Bearer secret-a");

    // The owners write, in each idiom: Bearer, and Basic with the token as
    // password (both base64 alphabets, as Bazel may send either).
    assert_eq!(
        with_token(&server, "PUT", &cas_a, team_a, &content).status,
        200
    );
    let basic_a = basic("bazel", "secret-a", true);
    assert_eq!(
        with_token(&server, "PUT", &ac_a, Some(&basic_a), b"result").status,
        200
    );
    let basic_std = basic("ccache", "secret-a", false);
    assert_eq!(
        with_token(&server, "PUT", ccache_a, Some(&basic_std), b"entry").status,
        200
    );
    assert_eq!(
        with_token(&server, "PUT", &ac_root, admin, b"root entry").status,
        200
    );

    // Anyone on the network: nothing without a token, and a clear challenge.
    for (method, path) in [("GET", &cas_a), ("PUT", &ac_a), ("DELETE", &cas_a)] {
        let response = with_token(&server, method, path, None, b"forged");
        assert_eq!(response.status, 401, "{method} {path}: {}", response.text());
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("realm=\"blobcache\""), "{challenge}");
    }
    let wrong = with_token(&server, "PUT", &ac_a, Some("Bearer guessed"), b"forged");
    assert_eq!(wrong.status, 401);
    assert!(!wrong.text().contains("guessed"), "no token in answers");
    let wrong_basic = basic("x", "guessed", false);
    assert_eq!(
        with_token(&server, "GET", &ac_a, Some(&wrong_basic), b"").status,
        401
    );

    // A read-only token reads everything and writes nothing.
    let reader = Some("Bearer secret-r");
    assert_eq!(
        with_token(&server, "GET", &ac_a, reader, b"").body,
        b"result"
    );
    for (method, path) in [
        ("PUT", ac_a.as_str()),
        ("DELETE", cas_a.as_str()),
        ("PUT", ccache_a),
    ] {
        let response = with_token(&server, method, path, reader, b"forged");
        assert_eq!(response.status, 403, "{method} {path}: {}", response.text());
    }

    // Another team can neither read nor overwrite nor delete team A's entries,
    // nor write outside its namespace.
    let team_b = Some("Bearer secret-b");
    for (method, path) in [
        ("GET", ac_a.as_str()),
        ("PUT", ac_a.as_str()),
        ("DELETE", cas_a.as_str()),
        ("PUT", ccache_a),
        ("PUT", ac_root.as_str()),
    ] {
        let response = with_token(&server, method, path, team_b, b"forged");
        assert_eq!(response.status, 403, "{method} {path}: {}", response.text());
    }
    assert_eq!(
        with_token(
            &server,
            "PUT",
            &format!("/team-b/ac/{}", "b1".repeat(32)),
            team_b,
            b"b"
        )
        .status,
        200
    );

    // Nothing the refused requests tried changed anything.
    assert_eq!(with_token(&server, "GET", &cas_a, admin, b"").body, content);
    assert_eq!(
        with_token(&server, "GET", &ac_a, admin, b"").body,
        b"result"
    );
    assert_eq!(
        with_token(&server, "GET", ccache_a, admin, b"").body,
        b"entry"
    );
    assert_eq!(
        with_token(&server, "GET", &ac_root, admin, b"").body,
        b"root entry"
    );

    // Health is open; /status names the store's location to token holders only.
    assert_eq!(server.get("/healthz").status, 200);
    let anonymous: serde_json::Value = serde_json::from_slice(&server.get("/status").body).unwrap();
    assert_eq!(anonymous["access"], "tokens");
    assert!(anonymous["store"]["location"].is_null(), "{anonymous}");
    let known = with_token(&server, "GET", "/status", reader, b"");
    let known: serde_json::Value = serde_json::from_slice(&known.body).unwrap();
    assert!(known["store"]["location"].is_string(), "{known}");
}

on_every_target!(ccache_presents_its_token);
fn ccache_presents_its_token(target: Target) {
    let tokens = tokens();
    let Some(server) = deploy(target, &[("BLOBCACHE_TOKENS", &tokens)]) else {
        return;
    };
    let addr = &server.addr;
    // ccache's own idiom, and credentials in the URL (sent as Basic).
    support::ccache::round_trip_to(
        &format!("http://{addr}/ccache/team-a|layout=subdirs|bearer-token=secret-a"),
        "bearer-token",
    );
    support::ccache::round_trip_to(
        &format!("http://ccache:secret-a@{addr}/ccache/team-a|layout=flat"),
        "url credentials",
    );
    // With a wrong token ccache stores nothing (and builds anyway, locally).
    let work = tempfile::tempdir().unwrap();
    let refused = format!("http://{addr}/ccache/team-a|layout=subdirs|bearer-token=wrong");
    support::ccache::build_once(work.path(), &refused);
    let stored = work.path().join("local");
    assert_eq!(support::ccache::stat(&stored, "remote_storage_hit"), 0);
}

#[test]
fn a_loopback_server_answers_only_loopback_host_names() {
    let server = Server::start();
    let path = format!("/ac/{}", "d1".repeat(32));
    // A web page that rebinds attacker.example to 127.0.0.1 sends its own name.
    let rebound = server.request(
        "PUT",
        &path,
        &[("host", "attacker.example")],
        Body::Bytes(b"planted"),
    );
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert!(rebound.text().contains("loopback"), "{}", rebound.text());
    assert_eq!(server.get(&path).status, 404, "nothing was stored");
    for host in ["localhost", "127.0.0.1:9", "[::1]:8080", "cache.localhost"] {
        let response = server.request("GET", "/healthz", &[("host", host)], Body::Empty);
        assert_eq!(response.status, 200, "{host}");
    }
}

#[test]
fn an_open_server_says_so_and_needs_a_flag_beyond_loopback() {
    let open = Server::start();
    assert!(
        open.log_text().contains("no access tokens configured"),
        "{}",
        open.log_text()
    );

    let refused = support::start_failure_listening("0.0.0.0:0", &[], &[]);
    assert!(refused.contains("--allow-open"), "{refused}");
    assert!(refused.contains("without access tokens"), "{refused}");

    let guarded = Server::start_with_env(&[], &[("BLOBCACHE_TOKENS", "ci rw * secret")]);
    assert!(
        guarded.log_text().contains("access tokens: 1 configured"),
        "{}",
        guarded.log_text()
    );
}

#[test]
fn a_bad_token_configuration_stops_the_start_without_naming_secrets() {
    let error = support::start_failure(&[], &[("BLOBCACHE_TOKENS", "ci admin * topsecret")]);
    assert!(error.contains("line 1"), "{error}");
    assert!(!error.contains("topsecret"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# the CI token\nci read-write * from-a-file\n").unwrap();
    let server = Server::start_with(&["--tokens-file", file.to_str().unwrap()]);
    let path = format!("/ac/{}", "e1".repeat(32));
    assert_eq!(server.put(&path, b"x").status, 401);
    let response = server.request(
        "PUT",
        &path,
        &[("authorization", "Bearer from-a-file")],
        Body::Bytes(b"x"),
    );
    assert_eq!(response.status, 200);
    let missing = support::start_failure(&["--tokens-file", "/nonexistent/tokens"], &[]);
    assert!(missing.contains("cannot read the tokens file"), "{missing}");
}

// Tokens in each newer protocol's idiom: Nx's namespace comes from its
// token (its paths have none), Turborepo's from its team, sccache's and
// Gradle's from their paths; read-only tokens never write.
on_every_target!(client_families_honour_tokens);
fn client_families_honour_tokens(target: Target) {
    let tokens = tokens();
    let Some(server) = deploy(target, &[("BLOBCACHE_TOKENS", &tokens)]) else {
        return;
    };
    let team_a = Some("Bearer secret-a");
    let team_b = Some("Bearer secret-b");
    let reader = Some("Bearer secret-r");
    let admin = Some("Bearer ci-secret");
    let status = |method, path: &str, token, body: &[u8]| {
        with_token(&server, method, path, token, body).status
    };

    // Nx: one path, a namespace per token.
    let nx = "/v1/cache/10294360055595522611";
    assert_eq!(status("PUT", nx, team_a, b"team a outputs"), 200);
    assert_eq!(
        with_token(&server, "GET", nx, team_a, b"").body,
        b"team a outputs"
    );
    assert_eq!(
        status("GET", nx, team_b, b""),
        404,
        "team b has a cache of its own"
    );
    assert_eq!(status("PUT", nx, team_b, b"team b outputs"), 200);
    assert_eq!(
        with_token(&server, "GET", nx, team_a, b"").body,
        b"team a outputs"
    );
    assert_eq!(
        status("PUT", nx, reader, b"poison"),
        403,
        "read-only: Nx ignores a 403"
    );
    let anonymous = with_token(&server, "GET", nx, None, b"");
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("content-type"),
        Some("text/plain"),
        "Nx shows only text/plain 401s"
    );

    // Turborepo: the team is the namespace.
    let turbo = "/v8/artifacts/fd7a8618ab01c131?slug=team-a";
    assert_eq!(status("PUT", turbo, team_a, b"artifact"), 202);
    assert_eq!(status("GET", turbo, admin, b""), 200);
    let forbidden = with_token(&server, "GET", turbo, team_b, b"");
    assert_eq!(forbidden.status, 403);
    let json: serde_json::Value = serde_json::from_slice(&forbidden.body).unwrap();
    assert_eq!(
        json["error"]["code"], "forbidden",
        "turbo stops trying for the run"
    );
    assert_eq!(status("PUT", turbo, reader, b"x"), 403);
    assert_eq!(
        status("GET", "/v8/artifacts/status?slug=team-a", None, b""),
        401
    );

    // sccache: the key prefix is the namespace; a read-only token fails its
    // write probe (MKCOL, PUT) and sccache then runs read-only.
    let file = "/sccache/team-a/.sccache_check";
    assert_eq!(status("PUT", file, team_a, b"Hello, World!"), 201);
    assert_eq!(status("GET", file, team_b, b""), 403);
    assert_eq!(status("MKCOL", "/sccache/team-a/9/", reader, b""), 403);
    let propfind = |token: &str| {
        let headers = [("authorization", token), ("depth", "0")];
        server
            .request("PROPFIND", "/sccache/team-a/", &headers, Body::Empty)
            .status
    };
    assert_eq!(propfind("Bearer secret-a"), 207);
    assert_eq!(propfind("Bearer secret-b"), 403);

    // Gradle: Basic credentials, pre-emptively, the token as password.
    let gradle = format!("/gradle/team-a/{}", "77f3fde86f99cf771d330febeba41e61");
    let basic_a = basic("gradle", "secret-a", false);
    let basic_b = basic("gradle", "secret-b", false);
    let basic_r = basic("gradle", "secret-r", false);
    assert_eq!(status("PUT", &gradle, Some(&basic_a), b"entry"), 200);
    assert_eq!(status("GET", &gradle, Some(&basic_b), b""), 403);
    assert_eq!(status("PUT", &gradle, Some(&basic_r), b"x"), 403);
    assert_eq!(status("GET", &gradle, None, b""), 401);
}

/// sccache's other idiom: user name and password (sent as Basic), with the
/// token as password.
#[test]
fn sccache_presents_its_token_as_a_password() {
    let tokens = tokens();
    let Some(server) = deploy(Target::Dir, &[("BLOBCACHE_TOKENS", &tokens)]) else {
        return;
    };
    let endpoint = format!("http://{}/sccache", server.addr);
    support::sccache::round_trip(&support::sccache::Remote {
        endpoint: &endpoint,
        key_prefix: Some("team-a"),
        token: None,
        basic: Some(("sccache", "secret-a")),
    });
}
