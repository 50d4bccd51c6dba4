// The book's chapter-4 convolutional network on MNIST digits: Reshape to one channel ->
// Conv2D(32, 3x3, relu) -> Conv2D(64, 3x3, relu) -> MaxPooling2D(2) -> Dropout(0.25) -> Flatten ->
// Dense(128, relu) -> Dropout(0.5) -> Dense(10, softmax); Adam, batch 64, 8 epochs.
//
//   build/examples/mnist_cnn --data datasets/mnist-10k --epochs 8 --save mnist_cnn.xtnn

#include <iostream>

#include <fmt/format.h>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"

int main(int argc, char** argv) {
    command_line::Parser args{"Train the book's CNN on MNIST digits"};
    std::string data = "datasets/mnist-10k";
    int epochs = 8;
    std::size_t batch_size = 64;
    std::uint64_t seed = 42;
    std::string save;
    args.option("--data", data, "folder with the bundled digits or the standard MNIST files");
    args.option("--epochs", epochs, "training epochs");
    args.option("--batch-size", batch_size, "samples per step");
    args.option("--seed", seed, "random seed for weights, dropout and shuffling");
    args.option("--save", save, "model file to write after training");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    try {
        xtnn::set_random_seed(seed);
        auto [train, test] = xtnn::datasets::load_mnist(data);
        auto y_train = xtnn::to_categorical(train.y, 10);
        auto y_test = xtnn::to_categorical(test.y, 10);

        xtnn::Sequential model;
        model.add(xtnn::Reshape({28, 28, 1}, {28, 28}));
        model.add(xtnn::Conv2D(32, 3, 1, "valid", "relu"));
        model.add(xtnn::Conv2D(64, 3, 1, "valid", "relu"));
        model.add(xtnn::MaxPooling2D(2));
        model.add(xtnn::Dropout(0.25));
        model.add(xtnn::Flatten());
        model.add(xtnn::Dense(128, "relu"));
        model.add(xtnn::Dropout(0.5));
        model.add(xtnn::Dense(10, "softmax"));
        model.compile("categorical_crossentropy", "adam", {"accuracy"});
        model.summary();

        model.fit(train.x, y_train, {.batch_size = batch_size, .epochs = epochs, .validation_data = {{test.x, y_test}}});
        auto scores = model.evaluate(test.x, y_test);
        fmt::print("Test loss: {:.4f}\nTest accuracy: {:.4f}\n", scores["loss"], scores["accuracy"]);
        if (!save.empty()) {
            model.save(save);
            fmt::print("Model saved to {}\n", save);
        }
    } catch (const std::exception& e) {
        std::cerr << "mnist_cnn: " << e.what() << "\n";
        return 1;
    }
}
