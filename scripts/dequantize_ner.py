"""Dequantizes a BERT token-classification ONNX export with 4-bit MatMulNBits weights and 8-bit
embeddings (Rampart's model_q4.onnx) into f32 safetensors with Hugging Face names, so candle's
BERT can run the very same weights: `python scripts/dequantize_ner.py models/rampart models/rampart-f32`.
Copies config.json and tokenizer.json beside model.safetensors. Needs onnx, numpy, safetensors."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file


def attribute(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def module_name(node_name):
    """`/bert/encoder/layer.0/attention/self/query/MatMul_Q4` -> `bert.encoder.layer.0.attention.self.query`."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def main(source, target):
    source, target = Path(source), Path(target)
    graph = onnx.load(str(source / "model.onnx")).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    tensors = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            # B: [N, blocks, block_size * bits / 8] bytes, low nibble first; one scale per block;
            # zero point 8 unless given (as packed nibbles).
            k, n = attribute(node, "K"), attribute(node, "N")
            bits, block = attribute(node, "bits", 4), attribute(node, "block_size")
            if bits != 4:
                raise SystemExit(f"{node.name}: only 4-bit weights are handled, not {bits}")
            packed = values[node.input[1]]
            scales = values[node.input[2]].reshape(n, -1).astype(np.float32)
            low, high = packed & 0x0F, packed >> 4
            codes = np.stack([low, high], axis=-1).reshape(n, -1)[:, : scales.shape[1] * block]
            if len(node.input) > 3 and node.input[3] in values:
                zp = values[node.input[3]].reshape(n, -1)
                zeros = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, -1)[:, : scales.shape[1]]
            else:
                zeros = np.full(scales.shape, 8, dtype=np.uint8)
            blocks = codes.reshape(n, -1, block).astype(np.float32) - zeros[:, :, None].astype(np.float32)
            weight = (blocks * scales[:, :, None]).reshape(n, -1)[:, :k]
            tensors[module_name(node.name) + ".weight"] = np.ascontiguousarray(weight)
    for name, value in values.items():
        if name.endswith(".weight_quantized"):
            base = name[: -len("_quantized")]
            scale = values[base + "_scale"].astype(np.float32)
            zero = values[base + "_zero_point"].astype(np.float32)
            tensors[base] = ((value.astype(np.float32) - zero) * scale).astype(np.float32)
        elif (
            name.startswith(("bert.", "classifier."))
            and not name.endswith(("_scale", "_zero_point"))
            and value.dtype == np.float32
        ):
            tensors[name] = value
    expected = ["bert.embeddings.word_embeddings.weight", "classifier.weight", "classifier.bias"]
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise SystemExit(f"not found in the ONNX graph: {missing}")
    target.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target / "model.safetensors"))
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(source / name, target / name)
    print(json.dumps({"tensors": len(tensors), "target": str(target)}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
