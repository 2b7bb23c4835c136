#!/usr/bin/env bash
# Installs onnxruntime (the reference for `quantlab bench --ner`) into a venv.
set -euo pipefail
VENV="${QUANTLAB_BENCH_VENV:-$HOME/.cache/quantlab/bench-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check -q "onnxruntime>=1.20" numpy
echo "done: run quantlab bench --ner with QUANTLAB_BENCH_PYTHON=$VENV/bin/python"
