#pragma once
// Keras's own model files: the Keras 3 `.keras` zip (config.json, metadata.json,
// model.weights.h5), its `.weights.h5`, and the legacy Keras 2 / tf.keras HDF5 files (a full
// model or weights only). docs/keras-files.md describes the layouts and what is supported.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xtnn/model.hpp"
#include "xtnn/saving.hpp"

namespace xtnn::keras {

/// A model from a `.keras` archive; `what` names the file in errors.
Model load_archive(std::span<const std::uint8_t> bytes, const std::string& what, const LoadOptions& options);
/// A model from a Keras 2 full-model `.h5` file.
Model load_legacy_h5(std::span<const std::uint8_t> bytes, const std::string& what, const LoadOptions& options);
/// Replaces `model`'s weights with those of a `.keras` archive, a Keras 3 `.weights.h5` or a
/// Keras 2 `.h5` (full model or weights only); nothing changes unless all of them fit.
void load_weights(Model& model, std::span<const std::uint8_t> bytes, const std::string& what);

/// The `.keras` archive of `model`, as Keras 3's saving library writes it.
std::vector<std::uint8_t> archive_bytes(Model& model);
/// The `.weights.h5` file of `model` (Keras 3's layout).
std::vector<std::uint8_t> weights_h5_bytes(const Model& model);

/// The layers in the order Keras's `model.layers` lists them, which is the order its saving
/// library numbers them in: a Sequential's layers without its InputLayer; a functional model's
/// layers by depth from the outputs, ties in the order a walk back from the outputs meets them.
std::vector<std::shared_ptr<Layer>> saving_order(const Model& model);

/// The HDF5 path of each layer's variables in a Keras 3 weights file, in saving_order():
/// "layers/dense", "layers/dense_1", "layers/conv2d", ...
std::vector<std::string> layer_paths(const std::vector<std::shared_ptr<Layer>>& layers);

}  // namespace xtnn::keras
