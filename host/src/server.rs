//! The HTTP/1.1 server in front of the runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::limits::{ConnectionBytes, CountedIo};
use crate::runtime::{text_response, Runtime};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A new connection that has not started a request within this long may be
/// closed when connections run short.
const SHED_GRACE: Duration = Duration::from_millis(250);
/// Bytes of request head (request line and headers) accepted; a longer head
/// gets 431. Header fields are limited to hyper's default of 100 (more get
/// 431 too).
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// How the server treats requests before they reach the component.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Refuse requests whose `Host` is not a loopback name (`localhost`,
    /// `*.localhost`, `127.0.0.0/8`, `[::1]`): for a server bound to loopback,
    /// where any other name means a web page reached it through DNS rebinding.
    pub loopback_hosts_only: bool,
    /// How long a connection may go without a complete request head: idle
    /// keep-alive connections, and clients sending their headers slowly.
    pub idle_timeout: Duration,
    /// Connections kept open. From nine tenths of it on, idle connections are
    /// closed to make room; at the limit, new connections are closed at once.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            loopback_hosts_only: false,
            idle_timeout: Duration::from_secs(30),
            max_connections: 16_384,
        }
    }
}

/// The open connections, and the signal that asks idle ones to close.
struct Connections {
    open: AtomicUsize,
    max: usize,
    shed: tokio::sync::watch::Sender<()>,
}

impl Connections {
    /// Counts a new connection; false if it must be refused.
    fn admit(&self) -> bool {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        if open >= self.max - self.max / 10 {
            // Under pressure: every connection not serving a request closes.
            self.shed.send_replace(());
        }
        if open > self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, then lets open
/// connections finish their current request (idle keep-alive connections close at once).
pub async fn serve(
    listener: TcpListener,
    runtime: Runtime,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = Server::new(options);
    tokio::select! {
        () = server.accept(listener, runtime) => {}
        () = shutdown => {}
    }
    server.stop();
    server.drain().await;
    Ok(())
}

/// [`serve`] on `threads` threads, each running its own single-threaded tokio
/// runtime that accepts from the same listening socket, as nginx's workers do.
/// A connection stays on the thread that accepted it: its requests never wake
/// another thread, which on a small machine costs more than the request itself.
/// The thread least busy tends to accept first, so connections spread by load.
pub async fn serve_on_threads(
    listener: std::net::TcpListener,
    threads: usize,
    runtime: Runtime,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let server = Arc::new(Server::new(options));
    let mut workers = Vec::new();
    for index in 0..threads.max(1) {
        let listener = listener.try_clone()?;
        let server = server.clone();
        let runtime = runtime.clone();
        let worker = std::thread::Builder::new()
            .name(format!("blobcache-serve-{index}"))
            .spawn(move || -> anyhow::Result<()> {
                // However this thread ends (an error, a panic), the others stop too.
                let _stop_all = StopAll(server.clone());
                let tokio = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                tokio.block_on(async {
                    let listener = TcpListener::from_std(listener)?;
                    server.accept(listener, runtime).await;
                    server.drain().await;
                    Ok(())
                })
            })?;
        workers.push(worker);
    }
    tokio::select! {
        () = shutdown => {}
        () = server.thread_ended.notified() => {
            tracing::error!("a server thread ended; stopping the others");
        }
    }
    server.stop();
    let results = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a server thread panicked")))
            })
            .collect::<Vec<_>>()
    })
    .await?;
    results.into_iter().collect()
}

/// Stops every thread's accept loop when dropped, and tells the caller of
/// [`serve_on_threads`] that a thread ended.
struct StopAll(Arc<Server>);

impl Drop for StopAll {
    fn drop(&mut self) {
        self.0.stop();
        self.0.thread_ended.notify_one();
    }
}

/// What the threads serving one listener share: the open connections, and the
/// signal to stop.
struct Server {
    options: ServeOptions,
    connections: Arc<Connections>,
    /// Tells accept loops to stop and every connection to finish its response and close.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Signalled when a serving thread ends.
    thread_ended: tokio::sync::Notify,
    /// Whether the drain timed out (said once, not by every thread).
    gave_up: std::sync::atomic::AtomicBool,
}

impl Server {
    fn new(options: ServeOptions) -> Server {
        Server {
            options,
            connections: Arc::new(Connections {
                open: AtomicUsize::new(0),
                max: options.max_connections.max(2),
                shed: tokio::sync::watch::Sender::new(()),
            }),
            stopping: tokio::sync::watch::Sender::new(false),
            thread_ended: tokio::sync::Notify::new(),
            gave_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn stop(&self) {
        let was_stopping = self.stopping.send_replace(true);
        if !was_stopping {
            tracing::info!("shutting down: waiting for open requests");
        }
    }

    /// Waits (up to the drain timeout) for open connections to close; every
    /// serving thread does, as its connections run on its own event loop.
    async fn drain(&self) {
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.connections.open.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if drained.await.is_err() && !self.gave_up.swap(true, Ordering::Relaxed) {
            tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
    }

    /// Accepts connections until [`Server::stop`], serving each in a task of
    /// the current runtime.
    async fn accept(&self, listener: TcpListener, runtime: Runtime) {
        let connections = &self.connections;
        let mut stop_accepting = self.stopping.subscribe();
        loop {
            if *stop_accepting.borrow_and_update() {
                return;
            }
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: make room, back off instead of spinning.
                        tracing::warn!("accept failed: {error}");
                        runtime.metrics().error("accept_failed");
                        connections.shed.send_replace(());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop_accepting.changed() => continue,
            };
            if !connections.admit() {
                runtime.metrics().error("connection_refused");
                drop(stream);
                continue;
            }
            self.serve_connection(stream, peer, &runtime);
        }
    }

    fn serve_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        runtime: &Runtime,
    ) {
        let options = self.options;
        let connections = &self.connections;
        let _ = stream.set_nodelay(true);
        // Requests this connection has started: one that never started any may
        // be dropped when connections run short; others are shut down the way
        // hyper does it, finishing (and flushing) the response under way.
        let started = Arc::new(AtomicUsize::new(0));
        let socket_bytes = ConnectionBytes::default();
        let service = {
            let runtime = runtime.clone();
            let started = started.clone();
            let socket_bytes = socket_bytes.clone();
            service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(socket_bytes.clone());
                started.fetch_add(1, Ordering::Relaxed);
                let runtime = runtime.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        answer(&runtime, request, peer, options).await,
                    )
                }
            })
        };
        let connection = http1::Builder::new()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(options.idle_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(CountedIo::new(stream, socket_bytes)), service);
        let open = OpenConnection {
            connections: connections.clone(),
            _gauge: runtime.metrics().connection(),
        };
        let mut shed = connections.shed.subscribe();
        shed.mark_unchanged();
        let mut stop = self.stopping.subscribe();
        let opened = std::time::Instant::now();
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(connection);
            loop {
                let stopping = tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!("connection from {peer} ended: {error}");
                        }
                        return;
                    }
                    changed = shed.changed() => changed.is_ok().then_some(false),
                    changed = stop.changed() => changed.is_ok().then(|| *stop.borrow_and_update()),
                };
                let Some(stopping) = stopping else { continue };
                if started.load(Ordering::Relaxed) == 0
                    && (stopping || opened.elapsed() > SHED_GRACE)
                {
                    tracing::debug!("closing unused connection from {peer}");
                    return;
                }
                // Closes an idle keep-alive connection now, a busy one after
                // its response.
                connection.as_mut().graceful_shutdown();
            }
        });
    }
}

/// What the host answers itself (bad `Host`, `/metrics`), else the component's answer.
async fn answer(
    runtime: &Runtime,
    request: hyper::Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
    options: ServeOptions,
) -> hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody> {
    let refusal = if let Some(problem) = host_header_problem(&request) {
        Some(text_response(400, problem))
    } else if options.loopback_hosts_only && !has_loopback_host(&request) {
        Some(text_response(
            403,
            "this server listens on loopback and answers only loopback Host names\n",
        ))
    } else {
        None
    };
    if let Some(response) = refusal {
        let metrics = runtime.metrics();
        metrics.error("bad_request_head");
        metrics.request(
            crate::metrics::RequestLabels {
                protocol: "host",
                method: crate::metrics::Method::of(request.method()),
                status: response.status().as_u16(),
            },
            Duration::ZERO,
        );
        return response;
    }
    if request.uri().path() == "/metrics" && request.method() == hyper::Method::GET {
        let store_bytes = runtime.backend().status().total_bytes;
        let mut response = text_response(200, &runtime.metrics().render(store_bytes));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        return response;
    }
    runtime.handle_from(request, Some(peer)).await
}

/// Counts a connection as open until dropped.
struct OpenConnection {
    connections: Arc<Connections>,
    _gauge: crate::metrics::GaugeGuard,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the request's `Host` headers break HTTP/1.1 (RFC 9112 §3.2: exactly
/// one), if they do; HTTP/1.0 requests may have none.
fn host_header_problem<B>(request: &hyper::Request<B>) -> Option<&'static str> {
    let hosts = request
        .headers()
        .get_all(hyper::header::HOST)
        .iter()
        .count();
    match (hosts, request.version()) {
        (0, hyper::Version::HTTP_10) | (1, _) => None,
        (0, _) => Some("an HTTP/1.1 request needs a Host header\n"),
        _ => Some("a request may carry one Host header only\n"),
    }
}

/// Whether the request names a loopback host (or none: HTTP/1.0 clients, which
/// no browser is).
fn has_loopback_host<B>(request: &hyper::Request<B>) -> bool {
    let host = match request.uri().host() {
        Some(host) => host.to_string(),
        None => match request.headers().get(hyper::header::HOST) {
            None => return true,
            Some(value) => match value.to_str() {
                Ok(value) => value.to_string(),
                Err(_) => return false,
            },
        },
    };
    is_loopback_name(&host)
}

/// `localhost`, `*.localhost`, an address in 127.0.0.0/8 or `[::1]`, with or
/// without a port.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

    #[test]
    fn loopback_names() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "cache.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_name(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "10.0.0.1",
            "[::2]:80",
            "",
        ] {
            assert!(!is_loopback_name(host), "{host}");
        }
    }
}
