//! `Range: bytes=...` request headers (RFC 9110 §14), resolved against a size.
//! Pure: tested natively.

/// One byte range as a client asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=first-last` (inclusive) or `bytes=first-` (`last` none).
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// What a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// One range we serve with 206.
    One(RangeSpec),
    /// A header we may ignore and answer with the whole blob (RFC 9110 allows it):
    /// several ranges, another unit, or a malformed value.
    Ignore,
}

/// Parses a `Range` header value.
pub fn parse(value: &str) -> Parsed {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Parsed::Ignore;
    };
    if spec.contains(',') {
        return Parsed::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Parsed::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(n) => Parsed::One(RangeSpec::Suffix(n)),
            None => Parsed::Ignore,
        },
        (first, "") => match number(first) {
            Some(first) => Parsed::One(RangeSpec::From { first, last: None }),
            None => Parsed::Ignore,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(first), Some(last)) if first <= last => Parsed::One(RangeSpec::From {
                first,
                last: Some(last),
            }),
            _ => Parsed::Ignore,
        },
    }
}

impl RangeSpec {
    /// The bytes `start..end` this range covers in a blob of `size` bytes, or
    /// none when it cannot be satisfied (416): it starts at or past the end, or
    /// is an empty suffix, or a suffix of an empty blob. A range it gives is
    /// never empty (`start < end`), so [`content_range`] can write it.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            RangeSpec::From { first, last } => {
                if first >= size {
                    return None;
                }
                let end = last.map_or(size, |last| last.saturating_add(1).min(size));
                Some((first, end))
            }
            // An empty blob has no last bytes to give: 416, as for `bytes=0-`.
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(_) if size == 0 => None,
            RangeSpec::Suffix(n) => Some((size.saturating_sub(n), size)),
        }
    }

    /// Whether the range can be resolved without knowing the size first.
    pub fn start(self) -> Option<u64> {
        match self {
            RangeSpec::From { first, .. } => Some(first),
            RangeSpec::Suffix(_) => None,
        }
    }
}

/// `bytes start-(end-1)/size`, the `Content-Range` of a 206.
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", end - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            parse("bytes=0-99"),
            Parsed::One(RangeSpec::From {
                first: 0,
                last: Some(99)
            })
        );
        assert_eq!(
            parse("bytes=100-"),
            Parsed::One(RangeSpec::From {
                first: 100,
                last: None
            })
        );
        assert_eq!(parse("bytes=-5"), Parsed::One(RangeSpec::Suffix(5)));
    }

    #[test]
    fn ignores_what_it_need_not_serve() {
        for value in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse(value), Parsed::Ignore, "{value}");
        }
    }

    #[test]
    fn resolves_against_the_size() {
        let from = |first, last| RangeSpec::From { first, last };
        assert_eq!(from(0, Some(99)).resolve(10), Some((0, 10)));
        assert_eq!(from(2, Some(4)).resolve(10), Some((2, 5)));
        assert_eq!(from(9, None).resolve(10), Some((9, 10)));
        assert_eq!(from(10, None).resolve(10), None);
        assert_eq!(from(0, None).resolve(0), None);
        assert_eq!(RangeSpec::Suffix(3).resolve(10), Some((7, 10)));
        assert_eq!(RangeSpec::Suffix(30).resolve(10), Some((0, 10)));
        assert_eq!(RangeSpec::Suffix(0).resolve(10), None);
        // An empty blob has no last bytes: 416, not a 206 of nothing.
        assert_eq!(RangeSpec::Suffix(5).resolve(0), None);
        assert_eq!(content_range(7, 10, 10), "bytes 7-9/10");
    }
}
