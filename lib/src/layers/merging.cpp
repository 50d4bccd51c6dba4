#include "xtnn/layers/merging.hpp"

#include <algorithm>

#include "config_fields.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

using namespace config_fields;

namespace {

std::string shapes_to_string(const std::vector<Shape>& shapes) {
    std::string text;
    for (const auto& shape : shapes) text += (text.empty() ? "" : ", ") + batch_shape_to_string(shape);
    return text;
}

// A merging layer's config holds nothing beyond the common fields.
template <class L>
std::unique_ptr<Layer> plain_merge_from_config(const nlohmann::json&) {
    return std::make_unique<L>();
}

}  // namespace

Shape Merge::output_shape(const Shape&) const {
    throw ValueError(describe() + " merges a list of at least " + std::to_string(min_inputs()) + " inputs, got one");
}

Tensor Merge::call(const Tensor&, bool) {
    throw ValueError(describe() + " merges a list of at least " + std::to_string(min_inputs()) + " inputs, got one");
}

Shape Merge::compute_output_shape(const std::vector<Shape>& input_shapes) const {
    if (input_shapes.size() < min_inputs() || input_shapes.size() > max_inputs()) {
        const std::string count = min_inputs() == max_inputs() ? "exactly " + std::to_string(min_inputs())
                                                               : "at least " + std::to_string(min_inputs());
        throw ValueError(describe() + " takes " + count + " inputs, got " + std::to_string(input_shapes.size()));
    }
    return merged_shape(input_shapes);
}

// Keras's rule (base_merge.py): the sample shapes align at their last axes; an extent of 1, or an
// axis the shorter shape lacks, takes the other input's extent; other extents must be equal.
Shape Merge::merged_shape(const std::vector<Shape>& input_shapes) const {
    Shape merged = input_shapes[0];
    for (const auto& shape : input_shapes) {
        const Shape& longer = shape.size() > merged.size() ? shape : merged;
        const Shape& shorter = shape.size() > merged.size() ? merged : shape;
        const std::size_t offset = longer.size() - shorter.size();
        Shape result(longer.begin(), longer.begin() + static_cast<std::ptrdiff_t>(offset));
        for (std::size_t d = 0; d < shorter.size(); ++d) {
            const std::size_t a = longer[offset + d];
            const std::size_t b = shorter[d];
            if (a != b && a != 1 && b != 1) {
                throw ShapeError(describe() + ": the inputs have incompatible shapes " + shapes_to_string(input_shapes) +
                                 "; extents must be equal or 1");
            }
            result.push_back(a == 1 ? b : a);
        }
        merged = std::move(result);
    }
    return merged;
}

Tensor Merge::call_inputs(const std::vector<Tensor>& inputs, bool) { return merge(aligned(inputs)); }

std::vector<Tensor> Merge::aligned(const std::vector<Tensor>& inputs) const {
    std::vector<Shape> shapes;
    for (const auto& input : inputs) {
        if (input.dimension() == 0) throw ShapeError(describe() + ": an input has no batch axis");
        shapes.push_back(Shape(input.shape().begin() + 1, input.shape().end()));
    }
    compute_output_shape(shapes);
    if (built() && shapes != input_shapes()) {
        throw ShapeError(describe() + ": built for inputs " + shapes_to_string(input_shapes()) + ", got " +
                         shapes_to_string(shapes));
    }
    std::size_t rank = 0;
    for (const auto& input : inputs) {
        if (input.shape()[0] != inputs[0].shape()[0]) {
            throw ShapeError(describe() + ": the inputs have different batch sizes");
        }
        rank = std::max(rank, input.dimension());
    }
    // An input of fewer axes gains axes of 1 after the batch axis, as Keras's expand_dims(x, 1).
    std::vector<Tensor> terms;
    for (const auto& input : inputs) {
        if (input.dimension() == rank) {
            terms.push_back(input);
            continue;
        }
        std::vector<std::ptrdiff_t> shape(input.shape().begin(), input.shape().end());
        shape.insert(shape.begin() + 1, rank - input.dimension(), 1);
        terms.push_back(ops::reshape(input, shape));
    }
    return terms;
}

Tensor Add::merge(const std::vector<Tensor>& inputs) const {
    Tensor sum = inputs[0];
    for (std::size_t i = 1; i < inputs.size(); ++i) sum = sum + inputs[i];
    return sum;
}

Tensor Add::call_then_relu(const std::vector<Tensor>& inputs, bool) {
    const std::vector<Tensor> terms = aligned(inputs);
    if (terms.size() == 2 && terms[0].shape() == terms[1].shape()) return ops::add_relu(terms[0], terms[1]);
    return ops::relu(merge(terms));
}

std::unique_ptr<Layer> Add::from_config(const nlohmann::json& c) { return plain_merge_from_config<Add>(c); }

Tensor Subtract::merge(const std::vector<Tensor>& inputs) const { return inputs[0] - inputs[1]; }

std::unique_ptr<Layer> Subtract::from_config(const nlohmann::json& c) { return plain_merge_from_config<Subtract>(c); }

Tensor Multiply::merge(const std::vector<Tensor>& inputs) const {
    Tensor product = inputs[0];
    for (std::size_t i = 1; i < inputs.size(); ++i) product = product * inputs[i];
    return product;
}

std::unique_ptr<Layer> Multiply::from_config(const nlohmann::json& c) { return plain_merge_from_config<Multiply>(c); }

Tensor Average::merge(const std::vector<Tensor>& inputs) const {
    Tensor sum = inputs[0];
    for (std::size_t i = 1; i < inputs.size(); ++i) sum = sum + inputs[i];
    return ops::scale(sum, 1.0f / static_cast<float>(inputs.size()));
}

std::unique_ptr<Layer> Average::from_config(const nlohmann::json& c) { return plain_merge_from_config<Average>(c); }

namespace {

// ops::maximum and ops::minimum take one shape: inputs with extents of 1 are repeated to the
// merged shape, then folded pairwise.
template <class Pairwise>
Tensor fold_broadcast(const std::vector<Tensor>& inputs, Pairwise pairwise) {
    Shape shape(inputs[0].shape().begin(), inputs[0].shape().end());
    for (const auto& input : inputs) {
        for (std::size_t d = 0; d < shape.size(); ++d) {
            if (shape[d] == 1) shape[d] = input.shape()[d];
        }
    }
    auto expanded = [&shape](const Tensor& x) {
        return Shape(x.shape().begin(), x.shape().end()) == shape ? x : ops::broadcast_to(x, shape);
    };
    Tensor result = expanded(inputs[0]);
    for (std::size_t i = 1; i < inputs.size(); ++i) result = pairwise(result, expanded(inputs[i]));
    return result;
}

}  // namespace

Tensor Maximum::merge(const std::vector<Tensor>& inputs) const {
    return fold_broadcast(inputs, [](const Tensor& a, const Tensor& b) { return ops::maximum(a, b); });
}

std::unique_ptr<Layer> Maximum::from_config(const nlohmann::json& c) { return plain_merge_from_config<Maximum>(c); }

Tensor Minimum::merge(const std::vector<Tensor>& inputs) const {
    return fold_broadcast(inputs, [](const Tensor& a, const Tensor& b) { return ops::minimum(a, b); });
}

std::unique_ptr<Layer> Minimum::from_config(const nlohmann::json& c) { return plain_merge_from_config<Minimum>(c); }

Concatenate::Concatenate(int axis) : axis_(axis) {
    if (axis == 0) throw ValueError("Concatenate: axis 0 is the batch axis; give -1 (the last) or an axis from 1");
    if (axis < -int(max_rank) || axis > int(max_rank)) {
        throw ValueError("Concatenate: axis " + std::to_string(axis) + " is out of range");
    }
}

std::size_t Concatenate::sample_axis(std::size_t rank) const {
    const long long axis = axis_ < 0 ? static_cast<long long>(rank) + axis_ : axis_ - 1;
    if (axis < 0 || axis >= static_cast<long long>(rank)) {
        throw ShapeError(describe() + ": axis " + std::to_string(axis_) + " is out of range for inputs of " +
                         std::to_string(rank) + " axes (batch axis excluded)");
    }
    return static_cast<std::size_t>(axis);
}

Shape Concatenate::merged_shape(const std::vector<Shape>& input_shapes) const {
    const std::size_t axis = sample_axis(input_shapes[0].size());
    Shape shape = input_shapes[0];
    shape[axis] = 0;
    for (const auto& input : input_shapes) {
        bool fits = input.size() == shape.size();
        for (std::size_t d = 0; fits && d < shape.size(); ++d) fits = d == axis || input[d] == shape[d];
        if (!fits) {
            throw ShapeError(describe() + ": inputs joined on axis " + std::to_string(axis_) +
                             " must agree on every other axis, got " + shapes_to_string(input_shapes));
        }
        shape[axis] += input[axis];
    }
    return shape;
}

Tensor Concatenate::merge(const std::vector<Tensor>& inputs) const {
    return ops::concatenate(inputs, sample_axis(inputs[0].dimension() - 1) + 1);
}

nlohmann::json Concatenate::config() const {
    nlohmann::json config = Layer::config();
    config["axis"] = axis_;
    return config;
}

std::unique_ptr<Layer> Concatenate::from_config(const nlohmann::json& c) {
    const auto at = where("Concatenate", c);
    const auto& axis = c.contains("axis") ? c["axis"] : nlohmann::json(-1);
    if (!axis.is_number_integer()) {
        throw ValueError("layer config of " + at + ": 'axis' must be a whole number, got " + json::excerpt(axis));
    }
    const auto value = axis.get<std::int64_t>();
    if (value < -std::int64_t(max_rank) || value > std::int64_t(max_rank) || value == 0) {
        throw ValueError("layer config of " + at + ": 'axis' must be -" + std::to_string(max_rank) + "..-1 or 1.." +
                         std::to_string(max_rank) + ", got " + std::to_string(value));
    }
    return std::make_unique<Concatenate>(static_cast<int>(value));
}

}  // namespace xtnn
