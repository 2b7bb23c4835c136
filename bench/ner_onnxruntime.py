"""The NER reference for `quantlab bench --ner`: onnxruntime on the same ONNX file, the same
word-piece windows (sent by quantlab, so the inputs are identical) and the same thread count.
Reads JSON on stdin, writes JSON on stdout: the median milliseconds per text."""

import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

job = json.load(sys.stdin)
options = ort.SessionOptions()
options.intra_op_num_threads = job["threads"]
options.inter_op_num_threads = 1
session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
names = {i.name for i in session.get_inputs()}


def run(windows):
    for ids in windows:
        feed = {"input_ids": np.array([ids], dtype=np.int64)}
        if "attention_mask" in names:
            feed["attention_mask"] = np.ones((1, len(ids)), dtype=np.int64)
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros((1, len(ids)), dtype=np.int64)
        session.run(None, feed)


results = []
for windows in job["texts"]:
    run(windows)  # warm-up
    times = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        run(windows)
        times.append((time.perf_counter() - start) * 1e3)
    results.append(statistics.median(times))
print(json.dumps({"millis": results, "version": ort.__version__}))
