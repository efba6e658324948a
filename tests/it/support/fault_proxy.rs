//! A small HTTP/1.1 proxy that sits between blobcache and Azurite and injects the
//! failures Azure produces in real life: throttling (503 ServerBusy), internal
//! timeouts (500 OperationTimedOut), slow answers, connections dropped before the
//! answer and responses cut off mid-body. A rule decides, request by request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer this status with this Azure error code, without forwarding.
    Status(u16, &'static str),
    /// Wait, then forward.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
    /// Forward, then send the head and half the body of the answer, and close.
    CutBody,
}

/// The request line of a proxied request, and its number (from 0).
pub struct Seen {
    pub method: String,
    pub target: String,
    pub number: usize,
}

type Rule = Box<dyn FnMut(&Seen) -> Option<Fault> + Send>;

pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    rule: Arc<Mutex<Rule>>,
    /// Faults injected so far.
    pub injected: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(|_| None)));
        let injected = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(AtomicUsize::new(0));
        let (stop2, rule2, injected2) = (stop.clone(), rule.clone(), injected.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (rule, injected, counter) =
                            (rule2.clone(), injected2.clone(), counter.clone());
                        std::thread::spawn(move || {
                            serve(client, upstream, rule, injected, counter)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            rule,
            injected,
        }
    }

    /// Replaces the rule (the default forwards everything).
    pub fn set_rule(&self, rule: impl FnMut(&Seen) -> Option<Fault> + Send + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    client: TcpStream,
    upstream: u16,
    rule: Arc<Mutex<Rule>>,
    injected: Arc<AtomicUsize>,
    counter: Arc<AtomicUsize>,
) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    loop {
        let Some((head, body)) = read_message(&mut reader, false) else {
            return;
        };
        let request_line = head.lines().next().unwrap_or("").to_string();
        let mut words = request_line.split_whitespace();
        let seen = Seen {
            method: words.next().unwrap_or("").to_string(),
            target: words.next().unwrap_or("").to_string(),
            number: counter.fetch_add(1, Ordering::SeqCst),
        };
        let fault = (rule.lock().unwrap())(&seen);
        if fault.is_some() {
            injected.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Some(Fault::Status(status, code)) => {
                let xml = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected fault</Message></Error>");
                let body = if seen.method == "HEAD" {
                    String::new()
                } else {
                    xml
                };
                let answer = format!(
                    "HTTP/1.1 {status} Injected\r\nx-ms-error-code: {code}\r\nx-ms-request-id: fault\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Some(Fault::Drop) => return,
            Some(Fault::Delay(delay)) => std::thread::sleep(delay),
            Some(Fault::CutBody) | None => {}
        }
        let Some((response_head, response_body)) =
            forward(upstream, &head, &body, seen.method == "HEAD")
        else {
            return;
        };
        let cut = fault == Some(Fault::CutBody) && response_body.len() > 1;
        let sent = response_body.len() / if cut { 2 } else { 1 };
        if client.write_all(response_head.as_bytes()).is_err()
            || client.write_all(&response_body[..sent]).is_err()
        {
            return;
        }
        if cut {
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Sends one request upstream on a fresh connection; the answer is re-framed
/// with a content-length.
fn forward(upstream: u16, head: &str, body: &[u8], head_only: bool) -> Option<(String, Vec<u8>)> {
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    let mut request = String::new();
    for line in head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
    {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("connection: close\r\n\r\n");
    server.write_all(request.as_bytes()).ok()?;
    server.write_all(body).ok()?;
    let mut reader = BufReader::new(server);
    let (response_head, response_body) = read_message(&mut reader, head_only)?;
    let mut out = String::new();
    for line in response_head.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") || lower.starts_with("connection:") {
            continue;
        }
        if lower.starts_with("content-length:") && !head_only {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !head_only {
        out.push_str(&format!("content-length: {}\r\n", response_body.len()));
    }
    out.push_str("\r\n");
    Some((out, response_body))
}

/// Reads a request or response: head (without the blank line) and whole body.
fn read_message(reader: &mut BufReader<TcpStream>, head_only: bool) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let status_line = head.lines().next().unwrap_or("");
    let no_body = head_only || status_line.contains(" 204 ") || status_line.contains(" 304 ");
    let mut body = Vec::new();
    if no_body {
    } else if let Some(length) = header("content-length") {
        body = vec![0; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if status_line.starts_with("HTTP/") {
        reader.read_to_end(&mut body).ok()?;
    }
    Some((head, body))
}

/// When Azure keeps failing: a clean, short 503 naming the cause, nothing
/// partial ever readable afterwards, and the server keeps serving. `big` spans
/// several blocks.
pub fn check_permanent_faults(server: &super::Server, proxy: &FaultProxy, big: &[u8]) {
    proxy.set_rule(|_| Some(Fault::Status(503, "ServerBusy")));
    let put = server.put("/ccache/always", b"small");
    assert_eq!(put.status, 503, "{}", put.text());
    assert!(put.text().contains("ServerBusy"), "{}", put.text());
    let get = server.get("/ccache/always");
    assert_eq!(get.status, 503, "{}", get.text());
    assert!(get.body.len() < 1024);

    // Blocks staged, but the commit keeps failing: nothing is visible.
    proxy.set_rule(|r| {
        r.target
            .contains("comp=blocklist")
            .then_some(Fault::Status(500, "OperationTimedOut"))
    });
    assert_eq!(server.put("/ccache/uncommitted", big).status, 503);
    // A block keeps failing: the commit is never attempted.
    proxy.set_rule(|r| r.target.contains("comp=block&").then_some(Fault::Drop));
    assert!(server.put("/ccache/blockless", big).status >= 500);

    proxy.set_rule(|_| None);
    for path in ["/ccache/always", "/ccache/uncommitted", "/ccache/blockless"] {
        assert_eq!(server.get(path).status, 404, "{path} became visible");
    }
    assert_eq!(server.get("/healthz").status, 200);
}

/// The first attempt of every distinct request fails in one of Azure's ways
/// (with `cut_bodies`, downloads are also cut mid-body); `big` (several blocks),
/// a small AC entry and its HEAD must all get through, byte for byte.
pub fn check_transient_faults(
    server: &super::Server,
    proxy: &FaultProxy,
    big: &[u8],
    cut_bodies: bool,
) {
    let mut seen = std::collections::HashSet::new();
    let mut kind = 0usize;
    proxy.set_rule(move |request| {
        if !seen.insert(format!("{} {}", request.method, request.target)) {
            return None;
        }
        kind += 1;
        Some(match kind % 5 {
            0 => Fault::Status(503, "ServerBusy"),
            1 => Fault::Status(500, "OperationTimedOut"),
            2 => Fault::Drop,
            3 => Fault::Delay(Duration::from_millis(300)),
            _ if cut_bodies && request.method == "GET" => Fault::CutBody,
            _ => Fault::Status(503, "ServerBusy"),
        })
    });
    let response = server.put("/ccache/big", big);
    assert_eq!(response.status, 200, "{}", response.text());
    let hit = server.get("/ccache/big");
    assert_eq!(hit.status, 200);
    assert!(hit.body == big, "the download differs after faults");
    let small = b"action result";
    let ac = format!("/ac/{}", super::sha256_hex(small));
    assert_eq!(server.put(&ac, small).status, 200);
    assert_eq!(server.get(&ac).body, small);
    assert_eq!(server.head(&ac).status, 200);
    assert!(
        proxy.injected.load(Ordering::SeqCst) >= 8,
        "too few faults were injected"
    );
}
