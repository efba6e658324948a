//! How blobcache lays its data out in Azure, shared by every transport (the native
//! host and the wasm adapter), so that a block one of them staged can be committed
//! by the other:
//!
//! - block ids: a single-request upload names its blocks after a random upload id;
//!   a staged block (one request of a multi-request upload) names its parts after
//!   the caller's block id, a nonce ordering re-stagings, the part number and a
//!   mark on the last part, so a commit takes only complete, newest stagings;
//! - keys and block ids follow one set of rules ([`check_key`], [`check_block_id`]);
//! - the verified sha256 of the content is kept in blob metadata under
//!   [`DIGEST_METADATA`], which callers can never set themselves.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::ops::{self, Condition, WriteProperties};
use crate::response::{AzureError, BlobProperties, ErrorKind, ListedBlock};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest block id, in bytes.
pub const MAX_BLOCK_ID_LEN: usize = 64;

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

/// Block ids: 1 to 64 bytes of printable ASCII.
pub fn check_block_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_BLOCK_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "block id must be 1 to {MAX_BLOCK_ID_LEN} bytes of printable ASCII"
        ));
    }
    Ok(())
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

/// The metadata name holding the content's verified sha256 (lowercase hex).
pub const DIGEST_METADATA: &str = "sha256";

/// How a writer names its Azure blocks. Every id is a name of at most 64 bytes,
/// padded, so all ids of one blob have the same length, as Azure requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockIds {
    /// A single-request upload: a random upload id, so concurrent uploads of
    /// one key never share blocks.
    Upload { upload: String },
    /// One staged block: the caller's block id (hashed), a nonce that orders
    /// re-stagings of the same id, and the part number; the last part is marked.
    Staged { prefix: String, nonce: String },
}

impl BlockIds {
    /// Ids for a single-request upload; `random` must come from a real source of
    /// randomness.
    pub fn upload(random: [u8; 8]) -> BlockIds {
        BlockIds::Upload {
            upload: hex::encode(random),
        }
    }

    /// Ids for a staging of `block_id` made at `unix_millis`; `random` breaks ties
    /// between stagings made in the same millisecond.
    pub fn staged(block_id: &str, unix_millis: u64, random: [u8; 2]) -> BlockIds {
        // Time first, so the newest staging sorts last.
        let nonce = format!(
            "{:012x}{}",
            unix_millis & 0xffff_ffff_ffff,
            hex::encode(random)
        );
        BlockIds::Staged {
            prefix: staged_prefix(block_id),
            nonce,
        }
    }

    /// The Azure block id of part `index`; `last` marks the final part of a staging.
    pub fn id(&self, index: usize, last: bool) -> String {
        match self {
            BlockIds::Upload { upload } => ops::named_block_id(&format!("u{upload}-{index:08}")),
            BlockIds::Staged { prefix, nonce } => {
                let mark = if last { 'L' } else { 'P' };
                ops::named_block_id(&format!("s{prefix}{nonce}{index:08}{mark}"))
            }
        }
    }

    /// Whether `finish` publishes the blob (an upload) or only stages (a block).
    pub fn publishes(&self) -> bool {
        matches!(self, BlockIds::Upload { .. })
    }
}

/// The part of a staged block's Azure ids that names the caller's block id.
pub fn staged_prefix(block_id: &str) -> String {
    hex::encode(&Sha256::digest(block_id.as_bytes())[..16])
}

/// A staged part: index, whether it is the last, Azure block id, size.
type Part = (u64, bool, String, u64);

/// The newest complete staging of each caller block id (keyed by
/// [`staged_prefix`]), as Azure block ids in order with their sizes. A staging is
/// complete when its parts run from 0 to a part marked last, without gaps.
pub fn complete_stagings(blocks: Vec<ListedBlock>) -> HashMap<String, Vec<(String, u64)>> {
    // prefix -> nonce -> parts
    let mut stagings: HashMap<String, HashMap<String, Vec<Part>>> = HashMap::new();
    for block in blocks {
        let Some(name) = ops::block_id_name(&block.name) else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix('s')
            .filter(|r| r.len() == 32 + 16 + 8 + 1)
        else {
            continue;
        };
        let (prefix, rest) = rest.split_at(32);
        let (nonce, rest) = rest.split_at(16);
        let (index, mark) = rest.split_at(8);
        let Ok(index) = index.parse::<u64>() else {
            continue;
        };
        stagings
            .entry(prefix.to_string())
            .or_default()
            .entry(nonce.to_string())
            .or_default()
            .push((index, mark == "L", block.name, block.size));
    }
    let mut complete = HashMap::new();
    for (prefix, by_nonce) in stagings {
        let mut nonces: Vec<_> = by_nonce.into_iter().collect();
        nonces.sort_by(|a, b| b.0.cmp(&a.0));
        for (_, mut parts) in nonces {
            parts.sort();
            let contiguous = parts.iter().enumerate().all(|(i, part)| part.0 == i as u64);
            let ends_marked =
                parts.last().is_some_and(|p| p.1) && parts.iter().filter(|p| p.1).count() == 1;
            if contiguous && ends_marked {
                complete.insert(
                    prefix,
                    parts
                        .into_iter()
                        .map(|(_, _, id, size)| (id, size))
                        .collect(),
                );
                break;
            }
        }
    }
    complete
}

/// The Azure block list that commits the caller's `block_ids` in order, and the
/// blob's size, from what Get Block List reported as uncommitted. Fails naming
/// the first block id that has no complete staging.
pub fn assemble(
    uncommitted: Vec<ListedBlock>,
    block_ids: &[String],
) -> Result<(Vec<String>, u64), String> {
    let mut stagings = complete_stagings(uncommitted);
    let mut azure_ids = Vec::new();
    let mut size = 0u64;
    for id in block_ids {
        let parts = stagings
            .remove(&staged_prefix(id))
            .ok_or_else(|| format!("block {id:?} is not staged"))?;
        for (azure_id, part_size) in parts {
            azure_ids.push(azure_id);
            size += part_size;
        }
    }
    Ok((azure_ids, size))
}

/// The metadata to store: the caller's, without anything posing as our digest,
/// plus the digest we verified.
pub fn metadata_with_digest(
    metadata: &[(String, String)],
    sha256: Option<&str>,
) -> Vec<(String, String)> {
    let mut stored: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(DIGEST_METADATA))
        .cloned()
        .collect();
    if let Some(sha256) = sha256 {
        stored.push((DIGEST_METADATA.into(), sha256.to_string()));
    }
    stored
}

/// The properties of a publishing write: content type, the caller's metadata
/// plus our verified digest, and the condition (create-only, or replace only
/// the version with `if_match`).
pub fn write_properties(
    create_only: bool,
    if_match: Option<&str>,
    content_type: Option<&str>,
    metadata: &[(String, String)],
    sha256: Option<&str>,
) -> WriteProperties {
    WriteProperties {
        content_type: content_type.map(str::to_string),
        metadata: metadata_with_digest(metadata, sha256),
        condition: match (create_only, if_match) {
            (true, _) => Condition::IfNoneExists,
            (false, Some(etag)) => Condition::IfMatch(etag.to_string()),
            (false, None) => Condition::None,
        },
    }
}

/// What a refused publish (Put Blob or Put Block List) may mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishConflict {
    /// The refusal stands.
    Final,
    /// An earlier attempt of ours may have been applied before its answer was
    /// lost, or a concurrent upload of the same content won: if the blob's
    /// digest is ours, the publish succeeded.
    MaybeOurs,
    /// A concurrent commit consumed our blocks (`InvalidBlockList`): if the
    /// digest is not ours, the caller should retry.
    Replaced,
}

/// Classifies the refusal `error` of a publish; `retried` says whether an
/// earlier attempt failed in a way that may still have been applied.
pub fn publish_conflict(error: &AzureError, retried: bool) -> PublishConflict {
    if error.code == "InvalidBlockList" {
        return PublishConflict::Replaced;
    }
    match error.kind() {
        ErrorKind::AlreadyExists | ErrorKind::PreconditionFailed if retried => {
            PublishConflict::MaybeOurs
        }
        _ => PublishConflict::Final,
    }
}

/// A stored blob's properties as callers see them: the verified digest apart from
/// the caller's metadata, and no content type when it is Azure's default.
pub struct StoredBlob {
    pub size: u64,
    pub etag: String,
    pub last_modified: u64,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub metadata: Vec<(String, String)>,
}

impl From<BlobProperties> for StoredBlob {
    fn from(properties: BlobProperties) -> StoredBlob {
        let (digest, metadata): (Vec<_>, Vec<_>) = properties
            .metadata
            .into_iter()
            .partition(|(k, _)| k == DIGEST_METADATA);
        StoredBlob {
            size: properties.size,
            etag: properties.etag,
            last_modified: properties.last_modified,
            content_type: properties
                .content_type
                .filter(|t| t != "application/octet-stream"),
            sha256: digest.into_iter().next().map(|(_, v)| v),
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ids: &BlockIds, parts: &[(usize, bool, u64)]) -> Vec<ListedBlock> {
        parts
            .iter()
            .map(|&(index, last, size)| ListedBlock {
                name: ids.id(index, last),
                size,
            })
            .collect()
    }

    #[test]
    fn ids_of_one_blob_have_one_length() {
        let upload = BlockIds::upload([7; 8]);
        let staged = BlockIds::staged("a-block", 1_700_000_000_000, [1, 2]);
        let lengths: Vec<usize> = [upload.id(0, false), upload.id(99, true), staged.id(3, true)]
            .iter()
            .map(String::len)
            .collect();
        assert!(lengths.windows(2).all(|w| w[0] == w[1]), "{lengths:?}");
        assert!(upload.publishes() && !staged.publishes());
    }

    #[test]
    fn commits_take_the_newest_complete_staging_only() {
        let old = BlockIds::staged("b", 1_000, [0, 0]);
        let new = BlockIds::staged("b", 2_000, [0, 0]);
        let newest_incomplete = BlockIds::staged("b", 3_000, [0, 0]);
        let other = BlockIds::staged("c", 1_500, [0, 0]);
        let mut blocks = listed(&old, &[(0, false, 10), (1, true, 5)]);
        blocks.extend(listed(&new, &[(0, true, 7)]));
        // A failed re-staging: parts without the last mark, and one with a gap.
        blocks.extend(listed(&newest_incomplete, &[(0, false, 1), (2, true, 1)]));
        blocks.extend(listed(
            &other,
            &[(0, false, 3), (1, false, 3), (2, true, 3)],
        ));
        let (ids, size) = assemble(blocks.clone(), &["c".into(), "b".into()]).unwrap();
        assert_eq!(
            ids,
            vec![
                other.id(0, false),
                other.id(1, false),
                other.id(2, true),
                new.id(0, true)
            ]
        );
        assert_eq!(size, 3 + 3 + 3 + 7);
        let missing = assemble(blocks, &["b".into(), "d".into()]).unwrap_err();
        assert!(missing.contains("\"d\""), "{missing}");
    }

    #[test]
    fn refused_publishes_are_checked_only_when_they_may_be_ours() {
        let error = |status, code: &str| AzureError {
            status,
            code: code.into(),
            message: String::new(),
        };
        let exists = error(409, "BlobAlreadyExists");
        assert_eq!(publish_conflict(&exists, false), PublishConflict::Final);
        assert_eq!(publish_conflict(&exists, true), PublishConflict::MaybeOurs);
        let replaced = error(400, "InvalidBlockList");
        assert_eq!(
            publish_conflict(&replaced, false),
            PublishConflict::Replaced
        );
        let denied = error(403, "AuthenticationFailed");
        assert_eq!(publish_conflict(&denied, true), PublishConflict::Final);
    }

    #[test]
    fn callers_cannot_forge_the_digest() {
        let stored = metadata_with_digest(
            &[
                ("SHA256".into(), "forged".into()),
                ("tag".into(), "x".into()),
            ],
            Some("abc"),
        );
        assert_eq!(
            stored,
            vec![("tag".into(), "x".into()), ("sha256".into(), "abc".into())]
        );
        let blob = StoredBlob::from(BlobProperties {
            size: 1,
            etag: "\"e\"".into(),
            last_modified: 0,
            content_type: Some("application/octet-stream".into()),
            metadata: stored,
        });
        assert_eq!(blob.sha256.as_deref(), Some("abc"));
        assert_eq!(blob.metadata, vec![("tag".into(), "x".into())]);
        assert_eq!(blob.content_type, None);
    }
}
