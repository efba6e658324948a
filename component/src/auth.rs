//! Access tokens, shared by every protocol and enforced here in the component,
//! so they hold on every host (our own, `wasmtime serve`, Spin).
//!
//! Tokens come from the `BLOBCACHE_TOKENS` setting: one token per line (or
//! separated by `;`), four fields each, `#` starts a comment:
//!
//! ```text
//! # name    access      namespace  token (or sha256:<hex of its SHA-256>)
//! ci        read-write  *          sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! team-a    read-write  team-a     a-long-random-secret
//! readers   read        *          sha256:...
//! ```
//!
//! A namespace is the first path segment after a protocol's root (Bazel's
//! prefix, `/ccache/<namespace>/...`); `*` covers every namespace and paths
//! without one. Presented tokens are hashed and compared in constant time with
//! the configured digests; neither is ever written to a log or an answer.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Failure, Kind};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// One configured token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Names the token in logs and answers, never the secret.
    pub name: String,
    pub access: Access,
    /// None: every namespace.
    pub namespace: Option<String>,
    digest: [u8; 32],
}

impl Token {
    /// The SHA-256 of the token's secret: credentials derived for the token
    /// (Azure account keys, signed JWTs) cover it, so replacing the secret
    /// revokes them.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// The configured tokens; none configured means an open server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Token>);

/// What a request needs to be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Served to anyone (`/healthz`, `/`).
    Nothing,
    Read,
    Write,
    /// The protocol checks credentials of its own (Azure Shared Key and SAS,
    /// GitHub Actions cache JWTs) against the same token table; the pipeline
    /// lets the request through to it.
    OwnCredentials,
}

impl Need {
    /// What a method on a blob path needs: writes for PUT and DELETE, reads otherwise.
    pub fn for_blob_method(method: &str) -> Need {
        match method {
            "PUT" | "DELETE" => Need::Write,
            _ => Need::Read,
        }
    }
}

/// What a request asks to do, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    pub need: Need,
    pub namespace: Namespace<'a>,
}

/// Where the namespace of a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace<'a> {
    /// The path names it; none for paths outside any namespace.
    Path(Option<&'a str>),
    /// The protocol's paths cannot carry one (Nx's fixed `/v1/cache/<hash>`):
    /// a namespaced token works in its own namespace, any other token (or an
    /// open server) outside every namespace. See [`Caller::namespace`].
    OfToken,
}

impl<'a> Scope<'a> {
    /// Open to everyone, tokens or not.
    pub const OPEN: Scope<'static> = Scope {
        need: Need::Nothing,
        namespace: Namespace::Path(None),
    };

    /// For protocols that check their own credentials (see [`Need::OwnCredentials`]).
    pub const OWN_CREDENTIALS: Scope<'static> = Scope {
        need: Need::OwnCredentials,
        namespace: Namespace::Path(None),
    };

    /// `need` in the namespace the path names (`None`: outside any).
    pub fn in_path(need: Need, namespace: Option<&'a str>) -> Scope<'a> {
        Scope {
            need,
            namespace: Namespace::Path(namespace),
        }
    }

    /// `need` in the caller's own namespace (see [`Namespace::OfToken`]).
    pub fn of_token(need: Need) -> Scope<'static> {
        Scope {
            need,
            namespace: Namespace::OfToken,
        }
    }
}

/// Who is asking, once allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No tokens are configured: everyone may do everything.
    Open,
    /// Tokens are configured and none was presented (only for `Need::Nothing`).
    Anonymous,
    Token {
        name: String,
        access: Access,
        /// The token's namespace; none for `*`.
        namespace: Option<String>,
    },
}

impl Caller {
    /// Whether the caller proved who it is (or the server is open).
    pub fn is_trusted(&self) -> bool {
        !matches!(self, Caller::Anonymous)
    }

    /// The namespace a [`Namespace::OfToken`] request works in: the token's
    /// own, or none (outside every namespace) for `*` tokens and open servers.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Caller::Token { namespace, .. } => namespace.as_deref(),
            Caller::Open | Caller::Anonymous => None,
        }
    }
}

impl Tokens {
    /// Parses the token configuration. An error names the entry by its line (and
    /// its place on the line, when `;` separates several) and the field at fault,
    /// never what the field holds: a misordered entry could put a secret anywhere.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (line_index, line) in text.lines().enumerate() {
            let parts: Vec<&str> = line.split(';').collect();
            for (part_index, part) in parts.iter().enumerate() {
                let entry = match parts.len() {
                    1 => format!("token entry on line {}", line_index + 1),
                    _ => format!("token entry {} on line {}", part_index + 1, line_index + 1),
                };
                // `#` starts a comment only as a field of its own, so secrets
                // may contain it.
                let fields: Vec<&str> = part
                    .split_whitespace()
                    .take_while(|field| !field.starts_with('#'))
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                tokens.push(parse_entry(&fields).map_err(|why| format!("{entry}: {why}"))?);
            }
        }
        Ok(Tokens(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The token called `name` (names are how Azure accounts and GitHub
    /// Actions cache tokens refer to their token).
    pub fn named(&self, name: &str) -> Option<&Token> {
        self.0.iter().find(|token| token.name == name)
    }

    /// The token whose secret is `secret` (a plain Bearer token), if any.
    pub fn with_secret(&self, secret: &str) -> Option<&Token> {
        self.find(&[secret.to_string()])
    }

    /// The token whose secret is one of `candidates`, compared in constant time.
    fn find(&self, candidates: &[String]) -> Option<&Token> {
        let mut found = None;
        for candidate in candidates {
            let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
            // Every token is compared, whichever matches.
            for token in &self.0 {
                if bool::from(token.digest.ct_eq(&digest)) && found.is_none() {
                    found = Some(token);
                }
            }
        }
        found
    }

    /// Allows or refuses a request presenting `authorization` (the header's
    /// value) for `scope`.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        scope: Scope<'_>,
    ) -> Result<Caller, Failure> {
        if self.is_empty() {
            return Ok(Caller::Open);
        }
        let candidates = authorization.map(candidates).unwrap_or_default();
        let token = self.find(&candidates);
        let Some(token) = token else {
            if matches!(scope.need, Need::Nothing | Need::OwnCredentials) {
                return Ok(Caller::Anonymous);
            }
            let reason = match authorization {
                None => "an access token is required",
                Some(_) => "the access token is not valid",
            };
            return Err(unauthorized(reason));
        };
        if scope.need == Need::Write && token.access == Access::Read {
            return Err(Failure::new(
                Kind::Forbidden,
                format!("token {:?} may only read", token.name),
            ));
        }
        if let (Need::Read | Need::Write, Namespace::Path(addressed)) =
            (scope.need, scope.namespace)
        {
            if let Some(allowed) = &token.namespace {
                if addressed != Some(allowed.as_str()) {
                    return Err(Failure::new(
                        Kind::Forbidden,
                        format!("token {:?} is for namespace {allowed:?} only", token.name),
                    ));
                }
            }
        }
        Ok(Caller::Token {
            name: token.name.clone(),
            access: token.access,
            namespace: token.namespace.clone(),
        })
    }
}

/// One entry's four fields; the error says which field is wrong, not its value.
fn parse_entry(fields: &[&str]) -> Result<Token, String> {
    let [name, access, namespace, secret] = fields[..] else {
        return Err(format!(
            "expected 4 fields (name access namespace token), found {}",
            fields.len()
        ));
    };
    let access = match access {
        "read" | "r" | "ro" => Access::Read,
        "read-write" | "rw" | "write" => Access::ReadWrite,
        _ => return Err("the access (field 2) is not `read` or `read-write`".into()),
    };
    let namespace = match namespace {
        "*" => None,
        ns if ns.chars().all(crate::path::is_key_char) && !is_ambiguous_namespace(ns) => {
            Some(ns.to_string())
        }
        _ => {
            return Err(
                "the namespace (field 3) is not `*` or a path segment of 3 or more key \
                 characters other than `ac` and `cas`"
                    .into(),
            )
        }
    };
    let digest = match secret.strip_prefix("sha256:") {
        Some(hex) => parse_digest(hex).ok_or("the token (field 4): sha256: needs 64 hex digits")?,
        None => Sha256::digest(secret.as_bytes()).into(),
    };
    if digest == <[u8; 32]>::from(Sha256::digest(b"")) {
        return Err("the token (field 4) is the SHA-256 of nothing: an empty token".into());
    }
    Ok(Token {
        name: name.to_string(),
        access,
        namespace,
        digest,
    })
}

/// Namespaces that would collide with paths outside any namespace: ccache's
/// `subdirs` layout puts keys under 2-character directories, and its `bazel`
/// layout under `ac/` and `cas/`.
fn is_ambiguous_namespace(namespace: &str) -> bool {
    namespace.len() < 3 || namespace == "cas"
}

/// 401 with the challenges clients answer: Basic (token as password) and Bearer.
pub fn unauthorized(reason: &str) -> Failure {
    Failure::new(Kind::Unauthorized, reason)
        .with_header("www-authenticate", "Basic realm=\"blobcache\"")
        .with_header("www-authenticate", "Bearer realm=\"blobcache\"")
}

/// The secrets an `Authorization` value may carry: a Bearer token, or a Basic
/// password (the user name too, for clients that put the token there). Basic
/// credentials are accepted in both base64 alphabets (Bazel may send base64url).
pub fn candidates(authorization: &str) -> Vec<String> {
    let (scheme, rest) = authorization
        .trim()
        .split_once(' ')
        .unwrap_or((authorization, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return [rest]
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.to_string())
            .collect();
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Vec::new();
    }
    let Some(decoded) = decode_base64_any(rest) else {
        return Vec::new();
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Vec::new();
    };
    let candidates = match text.split_once(':') {
        Some((user, password)) => vec![password.to_string(), user.to_string()],
        None => vec![text],
    };
    // An empty secret is never a token, whatever the configuration says.
    candidates.into_iter().filter(|c| !c.is_empty()).collect()
}

fn decode_base64_any(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine;
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .ok()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    // `from_str_radix` alone would take a sign: `+a` reads as 0x0a.
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const CONFIG: &str = "
        # name access namespace token
        ci      read-write  *       sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
        team-a  rw          team-a  secret-a ; reader read * secret-r
    ";

    fn tokens() -> Tokens {
        Tokens::parse(CONFIG).unwrap()
    }

    fn scope(need: Need, namespace: Option<&str>) -> Scope<'_> {
        Scope::in_path(need, namespace)
    }

    fn basic(user: &str, password: &str) -> String {
        let pair = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn parses_entries_and_digests() {
        let tokens = tokens();
        assert_eq!(tokens.len(), 3);
        // "password" is the secret behind the sha256 entry.
        let caller = tokens
            .authorize(Some("Bearer password"), scope(Need::Write, None))
            .unwrap();
        assert_eq!(
            caller,
            Caller::Token {
                name: "ci".into(),
                access: Access::ReadWrite,
                namespace: None,
            }
        );
    }

    #[test]
    fn configuration_errors_name_the_entry_not_the_secret() {
        let error = Tokens::parse("a rw * x y").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        let error = Tokens::parse("# tokens\nok rw * fine; a admin * topsecret").unwrap_err();
        assert!(error.contains("entry 2 on line 2"), "{error}");
        assert!(!error.contains("topsecret"), "{error}");
        // A misordered entry must not echo whatever lands in a checked field.
        let error = Tokens::parse("ci s3cr3t rw *").unwrap_err();
        assert!(!error.contains("s3cr3t"), "{error}");
        let error = Tokens::parse("ci rw s3cr3t/x *").unwrap_err();
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(Tokens::parse("a rw a/b s").is_err());
        assert!(Tokens::parse("a rw * sha256:abc").is_err());
        // 64 characters, but `+8` is not two hex digits.
        let signed =
            "a rw * sha256:5e88+898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        assert!(Tokens::parse(signed).is_err());
        assert!(Tokens::parse("").unwrap().is_empty());
    }

    #[test]
    fn a_hash_inside_a_secret_is_part_of_it() {
        let tokens = Tokens::parse("a rw * Xy#9f # the CI token").unwrap();
        let all = scope(Need::Write, None);
        assert!(tokens.authorize(Some("Bearer Xy#9f"), all).is_ok());
        assert!(tokens.authorize(Some("Bearer Xy"), all).is_err());
        // A comment that cuts an entry short is an error, not a shorter secret.
        assert!(Tokens::parse("a rw * #secret").is_err());
    }

    #[test]
    fn empty_tokens_never_match() {
        let empty_digest = format!(
            "a rw * sha256:{}",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(Tokens::parse(&empty_digest).is_err());
        let t = tokens();
        let all = scope(Need::Read, None);
        for header in ["Bearer ", "Bearer", "Basic Og==", "Basic "] {
            assert_eq!(
                t.authorize(Some(header), all).unwrap_err().status(),
                401,
                "{header}"
            );
        }
    }

    #[test]
    fn namespaces_that_collide_with_ccache_layouts_are_refused() {
        for namespace in ["ab", "ac", "cas", "x"] {
            let config = format!("t rw {namespace} secret");
            assert!(Tokens::parse(&config).is_err(), "{namespace}");
        }
        assert!(Tokens::parse("t rw abc secret").is_ok());
    }

    #[test]
    fn open_without_tokens() {
        let open = Tokens::default();
        assert_eq!(
            open.authorize(None, scope(Need::Write, None)),
            Ok(Caller::Open)
        );
    }

    #[test]
    fn missing_and_wrong_tokens_are_401_with_challenges() {
        let failure = tokens()
            .authorize(None, scope(Need::Read, None))
            .unwrap_err();
        assert_eq!(failure.status(), 401);
        assert!(failure
            .headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v.starts_with("Basic")));
        let failure = tokens()
            .authorize(Some("Bearer nope"), scope(Need::Read, None))
            .unwrap_err();
        assert_eq!(failure.status(), 401);
        assert!(!failure.reason.contains("nope"));
        // Open paths stay open, anonymously.
        assert_eq!(
            tokens().authorize(Some("Bearer nope"), scope(Need::Nothing, None)),
            Ok(Caller::Anonymous)
        );
    }

    #[test]
    fn read_only_tokens_cannot_write() {
        let failure = tokens()
            .authorize(Some("Bearer secret-r"), scope(Need::Write, None))
            .unwrap_err();
        assert_eq!(failure.status(), 403);
        assert!(tokens()
            .authorize(Some("Bearer secret-r"), scope(Need::Read, Some("team-a")))
            .is_ok());
    }

    #[test]
    fn namespaces_keep_teams_apart() {
        let t = tokens();
        assert!(t
            .authorize(Some("Bearer secret-a"), scope(Need::Write, Some("team-a")))
            .is_ok());
        for namespace in [Some("team-b"), None] {
            let failure = t
                .authorize(Some("Bearer secret-a"), scope(Need::Read, namespace))
                .unwrap_err();
            assert_eq!(failure.status(), 403, "{namespace:?}");
        }
    }

    #[test]
    fn token_namespaces_for_paths_without_one() {
        let t = tokens();
        let team = t
            .authorize(Some("Bearer secret-a"), Scope::of_token(Need::Write))
            .unwrap();
        assert_eq!(team.namespace(), Some("team-a"));
        let ci = t
            .authorize(Some("Bearer password"), Scope::of_token(Need::Write))
            .unwrap();
        assert_eq!(ci.namespace(), None);
        let reader = t.authorize(Some("Bearer secret-r"), Scope::of_token(Need::Write));
        assert_eq!(reader.unwrap_err().status(), 403);
        assert_eq!(
            Tokens::default()
                .authorize(None, Scope::of_token(Need::Write))
                .unwrap()
                .namespace(),
            None
        );
    }

    #[test]
    fn basic_in_both_alphabets_and_either_field() {
        let t = tokens();
        let need = scope(Need::Write, Some("team-a"));
        assert!(t.authorize(Some(&basic("bazel", "secret-a")), need).is_ok());
        assert!(t.authorize(Some(&basic("secret-a", "")), need).is_ok());
        // A secret whose base64 differs between the alphabets (bytes 0xfb, 0xff).
        let odd = "ab?>?~";
        let config = format!("odd rw * {odd}");
        let odd_tokens = Tokens::parse(&config).unwrap();
        let pair = format!("u:{odd}");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&pair);
        let std = base64::engine::general_purpose::STANDARD.encode(&pair);
        assert_ne!(url.trim_end_matches('='), std.trim_end_matches('='));
        for encoded in [url, std] {
            let header = format!("Basic {encoded}");
            assert!(
                odd_tokens.authorize(Some(&header), need).is_ok(),
                "{header}"
            );
        }
        assert!(candidates("Basic !!!").is_empty());
        assert!(candidates("Digest abc").is_empty());
    }
}
