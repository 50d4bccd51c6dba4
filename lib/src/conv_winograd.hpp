#pragma once
// A stride-1 3x3 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2015), for layers with more filters than the
// direct kernel (conv_direct.hpp) takes, where im2col and sgemm would otherwise run: each 2x2
// block of outputs comes from a 4x4 block of the input through 16 products instead of 36. Per
// block ("tile") the input is transformed (V = B^T d B, channel by channel), each of the 16
// transformed positions xi multiplies its channels by a transformed kernel (U[xi] = (G g G^T)[xi],
// C x F), and the 16 products are transformed back (Y = A^T M A). The input gradient is the same
// convolution of the output gradient with the kernel flipped; the kernel gradient sums
// V[xi]^T (A dY A^T)[xi] over the tiles and transforms the sum back with G. The products are
// small matrix multiplications (tiles x C by C x F) done here with a column block of the right
// operand in L1 and a block of rows' sums in registers: OpenBLAS ran them at 0.6x of its
// large-matrix rate (their depth C is short), this loop at about 1.1x. The book's CNN's 32 -> 64
// layer (batch 64) took 0.51x the time of im2col and sgemm forward, 0.62x forward and backward.
//
// The transforms are additions, subtractions and exact halvings, and each product a sum in order
// of fused multiply-adds from zero: results are the same bits for any SIMD width and for the g++
// and clang builds. They differ from the direct sum by rounding (a few units in the last place of
// the largest value; tests/test_ops.cpp checks against the definition).

#include <algorithm>
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "simd.hpp"

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

// The products of one position xi, two registers of filters at a time: `Rows` rows of
// out[r][f] (+)= sum over k < depth of a[r * row_step + k * depth_step] * b[k * filters + f].
// The forward pass multiplies tiles' inputs by the kernel (rows: tiles, depth: channels); the
// kernel gradient, inputs by output gradients (rows: channels, depth: tiles). `Add` adds the sums
// to what `out` holds.
struct ProductSteps {
    std::size_t row_step, depth_step, depth, filters;
};

template <class T, std::size_t Rows, bool Add>
void winograd_product_block(const T* a, const T* b, T* out, const ProductSteps& steps) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    Batch sums[Rows][2];
    for (auto& row : sums) row[0] = row[1] = Batch(T(0));
    for (std::size_t k = 0; k < steps.depth; ++k) {
        const T* b_row = b + k * steps.filters;
        const Batch b0 = Batch::load_unaligned(b_row), b1 = Batch::load_unaligned(b_row + width);
        const T* a_column = a + k * steps.depth_step;
        for (std::size_t r = 0; r < Rows; ++r) {
            const Batch x(a_column[r * steps.row_step]);
            sums[r][0] = fused_multiply_add(x, b0, sums[r][0]);
            sums[r][1] = fused_multiply_add(x, b1, sums[r][1]);
        }
    }
    for (std::size_t r = 0; r < Rows; ++r) {
        T* target = out + r * steps.filters;
        if constexpr (Add) {
            (Batch::load_unaligned(target) + sums[r][0]).store_unaligned(target);
            (Batch::load_unaligned(target + width) + sums[r][1]).store_unaligned(target + width);
        } else {
            sums[r][0].store_unaligned(target);
            sums[r][1].store_unaligned(target + width);
        }
    }
}

// Rows per block: two accumulators a row, two registers of b and a broadcast in 16 (AVX2) or 32
// (AVX-512) registers. Five measured 1.2x faster than six with AVX2, whose 15 live registers left
// the compiler none to spare.
constexpr std::size_t winograd_row_block = XSIMD_WITH_AVX512F ? 12 : 5;

template <class T, bool Add, std::size_t Rows = winograd_row_block - 1>
void winograd_product_tail(std::size_t count, const T* a, const T* b, T* out, const ProductSteps& steps) {
    if constexpr (Rows > 0) {
        if (count == Rows) return winograd_product_block<T, Rows, Add>(a, b, out, steps);
        winograd_product_tail<T, Add, Rows - 1>(count, a, b, out, steps);
    }
}

// All `rows` rows of out (rows x filters) for every pair of registers of filters.
template <class T, bool Add>
void winograd_products(std::size_t rows, const T* a, const T* b, T* out, const ProductSteps& steps) {
    constexpr std::size_t width = xsimd::batch<T>::size;
    for (std::size_t f = 0; f < steps.filters; f += 2 * width) {
        std::size_t r = 0;
        for (; r + winograd_row_block <= rows; r += winograd_row_block) {
            winograd_product_block<T, winograd_row_block, Add>(a + r * steps.row_step, b + f, out + r * steps.filters + f, steps);
        }
        if (r < rows) winograd_product_tail<T, Add>(rows - r, a + r * steps.row_step, b + f, out + r * steps.filters + f, steps);
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

// The tiles of band rows [first_row, first_row + tiles / tiles_x) of the image, transformed:
// V[xi][t][c] = (B^T d B)[xi], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], a register of
// channels at a time; plane xi starts at V + xi * plane.
template <class T>
void winograd_input_tiles(const T* image, const WinogradShape& s, std::size_t first_row, std::size_t tiles, T* V,
                          std::size_t plane) {
    using Batch = xsimd::batch<T>;
    const std::size_t C = s.channels, tiles_x = (s.out_width + 1) / 2;
    for (std::size_t t = 0; t < tiles; ++t) {
        const T* corner = image + 2 * (first_row + t / tiles_x) * s.row_stride + 2 * (t % tiles_x) * C;
        for (std::size_t c = 0; c < C; c += Batch::size) {
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
                T* at = V + i * 4 * plane + t * C + c;
                (r[0] - r[2]).store_unaligned(at);
                (r[1] + r[2]).store_unaligned(at + plane);
                (r[2] - r[1]).store_unaligned(at + 2 * plane);
                (r[1] - r[3]).store_unaligned(at + 3 * plane);
            }
        }
    }
}

// The outputs of a tile from its products: Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1]; outputs
// past the image's edge are dropped.
template <class T>
void winograd_output_tiles(const T* M, std::size_t plane, const WinogradShape& s, std::size_t first_row,
                           std::size_t tiles, bool add, T* out) {
    using Batch = xsimd::batch<T>;
    const std::size_t F = s.filters, tiles_x = (s.out_width + 1) / 2;
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t ty = first_row + t / tiles_x, tx = t % tiles_x;
        const std::size_t rows_out = std::min<std::size_t>(2, s.out_height - 2 * ty);
        const std::size_t cols_out = std::min<std::size_t>(2, s.out_width - 2 * tx);
        T* corner = out + (2 * ty * s.out_width + 2 * tx) * F;
        for (std::size_t f = 0; f < F; f += Batch::size) {
            Batch m[4][4];
            for (std::size_t i = 0; i < 4; ++i) {
                for (std::size_t j = 0; j < 4; ++j) m[i][j] = Batch::load_unaligned(M + (i * 4 + j) * plane + t * F + f);
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

// The adjoint of winograd_output_tiles: the products' gradient dM = A dY A^T of each tile's
// output gradient (zeros past the image's edge).
template <class T>
void winograd_output_gradient_tiles(const T* dy, const WinogradShape& s, std::size_t first_row, std::size_t tiles, T* dM,
                                    std::size_t plane) {
    using Batch = xsimd::batch<T>;
    const std::size_t F = s.filters, tiles_x = (s.out_width + 1) / 2;
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t ty = first_row + t / tiles_x, tx = t % tiles_x;
        const std::size_t rows_out = std::min<std::size_t>(2, s.out_height - 2 * ty);
        const std::size_t cols_out = std::min<std::size_t>(2, s.out_width - 2 * tx);
        const T* corner = dy + (2 * ty * s.out_width + 2 * tx) * F;
        for (std::size_t f = 0; f < F; f += Batch::size) {
            Batch g[2][2];
            for (std::size_t i = 0; i < 2; ++i) {
                for (std::size_t j = 0; j < 2; ++j) {
                    g[i][j] = i < rows_out && j < cols_out ? Batch::load_unaligned(corner + (i * s.out_width + j) * F + f)
                                                           : Batch(T(0));
                }
            }
            // A = [1 0; 1 1; 1 -1; 0 -1]: rows g0, g0 + g1, g0 - g1, -g1, then the same on columns.
            const Batch rows[4][2] = {{g[0][0], g[0][1]},
                                      {g[0][0] + g[1][0], g[0][1] + g[1][1]},
                                      {g[0][0] - g[1][0], g[0][1] - g[1][1]},
                                      {-g[1][0], -g[1][1]}};
            for (std::size_t i = 0; i < 4; ++i) {
                const Batch* r = rows[i];
                T* at = dM + i * 4 * plane + t * F + f;
                r[0].store_unaligned(at);
                (r[0] + r[1]).store_unaligned(at + plane);
                (r[0] - r[1]).store_unaligned(at + 2 * plane);
                (-r[1]).store_unaligned(at + 3 * plane);
            }
        }
    }
}

/// out (out_height, out_width, filters) = (or += with `add`) the valid 3x3 convolution of `image`
/// with the kernel `transformed` by winograd_kernel. winograd_fits must hold; `inputs` and
/// `products` hold bands.input_values() and bands.product_values() values.
template <class T>
void winograd_conv(const T* image, const T* transformed, T* out, const WinogradShape& s, bool add,
                   const WinogradBands& bands, T* inputs, T* products) {
    const std::size_t C = s.channels, F = s.filters;
    const std::size_t tiles_y = (s.out_height + 1) / 2, tiles_x = (s.out_width + 1) / 2;
    for (std::size_t first_row = 0; first_row < tiles_y; first_row += bands.rows) {
        const std::size_t tiles = std::min(bands.rows, tiles_y - first_row) * tiles_x;
        winograd_input_tiles(image, s, first_row, tiles, inputs, bands.input_plane);
        // M[xi] = V[xi] U[xi].
        for (std::size_t xi = 0; xi < 16; ++xi) {
            winograd_products<T, false>(tiles, inputs + xi * bands.input_plane, transformed + xi * C * F,
                                        products + xi * bands.product_plane, {C, 1, C, F});
        }
        winograd_output_tiles(products, bands.product_plane, s, first_row, tiles, add, out);
    }
}

/// transformed_grad (16 C F values, from zeros) += the kernel gradient in the transformed domain,
/// dU[xi] = sum over tiles of V[xi]^T dM[xi], of the convolution of `image` whose output gradient
/// is `dy` (out_height, out_width, filters). winograd_kernel_gradient turns it into the kernel's.
template <class T>
void winograd_transformed_gradient(const T* image, const T* dy, T* transformed_grad, const WinogradShape& s,
                                   const WinogradBands& bands, T* inputs, T* products) {
    const std::size_t C = s.channels, F = s.filters;
    const std::size_t tiles_y = (s.out_height + 1) / 2, tiles_x = (s.out_width + 1) / 2;
    for (std::size_t first_row = 0; first_row < tiles_y; first_row += bands.rows) {
        const std::size_t tiles = std::min(bands.rows, tiles_y - first_row) * tiles_x;
        winograd_input_tiles(image, s, first_row, tiles, inputs, bands.input_plane);
        winograd_output_gradient_tiles(dy, s, first_row, tiles, products, bands.product_plane);
        for (std::size_t xi = 0; xi < 16; ++xi) {
            winograd_products<T, true>(C, inputs + xi * bands.input_plane, products + xi * bands.product_plane,
                                       transformed_grad + xi * C * F, {1, C, tiles, F});
        }
    }
}

/// kernel_grad (3, 3, C, F) = (or += with `add`) G^T dU G, the adjoint of winograd_kernel, from
/// winograd_transformed_gradient's sums. G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]. Halving
/// is exact (short of subnormal numbers).
template <class T>
void winograd_kernel_gradient(const T* transformed_grad, std::size_t channels, std::size_t filters, bool add,
                              T* kernel_grad) {
    const std::size_t plane = channels * filters;
    const T half = T(0.5);
    for (std::size_t cf = 0; cf < plane; ++cf) {
        T u[4][4];
        for (std::size_t i = 0; i < 4; ++i) {
            for (std::size_t j = 0; j < 4; ++j) u[i][j] = transformed_grad[(i * 4 + j) * plane + cf];
        }
        T rows[3][4];
        for (std::size_t j = 0; j < 4; ++j) {
            rows[0][j] = u[0][j] + (u[1][j] + u[2][j]) * half;
            rows[1][j] = (u[1][j] - u[2][j]) * half;
            rows[2][j] = (u[1][j] + u[2][j]) * half + u[3][j];
        }
        for (std::size_t i = 0; i < 3; ++i) {
            const T* r = rows[i];
            const T g[3] = {r[0] + (r[1] + r[2]) * half, (r[1] - r[2]) * half, (r[1] + r[2]) * half + r[3]};
            for (std::size_t j = 0; j < 3; ++j) {
                T& target = kernel_grad[(i * 3 + j) * plane + cf];
                target = add ? target + g[j] : g[j];
            }
        }
    }
}

}  // namespace xtnn::detail
