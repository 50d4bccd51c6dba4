// The book's chapter-3 network on MNIST digits: Dense(32, relu) -> Dropout(0.1) -> Dense(32, relu)
// -> Dropout(0.1) -> Flatten -> Dense(10, softmax), categorical cross-entropy.
//
//   build/examples/mnist_mlp --data datasets/mnist-10k --epochs 8 --save mnist_mlp.xtnn
//
// On several processes or machines (README "Training on several machines"): every rank trains
// its share of each batch of 64, rank 0 reports and saves.
//
//   mpirun -np 2 build/examples/mnist_mlp --distributed
//   mpirun -np 8 --hostfile hosts build/examples/mnist_mlp --distributed --data /shared/mnist

#include <iostream>

#include <fmt/format.h>
#include <xtensor/xsort.hpp>
#include <xtnn/xtnn.hpp>

#include "command_line.hpp"
#include "svg_plot.hpp"

int main(int argc, char** argv) {
    command_line::Parser args{"Train the book's MLP on MNIST digits"};
    std::string data = "datasets/mnist-10k";
    int epochs = 8;
    std::size_t batch_size = 64;
    std::string optimizer = "adam";
    double learning_rate = 0.0;
    std::uint64_t seed = 42;
    std::string plot = "mnist_mlp_history.svg";
    std::string save = "mnist_mlp.xtnn";
    args.option("--data", data, "folder with the bundled digits or the standard MNIST files");
    args.option("--epochs", epochs, "training epochs");
    args.option("--batch-size", batch_size, "samples per step");
    args.option("--optimizer", optimizer, "sgd, adam or rmsprop");
    args.option("--learning-rate", learning_rate, "learning rate (default: the optimizer's Keras default)");
    args.option("--seed", seed, "random seed for weights, dropout and shuffling");
    args.option("--plot", plot, "SVG file for the loss and accuracy curves");
    args.option("--save", save, "model file to write after training (empty: do not save)");
    bool distributed = false;
    args.flag("--distributed", distributed, "insist on running as an MPI job (fail unless started by mpirun)");
    if (auto exit_code = args.parse(argc, argv)) return *exit_code;

    // One rank unless an MPI launcher started the program; created first, so that a rank that
    // fails later ends the whole job.
    xtnn::distributed::Session session(argc, argv);
    if (distributed && !session.uses_mpi()) {
        std::cerr << "mnist_mlp: --distributed: not started by an MPI launcher (mpirun -np 2 ...) or xtnn built without MPI\n";
        return 1;
    }
    // Only rank 0 talks; the others train in silence.
    const auto say = [&session](const std::string& text) {
        if (session.is_chief()) fmt::print("{}", text);
    };

    try {
        xtnn::set_random_seed(seed);
        auto [train, test] = xtnn::datasets::load_mnist(data);
        auto y_train = xtnn::to_categorical(train.y, 10);
        auto y_test = xtnn::to_categorical(test.y, 10);
        say(fmt::format("{} training and {} test digits from {}\n", train.y.size(), test.y.size(), data));
        if (session.size() > 1) say(fmt::format("training on {} ranks, {} thread{} each\n", session.size(), xtnn::ops::num_threads(), xtnn::ops::num_threads() == 1 ? "" : "s"));

        xtnn::Sequential model;
        model.add(xtnn::Dense(32, "relu", {28, 28}));
        model.add(xtnn::Dropout(0.1));
        model.add(xtnn::Dense(32, "relu"));
        model.add(xtnn::Dropout(0.1));
        model.add(xtnn::Flatten());
        model.add(xtnn::Dense(10, "softmax"));
        model.compile("categorical_crossentropy", optimizer, {"accuracy"});
        if (learning_rate > 0) model.optimizer()->set_learning_rate(learning_rate);
        if (session.is_chief()) model.summary();

        xtnn::History history = model.fit(train.x, y_train,
                                          {.batch_size = batch_size,
                                           .epochs = epochs,
                                           .validation_data = {{test.x, y_test}},
                                           .distributed = session});
        // Each rank evaluates its share of the test digits; all get the figures of all.
        auto scores = model.evaluate(test.x, y_test, {.distributed = session});
        if (!session.is_chief()) return 0;
        fmt::print("Test loss: {:.4f}\nTest accuracy: {:.4f}\n", scores["loss"], scores["accuracy"]);

        xt::xarray<float> probabilities = model.predict(test.x);
        auto predicted = xt::argmax(probabilities, 1);
        std::size_t confusion[10][10] = {};
        for (std::size_t i = 0; i < predicted.size(); ++i) ++confusion[std::size_t(test.y(i))][predicted(i)];
        fmt::print("\nConfusion matrix (rows: true digit, columns: predicted)\n     ");
        for (int c = 0; c < 10; ++c) fmt::print("{:>5}", c);
        fmt::print("\n");
        for (int r = 0; r < 10; ++r) {
            fmt::print("{:>5}", r);
            for (int c = 0; c < 10; ++c) fmt::print("{:>5}", confusion[r][c]);
            fmt::print("\n");
        }

        std::vector<double> epoch_numbers;
        for (int e : history.epoch) epoch_numbers.push_back(e + 1);
        auto& h = history.history;
        svg_plot::write_line_chart(plot, {"Training history", "epoch", "loss / accuracy",
                                          {{"loss", epoch_numbers, h["loss"]},
                                           {"val_loss", epoch_numbers, h["val_loss"], true},
                                           {"accuracy", epoch_numbers, h["accuracy"]},
                                           {"val_accuracy", epoch_numbers, h["val_accuracy"], true}}});
        fmt::print("\nLoss and accuracy per epoch written to {}\n", plot);
        if (!save.empty()) {
            model.save(save);
            fmt::print("Model saved to {} (try: build/examples/predict {} datasets/samples/digit-7.pgm)\n", save, save);
        }
    } catch (const std::exception& e) {
        // The other ranks may be waiting for this one in a collective: end them all.
        if (session.size() > 1) session.abort(std::string("mnist_mlp: ") + e.what());
        std::cerr << "mnist_mlp: " << e.what() << "\n";
        return 1;
    }
}
