// A small residual CNN written with the functional API: two convolution blocks whose outputs are
// added (a skip connection), BatchNormalization, global pooling; trained on the bundled MNIST
// digits, or on Fashion-MNIST with --data /usr/share/datasets/fashion-mnist.
//
//   build/examples/tiny_resnet --epochs 4 --plot tiny_resnet_history.svg --save tiny_resnet.xtnn

#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"
#include "svg_plot.hpp"

// A short run takes a few hundred steps: with Keras's default momentum of 0.99 the moving
// statistics used at test time would still remember their initial values, so they move faster.
xtnn::BatchNormalization batch_norm() { return xtnn::BatchNormalization({.momentum = 0.9}); }

// conv -> batch norm -> relu, twice, added to the block's input.
xtnn::SymbolicTensor residual_block(const xtnn::SymbolicTensor& x, std::size_t filters) {
    auto y = xtnn::Conv2D(filters, 3, 1, "same")(x);
    y = xtnn::Activation("relu")(batch_norm()(y));
    y = batch_norm()(xtnn::Conv2D(filters, 3, 1, "same")(y));
    return xtnn::Activation("relu")(xtnn::Add()({x, y}));
}

int main(int argc, char** argv) {
    command_line::Parser args{"Train a tiny residual network on digits or clothes"};
    std::string data = "datasets/mnist-10k";
    int epochs = 4;
    std::size_t batch_size = 64;
    std::uint64_t seed = 42;
    std::string plot = "tiny_resnet_history.svg";
    std::string save;
    args.option("--data", data, "the bundled digits, MNIST files, or /usr/share/datasets/fashion-mnist");
    args.option("--epochs", epochs, "training epochs");
    args.option("--batch-size", batch_size, "samples per step");
    args.option("--seed", seed, "random seed for weights and shuffling");
    args.option("--plot", plot, "SVG file for the loss and accuracy curves");
    args.option("--save", save, "model file to write after training");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    try {
        xtnn::set_random_seed(seed);
        const bool fashion = data.find("fashion") != std::string::npos;
        auto [train, test] = fashion ? xtnn::datasets::load_fashion_mnist_bytes(data) : xtnn::datasets::load_mnist_bytes(data);

        auto image = xtnn::Input({28, 28}, "image");
        auto x = xtnn::Reshape({28, 28, 1})(xtnn::Rescaling(1.0 / 255)(image));
        x = xtnn::Conv2D(16, 3, 2, "same", "relu")(x);  // 14 x 14
        x = residual_block(x, 16);
        x = xtnn::MaxPooling2D(2)(x);                     // 7 x 7
        x = residual_block(x, 16);
        auto digit = xtnn::Dense(10, "softmax")(xtnn::GlobalAveragePooling2D()(x));
        xtnn::Model model(image, digit, "tiny_resnet");
        model.compile("sparse_categorical_crossentropy", "adam", {"accuracy"});
        model.summary();

        const auto history =
            model.fit(train.x, train.y, {.batch_size = batch_size, .epochs = epochs, .validation_data = {{test.x, test.y}}});
        const auto scores = model.evaluate(test.x, test.y);
        fmt::print("Test loss: {:.4f}\nTest accuracy: {:.4f}\n", scores.at("loss"), scores.at("accuracy"));

        std::vector<double> epoch_numbers;
        for (int e : history.epoch) epoch_numbers.push_back(e + 1);
        auto h = history.history;
        svg_plot::write_line_chart(plot, {"tiny_resnet training", "epoch", "loss / accuracy",
                                          {{"loss", epoch_numbers, h["loss"]},
                                           {"val_loss", epoch_numbers, h["val_loss"], true},
                                           {"accuracy", epoch_numbers, h["accuracy"]},
                                           {"val_accuracy", epoch_numbers, h["val_accuracy"], true}}});
        fmt::print("Loss and accuracy per epoch written to {}\n", plot);
        if (!save.empty()) {
            model.save(save);
            fmt::print("Model saved to {}\n", save);
        }
    } catch (const std::exception& e) {
        std::cerr << "tiny_resnet: " << e.what() << "\n";
        return 1;
    }
}
