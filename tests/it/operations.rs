//! What operators see: `/metrics` after known traffic, and one access-log line
//! per request that never names a token, key or signature.

use crate::support::{sha256_hex, Body, Server};

/// The value of the sample whose line starts with `name_and_labels`, or 0.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|line| {
            line.strip_prefix(name_and_labels)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_count_known_traffic() {
    let server = Server::start();
    let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000 + i as usize]).collect();
    for blob in &blobs {
        let response = server.put(&format!("/cas/{}", sha256_hex(blob)), blob);
        assert_eq!(response.status, 200);
    }
    let before = server.get("/metrics");
    assert_eq!(before.status, 200);
    assert!(before
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let before = before.text();

    // Known traffic: 5 hits, 4 misses, one ccache hit, one bad request.
    for blob in blobs.iter().chain(&blobs[..2]) {
        let response = server.get(&format!("/cas/{}", sha256_hex(blob)));
        assert_eq!(response.status, 200);
    }
    for i in 0..4u8 {
        let response = server.get(&format!("/cas/{}", sha256_hex(&[i, 9, 9])));
        assert_eq!(response.status, 404);
    }
    assert_eq!(
        server.put("/ccache/ab/cdef", b"ccache entry").status / 100,
        2
    );
    assert_eq!(server.get("/ccache/ab/cdef").status, 200);
    assert_eq!(
        server
            .request(
                "GET",
                "/healthz",
                &[("host", "a"), ("host", "b")],
                Body::Empty
            )
            .status,
        400
    );

    let after = server.get("/metrics").text();
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(
        delta("blobcache_requests_total{protocol=\"bazel\",method=\"GET\",status=\"200\"}"),
        5.0,
        "{after}"
    );
    assert_eq!(
        delta("blobcache_requests_total{protocol=\"bazel\",method=\"GET\",status=\"404\"}"),
        4.0
    );
    assert_eq!(
        delta("blobcache_requests_total{protocol=\"ccache\",method=\"GET\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        delta("blobcache_requests_total{protocol=\"host\",method=\"GET\",status=\"400\"}"),
        1.0
    );
    assert_eq!(delta("blobcache_lookups_total{result=\"hit\"}"), 6.0);
    assert_eq!(delta("blobcache_lookups_total{result=\"miss\"}"), 4.0);
    let hit_bytes: usize =
        blobs.iter().map(Vec::len).sum::<usize>() + blobs[0].len() + blobs[1].len() + 12;
    assert!(delta("blobcache_sent_bytes_total") >= hit_bytes as f64);
    assert!(delta("blobcache_received_bytes_total") >= 12.0);
    assert_eq!(
        delta("blobcache_store_call_duration_seconds_count{operation=\"open\"}"),
        10.0
    );
    assert!(delta("blobcache_store_call_duration_seconds_count{operation=\"finish\"}") >= 1.0);
    assert!(delta("blobcache_instance_duration_seconds_count") >= 11.0);
    assert_eq!(
        delta("blobcache_errors_total{kind=\"bad_request_head\"}"),
        1.0
    );
    // Small requests fit in the component's initial memory: no instance grows it.
    assert!(
        after
            .lines()
            .any(|line| line == "blobcache_guest_memory_grows_total 0"),
        "{after}"
    );
    assert_eq!(sample(&after, "blobcache_requests_in_flight"), 0.0);
    assert_eq!(sample(&after, "blobcache_requests_queued"), 0.0);
    assert!(sample(&after, "blobcache_connections_open") >= 1.0);
    assert!(sample(&after, "blobcache_uptime_seconds") > 0.0);
    assert!(after.ends_with("# EOF\n"));
}

#[test]
fn a_log_written_to_a_file_has_no_terminal_colours() {
    let mut server = Server::start();
    assert_eq!(server.get("/healthz").status, 200);
    assert!(crate::support::eventually(
        std::time::Duration::from_secs(5),
        || server.log_text().contains("blobcache::access")
    ));
    server.terminate();
    assert!(server
        .wait_exit(std::time::Duration::from_secs(15))
        .is_some());
    let log = server.log_text();
    assert!(!log.contains('\x1b'), "{log}");
    // Every thread drains, one line says so.
    assert_eq!(log.matches("shutting down").count(), 1, "{log}");
}

#[test]
fn access_log_has_a_line_per_request_and_no_secrets() {
    let token = "tok3n-Zq8vXbW2mL5nR7pK";
    let server = Server::start_with_env(
        &["--log-format", "json"],
        &[("BLOBCACHE_TOKENS", &format!("ci rw * {token}"))],
    );
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let key = "/ccache/ke/ymarker4d9a1c";
    let put = server.request("PUT", key, &auth, Body::Bytes(b"entry"));
    assert_eq!(put.status / 100, 2);
    assert_eq!(server.request("GET", key, &auth, Body::Empty).status, 200);
    assert_eq!(server.get(key).status, 401);
    // Wait for the last line: it is written when the response body is done.
    assert!(crate::support::eventually(
        std::time::Duration::from_secs(5),
        || server.log_text().matches("blobcache::access").count() >= 3
    ));
    let log = server.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .filter(|line: &serde_json::Value| line["target"] == "blobcache::access")
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[1..], [200, 401]);
    for line in &lines {
        assert_eq!(line["protocol"], "ccache", "{line}");
        let duration = line["duration_ms"]
            .as_f64()
            .expect("duration_ms is a number");
        // Milliseconds to the microsecond: no binary-fraction tails in the log.
        assert!(
            line["duration_ms"]
                .to_string()
                .split('.')
                .nth(1)
                .is_none_or(|d| d.len() <= 3),
            "{line}"
        );
        assert!(duration >= 0.0, "{line}");
        assert_eq!(line["peer"], "127.0.0.1");
    }
    assert_eq!(lines[0]["method"], "PUT");
    assert_eq!(lines[0]["bytes_in"], 5);
    assert_eq!(lines[1]["bytes_out"], 5);
    for secret in [token, "ymarker4d9a1c", "Bearer"] {
        assert!(!log.contains(secret), "the log names {secret:?}:\n{log}");
    }
}
