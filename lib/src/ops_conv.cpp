// Convolution of channels-last images (N, H, W, C), as Keras lays them out. conv2d lowers the
// batch, a few samples at a time, to matrix products: im2col gathers every output position's
// receptive field into a row, and cblas_sgemm multiplies by the (kh * kw * C, F) kernel. Stride-1
// layers skip im2col: with few filters the direct kernel (conv_direct.hpp) convolves straight
// from the image, with more and a 3x3 kernel Winograd's F(2x2, 3x3) (conv_winograd.hpp); their
// input gradients are the same convolutions of the output gradient with the kernel flipped.

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>

#include "conv_direct.hpp"
#include "conv_winograd.hpp"
#include "gemm.hpp"
#include "ops_internal.hpp"
#include "ops_window.hpp"
#include "xtnn/array_pool.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::ops {

using internal::image_shape;
using internal::ImageShape;
using internal::inside_image;
using internal::plan_axis;
using internal::source;
using internal::WindowAxis;

namespace {

// Calls copy(patch_offset, image_offset, length) for every window (n, oy, ox), in that order, and
// every kernel row ky: the part of the window's row inside the image is one contiguous run of the
// image and of the window's patch, (kw * C) values at most. pad(patch_offset, length) gets the
// parts of the patch that fall in the padding. Runs, not single taps: the work per call is a
// vector loop, not a few values behind index arithmetic.
template <class Copy, class Pad>
void for_each_window_run(const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols, Copy&& copy, Pad&& pad) {
    const std::size_t run = cols.window * s.channels;
    const std::size_t patch = rows.window * run;
    std::size_t patch_offset = 0;
    for (std::size_t n = 0; n < s.batch; ++n) {
        for (std::size_t oy = 0; oy < rows.out; ++oy) {
            for (std::size_t ox = 0; ox < cols.out; ++ox, patch_offset += patch) {
                const auto first_column = static_cast<std::ptrdiff_t>(ox * cols.stride) - static_cast<std::ptrdiff_t>(cols.pad_before);
                const auto kx_begin = static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(-first_column, 0, std::ptrdiff_t(cols.window)));
                const auto kx_end = static_cast<std::size_t>(std::clamp<std::ptrdiff_t>(std::ptrdiff_t(s.width) - first_column,
                                                                                        std::ptrdiff_t(kx_begin), std::ptrdiff_t(cols.window)));
                for (std::size_t ky = 0; ky < rows.window; ++ky) {
                    const std::size_t row_offset = patch_offset + ky * run;
                    const std::ptrdiff_t iy = source(rows, oy, ky);
                    if (iy < 0) {
                        pad(row_offset, run);
                        continue;
                    }
                    if (kx_begin > 0) pad(row_offset, kx_begin * s.channels);
                    const std::size_t image_offset =
                        ((n * s.height + std::size_t(iy)) * s.width + std::size_t(first_column + std::ptrdiff_t(kx_begin))) * s.channels;
                    copy(row_offset + kx_begin * s.channels, image_offset, (kx_end - kx_begin) * s.channels);
                    if (kx_end < cols.window) pad(row_offset + kx_end * s.channels, (cols.window - kx_end) * s.channels);
                }
            }
        }
    }
}

// Rows (n, oy, ox) of (kh, kw, C) receptive-field values, zeros in the padding.
template <class T>
void im2col(const T* x, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols, T* patches) {
    const std::size_t patch = rows.window * cols.window * s.channels;
    const std::size_t run = cols.window * s.channels;  // one kernel row: contiguous in the image
    if (inside_image(rows) && inside_image(cols)) {
        // No padding to test for: each kernel row of each window is one copy. With one channel
        // (a first layer) the copies are a few values each and the tests would dominate.
        for (std::size_t n = 0; n < s.batch; ++n) {
            for (std::size_t oy = 0; oy < rows.out; ++oy) {
                T* window_row = patches + (n * rows.out + oy) * cols.out * patch;
                for (std::size_t ky = 0; ky < rows.window; ++ky) {
                    const T* image_row = x + (n * s.height + oy * rows.stride + ky) * s.width * s.channels;
                    for (std::size_t ox = 0; ox < cols.out; ++ox) {
                        const T* in = image_row + ox * cols.stride * s.channels;
                        T* out = window_row + ox * patch + ky * run;
                        for (std::size_t i = 0; i < run; ++i) out[i] = in[i];
                    }
                }
            }
        }
        return;
    }
    for_each_window_run(
        s, rows, cols,
        [&](std::size_t patch_offset, std::size_t image_offset, std::size_t length) {
            // A loop, not memcpy: with one or a few channels a call would cost more than the copy.
            for (std::size_t i = 0; i < length; ++i) patches[patch_offset + i] = x[image_offset + i];
        },
        [&](std::size_t patch_offset, std::size_t length) { std::fill_n(patches + patch_offset, length, T(0)); });
}

// With one channel (a first layer), the patches transposed: (kh * kw) rows of one value per output
// position, row `tap` holding that tap of every window. im2col's rows would be a few values copied
// at a time; here each image row gives one contiguous run. gemm multiplies it transposed.
template <class T>
void im2col_transposed_single_channel(const T* x, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols,
                                      T* patches) {
    const std::size_t positions = s.batch * rows.out * cols.out;
    for (std::size_t ky = 0; ky < rows.window; ++ky) {
        for (std::size_t kx = 0; kx < cols.window; ++kx) {
            T* tap_row = patches + (ky * cols.window + kx) * positions;
            // The output columns whose tap lies inside the image: [ox_begin, ox_end).
            std::size_t ox_begin = 0;
            while (ox_begin < cols.out && source(cols, ox_begin, kx) < 0) ++ox_begin;
            std::size_t ox_end = cols.out;
            while (ox_end > ox_begin && source(cols, ox_end - 1, kx) < 0) --ox_end;
            for (std::size_t n = 0; n < s.batch; ++n) {
                for (std::size_t oy = 0; oy < rows.out; ++oy) {
                    T* out = tap_row + (n * rows.out + oy) * cols.out;
                    const std::ptrdiff_t iy = source(rows, oy, ky);
                    if (iy < 0 || ox_begin == ox_end) {
                        std::fill_n(out, cols.out, T(0));
                        continue;
                    }
                    const T* image_row = x + (n * s.height + std::size_t(iy)) * s.width;
                    // Column of output ox: ox * stride + shift (shift < 0 with padding before).
                    const std::ptrdiff_t shift = source(cols, ox_begin, kx) - std::ptrdiff_t(ox_begin * cols.stride);
                    std::fill_n(out, ox_begin, T(0));
                    for (std::size_t ox = ox_begin; ox < ox_end; ++ox) out[ox] = image_row[std::ptrdiff_t(ox * cols.stride) + shift];
                    std::fill_n(out + ox_end, cols.out - ox_end, T(0));
                }
            }
        }
    }
}

// The adjoint of im2col: adds each patch value back onto the input element it came from.
template <class T>
void col2im_add(const T* patches, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols, T* dx) {
    for_each_window_run(
        s, rows, cols,
        [&](std::size_t patch_offset, std::size_t image_offset, std::size_t length) {
            for (std::size_t i = 0; i < length; ++i) dx[image_offset + i] += patches[patch_offset + i];
        },
        [](std::size_t, std::size_t) {});
}

// Size of the patch matrix conv2d works on at a time.
constexpr std::size_t patch_buffer_bytes = std::size_t(2) << 20;

// Zeros around an image for the direct kernel, which only computes valid convolutions.
struct Border {
    std::size_t top, bottom, left, right;
    bool none() const { return top == 0 && bottom == 0 && left == 0 && right == 0; }
};

// The padding of a stride-1 convolution as a border: before each axis, and after it (what the
// last window reaches beyond the image).
Border padding_border(const WindowAxis& rows, const WindowAxis& cols) {
    auto after = [](const WindowAxis& axis) { return axis.out - 1 + axis.window - axis.in - axis.pad_before; };
    return {rows.pad_before, after(rows), cols.pad_before, after(cols)};
}

// Sample `n` of `images` (height, width, channels each) as the direct kernel reads it: in place
// when there is no border, else copied inside a zero border in `bordered`. Returns the image and
// its row stride.
template <class T>
std::pair<const T*, std::size_t> with_border(const T* images, std::size_t n, std::size_t height, std::size_t width,
                                             std::size_t channels, const Border& border, std::vector<T>& bordered) {
    const T* image = images + n * height * width * channels;
    if (border.none()) return {image, width * channels};
    const std::size_t row = (border.left + width + border.right) * channels;
    bordered.resize((border.top + height + border.bottom) * row);
    // Only the border is zeroed: the image overwrites the rest.
    T* out = bordered.data();
    std::fill_n(out, border.top * row, T(0));
    out += border.top * row;
    for (std::size_t y = 0; y < height; ++y, out += row) {
        std::fill_n(out, border.left * channels, T(0));
        std::copy_n(image + y * width * channels, width * channels, out + border.left * channels);
        std::fill_n(out + (border.left + width) * channels, border.right * channels, T(0));
    }
    std::fill_n(out, border.bottom * row, T(0));
    return {bordered.data(), row};
}

// y = conv2d(x, kernel) with stride 1, one sample at a time (needs direct_conv_fits(filters, ...)),
// calling finish(n, 1) once sample n's output is written.
template <class T, class Finish>
void direct_forward(const T* x, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols, const T* kernel,
                    std::size_t filters, T* y, Finish&& finish) {
    const Border border = padding_border(rows, cols);
    std::vector<T> bordered;
    const std::size_t out_size = rows.out * cols.out * filters;
    for (std::size_t n = 0; n < s.batch; ++n) {
        const auto [image, row_stride] = with_border(x, n, s.height, s.width, s.channels, border, bordered);
        detail::direct_conv(image, kernel, y + n * out_size,
                            {rows.out, cols.out, s.channels, filters, rows.window, cols.window, row_stride}, false);
        finish(n, std::size_t(1));
    }
}

// kernel_grad (+)= the kernel gradient of a stride-1 conv2d over the batch, sample after sample
// (needs direct_conv_fits(filters, ...)); `beta` 0 overwrites what kernel_grad holds.
template <class T>
void direct_kernel_gradient(const T* x, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols, const T* dy,
                            std::size_t filters, T beta, T* kernel_grad) {
    const Border border = padding_border(rows, cols);
    if (beta == T(0)) std::fill_n(kernel_grad, rows.window * cols.window * s.channels * filters, T(0));
    std::vector<T> bordered;
    const std::size_t out_size = rows.out * cols.out * filters;
    for (std::size_t n = 0; n < s.batch; ++n) {
        const auto [image, row_stride] = with_border(x, n, s.height, s.width, s.channels, border, bordered);
        detail::direct_kernel_gradient(image, dy + n * out_size, kernel_grad,
                                       {rows.out, cols.out, s.channels, filters, rows.window, cols.window, row_stride});
    }
}

// The input gradient of a stride-1 conv2d is a valid convolution of dy, bordered so that every
// input position sees every tap that read it, with the kernel flipped in both axes and its channel
// axes swapped. This is that border.
Border input_gradient_border(const WindowAxis& rows, const WindowAxis& cols) {
    const Border padding = padding_border(rows, cols);
    return {rows.window - 1 - padding.top, rows.window - 1 - padding.bottom, cols.window - 1 - padding.left,
            cols.window - 1 - padding.right};
}

// ... and this that kernel: (kh, kw, F, C) from (kh, kw, C, F).
template <class T>
std::vector<T> flipped_kernel(const T* kernel, std::size_t taps, std::size_t channels, std::size_t filters) {
    std::vector<T> flipped(taps * channels * filters);
    for (std::size_t tap = 0; tap < taps; ++tap) {
        const T* from = kernel + (taps - 1 - tap) * channels * filters;
        T* to = flipped.data() + tap * filters * channels;
        for (std::size_t c = 0; c < channels; ++c) {
            for (std::size_t f = 0; f < filters; ++f) to[f * channels + c] = from[c * filters + f];
        }
    }
    return flipped;
}

// dx (+)= the input gradient of a stride-1 conv2d by the direct kernel (needs
// direct_conv_fits(channels, ...)); `beta` 0 overwrites dx.
template <class T>
void direct_input_gradient(const T* dy, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols,
                           const T* kernel, std::size_t filters, T beta, T* dx) {
    const Border border = input_gradient_border(rows, cols);
    const std::vector<T> flipped = flipped_kernel(kernel, rows.window * cols.window, s.channels, filters);
    std::vector<T> bordered;
    const std::size_t image_size = s.height * s.width * s.channels;
    for (std::size_t n = 0; n < s.batch; ++n) {
        const auto [image, row_stride] = with_border(dy, n, rows.out, cols.out, filters, border, bordered);
        detail::direct_conv(image, flipped.data(), dx + n * image_size,
                            {s.height, s.width, filters, s.channels, rows.window, cols.window, row_stride}, beta != T(0));
    }
}

// F(2x2, 3x3) reads whole 4x4 tiles: an odd output size needs one more zero row or column.
Border winograd_border(Border border, std::size_t out_height, std::size_t out_width) {
    border.bottom += out_height % 2;
    border.right += out_width % 2;
    return border;
}

// A (3, 3, channels, filters) kernel as F(2x2, 3x3) multiplies by it.
template <class T>
xt::xarray<T> winograd_kernel(const T* kernel, std::size_t channels, std::size_t filters) {
    xt::xarray<T> transformed = pooled_empty<T>({16 * channels * filters});
    detail::winograd_kernel(kernel, channels, filters, transformed.data());
    return transformed;
}

// Calls step(n, image, shape, bands, inputs, products) for each of `batch` images (height, width,
// channels) inside `border`, plus the zero row or column F(2x2, 3x3) needs past an odd output
// size: what winograd_conv and winograd_transformed_gradient take after their own arguments.
template <class T, class Step>
void for_each_winograd_image(const T* images, std::size_t batch, std::size_t height, std::size_t width,
                             std::size_t channels, Border border, std::size_t filters, Step&& step) {
    const std::size_t out_height = border.top + height + border.bottom - 2;
    const std::size_t out_width = border.left + width + border.right - 2;
    border = winograd_border(border, out_height, out_width);
    const auto bands = detail::WinogradBands::of<T>(out_height, out_width, channels, filters);
    PooledArray<T> inputs(pooled_empty<T>({bands.input_values()}));
    PooledArray<T> products(pooled_empty<T>({bands.product_values()}));
    std::vector<T> bordered;
    for (std::size_t n = 0; n < batch; ++n) {
        const auto [image, row_stride] = with_border(images, n, height, width, channels, border, bordered);
        step(n, image, detail::WinogradShape{out_height, out_width, channels, filters, row_stride}, bands,
             inputs.values.data(), products.values.data());
    }
}

// out = (or += with `add`) the valid 3x3 convolution of each of `batch` images (height, width,
// channels; inside `border`) with a kernel from winograd_kernel, by F(2x2, 3x3), calling
// finish(n, 1) once image n's output is written.
template <class T, class Finish>
void winograd_images(const T* images, std::size_t batch, std::size_t height, std::size_t width, std::size_t channels,
                     Border border, const T* transformed, std::size_t filters, bool add, T* out, Finish&& finish) {
    for_each_winograd_image(images, batch, height, width, channels, border, filters,
                            [&](std::size_t n, const T* image, const detail::WinogradShape& shape, const auto&... work) {
                                const std::size_t out_size = shape.out_height * shape.out_width * filters;
                                detail::winograd_conv(image, transformed, out + n * out_size, shape, add, work...);
                                finish(n, std::size_t(1));
                            });
}

// The finish of a convolution with no epilogue.
constexpr auto nothing_more = [](std::size_t, std::size_t) {};

// kernel_grad = (or += with `add`) the kernel gradient, by F(2x2, 3x3), of the valid 3x3
// convolution of each of `batch` images (height, width, channels; inside `border`) whose output
// gradient is `dy`.
template <class T>
void winograd_kernel_gradient(const T* images, std::size_t batch, std::size_t height, std::size_t width,
                              std::size_t channels, Border border, const T* dy, std::size_t filters, bool add,
                              T* kernel_grad) {
    PooledArray<T> transformed_grad(pooled_zeros<T>({16 * channels * filters}));
    for_each_winograd_image(images, batch, height, width, channels, border, filters,
                            [&](std::size_t n, const T* image, const detail::WinogradShape& shape, const auto&... work) {
                                const std::size_t out_size = shape.out_height * shape.out_width * filters;
                                detail::winograd_transformed_gradient(image, dy + n * out_size,
                                                                      transformed_grad.values.data(), shape, work...);
                            });
    detail::winograd_kernel_gradient(transformed_grad.values.data(), channels, filters, add, kernel_grad);
}

}  // namespace

Padding padding_from_name(const std::string& name) {
    if (name == "valid") return Padding::valid;
    if (name == "same") return Padding::same;
    throw ValueError("unknown padding '" + name + "'; known: same, valid");
}

std::string padding_name(Padding padding) { return padding == Padding::valid ? "valid" : "same"; }

Shape conv_output_shape(const Shape& input, std::size_t filters, Window2D kernel, Window2D strides, Padding padding,
                        const char* op) {
    if (input.size() != 3) {
        throw ShapeError(std::string(op) + ": expected input of shape (height, width, channels), got " +
                         batch_shape_to_string(input));
    }
    const auto rows = plan_axis(op, "height", input[0], kernel.height, strides.height, padding);
    const auto cols = plan_axis(op, "width", input[1], kernel.width, strides.width, padding);
    return {rows.out, cols.out, filters == 0 ? input[2] : filters};
}

namespace {

// What follows the convolution inside the op.
enum class Epilogue { none, bias, bias_relu };

// conv2d, then the bias (and relu) of `epilogue` on each sample's (or chunk's) output as soon as it
// is written: add_bias's bits, while the output is in cache. The backward pass hands the
// convolution dy itself (bias) or dy masked by relu, in one pass that also sums the bias gradient.
template <class T>
BasicTensor<T> convolve(const char* name, const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>* bias,
                        Epilogue epilogue, Window2D strides, Padding padding) {
    const ImageShape s = image_shape(name, x);
    if (kernel.dimension() != 4 || kernel.shape()[2] != s.channels) {
        throw ShapeError(std::string(name) + ": the kernel must have shape (height, width, " + std::to_string(s.channels) +
                         ", filters) for input " + shape_to_string(x.shape()) + ", got " + shape_to_string(kernel.shape()));
    }
    const WindowAxis rows = plan_axis(name, "height", s.height, kernel.shape()[0], strides.height, padding);
    const WindowAxis cols = plan_axis(name, "width", s.width, kernel.shape()[1], strides.width, padding);
    const std::size_t filters = kernel.shape()[3];
    if (bias && (bias->dimension() != 1 || bias->shape()[0] != filters)) {
        throw ShapeError(std::string(name) + ": the bias must have shape (" + std::to_string(filters) + ",) for a kernel of shape " +
                         shape_to_string(kernel.shape()) + ", got " + shape_to_string(bias->shape()));
    }
    const std::size_t patch = rows.window * cols.window * s.channels;
    const std::size_t positions = rows.out * cols.out;  // per sample
    const std::size_t image_size = s.height * s.width * s.channels;
    // Samples per chunk: enough rows for an efficient product, few enough that the patch matrix
    // stays in cache (the whole batch's patches would be 660 MB for the book's CNN at batch 1000).
    const std::size_t chunk = std::max<std::size_t>(1, patch_buffer_bytes / std::max<std::size_t>(1, positions * patch * sizeof(T)));

    const bool unit_strides = strides == Window2D{1, 1};
    const std::size_t kernel_values = kernel.size();
    const bool direct = unit_strides && detail::direct_conv_fits<T>(filters, kernel_values);
    const bool direct_input_grad = unit_strides && detail::direct_conv_fits<T>(s.channels, kernel_values);
    // Winograd where the direct kernel does not fit: many filters (or input channels, for the
    // input gradient, a convolution with the two swapped).
    const bool winograd = unit_strides && !direct && detail::winograd_fits<T>(rows.window, cols.window, s.channels, filters);
    const bool winograd_input_grad =
        unit_strides && !direct_input_grad && detail::winograd_fits<T>(rows.window, cols.window, filters, s.channels);

    xt::xarray<T> y = pooled_empty<T>({s.batch, rows.out, cols.out, filters});
    const auto finish = [&](std::size_t first, std::size_t count) {
        T* out = y.data() + first * positions * filters;
        const internal::Rows values{count * positions, filters};
        if (epilogue == Epilogue::bias) internal::add_bias<false>(out, bias->value().data(), out, values);
        if (epilogue == Epilogue::bias_relu) internal::add_bias<true>(out, bias->value().data(), out, values);
    };
    if (direct && positions > 0) {
        direct_forward(x.value().data(), s, rows, cols, kernel.value().data(), filters, y.data(), finish);
    } else if (winograd && positions > 0) {
        const PooledArray<T> transformed(winograd_kernel(kernel.value().data(), s.channels, filters));
        winograd_images(x.value().data(), s.batch, s.height, s.width, s.channels, padding_border(rows, cols),
                        transformed.values.data(), filters, false, y.data(), finish);
    } else if (s.batch > 0 && positions > 0 && filters > 0) {
        // Pooled and not zero-filled: im2col writes every element (zeros in the padding).
        PooledArray<T> patches(pooled_empty<T>({std::min(chunk, s.batch) * positions * patch}));
        for (std::size_t first = 0; first < s.batch; first += chunk) {
            const ImageShape part{std::min(chunk, s.batch - first), s.height, s.width, s.channels};
            const std::size_t m = part.batch * positions;
            const T* image = x.value().data() + first * image_size;
            T* out = y.data() + first * positions * filters;
            if (s.channels == 1) {
                im2col_transposed_single_channel(image, part, rows, cols, patches.values.data());
                detail::gemm<T>(true, false, m, filters, patch, T(1), patches.values.data(), m, kernel.value().data(),
                                filters, T(0), out, filters);
            } else {
                im2col(image, part, rows, cols, patches.values.data());
                detail::gemm<T>(false, false, m, filters, patch, T(1), patches.values.data(), patch, kernel.value().data(),
                                filters, T(0), out, filters);
            }
            finish(first, part.batch);
        }
    }
    auto inputs = bias ? std::vector<BasicTensor<T>>{x, kernel, *bias} : std::vector<BasicTensor<T>>{x, kernel};
    return make_op<T>(name, std::move(y), std::move(inputs), [=](Node<T>& out) {
        Node<T>& input = *out.inputs[0];
        Node<T>& weights = *out.inputs[1];
        const T* output_grad = out.grad.data();
        PooledArray<T> passed(pooled_empty<T>({0}));
        if (epilogue != Epilogue::none) {
            Node<T>& b = *out.inputs[2];
            T* db = b.requires_grad ? grad_buffer(b).data() : nullptr;
            const internal::Rows values{s.batch * positions, filters};
            if (epilogue == Epilogue::bias_relu && (input.requires_grad || weights.requires_grad)) {
                passed.values = pooled_empty<T>(out.grad.shape());
                internal::bias_backward<true>(out.value.data(), out.grad.data(), passed.values.data(),
                                              internal::BiasGradientTo::write, db, values);
                output_grad = passed.values.data();
            } else if (epilogue == Epilogue::bias_relu && db) {
                internal::bias_backward<true>(out.value.data(), out.grad.data(), static_cast<T*>(nullptr),
                                              internal::BiasGradientTo::none, db, values);
            } else if (db) {
                internal::bias_backward<false>(static_cast<const T*>(nullptr), out.grad.data(), static_cast<T*>(nullptr),
                                               internal::BiasGradientTo::none, db, values);
            }
        }
        if (s.batch == 0 || positions == 0 || filters == 0) return;
        // The patches are rebuilt chunk by chunk rather than kept from the forward pass: im2col is
        // cheap next to the products, and the working set stays in cache.
        const std::size_t patch_values = std::min(chunk, s.batch) * positions * patch;
        const bool patch_kernel_gradient = weights.requires_grad && !direct && !winograd;
        PooledArray<T> patches(pooled_empty<T>({patch_kernel_gradient ? patch_values : 0}));
        const bool patch_gradients = input.requires_grad && !direct_input_grad && !winograd_input_grad;
        PooledArray<T> patch_grads(pooled_empty<T>({patch_gradients ? patch_values : 0}));
        T* kernel_grad = nullptr;
        T kernel_beta = T(1);  // the first chunk may overwrite a fresh kernel gradient, the rest add
        if (weights.requires_grad) std::tie(kernel_grad, kernel_beta) = grad_destination(weights);
        T* input_grad = nullptr;
        T input_beta = T(1);
        if (input.requires_grad && !patch_gradients) std::tie(input_grad, input_beta) = grad_destination(input);
        // Winograd works sample by sample over the whole batch (no patch matrix to keep small);
        // its kernel gradient sums in the transformed domain first.
        if (weights.requires_grad && winograd) {
            winograd_kernel_gradient(input.value.data(), s.batch, s.height, s.width, s.channels, padding_border(rows, cols),
                                     output_grad, filters, kernel_beta != T(0), kernel_grad);
        }
        if (input.requires_grad && winograd_input_grad) {
            const std::vector<T> flipped = flipped_kernel(weights.value.data(), rows.window * cols.window, s.channels, filters);
            const PooledArray<T> transformed(winograd_kernel(flipped.data(), filters, s.channels));
            winograd_images(output_grad, s.batch, rows.out, cols.out, filters, input_gradient_border(rows, cols),
                            transformed.values.data(), s.channels, input_beta != T(0), input_grad, nothing_more);
        }
        for (std::size_t first = 0; first < s.batch; first += chunk) {
            const ImageShape part{std::min(chunk, s.batch - first), s.height, s.width, s.channels};
            const std::size_t m = part.batch * positions;
            const T* dy = output_grad + first * positions * filters;
            if (weights.requires_grad && direct) {
                direct_kernel_gradient(input.value.data() + first * image_size, part, rows, cols, dy, filters,
                                       kernel_beta, kernel_grad);
                kernel_beta = T(1);
            } else if (patch_kernel_gradient) {
                const T* image = input.value.data() + first * image_size;
                if (s.channels == 1) {
                    im2col_transposed_single_channel(image, part, rows, cols, patches.values.data());
                    detail::gemm<T>(false, false, patch, filters, m, T(1), patches.values.data(), m, dy, filters,
                                    kernel_beta, kernel_grad, filters);
                } else {
                    im2col(image, part, rows, cols, patches.values.data());
                    detail::gemm<T>(true, false, patch, filters, m, T(1), patches.values.data(), patch, dy, filters,
                                    kernel_beta, kernel_grad, filters);
                }
                kernel_beta = T(1);
            }
            if (patch_gradients) {
                detail::gemm<T>(false, true, m, patch, filters, T(1), dy, filters, weights.value.data(), filters, T(0),
                                patch_grads.values.data(), patch);
                col2im_add(patch_grads.values.data(), part, rows, cols, grad_buffer(input).data() + first * image_size);
            } else if (input.requires_grad && !winograd_input_grad) {
                // Each chunk has its own part of dx (a fresh gradient is written in every chunk).
                direct_input_gradient(dy, part, rows, cols, weights.value.data(), filters, input_beta,
                                      input_grad + first * image_size);
            }
        }
    });
}

}  // namespace

template <class T>
BasicTensor<T> conv2d(const BasicTensor<T>& x, const BasicTensor<T>& kernel, Window2D strides, Padding padding) {
    return convolve<T>("conv2d", x, kernel, nullptr, Epilogue::none, strides, padding);
}

template <class T>
BasicTensor<T> conv2d_bias(const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>& bias,
                           Window2D strides, Padding padding) {
    return convolve<T>("conv2d_bias", x, kernel, &bias, Epilogue::bias, strides, padding);
}

template <class T>
BasicTensor<T> conv2d_bias_relu(const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>& bias,
                                Window2D strides, Padding padding) {
    return convolve<T>("conv2d_bias_relu", x, kernel, &bias, Epilogue::bias_relu, strides, padding);
}

#define XTNN_INSTANTIATE_CONV2D(T)                                                                                              \
    template BasicTensor<T> conv2d(const BasicTensor<T>&, const BasicTensor<T>&, Window2D, Padding);                          \
    template BasicTensor<T> conv2d_bias(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, Window2D, Padding); \
    template BasicTensor<T> conv2d_bias_relu(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, Window2D, Padding);
XTNN_INSTANTIATE_CONV2D(float)
XTNN_INSTANTIATE_CONV2D(double)
#undef XTNN_INSTANTIATE_CONV2D

}  // namespace xtnn::ops
