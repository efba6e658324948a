//! `commit-blocks` on Azure as a state machine: the transport sends what
//! [`Commit::operation`] builds and feeds the answers back; the machine decides.
//!
//! Why it goes through a staging blob. Azure cannot read uncommitted blocks, and
//! sha256 cannot be combined from per-block hashes, so the digest of blocks
//! staged by separate requests can only be computed by reading them after a
//! commit. Committing them to the key itself would make unverified content
//! visible; so blocks are staged on the key's staging blob
//! ([`crate::layout::staging_blob`]), and a commit
//!
//! 0. with `create-only` or `if-match`, checks the key first (Get Blob Properties),
//!    so the common refusal (BuildKit's layer already exists) costs one request
//!    and leaves the blocks staged; the copy's own condition still decides races;
//! 1. reads that blob's block list (Get Block List) and checks ids and sizes;
//! 2. commits the listed blocks there (Put Block List: no bytes move);
//! 3. only when a sha256 is expected, reads it once, hashing (the one transfer of
//!    the content, pinned to that version with If-Match);
//! 4. publishes it under the key server-side (Copy Blob From URL, synchronous,
//!    up to 256 MiB; Copy Blob beyond, polled until done), with the caller's
//!    condition, metadata and the verified digest; a refused copy after a retry
//!    is settled by the key's digest as for any publish;
//! 5. deletes the staging blob (also after a mismatch: nothing stays behind).
//!
//! Every step is an Azure request against durable state, so any instance can run
//! a commit for blocks that others staged. Bytes moved through the store: the
//! content once, and only when a digest is asked for.

use std::time::{Duration, SystemTime};

use super::{refused, stored, Answer, CallError, Options, Refused, StoreError};
use crate::layout::StoredBlob;
use crate::ops::{Container, Operation};

/// Largest source of a synchronous copy (Copy Blob From URL).
pub const MAX_SYNC_COPY: u64 = 256 << 20;
/// Wait between polls of a pending copy.
const COPY_POLL: Duration = Duration::from_millis(500);

/// What the transport does next.
#[derive(Debug)]
pub enum Step {
    /// Send [`Commit::operation`] (with retries) and pass the answer to
    /// [`Commit::answered`].
    Send,
    /// Send [`Commit::operation`] (a Get Blob), hash the whole body while
    /// streaming it, and pass digest and byte count to [`Commit::read`].
    Read,
    /// Wait, then send [`Commit::operation`] as for [`Step::Send`].
    Wait(Duration),
    Done(Result<StoredBlob, StoreError>),
}

enum State {
    Precheck,
    ListBlocks,
    CommitStaging {
        ids: Vec<String>,
        size: u64,
    },
    Read {
        etag: String,
        size: u64,
    },
    Copy {
        etag: String,
        size: u64,
        sha256: Option<String>,
    },
    AwaitCopy {
        size: u64,
        sha256: Option<String>,
    },
    CheckTarget {
        refused: Refused,
        sha256: String,
    },
    Cleanup {
        result: Result<StoredBlob, StoreError>,
    },
    Done,
}

pub struct Commit {
    staging: String,
    target: String,
    block_ids: Vec<String>,
    options: Options,
    now_unix: u64,
    state: State,
}

impl Commit {
    /// A commit of `block_ids` (in order) staged on `staging` to `target`.
    pub fn new(
        staging: String,
        target: String,
        block_ids: Vec<String>,
        options: Options,
        now_unix: u64,
    ) -> Commit {
        Commit {
            staging,
            target,
            block_ids,
            now_unix,
            state: match options.create_only || options.if_match.is_some() {
                true => State::Precheck,
                false => State::ListBlocks,
            },
            options,
        }
    }

    /// A commit of `block_ids` of `key` in a store whose blob names start with
    /// `prefix`; checks key and ids first.
    pub fn of_key(
        prefix: &str,
        key: &str,
        block_ids: Vec<String>,
        options: Options,
        now_unix: u64,
    ) -> Result<Commit, StoreError> {
        blobcache_store_rules::check_key(key).map_err(StoreError::Invalid)?;
        let staged_under = options.staged_under.clone();
        let staged_under = staged_under.as_deref().unwrap_or(key);
        blobcache_store_rules::check_key(staged_under).map_err(StoreError::Invalid)?;
        for id in &block_ids {
            blobcache_store_rules::check_block_id(id).map_err(StoreError::Invalid)?;
        }
        Ok(Commit::new(
            crate::layout::staging_blob(prefix, staged_under),
            format!("{prefix}{key}"),
            block_ids,
            options,
            now_unix,
        ))
    }

    pub fn start(&self) -> Step {
        Step::Send
    }

    /// The request of the current step, signed at `now` (built per attempt).
    pub fn operation(&self, container: &Container, now: SystemTime) -> Operation {
        match &self.state {
            State::Precheck => container.get_properties(&self.target, now),
            State::ListBlocks => container.get_uncommitted_blocks(&self.staging, now),
            State::CommitStaging { ids, .. } => {
                let properties = Options {
                    create_only: false,
                    if_match: None,
                    ..self.options.clone()
                }
                .properties(None);
                container.put_block_list(&self.staging, ids, &properties, now)
            }
            State::Read { etag, .. } => container.get_blob(&self.staging, None, Some(etag), now),
            State::Copy { etag, size, sha256 } => container.copy_blob(
                &self.target,
                &container.copy_source_url(&self.staging, self.now_unix),
                etag,
                *size <= MAX_SYNC_COPY,
                &self.options.properties(sha256.as_deref()),
                now,
            ),
            State::AwaitCopy { .. } | State::CheckTarget { .. } => {
                container.get_properties(&self.target, now)
            }
            State::Cleanup { .. } | State::Done => container.delete_blob(&self.staging, now),
        }
    }

    /// The answer to [`Step::Send`]; `maybe_applied` says whether a retried
    /// attempt may have been applied before its answer was lost.
    pub fn answered(&mut self, answer: Result<Answer, CallError>, maybe_applied: bool) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        match (state, answer) {
            (State::Precheck, answer) => {
                let current = match answer {
                    Ok(answer) => Some(header(&answer.headers, "etag")),
                    Err(e) if e.is(crate::response::ErrorKind::NotFound) => None,
                    Err(e) => return self.finish(Err(e.into())),
                };
                let refused = match (&current, &self.options.if_match) {
                    (Some(_), _) if self.options.create_only => Some(StoreError::AlreadyExists),
                    (None, Some(_)) => Some(StoreError::PreconditionFailed),
                    (Some(etag), Some(expected)) if etag != expected => {
                        Some(StoreError::PreconditionFailed)
                    }
                    _ => None,
                };
                match refused {
                    Some(e) => self.finish(Err(e)),
                    None => self.go(State::ListBlocks),
                }
            }
            (State::ListBlocks, answer) => {
                let planned = super::staged(answer).and_then(|staged| {
                    let (ids, size) = staged
                        .assemble(&self.block_ids)
                        .map_err(StoreError::Invalid)?;
                    blobcache_store_rules::check_max_size(self.options.max_size, size)?;
                    // The size is known before any byte moves: check it now.
                    blobcache_store_rules::verify(self.options.expected_size, None, size, None)?;
                    Ok((ids, size))
                });
                match planned {
                    Ok((ids, size)) => self.go(State::CommitStaging { ids, size }),
                    Err(e) => self.finish(Err(e)),
                }
            }
            (State::CommitStaging { size, .. }, Ok(answer)) => {
                let etag = header(&answer.headers, "etag");
                match self.options.expected_sha256 {
                    Some(_) => {
                        self.state = State::Read { etag, size };
                        Step::Read
                    }
                    None => self.go(State::Copy {
                        etag,
                        size,
                        sha256: None,
                    }),
                }
            }
            (State::Copy { size, sha256, .. }, Ok(answer)) => {
                match header(&answer.headers, "x-ms-copy-status").as_str() {
                    "pending" => {
                        self.state = State::AwaitCopy { size, sha256 };
                        Step::Wait(COPY_POLL)
                    }
                    _ => self.cleanup(Ok(self.published(&answer, size, sha256))),
                }
            }
            (State::Copy { sha256, .. }, Err(error)) => {
                let Some(sha256) = sha256 else {
                    return self.cleanup(Err(error.into()));
                };
                match refused(error, maybe_applied) {
                    Ok(refused) => self.go(State::CheckTarget { refused, sha256 }),
                    Err(e) => self.cleanup(Err(e)),
                }
            }
            (State::AwaitCopy { size, sha256 }, Ok(answer)) => {
                match header(&answer.headers, "x-ms-copy-status").as_str() {
                    "pending" => {
                        self.state = State::AwaitCopy { size, sha256 };
                        Step::Wait(COPY_POLL)
                    }
                    "success" | "" => self.cleanup(Ok(self.published(&answer, size, sha256))),
                    other => self.cleanup(Err(StoreError::Unavailable(format!(
                        "Azure's copy to the key ended {other}"
                    )))),
                }
            }
            (State::CheckTarget { refused, sha256 }, answer) => {
                let current = answer.ok().and_then(|a| stored(&a.headers).ok());
                self.cleanup(refused.decide(current, &sha256))
            }
            // Deleting the staging blob is tidying up: its failure changes nothing.
            (State::Cleanup { result }, _) => self.finish(result),
            (_, Err(error)) => self.cleanup(Err(error.into())),
            (State::Read { .. } | State::Done, Ok(_)) => self.finish(Err(StoreError::Other(
                "commit answered out of order".into(),
            ))),
        }
    }

    /// The digest and length of what [`Step::Read`] streamed.
    pub fn read(&mut self, result: Result<(String, u64), StoreError>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        let State::Read { etag, size } = state else {
            return self.finish(Err(StoreError::Other("commit read out of order".into())));
        };
        let checked = result.and_then(|(sha256, read)| {
            if read != size {
                return Err(StoreError::Unavailable(format!(
                    "read {read} of the {size} staged bytes back"
                )));
            }
            self.options.verify(size, Some(&sha256))?;
            Ok(sha256)
        });
        match checked {
            Ok(sha256) => self.go(State::Copy {
                etag,
                size,
                sha256: Some(sha256),
            }),
            Err(e) => self.cleanup(Err(e)),
        }
    }

    fn published(&self, answer: &Answer, size: u64, sha256: Option<String>) -> StoredBlob {
        super::published(
            &answer.headers,
            size,
            &self.options,
            sha256.as_deref(),
            self.now_unix,
        )
    }

    fn go(&mut self, state: State) -> Step {
        self.state = state;
        Step::Send
    }

    fn cleanup(&mut self, result: Result<StoredBlob, StoreError>) -> Step {
        self.go(State::Cleanup { result })
    }

    fn finish(&mut self, result: Result<StoredBlob, StoreError>) -> Step {
        self.state = State::Done;
        Step::Done(result)
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{Account, DEV_ACCOUNT, DEV_ENDPOINT, DEV_KEY};
    use crate::layout::BlockIds;

    fn container() -> Container {
        let account = Account::new(DEV_ACCOUNT, DEV_KEY, Some(DEV_ENDPOINT)).unwrap();
        Container::new(account, "cache").unwrap()
    }

    fn block_list(ids: &[(&BlockIds, u64)]) -> Answer {
        let mut xml = String::from("<BlockList><UncommittedBlocks>");
        for (staging, size) in ids {
            xml.push_str(&format!(
                "<Block><Name>{}</Name><Size>{size}</Size></Block>",
                staging.id(0, true)
            ));
            for name in staging.name_parts() {
                xml.push_str(&format!("<Block><Name>{name}</Name><Size>1</Size></Block>"));
            }
        }
        xml.push_str("</UncommittedBlocks></BlockList>");
        Answer {
            headers: http::HeaderMap::new(),
            body: xml.into(),
        }
    }

    fn etag(value: &str) -> Answer {
        let mut headers = http::HeaderMap::new();
        headers.insert("etag", value.parse().unwrap());
        Answer {
            headers,
            body: Default::default(),
        }
    }

    fn commit(options: Options) -> Commit {
        let ids = vec!["a".to_string(), "b".to_string()];
        Commit::new("!staging/k".into(), "k".into(), ids, options, 0)
    }

    fn listed() -> Answer {
        let a = BlockIds::staged("a", 1, [0, 0]);
        let b = BlockIds::staged("b", 1, [0, 0]);
        block_list(&[(&a, 3), (&b, 4)])
    }

    #[test]
    fn a_digest_is_checked_before_anything_is_published() {
        let mut commit = commit(Options {
            expected_sha256: Some("00".repeat(32)),
            ..Options::default()
        });
        assert!(matches!(commit.answered(Ok(listed()), false), Step::Send));
        let op = commit.operation(&container(), SystemTime::now());
        assert!(op.request.uri().path().ends_with("/cache/%21staging/k"));
        assert!(matches!(
            commit.answered(Ok(etag("\"s1\"")), false),
            Step::Read
        ));
        let read = commit.operation(&container(), SystemTime::now());
        assert_eq!(read.request.headers()["if-match"], "\"s1\"");
        // A mismatch: the staging blob is deleted and nothing is copied.
        assert!(matches!(commit.read(Ok(("11".repeat(32), 7))), Step::Send));
        let op = commit.operation(&container(), SystemTime::now());
        assert_eq!(op.request.method(), http::Method::DELETE);
        let Step::Done(result) = commit.answered(Ok(Answer::default()), false) else {
            panic!()
        };
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    }

    #[test]
    fn a_verified_commit_is_copied_with_its_digest_and_condition() {
        let sha256 = "ab".repeat(32);
        let mut commit = commit(Options {
            create_only: true,
            expected_sha256: Some(sha256.clone()),
            expected_size: Some(7),
            ..Options::default()
        });
        let op = commit.operation(&container(), SystemTime::now());
        assert_eq!(op.request.method(), http::Method::HEAD);
        assert!(matches!(commit.answered(Err(missing()), false), Step::Send));
        commit.answered(Ok(listed()), false);
        commit.answered(Ok(etag("\"s1\"")), false);
        assert!(matches!(commit.read(Ok((sha256.clone(), 7))), Step::Send));
        let copy = commit.operation(&container(), SystemTime::now());
        let headers = copy.request.headers();
        assert_eq!(headers["if-none-match"], "*");
        assert_eq!(headers["x-ms-source-if-match"], "\"s1\"");
        assert_eq!(headers["x-ms-requires-sync"], "true");
        assert_eq!(headers["x-ms-meta-sha256"], sha256.as_str());
        assert!(headers["x-ms-copy-source"]
            .to_str()
            .unwrap()
            .contains("sig="));
        assert!(matches!(
            commit.answered(Ok(etag("\"k1\"")), false),
            Step::Send
        ));
        let Step::Done(Ok(blob)) = commit.answered(Ok(Answer::default()), false) else {
            panic!()
        };
        assert_eq!((blob.size, blob.etag.as_str()), (7, "\"k1\""));
    }

    fn missing() -> CallError {
        CallError::Service(crate::response::AzureError {
            status: 404,
            code: "BlobNotFound".into(),
            message: String::new(),
        })
    }

    #[test]
    fn conditions_are_checked_before_the_blocks_are_touched() {
        let mut exists = commit(Options {
            create_only: true,
            ..Options::default()
        });
        let Step::Done(Err(StoreError::AlreadyExists)) = exists.answered(Ok(etag("\"k\"")), false)
        else {
            panic!()
        };
        let if_match = |expected: &str| {
            commit(Options {
                if_match: Some(expected.into()),
                ..Options::default()
            })
        };
        let Step::Done(Err(StoreError::PreconditionFailed)) =
            if_match("\"old\"").answered(Ok(etag("\"k\"")), false)
        else {
            panic!()
        };
        let Step::Done(Err(StoreError::PreconditionFailed)) =
            if_match("\"k\"").answered(Err(missing()), false)
        else {
            panic!()
        };
        let mut current = if_match("\"k\"");
        assert!(matches!(
            current.answered(Ok(etag("\"k\"")), false),
            Step::Send
        ));
        let op = current.operation(&container(), SystemTime::now());
        assert!(op.request.uri().query().unwrap().contains("blocklist"));
    }

    #[test]
    fn large_commits_copy_asynchronously_and_wait_for_the_copy() {
        let big = BlockIds::staged("a", 1, [0, 0]);
        let small = BlockIds::staged("b", 1, [0, 0]);
        let mut commit = commit(Options::default());
        let listed = block_list(&[(&big, MAX_SYNC_COPY), (&small, 1)]);
        assert!(matches!(commit.answered(Ok(listed), false), Step::Send));
        assert!(matches!(
            commit.answered(Ok(etag("\"s\"")), false),
            Step::Send
        ));
        let copy = commit.operation(&container(), SystemTime::now());
        assert!(copy.request.headers().get("x-ms-requires-sync").is_none());
        let status = |value: &str| {
            let mut answer = etag("\"k\"");
            answer
                .headers
                .insert("x-ms-copy-status", value.parse().unwrap());
            answer
        };
        assert!(matches!(
            commit.answered(Ok(status("pending")), false),
            Step::Wait(_)
        ));
        let poll = commit.operation(&container(), SystemTime::now());
        assert_eq!(poll.request.method(), http::Method::HEAD);
        assert!(matches!(
            commit.answered(Ok(status("pending")), false),
            Step::Wait(_)
        ));
        assert!(matches!(
            commit.answered(Ok(status("success")), false),
            Step::Send
        ));
        let Step::Done(Ok(blob)) = commit.answered(Ok(Answer::default()), false) else {
            panic!()
        };
        assert_eq!(blob.size, MAX_SYNC_COPY + 1);
    }

    #[test]
    fn sizes_and_missing_blocks_fail_before_any_write() {
        let mut wrong_size = commit(Options {
            expected_size: Some(8),
            ..Options::default()
        });
        let Step::Done(Err(StoreError::Invalid(_))) = wrong_size.answered(Ok(listed()), false)
        else {
            panic!()
        };
        let mut too_large = commit(Options {
            max_size: Some(6),
            ..Options::default()
        });
        let Step::Done(Err(StoreError::TooLarge(_))) = too_large.answered(Ok(listed()), false)
        else {
            panic!()
        };
        let only_a = block_list(&[(&BlockIds::staged("a", 1, [0, 0]), 3)]);
        let Step::Done(Err(StoreError::Invalid(why))) =
            commit(Options::default()).answered(Ok(only_a), false)
        else {
            panic!()
        };
        assert!(why.contains("\"b\""), "{why}");
    }
}
