#!/usr/bin/env python3
"""Checks a .keras file xtnn wrote against the .keras file Keras wrote for the same model.

Usage: check_keras_layout.py KERAS_WRITTEN.keras XTNN_WRITTEN.keras [more pairs]

xtnn loaded the first file and saved it again as the second. Keras cannot be installed here, so
this compares what Keras's load_model reads, with zipfile, json and h5py:
- the archive's entries (names, stored uncompressed);
- config.json: the model class and module, each layer's class, module and config keys (Keras
  passes a layer's config to its constructor, so a key Keras lacks would fail there), and the
  hyper-parameters both files state;
- model.weights.h5: every dataset under layers/ and optimizer/ at the same path with the same
  shape, dtype and values.
Exit status 0 when they agree; every disagreement is printed.
"""

import json
import sys
import zipfile

import h5py
import numpy as np

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def read(path):
    archive = zipfile.ZipFile(path)
    entries = {info.filename: info for info in archive.infolist()}
    return archive, entries


def datasets(h5, prefix):
    found = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and name.startswith(prefix):
            found[name] = item[()]
    h5.visititems(visit)
    return found


def normalized(key, value):
    """Keras 3.4 and later write a layer's dtype as a DTypePolicy object, Keras 3.3 as its name:
    the same setting, and every Keras 3 reads both."""
    if key == "dtype" and isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        return value.get("config", {}).get("name")
    return value


def compare_layers(keras_layers, xtnn_layers):
    check(len(keras_layers) == len(xtnn_layers), f"{len(keras_layers)} layers in Keras's config, {len(xtnn_layers)} in xtnn's")
    for keras_layer, xtnn_layer in zip(keras_layers, xtnn_layers):
        label = keras_layer["config"].get("name", keras_layer["class_name"])
        for field in ("class_name", "module"):
            check(keras_layer.get(field) == xtnn_layer.get(field),
                  f"layer {label}: {field} is {xtnn_layer.get(field)!r}, Keras wrote {keras_layer.get(field)!r}")
        keras_keys, xtnn_keys = set(keras_layer["config"]), set(xtnn_layer["config"])
        check(not (xtnn_keys - keras_keys), f"layer {label}: config keys Keras does not write: {sorted(xtnn_keys - keras_keys)}")
        check(not (keras_keys - xtnn_keys), f"layer {label}: config keys missing: {sorted(keras_keys - xtnn_keys)}")
        for key in keras_keys & xtnn_keys:
            if key in ("name",):
                continue
            check(normalized(key, keras_layer["config"][key]) == normalized(key, xtnn_layer["config"][key]),
                  f"layer {label}: {key} is {xtnn_layer['config'][key]!r}, Keras wrote {keras_layer['config'][key]!r}")


def compare(keras_path, xtnn_path):
    keras_zip, keras_entries = read(keras_path)
    xtnn_zip, xtnn_entries = read(xtnn_path)
    check(set(keras_entries) == set(xtnn_entries), f"entries {sorted(xtnn_entries)}, Keras wrote {sorted(keras_entries)}")
    for name, info in xtnn_entries.items():
        check(info.compress_type == zipfile.ZIP_STORED, f"entry {name} is compressed; Keras stores its entries")

    keras_config = json.loads(keras_zip.read("config.json"))
    xtnn_config = json.loads(xtnn_zip.read("config.json"))
    for field in ("module", "class_name", "registered_name"):
        check(keras_config.get(field) == xtnn_config.get(field),
              f"model {field} is {xtnn_config.get(field)!r}, Keras wrote {keras_config.get(field)!r}")
    check(set(keras_config) == set(xtnn_config), f"model keys {sorted(xtnn_config)}, Keras wrote {sorted(keras_config)}")
    compare_layers(keras_config["config"]["layers"], xtnn_config["config"]["layers"])
    if "compile_config" in keras_config:
        keras_compile, xtnn_compile = keras_config["compile_config"], xtnn_config.get("compile_config") or {}
        check(set(keras_compile) == set(xtnn_compile), f"compile_config keys {sorted(xtnn_compile)}, Keras wrote {sorted(keras_compile)}")
        for key in ("loss", "metrics", "loss_weights"):
            check(keras_compile.get(key) == xtnn_compile.get(key),
                  f"compile_config {key} is {xtnn_compile.get(key)!r}, Keras wrote {keras_compile.get(key)!r}")
        optimizer = keras_compile.get("optimizer")
        name = optimizer if isinstance(optimizer, str) else optimizer.get("class_name")
        xtnn_optimizer = xtnn_compile.get("optimizer") or {}
        check(str(name).lower() == str(xtnn_optimizer.get("class_name")).lower(),
              f"optimizer {xtnn_optimizer.get('class_name')!r}, Keras wrote {name!r}")
    metadata = json.loads(xtnn_zip.read("metadata.json"))
    check("keras_version" in metadata and "date_saved" in metadata, f"metadata.json holds {sorted(metadata)}")

    with h5py.File(keras_zip.open("model.weights.h5"), "r") as keras_h5, h5py.File(xtnn_zip.open("model.weights.h5"), "r") as xtnn_h5:
        keras_layers = sorted(keras_h5["layers"].keys())
        xtnn_layers = sorted(xtnn_h5["layers"].keys())
        check(keras_layers == xtnn_layers, f"weight groups {xtnn_layers}, Keras wrote {keras_layers}")
        # The layers' weights and the optimizer's state (its step count, learning rate and slots).
        keras_data = {**datasets(keras_h5, "layers/"), **datasets(keras_h5, "optimizer/")}
        xtnn_data = {**datasets(xtnn_h5, "layers/"), **datasets(xtnn_h5, "optimizer/")}
        check(set(keras_data) == set(xtnn_data), f"datasets {sorted(xtnn_data)}, Keras wrote {sorted(keras_data)}")
        for name in set(keras_data) & set(xtnn_data):
            a, b = keras_data[name], xtnn_data[name]
            check(a.shape == b.shape and a.dtype == b.dtype, f"{name}: {b.dtype}{b.shape}, Keras wrote {a.dtype}{a.shape}")
            check(a.shape == b.shape and np.array_equal(a, b), f"{name}: values differ")
        for group in ("vars", "optimizer/vars"):
            check(group in xtnn_h5, f"no group {group}")

    for problem in problems:
        print("MISMATCH:", problem)
    print(f"{xtnn_path}: {len(problems)} mismatches against {keras_path}")
    count = len(problems)
    problems.clear()
    return count


if __name__ == "__main__":
    paths = sys.argv[1:]
    if not paths or len(paths) % 2:
        sys.exit(__doc__)
    sys.exit(1 if sum(compare(paths[i], paths[i + 1]) for i in range(0, len(paths), 2)) else 0)
