//! OCI registry parsing (`protocol::oci`): manifests (`ManifestDocument`),
//! digests (`parse_digest`) and registry paths (`oci::parse`: repository
//! names, tags, digests, upload ids), against references written from the
//! distribution spec's grammar.
#![no_main]

use blobcache_component::protocol::oci::{self, Call, ManifestDocument, Reference};
use libfuzzer_sys::fuzz_target;
use sha2::Digest as _;

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn reference_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && lower_alnum(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        let sep_start = i;
        while i < b.len() && !lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok =
            matches!(sep, "." | "_" | "__") || (!sep.is_empty() && sep.bytes().all(|x| x == b'-'));
        if !ok || !run(&mut i) {
            return false;
        }
    }
    true
}

fn reference_name(components: &[&str]) -> bool {
    !components.is_empty()
        && components.join("/").len() <= 255
        && components.iter().all(|c| reference_component(c))
}

fn reference_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn reference_tag(t: &str) -> bool {
    let b = t.as_bytes();
    (1..=128).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn check_digest(d: &str) {
    let parsed = oci::parse_digest(d);
    assert_eq!(parsed.is_ok(), reference_digest(d), "{d:?}");
    match parsed {
        Ok(same) => assert_eq!(same, d),
        Err(failure) => {
            assert_eq!(failure.status(), 400);
            assert_eq!(failure.code, Some("DIGEST_INVALID"));
        }
    }
}

fn check_paths(text: &str) {
    let segments: Vec<&str> = text.split('/').take(40).collect();
    // Whatever the path, parsing ends in a call or a failure with a code.
    match oci::parse(&segments) {
        Ok(call) => {
            if let Call::Blob { digest, .. } = &call {
                assert!(reference_digest(digest));
            }
            if let Call::Manifest {
                reference: Reference::Digest(digest),
                ..
            } = &call
            {
                assert!(reference_digest(digest));
            }
            if let Call::Manifest {
                reference: Reference::Tag(tag),
                ..
            } = &call
            {
                assert!(reference_tag(tag), "{tag:?}");
            }
            if let Call::Upload { id, .. } = &call {
                assert!(
                    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                );
            }
        }
        Err(failure) => {
            assert!(failure.code.is_some(), "{failure:?}");
            assert!(matches!(failure.status(), 400 | 404));
        }
    }
    // The input's segments as a repository name.
    let mut tags = segments.clone();
    tags.extend(["tags", "list"]);
    let parsed = oci::parse(&tags);
    assert_eq!(
        matches!(parsed, Ok(Call::Tags { .. })),
        reference_name(&segments),
        "{segments:?}: {parsed:?}"
    );
    if let Err(failure) = parsed {
        assert_eq!(failure.code, Some("NAME_INVALID"));
    }
    // The last segment as a reference of a valid repository.
    let last = segments.last().copied().unwrap_or("");
    let manifest = oci::parse(&["app", "manifests", last]);
    let expected = match last.contains(':') {
        true => reference_digest(last),
        false => reference_tag(last),
    };
    assert_eq!(manifest.is_ok(), expected, "{last:?}: {manifest:?}");
}

fn check_manifest(bytes: &[u8]) {
    let Ok(document) = serde_json::from_slice::<ManifestDocument>(bytes) else {
        return;
    };
    for descriptor in document
        .config
        .iter()
        .chain(&document.layers)
        .chain(&document.manifests)
    {
        check_digest(&descriptor.digest);
    }
    // The digest a manifest is stored under is one the registry accepts.
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    assert!(oci::parse_digest(&digest).is_ok());
    assert!(oci::parse_digest(&digest.to_ascii_uppercase()).is_err());
    // And the same document, written out again, reads the same.
    // (Through a `Value`: unknown fields may hold numbers a `Value` refuses.)
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let again: ManifestDocument = serde_json::from_value(value).unwrap();
    assert_eq!(again.media_type, document.media_type);
    assert_eq!(again.layers.len(), document.layers.len());
    assert_eq!(again.manifests.len(), document.manifests.len());
    assert_eq!(again.config.is_some(), document.config.is_some());
}

fuzz_target!(|data: &[u8]| {
    check_manifest(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_digest(text);
        check_digest(text.trim());
        check_paths(text);
    }
});
