#!/usr/bin/env bash
# Installs everything Quantlab needs to build, run and test on a fresh Debian machine with Rust
# stable. Safe to run again: each step is skipped when already done. Sourced by run.sh/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_LEPTOS_VERSION=0.3.10
# The wasm-bindgen CLI must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)

# Builds outside the clone survive a fresh clone on the same machine (CI runs there).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quantlab/target}"
export PATH="$HOME/.cargo/bin:$PWD/end2end/node_modules/.bin:$PATH"
# What cargo-leptos sets when it compiles the server; plain cargo builds (tests) get the same,
# so they neither rebuild the Leptos crates nor produce a binary that forgets the bundle name.
export LEPTOS_OUTPUT_NAME=quantlab

say() { printf '\n== %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v clang >/dev/null || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
# diesel links libpq; the tests start throwaway PostgreSQL clusters with initdb/pg_ctl.
[ -e /usr/include/postgresql/libpq-fe.h ] || need_apt+=(libpq-dev)
if [ "${QUANTLAB_NEED_BROWSER:-0}" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need_apt+=(postgresql); fi
if [ "${QUANTLAB_NEED_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null; then need_apt+=(chromium); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
  say "cargo install cargo-leptos@$CARGO_LEPTOS_VERSION (about 16 minutes on 2 cores, once)"
  cargo install "cargo-leptos@$CARGO_LEPTOS_VERSION" --locked
fi

if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  say "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

# wasm-opt from npm's binaryen (Debian's older one silently breaks hydration) and Playwright,
# which drives Debian's Chromium (no browser download).
if [ ! -x end2end/node_modules/.bin/wasm-opt ] || [ ! -d end2end/node_modules/@playwright/test ]; then
  say "npm ci (binaryen, @playwright/test)"
  (cd end2end && npm ci --no-audit --no-fund --loglevel=error)
fi
