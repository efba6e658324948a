//! Which storage account, with which key, at which endpoint.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Azurite's well-known development account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public; it guards nothing).
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default blob endpoint.
pub const DEV_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// A configuration mistake, reported at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A storage account and the blob endpoint to reach it.
#[derive(Clone)]
pub struct Account {
    name: String,
    key: Vec<u8>,
    /// `https` or `http`.
    scheme: String,
    /// Host and optional port.
    authority: String,
    /// Empty for `https://<account>.blob.core.windows.net`; `/<account>` for
    /// path-style endpoints such as Azurite's.
    base_path: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl Account {
    /// An account from its name, base64 key and blob endpoint (default:
    /// `https://<name>.blob.core.windows.net`).
    pub fn new(
        name: &str,
        key_base64: &str,
        endpoint: Option<&str>,
    ) -> Result<Account, ConfigError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(ConfigError(format!(
                "account name {name:?} must be lowercase letters and digits"
            )));
        }
        let key = STANDARD
            .decode(key_base64.trim())
            .map_err(|_| ConfigError("the account key is not valid base64".into()))?;
        if key.is_empty() {
            return Err(ConfigError("the account key is empty".into()));
        }
        let endpoint = match endpoint {
            Some(endpoint) => endpoint.to_string(),
            None => format!("https://{name}.blob.core.windows.net"),
        };
        let (scheme, authority, base_path) = parse_endpoint(&endpoint)?;
        Ok(Account {
            name: name.to_string(),
            key,
            scheme,
            authority,
            base_path,
        })
    }

    /// An account from an Azure Storage connection string: `AccountName` +
    /// `AccountKey` with `BlobEndpoint` or `DefaultEndpointsProtocol` (+
    /// `EndpointSuffix`), or `UseDevelopmentStorage=true` for Azurite.
    pub fn from_connection_string(text: &str) -> Result<Account, ConfigError> {
        let mut fields = std::collections::HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                ConfigError(format!("connection string part {part:?} is not Name=Value"))
            })?;
            fields.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        if fields
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Account::new(DEV_ACCOUNT, DEV_KEY, Some(DEV_ENDPOINT));
        }
        let name = fields
            .get("accountname")
            .ok_or_else(|| ConfigError("connection string has no AccountName".into()))?;
        if fields.contains_key("sharedaccesssignature") && !fields.contains_key("accountkey") {
            return Err(ConfigError(
                "connection strings with SharedAccessSignature are not supported; use AccountKey"
                    .into(),
            ));
        }
        let key = fields
            .get("accountkey")
            .ok_or_else(|| ConfigError("connection string has no AccountKey".into()))?;
        let endpoint = match fields.get("blobendpoint") {
            Some(endpoint) => endpoint.clone(),
            None => {
                let protocol = fields
                    .get("defaultendpointsprotocol")
                    .map(String::as_str)
                    .unwrap_or("https");
                let suffix = fields
                    .get("endpointsuffix")
                    .map(String::as_str)
                    .unwrap_or("core.windows.net");
                format!("{protocol}://{name}.blob.{suffix}")
            }
        };
        Account::new(name, key, Some(&endpoint))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// The blob endpoint, e.g. `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }

    /// The percent-encoded path of a container or blob, as sent on the wire.
    pub fn path(&self, container: &str, blob: Option<&str>) -> String {
        let mut path = format!("{}/{}", self.base_path, encode_segment(container));
        if let Some(blob) = blob {
            for segment in blob.split('/') {
                path.push('/');
                path.push_str(&encode_segment(segment));
            }
        }
        path
    }

    /// The full URL of a path with an optional query.
    pub fn url(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("{}://{}{}", self.scheme, self.authority, path)
        } else {
            format!("{}://{}{}?{}", self.scheme, self.authority, path, query)
        }
    }
}

/// Characters left as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Query values: the same set (so `+`, `/` and `=` of base64 are encoded).
pub(crate) fn encode_query_value(value: &str) -> String {
    encode_segment(value)
}

fn parse_endpoint(endpoint: &str) -> Result<(String, String, String), ConfigError> {
    let bad = |why: &str| ConfigError(format!("blob endpoint {endpoint:?} {why}"));
    let uri: http::Uri = endpoint
        .trim_end_matches('/')
        .parse()
        .map_err(|_| bad("is not a URL"))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| bad("has no scheme"))?
        .to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("must start with http:// or https://"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("has no host"))?
        .to_string();
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok((scheme, authority, base_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let dev = Account::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(dev.name(), DEV_ACCOUNT);
        assert_eq!(dev.endpoint(), DEV_ENDPOINT);
        assert_eq!(dev.path("c", Some("a/b")), "/devstoreaccount1/c/a/b");

        let cloud = Account::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AAAA;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(cloud.endpoint(), "https://acct.blob.core.windows.net");
        assert_eq!(cloud.path("c", Some("x y/z")), "/c/x%20y/z");

        let custom = Account::from_connection_string(
            "AccountName=devstoreaccount1;AccountKey=AAAA;BlobEndpoint=http://127.0.0.1:4321/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(
            custom.url(&custom.path("c", None), "restype=container"),
            "http://127.0.0.1:4321/devstoreaccount1/c?restype=container"
        );
    }

    #[test]
    fn malformed_configuration_is_an_error_not_a_panic() {
        for bad in [
            "",
            "AccountName=acct",
            "AccountKey=AAAA",
            "AccountName=acct;AccountKey=not base64!",
            "AccountName=Acct;AccountKey=AAAA",
            "AccountName=acct;AccountKey=AAAA;BlobEndpoint=ftp://x",
            "AccountName=acct;AccountKey=AAAA;BlobEndpoint=::::",
            "garbage",
            "AccountName=acct;SharedAccessSignature=sv=1",
        ] {
            assert!(
                Account::from_connection_string(bad).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(Account::new("acct", "AAAA", Some("http://host/path?x=1")).is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let account = Account::new("acct", DEV_KEY, None).unwrap();
        assert!(!format!("{account:?}").contains("Eby8"));
    }
}
