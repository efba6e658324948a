//! `Range` headers (`http::range`): parsing, resolving against a size, the
//! `Content-Range` of the answer, and what the store is then asked for
//! (`store_rules::resolve_range`, as `blob::read_range` asks it); and the
//! HTTP dates `If-Range` compares with (`http::http_date`).
//!
//! Checked: a parsed range written back as `bytes=...` parses the same; a
//! header with several ranges or another unit is ignored; a resolved range is
//! a non-empty span inside the blob, and its `Content-Range` names it; the
//! store serves the same span for the offset and length `read_range` asks for;
//! `http_date` writes every time it accepts as a date that reads back.
#![no_main]

use blobcache_component::http::http_date;
use blobcache_component::http::range::{content_range, parse, Parsed, RangeSpec};
use blobcache_store_rules::resolve_range;
use libfuzzer_sys::fuzz_target;

fn write(spec: RangeSpec) -> String {
    match spec {
        RangeSpec::From {
            first,
            last: Some(last),
        } => format!("bytes={first}-{last}"),
        RangeSpec::From { first, last: None } => format!("bytes={first}-"),
        RangeSpec::Suffix(n) => format!("bytes=-{n}"),
    }
}

fn check_resolve(spec: RangeSpec, size: u64) {
    let Some((start, end)) = spec.resolve(size) else {
        // Unsatisfiable: it starts at or past the end, or asks for nothing.
        match spec {
            RangeSpec::From { first, .. } => assert!(first >= size),
            RangeSpec::Suffix(n) => assert!(n == 0 || size == 0),
        }
        return;
    };
    assert!(
        start < end && end <= size,
        "{spec:?} in {size}: {start}..{end}"
    );
    match spec {
        RangeSpec::From { first, last } => {
            assert_eq!(start, first);
            assert_eq!(end, last.map_or(size, |l| l.saturating_add(1).min(size)));
        }
        RangeSpec::Suffix(n) => {
            assert_eq!(end, size);
            assert_eq!(end - start, n.min(size));
        }
    }
    let header = content_range(start, end, size);
    assert_eq!(header, format!("bytes {start}-{}/{size}", end - 1));

    // What `blob::read_range` asks the store for, and what the store serves.
    let (offset, length) = match spec {
        RangeSpec::From { first, last } => {
            (first, last.and_then(|last| (last - first).checked_add(1)))
        }
        RangeSpec::Suffix(_) => (start, Some(end - start)),
    };
    assert_eq!(resolve_range(offset, length, size), Ok((start, end)));
}

fuzz_target!(|data: &[u8]| {
    let size = blobcache_fuzz::leading_u64(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The header from the input.
    match parse(text) {
        Parsed::One(spec) => {
            assert!(text.trim().starts_with("bytes="));
            assert!(!text.contains(','));
            if let RangeSpec::From {
                first,
                last: Some(last),
            } = spec
            {
                assert!(first <= last);
            }
            assert_eq!(parse(&write(spec)), Parsed::One(spec));
            assert_eq!(parse(&format!(" {} ", write(spec))), Parsed::One(spec));
            assert_eq!(
                parse(&format!("{},{}", write(spec), write(spec))),
                Parsed::Ignore
            );
            assert_eq!(
                parse(&write(spec).replacen("bytes", "items", 1)),
                Parsed::Ignore
            );
            for size in [0, 1, size, size / 2, u64::MAX] {
                check_resolve(spec, size);
            }
        }
        Parsed::Ignore => {}
    }
    // Ranges from the input's numbers.
    let numbers: Vec<u64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .take(3)
        .collect();
    if let [a, b, ..] = numbers[..] {
        let (first, last) = (a.min(b), a.max(b));
        for spec in [
            RangeSpec::From {
                first,
                last: Some(last),
            },
            RangeSpec::From { first, last: None },
            RangeSpec::Suffix(a),
        ] {
            assert_eq!(parse(&write(spec)), Parsed::One(spec));
            for size in [0, 1, b, numbers.get(2).copied().unwrap_or(size)] {
                check_resolve(spec, size);
            }
        }
    }
    // Dates `If-Range` and `Last-Modified` carry.
    for seconds in [size, size % 253_402_300_800] {
        if let Some(date) = http_date(seconds) {
            let read = httpdate::parse_http_date(&date).unwrap();
            assert_eq!(
                read.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
                seconds
            );
        }
    }
});
