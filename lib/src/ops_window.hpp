#pragma once
// Sliding windows over channels-last images (N, H, W, C), shared by convolution and pooling: the
// image's shape, one axis's sizes and padding, and the walk over every window's taps. Internal:
// included by ops_conv.cpp and ops_pooling.cpp only.

#include <cstddef>
#include <string>

#include "xtnn/error.hpp"
#include "xtnn/ops.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn::ops::internal {

// One spatial axis of a sliding window: sizes, and the padding before the first element.
struct WindowAxis {
    std::size_t in, window, stride, out, pad_before;
};

inline WindowAxis plan_axis(const char* op, const char* axis, std::size_t in, std::size_t window,
                            std::size_t stride, Padding padding) {
    if (window == 0 || stride == 0) {
        throw ValueError(std::string(op) + ": window and stride along the " + axis + " must be positive, got " +
                         std::to_string(window) + " and " + std::to_string(stride));
    }
    if (padding == Padding::valid) {
        if (in < window) {
            throw ShapeError(std::string(op) + ": the " + axis + " of the input (" + std::to_string(in) +
                             ") is smaller than the window (" + std::to_string(window) + ") with padding 'valid'");
        }
        return {in, window, stride, (in - window) / stride + 1, 0};
    }
    // "same": ceil(in / stride) outputs, the padding split as TensorFlow does (the extra one after).
    const std::size_t out = (in + stride - 1) / stride;
    const std::size_t needed = (out - 1) * stride + window;
    const std::size_t total = needed > in ? needed - in : 0;
    return {in, window, stride, out, total / 2};
}

struct ImageShape {
    std::size_t batch, height, width, channels;
};

template <class T>
ImageShape image_shape(const char* op, const BasicTensor<T>& x) {
    if (x.dimension() != 4) {
        throw ShapeError(std::string(op) + ": expected images of shape (batch, height, width, channels), got " +
                         shape_to_string(x.shape()));
    }
    return {x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]};
}

// The input row of output position `o` and window offset `k`, or -1 in the padding.
inline std::ptrdiff_t source(const WindowAxis& axis, std::size_t o, std::size_t k) {
    const auto position = static_cast<std::ptrdiff_t>(o * axis.stride + k) - static_cast<std::ptrdiff_t>(axis.pad_before);
    return position >= 0 && position < static_cast<std::ptrdiff_t>(axis.in) ? position : -1;
}

// Calls visit(window, tap, input) for every output position, in row-major (n, oy, ox) order
// numbered by `window`, and every element of its window inside the image: `tap` is the
// element's place in the window (ky * kernel width + kx), `input` the offset of its first
// channel in the image batch. Padding is skipped.
template <class Visit>
void for_each_window_tap(const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols, Visit&& visit) {
    std::size_t window = 0;
    for (std::size_t n = 0; n < s.batch; ++n) {
        for (std::size_t oy = 0; oy < rows.out; ++oy) {
            for (std::size_t ox = 0; ox < cols.out; ++ox, ++window) {
                for (std::size_t ky = 0; ky < rows.window; ++ky) {
                    const std::ptrdiff_t iy = source(rows, oy, ky);
                    if (iy < 0) continue;
                    for (std::size_t kx = 0; kx < cols.window; ++kx) {
                        const std::ptrdiff_t ix = source(cols, ox, kx);
                        if (ix < 0) continue;
                        visit(window, ky * cols.window + kx,
                              ((n * s.height + std::size_t(iy)) * s.width + std::size_t(ix)) * s.channels);
                    }
                }
            }
        }
    }
}

// Whether every window along the axis lies inside the input (always so with "valid").
inline bool inside_image(const WindowAxis& axis) {
    return axis.pad_before == 0 && (axis.out - 1) * axis.stride + axis.window <= axis.in;
}

}  // namespace xtnn::ops::internal
