//! Who signed a request to the Azure endpoint, checked with the `azure`
//! crate's own signing code (the one blobcache signs its Azure calls with):
//!
//! - Shared Key: `Authorization: SharedKey <account>:<signature>` over the raw
//!   path as sent (`%2F` in BuildKit's names stays encoded) and the decoded query,
//!   dated by `x-ms-date` (or `Date`) within [`MAX_CLOCK_SKEW_SECS`];
//! - a service SAS in the query (`sv`, `se`, `sp`, `sr=b`, `sig`): the signed
//!   URLs of the GitHub Actions cache, or any a key holder makes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use blobcache_azure::signing::{hmac_base64, sas_string_to_sign, string_to_sign, BlobSas};
use subtle::ConstantTimeEq;

use crate::auth::{Access, Tokens};
use crate::credentials::{self, Grant, Secret, SIGNER_ACCOUNT};
use crate::error::{Failure, Kind};
use crate::http::Request;

/// How far a request's date may be from the server's clock (Azure's own limit).
pub const MAX_CLOCK_SKEW_SECS: u64 = 15 * 60;

/// A verified request's credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// Shared Key of an account: its token's access and namespace.
    SharedKey(Grant),
    /// A SAS for one blob: what it permits (`r`, `c`, `w`, `d`), and whose.
    Sas { grant: Grant, permissions: String },
}

impl Credential {
    pub fn grant(&self) -> &Grant {
        match self {
            Credential::SharedKey(grant) | Credential::Sas { grant, .. } => grant,
        }
    }

    /// Whether the server signed it for its own data plane.
    pub fn is_signer(&self) -> bool {
        matches!(self, Credential::Sas { grant, .. } if grant.name == SIGNER_ACCOUNT)
    }
}

/// 403 `AuthenticationFailed`, as Azure answers every failed signature.
pub fn authentication_failed(reason: impl Into<String>) -> Failure {
    Failure::new(Kind::Forbidden, reason).with_code("AuthenticationFailed")
}

/// Verifies the request for `account`; `resource` is the container and the
/// decoded blob name, as a SAS signs them.
pub fn verify(
    request: &Request,
    account: &str,
    resource: (&str, Option<&str>),
    now: u64,
) -> Result<Credential, Failure> {
    let (tokens, secret) = credentials::configured()?;
    if request.query_param("sig").is_some() {
        return verify_sas(request, &tokens, secret.as_ref(), account, resource, now);
    }
    match request.header("authorization") {
        Some(value) => verify_shared_key(request, &value, &tokens, secret.as_ref(), account, now),
        None => Err(authentication_failed(
            "the request is not signed: use Shared Key or a SAS",
        )),
    }
}

fn verify_shared_key(
    request: &Request,
    authorization: &str,
    tokens: &Tokens,
    secret: Option<&Secret>,
    account: &str,
    now: u64,
) -> Result<Credential, Failure> {
    let Some((signer, signature)) = authorization
        .trim()
        .strip_prefix("SharedKey ")
        .and_then(|rest| rest.trim().rsplit_once(':'))
    else {
        return Err(authentication_failed(
            "the Authorization header is not `SharedKey <account>:<signature>`",
        ));
    };
    if signer != account {
        return Err(authentication_failed(
            "the signing account is not the account in the path",
        ));
    }
    let Some((key, grant)) = credentials::account(tokens, secret, account) else {
        return Err(authentication_failed(format!(
            "no key is issued for account {account:?}"
        )));
    };
    check_date(request, now)?;
    let method = http::Method::from_bytes(request.method().as_bytes())
        .map_err(|_| Failure::bad_request("unusable method"))?;
    let uri: http::Uri = request
        .path_with_query()
        .parse()
        .map_err(|_| Failure::bad_request("the request target is not a valid URI"))?;
    let text = string_to_sign(account, &method, &uri, &request.header_map());
    let expected = hmac_base64(&key, &text);
    if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        return Err(authentication_failed(
            "the Shared Key signature does not match the request",
        ));
    }
    Ok(Credential::SharedKey(grant))
}

/// `x-ms-date` (else `Date`) must be an RFC 1123 date near the server's clock.
fn check_date(request: &Request, now: u64) -> Result<(), Failure> {
    let Some(date) = request
        .header("x-ms-date")
        .or_else(|| request.header("date"))
    else {
        return Err(authentication_failed(
            "a Shared Key request needs x-ms-date",
        ));
    };
    let date = httpdate::parse_http_date(date.trim())
        .map_err(|_| authentication_failed("x-ms-date is not an RFC 1123 date"))?;
    let date = date
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if date.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(authentication_failed(format!(
            "x-ms-date is more than {} minutes from the server's clock",
            MAX_CLOCK_SKEW_SECS / 60
        )));
    }
    Ok(())
}

fn verify_sas(
    request: &Request,
    tokens: &Tokens,
    secret: Option<&Secret>,
    account: &str,
    (container, blob): (&str, Option<&str>),
    now: u64,
) -> Result<Credential, Failure> {
    let value = |name| request.query_value(name);
    let Some(blob) = blob else {
        return Err(authentication_failed("a SAS here signs one blob only"));
    };
    if value("sr").as_deref() != Some("b") {
        return Err(authentication_failed("the SAS is not for a blob (sr=b)"));
    }
    let (Some(version), Some(expiry), Some(permissions), Some(signature)) =
        (value("sv"), value("se"), value("sp"), value("sig"))
    else {
        return Err(authentication_failed("the SAS lacks sv, se, sp or sig"));
    };
    let (key, grant) = match account {
        SIGNER_ACCOUNT => {
            let key = credentials::signer_key(tokens, secret)
                .ok_or_else(|| authentication_failed("this server signs no URLs"))?;
            let grant = Grant {
                name: SIGNER_ACCOUNT.into(),
                access: Access::ReadWrite,
                namespace: None,
            };
            (key, grant)
        }
        _ => credentials::account(tokens, secret, account).ok_or_else(|| {
            authentication_failed(format!("no key is issued for account {account:?}"))
        })?,
    };
    let sas = BlobSas {
        permissions: permissions.clone(),
        start: value("st"),
        expiry: expiry.clone(),
        protocol: value("spr"),
        version,
    };
    let expected = hmac_base64(&key, &sas_string_to_sign(account, container, blob, &sas));
    // The signature is compared as bytes: base64 text may differ in nothing else.
    let matches = STANDARD
        .decode(signature.trim())
        .is_ok_and(|given| bool::from(STANDARD.decode(&expected).unwrap().ct_eq(&given)));
    if !matches {
        return Err(authentication_failed(
            "the SAS signature does not match this blob and these permissions",
        ));
    }
    let expiry = parse_iso8601(&expiry)
        .ok_or_else(|| authentication_failed("the SAS expiry is not an ISO 8601 time"))?;
    if now > expiry {
        return Err(authentication_failed("the signed URL has expired"));
    }
    if let Some(start) = &sas.start {
        let start = parse_iso8601(start)
            .ok_or_else(|| authentication_failed("the SAS start is not an ISO 8601 time"))?;
        if start > now + MAX_CLOCK_SKEW_SECS {
            return Err(authentication_failed("the signed URL is not valid yet"));
        }
    }
    Ok(Credential::Sas { grant, permissions })
}

/// `2026-11-26T12:00:00Z` (seconds optional, fractions ignored) as Unix seconds.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<u64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let time = time.split('.').next()?;
    let mut time = time.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute) = (time.next()??, time.next()??);
    let second = time.next().flatten().unwrap_or(0);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobcache_azure::signing::iso8601;

    #[test]
    fn iso8601_round_trips_with_the_signing_code() {
        for t in [0, 951_782_400, 1_795_694_400, 4_102_444_800] {
            assert_eq!(parse_iso8601(&iso8601(t)), Some(t), "{}", iso8601(t));
        }
        assert_eq!(parse_iso8601("2026-11-26T12:00Z"), Some(1_795_694_400));
        assert_eq!(parse_iso8601("2026-11-26T12:00:00.5Z"), Some(1_795_694_400));
        assert_eq!(parse_iso8601("2026-13-26T12:00:00Z"), None);
        assert_eq!(parse_iso8601("2026-11-26 12:00:00"), None);
    }
}
