#include "xtnn/layers/core.hpp"

#include <cmath>

#include <fmt/format.h>

#include "config_fields.hpp"
#include "ops_sharded.hpp"
#include "xtnn/activations.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

using namespace config_fields;

InputLayer::InputLayer(Shape shape, std::string name) : Layer(optional_shape(shape)), shape_(std::move(shape)) {
    if (shape_.empty() || shape_.size() > max_rank) {
        throw ShapeError("Input: the shape must have between 1 and " + std::to_string(max_rank) +
                         " axes (batch axis excluded), got " + shape_to_string(shape_));
    }
    for (auto extent : shape_) {
        if (extent == 0 || extent > max_units) {
            throw ShapeError("Input: extents must be in [1, " + std::to_string(max_units) + "], got " + shape_to_string(shape_));
        }
    }
    checked_element_count(shape_, "Input: shape");
    set_name(std::move(name));
}

Tensor InputLayer::call(const Tensor& x, bool) {
    check_input(x);
    return x;
}

nlohmann::json InputLayer::config() const {
    nlohmann::json batch_shape = nlohmann::json::array({nullptr});
    for (auto extent : shape_) batch_shape.push_back(extent);
    return {{"batch_shape", batch_shape}, {"dtype", "float32"}, {"sparse", false}, {"name", name()}};
}

std::unique_ptr<Layer> InputLayer::from_config(const nlohmann::json& c) {
    const auto at = where("InputLayer", c);
    Shape shape = input_shape_field(c, at);
    if (shape.empty()) throw ValueError("layer config of " + at + ": no 'batch_shape' or 'batch_input_shape'");
    return std::make_unique<InputLayer>(std::move(shape));
}

SymbolicTensor Input(Shape shape, std::string name) {
    return Input(std::make_shared<InputLayer>(std::move(shape), std::move(name)));
}

SymbolicTensor Input(std::shared_ptr<InputLayer> layer) {
    if (!layer) throw ValueError("Input: null layer");
    if (!layer->built()) layer->build(layer->shape());
    auto call = std::make_shared<LayerCall>();
    call->layer = layer;
    call->output_shape = layer->shape();
    // Inputs come before any call made on them; serial 0 keeps them first in a sorted graph.
    call->serial = 0;
    return SymbolicTensor(std::move(call));
}

Dense::Dense(std::size_t units, std::string activation, Shape input_shape)
    : Dense(DenseOptions{.units = units, .activation = std::move(activation), .input_shape = std::move(input_shape)}) {}

Dense::Dense(DenseOptions options) : KernelLayer(std::move(options)) {
    if (options_.units == 0 || options_.units > max_units) {
        throw ValueError("Dense: units must be in [1, " + std::to_string(max_units) + "], got " +
                         std::to_string(options_.units));
    }
}

Shape Dense::output_shape(const Shape& input_shape) const {
    Shape output = input_shape;
    output.back() = options_.units;
    return output;
}

std::vector<Shape> Dense::weight_shapes(const Shape& input_shape) const {
    if (!options_.use_bias) return {{input_shape.back(), options_.units}};
    return {{input_shape.back(), options_.units}, {options_.units}};
}

Tensor Dense::apply_kernel(const Tensor& x) {
    check_input(x);
    if (x.dimension() == 2) {
        detail::Team* team = detail::current_team();
        if (team && x.shape()[0] == team->rows(detail::team_member()) &&
            detail::product_worth_sharding(*team, kernel_.shape()[0], kernel_.shape()[1])) {
            return detail::sharded_matmul(x, kernel_, *team, detail::team_member());
        }
        return ops::matmul(x, kernel_);
    }
    std::vector<std::ptrdiff_t> output_shape(x.shape().begin(), x.shape().end());
    output_shape.back() = static_cast<std::ptrdiff_t>(options_.units);
    const auto rows = static_cast<std::ptrdiff_t>(x.size() / x.shape().back());
    return ops::reshape(ops::matmul(ops::reshape(x, {rows, -1}), kernel_), output_shape);
}

nlohmann::json Dense::config() const {
    nlohmann::json config = kernel_config();
    config["units"] = options_.units;
    return config;
}

std::unique_ptr<Layer> Dense::from_config(const nlohmann::json& c) {
    const auto at = where("Dense", c);
    return std::make_unique<Dense>(DenseOptions{.units = field<std::size_t>(c, "units", at),
                                                .activation = field<std::string>(c, "activation", at, std::string("linear")),
                                                .use_bias = field<bool>(c, "use_bias", at, true),
                                                .kernel_initializer =
                                                    initializer_field(c, "kernel_initializer", at, "glorot_uniform"),
                                                .bias_initializer = initializer_field(c, "bias_initializer", at, "zeros"),
                                                .input_shape = input_shape_field(c, at)});
}

Dropout::Dropout(double rate, Shape input_shape) : Layer(optional_shape(input_shape)), rate_(rate) {
    if (!(rate >= 0.0 && rate < 1.0)) throw ValueError("Dropout: rate must be in [0, 1), got " + std::to_string(rate));
}

Tensor Dropout::call(const Tensor& x, bool training) {
    check_input(x);
    return ops::dropout(x, rate_, training, thread_generator(), batch_slice_first_row());
}

nlohmann::json Dropout::config() const {
    nlohmann::json config = Layer::config();
    config["rate"] = rate_;
    config["seed"] = nullptr;
    config["noise_shape"] = nullptr;
    return config;
}

std::unique_ptr<Layer> Dropout::from_config(const nlohmann::json& c) {
    const auto at = where("Dropout", c);
    return std::make_unique<Dropout>(field<double>(c, "rate", at), input_shape_field(c, at));
}

Rescaling::Rescaling(double scale, double offset, Shape input_shape)
    : Layer(optional_shape(input_shape)), scale_(scale), offset_(offset) {
    if (!std::isfinite(scale) || !std::isfinite(offset)) {
        throw ValueError(fmt::format("Rescaling: scale and offset must be finite numbers, got {} and {}", scale, offset));
    }
}

Tensor Rescaling::call(const Tensor& x, bool) {
    check_input(x);
    Tensor scaled = ops::scale(x, static_cast<float>(scale_));
    if (offset_ == 0.0) return scaled;
    return scaled + Tensor::constant(xt::xarray<float>(static_cast<float>(offset_)));
}

nlohmann::json Rescaling::config() const {
    nlohmann::json config = Layer::config();
    config["scale"] = scale_;
    config["offset"] = offset_;
    return config;
}

std::unique_ptr<Layer> Rescaling::from_config(const nlohmann::json& c) {
    const auto at = where("Rescaling", c);
    for (const char* key : {"scale", "offset"}) {
        if (c.contains(key) && c[key].is_array()) {
            throw ValueError("layer config of " + at + ": a list of " + key +
                             " values (one per channel) is not supported, only one number");
        }
    }
    return std::make_unique<Rescaling>(field<double>(c, "scale", at), field<double>(c, "offset", at, 0.0),
                                       input_shape_field(c, at));
}

Flatten::Flatten(Shape input_shape) : Layer(optional_shape(input_shape)) {}

Shape Flatten::output_shape(const Shape& input_shape) const {
    return {checked_element_count(input_shape, describe() + ": input shape")};
}

Tensor Flatten::call(const Tensor& x, bool) {
    check_input(x);
    return ops::flatten(x);
}

nlohmann::json Flatten::config() const {
    nlohmann::json config = Layer::config();
    config["data_format"] = "channels_last";
    return config;
}

std::unique_ptr<Layer> Flatten::from_config(const nlohmann::json& c) {
    return std::make_unique<Flatten>(input_shape_field(c, where("Flatten", c)));
}

Activation::Activation(std::string activation, Shape input_shape)
    : Layer(optional_shape(input_shape)), activation_(std::move(activation)) {
    get_activation(activation_);
}

Tensor Activation::call(const Tensor& x, bool) {
    check_input(x);
    return get_activation(activation_)(x);
}

SplitOutput Activation::call_split(const std::vector<Tensor>& inputs, bool) {
    if (inputs.size() != 1) throw ValueError(describe() + " takes one input, got " + std::to_string(inputs.size()));
    check_input(inputs[0]);
    return {inputs[0], activation_};
}

nlohmann::json Activation::config() const {
    nlohmann::json config = Layer::config();
    config["activation"] = activation_;
    return config;
}

std::unique_ptr<Layer> Activation::from_config(const nlohmann::json& c) {
    const auto at = where("Activation", c);
    return std::make_unique<Activation>(field<std::string>(c, "activation", at), input_shape_field(c, at));
}

namespace {

// Reshape's target: whole numbers, -1 for the one inferred extent.
std::vector<std::ptrdiff_t> target_shape_field(const nlohmann::json& config, const std::string& layer) {
    const std::string what = "layer config of " + layer + ": field 'target_shape'";
    if (!config.contains("target_shape") || !config["target_shape"].is_array() || config["target_shape"].size() > max_rank) {
        throw ValueError(what + " must be a list of at most " + std::to_string(max_rank) + " extents, got " +
                         (config.contains("target_shape") ? json::excerpt(config["target_shape"]) : "nothing"));
    }
    std::vector<std::ptrdiff_t> shape;
    for (const auto& extent : config["target_shape"]) {
        shape.push_back(extent == -1 ? -1 : static_cast<std::ptrdiff_t>(json::whole_number(extent, max_units, what + " extent")));
    }
    return shape;
}

}  // namespace

Reshape::Reshape(std::vector<std::ptrdiff_t> target_shape, Shape input_shape)
    : Layer(optional_shape(input_shape)), target_shape_(std::move(target_shape)) {
    std::size_t inferred = 0;
    for (auto extent : target_shape_) {
        if (extent == -1) ++inferred;
        if (extent == 0 || extent < -1 || extent > std::ptrdiff_t(max_units)) {
            throw ValueError("Reshape: target extents must be in [1, " + std::to_string(max_units) + "] or -1");
        }
    }
    if (target_shape_.empty() || target_shape_.size() > max_rank || inferred > 1) {
        throw ValueError("Reshape: the target shape needs 1 to " + std::to_string(max_rank) +
                         " extents, at most one of them -1");
    }
}

Shape Reshape::output_shape(const Shape& input_shape) const {
    const std::string layer = describe();
    const std::size_t total = checked_element_count(input_shape, layer + ": input shape");
    Shape known_extents;
    for (auto extent : target_shape_) known_extents.push_back(extent == -1 ? 1 : std::size_t(extent));
    const std::size_t known = checked_element_count(known_extents, layer + ": target shape");
    Shape output;
    for (auto extent : target_shape_) output.push_back(extent == -1 ? total / known : std::size_t(extent));
    std::size_t produced = 1;
    for (auto extent : output) produced *= extent;
    if (produced != total) {
        std::string target = "(";
        for (std::size_t i = 0; i < target_shape_.size(); ++i) target += (i ? ", " : "") + std::to_string(target_shape_[i]);
        throw ShapeError(layer + ": cannot reshape input " + batch_shape_to_string(input_shape) + " (" +
                         std::to_string(total) + " values) to " + target + ")");
    }
    return output;
}

Tensor Reshape::call(const Tensor& x, bool) {
    check_input(x);
    std::vector<std::ptrdiff_t> shape{static_cast<std::ptrdiff_t>(x.shape()[0])};
    for (auto extent : output_shape(input_shape())) shape.push_back(static_cast<std::ptrdiff_t>(extent));
    return ops::reshape(x, shape);
}

nlohmann::json Reshape::config() const {
    nlohmann::json config = Layer::config();
    config["target_shape"] = target_shape_;
    return config;
}

std::unique_ptr<Layer> Reshape::from_config(const nlohmann::json& c) {
    const auto at = where("Reshape", c);
    return std::make_unique<Reshape>(target_shape_field(c, at), input_shape_field(c, at));
}

}  // namespace xtnn
