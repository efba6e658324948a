//! `blobcache`: a remote build cache for Bazel, ccache and more.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use blobcache::config::{LogFormat, ServeArgs};
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
    Serve(Box<ServeArgs>),
    /// Remove entries nobody used for a while, and what uploads that never
    /// finished left behind, from a directory store or an Azure container
    /// (`--dry-run` reports only). Prints a summary.
    Gc(GcArgs),
    /// Issue the credentials of clients that cannot send a plain token:
    /// Azure account keys (BuildKit `type=azblob`) and GitHub Actions cache
    /// JWTs (BuildKit `type=gha`). Reads the same BLOBCACHE_TOKENS (or
    /// `--tokens-file`) and BLOBCACHE_SECRET as the server.
    #[command(subcommand)]
    Credentials(Credentials),
}

#[derive(clap::Args)]
struct GcArgs {
    /// The store: `dir:PATH` or `azure` (credentials from the environment, as
    /// for `serve`). Default: the directory `serve` uses by default.
    #[arg(long, env = "BLOBCACHE_STORE")]
    store: Option<blobcache::StoreSpec>,
    /// Azure container, as for `serve`.
    #[arg(long, env = "BLOBCACHE_AZURE_CONTAINER", default_value = "blobcache")]
    azure_container: String,
    /// Azure blob name prefix, as for `serve`.
    #[arg(long, env = "BLOBCACHE_AZURE_PREFIX", default_value = "")]
    azure_prefix: String,
    /// Remove entries not read or written for this long: `30d`, `12h`.
    #[arg(long, value_parser = blobcache::gc::parse_age)]
    unused_for: std::time::Duration,
    /// Remove leftovers of unfinished uploads older than this.
    #[arg(long, value_parser = blobcache::gc::parse_age, default_value = "1d")]
    leftovers_after: std::time::Duration,
    /// Report what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum Credentials {
    /// Prints the Shared Key of the Azure account named after a token: its
    /// access and namespace are the token's.
    AzureKey {
        /// The token (and so the account) name.
        account: String,
        #[command(flatten)]
        config: CredentialConfig,
    },
    /// Prints a JWT for the GitHub Actions cache with the token's access and
    /// namespace, in the given scopes.
    GhaToken {
        /// The token name.
        token: String,
        /// A scope and its permission, `refs/heads/main=rw` or `=r`; repeat for
        /// more. Writes go to the last writable scope, reads look in all.
        /// Default: `default=rw`.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// How long the JWT is valid, in hours.
        #[arg(long, default_value_t = 6)]
        hours: u64,
        #[command(flatten)]
        config: CredentialConfig,
    },
}

#[derive(clap::Args)]
struct CredentialConfig {
    /// File of access tokens, as for `serve`.
    #[arg(long, env = "BLOBCACHE_TOKENS_FILE")]
    tokens_file: Option<std::path::PathBuf>,
    /// The server secret, as for `serve`.
    #[arg(long, env = "BLOBCACHE_SECRET", hide_env_values = true)]
    secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Credentials(_) | Command::Gc(_) => LogFormat::Text,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("BLOBCACHE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not into files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Gc(args) => gc(args).await,
        Command::Credentials(what) => {
            println!("{}", issue(what)?);
            Ok(())
        }
    }
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    use blobcache::gc::{self, GcOptions};
    let options = GcOptions {
        unused_for: args.unused_for,
        leftovers_after: args.leftovers_after,
        dry_run: args.dry_run,
    };
    let store = args.store.unwrap_or_else(|| {
        blobcache::StoreSpec::Dir(blobcache::config::cache_home().join("store"))
    });
    let summary = match &store {
        blobcache::StoreSpec::Dir(root) => gc::collect_dir(root, &options)
            .map_err(|e| anyhow::anyhow!("cannot collect {}: {e}", root.display()))?,
        blobcache::StoreSpec::Azure => {
            let config = blobcache::store::azure::AzureConfig::from_env(
                &args.azure_container,
                &args.azure_prefix,
            )?;
            let azure = blobcache::store::azure::AzureStore::connect(config).await?;
            gc::collect_azure(&azure, &options).await?
        }
        blobcache::StoreSpec::Memory => {
            anyhow::bail!("a memory store lives in its server's process only")
        }
        blobcache::StoreSpec::Edge(_) => anyhow::bail!(
            "an edge directory is bounded by --max-size; collect its Azure store with --store azure"
        ),
    };
    let mode = if args.dry_run {
        "dry run, nothing removed"
    } else {
        "done"
    };
    println!("blobcache gc ({mode}): {summary}");
    Ok(())
}

fn issue(what: Credentials) -> anyhow::Result<String> {
    use blobcache_component::credentials::{self, CacheScope, Claims};
    let (name, config) = match &what {
        Credentials::AzureKey { account, config } => (account, config),
        Credentials::GhaToken { token, config, .. } => (token, config),
    };
    let text = blobcache::config::load_tokens(config.tokens_file.as_deref())?.text;
    let tokens = blobcache_component::auth::Tokens::parse(&text).map_err(anyhow::Error::msg)?;
    let secret = blobcache::config::checked_secret(Some(&config.secret))?
        .ok_or_else(|| anyhow::anyhow!("BLOBCACHE_SECRET is empty"))?;
    let token = tokens
        .named(name)
        .ok_or_else(|| anyhow::anyhow!("no token named {name:?} is configured"))?;
    match what {
        Credentials::AzureKey { .. } => Ok(secret.account_key(token)),
        Credentials::GhaToken { scopes, hours, .. } => {
            let scopes = match scopes.is_empty() {
                true => vec!["default=rw".to_string()],
                false => scopes,
            };
            let scopes = scopes
                .iter()
                .map(|text| {
                    let (scope, permission) = text.rsplit_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--scope {text:?}: expected <scope>=r or <scope>=rw")
                    })?;
                    let permission = match permission {
                        "r" => 1,
                        "rw" => 3,
                        "w" => 2,
                        _ => anyhow::bail!("--scope {text:?}: the permission is r, w or rw"),
                    };
                    Ok(CacheScope {
                        scope: scope.to_string(),
                        permission,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let now = credentials::now_unix();
            let claims = Claims {
                sub: token.name.clone(),
                ac: serde_json::to_string(&scopes)?,
                nbf: now.saturating_sub(60),
                exp: now + hours.max(1) * 3600,
                iat: now,
                iss: "blobcache".into(),
            };
            Ok(credentials::issue_jwt(&secret, token, &claims))
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let descriptors = raise_descriptor_limit();
    let tokens = args.tokens()?;
    args.checked_secret()?;
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
    let listener = bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
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
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout_secs.max(1)),
        // A quarter of the descriptors stay for blob files and store connections.
        max_connections: args
            .max_connections
            .unwrap_or((descriptors / 4 * 3) as usize),
    };
    tracing::info!(
        "connections: at most {} open, idle ones closed after {:?}",
        options.max_connections,
        options.idle_timeout
    );
    let status = backend.status();
    // Tests and scripts read this line to learn the port.
    println!(
        "blobcache listening on http://{} (store: {} {})",
        listener.local_addr()?,
        status.kind,
        status.location
    );
    return_freed_memory();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    blobcache::server::serve_on_threads(listener, threads, runtime, options, shutdown_signal())
        .await
}

/// The listening socket, with an accept backlog of 1,024 rather than the 128
/// std and tokio use: a fleet of build machines starting at once opens
/// hundreds of connections, and a full backlog costs each extra one a
/// retransmitted SYN, a second or more.
fn bind(address: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)?.into_std()
}

/// Every ten seconds, hands memory that transfers freed back to the kernel.
/// glibc keeps freed buffers in per-thread arenas: after a burst of slow
/// downloads most of their buffers would otherwise stay resident for good.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    std::thread::Builder::new()
        .name("blobcache-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
            // SAFETY: malloc_trim only walks the allocator's own free lists.
            unsafe {
                libc::malloc_trim(0);
            }
        })
        .expect("spawning the trim thread");
}

/// Raises the soft limit of open descriptors to the hard limit: every
/// connection and every open blob holds one, and the usual soft limit (1,024)
/// would stop the server accepting long before memory or CPU run out. Returns
/// the limit in effect.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                tracing::info!(
                    "open descriptors: soft limit raised from {} to {}",
                    limit.rlim_cur,
                    limit.rlim_max
                );
                return limit.rlim_max;
            }
        }
    }
    tracing::info!("open descriptors: limit {}", limit.rlim_cur);
    limit.rlim_cur
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
