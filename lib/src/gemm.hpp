#pragma once
// Row-major C = alpha * op(A) * op(B) + beta * C on OpenBLAS, for float (sgemm) and double
// (dgemm, used by the gradient checks). Kept out of public headers: <cblas.h> clashes with
// xtensor-blas, and users never need it.

#include <cstddef>
#include <span>

namespace xtnn::detail {

template <class T>
void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc);

/// A piece of the inner dimension of a product A^T B: A is (k x m) with rows lda apart, B (k x n)
/// with rows ldb apart, both row-major.
template <class T>
struct TransposedPiece {
    const T* a;
    std::size_t lda;
    const T* b;
    std::size_t ldb;
    std::size_t k;
};

/// C (m x n, rows ldc apart) = the sum over the pieces of A_p^T B_p, in piece order, continued from
/// what C holds when `continue_from_c`. `total_k` is the inner length of the whole product the
/// pieces are cut from, the same in every call that computes a part of it: it picks the kernel,
/// so one call over all the pieces gives the same bits as one call per piece, each continuing
/// from the last. On xtnn's kernel every value of C is one chain of fused multiply-adds through
/// the pieces; on OpenBLAS each piece is one product added to C.
template <class T>
void gemm_transposed_pieces(std::size_t m, std::size_t n, std::span<const TransposedPiece<T>> pieces, std::size_t total_k,
                            bool continue_from_c, T* c, std::size_t ldc);

/// True when OpenBLAS runs kernels of narrower vectors than this build of xtnn: an AVX-512 build
/// on a CPU for which OpenBLAS chose one of its AVX or AVX2 cores (a CPU newer than the OpenBLAS
/// build, or OPENBLAS_CORETYPE set so). xtnn's own product kernel then takes more products.
bool blas_is_narrower();

}  // namespace xtnn::detail
