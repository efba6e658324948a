//! The rules every `blobcache:store` implementation applies the same way, whatever
//! keeps the bytes (a directory, process memory, Azure through the native host or
//! through the store component): which keys and block ids are valid, what a byte
//! range selects, when a finished upload may be published, and the store error in a
//! neutral form. No I/O and no dependency on either bindgen type family, so the
//! host's backends, the `azure` crate and the wasm store component all use it.

use std::fmt;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest block id, in bytes: the Azure Go SDK sends base64 of 64 bytes (88
/// characters), the JS SDK 64 characters.
pub const MAX_BLOCK_ID_LEN: usize = 88;

/// Why a store call failed: the WIT `error` variant, without either bindgen's types.
/// Host and store component convert it into their own `Error` with one `From`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound,
    AlreadyExists,
    PreconditionFailed,
    Invalid(String),
    TooLarge(String),
    Full(String),
    Unavailable(String),
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => write!(f, "not found"),
            StoreError::AlreadyExists => write!(f, "already exists"),
            StoreError::PreconditionFailed => write!(f, "precondition failed"),
            StoreError::Invalid(why) => write!(f, "invalid: {why}"),
            StoreError::TooLarge(why) => write!(f, "too large: {why}"),
            StoreError::Full(why) => write!(f, "full: {why}"),
            StoreError::Unavailable(why) => write!(f, "unavailable: {why}"),
            StoreError::Other(why) => write!(f, "{why}"),
        }
    }
}

/// Keys are `/`-separated segments of `[A-Za-z0-9._~:+=@-]`, none empty, `.` or `..`.
/// The component checks the same rules; every store checks again so no caller
/// can address anything outside the store.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!("key must be 1 to {MAX_KEY_LEN} bytes"));
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("key {key:?} has an empty, . or .. segment"));
        }
        if !segment.chars().all(is_key_char) {
            return Err(format!(
                "key {key:?} has a character outside [A-Za-z0-9._~:+=@-]"
            ));
        }
    }
    Ok(())
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | ':' | '+' | '=' | '@' | '-')
}

/// Block ids are opaque to the store: 1 to [`MAX_BLOCK_ID_LEN`] bytes of printable
/// ASCII (`+`, `/` and `=` of base64 included). Stores never use them as names
/// directly: see [`block_file_name`] and the Azure layout.
/// `create` takes no `staged-under`: it names blocks, and `create` has none.
pub fn check_create(staged_under: Option<&str>) -> Result<(), String> {
    match staged_under {
        Some(_) => Err("staged-under is for commit-blocks, not create".into()),
        None => Ok(()),
    }
}

/// The key whose staged blocks `commit-blocks` of `key` publishes.
pub fn staging_key<'a>(key: &'a str, staged_under: Option<&'a str>) -> Result<&'a str, String> {
    let staging = staged_under.unwrap_or(key);
    check_key(staging)?;
    Ok(staging)
}

pub fn check_block_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_BLOCK_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "block id must be 1 to {MAX_BLOCK_ID_LEN} bytes of printable ASCII"
        ));
    }
    Ok(())
}

/// A file name for a block id: its hex (at most 176 characters), so `/`, `.` and
/// case never matter, and the id comes back with [`block_id_of_file_name`].
pub fn block_file_name(id: &str) -> String {
    hex::encode(id)
}

/// The block id a [`block_file_name`] came from; none for any other name.
pub fn block_id_of_file_name(name: &str) -> Option<String> {
    let id = String::from_utf8(hex::decode(name).ok()?).ok()?;
    check_block_id(&id).ok()?;
    Some(id)
}

/// The bytes `start..end` that a range of `offset` and optional `length` selects
/// in a blob of `size` bytes; a range may end past the blob but not start past it.
pub fn resolve_range(offset: u64, length: Option<u64>, size: u64) -> Result<(u64, u64), String> {
    if offset > size {
        return Err(format!(
            "range starts at {offset} but the blob has {size} bytes"
        ));
    }
    let end = match length {
        Some(length) => offset.saturating_add(length).min(size),
        None => size,
    };
    Ok((offset, end))
}

/// Checks a finished upload of `size` bytes hashing to `sha256` (lowercase hex;
/// none when it was not computed, which passes only without an expected digest)
/// against what the caller expected. Nothing may be published when this fails.
pub fn verify(
    expected_size: Option<u64>,
    expected_sha256: Option<&str>,
    size: u64,
    sha256: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(expected) = expected_size {
        if expected != size {
            return Err(StoreError::Invalid(format!(
                "size mismatch: expected {expected} bytes, received {size}"
            )));
        }
    }
    if let Some(expected) = expected_sha256 {
        match sha256 {
            Some(actual) if expected.eq_ignore_ascii_case(actual) => {}
            Some(actual) => {
                return Err(StoreError::Invalid(format!(
                    "sha256 mismatch: expected {expected}, content hashes to {actual}"
                )))
            }
            None => {
                return Err(StoreError::Invalid(
                    "the content's sha256 was not computed".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Checks a size against an optional limit.
pub fn check_max_size(max_size: Option<u64>, size: u64) -> Result<(), StoreError> {
    match max_size {
        Some(max) if size > max => Err(StoreError::TooLarge(format!(
            "blob is over the {max}-byte limit"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("bazel/ac/00ff").is_ok());
        assert!(check_key("ccache/ab/cd-ef_1.2").is_ok());
        for bad in [
            "", "a//b", "/a", "a/", "a/../b", "./a", "a b", "a\\b", "a%2fb", "é",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn block_ids_as_azure_sdks_send_them() {
        let go_sdk = format!("{}==", "A+/b".repeat(21) + "xy");
        assert_eq!(go_sdk.len(), 88);
        assert!(check_block_id(&go_sdk).is_ok());
        assert!(check_block_id(&"a".repeat(89)).is_err());
        assert!(check_block_id("a b").is_err());
        let name = block_file_name(&go_sdk);
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            block_id_of_file_name(&name).as_deref(),
            Some(go_sdk.as_str())
        );
        assert_eq!(block_id_of_file_name("zz"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(resolve_range(2, Some(3), 10).unwrap(), (2, 5));
        assert_eq!(resolve_range(8, Some(30), 10).unwrap(), (8, 10));
        assert_eq!(resolve_range(10, None, 10).unwrap(), (10, 10));
        assert!(resolve_range(11, None, 10).is_err());
    }

    #[test]
    fn verification() {
        assert!(verify(Some(3), Some("AB"), 3, Some("ab")).is_ok());
        assert!(verify(Some(4), None, 3, None).is_err());
        assert!(verify(None, Some("ab"), 3, Some("cd")).is_err());
        assert!(verify(None, Some("ab"), 3, None).is_err());
        assert!(check_max_size(Some(2), 3).is_err());
    }
}
