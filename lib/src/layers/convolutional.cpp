#include "xtnn/layers/convolutional.hpp"

#include "config_fields.hpp"

namespace xtnn {

using namespace config_fields;

Conv2D::Conv2D(std::size_t filters, std::size_t kernel_size, std::size_t strides, std::string padding, std::string activation,
               Shape input_shape)
    : Conv2D(Conv2DOptions{.filters = filters,
                           .kernel_size = {kernel_size, kernel_size},
                           .strides = {strides, strides},
                           .padding = std::move(padding),
                           .activation = std::move(activation),
                           .input_shape = std::move(input_shape)}) {}

Conv2D::Conv2D(Conv2DOptions options) : KernelLayer(std::move(options)), padding_(ops::padding_from_name(options_.padding)) {
    if (options_.filters == 0 || options_.filters > max_units) {
        throw ValueError("Conv2D: filters must be in [1, " + std::to_string(max_units) + "], got " +
                         std::to_string(options_.filters));
    }
    for (std::size_t extent : {options_.kernel_size.height, options_.kernel_size.width, options_.strides.height,
                               options_.strides.width}) {
        if (extent == 0 || extent > max_units) {
            throw ValueError("Conv2D: kernel_size and strides must be in [1, " + std::to_string(max_units) + "]");
        }
    }
}

Shape Conv2D::output_shape(const Shape& input_shape) const {
    const std::string op = describe();
    return ops::conv_output_shape(input_shape, options_.filters, options_.kernel_size, options_.strides, padding_, op.c_str());
}

std::vector<Shape> Conv2D::weight_shapes(const Shape& input_shape) const {
    const std::size_t channels = input_shape.empty() ? 0 : input_shape.back();
    Shape kernel{options_.kernel_size.height, options_.kernel_size.width, channels, options_.filters};
    if (!options_.use_bias) return {kernel};
    return {kernel, {options_.filters}};
}

Tensor Conv2D::apply_kernel(const Tensor& x) {
    check_input(x);
    return ops::conv2d(x, kernel_, options_.strides, padding_);
}

Tensor Conv2D::apply_kernel_and_bias(const Tensor& x, bool relu) {
    check_input(x);
    return relu ? ops::conv2d_bias_relu(x, kernel_, bias_, options_.strides, padding_)
                : ops::conv2d_bias(x, kernel_, bias_, options_.strides, padding_);
}

Tensor Conv2D::convolve_then_normalize(const Tensor& x, const xt::xarray<float>& mean, const xt::xarray<float>& variance,
                                       const Tensor& gamma, const Tensor& beta, float epsilon, bool relu) {
    if (options_.activation != "linear") {
        throw ValueError(describe() + ": a batch normalization folds only into a convolution without activation, not '" +
                         options_.activation + "'");
    }
    check_input(x);
    return ops::conv2d_batch_norm_inference(x, kernel_, options_.use_bias ? &bias_ : nullptr, mean, variance, gamma, beta,
                                            epsilon, relu, options_.strides, padding_);
}

nlohmann::json Conv2D::config() const {
    nlohmann::json config = kernel_config();
    config["filters"] = options_.filters;
    config["kernel_size"] = window_json(options_.kernel_size);
    config["strides"] = window_json(options_.strides);
    config["padding"] = options_.padding;
    config["data_format"] = "channels_last";
    config["dilation_rate"] = window_json({1, 1});
    config["groups"] = 1;
    config["activity_regularizer"] = nullptr;
    return config;
}

std::unique_ptr<Layer> Conv2D::from_config(const nlohmann::json& c) {
    const auto at = where("Conv2D", c);
    require_channels_last(c, at);
    return std::make_unique<Conv2D>(
        Conv2DOptions{.filters = field<std::size_t>(c, "filters", at),
                      .kernel_size = window_field(c, "kernel_size", at),
                      .strides = window_field(c, "strides", at, ops::Window2D{1, 1}),
                      .padding = field<std::string>(c, "padding", at, std::string("valid")),
                      .activation = field<std::string>(c, "activation", at, std::string("linear")),
                      .use_bias = field<bool>(c, "use_bias", at, true),
                      .kernel_initializer = initializer_field(c, "kernel_initializer", at, "glorot_uniform"),
                      .bias_initializer = initializer_field(c, "bias_initializer", at, "zeros"),
                      .input_shape = input_shape_field(c, at)});
}

}  // namespace xtnn
