//! Every real client at once on one listener with access tokens: Bazel,
//! ccache, sccache, Turborepo, Nx and Gradle build twice each (the second
//! time with nothing local), on each store, under
//! our host and under `wasmtime serve`. Each client works in team `team-a`
//! in its own idiom, and the same tokens keep team `team-b` out.

use crate::support::{self, sha256_hex, Body};
use crate::targets::{deploy, Target};

const TOKENS: &str = "team-a rw team-a secret-a; team-b rw team-b secret-b; reader read * secret-r";

on_targets!(every_client_on_one_listener: dir, memory, azure, wasmtime_serve);
fn every_client_on_one_listener(target: Target) {
    let Some(server) = deploy(target, &[("BLOBCACHE_TOKENS", TOKENS)]) else {
        return;
    };
    let addr = server.addr.clone();
    std::thread::scope(|scope| {
        let sccache = scope.spawn(|| {
            let endpoint = format!("http://{addr}/sccache");
            support::sccache::round_trip(&support::sccache::Remote {
                endpoint: &endpoint,
                key_prefix: Some("team-a"),
                token: Some("secret-a"),
                basic: None,
            });
        });
        let turbo = scope.spawn(|| {
            let api = format!("http://{addr}");
            support::turbo::round_trip(&support::turbo::Remote {
                api: &api,
                token: "secret-a",
                team: "team-a",
            });
        });
        let nx = scope.spawn(|| {
            support::nx::round_trip(&format!("http://{addr}"), Some("secret-a"));
        });
        let gradle = scope.spawn(|| {
            support::gradle::round_trip(&format!("http://{addr}/gradle/team-a/"), Some("secret-a"));
        });
        let ccache = scope.spawn(|| {
            support::ccache::round_trip_to(
                &format!("http://ccache:secret-a@{addr}/ccache/team-a|layout=subdirs"),
                "ccache with tokens",
            );
        });
        let bazel = scope.spawn(|| {
            support::bazel::round_trip(
                &format!("http://{addr}/team-a"),
                Some("Authorization=Bearer secret-a"),
            );
            support::bazel::round_trip(&format!("http://bazel:secret-a@{addr}/team-a"), None);
            for i in 0..50u32 {
                let content = format!("action output {i}").into_bytes();
                let path = format!("/team-a/cas/{}", sha256_hex(&content));
                let auth = [("authorization", "Bearer secret-a")];
                let put = server.request("PUT", &path, &auth, Body::Bytes(&content));
                assert_eq!(put.status, 200, "{}", put.text());
                assert_eq!(
                    server.request("GET", &path, &auth, Body::Empty).body,
                    content
                );
                let other = [("authorization", "Bearer secret-b")];
                assert_eq!(
                    server.request("GET", &path, &other, Body::Empty).status,
                    403
                );
            }
        });
        for (client, handle) in [
            ("sccache", sccache),
            ("turbo", turbo),
            ("nx", nx),
            ("gradle", gradle),
            ("ccache", ccache),
            ("bazel", bazel),
        ] {
            if let Err(panic) = handle.join() {
                eprintln!("{client} failed");
                std::panic::resume_unwind(panic);
            }
        }
    });
    assert_eq!(server.get("/healthz").status, 200);
}
