#pragma once
// im2col and its adjoint for convolutions the direct kernel and Winograd do not take (strides,
// large kernels, many filters and channels): every output position's receptive field as one row
// of a patch matrix that cblas_sgemm multiplies by the (kh * kw * C, F) kernel. Internal: included
// by ops_conv.cpp only.

#include <algorithm>
#include <cstddef>

#include "ops_window.hpp"

namespace xtnn::ops::internal {

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

}  // namespace xtnn::ops::internal
