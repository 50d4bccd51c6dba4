#pragma once
// A stride-1 convolution read straight from the image, without im2col, for layers with few
// filters (one to four SIMD registers of output channels), and its kernel gradient. im2col writes
// every receptive field out (9x the image for a 3x3 kernel) and OpenBLAS copies those patches once
// more into its packed layout; with 8 or 16 filters the product is too narrow to pay for both, and
// the two copies took as long as the multiplications themselves (W6's batch-1 latency: im2col 15%,
// sgemm_oncopy 15%, the sgemm kernel 34%). Here a block of consecutive output pixels keeps all its
// filters in registers while the kernel's taps and channels stream past: each input value is
// broadcast once per block, each kernel row of weights loaded once per block. conv2d's input
// gradient is this convolution too, of the output gradient with the kernel flipped.
//
// Every output value is the sum over (ky, kx, c), in that order, of fused multiply-adds starting
// from zero: the same for any SIMD width, block size and compiler, so results stay bit-identical
// across the g++ and clang builds.

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "gemm_small.hpp"
#include "simd.hpp"

namespace xtnn::detail {

// A valid convolution of one image with a (kh, kw, C, F) kernel, stride 1; the image rows are
// `row_stride` values apart (so a zero-bordered copy can stand in for padding).
struct DirectConvShape {
    std::size_t out_height, out_width, channels, filters, kernel_height, kernel_width, row_stride;
};

// Whether the direct kernel beats im2col and sgemm for a kernel of `kernel_values` values with
// `filters` outputs: one or two registers of filters always; three or four (a block of only a
// few pixels) while the kernel stays within L1 next to the image rows. Measured on W4-W6's
// layers (batch 64): 8 -> 24 and 16 -> 32 filters 3x3 took 0.5-0.7x the time of im2col and
// sgemm, 32 -> 32 (36 KB of kernel) 0.9-1.2x.
template <class T>
constexpr bool direct_conv_fits(std::size_t filters, std::size_t kernel_values) {
    if (filters == 0 || filters % simd_width<T> != 0) return false;
    const std::size_t vectors = filters / simd_width<T>;
    return vectors <= 2 || (vectors <= 4 && kernel_values * sizeof(T) <= (std::size_t(24) << 10));
}

// Calls f with the filters' count of SIMD registers (1 to 4: direct_conv_fits) as a constant.
template <class T, class F>
void with_vectors(std::size_t filters, F&& f) {
    switch (filters / simd_width<T>) {
    case 1: return f(std::integral_constant<std::size_t, 1>{});
    case 2: return f(std::integral_constant<std::size_t, 2>{});
    case 3: return f(std::integral_constant<std::size_t, 3>{});
    default: return f(std::integral_constant<std::size_t, 4>{});
    }
}

// Where the pixels of a block within one output row read the image: a fixed step apart (a block
// that runs on into the next row reads through an array of pointers instead).
template <class T>
struct PixelsOfRow {
    const T* first;
    std::size_t channels;
    const T* operator[](std::size_t p) const { return first + p * channels; }
};

// `Pixels` consecutive outputs in row-major order: out[p][f] = sum over (ky, kx, c) of
// image[ky][kx][c] * kernel[ky][kx][c][f], with the image read from pixels[p] (a PixelsOfRow or
// an array of pointers). `Add` adds the sums onto what `out` holds.
template <class T, std::size_t Vectors, std::size_t Pixels, bool Add, class Source>
void direct_conv_block(Source pixels, const T* kernel, T* out, const DirectConvShape& s) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    Batch sums[Pixels][Vectors];
    for (auto& pixel : sums) {
        for (auto& sum : pixel) sum = Batch(T(0));
    }
    // A kernel row's taps read one contiguous run of kw * C values of an image row, and their
    // weights are contiguous too: (kx, c) is one index j = kx * C + c.
    const std::size_t run = s.kernel_width * s.channels;
    for (std::size_t ky = 0; ky < s.kernel_height; ++ky) {
        const std::size_t row_offset = ky * s.row_stride;
        const T* weights = kernel + ky * run * s.filters;
        for (std::size_t j = 0; j < run; ++j, weights += s.filters) {
            Batch w[Vectors];
            for (std::size_t v = 0; v < Vectors; ++v) w[v] = Batch::load_unaligned(weights + v * width);
            for (std::size_t p = 0; p < Pixels; ++p) {
                const Batch x(pixels[p][row_offset + j]);
                for (std::size_t v = 0; v < Vectors; ++v) sums[p][v] = fused_multiply_add(x, w[v], sums[p][v]);
            }
        }
    }
    for (std::size_t p = 0; p < Pixels; ++p) {
        for (std::size_t v = 0; v < Vectors; ++v) {
            T* target = out + p * s.filters + v * width;
            if constexpr (Add) {
                (Batch::load_unaligned(target) + sums[p][v]).store_unaligned(target);
            } else {
                sums[p][v].store_unaligned(target);
            }
        }
    }
}

// The blocks of `Pixels` (< the block) pixels: one instantiation per count.
template <class T, std::size_t Vectors, bool Add, class Source, std::size_t Pixels = register_block<Vectors>() - 1>
void direct_conv_tail(std::size_t count, Source pixels, const T* kernel, T* out, const DirectConvShape& s) {
    if constexpr (Pixels > 0) {
        if (count == Pixels) return direct_conv_block<T, Vectors, Pixels, Add>(pixels, kernel, out, s);
        direct_conv_tail<T, Vectors, Add, Source, Pixels - 1>(count, pixels, kernel, out, s);
    }
}

// Sums a block keeps in flight to hide the latency of its FMAs (4 to 5 cycles on two pipes).
constexpr std::size_t min_sums_in_flight = 10;

// Each output row cut into blocks, the last one shorter.
template <class T, std::size_t Vectors, bool Add>
void direct_conv_rows(const T* image, const T* kernel, T* out, const DirectConvShape& s) {
    constexpr std::size_t block = register_block<Vectors>();
    for (std::size_t oy = 0; oy < s.out_height; ++oy) {
        const T* row = image + oy * s.row_stride;
        T* out_row = out + oy * s.out_width * s.filters;
        std::size_t ox = 0;
        for (; ox + block <= s.out_width; ox += block) {
            direct_conv_block<T, Vectors, block, Add>(PixelsOfRow<T>{row + ox * s.channels, s.channels}, kernel,
                                                      out_row + ox * s.filters, s);
        }
        if (ox < s.out_width) {
            direct_conv_tail<T, Vectors, Add>(s.out_width - ox, PixelsOfRow<T>{row + ox * s.channels, s.channels}, kernel,
                                              out_row + ox * s.filters, s);
        }
    }
}

// All output pixels in row-major order cut into blocks that run on from one row into the next,
// for rows that would end in a block of too few sums in flight (2 pixels at the end of a 14-pixel
// row took twice as long per pixel as the full blocks).
template <class T, std::size_t Vectors, bool Add>
void direct_conv_image(const T* image, const T* kernel, T* out, const DirectConvShape& s) {
    constexpr std::size_t block = register_block<Vectors>();
    const std::size_t total = s.out_height * s.out_width;
    const T* pixels[block];
    std::size_t oy = 0, ox = 0;
    for (std::size_t first = 0; first < total; first += block) {
        const std::size_t count = std::min(block, total - first);
        for (std::size_t p = 0; p < count; ++p) {
            pixels[p] = image + oy * s.row_stride + ox * s.channels;
            if (++ox == s.out_width) ox = 0, ++oy;
        }
        if (count == block) {
            direct_conv_block<T, Vectors, block, Add>(pixels, kernel, out + first * s.filters, s);
        } else {
            direct_conv_tail<T, Vectors, Add, const T**>(count, pixels, kernel, out + first * s.filters, s);
        }
    }
}

/// out (out_height, out_width, filters) = (or += with `add`) the valid convolution of `image`;
/// direct_conv_fits(s.filters, ...) must hold.
template <class T>
void direct_conv(const T* image, const T* kernel, T* out, const DirectConvShape& s, bool add) {
    with_vectors<T>(s.filters, [&](auto vectors) {
        constexpr std::size_t count = decltype(vectors)::value;
        const std::size_t last_block = s.out_width % register_block<count>();
        if (last_block != 0 && last_block * count < min_sums_in_flight) {
            add ? direct_conv_image<T, count, true>(image, kernel, out, s) : direct_conv_image<T, count, false>(image, kernel, out, s);
        } else {
            add ? direct_conv_rows<T, count, true>(image, kernel, out, s) : direct_conv_rows<T, count, false>(image, kernel, out, s);
        }
    });
}

// The kernel gradient of `Channels` consecutive (kx, c) of one kernel row (see direct_conv_block):
// grad[j][f] += sum over the output pixels p, in row-major order, of image[p][j] * dy[p][f], where
// `image` starts at the kernel row and the block's first j, and `grad` at that j's row.
template <class T, std::size_t Vectors, std::size_t Channels>
void kernel_gradient_block(const T* image, const T* dy, T* grad, const DirectConvShape& s) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    Batch sums[Channels][Vectors];
    for (std::size_t c = 0; c < Channels; ++c) {
        for (std::size_t v = 0; v < Vectors; ++v) sums[c][v] = Batch::load_unaligned(grad + c * s.filters + v * width);
    }
    for (std::size_t oy = 0; oy < s.out_height; ++oy) {
        const T* row = image + oy * s.row_stride;
        const T* dy_row = dy + oy * s.out_width * s.filters;
        for (std::size_t ox = 0; ox < s.out_width; ++ox) {
            Batch d[Vectors];
            for (std::size_t v = 0; v < Vectors; ++v) d[v] = Batch::load_unaligned(dy_row + ox * s.filters + v * width);
            for (std::size_t c = 0; c < Channels; ++c) {
                const Batch x(row[ox * s.channels + c]);
                for (std::size_t v = 0; v < Vectors; ++v) sums[c][v] = fused_multiply_add(x, d[v], sums[c][v]);
            }
        }
    }
    for (std::size_t c = 0; c < Channels; ++c) {
        for (std::size_t v = 0; v < Vectors; ++v) sums[c][v].store_unaligned(grad + c * s.filters + v * width);
    }
}

template <class T, std::size_t Vectors, std::size_t Channels = register_block<Vectors>() - 1>
void kernel_gradient_tail(std::size_t count, const T* image, const T* dy, T* grad, const DirectConvShape& s) {
    if constexpr (Channels > 0) {
        if (count == Channels) return kernel_gradient_block<T, Vectors, Channels>(image, dy, grad, s);
        kernel_gradient_tail<T, Vectors, Channels - 1>(count, image, dy, grad, s);
    }
}

template <class T, std::size_t Vectors>
void kernel_gradient_taps(const T* image, const T* dy, T* grad, const DirectConvShape& s) {
    constexpr std::size_t block = register_block<Vectors>();
    const std::size_t run = s.kernel_width * s.channels;
    for (std::size_t ky = 0; ky < s.kernel_height; ++ky) {
        const T* row_image = image + ky * s.row_stride;
        T* row_grad = grad + ky * run * s.filters;
        std::size_t j = 0;
        for (; j + block <= run; j += block) kernel_gradient_block<T, Vectors, block>(row_image + j, dy, row_grad + j * s.filters, s);
        if (j < run) kernel_gradient_tail<T, Vectors>(run - j, row_image + j, dy, row_grad + j * s.filters, s);
    }
}

/// grad (kh, kw, C, F) += the kernel gradient of the valid convolution of `image` whose output
/// gradient is dy (out_height, out_width, filters); direct_conv_fits(s.filters, ...) must hold. Each
/// value adds its terms in the output's row-major order, onto what `grad` holds.
template <class T>
void direct_kernel_gradient(const T* image, const T* dy, T* grad, const DirectConvShape& s) {
    with_vectors<T>(s.filters, [&](auto vectors) { kernel_gradient_taps<T, decltype(vectors)::value>(image, dy, grad, s); });
}

}  // namespace xtnn::detail
