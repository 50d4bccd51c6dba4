#pragma once
// Products in registers, for the shapes where OpenBLAS's fixed costs outweigh its kernel:
// sgemm packs both operands into its own layout on every call, which for a 32-row batch through
// a 784 -> 32 layer (W1) costs a quarter of the product; and for most shapes when OpenBLAS runs
// narrower vectors than xtnn (small_product_fits). Here a block of rows of C keeps two
// registers of columns of each row in flight while the inner dimension streams past: a value of
// A is broadcast once per block, a row of B loaded once per block, from where they lie.
//
// Every value of C is the sum over k, in order, of fused multiply-adds starting from zero (plus
// what C held, for beta = 1): the same for any SIMD width, block size and compiler, so results
// stay bit-identical across the g++ and clang builds.

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "gemm.hpp"
#include "simd.hpp"

namespace xtnn::detail {

template <class T>
constexpr std::size_t simd_width = xsimd::batch<T>::size;

// Rows of C per block (pixels or channels in conv_direct.hpp): as many as the accumulators, the vectors
// loaded for one step and one broadcast value leave room for in the vector registers (16 with
// AVX2, 32 with AVX-512).
template <std::size_t Vectors>
constexpr std::size_t register_block() {
    constexpr std::size_t registers = XSIMD_WITH_AVX512F ? 32 : 16;
    return std::min<std::size_t>(16, (registers - 1) / Vectors - 1);
}

// Where the kernel beats OpenBLAS (sgemm with a zero-filled C), measured by bench/gemm_small.
// When OpenBLAS's kernels use vectors as wide as xtnn's (this project's AVX2 machine, on a grid of
// m, n and k from 8 to 784): the products of at most 2^20 multiply-adds whose B is read in place
// and at least a panel (two registers) wide, 294 of them, took 0.78x OpenBLAS's time in the
// geometric mean, 1.06x at worst; W1's two large products 0.76x and 0.88x. On the 294 others the
// kernel would take 1.13x in the geometric mean: larger products, where sgemm's blocking for the
// caches pays, narrow ones, and a transposed B, which this kernel would first copy out.
// When OpenBLAS's vectors are narrower than xtnn's (an AVX-512 build on a CPU that OpenBLAS runs
// with its AVX2 kernels: one newer than the OpenBLAS build, or OPENBLAS_CORETYPE set so), twice
// the multiply-adds an instruction outweigh sgemm's blocking: on a Zen 5 the products at least a
// panel wide with B read in place took 0.46x OpenBLAS's time in the geometric mean over the grid
// (0.64x at worst), W3's 1000 x 784 x 256 0.49x, 2048^3 0.78x and k = 16384 0.84x. A transposed
// B, copied out a panel at a time, pays from 64 rows of C (0.82-0.88x), or 32 for k up to 256;
// with fewer rows the copy costs more than it saves (up to 2x OpenBLAS's time at 8 rows).
inline bool small_product_fits(bool transpose_b, std::size_t m, std::size_t n, std::size_t k, bool blas_is_narrower) {
    if (n < 2 * simd_width<float>) return false;
    if (blas_is_narrower) return k <= 16384 && (!transpose_b || m >= 64 || (m >= 32 && k <= 256));
    return !transpose_b && m * n <= (std::size_t(1) << 20) / std::max<std::size_t>(k, 1);
}

// Writes (or, with `Add`, adds) a block's sums to its rows of C: `columns` of the panel's, fewer
// at the right edge of C.
template <class T, std::size_t Rows, std::size_t Vectors, bool Add>
void store_rows(const xsimd::batch<T> (&sums)[Rows][Vectors], T* c, std::size_t ldc, std::size_t columns) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    for (std::size_t r = 0; r < Rows; ++r) {
        T* row = c + r * ldc;
        if (columns == Vectors * width) {
            for (std::size_t v = 0; v < Vectors; ++v) {
                if constexpr (Add) {
                    (Batch::load_unaligned(row + v * width) + sums[r][v]).store_unaligned(row + v * width);
                } else {
                    sums[r][v].store_unaligned(row + v * width);
                }
            }
        } else {
            alignas(64) T values[Vectors * width];
            for (std::size_t v = 0; v < Vectors; ++v) sums[r][v].store_aligned(values + v * width);
            for (std::size_t j = 0; j < columns; ++j) row[j] = Add ? row[j] + values[j] : values[j];
        }
    }
}

// Rows [0, Rows) of C times a panel of Vectors registers of columns: c[r][j] (+)= sum over l of
// a[r * a_row + l * a_step] * b[l * ldb + j]. `columns` of the panel are stored (fewer at the
// right edge of C, whose panel b comes padded).
template <class T, std::size_t Rows, std::size_t Vectors, bool Add>
void small_product_block(const T* a, std::size_t a_row, std::size_t a_step, const T* b, std::size_t ldb, std::size_t k,
                         T* c, std::size_t ldc, std::size_t columns) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    Batch sums[Rows][Vectors];
    for (auto& row : sums) {
        for (auto& sum : row) sum = Batch(T(0));
    }
    // C's lines are fetched for writing before the inner loop: when fit's threads share a step,
    // the other core may hold them (a partial product it read in the last step, a gradient it
    // summed), and a store would wait for that copy to be dropped; asked for here, the waits
    // overlap with the loop. W2 on two threads, in minutes when the cores' exchanges were slow
    // (round trips of 600 ns, bench/core_to_core): 0.272 -> 0.256 s an epoch (medians of 4). Only
    // where the loop is long enough to hide the fetch and pay for the instructions: W5's
    // convolutions (9 to 72 terms) took 2-4% longer with them.
    constexpr std::size_t min_terms_to_prefetch = 64, cache_line = 64;
    if (k >= min_terms_to_prefetch) {
        for (std::size_t r = 0; r < Rows; ++r) {
            const char* row = reinterpret_cast<const char*>(c + r * ldc);
            for (std::size_t offset = 0; offset < columns * sizeof(T); offset += cache_line) __builtin_prefetch(row + offset, 1);
        }
    }
    for (std::size_t l = 0; l < k; ++l, b += ldb) {
        Batch w[Vectors];
        for (std::size_t v = 0; v < Vectors; ++v) w[v] = Batch::load_unaligned(b + v * width);
        const T* x = a + l * a_step;
        for (std::size_t r = 0; r < Rows; ++r) {
            const Batch value(x[r * a_row]);
            for (std::size_t v = 0; v < Vectors; ++v) sums[r][v] = fused_multiply_add(value, w[v], sums[r][v]);
        }
    }
    store_rows<T, Rows, Vectors, Add>(sums, c, ldc, columns);
}

// The last block of `rows` (< the block) rows: one instantiation per count.
template <class T, std::size_t Vectors, bool Add, std::size_t Rows = register_block<Vectors>() - 1>
void small_product_tail(std::size_t rows, const T* a, std::size_t a_row, std::size_t a_step, const T* b,
                        std::size_t ldb, std::size_t k, T* c, std::size_t ldc, std::size_t columns) {
    if constexpr (Rows > 0) {
        if (rows == Rows) return small_product_block<T, Rows, Vectors, Add>(a, a_row, a_step, b, ldb, k, c, ldc, columns);
        small_product_tail<T, Vectors, Add, Rows - 1>(rows, a, a_row, a_step, b, ldb, k, c, ldc, columns);
    }
}

// Row-major C (m x n) = op(A) * op(B), or C += op(A) * op(B) with `Add`; B (k x n) is read in
// place but for the last panel of a width that is not a whole number of registers, copied out
// padded with zeros; a transposed B (n x k) is copied out a panel at a time.
template <class T, std::size_t Vectors, bool Add>
void small_product_panels(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, const T* a,
                          std::size_t lda, const T* b, std::size_t ldb, T* c, std::size_t ldc) {
    constexpr std::size_t panel = Vectors * simd_width<T>, block = register_block<Vectors>();
    const std::size_t a_row = transpose_a ? 1 : lda, a_step = transpose_a ? lda : 1;
    thread_local std::vector<T, xsimd::aligned_allocator<T>> padded;
    for (std::size_t j = 0; j < n; j += panel) {
        const std::size_t columns = std::min(panel, n - j);
        const T* b_panel = b + j;
        std::size_t b_step = ldb;
        if (transpose_b || columns < panel) {
            padded.assign(k * panel, T(0));
            if (transpose_b) {
                for (std::size_t column = 0; column < columns; ++column) {
                    const T* from = b + (j + column) * ldb;
                    for (std::size_t l = 0; l < k; ++l) padded[l * panel + column] = from[l];
                }
            } else {
                for (std::size_t l = 0; l < k; ++l) std::copy_n(b + l * ldb + j, columns, padded.data() + l * panel);
            }
            b_panel = padded.data();
            b_step = panel;
        }
        std::size_t i = 0;
        for (; i + block <= m; i += block) {
            small_product_block<T, block, Vectors, Add>(a + i * a_row, a_row, a_step, b_panel, b_step, k, c + i * ldc + j,
                                                        ldc, columns);
        }
        if (i < m) {
            small_product_tail<T, Vectors, Add>(m - i, a + i * a_row, a_row, a_step, b_panel, b_step, k, c + i * ldc + j, ldc,
                                                columns);
        }
    }
}

// Rows [row, row + Rows) of C = A^T B over every piece's inner dimension, in piece order, times a
// panel of Vectors registers of columns: each value one chain of fused multiply-adds from zero or,
// with `from_c`, from what C holds. panels[p] is piece p's panel of B, rows panel_steps[p] apart.
template <class T, std::size_t Rows, std::size_t Vectors>
void transposed_pieces_block(std::span<const TransposedPiece<T>> pieces, const T* const* panels,
                             const std::size_t* panel_steps, std::size_t row, bool from_c, T* c, std::size_t ldc,
                             std::size_t columns) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    Batch sums[Rows][Vectors];
    for (std::size_t r = 0; r < Rows; ++r) {
        const T* from = c + r * ldc;
        if (!from_c) {
            for (auto& sum : sums[r]) sum = Batch(T(0));
        } else if (columns == Vectors * width) {
            for (std::size_t v = 0; v < Vectors; ++v) sums[r][v] = Batch::load_unaligned(from + v * width);
        } else {
            alignas(64) T values[Vectors * width] = {};
            std::copy(from, from + columns, values);
            for (std::size_t v = 0; v < Vectors; ++v) sums[r][v] = Batch::load_aligned(values + v * width);
        }
    }
    for (std::size_t p = 0; p < pieces.size(); ++p) {
        const T* b = panels[p];
        const T* a = pieces[p].a + row;
        for (std::size_t l = 0; l < pieces[p].k; ++l, b += panel_steps[p], a += pieces[p].lda) {
            Batch w[Vectors];
            for (std::size_t v = 0; v < Vectors; ++v) w[v] = Batch::load_unaligned(b + v * width);
            for (std::size_t r = 0; r < Rows; ++r) {
                const Batch value(a[r]);
                for (std::size_t v = 0; v < Vectors; ++v) sums[r][v] = fused_multiply_add(value, w[v], sums[r][v]);
            }
        }
    }
    store_rows<T, Rows, Vectors, false>(sums, c, ldc, columns);
}

template <class T, std::size_t Vectors, std::size_t Rows = register_block<Vectors>() - 1>
void transposed_pieces_tail(std::size_t rows, std::span<const TransposedPiece<T>> pieces, const T* const* panels,
                            const std::size_t* panel_steps, std::size_t row, bool from_c, T* c, std::size_t ldc,
                            std::size_t columns) {
    if constexpr (Rows > 0) {
        if (rows == Rows) {
            return transposed_pieces_block<T, Rows, Vectors>(pieces, panels, panel_steps, row, from_c, c, ldc, columns);
        }
        transposed_pieces_tail<T, Vectors, Rows - 1>(rows, pieces, panels, panel_steps, row, from_c, c, ldc, columns);
    }
}

// C (m x n) = the sum over the pieces of A_p^T B_p, continued from C's values with `from_c`
// (gemm_transposed_pieces). B is read in place but for a last panel narrower than two registers,
// copied out padded with zeros for every piece.
template <class T>
void small_product_transposed_pieces(std::size_t m, std::size_t n, std::span<const TransposedPiece<T>> pieces,
                                     bool from_c, T* c, std::size_t ldc) {
    constexpr std::size_t vectors = 2, panel = vectors * simd_width<T>, block = register_block<vectors>();
    thread_local std::vector<T, xsimd::aligned_allocator<T>> padded;
    thread_local std::vector<const T*> panels;
    thread_local std::vector<std::size_t> panel_steps;
    panels.resize(pieces.size());
    panel_steps.resize(pieces.size());
    for (std::size_t j = 0; j < n; j += panel) {
        const std::size_t columns = std::min(panel, n - j);
        if (columns < panel) {
            std::size_t total = 0;
            for (const auto& piece : pieces) total += piece.k;
            padded.assign(total * panel, T(0));
            T* to = padded.data();
            for (std::size_t p = 0; p < pieces.size(); ++p) {
                panels[p] = to;
                panel_steps[p] = panel;
                for (std::size_t l = 0; l < pieces[p].k; ++l, to += panel) {
                    std::copy_n(pieces[p].b + l * pieces[p].ldb + j, columns, to);
                }
            }
        } else {
            for (std::size_t p = 0; p < pieces.size(); ++p) {
                panels[p] = pieces[p].b + j;
                panel_steps[p] = pieces[p].ldb;
            }
        }
        std::size_t i = 0;
        for (; i + block <= m; i += block) {
            transposed_pieces_block<T, block, vectors>(pieces, panels.data(), panel_steps.data(), i, from_c, c + i * ldc + j,
                                                       ldc, columns);
        }
        if (i < m) {
            transposed_pieces_tail<T, vectors>(m - i, pieces, panels.data(), panel_steps.data(), i, from_c, c + i * ldc + j,
                                               ldc, columns);
        }
    }
}

// C = op(A) * op(B) (beta 0) or C += op(A) * op(B) (beta 1), row-major, for products that
// small_product_fits.
template <class T>
void small_product(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, const T* a,
                   std::size_t lda, const T* b, std::size_t ldb, bool add, T* c, std::size_t ldc) {
    if (add) {
        small_product_panels<T, 2, true>(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc);
    } else {
        small_product_panels<T, 2, false>(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc);
    }
}

}  // namespace xtnn::detail
