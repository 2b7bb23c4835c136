#!/usr/bin/env bash
# Builds upstream llama.cpp's `llama-server` and `llama-batched-bench` for
# `quantlab bench --concurrency`, from the llama.cpp sources that the llama-cpp-python sdist on
# PyPI vendors (the llama-cpp-sys-2 crate strips the tools). Same CPU level as Quantlab
# (x86-64-v3: AVX2, FMA, F16C; no native flags), CPU only. Prints the binary folder.
# Usage: scripts/build-llama-server.sh [OUT_DIR]   (default ~/.cache/quantlab/upstream)
set -euo pipefail
OUT="${1:-$HOME/.cache/quantlab/upstream}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mkdir -p "$OUT"
cd "$OUT"
SRC="llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -d "$SRC/tools/server" ]; then
  python3 -m pip download --disable-pip-version-check --no-binary :all: --no-deps \
    "llama-cpp-python==$VERSION" -d . >&2
  tar xzf "llama_cpp_python-$VERSION.tar.gz"
fi
command -v cmake >/dev/null || { echo "cmake is missing: apt-get install cmake" >&2; exit 1; }
BUILD="$OUT/build-$VERSION"
if [ ! -x "$BUILD/bin/llama-server" ] || [ ! -x "$BUILD/bin/llama-batched-bench" ]; then
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DCMAKE_C_FLAGS=-march=x86-64-v3 -DCMAKE_CXX_FLAGS=-march=x86-64-v3 \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  cmake --build "$BUILD" -j "$(nproc)" --target llama-server llama-batched-bench llama-bench >&2
fi
echo "$BUILD/bin"
