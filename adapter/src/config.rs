//! Settings of the Azure store component. Every host can pass environment
//! variables (`wasi:cli/environment`: `wasmtime serve --env`, Spin's
//! `environment`, a host's `WasiCtx`); the Spin build also reads Spin variables
//! first, so secrets can come from Spin's secret providers.
//!
//! | environment variable | Spin variable | meaning |
//! |---|---|---|
//! | `AZURE_STORAGE_CONNECTION_STRING` | `azure_storage_connection_string` | account, key and endpoint in one |
//! | `AZURE_STORAGE_ACCOUNT` | `azure_storage_account` | account name |
//! | `AZURE_STORAGE_KEY` | `azure_storage_key` | account key (base64) |
//! | `AZURE_STORAGE_SAS_TOKEN` | `azure_storage_sas_token` | or a SAS (account, or the container's) instead of the key |
//! | `AZURE_STORAGE_BLOB_ENDPOINT` | `azure_storage_blob_endpoint` | endpoint, default `https://<account>.blob.core.windows.net` |
//! | `BLOBCACHE_AZURE_CONTAINER` | `blobcache_azure_container` | container, default `blobcache` |
//! | `BLOBCACHE_AZURE_PREFIX` | `blobcache_azure_prefix` | prefix of every blob name |
//! | `BLOBCACHE_AZURE_BLOCK_SIZE` | `blobcache_azure_block_size` | bytes per Put Block, default 4 MiB |

use std::time::Duration;

use blobcache_azure::{Account, ConfigError, RetryPolicy};

/// Default bytes per Put Block: memory per upload is about three blocks.
pub const DEFAULT_BLOCK_SIZE: usize = 4 << 20;
/// Smallest and largest block sizes accepted (an upload holds about three
/// blocks in the component's memory).
const BLOCK_SIZES: std::ops::RangeInclusive<usize> = (64 << 10)..=(64 << 20);

/// Everything the store needs, read once per instance.
#[derive(Clone, Debug)]
pub struct Settings {
    pub account: Account,
    pub container: String,
    pub prefix: String,
    pub block_size: usize,
    /// Put Block answers awaited at once per upload.
    pub parallel_blocks: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl Settings {
    /// Settings from `lookup` (a setting's environment variable name to its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let account = Account::from_settings(&lookup)?;
        let block_size = match var("BLOBCACHE_AZURE_BLOCK_SIZE") {
            None => DEFAULT_BLOCK_SIZE,
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|n| BLOCK_SIZES.contains(n))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "BLOBCACHE_AZURE_BLOCK_SIZE {text:?} must be a byte count from {} to {}",
                        BLOCK_SIZES.start(),
                        BLOCK_SIZES.end()
                    ))
                })?,
        };
        Ok(Settings {
            account,
            container: var("BLOBCACHE_AZURE_CONTAINER").unwrap_or_else(|| "blobcache".into()),
            prefix: var("BLOBCACHE_AZURE_PREFIX").unwrap_or_default(),
            block_size,
            parallel_blocks: 2,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        })
    }

    /// Settings from this instance's environment (and, in the Spin build, from
    /// Spin variables first).
    pub fn load() -> Result<Settings, ConfigError> {
        let settings =
            Settings::from_lookup(|name| spin_variable(name).or_else(|| std::env::var(name).ok()));
        if cfg!(feature = "spin") {
            return settings.map_err(|e| {
                ConfigError(format!(
                    "{e} (as Spin variables: the same names in lowercase)"
                ))
            });
        }
        settings
    }
}

/// The Spin variable for a setting: its name in lowercase.
#[cfg(feature = "spin")]
fn spin_variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
}

#[cfg(not(feature = "spin"))]
fn spin_variable(_name: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn reads_account_container_prefix_and_block_size() {
        let s = settings(&[
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("AZURE_STORAGE_KEY", "a2V5"),
            ("BLOBCACHE_AZURE_CONTAINER", "builds"),
            ("BLOBCACHE_AZURE_PREFIX", "team-a/"),
            ("BLOBCACHE_AZURE_BLOCK_SIZE", "1048576"),
        ])
        .unwrap();
        assert_eq!(s.account.endpoint(), "https://acct.blob.core.windows.net");
        assert_eq!(
            (s.container.as_str(), s.prefix.as_str()),
            ("builds", "team-a/")
        );
        assert_eq!(s.block_size, 1 << 20);
        let dev = settings(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        )])
        .unwrap();
        assert_eq!(dev.container, "blobcache");
        assert_eq!(dev.block_size, DEFAULT_BLOCK_SIZE);
    }

    #[test]
    fn bad_settings_are_named() {
        let missing = settings(&[("AZURE_STORAGE_ACCOUNT", "acct")]).unwrap_err();
        assert!(missing.0.contains("AZURE_STORAGE_KEY"), "{missing}");
        let block = settings(&[
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            ),
            ("BLOBCACHE_AZURE_BLOCK_SIZE", "12"),
        ])
        .unwrap_err();
        assert!(block.0.contains("BLOBCACHE_AZURE_BLOCK_SIZE"), "{block}");
    }
}
