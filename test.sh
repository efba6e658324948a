#!/usr/bin/env bash
# Runs every blobcache test. First installs what the tests need, saying what it does:
# the Rust toolchain's wasm32-wasip2 target, the Debian packages of the real clients,
# and the npm packages of the Azure peers (into ./node_modules).
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

say "Formatting (cargo fmt --check)"
cargo fmt --all -- --check

say "Lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

say "Unit and integration tests (release build: the tests move gigabytes)"
cargo test --release --workspace
