// The floor of an MLP workload: the time OpenBLAS's cblas_sgemm alone needs for one training
// epoch's matrix products, 60,000 samples with the last partial batch: per step three forward
// products, three weight gradients and two input gradients, into preallocated buffers, each
// zero-filled with std::fill and then accumulated (beta = 1), as xtnn does: faster than
// OpenBLAS's own beta = 0 pass (bench/gemm_zero_fill), so still a floor.
//   W2: 784-256-128-10, batch 128        W1: 784-32-32-10, batch 32
// Prints {"workload": "sgemm_floor_w2", "epoch_s_median": ...} over 5 epochs.
// With a shard count S: the products of one rank of S in data-parallel training (batch/S rows per
// step, 60,000/S samples); S copies started together give the floor of an S-rank epoch.
// With "rate" instead: the GFLOP/s of one 1024^3 product (best of 10), the rate at which
// ../shared/bench defines a CNN's FLOP floor (3x its forward FLOPs at that rate).
//
//   build/bench/sgemm_floor 1 w2 [1]      (threads, workload: w1, w2 or rate, shards)

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <cblas.h>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
    const std::string workload = argc > 2 ? argv[2] : "w2";
    const int shards = argc > 3 ? std::atoi(argv[3]) : 1;
    if (workload != "w1" && workload != "w2" && workload != "rate") {
        std::cerr << "sgemm_floor: unknown workload '" << workload << "' (known: w1, w2, rate)\n";
        return 1;
    }
    openblas_set_num_threads(threads);
    if (workload == "rate") {
        const int n = 1024;
        std::vector<float> a(std::size_t(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size(), 0.0f);
        double best = 1e30;
        for (int repeat = 0; repeat < 10; ++repeat) {
            const auto start = std::chrono::steady_clock::now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                        c.data(), n);
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        std::cout << nlohmann::json{{"peer", "openblas-sgemm"}, {"workload", "sgemm_rate_1024"}, {"threads", threads},
                                    {"gflops", 2.0 * n * n * n / best / 1e9}, {"openblas_core", openblas_get_corename()}}
                         .dump()
                  << std::endl;
        return 0;
    }
    const bool w1 = workload == "w1";
    const std::vector<int> widths = w1 ? std::vector<int>{784, 32, 32, 10} : std::vector<int>{784, 256, 128, 10};
    if (shards < 1 || shards > (w1 ? 32 : 128)) {
        std::cerr << "sgemm_floor: " << shards << " shards: expected 1 to the batch size\n";
        return 1;
    }
    const int samples = 60000 / shards, batch = (w1 ? 32 : 128) / shards;
    std::vector<std::vector<float>> weights, weight_grads, activations, activation_grads;
    for (int l = 0; l < 3; ++l) {
        weights.emplace_back(std::size_t(widths[l]) * widths[l + 1], 0.01f);
        weight_grads.emplace_back(weights.back().size(), 0.0f);
    }
    for (int l = 0; l < 4; ++l) {
        activations.emplace_back(std::size_t(batch) * widths[l], 0.5f);
        activation_grads.emplace_back(std::size_t(batch) * widths[l], 0.1f);
    }
    const auto product = [](bool transpose_a, bool transpose_b, int m, int n, int k, const float* a, int lda, const float* b,
                            int ldb, float* c) {
        std::fill(c, c + std::size_t(m) * n, 0.0f);
        cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, m, n, k,
                    1.0f, a, lda, b, ldb, 1.0f, c, n);
    };
    std::vector<double> times;
    for (int epoch = 0; epoch < 5; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        for (int begin = 0; begin < samples; begin += batch) {
            const int rows = std::min(batch, samples - begin);
            for (int l = 0; l < 3; ++l) {
                product(false, false, rows, widths[l + 1], widths[l], activations[l].data(), widths[l], weights[l].data(),
                        widths[l + 1], activations[l + 1].data());
            }
            for (int l = 2; l >= 0; --l) {
                product(true, false, widths[l], widths[l + 1], rows, activations[l].data(), widths[l],
                        activation_grads[l + 1].data(), widths[l + 1], weight_grads[l].data());
                if (l > 0) {
                    product(false, true, rows, widths[l], widths[l + 1], activation_grads[l + 1].data(), widths[l + 1],
                            weights[l].data(), widths[l + 1], activation_grads[l].data());
                }
            }
        }
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    std::cout << nlohmann::json{{"peer", "openblas-sgemm"}, {"workload", "sgemm_floor_" + workload}, {"threads", threads},
                                {"shards", shards}, {"epoch_times", times}, {"epoch_s_median", sorted[2]}}
                     .dump()
              << std::endl;
}
