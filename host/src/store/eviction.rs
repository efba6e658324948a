//! Keeps the directory store under its maximum size (`--max-size`), evicting
//! least-recently-used blobs on a background thread.
//!
//! Recency is the blob file's access time, which the store sets itself when it
//! serves a blob (not trusting `relatime`): at most once an hour per blob, and
//! always on the first read after a write, so a hit costs no extra syscall in
//! the common case. The accounting is rebuilt by a scan of `blobs/` at start
//! (so it survives restarts and crashes), kept current by every publish, and
//! corrected by a rescan whenever the budget is exceeded, and every minute.
//!
//! Requests never wait for eviction. A blob being read while it is evicted is
//! still served whole: eviction unlinks the file, and an open file stays
//! readable until it is closed. Before each unlink the file is looked at again,
//! so one read or rewritten since the scan stays.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime};

/// How often the accounting is corrected by a rescan, over budget or not.
const RESCAN_EVERY: Duration = Duration::from_secs(60);
/// A blob read again within this long is not touched again.
pub const TOUCH_AFTER: Duration = Duration::from_secs(3600);

/// The size budget of one directory store.
pub struct Budget {
    max: u64,
    used: AtomicU64,
    /// Bytes published since the current pass began its scan, which the
    /// scan may not have seen.
    since_scan: AtomicU64,
    wake: (Mutex<bool>, Condvar),
}

impl Budget {
    /// Starts the eviction thread over `blobs` (the store's `blobs/` folder);
    /// it ends when the budget is dropped.
    pub fn start(blobs: PathBuf, max: u64) -> Arc<Budget> {
        let budget = Arc::new(Budget {
            max,
            used: AtomicU64::new(0),
            since_scan: AtomicU64::new(0),
            wake: (Mutex::new(true), Condvar::new()),
        });
        let weak = Arc::downgrade(&budget);
        std::thread::Builder::new()
            .name("blobcache-evict".into())
            .spawn(move || evict_loop(weak, blobs))
            .expect("spawning the eviction thread");
        budget
    }

    /// Bytes of blob files, as last counted.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// A blob file of `bytes` was published, replacing one of `replaced` bytes.
    pub fn added(&self, bytes: u64, replaced: u64) {
        self.since_scan.fetch_add(bytes, Ordering::Relaxed);
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.removed(replaced);
        if used.saturating_sub(replaced) > self.max {
            self.wake();
        }
    }

    /// A blob file of `bytes` was deleted.
    pub fn removed(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    fn wake(&self) {
        *self.wake.0.lock().unwrap() = true;
        self.wake.1.notify_one();
    }
}

/// Sets a served blob's access time to now, when it is stale: older than its
/// modification (never read since written) or than [`TOUCH_AFTER`].
pub fn touch_if_stale(file: &fs::File, metadata: &fs::Metadata) {
    let now = SystemTime::now();
    let accessed = metadata.accessed().unwrap_or(now);
    let modified = metadata.modified().unwrap_or(now);
    let stale = accessed <= modified
        || now
            .duration_since(accessed)
            .is_ok_and(|age| age > TOUCH_AFTER);
    if stale {
        let times = fs::FileTimes::new().set_accessed(now);
        let _ = file.set_times(times);
    }
}

fn evict_loop(budget: Weak<Budget>, blobs: PathBuf) {
    loop {
        let Some(strong) = budget.upgrade() else {
            return;
        };
        {
            let (woken, signal) = &strong.wake;
            let mut woken = woken.lock().unwrap();
            if !*woken {
                woken = signal.wait_timeout(woken, RESCAN_EVERY).unwrap().0;
            }
            *woken = false;
        }
        strong.since_scan.store(0, Ordering::Relaxed);
        match evict_once(&blobs, strong.max) {
            Ok(pass) => {
                // What was published during the scan may or may not be in it:
                // counting it again only brings the next pass forward.
                let during = strong.since_scan.load(Ordering::Relaxed);
                strong
                    .used
                    .store(pass.remaining + during, Ordering::Relaxed);
                if pass.remaining > strong.max {
                    // Files that cannot be removed: do not rescan back to back.
                    tracing::warn!(
                        "the store holds {} bytes, over its {}, and eviction could not remove more",
                        pass.remaining,
                        strong.max
                    );
                    drop(strong);
                    std::thread::sleep(Duration::from_secs(10));
                    continue;
                }
                if pass.evicted > 0 {
                    tracing::info!(
                        "evicted {} blobs ({} bytes) least recently used; {} of {} bytes in use",
                        pass.evicted,
                        pass.freed,
                        pass.remaining,
                        strong.max
                    );
                }
            }
            Err(error) => tracing::warn!("eviction scan of {} failed: {error}", blobs.display()),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    pub evicted: u64,
    pub freed: u64,
    pub remaining: u64,
}

struct Candidate {
    path: PathBuf,
    size: u64,
    /// Last use: the later of access and modification (a blob just published
    /// has an access time from when its upload began).
    used: (i64, i64),
    inode: u64,
}

fn last_use(metadata: &fs::Metadata) -> (i64, i64) {
    (metadata.atime(), metadata.atime_nsec()).max((metadata.mtime(), metadata.mtime_nsec()))
}

/// A blob's last use in Unix seconds: the later of access and modification.
pub fn last_use_unix(metadata: &fs::Metadata) -> u64 {
    last_use(metadata).0.max(0) as u64
}

/// Every blob file under `blobs` (the store's `blobs/<shard>/` files) with its
/// metadata; what cannot be read is skipped.
pub fn blob_files(blobs: &Path) -> std::io::Result<impl Iterator<Item = (PathBuf, fs::Metadata)>> {
    Ok(fs::read_dir(blobs)?
        .flatten()
        .filter_map(|shard| fs::read_dir(shard.path()).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|file| Some((file.path(), file.metadata().ok()?)))
        .filter(|(_, metadata)| metadata.is_file()))
}

/// Scans `blobs` and, when it holds more than `max` bytes, removes the least
/// recently used files until it holds at most nine tenths of `max` (so the
/// next few uploads do not start another pass at once).
pub fn evict_once(blobs: &Path, max: u64) -> std::io::Result<Pass> {
    let mut candidates = Vec::new();
    let mut total = 0u64;
    for (path, metadata) in blob_files(blobs)? {
        total += metadata.len();
        candidates.push(Candidate {
            path,
            size: metadata.len(),
            used: last_use(&metadata),
            inode: metadata.ino(),
        });
    }
    let mut pass = Pass {
        remaining: total,
        ..Pass::default()
    };
    if total <= max {
        return Ok(pass);
    }
    let target = max - max / 10;
    candidates.sort_unstable_by_key(|c| c.used);
    for victim in candidates {
        if pass.remaining <= target {
            break;
        }
        // Read or replaced since the scan: it is recent now, leave it.
        let unchanged = fs::metadata(&victim.path)
            .is_ok_and(|now| now.ino() == victim.inode && last_use(&now) == victim.used);
        if unchanged && fs::remove_file(&victim.path).is_ok() {
            pass.evicted += 1;
            pass.freed += victim.size;
            pass.remaining -= victim.size;
        }
    }
    Ok(pass)
}
