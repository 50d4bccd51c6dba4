// One training run of the book's model on the first 1,000 bundled digits, for the tests that
// compare whole processes: the same seed in two processes, a run resumed from a file in a new
// process, and runs on several MPI ranks. Writes the model file and the History as exact (hex)
// doubles, one epoch a line; under MPI, ranks other than 0 add ".rank<r>" to both names.
//
//   xtnn_train_run --data DIR --seed 42 --epochs 4 --save run.xtnn --history run.txt [--resume half.xtnn] [--cnn]
//   mpirun -np 2 xtnn_train_run --distributed --threads 1 ... [--fail-rank 1 | --kill-rank 1 | --mismatch-rank 1 | --broken-rank 1]

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"

// Ends this rank in the middle of the second epoch: by an exception, or killed as by the system.
class Sabotage : public xtnn::Callback {
public:
    explicit Sabotage(bool kill) : kill_(kill) {}
    void on_epoch_begin(int epoch, const xtnn::Logs&) override { epoch_ = epoch; }
    void on_train_batch_end(int batch, const xtnn::Logs&) override {
        if (epoch_ != 1 || batch != 3) return;
        if (kill_) std::raise(SIGKILL);
        throw std::runtime_error("sabotaged at epoch 2, batch 4");
    }

private:
    bool kill_;
    int epoch_ = 0;
};

int main(int argc, char** argv) {
    command_line::Parser args{"xtnn test run"};
    std::string data, save, history_path, resume;
    std::uint64_t seed = 42;
    int epochs = 2;
    args.option("--data", data).required();
    args.option("--seed", seed);
    args.option("--epochs", epochs);
    args.option("--save", save).required();
    args.option("--history", history_path).required();
    args.option("--resume", resume, "continue from this model file, with its random state");
    std::size_t batch_size = 64;
    int threads = 0, fail_rank = -1, kill_rank = -1, mismatch_rank = -1, broken_rank = -1, short_evaluation_rank = -1;
    bool distributed = false, batch_norm = false, messages = false, evaluate = false;
    std::string reduction = "ring";
    std::string checkpoint, compare;
    args.option("--batch-size", batch_size);
    args.option("--threads", threads, "xtnn's threads (default: its own choice)");
    args.flag("--distributed", distributed, "train on the ranks of an MPI job");
    args.option("--reduction", reduction, "how the ranks' gradients are summed").one_of({"ring", "allreduce", "fixed_order"});
    args.flag("--messages", messages, "the ring over MPI messages even where the ranks share memory");
    args.flag("--batch-norm", batch_norm, "a BatchNormalization layer after the first Dense");
    bool cnn = false;
    args.flag("--cnn", cnn, "a small convolutional network with BatchNormalization instead of the book's model");
    args.option("--checkpoint", checkpoint, "save the model here after every epoch (ModelCheckpoint)");
    args.option("--fail-rank", fail_rank, "this rank throws during the second epoch");
    args.option("--kill-rank", kill_rank, "this rank kills itself (SIGKILL) during the second epoch");
    args.option("--mismatch-rank", mismatch_rank, "this rank trains with half the batch size");
    args.option("--broken-rank", broken_rank, "this rank has one label fewer than images");
    args.flag("--evaluate", evaluate, "after training, evaluate on the validation samples (with the ranks) and add the figures to --history");
    args.option("--short-evaluation-rank", short_evaluation_rank, "with --evaluate: this rank evaluates one sample fewer");
    args.option("--compare", compare, "print the largest difference between the weights of --save and this file, and exit");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    if (!compare.empty()) {
        const auto a = xtnn::load_model(save).get_weights(), b = xtnn::load_model(compare).get_weights();
        double largest = 0;
        for (std::size_t w = 0; w < a.size(); ++w) largest = std::max(largest, double(xt::amax(xt::abs(a[w] - b[w]))()));
        std::printf("%.9g\n", largest);
        return 0;
    }
    std::optional<xtnn::distributed::Session> session;
    if (distributed) {
        session.emplace(argc, argv, xtnn::distributed::SessionOptions{
            .reduction = xtnn::distributed::reduction_from_name(reduction), .shared_memory = !messages});
    }
    if (threads > 0) xtnn::ops::set_num_threads(threads);
    const int rank = session ? session->rank() : 0;
    if (rank > 0) {
        save += ".rank" + std::to_string(rank);
        history_path += ".rank" + std::to_string(rank);
    }
    if (rank == mismatch_rank) batch_size /= 2;

    try {
        xtnn::set_random_seed(seed);
        auto [train, test] = xtnn::datasets::load_mnist(data);
        xt::xarray<float> x = xt::view(train.x, xt::range(0, 1000));
        const std::size_t labelled = rank == broken_rank ? 999 : 1000;
        const xt::xarray<float> y = xtnn::to_categorical(xt::view(train.y, xt::range(0, labelled)), 10);
        xt::xarray<float> validation_x = xt::view(test.x, xt::range(0, 500));
        if (cnn) {
            x.reshape({x.shape()[0], std::size_t(28), std::size_t(28), std::size_t(1)});
            validation_x.reshape({validation_x.shape()[0], std::size_t(28), std::size_t(28), std::size_t(1)});
        }
        const xtnn::ValidationData validation{validation_x, xtnn::to_categorical(xt::view(test.y, xt::range(0, 500)), 10)};

        xtnn::Sequential model;
        int initial_epoch = 0;
        if (resume.empty() && cnn) {
            // 8 and 32 filters: the direct convolution; 32 -> 64: Winograd, forward and (with
            // AVX2) its input gradient; and the SIMD loops of batch normalization, pooling and
            // bias (see cross_library.cmake).
            model.add(xtnn::Conv2D(8, 3, 1, "same", "relu", {28, 28, 1}));
            model.add(xtnn::BatchNormalization());
            model.add(xtnn::MaxPooling2D(2));
            model.add(xtnn::Conv2D(32, 3, 1, "valid"));
            model.add(xtnn::BatchNormalization());
            model.add(xtnn::Activation("relu"));
            model.add(xtnn::Conv2D(64, 3, 1, "same", "relu"));
            model.add(xtnn::MaxPooling2D(2));
            model.add(xtnn::Flatten());
            model.add(xtnn::Dense(10, "softmax"));
            model.compile("categorical_crossentropy", "adam", {"accuracy"});
        } else if (resume.empty()) {
            model.add(xtnn::Dense(32, "relu", {28, 28}));
            if (batch_norm) model.add(xtnn::BatchNormalization());
            model.add(xtnn::Dropout(0.1));
            model.add(xtnn::Dense(32, "relu"));
            model.add(xtnn::Dropout(0.1));
            model.add(xtnn::Flatten());
            model.add(xtnn::Dense(10, "softmax"));
            model.compile("categorical_crossentropy", "adam", {"accuracy"});
        } else {
            model = xtnn::load_model(resume, {.restore_random_state = true});
            const auto steps_per_epoch = static_cast<std::int64_t>((1000 + batch_size - 1) / batch_size);
            initial_epoch = static_cast<int>(model.optimizer()->iterations() / steps_per_epoch);
        }
        std::vector<std::shared_ptr<xtnn::Callback>> callbacks;
        if (!checkpoint.empty()) callbacks.push_back(std::make_shared<xtnn::ModelCheckpoint>(checkpoint));
        if (rank == fail_rank || rank == kill_rank) callbacks.push_back(std::make_shared<Sabotage>(rank == kill_rank));
        std::optional<std::reference_wrapper<const xtnn::distributed::Session>> peers;
        if (session) peers = *session;
        const xtnn::History history = model.fit(x, y,
                                                {.batch_size = batch_size,
                                                 .epochs = epochs,
                                                 .verbose = 0,
                                                 .validation_data = validation,
                                                 .initial_epoch = initial_epoch,
                                                 .callbacks = callbacks,
                                                 .distributed = peers});
        model.save(save);

        std::ofstream out(history_path);
        for (std::size_t e = 0; e < history.epoch.size(); ++e) {
            out << "epoch " << history.epoch[e];
            for (const auto& [name, values] : history.history) {
                char text[64];
                std::snprintf(text, sizeof text, "%a", values[e]);
                out << " " << name << "=" << text;
            }
            out << "\n";
        }
        if (evaluate) {
            const std::size_t samples = rank == short_evaluation_rank ? 499 : 500;
            const xt::xarray<float> evaluation_x = xt::view(test.x, xt::range(0, samples));
            const xt::xarray<float> evaluation_y = xtnn::to_categorical(xt::view(test.y, xt::range(0, samples)), 10);
            const auto figures = model.evaluate(evaluation_x, evaluation_y, {.batch_size = 100, .distributed = peers});
            // Six digits: the ranks add their shares' sums, one process its batches', so the
            // loss may differ in its last bits; six digits are the same.
            out << "evaluate";
            for (const auto& [name, value] : figures) {
                char text[64];
                std::snprintf(text, sizeof text, "%.6g", value);
                out << " " << name << "=" << text;
            }
            out << "\n";
        }
    } catch (const std::exception& e) {
        if (session && session->size() > 1) session->abort(std::string("xtnn_train_run: ") + e.what());
        std::cerr << "xtnn_train_run: " << e.what() << "\n";
        return 1;
    }
}
