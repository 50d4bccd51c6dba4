#pragma once
// Row-major C = alpha * op(A) * op(B) + beta * C on OpenBLAS, for float (sgemm) and double
// (dgemm, used by the gradient checks). Kept out of public headers: <cblas.h> clashes with
// xtensor-blas, and users never need it.

#include <cstddef>

namespace xtnn::detail {

template <class T>
void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc);

}  // namespace xtnn::detail
