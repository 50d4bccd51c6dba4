// A 784-256-128-10 relu MLP on Fashion-MNIST, SGD with momentum (the benchmark's W2 network).
// The images stay bytes, 47 MB instead of 188 MB as floats; the model's first layer scales them.
//
//   apt-get install dataset-fashion-mnist && build/examples/fashion_mnist --epochs 5

#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <xtnn/xtnn.hpp>

int main(int argc, char** argv) {
    CLI::App app{"Train an MLP on Fashion-MNIST"};
    std::string data = "/usr/share/datasets/fashion-mnist";
    int epochs = 5;
    std::uint64_t seed = 42;
    app.add_option("--data", data, "folder with the four Fashion-MNIST IDX files");
    app.add_option("--epochs", epochs, "training epochs");
    app.add_option("--seed", seed, "random seed");
    CLI11_PARSE(app, argc, argv);

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
