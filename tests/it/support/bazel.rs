//! Real Bazel (Debian's `bazel-bootstrap`, 4.2.3) building a small workspace
//! of genrules against blobcache's HTTP remote cache: build, then build again
//! from a fresh output root (nothing local), and count the remote cache hits.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{client, run_ok, write_files};

/// Debian's bazel; none (or a failure in CI) without it.
pub fn bazel() -> Option<PathBuf> {
    client("bazel", PathBuf::from("/usr/bin/bazel"))
}

/// Two actions, the second using the first's output; each writes the time in
/// nanoseconds, so outputs that came from the cache are told apart from ones
/// built again. `nonce` makes the actions (and their keys) this run's own.
fn build_file(nonce: &str) -> String {
    format!(
        r#"genrule(
    name = "stamp",
    outs = ["stamp.txt"],
    cmd = "echo {nonce} > $@; date +%s%N >> $@",
)

genrule(
    name = "report",
    srcs = [":stamp"],
    outs = ["report.txt"],
    cmd = "cat $(location :stamp) > $@; date +%s%N >> $@",
)
"#
    )
}

/// Builds `//:all` with the cache at `url` (its prefix is the namespace),
/// sending `header` (`Authorization=Bearer ...`) if given; the output.
fn build(binary: &Path, workspace: &Path, root: &Path, url: &str, header: Option<&str>) -> String {
    let mut command = Command::new(binary);
    command
        .current_dir(workspace)
        // One process per build, nothing left running; Debian's bazelrc is
        // skipped, so its two start-up flags are given here.
        .args([
            "--batch",
            "--ignore_all_rc_files",
            "--install_base=/usr/share/bazel",
        ])
        .arg("--trust_install_base")
        .arg(format!("--output_user_root={}", root.display()))
        .args(["build", "//:all", "--nosandbox_debug"])
        // Offline: any download fails at once.
        .arg("--experimental_repository_disable_download")
        // Keys that do not depend on the caller's PATH.
        .arg("--incompatible_strict_action_env")
        .arg(format!("--remote_cache={url}"));
    if let Some(header) = header {
        command.arg(format!("--remote_header={header}"));
    }
    run_ok(&mut command, "bazel build")
}

fn outputs(workspace: &Path) -> Vec<String> {
    ["stamp.txt", "report.txt"]
        .iter()
        .map(|name| std::fs::read_to_string(workspace.join("bazel-bin").join(name)).unwrap())
        .collect()
}

/// Builds, then builds again from a fresh output root: both actions must be
/// remote cache hits, their outputs those of the first build.
pub fn round_trip(url: &str, header: Option<&str>) -> Option<()> {
    let binary = bazel()?;
    let work = tempfile::tempdir().unwrap();
    let workspace = work.path().join("workspace");
    let nonce = format!("{:?}", std::time::SystemTime::now());
    write_files(
        &workspace,
        &[("WORKSPACE", ""), ("BUILD", &build_file(&nonce))],
    );
    let cold = build(
        &binary,
        &workspace,
        &work.path().join("root-1"),
        url,
        header,
    );
    assert!(!cold.contains("remote cache hit"), "{cold}");
    assert!(
        !cold.contains("WARNING: Writing to Remote Cache"),
        "uploads succeed:\n{cold}"
    );
    let built = outputs(&workspace);
    let warm = build(
        &binary,
        &workspace,
        &work.path().join("root-2"),
        url,
        header,
    );
    assert!(warm.contains("2 remote cache hit"), "{warm}");
    assert_eq!(outputs(&workspace), built, "outputs came from the cache");
    Some(())
}
