//! Who calls the cache service, and in which scopes: from the Bearer token.
//!
//! - A JWT blobcache issued (`blobcache credentials gha-token`): verified
//!   (signature, `nbf`, `exp`); its `ac` claim lists the scopes, GitHub's way.
//! - A plain blobcache access token: one scope, [`DEFAULT_SCOPE`].
//! - On an open server any well-formed token: a JWT's scopes are read without
//!   verifying it (as BuildKit reads them), anything else gets the default scope.
//!
//! Writes go to the last writable scope (where BuildKit writes); reads look in
//! that scope first, then in every other readable scope in token order, so a
//! branch reads its base branch's entries but never overwrites them.

use crate::auth::Access;
use crate::credentials::{self, CacheScope, Claims};
use crate::error::{Failure, Kind};
use crate::http::Request;

/// The scope of tokens that name none.
pub const DEFAULT_SCOPE: &str = "default";

pub struct Identity {
    /// The token's namespace; none for `*` tokens and open servers.
    pub namespace: Option<String>,
    pub access: Access,
    pub scopes: Vec<CacheScope>,
}

impl Identity {
    /// The scope writes go to.
    pub fn write_scope(&self) -> Result<&str, Failure> {
        let writable = self.scopes.iter().rev().find(|s| s.can_write());
        match (self.access, writable) {
            (Access::ReadWrite, Some(scope)) => Ok(&scope.scope),
            _ => Err(Failure::new(
                Kind::Forbidden,
                "the token grants no scope this server may write to",
            )
            .with_code("permission_denied")),
        }
    }

    /// The scopes reads look in, in order.
    pub fn read_scopes(&self) -> Vec<&str> {
        let mut scopes: Vec<&str> = Vec::new();
        if let Ok(first) = self.write_scope() {
            scopes.push(first);
        }
        for scope in self.scopes.iter().filter(|s| s.can_read()) {
            if !scopes.contains(&scope.scope.as_str()) {
                scopes.push(&scope.scope);
            }
        }
        scopes
    }
}

fn unauthenticated(reason: impl Into<String>) -> Failure {
    Failure::new(Kind::Unauthorized, reason).with_code("unauthenticated")
}

fn default_scopes(access: Access) -> Vec<CacheScope> {
    vec![CacheScope {
        scope: DEFAULT_SCOPE.into(),
        permission: match access {
            Access::Read => 1,
            Access::ReadWrite => 3,
        },
    }]
}

fn scopes_of(claims: &Claims, access: Access) -> Result<Vec<CacheScope>, Failure> {
    let scopes = claims.scopes().map_err(unauthenticated)?;
    if scopes
        .iter()
        .any(|s| s.scope.is_empty() || s.scope.len() > 256)
    {
        return Err(unauthenticated("a scope in the token is empty or too long"));
    }
    Ok(match scopes.is_empty() {
        true => default_scopes(access),
        false => scopes,
    })
}

pub fn identify(request: &Request) -> Result<Identity, Failure> {
    let header = request.header("authorization").unwrap_or_default();
    let token = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthenticated("a Bearer token is required"))?;
    let (tokens, secret) = credentials::configured()?;
    let looks_like_jwt = token.split('.').count() == 3;
    if tokens.is_empty() {
        let scopes = match looks_like_jwt {
            true => {
                let claims = credentials::read_jwt(token).map_err(unauthenticated)?;
                scopes_of(&claims, Access::ReadWrite)?
            }
            false => default_scopes(Access::ReadWrite),
        };
        return Ok(Identity {
            namespace: None,
            access: Access::ReadWrite,
            scopes,
        });
    }
    if looks_like_jwt {
        let secret = secret
            .ok_or_else(|| unauthenticated("this server has no BLOBCACHE_SECRET to verify JWTs"))?;
        let (claims, grant) =
            credentials::verify_jwt(&tokens, &secret, token, credentials::now_unix())
                .map_err(unauthenticated)?;
        return Ok(Identity {
            scopes: scopes_of(&claims, grant.access)?,
            namespace: grant.namespace,
            access: grant.access,
        });
    }
    let plain = tokens
        .with_secret(token)
        .ok_or_else(|| unauthenticated("the token is not valid"))?;
    Ok(Identity {
        namespace: plain.namespace.clone(),
        access: plain.access,
        scopes: default_scopes(plain.access),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(scopes: &[(&str, u8)], access: Access) -> Identity {
        Identity {
            namespace: None,
            access,
            scopes: scopes
                .iter()
                .map(|(s, p)| CacheScope {
                    scope: s.to_string(),
                    permission: *p,
                })
                .collect(),
        }
    }

    #[test]
    fn writes_go_to_the_last_writable_scope_and_reads_start_there() {
        let id = identity(
            &[("refs/heads/main", 1), ("refs/heads/feature", 3)],
            Access::ReadWrite,
        );
        assert_eq!(id.write_scope().unwrap(), "refs/heads/feature");
        assert_eq!(id.read_scopes(), ["refs/heads/feature", "refs/heads/main"]);
        let reader = identity(&[("refs/heads/feature", 3)], Access::Read);
        assert!(reader.write_scope().is_err());
        assert_eq!(reader.read_scopes(), ["refs/heads/feature"]);
        assert!(identity(&[("a", 1)], Access::ReadWrite)
            .write_scope()
            .is_err());
    }
}
