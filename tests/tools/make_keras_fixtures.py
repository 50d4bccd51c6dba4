#!/usr/bin/env python3
"""Writes the Keras-format test fixtures in tests/data/keras/ without Keras.

Keras cannot be installed on the machines this project is built on, so these files are written
with h5py, numpy and zipfile following Keras's own saving code (docs/keras-files.md cites it):

- Keras 3 `.keras`: a zip of metadata.json, config.json and model.weights.h5, entries stored;
  weights under layers/<snake_case class name>[_<n>]/vars/<i>, layers numbered in the order of
  `model.layers` (keras/src/saving/saving_lib.py, _save_container_state), each layer's
  variables trainable first (Layer.save_own_variables).
- Keras 2 `.h5`: root attributes model_config, training_config, keras_version, backend; group
  model_weights with layer_names, each layer group with weight_names naming datasets below it
  (tf_keras/src/saving/legacy/hdf5_format.py).

Each model's expected output is a float64 numpy forward pass of the same weights on a fixed
input, stored beside it in <model>.expected.json. Run from the repository root:
    python3 tests/tools/make_keras_fixtures.py
"""

import io
import json
import os
import zipfile

import h5py
import numpy as np

OUT = os.path.join("tests", "data", "keras")
rng = np.random.default_rng(20261129)


def entry(name, method=zipfile.ZIP_STORED):
    """A zip entry of a fixed date (Keras's own entries carry the time of saving), so the
    fixtures are the same bytes each time they are made."""
    info = zipfile.ZipInfo(name, date_time=(2026, 11, 29, 0, 0, 0))
    info.compress_type = method
    return info


def initializer(name):
    return {"module": "keras.initializers", "class_name": name, "config": {} if name != "GlorotUniform" else {"seed": None},
            "registered_name": None}


def dense(name, units, activation):
    return {"class_name": "Dense", "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "units": units, "activation": activation,
                       "use_bias": True, "kernel_initializer": initializer("GlorotUniform"),
                       "bias_initializer": initializer("Zeros"), "kernel_regularizer": None, "bias_regularizer": None,
                       "kernel_constraint": None, "bias_constraint": None}}


def conv2d(name, filters, size, padding, activation):
    return {"class_name": "Conv2D", "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "filters": filters,
                       "kernel_size": [size, size], "strides": [1, 1], "padding": padding,
                       "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": activation,
                       "use_bias": True, "kernel_initializer": initializer("GlorotUniform"),
                       "bias_initializer": initializer("Zeros"), "kernel_regularizer": None, "bias_regularizer": None,
                       "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}}


def batch_norm(name, keras2_axis):
    return {"class_name": "BatchNormalization", "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", "axis": -1, "momentum": 0.99,
                       "epsilon": 0.001, "center": True, "scale": True, "beta_initializer": initializer("Zeros"),
                       "gamma_initializer": initializer("Ones"), "moving_mean_initializer": initializer("Zeros"),
                       "moving_variance_initializer": initializer("Ones"), "beta_regularizer": None,
                       "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None,
                       "synchronized": False},
            # Keras 2 writes the axis of a built layer as a list of positive axes; None drops a key.
            "keras2_config": {"axis": [keras2_axis], "synchronized": None}}


def simple(class_name, name, **fields):
    return {"class_name": class_name, "name": name, "config": {"name": name, "trainable": True, "dtype": "float32", **fields}}


def weights_for(layer, input_shape):
    """The layer's weights in Keras's creation order, with Keras's names, and its output shape."""
    kind = layer["class_name"]
    c = layer["config"]
    if kind == "Dense":
        fan_in = input_shape[-1]
        kernel = rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, c["units"]))
        return [("kernel", kernel), ("bias", rng.normal(0, 0.1, c["units"]))], input_shape[:-1] + [c["units"]]
    if kind == "Conv2D":
        k = c["kernel_size"][0]
        kernel = rng.normal(0, 1 / np.sqrt(k * k * input_shape[-1]), (k, k, input_shape[-1], c["filters"]))
        h, w = input_shape[0], input_shape[1]
        if c["padding"] == "valid":
            h, w = h - k + 1, w - k + 1
        return [("kernel", kernel), ("bias", rng.normal(0, 0.1, c["filters"]))], [h, w, c["filters"]]
    if kind == "BatchNormalization":
        n = input_shape[-1]
        return [("gamma", rng.uniform(0.5, 1.5, n)), ("beta", rng.normal(0, 0.2, n)),
                ("moving_mean", rng.normal(0, 0.3, n)), ("moving_variance", rng.uniform(0.5, 2.0, n))], input_shape
    if kind == "MaxPooling2D":
        return [], [input_shape[0] // 2, input_shape[1] // 2, input_shape[2]]
    if kind == "Flatten":
        return [], [int(np.prod(input_shape))]
    if kind == "GlobalAveragePooling2D":
        return [], [input_shape[-1]]
    if kind == "Reshape":
        return [], list(c["target_shape"])
    return [], input_shape


def activation(x, name):
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    assert name == "linear", name
    return x


def forward(layer, weights, inputs):
    kind = layer["class_name"]
    c = layer["config"]
    w = dict(weights)
    x = inputs[0]
    if kind == "Dense":
        return activation(x @ w["kernel"] + w["bias"], c["activation"])
    if kind == "Conv2D":
        k = w["kernel"].shape[0]
        if c["padding"] == "same":
            pad = (k - 1) // 2
            x = np.pad(x, ((0, 0), (pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
        n, h, wd, _ = x.shape
        out = np.zeros((n, h - k + 1, wd - k + 1, w["kernel"].shape[3]))
        for i in range(k):
            for j in range(k):
                out += np.einsum("nhwc,cf->nhwf", x[:, i:i + h - k + 1, j:j + wd - k + 1, :], w["kernel"][i, j])
        return activation(out + w["bias"], c["activation"])
    if kind == "BatchNormalization":
        return w["gamma"] * (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + c["epsilon"]) + w["beta"]
    if kind == "Activation":
        return activation(x, c["activation"])
    if kind == "MaxPooling2D":
        n, h, wd, ch = x.shape
        return x[:, :h // 2 * 2, :wd // 2 * 2, :].reshape(n, h // 2, 2, wd // 2, 2, ch).max(axis=(2, 4))
    if kind == "Flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "GlobalAveragePooling2D":
        return x.mean(axis=(1, 2))
    if kind == "Reshape":
        return x.reshape([x.shape[0]] + list(c["target_shape"]))
    if kind == "Add":
        return sum(inputs)
    if kind == "Multiply":
        return inputs[0] * inputs[1]
    if kind == "Dropout":
        return x
    raise ValueError(kind)


def snake_case(name):
    import re
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


class Model:
    """A model: layers in Keras's `model.layers` order, each with the names of its inputs."""

    def __init__(self, name, input_shape, layers, inbound=None, compile_config=None, dtype_policies=False):
        self.name = name
        self.dtype_policies = dtype_policies
        self.input_shape = input_shape
        self.layers = layers
        self.inbound = inbound  # None for a Sequential
        self.compile_config = compile_config
        self.weights = {}
        self.shapes = {"input_layer": input_shape}
        previous = "input_layer"
        for layer in layers:
            sources = inbound[layer["name"]] if inbound else [previous]
            weights, shape = weights_for(layer, self.shapes[sources[0]])
            self.weights[layer["name"]] = weights
            self.shapes[layer["name"]] = shape
            previous = layer["name"]

    def predict(self, x):
        values = {"input_layer": x}
        previous = "input_layer"
        for layer in self.layers:
            sources = self.inbound[layer["name"]] if self.inbound else [previous]
            values[layer["name"]] = forward(layer, self.weights[layer["name"]], [values[s] for s in sources])
            previous = layer["name"]
        return values[previous]

    def input_layer(self, keras2):
        shape = [None] + self.input_shape
        config = {"dtype": "float32", "sparse": False, "name": "input_layer"}
        config["batch_input_shape" if keras2 else "batch_shape"] = shape
        if keras2:
            config["ragged"] = False
        entry = {"class_name": "InputLayer", "config": config}
        if not keras2:
            entry.update({"module": "keras.layers", "registered_name": None})
        return entry

    def layer_entry(self, layer, keras2):
        config = dict(layer["config"])
        if self.dtype_policies and not keras2:
            config["dtype"] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                               "registered_name": None}
        if keras2:
            for key, value in layer.get("keras2_config", {}).items():
                if value is None:
                    config.pop(key)
                else:
                    config[key] = value
        entry = {"class_name": layer["class_name"], "config": config}
        if not keras2:
            entry.update({"module": "keras.layers", "registered_name": None})
        return entry

    def config(self, keras2):
        if self.inbound is None:
            layers = [self.input_layer(keras2)] + [self.layer_entry(l, keras2) for l in self.layers]
            body = {"name": self.name, "layers": layers}
            if not keras2:
                body.update({"trainable": True, "dtype": "float32", "build_input_shape": [None] + self.input_shape})
            config = {"class_name": "Sequential", "config": body}
            if not keras2:
                config.update({"module": "keras", "registered_name": None,
                               "build_config": {"input_shape": [None] + self.input_shape}})
            return config
        entries = [dict(self.input_layer(keras2), name="input_layer", inbound_nodes=[])]
        for layer in self.layers:
            entry = dict(self.layer_entry(layer, keras2), name=layer["name"])
            sources = self.inbound[layer["name"]]
            if keras2:
                entry["inbound_nodes"] = [[[s, 0, 0, {}] for s in sources]]
            else:
                tensors = [{"class_name": "__keras_tensor__",
                            "config": {"shape": [None] + self.shapes[s], "dtype": "float32", "keras_history": [s, 0, 0]}}
                           for s in sources]
                entry["inbound_nodes"] = [{"args": [tensors[0] if len(tensors) == 1 else tensors], "kwargs": {}}]
            entries.append(entry)
        body = {"name": self.name, "trainable": True, "layers": entries, "input_layers": [["input_layer", 0, 0]],
                "output_layers": [[self.layers[-1]["name"], 0, 0]]}
        config = {"class_name": "Functional" if not keras2 else "Model", "config": body}
        if not keras2:
            config.update({"module": "keras.src.models.functional", "registered_name": "Functional"})
        return config

    def write_keras3(self, path):
        config = self.config(keras2=False)
        if self.compile_config:
            config["compile_config"] = self.compile_config
        weights = io.BytesIO()
        with h5py.File(weights, "w") as f:
            # model.layers: a Sequential's without its InputLayer; a functional model's with it.
            listed = self.layers if self.inbound is None else [{"class_name": "InputLayer", "name": "input_layer"}] + self.layers
            used = {}
            for layer in listed:
                base = snake_case(layer["class_name"])
                used[base] = used.get(base, -1) + 1
                group = f"layers/{base}" + (f"_{used[base]}" if used[base] else "")
                variables = f.create_group(group).create_group("vars")
                own = self.weights.get(layer["name"], [])
                trainable = [w for n, w in own if n not in ("moving_mean", "moving_variance")]
                fixed = [w for n, w in own if n in ("moving_mean", "moving_variance")]
                for i, value in enumerate(trainable + fixed):
                    variables[str(i)] = value.astype(np.float32)
            f.create_group("optimizer").create_group("vars")
            f.create_group("vars")
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(entry("metadata.json"), json.dumps({"keras_version": "3.3.3", "date_saved": "2026-11-29@00:00:00"}))
            archive.writestr(entry("config.json"), json.dumps(config))
            archive.writestr(entry("model.weights.h5"), weights.getvalue())

    def write_keras2(self, path, training_config=None, weights_only=False):
        """A full model file, or with `weights_only` what Keras 2's save_weights writes: the
        weight groups at the root."""
        with h5py.File(path, "w") as f:
            if not weights_only:
                f.attrs["model_config"] = json.dumps(self.config(keras2=True))
                f.attrs["keras_version"] = "2.14.0"
                f.attrs["backend"] = "tensorflow"
            if training_config:
                f.attrs["training_config"] = json.dumps(training_config)
            group = f if weights_only else f.create_group("model_weights")
            names = (["input_layer"] if self.inbound else []) + [l["name"] for l in self.layers]
            group.attrs["layer_names"] = [n.encode() for n in names]
            group.attrs["backend"] = "tensorflow"
            group.attrs["keras_version"] = "2.14.0"
            for name in names:
                own = self.weights.get(name, [])
                layer_group = group.create_group(name)
                weight_names = [f"{name}/{n}:0" for n, _ in own]
                layer_group.attrs["weight_names"] = [n.encode() for n in weight_names] if own else np.array([])
                for weight_name, (_, value) in zip(weight_names, own):
                    layer_group[weight_name] = value.astype(np.float32)

    def write_expected(self, path, x):
        # The weights as stored (float32), in float64 arithmetic.
        for name in self.weights:
            self.weights[name] = [(n, w.astype(np.float32).astype(np.float64)) for n, w in self.weights[name]]
        with open(path, "w") as f:
            json.dump({"input_shape": list(x.shape), "input": x.ravel().tolist(),
                       "output": self.predict(x.astype(np.float64)).ravel().tolist()}, f)


def rewrite_archive(source, target, change_entry=None, extra_entries=(), drop=(), method=zipfile.ZIP_STORED):
    """A copy of the .keras archive `source` with entries changed, added or dropped."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as archive:
        for info in original.infolist():
            if info.filename in drop:
                continue
            data = original.read(info.filename)
            if change_entry and info.filename == change_entry[0]:
                data = change_entry[1](data)
            archive.writestr(entry(info.filename, method), data)
        for name, data, method in extra_entries:
            archive.writestr(entry(name, method), data)


def rewrite_weights(edit):
    def change(data):
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f:
            edit(f)
        return buffer.getvalue()
    return change


def write_hostile():
    """Files a reader must refuse with a clear error, and two it must accept (float64, float16)."""
    folder = os.path.join(OUT, "hostile")
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(OUT, "mlp.keras")

    def retype(dtype):
        def edit(f):
            value = f["layers/dense/vars/0"][()]
            del f["layers/dense/vars/0"]
            f["layers/dense/vars/0"] = value.astype(dtype)
        return edit

    rewrite_archive(source, os.path.join(folder, "int-weights.keras"), ("model.weights.h5", rewrite_weights(retype(np.int32))))
    rewrite_archive(source, os.path.join(folder, "float64-weights.keras"),
                    ("model.weights.h5", rewrite_weights(retype(np.float64))))
    rewrite_archive(source, os.path.join(folder, "float16-weights.keras"),
                    ("model.weights.h5", rewrite_weights(retype(np.float16))))

    def reshape(f):
        del f["layers/dense/vars/1"]
        f["layers/dense/vars/1"] = np.zeros(17, np.float32)
    rewrite_archive(source, os.path.join(folder, "wrong-shape.keras"), ("model.weights.h5", rewrite_weights(reshape)))

    def remove_layer(f):
        del f["layers/dense_1"]
    rewrite_archive(source, os.path.join(folder, "missing-layer.keras"), ("model.weights.h5", rewrite_weights(remove_layer)))

    def add_layer(f):
        f.create_group("layers/dense_2/vars")["0"] = np.zeros((4, 4), np.float32)
    rewrite_archive(source, os.path.join(folder, "extra-layer.keras"), ("model.weights.h5", rewrite_weights(add_layer)))

    def nan_weight(f):
        value = f["layers/dense_1/vars/0"][()]
        value[1, 2] = np.nan
        f["layers/dense_1/vars/0"][...] = value
    rewrite_archive(source, os.path.join(folder, "nan-weight.keras"), ("model.weights.h5", rewrite_weights(nan_weight)))

    def unknown_layer(data):
        return data.replace(b'"class_name": "Dropout"', b'"class_name": "GaussianNoise"')
    rewrite_archive(source, os.path.join(folder, "unknown-layer.keras"), ("config.json", unknown_layer))

    def unknown_activation(data):
        return data.replace(b'"activation": "relu"', b'"activation": "gelu_tanh"')
    rewrite_archive(source, os.path.join(folder, "unknown-activation.keras"), ("config.json", unknown_activation))

    def float16_layer(data):
        return data.replace(b'"name": "dense_1", "trainable": true, "dtype": "float32"',
                            b'"name": "dense_1", "trainable": true, "dtype": "float16"')
    rewrite_archive(source, os.path.join(folder, "float16-layer.keras"), ("config.json", float16_layer))

    for name, attribute, value in (("keras1.h5", "keras_version", "1.2.2"), ("theano-cnn.h5", "backend", "theano")):
        with open(os.path.join(OUT, "cnn.h5" if name == "theano-cnn.h5" else "mlp.h5"), "rb") as original:
            data = original.read()
        with open(os.path.join(folder, name), "wb") as copy:
            copy.write(data)
        with h5py.File(os.path.join(folder, name), "r+") as f:
            f["model_weights"].attrs[attribute] = value

    rewrite_archive(source, os.path.join(folder, "path-entry.keras"),
                    extra_entries=[("../outside.json", b"{}", zipfile.ZIP_STORED)])
    rewrite_archive(source, os.path.join(folder, "npz-weights.keras"), drop=("model.weights.h5",),
                    extra_entries=[("model.weights.npz", b"PK", zipfile.ZIP_STORED)])
    # 80 MB of spaces deflate to about 80 KB: over the cap for config.json, refused before inflating.
    rewrite_archive(source, os.path.join(folder, "bomb-config.keras"), drop=("config.json",),
                    extra_entries=[("config.json", b" " * (80 << 20), zipfile.ZIP_DEFLATED)])


def main():
    os.makedirs(OUT, exist_ok=True)
    keras3_compile = {"optimizer": {"module": "keras.optimizers", "class_name": "Adam",
                                    "config": {"name": "adam", "learning_rate": 0.0005, "weight_decay": None,
                                               "clipnorm": None, "global_clipnorm": None, "clipvalue": None,
                                               "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                                               "loss_scale_factor": None, "gradient_accumulation_steps": None,
                                               "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False},
                                    "registered_name": None},
                      "loss": "sparse_categorical_crossentropy", "loss_weights": None, "metrics": ["accuracy"],
                      "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}
    keras2_training = {"loss": "categorical_crossentropy",
                       "metrics": [[{"class_name": "MeanMetricWrapper",
                                     "config": {"name": "accuracy", "dtype": "float32", "fn": "categorical_accuracy"}}]],
                       "weighted_metrics": None, "loss_weights": None,
                       "optimizer_config": {"class_name": "SGD", "config": {"name": "SGD", "learning_rate": 0.01,
                                                                           "decay": 0.0, "momentum": 0.9,
                                                                           "nesterov": False}}}

    mlp = Model("mlp", [8], [dense("dense", 16, "relu"), simple("Dropout", "dropout", rate=0.2, noise_shape=None, seed=None),
                             dense("dense_1", 4, "softmax")], compile_config=keras3_compile)
    cnn = Model("cnn", [8, 8, 1], [conv2d("conv2d", 4, 3, "valid", "relu"),
                                   simple("MaxPooling2D", "max_pooling2d", pool_size=[2, 2], padding="valid",
                                          strides=[2, 2], data_format="channels_last"),
                                   simple("Flatten", "flatten", data_format="channels_last"),
                                   dense("dense", 3, "softmax")])
    # A residual block, functional. The layers are listed as Keras's map_graph orders them:
    # by depth from the output (input 6, main conv 5, batch norm 4, activation and shortcut
    # conv 3, add 2, pooling 1, dense 0), so the 3x3 conv is Keras's "conv2d" and the 1x1
    # shortcut conv, though called on the input, "conv2d_1".
    cnn_bn = Model("cnn_bn", [6, 6, 2],
                   [conv2d("main", 4, 3, "same", "linear"), batch_norm("norm", 3),
                    simple("Activation", "relu", activation="relu"), conv2d("shortcut", 4, 1, "valid", "linear"),
                    simple("Add", "add"), simple("GlobalAveragePooling2D", "pool", data_format="channels_last",
                                                 keepdims=False),
                    dense("head", 3, "softmax")],
                   inbound={"main": ["input_layer"], "norm": ["main"], "relu": ["norm"], "shortcut": ["input_layer"],
                            "add": ["relu", "shortcut"], "pool": ["add"], "head": ["pool"]},
                   dtype_policies=True)

    for model, x in ((mlp, rng.normal(0, 1, (3, 8))), (cnn, rng.uniform(0, 1, (3, 8, 8, 1))),
                     (cnn_bn, rng.normal(0, 1, (3, 6, 6, 2)))):
        model.write_keras3(os.path.join(OUT, f"{model.name}.keras"))
        model.write_keras2(os.path.join(OUT, f"{model.name}.h5"), keras2_training if model is cnn else None)
        model.write_expected(os.path.join(OUT, f"{model.name}.expected.json"), x)
    mlp.write_keras2(os.path.join(OUT, "mlp.weights-only.h5"), weights_only=True)
    # Keras stores its entries; a zip tool may deflate them.
    rewrite_archive(os.path.join(OUT, "mlp.keras"), os.path.join(OUT, "mlp.deflated.keras"), method=zipfile.ZIP_DEFLATED)
    write_hostile()

    # A squeeze-and-excitation block (MobileNetV3, EfficientNet): the feature maps times a gate of
    # shape (1, 1, C), which Multiply broadcasts. Made last, so the fixtures above keep their bytes.
    se_cnn = Model("se_cnn", [6, 6, 2],
                   [conv2d("conv", 4, 3, "same", "relu"),
                    simple("GlobalAveragePooling2D", "squeeze", data_format="channels_last", keepdims=False),
                    dense("excite", 4, "sigmoid"), simple("Reshape", "gate", target_shape=[1, 1, 4]),
                    simple("Multiply", "scale"),
                    simple("GlobalAveragePooling2D", "pool", data_format="channels_last", keepdims=False),
                    dense("head", 3, "softmax")],
                   inbound={"conv": ["input_layer"], "squeeze": ["conv"], "excite": ["squeeze"], "gate": ["excite"],
                            "scale": ["conv", "gate"], "pool": ["scale"], "head": ["pool"]})
    se_cnn.write_keras3(os.path.join(OUT, "se_cnn.keras"))
    se_cnn.write_keras2(os.path.join(OUT, "se_cnn.h5"))
    se_cnn.write_expected(os.path.join(OUT, "se_cnn.expected.json"), rng.normal(0, 1, (3, 6, 6, 2)))


if __name__ == "__main__":
    main()
