#pragma once
// Arrays that a thread's graphs freed, kept for its next step. A training step allocates the same
// few dozen arrays every time (activations, their gradients, masks), and xtensor allocates each
// 64-byte aligned with posix_memalign, which glibc serves past its per-thread cache by splitting
// and merging heap chunks: on W1 (bench/), 67 arrays a step and about 13% of the step in malloc and
// free. A graph node hands its arrays back here when it dies (Node's destructor), and the ops take
// their outputs and gradients from here (a custom op can too). Arrays are matched by element count
// and reshaped; their contents are whatever the last user left, as with xt::empty.

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <utility>

#include <xtensor/xarray.hpp>

#include "xtnn/tensor.hpp"

namespace xtnn {

namespace detail {

template <class T>
using ArrayStorage = typename xt::xarray<T>::storage_type;

/// A buffer of `count` elements, from this thread's pool when it holds one.
template <class T>
ArrayStorage<T> take_storage(std::size_t count);

/// Keeps `array`'s buffer for a later take_storage on this thread when the pool has room, leaving
/// `array` empty (shape {0}); otherwise leaves it as it is. Safe to call while the thread exits.
template <class T>
void recycle(xt::xarray<T>& array) noexcept;

/// Frees every buffer this thread's pool holds (fit does at its end: a training step's buffers
/// would otherwise sit beside whatever the program does next).
template <class T>
void release_pooled_arrays() noexcept;

}  // namespace detail

/// An uninitialized array of `shape` (xt::empty), reusing a freed buffer when one fits.
template <class T, class S>
xt::xarray<T> pooled_empty(const S& shape) {
    using Array = xt::xarray<T>;
    typename Array::shape_type extents(shape.begin(), shape.end());
    typename Array::strides_type strides(extents.size());
    std::size_t count = 1;
    for (std::size_t axis = extents.size(); axis-- > 0;) {
        strides[axis] = static_cast<typename Array::strides_type::value_type>(count);
        count *= extents[axis];
    }
    return Array(detail::take_storage<T>(count), std::move(extents), std::move(strides));
}

template <class T>
xt::xarray<T> pooled_empty(std::initializer_list<std::size_t> shape) {
    return pooled_empty<T, std::initializer_list<std::size_t>>(shape);
}

/// A zero-filled array of `shape` (xt::zeros), reusing a freed buffer when one fits.
template <class T, class S>
xt::xarray<T> pooled_zeros(const S& shape) {
    xt::xarray<T> array = pooled_empty<T>(shape);
    std::fill(array.begin(), array.end(), T(0));
    return array;
}

template <class T>
xt::xarray<T> pooled_zeros(std::initializer_list<std::size_t> shape) {
    return pooled_zeros<T, std::initializer_list<std::size_t>>(shape);
}

/// An array kept alive by an op's backward function (a dropout mask, softmax probabilities): it
/// goes back to the pool when the graph lets go of the function.
template <class T>
struct PooledArray {
    explicit PooledArray(xt::xarray<T> values) : values(std::move(values)) {}
    ~PooledArray() { detail::recycle(values); }
    PooledArray(const PooledArray&) = delete;
    PooledArray& operator=(const PooledArray&) = delete;

    xt::xarray<T> values;
};

}  // namespace xtnn
