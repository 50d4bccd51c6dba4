#pragma once
// Reading layer configs: each field checked, with errors that name the layer and the field.
// Private to the layers' sources.

#include <cstddef>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "xtnn/error.hpp"
#include "xtnn/json.hpp"
#include "xtnn/ops.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn::config_fields {

// Caps that keep a hostile config from asking for absurd allocations.
inline constexpr std::size_t max_units = std::size_t(1) << 24;
inline constexpr std::size_t max_rank = 8;

inline std::optional<Shape> optional_shape(const Shape& shape) {
    return shape.empty() ? std::nullopt : std::optional<Shape>(shape);
}

/// "Dense 'dense_1'": the class and, when the config has one, the name.
std::string where(const std::string& class_name, const nlohmann::json& config);

template <class T>
T field(const nlohmann::json& config, const char* key, const std::string& layer, std::optional<T> fallback = {}) {
    if (!config.contains(key) || config[key].is_null()) {
        if (fallback) return *fallback;
        throw ValueError("layer config of " + layer + ": missing required field '" + key + "'");
    }
    if constexpr (std::is_same_v<T, std::size_t>) {
        return json::whole_number(config[key], max_units, "layer config of " + layer + ": field '" + key + "'");
    } else {
        try {
            return config[key].get<T>();
        } catch (const nlohmann::json::exception&) {
            throw ValueError("layer config of " + layer + ": field '" + key + "' has the wrong type (" +
                             json::excerpt(config[key]) + ")");
        }
    }
}

/// Keras writes initialisers either as a name or as {"class_name": "GlorotUniform", ...}.
std::string initializer_field(const nlohmann::json& config, const char* key, const std::string& layer,
                              const std::string& fallback);

/// The input shape of a layer config: batch_input_shape / batch_shape [null, ...] or input_shape
/// [...]; empty when the config names none.
Shape input_shape_field(const nlohmann::json& config, const std::string& layer);

/// Keras writes window sizes and strides as one number or a pair: 3 or [3, 3].
ops::Window2D window_field(const nlohmann::json& config, const char* key, const std::string& layer,
                           std::optional<ops::Window2D> fallback = {});
nlohmann::json window_json(ops::Window2D window);

/// Only channels-last images and undilated windows exist here; a config asking otherwise is refused.
void require_channels_last(const nlohmann::json& config, const std::string& layer);

/// Normalization layers work on the last axis only: Keras writes it as -1 (Keras 3), as the
/// axis's index counting the batch axis, or as a one-element list of either (Keras 2).
void require_last_axis(const nlohmann::json& config, const std::string& layer, const Shape& input_shape);

}  // namespace xtnn::config_fields
