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

/// How requests prove they may act on the account.
#[derive(Clone)]
enum Credential {
    /// The account key: requests are signed with Shared Key, and SAS URLs for
    /// clients can be made.
    SharedKey(Vec<u8>),
    /// A SAS token (account or container SAS) appended to every request's query.
    /// It cannot sign anything, so no SAS URLs can be handed out.
    Sas(String),
}

/// A storage account and the blob endpoint to reach it.
#[derive(Clone)]
pub struct Account {
    name: String,
    credential: Credential,
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
        // Never print the key or the SAS.
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
        let key = STANDARD
            .decode(key_base64.trim())
            .map_err(|_| ConfigError("the account key is not valid base64".into()))?;
        if key.is_empty() {
            return Err(ConfigError("the account key is empty".into()));
        }
        Account::with_credential(name, Credential::SharedKey(key), endpoint)
    }

    /// An account reached with a SAS token (account SAS, or service SAS for one
    /// container) instead of the key; `sas` is the query string, `?` optional.
    pub fn with_sas(name: &str, sas: &str, endpoint: Option<&str>) -> Result<Account, ConfigError> {
        let sas = sas.trim().trim_start_matches('?');
        let has = |field: &str| sas.split('&').any(|pair| pair.starts_with(field));
        // It goes on every URL as it is: only characters a query may hold.
        let query_safe = sas
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%&=+/:!$'()*,;@".contains(&b));
        if !query_safe || !has("sig=") || !has("sv=") {
            return Err(ConfigError(
                "the SAS token must be a query string with sv= and sig=".into(),
            ));
        }
        Account::with_credential(name, Credential::Sas(sas.to_string()), endpoint)
    }

    fn with_credential(
        name: &str,
        credential: Credential,
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
        let endpoint = match endpoint {
            Some(endpoint) => endpoint.to_string(),
            None => format!("https://{name}.blob.core.windows.net"),
        };
        let (scheme, authority, base_path) = parse_endpoint(&endpoint)?;
        Ok(Account {
            name: name.to_string(),
            credential,
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
        // Azure's SAS connection strings name no account, only the endpoint.
        let from_endpoint = fields
            .get("blobendpoint")
            .filter(|_| fields.contains_key("sharedaccesssignature"))
            .and_then(|endpoint| account_of_endpoint(endpoint));
        let name = fields
            .get("accountname")
            .or(from_endpoint.as_ref())
            .ok_or_else(|| ConfigError("connection string has no AccountName".into()))?;
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
        match (
            fields.get("accountkey"),
            fields.get("sharedaccesssignature"),
        ) {
            (Some(key), _) => Account::new(name, key, Some(&endpoint)),
            (None, Some(sas)) => Account::with_sas(name, sas, Some(&endpoint)),
            (None, None) => Err(ConfigError(
                "connection string has neither AccountKey nor SharedAccessSignature".into(),
            )),
        }
    }

    /// The account from the usual settings, looked up by name:
    /// `AZURE_STORAGE_CONNECTION_STRING`, or `AZURE_STORAGE_ACCOUNT` with
    /// `AZURE_STORAGE_KEY` or `AZURE_STORAGE_SAS_TOKEN` (and optionally
    /// `AZURE_STORAGE_BLOB_ENDPOINT`). Empty values count as unset.
    pub fn from_settings(lookup: impl Fn(&str) -> Option<String>) -> Result<Account, ConfigError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(text) = var("AZURE_STORAGE_CONNECTION_STRING") {
            return Account::from_connection_string(&text);
        }
        let endpoint = var("AZURE_STORAGE_BLOB_ENDPOINT");
        match (
            var("AZURE_STORAGE_ACCOUNT"),
            var("AZURE_STORAGE_KEY"),
            var("AZURE_STORAGE_SAS_TOKEN"),
        ) {
            (Some(name), Some(key), _) => Account::new(&name, &key, endpoint.as_deref()),
            (Some(name), None, Some(sas)) => Account::with_sas(&name, &sas, endpoint.as_deref()),
            _ => Err(ConfigError(
                "the Azure store needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN".into(),
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account key, when requests are signed with it (not with a SAS).
    pub(crate) fn key(&self) -> Option<&[u8]> {
        match &self.credential {
            Credential::SharedKey(key) => Some(key),
            Credential::Sas(_) => None,
        }
    }

    /// Whether this account can sign SAS URLs for clients (it has the key).
    pub fn can_sign(&self) -> bool {
        self.key().is_some()
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

    /// The URL of a request: like [`Account::url`], plus the SAS token when that
    /// is the credential.
    pub fn request_url(&self, path: &str, query: &str) -> String {
        match (&self.credential, query.is_empty()) {
            (Credential::Sas(sas), true) => self.url(path, sas),
            (Credential::Sas(sas), false) => self.url(path, &format!("{query}&{sas}")),
            (Credential::SharedKey(_), _) => self.url(path, query),
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

/// The account an endpoint belongs to: `<account>.blob.<suffix>`, or the first
/// path segment of a path-style endpoint (Azurite's `/<account>`).
fn account_of_endpoint(endpoint: &str) -> Option<String> {
    let (_, authority, base_path) = parse_endpoint(endpoint).ok()?;
    let host = authority.split(':').next()?;
    match host.split_once(".blob.") {
        Some((account, _)) => Some(account.to_string()),
        None => Some(
            base_path
                .trim_start_matches('/')
                .split('/')
                .next()?
                .to_string(),
        )
        .filter(|name| !name.is_empty()),
    }
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
            "AccountName=acct;BlobEndpoint=http://h/acct",
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
        let sas = Account::with_sas("acct", "sv=2021-08-06&sig=SECRET", None).unwrap();
        assert!(!format!("{sas:?}").contains("SECRET"));
    }

    #[test]
    fn a_sas_rides_on_every_request_url_and_signs_nothing() {
        let account = Account::from_connection_string(
            "AccountName=acct;BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=2021-08-06&sr=c&sp=racwdl&sig=abc%3D",
        )
        .unwrap();
        assert!(!account.can_sign());
        assert_eq!(
            account.request_url("/c/b", "comp=block"),
            "https://acct.blob.core.windows.net/c/b?comp=block&sv=2021-08-06&sr=c&sp=racwdl&sig=abc%3D"
        );
        assert_eq!(
            account.request_url("/c/b", ""),
            "https://acct.blob.core.windows.net/c/b?sv=2021-08-06&sr=c&sp=racwdl&sig=abc%3D"
        );
        assert!(Account::new("acct", DEV_KEY, None).unwrap().can_sign());
        assert!(Account::with_sas("acct", "?sv=1&sig=x", None).is_ok());
        assert!(Account::with_sas("acct", "sv=1", None).is_err());
        assert!(Account::with_sas("acct", "sv=1&sig=a b", None).is_err());
        // As the portal writes them: no AccountName, the endpoint names it.
        for (text, name) in [
            ("BlobEndpoint=https://mine.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x", "mine"),
            ("BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;SharedAccessSignature=sv=1&sig=x", "devstoreaccount1"),
        ] {
            assert_eq!(Account::from_connection_string(text).unwrap().name(), name);
        }
    }
}
