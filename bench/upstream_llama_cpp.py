"""Upstream llama.cpp reference for `quantlab bench`, through llama-cpp-python.

Reads a JSON job on stdin (model path, prompt, threads, context, batch, decode tokens, repeats),
measures prefill and greedy decode the same way Quantlab's engine does, and prints the medians
as JSON. Install with scripts/bench-upstream-deps.sh (built with the same CPU flags as ours).
"""
import json
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama

job = json.load(sys.stdin)
llm = Llama(
    model_path=job["model"],
    n_ctx=job["n_ctx"],
    n_batch=job["n_batch"],
    n_ubatch=job["n_batch"],
    n_threads=job["threads"],
    n_threads_batch=job["threads"],
    verbose=False,
)
tokens = llm.tokenize(job["prompt"].encode(), add_bos=True, special=True)
prefill, decode = [], []
for run in range(job["repeats"] + 1):
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    prefill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(job["decode_tokens"]):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode_s = time.perf_counter() - start
    if run > 0:  # the first run is the warm-up
        prefill.append(len(tokens) / prefill_s)
        decode.append(job["decode_tokens"] / decode_s)
print(json.dumps({
    "prompt_tokens": len(tokens),
    "prefill_tok_s": statistics.median(prefill),
    "decode_tokens": job["decode_tokens"],
    "decode_tok_s": statistics.median(decode),
}))
