//! Command-line and environment configuration of `blobcache serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

use crate::runtime::RuntimeConfig;

/// Where blobs are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// A local directory (the default).
    Dir(PathBuf),
    /// Process memory; lost at exit.
    Memory,
    /// Azure Blob Storage; credentials from the environment.
    Azure,
    /// A local directory in front of Azure Blob Storage (the edge tier).
    Edge(PathBuf),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "memory" => Ok(StoreSpec::Memory),
            _ if s == "azure" => Ok(StoreSpec::Azure),
            Some(("dir", path)) if !path.is_empty() => Ok(StoreSpec::Dir(PathBuf::from(path))),
            Some(("edge", path)) if !path.is_empty() => Ok(StoreSpec::Edge(PathBuf::from(path))),
            _ => Err(format!(
                "unknown store {s:?}: expected `dir:PATH`, `memory`, `azure` or `edge:PATH`"
            )),
        }
    }
}

/// A size in bytes: a number with an optional unit (`KB`, `MB`, `GB`, `TB` in
/// powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as 200GiB"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "m" | "mb" => 1000_u64.pow(2),
            "g" | "gb" => 1000_u64.pow(3),
            "t" | "tb" => 1000_u64.pow(4),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {text:?}")),
        };
        let bytes = number * scale as f64;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(format!("{text:?} is not a usable size"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `blobcache serve`: run the cache.
#[derive(Parser, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "BLOBCACHE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Store: `dir:PATH`, `memory`, `azure`, or `edge:PATH` (a local directory,
    /// bounded by `--max-size`, in front of Azure). Default: `dir:` under the user's cache
    /// directory (`$XDG_CACHE_HOME/blobcache/store`, else `~/.cache/blobcache/store`).
    /// `azure` reads AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with
    /// AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (and optionally
    /// AZURE_STORAGE_BLOB_ENDPOINT).
    #[arg(long, env = "BLOBCACHE_STORE")]
    pub store: Option<StoreSpec>,

    /// Azure container holding the blobs.
    #[arg(long, env = "BLOBCACHE_AZURE_CONTAINER", default_value = "blobcache")]
    pub azure_container: String,

    /// Prefix of every blob name in the container (e.g. `team-a/`).
    #[arg(long, env = "BLOBCACHE_AZURE_PREFIX", default_value = "")]
    pub azure_prefix: String,

    /// Create the Azure container at start if it does not exist.
    #[arg(long, env = "BLOBCACHE_AZURE_CREATE_CONTAINER")]
    pub azure_create_container: bool,

    /// Most bytes the store keeps (`dir` and `memory`), e.g. `200GiB`: the least
    /// recently used entries are evicted in the background. For Azure, use a
    /// lifecycle policy and `blobcache gc` (see the README).
    #[arg(long, env = "BLOBCACHE_MAX_SIZE")]
    pub max_size: Option<ByteSize>,

    /// Largest blob accepted, in bytes; 0 for no limit.
    #[arg(long, env = "BLOBCACHE_MAX_BLOB_SIZE", default_value_t = 0)]
    pub max_blob_size: u64,

    /// Skip fsync before publishing to the directory store: faster, but a power loss
    /// may lose recent entries (a file cut short fails its trailer check and reads as absent).
    #[arg(long, env = "BLOBCACHE_NO_FSYNC")]
    pub no_fsync: bool,

    /// Memory limit of one request's component instance, in MiB.
    #[arg(long, env = "BLOBCACHE_GUEST_MEMORY_MIB", default_value_t = 64)]
    pub guest_memory_mib: usize,

    /// Seconds a request's component may run without moving any data before it is stopped.
    #[arg(
        long = "guest-timeout",
        env = "BLOBCACHE_GUEST_TIMEOUT",
        default_value_t = 30
    )]
    pub guest_timeout_secs: u64,

    /// Requests served at once; more wait for a free slot. Requests with a
    /// body (uploads) may hold at most seven eighths of them.
    #[arg(long, env = "BLOBCACHE_MAX_CONCURRENT", default_value_t = 256)]
    pub max_concurrent: u32,

    /// Requests that may wait for a slot; beyond that, 503 with Retry-After.
    #[arg(long, env = "BLOBCACHE_MAX_QUEUED", default_value_t = 1024)]
    pub max_queued: u32,

    /// Seconds a request may wait for a slot before it gets 503 with Retry-After.
    #[arg(
        long = "queue-timeout",
        env = "BLOBCACHE_QUEUE_TIMEOUT",
        default_value_t = 10
    )]
    pub queue_timeout_secs: u64,

    /// Bytes per second a request must move after its first `--guest-timeout`
    /// window; slower clients are cut off (0 turns the check off).
    #[arg(long, env = "BLOBCACHE_MIN_TRANSFER_RATE", default_value_t = 1024)]
    pub min_transfer_rate: u64,

    /// Seconds a connection may sit without a complete request head (idle
    /// keep-alive, or a client sending headers slowly) before it is closed.
    #[arg(
        long = "idle-timeout",
        env = "BLOBCACHE_IDLE_TIMEOUT",
        default_value_t = 30
    )]
    pub idle_timeout_secs: u64,

    /// Client connections kept open; beyond that, idle connections are shed
    /// first and new ones refused. Default: three quarters of the open
    /// descriptor limit.
    #[arg(long, env = "BLOBCACHE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Threads serving connections, each with its own event loop; a connection
    /// stays on the thread that accepted it. Default: one per CPU.
    #[arg(long, env = "BLOBCACHE_THREADS")]
    pub threads: Option<usize>,

    /// Directory for compiled machine code of the component, reused across restarts.
    /// Default: `$XDG_CACHE_HOME/blobcache/compiled`, else `~/.cache/blobcache/compiled`.
    #[arg(long, env = "BLOBCACHE_COMPILE_CACHE")]
    pub compile_cache: Option<PathBuf>,

    /// Have the component copy upload bodies into `writer.write` instead of
    /// splicing them into the store's stream, as it must with a store component
    /// (for tests and comparisons).
    #[arg(long, env = "BLOBCACHE_COPY_UPLOADS", hide = true)]
    pub copy_uploads: bool,

    /// File of access tokens: one `name access namespace token` per line (see the
    /// README). Tokens may also be given in BLOBCACHE_TOKENS, in the same form
    /// with `;` between entries. Without any, the server is open to everyone.
    #[arg(long, env = "BLOBCACHE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// The server secret (at least 32 characters) that Azure account keys,
    /// GitHub Actions cache tokens and signed URLs are derived from; see
    /// `blobcache credentials`. Every instance of one cache needs the same.
    #[arg(long, env = "BLOBCACHE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// The container the Azure-compatible endpoint (`/azure`) serves: the Azure
    /// store's own container with `--store azure`, else `buildkit-cache`.
    #[arg(long, env = "BLOBCACHE_AZURE_ENDPOINT_CONTAINER")]
    pub azure_endpoint_container: Option<String>,

    /// The URL clients reach this server at, when a proxy stands in front of it:
    /// the signed URLs of the GitHub Actions cache point there.
    #[arg(long, env = "BLOBCACHE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Serve without access tokens on an address other than loopback, so that
    /// anyone who can reach it can read and write every entry.
    #[arg(long, env = "BLOBCACHE_ALLOW_OPEN")]
    pub allow_open: bool,

    /// Log lines as `text` (for people) or `json` (one object per line, for
    /// log collectors). Every request gets one access-log line (target
    /// `blobcache::access`) naming no key, path, token or signature.
    #[arg(long, env = "BLOBCACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Run this component file instead of the built-in one.
    #[arg(long, env = "BLOBCACHE_COMPONENT", hide = true)]
    pub component: Option<PathBuf>,
}

impl ServeArgs {
    pub fn store_spec(&self) -> StoreSpec {
        self.store
            .clone()
            .unwrap_or_else(|| StoreSpec::Dir(cache_home().join("store")))
    }

    /// How the store is opened.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            spec: self.store_spec(),
            fsync: !self.no_fsync,
            azure_container: self.azure_container.clone(),
            azure_prefix: self.azure_prefix.clone(),
            azure_create_container: self.azure_create_container,
            max_size: self.max_size.map(|size| size.0),
        }
    }

    /// The access tokens from `--tokens-file` and `BLOBCACHE_TOKENS`, checked;
    /// an empty text when none are configured.
    pub fn tokens(&self) -> anyhow::Result<AccessTokens> {
        load_tokens(self.tokens_file.as_deref())
    }

    /// The server secret, checked.
    pub fn checked_secret(
        &self,
    ) -> anyhow::Result<Option<blobcache_component::credentials::Secret>> {
        checked_secret(self.secret.as_deref())
    }

    /// The runtime settings, with the access tokens the component enforces.
    pub fn runtime_config(&self, tokens: &AccessTokens) -> RuntimeConfig {
        let mut component_env = Vec::new();
        if tokens.count > 0 {
            component_env.push(("BLOBCACHE_TOKENS".into(), tokens.text.clone()));
        }
        if self.max_blob_size > 0 {
            component_env.push((
                "BLOBCACHE_MAX_BLOB_SIZE".into(),
                self.max_blob_size.to_string(),
            ));
        }
        if self.copy_uploads {
            component_env.push(("BLOBCACHE_COPY_UPLOADS".into(), "1".into()));
        }
        if let Some(secret) = self.secret.as_ref().filter(|s| !s.trim().is_empty()) {
            component_env.push(("BLOBCACHE_SECRET".into(), secret.clone()));
        }
        let endpoint_container = match (&self.azure_endpoint_container, self.store_spec()) {
            (Some(container), _) => Some(container.clone()),
            (None, StoreSpec::Azure | StoreSpec::Edge(_)) => Some(self.azure_container.clone()),
            (None, _) => None,
        };
        if let Some(container) = endpoint_container {
            component_env.push(("BLOBCACHE_AZURE_ENDPOINT_CONTAINER".into(), container));
        }
        if let Some(url) = &self.public_url {
            component_env.push(("BLOBCACHE_PUBLIC_URL".into(), url.clone()));
        }
        RuntimeConfig {
            guest_memory: self.guest_memory_mib << 20,
            guest_timeout: Duration::from_secs(self.guest_timeout_secs.max(1)),
            max_concurrent: self.max_concurrent.max(1),
            max_queued: self.max_queued,
            queue_timeout: Duration::from_secs(self.queue_timeout_secs),
            min_transfer_rate: self.min_transfer_rate,
            component_env,
            compile_cache: Some(
                self.compile_cache
                    .clone()
                    .unwrap_or_else(|| cache_home().join("compiled")),
            ),
            component_override: self.component.clone(),
        }
    }
}

/// The access tokens from `tokens_file` and `BLOBCACHE_TOKENS`, checked.
pub fn load_tokens(tokens_file: Option<&std::path::Path>) -> anyhow::Result<AccessTokens> {
    let mut text = std::env::var("BLOBCACHE_TOKENS").unwrap_or_default();
    if let Some(path) = tokens_file {
        let file = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the tokens file {}: {e}", path.display()))?;
        text.push('\n');
        text.push_str(&file);
    }
    let tokens = blobcache_component::auth::Tokens::parse(&text)
        .map_err(|e| anyhow::anyhow!("access tokens: {e}"))?;
    Ok(AccessTokens {
        count: tokens.len(),
        text,
    })
}

/// The server secret, when one is given, checked.
pub fn checked_secret(
    secret: Option<&str>,
) -> anyhow::Result<Option<blobcache_component::credentials::Secret>> {
    match secret.filter(|s| !s.trim().is_empty()) {
        None => Ok(None),
        Some(text) => blobcache_component::credentials::Secret::new(text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("BLOBCACHE_SECRET: {e}")),
    }
}

/// Access tokens as configured: the text the component parses, and how many.
#[derive(Clone, Default)]
pub struct AccessTokens {
    pub text: String,
    pub count: usize,
}

/// Never the text: it may hold secrets.
impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessTokens({} configured)", self.count)
    }
}

/// How to open a store, independent of the command line.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub spec: StoreSpec,
    /// fsync before publishing to the directory store.
    pub fsync: bool,
    pub azure_container: String,
    pub azure_prefix: String,
    pub azure_create_container: bool,
    /// Most bytes the directory or memory store keeps (LRU eviction).
    pub max_size: Option<u64>,
}

impl StoreConfig {
    /// A store with the defaults `serve` uses.
    pub fn new(spec: StoreSpec) -> StoreConfig {
        StoreConfig {
            spec,
            fsync: true,
            max_size: None,
            azure_container: "blobcache".into(),
            azure_prefix: String::new(),
            azure_create_container: false,
        }
    }
}

/// `$XDG_CACHE_HOME/blobcache`, else `~/.cache/blobcache`, else `./.blobcache`.
pub fn cache_home() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    match base {
        Some(base) => base.join("blobcache"),
        None => PathBuf::from(".blobcache"),
    }
}

#[cfg(test)]
mod size_tests {
    use super::ByteSize;

    #[test]
    fn sizes() {
        let size = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(size("200GiB"), Ok(200 << 30));
        assert_eq!(size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("10mib"), Ok(10 << 20));
        assert!(size("").is_err());
        assert!(size("GiB").is_err());
        assert!(size("5 parsecs").is_err());
        assert!(size("0").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs() {
        assert_eq!("memory".parse(), Ok(StoreSpec::Memory));
        assert_eq!("dir:/x/y".parse(), Ok(StoreSpec::Dir("/x/y".into())));
        assert!("dir:".parse::<StoreSpec>().is_err());
        assert_eq!("azure".parse(), Ok(StoreSpec::Azure));
        assert!("s3:bucket".parse::<StoreSpec>().is_err());
    }
}
