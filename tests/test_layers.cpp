#include <doctest/doctest.h>

#include <cmath>

#include <nlohmann/json.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;

namespace {

xt::xarray<float> random_batch(const Shape& shape, std::uint64_t seed) {
    Generator g(seed);
    xt::xarray<float> x = xt::empty<float>(shape);
    for (float& v : x) {
        v = g.uniform_symmetric(1.0f);
        if (std::abs(v) < 0.05f) v += v >= 0 ? 0.05f : -0.05f;  // keep relu kinks out of reach of eps
    }
    return x;
}

// Float32 finite-difference check of a layer's gradients for its input and weights, through a
// fixed random projection of the output (the float32 tolerances of reliability.md, section 8).
void check_layer_gradients(Layer& layer, const xt::xarray<float>& input) {
    Tensor x = Tensor::parameter(input);
    Tensor y = layer.call(x, false);
    const xt::xarray<float> projection = random_batch(Shape(y.shape().begin(), y.shape().end()), 99);
    auto objective = [&](const Tensor& input_tensor) {
        NoGradGuard no_grad;
        const auto out = layer.call(input_tensor, false).value();
        double total = 0;
        for (std::size_t i = 0; i < out.size(); ++i) total += double(out.data()[i]) * projection.data()[i];
        return total;
    };
    for (auto& w : layer.trainable_weights()) w.zero_grad();
    y.backward(projection);

    std::vector<Tensor> checked{x};
    for (auto& w : layer.trainable_weights()) checked.push_back(w);
    const float eps = 1e-2f;
    for (std::size_t t = 0; t < checked.size(); ++t) {
        Tensor& target = checked[t];
        const xt::xarray<float> analytic = target.grad();
        for (std::size_t i = 0; i < target.size(); ++i) {
            float& value = target.mutable_value().data()[i];
            const float original = value;
            value = original + eps;
            const double plus = objective(t == 0 ? Tensor::constant(target.value()) : Tensor::constant(input));
            value = original - eps;
            const double minus = objective(t == 0 ? Tensor::constant(target.value()) : Tensor::constant(input));
            value = original;
            const double numeric = (plus - minus) / (2.0 * eps);
            INFO(layer.name() << " tensor " << t << " element " << i);
            REQUIRE(std::abs(analytic.data()[i] - numeric) <= 1e-3 + 1e-2 * std::abs(numeric));
        }
    }
}

std::unique_ptr<Layer> built(std::unique_ptr<Layer> layer, const Shape& input_shape) {
    layer->set_name(snake_case(layer->class_name()));
    layer->build(input_shape);
    return layer;
}

// A merging layer built for `inputs` (batches) and called on them.
xt::xarray<float> merged_values(Layer& layer, const std::vector<xt::xarray<float>>& inputs) {
    std::vector<Shape> shapes;
    std::vector<Tensor> tensors;
    for (const auto& input : inputs) {
        shapes.push_back(Shape(input.shape().begin() + 1, input.shape().end()));
        tensors.push_back(Tensor::constant(input));
    }
    layer.build_inputs(shapes);
    return layer.call_inputs(tensors, false).value();
}

}  // namespace

TEST_CASE("Dense: values, parameter count, shapes, gradients, config") {
    set_random_seed(1);
    auto dense = built(std::make_unique<Dense>(5, "tanh"), {7});
    CHECK(dense->count_params() == 7 * 5 + 5);
    for (std::size_t batch : {1u, 7u}) {
        auto y = dense->call(Tensor::constant(random_batch({batch, 7}, batch)), false);
        CHECK(y.shape() == Shape{batch, 5});
    }
    // activation(x W + b), computed by hand.
    auto& layer = static_cast<Dense&>(*dense);
    const auto x = random_batch({3, 7}, 5);
    const auto y = dense->call(Tensor::constant(x), false).value();
    for (std::size_t r = 0; r < 3; ++r) {
        for (std::size_t c = 0; c < 5; ++c) {
            double z = layer.bias().value()(c);
            for (std::size_t k = 0; k < 7; ++k) z += double(x(r, k)) * layer.kernel().value()(k, c);
            CHECK(y(r, c) == doctest::Approx(std::tanh(z)).epsilon(1e-5));
        }
    }
    check_layer_gradients(*dense, random_batch({3, 7}, 6));
    auto copy = make_layer("Dense", dense->config());
    CHECK(copy->config() == dense->config());
}

TEST_CASE("Dense acts on the last axis of rank-3 inputs, as in Keras") {
    set_random_seed(2);
    auto dense = built(std::make_unique<Dense>(4, "relu"), {6, 3});
    CHECK(dense->output_shape({6, 3}) == Shape{6, 4});
    CHECK(dense->count_params() == 3 * 4 + 4);
    auto y = dense->call(Tensor::constant(random_batch({2, 6, 3}, 1)), false);
    CHECK(y.shape() == Shape{2, 6, 4});
    check_layer_gradients(*dense, random_batch({2, 6, 3}, 3));
}

TEST_CASE("Dropout: identity at inference, inverted scaling while training") {
    set_random_seed(3);
    auto dropout = built(std::make_unique<Dropout>(0.5), {10});
    const auto x = random_batch({7, 10}, 4);
    CHECK(dropout->call(Tensor::constant(x), false).value() == x);
    const auto trained = dropout->call(Tensor::constant(x), true).value();
    for (std::size_t i = 0; i < x.size(); ++i) {
        CHECK((trained.data()[i] == 0.0f || trained.data()[i] == doctest::Approx(2.0f * x.data()[i])));
    }
    CHECK(dropout->count_params() == 0);
    check_layer_gradients(*dropout, x);
    CHECK(make_layer("Dropout", dropout->config())->config() == dropout->config());
    CHECK_THROWS_AS(Dropout(1.0), ValueError);
}

TEST_CASE("Flatten and Activation") {
    auto flatten = built(std::make_unique<Flatten>(), {4, 3});
    for (std::size_t batch : {1u, 7u}) {
        CHECK(flatten->call(Tensor::constant(random_batch({batch, 4, 3}, 1)), false).shape() == Shape{batch, 12});
    }
    CHECK(flatten->output_shape({4, 3}) == Shape{12});
    check_layer_gradients(*flatten, random_batch({2, 4, 3}, 2));

    auto softmax = built(std::make_unique<Activation>("softmax"), {5});
    const auto p = softmax->call(Tensor::constant(random_batch({7, 5}, 3)), false).value();
    for (std::size_t r = 0; r < 7; ++r) CHECK(xt::sum(xt::row(p, r))() == doctest::Approx(1.0));
    check_layer_gradients(*softmax, random_batch({3, 5}, 4));
    CHECK(make_layer("activation", softmax->config())->config() == softmax->config());
}

TEST_CASE("every activation name builds and runs") {
    for (const auto& name : activation_names()) {
        auto layer = built(std::make_unique<Activation>(name), {4});
        auto y = layer->call(Tensor::constant(random_batch({2, 4}, 1)), false);
        CHECK(y.shape() == Shape{2, 4});
        check_layer_gradients(*layer, random_batch({2, 4}, 2));
    }
}

TEST_CASE("initializers follow Keras's bounds and are seeded") {
    Generator a(7), b(7);
    const auto glorot = initialize("glorot_uniform", {784, 32}, a);
    CHECK(glorot == initialize("glorot_uniform", {784, 32}, b));
    const float limit = std::sqrt(6.0f / (784 + 32));
    CHECK(xt::amax(glorot)() < limit);
    CHECK(xt::amin(glorot)() >= -limit);
    const auto he = initialize("he_normal", {400, 300}, a);
    const double stddev = std::sqrt(xt::mean(xt::square(xt::cast<double>(he)))());
    CHECK(stddev == doctest::Approx(std::sqrt(2.0 / 400)).epsilon(0.03));
    CHECK(xt::amax(xt::abs(he))() <= 2.0 * std::sqrt(2.0 / 400) / 0.87962566103423978 + 1e-6);
    CHECK(initialize("zeros", {3}, a) == xt::zeros<float>({3}));
    CHECK(initialize("ones", {3}, a) == xt::ones<float>({3}));
}

TEST_CASE("unknown names list the known ones") {
    auto message_of = [](auto&& f) {
        try {
            f();
        } catch (const ValueError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK(message_of([] { Dense(3, "swishy"); }).find("known activations: elu, gelu") != std::string::npos);
    CHECK(message_of([] { make_layer("Conv9D", nlohmann::json::object()); }).find("known layers: Activation, Add, Average, AveragePooling2D, BatchNormalization, Concatenate, Conv2D, Dense") !=
          std::string::npos);
    CHECK(message_of([] { Dense(DenseOptions{.units = 3, .kernel_initializer = "magic"}); }).find("glorot_uniform") !=
          std::string::npos);
    CHECK(message_of([] { make_loss("hinge"); }).starts_with("unknown loss 'hinge'; known losses: binary_crossentropy, categorical_crossentropy"));
    CHECK(message_of([] { OptimizerSpec("adagrad").make(); }).find("adam, rmsprop, sgd") != std::string::npos);
    CHECK(message_of([] { make_metric("auc", *make_loss("mse"), {1}); }).find("accuracy") != std::string::npos);
}

namespace {

Sequential book_cnn() {
    Sequential model;
    model.add(Reshape({28, 28, 1}, {28, 28}));
    model.add(Conv2D(32, 3, 1, "valid", "relu"));
    model.add(Conv2D(64, 3, 1, "valid", "relu"));
    model.add(MaxPooling2D(2));
    model.add(Dropout(0.25));
    model.add(Flatten());
    model.add(Dense(128, "relu"));
    model.add(Dropout(0.5));
    model.add(Dense(10, "softmax"));
    return model;
}

}  // namespace

TEST_CASE("the book's CNN: shapes, 1,199,882 parameters, Keras names") {
    set_random_seed(1);
    Sequential model = book_cnn();
    CHECK(model.count_params() == 1'199'882);
    const std::string summary = model.summary_string();
    CHECK(summary.find("│ conv2d (Conv2D)                 │ (None, 26, 26, 32)     │           320 │") != std::string::npos);
    CHECK(summary.find("│ conv2d_1 (Conv2D)               │ (None, 24, 24, 64)     │        18,496 │") != std::string::npos);
    CHECK(summary.find("│ max_pooling2d (MaxPooling2D)    │ (None, 12, 12, 64)     │             0 │") != std::string::npos);
    CHECK(summary.find("│ flatten (Flatten)               │ (None, 9216)           │             0 │") != std::string::npos);
    CHECK(summary.find(" Total params: 1,199,882 (4.58 MB)") != std::string::npos);
    CHECK(model.layer(1).weights()[0].shape() == Shape{3, 3, 1, 32});
    const xt::xarray<float> x = xt::ones<float>({2, 28, 28});
    CHECK(model.predict(x).shape() == Shape{2, 10});
}

TEST_CASE("convolution layers by name and through the JSON config") {
    set_random_seed(2);
    Sequential model = book_cnn();
    Sequential copy = Sequential::from_json(model.to_json());
    CHECK(copy.to_json() == model.to_json());
    copy.set_weights(model.get_weights());
    const xt::xarray<float> x = xt::linspace<float>(0.0f, 1.0f, 2 * 28 * 28).reshape({2, 28, 28});
    CHECK(copy.predict(x) == model.predict(x));

    Sequential by_name;
    by_name.add("conv2d", {{"filters", 4}, {"kernel_size", {2, 3}}, {"strides", 2}, {"padding", "same"},
                           {"activation", "relu"}, {"batch_input_shape", {nullptr, 5, 7, 3}}});
    by_name.add("average_pooling2d", {{"pool_size", 2}, {"padding", "same"}});
    by_name.add("global_average_pooling2d");
    CHECK(by_name.layer(0).weights()[0].shape() == Shape{2, 3, 3, 4});
    CHECK(by_name.layer(0).output_shape({5, 7, 3}) == Shape{3, 4, 4});
    CHECK(by_name.output_shape() == Shape{4});
    CHECK(by_name.layer(1).config()["strides"] == nlohmann::json({2, 2}));  // strides default to the pool size

    auto error = [](const nlohmann::json& config) {
        try {
            make_layer("Conv2D", config);
        } catch (const ValueError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK(error({{"filters", 2}, {"kernel_size", 3}, {"data_format", "channels_first"}}).find("channels_last") != std::string::npos);
    CHECK(error({{"filters", 2}, {"kernel_size", 3}, {"dilation_rate", 2}}).find("dilation_rate") != std::string::npos);
    CHECK(error({{"filters", 2}, {"kernel_size", {3, 0}}}).find("whole numbers in [1,") != std::string::npos);
    CHECK(error({{"filters", 2}, {"kernel_size", 3}, {"padding", "full"}}).find("unknown padding 'full'") != std::string::npos);
    CHECK_THROWS_WITH_AS(Reshape({5, 5}, {28, 28}).output_shape({28, 28}), doctest::Contains("cannot reshape input (None, 28, 28)"),
                         ShapeError);
    CHECK(Reshape({-1, 4}).output_shape({2, 6}) == Shape{3, 4});
    Sequential too_small;
    CHECK_THROWS_WITH_AS(too_small.add(Conv2D(2, 5, 1, "valid", "linear", {3, 3, 1})), doctest::Contains("smaller than the window"),
                         ShapeError);
}

TEST_CASE("a small CNN learns to tell vertical from horizontal bars") {
    set_random_seed(3);
    const std::size_t n = 64;
    xt::xarray<float> x = xt::zeros<float>({n, std::size_t(8), std::size_t(8), std::size_t(1)});
    xt::xarray<float> y = xt::zeros<float>({n});
    Generator generator(4);
    for (std::size_t i = 0; i < n; ++i) {
        const bool vertical = i % 2 == 0;
        const std::size_t at = generator.below(8);
        for (std::size_t j = 0; j < 8; ++j) {
            x(i, vertical ? j : at, vertical ? at : j, 0) = 1.0f;
        }
        y(i) = vertical ? 1.0f : 0.0f;
    }
    Sequential model;
    model.add(Conv2D(Conv2DOptions{.filters = 4, .kernel_size = {3, 3}, .padding = "same", .activation = "relu",
                                   .input_shape = {8, 8, 1}}));
    model.add(MaxPooling2D(2));
    model.add(GlobalAveragePooling2D());
    model.add(Dense(1, "sigmoid"));
    model.compile("binary_crossentropy", Adam{.learning_rate = 0.05}, {"accuracy"});
    model.fit(x, y, {.batch_size = 16, .epochs = 60, .verbose = 0});
    CHECK(model.evaluate(x, y)["accuracy"] == 1.0);
}

TEST_CASE("BatchNormalization: moving statistics after known batches match a direct computation") {
    auto layer = built(std::make_unique<BatchNormalization>(BatchNormalizationOptions{.momentum = 0.9}), {4, 4, 2});
    CHECK(layer->weight_names() == std::vector<std::string>{"gamma", "beta", "moving_mean", "moving_variance"});
    CHECK(layer->count_params() == 8);
    CHECK(layer->count_trainable_params() == 4);
    std::vector<double> mean(2, 0.0), variance(2, 1.0);
    for (std::uint64_t step = 0; step < 3; ++step) {
        const xt::xarray<float> batch = random_batch({3, 4, 4, 2}, 40 + step) * float(step + 1) + 0.5f;
        layer->call(Tensor::constant(batch), true);
        for (std::size_t c = 0; c < 2; ++c) {
            double m = 0, v = 0;
            const std::size_t n = batch.size() / 2;
            for (std::size_t i = c; i < batch.size(); i += 2) m += batch.data()[i] / double(n);
            for (std::size_t i = c; i < batch.size(); i += 2) v += (batch.data()[i] - m) * (batch.data()[i] - m) / double(n);
            mean[c] = mean[c] * 0.9 + m * 0.1;
            variance[c] = variance[c] * 0.9 + v * 0.1;
        }
    }
    const auto weights = layer->weights();
    for (std::size_t c = 0; c < 2; ++c) {
        CHECK(weights[2].value()(c) == doctest::Approx(mean[c]).epsilon(1e-5));
        CHECK(weights[3].value()(c) == doctest::Approx(variance[c]).epsilon(1e-5));
    }
    // Inference normalizes with the moving statistics and changes nothing.
    const xt::xarray<float> moving_mean = weights[2].value();
    const xt::xarray<float> sample = random_batch({1, 4, 4, 2}, 50);
    const auto y = layer->call(Tensor::constant(sample), false).value();
    for (std::size_t i = 0; i < sample.size(); ++i) {
        const std::size_t c = i % 2;
        const double expected = (sample.data()[i] - weights[2].value()(c)) / std::sqrt(weights[3].value()(c) + 1e-3);
        CHECK(y.data()[i] == doctest::Approx(expected).epsilon(1e-5));
    }
    CHECK(weights[2].value() == moving_mean);
    // Frozen (Keras 3): inference mode even while training, moving statistics untouched.
    layer->trainable = false;
    CHECK(layer->count_trainable_params() == 0);
    const auto frozen = layer->call(Tensor::constant(sample), true).value();
    CHECK(frozen == y);
    CHECK(weights[2].value() == moving_mean);
}

TEST_CASE("BatchNormalization: gradients, options, config round trip and refused configs") {
    auto layer = built(std::make_unique<BatchNormalization>(), {3});
    check_layer_gradients(*layer, random_batch({4, 3}, 60));
    auto bare = built(std::make_unique<BatchNormalization>(BatchNormalizationOptions{.center = false, .scale = false}), {3});
    CHECK(bare->weight_names() == std::vector<std::string>{"moving_mean", "moving_variance"});
    CHECK(bare->count_trainable_params() == 0);

    const nlohmann::json config = layer->config();
    CHECK(config["axis"] == -1);
    CHECK(config["momentum"] == 0.99);
    CHECK(config["epsilon"] == 1e-3);
    auto again = make_layer("BatchNormalization", config);
    CHECK(again->config() == config);
    // Keras 2 writes the axis as a list counting the batch axis.
    CHECK_NOTHROW(make_layer("BatchNormalization", {{"axis", {3}}, {"batch_input_shape", {nullptr, 4, 4, 2}}}));
    CHECK_THROWS_WITH_AS(make_layer("BatchNormalization", {{"axis", 1}, {"batch_input_shape", {nullptr, 4, 4, 2}}}),
                         doctest::Contains("only the last axis (-1) can be normalized, got axis 1"), ValueError);
    CHECK_THROWS_WITH_AS(BatchNormalization(BatchNormalizationOptions{.momentum = 1.5}), doctest::Contains("momentum"), ValueError);
    CHECK_THROWS_WITH_AS(BatchNormalization(BatchNormalizationOptions{.epsilon = 0}), doctest::Contains("epsilon"), ValueError);
}

TEST_CASE("GlobalMaxPooling2D: values, gradients, config") {
    auto layer = built(std::make_unique<GlobalMaxPooling2D>(), {3, 4, 2});
    // Distinct values 0.05 apart: the finite differences (eps 0.01) never switch a window's maximum.
    xt::xarray<float> x = xt::empty<float>({2, 3, 4, 2});
    for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7) % 48) * 0.05f - 1.2f;
    const auto y = layer->call(Tensor::constant(x), false).value();
    REQUIRE(y.shape() == std::vector<std::size_t>{2, 2});
    for (std::size_t n = 0; n < 2; ++n) {
        for (std::size_t c = 0; c < 2; ++c) {
            float expected = x(n, 0, 0, c);
            for (std::size_t h = 0; h < 3; ++h) {
                for (std::size_t w = 0; w < 4; ++w) expected = std::max(expected, x(n, h, w, c));
            }
            CHECK(y(n, c) == expected);
        }
    }
    check_layer_gradients(*layer, x);
    CHECK(layer->count_params() == 0);
    CHECK(make_layer("GlobalMaxPooling2D", layer->config())->config() == layer->config());
    CHECK_THROWS_WITH_AS(make_layer("global_max_pooling2d", {{"keepdims", true}}), doctest::Contains("keepdims = true is not supported"),
                         ValueError);
    CHECK_THROWS_WITH_AS(GlobalMaxPooling2D().output_shape({4, 2}), doctest::Contains("expected input of shape (height, width, channels)"),
                         ShapeError);
}

TEST_CASE("LayerNormalization: values, gradients, options, config round trip") {
    auto layer = built(std::make_unique<LayerNormalization>(), {2, 5});
    CHECK(layer->weight_names() == std::vector<std::string>{"gamma", "beta"});
    CHECK(layer->count_params() == 10);
    const xt::xarray<float> x = random_batch({3, 2, 5}, 70);
    const auto y = layer->call(Tensor::constant(x), true).value();
    // Each row of features has mean 0 and variance v / (v + epsilon) with gamma 1, beta 0.
    for (std::size_t n = 0; n < 3; ++n) {
        for (std::size_t r = 0; r < 2; ++r) {
            double mean = 0, square = 0, variance = 0;
            for (std::size_t c = 0; c < 5; ++c) mean += double(x(n, r, c)) / 5;
            for (std::size_t c = 0; c < 5; ++c) variance += (double(x(n, r, c)) - mean) * (double(x(n, r, c)) - mean) / 5;
            for (std::size_t c = 0; c < 5; ++c) square += double(y(n, r, c)) * double(y(n, r, c)) / 5;
            CHECK(square == doctest::Approx(variance / (variance + 1e-3)).epsilon(1e-5));
        }
    }
    check_layer_gradients(*layer, x);
    const nlohmann::json config = layer->config();
    CHECK(config["axis"] == -1);
    CHECK(config["epsilon"] == 1e-3);
    CHECK(make_layer("LayerNormalization", config)->config() == config);
    auto bare = built(std::make_unique<LayerNormalization>(LayerNormalizationOptions{.center = false}), {4});
    CHECK(bare->weight_names() == std::vector<std::string>{"gamma"});
    CHECK_THROWS_WITH_AS(make_layer("LayerNormalization", {{"axis", 1}, {"batch_input_shape", {nullptr, 4, 2}}}),
                         doctest::Contains("only the last axis (-1) can be normalized"), ValueError);
    CHECK_THROWS_WITH_AS(LayerNormalization(LayerNormalizationOptions{.epsilon = -1}), doctest::Contains("epsilon"), ValueError);
}

TEST_CASE("merging layers: values, shapes, configs (their ops are gradient-checked in test_ops)") {
    const xt::xarray<float> a = random_batch({2, 3}, 71), b = random_batch({2, 3}, 72), c = random_batch({2, 3}, 73);
    Add add;
    CHECK(xt::allclose(merged_values(add, {a, b, c}), a + b + c));
    Subtract subtract;
    CHECK(xt::allclose(merged_values(subtract, {a, b}), a - b));
    Multiply multiply;
    CHECK(xt::allclose(merged_values(multiply, {a, b}), a * b));
    Average average;
    CHECK(xt::allclose(merged_values(average, {a, b, c}), (a + b + c) / 3.0f));
    Maximum maximum;
    CHECK(merged_values(maximum, {a, b}) == xt::maximum(a, b));
    Minimum minimum;
    CHECK(merged_values(minimum, {a, b, c}) == xt::minimum(xt::minimum(a, b), c));
    Concatenate concatenate;
    const auto joined = merged_values(concatenate, {a, xt::xarray<float>(random_batch({2, 4}, 74))});
    CHECK(joined.shape() == std::vector<std::size_t>{2, 7});
    CHECK(xt::view(joined, xt::all(), xt::range(0, 3)) == a);
    CHECK(Concatenate(1).compute_output_shape({{2, 3}, {5, 3}}) == Shape{7, 3});
    CHECK(Concatenate(-2).compute_output_shape({{2, 3}, {5, 3}}) == Shape{7, 3});
    CHECK_THROWS_WITH_AS(Concatenate(0), doctest::Contains("axis 0 is the batch axis"), ValueError);
    CHECK_THROWS_WITH_AS(Concatenate(3).compute_output_shape({{2, 3}, {5, 3}}), doctest::Contains("axis 3 is out of range"), ShapeError);
    CHECK_THROWS_WITH_AS(add.call_inputs({Tensor::constant(a), Tensor::constant(b), Tensor::constant(xt::xarray<float>(random_batch({3, 3}, 75)))}, false),
                         doctest::Contains("different batch sizes"), ShapeError);
    for (const char* name : {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}) {
        INFO(name);
        auto layer = make_layer(name, {{"name", "merge"}});
        CHECK(make_layer(name, layer->config())->config() == layer->config());
        CHECK(layer->count_params() == 0);
    }
    CHECK(make_layer("concatenate", {{"axis", 1}})->config()["axis"] == 1);
}

TEST_CASE("merging layers broadcast extents of 1 and missing axes as Keras does") {
    // A squeeze-and-excitation gate: (4, 4, 3) feature maps times one (1, 1, 3) scale per channel.
    const xt::xarray<float> maps = random_batch({2, 4, 4, 3}, 81), gate = random_batch({2, 1, 1, 3}, 82);
    const xt::xarray<float> per_channel = random_batch({2, 3}, 83);
    Multiply multiply;
    CHECK(multiply.compute_output_shape({{4, 4, 3}, {1, 1, 3}}) == Shape{4, 4, 3});
    CHECK(merged_values(multiply, {maps, gate}) == maps * gate);
    // A rank-1 sample shape gains axes after the batch axis: (2, 3) is used as (2, 1, 1, 3).
    Add add;
    CHECK(add.compute_output_shape({{4, 4, 3}, {3}}) == Shape{4, 4, 3});
    const xt::xarray<float> expanded = xt::reshape_view(per_channel, {2, 1, 1, 3});
    CHECK(merged_values(add, {maps, per_channel}) == maps + expanded);
    Subtract subtract;
    CHECK(merged_values(subtract, {per_channel, maps}) == expanded - maps);
    Average average;
    CHECK(xt::allclose(merged_values(average, {maps, gate, per_channel}), (maps + gate + expanded) / 3.0f));
    Maximum maximum;
    CHECK(merged_values(maximum, {gate, maps}) == xt::maximum(gate, maps));
    CHECK(Maximum().compute_output_shape({{1, 5}, {4, 1}, {5}}) == Shape{4, 5});
    Minimum minimum;
    CHECK(merged_values(minimum, {maps, per_channel}) == xt::minimum(maps, expanded));
    CHECK_THROWS_WITH_AS(Multiply().compute_output_shape({{4, 4, 3}, {1, 2, 3}}),
                         doctest::Contains("the inputs have incompatible shapes (None, 4, 4, 3), (None, 1, 2, 3)"), ShapeError);

    // Trained through a model: the gate's gradient sums over the positions it scaled.
    set_random_seed(8);
    auto image = Input({4, 4, 3});
    auto squeezed = GlobalAveragePooling2D()(image);
    auto scale = Reshape({1, 1, 3})(Dense(3, "sigmoid")(squeezed));
    auto excited = Multiply()({image, scale});
    Model model(image, Dense(2, "softmax")(Flatten()(excited)), "squeeze_excite");
    model.compile("sparse_categorical_crossentropy", "adam");
    const xt::xarray<float> labels = xt::xarray<float>{0, 1};
    const auto before = model.get_weights();
    model.fit(maps, labels, {.epochs = 2, .verbose = 0});
    CHECK_FALSE(testing::bitwise_equal(model.get_weights()[0], before[0]));
    CHECK_THROWS_WITH_AS(make_layer("Concatenate", {{"axis", "last"}}), doctest::Contains("'axis' must be a whole number"), ValueError);
}
