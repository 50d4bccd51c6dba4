#include "config_fields.hpp"

#include "xtnn/layer.hpp"

namespace xtnn::config_fields {

std::string where(const std::string& class_name, const nlohmann::json& config) {
    std::string name = config.contains("name") && config["name"].is_string() ? config["name"].get<std::string>() : "";
    return class_name + (name.empty() ? "" : " '" + name + "'");
}

std::string initializer_field(const nlohmann::json& config, const char* key, const std::string& layer,
                              const std::string& fallback) {
    if (!config.contains(key) || config[key].is_null()) return fallback;
    const auto& value = config[key];
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("class_name") && value["class_name"].is_string()) {
        return snake_case(value["class_name"].get<std::string>());
    }
    throw ValueError("layer config of " + layer + ": field '" + key + "' must be a name, got " + json::excerpt(value));
}

Shape input_shape_field(const nlohmann::json& config, const std::string& layer) {
    nlohmann::json dims;
    bool has_batch_axis = false;
    for (const char* key : {"batch_input_shape", "batch_shape"}) {
        if (config.contains(key) && !config[key].is_null()) {
            dims = config[key];
            has_batch_axis = true;
        }
    }
    if (!has_batch_axis && config.contains("input_shape") && !config["input_shape"].is_null()) dims = config["input_shape"];
    if (dims.is_null()) return {};
    if (!dims.is_array() || dims.size() > max_rank + (has_batch_axis ? 1 : 0) || (has_batch_axis && dims.empty())) {
        throw ValueError("layer config of " + layer + ": input shape must be a list of at most " +
                         std::to_string(max_rank) + " extents, got " + json::excerpt(dims));
    }
    Shape shape;
    for (std::size_t i = has_batch_axis ? 1 : 0; i < dims.size(); ++i) {
        if (!dims[i].is_number_integer() || dims[i].get<std::int64_t>() <= 0 ||
            dims[i].get<std::int64_t>() > std::int64_t(max_units)) {
            throw ValueError("layer config of " + layer + ": input extents must be whole numbers in [1, " +
                             std::to_string(max_units) + "], got " + json::excerpt(dims));
        }
        shape.push_back(dims[i].get<std::size_t>());
    }
    return shape;
}

ops::Window2D window_field(const nlohmann::json& config, const char* key, const std::string& layer,
                           std::optional<ops::Window2D> fallback) {
    if (!config.contains(key) || config[key].is_null()) {
        if (fallback) return *fallback;
        throw ValueError("layer config of " + layer + ": missing required field '" + key + "'");
    }
    const auto& value = config[key];
    auto extent = [&](const nlohmann::json& v) {
        if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > std::int64_t(max_units)) {
            throw ValueError("layer config of " + layer + ": '" + key + "' must hold whole numbers in [1, " +
                             std::to_string(max_units) + "], got " + json::excerpt(value));
        }
        return v.get<std::size_t>();
    };
    if (value.is_array() && value.size() == 2) return {extent(value[0]), extent(value[1])};
    if (value.is_number()) return {extent(value), extent(value)};
    throw ValueError("layer config of " + layer + ": '" + key + "' must be a number or a pair, got " + json::excerpt(value));
}

nlohmann::json window_json(ops::Window2D window) { return nlohmann::json::array({window.height, window.width}); }

void require_channels_last(const nlohmann::json& config, const std::string& layer) {
    if (config.contains("data_format") && !config["data_format"].is_null() && config["data_format"] != "channels_last") {
        throw ValueError("layer config of " + layer + ": only data_format 'channels_last' is supported, got " +
                         json::excerpt(config["data_format"]));
    }
    if (config.contains("dilation_rate") && window_field(config, "dilation_rate", layer) != ops::Window2D{1, 1}) {
        throw ValueError("layer config of " + layer + ": dilation_rate other than 1 is not supported, got " +
                         json::excerpt(config["dilation_rate"]));
    }
}

void require_last_axis(const nlohmann::json& config, const std::string& layer, const Shape& input_shape) {
    if (!config.contains("axis") || config["axis"].is_null()) return;
    nlohmann::json axis = config["axis"];
    if (axis.is_array() && axis.size() == 1) axis = axis[0];
    const bool last = axis == -1 || (!input_shape.empty() && axis.is_number_integer() &&
                                     axis.get<std::int64_t>() == static_cast<std::int64_t>(input_shape.size()));
    const bool unknown_rank = input_shape.empty() && axis.is_number_integer() && axis.get<std::int64_t>() > 0;
    if (!last && !unknown_rank) {
        throw ValueError("layer config of " + layer + ": only the last axis (-1) can be normalized, got axis " +
                         json::excerpt(config["axis"]));
    }
}

}  // namespace xtnn::config_fields
