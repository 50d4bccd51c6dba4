// One model, two inputs, two outputs: a digit image and the image's mean brightness go in; the
// digit (softmax over 10) and whether it is even (sigmoid) come out. Each output has its own loss
// and metric; the total loss weighs them; History and evaluate name each output's values.
//
//   build/examples/two_heads --epochs 6

#include <iostream>

#include <fmt/format.h>
#include <xtensor/xmath.hpp>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"

// (N, 28, 28) bytes -> (N, 1): each image's mean brightness in [0, 1].
xt::xarray<float> brightness(const xt::xarray<std::uint8_t>& images) {
    xt::xarray<float> values = xt::mean(xt::cast<float>(images), {1, 2}) / 255.0f;
    return values.reshape({images.shape()[0], std::size_t(1)});
}

xt::xarray<float> is_even(const xt::xarray<float>& labels) { return xt::cast<float>(xt::equal(xt::fmod(labels, 2.0f), 0.0f)); }

int main(int argc, char** argv) {
    command_line::Parser args{"Train a model with two inputs and two outputs on MNIST digits"};
    std::string data = "datasets/mnist-10k";
    int epochs = 6;
    std::uint64_t seed = 42;
    args.option("--data", data, "folder with the bundled digits or the standard MNIST files");
    args.option("--epochs", epochs, "training epochs");
    args.option("--seed", seed, "random seed for weights, dropout and shuffling");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    try {
        xtnn::set_random_seed(seed);
        auto [train, test] = xtnn::datasets::load_mnist_bytes(data);

        auto image = xtnn::Input({28, 28}, "image");
        auto light = xtnn::Input({1}, "brightness");
        auto features = xtnn::Dense(64, "relu")(xtnn::Flatten()(xtnn::Rescaling(1.0 / 255)(image)));
        auto both = xtnn::Concatenate()({features, light});
        auto hidden = xtnn::Dropout(0.1)(xtnn::Dense(64, "relu")(both));
        auto digit_layer = xtnn::Dense(10, "softmax");
        digit_layer.set_name("digit");
        auto parity_layer = xtnn::Dense(1, "sigmoid");
        parity_layer.set_name("even");
        auto digit = std::move(digit_layer)(hidden);
        auto even = std::move(parity_layer)(hidden);
        xtnn::Model model({image, light}, {digit, even}, "two_heads");
        model.compile({.loss_by_output = {{"digit", "sparse_categorical_crossentropy"}, {"even", "binary_crossentropy"}},
                       .optimizer = "adam",
                       .metrics = {"accuracy"},
                       .loss_weights_by_output = {{"even", 0.5}}});
        model.summary();

        const auto train_light = brightness(train.x), test_light = brightness(test.x);
        model.fit({train.x, train_light}, {train.y, is_even(train.y)}, {.batch_size = 64, .epochs = epochs, .verbose = 2});
        const auto scores = model.evaluate({test.x, test_light}, {test.y, is_even(test.y)});
        for (const auto& [name, value] : scores) fmt::print("test {}: {:.4f}\n", name, value);
    } catch (const std::exception& e) {
        std::cerr << "two_heads: " << e.what() << "\n";
        return 1;
    }
}
