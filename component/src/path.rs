//! Validation of request paths, shared by every protocol.
//!
//! A path that fails here never reaches a protocol module or the store: the caller
//! answers 400 with the reason. Protocols then check the shape of their own keys.

/// Longest accepted request path (without the query), in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most segments a path may have.
pub const MAX_SEGMENTS: usize = 32;

/// A request path split into validated segments, plus its raw query.
#[derive(Debug, PartialEq, Eq)]
pub struct CachePath<'a> {
    pub segments: Vec<&'a str>,
    pub query: Option<&'a str>,
}

/// Splits `path_with_query` and checks every segment.
///
/// Rejected: over-long paths, percent-encoding (an encoded `/` or `\` could smuggle a
/// separator into a key, and no cache client needs it), empty segments (`//`, a
/// trailing `/`), `.` and `..`, and any byte outside `[A-Za-z0-9._~:+=@-]`.
pub fn parse(path_with_query: &str) -> Result<CachePath<'_>, String> {
    parse_inner(path_with_query, false)
}

/// [`parse`] for protocols with collections (WebDAV): a trailing `/` is
/// allowed and kept as a last, empty segment, which marks a collection, and
/// doubled slashes are read as one.
pub fn parse_collection(path_with_query: &str) -> Result<CachePath<'_>, String> {
    parse_inner(path_with_query, true)
}

/// Longest raw path [`split_raw`] accepts: a 1024-character Azure blob name
/// with every character percent-encoded, and room for the rest.
pub const MAX_RAW_PATH_LEN: usize = 4096;

/// Splits `path_with_query` into raw segments, still percent-encoded and not
/// checked: for a protocol that decodes and checks its names itself (the
/// Azure-compatible endpoint, whose clients encode `/` in blob names and sign
/// the path as sent).
pub fn split_raw(path_with_query: &str) -> Result<CachePath<'_>, String> {
    let (rest, query) = split_path(path_with_query, MAX_RAW_PATH_LEN)?;
    let segments = match rest.is_empty() {
        true => Vec::new(),
        false => rest.split('/').collect(),
    };
    Ok(CachePath { segments, query })
}

/// The path after its leading `/`, and the query; the path at most `max_len` bytes.
fn split_path(path_with_query: &str, max_len: usize) -> Result<(&str, Option<&str>), String> {
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_with_query, None),
    };
    if path.len() > max_len {
        return Err(format!("path is longer than {max_len} bytes"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("path must start with /".into());
    };
    Ok((rest, query))
}

fn parse_inner(path_with_query: &str, collections: bool) -> Result<CachePath<'_>, String> {
    let (rest, query) = split_path(path_with_query, MAX_PATH_LEN)?;
    if rest.is_empty() {
        return Ok(CachePath {
            segments: Vec::new(),
            query,
        });
    }
    let mut segments: Vec<&str> = rest.split('/').collect();
    if collections {
        // WebDAV clients double slashes when an endpoint ends in `/`; a
        // collection's path means the same either way. A trailing `/` stays
        // as the last, empty segment.
        let is_collection = rest.ends_with('/');
        segments.retain(|segment| !segment.is_empty());
        if is_collection {
            segments.push("");
        }
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(format!("path has more than {MAX_SEGMENTS} segments"));
    }
    let checked = match (collections, segments.split_last()) {
        (true, Some((&"", init))) => init,
        _ => &segments[..],
    };
    for segment in checked {
        check_segment(segment)?;
    }
    Ok(CachePath { segments, query })
}

fn check_segment(segment: &str) -> Result<(), String> {
    match segment {
        "" => return Err("path has an empty segment".into()),
        "." | ".." => return Err(format!("path segment {segment:?} is not allowed")),
        _ => {}
    }
    if let Some(at) = segment.find('%') {
        let code = segment.get(at..at + 3).unwrap_or(&segment[at..]);
        return Err(match code.to_ascii_uppercase().as_str() {
            "%2F" | "%5C" => format!("encoded separator {code} in path"),
            _ => format!("percent-encoded character {code} in path is not allowed"),
        });
    }
    if let Some(bad) = segment.chars().find(|c| !is_key_char(*c)) {
        return Err(format!("character {bad:?} is not allowed in a path"));
    }
    Ok(())
}

/// Characters allowed in path segments and hence in store keys.
pub fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | ':' | '+' | '=' | '@' | '-')
}

/// True for 1 to `max` ASCII letters and digits: the opaque task and artifact
/// hashes of Turborepo, Nx and Gradle (hex or decimal in practice).
pub fn is_alphanumeric_key(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// True for exactly 64 lowercase hex digits (a sha256 digest as clients send it).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_segments_and_query() {
        let p = parse("/a/b.c/d?x=1").unwrap();
        assert_eq!(p.segments, ["a", "b.c", "d"]);
        assert_eq!(p.query, Some("x=1"));
        assert!(parse("/").unwrap().segments.is_empty());
    }

    #[test]
    fn rejects_traversal_and_empty_segments() {
        assert!(parse("/a/../b").unwrap_err().contains(".."));
        assert!(parse("/a/./b").is_err());
        assert!(parse("/a//b").unwrap_err().contains("empty"));
        assert!(parse("/a/b/").unwrap_err().contains("empty"));
        assert!(parse("a/b").is_err());
    }

    #[test]
    fn rejects_encoded_separators_and_odd_bytes() {
        assert!(parse("/a%2Fb").unwrap_err().contains("separator"));
        assert!(parse("/a%5cb").unwrap_err().contains("separator"));
        assert!(parse("/a%41").unwrap_err().contains("percent"));
        assert!(parse("/a\\b").is_err());
        assert!(parse("/a b").is_err());
        assert!(parse("/é").is_err());
    }

    #[test]
    fn collections_may_end_in_a_slash() {
        assert_eq!(parse_collection("/a/b/").unwrap().segments, ["a", "b", ""]);
        assert_eq!(parse_collection("/a/b").unwrap().segments, ["a", "b"]);
        assert_eq!(parse_collection("/").unwrap().segments, Vec::<&str>::new());
        assert_eq!(parse_collection("//a//b").unwrap().segments, ["a", "b"]);
        assert_eq!(parse_collection("/a//").unwrap().segments, ["a", ""]);
        assert!(parse_collection("/a/../").is_err());
        assert!(parse("/a/b/").is_err());
    }

    #[test]
    fn alphanumeric_keys() {
        assert!(is_alphanumeric_key("0123abcDEF", 16));
        assert!(!is_alphanumeric_key("", 16));
        assert!(!is_alphanumeric_key(&"a".repeat(17), 16));
        assert!(!is_alphanumeric_key("ab-cd", 16));
        assert!(!is_alphanumeric_key("ab.cd", 16));
    }

    #[test]
    fn rejects_overlong_paths() {
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(parse(&long).unwrap_err().contains("longer"));
        let many = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(parse(&many).unwrap_err().contains("segments"));
    }

    #[test]
    fn sha256_hex() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex(&"ab".repeat(31)));
        assert!(!is_sha256_hex(&"zz".repeat(32)));
    }
}
