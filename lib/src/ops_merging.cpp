// Ops that merge tensors: the element-wise maximum and minimum, and concatenation along an axis.
// All loop over raw buffers: a concatenation is a sequence of contiguous block copies.

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::ops {

namespace {

// a where it is the larger (the smaller for a minimum), equal, or NaN; b where it wins or only b
// is NaN.
template <bool largest, class T>
bool first_wins(T a, T b) {
    return (largest ? a >= b : a <= b) || std::isnan(a);
}

template <bool largest, class T>
BasicTensor<T> extremum(const char* name, const BasicTensor<T>& a, const BasicTensor<T>& b) {
    if (a.shape() != b.shape()) {
        throw ShapeError(std::string(name) + ": the inputs must have one shape, got " + shape_to_string(a.shape()) +
                         " and " + shape_to_string(b.shape()));
    }
    const std::size_t n = a.size();
    const T* x = a.value().data();
    const T* z = b.value().data();
    xt::xarray<T> y = pooled_empty<T>(a.shape());
    T* out = y.data();
    for (std::size_t i = 0; i < n; ++i) out[i] = first_wins<largest>(x[i], z[i]) ? x[i] : z[i];
    return make_op<T>(name, std::move(y), {a, b}, [](Node<T>& node) {
        const std::size_t n = node.value.size();
        const T* x = node.inputs[0]->value.data();
        const T* z = node.inputs[1]->value.data();
        const T* dy = node.grad.data();
        for (std::size_t side = 0; side < 2; ++side) {
            Node<T>& input = *node.inputs[side];
            if (!input.requires_grad) continue;
            T* grad = grad_buffer(input).data();
            for (std::size_t i = 0; i < n; ++i) {
                if (first_wins<largest>(x[i], z[i]) == (side == 0)) grad[i] += dy[i];
            }
        }
    });
}

}  // namespace

template <class T>
BasicTensor<T> maximum(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    return extremum<true>("maximum", a, b);
}

template <class T>
BasicTensor<T> minimum(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    return extremum<false>("minimum", a, b);
}

template <class T>
BasicTensor<T> concatenate(const std::vector<BasicTensor<T>>& tensors, std::size_t axis) {
    if (tensors.empty()) throw ValueError("concatenate: no tensors");
    const Shape first(tensors[0].shape().begin(), tensors[0].shape().end());
    if (axis >= first.size()) {
        throw ShapeError("concatenate: axis " + std::to_string(axis) + " is out of range for tensors of shape " +
                         shape_to_string(first));
    }
    Shape shape = first;
    shape[axis] = 0;
    for (const auto& tensor : tensors) {
        const Shape current(tensor.shape().begin(), tensor.shape().end());
        bool fits = current.size() == first.size();
        for (std::size_t d = 0; fits && d < first.size(); ++d) fits = d == axis || current[d] == first[d];
        if (!fits) {
            throw ShapeError("concatenate: along axis " + std::to_string(axis) + " every other extent must agree; got " +
                             shape_to_string(first) + " and " + shape_to_string(current));
        }
        shape[axis] += current[axis];
    }
    // Each tensor is `outer` blocks of `extent * inner` values; the result interleaves the blocks.
    std::size_t outer = 1, inner = 1;
    for (std::size_t d = 0; d < axis; ++d) outer *= first[d];
    for (std::size_t d = axis + 1; d < first.size(); ++d) inner *= first[d];
    std::vector<std::size_t> block_sizes;
    for (const auto& tensor : tensors) block_sizes.push_back(tensor.shape()[axis] * inner);
    const std::size_t row = shape[axis] * inner;

    xt::xarray<T> y = pooled_empty<T>(shape);
    std::size_t offset = 0;
    for (std::size_t t = 0; t < tensors.size(); ++t) {
        const T* in = tensors[t].value().data();
        for (std::size_t o = 0; o < outer; ++o) {
            std::memcpy(y.data() + o * row + offset, in + o * block_sizes[t], block_sizes[t] * sizeof(T));
        }
        offset += block_sizes[t];
    }
    return make_op<T>("concatenate", std::move(y), tensors, [block_sizes, outer, row](Node<T>& node) {
        std::size_t offset = 0;
        for (std::size_t t = 0; t < node.inputs.size(); ++t) {
            Node<T>& input = *node.inputs[t];
            if (input.requires_grad) {
                T* grad = grad_buffer(input).data();
                for (std::size_t o = 0; o < outer; ++o) {
                    const T* dy = node.grad.data() + o * row + offset;
                    for (std::size_t i = 0; i < block_sizes[t]; ++i) grad[o * block_sizes[t] + i] += dy[i];
                }
            }
            offset += block_sizes[t];
        }
    });
}

template BasicTensor<float> maximum(const BasicTensor<float>&, const BasicTensor<float>&);
template BasicTensor<double> maximum(const BasicTensor<double>&, const BasicTensor<double>&);
template BasicTensor<float> minimum(const BasicTensor<float>&, const BasicTensor<float>&);
template BasicTensor<double> minimum(const BasicTensor<double>&, const BasicTensor<double>&);
template BasicTensor<float> concatenate(const std::vector<BasicTensor<float>>&, std::size_t);
template BasicTensor<double> concatenate(const std::vector<BasicTensor<double>>&, std::size_t);

}  // namespace xtnn::ops
