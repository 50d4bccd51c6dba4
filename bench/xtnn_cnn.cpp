// xtnn on the CNN workloads of ../shared/bench/torch_cnn.py (same command line, same JSON keys):
//   W4, the book's CNN: Conv2D 32 3x3 relu, Conv2D 64 3x3 relu, MaxPooling 2, Dropout 0.25,
//       Flatten, Dense 128 relu, Dropout 0.5, Dense 10; softmax CE; Adam 1e-3; batch 64
//   W5, LeNet-like: Conv 8 3x3 relu, MaxPool 2, Conv 16 3x3 relu, MaxPool 2, Flatten, Dense 10;
//       SGD 0.05 momentum 0.9; batch 64
//   W6, a tiny ResNet (functional, BatchNormalization with Keras's defaults): stem Conv 16 3x3 same,
//       BN, relu; residual block at 28x28 (Conv 16 same, BN, relu, Conv 16 same, BN, add the
//       input, relu); MaxPool 2; the same block at 14x14; MaxPool 2; Flatten; Dense 10; Adam 1e-3;
//       batch 64
// Epoch time is the training loop alone, median over epochs 2..N; then batch-1000 throughput
// (1 warm-up batch, 5 timed batches) and batch-1 latency (50 warm-up calls, 500 timed).
//
//   build/bench/xtnn_cnn --workload w4 --threads 1 --data mnist10k

#include <functional>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "bench_common.hpp"
#include "command_line.hpp"

namespace {

// Conv 3x3 same, BN, relu, Conv 3x3 same, BN, plus the block's input, relu.
xtnn::SymbolicTensor residual_block(const xtnn::SymbolicTensor& input) {
    auto y = xtnn::Activation("relu")(xtnn::BatchNormalization()(xtnn::Conv2D(16, 3, 1, "same")(input)));
    y = xtnn::BatchNormalization()(xtnn::Conv2D(16, 3, 1, "same")(y));
    return xtnn::Activation("relu")(xtnn::Add()({input, y}));
}

std::unique_ptr<xtnn::Model> tiny_resnet() {
    auto image = xtnn::Input({28, 28, 1});
    auto x = xtnn::Activation("relu")(xtnn::BatchNormalization()(xtnn::Conv2D(16, 3, 1, "same")(image)));
    x = xtnn::MaxPooling2D(2)(residual_block(x));
    x = xtnn::MaxPooling2D(2)(residual_block(x));
    return std::make_unique<xtnn::Model>(image, xtnn::Dense(10, "softmax")(xtnn::Flatten()(x)), "w6");
}

std::unique_ptr<xtnn::Model> sequential_cnn(const std::string& workload) {
    auto stack = std::make_unique<xtnn::Sequential>();
    xtnn::Sequential& model = *stack;
    if (workload == "w4") {
        model.add(xtnn::Conv2D(32, 3, 1, "valid", "relu", {28, 28, 1}));
        model.add(xtnn::Conv2D(64, 3, 1, "valid", "relu"));
        model.add(xtnn::MaxPooling2D(2));
        model.add(xtnn::Dropout(0.25));
        model.add(xtnn::Flatten());
        model.add(xtnn::Dense(128, "relu"));
        model.add(xtnn::Dropout(0.5));
        model.add(xtnn::Dense(10, "softmax"));
    } else {
        model.add(xtnn::Conv2D(8, 3, 1, "valid", "relu", {28, 28, 1}));
        model.add(xtnn::MaxPooling2D(2));
        model.add(xtnn::Conv2D(16, 3, 1, "valid", "relu"));
        model.add(xtnn::MaxPooling2D(2));
        model.add(xtnn::Flatten());
        model.add(xtnn::Dense(10, "softmax"));
    }
    return stack;
}

}  // namespace

int main(int argc, char** argv) {
    command_line::Parser args{"xtnn on the CNN benchmark workloads"};
    std::string workload, data = "fashion";
    int threads = 1, epochs = 0, latency_calls = 500, latency_warmup = 50, throughput_batches = 5;
    std::uint64_t seed = 0;
    args.option("--workload", workload).required().one_of({"w4", "w5", "w6"});
    args.option("--threads", threads, "BLAS threads; 0 keeps xtnn's default");
    args.option("--data", data).one_of({"fashion", "mnist10k"});
    args.option("--epochs", epochs, "default: w4 8 (mnist10k) or 2 (fashion); w5 5; w6 3");
    args.option("--seed", seed);
    std::string reduction = "ring";
    args.option("--reduction", reduction, "under mpirun: how the ranks' gradients are summed").one_of({"ring", "allreduce", "fixed_order"});
    args.option("--latency-calls", latency_calls);
    bool no_exchange = false;
    args.flag("--no-exchange", no_exchange, "under mpirun: each rank trains alone on its share of the samples and of every batch");
    args.option("--lat-warmup", latency_warmup);
    args.option("--thr-batches", throughput_batches);
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;
    if (epochs == 0) epochs = workload == "w5" ? 5 : workload == "w6" ? 3 : (data == "mnist10k" ? 8 : 2);

    // One rank unless started by mpirun: then every rank trains its share of each batch and
    // rank 0 reports (bench/distributed.sh).
    xtnn::distributed::Session session(argc, argv);
    session.set_options({.reduction = xtnn::distributed::reduction_from_name(reduction)});
    try {
        if (threads > 0) xtnn::ops::set_num_threads(threads);
        xtnn::set_random_seed(seed);
        // Named members, not structured bindings: clang 14 cannot capture those in a lambda.
        auto datasets = data == "fashion" ? xtnn::datasets::load_fashion_mnist()
                                          : xtnn::datasets::load_mnist(XTNN_SOURCE_DIR "/datasets/mnist-10k");
        xtnn::Dataset& train = datasets.first;
        xtnn::Dataset& test = datasets.second;
        for (auto* images : {&train.x, &test.x}) images->reshape({images->shape()[0], std::size_t(28), std::size_t(28), std::size_t(1)});

        const std::unique_ptr<xtnn::Model> network = workload == "w6" ? tiny_resnet() : sequential_cnn(workload);
        xtnn::Model& model = *network;
        if (workload == "w5") {
            model.compile("sparse_categorical_crossentropy", xtnn::SGD{.learning_rate = 0.05, .momentum = 0.9});
        } else {
            model.compile("sparse_categorical_crossentropy", xtnn::Adam{.learning_rate = 1e-3, .epsilon = 1e-7});
        }
        const std::size_t n_train = train.x.shape()[0];
        if (no_exchange) {
            train.x = bench::own_share(train.x, session);
            train.y = bench::own_share(train.y, session);
        }
        const std::size_t rows_per_step = no_exchange ? 64 / std::size_t(session.size()) : 64;
        auto timer = std::make_shared<bench::EpochTimer>();
        xtnn::FitOptions fit_options{.batch_size = rows_per_step, .epochs = epochs, .verbose = 0, .callbacks = {timer}};
        if (!no_exchange) fit_options.distributed = std::cref(session);
        const xtnn::History history = model.fit(train.x, train.y, fit_options);
        if (!session.is_chief() && !no_exchange) return 0;
        const double test_accuracy = bench::accuracy(model.predict(test.x, 1000), test.y);
        const auto& times = timer->times;
        const std::vector<double> timed = times.size() < 2 ? times : std::vector<double>(times.begin() + 1, times.end());
        std::cout << nlohmann::json{{"peer", "xtnn"}, {"version", "0.1.0"}, {"workload", workload}, {"data", data},
                                    {"threads", threads}, {"threads_used", xtnn::ops::num_threads()}, {"ranks", session.size()}, {"reduction", reduction},
                                    {"no_exchange", no_exchange}, {"rows_per_step", rows_per_step},
            // What each step sums over the ranks: every weight's gradient (or moving statistic), as floats.
            {"fused_bytes_per_step", model.count_params() * sizeof(float)}, {"seed", seed}, {"batch", 64},
                                    {"n_train", n_train},
                                    {"n_params", model.count_params()}, {"epochs", epochs}, {"epoch_times", times},
                                    {"steps_on_cpu", timer->steps_on_cpu},
                                    {"epoch_s_median", bench::median(timed)},
                                    {"epoch_s_min", *std::min_element(timed.begin(), timed.end())},
                                    {"epoch_s_max", *std::max_element(timed.begin(), timed.end())},
                                    {"train_loss", history.history.at("loss")}, {"test_acc", test_accuracy}}
                         .dump()
                  << std::endl;
        if (no_exchange) return 0;

        const std::size_t n_test = test.x.shape()[0];
        auto batch_at = [&](std::size_t first, std::size_t count) {
            first %= n_test;
            return xt::xarray<float>(xt::view(test.x, xt::range(first, std::min(n_test, first + count))));
        };
        model.predict(batch_at(0, 1000), 1000);
        std::vector<double> batch_seconds;
        for (int b = 0; b < throughput_batches; ++b) {
            const auto input = batch_at(std::size_t(b) * 1000, 1000);
            const auto start = bench::Clock::now();
            model.predict(input, 1000);
            batch_seconds.push_back(bench::seconds_since(start));
        }
        for (int i = 0; i < latency_warmup; ++i) model.predict(batch_at(std::size_t(i), 1), 1);
        std::vector<double> latencies;
        for (int i = 0; i < latency_calls; ++i) {
            const auto input = batch_at(std::size_t(i), 1);
            const auto start = bench::Clock::now();
            model.predict(input, 1);
            latencies.push_back(bench::seconds_since(start) * 1e6);
        }
        std::cout << nlohmann::json{{"peer", "xtnn"}, {"version", "0.1.0"}, {"kind", "infer"}, {"workload", workload},
                                    {"data", data}, {"threads", threads}, {"thr_batches", batch_seconds.size()},
                                    {"thr_img_s_median", 1000.0 / bench::median(batch_seconds)},
                                    {"lat_us_mean", bench::mean(latencies)}, {"lat_us_median", bench::median(latencies)},
                                    {"latency_calls", latencies.size()}}
                         .dump()
                  << std::endl;
    } catch (const std::exception& e) {
        if (session.size() > 1) session.abort(std::string("xtnn_cnn: ") + e.what());
        std::cerr << "xtnn_cnn: " << e.what() << "\n";
        return 1;
    }
}
