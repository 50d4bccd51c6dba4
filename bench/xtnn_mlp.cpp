// xtnn on the peer benchmark workloads of ../shared/bench (same command line, same JSON keys):
//   W1: 784-32 relu-Dropout 0.1-32 relu-Dropout 0.1-10, softmax CE, SGD 0.01, batch 32
//   W2: 784-256 relu-128 relu-10, softmax CE, SGD 0.05 momentum 0.9, batch 128
//   W3: inference with the trained W2 model (printed after W2): batch-1000 throughput over the
//       test set (1 warm-up pass, 5 timed) and batch-1 latency (200 warm-up calls, 2000 timed)
// Glorot-uniform weights, zero biases, a shuffle every epoch, the last partial batch kept; epoch
// time is the training loop alone, median of epochs 2-4.
//
//   build/bench/xtnn_mlp --workload w2 --threads 1 --data fashion --epochs 5

#include <algorithm>
#include <functional>
#include <iostream>

#include <nlohmann/json.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "bench_common.hpp"
#include "command_line.hpp"

namespace {

using bench::Clock;
using bench::median;
using bench::seconds_since;

// (N, 28, 28) -> (N, 784) in place: no second copy of the dataset.
xt::xarray<std::uint8_t> flattened(xt::xarray<std::uint8_t>&& images) {
    const std::size_t n = images.shape()[0];
    images.reshape({n, images.size() / n});
    return std::move(images);
}

}  // namespace

int main(int argc, char** argv) {
    command_line::Parser args{"xtnn on the MLP benchmark workloads"};
    std::string workload, data = "fashion";
    int threads = 1, epochs = 5, latency_calls = 2000;
    std::uint64_t seed = 0;
    args.option("--workload", workload).required().one_of({"w1", "w2", "w3"});
    args.option("--threads", threads, "BLAS threads; 0 keeps xtnn's default");
    args.option("--data", data).one_of({"fashion", "mnist10k"});
    args.option("--epochs", epochs);
    args.option("--seed", seed);
    std::string reduction = "ring";
    args.option("--reduction", reduction, "under mpirun: how the ranks' gradients are summed").one_of({"ring", "allreduce", "fixed_order"});
    args.option("--latency-calls", latency_calls);
    bool no_exchange = false;
    args.flag("--no-exchange", no_exchange, "under mpirun: each rank trains alone on its share of the samples and of every batch");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    // One rank unless started by mpirun: then every rank trains its share of each batch and
    // rank 0 reports (bench/distributed.sh).
    xtnn::distributed::Session session(argc, argv);
    session.set_options({.reduction = xtnn::distributed::reduction_from_name(reduction)});
    try {
        if (threads > 0) xtnn::ops::set_num_threads(threads);
        xtnn::set_random_seed(seed);
        // The images stay bytes (a quarter of the memory and memory traffic); the model's first
        // layer scales them to [0, 1], giving the same floats as the peers' x / 255.
        auto [train, test] = data == "fashion" ? xtnn::datasets::load_fashion_mnist_bytes()
                                               : xtnn::datasets::load_mnist_bytes(XTNN_SOURCE_DIR "/datasets/mnist-10k");
        xt::xarray<std::uint8_t> x_train = flattened(std::move(train.x));
        const xt::xarray<std::uint8_t> x_test = flattened(std::move(test.x));
        const std::string trained = workload == "w1" ? "w1" : "w2";
        const std::size_t batch = trained == "w1" ? 32 : 128;
        const std::size_t n_train = x_train.shape()[0];
        if (no_exchange) {
            x_train = bench::own_share(x_train, session);
            train.y = bench::own_share(train.y, session);
        }
        const std::size_t rows_per_step = no_exchange ? batch / std::size_t(session.size()) : batch;

        xtnn::Sequential model;
        model.add(xtnn::Rescaling(1.0 / 255, 0.0, {784}));
        if (trained == "w1") {
            model.add(xtnn::Dense(32, "relu"));
            model.add(xtnn::Dropout(0.1));
            model.add(xtnn::Dense(32, "relu"));
            model.add(xtnn::Dropout(0.1));
            model.add(xtnn::Dense(10, "softmax"));
            model.compile("sparse_categorical_crossentropy", xtnn::SGD{.learning_rate = 0.01});
        } else {
            model.add(xtnn::Dense(256, "relu"));
            model.add(xtnn::Dense(128, "relu"));
            model.add(xtnn::Dense(10, "softmax"));
            model.compile("sparse_categorical_crossentropy", xtnn::SGD{.learning_rate = 0.05, .momentum = 0.9});
        }
        auto timer = std::make_shared<bench::EpochTimer>();
        xtnn::FitOptions fit_options{.batch_size = rows_per_step, .epochs = epochs, .verbose = 0, .callbacks = {timer}};
        if (!no_exchange) fit_options.distributed = std::cref(session);
        const xtnn::History history = model.fit(x_train, train.y, fit_options);
        if (!session.is_chief() && !no_exchange) return 0;
        const double test_accuracy = bench::accuracy(model.predict(x_test, 1000), test.y);

        const auto& times = timer->times;
        // Epochs 2-4, as the peers time them (all epochs when there are fewer than 2).
        const std::vector<double> timed =
            times.size() < 2 ? times : std::vector<double>(times.begin() + 1, times.begin() + std::min<std::size_t>(4, times.size()));
        nlohmann::json result = {
            {"peer", "xtnn"}, {"version", "0.1.0"}, {"workload", trained}, {"data", data}, {"threads", threads},
            {"threads_used", xtnn::ops::num_threads()}, {"ranks", session.size()}, {"reduction", reduction},
            {"no_exchange", no_exchange}, {"rows_per_step", rows_per_step},
            // What each step sums over the ranks: every weight's gradient (or moving statistic), as floats.
            {"fused_bytes_per_step", model.count_params() * sizeof(float)},
            {"batch", batch}, {"n_train", n_train}, {"epochs", epochs}, {"epoch_times", times},
            {"steps_on_cpu", timer->steps_on_cpu},
            {"epoch_s_median", median(timed)}, {"epoch_s_min", *std::min_element(timed.begin(), timed.end())},
            {"epoch_s_max", *std::max_element(timed.begin(), timed.end())}, {"train_loss", history.history.at("loss")},
            {"test_acc", test_accuracy}};
        std::cout << result.dump() << std::endl;
        if (trained != "w2" || no_exchange) return 0;

        const std::size_t n_test = x_test.shape()[0];
        std::vector<xt::xarray<std::uint8_t>> batches;
        for (std::size_t i = 0; i < n_test; i += 1000) batches.push_back(xt::view(x_test, xt::range(i, std::min(n_test, i + 1000))));
        for (const auto& b : batches) model.predict(b, 1000);
        std::vector<double> pass_seconds;
        for (int pass = 0; pass < 5; ++pass) {
            const auto start = Clock::now();
            for (const auto& b : batches) model.predict(b, 1000);
            pass_seconds.push_back(seconds_since(start));
        }
        std::vector<xt::xarray<std::uint8_t>> singles;
        for (int i = 0; i < std::max(200, latency_calls); ++i) {
            const std::size_t row = std::size_t(i) % n_test;
            singles.push_back(xt::view(x_test, xt::range(row, row + 1)));
        }
        for (int i = 0; i < 200; ++i) model.predict(singles[std::size_t(i)], 1);
        std::vector<double> latencies;
        for (int i = 0; i < latency_calls; ++i) {
            const auto start = Clock::now();
            model.predict(singles[std::size_t(i)], 1);
            latencies.push_back(seconds_since(start) * 1e6);
        }
        std::cout << nlohmann::json{{"peer", "xtnn"}, {"version", "0.1.0"}, {"workload", "w3"}, {"data", data},
                                    {"threads", threads}, {"n_test", n_test},
                                    {"thr_img_s_median", double(n_test) / median(pass_seconds)},
                                    {"lat_us_mean", bench::mean(latencies)},
                                    {"lat_us_median", median(latencies)}, {"latency_calls", latencies.size()}}
                         .dump()
                  << std::endl;
    } catch (const std::exception& e) {
        if (session.size() > 1) session.abort(std::string("xtnn_mlp: ") + e.what());
        std::cerr << "xtnn_mlp: " << e.what() << "\n";
        return 1;
    }
}
