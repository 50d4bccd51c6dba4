// The activations as ops: sigmoid, relu, tanh, elu, leaky_relu, softplus, gelu, softmax, log_softmax.

#include "xtnn/ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include <xtensor/xbuilder.hpp>

#include "ops_internal.hpp"

namespace xtnn::ops {

using namespace internal;

template <class T>
BasicTensor<T> sigmoid(const BasicTensor<T>& x) {
    return elementwise<T>("sigmoid", x, [](const auto& v) { return T(1) / (T(1) + xsimd::exp(-v)); },
                          [](const auto&, const auto& y) { return y * (T(1) - y); });
}

template <class T>
BasicTensor<T> relu(const BasicTensor<T>& x) {
    // Plain loops: relu follows every hidden layer, and xtensor's maximum/where expressions cost
    // several times a vectorized loop here.
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    const T* in = x.value().data();
    T* out = y.data();
    // NaN <= 0 is false: a NaN stays NaN (PyTorch's relu does the same) instead of becoming 0
    // while its gradient still reaches the weights.
    for (std::size_t i = 0; i < y.size(); ++i) out[i] = in[i] <= T(0) ? T(0) : in[i];
    return make_op<T>("relu", std::move(y), {x}, [](NodeT<T>& node) {
        NodeT<T>& input = *node.inputs[0];
        if (!input.requires_grad) return;
        const T* value = input.value.data();
        const T* dy = node.grad.data();
        // A fresh gradient is written, not zero-filled and added to.
        const auto [dx, beta] = grad_destination(input);
        const std::size_t n = input.value.size();
        if (beta == T(0)) {
            for (std::size_t i = 0; i < n; ++i) dx[i] = value[i] <= T(0) ? T(0) : dy[i];
        } else {
            for (std::size_t i = 0; i < n; ++i) dx[i] += value[i] <= T(0) ? T(0) : dy[i];
        }
    });
}

template <class T>
BasicTensor<T> tanh(const BasicTensor<T>& x) {
    return elementwise<T>("tanh", x, [](const auto& v) { return xsimd::tanh(v); },
                          [](const auto&, const auto& y) { return T(1) - y * y; });
}

template <class T>
BasicTensor<T> elu(const BasicTensor<T>& x, T alpha) {
    return elementwise<T>(
        "elu", x, [alpha](const auto& v) { return where(v > T(0), v, alpha * (xsimd::exp(v) - T(1))); },
        [alpha](const auto& v, const auto& y) { return where(v > T(0), T(1), y + alpha); });
}

template <class T>
BasicTensor<T> leaky_relu(const BasicTensor<T>& x, T negative_slope) {
    return elementwise<T>(
        "leaky_relu", x, [negative_slope](const auto& v) { return where(v > T(0), v, negative_slope * v); },
        [negative_slope](const auto& v, const auto&) { return where(v > T(0), T(1), negative_slope); });
}

template <class T>
BasicTensor<T> softplus(const BasicTensor<T>& x) {
    // max(x, 0) + log1p(exp(-|x|)) never overflows.
    return elementwise<T>(
        "softplus", x, [](const auto& v) { return where(v > T(0), v, T(0)) + xsimd::log1p(xsimd::exp(-xsimd::abs(v))); },
        [](const auto& v, const auto&) { return T(1) / (T(1) + xsimd::exp(-v)); });
}

template <class T>
BasicTensor<T> gelu(const BasicTensor<T>& x) {
    static constexpr T inv_sqrt2 = T(1) / std::numbers::sqrt2_v<T>;
    return elementwise<T>(
        "gelu", x, [](const auto& v) { return T(0.5) * v * (T(1) + xsimd::erf(v * inv_sqrt2)); },
        [](const auto& v, const auto&) {
            constexpr T inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<T> * inv_sqrt2;
            return T(0.5) * (T(1) + xsimd::erf(v * inv_sqrt2)) + v * xsimd::exp(T(-0.5) * v * v) * inv_sqrt_2pi;
        });
}


template <class T>
BasicTensor<T> softmax(const BasicTensor<T>& x) {
    const Rows rows = as_rows("softmax", x);
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    T* p = y.data();
    row_exps(x.value().data(), rows, p, [&](std::size_t r, T, T sum) {
        for (std::size_t c = 0; c < rows.width; ++c) p[r * rows.width + c] /= sum;
    });
    return make_op<T>("softmax", std::move(y), {x}, [rows](NodeT<T>& out) {
        NodeT<T>& in_node = *out.inputs[0];
        if (!in_node.requires_grad) return;
        T* dx = grad_buffer(in_node).data();
        const T* p = out.value.data();
        const T* dy = out.grad.data();
        for (std::size_t r = 0; r < rows.count; ++r) {
            const std::size_t base = r * rows.width;
            T dot = 0;
            for (std::size_t c = 0; c < rows.width; ++c) dot += dy[base + c] * p[base + c];
            for (std::size_t c = 0; c < rows.width; ++c) dx[base + c] += p[base + c] * (dy[base + c] - dot);
        }
    });
}

template <class T>
BasicTensor<T> log_softmax(const BasicTensor<T>& x) {
    const Rows rows = as_rows("log_softmax", x);
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    const T* in = x.value().data();
    T* log_p = y.data();
    row_exps(in, rows, log_p, [&](std::size_t r, T max, T sum) {
        const T log_sum = std::log(sum);
        for (std::size_t c = 0; c < rows.width; ++c) log_p[r * rows.width + c] = in[r * rows.width + c] - max - log_sum;
    });
    return make_op<T>("log_softmax", std::move(y), {x}, [rows](NodeT<T>& out) {
        NodeT<T>& in_node = *out.inputs[0];
        if (!in_node.requires_grad) return;
        T* dx = grad_buffer(in_node).data();
        const T* log_p = out.value.data();
        const T* dy = out.grad.data();
        for (std::size_t r = 0; r < rows.count; ++r) {
            const std::size_t base = r * rows.width;
            T total = 0;
            for (std::size_t c = 0; c < rows.width; ++c) total += dy[base + c];
            for (std::size_t c = 0; c < rows.width; ++c) dx[base + c] += dy[base + c] - std::exp(log_p[base + c]) * total;
        }
    });
}

#define XTNN_INSTANTIATE_ACTIVATION_OPS(T) \
    template BasicTensor<T> sigmoid(const BasicTensor<T>&);       \
    template BasicTensor<T> relu(const BasicTensor<T>&);          \
    template BasicTensor<T> tanh(const BasicTensor<T>&);          \
    template BasicTensor<T> elu(const BasicTensor<T>&, T);        \
    template BasicTensor<T> leaky_relu(const BasicTensor<T>&, T); \
    template BasicTensor<T> softplus(const BasicTensor<T>&);      \
    template BasicTensor<T> gelu(const BasicTensor<T>&);          \
    template BasicTensor<T> softmax(const BasicTensor<T>&);       \
    template BasicTensor<T> log_softmax(const BasicTensor<T>&);

XTNN_INSTANTIATE_ACTIVATION_OPS(float)
XTNN_INSTANTIATE_ACTIVATION_OPS(double)

}  // namespace xtnn::ops
