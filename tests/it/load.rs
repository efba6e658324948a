//! Load with faults: many clients at once mixing hits, misses and uploads over
//! several protocols, against the directory store and against Azure (Azurite)
//! through the fault proxy (503s, dropped connections, bodies cut mid-way).
//! Every body read is checked against its hash; afterwards every key written
//! must read whole or not at all; the server must still be up.
//!
//! `BLOBCACHE_LOAD_CLIENTS` and `BLOBCACHE_LOAD_SECONDS` size a run (defaults:
//! 200 clients, 8 s, to stay within the CI budget); `bench/load.py` runs it for
//! 60 s and prints the figures.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::{noise, sha256_hex, Azurite, Body, Connection, Server};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    uploads: AtomicU64,
    /// 5xx, 503 with Retry-After and 408: clean refusals.
    refused: AtomicU64,
    /// Downloads aborted after their head (their length betrays them).
    aborted: AtomicU64,
    /// A 200 whose body is not the content written: must stay 0.
    corrupt: AtomicU64,
    /// Answers no HTTP client could make sense of: must stay 0.
    unclean: AtomicU64,
    bytes: AtomicU64,
}

/// What was written under each path (its content's hash): acknowledged, and
/// refused (which must read whole or not at all).
#[derive(Default)]
struct Keys {
    acknowledged: HashMap<String, String>,
    refused: HashMap<String, String>,
}

type Written = Mutex<Keys>;

/// A deterministic small random number generator per client.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn upload_size(dice: &mut Dice) -> usize {
    match dice.next() % 100 {
        0..=59 => 1024 + (dice.next() % 4096) as usize,
        60..=94 => 64 * 1024 + (dice.next() % (256 * 1024)) as usize,
        _ => (1 << 20) + (dice.next() % (2 << 20)) as usize,
    }
}

/// One request on a fresh connection; the status and body, or why it failed.
fn exchange(addr: &str, method: &str, path: &str, body: Body) -> Result<(u16, Vec<u8>), String> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut connection = Connection::open(addr);
        connection.send(method, path, &[], body);
        let mut incoming = connection.receive(false);
        let status = incoming.status;
        let expected = incoming.remaining;
        let mut body = Vec::new();
        let _ = incoming.read_to_end(&mut body);
        (status, body, expected)
    }));
    match result {
        Ok((status, body, expected)) if body.len() as u64 == expected => Ok((status, body)),
        Ok((status, body, expected)) => Err(format!(
            "aborted {status}: {} of {expected} bytes",
            body.len()
        )),
        Err(_) => Err("no answer".into()),
    }
}

fn client(addr: &str, id: u64, until: Instant, written: &Written, tally: &Tally) {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ ((id + 1) * 0x1000_0001));
    let mut counter = 0u64;
    while Instant::now() < until {
        counter += 1;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let roll = dice.next() % 100;
        let known: Option<(String, String)> = (roll < 45)
            .then(|| {
                let written = written.lock().unwrap();
                let n = written.acknowledged.len();
                (n > 0).then(|| {
                    let pick = (dice.next() as usize) % n.min(512);
                    let (path, hash) = written.acknowledged.iter().nth(pick).unwrap();
                    (path.clone(), hash.clone())
                })
            })
            .flatten();
        if let Some((path, hash)) = known {
            match exchange(addr, "GET", &path, Body::Empty) {
                Ok((200, body)) if sha256_hex(&body) == hash => {
                    tally.hits.fetch_add(1, Ordering::Relaxed);
                    tally.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                }
                Ok((200, _)) => {
                    tally.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, _)) if status >= 500 || status == 408 => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, body)) => {
                    eprintln!("hit {path}: {status} {}", String::from_utf8_lossy(&body));
                    tally.unclean.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) if why.starts_with("aborted 200") => {
                    tally.aborted.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    eprintln!("hit {path}: {why}");
                    tally.unclean.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if roll < 60 {
            let absent = sha256_hex(format!("absent {id} {counter}").as_bytes());
            let path = match roll % 2 {
                0 => format!("/cas/{absent}"),
                _ => format!("/ccache/{}/{}", &absent[..2], &absent[2..]),
            };
            match exchange(addr, "GET", &path, Body::Empty) {
                Ok((404, _)) => {
                    tally.misses.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, _)) if status >= 500 => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    eprintln!("miss {path}: {other:?}");
                    tally.unclean.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let content = noise((id << 32) | counter, upload_size(&mut dice));
            let hash = sha256_hex(&content);
            let path = match dice.next() % 3 {
                0 => format!("/cas/{hash}"),
                1 => format!("/ccache/{}/{}", &hash[..2], &hash[2..]),
                _ => format!("/gradle/{}", &hash[..32]),
            };
            match exchange(addr, "PUT", &path, Body::Bytes(&content)) {
                Ok((status, _)) if status / 100 == 2 => {
                    tally.uploads.fetch_add(1, Ordering::Relaxed);
                    tally
                        .bytes
                        .fetch_add(content.len() as u64, Ordering::Relaxed);
                    written.lock().unwrap().acknowledged.insert(path, hash);
                }
                Ok((status, _)) if status >= 500 || status == 408 => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    // Refused: it must read whole or not at all later.
                    written.lock().unwrap().refused.insert(path, hash);
                }
                other => {
                    eprintln!("upload {path}: {other:?}");
                    tally.unclean.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Runs the load; then checks every written key, the server's health, and
/// that nothing was corrupt, partial or unclean.
fn run(server: &Server, name: &str, faults: Option<&FaultProxy>) {
    let clients = setting("BLOBCACHE_LOAD_CLIENTS", 200);
    let seconds = setting("BLOBCACHE_LOAD_SECONDS", 8);
    let written: Arc<Written> = Arc::default();
    let tally: Arc<Tally> = Arc::default();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|id| {
            let (addr, written, tally) = (server.addr.clone(), written.clone(), tally.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || client(&addr, id, until, &written, &tally))
                .unwrap()
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(proxy) = faults {
        proxy.set_rule(|_| None);
    }
    // Every acknowledged key reads whole; every refused one whole or not at all.
    let mut partial = 0;
    let mut lost = 0;
    let mut refused_absent = 0;
    let keys = written.lock().unwrap();
    let all = keys
        .acknowledged
        .iter()
        .map(|k| (k, true))
        .chain(keys.refused.iter().map(|k| (k, false)));
    for ((path, hash), acknowledged) in all {
        match exchange(&server.addr, "GET", path, Body::Empty) {
            Ok((200, body)) if sha256_hex(&body) == *hash => {}
            Ok((404, _)) if acknowledged => lost += 1,
            Ok((404, _)) => refused_absent += 1,
            other => {
                eprintln!(
                    "after the run {path}: {:?}",
                    other.map(|(s, b)| (s, b.len()))
                );
                partial += 1;
            }
        }
    }
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    eprintln!(
        "load {name}: {clients} clients, {elapsed:.0} s: {} requests ({:.0}/s), {} hits, {} misses, \
         {} uploads, {:.0} MiB moved; refused cleanly {}, downloads aborted mid-body {}, \
         corrupt {}, unclean {}, partial entries {partial}, acknowledged entries lost {lost}, \
         refused uploads absent {refused_absent}; faults injected {}; server peak RSS {} MiB",
        load(&tally.requests),
        load(&tally.requests) as f64 / elapsed,
        load(&tally.hits),
        load(&tally.misses),
        load(&tally.uploads),
        load(&tally.bytes) as f64 / (1 << 20) as f64,
        load(&tally.refused),
        load(&tally.aborted),
        load(&tally.corrupt),
        load(&tally.unclean),
        faults.map_or(0, |p| p.injected.load(Ordering::Relaxed)),
        server.peak_rss() >> 20,
    );
    assert_eq!(load(&tally.corrupt), 0, "{name}: corrupt reads");
    assert_eq!(load(&tally.unclean), 0, "{name}: unclean answers");
    assert_eq!(partial, 0, "{name}: partial entries");
    assert_eq!(lost, 0, "{name}: acknowledged entries lost");
    assert!(load(&tally.hits) > 0 && load(&tally.uploads) > 0 && load(&tally.misses) > 0);
    assert_eq!(server.get("/healthz").status, 200);
    if faults.is_none() {
        assert_eq!(load(&tally.refused), 0, "{name}: refusals without faults");
    }
}

#[test]
fn load_on_the_directory_store() {
    let server = Server::start();
    run(&server, "dir", None);
}

#[test]
fn load_on_azure_with_faults() {
    let azurite = Azurite::start();
    let proxy = FaultProxy::start(azurite.port);
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
        blobcache_azure::account::DEV_KEY,
        proxy.endpoint()
    );
    let server = Server::start_with_env(
        &[
            "--store",
            "azure",
            "--azure-create-container",
            "--azure-container",
            "load",
        ],
        &[("AZURE_STORAGE_CONNECTION_STRING", &connection)],
    );
    // One Azure request in eight fails in one of its ways.
    let mut count = 0u64;
    proxy.set_rule(move |request| {
        count += 1;
        match count % 24 {
            0 => Some(Fault::Status(503, "ServerBusy")),
            3 => Some(Fault::Status(500, "OperationTimedOut")),
            6 => Some(Fault::Drop),
            9 if request.method == "GET" => Some(Fault::CutBody),
            _ => None,
        }
    });
    run(&server, "azure+faults", Some(&proxy));
}
