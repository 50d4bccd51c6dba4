#pragma once
// A stride-1 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2015), for layers with many channels and filters,
// where im2col and sgemm would otherwise run: each 2x2 block of outputs comes from a 4x4 block of
// the input through 16 products instead of 36. Per block ("tile") the input is transformed
// (V = B^T d B, channel by channel), each of the 16 transformed positions xi multiplies its channels
// by a transformed kernel (U[xi] = (G g G^T)[xi], C x F), and the 16 products are transformed back
// (Y = A^T M A). The products are small matrix multiplications (tiles x C by C x F) done here with
// the kernel's column block in L1 and a block of tiles' sums in registers: OpenBLAS ran them at
// 0.7x of its large-matrix rate (K = C is short), this loop at about 1.1x. The book's CNN's second
// layer (32 -> 64 channels, 26x26) took 0.5x the time of im2col and sgemm, forward.
//
// The transforms are additions, subtractions and halvings, and each product a sum over c in
// order of fused multiply-adds from zero: results are the same bits for any SIMD width and for
// the g++ and clang builds. They differ from the direct sum by rounding (a few units in the last
// place of the largest value; tests/test_ops.cpp checks against the definition).

#include <algorithm>
#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace xtnn::detail {

// What one call convolves: a valid 3x3 convolution, stride 1, of an image whose rows are
// `row_stride` values apart. The image must be readable up to row 2 * ceil(out_height / 2) + 1
// and column 2 * ceil(out_width / 2) + 1 (one zero row or column past the valid input when an
// output size is odd): whole 4x4 tiles are read, the outputs past the edge are not written.
struct WinogradShape {
    std::size_t out_height, out_width, channels, filters, row_stride;
};

// Whether F(2x2, 3x3) applies: a 3x3 kernel, and channels and filters that fill whole SIMD
// registers (filters two at a time: the products keep two registers of filters per tile).
template <class T>
constexpr bool winograd_fits(std::size_t kernel_height, std::size_t kernel_width, std::size_t channels,
                             std::size_t filters) {
    constexpr std::size_t width = xsimd::batch<T>::size;
    return kernel_height == 3 && kernel_width == 3 && channels > 0 && channels % width == 0 && filters > 0 &&
           filters % (2 * width) == 0;
}

// The kernel (3, 3, C, F) in the transformed domain: 16 matrices U[xi] of C x F, into
// `transformed` (16 C F values).
template <class T>
void winograd_kernel(const T* kernel, std::size_t channels, std::size_t filters, T* transformed) {
    const std::size_t plane = channels * filters;
    const T half = T(0.5);
    for (std::size_t cf = 0; cf < plane; ++cf) {
        T g[3][3];
        for (std::size_t i = 0; i < 3; ++i) {
            for (std::size_t j = 0; j < 3; ++j) g[i][j] = kernel[(i * 3 + j) * plane + cf];
        }
        // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2; then the same on columns.
        T rows[4][3];
        for (std::size_t j = 0; j < 3; ++j) {
            rows[0][j] = g[0][j];
            rows[1][j] = (g[0][j] + g[1][j] + g[2][j]) * half;
            rows[2][j] = (g[0][j] - g[1][j] + g[2][j]) * half;
            rows[3][j] = g[2][j];
        }
        for (std::size_t i = 0; i < 4; ++i) {
            const T* r = rows[i];
            const T u[4] = {r[0], (r[0] + r[1] + r[2]) * half, (r[0] - r[1] + r[2]) * half, r[2]};
            for (std::size_t j = 0; j < 4; ++j) transformed[(i * 4 + j) * plane + cf] = u[j];
        }
    }
}

// `Tiles` consecutive tiles of one position xi: m[t][f] = sum over c of v[t][c] * u[c][f], for two
// registers of filters starting at u and m.
template <class T, std::size_t Tiles>
void winograd_product_block(const T* v, const T* u, T* m, std::size_t channels, std::size_t filters) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    Batch sums[Tiles][2];
    for (auto& tile : sums) tile[0] = tile[1] = Batch(T(0));
    for (std::size_t c = 0; c < channels; ++c) {
        const Batch u0 = Batch::load_unaligned(u + c * filters), u1 = Batch::load_unaligned(u + c * filters + width);
        for (std::size_t t = 0; t < Tiles; ++t) {
            const Batch x(v[t * channels + c]);
            sums[t][0] = xsimd::fma(x, u0, sums[t][0]);
            sums[t][1] = xsimd::fma(x, u1, sums[t][1]);
        }
    }
    for (std::size_t t = 0; t < Tiles; ++t) {
        sums[t][0].store_unaligned(m + t * filters);
        sums[t][1].store_unaligned(m + t * filters + width);
    }
}

// Tiles per block: two accumulators a tile, two kernel registers and a broadcast in 16 (AVX2) or
// 32 (AVX-512) registers. Five measured 1.2x faster than six with AVX2, whose 15 live registers
// left the compiler none to spare.
constexpr std::size_t winograd_tile_block = XSIMD_WITH_AVX512F ? 12 : 5;

template <class T, std::size_t Tiles = winograd_tile_block - 1>
void winograd_product_tail(std::size_t count, const T* v, const T* u, T* m, std::size_t channels, std::size_t filters) {
    if constexpr (Tiles > 0) {
        if (count == Tiles) return winograd_product_block<T, Tiles>(v, u, m, channels, filters);
        winograd_product_tail<T, Tiles - 1>(count, v, u, m, channels, filters);
    }
}

// How winograd_conv cuts an image: bands of tile rows of about 192 tiles, whose transformed
// inputs and products stay in L2, and the room those take. The 16 planes of each are padded by a
// cache line: planes a power of two apart would all fall in the same L1 sets (the transforms read
// and write all 16 at once).
struct WinogradBands {
    std::size_t rows, input_plane, product_plane;

    template <class T>
    static WinogradBands of(std::size_t out_height, std::size_t out_width, std::size_t channels, std::size_t filters) {
        const std::size_t tiles_y = (out_height + 1) / 2, tiles_x = (out_width + 1) / 2;
        const std::size_t rows = std::max<std::size_t>(1, 192 / tiles_x);
        const std::size_t most_tiles = std::min(rows, tiles_y) * tiles_x, pad = 64 / sizeof(T);
        return {rows, most_tiles * channels + pad, most_tiles * filters + pad};
    }
    std::size_t input_values() const { return 16 * input_plane; }
    std::size_t product_values() const { return 16 * product_plane; }
};

/// out (out_height, out_width, filters) = (or += with `add`) the valid 3x3 convolution of `image`
/// with the kernel `transformed` by winograd_kernel. winograd_fits must hold; `inputs` and
/// `products` hold bands.input_values() and bands.product_values() values.
template <class T>
void winograd_conv(const T* image, const T* transformed, T* out, const WinogradShape& s, bool add,
                   const WinogradBands& bands, T* inputs, T* products) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    const std::size_t C = s.channels, F = s.filters;
    const std::size_t tiles_y = (s.out_height + 1) / 2, tiles_x = (s.out_width + 1) / 2;
    const std::size_t band = bands.rows, input_plane = bands.input_plane, product_plane = bands.product_plane;
    T* const V = inputs;
    T* const M = products;
    for (std::size_t band_first = 0; band_first < tiles_y; band_first += band) {
        const std::size_t band_rows = std::min(band, tiles_y - band_first), tiles = band_rows * tiles_x;
        // V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], a register of channels at a time.
        for (std::size_t t = 0; t < tiles; ++t) {
            const std::size_t ty = band_first + t / tiles_x, tx = t % tiles_x;
            const T* corner = image + 2 * ty * s.row_stride + 2 * tx * C;
            for (std::size_t c = 0; c < C; c += width) {
                Batch d[4][4];
                for (std::size_t i = 0; i < 4; ++i) {
                    for (std::size_t j = 0; j < 4; ++j) d[i][j] = Batch::load_unaligned(corner + i * s.row_stride + j * C + c);
                }
                Batch rows[4][4];
                for (std::size_t j = 0; j < 4; ++j) {
                    rows[0][j] = d[0][j] - d[2][j];
                    rows[1][j] = d[1][j] + d[2][j];
                    rows[2][j] = d[2][j] - d[1][j];
                    rows[3][j] = d[1][j] - d[3][j];
                }
                for (std::size_t i = 0; i < 4; ++i) {
                    const Batch* r = rows[i];
                    T* at = V + i * 4 * input_plane + t * C + c;
                    (r[0] - r[2]).store_unaligned(at);
                    (r[1] + r[2]).store_unaligned(at + input_plane);
                    (r[2] - r[1]).store_unaligned(at + 2 * input_plane);
                    (r[1] - r[3]).store_unaligned(at + 3 * input_plane);
                }
            }
        }
        // M[xi] = V[xi] U[xi], two registers of filters at a time.
        for (std::size_t xi = 0; xi < 16; ++xi) {
            const T* v = V + xi * input_plane;
            const T* u = transformed + xi * C * F;
            T* m = M + xi * product_plane;
            for (std::size_t f = 0; f < F; f += 2 * width) {
                std::size_t t = 0;
                for (; t + winograd_tile_block <= tiles; t += winograd_tile_block) {
                    winograd_product_block<T, winograd_tile_block>(v + t * C, u + f, m + t * F + f, C, F);
                }
                if (t < tiles) winograd_product_tail<T>(tiles - t, v + t * C, u + f, m + t * F + f, C, F);
            }
        }
        // Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1]; outputs past the edge are dropped.
        for (std::size_t t = 0; t < tiles; ++t) {
            const std::size_t ty = band_first + t / tiles_x, tx = t % tiles_x;
            const std::size_t rows_out = std::min<std::size_t>(2, s.out_height - 2 * ty);
            const std::size_t cols_out = std::min<std::size_t>(2, s.out_width - 2 * tx);
            T* corner = out + (2 * ty * s.out_width + 2 * tx) * F;
            for (std::size_t f = 0; f < F; f += width) {
                Batch m[4][4];
                for (std::size_t i = 0; i < 4; ++i) {
                    for (std::size_t j = 0; j < 4; ++j) m[i][j] = Batch::load_unaligned(M + (i * 4 + j) * product_plane + t * F + f);
                }
                Batch rows[2][4];
                for (std::size_t j = 0; j < 4; ++j) {
                    rows[0][j] = m[0][j] + m[1][j] + m[2][j];
                    rows[1][j] = m[1][j] - m[2][j] - m[3][j];
                }
                for (std::size_t i = 0; i < rows_out; ++i) {
                    const Batch* r = rows[i];
                    const Batch y[2] = {r[0] + r[1] + r[2], r[1] - r[2] - r[3]};
                    for (std::size_t j = 0; j < cols_out; ++j) {
                        T* target = corner + (i * s.out_width + j) * F + f;
                        (add ? Batch::load_unaligned(target) + y[j] : y[j]).store_unaligned(target);
                    }
                }
            }
        }
    }
}

}  // namespace xtnn::detail
