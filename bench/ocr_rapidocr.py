"""The OCR reference for `quantlab bench --ocr`: RapidOCR (PaddleOCR's pipeline on onnxruntime
and OpenCV) on the same PP-OCRv5 ONNX networks quantlab's ppocr-v5-mobile runs, the same image
files and the same thread count, detection sized like ours (longer side up to 2048, ImageNet
normalisation), no angle classifier. Reads JSON on stdin, writes JSON on stdout: per image the
median milliseconds and the lines read."""

import json
import os
import statistics
import sys
import tempfile
import time

import rapidocr_onnxruntime
from rapidocr_onnxruntime import RapidOCR

job = json.load(sys.stdin)
# RapidOCR adds CTC's blank and the trailing space itself; PP-OCRv5's key file already has both.
with open(job["dictionary"], encoding="utf-8") as f:
    keys = f.read().split("\n")
if keys and keys[-1] == "":
    keys.pop()
keys_file = tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False)
keys_file.write("\n".join(keys[1:-1]) + "\n")
keys_file.close()

threads = job["threads"]
engine = RapidOCR(
    det_model_path=job["detection"],
    rec_model_path=job["recognition"],
    rec_keys_path=keys_file.name,
    use_cls=False,
    intra_op_num_threads=threads,
    inter_op_num_threads=1,
    det_limit_type="max",
    det_limit_side_len=2048,
    det_mean=[0.485, 0.456, 0.406],
    det_std=[0.229, 0.224, 0.225],
    max_side_len=4096,
)


def read(path):
    result, _ = engine(path, use_cls=False)
    return [line[1] for line in (result or [])]


results = []
for path in job["images"]:
    lines = read(path)  # warm-up
    times = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        read(path)
        times.append((time.perf_counter() - start) * 1e3)
    results.append({"millis": statistics.median(times), "lines": lines})
os.unlink(keys_file.name)
version = getattr(rapidocr_onnxruntime, "__version__", "1.4")
print(json.dumps({"results": results, "version": version}))
