//! Builds the cache component (`component/`, for `wasm32-wasip2`) so that a plain
//! `cargo build` of the host produces a binary that embeds it. The nested build
//! uses its own target directory, which avoids waiting on the outer build's lock.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    for watched in [
        "component/src",
        "component/Cargo.toml",
        "wit",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("component");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "blobcache-component",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // The host's own flags are not meant for the wasm target.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("failed to run cargo to build the component");
    assert!(
        status.success(),
        "building the component failed; is the wasm32-wasip2 target installed? \
         (`rustup target add wasm32-wasip2`)"
    );
    let wasm = target_dir.join("wasm32-wasip2/release/blobcache_component.wasm");
    println!(
        "cargo:rustc-env=BLOBCACHE_COMPONENT_WASM={}",
        wasm.display()
    );
}
