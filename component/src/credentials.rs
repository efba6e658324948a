//! Credentials blobcache issues for clients that cannot present a plain token:
//! Azure account keys (BuildKit `type=azblob` signs every request with Shared
//! Key), GitHub Actions cache JWTs (BuildKit `type=gha` reads scopes out of
//! its token), and the signed URLs of the GitHub Actions cache data plane.
//!
//! Each is derived from the server secret (`BLOBCACHE_SECRET`) and one
//! configured token (its name and the digest of its secret), so:
//! - any instance with the same settings verifies what another issued (no state);
//! - an Azure account or a JWT carries exactly its token's access and namespace;
//! - replacing a token's secret, or the server secret, revokes what was derived.
//!
//! The host's `blobcache credentials` subcommand issues them with this code.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::{Access, Token, Tokens};
use crate::error::{Failure, Kind};

/// Azurite's published development account: on an open server (no tokens)
/// the Azure endpoint accepts it, so tools work with no configuration.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published key for [`DEV_ACCOUNT`].
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The account the server signs its own data-plane URLs with (GitHub Actions
/// cache uploads and downloads). No token's account key opens it.
pub const SIGNER_ACCOUNT: &str = "blobcache";
/// Shortest server secret accepted.
pub const MIN_SECRET_LEN: usize = 32;

/// The server secret every derived credential comes from.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the server secret must be at least {MIN_SECRET_LEN} characters"
            ));
        }
        Ok(Secret(text.as_bytes().to_vec()))
    }

    /// HMAC-SHA256 of `purpose` and `token`'s identity under the secret.
    fn derive(&self, purpose: &str, token: Option<&Token>) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(b"blobcache/");
        mac.update(purpose.as_bytes());
        if let Some(token) = token {
            mac.update(b"\0");
            mac.update(token.name.as_bytes());
            mac.update(b"\0");
            mac.update(token.digest());
        }
        mac.finalize().into_bytes().into()
    }

    /// The Azure Shared Key (base64, as the SDKs take it) of the account named
    /// after `token`.
    pub fn account_key(&self, token: &Token) -> String {
        STANDARD.encode(self.derive("azure-account-key", Some(token)))
    }
}

/// The token table and the server secret; a 500 when either is unusable, whose
/// reason goes to the operator's log, not to the client.
pub fn configured() -> Result<(Tokens, Option<Secret>), Failure> {
    let unusable = |what: &str, why: String| {
        eprintln!("blobcache: {what} is unusable: {why}");
        Failure::new(
            Kind::Internal,
            "the credential configuration is unusable; see the server's log",
        )
    };
    let tokens = crate::config::tokens().map_err(|why| unusable("BLOBCACHE_TOKENS", why))?;
    let secret = crate::config::secret().map_err(|why| unusable("BLOBCACHE_SECRET", why))?;
    Ok((tokens, secret))
}

/// What a verified credential may do: its token's access and namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (or the account's, on an open server), for logs.
    pub name: String,
    pub access: Access,
    /// None: every namespace.
    pub namespace: Option<String>,
}

impl Grant {
    fn open(name: &str) -> Grant {
        Grant {
            name: name.to_string(),
            access: Access::ReadWrite,
            namespace: None,
        }
    }

    fn of(token: &Token) -> Grant {
        Grant {
            name: token.name.clone(),
            access: token.access,
            namespace: token.namespace.clone(),
        }
    }
}

/// The key of an Azure account and what it grants, or none when the account
/// is unknown: on an open server only the development account; with tokens,
/// the account named after a token (given a server secret). The signer account
/// is not among them: see [`signer_key`].
pub fn account(tokens: &Tokens, secret: Option<&Secret>, name: &str) -> Option<(Vec<u8>, Grant)> {
    if tokens.is_empty() {
        return (name == DEV_ACCOUNT).then(|| {
            let key = STANDARD.decode(DEV_ACCOUNT_KEY).expect("a valid constant");
            (key, Grant::open(name))
        });
    }
    let token = tokens.named(name)?;
    let key = STANDARD
        .decode(secret?.account_key(token))
        .expect("our own base64");
    Some((key, Grant::of(token)))
}

/// The key of [`SIGNER_ACCOUNT`]: derived from the server secret; on an open
/// server without one, the development key (an open server grants everything
/// anyway). None when tokens are configured and no secret is.
pub fn signer_key(tokens: &Tokens, secret: Option<&Secret>) -> Option<Vec<u8>> {
    match secret {
        Some(secret) => Some(secret.derive("signed-urls", None).to_vec()),
        None if tokens.is_empty() => Some(STANDARD.decode(DEV_ACCOUNT_KEY).expect("valid")),
        None => None,
    }
}

/// One GitHub Actions cache scope of a JWT's `ac` claim, as GitHub writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheScope {
    #[serde(rename = "Scope")]
    pub scope: String,
    /// 1 read, 2 write, 3 both.
    #[serde(rename = "Permission")]
    pub permission: u8,
}

impl CacheScope {
    pub fn can_read(&self) -> bool {
        self.permission & 1 != 0
    }

    pub fn can_write(&self) -> bool {
        self.permission & 2 != 0
    }
}

/// The claims of a GitHub Actions cache JWT that blobcache issues and reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The token the JWT was issued for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// JSON text of a list of [`CacheScope`] (a string, as GitHub sends it).
    #[serde(default)]
    pub ac: String,
    pub nbf: u64,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
}

impl Claims {
    /// The scopes of `ac`; an absent or empty claim is no scope at all.
    pub fn scopes(&self) -> Result<Vec<CacheScope>, String> {
        if self.ac.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&self.ac)
            .map_err(|_| "the token's `ac` claim is not a scope list".into())
    }
}

/// Seconds a token may be used before `nbf` or after `exp` (clocks differ).
pub const CLOCK_SKEW_SECS: u64 = 300;

/// Signs `claims` as an HS256 JWT for `token`.
pub fn issue_jwt(secret: &Secret, token: &Token, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("plain claims"));
    let signing_input = format!("{header}.{payload}");
    let signature = jwt_mac(secret, token, &signing_input);
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn jwt_mac(secret: &Secret, token: &Token, signing_input: &str) -> [u8; 32] {
    let key = secret.derive("gha-jwt", Some(token));
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The claims of a JWT, read without checking its signature (what an open
/// server does, as BuildKit itself does); an error for anything that is not a
/// JWT with a JSON payload.
pub fn read_jwt(jwt: &str) -> Result<Claims, String> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT (three base64url parts)".into());
    };
    let header = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| "the JWT header is not base64url")?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| "the JWT header is not JSON")?;
    if !header.is_object() {
        return Err("the JWT header is not a JSON object".into());
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the JWT payload is not base64url")?;
    serde_json::from_slice(&payload).map_err(|_| "the JWT payload lacks nbf, exp or ac".into())
}

/// Verifies a JWT blobcache issued: HS256 under the key of the token named in
/// `sub`, inside its validity window at `now`. Returns its claims and the grant
/// of that token.
pub fn verify_jwt(
    tokens: &Tokens,
    secret: &Secret,
    jwt: &str,
    now: u64,
) -> Result<(Claims, Grant), String> {
    let claims = read_jwt(jwt)?;
    let (signing_input, signature) = jwt.rsplit_once('.').expect("read_jwt saw three parts");
    let (header, _) = signing_input.split_once('.').expect("three parts");
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .expect("read_jwt decoded it"),
    )
    .expect("read_jwt parsed it");
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err("the JWT is not signed with HS256".into());
    }
    let token = tokens
        .named(&claims.sub)
        .ok_or("the JWT names no configured token")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| "the JWT signature is not base64url")?;
    let expected = jwt_mac(secret, token, signing_input);
    if !bool::from(expected.as_slice().ct_eq(&signature)) {
        return Err("the JWT signature is not valid".into());
    }
    if now.saturating_add(CLOCK_SKEW_SECS) < claims.nbf {
        return Err("the JWT is not valid yet".into());
    }
    if now > claims.exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err("the JWT has expired".into());
    }
    Ok((claims, Grant::of(token)))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse("team-a rw team-a secret-a\nreader read * secret-r").unwrap()
    }

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn claims(now: u64) -> Claims {
        Claims {
            sub: "team-a".into(),
            ac: r#"[{"Scope":"refs/heads/main","Permission":3}]"#.into(),
            nbf: now - 10,
            exp: now + 3600,
            iat: now - 10,
            iss: "blobcache".into(),
        }
    }

    #[test]
    fn account_keys_follow_their_token() {
        let (key, grant) = account(&tokens(), Some(&secret()), "team-a").unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(grant.namespace.as_deref(), Some("team-a"));
        // Another secret for the same token name: another key.
        let changed = Tokens::parse("team-a rw team-a other-secret").unwrap();
        let (other, _) = account(&changed, Some(&secret()), "team-a").unwrap();
        assert_ne!(key, other);
        assert!(account(&tokens(), Some(&secret()), "nobody").is_none());
        assert!(account(&tokens(), None, "team-a").is_none());
        // The development account only opens an open server.
        assert!(account(&tokens(), Some(&secret()), DEV_ACCOUNT).is_none());
        assert!(account(&Tokens::default(), None, DEV_ACCOUNT).is_some());
        assert!(Secret::new("short").is_err());
    }

    #[test]
    fn jwts_verify_only_unchanged_and_in_time() {
        let now = 1_800_000_000;
        let tokens = tokens();
        let token = tokens.named("team-a").unwrap();
        let jwt = issue_jwt(&secret(), token, &claims(now));
        let (read, grant) = verify_jwt(&tokens, &secret(), &jwt, now).unwrap();
        assert_eq!(read.scopes().unwrap()[0].scope, "refs/heads/main");
        assert_eq!(grant.access, Access::ReadWrite);
        assert!(verify_jwt(&tokens, &secret(), &jwt, now + 7200).is_err());
        assert!(verify_jwt(&tokens, &secret(), &jwt, now - 3600).is_err());
        let other = Secret::new("another secret of at least 32 bytes").unwrap();
        assert!(verify_jwt(&tokens, &other, &jwt, now).is_err());
        // A payload changed after signing (another scope) fails.
        let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
        let mut forged = claims(now);
        forged.ac = r#"[{"Scope":"refs/heads/release","Permission":3}]"#.into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(verify_jwt(&tokens, &secret(), &parts.join("."), now).is_err());
        // Times at the end of the range do not overflow.
        let mut forever = claims(now);
        forever.exp = u64::MAX;
        let jwt = issue_jwt(&secret(), token, &forever);
        assert!(verify_jwt(&tokens, &secret(), &jwt, now).is_ok());
        assert!(read_jwt("not-a-jwt").is_err());
        assert!(read_jwt("a.b.c").is_err());
    }
}
