//! How blobcache lays its data out in Azure, shared by every transport (the native
//! host and the wasm store component), so that a block one of them staged can be
//! committed by the other:
//!
//! - a single-request upload goes to the key's blob, its blocks named after a
//!   random upload id;
//! - a staged block (one request of a multi-request upload) goes to the key's
//!   *staging blob* ([`staging_blob`]), never to the key's own blob: Azure cannot
//!   read uncommitted blocks, so a digest over blocks staged by separate requests
//!   can only be checked after committing them somewhere readers never look (see
//!   `store::commit`);
//! - caller block ids are opaque (up to 88 bytes: the Go SDK's base64 of 64 bytes)
//!   and Azure's must be base64 of at most 64 bytes, all of one length per blob.
//!   So a staging's data parts are named by a hash of the caller's id, a nonce that
//!   orders re-stagings, the part number and a last-part mark; and each staging also
//!   stages one or two 1-byte *name parts* whose ids carry the caller's id itself,
//!   so `list-blocks` can give back exactly the ids the caller sent, from one Get
//!   Block List and with no state anywhere else. Name parts are never committed;
//!   Put Block List discards them with every other unlisted block;
//! - the verified sha256 of the content is kept in blob metadata under
//!   [`DIGEST_METADATA`], which callers can never set themselves.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::ops::{Condition, WriteProperties};
use crate::response::{AzureError, BlobProperties, ErrorKind, ListedBlob, ListedBlock};

/// The metadata name holding the content's verified sha256 (lowercase hex).
pub const DIGEST_METADATA: &str = "sha256";

/// Raw bytes behind every Azure block id we make (base64: 88 characters).
const RAW_ID_LEN: usize = 64;
/// Caller-id bytes one name part carries.
const NAME_CHUNK: usize = RAW_ID_LEN - 19;
const UPLOAD: u8 = b'U';
const STAGED: u8 = b'S';
const NAME: u8 = b'N';

/// The blob that holds the staged blocks of `key` until they are committed. `!`
/// is not a key character, so no key names it, and listings skip it.
pub fn staging_blob(prefix: &str, key: &str) -> String {
    format!("{prefix}!staging/{key}")
}

/// The key a listed blob name stands for, or none when it is not one of ours
/// (outside the prefix, or a staging blob).
pub fn listed_key<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    let key = name.strip_prefix(prefix)?;
    blobcache_store_rules::check_key(key).ok()?;
    Some(key)
}

/// How a writer names its Azure blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockIds {
    /// A single-request upload: a random upload id, so concurrent uploads of
    /// one key never share blocks.
    Upload { upload: [u8; 8] },
    /// One staging of the caller's block id `name`: its hash, and a nonce that
    /// orders re-stagings of the same id.
    Staged {
        name: String,
        hash: [u8; 16],
        nonce: [u8; 8],
    },
}

impl BlockIds {
    /// Ids for a single-request upload; `random` must come from a real source of
    /// randomness.
    pub fn upload(random: [u8; 8]) -> BlockIds {
        BlockIds::Upload { upload: random }
    }

    /// Ids for a staging of `block_id` made at `unix_millis`; `random` breaks ties
    /// between stagings made in the same millisecond.
    pub fn staged(block_id: &str, unix_millis: u64, random: [u8; 2]) -> BlockIds {
        // Time first, so the newest staging sorts last.
        let mut nonce = [0u8; 8];
        nonce[..6].copy_from_slice(&unix_millis.to_be_bytes()[2..]);
        nonce[6..].copy_from_slice(&random);
        BlockIds::Staged {
            name: block_id.to_string(),
            hash: id_hash(block_id),
            nonce,
        }
    }

    /// The Azure block id of part `index`; `last` marks the final part of a staging.
    pub fn id(&self, index: usize, last: bool) -> String {
        let mut raw = [0u8; RAW_ID_LEN];
        match self {
            BlockIds::Upload { upload } => {
                raw[0] = UPLOAD;
                raw[1..9].copy_from_slice(upload);
                raw[9..13].copy_from_slice(&(index as u32).to_be_bytes());
            }
            BlockIds::Staged { hash, nonce, .. } => {
                raw[0] = STAGED;
                raw[1..17].copy_from_slice(hash);
                raw[17..25].copy_from_slice(nonce);
                raw[25..29].copy_from_slice(&(index as u32).to_be_bytes());
                raw[29] = u8::from(last);
            }
        }
        STANDARD.encode(raw)
    }

    /// The name parts a staging sends before its last data part (1 byte each):
    /// their ids carry the caller's block id. None for an upload.
    pub fn name_parts(&self) -> Vec<String> {
        let BlockIds::Staged { name, hash, .. } = self else {
            return Vec::new();
        };
        let chunks: Vec<&[u8]> = name.as_bytes().chunks(NAME_CHUNK).collect();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut raw = [0u8; RAW_ID_LEN];
                raw[0] = NAME;
                raw[1..17].copy_from_slice(hash);
                raw[17] = i as u8;
                raw[18] = chunks.len() as u8;
                raw[19..19 + chunk.len()].copy_from_slice(chunk);
                STANDARD.encode(raw)
            })
            .collect()
    }

    /// Whether `finish` publishes the blob (an upload) or only stages (a block).
    pub fn publishes(&self) -> bool {
        matches!(self, BlockIds::Upload { .. })
    }
}

fn id_hash(block_id: &str) -> [u8; 16] {
    Sha256::digest(block_id.as_bytes())[..16]
        .try_into()
        .expect("16 bytes")
}

/// What an Azure block id we made says.
enum Part {
    Data {
        hash: [u8; 16],
        nonce: [u8; 8],
        index: u32,
        last: bool,
    },
    Name {
        hash: [u8; 16],
        chunk: u8,
        count: u8,
        bytes: Vec<u8>,
    },
}

fn parse(azure_id: &str) -> Option<Part> {
    let raw = STANDARD.decode(azure_id).ok()?;
    if raw.len() != RAW_ID_LEN {
        return None;
    }
    let hash: [u8; 16] = raw[1..17].try_into().ok()?;
    match raw[0] {
        STAGED => Some(Part::Data {
            hash,
            nonce: raw[17..25].try_into().ok()?,
            index: u32::from_be_bytes(raw[25..29].try_into().ok()?),
            last: raw[29] == 1,
        }),
        NAME => {
            let bytes = raw[19..].iter().copied().take_while(|b| *b != 0).collect();
            Some(Part::Name {
                hash,
                chunk: raw[17],
                count: raw[18],
                bytes,
            })
        }
        _ => None,
    }
}

/// A staged data part: index, whether it is the last, Azure block id, size.
type DataPart = (u32, bool, String, u64);
/// The name parts of one caller id: how many there should be, and (chunk, bytes).
type NameChunks = (u8, Vec<(u8, Vec<u8>)>);

/// What a staging blob holds, read from its uncommitted blocks.
pub struct Staged {
    /// Per caller-id hash: the Azure ids and sizes of its newest complete staging.
    complete: HashMap<[u8; 16], Vec<(String, u64)>>,
    /// Per caller-id hash: the caller's id, from the name parts.
    names: HashMap<[u8; 16], String>,
}

impl Staged {
    /// Reads Get Block List's uncommitted blocks. A staging is complete when its
    /// parts run from 0 to a part marked last, without gaps; of several complete
    /// stagings of one id the newest counts.
    pub fn new(blocks: Vec<ListedBlock>) -> Staged {
        let mut stagings: HashMap<[u8; 16], HashMap<[u8; 8], Vec<DataPart>>> = HashMap::new();
        let mut chunks: HashMap<[u8; 16], NameChunks> = HashMap::new();
        for block in blocks {
            match parse(&block.name) {
                Some(Part::Data {
                    hash,
                    nonce,
                    index,
                    last,
                }) => stagings
                    .entry(hash)
                    .or_default()
                    .entry(nonce)
                    .or_default()
                    .push((index, last, block.name, block.size)),
                Some(Part::Name {
                    hash,
                    chunk,
                    count,
                    bytes,
                }) => {
                    let entry = chunks.entry(hash).or_insert((count, Vec::new()));
                    entry.1.push((chunk, bytes));
                }
                None => {}
            }
        }
        let mut complete = HashMap::new();
        for (hash, by_nonce) in stagings {
            let mut nonces: Vec<_> = by_nonce.into_iter().collect();
            nonces.sort_by_key(|n| std::cmp::Reverse(n.0));
            for (_, mut parts) in nonces {
                parts.sort();
                let contiguous = parts.iter().enumerate().all(|(i, part)| part.0 == i as u32);
                let ends_marked =
                    parts.last().is_some_and(|p| p.1) && parts.iter().filter(|p| p.1).count() == 1;
                if contiguous && ends_marked {
                    let parts = parts.into_iter().map(|(_, _, id, size)| (id, size));
                    complete.insert(hash, parts.collect());
                    break;
                }
            }
        }
        let mut names = HashMap::new();
        for (hash, (count, mut parts)) in chunks {
            parts.sort();
            parts.dedup_by_key(|p| p.0);
            if parts.len() != usize::from(count) {
                continue;
            }
            let bytes: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
            // A name part whose id does not hash to its place is not ours.
            if let Ok(name) = String::from_utf8(bytes) {
                if id_hash(&name) == hash {
                    names.insert(hash, name);
                }
            }
        }
        Staged { complete, names }
    }

    /// The Azure block list that commits the caller's `block_ids` in order, and
    /// the blob's size. Fails naming the first block id with no complete staging.
    pub fn assemble(&self, block_ids: &[String]) -> Result<(Vec<String>, u64), String> {
        let mut azure_ids = Vec::new();
        let mut size = 0u64;
        for id in block_ids {
            let parts = self
                .complete
                .get(&id_hash(id))
                .ok_or_else(|| format!("block {id:?} is not staged"))?;
            for (azure_id, part_size) in parts {
                azure_ids.push(azure_id.clone());
                size += part_size;
            }
        }
        Ok((azure_ids, size))
    }

    /// The caller's ids with a complete staging and their sizes, sorted by id.
    pub fn blocks(&self) -> Vec<(String, u64)> {
        let mut blocks: Vec<(String, u64)> = self
            .complete
            .iter()
            .filter_map(|(hash, parts)| {
                let name = self.names.get(hash)?;
                Some((name.clone(), parts.iter().map(|p| p.1).sum()))
            })
            .collect();
        blocks.sort();
        blocks
    }
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

/// What a refused publish (Put Blob, Put Block List, Copy Blob) may mean.
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

impl From<ListedBlob> for StoredBlob {
    fn from(blob: ListedBlob) -> StoredBlob {
        // Listings give the etag unquoted; headers quote it.
        let etag = match blob.etag.starts_with('"') {
            true => blob.etag,
            false => format!("\"{}\"", blob.etag),
        };
        StoredBlob::from(BlobProperties {
            size: blob.size,
            etag,
            last_modified: blob.last_modified,
            content_type: blob.content_type,
            metadata: blob.metadata,
        })
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
        let go_sdk_id = "QUJD".repeat(22);
        let staged = BlockIds::staged(&go_sdk_id, 1_700_000_000_000, [1, 2]);
        let mut ids = vec![upload.id(0, false), upload.id(99, true), staged.id(3, true)];
        ids.extend(staged.name_parts());
        assert_eq!(staged.name_parts().len(), 2);
        assert!(ids.iter().all(|id| id.len() == 88), "{ids:?}");
        assert!(upload.publishes() && !staged.publishes());
    }

    fn with_names(ids: &BlockIds, mut blocks: Vec<ListedBlock>) -> Vec<ListedBlock> {
        let names = ids.name_parts().into_iter();
        blocks.extend(names.map(|name| ListedBlock { name, size: 1 }));
        blocks
    }

    #[test]
    fn commits_take_the_newest_complete_staging_only() {
        let old = BlockIds::staged("b", 1_000, [0, 0]);
        let new = BlockIds::staged("b", 2_000, [0, 0]);
        let newest_incomplete = BlockIds::staged("b", 3_000, [0, 0]);
        let other = BlockIds::staged("c+/=", 1_500, [0, 0]);
        let mut blocks = with_names(&old, listed(&old, &[(0, false, 10), (1, true, 5)]));
        blocks.extend(listed(&new, &[(0, true, 7)]));
        // A failed re-staging: parts without the last mark, and one with a gap.
        blocks.extend(listed(&newest_incomplete, &[(0, false, 1), (2, true, 1)]));
        blocks.extend(with_names(
            &other,
            listed(&other, &[(0, false, 3), (1, false, 3), (2, true, 3)]),
        ));
        let staged = Staged::new(blocks);
        let (ids, size) = staged.assemble(&["c+/=".into(), "b".into()]).unwrap();
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
        let missing = staged.assemble(&["b".into(), "d".into()]).unwrap_err();
        assert!(missing.contains("\"d\""), "{missing}");
        // The caller's own ids come back, with the newest complete staging's size.
        assert_eq!(
            staged.blocks(),
            vec![("b".to_string(), 7), ("c+/=".to_string(), 9)]
        );
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
