// Max and average pooling of channels-last images (N, H, W, C). Max pooling records, for each
// output, which input won (the first of equal maxima, as Keras and PyTorch do), and its backward
// pass routes the gradient there; over whole SIMD registers of float channels it compares a
// register of channels at a time and carries the winners' indices through the same selects.

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "ops_internal.hpp"
#include "ops_window.hpp"
#include "xtnn/array_pool.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::ops {

using internal::for_each_window_tap;
using internal::image_shape;
using internal::ImageShape;
using internal::inside_image;
using internal::plan_axis;
using internal::WindowAxis;
using internal::whole_batches;
using internal::with_row_width;

template <class T>
BasicTensor<T> max_pool2d(const BasicTensor<T>& x, Window2D pool, Window2D strides, Padding padding) {
    const ImageShape s = image_shape("max_pool2d", x);
    const WindowAxis rows = plan_axis("max_pool2d", "height", s.height, pool.height, strides.height, padding);
    const WindowAxis cols = plan_axis("max_pool2d", "width", s.width, pool.width, strides.width, padding);
    xt::xarray<T> y = pooled_empty<T>({s.batch, rows.out, cols.out, s.channels});
    // For each output element, the flat index of the input element it copied; only kept when the
    // backward pass will need it.
    const bool recording = grad_enabled() && x.requires_grad();
    // 32 bits suffice (max_tensor_elements), and every entry is written: no zero fill.
    const std::size_t chosen_count = recording ? y.size() : 0;
    std::shared_ptr<std::uint32_t[]> chosen(new std::uint32_t[chosen_count]);
    const T* in = x.value().data();
    // The candidate window tap at `input` against the window's best values so far. Strictly
    // greater: among equal values the first in the window wins. A NaN wins too (as in PyTorch), so
    // a NaN input shows in the output and the loss. A bitwise or, not ||: the loop stays vectorized
    // (measured: || cost 7% of W5's batch-1 latency).
    auto compare = [&](auto track, T* best, [[maybe_unused]] std::uint32_t* index, std::size_t input) {
        const T* candidate = in + input;
        for (std::size_t c = 0; c < s.channels; ++c) {
            const bool larger = (candidate[c] > best[c]) | (candidate[c] != candidate[c]);
            best[c] = larger ? candidate[c] : best[c];
            if constexpr (decltype(track)::value) index[c] = larger ? static_cast<std::uint32_t>(input + c) : index[c];
        }
    };
    // A window's first tap, copied as its best values so far.
    auto first = [&](auto track, T* best, [[maybe_unused]] std::uint32_t* index, std::size_t input) {
        std::copy(in + input, in + input + s.channels, best);
        if constexpr (decltype(track)::value) {
            for (std::size_t c = 0; c < s.channels; ++c) index[c] = static_cast<std::uint32_t>(input + c);
        }
    };
    auto take_maxima = [&](auto track) {
        constexpr bool tracking = decltype(track)::value;
        std::size_t started = std::numeric_limits<std::size_t>::max();  // the window holding a first value
        for_each_window_tap(s, rows, cols, [&](std::size_t window, std::size_t, std::size_t input) {
            T* best = y.data() + window * s.channels;
            std::uint32_t* index = tracking ? chosen.get() + window * s.channels : nullptr;
            if (window != started) {
                started = window;
                first(track, best, index, input);
            } else {
                compare(track, best, index, input);
            }
        });
    };
    // Windows inside the image (no padding): direct loops, the first tap copied and the others
    // compared in the same order as for_each_window_tap, so the same element wins.
    auto take_maxima_inside = [&](auto track) {
        constexpr bool tracking = decltype(track)::value;
        const std::size_t C = s.channels;
        T* best = y.data();
        std::uint32_t* index = chosen.get();
        for (std::size_t n = 0; n < s.batch; ++n) {
            for (std::size_t oy = 0; oy < rows.out; ++oy) {
                for (std::size_t ox = 0; ox < cols.out; ++ox, best += C) {
                    const std::size_t corner = ((n * s.height + oy * rows.stride) * s.width + ox * cols.stride) * C;
                    first(track, best, index, corner);
                    for (std::size_t ky = 0; ky < rows.window; ++ky) {
                        for (std::size_t kx = ky == 0 ? 1 : 0; kx < cols.window; ++kx) {
                            compare(track, best, index, corner + (ky * s.width + kx) * C);
                        }
                    }
                    if constexpr (tracking) index += C;
                }
            }
        }
    };
    // The same with a whole number of float batches of channels: a batch of channels at a time,
    // the winners' indices carried as bit patterns through the same selects as the values.
    auto take_maxima_inside_batches = [&](auto track, auto width) {
        constexpr bool tracking = decltype(track)::value;
        using Batch = xsimd::batch<float>;
        using Indices = xsimd::batch<std::uint32_t>;
        constexpr std::size_t lanes = Batch::size, vectors = decltype(width)::value / lanes;
        std::array<std::uint32_t, lanes> lane_numbers;
        std::iota(lane_numbers.begin(), lane_numbers.end(), 0u);
        const Indices lane_offsets = Indices::load_unaligned(lane_numbers.data());
        auto indices_at = [&](std::size_t input) { return Indices(static_cast<std::uint32_t>(input)) + lane_offsets; };
        T* best_out = y.data();
        std::uint32_t* index_out = chosen.get();
        for (std::size_t n = 0; n < s.batch; ++n) {
            for (std::size_t oy = 0; oy < rows.out; ++oy) {
                for (std::size_t ox = 0; ox < cols.out; ++ox, best_out += width) {
                    const std::size_t corner = ((n * s.height + oy * rows.stride) * s.width + ox * cols.stride) * width;
                    for (std::size_t v = 0; v < vectors; ++v) {
                        Batch best = Batch::load_unaligned(in + corner + v * lanes);
                        Indices index = indices_at(corner + v * lanes);
                        for (std::size_t ky = 0; ky < rows.window; ++ky) {
                            for (std::size_t kx = ky == 0 ? 1 : 0; kx < cols.window; ++kx) {
                                const std::size_t input = corner + (ky * s.width + kx) * width + v * lanes;
                                const Batch candidate = Batch::load_unaligned(in + input);
                                // xsimd::isnan, not candidate != candidate: xsimd compares ordered.
                                const auto larger = (candidate > best) | xsimd::isnan(candidate);
                                best = xsimd::select(larger, candidate, best);
                                if constexpr (tracking) {
                                    index = xsimd::bitwise_cast<Indices>(xsimd::select(
                                        larger, xsimd::bitwise_cast<Batch>(indices_at(input)), xsimd::bitwise_cast<Batch>(index)));
                                }
                            }
                        }
                        best.store_unaligned(best_out + v * lanes);
                        if constexpr (tracking) index.store_unaligned(index_out + v * lanes);
                    }
                    if constexpr (tracking) index_out += width;
                }
            }
        }
    };
    auto take = [&](auto track) {
        if (!(inside_image(rows) && inside_image(cols) && s.channels > 0)) return take_maxima(track);
        with_row_width(s.channels, [&](auto width) {
            if constexpr (std::is_same_v<T, float> && whole_batches<float, decltype(width)>()) {
                take_maxima_inside_batches(track, width);
            } else {
                take_maxima_inside(track);
            }
        });
    };
    recording ? take(std::true_type{}) : take(std::false_type{});
    return make_op<T>("max_pool2d", std::move(y), {x}, [chosen, chosen_count](Node<T>& out) {
        Node<T>& input = *out.inputs[0];
        if (!input.requires_grad) return;
        T* dx = grad_buffer(input).data();
        const T* dy = out.grad.data();
        for (std::size_t i = 0; i < chosen_count; ++i) dx[chosen[i]] += dy[i];
    });
}

template <class T>
BasicTensor<T> avg_pool2d(const BasicTensor<T>& x, Window2D pool, Window2D strides, Padding padding) {
    const ImageShape s = image_shape("avg_pool2d", x);
    const WindowAxis rows = plan_axis("avg_pool2d", "height", s.height, pool.height, strides.height, padding);
    const WindowAxis cols = plan_axis("avg_pool2d", "width", s.width, pool.width, strides.width, padding);
    // Each window's weight is 1 / the number of its elements inside the image: Keras averages
    // without the padding.
    auto weights = std::make_shared<std::vector<T>>(s.batch * rows.out * cols.out, T(0));
    for_each_window_tap(s, rows, cols, [&](std::size_t window, std::size_t, std::size_t) { (*weights)[window] += T(1); });
    for (T& weight : *weights) weight = T(1) / weight;
    xt::xarray<T> y = pooled_zeros<T>({s.batch, rows.out, cols.out, s.channels});
    const T* in = x.value().data();
    T* out_values = y.data();
    for_each_window_tap(s, rows, cols, [&](std::size_t window, std::size_t, std::size_t input) {
        const T weight = (*weights)[window];
        for (std::size_t c = 0; c < s.channels; ++c) out_values[window * s.channels + c] += weight * in[input + c];
    });
    return make_op<T>("avg_pool2d", std::move(y), {x}, [weights, s, rows, cols](Node<T>& out) {
        Node<T>& input = *out.inputs[0];
        if (!input.requires_grad) return;
        T* dx = grad_buffer(input).data();
        const T* dy = out.grad.data();
        for_each_window_tap(s, rows, cols, [&](std::size_t window, std::size_t, std::size_t offset) {
            const T weight = (*weights)[window];
            for (std::size_t c = 0; c < s.channels; ++c) dx[offset + c] += weight * dy[window * s.channels + c];
        });
    });
}

#define XTNN_INSTANTIATE_POOLING_OPS(T)                                                       \
    template BasicTensor<T> max_pool2d(const BasicTensor<T>&, Window2D, Window2D, Padding); \
    template BasicTensor<T> avg_pool2d(const BasicTensor<T>&, Window2D, Window2D, Padding);

XTNN_INSTANTIATE_POOLING_OPS(float)
XTNN_INSTANTIATE_POOLING_OPS(double)

}  // namespace xtnn::ops
