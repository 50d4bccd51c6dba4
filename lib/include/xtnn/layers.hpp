#pragma once
// Every layer, and layers by name. One header a family (xtnn/layers/*.hpp), one source file a
// family (lib/src/layers/*.cpp); lib/src/layers/registry.cpp maps Keras class names to readers.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layer.hpp"
#include "xtnn/layers/convolutional.hpp"
#include "xtnn/layers/core.hpp"
#include "xtnn/layers/merging.hpp"
#include "xtnn/layers/normalization.hpp"
#include "xtnn/layers/pooling.hpp"

namespace xtnn {

/// A layer from its class name ("Dense" or "dense") and Keras-style config.
std::unique_ptr<Layer> make_layer(const std::string& class_name, const nlohmann::json& config);
std::vector<std::string> layer_names();

/// The input shape a layer config declares (batch_input_shape, batch_shape or input_shape).
std::optional<Shape> input_shape_from_config(const nlohmann::json& config);

}  // namespace xtnn
