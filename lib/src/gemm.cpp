#include "gemm.hpp"

#include <string>

#include <cblas.h>

#include "xtnn/error.hpp"
#include "xtnn/ops.hpp"

namespace xtnn::detail {

namespace {
CBLAS_TRANSPOSE flag(bool transpose) { return transpose ? CblasTrans : CblasNoTrans; }
blasint as_int(std::size_t n) { return static_cast<blasint>(n); }
}  // namespace

template <>
void gemm<float>(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                 const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                 std::size_t ldc) {
    if (m == 1) {
        // One row (single-sample inference): sgemm would first pack all of B, which for a 784x256
        // kernel costs more than the product; a matrix-vector product reads B once.
        const blasint a_step = transpose_a ? as_int(lda) : 1;
        if (transpose_b) {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, as_int(n), as_int(k), alpha, b, as_int(ldb), a, a_step, beta, c, 1);
        } else {
            cblas_sgemv(CblasRowMajor, CblasTrans, as_int(k), as_int(n), alpha, b, as_int(ldb), a, a_step, beta, c, 1);
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, flag(transpose_a), flag(transpose_b), as_int(m), as_int(n), as_int(k), alpha, a,
                as_int(lda), b, as_int(ldb), beta, c, as_int(ldc));
}

template <>
void gemm<double>(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
                  const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta, double* c,
                  std::size_t ldc) {
    cblas_dgemm(CblasRowMajor, flag(transpose_a), flag(transpose_b), as_int(m), as_int(n), as_int(k), alpha, a,
                as_int(lda), b, as_int(ldb), beta, c, as_int(ldc));
}

}  // namespace xtnn::detail

namespace xtnn::ops {

void set_num_threads(int threads) {
    if (threads < 1) throw ValueError("set_num_threads: threads must be at least 1, got " + std::to_string(threads));
    openblas_set_num_threads(threads);
}

int num_threads() { return openblas_get_num_threads(); }

}  // namespace xtnn::ops
