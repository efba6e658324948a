//! The HTTP/1.1 server in front of the runtime.

use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::runtime::{text_response, Runtime, ServedBy};

/// How long a client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server treats requests before they reach the component.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeOptions {
    /// Refuse requests whose `Host` is not a loopback name (`localhost`,
    /// `*.localhost`, `127.0.0.0/8`, `[::1]`): for a server bound to loopback,
    /// where any other name means a web page reached it through DNS rebinding.
    pub loopback_hosts_only: bool,
}

/// Accepts connections on `listener` until `shutdown` resolves, then lets open
/// connections finish their current request (idle keep-alive connections close at once).
pub async fn serve(
    listener: TcpListener,
    runtime: Runtime,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let runtime = runtime.clone();
        let service = service_fn(move |request| {
            let runtime = runtime.clone();
            async move {
                if let Some(problem) = host_header_problem(&request) {
                    return Ok(text_response(400, problem));
                }
                if options.loopback_hosts_only && !has_loopback_host(&request) {
                    return Ok(text_response(
                        403,
                        "this server listens on loopback and answers only loopback Host names\n",
                    ));
                }
                // Only when debug logging is on: nothing is copied per request otherwise.
                let logged = tracing::enabled!(tracing::Level::DEBUG)
                    .then(|| (request.method().clone(), request.uri().path().to_string()));
                let response = runtime.handle(request).await;
                if let Some((method, uri)) = logged {
                    let protocol = response.extensions().get::<ServedBy>().map_or("-", |p| p.0);
                    let status = response.status().as_u16();
                    tracing::debug!(%method, uri, status, protocol, "request");
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("connection from {peer} ended: {error}");
            }
        });
    }
    tracing::info!("shutting down: waiting for open requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    Ok(())
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
