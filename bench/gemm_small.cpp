// Where xtnn's small-product kernel (lib/src/gemm_small.hpp) takes over from OpenBLAS: both on
// a grid of row-major products C (m x n) = op(A) (m x k) * op(B) (k x n), A and B read as they are
// or transposed, m, n and k from 8 to 784 (W1 and W2's layers: 784, 256, 128, 32, 10, batches of
// 32 to 128), and a few larger ones.
// OpenBLAS runs as xtnn ran it before (std::fill of C, then beta = 1). Best of 5 rounds, the two
// alternating within each, so that drift hits both. Prints the CPU, one JSON line per product,
// and, over the products that small_product_fits chooses and those it leaves to OpenBLAS, the
// geometric mean and the worst of the kernel's time over OpenBLAS's.
//
//   build/bench/gemm_small

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <cblas.h>
#include <nlohmann/json.hpp>

#include "bench_common.hpp"

#include "gemm.hpp"
#include "gemm_small.hpp"

namespace {

struct Ratios {
    double log_sum = 0.0, worst = 0.0;
    int count = 0;
    std::string worst_product;
    void add(double ratio, const std::string& product) {
        log_sum += std::log(ratio);
        ++count;
        if (ratio > worst) {
            worst = ratio;
            worst_product = product;
        }
    }
    nlohmann::json summary() const {
        return {{"products", count}, {"geometric_mean", count ? std::exp(log_sum / count) : 0.0}, {"worst", worst},
                {"worst_product", worst_product}};
    }
};

}  // namespace

int main() {
    openblas_set_num_threads(1);
    std::cout << nlohmann::json{{"cpu", bench::cpu_model()}, {"simd_width", xtnn::detail::simd_width<float>},
                                {"openblas_core", openblas_get_corename()},
                                {"openblas_is_narrower", xtnn::detail::blas_is_narrower()}}
                     .dump()
              << std::endl;
    std::uint32_t state = 1;
    const auto next_value = [&state] {
        state = state * 1664525u + 1013904223u;
        return float(state >> 8) / float(1u << 24) - 0.5f;
    };
    struct Product {
        bool transpose_a, transpose_b;
        std::size_t m, n, k;
    };
    std::vector<Product> products;
    for (const bool transpose_a : {false, true}) {
        for (const bool transpose_b : {false, true}) {
            for (const std::size_t m : {8, 16, 32, 64, 128, 256, 784}) {
                for (const std::size_t n : {8, 10, 16, 32, 64, 128, 256}) {
                    for (const std::size_t k : {10, 32, 64, 128, 256, 784}) products.push_back({transpose_a, transpose_b, m, n, k});
                }
            }
        }
    }
    // Larger ones: W3's batch of 1000 through its first two layers, a product of 1024^3, and wider
    // inner dimensions (W4's dense layer, k = 9216, among them).
    for (const auto& [m, n, k] : {std::array<std::size_t, 3>{1000, 256, 784}, {1000, 128, 256}, {1024, 1024, 1024},
                                  {128, 256, 2048}, {4096, 64, 288}, {64, 128, 9216}, {2048, 2048, 2048}, {256, 512, 16384}}) {
        products.push_back({false, false, m, n, k});
    }
    Ratios chosen, left;
    for (const auto& [transpose_a, transpose_b, m, n, k] : products) {
        std::vector<float> a(m * k), b(k * n), c(m * n);
        std::generate(a.begin(), a.end(), next_value);
        std::generate(b.begin(), b.end(), next_value);
        const std::size_t lda = transpose_a ? m : k, ldb = transpose_b ? k : n;
        const int calls = std::max(5, int(4e6 / (2.0 * double(m * n * k))));
        double blas = 1e30, small = 1e30;
        for (int round = 0; round < 5; ++round) {
            auto start = bench::Clock::now();
            for (int call = 0; call < calls; ++call) {
                std::fill(c.begin(), c.end(), 0.0f);
                cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
                            int(m), int(n), int(k), 1.0f, a.data(), int(lda), b.data(), int(ldb), 1.0f, c.data(), int(n));
            }
            blas = std::min(blas, bench::seconds_since(start) / calls);
            start = bench::Clock::now();
            for (int call = 0; call < calls; ++call) {
                xtnn::detail::small_product(transpose_a, transpose_b, m, n, k, a.data(), lda, b.data(), ldb, false, c.data(), n);
            }
            small = std::min(small, bench::seconds_since(start) / calls);
        }
        const bool fits = xtnn::detail::small_product_fits(transpose_b, m, n, k, xtnn::detail::blas_is_narrower());
        const std::string product = std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                                    (transpose_a ? " A^T" : "") + (transpose_b ? " B^T" : "");
        (fits ? chosen : left).add(small / blas, product);
        std::cout << nlohmann::json{{"m", m}, {"n", n}, {"k", k}, {"transpose_a", transpose_a}, {"transpose_b", transpose_b},
                                    {"openblas_us", blas * 1e6}, {"small_us", small * 1e6},
                                    {"ratio", small / blas}, {"small_product_fits", fits}}
                         .dump()
                  << std::endl;
    }
    std::cout << nlohmann::json{{"chosen", chosen.summary()}, {"left_to_openblas", left.summary()}}.dump() << std::endl;
}
