//! The service's own endpoints on every target: `/healthz`, `/status`, `/`,
//! unknown paths and methods.

use crate::support::{Body, Server};
use crate::targets::{deploy, Target};

on_every_target!(status_and_health);
fn status_and_health(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    let health = server.get("/healthz");
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
    let status = server.get("/status");
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(json["service"], "blobcache");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["access"], "open");
    assert_eq!(
        json["protocols"],
        serde_json::json!([
            "ccache",
            "gradle",
            "sccache",
            "nx",
            "turbo",
            "oci",
            "azure-blob",
            "gha",
            "bazel"
        ])
    );
    let kind = match target {
        Target::Dir | Target::CopyPath => "dir",
        Target::Memory => "memory",
        _ => "azure",
    };
    assert_eq!(json["store"]["kind"], kind, "{json}");
    assert!(json["store"]["location"].is_string(), "{json}");
    if target == Target::Memory {
        server.put("/ccache/ab/cd", b"12345");
        let json: serde_json::Value = serde_json::from_slice(&server.get("/status").body).unwrap();
        assert_eq!(json["store"]["blob_count"], 1);
        assert_eq!(json["store"]["total_bytes"], 5);
    }
    // The serving protocol is for the host's logs, not for clients.
    if target.is_native() {
        assert_eq!(status.header("blobcache-protocol"), None);
    }
}

on_every_target!(unknown_paths_and_methods);
fn unknown_paths_and_methods(target: Target) {
    let Some(server) = deploy(target, &[]) else {
        return;
    };
    assert_eq!(
        server.get("/").status,
        200,
        "the root answers, for hosts that probe it"
    );
    assert_eq!(server.get("/no/such/thing").status, 404);
    assert_eq!(
        server.get(&format!("/status/ac/{}", "a".repeat(64))).status,
        404
    );
    let hex = "ab".repeat(32);
    let post = server.request("POST", &format!("/cas/{hex}"), &[], Body::Bytes(b"x"));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    assert_eq!(
        server.request("DELETE", "/status", &[], Body::Empty).status,
        405
    );
}

#[test]
fn compiled_component_is_reused_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let first = Server::start_with(&["--compile-cache", cache_arg]);
    assert_eq!(first.get("/healthz").status, 200);
    drop(first);
    let compiled: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(compiled.len(), 1, "one compiled artifact: {compiled:?}");
    let written = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();

    let second = Server::start_with(&["--compile-cache", cache_arg]);
    assert_eq!(second.get("/healthz").status, 200);
    assert!(
        second.log_text().contains("loaded the compiled component"),
        "{}",
        second.log_text()
    );
    assert!(
        !second.log_text().contains("compiling the component"),
        "{}",
        second.log_text()
    );
    let after = std::fs::metadata(&compiled[0]).unwrap().modified().unwrap();
    assert_eq!(
        written, after,
        "the restart loaded the artifact instead of recompiling"
    );
}
