// Why xtnn zero-fills a product's output itself (lib/src/gemm.cpp): OpenBLAS's cblas_sgemm with
// beta = 0 against std::fill then beta = 1, which gives the same bits, on the products of the
// workloads (W1, W2: a weight gradient and a forward product; W5, W6: conv2d's products on a
// chunk of images). Best of 200 calls each, alternating, so that drift hits both; prints the CPU
// and one JSON line per product.
//
//   build/bench/gemm_zero_fill

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <cblas.h>
#include <nlohmann/json.hpp>

#include "bench_common.hpp"

namespace {

struct Product {
    const char* name;
    bool transpose_a, transpose_b;
    int m, n, k;
};

}  // namespace

int main() {
    openblas_set_num_threads(1);
    std::cout << nlohmann::json{{"cpu", bench::cpu_model()}, {"openblas_core", openblas_get_corename()}}.dump() << std::endl;
    const Product products[] = {
        {"w1 dW of Dense 32 (784x32, 32 rows)", true, false, 784, 32, 32},
        {"w2 dW of Dense 256 (784x256, 128 rows)", true, false, 784, 256, 128},
        {"w2 dW of Dense 256 on 2 ranks (64 rows)", true, false, 784, 256, 64},
        {"w2 forward of Dense 256 (128 rows)", false, false, 128, 256, 784},
        {"w5 conv1 forward (676 positions x 64 images, 8 filters, 9 taps)", true, false, 43264, 8, 9},
        {"w6 conv input gradient (4 images of 784 positions, 144 taps, 16 filters)", false, true, 3136, 144, 16},
        {"w6 conv forward (4 images of 784 positions, 144 taps, 16 filters)", false, false, 3136, 16, 144},
    };
    for (const Product& p : products) {
        const int a_rows = p.transpose_a ? p.k : p.m, a_cols = p.transpose_a ? p.m : p.k;
        const int b_rows = p.transpose_b ? p.n : p.k, b_cols = p.transpose_b ? p.k : p.n;
        std::vector<float> a(std::size_t(a_rows) * a_cols), b(std::size_t(b_rows) * b_cols);
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = float(i % 97) / 97.0f - 0.5f;
        for (std::size_t i = 0; i < b.size(); ++i) b[i] = float(i % 89) / 89.0f - 0.5f;
        std::vector<float> blas_fill(std::size_t(p.m) * p.n), own_fill(blas_fill.size());
        const auto product = [&](float beta, std::vector<float>& c) {
            cblas_sgemm(CblasRowMajor, p.transpose_a ? CblasTrans : CblasNoTrans, p.transpose_b ? CblasTrans : CblasNoTrans, p.m,
                        p.n, p.k, 1.0f, a.data(), a_cols, b.data(), b_cols, beta, c.data(), p.n);
        };
        double best_blas = 1e30, best_own = 1e30;
        for (int repeat = 0; repeat < 200; ++repeat) {
            auto start = std::chrono::steady_clock::now();
            product(0.0f, blas_fill);
            best_blas = std::min(best_blas, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
            start = std::chrono::steady_clock::now();
            std::fill(own_fill.begin(), own_fill.end(), 0.0f);
            product(1.0f, own_fill);
            best_own = std::min(best_own, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        std::cout << nlohmann::json{{"product", p.name},          {"m", p.m}, {"n", p.n}, {"k", p.k},
                                    {"beta0_us", best_blas * 1e6}, {"fill_beta1_us", best_own * 1e6},
                                    {"ratio", best_own / best_blas}, {"same_bits", blas_fill == own_fill}}
                         .dump()
                  << std::endl;
    }
}
