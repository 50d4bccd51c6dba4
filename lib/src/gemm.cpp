#include "gemm.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string_view>
#include <type_traits>

#include <cblas.h>

#include "gemm_small.hpp"
#include "xtnn/error.hpp"
#include "parallel.hpp"

namespace xtnn::detail {

namespace {
CBLAS_TRANSPOSE flag(bool transpose) { return transpose ? CblasTrans : CblasNoTrans; }
blasint as_int(std::size_t n) { return static_cast<blasint>(n); }

// c (1 x n) = alpha * op(a) (1 x k) * op(b) + beta * c, for single-sample inference. sgemm would
// first pack all of b (costlier than the product for a 784x256 kernel), and OpenBLAS's gemv
// starts its threads for it, which makes a batch-1 call slower with 2 threads than with 1. This
// loop reads b once, in order, on the calling thread, and skips the rows of b that a zero of a
// selects: after relu (and in images' backgrounds) most inputs are zero, and reading b is the
// cost. The result is the same bit for bit for finite b (the skipped terms are zeros); an
// infinite weight times a zero input would give NaN in BLAS and is skipped here. Each term is a
// fused multiply-add, as in sgemm's kernels.
template <class T>
void single_row_product(bool transpose_a, bool transpose_b, std::size_t n, std::size_t k, T alpha, const T* a,
                        std::size_t lda, const T* b, std::size_t ldb, T beta, T* c) {
    const std::size_t a_step = transpose_a ? lda : 1;
    if (transpose_b) {
        for (std::size_t j = 0; j < n; ++j) {
            const T* row = b + j * ldb;
            T total = 0;
            for (std::size_t i = 0; i < k; ++i) total = std::fma(a[i * a_step], row[i], total);
            c[j] = alpha * total + (beta == T(0) ? T(0) : beta * c[j]);
        }
        return;
    }
    if (beta == T(0)) {
        std::fill(c, c + n, T(0));
    } else if (beta != T(1)) {
        for (std::size_t j = 0; j < n; ++j) c[j] *= beta;
    }
    for (std::size_t i = 0; i < k; ++i) {
        const T scaled = alpha * a[i * a_step];
        if (scaled == T(0)) continue;
        const T* row = b + i * ldb;
        for (std::size_t j = 0; j < n; ++j) c[j] = std::fma(scaled, row[j], c[j]);
    }
}

// OpenBLAS meets beta = 0 with a pass of its own that zero-fills c one column of its column-major
// view at a time (for dW of W2's first layer: 784 columns of 256 values); a plain fill, then
// beta = 1, gives the same bits in 0.65-0.93x the time on the products of W1-W6
// (bench/gemm_zero_fill). Returns the beta to pass on.
template <class T>
T zero_filled(std::size_t m, std::size_t n, T beta, T* c, std::size_t ldc) {
    if (beta != T(0)) return beta;
    if (ldc == n) {
        std::fill_n(c, m * n, T(0));
    } else {
        for (std::size_t i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, T(0));
    }
    return T(1);
}

}  // namespace

// Decided once per process from the core OpenBLAS names, so the same products take the same path
// in every run of a machine.
bool blas_is_narrower() {
    static const bool narrower = [] {
        if (simd_width<float> < 16) return false;
        const std::string_view core = openblas_get_corename();
        const auto is = [&](std::string_view name) {
            return std::equal(core.begin(), core.end(), name.begin(), name.end(),
                              [](char x, char y) { return std::tolower(static_cast<unsigned char>(x)) == y; });
        };
        for (std::string_view name : {"sandybridge", "haswell", "zen", "bulldozer", "piledriver", "steamroller", "excavator"}) {
            if (is(name)) return true;
        }
        return false;
    }();
    return narrower;
}

template <>
void gemm<float>(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                 const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                 std::size_t ldc) {
    claim_blas_threads();
    if (m == 1) {
        single_row_product(transpose_a, transpose_b, n, k, alpha, a, lda, b, ldb, beta, c);
        return;
    }
    if (alpha == 1.0f && (beta == 0.0f || beta == 1.0f) && small_product_fits(transpose_b, m, n, k, blas_is_narrower())) {
        small_product(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, beta == 1.0f, c, ldc);
        return;
    }
    beta = zero_filled(m, n, beta, c, ldc);
    cblas_sgemm(CblasRowMajor, flag(transpose_a), flag(transpose_b), as_int(m), as_int(n), as_int(k), alpha, a,
                as_int(lda), b, as_int(ldb), beta, c, as_int(ldc));
}

template <>
void gemm<double>(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
                  const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta, double* c,
                  std::size_t ldc) {
    claim_blas_threads();
    beta = zero_filled(m, n, beta, c, ldc);
    cblas_dgemm(CblasRowMajor, flag(transpose_a), flag(transpose_b), as_int(m), as_int(n), as_int(k), alpha, a,
                as_int(lda), b, as_int(ldb), beta, c, as_int(ldc));
}

template <class T>
void gemm_transposed_pieces(std::size_t m, std::size_t n, std::span<const TransposedPiece<T>> pieces, std::size_t total_k,
                            bool continue_from_c, T* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    if constexpr (std::is_same_v<T, float>) {
        if (small_product_fits(false, m, n, total_k, blas_is_narrower())) {
            small_product_transposed_pieces(m, n, pieces, continue_from_c, c, ldc);
            return;
        }
    }
    bool add = continue_from_c;
    for (const auto& piece : pieces) {
        if (piece.k == 0) continue;
        gemm<T>(true, false, m, n, piece.k, T(1), piece.a, piece.lda, piece.b, piece.ldb, add ? T(1) : T(0), c, ldc);
        add = true;
    }
    if (!add) zero_filled(m, n, T(0), c, ldc);
}

template void gemm_transposed_pieces<float>(std::size_t, std::size_t, std::span<const TransposedPiece<float>>, std::size_t,
                                            bool, float*, std::size_t);
template void gemm_transposed_pieces<double>(std::size_t, std::size_t, std::span<const TransposedPiece<double>>,
                                             std::size_t, bool, double*, std::size_t);

}  // namespace xtnn::detail
