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
#include "conv_im2col.hpp"
#include "conv_winograd.hpp"
#include "gemm.hpp"
#include "ops_internal.hpp"
#include "ops_window.hpp"
#include "parallel.hpp"
#include "xtnn/array_pool.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::ops {

using internal::col2im_add;
using internal::im2col;
using internal::im2col_transposed_single_channel;
using internal::image_shape;
using internal::ImageShape;
using internal::plan_axis;
using internal::WindowAxis;

namespace {

// Size of the patch matrix conv2d works on at a time.
constexpr std::size_t patch_buffer_bytes = std::size_t(2) << 20;

// Work worth handing to another thread: about 40-80 us, against a few to hand it over.
constexpr double min_flops_per_task = double(1 << 22);

// The kernel gradient sums the batch in groups of this many samples, the groups' sums then added
// in order, so that the threads can take whole groups and the bits stay those of one thread.
constexpr std::size_t samples_per_kernel_gradient_sum = 16;

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

// dx (+)= the input gradient of a stride-1 conv2d by the direct kernel, from the kernel flipped by
// flipped_kernel (needs direct_conv_fits(channels, ...)); `beta` 0 overwrites dx.
template <class T>
void direct_input_gradient(const T* dy, const ImageShape& s, const WindowAxis& rows, const WindowAxis& cols,
                           const T* flipped, std::size_t filters, T beta, T* dx) {
    const Border border = input_gradient_border(rows, cols);
    std::vector<T> bordered;
    const std::size_t image_size = s.height * s.width * s.channels;
    for (std::size_t n = 0; n < s.batch; ++n) {
        const auto [image, row_stride] = with_border(dy, n, rows.out, cols.out, filters, border, bordered);
        detail::direct_conv(image, flipped, dx + n * image_size,
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
enum class Epilogue { none, bias, bias_relu, normalize, normalize_relu };

// conv2d, then the bias (and relu) of `epilogue` on each sample's (or chunk's) output as soon as it
// is written: add_bias's bits, while the output is in cache. The backward pass hands the
// convolution dy itself (bias) or dy masked by relu, in one pass that also sums the bias gradient.
// The normalize epilogues add the bias if there is one, then normalize by `given` (and apply
// relu), in inference only: they record no backward pass.
template <class T>
BasicTensor<T> convolve(const char* name, const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>* bias,
                        Epilogue epilogue, Window2D strides, Padding padding,
                        const internal::GivenNormalization<T>* given = nullptr) {
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
        const T* bias_values = bias ? bias->value().data() : nullptr;
        if (epilogue == Epilogue::normalize) internal::add_bias_then_normalize<false>(out, bias_values, *given, out, values);
        if (epilogue == Epilogue::normalize_relu) internal::add_bias_then_normalize<true>(out, bias_values, *given, out, values);
    };
    const double flops_per_sample = 2.0 * double(positions) * double(patch) * double(filters);
    const std::size_t min_samples_per_task = std::size_t(min_flops_per_task / std::max(1.0, flops_per_sample)) + 1;
    const PooledArray<T> transformed(winograd ? winograd_kernel(kernel.value().data(), s.channels, filters) : pooled_empty<T>({0}));
    // Samples [first, last): each output sample depends on its input sample alone, so the threads'
    // ranges give the same bits as one pass.
    const auto forward = [&](std::size_t first, std::size_t last) {
        const ImageShape part{last - first, s.height, s.width, s.channels};
        const T* images = x.value().data() + first * image_size;
        T* out = y.data() + first * positions * filters;
        const auto finish_part = [&](std::size_t n, std::size_t count) { finish(first + n, count); };
        if (direct) {
            direct_forward(images, part, rows, cols, kernel.value().data(), filters, out, finish_part);
        } else if (winograd) {
            winograd_images(images, part.batch, s.height, s.width, s.channels, padding_border(rows, cols),
                            transformed.values.data(), filters, false, out, finish_part);
        } else {
            // Pooled and not zero-filled: im2col writes every element (zeros in the padding).
            PooledArray<T> patches(pooled_empty<T>({std::min(chunk, part.batch) * positions * patch}));
            for (std::size_t n = 0; n < part.batch; n += chunk) {
                const ImageShape piece{std::min(chunk, part.batch - n), s.height, s.width, s.channels};
                const std::size_t m = piece.batch * positions;
                const T* image = images + n * image_size;
                T* piece_out = out + n * positions * filters;
                if (s.channels == 1) {
                    im2col_transposed_single_channel(image, piece, rows, cols, patches.values.data());
                    detail::gemm<T>(true, false, m, filters, patch, T(1), patches.values.data(), m, kernel.value().data(),
                                    filters, T(0), piece_out, filters);
                } else {
                    im2col(image, piece, rows, cols, patches.values.data());
                    detail::gemm<T>(false, false, m, filters, patch, T(1), patches.values.data(), patch,
                                    kernel.value().data(), filters, T(0), piece_out, filters);
                }
                finish_part(n, piece.batch);
            }
        }
    };
    if (s.batch > 0 && positions > 0 && filters > 0) {
        if (direct || winograd) {
            detail::run_ranges(s.batch, min_samples_per_task, forward);
        } else {
            // Whole chunks: a product's last bits can depend on its number of rows.
            const std::size_t chunks = (s.batch + chunk - 1) / chunk;
            detail::run_ranges(chunks, min_samples_per_task / chunk + 1, [&](std::size_t first, std::size_t last) {
                forward(first * chunk, std::min(s.batch, last * chunk));
            });
        }
    }

    if (given) {
        // Inference records no graph; the op's name still tells anomaly detection what made it.
        BasicTensor<T> result = BasicTensor<T>::constant(std::move(y));
        result.node()->op = name;
        return result;
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
        const bool patch_kernel_gradient = weights.requires_grad && !direct && !winograd;
        const bool patch_gradients = input.requires_grad && !direct_input_grad && !winograd_input_grad;
        T* kernel_grad = nullptr;
        T kernel_beta = T(1);
        if (weights.requires_grad) std::tie(kernel_grad, kernel_beta) = grad_destination(weights);
        T* input_grad = nullptr;
        T input_beta = T(1);
        if (patch_gradients) input_grad = grad_buffer(input).data();
        if (input.requires_grad && !patch_gradients) std::tie(input_grad, input_beta) = grad_destination(input);
        // The input gradient convolves dy with the kernel flipped (and, for Winograd, transformed).
        std::vector<T> flipped;
        if (input.requires_grad && (direct_input_grad || winograd_input_grad)) {
            flipped = flipped_kernel(weights.value.data(), rows.window * cols.window, s.channels, filters);
        }
        const PooledArray<T> transformed_flipped(winograd_input_grad && input.requires_grad
                                                     ? winograd_kernel(flipped.data(), filters, s.channels)
                                                     : pooled_empty<T>({0}));
        // The kernel gradient sums over the batch in fixed groups of samples, each group's sum
        // then added in group order: the threads take whole groups, so the bits do not depend on
        // how many there are.
        const std::size_t groups = (s.batch + samples_per_kernel_gradient_sum - 1) / samples_per_kernel_gradient_sum;
        PooledArray<T> group_sums(pooled_empty<T>({weights.requires_grad && groups > 1 ? groups * kernel_values : 0}));
        // Samples [first, last), their kernel gradient written to (or, with beta 1, added onto) `sum`.
        const auto backward = [&](std::size_t first, std::size_t last, T* sum, T beta) {
            const ImageShape part{last - first, s.height, s.width, s.channels};
            const T* images = input.value.data() + first * image_size;
            const T* dy = output_grad + first * positions * filters;
            if (weights.requires_grad && direct) {
                direct_kernel_gradient(images, part, rows, cols, dy, filters, beta, sum);
            } else if (weights.requires_grad && winograd) {
                winograd_kernel_gradient(images, part.batch, s.height, s.width, s.channels, padding_border(rows, cols), dy,
                                         filters, beta != T(0), sum);
            }
            if (input.requires_grad && direct_input_grad) {
                direct_input_gradient(dy, part, rows, cols, flipped.data(), filters, input_beta, input_grad + first * image_size);
            } else if (input.requires_grad && winograd_input_grad) {
                winograd_images(dy, part.batch, rows.out, cols.out, filters, input_gradient_border(rows, cols),
                                transformed_flipped.values.data(), s.channels, input_beta != T(0),
                                input_grad + first * image_size, nothing_more);
            }
            if (!patch_kernel_gradient && !patch_gradients) return;
            // The patches are rebuilt chunk by chunk rather than kept from the forward pass:
            // im2col is cheap next to the products, and the working set stays in cache.
            const std::size_t patch_values = std::min(chunk, part.batch) * positions * patch;
            PooledArray<T> patches(pooled_empty<T>({patch_kernel_gradient ? patch_values : 0}));
            PooledArray<T> patch_grads(pooled_empty<T>({patch_gradients ? patch_values : 0}));
            for (std::size_t n = 0; n < part.batch; n += chunk) {
                const ImageShape piece{std::min(chunk, part.batch - n), s.height, s.width, s.channels};
                const std::size_t m = piece.batch * positions;
                const T* image = images + n * image_size;
                const T* piece_dy = dy + n * positions * filters;
                if (patch_kernel_gradient && s.channels == 1) {
                    im2col_transposed_single_channel(image, piece, rows, cols, patches.values.data());
                    detail::gemm<T>(false, false, patch, filters, m, T(1), patches.values.data(), m, piece_dy, filters, beta,
                                    sum, filters);
                } else if (patch_kernel_gradient) {
                    im2col(image, piece, rows, cols, patches.values.data());
                    detail::gemm<T>(true, false, patch, filters, m, T(1), patches.values.data(), patch, piece_dy, filters,
                                    beta, sum, filters);
                }
                beta = T(1);
                if (patch_gradients) {
                    detail::gemm<T>(false, true, m, patch, filters, T(1), piece_dy, filters, weights.value.data(), filters,
                                    T(0), patch_grads.values.data(), patch);
                    col2im_add(patch_grads.values.data(), piece, rows, cols, input_grad + (first + n) * image_size);
                }
            }
        };
        const std::size_t min_groups_per_task =
            std::size_t(min_flops_per_task / (2.0 * flops_per_sample * double(samples_per_kernel_gradient_sum))) + 1;
        detail::run_ranges(groups, min_groups_per_task, [&](std::size_t first_group, std::size_t last_group) {
            for (std::size_t group = first_group; group < last_group; ++group) {
                const std::size_t first = group * samples_per_kernel_gradient_sum;
                const std::size_t last = std::min(s.batch, first + samples_per_kernel_gradient_sum);
                if (groups == 1) {
                    backward(first, last, kernel_grad, kernel_beta);
                } else {
                    backward(first, last, weights.requires_grad ? group_sums.values.data() + group * kernel_values : nullptr, T(0));
                }
            }
        });
        if (!weights.requires_grad || groups == 1) return;
        for (std::size_t group = 0; group < groups; ++group) {
            const T* group_sum = group_sums.values.data() + group * kernel_values;
            if (group == 0 && kernel_beta == T(0)) {
                std::copy_n(group_sum, kernel_values, kernel_grad);
            } else {
                for (std::size_t i = 0; i < kernel_values; ++i) kernel_grad[i] += group_sum[i];
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

template <class T>
BasicTensor<T> conv2d_batch_norm_inference(const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>* bias,
                                           const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                                           const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon, bool relu,
                                           Window2D strides, Padding padding) {
    const char* name = "conv2d_batch_norm_inference";
    if (grad_enabled()) {
        for (const BasicTensor<T>* input : {&x, &kernel, bias, &gamma, &beta}) {
            if (input && input->requires_grad()) {
                throw ValueError(std::string(name) + ": records no backward pass, but an input requires a gradient; "
                                 "call it under NoGradGuard, or use conv2d_bias and batch_norm_inference");
            }
        }
    }
    if (kernel.dimension() != 4) {
        throw ShapeError(std::string(name) + ": the kernel must have shape (height, width, channels, filters), got " +
                         shape_to_string(kernel.shape()));
    }
    const std::size_t filters = kernel.shape()[3];
    for (const xt::xarray<T>* values : {&mean, &variance, &gamma.value(), &beta.value()}) {
        if (values->dimension() != 1 || values->shape()[0] != filters) {
            throw ShapeError(std::string(name) + ": a per-channel parameter of shape " + shape_to_string(values->shape()) +
                             " does not fit a kernel of shape " + shape_to_string(kernel.shape()) + "; expected (" +
                             std::to_string(filters) + ",)");
        }
    }
    const internal::GivenNormalization<T> given(mean, variance, gamma.value(), beta.value(), epsilon);
    return convolve<T>(name, x, kernel, bias, relu ? Epilogue::normalize_relu : Epilogue::normalize, strides, padding, &given);
}

#define XTNN_INSTANTIATE_CONV2D(T)                                                                                              \
    template BasicTensor<T> conv2d(const BasicTensor<T>&, const BasicTensor<T>&, Window2D, Padding);                          \
    template BasicTensor<T> conv2d_bias(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, Window2D, Padding); \
    template BasicTensor<T> conv2d_bias_relu(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, Window2D, Padding); \
    template BasicTensor<T> conv2d_batch_norm_inference(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>*,       \
                                                        const xt::xarray<T>&, const xt::xarray<T>&, const BasicTensor<T>&,      \
                                                        const BasicTensor<T>&, T, bool, Window2D, Padding);
XTNN_INSTANTIATE_CONV2D(float)
XTNN_INSTANTIATE_CONV2D(double)
#undef XTNN_INSTANTIATE_CONV2D

}  // namespace xtnn::ops
