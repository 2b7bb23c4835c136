#!/usr/bin/env bash
# Installs the references of `quantlab bench --ocr`: RapidOCR on onnxruntime (in a venv) and
# Debian's Tesseract with its English model.
set -euo pipefail
VENV="${QUANTLAB_BENCH_VENV:-$HOME/.cache/quantlab/bench-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --disable-pip-version-check -q "onnxruntime>=1.20" numpy "rapidocr-onnxruntime==1.4.4"
if ! command -v tesseract >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq tesseract-ocr tesseract-ocr-eng; else sudo apt-get install -y -qq tesseract-ocr tesseract-ocr-eng; fi
fi
echo "done: quantlab models fetch ppocr-v5-mobile, then run quantlab bench --ocr with QUANTLAB_BENCH_PYTHON=$VENV/bin/python"
