//! The server under abuse, tried as an attacker would: uploads that trickle,
//! more requests than slots, idle connections by the hundred, huge request
//! heads, downloads read slowly. Each must leave the server answering others.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{self, sha256_hex, Body, Connection, Server};

/// Opens an upload of `length` bytes and sends its head and one byte.
fn open_upload(server: &Server, path: &str, length: u64) -> TcpStream {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {length}\r\n\r\nx"
    )
    .unwrap();
    stream
}

/// The status of the response `stream` receives within `timeout`, if any.
fn status_within(stream: &mut TcpStream, timeout: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn metric(server: &Server, line_start: &str) -> f64 {
    let text = server.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Uploads may hold seven eighths of the slots, so however many trickle, reads
/// and health checks still get through; beyond the bounded queue, requests get
/// 503 with `Retry-After` at once, and a request that waits longer than the
/// queue timeout gets the same.
#[test]
fn slow_uploads_leave_slots_to_reads_and_overflow_gets_503() {
    let server = Server::start_with(&[
        "--max-concurrent",
        "8",
        "--max-queued",
        "2",
        "--queue-timeout",
        "2",
    ]);
    // Seven uploads take every upload slot and send nothing more.
    let _holding: Vec<TcpStream> = (0..7)
        .map(|i| open_upload(&server, &format!("/ccache/hold{i}"), 1 << 20))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Two more wait in the queue; the next is refused at once.
    let mut queued: Vec<TcpStream> = (0..2)
        .map(|i| open_upload(&server, &format!("/ccache/wait{i}"), 1 << 20))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut refused = open_upload(&server, "/ccache/refused", 1 << 20);
    assert_eq!(
        status_within(&mut refused, Duration::from_secs(1)),
        Some(503)
    );
    let mut rest = String::new();
    refused
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let _ = refused.read_to_string(&mut rest);
    assert!(
        rest.to_ascii_lowercase().contains("retry-after: 1"),
        "{rest}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Reads are not held up by the uploads.
    let started = Instant::now();
    assert_eq!(server.get("/healthz").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reads waited {:?}",
        started.elapsed()
    );

    // The queued uploads give up after the queue timeout.
    for stream in &mut queued {
        assert_eq!(status_within(stream, Duration::from_secs(5)), Some(503));
    }
    assert!(metric(&server, "blobcache_errors_total{kind=\"overloaded\"}") >= 3.0);
    assert_eq!(server.blob_count(), 0);
}

/// A client trickling a byte at a time moves data, so the no-progress limit
/// never fires; the minimum transfer rate cuts it off after the grace window
/// (408), and nothing is stored.
#[test]
fn trickling_uploads_are_cut_off_by_the_minimum_rate() {
    let server = Server::start_with(&["--guest-timeout", "2", "--min-transfer-rate", "1024"]);
    let mut stream = open_upload(&server, "/ccache/ab/trickle", 100_000);
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if writer.write_all(b"y").is_err() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        started.elapsed()
    });
    let status = status_within(&mut stream, Duration::from_secs(20));
    drop(stream);
    assert_eq!(status, Some(408), "the trickling upload was not stopped");
    let _ = trickle.join();
    assert!(
        server
            .log_text()
            .contains("below the minimum transfer rate"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.get("/ccache/ab/trickle").status, 404);
    assert_eq!(server.blob_count(), 0);
    assert!(metric(&server, "blobcache_errors_total{kind=\"too_slow\"}") >= 1.0);
}

/// Hundreds of idle connections against a server with few descriptors: idle
/// ones are shed to make room, so a health check still gets through at once
/// instead of waiting for their idle timeout.
#[test]
fn idle_connections_are_shed_when_descriptors_run_short() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) =
        support::serve_with_descriptor_limit(&dir.path().join("store"), 160, 160);
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 200, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut connection = Connection::open(&addr);
    connection.send("GET", "/healthz", &[], Body::Empty);
    let status = connection.receive(false).collect().status;
    let waited = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_secs(5),
        "the health check waited {waited:?}"
    );
}

/// Request heads are bounded: a huge header or URL gets 431 without reaching
/// the component, and the server goes on serving.
#[test]
fn oversized_request_heads_are_refused() {
    let server = Server::start();
    let big = "a".repeat(100 << 10);
    let cases = [
        format!("GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n"),
        format!("GET /ccache/{big} HTTP/1.1\r\nhost: localhost\r\n\r\n"),
        format!(
            "GET /healthz HTTP/1.1\r\nhost: localhost\r\n{}\r\n",
            (0..200)
                .map(|i| format!("x-h{i}: v\r\n"))
                .collect::<String>()
        ),
    ];
    for (i, request) in cases.iter().enumerate() {
        let mut stream = TcpStream::connect(&server.addr).unwrap();
        let _ = stream.write_all(request.as_bytes());
        let status = status_within(&mut stream, Duration::from_secs(5));
        assert_eq!(status, Some(431), "case {i}");
    }
    assert_eq!(server.get("/healthz").status, 200);
}

/// A download read slowly but steadily is progress even while the store has
/// nothing new to read: the time limit counts what the client takes.
#[test]
fn a_download_read_slowly_is_not_stopped() {
    let server = Server::start_with(&["--guest-timeout", "1"]);
    let content: Vec<u8> = (0..6u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let hash = sha256_hex(&content);
    assert_eq!(server.put(&format!("/cas/{hash}"), &content).status, 200);
    // A small receive window, so the kernel cannot take the whole blob at once.
    let socket = socket_with_small_receive_buffer(&server.addr);
    let mut stream = socket;
    write!(
        stream,
        "GET /cas/{hash} HTTP/1.1\r\nhost: localhost\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // 192 KiB/s: each of the store's 256 KiB chunks takes over a second to
    // drain, once the blob has filled the socket buffers (about 4 MiB here).
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 << 10];
    let started = Instant::now();
    let body_start = |received: &[u8]| {
        received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|end| end + 4)
    };
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
        let due = Duration::from_secs_f64(received.len() as f64 / (192.0 * 1024.0));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if body_start(&received).is_some_and(|start| received.len() >= start + content.len()) {
            break;
        }
    }
    let body_start = body_start(&received).unwrap();
    assert_eq!(
        received.len() - body_start,
        content.len(),
        "the download was cut: {}",
        server.log_text()
    );
    assert_eq!(sha256_hex(&received[body_start..]), hash);
}

fn socket_with_small_receive_buffer(addr: &str) -> TcpStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 16 << 10;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sockaddr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "connect");
        let stream = TcpStream::from_raw_fd(fd);
        assert!(stream.as_raw_fd() >= 0);
        stream
    }
}
