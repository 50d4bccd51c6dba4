// One training run of the book's model on the first 1,000 bundled digits, for the tests that
// compare whole processes: the same seed in two processes, and a run resumed from a file in a
// new process. Writes the model file and the History as exact (hex) doubles, one epoch a line.
//
//   xtnn_train_run --data DIR --seed 42 --epochs 4 --save run.xtnn --history run.txt [--resume half.xtnn]

#include <cstdio>
#include <fstream>
#include <iostream>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"

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
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    try {
        xtnn::set_random_seed(seed);
        auto [train, test] = xtnn::datasets::load_mnist(data);
        const xt::xarray<float> x = xt::view(train.x, xt::range(0, 1000));
        const xt::xarray<float> y = xtnn::to_categorical(xt::view(train.y, xt::range(0, 1000)), 10);
        const xtnn::ValidationData validation{xt::view(test.x, xt::range(0, 500)),
                                              xtnn::to_categorical(xt::view(test.y, xt::range(0, 500)), 10)};

        xtnn::Sequential model;
        int initial_epoch = 0;
        if (resume.empty()) {
            model.add(xtnn::Dense(32, "relu", {28, 28}));
            model.add(xtnn::Dropout(0.1));
            model.add(xtnn::Dense(32, "relu"));
            model.add(xtnn::Dropout(0.1));
            model.add(xtnn::Flatten());
            model.add(xtnn::Dense(10, "softmax"));
            model.compile("categorical_crossentropy", "adam", {"accuracy"});
        } else {
            model = xtnn::load_model(resume, {.restore_random_state = true});
            // 1,000 samples in batches of 64 make 16 steps an epoch.
            initial_epoch = static_cast<int>(model.optimizer()->iterations() / 16);
        }
        const xtnn::History history = model.fit(
            x, y, {.batch_size = 64, .epochs = epochs, .verbose = 0, .validation_data = validation, .initial_epoch = initial_epoch});
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
    } catch (const std::exception& e) {
        std::cerr << "xtnn_train_run: " << e.what() << "\n";
        return 1;
    }
}
