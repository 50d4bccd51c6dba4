#include "xtnn/layer.hpp"

#include <atomic>
#include <cctype>

#include "config_fields.hpp"
#include "xtnn/activations.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

using config_fields::max_rank;

const Shape& SymbolicTensor::shape() const { return producer_->output_shape; }
Layer& SymbolicTensor::layer() const { return *producer_->layer; }
const std::string& SymbolicTensor::name() const { return producer_->layer->name(); }

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

void Layer::build(const Shape& input_shape, Generator& generator) { build_inputs({input_shape}, generator); }

void Layer::build_inputs(const std::vector<Shape>& input_shapes, Generator& generator) {
    const std::string layer = describe();
    for (const auto& shape : input_shapes) {
        if (shape.empty() || shape.size() > max_rank) {
            throw ShapeError(layer + ": input shape " + shape_to_string(shape) + " must have between 1 and " +
                             std::to_string(max_rank) + " axes (batch axis excluded)");
        }
        // Every size this layer will allocate is checked before the first allocation.
        checked_element_count(shape, layer + ": input shape");
    }
    checked_element_count(compute_output_shape(input_shapes), layer + ": output shape");
    if (input_shapes.size() == 1) {
        for (const auto& shape : weight_shapes(input_shapes[0])) checked_element_count(shape, layer + ": weight shape");
        build_weights(input_shapes[0], generator);
    }
    input_shapes_ = input_shapes;
}

const Shape& Layer::input_shape() const {
    const auto& shapes = input_shapes();
    if (shapes.size() != 1) {
        throw ValueError(describe() + " has " + std::to_string(shapes.size()) + " inputs; use input_shapes()");
    }
    return shapes[0];
}

const std::vector<Shape>& Layer::input_shapes() const {
    if (!input_shapes_) throw ValueError(describe() + " is not built yet");
    return *input_shapes_;
}

Shape Layer::compute_output_shape(const std::vector<Shape>& input_shapes) const {
    if (input_shapes.size() != 1) {
        throw ValueError(describe() + " takes one input, got " + std::to_string(input_shapes.size()));
    }
    return output_shape(input_shapes[0]);
}

Tensor Layer::call_then_relu(const std::vector<Tensor>& inputs, bool training) {
    return ops::relu(call_inputs(inputs, training));
}

Tensor Layer::call_inputs(const std::vector<Tensor>& inputs, bool training) {
    if (inputs.size() != 1) throw ValueError(describe() + " takes one input, got " + std::to_string(inputs.size()));
    return call(inputs[0], training);
}

SplitOutput Layer::call_split(const std::vector<Tensor>& inputs, bool training) {
    return {call_inputs(inputs, training), "linear"};
}

SymbolicTensor call_layer(const std::shared_ptr<Layer>& layer, const std::vector<SymbolicTensor>& inputs,
                          Generator& generator) {
    static std::atomic<std::uint64_t> next_serial{1};
    if (!layer) throw ValueError("call_layer: null layer");
    if (inputs.empty()) throw ValueError(layer->class_name() + ": called on no inputs");
    std::vector<Shape> shapes;
    for (const auto& input : inputs) shapes.push_back(input.shape());
    if (!layer->built()) {
        layer->build_inputs(shapes, generator);
    } else if (layer->input_shapes() != shapes) {
        std::string expected, got;
        for (const auto& s : layer->input_shapes()) expected += (expected.empty() ? "" : ", ") + batch_shape_to_string(s);
        for (const auto& s : shapes) got += (got.empty() ? "" : ", ") + batch_shape_to_string(s);
        throw ShapeError(layer->class_name() + " '" + layer->name() + "' was built for input " + expected +
                         "; called again on " + got + " (a shared layer takes inputs of the shapes it was built for)");
    }
    auto call = std::make_shared<LayerCall>();
    call->layer = layer;
    call->inputs = inputs;
    call->output_shape = layer->compute_output_shape(shapes);
    call->serial = next_serial.fetch_add(1);
    return SymbolicTensor(std::move(call));
}

SymbolicTensor Layer::operator()(const SymbolicTensor& input) && { return std::move(*this)(std::vector<SymbolicTensor>{input}); }

SymbolicTensor Layer::operator()(const std::vector<SymbolicTensor>& inputs) && {
    if (auto owner = weak_from_this().lock()) return call_layer(owner, inputs);
    return call_layer(std::move(*this).move_to_shared(), inputs);
}

SymbolicTensor Layer::operator()(const SymbolicTensor& input) & { return (*this)(std::vector<SymbolicTensor>{input}); }

SymbolicTensor Layer::operator()(const std::vector<SymbolicTensor>& inputs) & {
    auto owner = weak_from_this().lock();
    if (!owner) {
        throw ValueError(describe() + " is a named object not owned by a std::shared_ptr, so a graph cannot keep it: call "
                         "a temporary (Dense(10)(x)), or make a layer to call more than once with xtnn::shared(...)");
    }
    return call_layer(owner, inputs);
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

std::vector<bool> Layer::weights_created_trainable() const {
    std::vector<bool> flags;
    for (const auto& weight : weights_) flags.push_back(weight.trainable);
    return flags;
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
        throw ShapeError(describe() + ": expected input of shape " + batch_shape_to_string(expected) + ", got " +
                         shape_to_string(x.shape()));
    }
}

namespace {
thread_local std::size_t slice_first_row = 0;
}

std::size_t batch_slice_first_row() { return slice_first_row; }

BatchSliceScope::BatchSliceScope(std::size_t first_row) : previous_(slice_first_row) { slice_first_row = first_row; }

BatchSliceScope::~BatchSliceScope() { slice_first_row = previous_; }

}  // namespace xtnn
