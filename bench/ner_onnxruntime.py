"""The NER reference for `quantlab bench --ner`: onnxruntime on the same ONNX file, the same
word-piece windows (sent by quantlab, so the inputs are identical) and the same thread count.
Reads JSON on stdin, writes JSON on stdout: the median milliseconds per text, running one window
per call as a simple loop would, and all of a text's windows in one padded batch (what a tuned
script would do; only when the model takes an attention mask)."""

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


def run_batched(windows):
    width = max(len(ids) for ids in windows)
    ids = np.zeros((len(windows), width), dtype=np.int64)
    mask = np.zeros((len(windows), width), dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = window
        mask[row, : len(window)] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(ids)
    session.run(None, feed)


def median_millis(runner, windows):
    runner(windows)  # warm-up
    times = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        runner(windows)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


results = [median_millis(run, windows) for windows in job["texts"]]
batched = None
if "attention_mask" in names:
    batched = [median_millis(run_batched, windows) for windows in job["texts"]]
print(json.dumps({"millis": results, "batched_millis": batched, "version": ort.__version__}))
