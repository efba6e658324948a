//! Access tokens (`auth::Tokens::parse`, `auth::candidates`) and the GitHub
//! Actions cache JWTs (`credentials::issue_jwt`, `read_jwt`, `verify_jwt`).
//!
//! Checked:
//! - the token file against a reference parser written from its
//!   documentation (four fields, `;` and lines, `#` comments, accesses,
//!   namespaces, `sha256:` and 64 hex digits); the entries written out again,
//!   with their secrets or as `sha256:` digests, parse to the same tokens; a
//!   plain secret finds a token with its digest, as Bearer and in Basic (either
//!   field, either base64 alphabet);
//! - any JWT text: reading it never panics, and what reads has three parts;
//! - a JWT issued with claims from the input reads back as those claims and
//!   verifies exactly when `now` is in `[nbf - 300, exp + 300]`; the same JWT
//!   with one bit changed, for another token or under another secret does not.
#![no_main]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use blobcache_component::auth::{candidates, Access, Tokens};
use blobcache_component::credentials::{
    issue_jwt, read_jwt, verify_jwt, Claims, Secret, CLOCK_SKEW_SECS,
};
use blobcache_fuzz::{any_text, from_alphabet, Unstructured, PRINTABLE};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

#[derive(Debug)]
struct Entry<'a> {
    name: &'a str,
    access: Access,
    namespace: Option<&'a str>,
    secret: &'a str,
    digest: [u8; 32],
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._~:+=@-".contains(c)
}

/// The token file format, from `auth`'s documentation.
fn reference(text: &str) -> Option<Vec<Entry<'_>>> {
    let mut entries = Vec::new();
    for line in text.lines() {
        for part in line.split(';') {
            let fields: Vec<&str> = part
                .split_whitespace()
                .take_while(|f| !f.starts_with('#'))
                .collect();
            if fields.is_empty() {
                continue;
            }
            let [name, access, namespace, secret] = fields[..] else {
                return None;
            };
            let access = match access {
                "read" | "r" | "ro" => Access::Read,
                "read-write" | "rw" | "write" => Access::ReadWrite,
                _ => return None,
            };
            let namespace = match namespace {
                "*" => None,
                ns if ns.chars().all(key_char) && ns.len() >= 3 && ns != "cas" => Some(ns),
                _ => return None,
            };
            let digest: [u8; 32] = match secret.strip_prefix("sha256:") {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    hex::decode(hex).unwrap().try_into().unwrap()
                }
                Some(_) => return None,
                None => Sha256::digest(secret.as_bytes()).into(),
            };
            if digest == <[u8; 32]>::from(Sha256::digest(b"")) {
                return None;
            }
            entries.push(Entry {
                name,
                access,
                namespace,
                secret,
                digest,
            });
        }
    }
    Some(entries)
}

fn write(entries: &[Entry<'_>], as_digest: bool) -> String {
    entries
        .iter()
        .map(|e| {
            let access = match e.access {
                Access::Read => "read",
                Access::ReadWrite => "read-write",
            };
            let secret = match as_digest {
                true => format!("sha256:{}", hex::encode(e.digest)),
                false => e.secret.to_string(),
            };
            format!(
                "{} {access} {} {secret} # entry",
                e.name,
                e.namespace.unwrap_or("*")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_tokens(text: &str) {
    let parsed = Tokens::parse(text);
    let expected = reference(text);
    assert_eq!(
        parsed.is_ok(),
        expected.is_some(),
        "{text:?}: {parsed:?} {expected:?}"
    );
    if let Err(reason) = &parsed {
        assert!(reason.contains("line"));
    }
    let (Ok(tokens), Some(entries)) = (parsed, expected) else {
        return;
    };
    assert_eq!(tokens.len(), entries.len());
    for as_digest in [false, true] {
        let again = write(&entries, as_digest);
        assert_eq!(Tokens::parse(&again).as_ref(), Ok(&tokens), "{again}");
    }
    for entry in &entries {
        // A name finds its first entry.
        let first = entries.iter().find(|e| e.name == entry.name).unwrap();
        let named = tokens.named(entry.name).unwrap();
        assert_eq!(named.digest(), &first.digest);
        assert_eq!(named.access, first.access);
        assert_eq!(named.namespace.as_deref(), first.namespace);
        if !entry.secret.starts_with("sha256:") {
            let found = tokens.with_secret(entry.secret).unwrap();
            assert_eq!(found.digest(), &entry.digest);
            assert_eq!(
                candidates(&format!("Bearer {}", entry.secret)),
                [entry.secret]
            );
            let pair = format!("user:{}", entry.secret);
            for encoded in [STANDARD.encode(&pair), URL_SAFE_NO_PAD.encode(&pair)] {
                let found = candidates(&format!("Basic {encoded}"));
                assert_eq!(found, [entry.secret, "user"]);
            }
        }
    }
}

fn check_jwt(u: &mut Unstructured<'_>) {
    let names = ["team-a", "reader"];
    let tokens = Tokens::parse("team-a rw team-a secret-a\nreader read * secret-r").unwrap();
    let mut secret_text = from_alphabet(u, PRINTABLE, 48);
    secret_text.push_str("0123456789abcdef0123456789abcdef");
    let secret = Secret::new(&secret_text).unwrap();
    let sub = names[u.choose_index(2).unwrap_or(0)];
    let token = tokens.named(sub).unwrap();
    let claims = Claims {
        sub: sub.to_string(),
        ac: match u.arbitrary().unwrap_or(false) {
            true => format!(
                r#"[{{"Scope":{:?},"Permission":3}}]"#,
                from_alphabet(u, b"refs/heads/main-_", 30)
            ),
            false => any_text(u, 40),
        },
        nbf: u.arbitrary().unwrap_or(0),
        exp: u.arbitrary().unwrap_or(0),
        iat: u.arbitrary().unwrap_or(0),
        iss: any_text(u, 20),
    };
    let now: u64 = u.int_in_range(0..=1u64 << 40).unwrap_or(0);
    let jwt = issue_jwt(&secret, token, &claims);
    assert_eq!(read_jwt(&jwt).as_ref(), Ok(&claims));
    let verified = verify_jwt(&tokens, &secret, &jwt, now);
    let in_time = u128::from(now) + u128::from(CLOCK_SKEW_SECS) >= u128::from(claims.nbf)
        && u128::from(now) <= u128::from(claims.exp) + u128::from(CLOCK_SKEW_SECS);
    assert_eq!(
        verified.is_ok(),
        in_time,
        "{claims:?} at {now}: {verified:?}"
    );
    if let Ok((read, grant)) = &verified {
        assert_eq!(read, &claims);
        assert_eq!(grant.name, sub);
        assert_eq!(grant.access, token.access);
        assert_eq!(grant.namespace, token.namespace);
        let _ = read.scopes();
    }
    // One bit changed anywhere (kept ASCII), and it no longer verifies.
    let mut bytes = jwt.clone().into_bytes();
    let bit = u.choose_index(bytes.len() * 7).unwrap_or(0);
    bytes[bit / 7] ^= 1 << (bit % 7);
    let tampered = String::from_utf8(bytes).unwrap();
    assert!(
        verify_jwt(&tokens, &secret, &tampered, now).is_err(),
        "{jwt} {tampered}"
    );
    // Under another secret, or presented as the other token's, it does not either.
    let other = Secret::new(&format!("{secret_text}!")).unwrap();
    assert!(verify_jwt(&tokens, &other, &jwt, now).is_err());
    let mut renamed = claims.clone();
    renamed.sub = names.iter().find(|n| **n != sub).unwrap().to_string();
    let swapped = format!(
        "{}.{}.{}",
        jwt.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&renamed).unwrap()),
        jwt.rsplit('.').next().unwrap()
    );
    assert!(verify_jwt(&tokens, &secret, &swapped, now).is_err());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_tokens(text);
        for found in candidates(text) {
            assert!(!found.is_empty());
        }
        if let Ok(claims) = read_jwt(text) {
            assert_eq!(text.split('.').count(), 3);
            let _ = claims.scopes();
        }
        let tokens = Tokens::parse("team-a rw team-a secret-a").unwrap();
        let secret = Secret::new("0123456789abcdef0123456789abcdef").unwrap();
        if let Ok((claims, _)) = verify_jwt(&tokens, &secret, text, 1_800_000_000) {
            panic!("a JWT from nowhere verified: {claims:?}");
        }
    }
    check_jwt(&mut Unstructured::new(data));
});
