#pragma once
// Row-major C = alpha * op(A) * op(B) + beta * C on OpenBLAS, for float (sgemm) and double
// (dgemm, used by the gradient checks). Kept out of public headers: <cblas.h> clashes with
// xtensor-blas, and users never need it.

#include <cstddef>

namespace xtnn::detail {

template <class T>
void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc);

/// True when OpenBLAS runs kernels of narrower vectors than this build of xtnn: an AVX-512 build
/// on a CPU for which OpenBLAS chose one of its AVX or AVX2 cores (a CPU newer than the OpenBLAS
/// build, or OPENBLAS_CORETYPE set so). xtnn's own product kernel then takes more products.
bool blas_is_narrower();

}  // namespace xtnn::detail
