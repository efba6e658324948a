//! `blobcache gc` on a directory store (beside a running server) and on an
//! Azure container (Azurite): entries unused for the given age go, used ones
//! stay, leftovers of unfinished uploads go, and `--dry-run` removes nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::support::{Azurite, Server};

fn gc(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_blobcache"))
        .arg("gc")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Sets a file's (or a directory's files') access and modification times back.
fn age(path: &Path, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    let times = std::fs::FileTimes::new()
        .set_accessed(then)
        .set_modified(then);
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            age(&entry.path(), days);
        }
    } else {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_times(times).unwrap();
    }
}

fn blob_files(server: &Server) -> Vec<std::path::PathBuf> {
    server
        .stored_files()
        .into_iter()
        .filter(|f| f.starts_with(server.store_dir.join("blobs")))
        .collect()
}

#[test]
fn gc_of_a_directory_store() {
    let server = Server::start();
    let store = format!("dir:{}", server.store_dir.display());
    assert_eq!(
        server.put("/ccache/aa/unused", b"old entry").status / 100,
        2
    );
    assert_eq!(
        server.put("/ccache/aa/reused", b"old, read again").status / 100,
        2
    );
    for file in blob_files(&server) {
        age(&file, 10);
    }
    // Read since: used, so kept.
    assert_eq!(server.get("/ccache/aa/reused").status, 200);
    assert_eq!(server.put("/ccache/aa/fresh", b"new entry").status / 100, 2);
    // Leftovers: a temp file and a staging of an upload that never finished.
    let temp = server.store_dir.join("tmp/abandoned.tmp");
    std::fs::write(&temp, vec![1u8; 1000]).unwrap();
    age(&temp, 2);
    let staging = server.store_dir.join("blocks/0123abcd");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("626c6f636b"), vec![2u8; 500]).unwrap();
    age(&staging, 2);
    let live_temp = server.store_dir.join("tmp/in-progress.tmp");
    std::fs::write(&live_temp, b"upload under way").unwrap();

    let args = ["--store", store.as_str(), "--unused-for", "7d"];
    let dry = gc(&[&args[..], &["--dry-run"]].concat(), &[]);
    assert!(
        dry.contains("entries removed: 1 ")
            && dry.contains("leftovers of unfinished uploads removed: 2 (1500 bytes)"),
        "{dry}"
    );
    assert!(dry.contains("entries kept: 2 "), "{dry}");
    assert_eq!(
        blob_files(&server).len(),
        3,
        "the dry run removed something"
    );
    assert!(temp.exists() && staging.exists());

    let real = gc(&args, &[]);
    assert!(real.contains("entries removed: 1 "), "{real}");
    assert_eq!(blob_files(&server).len(), 2);
    assert!(!temp.exists() && !staging.exists() && live_temp.exists());
    // The running server goes on: the unused entry is a miss, the others hit.
    assert_eq!(server.get("/ccache/aa/unused").status, 404);
    assert_eq!(server.get("/ccache/aa/reused").body, b"old, read again");
    assert_eq!(server.get("/ccache/aa/fresh").body, b"new entry");
    // Nothing left to do.
    let again = gc(&args, &[]);
    assert!(again.contains("entries removed: 0 "), "{again}");
}

#[test]
fn gc_of_an_azure_container() {
    let azurite = Azurite::start();
    let connection = azurite.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", connection.as_str())];
    let server = Server::start_with_env(
        &[
            "--store",
            "azure",
            "--azure-create-container",
            "--azure-container",
            "gccache",
            "--azure-prefix",
            "team/",
        ],
        &env,
    );
    assert_eq!(server.put("/ccache/aa/old1", b"one").status / 100, 2);
    assert_eq!(server.put("/ccache/aa/old2", b"two").status / 100, 2);
    // A staging blob left by a commit that never finished, and a blob outside
    // the prefix, which gc must not touch.
    azurite.put_blob("gccache", "team/!staging/ccache/aa/cut", b"partial");
    azurite.put_blob("gccache", "other/keep", b"not ours");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.put("/ccache/aa/new", b"three").status / 100, 2);

    let args = [
        "--store",
        "azure",
        "--azure-container",
        "gccache",
        "--azure-prefix",
        "team/",
        "--unused-for",
        "2s",
        "--leftovers-after",
        "2s",
    ];
    let dry = gc(&[&args[..], &["--dry-run"]].concat(), &env);
    assert!(
        dry.contains("entries removed: 2 (6 bytes)")
            && dry.contains("leftovers of unfinished uploads removed: 1 (7 bytes)")
            && dry.contains("entries kept: 1 (5 bytes)"),
        "{dry}"
    );
    assert_eq!(server.get("/ccache/aa/old1").status, 200);

    let real = gc(&args, &env);
    assert!(
        real.contains("entries removed: 2 ") && real.contains("failures: 0"),
        "{real}"
    );
    assert_eq!(server.get("/ccache/aa/old1").status, 404);
    assert_eq!(server.get("/ccache/aa/old2").status, 404);
    assert_eq!(server.get("/ccache/aa/new").body, b"three");
    let (status, listing) = azurite.signed(
        |c| c.list_blobs("", None, 100, false, SystemTime::now()),
        "gccache",
    );
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains("<Name>other/keep</Name>"), "{listing}");
    assert!(!listing.contains("!staging"), "{listing}");
}

/// The documented Azure lifecycle policy names what blobcache writes: the
/// default container, the staging blobs of `blobcache_azure::layout`, and a
/// last-access rule (the one that keeps hot entries however old).
#[test]
fn the_lifecycle_policy_matches_the_layout() {
    let text = std::fs::read_to_string(
        crate::support::repo_root().join("deploy/azure-storage/lifecycle-policy.json"),
    )
    .unwrap();
    let policy: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rules = policy["rules"].as_array().unwrap();
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no rule {name}"))
    };
    let unused = rule("blobcache-unused-entries");
    assert_eq!(unused["type"], "Lifecycle");
    assert_eq!(unused["enabled"], true);
    let days = &unused["definition"]["actions"]["baseBlob"]["delete"]
        ["daysAfterLastAccessTimeGreaterThan"];
    assert!(days.as_u64().is_some_and(|d| d >= 1), "{unused}");
    // The default container of `serve --store azure`, with no prefix.
    let container = "blobcache";
    assert_eq!(
        unused["definition"]["filters"]["prefixMatch"][0],
        format!("{container}/")
    );
    let leftovers = rule("blobcache-unfinished-uploads");
    let staging = blobcache_azure::layout::staging_blob("", "ccache/aa/key");
    let staging_prefix = staging.trim_end_matches("ccache/aa/key");
    assert_eq!(
        leftovers["definition"]["filters"]["prefixMatch"][0],
        format!("{container}/{staging_prefix}")
    );
    for rule in rules {
        assert_eq!(rule["definition"]["filters"]["blobTypes"][0], "blockBlob");
    }
}
