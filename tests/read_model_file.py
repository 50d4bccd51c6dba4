#!/usr/bin/env python3
"""Reads an xtnn model file with nothing but the standard library (struct + json), checks its
safetensors layout, and recomputes the model's check output from the config and the weights.
This shows the format is what docs/model-format.md says, independently of the C++ reader.

    python3 tests/read_model_file.py model.xtnn
"""
import json
import math
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (header_length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_length])
    data = blob[8 + header_length :]
    metadata = header.pop("__metadata__")
    assert blob[8:].startswith(b'{"__metadata__":{"format":"xtnn.model"'), "magic"
    assert metadata["format_version"] == "1"
    tensors, end = {}, 0
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
        begin, stop = entry["data_offsets"]
        assert entry["dtype"] == "F32" and begin == end, name
        count = math.prod(entry["shape"])
        assert stop - begin == 4 * count, name
        tensors[name] = (entry["shape"], struct.unpack(f"<{count}f", data[begin:stop]))
        end = stop
    assert end == len(data), "trailing bytes"
    return metadata, tensors


def matrix(shape, values):
    rows, columns = shape
    return [list(values[r * columns : (r + 1) * columns]) for r in range(rows)]


ACTIVATIONS = {
    "linear": lambda row: row,
    "relu": lambda row: [max(v, 0.0) for v in row],
    "tanh": lambda row: [math.tanh(v) for v in row],
    "sigmoid": lambda row: [1 / (1 + math.exp(-v)) for v in row],
}


def softmax(row):
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def forward(config, tensors, sample, shape):
    """One sample through the layers: `sample` is a flat list in row-major order of `shape`."""
    rows = [sample[i : i + shape[-1]] for i in range(0, len(sample), shape[-1])]
    for layer in config["config"]["layers"]:
        kind, settings = layer["class_name"], layer["config"]
        if kind == "Dense":
            kernel = matrix(*tensors[settings["name"] + "/kernel"])
            bias = tensors[settings["name"] + "/bias"][1] if settings.get("use_bias", True) else [0.0] * settings["units"]
            rows = [[sum(x * kernel[i][j] for i, x in enumerate(row)) + bias[j] for j in range(settings["units"])] for row in rows]
            name = settings["activation"]
            rows = [softmax(row) if name == "softmax" else ACTIVATIONS[name](row) for row in rows]
        elif kind == "Flatten":
            rows = [[v for row in rows for v in row]]
        elif kind == "Activation":
            name = settings["activation"]
            rows = [softmax(row) if name == "softmax" else ACTIVATIONS[name](row) for row in rows]
        elif kind != "Dropout":
            raise ValueError(f"this reader does not know layer {kind}")
    return [v for row in rows for v in row]


def main(path):
    metadata, tensors = read(path)
    config = json.loads(metadata["model_config"])
    input_shape, inputs = tensors.pop("check/input")
    _, expected = tensors.pop("check/output")
    weights = {k: v for k, v in tensors.items() if not k.startswith("optimizer/")}
    outputs = forward(config, weights, list(inputs), input_shape[1:])
    worst = max(abs(a - e) for a, e in zip(outputs, expected))
    assert len(outputs) == len(expected) and worst < 1e-5, f"check output differs by {worst}"
    parameters = sum(math.prod(shape) for shape, _ in weights.values())
    optimizer = json.loads(metadata["training_config"])["optimizer"]["name"]
    slots = sum(1 for k in tensors if k.startswith("optimizer/"))
    print(f"{path}: {len(weights)} weight tensors, {parameters} parameters, {optimizer} with {slots} slot tensors "
          f"after {metadata['optimizer_iterations']} steps; check output reproduced (max difference {worst:.2e})")


if __name__ == "__main__":
    main(sys.argv[1])
