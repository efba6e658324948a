#!/usr/bin/env bash
# Runs every blobcache test. First installs what the tests need, saying what it does:
# the Rust toolchain's wasm32-wasip2 target, the Debian packages of the real clients,
# the npm packages of the Azure peers (into ./node_modules), and wasmtime-cli (into
# a cache directory outside the repo).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

say "Rust toolchain from rust-toolchain.toml, with the wasm32-wasip2 target"
rustup show active-toolchain
rustup target add wasm32-wasip2

# Debian packages the tests run for real: ccache (a real client).
missing=()
command -v ccache >/dev/null || missing+=(ccache)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  say "Installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
else
  say "Debian packages already present: ccache, nodejs, npm"
fi

say "npm packages into ./node_modules: azurite (Azure Storage emulator), @azure/storage-blob (Microsoft's SDK)"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# wasmtime-cli runs the composed component in tests/wasmtime_serve.rs. It is built
# from crates.io (about 10 minutes on 2 cores) into a cache directory that later
# runs reuse.
tools="${XDG_CACHE_HOME:-$HOME/.cache}/blobcache-tools"
wasmtime_root="$tools/wasmtime-48.0.8"
if [ -x "$wasmtime_root/bin/wasmtime" ]; then
  say "wasmtime-cli 48.0.8 already built in $wasmtime_root"
else
  say "Building wasmtime-cli 48.0.8 from crates.io into $wasmtime_root (once; about 10 minutes)"
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$wasmtime_root" \
    --no-default-features --features run,serve,cranelift,pooling-allocator,wasi-config,component-model-async
fi
export BLOBCACHE_WASMTIME="$wasmtime_root/bin/wasmtime"

say "Formatting (cargo fmt --check)"
cargo fmt --all -- --check

say "Lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

say "Unit and integration tests (release build: the tests move gigabytes)"
cargo test --release --workspace
