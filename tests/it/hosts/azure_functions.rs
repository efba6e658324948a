//! blobcache as an Azure Functions custom handler, started the way the Functions
//! host starts it: arguments from the repo's `host.json`, settings from its
//! `local.settings.json`, the port from `FUNCTIONS_CUSTOMHANDLER_PORT`; readiness
//! probed on `/`; requests proxied through with the headers the host adds.

use std::time::Duration;

use crate::support::{self, eventually, free_port, repo_root, sha256_hex, Azurite, Body, Server};

fn template(path: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/azure-functions").join(path)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

#[test]
fn runs_as_a_custom_handler() {
    let host = template("host.json");
    let handler = &host["customHandler"];
    assert_eq!(handler["enableProxyingHttpRequest"], true);
    assert_eq!(handler["description"]["defaultExecutablePath"], "blobcache");
    assert_eq!(
        host["extensions"]["http"]["routePrefix"], "",
        "cache paths must arrive unprefixed"
    );
    let function = template("blobcache/function.json");
    assert_eq!(function["bindings"][0]["route"], "{*path}");

    let arguments: Vec<String> = handler["description"]["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(arguments.first().map(String::as_str), Some("serve"));
    let args: Vec<&str> = arguments[1..].iter().map(String::as_str).collect();

    let azurite = Azurite::start();
    let settings = template("local.settings.json");
    let mut env: Vec<(String, String)> = settings["Values"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    // The settings point at Azurite's default port; this one runs on a free port.
    for (name, value) in env.iter_mut() {
        if name == "AZURE_STORAGE_CONNECTION_STRING" {
            *value = azurite.connection_string();
        }
    }
    let port = free_port();
    env.push(("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port.to_string()));
    // Functions exposes the loopback listener to the world: without tokens the
    // handler refuses to start.
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = support::start_failure_listening("127.0.0.1:0", &args, &env_refs);
    assert!(refused.contains("behind Azure Functions"), "{refused}");
    // An app setting gives the tokens.
    env.push((
        "BLOBCACHE_TOKENS".into(),
        "builders read-write * functions-secret".into(),
    ));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with_env(&args, &env_refs);
    assert_eq!(
        server.addr,
        format!("127.0.0.1:{port}"),
        "listens where the Functions host says"
    );

    // The host waits for / to answer before it forwards anything.
    assert!(eventually(Duration::from_secs(10), || server
        .get("/")
        .status
        == 200));

    // Proxied requests keep their path and the public Host, and gain the host's
    // forwarding headers.
    let forwarded = [
        ("host", "blobcache-app.azurewebsites.net"),
        ("authorization", "Bearer functions-secret"),
        ("x-forwarded-for", "203.0.113.7:51234"),
        ("x-forwarded-proto", "https"),
        ("x-original-url", "/cas/x"),
        ("x-arr-log-id", "0b3d9b4f-3a52-4c0e-9d5c-000000000000"),
        ("client-ip", "203.0.113.7:51234"),
    ];
    let content = b"object file from a Functions deployment";
    let hash = sha256_hex(content);
    let put = server.request(
        "PUT",
        &format!("/cas/{hash}"),
        &forwarded,
        Body::Bytes(content),
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let get = server.request("GET", &format!("/cas/{hash}"), &forwarded, Body::Empty);
    assert_eq!((get.status, get.body.as_slice()), (200, content.as_slice()));
    assert_eq!(
        server
            .request("GET", "/ccache/ab/cdef", &forwarded, Body::Empty)
            .status,
        404
    );
    let anonymous = server.request("GET", &format!("/cas/{hash}"), &forwarded[2..], Body::Empty);
    assert_eq!(anonymous.status, 401);
    let status: serde_json::Value = serde_json::from_slice(&server.get("/status").body).unwrap();
    assert_eq!(status["store"]["kind"], "azure");
}
