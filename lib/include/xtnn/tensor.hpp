#pragma once
// A tensor is a shared handle to a node of the autodiff graph: its value, its gradient, the
// inputs it was computed from and how to push a gradient back to them. Copies share the node,
// as torch.Tensor handles do.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "xtnn/error.hpp"

namespace xtnn {

using Shape = std::vector<std::size_t>;

/// The most elements xtnn allocates for one tensor: 2^32, 16 GiB of floats. A larger weight,
/// activation or one-hot array is a mistake in a config or an argument, refused before allocating.
inline constexpr std::size_t max_tensor_elements = std::size_t(1) << 32;

/// The number of elements of a tensor of `shape`; a ValueError naming `what` and the shape when
/// the product overflows or exceeds max_tensor_elements.
template <class Extents>
std::size_t checked_element_count(const Extents& shape, const std::string& what) {
    std::size_t count = 1;
    bool too_large = false;
    for (auto extent : shape) {
        const auto value = static_cast<std::size_t>(extent);
        if (value != 0 && count > max_tensor_elements / value) too_large = true;
        if (!too_large) count *= value;
    }
    // A zero extent makes the product zero however large the others are.
    if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
    if (too_large) {
        throw ValueError(what + " " + shape_to_string(shape) + " has more than " + std::to_string(max_tensor_elements) +
                         " elements, the most xtnn allocates for one tensor");
    }
    return count;
}

/// The index of the first NaN or infinity in `values`, if any. The scan tests exponent bits as
/// integers, which vectorizes: it runs after every batch when TerminateOnNaN watches the weights.
inline std::optional<std::size_t> first_non_finite(std::span<const float> values) {
    constexpr std::uint32_t exponent_bits = 0x7f800000;
    std::uint32_t any = 0;
    for (float value : values) any |= (std::bit_cast<std::uint32_t>(value) & exponent_bits) == exponent_bits;
    if (!any) return std::nullopt;
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (!std::isfinite(values[i])) return i;
    }
    return std::nullopt;
}

template <class T>
struct Node {
    using BackwardFn = std::function<void(Node&)>;

    xt::xarray<T> value;
    xt::xarray<T> grad = xt::xarray<T>(typename xt::xarray<T>::shape_type{0});  // no buffer until a pass writes one
    bool has_grad = false;       // an xarray is never "empty" (rank 0 has one element)
    bool requires_grad = false;
    const char* op = "leaf";
    std::string layer;  // the layer whose call made it, kept while anomaly detection is on
    std::vector<std::shared_ptr<Node>> inputs;
    BackwardFn backward;         // reads this node's grad, accumulates into inputs' grads
    std::uint64_t last_pass = 0;  // the backward pass that last reached this node (leaves: never set)

    bool is_leaf() const { return inputs.empty(); }

    Node() = default;
    explicit Node(xt::xarray<T> node_value) : value(std::move(node_value)) {}
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;
    // Releases a long chain of inputs iteratively (the default recursive release would overflow
    // the stack on graphs a few hundred thousand ops deep) and hands the arrays to the thread's
    // pool (xtnn/array_pool.hpp) for the next step.
    ~Node();
};

template <class T>
class BasicTensor {
public:
    using value_type = T;

    BasicTensor();
    explicit BasicTensor(std::shared_ptr<Node<T>> node);

    /// A trainable leaf: backward() fills its grad().
    static BasicTensor parameter(xt::xarray<T> value);
    /// Data: no gradient is ever computed for it.
    static BasicTensor constant(xt::xarray<T> value);

    const xt::xarray<T>& value() const& { return node_->value; }
    /// A copy, so that `for (float v : ops::relu(x).value())` does not read a destroyed node.
    xt::xarray<T> value() && { return node_->value; }
    /// Direct access for optimizers that update weights in place.
    xt::xarray<T>& mutable_value() { return node_->value; }
    const auto& shape() const { return node_->value.shape(); }
    std::size_t dimension() const { return node_->value.dimension(); }
    std::size_t size() const { return node_->value.size(); }
    /// The value of a one-element tensor.
    T item() const;

    bool requires_grad() const { return node_->requires_grad; }
    bool has_grad() const { return node_->has_grad; }
    /// The accumulated gradient, zeros if nothing reached this tensor yet.
    const xt::xarray<T>& grad() const;
    xt::xarray<T>& mutable_grad();
    /// Forgets the gradient; its buffer stays for the next backward pass to overwrite.
    void zero_grad();

    /// Reverse-mode pass from a one-element tensor (seed 1).
    void backward() const;
    /// Reverse-mode pass seeded with d(something)/d(this), the shape of this tensor.
    void backward(const xt::xarray<T>& seed) const;

    /// The same value, cut from the graph.
    BasicTensor detach() const;
    const char* op_name() const { return node_->op; }
    const std::shared_ptr<Node<T>>& node() const { return node_; }

private:
    std::shared_ptr<Node<T>> node_;
};

using Tensor = BasicTensor<float>;
using TensorD = BasicTensor<double>;

extern template class BasicTensor<float>;
extern template class BasicTensor<double>;

}  // namespace xtnn
