// The functional Model: graphs of layer calls with merges, several inputs and outputs, shared and
// frozen layers, their configs, files and errors.

#include <doctest/doctest.h>

#include <set>

#include <filesystem>

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;
using testing::error_of;
using testing::bitwise_equal;

namespace {

// Bars across or down 8x8 images: label 1 for vertical. Which one is even decides `parity`.
struct Bars {
    xt::xarray<float> images, labels, positions;
};

Bars bars(std::size_t n, std::uint64_t seed) {
    Bars data{xt::zeros<float>({n, std::size_t(8), std::size_t(8), std::size_t(1)}), xt::zeros<float>({n}),
              xt::zeros<float>({n, std::size_t(1)})};
    Generator generator(seed);
    for (std::size_t i = 0; i < n; ++i) {
        const bool vertical = i % 2 == 0;
        const std::size_t at = generator.below(8);
        for (std::size_t j = 0; j < 8; ++j) data.images(i, vertical ? j : at, vertical ? at : j, 0) = 1.0f;
        data.labels(i) = vertical ? 1.0f : 0.0f;
        data.positions(i, 0) = float(at) / 8.0f;
    }
    return data;
}

Model tiny_resnet() {
    auto inputs = Input({8, 8, 1}, "image");
    auto x = Conv2D(4, 3, 1, "same", "relu")(inputs);
    auto y = BatchNormalization()(Conv2D(4, 3, 1, "same")(x));
    x = Activation("relu")(Add()({x, y}));
    auto outputs = Dense(1, "sigmoid")(GlobalAveragePooling2D()(x));
    return Model(inputs, outputs, "tiny_resnet");
}

}  // namespace

TEST_CASE("a relu Activation that alone reads a BatchNormalization or an Add runs inside it, with the same bits") {
    // Built twice from one seed: in `separate` linear Activations keep the relus on their own. The
    // second BatchNormalization's output is read twice, so its relu stays apart in both.
    auto build = [](bool separate) {
        set_random_seed(9);
        auto image = Input({8, 8, 1}, "image");
        auto y = BatchNormalization()(Conv2D(8, 3, 1, "same")(image));
        if (separate) y = Activation("linear")(y);
        auto z = BatchNormalization()(Conv2D(8, 3, 1, "same")(Activation("relu")(y)));
        auto sum = Add()({Activation("relu")(z), z});
        if (separate) sum = Activation("linear")(sum);
        auto outputs = Dense(1, "sigmoid")(GlobalAveragePooling2D()(Activation("relu")(sum)));
        Model model(image, outputs);
        model.compile("binary_crossentropy", Adam{.learning_rate = 0.05}, {"accuracy"});
        return model;
    };
    Model folded = build(false), separate = build(true);
    // The ops the graph of one call ran, by name.
    auto ops_run = [](Model& model, bool training) {
        std::multiset<std::string> names;
        const Tensor output = model.call(Tensor::constant(bars(4, 1).images), training);
        std::vector<const Node<float>*> pending{output.node().get()};
        std::set<const Node<float>*> seen;
        while (!pending.empty()) {
            const Node<float>* node = pending.back();
            pending.pop_back();
            if (!seen.insert(node).second) continue;
            names.insert(node->op);
            for (const auto& input : node->inputs) pending.push_back(input.get());
        }
        return names;
    };
    for (bool training : {false, true}) {
        INFO("training " << training);
        const auto folded_ops = ops_run(folded, training), separate_ops = ops_run(separate, training);
        const std::string fused_op = training ? "batch_norm_relu" : "batch_norm_inference_relu";
        const std::string plain_op = training ? "batch_norm" : "batch_norm_inference";
        CHECK(folded_ops.count(fused_op) == 1);
        CHECK(folded_ops.count(plain_op) == 1);
        CHECK(folded_ops.count("relu") == 1);
        CHECK(folded_ops.count("add_relu") == 1);
        CHECK(separate_ops.count(fused_op) == 0);
        CHECK(separate_ops.count("add_relu") == 0);
        CHECK(separate_ops.count("relu") == 3);
    }
    const Bars data = bars(64, 6);
    for (std::size_t i = 0; i < folded.weights().size(); ++i) CHECK(bitwise_equal(folded.weights()[i].value(), separate.weights()[i].value()));
    set_random_seed(10);
    const History a = folded.fit(data.images, data.labels, {.batch_size = 16, .epochs = 3, .verbose = 0});
    set_random_seed(10);
    const History b = separate.fit(data.images, data.labels, {.batch_size = 16, .epochs = 3, .verbose = 0});
    CHECK(a.history.at("loss") == b.history.at("loss"));
    REQUIRE(folded.weights().size() == separate.weights().size());
    for (std::size_t i = 0; i < folded.weights().size(); ++i) CHECK(bitwise_equal(folded.weights()[i].value(), separate.weights()[i].value()));
    CHECK(bitwise_equal(folded.predict(data.images), separate.predict(data.images)));
}

TEST_CASE("at inference a BatchNormalization that alone reads a Conv2D runs in its epilogue, with the same bits") {
    // Folded: a Conv2D with and without bias, each before a BatchNormalization (the first with its
    // relu folded in too), 12 filters leaving a partial SIMD register. Not folded: a Conv2D whose
    // output a second layer reads, one with its own relu, and a BatchNormalization that is a
    // model output.
    set_random_seed(21);
    auto image = Input({8, 8, 1}, "image");
    auto x = Activation("relu")(BatchNormalization()(Conv2D(8, 3, 1, "same")(image)));
    x = BatchNormalization()(Conv2D(Conv2DOptions{.filters = 12, .kernel_size = {3, 3}, .padding = "same", .use_bias = false})(x));
    auto shared = Conv2D(8, 3, 1, "same")(x);
    x = Add()({BatchNormalization()(shared), shared});
    x = BatchNormalization()(Conv2D(8, 3, 1, "same", "relu")(x));
    auto normalized_output = BatchNormalization()(Conv2D(4, 3)(x));
    auto label = Dense(1, "sigmoid")(GlobalAveragePooling2D()(x));
    Model model({image}, {label, normalized_output});
    model.compile(CompileOptions{.loss = {"binary_crossentropy", "mse"}, .optimizer = Adam{.learning_rate = 0.05}});
    const Bars data = bars(64, 6);
    // Trained, so that the moving statistics are far from zeros and ones.
    const xt::xarray<float> targets = xt::zeros<float>({std::size_t(64), std::size_t(6), std::size_t(6), std::size_t(4)});
    model.fit({data.images}, {data.labels, targets}, {.batch_size = 16, .epochs = 2, .verbose = 0});
    // predict records no graph, so it folds; a call that records one (its weights need
    // gradients) runs the ops one by one.
    // In one batch of 64, as the call runs it: the last bits of some products depend on the rows.
    const auto predicted = model.predict(std::vector<InputRows>{data.images}, 64);
    const std::vector<Tensor> called = model.call(std::vector<Tensor>{Tensor::constant(data.images)}, false);
    REQUIRE(predicted.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        INFO("output " << i);
        CHECK(bitwise_equal(xt::xarray<float>(predicted[i]), called[i].value()));
    }
}

TEST_CASE("a residual CNN with BatchNormalization: graph, summary, training") {
    set_random_seed(5);
    Model model = tiny_resnet();
    CHECK(!model.is_sequential());
    CHECK(model.input_names() == std::vector<std::string>{"image"});
    CHECK(model.output_names() == std::vector<std::string>{"dense"});
    std::vector<std::string> names;
    for (const auto& layer : model.layers()) names.push_back(layer->name());
    CHECK(names == std::vector<std::string>{"image", "conv2d", "conv2d_1", "batch_normalization", "add", "activation",
                                            "global_average_pooling2d", "dense"});
    // conv 40 + conv 148 + batch norm 16 (8 not trainable) + dense 5.
    CHECK(model.count_params() == 40 + 148 + 16 + 5);
    CHECK(model.count_trainable_params() == 40 + 148 + 8 + 5);
    const std::string summary = model.summary_string();
    CHECK(summary.find("Connected to") != std::string::npos);
    CHECK(summary.find("add (Add)") != std::string::npos);
    CHECK(summary.find("│ add (Add)                     │ (None, 8, 8, 4)        │           0 │ conv2d[0][0],                  │") != std::string::npos);
    CHECK(summary.find("│ global_average_pooling2d[0][0] │") != std::string::npos);
    CHECK(summary.find("Non-trainable params: 8 (32.00 B)") != std::string::npos);
    CHECK(model.summary_string(SummaryStyle::ascii).find("Connected to") != std::string::npos);

    const Bars data = bars(64, 6);
    model.compile("binary_crossentropy", Adam{.learning_rate = 0.05}, {"accuracy"});
    const auto moving_mean = model.layer("batch_normalization").weights()[2].value();
    const History history = model.fit(data.images, data.labels, {.batch_size = 16, .epochs = 40, .verbose = 0});
    CHECK(history.history.at("loss").back() < history.history.at("loss").front());
    CHECK(model.evaluate(data.images, data.labels)["accuracy"] == 1.0);
    CHECK(!bitwise_equal(model.layer("batch_normalization").weights()[2].value(), moving_mean));
}

TEST_CASE("the same seed gives the same functional model, History and predictions bit for bit") {
    auto run = [] {
        set_random_seed(11);
        Model model = tiny_resnet();
        model.compile("binary_crossentropy", "adam", {"accuracy"});
        const Bars data = bars(32, 12);
        const History history = model.fit(data.images, data.labels, {.batch_size = 8, .epochs = 2, .verbose = 0});
        return std::pair{history.history.at("loss"), model.predict(data.images)};
    };
    const auto [loss_a, predictions_a] = run();
    const auto [loss_b, predictions_b] = run();
    CHECK(loss_a == loss_b);
    CHECK(bitwise_equal(predictions_a, predictions_b));
}

TEST_CASE("two inputs and two outputs: per-output losses, weights, metrics and History keys") {
    set_random_seed(7);
    auto image = Input({8, 8, 1}, "image");
    auto position = Input({1}, "position");
    auto features = Flatten()(image);
    auto joined = Concatenate()({Dense(16, "relu")(features), position});
    auto hidden = Dense(16, "relu")(joined);
    Dense orientation_head(1, "sigmoid");
    orientation_head.set_name("vertical");
    auto vertical = std::move(orientation_head)(hidden);
    auto where = Dense(1, "linear")(hidden);
    Model model({image, position}, {vertical, where}, "two_heads");
    CHECK(model.output_names() == std::vector<std::string>{"vertical", "dense_2"});
    CHECK(model.output_shapes() == std::vector<Shape>{{1}, {1}});

    model.compile(CompileOptions{.loss_by_output = {{"vertical", "binary_crossentropy"}, {"dense_2", "mse"}},
                                 .optimizer = Adam{.learning_rate = 0.01},
                                 .metrics_by_output = {{"vertical", {"accuracy"}}},
                                 .loss_weights = {1.0, 0.5}});
    const Bars data = bars(96, 8);
    const Bars held_out = bars(32, 9);
    const History history =
        model.fit({data.images, data.positions}, {data.labels, data.positions},
                  {.batch_size = 16, .epochs = 30, .verbose = 0,
                   .validation_data = ValidationData({held_out.images, held_out.positions}, {held_out.labels, held_out.positions})});
    std::vector<std::string> keys;
    for (const auto& [key, values] : history.history) keys.push_back(key);
    CHECK(keys == std::vector<std::string>{"dense_2_loss", "loss", "val_dense_2_loss", "val_loss", "val_vertical_accuracy",
                                           "val_vertical_loss", "vertical_accuracy", "vertical_loss"});
    // The total is the weighted sum of the outputs' losses.
    for (std::size_t e = 0; e < history.epoch.size(); ++e) {
        CHECK(history.history.at("val_loss")[e] ==
              doctest::Approx(history.history.at("val_vertical_loss")[e] + 0.5 * history.history.at("val_dense_2_loss")[e]));
    }
    const auto scores = model.evaluate({held_out.images, held_out.positions}, {held_out.labels, held_out.positions});
    CHECK(scores.at("vertical_accuracy") >= 0.9);
    CHECK(scores.at("dense_2_loss") < 0.05);
    const auto predictions = model.predict({held_out.images, held_out.positions});
    REQUIRE(predictions.size() == 2);
    CHECK(predictions[0].shape() == std::vector<std::size_t>{32, 1});
    CHECK(error_of([&] { model.predict(held_out.images); }).find("has 2 outputs") != std::string::npos);
    CHECK(error_of([&] { model.fit({data.images}, {data.labels, data.positions}); }) ==
          "fit: model 'two_heads' has 2 inputs (image, position), got 1 array");
    CHECK(error_of([&] { model.fit({data.images, data.positions}, {data.labels}); }) ==
          "fit: model 'two_heads' has 2 outputs (vertical, dense_2), got 1 target array");
    CHECK(error_of([&] { model.compile(CompileOptions{.loss = {"mse", "mse", "mse"}}); }) ==
          "compile: 3 losses given for a model of 2 outputs (vertical, dense_2)");
    CHECK(error_of([&] { model.compile(CompileOptions{.loss_by_output = {{"nope", "mse"}}}); })
              .find("compile: losses for 'nope', which is not an output") != std::string::npos);
}

TEST_CASE("a layer called twice shares its weights (a Siamese pair)") {
    set_random_seed(13);
    auto left = Input({4}, "left");
    auto right = Input({4}, "right");
    auto encoder = shared(Dense(3, "tanh"));
    auto difference = Subtract()({(*encoder)(left), (*encoder)(right)});
    Model model({left, right}, Dense(1)(difference));
    CHECK(model.count_params() == 4 * 3 + 3 + 3 + 1);
    std::size_t dense_layers = 0;
    for (const auto& layer : model.layers()) dense_layers += layer.get() == encoder.get() ? 1 : 0;
    CHECK(dense_layers == 1);
    // The same rows on both sides give zero difference whatever the weights.
    const xt::xarray<float> x = testing::uniform({5, 4}, 14);
    const auto both = model.predict({x, x});
    const auto bias = model.layers().back()->weights()[1].value()(0);
    for (float value : both[0]) CHECK(value == bias);
    // Both calls' gradients reach the one kernel.
    model.compile("mse", SGD{.learning_rate = 0.1});
    const auto before = encoder->kernel().value();
    model.fit({x, xt::xarray<float>(x * 0.5f)}, {xt::xarray<float>(xt::ones<float>({5, 1}))}, {.batch_size = 5, .verbose = 0});
    CHECK(!bitwise_equal(encoder->kernel().value(), before));
    CHECK(model.get_config().dump().find(R"("keras_history":["dense",1,0])") != std::string::npos);
    Model copy = Model::from_json(model.to_json());
    CHECK(copy.to_json() == model.to_json());
    CHECK(copy.count_params() == model.count_params());
    CHECK(error_of([] { Dense lonely(2); auto x = Input({3}); lonely(x); }).find("not owned by a std::shared_ptr") != std::string::npos);
}

TEST_CASE("a frozen layer keeps its weights bit for bit through fit; the others train") {
    set_random_seed(17);
    auto inputs = Input({6});
    auto frozen = shared(Dense(5, "relu"));
    frozen->set_name("frozen");
    auto hidden = (*frozen)(inputs);
    auto normalized = LayerNormalization()(hidden);
    Model model(inputs, Dense(2, "softmax")(normalized));
    frozen->trainable = false;
    model.compile("categorical_crossentropy", "adam");
    const auto frozen_before = model.layer("frozen").weights();
    std::vector<xt::xarray<float>> values_before;
    for (const auto& w : frozen_before) values_before.push_back(w.value());
    const auto last_before = model.layers().back()->weights()[0].value();
    const xt::xarray<float> x = testing::uniform({20, 6}, 18);
    const xt::xarray<float> y = to_categorical(xt::xarray<float>(xt::view(xt::arange<float>(20), xt::all()) - xt::floor(xt::arange<float>(20) / 2) * 2), 2);
    model.fit(x, y, {.batch_size = 4, .epochs = 3, .verbose = 0});
    for (std::size_t w = 0; w < frozen_before.size(); ++w) CHECK(bitwise_equal(frozen_before[w].value(), values_before[w]));
    CHECK(!bitwise_equal(model.layers().back()->weights()[0].value(), last_before));
    CHECK(model.count_trainable_params() == model.count_params() - (6 * 5 + 5));
    CHECK(model.get_config().dump().find(R"("name":"frozen","trainable":false)") != std::string::npos);
}

TEST_CASE("functional configs: Keras 3 round trip, Keras 2's form, and files") {
    set_random_seed(19);
    Model model = tiny_resnet();
    const nlohmann::json config = model.get_config();
    CHECK(config["class_name"] == "Functional");
    CHECK(config["config"]["input_layers"] == nlohmann::json::parse(R"([["image", 0, 0]])"));
    CHECK(config["config"]["output_layers"] == nlohmann::json::parse(R"([["dense", 0, 0]])"));
    const auto& add = config["config"]["layers"][4];
    CHECK(add["class_name"] == "Add");
    CHECK(add["inbound_nodes"][0]["args"][0].size() == 2);
    CHECK(add["inbound_nodes"][0]["args"][0][1]["config"]["keras_history"] == nlohmann::json::parse(R"(["batch_normalization", 0, 0])"));

    Model copy = Model::from_json(model.to_json());
    CHECK(copy.to_json() == model.to_json());
    copy.set_weights(model.get_weights());
    const Bars data = bars(8, 20);
    CHECK(bitwise_equal(copy.predict(data.images), model.predict(data.images)));

    // Keras 2 writes nodes as lists of [layer, node, tensor, kwargs] and InputLayer's batch_input_shape.
    const std::string keras2 = R"({"class_name": "Functional", "config": {"name": "k2", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 3], "dtype": "float32", "name": "a"}, "name": "a", "inbound_nodes": []},
        {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 3], "dtype": "float32", "name": "b"}, "name": "b", "inbound_nodes": []},
        {"class_name": "Maximum", "config": {"name": "maximum"}, "name": "maximum", "inbound_nodes": [[["a", 0, 0, {}], ["b", 0, 0, {}]]]},
        {"class_name": "Dense", "config": {"name": "out", "units": 2, "activation": "softmax"}, "name": "out", "inbound_nodes": [[["maximum", 0, 0, {}]]]}],
        "input_layers": [["a", 0, 0], ["b", 0, 0]], "output_layers": [["out", 0, 0]]}, "keras_version": "2.15.0"})";
    Model k2 = Model::from_json(keras2);
    CHECK(k2.name() == "k2");
    CHECK(k2.input_names() == std::vector<std::string>{"a", "b"});
    CHECK(k2.count_params() == 8);
    CHECK(Model::from_json(k2.to_json()).to_json() == k2.to_json());
    // Written in Keras 2's form too, and read back to the same model.
    const nlohmann::json written2 = model.get_config(ConfigForm::keras2);
    CHECK(written2["config"]["layers"][4]["inbound_nodes"] ==
          nlohmann::json::parse(R"([[["conv2d", 0, 0, {}], ["batch_normalization", 0, 0, {}]]])"));
    CHECK(written2["config"]["layers"][0]["config"]["batch_input_shape"] == nlohmann::json::parse("[null, 8, 8, 1]"));
    const Model from_keras2 = Model::from_config(written2);
    CHECK(from_keras2.to_json() == model.to_json());
    CHECK(from_keras2.to_json(-1, ConfigForm::keras2) == written2.dump());

    // The whole model through a file: weights, moving statistics, compile settings.
    const auto dir = std::filesystem::temp_directory_path() / ("xtnn-functional-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    model.compile("binary_crossentropy", "adam", {"accuracy"});
    model.fit(data.images, data.labels, {.batch_size = 4, .epochs = 1, .verbose = 0});
    model.save((dir / "resnet.xtnn").string());
    Model loaded = load_model((dir / "resnet.xtnn").string());
    CHECK(!loaded.is_sequential());
    CHECK(bitwise_equal(loaded.predict(data.images), model.predict(data.images)));
    CHECK(loaded.get_weights().size() == model.get_weights().size());
    for (std::size_t w = 0; w < model.get_weights().size(); ++w) CHECK(bitwise_equal(loaded.get_weights()[w], model.get_weights()[w]));
    CHECK(loaded.compiled());
    CHECK(loaded.optimizer()->iterations() == model.optimizer()->iterations());
    CHECK(error_of([&] { Sequential stack = std::move(loaded); }).find("is functional, not a stack of layers") != std::string::npos);
    std::filesystem::remove_all(dir);
}

TEST_CASE("graph errors name the layers and shapes") {
    auto a = Input({4}, "a");
    auto b = Input({5}, "b");
    auto from_b = Dense(2)(b);
    CHECK(error_of([&] { Model(a, from_b, "m"); }) ==
          "Model 'm': output 0 ('Dense') depends on input 'b' of shape (None, 5), which is not among the model's inputs ('a'): "
          "the graph is disconnected");
    CHECK(error_of([&] { Model({a, b}, {Dense(1)(a)}, "m"); }) == "Model 'm': input 'b' is not used by any output");
    const auto unnamed = Input({3});
    CHECK(error_of([&] { Model({unnamed, unnamed}, {Add()({unnamed, unnamed})}, "m"); }) ==
          "Model 'm': input an unnamed Input of shape (None, 3) is given twice");
    CHECK(error_of([&] { Model(unnamed, from_b, "m"); }) ==
          "Model 'm': output 0 ('Dense') depends on input 'b' of shape (None, 5), which is not among the model's inputs "
          "(an unnamed Input of shape (None, 3)): the graph is disconnected");
    CHECK(error_of([&] { Model(from_b, from_b, "m"); }).find("is the output of layer 'Dense', not an Input()") != std::string::npos);
    CHECK(error_of([&] { Add()({a, b}); }) == "Add: the inputs have incompatible shapes (None, 4), (None, 5); extents must be equal or 1");
    CHECK(error_of([&] { Subtract()({a, a, a}); }) == "Subtract takes exactly 2 inputs, got 3");
    CHECK(error_of([&] { Add()(a); }) == "Add takes at least 2 inputs, got 1");
    CHECK(error_of([&] { Concatenate(1)({Input({2, 3}), Input({4, 4})}); })
              .find("inputs joined on axis 1 must agree on every other axis, got (None, 2, 3), (None, 4, 4)") != std::string::npos);
    CHECK(Concatenate(1)({Input({2, 3}), Input({4, 3})}).shape() == Shape{6, 3});
    auto dense = shared(Dense(3));
    (*dense)(a);
    CHECK(error_of([&] { (*dense)(b); }).find("was built for input (None, 4); called again on (None, 5)") != std::string::npos);

    const std::string cycle = R"({"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [null, 2]}, "name": "in", "inbound_nodes": []},
        {"class_name": "Add", "config": {}, "name": "x", "inbound_nodes": [[["in", 0, 0], ["y", 0, 0]]]},
        {"class_name": "Add", "config": {}, "name": "y", "inbound_nodes": [[["in", 0, 0], ["x", 0, 0]]]}],
        "input_layers": [["in", 0, 0]], "output_layers": [["y", 0, 0]]}})";
    CHECK(error_of([&] { Model::from_json(cycle); }).find("the graph has a cycle") != std::string::npos);
    std::string missing = cycle;
    missing.replace(missing.find(R"(["y", 0, 0]]]})"), 11, R"(["z", 0, 0])");
    CHECK(error_of([&] { Model::from_json(missing); }) == "Model::from_config: layer 'x' reads from 'z', which is not a layer of the model");
    CHECK(error_of([] { Model::from_json(R"({"class_name": "Graph", "config": {}})"); })
              .find("unknown model class 'Graph'; known: Functional, Model, Sequential") != std::string::npos);
}

TEST_CASE("arrays by input and output name; every new layer through a file bit for bit") {
    set_random_seed(23);
    auto a = Input({4}, "a");
    auto b = Input({3}, "b");
    auto encoder = shared(Dense(3, "tanh"));
    auto joined = Concatenate()({(*encoder)(Dense(3)(a)), (*encoder)(b), LayerNormalization()(b)});
    auto largest = Maximum()({Dense(2)(joined), Dense(2)(joined)});
    auto mixed = Average()({Subtract()({largest, Multiply()({largest, largest})}), Add()({largest, largest})});
    Dense score_layer(1, "sigmoid");
    score_layer.set_name("score");
    Model model({a, b}, {mixed, std::move(score_layer)(joined)}, "every_merge");
    model.compile(CompileOptions{.loss = {"mse", "binary_crossentropy"}, .optimizer = "adam", .metrics = {"mae"}});
    const xt::xarray<float> xa = testing::uniform({12, 4}, 24), xb = testing::uniform({12, 3}, 25);
    const xt::xarray<float> y_mixed = testing::uniform({12, 2}, 26), y_score = xt::ones<float>({12, 1});
    const auto by_list = model.evaluate({xa, xb}, {y_mixed, y_score});
    const auto by_name = model.evaluate({{"b", xb}, {"a", xa}}, {{"score", y_score}, {model.output_names()[0], y_mixed}});
    CHECK(by_list == by_name);
    model.fit({{"a", xa}, {"b", xb}}, {{"score", y_score}, {model.output_names()[0], y_mixed}}, {.batch_size = 4, .verbose = 0});
    const auto named = model.predict({{"a", xa}, {"b", xb}});
    CHECK(bitwise_equal(named.at("score"), model.predict({xa, xb})[1]));
    CHECK(error_of([&] { model.predict({{"a", xa}}); }) == "predict: no array given for input 'b'");
    CHECK(error_of([&] { model.predict({{"a", xa}, {"b", xb}, {"c", xb}}); }) ==
          "predict: 'c' is not an input of the model; its inputs are a, b");

    const auto dir = std::filesystem::temp_directory_path() / ("xtnn-merges-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    model.save((dir / "merges.xtnn").string());
    Model loaded = load_model((dir / "merges.xtnn").string());
    CHECK(loaded.to_json() == model.to_json());
    const auto expected = model.predict({xa, xb}), actual = loaded.predict({xa, xb});
    for (std::size_t o = 0; o < 2; ++o) CHECK(bitwise_equal(actual[o], expected[o]));
    CHECK(loaded.compile_options().loss == std::vector<std::string>{"mse", "binary_crossentropy"});
    // Training continues exactly where it stopped: the same step on both gives the same weights.
    model.fit({xa, xb}, {y_mixed, y_score}, {.batch_size = 4, .verbose = 0, .shuffle = false});
    loaded.fit({xa, xb}, {y_mixed, y_score}, {.batch_size = 4, .verbose = 0, .shuffle = false});
    for (std::size_t w = 0; w < model.get_weights().size(); ++w) CHECK(bitwise_equal(loaded.get_weights()[w], model.get_weights()[w]));
    std::filesystem::remove_all(dir);
}
