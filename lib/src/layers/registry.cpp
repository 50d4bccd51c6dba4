// Keras class names to config readers: one line a layer.

#include <functional>
#include <set>

#include "config_fields.hpp"
#include "xtnn/layers.hpp"
#include "xtnn/registry.hpp"

namespace xtnn {

namespace {

using LayerReader = std::function<std::unique_ptr<Layer>(const nlohmann::json&)>;

const Registry<LayerReader>& layer_readers() {
    static const Registry<LayerReader> registry("layer", {
                                                             {"Activation", &Activation::from_config},
                                                             {"Add", &Add::from_config},
                                                             {"Average", &Average::from_config},
                                                             {"AveragePooling2D", &AveragePooling2D::from_config},
                                                             {"BatchNormalization", &BatchNormalization::from_config},
                                                             {"Concatenate", &Concatenate::from_config},
                                                             {"Conv2D", &Conv2D::from_config},
                                                             {"Dense", &Dense::from_config},
                                                             {"Dropout", &Dropout::from_config},
                                                             {"Flatten", &Flatten::from_config},
                                                             {"GlobalAveragePooling2D", &GlobalAveragePooling2D::from_config},
                                                             {"GlobalMaxPooling2D", &GlobalMaxPooling2D::from_config},
                                                             {"InputLayer", &InputLayer::from_config},
                                                             {"LayerNormalization", &LayerNormalization::from_config},
                                                             {"MaxPooling2D", &MaxPooling2D::from_config},
                                                             {"Maximum", &Maximum::from_config},
                                                             {"Minimum", &Minimum::from_config},
                                                             {"Multiply", &Multiply::from_config},
                                                             {"Rescaling", &Rescaling::from_config},
                                                             {"Reshape", &Reshape::from_config},
                                                             {"Subtract", &Subtract::from_config},
                                                         });
    return registry;
}

// Keras's "dtype": a name ("float32") or, from Keras 3.4, a DTypePolicy object holding one. xtnn
// computes in float32; the mixed policies keep float32 variables, so their weights run as they are.
void require_float32(const nlohmann::json& config, const std::string& class_name) {
    if (!config.contains("dtype") || config["dtype"].is_null()) return;
    const auto& dtype = config["dtype"];
    const nlohmann::json* name = &dtype;
    if (dtype.is_object() && dtype.contains("config") && dtype["config"].is_object() && dtype["config"].contains("name")) {
        name = &dtype["config"]["name"];
    }
    static const std::set<std::string> supported = {"float32", "mixed_float16", "mixed_bfloat16"};
    if (!name->is_string() || !supported.count(name->get<std::string>())) {
        throw ValueError("layer config of " + config_fields::where(class_name, config) + ": dtype " + json::excerpt(dtype) +
                         " is not supported; xtnn computes in float32 (supported: float32, mixed_float16, mixed_bfloat16)");
    }
}

}  // namespace

std::unique_ptr<Layer> make_layer(const std::string& class_name, const nlohmann::json& config) {
    json::require_depth(config, "layer config of " + class_name);
    if (!config.is_object()) throw ValueError("layer config of " + class_name + " must be a JSON object, got " + json::excerpt(config));
    // Accept Keras's class names and the snake_case names users type ("dense").
    std::string key = class_name;
    for (const auto& known : layer_readers().names()) {
        if (snake_case(known) == class_name) key = known;
    }
    require_float32(config, key);
    std::unique_ptr<Layer> layer;
    try {
        layer = layer_readers().get(key)(config);
    } catch (const nlohmann::json::exception& e) {
        throw ValueError("layer config of " + config_fields::where(key, config) + ": " + e.what());
    }
    if (config.contains("name")) {
        if (!config["name"].is_string()) throw ValueError("layer config of " + key + ": 'name' must be a string");
        layer->set_name(config["name"].get<std::string>());
    }
    if (config.contains("trainable")) {
        if (!config["trainable"].is_boolean()) {
            throw ValueError("layer config of " + config_fields::where(key, config) +
                             ": 'trainable' must be true or false, got " + json::excerpt(config["trainable"]));
        }
        layer->trainable = config["trainable"].get<bool>();
    }
    return layer;
}

std::vector<std::string> layer_names() { return layer_readers().names(); }

std::optional<Shape> input_shape_from_config(const nlohmann::json& config) {
    return config_fields::optional_shape(config_fields::input_shape_field(config, "InputLayer"));
}

}  // namespace xtnn
