//! An edge proxy that embeds blobcache: requests under `/cache/` are served by the
//! cache component in-process (through [`Runtime::handle`]), everything else is
//! forwarded to an origin server.
//!
//! ```sh
//! cargo run --release --example edge_proxy -- 127.0.0.1:8081 127.0.0.1:9000 /var/cache/blobcache
//! # then: bazel build --remote_cache=http://127.0.0.1:8081/cache ...
//!
//! # Near the builders, with the shared cache in Azure: a bounded local
//! # directory in front of the container (the edge tier).
//! AZURE_STORAGE_CONNECTION_STRING=... BLOBCACHE_MAX_SIZE=200GiB \
//!   cargo run --release --example edge_proxy -- 127.0.0.1:8081 127.0.0.1:9000 edge:/var/cache/blobcache
//! ```
//!
//! The store argument is a directory, or any `--store` of `blobcache serve`.

use std::convert::Infallible;
use std::net::SocketAddr;

use blobcache::config::ByteSize;
use blobcache::runtime::{Runtime, RuntimeConfig};
use blobcache::{StoreConfig, StoreSpec};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Where the cache is mounted in the proxy's URL space.
const CACHE_MOUNT: &str = "/cache";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: edge_proxy LISTEN_ADDR ORIGIN_ADDR STORE (a directory, dir:PATH or edge:PATH)";
    let listen: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let origin: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let store = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let spec = match store.parse::<StoreSpec>() {
        Ok(spec) => spec,
        Err(_) => StoreSpec::Dir(store.into()),
    };
    let mut config = StoreConfig::new(spec);
    config.azure_container =
        std::env::var("BLOBCACHE_AZURE_CONTAINER").unwrap_or_else(|_| "blobcache".into());
    config.max_size = match std::env::var("BLOBCACHE_MAX_SIZE") {
        Ok(size) => Some(size.parse::<ByteSize>().map_err(anyhow::Error::msg)?.0),
        Err(_) => None,
    };
    let runtime = Runtime::new(
        blobcache::open_store(&config).await?,
        RuntimeConfig::default(),
    )?;
    let listener = TcpListener::bind(listen).await?;
    println!(
        "edge proxy on http://{}: {CACHE_MOUNT}/ -> blobcache, the rest -> {origin}",
        listener.local_addr()?
    );
    run(listener, origin, runtime).await
}

/// Serves connections until the listener fails.
async fn run(listener: TcpListener, origin: SocketAddr, runtime: Runtime) -> anyhow::Result<()> {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        let (runtime, client) = (runtime.clone(), client.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |request| route(request, origin, runtime.clone(), client.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    request: Request<Incoming>,
    origin: SocketAddr,
    runtime: Runtime,
    client: Client<HttpConnector, Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = request.uri().path();
    let cache_path = path
        .strip_prefix(CACHE_MOUNT)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    if let Some(rest) = cache_path {
        // Hand the request to blobcache with the mount prefix removed.
        let rest = if rest.is_empty() { "/" } else { rest };
        let target = match request.uri().query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest.to_string(),
        };
        let (mut parts, body) = request.into_parts();
        parts.uri = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
        let response = runtime.handle(Request::from_parts(parts, body)).await;
        return Ok(response.map(|body| {
            body.map_err(|e| -> BoxError { format!("{e:?}").into() })
                .boxed_unsync()
        }));
    }
    let (mut parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = format!("http://{origin}{target}")
        .parse()
        .expect("origin URLs are valid");
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
        }
        Err(error) => {
            let body =
                http_body_util::Full::new(Bytes::from(format!("origin unreachable: {error}\n")))
                    .map_err(|never| match never {})
                    .boxed_unsync();
            Ok(Response::builder()
                .status(502)
                .body(body)
                .expect("static response"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobcache::store::dir::DirStore;
    use std::io::{Read, Write};
    use std::sync::Arc;

    /// An origin that answers every request with its method and path.
    fn start_origin() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n) = stream.read(&mut buffer) else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                    }
                    let head = String::from_utf8_lossy(&request);
                    let line = head.lines().next().unwrap_or("").to_string();
                    let body = format!("origin saw {line}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes());
                });
            }
        });
        addr
    }

    async fn send(
        client: &Client<HttpConnector, http_body_util::Full<Bytes>>,
        method: &str,
        url: &str,
        body: &[u8],
    ) -> (u16, Bytes) {
        let request = Request::builder()
            .method(method)
            .uri(url)
            .body(http_body_util::Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_cache_paths_and_forwards_the_rest() {
        let origin = start_origin();
        let store = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(
            Arc::new(DirStore::open(store.path(), false).unwrap()),
            RuntimeConfig::default(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        tokio::spawn(run(listener, origin, runtime));

        let client = Client::builder(TokioExecutor::new()).build_http();
        let content = b"compiled object";
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content));
        let cas = format!("http://{proxy}/cache/cas/{hash}");
        assert_eq!(send(&client, "GET", &cas, b"").await.0, 404);
        assert_eq!(send(&client, "PUT", &cas, content).await.0, 200);
        assert_eq!(
            send(&client, "GET", &cas, b"").await,
            (200, Bytes::from_static(content))
        );
        // The cache's own checks still apply behind the mount.
        assert_eq!(
            send(
                &client,
                "PUT",
                &format!("http://{proxy}/cache/cas/{}", "0".repeat(64)),
                content
            )
            .await
            .0,
            400
        );
        let (status, status_json) =
            send(&client, "GET", &format!("http://{proxy}/cache/status"), b"").await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&status_json).contains("\"service\":\"blobcache\""));

        // Everything else reaches the origin, method and path intact.
        let (status, body) = send(
            &client,
            "GET",
            &format!("http://{proxy}/index.html?x=1"),
            b"",
        )
        .await;
        assert_eq!(
            (status, body),
            (
                200,
                Bytes::from_static(b"origin saw GET /index.html?x=1 HTTP/1.1")
            )
        );
        let (_, body) = send(
            &client,
            "POST",
            &format!("http://{proxy}/cachex/api"),
            b"payload",
        )
        .await;
        assert_eq!(
            body,
            Bytes::from_static(b"origin saw POST /cachex/api HTTP/1.1")
        );
    }
}
