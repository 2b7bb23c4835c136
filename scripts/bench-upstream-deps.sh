#!/usr/bin/env bash
# Installs llama-cpp-python (upstream llama.cpp) for `quantlab bench`, compiled with the same CPU
# level as Quantlab (x86-64-v3: AVX2, FMA, F16C) and without native flags, into a venv.
set -euo pipefail
VENV="${QUANTLAB_BENCH_VENV:-$HOME/.cache/quantlab/bench-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DCMAKE_C_FLAGS=-march=x86-64-v3 -DCMAKE_CXX_FLAGS=-march=x86-64-v3" \
  "$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir "llama-cpp-python>=0.3.16" numpy
echo "done: run quantlab bench with QUANTLAB_BENCH_PYTHON=$VENV/bin/python"
