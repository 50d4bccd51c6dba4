#pragma once
// What the op sources share: shape checks, broadcasting, the elementwise-op builder. Private to
// lib/src.

#include <algorithm>
#include <string>

#include <xtensor/xarray.hpp>

#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::ops::internal {


template <class T>
using NodeT = Node<T>;

inline std::string describe(const char* op, const std::string& problem) { return std::string(op) + ": " + problem; }

template <class S1, class S2>
Shape broadcast_shape(const char* op, const S1& a, const S2& b) {
    std::size_t rank = std::max(a.size(), b.size());
    Shape result(rank);
    for (std::size_t i = 0; i < rank; ++i) {
        std::size_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        std::size_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (da != db && da != 1 && db != 1) {
            throw ShapeError(describe(op, "shapes " + shape_to_string(a) + " and " + shape_to_string(b) +
                                              " cannot be broadcast together (axis " + std::to_string(i) +
                                              ": " + std::to_string(da) + " vs " + std::to_string(db) + ")"));
        }
        result[i] = std::max(da, db);
        if (da == 0 || db == 0) result[i] = 0;
    }
    return result;
}

// Sums along `axis`, keeping it with extent 1. A plain loop: xtensor 0.24's immediate reducers
// crash or throw bad_alloc on some shapes, and its lazy ones are 12x slower.
template <class T>
xt::xarray<T> sum_keepdims(const xt::xarray<T>& x, std::size_t axis) {
    Shape shape(x.shape().begin(), x.shape().end());
    std::size_t outer = 1, inner = 1;
    for (std::size_t i = 0; i < axis; ++i) outer *= shape[i];
    for (std::size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
    const std::size_t extent = shape[axis];
    shape[axis] = 1;
    xt::xarray<T> result = xt::zeros<T>(shape);
    const T* in = x.data();
    T* out = result.data();
    for (std::size_t o = 0; o < outer; ++o) {
        for (std::size_t a = 0; a < extent; ++a) {
            const T* row = in + (o * extent + a) * inner;
            for (std::size_t i = 0; i < inner; ++i) out[o * inner + i] += row[i];
        }
    }
    return result;
}

// Sums a broadcast gradient back to the shape of the input it came from.
template <class T, class S>
xt::xarray<T> reduce_to_shape(const xt::xarray<T>& grad, const S& shape) {
    xt::xarray<T> reduced = grad;
    while (reduced.dimension() > shape.size()) {
        reduced = sum_keepdims(reduced, 0);
        Shape dropped(reduced.shape().begin() + 1, reduced.shape().end());
        reduced.reshape(dropped);
    }
    for (std::size_t axis = 0; axis < shape.size(); ++axis) {
        if (shape[axis] == 1 && reduced.shape()[axis] != 1) reduced = sum_keepdims(reduced, axis);
    }
    return reduced;
}

// A tensor of shape (..., C) seen as rows of C values.
struct Rows {
    std::size_t count;
    std::size_t width;
};

template <class T>
Rows as_rows(const char* op, const BasicTensor<T>& x) {
    if (x.dimension() == 0 || x.shape().back() == 0) {
        throw ShapeError(describe(op, "expected a tensor of shape (..., C) with C > 0, got shape " +
                                          shape_to_string(x.shape())));
    }
    return {x.size() / x.shape().back(), x.shape().back()};
}

template <class T>
void require_same_shape(const char* op, const BasicTensor<T>& x, const xt::xarray<T>& target,
                        const char* target_name) {
    if (x.shape() != target.shape()) {
        throw ShapeError(describe(op, std::string(target_name) + " has shape " + shape_to_string(target.shape()) +
                                          " but the prediction has shape " + shape_to_string(x.shape()) +
                                          "; they must match"));
    }
}

// An elementwise op y = f(x) whose derivative f'(x) is computed from x and y.
template <class T, class Forward, class Derivative>
BasicTensor<T> elementwise(const char* name, const BasicTensor<T>& x, Forward forward, Derivative derivative) {
    xt::xarray<T> y = forward(x.value());
    return make_op<T>(name, std::move(y), {x}, [derivative](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        // Evaluated into an array first: accumulate_grad of an array is compiled once for every
        // op, of an expression once for each (the values are the same either way).
        xt::xarray<T> contribution = out.grad * derivative(in.value, out.value);
        accumulate_grad(in, std::move(contribution));
    });
}

template <class T>
BasicTensor<T> scalar_result(const char* name, double value, const BasicTensor<T>& input,
                             typename NodeT<T>::BackwardFn backward) {
    return make_op<T>(name, xt::xarray<T>(static_cast<T>(value)), {input}, std::move(backward));
}

template <class T>
constexpr T crossentropy_epsilon = T(1e-7);

// A full reduction as a plain loop: xtensor 0.24's immediate full reduction crashes.
template <class T>
xt::xarray<T> total(const xt::xarray<T>& x) {
    T result = 0;
    for (T v : x) result += v;
    return xt::xarray<T>(result);
}


// (max, log(sum(exp(row - max)))): log-sum-exp that cannot overflow.
template <class T>
std::pair<T, T> row_max_and_log_sum_exp(const T* row, std::size_t width) {
    T max = row[0];
    for (std::size_t c = 1; c < width; ++c) max = std::max(max, row[c]);
    T total = 0;
    for (std::size_t c = 0; c < width; ++c) total += std::exp(row[c] - max);
    return {max, std::log(total)};
}

}  // namespace xtnn::ops::internal
