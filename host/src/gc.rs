//! `blobcache gc`: removes entries nobody used for a while, and what uploads
//! that never finished left behind, from a directory store or an Azure
//! container. With `--dry-run` it only reports what it would remove.
//!
//! "Used" is the last read or write: for the directory store, the access time
//! the server sets when it serves a blob; for Azure, the blob's
//! `LastAccessTime` when the account tracks last access (recommended, see the
//! README), else its `Last-Modified`. Leftovers are temp files and staged
//! blocks in a directory store, and staging blobs (`<prefix>!staging/...`)
//! in Azure; Azure itself discards uncommitted blocks after seven days.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::azure::AzureStore;
use crate::store::eviction;

#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Entries not used for this long are removed.
    pub unused_for: Duration,
    /// Leftovers of unfinished uploads older than this are removed.
    pub leftovers_after: Duration,
    /// Report only.
    pub dry_run: bool,
}

/// What a run found and removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries_kept: u64,
    pub bytes_kept: u64,
    pub entries_removed: u64,
    pub bytes_removed: u64,
    pub leftovers_removed: u64,
    pub leftover_bytes_removed: u64,
    /// Removals that failed (already gone, permissions): left for the next run.
    pub failures: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entries removed: {} ({} bytes); leftovers of unfinished uploads removed: {} ({} bytes); \
             entries kept: {} ({} bytes); failures: {}",
            self.entries_removed,
            self.bytes_removed,
            self.leftovers_removed,
            self.leftover_bytes_removed,
            self.entries_kept,
            self.bytes_kept,
            self.failures
        )
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Summary {
    fn entry(
        &mut self,
        size: u64,
        last_used: u64,
        now: u64,
        options: &GcOptions,
        remove: impl FnOnce() -> bool,
    ) {
        if now.saturating_sub(last_used) < options.unused_for.as_secs() {
            self.entries_kept += 1;
            self.bytes_kept += size;
        } else if options.dry_run || remove() {
            self.entries_removed += 1;
            self.bytes_removed += size;
        } else {
            self.failures += 1;
        }
    }

    fn leftover(
        &mut self,
        size: u64,
        modified: u64,
        now: u64,
        options: &GcOptions,
        remove: impl FnOnce() -> bool,
    ) {
        if now.saturating_sub(modified) < options.leftovers_after.as_secs() {
            return;
        }
        if options.dry_run || remove() {
            self.leftovers_removed += 1;
            self.leftover_bytes_removed += size;
        } else {
            self.failures += 1;
        }
    }
}

/// Collects a directory store at `root`. Safe while a server runs on it:
/// uploads in progress are younger than any sensible `leftovers_after`.
pub fn collect_dir(root: &Path, options: &GcOptions) -> std::io::Result<Summary> {
    let now = unix(SystemTime::now());
    let mut summary = Summary::default();
    for (path, metadata) in eviction::blob_files(&root.join("blobs"))? {
        let last_used = eviction::last_use_unix(&metadata);
        summary.entry(metadata.len(), last_used, now, options, || {
            fs::remove_file(&path).is_ok()
        });
    }
    if let Ok(temps) = fs::read_dir(root.join("tmp")) {
        for temp in temps.flatten() {
            let Ok(metadata) = temp.metadata() else {
                continue;
            };
            let modified = metadata.modified().map_or(0, unix);
            summary.leftover(metadata.len(), modified, now, options, || {
                fs::remove_file(temp.path()).is_ok()
            });
        }
    }
    if let Ok(stagings) = fs::read_dir(root.join("blocks")) {
        for staging in stagings.flatten() {
            // A staging is as old as its newest block.
            let (mut size, mut newest) = (0, 0);
            for block in fs::read_dir(staging.path()).into_iter().flatten().flatten() {
                if let Ok(metadata) = block.metadata() {
                    size += metadata.len();
                    newest = newest.max(metadata.modified().map_or(0, unix));
                }
            }
            summary.leftover(size, newest, now, options, || {
                fs::remove_dir_all(staging.path()).is_ok()
            });
        }
    }
    Ok(summary)
}

/// Collects the blobs of an Azure store (its container, under its prefix).
pub async fn collect_azure(store: &AzureStore, options: &GcOptions) -> anyhow::Result<Summary> {
    let now = unix(SystemTime::now());
    let staging = format!("{}!staging/", store.prefix());
    let mut summary = Summary::default();
    let mut marker = None;
    loop {
        let page = store
            .list_raw(marker)
            .await
            .map_err(|e| anyhow::anyhow!("listing: {e:?}"))?;
        for blob in page.blobs {
            let mut removed = None;
            let remove = || {
                removed = Some(blob.name.clone());
                true
            };
            if blob.name.starts_with(&staging) {
                summary.leftover(blob.size, blob.last_modified, now, options, remove);
            } else {
                let last_used = blob.last_access.unwrap_or(0).max(blob.last_modified);
                summary.entry(blob.size, last_used, now, options, remove);
            }
            if let Some(name) = removed.filter(|_| !options.dry_run) {
                if let Err(error) = store.delete_raw(&name).await {
                    tracing::warn!("could not delete {name}: {error:?}");
                    summary.failures += 1;
                }
            }
        }
        match page.next_marker {
            Some(next) => marker = Some(next),
            None => return Ok(summary),
        }
    }
}

/// `30d`, `12h`, `90m`, `45s`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not an age such as 30d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("3w").is_err());
    }

    #[test]
    fn dry_runs_remove_nothing_and_count_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::dir::DirStore::open(dir.path(), false).unwrap();
        drop(store);
        let blob = dir.path().join("blobs/ab/old");
        fs::write(&blob, b"content").unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        fs::File::options()
            .write(true)
            .open(&blob)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap();
        fs::write(dir.path().join("blobs/ab/new"), b"fresh").unwrap();
        let options = GcOptions {
            unused_for: Duration::from_secs(86_400),
            leftovers_after: Duration::from_secs(86_400),
            dry_run: true,
        };
        let dry = collect_dir(dir.path(), &options).unwrap();
        assert_eq!((dry.entries_removed, dry.bytes_removed), (1, 7));
        assert_eq!(dry.entries_kept, 1);
        assert!(blob.exists());
        let real = collect_dir(
            dir.path(),
            &GcOptions {
                dry_run: false,
                ..options
            },
        )
        .unwrap();
        assert_eq!(real, dry);
        assert!(!blob.exists());
        assert!(dir.path().join("blobs/ab/new").exists());
    }
}
