//! Builds the wasm parts, so that a plain `cargo build` makes everything:
//!
//! - the cache component (`component/`), which the host binary embeds, and its
//!   Spin build (settings from Spin variables too);
//! - the Azure store component (`adapter/`), plain and with Spin variables;
//! - the composed components, cache + Azure store in one, whose imports are
//!   only WASI: `target/wasm/blobcache.wasm` (`wasmtime serve`, any wasi:http
//!   host) and `target/wasm/blobcache-spin.wasm` (Spin, see `spin.toml`).
//!
//! The nested builds use their own target directory, which avoids waiting on the
//! outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    for watched in [
        "component/src",
        "component/Cargo.toml",
        "adapter/src",
        "adapter/Cargo.toml",
        "azure/src",
        "azure/Cargo.toml",
        "store-rules/src",
        "store-rules/Cargo.toml",
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

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let nested = target.join("component");
    let release = nested.join("wasm32-wasip2/release");

    ensure_wasm_target();
    let out = target.join("wasm");
    std::fs::create_dir_all(&out).expect("creating target/wasm");
    for (features, name) in [(&[][..], "blobcache"), (&["spin"][..], "blobcache-spin")] {
        // Both builds write the same file: keep each under a name of its own.
        build_wasm(&workspace, &nested, "blobcache-component", features);
        let cache_bytes = std::fs::read(release.join("blobcache_component.wasm"))
            .expect("reading the cache component");
        let cache = out.join(format!("{name}-cache.wasm"));
        std::fs::write(&cache, &cache_bytes).expect("writing the cache component");
        if features.is_empty() {
            // The component the native host embeds.
            println!(
                "cargo:rustc-env=BLOBCACHE_COMPONENT_WASM={}",
                cache.display()
            );
        }
        build_wasm(&workspace, &nested, "blobcache-adapter", features);
        let adapter = std::fs::read(release.join("blobcache_adapter.wasm"))
            .expect("reading the Azure store component");
        std::fs::write(out.join(format!("{name}-azure-store.wasm")), &adapter)
            .expect("writing the Azure store component");
        let composed = compose(&cache_bytes, &adapter);
        let path = out.join(format!("{name}.wasm"));
        std::fs::write(&path, composed).expect("writing the composed component");
        let variable = format!("{}_WASM", name.replace('-', "_").to_uppercase());
        println!("cargo:rustc-env={variable}={}", path.display());
    }
}

/// Adds the `wasm32-wasip2` target when the toolchain lacks it. rustup installs
/// the targets of `rust-toolchain.toml` only when it installs the toolchain
/// itself, so a machine that already had the toolchain would otherwise fail
/// the nested build with "can't find crate for `std`".
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("failed to run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2/lib").is_dir() {
        return;
    }
    println!("cargo:warning=adding the wasm32-wasip2 target to the Rust toolchain (rustup target add wasm32-wasip2)");
    // Under rustup, RUSTUP_TOOLCHAIN names the toolchain cargo runs with.
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", "wasm32-wasip2"]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            panic!("`rustup target add wasm32-wasip2` failed ({status}); add the target by hand")
        }
        Err(error) => panic!(
            "the Rust toolchain at {} has no wasm32-wasip2 target and rustup could not be run \
             ({error}); install that target for this toolchain",
            sysroot.display()
        ),
    }
}

/// `cargo build --release --target wasm32-wasip2 -p <package>`.
fn build_wasm(workspace: &Path, target_dir: &Path, package: &str, features: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // The host's own flags are not meant for the wasm target.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        // Deployed as they are built (Spin, wasmtime serve, embedded): without
        // DWARF line tables, which were most of their size. The name section
        // stays, so traps and profiles still name guest functions.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let status = command.status().expect("failed to run cargo to build wasm");
    assert!(
        status.success(),
        "building {package} failed; is the wasm32-wasip2 target installed? \
         (`rustup target add wasm32-wasip2`)"
    );
}

/// Plugs the store component's exports into the cache component's imports (what
/// `wac plug` does), leaving only the WASI imports both share.
fn compose(cache: &[u8], store: &[u8]) -> Vec<u8> {
    use wac_graph::{types::Package, CompositionGraph, EncodeOptions};
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("blobcache:cache", None, cache.to_vec(), graph.types_mut())
        .expect("parsing the cache component");
    let socket = graph.register_package(socket).unwrap();
    let plug = Package::from_bytes(
        "blobcache:azure-store",
        None,
        store.to_vec(),
        graph.types_mut(),
    )
    .expect("parsing the Azure store component");
    let plug = graph.register_package(plug).unwrap();
    wac_graph::plug(&mut graph, vec![plug], socket).expect("composing cache and store");
    graph
        .encode(EncodeOptions::default())
        .expect("encoding the composed component")
}
