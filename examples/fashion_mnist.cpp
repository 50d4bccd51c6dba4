// A 784-256-128-10 relu MLP on Fashion-MNIST, SGD with momentum (the benchmark's W2 network).
// The images stay bytes, 47 MB instead of 188 MB as floats; the model's first layer scales them.
//
//   apt-get install dataset-fashion-mnist && build/examples/fashion_mnist --epochs 5

#include <iostream>

#include <fmt/format.h>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"

int main(int argc, char** argv) {
    command_line::Parser args{"Train an MLP on Fashion-MNIST"};
    std::string data = "/usr/share/datasets/fashion-mnist";
    int epochs = 5;
    std::uint64_t seed = 42;
    args.option("--data", data, "folder with the four Fashion-MNIST IDX files");
    args.option("--epochs", epochs, "training epochs");
    args.option("--seed", seed, "random seed");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    try {
        xtnn::set_random_seed(seed);
        auto [train, test] = xtnn::datasets::load_fashion_mnist_bytes(data);

        xtnn::Sequential model("fashion_mlp");
        model.add(xtnn::Rescaling(1.0 / 255, 0.0, {28, 28}));
        model.add(xtnn::Flatten());
        model.add(xtnn::Dense(256, "relu"));
        model.add(xtnn::Dense(128, "relu"));
        model.add(xtnn::Dense(10, "softmax"));
        model.compile("sparse_categorical_crossentropy", xtnn::SGD{.learning_rate = 0.05, .momentum = 0.9}, {"accuracy"});
        model.summary();

        model.fit(train.x, train.y, {.batch_size = 128, .epochs = epochs, .validation_data = {{test.x, test.y}}});
        auto scores = model.evaluate(test.x, test.y);
        fmt::print("Test accuracy: {:.4f}\n", scores["accuracy"]);
    } catch (const std::exception& e) {
        std::cerr << "fashion_mnist: " << e.what() << "\n";
        return 1;
    }
}
