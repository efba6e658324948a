//! `blobcache`: a remote build cache for Bazel, ccache and more.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use blobcache::config::ServeArgs;
use blobcache::runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "blobcache",
    version,
    about = "Remote build cache served by a WebAssembly component"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the cache over HTTP.
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("BLOBCACHE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tokens = args.tokens()?;
    let functions = functions_port()?;
    let listen = functions.unwrap_or(args.listen);
    // Under Functions the platform exposes the loopback listener to the world.
    let exposed = functions.is_some() || !listen.ip().is_loopback();
    if tokens.count == 0 && exposed && !args.allow_open {
        anyhow::bail!(
            "refusing to serve {listen}{} without access tokens: anyone who can reach it could \
             read, overwrite and delete every entry. Configure tokens (--tokens-file or \
             BLOBCACHE_TOKENS), or pass --allow-open to serve an open cache on purpose",
            if functions.is_some() {
                " (behind Azure Functions)"
            } else {
                ""
            }
        );
    }
    let backend = blobcache::open_store(&args.store_config()).await?;
    let runtime = Runtime::new(backend.clone(), args.runtime_config(&tokens))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    if tokens.count == 0 {
        tracing::warn!(
            "no access tokens configured: the cache is open, anyone who can reach {listen} \
             may read and write every entry"
        );
    } else {
        tracing::info!("access tokens: {} configured", tokens.count);
    }
    // A server on loopback answers only loopback Host names, so a web page cannot
    // reach it through DNS rebinding. Under Functions the platform's front end
    // forwards requests with the public Host, so the check is off there.
    let options = blobcache::server::ServeOptions {
        loopback_hosts_only: listen.ip().is_loopback() && functions.is_none(),
    };
    let status = backend.status();
    // Tests and scripts read this line to learn the port.
    println!(
        "blobcache listening on http://{} (store: {} {})",
        listener.local_addr()?,
        status.kind,
        status.location
    );
    blobcache::server::serve(listener, runtime, options, shutdown_signal()).await
}

/// Under Azure Functions (custom handler) the host says which port to serve on.
fn functions_port() -> anyhow::Result<Option<std::net::SocketAddr>> {
    match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Ok(port) => {
            let port: u16 = port.trim().parse().map_err(|_| {
                anyhow::anyhow!("FUNCTIONS_CUSTOMHANDLER_PORT {port:?} is not a port")
            })?;
            Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
        }
        Err(_) => Ok(None),
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
