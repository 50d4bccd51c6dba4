// What docs/threads.md promises: fit's slices of a batch on xtnn's threads give one result per
// thread count, within rounding of one thread's; each thread's seeded work is its own, loading
// touches no generator, and predict on one model from several threads gives the sequential
// result. These tests also run under ThreadSanitizer (scripts/sanitize-threads.sh).

#include <doctest/doctest.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "ops_sharded.hpp"
#include "test_helpers.hpp"

using namespace xtnn;
using testing::bitwise_equal;
using testing::ThreadCount;

namespace {

struct Digits {
    xt::xarray<float> x, y, x_test;
};

const Digits& digits() {
    static const Digits data = [] {
        auto [train, test] = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
        return Digits{xt::view(train.x, xt::range(0, 600)), to_categorical(xt::view(train.y, xt::range(0, 600)), 10),
                      xt::view(test.x, xt::range(0, 200))};
    }();
    return data;
}

struct Run {
    std::vector<xt::xarray<float>> weights;
    History history;
    xt::xarray<float> predictions;
};

// The book's model, seeded, trained with dropout, shuffling and a validation split: every use
// of the thread's generator.
Run train_book_model(std::uint64_t seed) {
    set_random_seed(seed);
    Sequential model = testing::book_model();
    model.compile("categorical_crossentropy", "adam", {"accuracy"});
    History history = model.fit(digits().x, digits().y, {.batch_size = 64, .epochs = 2, .verbose = 0, .validation_split = 0.1});
    return {model.get_weights(), history, model.predict(digits().x_test)};
}

// Flatten, Dense(128, relu), Dropout, Dense(10, softmax): on two threads, batches of 64 rows run as
// two slices of 32 whose first product (784 x 128 weights against 64 rows) is shared out by the
// weights (ops_sharded.hpp).
Run train_wide_model(std::uint64_t seed) {
    set_random_seed(seed);
    Sequential model;
    model.add(Flatten({28, 28}));
    model.add(Dense(128, "relu"));
    model.add(Dropout(0.1));
    model.add(Dense(10, "softmax"));
    model.compile("categorical_crossentropy", "adam", {"accuracy"});
    History history = model.fit(digits().x, digits().y, {.batch_size = 64, .epochs = 2, .verbose = 0, .validation_split = 0.1});
    return {model.get_weights(), history, model.predict(digits().x_test)};
}

bool same_run(const Run& a, const Run& b) {
    if (a.weights.size() != b.weights.size() || a.history.history != b.history.history) return false;
    for (std::size_t i = 0; i < a.weights.size(); ++i) {
        if (!bitwise_equal(a.weights[i], b.weights[i])) return false;
    }
    return bitwise_equal(a.predictions, b.predictions);
}

// The identity, except that it throws in a training call on any slice of a batch but the first.
class FailsAfterFirstSlice : public Layer {
public:
    std::string class_name() const override { return "FailsAfterFirstSlice"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override {
        if (training && batch_slice_first_row() > 0) {
            throw ValueError("FailsAfterFirstSlice: called on the slice at row " + std::to_string(batch_slice_first_row()));
        }
        return x;
    }
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
};

}  // namespace

namespace {

// `train` (a seeded run) on two threads: the same result twice, and within rounding of one thread's.
template <class Train>
void check_two_threads_round_one(Train train) {
    digits();
    Run one, two, two_again;
    {
        const ThreadCount threads(1);
        one = train();
    }
    {
        const ThreadCount threads(2);
        two = train();
        two_again = train();
    }
    CHECK(same_run(two, two_again));
    // The slices did run: their gradients are summed in another order, which shows in the last bits.
    CHECK_FALSE(same_run(one, two));
    // The same dropout masks and shuffles: only rounding separates the two.
    for (const auto& entry : one.history.history) {
        for (std::size_t epoch = 0; epoch < entry.second.size(); ++epoch) {
            INFO(entry.first << " epoch " << epoch);
            CHECK(two.history.history.at(entry.first)[epoch] == doctest::Approx(entry.second[epoch]).epsilon(1e-5));
        }
    }
    CHECK(xt::allclose(two.predictions, one.predictions, 1e-4, 1e-5));
}

}  // namespace

TEST_CASE("fit in slices on two threads: one result for the same seed, within rounding of one thread's") {
    check_two_threads_round_one([] { return train_book_model(42); });
}

TEST_CASE("a layer wider than the batch shares its product out by the weights: one result, within rounding of one thread's") {
    REQUIRE(detail::product_worth_sharding(detail::Team({32, 32}), 784, 128));
    REQUIRE_FALSE(detail::product_worth_sharding(detail::Team({32, 32}), 128, 10));
    check_two_threads_round_one([] { return train_wide_model(7); });
}

TEST_CASE("a model with BatchNormalization trains in one piece, whatever the thread count") {
    digits();
    auto train = [](int thread_count) {
        const ThreadCount threads(thread_count);
        set_random_seed(5);
        Sequential model;
        model.add(Flatten({28, 28}));
        model.add(Dense(16));
        model.add(BatchNormalization());
        model.add(Dense(10, "softmax"));
        model.compile("categorical_crossentropy", "adam");
        model.fit(digits().x, digits().y, {.batch_size = 128, .epochs = 1, .verbose = 0});
        return model.get_weights();
    };
    const auto one = train(1), two = train(2);
    REQUIRE(one.size() == two.size());
    for (std::size_t w = 0; w < one.size(); ++w) CHECK(bitwise_equal(one[w], two[w]));
}

TEST_CASE("a convolution spreads its samples over the threads with the bits of one thread") {
    // 37 samples of 16x16 images (over 40 MFLOP a call on every path, several tasks' worth): the
    // samples' outputs and input gradients are cut into one range per thread, the kernel gradient
    // sums groups of 16 samples whatever the cut.
    struct Case {
        Shape x, kernel;
        ops::Window2D strides;
        std::string path;
    };
    const std::vector<Case> cases{{{37, 16, 16, 8}, {3, 3, 8, 16}, {1, 1}, "direct"},
                                  {{37, 16, 16, 16}, {3, 3, 16, 64}, {1, 1}, "Winograd"},
                                  {{37, 16, 16, 8}, {5, 5, 8, 24}, {2, 1}, "im2col"}};
    for (const Case& c : cases) {
        INFO(c.path);
        const xt::xarray<float> x = testing::uniform(c.x, 91), k = testing::uniform(c.kernel, 92), b = testing::uniform({c.kernel[3]}, 93);
        auto run = [&](int thread_count) {
            const ThreadCount threads(thread_count);
            std::vector<Tensor> in{Tensor::parameter(x), Tensor::parameter(k), Tensor::parameter(b)};
            const Tensor y = ops::conv2d_bias_relu(in[0], in[1], in[2], c.strides, ops::Padding::same);
            const xt::xarray<float> weights = testing::uniform(Shape(y.shape().begin(), y.shape().end()), 94);
            ops::sum(ops::mul(y, Tensor::constant(weights))).backward();
            return std::vector<xt::xarray<float>>{y.value(), in[0].grad(), in[1].grad(), in[2].grad()};
        };
        const auto one = run(1);
        for (int thread_count : {2, 3}) {
            INFO(thread_count << " threads");
            const auto many = run(thread_count);
            for (std::size_t i = 0; i < one.size(); ++i) CHECK(bitwise_equal(one[i], many[i]));
        }
    }
}

TEST_CASE("batch normalization spreads its rows over the threads with the bits of one thread") {
    // 8100 rows of 16 channels: two groups of the per-channel sums, several tasks' worth of values.
    // In double, where a sum taken in another order would show in the results' last bits (in float
    // the double sums' last bits vanish when rounded).
    const xt::xarray<double> x = testing::uniform({9, 30, 30, 16}, 95, -2.0, 2.0);
    const xt::xarray<double> gamma = testing::uniform({16}, 96, 0.5, 1.5), beta = testing::uniform({16}, 97);
    const xt::xarray<double> moving_mean = testing::uniform({16}, 98), moving_variance = testing::uniform({16}, 99, 0.5, 2.0);
    const xt::xarray<double> weights = testing::uniform({9, 30, 30, 16}, 100);
    auto run = [&](int thread_count, bool training) {
        const ThreadCount threads(thread_count);
        TensorD in = TensorD::parameter(x), g = TensorD::parameter(gamma), b = TensorD::parameter(beta);
        xt::xarray<double> mean, variance;
        const TensorD y = training ? ops::batch_norm_relu(in, g, b, 1e-3, mean, variance)
                                   : ops::batch_norm_inference_relu(in, moving_mean, moving_variance, g, b, 1e-3);
        ops::sum(ops::mul(y, TensorD::constant(weights))).backward();
        return std::vector<xt::xarray<double>>{y.value(), in.grad(), g.grad(), b.grad()};
    };
    for (bool training : {true, false}) {
        INFO((training ? "batch statistics" : "moving statistics"));
        const auto one = run(1, training);
        for (int thread_count : {2, 3}) {
            INFO(thread_count << " threads");
            const auto many = run(thread_count, training);
            for (std::size_t i = 0; i < one.size(); ++i) CHECK(bitwise_equal(one[i], many[i]));
        }
    }
}

TEST_CASE("predict and evaluate give the same bits on one and two threads") {
    digits();
    set_random_seed(8);
    Sequential model = testing::book_model();
    model.compile("categorical_crossentropy", "adam", {"accuracy"});
    auto infer = [&](int thread_count) {
        const ThreadCount threads(thread_count);
        return std::make_pair(model.predict(digits().x, 128), model.evaluate(digits().x, digits().y, {.batch_size = 128, .verbose = 0}));
    };
    const auto one = infer(1), two = infer(2);
    CHECK(bitwise_equal(one.first, two.first));
    CHECK(one.second == two.second);
}

TEST_CASE("an error on a worker thread's slice reaches fit's caller, and the threads carry on") {
    digits();
    const ThreadCount threads(2);
    Sequential model;
    model.add(Flatten({28, 28}));
    model.add(std::make_shared<FailsAfterFirstSlice>());
    model.add(Dense(10, "softmax"));
    model.compile("categorical_crossentropy", "sgd");
    CHECK_THROWS_WITH_AS(model.fit(digits().x, digits().y, {.batch_size = 64, .epochs = 1, .verbose = 0}),
                         "FailsAfterFirstSlice: called on the slice at row 32", ValueError);
    // Batches of fewer than 64 rows run in one piece.
    CHECK_NOTHROW(model.fit(digits().x, digits().y, {.batch_size = 63, .epochs = 1, .verbose = 0}));
    const Run again = train_book_model(42);
    CHECK(same_run(again, train_book_model(42)));

    // The first slice waits for the second inside a product shared out by the weights, which the
    // second never reaches: the wait ends with the second slice's error.
    Sequential wide;
    wide.add(Flatten({28, 28}));
    wide.add(std::make_shared<FailsAfterFirstSlice>());
    wide.add(Dense(128, "relu"));
    wide.add(Dense(10, "softmax"));
    wide.compile("categorical_crossentropy", "sgd");
    CHECK_THROWS_WITH_AS(wide.fit(digits().x, digits().y, {.batch_size = 64, .epochs = 1, .verbose = 0}),
                         "FailsAfterFirstSlice: called on the slice at row 32", ValueError);
    CHECK(same_run(train_wide_model(7), train_wide_model(7)));
}

TEST_CASE("anomaly detection checks every slice, also inside a product shared out by the weights") {
    const ThreadCount threads(2);
    DetectAnomalyGuard anomaly;
    xt::xarray<float> x = digits().x;
    // Row 40 is in the second 32-row slice of the first batch: row 8 there.
    x(40, 14, 14) = std::numeric_limits<float>::quiet_NaN();
    set_random_seed(1);
    Sequential book = testing::book_model();
    book.compile("categorical_crossentropy", "adam");
    CHECK(testing::error_of<NumericError>([&] { book.fit(x, digits().y, {.batch_size = 64, .epochs = 1, .verbose = 0, .shuffle = false}); }) ==
          "fit: epoch 1, batch 0: anomaly: op 'reshape' in layer 'dense' was given nan at flat index 6678 of its input 0 "
          "(shape (32, 28, 28), a constant: a weight or given data)");
    Sequential wide;
    wide.add(Flatten({28, 28}));
    wide.add(Dense(128, "relu"));
    wide.add(Dense(10, "softmax"));
    wide.compile("categorical_crossentropy", "sgd");
    wide.layer(1).weights()[0].mutable_value()(0, 100) = std::numeric_limits<float>::infinity();
    CHECK(testing::error_of<NumericError>([&] { wide.fit(digits().x, digits().y, {.batch_size = 64, .epochs = 1, .verbose = 0}); }) ==
          "fit: epoch 1, batch 0: anomaly: op 'sharded_matmul' in layer 'dense' was given inf at flat index 100 of its "
          "input 1 (shape (784, 128), a leaf: a weight or given data)");
}

TEST_CASE("anomaly detection sees the sharded product's kernel gradient, which no slice's holder keeps") {
    DetectAnomalyGuard anomaly;
    for (const int thread_count : {1, 2}) {  // a solo team, then members at once
        const ThreadCount threads(thread_count);
        detail::Team team({1, 1});
        const Tensor kernel = Tensor::parameter(xt::xarray<float>(xt::ones<float>({4, 3}) * 1e-3f));
        // Each member's row makes a finite product and gradient; the two rows' sum overflows.
        const std::string message = testing::error_of<NumericError>([&] {
            detail::run_team(team, [&](std::size_t k) {
                // As fit's slices do: the holders the backward check reads stay empty.
                LeafGradients slice_gradients({kernel});
                const LeafGradients::Redirect redirect(slice_gradients);
                const Tensor x = Tensor::constant(xt::xarray<float>{{3e38f, 0.0f, 0.0f, 0.0f}});
                ops::sum(detail::sharded_matmul(x, kernel, team, k)).backward();
            });
        });
        CHECK(message == "anomaly: the backward pass of op 'sharded_matmul' gave inf at flat index 0 of the gradient of its "
                         "input 1 (shape (4, 3), a leaf: a weight or given data), from a finite output gradient");
        CHECK(team.solo() == (thread_count == 1));
    }
}

TEST_CASE("threads that seed and train at the same time each get the sequential result") {
    digits();
    const Run reference_42 = train_book_model(42);
    const Run reference_7 = train_book_model(7);
    // Whichever thread gets the workers runs its slices as a team, the others as solo teams.
    const Run reference_wide = train_wide_model(7);
    REQUIRE_FALSE(same_run(reference_42, reference_7));
    for (int round = 0; round < 3; ++round) {
        Run run_42, run_7, run_42_again, run_wide, run_wide_again;
        std::thread a([&] { run_42 = train_book_model(42); });
        std::thread b([&] { run_7 = train_book_model(7); });
        std::thread c([&] { run_42_again = train_book_model(42); });
        std::thread d([&] { run_wide = train_wide_model(7); });
        std::thread e([&] { run_wide_again = train_wide_model(7); });
        for (std::thread* thread : {&a, &b, &c, &d, &e}) thread->join();
        CHECK(same_run(run_42, reference_42));
        CHECK(same_run(run_42_again, reference_42));
        CHECK(same_run(run_7, reference_7));
        CHECK(same_run(run_wide, reference_wide));
        CHECK(same_run(run_wide_again, reference_wide));
    }
}

TEST_CASE("loading models in one thread leaves another thread's training alone") {
    digits();
    set_random_seed(3);
    Sequential saved;
    saved.add(Dense(16, "relu", {28, 28}));
    saved.add(Flatten());
    saved.add(Dense(10, "softmax"));
    saved.compile("categorical_crossentropy", "sgd");
    const auto file = model_to_bytes(saved);

    const Run reference = train_book_model(42);
    Run trained;
    std::thread trainer([&] { trained = train_book_model(42); });
    std::thread loader([&] {
        set_random_seed(99);
        const auto before = thread_generator().state();
        for (int i = 0; i < 20; ++i) {
            const Sequential loaded = load_model_from_bytes(file);
            CHECK(loaded.count_params() == saved.count_params());
        }
        CHECK(thread_generator().state() == before);  // loading draws nothing from the thread's generator
    });
    trainer.join();
    loader.join();
    CHECK(same_run(trained, reference));
}

TEST_CASE("predict on one model from several threads equals the sequential predict") {
    digits();
    set_random_seed(11);
    Sequential model;
    model.add(Dense(32, "relu", {28, 28}));
    model.add(Dropout(0.5));
    model.add(Flatten());
    model.add(Dense(10, "softmax"));
    const xt::xarray<float> expected = model.predict(digits().x_test, 16);
    const xt::xarray<float> expected_one = model.predict(xt::view(digits().x_test, xt::range(0, 1)));
    std::vector<xt::xarray<float>> batches(4), singles(4);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < batches.size(); ++t) {
        threads.emplace_back([&, t] {
            for (int repeat = 0; repeat < 5; ++repeat) {
                batches[t] = model.predict(digits().x_test, 16);
                singles[t] = model.predict(xt::view(digits().x_test, xt::range(0, 1)));
            }
        });
    }
    for (auto& thread : threads) thread.join();
    for (std::size_t t = 0; t < batches.size(); ++t) {
        CHECK(bitwise_equal(batches[t], expected));
        CHECK(bitwise_equal(singles[t], expected_one));
    }
}

TEST_CASE("threads that load and save Keras files at the same time each get the single-thread result") {
    // HDF5 keeps global state (Debian builds it thread-safe, with one lock); each in-memory file
    // has a name of its own, so concurrent files are never taken for one another.
    const std::string fixtures = std::string(XTNN_SOURCE_DIR) + "/tests/data/keras/";
    const auto archive = io::read_file(fixtures + "cnn_bn.keras");
    const auto legacy = io::read_file(fixtures + "mlp.h5");
    Model reference = load_model_from_bytes(archive);
    const auto reference_bytes = model_to_keras_bytes(reference);
    const xt::xarray<float> input = xt::ones<float>({2, 6, 6, 2});
    const xt::xarray<float> expected = reference.predict(input);
    std::vector<int> agreed(4, 0);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < agreed.size(); ++t) {
        threads.emplace_back([&, t] {
            for (int repeat = 0; repeat < 5; ++repeat) {
                Model loaded = load_model_from_bytes(t % 2 ? archive : reference_bytes);
                const Model other = load_model_from_bytes(legacy);
                const auto again = model_to_keras_bytes(loaded);
                agreed[t] += bitwise_equal(load_model_from_bytes(again).predict(input), expected) && other.count_params() > 0;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    for (int count : agreed) CHECK(count == 5);
}
