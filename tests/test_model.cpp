#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;
using testing::book_model;
using testing::error_of;

namespace {

// Three well-separated clusters in the plane, labels 0, 1, 2.
std::pair<xt::xarray<float>, xt::xarray<float>> clusters(std::size_t per_class) {
    Generator g(5);
    const float centers[3][2] = {{-3, -3}, {3, -3}, {0, 3}};
    xt::xarray<float> x = xt::empty<float>({3 * per_class, std::size_t(2)});
    xt::xarray<float> y = xt::empty<float>({3 * per_class});
    for (std::size_t i = 0; i < 3 * per_class; ++i) {
        const std::size_t c = i % 3;
        x(i, 0) = centers[c][0] + g.uniform_symmetric(1.0f);
        x(i, 1) = centers[c][1] + g.uniform_symmetric(1.0f);
        y(i) = float(c);
    }
    return {x, y};
}

}  // namespace

TEST_CASE("summary: Keras 3 box table for the book's model") {
    const std::string expected =
        "Model: \"sequential\"\n"
        "┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓\n"
        "┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃\n"
        "┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩\n"
        "│ dense (Dense)                   │ (None, 28, 32)         │           928 │\n"
        "├─────────────────────────────────┼────────────────────────┼───────────────┤\n"
        "│ dropout (Dropout)               │ (None, 28, 32)         │             0 │\n"
        "├─────────────────────────────────┼────────────────────────┼───────────────┤\n"
        "│ dense_1 (Dense)                 │ (None, 28, 32)         │         1,056 │\n"
        "├─────────────────────────────────┼────────────────────────┼───────────────┤\n"
        "│ dropout_1 (Dropout)             │ (None, 28, 32)         │             0 │\n"
        "├─────────────────────────────────┼────────────────────────┼───────────────┤\n"
        "│ flatten (Flatten)               │ (None, 896)            │             0 │\n"
        "├─────────────────────────────────┼────────────────────────┼───────────────┤\n"
        "│ dense_2 (Dense)                 │ (None, 10)             │         8,970 │\n"
        "└─────────────────────────────────┴────────────────────────┴───────────────┘\n"
        " Total params: 10,954 (42.79 KB)\n"
        " Trainable params: 10,954 (42.79 KB)\n"
        " Non-trainable params: 0 (0.00 B)\n";
    auto model = book_model();
    CHECK(model.summary_string() == expected);
    CHECK(model.count_params() == 10954);
}

TEST_CASE("summary: Keras 2 ASCII table for a flattened 784-32-32-10 MLP") {
    Sequential model;
    model.add(Flatten({28, 28}));
    model.add(Dense(32, "relu"));
    model.add(Dense(32, "relu"));
    model.add(Dense(10, "softmax"));
    const std::string expected =
        "_________________________________________________________________\n"
        "Layer (type)                 Output Shape              Param #   \n"
        "=================================================================\n"
        "flatten (Flatten)            (None, 784)               0         \n"
        "_________________________________________________________________\n"
        "dense (Dense)                (None, 32)                25120     \n"
        "_________________________________________________________________\n"
        "dense_1 (Dense)              (None, 32)                1056      \n"
        "_________________________________________________________________\n"
        "dense_2 (Dense)              (None, 10)                330       \n"
        "=================================================================\n"
        "Total params: 26,506\n"
        "Trainable params: 26,506\n"
        "Non-trainable params: 0\n"
        "_________________________________________________________________\n";
    CHECK(model.summary_string(SummaryStyle::ascii) == expected);
    CHECK(model.summary_string().find(" Total params: 26,506 (103.54 KB)") != std::string::npos);
}

TEST_CASE("layers by name, and the JSON config round trip") {
    Sequential model("by_name");
    model.add("dense", {{"units", 32}, {"activation", "relu"}, {"input_shape", {784}}});
    model.add("Dropout", {{"rate", 0.2}});
    model.add("dense", {{"units", 10}, {"activation", "softmax"}});
    CHECK(model.count_params() == 784 * 32 + 32 + 330);
    CHECK(model.layer(2).name() == "dense_1");

    const std::string json = model.to_json();
    Sequential copy = Sequential::from_json(json);
    CHECK(copy.to_json() == json);
    CHECK(copy.summary_string() == model.summary_string());
    CHECK(copy.name() == "by_name");

    // Keras 3 writes the input as an InputLayer entry and initialisers as objects.
    const std::string keras3 = R"({"class_name": "Sequential", "config": {"name": "k3", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [null, 4], "name": "input_layer"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": "sigmoid",
         "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}}}}]}})";
    Sequential k3 = Sequential::from_json(keras3);
    CHECK(k3.input_shape() == Shape{4});
    CHECK(k3.count_params() == 15);

    CHECK(error_of([] { Sequential::from_json("{not json"); }).find("not valid JSON") != std::string::npos);
    CHECK(error_of([] { Sequential::from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": -3}}]}})"); })
              .find("units") != std::string::npos);
    CHECK(error_of([] { Sequential::from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 2, "activation": "nope"}}]}})"); })
              .find("known activations") != std::string::npos);
    CHECK(error_of([] { Sequential::from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {}}]}})"); })
              .find("unknown layer 'Lambda'") != std::string::npos);
}

TEST_CASE("fit learns XOR with a sigmoid hidden layer") {
    set_random_seed(3);
    xt::xarray<float> x{{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    xt::xarray<float> y{0, 1, 1, 0};
    y.reshape({4, 1});
    Sequential model;
    model.add(Dense(8, "sigmoid", {2}));
    model.add(Dense(1, "sigmoid"));
    model.compile("binary_crossentropy", Adam{.learning_rate = 0.05}, {"accuracy"});
    auto history = model.fit(x, y, {.batch_size = 4, .epochs = 400, .verbose = 0});
    CHECK(history.history["loss"].back() < 0.1);
    CHECK(model.evaluate(x, y)["accuracy"] == 1.0);
    const auto p = model.predict(x);
    CHECK(p(0, 0) < 0.5f);
    CHECK(p(1, 0) > 0.5f);
}

TEST_CASE("an optimizer's update in parts, as fit's threads run it, equals the whole update bit for bit") {
    for (OptimizerSpec spec : {OptimizerSpec(SGD{.learning_rate = 0.1}), OptimizerSpec(SGD{.learning_rate = 0.1, .momentum = 0.9, .nesterov = true}),
                               OptimizerSpec(Adam{.learning_rate = 0.05}), OptimizerSpec(RMSprop{.learning_rate = 0.01, .momentum = 0.5})}) {
        auto whole = spec.make(), in_parts = spec.make();
        INFO(whole->config().dump());
        auto make_weights = [] {
            return std::vector<Tensor>{Tensor::parameter(xt::cast<float>(testing::uniform({37}, 1))),
                                       Tensor::parameter(xt::cast<float>(testing::uniform({5, 3}, 2))),
                                       Tensor::parameter(xt::cast<float>(testing::uniform({2}, 3)))};
        };
        auto a = make_weights(), b = make_weights();
        std::size_t tasks_run = 0;
        const Optimizer::PartRunner in_reverse = [&](std::size_t parts, const std::function<void(std::size_t)>& task) {
            for (std::size_t part = parts; part-- > 0;) {
                task(part);
                ++tasks_run;
            }
        };
        for (int step = 0; step < 3; ++step) {
            for (auto* weights : {&a, &b}) {
                for (std::size_t w = 0; w < 2; ++w) {  // the third weight gets no gradient
                    (*weights)[w].zero_grad();
                    ops::sum(ops::mul((*weights)[w], (*weights)[w])).backward();
                }
            }
            whole->apply(a);
            in_parts->apply(b, 3, in_reverse);
        }
        CHECK(tasks_run == 9);
        for (std::size_t w = 0; w < a.size(); ++w) CHECK(testing::bitwise_equal(a[w].value(), b[w].value()));
        CHECK(whole->iterations() == in_parts->iterations());
        REQUIRE(whole->slots().size() == in_parts->slots().size());
        for (std::size_t w = 0; w < whole->slots().size(); ++w) {
            REQUIRE(whole->slots()[w].size() == in_parts->slots()[w].size());
            for (std::size_t k = 0; k < whole->slots()[w].size(); ++k) {
                CHECK(testing::bitwise_equal(whole->slots()[w][k], in_parts->slots()[w][k]));
            }
        }
    }
}

TEST_CASE("Adam's update follows Keras's rule, in SIMD registers and in the scalar tail alike") {
    const Adam config{.learning_rate = 0.05, .beta_1 = 0.8, .beta_2 = 0.95, .epsilon = 1e-3};
    auto adam = OptimizerSpec(config).make();
    const xt::xarray<double> start = testing::uniform({37}, 4);  // 37: whole registers and a tail on every ISA
    std::vector<Tensor> weights{Tensor::parameter(xt::cast<float>(start))};
    std::vector<double> w(start.begin(), start.end()), m(w.size(), 0.0), v(w.size(), 0.0);
    for (int step = 1; step <= 4; ++step) {
        weights[0].zero_grad();
        ops::sum(ops::mul(weights[0], weights[0])).backward();
        adam->apply(weights);
        const double rate = config.learning_rate * std::sqrt(1 - std::pow(config.beta_2, step)) / (1 - std::pow(config.beta_1, step));
        for (std::size_t j = 0; j < w.size(); ++j) {
            const double g = weights[0].grad().data()[j];
            m[j] += (g - m[j]) * (1 - config.beta_1);
            v[j] += (g * g - v[j]) * (1 - config.beta_2);
            w[j] -= rate * m[j] / (std::sqrt(v[j]) + config.epsilon);
        }
        for (std::size_t j = 0; j < w.size(); ++j) {
            INFO("step " << step << ", element " << j);
            CHECK(weights[0].value().data()[j] == doctest::Approx(w[j]).epsilon(1e-5));
        }
    }
}

TEST_CASE("RMSprop's update follows Keras's rule, with and without momentum") {
    for (const double momentum : {0.0, 0.7}) {
        const RMSprop config{.learning_rate = 0.01, .rho = 0.8, .momentum = momentum, .epsilon = 1e-3};
        INFO("momentum " << momentum);
        auto rmsprop = OptimizerSpec(config).make();
        const xt::xarray<double> start = testing::uniform({37}, 5);
        std::vector<Tensor> weights{Tensor::parameter(xt::cast<float>(start))};
        std::vector<double> w(start.begin(), start.end()), mean_square(w.size(), 0.0), velocity(w.size(), 0.0);
        for (int step = 1; step <= 4; ++step) {
            weights[0].zero_grad();
            ops::sum(ops::mul(weights[0], weights[0])).backward();
            rmsprop->apply(weights);
            for (std::size_t j = 0; j < w.size(); ++j) {
                const double g = weights[0].grad().data()[j];
                mean_square[j] = config.rho * mean_square[j] + (1 - config.rho) * g * g;
                velocity[j] = momentum * velocity[j] + config.learning_rate * g / std::sqrt(mean_square[j] + config.epsilon);
                w[j] -= velocity[j];
            }
            for (std::size_t j = 0; j < w.size(); ++j) {
                INFO("step " << step << ", element " << j);
                CHECK(weights[0].value().data()[j] == doctest::Approx(w[j]).epsilon(1e-5));
            }
        }
    }
}

TEST_CASE("fit separates three blobs with softmax, with every optimizer") {
    auto [x, labels] = clusters(30);
    for (OptimizerSpec optimizer : {OptimizerSpec(SGD{.learning_rate = 0.1}),
                                    OptimizerSpec(SGD{.learning_rate = 0.05, .momentum = 0.9, .nesterov = true}),
                                    OptimizerSpec(Adam{.learning_rate = 0.05}), OptimizerSpec(RMSprop{.learning_rate = 0.01})}) {
        set_random_seed(4);
        Sequential model;
        model.add(Dense(3, "softmax", {2}));
        model.compile("categorical_crossentropy", optimizer, {"accuracy"});
        model.fit(x, to_categorical(labels, 3), {.batch_size = 8, .epochs = 60, .verbose = 0});
        CHECK(model.evaluate(x, to_categorical(labels, 3))["accuracy"] == 1.0);
    }
    set_random_seed(4);
    Sequential sparse;
    sparse.add(Dense(3, "softmax", {2}));
    sparse.compile("sparse_categorical_crossentropy", Adam{.learning_rate = 0.05}, {"accuracy"});
    auto history = sparse.fit(x, labels, {.batch_size = 8, .epochs = 60, .verbose = 0, .validation_split = 0.2});
    CHECK(history.history.count("val_loss") == 1);
    CHECK(history.history["val_accuracy"].back() == 1.0);
    CHECK(history.epoch.size() == 60);
}

TEST_CASE("the last partial batch trains with its own mean") {
    // Dense(1) without activation, mse: w <- w - lr * 2/n * sum((w x + b - y) x), per batch.
    set_random_seed(0);
    Sequential model;
    model.add(Dense(DenseOptions{.units = 1, .kernel_initializer = "ones", .input_shape = {1}}));
    model.compile("mse", SGD{.learning_rate = 0.01});
    xt::xarray<float> x{1, 2, 3, 4, 5};
    xt::xarray<float> y{0, 1, 0, 1, 0};
    x.reshape({5, 1});
    y.reshape({5, 1});
    model.fit(x, y, {.batch_size = 4, .epochs = 1, .verbose = 0, .shuffle = false});
    double w = 1, b = 0;
    for (auto [begin, end] : {std::pair{0, 4}, std::pair{4, 5}}) {
        double gw = 0, gb = 0;
        for (int i = begin; i < end; ++i) {
            const double err = w * x(i, 0) + b - y(i, 0);
            gw += 2 * err * x(i, 0) / (end - begin);
            gb += 2 * err / (end - begin);
        }
        w -= 0.01 * gw;
        b -= 0.01 * gb;
    }
    CHECK(model.get_weights()[0](0, 0) == doctest::Approx(w).epsilon(1e-5));
    CHECK(model.get_weights()[1](0) == doctest::Approx(b).epsilon(1e-5));
}

TEST_CASE("EarlyStopping stops after `patience` epochs without improvement and restores the best weights") {
    auto [x, labels] = clusters(10);
    set_random_seed(5);
    Sequential model;
    model.add(Dense(3, "softmax", {2}));
    model.compile("sparse_categorical_crossentropy", "sgd");
    // The loss falls every epoch, so in "max" mode the first epoch stays the best.
    auto stopper = std::make_shared<EarlyStopping>(
        EarlyStoppingOptions{.monitor = "loss", .patience = 2, .mode = "max", .restore_best_weights = true});
    struct Snapshot : Callback {
        std::vector<std::vector<xt::xarray<float>>> weights;
        void on_epoch_end(int, const Logs&) override { weights.push_back(model->get_weights()); }
    };
    auto snapshot = std::make_shared<Snapshot>();
    auto history = model.fit(x, labels, {.epochs = 20, .verbose = 0, .callbacks = {snapshot, stopper}});
    CHECK(history.epoch.size() == 3);
    CHECK(stopper->stopped_epoch() == 2);
    CHECK(stopper->best_epoch() == 0);
    CHECK(model.get_weights()[0] == snapshot->weights[0][0]);
    CHECK(model.get_weights()[0] != snapshot->weights[2][0]);
}

TEST_CASE("TerminateOnNaN stops at the first non-finite loss and names epoch and batch") {
    auto [x, labels] = clusters(20);
    set_random_seed(6);
    Sequential model;
    model.add(Dense(16, "relu", {2}));
    model.add(Dense(3, "softmax"));
    model.compile("sparse_categorical_crossentropy", SGD{.learning_rate = 1e30});
    auto terminate = std::make_shared<TerminateOnNaN>();
    std::ostringstream log;
    auto history = model.fit(x, labels, {.batch_size = 4, .epochs = 5, .verbose = 0, .callbacks = {terminate}, .output = &log});
    CHECK(history.epoch.size() == 1);
    CHECK(terminate->message().find("Epoch 1, batch ") != std::string::npos);
    CHECK(log.str().find("terminating training") != std::string::npos);
    CHECK_FALSE(std::isfinite(history.history["loss"].back()));
}

TEST_CASE("CSVLogger and LearningRateScheduler") {
    auto [x, labels] = clusters(10);
    set_random_seed(7);
    Sequential model;
    model.add(Dense(3, "softmax", {2}));
    model.compile("sparse_categorical_crossentropy", "sgd", {"accuracy"});
    const std::string path = "test_model_log.csv";
    std::vector<double> rates;
    auto scheduler = std::make_shared<LearningRateScheduler>([&](int epoch, double lr) {
        rates.push_back(lr);
        return 0.1 / (epoch + 1);
    });
    model.fit(x, labels, {.epochs = 3, .verbose = 0, .callbacks = {std::make_shared<CSVLogger>(path), scheduler}});
    CHECK(rates == std::vector<double>{0.01, 0.1, 0.05});
    CHECK(model.optimizer()->learning_rate() == doctest::Approx(0.1 / 3));
    std::ifstream file(path);
    std::string header, line;
    std::getline(file, header);
    CHECK(header == "epoch,accuracy,loss");
    int rows = 0;
    while (std::getline(file, line)) ++rows;
    CHECK(rows == 3);
    std::remove(path.c_str());
}

TEST_CASE("fit prints Keras 3's progress lines when output is not a terminal") {
    auto [x, labels] = clusters(10);
    set_random_seed(8);
    Sequential model;
    model.add(Dense(3, "softmax", {2}));
    model.compile("sparse_categorical_crossentropy", "adam", {"accuracy"});
    std::ostringstream out;
    model.fit(x, labels, {.batch_size = 8, .epochs = 2, .validation_data = {{x, labels}}, .output = &out});
    const std::string text = out.str();
    CHECK(text.rfind("Epoch 1/2\n4/4 ━━━━━━━━━━━━━━━━━━━━ ", 0) == 0);
    CHECK(text.find("\nEpoch 2/2\n4/4 ") != std::string::npos);
    CHECK(text.find(" - accuracy: ") != std::string::npos);
    CHECK(text.find(" - val_loss: ") != std::string::npos);
    CHECK(std::count(text.begin(), text.end(), '\n') == 4);
    CHECK(text.find('\r') == std::string::npos);

    std::ostringstream silent;
    model.fit(x, labels, {.epochs = 2, .verbose = 0, .output = &silent});
    CHECK(silent.str().empty());
    std::ostringstream per_epoch;
    model.fit(x, labels, {.batch_size = 8, .epochs = 1, .verbose = 2, .output = &per_epoch});
    CHECK(per_epoch.str().rfind("4/4 - ", 0) == 0);
}

TEST_CASE("clear errors for misuse") {
    auto model = book_model();
    xt::xarray<float> x = xt::zeros<float>({4, 28, 28});
    xt::xarray<float> y = to_categorical(xt::xarray<float>{1, 2, 3, 4}, 10);
    CHECK(error_of([&] { model.fit(x, y); }).find("call compile() before fit()") != std::string::npos);
    model.compile("categorical_crossentropy", "adam", {"accuracy"});

    const auto features = error_of([&] { model.fit(xt::xarray<float>(xt::zeros<float>({4, 28, 27})), y, {.verbose = 0}); });
    CHECK(features.find("(None, 28, 28)") != std::string::npos);
    CHECK(features.find("(4, 28, 27)") != std::string::npos);
    const auto width = error_of([&] { model.fit(x, to_categorical(xt::xarray<float>{1, 2, 3, 4}, 5), {.verbose = 0}); });
    CHECK(width.find("(4, 5)") != std::string::npos);
    CHECK(width.find("(None, 10)") != std::string::npos);
    CHECK(error_of([&] { model.fit(x, y, {.batch_size = 0}); }).find("batch_size") != std::string::npos);
    CHECK(error_of([&] { model.fit(xt::xarray<float>(xt::zeros<float>({0, 28, 28})), y); }).find("no samples") !=
          std::string::npos);
    CHECK(error_of([&] { model.fit(x, xt::xarray<float>(xt::zeros<float>({3, 10}))); }).find("4 samples") != std::string::npos);

    Sequential sparse = book_model();
    sparse.compile("sparse_categorical_crossentropy", "adam");
    CHECK(error_of([&] { sparse.fit(x, xt::xarray<float>{1, 2, 10, 4}, {.verbose = 0}); }).find("label 10") != std::string::npos);
    CHECK(error_of([&] { sparse.evaluate(x, xt::xarray<float>{1, -1, 3, 4}); }).find("label -1") != std::string::npos);
    CHECK(error_of([] { to_categorical(xt::xarray<float>{0, 12}, 10); }).find("label 12") != std::string::npos);
}

TEST_CASE("predict runs in batches without recording a graph") {
    set_random_seed(9);
    auto model = book_model();
    Generator g(1);
    xt::xarray<float> x = xt::empty<float>({37, 28, 28});
    for (float& v : x) v = float(g.uniform());
    const auto all = model.predict(x, 64);
    const auto batched = model.predict(x, 5);
    CHECK(all.shape() == Shape{37, 10});
    CHECK(xt::allclose(all, batched, 1e-6, 1e-6));
    for (std::size_t r = 0; r < 37; ++r) CHECK(xt::sum(xt::row(all, r))() == doctest::Approx(1.0).epsilon(1e-5));
    for (const auto& w : model.weights()) CHECK_FALSE(w.has_grad());
}

TEST_CASE("bytes with a Rescaling layer train exactly as the same images scaled to floats") {
    Generator g(21);
    xt::xarray<std::uint8_t> bytes = xt::empty<std::uint8_t>({50, 6, 6});
    for (auto& b : bytes) b = std::uint8_t(g.below(256));
    xt::xarray<float> labels = xt::empty<float>({50});
    for (auto& label : labels) label = float(g.below(3));
    const xt::xarray<float> floats = scale_to_unit(bytes);

    auto train = [&](bool from_bytes, bool held_out_split) {
        set_random_seed(4);
        Sequential model;
        if (from_bytes) {
            model.add(Rescaling(1.0 / 255, 0.0, {6, 6}));
            model.add(Flatten());
        } else {
            model.add(Flatten({6, 6}));
        }
        model.add(Dense(8, "relu"));
        model.add(Dropout(0.2));
        model.add(Dense(3, "softmax"));
        model.compile("sparse_categorical_crossentropy", SGD{.learning_rate = 0.1, .momentum = 0.9}, {"accuracy"});
        FitOptions options{.batch_size = 8, .epochs = 3, .verbose = 0};
        if (held_out_split) {
            options.validation_split = 0.2;
        } else if (from_bytes) {
            options.validation_data = ValidationData(bytes, labels);
        } else {
            options.validation_data = ValidationData(floats, labels);
        }
        History history = from_bytes ? model.fit(bytes, labels, options) : model.fit(floats, labels, options);
        const auto predictions = from_bytes ? model.predict(bytes, 7) : model.predict(floats, 7);
        const auto scores = from_bytes ? model.evaluate(bytes, labels) : model.evaluate(floats, labels);
        return std::tuple{model.get_weights(), history.history, predictions, scores};
    };
    for (bool held_out_split : {true, false}) {
        INFO((held_out_split ? "validation_split" : "validation_data"));
        const auto [weights_b, history_b, predictions_b, scores_b] = train(true, held_out_split);
        const auto [weights_f, history_f, predictions_f, scores_f] = train(false, held_out_split);
        REQUIRE(weights_b.size() == weights_f.size());
        for (std::size_t i = 0; i < weights_b.size(); ++i) CHECK(weights_b[i] == weights_f[i]);
        CHECK(history_b.at("val_loss").size() == 3);
        CHECK(history_b == history_f);
        CHECK(predictions_b == predictions_f);
        CHECK(scores_b == scores_f);
    }
}

TEST_CASE("a Rescaling that alone reads an input is applied as the batch is gathered, to the same floats") {
    Generator g(5);
    xt::xarray<float> x = xt::empty<float>({9, 4});
    for (auto& v : x) v = float(g.below(1000)) * 0.37f - 150.0f;
    xt::xarray<std::uint8_t> bytes = xt::empty<std::uint8_t>({9, 4});
    for (auto& b : bytes) b = std::uint8_t(g.below(256));
    // predict() gathers its batches (the Rescaling folded into the gather where the plan allows);
    // call() runs every layer on the tensor it is given.
    auto check_both_paths = [&](Model& model) {
        set_random_seed(1);
        const xt::xarray<float> from_values = model.predict(x, 4);
        CHECK(from_values == model.call(Tensor::constant(x)).value());
        const xt::xarray<float> from_bytes = model.predict(bytes, 4);
        CHECK(from_bytes == model.call(Tensor::constant(xt::xarray<float>(xt::cast<float>(bytes)))).value());
        CHECK_FALSE(from_values == from_bytes);
    };
    set_random_seed(3);
    SUBCASE("the only reader of the input: folded") {
        auto input = Input({4});
        Model model(input, Dense(3)(Rescaling(0.3)(input)));
        check_both_paths(model);
    }
    SUBCASE("with an offset: run as a layer") {
        auto input = Input({4});
        Model model(input, Dense(3)(Rescaling(0.3, -1.5)(input)));
        check_both_paths(model);
    }
    SUBCASE("beside another reader of the same input: run as a layer") {
        auto input = Input({4});
        Model model(input, Dense(3)(Concatenate()({Rescaling(0.3)(input), input})));
        check_both_paths(model);
    }
    SUBCASE("twice in a row: the first folded, the second a layer") {
        auto input = Input({4});
        Model model(input, Dense(3)(Rescaling(2.0)(Rescaling(0.3)(input))));
        check_both_paths(model);
    }
}

TEST_CASE("Rescaling: scale and offset, Keras config, summary and refused configs") {
    Rescaling layer(2.0, -1.0, {3});
    layer.build({3});
    CHECK(layer.call(Tensor::constant(xt::xarray<float>{{0.0f, 0.5f, 1.0f}}), false).value() ==
          xt::xarray<float>{{-1.0f, 0.0f, 1.0f}});
    const auto config = layer.config();
    CHECK(config["scale"] == 2.0);
    CHECK(config["offset"] == -1.0);
    auto rebuilt = make_layer("rescaling", {{"scale", 0.5}});
    CHECK(rebuilt->class_name() == "Rescaling");
    CHECK(rebuilt->config()["offset"] == 0.0);
    CHECK(error_of([] { make_layer("Rescaling", {{"scale", {0.5, 0.25}}}); }).find("one per channel") != std::string::npos);
    CHECK(error_of([] { make_layer("Rescaling", {{"offset", 1.0}}); }).find("missing required field 'scale'") !=
          std::string::npos);
    CHECK(error_of([] { Rescaling(std::nan(""), 0.0); }).find("finite") != std::string::npos);

    Sequential model;
    model.add(Rescaling(1.0 / 255, 0.0, {28, 28}));
    model.add(Flatten());
    model.add(Dense(10, "softmax"));
    CHECK(model.summary_string().find("rescaling (Rescaling)") != std::string::npos);
    const Sequential copy = Sequential::from_json(model.to_json());
    CHECK(copy.layer(0).config() == model.layer(0).config());
    model.compile("sparse_categorical_crossentropy", "sgd");
    const xt::xarray<std::uint8_t> wrong = xt::zeros<std::uint8_t>({2, 27, 28});
    CHECK(error_of([&] { model.predict(wrong); }).find("got x of shape (2, 27, 28)") != std::string::npos);
}

TEST_CASE("one NaN pixel makes the loss NaN, and TerminateOnNaN stops before it spreads") {
    auto [train, test] = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
    xt::xarray<float> x = xt::view(train.x, xt::range(0, 256));
    const xt::xarray<float> y = to_categorical(xt::view(train.y, xt::range(0, 256)), 10);
    x(0, 14, 14) = std::numeric_limits<float>::quiet_NaN();
    set_random_seed(1);
    auto model = book_model();
    model.compile("categorical_crossentropy", "adam", {"accuracy"});
    auto terminate = std::make_shared<TerminateOnNaN>();
    std::ostringstream log;
    const auto history = model.fit(x, y, {.batch_size = 32, .epochs = 3, .verbose = 0, .shuffle = false, .callbacks = {terminate},
                                          .output = &log});
    CHECK(history.epoch.size() == 1);
    CHECK(std::isnan(history.history.at("loss").back()));
    CHECK(terminate->message() == "Epoch 1, batch 0: invalid loss nan, terminating training");
}

TEST_CASE("TerminateOnNaN also stops when a weight is not finite while the loss is") {
    auto [x, labels] = clusters(20);
    set_random_seed(6);
    Sequential model;
    model.add(Dense(4, "relu", {2}));
    model.add(Dense(3, "softmax"));
    model.compile("sparse_categorical_crossentropy", "sgd");
    // A callback that runs before TerminateOnNaN and poisons a weight after the loss was logged.
    struct Poison : Callback {
        void on_train_batch_end(int batch, const Logs&) override {
            if (batch == 2) model->layer(1).weights()[1].mutable_value()(2) = std::numeric_limits<float>::infinity();
        }
    };
    auto terminate = std::make_shared<TerminateOnNaN>();
    const auto history = model.fit(x, labels, {.batch_size = 4, .epochs = 3, .verbose = 0,
                                               .callbacks = {std::make_shared<Poison>(), terminate}});
    CHECK(history.epoch.size() == 1);
    CHECK(std::isfinite(history.history.at("loss").back()));
    CHECK(terminate->message() == "Epoch 1, batch 2: the model's weight 'dense_1/bias' holds inf at flat index 2, terminating training");
}

TEST_CASE("batch sizes beyond the data, up to SIZE_MAX, train, evaluate and predict in one batch") {
    const auto data = clusters(10);
    const auto& x = data.first;
    const auto& labels = data.second;
    auto run = [&](std::size_t batch_size) {
        set_random_seed(9);
        Sequential model;
        model.add(Dense(4, "relu", {2}));
        model.add(Dense(3, "softmax"));
        model.compile("sparse_categorical_crossentropy", "adam", {"accuracy"});
        auto history = model.fit(x, labels, {.batch_size = batch_size, .epochs = 2, .verbose = 0});
        return std::tuple{history, model.evaluate(x, labels, {.batch_size = batch_size}), model.predict(x, batch_size)};
    };
    const auto [history, scores, predictions] = run(std::numeric_limits<std::size_t>::max());
    const auto [one_batch_history, one_batch_scores, one_batch_predictions] = run(x.shape()[0]);
    REQUIRE(history.history.count("loss") == 1);
    CHECK(history.history.at("loss").size() == 2);
    CHECK(history.history == one_batch_history.history);
    CHECK(scores == one_batch_scores);
    CHECK(testing::bitwise_equal(predictions, one_batch_predictions));
}

TEST_CASE("a null callback is refused with its index") {
    const auto data = clusters(5);
    const auto& x = data.first;
    const auto& labels = data.second;
    Sequential model;
    model.add(Dense(3, "softmax", {2}));
    model.compile("sparse_categorical_crossentropy", "sgd");
    CHECK(error_of([&] { model.fit(x, labels, {.verbose = 0, .callbacks = {std::make_shared<TerminateOnNaN>(), nullptr}}); }) ==
          "fit: callback 1 is null");
}

TEST_CASE("configs: library exceptions become ValueErrors naming the field; whole-number fields refuse fractions") {
    auto dense_config = [](const std::string& units) {
        return R"({"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "Dense", "config": )"
               R"({"name": "d", "units": )" + units + R"(, "batch_input_shape": [null, 4]}}]}})";
    };
    CHECK(Sequential::from_json(dense_config("3")).count_params() == 15);
    CHECK(Sequential::from_json(dense_config("3.0")).count_params() == 15);
    CHECK(error_of([&] { Sequential::from_json(dense_config("3.5")); }) ==
          "layer config of Dense 'd': field 'units' must be a whole number in [0, 16777216], got 3.5");
    CHECK(error_of([&] { Sequential::from_json(dense_config("-1")); }).find("field 'units' must be a whole number") !=
          std::string::npos);
    CHECK(error_of([&] { Sequential::from_json(dense_config("\"3\"")); }).find("field 'units'") != std::string::npos);
    CHECK(error_of([&] { Sequential::from_json(dense_config("1e400")); }).find("not valid JSON") != std::string::npos);
    CHECK(error_of([] { Sequential::from_json(R"({"class_name": 5, "config": {}})"); })
              .find("expected {\"class_name\": \"Sequential\"") != std::string::npos);
    CHECK(error_of([] { Sequential::from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense",)"
                                              R"( "config": {"units": 2, "use_bias": 7}}]}})"); })
              .find("field 'use_bias' has the wrong type (7)") != std::string::npos);
    CHECK(error_of([] { Sequential::from_json(R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Reshape",)"
                                              R"( "config": {"target_shape": [2.5, -1]}}]}})"); })
              .find("'target_shape' extent must be a whole number") != std::string::npos);
    CHECK(error_of([] { OptimizerSpec::from_config({{"name", "adam"}, {"learning_rate", "fast"}}); }).find("learning_rate") !=
          std::string::npos);
    // Nothing from nlohmann escapes: every failure is an xtnn::Error.
    for (const std::string& text : {R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": 5}]}})",
                                    R"({"class_name": "Sequential", "config": {"layers": 5}})", R"([1, 2])", R"("x")",
                                    R"({"class_name": "Sequential", "config": {"name": 5, "layers": []}})"}) {
        CHECK_THROWS_AS(Sequential::from_json(text), Error);
    }
}

TEST_CASE("JSON nested 100,000 deep is refused before any recursive walk") {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    const std::string layer_start = R"({"class_name": "Sequential", "config": {"layers": [)";
    for (const std::string& text :
         {layer_start + deep + "]}}", layer_start + R"({"class_name": "Dense", "config": )" + deep + "}]}}",
          layer_start + R"({"class_name": "Dense", "config": {"units": )" + deep + "}}]}}", deep}) {
        CHECK(error_of([&] { Sequential::from_json(text); }).find("JSON nested deeper than 32 levels") != std::string::npos);
    }
    // The same through the APIs that take parsed JSON: deep values built in place (a copy of one
    // would itself recurse 100,000 deep).
    auto nest_deep = [](nlohmann::json& at) {
        nlohmann::json* inner = &at;
        for (int i = 0; i < 100000; ++i) {
            *inner = nlohmann::json::array({nullptr});
            inner = &(*inner)[0];
        }
    };
    nlohmann::json layer_config = {{"activation", "relu"}};
    nest_deep(layer_config["units"]);
    CHECK(error_of([&] { make_layer("Dense", layer_config); }).find("JSON nested deeper than 32 levels") != std::string::npos);
    nlohmann::json model_config = {{"class_name", "Sequential"}, {"config", nlohmann::json::object()}};
    nest_deep(model_config["config"]["layers"]);
    CHECK(error_of([&] { Sequential::from_config(model_config); }).find("JSON nested deeper than 32 levels") != std::string::npos);
    nlohmann::json optimizer_config = {{"name", "adam"}};
    nest_deep(optimizer_config["beta_1"]);
    CHECK(error_of([&] { OptimizerSpec::from_config(std::move(optimizer_config)); })
              .find("JSON nested deeper than 32 levels") != std::string::npos);
}

TEST_CASE("sizes past the element cap are refused before allocating") {
    Sequential conv;
    const std::size_t huge = std::size_t(1) << 19;
    CHECK(error_of([&] { conv.add(Conv2D(1, huge, 1, "valid", "linear", {huge, huge, std::size_t(1) << 24})); })
              .find("more than 4294967296 elements") != std::string::npos);
    Sequential dense;
    CHECK(error_of([&] { dense.add(Dense(std::size_t(1) << 24, "linear", {1600})); }) ==
          "Dense 'dense': weight shape (1600, 16777216) has more than 4294967296 elements, the most xtnn allocates for one tensor");
    CHECK(dense.size() == 0);
    const std::string conv_json =
        R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Conv2D", "config": {"filters": 1, )"
        R"("kernel_size": [524288, 524288], "batch_input_shape": [null, 524288, 524288, 16777216]}}]}})";
    CHECK(error_of([&] { Sequential::from_json(conv_json); }).find("more than 4294967296 elements") != std::string::npos);
    CHECK(error_of([] { to_categorical(xt::xarray<float>{0, 1}, std::size_t(1) << 62); }).find("more than 4294967296 elements") !=
          std::string::npos);
    CHECK(error_of([] { Reshape({16777216, 16777216, 16777216, -1}, {4}).output_shape({4}); }).find("more than") != std::string::npos);
}

TEST_CASE("the config fuzzing seeds and every crasher found so far load or fail with an xtnn::Error") {
    std::size_t replayed = 0, loaded = 0;
    for (const char* folder : {"/tests/fuzz/seeds/config", "/tests/fuzz/regressions/config"}) {
        for (const auto& entry : std::filesystem::directory_iterator(std::string(XTNN_SOURCE_DIR) + folder)) {
            if (entry.path().filename().string().front() == '.') continue;
            CAPTURE(entry.path().string());
            const auto bytes = io::read_file(entry.path().string());
            try {
                const auto model = Model::from_json(std::string(bytes.begin(), bytes.end()));
                CHECK(Model::from_json(model.to_json()).to_json() == model.to_json());
                ++loaded;
            } catch (const Error&) {
            }
            ++replayed;
        }
    }
    CHECK(replayed >= 5);
    CHECK(loaded >= 5);  // the seeds are valid configs, functional ones among them
}

TEST_CASE("a frozen layer keeps its weights bit for bit through fit; the summary and config say so") {
    auto [x, labels] = clusters(20);
    set_random_seed(12);
    Sequential model;
    model.add(Dense(8, "relu", {2}));
    model.add(BatchNormalization());
    model.add(Dense(3, "softmax"));
    model.layer(0).trainable = false;
    model.compile("sparse_categorical_crossentropy", "adam");
    const auto frozen_before = model.layer(0).weights();
    const xt::xarray<float> kernel = frozen_before[0].value(), bias = frozen_before[1].value();
    const xt::xarray<float> head = model.layer(2).weights()[0].value();
    const xt::xarray<float> moving_mean = model.layer(1).weights()[2].value();
    model.fit(x, labels, {.batch_size = 8, .epochs = 2, .verbose = 0});
    CHECK(testing::bitwise_equal(model.layer(0).weights()[0].value(), kernel));
    CHECK(testing::bitwise_equal(model.layer(0).weights()[1].value(), bias));
    CHECK_FALSE(testing::bitwise_equal(model.layer(2).weights()[0].value(), head));
    CHECK_FALSE(testing::bitwise_equal(model.layer(1).weights()[2].value(), moving_mean));

    // 2*8+8 frozen, 8+8 moving statistics; 16 gamma/beta and 8*3+3 trainable.
    CHECK(model.count_params() == 24 + 32 + 27);
    CHECK(model.count_trainable_params() == 16 + 27);
    const std::string summary = model.summary_string();
    CHECK(summary.find(" Trainable params: 43 (172.00 B)") != std::string::npos);
    CHECK(summary.find(" Non-trainable params: 40 (160.00 B)") != std::string::npos);
    CHECK(model.summary_string(SummaryStyle::ascii).find("Non-trainable params: 40\n") != std::string::npos);
    const auto restored = Sequential::from_json(model.to_json());
    CHECK_FALSE(restored.layer(0).trainable);
    CHECK(restored.layer(1).trainable);
    CHECK(restored.count_trainable_params() == 43);

    // Thawed, it trains again, and the optimizer's slots of the other weights stay in place.
    model.layer(0).trainable = true;
    model.fit(x, labels, {.batch_size = 8, .epochs = 1, .verbose = 0});
    CHECK_FALSE(testing::bitwise_equal(model.layer(0).weights()[0].value(), kernel));
}

namespace {

std::uint64_t fnv1a(const std::vector<xt::xarray<float>>& arrays) {
    std::uint64_t hash = 1469598103934665603ull;
    for (const auto& array : arrays) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(array.data());
        for (std::size_t i = 0; i < array.size() * sizeof(float); ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
    }
    return hash;
}

}  // namespace

// Values recorded with the Sequential of commit 8f99b98, before Sequential became a Model (the
// same run as tests/tools/train_run.cpp; its model files were byte-identical before and after), and
// recorded again when dropout masks became a hash of one key per call (one thread; two threads give
// the same values to 2e-6). The initial weights involve no BLAS, so they are pinned bit for bit; the
// History goes through sgemm, whose last bits vary between CPUs, and through the thread count's
// summation order, so it is pinned to 1e-5 (a changed shuffle, dropout mask or loss would move it
// by far more).
TEST_CASE("Sequential gives the values recorded before it was built on Model") {
    set_random_seed(42);
    auto [train, test] = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
    Sequential model = testing::book_model();
    CHECK(fnv1a(model.get_weights()) == 0xaff81f363fd6401aull);
    model.compile("categorical_crossentropy", "adam", {"accuracy"});
    const xt::xarray<float> x = xt::view(train.x, xt::range(0, 1000));
    const xt::xarray<float> y = to_categorical(xt::view(train.y, xt::range(0, 1000)), 10);
    const ValidationData validation{xt::view(test.x, xt::range(0, 500)), to_categorical(xt::view(test.y, xt::range(0, 500)), 10)};
    const History history = model.fit(x, y, {.batch_size = 64, .epochs = 3, .verbose = 0, .validation_data = validation});
    const std::map<std::string, std::vector<double>> recorded = {
        {"accuracy", {0x1.db22d0e560419p-3, 0x1.1c28f5c28f5c3p-1, 0x1.6d916872b020cp-1}},
        {"loss", {0x1.1c13eb9db22d1p+1, 0x1.e108bf374bc6ap+0, 0x1.6685b0b439581p+0}},
        {"val_accuracy", {0x1.ccccccccccccdp-2, 0x1.4dd2f1a9fbe77p-1, 0x1.7ae147ae147aep-1}},
        {"val_loss", {0x1.073064d0e5604p+1, 0x1.a7d19dced9168p+0, 0x1.274b1ab020c4ap+0}},
    };
    REQUIRE(history.history.size() == recorded.size());
    for (const auto& entry : recorded) {
        const std::string& name = entry.first;
        for (std::size_t e = 0; e < entry.second.size(); ++e) {
            INFO(name << " epoch " << e);
            CHECK(history.history.at(name)[e] == doctest::Approx(entry.second[e]).epsilon(1e-5));
        }
    }
}

TEST_CASE("a Sequential compiled before it is built gets its loss and metrics when the first call builds it") {
    for (int first : {0, 1, 2}) {
        INFO("built by " << std::string(first == 0 ? "predict" : first == 1 ? "build()" : "fit"));
        set_random_seed(31);
        Sequential model;
        model.add(Dense(4, "relu"));
        model.add(Dense(2, "softmax"));
        model.compile("categorical_crossentropy", "sgd");
        CHECK(model.loss() == nullptr);
        const xt::xarray<float> x = testing::uniform({6, 3}, 32);
        const xt::xarray<float> y = to_categorical(xt::xarray<float>{0, 1, 0, 1, 0, 1}, 2);
        if (first == 0) model.predict(x);
        if (first == 1) model.build({3});
        if (first == 2) model.fit(x, y, {.verbose = 0});
        REQUIRE(model.loss() != nullptr);
        CHECK(model.loss()->name() == "categorical_crossentropy");
        CHECK(model.evaluate(x, y).count("loss") == 1);
    }
}

TEST_CASE("anomaly detection names the layer whose op first goes non-finite, and fit the epoch and batch") {
    // Not a structured binding: clang before 16 cannot capture those in the lambdas below.
    auto samples = clusters(20);
    xt::xarray<float>& x = samples.first;
    const xt::xarray<float>& labels = samples.second;
    DetectAnomalyGuard anomaly;
    set_random_seed(6);
    Sequential overflowing;
    overflowing.add(Dense(16, "relu", {2}));
    overflowing.add(Dense(3, "softmax"));
    overflowing.compile("sparse_categorical_crossentropy", SGD{.learning_rate = 1e30});
    const std::string overflow = error_of<NumericError>([&] { overflowing.fit(x, labels, {.batch_size = 4, .epochs = 5, .verbose = 0}); });
    CHECK(overflow.starts_with("fit: epoch 1, batch 1: anomaly: op 'matmul' in layer 'dense_1' computed "));
    CHECK(overflow.ends_with("of its output of shape (4, 3) from finite inputs"));

    Sequential model;
    model.add(Dense(16, "relu", {2}));
    model.add(Dense(3, "softmax"));
    model.compile("sparse_categorical_crossentropy", "sgd");
    x(5, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK(error_of<NumericError>([&] { model.fit(x, labels, {.batch_size = 4, .epochs = 1, .verbose = 0, .shuffle = false}); }) ==
          "fit: epoch 1, batch 1: anomaly: op 'matmul' in layer 'dense' was given nan at flat index 3 of its input 0 "
          "(shape (4, 2), a constant: a weight or given data)");
    CHECK(error_of<NumericError>([&] { model.predict(x); }) ==
          "anomaly: op 'matmul' in layer 'dense' was given nan at flat index 11 of its input 0 (shape (32, 2), a constant: "
          "a weight or given data)");

    auto book = book_model();
    book.compile("categorical_crossentropy", "adam");
    book.layer(2).weights()[0].mutable_value()(3, 4) = std::numeric_limits<float>::infinity();
    CHECK(error_of<NumericError>([&] { book.predict(xt::xarray<float>(xt::ones<float>({3, 28, 28}))); }) ==
          "anomaly: op 'matmul' in layer 'dense_1' was given inf at flat index 100 of its input 1 (shape (32, 32), a leaf: "
          "a weight or given data)");
}
