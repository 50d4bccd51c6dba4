#include "xtnn/layers.hpp"

#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

#include "xtnn/activations.hpp"
#include "xtnn/initializers.hpp"
#include "xtnn/json.hpp"
#include "xtnn/ops.hpp"
#include "xtnn/random.hpp"
#include "xtnn/registry.hpp"

namespace xtnn {

namespace {

// Caps that keep a hostile config from asking for absurd allocations.
constexpr std::size_t max_units = std::size_t(1) << 24;
constexpr std::size_t max_rank = 8;

std::optional<Shape> optional_shape(const Shape& shape) {
    return shape.empty() ? std::nullopt : std::optional<Shape>(shape);
}

std::string where(const std::string& class_name, const nlohmann::json& config) {
    std::string name = config.contains("name") && config["name"].is_string() ? config["name"].get<std::string>() : "";
    return class_name + (name.empty() ? "" : " '" + name + "'");
}

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

// Keras writes initialisers either as a name or as {"class_name": "GlorotUniform", ...}.
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

// The input shape of a layer config: Keras 2's batch_input_shape [null, ...] or input_shape [...].
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

// Keras writes window sizes and strides as one number or a pair: 3 or [3, 3].
ops::Window2D window_field(const nlohmann::json& config, const char* key, const std::string& layer,
                           std::optional<ops::Window2D> fallback = {}) {
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

// Only channels-last images and undilated windows exist here; a config asking otherwise is refused.
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

nlohmann::json window_json(ops::Window2D window) { return nlohmann::json::array({window.height, window.width}); }

}  // namespace

std::string snake_case(const std::string& class_name) {
    // Keras's rule: an underscore before a capital that starts a word (followed by a lower-case
    // letter) or follows a lower-case letter; so "Conv2D" -> "conv2d", "MaxPooling2D" -> "max_pooling2d".
    std::string result;
    for (std::size_t i = 0; i < class_name.size(); ++i) {
        const auto c = static_cast<unsigned char>(class_name[i]);
        if (std::isupper(c) && i > 0 && class_name[i - 1] != '_') {
            const bool starts_word = i + 1 < class_name.size() && std::islower(static_cast<unsigned char>(class_name[i + 1]));
            const bool after_lower = std::islower(static_cast<unsigned char>(class_name[i - 1]));
            if (starts_word || after_lower) result += '_';
        }
        result += static_cast<char>(std::tolower(c));
    }
    return result;
}

void Layer::build(const Shape& input_shape, Generator& generator) {
    const std::string layer = class_name() + " '" + name_ + "'";
    if (input_shape.empty() || input_shape.size() > max_rank) {
        throw ShapeError(layer + ": input shape " + shape_to_string(input_shape) + " must have between 1 and " +
                         std::to_string(max_rank) + " axes (batch axis excluded)");
    }
    // Every size this layer will allocate is checked before the first allocation.
    checked_element_count(input_shape, layer + ": input shape");
    checked_element_count(output_shape(input_shape), layer + ": output shape");
    for (const auto& shape : weight_shapes(input_shape)) checked_element_count(shape, layer + ": weight shape");
    build_weights(input_shape, generator);
    input_shape_ = input_shape;
}

const Shape& Layer::input_shape() const {
    if (!input_shape_) throw ValueError(class_name() + " '" + name_ + "' is not built yet");
    return *input_shape_;
}

Tensor Layer::add_weight(std::string name, xt::xarray<float> value, bool trainable_weight) {
    Tensor tensor = trainable_weight ? Tensor::parameter(std::move(value)) : Tensor::constant(std::move(value));
    weights_.push_back({std::move(name), tensor, trainable_weight});
    return tensor;
}

std::vector<Tensor> Layer::weights() const {
    std::vector<Tensor> all;
    for (const auto& weight : weights_) all.push_back(weight.tensor);
    return all;
}

std::vector<std::string> Layer::weight_names() const {
    std::vector<std::string> names;
    for (const auto& weight : weights_) names.push_back(weight.name);
    return names;
}

std::vector<Tensor> Layer::trainable_weights() const {
    std::vector<Tensor> selected;
    for (const auto& weight : weights_) {
        if (trainable && weight.trainable) selected.push_back(weight.tensor);
    }
    return selected;
}

std::vector<Tensor> Layer::non_trainable_weights() const {
    std::vector<Tensor> selected;
    for (const auto& weight : weights_) {
        if (!(trainable && weight.trainable)) selected.push_back(weight.tensor);
    }
    return selected;
}

void Layer::prepare_gradients() {
    for (auto& weight : weights_) weight.tensor.node()->requires_grad = trainable && weight.trainable;
}

std::size_t Layer::count_params() const {
    std::size_t total = 0;
    for (const auto& w : weights_) total += w.tensor.size();
    return total;
}

std::size_t Layer::count_trainable_params() const {
    std::size_t total = 0;
    for (const auto& w : trainable_weights()) total += w.size();
    return total;
}

nlohmann::json Layer::config() const {
    nlohmann::json config = {{"name", name_}, {"trainable", trainable}, {"dtype", "float32"}};
    if (declared_input_shape_) {
        nlohmann::json batch_shape = nlohmann::json::array({nullptr});
        for (auto extent : *declared_input_shape_) batch_shape.push_back(extent);
        config["batch_input_shape"] = batch_shape;
    }
    return config;
}

void Layer::check_input(const Tensor& x) const {
    const Shape& expected = input_shape();
    const bool matches = x.dimension() == expected.size() + 1 &&
                         std::equal(expected.begin(), expected.end(), x.shape().begin() + 1);
    if (!matches) {
        throw ShapeError(class_name() + " '" + name_ + "': expected input of shape " + batch_shape_to_string(expected) + ", got " +
                         shape_to_string(x.shape()));
    }
}

template <class Options>
KernelLayer<Options>::KernelLayer(Options options) : Layer(optional_shape(options.input_shape)), options_(std::move(options)) {
    get_activation(options_.activation);
    require_initializer(options_.kernel_initializer);
    require_initializer(options_.bias_initializer);
}

template <class Options>
void KernelLayer<Options>::build_weights(const Shape& input_shape, Generator& generator) {
    const auto shapes = weight_shapes(input_shape);
    kernel_ = add_weight("kernel", initialize(options_.kernel_initializer, shapes[0], generator));
    if (options_.use_bias) bias_ = add_weight("bias", initialize(options_.bias_initializer, shapes[1], generator));
}

template <class Options>
Tensor KernelLayer<Options>::call_before_activation(const Tensor& x, bool) {
    Tensor product = apply_kernel(x);
    return options_.use_bias ? ops::bias_add(product, bias_) : product;
}

template <class Options>
Tensor KernelLayer<Options>::call(const Tensor& x, bool training) {
    if (options_.use_bias && options_.activation == "relu") return ops::bias_relu(apply_kernel(x), bias_);
    return get_activation(options_.activation)(call_before_activation(x, training));
}

template <class Options>
nlohmann::json KernelLayer<Options>::kernel_config() const {
    nlohmann::json config = Layer::config();
    config["activation"] = options_.activation;
    config["use_bias"] = options_.use_bias;
    config["kernel_initializer"] = options_.kernel_initializer;
    config["bias_initializer"] = options_.bias_initializer;
    return config;
}

template class KernelLayer<DenseOptions>;
template class KernelLayer<Conv2DOptions>;

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
    if (x.dimension() == 2) return ops::matmul(x, kernel_);
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

Dropout::Dropout(double rate, Shape input_shape) : Layer(optional_shape(input_shape)), rate_(rate) {
    if (!(rate >= 0.0 && rate < 1.0)) throw ValueError("Dropout: rate must be in [0, 1), got " + std::to_string(rate));
}

Tensor Dropout::call(const Tensor& x, bool training) {
    check_input(x);
    return ops::dropout(x, rate_, training, thread_generator());
}

nlohmann::json Dropout::config() const {
    nlohmann::json config = Layer::config();
    config["rate"] = rate_;
    return config;
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

Flatten::Flatten(Shape input_shape) : Layer(optional_shape(input_shape)) {}

Shape Flatten::output_shape(const Shape& input_shape) const {
    return {checked_element_count(input_shape, "Flatten '" + name() + "': input shape")};
}

Tensor Flatten::call(const Tensor& x, bool) {
    check_input(x);
    return ops::flatten(x);
}

Activation::Activation(std::string activation, Shape input_shape)
    : Layer(optional_shape(input_shape)), activation_(std::move(activation)) {
    get_activation(activation_);
}

Tensor Activation::call(const Tensor& x, bool) {
    check_input(x);
    return get_activation(activation_)(x);
}

nlohmann::json Activation::config() const {
    nlohmann::json config = Layer::config();
    config["activation"] = activation_;
    return config;
}

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
    const std::string op = "Conv2D '" + name() + "'";
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

nlohmann::json Conv2D::config() const {
    nlohmann::json config = kernel_config();
    config["filters"] = options_.filters;
    config["kernel_size"] = window_json(options_.kernel_size);
    config["strides"] = window_json(options_.strides);
    config["padding"] = options_.padding;
    config["data_format"] = "channels_last";
    config["dilation_rate"] = window_json({1, 1});
    return config;
}

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
    const std::string op = class_name() + " '" + name() + "'";
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

GlobalAveragePooling2D::GlobalAveragePooling2D(Shape input_shape) : Layer(optional_shape(input_shape)) {}

namespace {

Shape global_pooling_output_shape(const Layer& layer, const Shape& input_shape) {
    if (input_shape.size() != 3) {
        throw ShapeError(layer.class_name() + " '" + layer.name() + "': expected input of shape (height, width, channels), got " +
                         batch_shape_to_string(input_shape));
    }
    return {input_shape[2]};
}

}  // namespace

Shape GlobalAveragePooling2D::output_shape(const Shape& input_shape) const {
    return global_pooling_output_shape(*this, input_shape);
}

Tensor GlobalAveragePooling2D::call(const Tensor& x, bool) {
    check_input(x);
    return ops::mean(ops::mean(x, 1, false), 1, false);
}

GlobalMaxPooling2D::GlobalMaxPooling2D(Shape input_shape) : Layer(optional_shape(input_shape)) {}

Shape GlobalMaxPooling2D::output_shape(const Shape& input_shape) const { return global_pooling_output_shape(*this, input_shape); }

Tensor GlobalMaxPooling2D::call(const Tensor& x, bool) {
    check_input(x);
    const ops::Window2D whole_image{x.shape()[1], x.shape()[2]};
    const Tensor pooled = ops::max_pool2d(x, whole_image, whole_image);
    return ops::reshape(pooled, {static_cast<std::ptrdiff_t>(x.shape()[0]), static_cast<std::ptrdiff_t>(x.shape()[3])});
}

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
    const std::string layer = "Reshape '" + name() + "'";
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
        throw ShapeError("Reshape '" + name() + "': cannot reshape input " + batch_shape_to_string(input_shape) + " (" +
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

BatchNormalization::BatchNormalization(BatchNormalizationOptions options)
    : Layer(optional_shape(options.input_shape)), options_(std::move(options)) {
    if (!(options_.momentum >= 0.0 && options_.momentum <= 1.0)) {
        throw ValueError(fmt::format("BatchNormalization: momentum must be in [0, 1], got {}", options_.momentum));
    }
    if (!(options_.epsilon > 0.0) || !std::isfinite(options_.epsilon)) {
        throw ValueError(fmt::format("BatchNormalization: epsilon must be positive and finite, got {}", options_.epsilon));
    }
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

Tensor BatchNormalization::call(const Tensor& x, bool training) {
    check_input(x);
    const auto epsilon = static_cast<float>(options_.epsilon);
    if (!training || !trainable) {
        return ops::batch_norm_inference(x, moving_mean_.value(), moving_variance_.value(), gamma_, beta_, epsilon);
    }
    xt::xarray<float> batch_mean, batch_variance;
    Tensor y = ops::batch_norm(x, gamma_, beta_, epsilon, batch_mean, batch_variance);
    const auto momentum = static_cast<float>(options_.momentum);
    float* mean = moving_mean_.mutable_value().data();
    float* variance = moving_variance_.mutable_value().data();
    for (std::size_t c = 0; c < batch_mean.size(); ++c) {
        mean[c] = mean[c] * momentum + batch_mean(c) * (1.0f - momentum);
        variance[c] = variance[c] * momentum + batch_variance(c) * (1.0f - momentum);
    }
    return y;
}

nlohmann::json BatchNormalization::config() const {
    nlohmann::json config = Layer::config();
    config["axis"] = -1;
    config["momentum"] = options_.momentum;
    config["epsilon"] = options_.epsilon;
    config["center"] = options_.center;
    config["scale"] = options_.scale;
    config["beta_initializer"] = options_.beta_initializer;
    config["gamma_initializer"] = options_.gamma_initializer;
    config["moving_mean_initializer"] = options_.moving_mean_initializer;
    config["moving_variance_initializer"] = options_.moving_variance_initializer;
    return config;
}

namespace {

// BatchNormalization normalizes the last axis only: Keras writes it as -1 (Keras 3), as the
// axis's index counting the batch axis, or as a one-element list of either (Keras 2).
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

}  // namespace

namespace {

using LayerFactory = std::function<std::unique_ptr<Layer>(const nlohmann::json&)>;

Pooling2DOptions pooling_options(const nlohmann::json& c, const std::string& at) {
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

const Registry<LayerFactory>& layer_factories() {
    static const Registry<LayerFactory> registry(
        "layer",
        {
            {"Dense",
             [](const nlohmann::json& c) {
                 const auto at = where("Dense", c);
                 return std::make_unique<Dense>(DenseOptions{
                     .units = field<std::size_t>(c, "units", at),
                     .activation = field<std::string>(c, "activation", at, std::string("linear")),
                     .use_bias = field<bool>(c, "use_bias", at, true),
                     .kernel_initializer = initializer_field(c, "kernel_initializer", at, "glorot_uniform"),
                     .bias_initializer = initializer_field(c, "bias_initializer", at, "zeros"),
                     .input_shape = input_shape_field(c, at)});
             }},
            {"Dropout",
             [](const nlohmann::json& c) {
                 const auto at = where("Dropout", c);
                 return std::make_unique<Dropout>(field<double>(c, "rate", at), input_shape_field(c, at));
             }},
            {"Rescaling",
             [](const nlohmann::json& c) {
                 const auto at = where("Rescaling", c);
                 for (const char* key : {"scale", "offset"}) {
                     if (c.contains(key) && c[key].is_array()) {
                         throw ValueError("layer config of " + at + ": a list of " + key +
                                          " values (one per channel) is not supported, only one number");
                     }
                 }
                 return std::make_unique<Rescaling>(field<double>(c, "scale", at), field<double>(c, "offset", at, 0.0),
                                                    input_shape_field(c, at));
             }},
            {"Flatten",
             [](const nlohmann::json& c) { return std::make_unique<Flatten>(input_shape_field(c, where("Flatten", c))); }},
            {"Activation",
             [](const nlohmann::json& c) {
                 const auto at = where("Activation", c);
                 return std::make_unique<Activation>(field<std::string>(c, "activation", at), input_shape_field(c, at));
             }},
            {"Conv2D",
             [](const nlohmann::json& c) {
                 const auto at = where("Conv2D", c);
                 require_channels_last(c, at);
                 return std::make_unique<Conv2D>(Conv2DOptions{
                     .filters = field<std::size_t>(c, "filters", at),
                     .kernel_size = window_field(c, "kernel_size", at),
                     .strides = window_field(c, "strides", at, ops::Window2D{1, 1}),
                     .padding = field<std::string>(c, "padding", at, std::string("valid")),
                     .activation = field<std::string>(c, "activation", at, std::string("linear")),
                     .use_bias = field<bool>(c, "use_bias", at, true),
                     .kernel_initializer = initializer_field(c, "kernel_initializer", at, "glorot_uniform"),
                     .bias_initializer = initializer_field(c, "bias_initializer", at, "zeros"),
                     .input_shape = input_shape_field(c, at)});
             }},
            {"MaxPooling2D",
             [](const nlohmann::json& c) {
                 const auto at = where("MaxPooling2D", c);
                 require_channels_last(c, at);
                 return std::make_unique<MaxPooling2D>(pooling_options(c, at));
             }},
            {"AveragePooling2D",
             [](const nlohmann::json& c) {
                 const auto at = where("AveragePooling2D", c);
                 require_channels_last(c, at);
                 return std::make_unique<AveragePooling2D>(pooling_options(c, at));
             }},
            {"GlobalAveragePooling2D",
             [](const nlohmann::json& c) {
                 return std::make_unique<GlobalAveragePooling2D>(global_pooling_input_shape(c, "GlobalAveragePooling2D"));
             }},
            {"GlobalMaxPooling2D",
             [](const nlohmann::json& c) {
                 return std::make_unique<GlobalMaxPooling2D>(global_pooling_input_shape(c, "GlobalMaxPooling2D"));
             }},
            {"BatchNormalization",
             [](const nlohmann::json& c) {
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
             }},
            {"Reshape",
             [](const nlohmann::json& c) {
                 const auto at = where("Reshape", c);
                 return std::make_unique<Reshape>(target_shape_field(c, at),
                                                  input_shape_field(c, at));
             }},
        });
    return registry;
}

}  // namespace

std::unique_ptr<Layer> make_layer(const std::string& class_name, const nlohmann::json& config) {
    json::require_depth(config, "layer config of " + class_name);
    if (!config.is_object()) throw ValueError("layer config of " + class_name + " must be a JSON object, got " + json::excerpt(config));
    // Accept Keras's class names and the snake_case names users type ("dense").
    std::string key = class_name;
    for (const auto& known : layer_factories().names()) {
        if (snake_case(known) == class_name) key = known;
    }
    std::unique_ptr<Layer> layer;
    try {
        layer = layer_factories().get(key)(config);
    } catch (const nlohmann::json::exception& e) {
        throw ValueError("layer config of " + where(key, config) + ": " + e.what());
    }
    if (config.contains("name")) {
        if (!config["name"].is_string()) throw ValueError("layer config of " + key + ": 'name' must be a string");
        layer->set_name(config["name"].get<std::string>());
    }
    if (config.contains("trainable")) {
        if (!config["trainable"].is_boolean()) {
            throw ValueError("layer config of " + where(key, config) + ": 'trainable' must be true or false, got " +
                             json::excerpt(config["trainable"]));
        }
        layer->trainable = config["trainable"].get<bool>();
    }
    return layer;
}

std::vector<std::string> layer_names() { return layer_factories().names(); }

std::optional<Shape> input_shape_from_config(const nlohmann::json& config) {
    return optional_shape(input_shape_field(config, "InputLayer"));
}

}  // namespace xtnn
