// The convolutions of W4, W5 and W6 one layer at a time (batch 64, one thread): xtnn's conv2d
// forward, and forward plus backward, against one-thread cblas_sgemm on 1024^3 matrices in the
// same run, the rate the CNNs' FLOP floors use. Layers with stride 1 and up to four SIMD
// registers of filters take the direct kernel (lib/src/conv_direct.hpp), the others im2col and
// sgemm. Then W6's batch normalizations (training form, with and without the relu fused), against
// copying their input once in the same run: their floor is a few passes over memory. Best of 50
// calls each; prints the CPU and one JSON line per layer.
//
//   build/bench/conv_layers

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <cblas.h>
#include <nlohmann/json.hpp>
#include <xtnn/xtnn.hpp>

#include "bench_common.hpp"

namespace {

struct Layer {
    const char* name;
    std::size_t height, width, channels, filters;
    xtnn::ops::Padding padding;
    bool input_gradient;  // false for a first layer: its input needs no gradient
};

template <class F>
double best_seconds(int calls, F&& f) {
    double best = 1e30;
    for (int call = 0; call < calls; ++call) {
        const auto start = std::chrono::steady_clock::now();
        f();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
}

// Values in [-1, 1) from a fixed recurrence: the timings do not depend on them.
xt::xarray<float> filled(const std::vector<std::size_t>& shape) {
    xt::xarray<float> values = xt::empty<float>(shape);
    std::uint32_t state = 1;
    for (float& v : values) {
        state = state * 1664525u + 1013904223u;
        v = float(state >> 8) / float(1u << 23) - 1.0f;
    }
    return values;
}

double sgemm_gflops() {
    constexpr int n = 1024;
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
    const double seconds = best_seconds(5, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    });
    return 2.0 * n * n * n / seconds / 1e9;
}

}  // namespace

int main() {
    xtnn::ops::set_num_threads(1);
    const double sgemm = sgemm_gflops();
    std::cout << nlohmann::json{{"cpu", bench::cpu_model()}, {"openblas_core", openblas_get_corename()}, {"sgemm_1024_gflops", sgemm}}.dump()
              << std::endl;
    using xtnn::ops::Padding;
    const Layer layers[] = {
        {"w4 conv1 1->32 28x28 valid", 28, 28, 1, 32, Padding::valid, false},
        {"w4 conv2 32->64 26x26 valid", 26, 26, 32, 64, Padding::valid, true},
        {"w5 conv1 1->8 28x28 valid", 28, 28, 1, 8, Padding::valid, false},
        {"w5 conv2 8->16 13x13 valid", 13, 13, 8, 16, Padding::valid, true},
        {"w6 stem 1->16 28x28 same", 28, 28, 1, 16, Padding::same, false},
        {"w6 block 16->16 28x28 same", 28, 28, 16, 16, Padding::same, true},
        {"w6 block 16->16 14x14 same", 14, 14, 16, 16, Padding::same, true},
    };
    constexpr std::size_t batch = 64;
    for (const Layer& layer : layers) {
        const xt::xarray<float> images = filled({batch, layer.height, layer.width, layer.channels});
        const xtnn::Tensor x = layer.input_gradient ? xtnn::Tensor::parameter(images) : xtnn::Tensor::constant(images);
        const xtnn::Tensor kernel = xtnn::Tensor::parameter(filled({3, 3, layer.channels, layer.filters}));
        auto forward = [&] { return xtnn::ops::conv2d(x, kernel, {1, 1}, layer.padding); };
        const auto& out = forward().value().shape();
        const xt::xarray<float> seed = filled({out.begin(), out.end()});
        const double forward_seconds = best_seconds(50, forward);
        const double both_seconds = best_seconds(50, [&] { forward().backward(seed); });
        const double forward_flops = 2.0 * double(batch * out[1] * out[2] * layer.filters * 9 * layer.channels);
        const double backward_flops = forward_flops * (layer.input_gradient ? 2.0 : 1.0);
        const double forward_gflops = forward_flops / forward_seconds / 1e9;
        const double backward_gflops = backward_flops / (both_seconds - forward_seconds) / 1e9;
        std::cout << nlohmann::json{{"layer", layer.name},
                                    {"batch", batch},
                                    {"forward_us", forward_seconds * 1e6},
                                    {"forward_and_backward_us", both_seconds * 1e6},
                                    {"forward_gflops", forward_gflops},
                                    {"backward_gflops", backward_gflops},
                                    {"forward_share_of_sgemm_rate", forward_gflops / sgemm},
                                    {"backward_share_of_sgemm_rate", backward_gflops / sgemm}}
                         .dump()
                  << std::endl;
    }
    struct Normalized {
        const char* name;
        std::size_t size;
        bool relu;
    };
    const Normalized normalizations[] = {
        {"w6 batch_norm_relu 16 28x28", 28, true},
        {"w6 batch_norm 16 28x28", 28, false},
        {"w6 batch_norm_relu 16 14x14", 14, true},
    };
    for (const Normalized& layer : normalizations) {
        const xt::xarray<float> values = filled({batch, layer.size, layer.size, 16});
        const xtnn::Tensor x = xtnn::Tensor::parameter(values);
        const xtnn::Tensor gamma = xtnn::Tensor::parameter(xt::ones<float>({16}));
        const xtnn::Tensor beta = xtnn::Tensor::parameter(xt::zeros<float>({16}));
        xt::xarray<float> mean, variance;
        auto forward = [&] {
            return layer.relu ? xtnn::ops::batch_norm_relu(x, gamma, beta, 1e-3f, mean, variance)
                              : xtnn::ops::batch_norm(x, gamma, beta, 1e-3f, mean, variance);
        };
        const xt::xarray<float> seed = filled(std::vector<std::size_t>(values.shape().begin(), values.shape().end()));
        xt::xarray<float> copy = xt::empty<float>(values.shape());
        const double copy_seconds = best_seconds(50, [&] { std::copy(values.begin(), values.end(), copy.begin()); });
        const double forward_seconds = best_seconds(50, forward);
        const double both_seconds = best_seconds(50, [&] { forward().backward(seed); });
        std::cout << nlohmann::json{{"layer", layer.name},
                                    {"batch", batch},
                                    {"forward_us", forward_seconds * 1e6},
                                    {"forward_and_backward_us", both_seconds * 1e6},
                                    {"copy_us", copy_seconds * 1e6},
                                    {"forward_in_copies", forward_seconds / copy_seconds},
                                    {"backward_in_copies", (both_seconds - forward_seconds) / copy_seconds}}
                         .dump()
                  << std::endl;
    }
}
