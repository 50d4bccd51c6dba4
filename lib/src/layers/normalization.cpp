#include "xtnn/layers/normalization.hpp"

#include <cmath>

#include <fmt/format.h>

#include "config_fields.hpp"
#include "xtnn/initializers.hpp"
#include "xtnn/layers/convolutional.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

using namespace config_fields;

namespace {

void require_epsilon(const char* layer, double epsilon) {
    if (!(epsilon > 0.0) || !std::isfinite(epsilon)) {
        throw ValueError(fmt::format("{}: epsilon must be positive and finite, got {}", layer, epsilon));
    }
}

}  // namespace

BatchNormalization::BatchNormalization(BatchNormalizationOptions options)
    : Layer(optional_shape(options.input_shape)), options_(std::move(options)) {
    if (!(options_.momentum >= 0.0 && options_.momentum <= 1.0)) {
        throw ValueError(fmt::format("BatchNormalization: momentum must be in [0, 1], got {}", options_.momentum));
    }
    require_epsilon("BatchNormalization", options_.epsilon);
    for (const auto& name : {options_.beta_initializer, options_.gamma_initializer, options_.moving_mean_initializer,
                             options_.moving_variance_initializer}) {
        require_initializer(name);
    }
}

std::vector<Shape> BatchNormalization::weight_shapes(const Shape& input_shape) const {
    const Shape channels{input_shape.back()};
    std::vector<Shape> shapes;
    if (options_.scale) shapes.push_back(channels);
    if (options_.center) shapes.push_back(channels);
    shapes.push_back(channels);
    shapes.push_back(channels);
    return shapes;
}

void BatchNormalization::build_weights(const Shape& input_shape, Generator& generator) {
    const Shape channels{input_shape.back()};
    // Without scale or center, gamma and beta are fixed ones and zeros that are not weights.
    gamma_ = options_.scale ? add_weight("gamma", initialize(options_.gamma_initializer, channels, generator))
                            : Tensor::constant(xt::ones<float>(channels));
    beta_ = options_.center ? add_weight("beta", initialize(options_.beta_initializer, channels, generator))
                            : Tensor::constant(xt::zeros<float>(channels));
    moving_mean_ = add_weight("moving_mean", initialize(options_.moving_mean_initializer, channels, generator), false);
    moving_variance_ =
        add_weight("moving_variance", initialize(options_.moving_variance_initializer, channels, generator), false);
}

Tensor BatchNormalization::call(const Tensor& x, bool training) { return normalize(x, training, false); }

Tensor BatchNormalization::call_then_relu(const std::vector<Tensor>& inputs, bool training) {
    if (inputs.size() != 1) throw ValueError(describe() + " takes one input, got " + std::to_string(inputs.size()));
    return normalize(inputs[0], training, true);
}

Tensor BatchNormalization::normalize(const Tensor& x, bool training, bool relu) {
    check_input(x);
    const auto epsilon = static_cast<float>(options_.epsilon);
    if (!training || !trainable) {
        const auto& mean = moving_mean_.value();
        const auto& variance = moving_variance_.value();
        return relu ? ops::batch_norm_inference_relu(x, mean, variance, gamma_, beta_, epsilon)
                    : ops::batch_norm_inference(x, mean, variance, gamma_, beta_, epsilon);
    }
    xt::xarray<float> batch_mean, batch_variance;
    Tensor y = relu ? ops::batch_norm_relu(x, gamma_, beta_, epsilon, batch_mean, batch_variance)
                    : ops::batch_norm(x, gamma_, beta_, epsilon, batch_mean, batch_variance);
    const auto momentum = static_cast<float>(options_.momentum);
    float* mean = moving_mean_.mutable_value().data();
    float* variance = moving_variance_.mutable_value().data();
    for (std::size_t c = 0; c < batch_mean.size(); ++c) {
        mean[c] = mean[c] * momentum + batch_mean(c) * (1.0f - momentum);
        variance[c] = variance[c] * momentum + batch_variance(c) * (1.0f - momentum);
    }
    return y;
}

Tensor BatchNormalization::call_after_convolution(const Tensor& x, Conv2D& convolution, bool relu) const {
    return convolution.convolve_then_normalize(x, moving_mean_.value(), moving_variance_.value(), gamma_, beta_,
                                               static_cast<float>(options_.epsilon), relu);
}

nlohmann::json BatchNormalization::config() const {
    nlohmann::json config = Layer::config();
    config["axis"] = -1;
    config["momentum"] = options_.momentum;
    config["epsilon"] = options_.epsilon;
    config["center"] = options_.center;
    config["scale"] = options_.scale;
    config["beta_initializer"] = initializer_config(options_.beta_initializer);
    config["gamma_initializer"] = initializer_config(options_.gamma_initializer);
    config["moving_mean_initializer"] = initializer_config(options_.moving_mean_initializer);
    config["moving_variance_initializer"] = initializer_config(options_.moving_variance_initializer);
    for (const char* unset : {"beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"}) config[unset] = nullptr;
    config["synchronized"] = false;
    return config;
}

std::unique_ptr<Layer> BatchNormalization::from_config(const nlohmann::json& c) {
    const auto at = where("BatchNormalization", c);
    const Shape input_shape = input_shape_field(c, at);
    require_last_axis(c, at, input_shape);
    return std::make_unique<BatchNormalization>(BatchNormalizationOptions{
        .momentum = field<double>(c, "momentum", at, 0.99),
        .epsilon = field<double>(c, "epsilon", at, 1e-3),
        .center = field<bool>(c, "center", at, true),
        .scale = field<bool>(c, "scale", at, true),
        .beta_initializer = initializer_field(c, "beta_initializer", at, "zeros"),
        .gamma_initializer = initializer_field(c, "gamma_initializer", at, "ones"),
        .moving_mean_initializer = initializer_field(c, "moving_mean_initializer", at, "zeros"),
        .moving_variance_initializer = initializer_field(c, "moving_variance_initializer", at, "ones"),
        .input_shape = input_shape});
}

LayerNormalization::LayerNormalization(LayerNormalizationOptions options)
    : Layer(optional_shape(options.input_shape)), options_(std::move(options)) {
    require_epsilon("LayerNormalization", options_.epsilon);
    require_initializer(options_.beta_initializer);
    require_initializer(options_.gamma_initializer);
}

std::vector<Shape> LayerNormalization::weight_shapes(const Shape& input_shape) const {
    const Shape features{input_shape.back()};
    std::vector<Shape> shapes;
    if (options_.scale) shapes.push_back(features);
    if (options_.center) shapes.push_back(features);
    return shapes;
}

void LayerNormalization::build_weights(const Shape& input_shape, Generator& generator) {
    const Shape features{input_shape.back()};
    gamma_ = options_.scale ? add_weight("gamma", initialize(options_.gamma_initializer, features, generator))
                            : Tensor::constant(xt::ones<float>(features));
    beta_ = options_.center ? add_weight("beta", initialize(options_.beta_initializer, features, generator))
                            : Tensor::constant(xt::zeros<float>(features));
}

Tensor LayerNormalization::call(const Tensor& x, bool) {
    check_input(x);
    return ops::layer_norm(x, gamma_, beta_, static_cast<float>(options_.epsilon));
}

nlohmann::json LayerNormalization::config() const {
    nlohmann::json config = Layer::config();
    config["axis"] = -1;
    config["epsilon"] = options_.epsilon;
    config["center"] = options_.center;
    config["scale"] = options_.scale;
    config["rms_scaling"] = false;
    config["beta_initializer"] = initializer_config(options_.beta_initializer);
    config["gamma_initializer"] = initializer_config(options_.gamma_initializer);
    for (const char* unset : {"beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"}) config[unset] = nullptr;
    return config;
}

std::unique_ptr<Layer> LayerNormalization::from_config(const nlohmann::json& c) {
    const auto at = where("LayerNormalization", c);
    const Shape input_shape = input_shape_field(c, at);
    require_last_axis(c, at, input_shape);
    if (field<bool>(c, "rms_scaling", at, false)) throw ValueError("layer config of " + at + ": rms_scaling = true is not supported");
    return std::make_unique<LayerNormalization>(
        LayerNormalizationOptions{.epsilon = field<double>(c, "epsilon", at, 1e-3),
                                  .center = field<bool>(c, "center", at, true),
                                  .scale = field<bool>(c, "scale", at, true),
                                  .beta_initializer = initializer_field(c, "beta_initializer", at, "zeros"),
                                  .gamma_initializer = initializer_field(c, "gamma_initializer", at, "ones"),
                                  .input_shape = input_shape});
}

}  // namespace xtnn
