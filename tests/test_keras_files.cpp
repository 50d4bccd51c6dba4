// Keras's files: the two real files Keras wrote, fixtures in both formats written by
// tests/tools/make_keras_fixtures.py (with numpy's float64 outputs), round trips through
// .keras and .weights.h5, and hostile files.

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>
#include <xtensor/xadapt.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>

#include "xtnn/xtnn.hpp"
#include "test_helpers.hpp"

using namespace xtnn;
using testing::read_bytes;

namespace {

const std::string fixtures = std::string(XTNN_SOURCE_DIR) + "/tests/data/keras/";

// The real Keras files live outside the project (../shared/data/keras-models); a build may
// point elsewhere with -DXTNN_KERAS_MODELS_DIR.
std::string real_models_dir() {
    for (const std::string& candidate : {std::string(XTNN_KERAS_MODELS_DIR), std::string(XTNN_SOURCE_DIR) + "/../shared/data/keras-models"}) {
        if (std::filesystem::exists(candidate + "/mlp-keras3.keras")) return candidate + "/";
    }
    return "";
}

struct Expected {
    xt::xarray<float> input;
    xt::xarray<double> output;
};

Expected read_expected(const std::string& model) {
    std::ifstream in(fixtures + model + ".expected.json");
    const auto document = nlohmann::json::parse(in);
    const auto shape = document["input_shape"].get<std::vector<std::size_t>>();
    Expected expected{xt::empty<float>(shape), {}};
    const auto input = document["input"].get<std::vector<double>>();
    std::copy(input.begin(), input.end(), expected.input.begin());
    const auto output = document["output"].get<std::vector<double>>();
    expected.output = xt::adapt(output, std::vector<std::size_t>{shape[0], output.size() / shape[0]});
    return expected;
}

std::string keras_load_error(const std::vector<std::uint8_t>& bytes, const std::string& name = "hostile.keras") {
    try {
        load_model_from_bytes(bytes, name);
    } catch (const IoError& e) {
        return e.what();
    }
    return "loaded";
}

// The digits the shared files' README measures on: the last 2,000 of the bundled 10,000.
const Dataset& test_digits() {
    static const Dataset digits = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k").second;
    return digits;
}

// Compares predicted classes with Keras's, allowing a different class only where the top two
// probabilities tie to within float32 rounding; returns the number of correct predictions.
std::size_t check_classes(Model& model, const std::string& classes_file) {
    xt::xarray<float> x = test_digits().x;
    Shape shape{x.shape()[0]};
    for (auto extent : model.input_shape()) shape.push_back(extent);
    x.reshape(shape);
    const xt::xarray<float> probabilities = model.predict(x);
    std::ifstream in(classes_file);
    std::size_t correct = 0, compared = 0;
    for (std::size_t i = 0; i < probabilities.shape()[0]; ++i) {
        std::size_t keras_class = 0;
        REQUIRE(static_cast<bool>(in >> keras_class));
        const auto row = xt::view(probabilities, i, xt::all());
        const std::size_t ours = xt::argmax(row)();
        if (ours != keras_class) CHECK(std::abs(row(ours) - row(keras_class)) < 1e-5f);
        correct += ours == static_cast<std::size_t>(test_digits().y(i)) ? 1 : 0;
        ++compared;
    }
    CHECK(compared == 2000);
    return correct;
}

// A functional model with every kind of weight: convolution, batch norm statistics (made
// non-trivial by a few training steps), dense; compiled, so the compile settings travel too.
Model trained_functional_model() {
    Generator generator(7);
    auto input = Input({6, 6, 2}, "image");
    auto main = Conv2D(4, 3, 1, "same")(input);
    main = Activation("relu")(BatchNormalization()(main));
    auto shortcut = Conv2D(4, 1)(input);
    auto merged = Add()({main, shortcut});
    auto output = Dense(3, "softmax")(GlobalAveragePooling2D()(merged));
    Model model(input, output, "residual");
    model.compile(CompileOptions{.loss = {"sparse_categorical_crossentropy"}, .optimizer = Adam{.learning_rate = 0.01},
                                 .metrics = {"accuracy"}});
    const xt::xarray<float> x = xt::cast<float>(testing::uniform({32, 6, 6, 2}, 3));
    xt::xarray<float> y = xt::zeros<float>({32});
    for (std::size_t i = 0; i < 32; ++i) y(i) = static_cast<float>(i % 3);
    model.fit(x, y, {.batch_size = 8, .epochs = 2, .verbose = 0});
    return model;
}

std::filesystem::path scratch(const std::string& name) {
    const auto folder = std::filesystem::temp_directory_path() / ("xtnn-keras-" + std::to_string(::getpid()));
    std::filesystem::create_directories(folder);
    return folder / name;
}

}  // namespace

TEST_CASE("a Keras 3 .keras file written by Keras loads, predicts Keras's classes and trains further" *
          doctest::skip(real_models_dir().empty())) {
    Model model = load_model(real_models_dir() + "mlp-keras3.keras");
    CHECK(model.count_params() == 101770);
    CHECK(model.input_shape() == Shape{28, 28});
    const std::size_t correct = check_classes(model, real_models_dir() + "mlp-keras3.predicted-classes.txt");
    MESSAGE("mlp-keras3.keras: " << correct << " of 2000 test digits correct (Keras's README: 1990)");
    CHECK(correct >= 1989);
    CHECK(correct <= 1991);
    // Its compile_config: adam, sparse_categorical_crossentropy, accuracy; and Adam's state:
    // 16,880 steps, a momentum and a velocity for each of the 4 weights.
    REQUIRE(model.compiled());
    CHECK(model.optimizer()->name() == "Adam");
    CHECK(model.optimizer()->iterations() == 16880);
    REQUIRE(model.optimizer()->slots().size() == 4);
    CHECK(model.optimizer()->slots()[0].size() == 2);
    CHECK(model.optimizer()->slots()[0][1].shape() == std::vector<std::size_t>{784, 128});
    CHECK(model.compile_options().loss == std::vector<std::string>{"sparse_categorical_crossentropy"});
    const auto before = model.get_weights();
    const xt::xarray<float> x = xt::view(test_digits().x, xt::range(0, 256));
    const xt::xarray<float> y = xt::view(test_digits().y, xt::range(0, 256));
    const auto history = model.fit(x, y, {.batch_size = 32, .epochs = 2, .verbose = 0});
    CHECK(history.history.at("loss").size() == 2);
    CHECK(history.history.at("accuracy").back() > 0.95);
    CHECK_FALSE(testing::bitwise_equal(before[0], model.get_weights()[0]));
}

TEST_CASE("a Keras 2 .h5 file written by Keras loads and predicts Keras's classes" * doctest::skip(real_models_dir().empty())) {
    Model model = load_model(real_models_dir() + "cnn-keras2.h5");
    CHECK(model.count_params() == 99376);
    const std::size_t correct = check_classes(model, real_models_dir() + "cnn-keras2.predicted-classes.txt");
    MESSAGE("cnn-keras2.h5: " << correct << " of 2000 test digits correct (Keras's README: 1997)");
    CHECK(correct >= 1996);
    CHECK(correct <= 1998);
    REQUIRE(model.compiled());
    CHECK(model.compile_options().loss == std::vector<std::string>{"categorical_crossentropy"});
    CHECK(model.optimizer()->learning_rate() == doctest::Approx(0.001));
    // Only its weights, into a model built from its own config.
    Model same = Model::from_json(model.to_json());
    same.load_weights(real_models_dir() + "cnn-keras2.h5");
    for (std::size_t i = 0; i < model.get_weights().size(); ++i) {
        CHECK(testing::bitwise_equal(model.get_weights()[i], same.get_weights()[i]));
    }
}

TEST_CASE("fixtures in both formats (MLP, CNN, residual CNN with BatchNormalization, squeeze-and-excitation CNN) match numpy's float64 outputs") {
    for (const std::string name : {"mlp", "cnn", "cnn_bn", "se_cnn"}) {
        const Expected expected = read_expected(name);
        for (const std::string extension : {".keras", ".h5"}) {
            CAPTURE(name);
            CAPTURE(extension);
            Model model = load_model(fixtures + name + extension);
            const xt::xarray<float> output = model.predict(expected.input);
            REQUIRE(output.shape() == Shape(expected.output.shape().begin(), expected.output.shape().end()));
            for (std::size_t i = 0; i < output.size(); ++i) CHECK(output.data()[i] == doctest::Approx(expected.output.data()[i]).epsilon(1e-5));
        }
    }
    // The fixtures' compile settings: Keras 3's object form and Keras 2's nested metric lists.
    Model mlp = load_model(fixtures + "mlp.keras");
    REQUIRE(mlp.compiled());
    CHECK(mlp.optimizer()->name() == "Adam");
    CHECK(mlp.optimizer()->learning_rate() == doctest::Approx(0.0005));
    CHECK(mlp.compile_options().metrics == std::vector<std::string>{"accuracy"});
    Model cnn = load_model(fixtures + "cnn.h5");
    REQUIRE(cnn.compiled());
    CHECK(cnn.optimizer()->name() == "SGD");
    CHECK(cnn.optimizer()->config()["momentum"].get<double>() == doctest::Approx(0.9));
    CHECK(cnn.compile_options().metrics == std::vector<std::string>{"accuracy"});
    CHECK_FALSE(load_model(fixtures + "cnn.keras").compiled());
    CHECK_FALSE(load_model(fixtures + "mlp.keras", {.compile = false}).compiled());

    // The same MLP with deflated entries, and its weights alone as Keras 2's save_weights writes them.
    const Expected expected = read_expected("mlp");
    const xt::xarray<float> reference = mlp.predict(expected.input);
    CHECK(testing::bitwise_equal(load_model(fixtures + "mlp.deflated.keras").predict(expected.input), reference));
    Model weights_only = Model::from_json(mlp.to_json());
    weights_only.load_weights(fixtures + "mlp.weights-only.h5");
    CHECK(testing::bitwise_equal(weights_only.predict(expected.input), reference));
    CHECK(keras_load_error(read_bytes(fixtures + "mlp.weights-only.h5"), "w.h5").find("holds only weights (Keras's save_weights)") !=
          std::string::npos);
}

TEST_CASE("Keras's saving order: a functional model's layers by depth from the output, numbered per class") {
    // The shortcut Conv2D is created first but is Keras's "conv2d_1": the 3x3 conv is deeper.
    auto input = Input({6, 6, 2});
    auto shortcut = Conv2D(4, 1)(input);
    auto main = Activation("relu")(BatchNormalization()(Conv2D(4, 3, 1, "same")(input)));
    Model model(input, Dense(3)(GlobalAveragePooling2D()(Add()({main, shortcut}))));
    model.save_weights(scratch("order.weights.h5").string());
    Model reloaded(Model::from_json(model.to_json()));
    reloaded.load_weights(scratch("order.weights.h5").string());
    for (std::size_t i = 0; i < model.get_weights().size(); ++i) CHECK(testing::bitwise_equal(model.get_weights()[i], reloaded.get_weights()[i]));
    // The fixture written by hand in that order loads into the same architecture.
    Model fixture = load_model(fixtures + "cnn_bn.keras");
    const auto main_kernel = fixture.layer("main").weights()[0];
    CHECK(main_kernel.shape()[0] == 3);
}

TEST_CASE("xtnn -> .keras -> xtnn keeps weights, predictions and compile settings bit for bit") {
    Model model = trained_functional_model();
    const auto path = scratch("residual.keras").string();
    model.save(path);
    Model loaded = load_model(path);
    REQUIRE(loaded.get_weights().size() == model.get_weights().size());
    for (std::size_t i = 0; i < model.get_weights().size(); ++i) CHECK(testing::bitwise_equal(model.get_weights()[i], loaded.get_weights()[i]));
    const xt::xarray<float> x = xt::cast<float>(testing::uniform({5, 6, 6, 2}, 11));
    CHECK(testing::bitwise_equal(model.predict(x), loaded.predict(x)));
    REQUIRE(loaded.compiled());
    CHECK(loaded.optimizer()->name() == "Adam");
    CHECK(loaded.optimizer()->learning_rate() == doctest::Approx(0.01));
    CHECK(loaded.compile_options().loss == std::vector<std::string>{"sparse_categorical_crossentropy"});
    CHECK(loaded.compile_options().metrics == std::vector<std::string>{"accuracy"});
    // Adam's step count and moments, so training goes on exactly as it would have.
    CHECK(loaded.optimizer()->iterations() == model.optimizer()->iterations());
    const auto& slots = model.optimizer()->slots();
    REQUIRE(loaded.optimizer()->slots().size() == slots.size());
    for (std::size_t i = 0; i < slots.size(); ++i) {
        REQUIRE(loaded.optimizer()->slots()[i].size() == slots[i].size());
        for (std::size_t s = 0; s < slots[i].size(); ++s) CHECK(testing::bitwise_equal(slots[i][s], loaded.optimizer()->slots()[i][s]));
    }
    const xt::xarray<float> more_x = xt::cast<float>(testing::uniform({16, 6, 6, 2}, 12));
    const xt::xarray<float> more_y = xt::fmod(xt::arange<float>(16.0f), 3.0f);
    set_random_seed(3);
    model.fit(more_x, more_y, {.batch_size = 8, .epochs = 1, .verbose = 0});
    set_random_seed(3);
    loaded.fit(more_x, more_y, {.batch_size = 8, .epochs = 1, .verbose = 0});
    for (std::size_t i = 0; i < model.get_weights().size(); ++i) CHECK(testing::bitwise_equal(model.get_weights()[i], loaded.get_weights()[i]));

    // The book's Sequential model, and its weights alone through .weights.h5.
    Sequential book = testing::book_model();
    book.compile("categorical_crossentropy", "sgd", {"accuracy"});
    book.save(scratch("book.keras").string());
    Model book_loaded = load_model(scratch("book.keras").string());
    CHECK(book_loaded.is_sequential());
    const xt::xarray<float> digits = xt::cast<float>(testing::uniform({4, 28, 28}, 5, 0.0, 1.0));
    CHECK(testing::bitwise_equal(book.predict(digits), book_loaded.predict(digits)));
    book.save_weights(scratch("book.weights.h5").string());
    Sequential fresh = testing::book_model();
    fresh.load_weights(scratch("book.weights.h5").string());
    CHECK(testing::bitwise_equal(book.predict(digits), fresh.predict(digits)));
    // A .keras file's weights load into a model too, as Keras's load_weights allows.
    Sequential again = testing::book_model();
    again.load_weights(scratch("book.keras").string());
    CHECK(testing::bitwise_equal(book.predict(digits), again.predict(digits)));

    CHECK_THROWS_WITH_AS(book.save(scratch("book.h5").string()), doctest::Contains("writes Keras 3's .keras"), ValueError);
    CHECK_THROWS_WITH_AS(book.save_weights(scratch("book.h5").string()), doctest::Contains(".weights.h5"), ValueError);
    std::filesystem::remove_all(scratch("").parent_path());
}

TEST_CASE("saving twice gives the same weights file: no timestamps in the HDF5 objects") {
    Sequential model = testing::book_model();
    model.save_weights(scratch("a.weights.h5").string());
    model.save_weights(scratch("b.weights.h5").string());
    CHECK(read_bytes(scratch("a.weights.h5").string()) == read_bytes(scratch("b.weights.h5").string()));
    std::filesystem::remove_all(scratch("").parent_path());
}

TEST_CASE("hostile Keras files fail with an IoError naming the problem") {
    const std::string folder = fixtures + "hostile/";
    auto error_of = [&](const std::string& file) { return keras_load_error(read_bytes(folder + file), file); };
    CHECK(error_of("int-weights.keras").find("4-byte integer values; xtnn reads float16, float32 and float64") != std::string::npos);
    CHECK(error_of("wrong-shape.keras").find("dataset 'layers/dense/vars/1' has shape (17,) but (16,) was expected") != std::string::npos);
    CHECK(error_of("wrong-shape.keras").find("layer 'dense' (Dense)") != std::string::npos);
    CHECK(error_of("missing-layer.keras").find("no weights for layer 'dense_1' (Dense) at 'layers/dense_1/vars'") != std::string::npos);
    CHECK(error_of("extra-layer.keras").find("'layers/dense_2' holds weights but the model has no layer saved there") != std::string::npos);
    CHECK(error_of("nan-weight.keras").find("holds nan at flat index 6") != std::string::npos);
    CHECK(error_of("unknown-layer.keras").find("GaussianNoise") != std::string::npos);
    CHECK(error_of("unknown-activation.keras").find("gelu_tanh") != std::string::npos);
    CHECK(error_of("keras1.h5").find("written by Keras 1.2.2; xtnn reads the files of Keras 2 and later") != std::string::npos);
    CHECK(error_of("theano-cnn.h5").find("saved by the Theano backend") != std::string::npos);
    CHECK(error_of("float16-layer.keras").find("Dense 'dense_1': dtype \"float16\" is not supported") != std::string::npos);
    CHECK(error_of("path-entry.keras").find("entry '../outside.json' is named like a path out of the archive") != std::string::npos);
    CHECK(error_of("npz-weights.keras").find("model.weights.npz") != std::string::npos);
    CHECK(error_of("bomb-config.keras").find("entry 'config.json' would inflate to 83886080 bytes, more than the 67108864 allowed") !=
          std::string::npos);
    // Other float widths are weights too.
    const Expected expected = read_expected("mlp");
    const xt::xarray<float> reference = load_model(fixtures + "mlp.keras").predict(expected.input);
    CHECK(testing::bitwise_equal(load_model(folder + "float64-weights.keras").predict(expected.input), reference));
    const xt::xarray<float> half = load_model(folder + "float16-weights.keras").predict(expected.input);
    CHECK(xt::allclose(half, reference, 1e-2, 1e-2));

    const auto good = read_bytes(fixtures + "mlp.keras");
    SUBCASE("truncated archives") {
        for (std::size_t size : {std::size_t(3), std::size_t(30), good.size() / 2, good.size() - 1}) {
            CAPTURE(size);
            const std::string error = keras_load_error(std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<long>(size)));
            CHECK(error.find("hostile.keras") != std::string::npos);
            CHECK(error != "loaded");
        }
    }
    SUBCASE("a changed byte fails the CRC check") {
        // Keras stores its entries uncompressed, so the config's text is in the file as is.
        auto bytes = good;
        const std::string marker = "\"units\": 16";
        const auto at = std::search(bytes.begin(), bytes.end(), marker.begin(), marker.end());
        REQUIRE(at != bytes.end());
        *(at + 10) = '7';
        CHECK(keras_load_error(bytes).find("entry 'config.json' is corrupt") != std::string::npos);
    }
    SUBCASE("a directory that lies about sizes") {
        auto bytes = good;
        // The central directory's entry for config.json: its uncompressed size field (offset 24).
        const std::string name = "config.json";
        std::size_t header = 0;
        for (std::size_t i = 0; i + 46 < bytes.size(); ++i) {
            if (std::memcmp(&bytes[i], "PK\x01\x02", 4) == 0 && std::memcmp(&bytes[i + 46], name.data(), name.size()) == 0) header = i;
        }
        REQUIRE(header > 0);
        const std::uint32_t huge = 0xfffffff0u;
        std::memcpy(&bytes[header + 24], &huge, 4);
        const std::string error = keras_load_error(bytes);
        CHECK(error.find("hostile.keras") != std::string::npos);
        CHECK(error != "loaded");
    }
    SUBCASE("an HDF5 file that is not a Keras model, and a truncated one") {
        const auto h5 = read_bytes(fixtures + "cnn.h5");
        CHECK(keras_load_error(std::vector<std::uint8_t>(h5.begin(), h5.begin() + 600), "cut.h5").find("cut.h5") != std::string::npos);
        const auto weights_only = [&] {
            Sequential model = testing::book_model();
            model.save_weights(scratch("only.weights.h5").string());
            return read_bytes(scratch("only.weights.h5").string());
        }();
        CHECK(keras_load_error(weights_only, "only.weights.h5").find("holds only weights") != std::string::npos);
        std::filesystem::remove_all(scratch("").parent_path());
    }
}

TEST_CASE("load_weights from a Keras file into a model of another architecture fails and changes nothing") {
    Sequential model;
    model.add(Dense(16, "relu", {8}));
    model.add(Dense(5, "softmax"));
    const auto before = model.get_weights();
    CHECK_THROWS_WITH_AS(model.load_weights(fixtures + "mlp.keras"), doctest::Contains("has shape (16, 4) but (16, 5) was expected"),
                         IoError);
    for (std::size_t i = 0; i < before.size(); ++i) CHECK(testing::bitwise_equal(before[i], model.get_weights()[i]));
}

TEST_CASE("re-saves of Keras-written files, which tests/check_keras_layout.py compares with the originals") {
    const std::filesystem::path folder = std::filesystem::path(XTNN_BINARY_DIR) / "keras_layout";
    std::filesystem::create_directories(folder);
    load_model(fixtures + "cnn_bn.keras").save((folder / "cnn_bn.keras").string());
    if (!real_models_dir().empty()) load_model(real_models_dir() + "mlp-keras3.keras").save((folder / "mlp-keras3.keras").string());
    CHECK(std::filesystem::exists(folder / "cnn_bn.keras"));
}
