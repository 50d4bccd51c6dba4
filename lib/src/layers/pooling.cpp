#include "xtnn/layers/pooling.hpp"

#include "config_fields.hpp"

namespace xtnn {

using namespace config_fields;

namespace {

Pooling2DOptions pooling_options(const nlohmann::json& c, const std::string& at) {
    require_channels_last(c, at);
    Pooling2DOptions options{.pool_size = window_field(c, "pool_size", at, ops::Window2D{2, 2}),
                             .padding = field<std::string>(c, "padding", at, std::string("valid")),
                             .input_shape = input_shape_field(c, at)};
    if (c.contains("strides") && !c["strides"].is_null()) options.strides = window_field(c, "strides", at);
    return options;
}

// The input shape of a global pooling config, whose other fields must be what xtnn computes.
Shape global_pooling_input_shape(const nlohmann::json& c, const std::string& class_name) {
    const auto at = where(class_name, c);
    require_channels_last(c, at);
    if (c.contains("keepdims") && c["keepdims"] == true) {
        throw ValueError("layer config of " + at + ": keepdims = true is not supported");
    }
    return input_shape_field(c, at);
}

Shape global_pooling_output_shape(const Layer& layer, const Shape& input_shape) {
    if (input_shape.size() != 3) {
        throw ShapeError(layer.class_name() + " '" + layer.name() + "': expected input of shape (height, width, channels), got " +
                         batch_shape_to_string(input_shape));
    }
    return {input_shape[2]};
}

}  // namespace

Pooling2D::Pooling2D(Kind kind, Pooling2DOptions options)
    : Layer(optional_shape(options.input_shape)),
      kind_(kind),
      options_(std::move(options)),
      strides_(options_.strides.value_or(options_.pool_size)),
      padding_(ops::padding_from_name(options_.padding)) {
    for (std::size_t extent : {options_.pool_size.height, options_.pool_size.width, strides_.height, strides_.width}) {
        if (extent == 0 || extent > max_units) {
            throw ValueError(class_name() + ": pool_size and strides must be in [1, " + std::to_string(max_units) + "]");
        }
    }
}

Shape Pooling2D::output_shape(const Shape& input_shape) const {
    const std::string op = describe();
    return ops::conv_output_shape(input_shape, 0, options_.pool_size, strides_, padding_, op.c_str());
}

Tensor Pooling2D::call(const Tensor& x, bool) {
    check_input(x);
    return kind_ == Kind::max ? ops::max_pool2d(x, options_.pool_size, strides_, padding_)
                              : ops::avg_pool2d(x, options_.pool_size, strides_, padding_);
}

nlohmann::json Pooling2D::config() const {
    nlohmann::json config = Layer::config();
    config["pool_size"] = window_json(options_.pool_size);
    config["strides"] = window_json(strides_);
    config["padding"] = options_.padding;
    config["data_format"] = "channels_last";
    return config;
}

std::unique_ptr<Layer> MaxPooling2D::from_config(const nlohmann::json& c) {
    return std::make_unique<MaxPooling2D>(pooling_options(c, where("MaxPooling2D", c)));
}

std::unique_ptr<Layer> AveragePooling2D::from_config(const nlohmann::json& c) {
    return std::make_unique<AveragePooling2D>(pooling_options(c, where("AveragePooling2D", c)));
}

GlobalAveragePooling2D::GlobalAveragePooling2D(Shape input_shape) : Layer(optional_shape(input_shape)) {}

Shape GlobalAveragePooling2D::output_shape(const Shape& input_shape) const {
    return global_pooling_output_shape(*this, input_shape);
}

Tensor GlobalAveragePooling2D::call(const Tensor& x, bool) {
    check_input(x);
    return ops::mean(ops::mean(x, 1, false), 1, false);
}

namespace {

nlohmann::json global_pooling_config(nlohmann::json config) {
    config["data_format"] = "channels_last";
    config["keepdims"] = false;
    return config;
}

}  // namespace

nlohmann::json GlobalAveragePooling2D::config() const { return global_pooling_config(Layer::config()); }

std::unique_ptr<Layer> GlobalAveragePooling2D::from_config(const nlohmann::json& c) {
    return std::make_unique<GlobalAveragePooling2D>(global_pooling_input_shape(c, "GlobalAveragePooling2D"));
}

GlobalMaxPooling2D::GlobalMaxPooling2D(Shape input_shape) : Layer(optional_shape(input_shape)) {}

Shape GlobalMaxPooling2D::output_shape(const Shape& input_shape) const { return global_pooling_output_shape(*this, input_shape); }

Tensor GlobalMaxPooling2D::call(const Tensor& x, bool) {
    check_input(x);
    const ops::Window2D whole_image{x.shape()[1], x.shape()[2]};
    const Tensor pooled = ops::max_pool2d(x, whole_image, whole_image);
    return ops::reshape(pooled, {static_cast<std::ptrdiff_t>(x.shape()[0]), static_cast<std::ptrdiff_t>(x.shape()[3])});
}

nlohmann::json GlobalMaxPooling2D::config() const { return global_pooling_config(Layer::config()); }

std::unique_ptr<Layer> GlobalMaxPooling2D::from_config(const nlohmann::json& c) {
    return std::make_unique<GlobalMaxPooling2D>(global_pooling_input_shape(c, "GlobalMaxPooling2D"));
}

}  // namespace xtnn
