//! Failures must leave nothing behind and must not stop the server: clients that
//! hang up mid-upload, many writers and readers racing on one key, and guests that
//! trap, spin or ask for too much memory.

use crate::support;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{eventually, sha256_hex, Body, Connection, Server};

/// A server with the dir store (`None`), another store, or `"copy"`: the dir
/// store with uploads copied through `writer.write`, as with a store component.
fn start(store: Option<&str>) -> Server {
    match store {
        None => Server::start(),
        Some("copy") => Server::start_with(&["--copy-uploads"]),
        Some(kind) => Server::start_with(&["--store", kind]),
    }
}

#[test]
fn client_disconnect_mid_upload_stores_nothing() {
    for store in [None, Some("memory"), Some("copy")] {
        let server = start(store);
        let content = vec![42u8; 1 << 20];
        let hash = sha256_hex(&content);
        let half = &content[..content.len() / 2];
        let chunk = |bytes: &[u8]| {
            let mut c = format!("{:x}\r\n", bytes.len()).into_bytes();
            c.extend_from_slice(bytes);
            c.extend_from_slice(b"\r\n");
            c
        };
        // With a content-length the size check alone would catch it; chunked
        // uploads have no declared size, so only the abort path protects them.
        let uploads = [
            (
                format!("/cas/{hash}"),
                format!("content-length: {}", content.len()),
                half.to_vec(),
            ),
            (
                "/ccache/ab/cdef".to_string(),
                format!("content-length: {}", content.len()),
                half.to_vec(),
            ),
            (
                "/ccache/ab/chunked".to_string(),
                "transfer-encoding: chunked".to_string(),
                chunk(half),
            ),
        ];
        for (path, framing, partial) in uploads {
            let mut connection = Connection::open(&server.addr);
            connection.write_raw(
                format!("PUT {path} HTTP/1.1\r\nhost: localhost\r\n{framing}\r\n\r\n").as_bytes(),
            );
            connection.write_raw(&partial);
            std::thread::sleep(Duration::from_millis(100));
            connection.shutdown();
            assert!(
                eventually(Duration::from_secs(10), || server.temp_files().is_empty()),
                "temp file left behind: {:?}",
                server.temp_files()
            );
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                server.get(&path).status,
                404,
                "{store:?} {path}: partial upload visible"
            );
        }
        assert_eq!(server.blob_count(), 0, "{store:?}: something was stored");
        assert_eq!(server.get("/healthz").status, 200);
    }
}

#[test]
fn truncated_chunked_upload_stores_nothing() {
    for store in [None, Some("memory"), Some("copy")] {
        let server = start(store);
        let mut connection = Connection::open(&server.addr);
        connection.write_raw(
            b"PUT /ccache/chunky HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        connection.write_raw(b"400\r\n");
        connection.write_raw(&[1u8; 512]);
        connection.shutdown();
        assert!(eventually(Duration::from_secs(10), || server
            .temp_files()
            .is_empty()));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(server.get("/ccache/chunky").status, 404, "{store:?}");
        assert_eq!(server.blob_count(), 0, "{store:?}");
    }
}

/// Clients that stall mid-transfer must not hold request slots forever.
#[test]
fn stalled_clients_are_cut_off_and_free_their_slots() {
    let server = Server::start_with(&["--max-concurrent", "2", "--guest-timeout", "1"]);
    let mut stalled = Vec::new();
    for i in 0..2 {
        let mut connection = Connection::open(&server.addr);
        connection.write_raw(
            format!("PUT /ccache/stall{i} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000000\r\n\r\n")
                .as_bytes(),
        );
        connection.write_raw(&[0u8; 1000]);
        stalled.push(connection);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Both slots are taken; this request waits until the stalled ones are stopped.
    let started = std::time::Instant::now();
    assert_eq!(server.get("/healthz").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "slots were held for {:?}",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(5), || server.temp_files().is_empty()),
        "{:?}",
        server.temp_files()
    );
    assert_eq!(server.blob_count(), 0);
    assert!(
        server.log_text().contains("moved no data"),
        "{}",
        server.log_text()
    );
    drop(stalled);
}

/// A server killed in the middle of an upload leaves its temp file; the next
/// start deletes it (and serves no partial entry), so a crash loop cannot fill
/// the disk.
#[test]
fn temp_files_of_a_killed_server_are_reclaimed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", dir.path().display());
    let tmp = dir.path().join("tmp");
    let count = |path: &std::path::Path| std::fs::read_dir(path).map_or(0, |d| d.count());
    let server = Server::start_with(&["--store", &store]);
    let mut connection = Connection::open(&server.addr);
    connection.write_raw(
        b"PUT /ccache/ab/cut HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4000000\r\n\r\n",
    );
    connection.write_raw(&vec![1u8; 2_000_000]);
    assert!(eventually(Duration::from_secs(5), || count(&tmp) > 0));
    // SIGKILL while the upload is still open.
    drop(server);
    drop(connection);
    assert!(count(&tmp) > 0, "the killed server left its temp file");
    let server = Server::start_with(&["--store", &store]);
    assert_eq!(count(&tmp), 0, "reclaimed at start");
    assert_eq!(server.get("/ccache/ab/cut").status, 404);
}

/// HTTP/1.0 requests may come without `Host`; HTTP/1.1 requests need exactly
/// one (RFC 9112 §3.2), or they get 400.
#[test]
fn host_headers_as_http_wants_them() {
    let server = Server::start();
    let send = |raw: &[u8]| {
        let mut connection = Connection::open(&server.addr);
        connection.write_raw(raw);
        connection.receive(false).collect()
    };
    let response = send(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!((response.status, response.text().trim()), (200, "ok"));
    let none = send(b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n");
    assert_eq!(none.status, 400, "{}", none.text());
    let two = send(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nhost: localhost\r\n\r\n");
    assert_eq!(two.status, 400, "{}", two.text());
    let one = send(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n");
    assert_eq!(one.status, 200);
}

/// The server raises its soft descriptor limit to the hard one at start.
#[test]
fn the_descriptor_limit_is_raised_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) =
        support::serve_with_descriptor_limit(&dir.path().join("store"), 256, u64::MAX);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft raised to hard: {open_files}");
}

/// 32 threads write two versions of one key while 32 read it; every read must be
/// one whole version, never a mix or a truncation. Other keys go on alongside.
#[test]
fn concurrent_writers_and_readers_see_whole_entries() {
    for store in [None, Some("memory")] {
        let server = Arc::new(start(store));
        let versions: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..2u8)
                .map(|v| {
                    (0..256 * 1024)
                        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(v * 101))
                        .collect()
                })
                .collect(),
        );
        assert_eq!(server.put("/ccache/shared", &versions[0]).status, 200);
        let mut threads = Vec::new();
        for t in 0..32usize {
            let server = server.clone();
            let versions = versions.clone();
            threads.push(std::thread::spawn(move || {
                for round in 0..8usize {
                    let version = &versions[(t + round) % 2];
                    assert_eq!(server.put("/ccache/shared", version).status, 200);
                    let own = format!("/ccache/own/{t}-{round}");
                    let body = format!("{t}:{round}").repeat(1000);
                    assert_eq!(server.put(&own, body.as_bytes()).status, 200);
                    assert_eq!(server.get(&own).body, body.as_bytes());
                }
            }));
        }
        for _ in 0..32 {
            let server = server.clone();
            let versions = versions.clone();
            threads.push(std::thread::spawn(move || {
                for _ in 0..8 {
                    let response = server.get("/ccache/shared");
                    assert_eq!(response.status, 200);
                    assert!(
                        versions.contains(&response.body),
                        "a reader saw a mixed or partial entry of {} bytes",
                        response.body.len()
                    );
                }
            }));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(server
            .stored_files()
            .iter()
            .all(|f| !f.starts_with(server.store_dir.join("tmp"))));
    }
}

/// A component whose handler runs `body` (core wasm) instead of the cache logic.
fn misbehaving_component(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let wat = format!(
        r#"(component
  (import "wasi:http/types@0.2.12" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $request))
  (alias export $types "response-outparam" (type $outparam))
  (core module $guest
    (memory (export "memory") 1)
    (func (export "handle") (param i32 i32) {body}))
  (core instance $instance (instantiate $guest))
  (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
    (canon lift (core func $instance "handle")))
  (instance $handler (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.12" (instance $handler)))"#
    );
    let path = dir.join(format!("{name}.wat"));
    std::fs::write(&path, wat).unwrap();
    path
}

#[test]
fn memory_growth_of_request_instances_is_counted() {
    // Each request's instance grows its memory twice, then traps; instantiation
    // (the initial size) is not counted.
    let dir = tempfile::tempdir().unwrap();
    let body = "(drop (memory.grow (i32.const 1))) (drop (memory.grow (i32.const 1))) unreachable";
    let component = misbehaving_component(dir.path(), "grows", body);
    let server = Server::start_with(&["--component", component.to_str().unwrap()]);
    for _ in 0..3 {
        assert_eq!(server.get("/healthz").status, 500);
    }
    let metrics = server.get("/metrics").text();
    let grows = metrics
        .lines()
        .find_map(|line| line.strip_prefix("blobcache_guest_memory_grows_total "))
        .unwrap_or_else(|| panic!("no memory growth counter:\n{metrics}"));
    assert_eq!(grows, "6", "{metrics}");
}

#[test]
fn guest_failures_answer_500_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("trap", "unreachable", vec![], "unreachable"),
        (
            "spin",
            "(loop $forever (br $forever))",
            vec!["--guest-timeout", "1"],
            "guest time limit",
        ),
        (
            // Growing past the memory limit fails (-1), and the guest then traps.
            "grow",
            "(if (i32.eq (memory.grow (i32.const 2048)) (i32.const -1)) (then unreachable)) (loop $l (br $l))",
            vec!["--guest-memory-mib", "64", "--guest-timeout", "2"],
            "unreachable",
        ),
    ];
    for (name, body, args, logged) in cases {
        let component = misbehaving_component(dir.path(), name, body);
        let mut full_args = vec!["--component", component.to_str().unwrap()];
        full_args.extend(args);
        let mut server = Server::start_with(&full_args);
        for _ in 0..3 {
            let response = server.get("/healthz");
            assert_eq!(response.status, 500, "{name}: {}", response.text());
            assert!(response.text().contains("internal error"));
        }
        assert!(server.is_running(), "{name}: the server died");
        assert!(
            server.log_text().contains(logged),
            "{name}: log lacks {logged:?}:\n{}",
            server.log_text()
        );
    }
}

#[test]
fn a_stopping_server_finishes_the_download_under_way_then_exits() {
    use std::io::Read;
    let mut server = Server::start();
    let blob = support::noise(11, 16 << 20);
    let digest = sha256_hex(&blob);
    assert_eq!(server.put(&format!("/cas/{digest}"), &blob).status, 200);
    let mut connection = Connection::open(&server.addr);
    connection.send("GET", &format!("/cas/{digest}"), &[], Body::Empty);
    let mut incoming = connection.receive(false);
    assert_eq!(incoming.status, 200);
    let mut received = vec![0; 1 << 16];
    incoming.read_exact(&mut received).unwrap();
    server.terminate();
    // The download goes on to its end; then every event loop drains and the
    // process exits cleanly.
    incoming.read_to_end(&mut received).unwrap();
    assert_eq!(received.len(), blob.len());
    assert_eq!(sha256_hex(&received), digest);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server exits once its requests are done");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_spinning_guest_takes_turns_with_the_other_requests_of_its_thread() {
    // One event loop serves both connections. A guest spinning in wasm yields at
    // every epoch tick, so the second request (spinning too) is answered one time
    // limit after it was sent, not after the first guest's limit and then its own.
    let dir = tempfile::tempdir().unwrap();
    let component = misbehaving_component(dir.path(), "spin", "(loop $forever (br $forever))");
    let server = Server::start_with(&[
        "--component",
        component.to_str().unwrap(),
        "--guest-timeout",
        "3",
        "--threads",
        "1",
    ]);
    let addr = server.addr.clone();
    let first = std::thread::spawn(move || {
        let mut connection = Connection::open(&addr);
        connection.send("GET", "/healthz", &[], Body::Empty);
        connection.receive(false).collect().status
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = std::time::Instant::now();
    let second = server.get("/healthz");
    let waited = sent.elapsed();
    assert_eq!(second.status, 500, "{}", second.text());
    assert_eq!(first.join().unwrap(), 500);
    assert!(
        waited < Duration::from_millis(4500),
        "the second request waited {waited:?} for a guest time limit of 3 s"
    );
}

#[test]
fn a_long_transfer_is_not_cut_by_the_guest_time_limit() {
    // The time limit stops guests that spin, not transfers that move data slowly.
    let server = Server::start_with(&["--guest-timeout", "1"]);
    let length = 8u64 << 20;
    let mut connection = Connection::open(&server.addr);
    let mut source = SlowReader {
        inner: support::Noise::new(5),
        chunks: 0,
    };
    let digest = support::noise_digest(5, length);
    connection.send(
        "PUT",
        &format!("/cas/{digest}"),
        &[],
        Body::Stream {
            length,
            source: &mut source,
        },
    );
    let response = connection.receive(false).collect();
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Sends 64 KiB, then pauses, for about three seconds in all.
struct SlowReader {
    inner: support::Noise,
    chunks: u32,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.chunks += 1;
        if self.chunks.is_multiple_of(4) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let n = buf.len().min(64 * 1024);
        self.inner.read(&mut buf[..n])
    }
}

/// The server killed with SIGKILL while 16 clients upload: after a restart,
/// every acknowledged entry reads whole, every upload in flight reads whole or
/// not at all, and no temp file is left.
#[test]
fn a_server_killed_mid_uploads_loses_no_published_entry() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dir:{}", dir.path().display());
    let server = Server::start_with(&["--store", &store]);
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let attempted = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..16u64)
        .map(|id| {
            let addr = server.addr.clone();
            let (acknowledged, attempted, stop) =
                (acknowledged.clone(), attempted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let size = [3_000, 200_000, 3_000_000][(n % 3) as usize];
                    let content = support::noise(id * 1_000_000 + n, size);
                    let hash = sha256_hex(&content);
                    let path = match n % 2 {
                        0 => format!("/cas/{hash}"),
                        _ => format!("/ccache/{}/{}", &hash[..2], &hash[2..]),
                    };
                    attempted.lock().unwrap().push((path.clone(), hash.clone()));
                    let answered = std::panic::catch_unwind(|| {
                        let mut connection = Connection::open(&addr);
                        connection.send("PUT", &path, &[], Body::Bytes(&content));
                        connection.receive(false).collect().status
                    });
                    match answered {
                        Ok(status) if status / 100 == 2 => {
                            acknowledged.lock().unwrap().push((path, hash))
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    // SIGKILL (Server's drop), uploads in every state of progress.
    drop(server);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let server = Server::start_with(&["--store", &store]);
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 16,
        "only {} uploads finished",
        acknowledged.len()
    );
    for (path, hash) in &acknowledged {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}: a published entry was lost");
        assert_eq!(sha256_hex(&response.body), *hash, "{path}");
    }
    let mut absent = 0;
    for (path, hash) in attempted.lock().unwrap().iter() {
        let response = server.get(path);
        match response.status {
            200 => assert_eq!(sha256_hex(&response.body), *hash, "{path}: partial entry"),
            404 => absent += 1,
            other => panic!("{path}: {other}"),
        }
    }
    eprintln!(
        "killed mid-upload: {} acknowledged entries all whole after restart, {absent} uploads in flight absent",
        acknowledged.len()
    );
    assert!(absent > 0, "no upload was in flight at the kill");
}
