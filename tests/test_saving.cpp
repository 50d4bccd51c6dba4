#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;
using testing::bitwise_equal;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;
namespace fs = std::filesystem;

namespace {

struct Blobs {
    xt::xarray<float> x;
    xt::xarray<float> y;
};

// Three separable classes with 5 features, from a fixed seed.
Blobs blobs(std::size_t n, std::uint64_t seed) {
    Generator generator(seed);
    Blobs data{xt::empty<float>({n, std::size_t(5)}), xt::zeros<float>({n, std::size_t(3)})};
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t label = generator.below(3);
        for (std::size_t j = 0; j < 5; ++j) {
            data.x(i, j) = static_cast<float>(generator.normal() * 0.5 + (j % 3 == label ? 1.5 : 0.0));
        }
        data.y(i, label) = 1.0f;
    }
    return data;
}

Sequential small_model(const std::string& optimizer = "adam") {
    Sequential model;
    model.add(Dense(8, "relu", {5}));
    model.add(Dropout(0.2));
    model.add(Dense(3, "softmax"));
    model.compile("categorical_crossentropy", optimizer, {"accuracy"});
    return model;
}

bool same_weights(const Sequential& a, const Sequential& b) {
    const auto wa = a.get_weights(), wb = b.get_weights();
    if (wa.size() != wb.size()) return false;
    for (std::size_t i = 0; i < wa.size(); ++i) {
        if (!bitwise_equal(wa[i], wb[i])) return false;
    }
    return true;
}

bool same_slots(const Optimizer& a, const Optimizer& b) {
    if (a.iterations() != b.iterations() || a.slots().size() != b.slots().size()) return false;
    for (std::size_t i = 0; i < a.slots().size(); ++i) {
        if (a.slots()[i].size() != b.slots()[i].size()) return false;
        for (std::size_t s = 0; s < a.slots()[i].size(); ++s) {
            if (!bitwise_equal(a.slots()[i][s], b.slots()[i][s])) return false;
        }
    }
    return true;
}

FitOptions quiet(int epochs, int initial_epoch = 0) {
    return {.batch_size = 16, .epochs = epochs, .verbose = 0, .initial_epoch = initial_epoch};
}

// A saved, trained model file's bytes.
std::vector<std::uint8_t> trained_model_bytes() {
    set_random_seed(5);
    Sequential model = small_model();
    const Blobs data = blobs(64, 1);
    model.fit(data.x, data.y, quiet(1));
    return model_to_bytes(model);
}

// Rewrites the file through the safetensors layer: `edit` changes metadata and tensors; the
// checksum is recomputed so the loader's deeper checks are reached.
template <class Edit>
std::vector<std::uint8_t> edited(const std::vector<std::uint8_t>& bytes, Edit edit) {
    const auto file = safetensors::parse(bytes, "test");
    // reseal_model_file puts "format" first again, so the order here does not matter.
    std::vector<std::pair<std::string, std::string>> metadata(file.metadata.begin(), file.metadata.end());
    std::vector<std::pair<std::string, xt::xarray<float>>> tensors;
    for (const auto& tensor : file.tensors) tensors.emplace_back(tensor.name, file.to_float(tensor, "test"));
    edit(metadata, tensors);
    return reseal_model_file(safetensors::serialize(metadata, tensors));
}

// A file whose header is `header` (after the magic-carrying metadata) and whose data is `data`.
std::vector<std::uint8_t> raw_file(const std::string& tensors_json, std::size_t data_bytes, const std::string& extra_metadata = "") {
    const std::string header = R"({"__metadata__":{"format":"xtnn.model","format_version":"1")" + extra_metadata + "}" +
                               tensors_json + "}";
    std::vector<std::uint8_t> bytes(8 + header.size() + data_bytes, 0);
    std::uint64_t length = header.size();
    for (int i = 0; i < 8; ++i, length >>= 8) bytes[std::size_t(i)] = std::uint8_t(length & 0xff);
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    return bytes;
}

std::string load_error(const std::vector<std::uint8_t>& bytes) {
    try {
        load_model_from_bytes(bytes, "hostile.xtnn");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string& replace_all(std::string& text, const std::string& from, const std::string& to) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
    return text;
}

std::string& metadata_value(std::vector<std::pair<std::string, std::string>>& metadata, const std::string& key) {
    for (auto& [name, value] : metadata) {
        if (name == key) return value;
    }
    FAIL("no metadata key " << key);
    throw;
}

}  // namespace

TEST_CASE("save and load_model round-trip weights, predictions, config and optimizer state bit for bit") {
    TempDir dir;
    set_random_seed(3);
    Sequential model = small_model();
    const Blobs data = blobs(96, 2);
    model.fit(data.x, data.y, quiet(2));
    model.save(dir.file("model.xtnn"));

    Sequential restored = load_model(dir.file("model.xtnn"));
    CHECK(restored.to_json() == model.to_json());
    CHECK(same_weights(restored, model));
    CHECK(bitwise_equal(restored.predict(data.x), model.predict(data.x)));
    REQUIRE(restored.compiled());
    CHECK(restored.loss()->name() == "categorical_crossentropy");
    CHECK(restored.metric_names() == std::vector<std::string>{"accuracy"});
    CHECK(restored.optimizer()->config() == model.optimizer()->config());
    CHECK(restored.optimizer()->iterations() == 12);
    CHECK(same_slots(*restored.optimizer(), *model.optimizer()));
    CHECK(restored.evaluate(data.x, data.y) == model.evaluate(data.x, data.y));
    CHECK(dir.entries() == 1);  // no temporary file left behind

    SUBCASE("saving the restored model gives the same bytes") {
        set_random_seed(9);
        const auto first = model_to_bytes(model);
        set_random_seed(9);
        CHECK(model_to_bytes(restored) == first);
    }
}

TEST_CASE("an uncompiled model saves and loads without training settings; an unbuilt one cannot be saved") {
    TempDir dir;
    Sequential model;
    model.add(Dense(4, "tanh", {3}));
    model.add(Dense(2, "sigmoid"));
    model.save(dir.file("plain.xtnn"));
    Sequential restored = load_model(dir.file("plain.xtnn"));
    CHECK_FALSE(restored.compiled());
    CHECK(same_weights(restored, model));

    Sequential unbuilt;
    unbuilt.add(Dense(4));
    CHECK_THROWS_WITH_AS(unbuilt.save(dir.file("unbuilt.xtnn")), doctest::Contains("not built"), ValueError);
    CHECK_FALSE(fs::exists(dir.file("unbuilt.xtnn")));
}

TEST_CASE("save_weights / load_weights, and loading into a different model fails leaving it unchanged") {
    TempDir dir;
    set_random_seed(4);
    Sequential model = small_model();
    model.save_weights(dir.file("weights.xtnn"));

    set_random_seed(5);
    Sequential other = small_model();
    REQUIRE_FALSE(same_weights(other, model));
    other.load_weights(dir.file("weights.xtnn"));
    CHECK(same_weights(other, model));

    SUBCASE("a full model file also provides weights") {
        model.save(dir.file("model.xtnn"));
        set_random_seed(6);
        Sequential third = small_model();
        third.load_weights(dir.file("model.xtnn"));
        CHECK(same_weights(third, model));
    }
    SUBCASE("a weights file is not a model") {
        CHECK_THROWS_WITH_AS(load_model(dir.file("weights.xtnn")), doctest::Contains("load_weights"), IoError);
    }
    SUBCASE("mismatched architecture") {
        Sequential wider;
        wider.add(Dense(9, "relu", {5}));
        wider.add(Dropout(0.2));
        wider.add(Dense(3, "softmax"));
        const auto before = wider.get_weights();
        CHECK_THROWS_WITH_AS(wider.load_weights(dir.file("weights.xtnn")),
                             doctest::Contains("tensor 'dense/kernel' has shape (5, 8) but layer 'dense' needs (5, 9)"), IoError);
        for (std::size_t i = 0; i < before.size(); ++i) CHECK(bitwise_equal(wider.get_weights()[i], before[i]));

        Sequential renamed;
        renamed.add(Dense(8, "relu", {5}));
        renamed.add(Dense(3, "softmax"));
        renamed.layer(0).set_name("hidden");
        CHECK_THROWS_WITH_AS(renamed.load_weights(dir.file("weights.xtnn")), doctest::Contains("missing tensor 'hidden/kernel'"),
                             IoError);
    }
}

TEST_CASE("determinism: the same seed gives bit-identical weights, History and predictions; another seed does not") {
    const Blobs data = blobs(80, 7);
    auto run = [&](std::uint64_t seed) {
        set_random_seed(seed);
        Sequential model = small_model();
        FitOptions options = quiet(2);
        options.validation_split = 0.25;
        History history = model.fit(data.x, data.y, options);
        return std::make_tuple(model.get_weights(), history.history, model.predict(data.x));
    };
    const auto [weights_a, history_a, predictions_a] = run(42);
    const auto [weights_b, history_b, predictions_b] = run(42);
    const auto [weights_c, history_c, predictions_c] = run(43);
    REQUIRE(weights_a.size() == weights_b.size());
    for (std::size_t i = 0; i < weights_a.size(); ++i) CHECK(bitwise_equal(weights_a[i], weights_b[i]));
    CHECK(history_a == history_b);  // exact double equality, every epoch and metric
    CHECK(bitwise_equal(predictions_a, predictions_b));
    CHECK_FALSE(bitwise_equal(weights_a[0], weights_c[0]));
    CHECK(history_a != history_c);
}

TEST_CASE("golden values for seed 42: generator, shuffle and glorot_uniform are pinned across compilers") {
    Generator generator(42);
    // Hex literals: the exact doubles, as printed once with %a.
    const double expected_normals[] = {
        -0x1.13c1b5ffc24acp+0, 0x1.183273ea220c2p+0,  0x1.cb7388d1af94dp+0, -0x1.d3021182b3742p-1,
        -0x1.3c0fd70de384bp-1, -0x1.3fb859233619ap-3, -0x1.fa367fd64c38ap-1, 0x1.c390e94b9d42bp+0,
    };
    for (double expected : expected_normals) CHECK(generator.normal() == expected);

    Generator shuffler(42);
    CHECK(shuffler.permutation(10) == std::vector<std::size_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6});

    Generator initializer(42);
    const auto kernel = initialize("glorot_uniform", {3, 2}, initializer);
    const float expected_kernel[] = {0x1.1e3792p-1f, 0x1.37e9b4p-2f, 0x1.1ad71cp-1f,
                                     -0x1.980188p-1f, 0x1.c45c78p-1f, -0x1.c7592p-1f};
    for (std::size_t i = 0; i < 6; ++i) CHECK(kernel.data()[i] == expected_kernel[i]);
}

TEST_CASE("exact resume: 4 epochs straight equal 2 epochs, save, load, 2 more") {
    TempDir dir;
    const Blobs data = blobs(72, 11);
    set_random_seed(21);
    Sequential straight = small_model();
    const History full = straight.fit(data.x, data.y, quiet(4));

    set_random_seed(21);
    Sequential first = small_model();
    const History first_half = first.fit(data.x, data.y, quiet(2));
    first.save(dir.file("half.xtnn"));
    set_random_seed(999);  // whatever happens in between
    Sequential resumed = load_model(dir.file("half.xtnn"), {.restore_random_state = true});
    const History second_half = resumed.fit(data.x, data.y, quiet(4, 2));

    CHECK(same_weights(resumed, straight));
    CHECK(same_slots(*resumed.optimizer(), *straight.optimizer()));
    CHECK(resumed.optimizer()->iterations() == straight.optimizer()->iterations());
    for (const auto& [name, values] : full.history) {
        REQUIRE(values.size() == 4);
        CHECK(first_half.history.at(name) == std::vector<double>(values.begin(), values.begin() + 2));
        CHECK(second_half.history.at(name) == std::vector<double>(values.begin() + 2, values.end()));
    }
    CHECK(second_half.epoch == std::vector<int>{2, 3});

    SUBCASE("without the random state, the continuation differs (dropout and shuffles)") {
        set_random_seed(999);
        Sequential unseeded = load_model(dir.file("half.xtnn"));
        unseeded.fit(data.x, data.y, quiet(4, 2));
        CHECK_FALSE(same_weights(unseeded, straight));
    }
}

TEST_CASE("ModelCheckpoint saves every epoch, or only improvements, with the epoch in the file name") {
    TempDir dir;
    set_random_seed(8);
    Sequential model = small_model();
    const Blobs data = blobs(64, 3);
    auto every = std::make_shared<ModelCheckpoint>(dir.file("epoch-{epoch:02d}.xtnn"),
                                                   ModelCheckpointOptions{.monitor = "loss"});
    auto best = std::make_shared<ModelCheckpoint>(dir.file("best.xtnn"),
                                                  ModelCheckpointOptions{.monitor = "loss", .save_best_only = true});
    FitOptions options = quiet(3);
    options.callbacks = {every, best};
    const History history = model.fit(data.x, data.y, options);
    for (const char* name : {"epoch-01.xtnn", "epoch-02.xtnn", "epoch-03.xtnn", "best.xtnn"}) CHECK(fs::exists(dir.file(name)));
    const auto& losses = history.history.at("loss");
    CHECK(best->best() == *std::min_element(losses.begin(), losses.end()));
    CHECK(same_weights(load_model(dir.file("epoch-03.xtnn")), model));

    SUBCASE("save_best_only skips epochs that do not improve") {
        auto never = std::make_shared<ModelCheckpoint>(dir.file("never.xtnn"), ModelCheckpointOptions{
                                                                                   .monitor = "loss",
                                                                                   .save_best_only = true,
                                                                                   .mode = "max",
                                                                               });
        FitOptions more = quiet(2);
        more.callbacks = {never};
        model.fit(data.x, data.y, more);
        const auto first_saved = read_bytes(dir.file("never.xtnn"));
        model.fit(data.x, data.y, {.batch_size = 16, .epochs = 1, .verbose = 0, .callbacks = {never}});
        // Loss keeps falling, so with mode "max" only the very first epoch was an improvement.
        CHECK(read_bytes(dir.file("never.xtnn")) == first_saved);
    }
    SUBCASE("an unknown field in the path is a clear error") {
        auto broken = std::make_shared<ModelCheckpoint>(dir.file("{nope}.xtnn"));
        FitOptions one = quiet(1);
        one.callbacks = {broken};
        CHECK_THROWS_WITH_AS(model.fit(data.x, data.y, one), doctest::Contains("ModelCheckpoint: cannot fill in filepath"),
                             ValueError);
    }
}

TEST_CASE("atomic save: a failure at any step leaves the previous file intact and no temporary file") {
    TempDir dir;
    const std::string path = dir.file("model.xtnn");
    set_random_seed(1);
    Sequential old_model = small_model();
    old_model.save(path);
    const auto old_bytes = read_bytes(path);
    set_random_seed(2);
    Sequential new_model = small_model();

    for (auto failing : {io::WriteStep::temp_created, io::WriteStep::half_written, io::WriteStep::synced}) {
        CAPTURE(static_cast<int>(failing));
        io::set_write_step_hook([&](io::WriteStep step) {
            if (step == failing) throw IoError("injected failure");
        });
        CHECK_THROWS_WITH(new_model.save(path), "injected failure");
        io::set_write_step_hook(nullptr);
        CHECK(read_bytes(path) == old_bytes);
        CHECK(dir.entries() == 1);
    }
    new_model.save(path);
    CHECK(same_weights(load_model(path), new_model));
    CHECK(dir.entries() == 1);

    SUBCASE("a process killed at any step leaves the old file or the new one, complete") {
        new_model.save(path);
        for (auto killed_at : {io::WriteStep::temp_created, io::WriteStep::half_written, io::WriteStep::synced,
                               io::WriteStep::renamed}) {
            CAPTURE(static_cast<int>(killed_at));
            const pid_t child = ::fork();
            REQUIRE(child >= 0);
            if (child == 0) {
                io::set_write_step_hook([&](io::WriteStep step) {
                    if (step == killed_at) ::kill(::getpid(), SIGKILL);
                });
                old_model.save(path);
                ::_exit(0);
            }
            int status = 0;
            ::waitpid(child, &status, 0);
            CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
            // Before the rename the file is still new_model's; after it, the child's old_model.
            const Sequential& expected = killed_at == io::WriteStep::renamed ? old_model : new_model;
            CHECK(same_weights(load_model(path), expected));
            for (const auto& entry : fs::directory_iterator(dir.path)) {
                if (entry.path().string() != path) fs::remove(entry.path());  // the stale temporary file
            }
        }
    }
}

TEST_CASE("hostile model files: each fails with a clear error") {
    const auto valid = trained_model_bytes();
    REQUIRE_NOTHROW(load_model_from_bytes(valid));

    SUBCASE("empty and foreign files") {
        CHECK(load_error({}) == "model file 'hostile.xtnn': truncated: 0 bytes, an xtnn model file starts with an 8-byte header length");
        const std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
        CHECK(load_error(png).find("not an xtnn model file") != std::string::npos);
        CHECK(load_error(png).find("PNG") != std::string::npos);
        std::vector<std::uint8_t> zip = {'P', 'K', 3, 4};
        zip.resize(64, 0);
        CHECK(load_error(zip).find("ZIP archive") != std::string::npos);
        std::vector<std::uint8_t> pickle = {0x80, 0x04, 0x95};
        pickle.resize(64, 0);
        CHECK(load_error(pickle).find("Python pickle") != std::string::npos);
        const std::string other = R"({"weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
        std::vector<std::uint8_t> foreign(8 + other.size() + 4, 0);
        foreign[0] = static_cast<std::uint8_t>(other.size());
        std::memcpy(foreign.data() + 8, other.data(), other.size());
        CHECK(load_error(foreign).find("safetensors file not written by xtnn") != std::string::npos);
    }
    SUBCASE("a valid file truncated at every byte offset") {
        for (std::size_t size = 0; size < valid.size(); ++size) {
            const std::vector<std::uint8_t> prefix(valid.begin(), valid.begin() + std::ptrdiff_t(size));
            const std::string error = load_error(prefix);
            CAPTURE(size);
            REQUIRE(error.find("model file 'hostile.xtnn'") == 0);
            REQUIRE(error.find("truncated") != std::string::npos);
        }
    }
    SUBCASE("header lengths that are absurd or overflow") {
        for (std::uint64_t length : {~std::uint64_t(0), std::uint64_t(1) << 63, ~std::uint64_t(0) - 7,
                                     std::uint64_t(safetensors::max_header_bytes) + 1}) {
            auto bytes = valid;
            for (int i = 0; i < 8; ++i) bytes[std::size_t(i)] = std::uint8_t((length >> (8 * i)) & 0xff);
            CHECK(load_error(bytes).find("header length " + std::to_string(length) + " exceeds the limit") != std::string::npos);
        }
        auto bytes = valid;
        std::uint64_t length = valid.size();
        for (int i = 0; i < 8; ++i) bytes[std::size_t(i)] = std::uint8_t((length >> (8 * i)) & 0xff);
        CHECK(load_error(bytes).find("truncated: the header length is") != std::string::npos);
    }
    SUBCASE("a header length above the cap is refused even when the file is that large") {
        auto big = raw_file("", safetensors::max_header_bytes + 16);
        std::uint64_t length = safetensors::max_header_bytes + 8;
        for (int i = 0; i < 8; ++i) big[std::size_t(i)] = std::uint8_t((length >> (8 * i)) & 0xff);
        CHECK(load_error(big).find("exceeds the limit") != std::string::npos);
    }
    SUBCASE("shapes whose size overflows") {
        CHECK(load_error(raw_file(R"(,"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]})", 4))
                  .find("overflows") != std::string::npos);
        CHECK(load_error(raw_file(R"(,"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]})", 4))
                  .find("at most 8 extents") != std::string::npos);
        CHECK(load_error(raw_file(R"(,"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4))
                  .find("non-negative integer") != std::string::npos);
    }
    SUBCASE("data offsets out of range, reversed, overlapping, with gaps or trailing bytes") {
        const std::string a = R"(,"a":{"dtype":"F32","shape":[2],"data_offsets":)";
        const std::string b = R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":)";
        CHECK(load_error(raw_file(a + "[0,8]}", 4)).find("truncated") != std::string::npos);
        CHECK(load_error(raw_file(a + "[8,0]}", 8)).find("end before they begin") != std::string::npos);
        CHECK(load_error(raw_file(a + "[0,8]}" + b + "[4,8]}", 12)).find("overlapping") != std::string::npos);
        CHECK(load_error(raw_file(a + "[0,8]}" + b + "[12,16]}", 16)).find("a gap") != std::string::npos);
        CHECK(load_error(raw_file(a + "[4,12]}", 12)).find("a gap") != std::string::npos);
        CHECK(load_error(raw_file(a + "[0,8]}", 9)).find("trailing bytes") != std::string::npos);
        CHECK(load_error(raw_file(a + "[0,4]}", 4)).find("need 8 bytes") != std::string::npos);
        CHECK(load_error(raw_file(R"(,"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})" + b + "[0,4]}", 4))
                  .find("no elements") != std::string::npos);
    }
    SUBCASE("duplicate names, unknown dtype, unsupported version, bad JSON") {
        const std::string a = R"(,"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
        CHECK(load_error(raw_file(a + a, 4)).find("duplicate key 'a'") != std::string::npos);
        CHECK(load_error(raw_file(R"(,"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]})", 4))
                  .find("unknown dtype 'Q7'; known: BF16") != std::string::npos);
        auto future = edited(valid, [](auto& metadata, auto&) { metadata_value(metadata, "format_version") = "999"; });
        CHECK(load_error(future).find("unsupported format_version '999'; this build of xtnn reads version 1") != std::string::npos);
        CHECK(load_error(raw_file(",\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", 0))
                  .find("nested deeper") != std::string::npos);
        CHECK(load_error(raw_file(",\"a\":{", 0)).find("not valid JSON") != std::string::npos);
    }
    SUBCASE("one flipped byte anywhere in the data or the config fails the checksum") {
        const auto file = safetensors::parse(valid, "valid");
        const std::size_t data_start = valid.size() - file.data.size();
        for (std::size_t at : {data_start, data_start + file.data.size() / 2, valid.size() - 1}) {
            auto bytes = valid;
            bytes[at] ^= 0x10;
            CHECK(load_error(bytes).find("checksum mismatch") != std::string::npos);
        }
        std::string text(valid.begin(), valid.end());
        const auto rate = text.find("\\\"rate\\\":0.2");
        REQUIRE(rate != std::string::npos);
        auto bytes = valid;
        bytes[rate + 11] = '3';  // Dropout rate 0.2 -> 0.3
        CHECK(load_error(bytes).find("checksum mismatch") != std::string::npos);
    }
    SUBCASE("unknown layer or activation: no fallback") {
        auto unknown_layer = edited(valid, [](auto& metadata, auto&) {
            replace_all(metadata_value(metadata, "model_config"), "\"Dropout\"", "\"Lambda\"");
        });
        CHECK(load_error(unknown_layer).find("unknown layer 'Lambda'") != std::string::npos);
        auto unknown_activation = edited(valid, [](auto& metadata, auto&) {
            replace_all(metadata_value(metadata, "model_config"), "\"relu\"", "\"os.system\"");
        });
        CHECK(load_error(unknown_activation).find("unknown activation 'os.system'") != std::string::npos);
    }
    SUBCASE("weights whose shape does not match the architecture, missing or extra tensors") {
        auto transposed = edited(valid, [](auto&, auto& tensors) {
            for (auto& [name, value] : tensors) {
                if (name == "dense/kernel") value = xt::transpose(value);
            }
        });
        // Adam's slots keep the original shape, so the weight check must come first and name it.
        CHECK(load_error(transposed).find("tensor 'dense/kernel' has shape (8, 5) but layer 'dense' needs (5, 8)") !=
              std::string::npos);
        auto square = edited(valid, [](auto& metadata, auto& tensors) {
            for (auto& [name, value] : tensors) {
                if (name == "dense/kernel") value = xt::zeros<float>({10, 10});
            }
            (void)metadata;
        });
        CHECK(load_error(square).find("but layer 'dense' needs (5, 8)") != std::string::npos);
        auto renamed = edited(valid, [](auto&, auto& tensors) {
            for (auto& [name, value] : tensors) {
                if (name == "dense_1/bias") name = "dense_1/offset";
            }
        });
        CHECK(load_error(renamed).find("missing tensor 'dense_1/bias' (layer 'dense_1', shape (3,))") != std::string::npos);
        auto missing = edited(valid, [](auto&, auto& tensors) {
            std::erase_if(tensors, [](const auto& t) { return t.first == "dense_1/bias"; });
        });
        CHECK(load_error(missing).find("the layers would create 75 weight values, more than the 72") != std::string::npos);
        auto extra = edited(valid, [](auto&, auto& tensors) { tensors.emplace_back("../../etc/passwd", xt::zeros<float>({1})); });
        CHECK(load_error(extra).find("unexpected tensor '../../etc/passwd'") != std::string::npos);
    }
    SUBCASE("layers that do not chain") {
        auto broken = edited(valid, [](auto& metadata, auto&) {
            auto config = nlohmann::json::parse(metadata_value(metadata, "model_config"));
            config["config"]["layers"][2]["config"]["batch_input_shape"] = {nullptr, 7};
            metadata_value(metadata, "model_config") = config.dump();
        });
        CHECK(load_error(broken).find("declares input shape (None, 7) but the model's output is (None, 8)") != std::string::npos);
    }
    SUBCASE("absurd architecture numbers are refused before allocating") {
        auto huge_units = edited(valid, [](auto& metadata, auto&) {
            replace_all(metadata_value(metadata, "model_config"), "\"units\":8", "\"units\":1000000000");
        });
        CHECK(load_error(huge_units).find("'units' must be a whole number in [0, 16777216], got 1000000000") != std::string::npos);
        auto wide = edited(valid, [](auto& metadata, auto&) {
            replace_all(metadata_value(metadata, "model_config"), "\"units\":8", "\"units\":16000000");
        });
        CHECK(load_error(wide).find("weight values, more than the") != std::string::npos);
        auto many_layers = edited(valid, [](auto& metadata, auto&) {
            auto config = nlohmann::json::parse(metadata_value(metadata, "model_config"));
            auto& layers = config["config"]["layers"];
            while (layers.size() < 2000) layers.push_back(layers[1]);
            metadata_value(metadata, "model_config") = config.dump();
        });
        CHECK(load_error(many_layers).find("exceed the limit of 1024") != std::string::npos);
        auto deep_input = edited(valid, [](auto& metadata, auto&) {
            auto config = nlohmann::json::parse(metadata_value(metadata, "model_config"));
            config["config"]["layers"][0]["config"]["batch_input_shape"] = std::vector<int>(255, 1);
            metadata_value(metadata, "model_config") = config.dump();
        });
        CHECK(load_error(deep_input).find("at most 8 extents") != std::string::npos);
    }
    SUBCASE("NaN or infinite weights are refused") {
        for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
            auto poisoned = edited(valid, [&](auto&, auto& tensors) {
                for (auto& [name, value] : tensors) {
                    if (name == "dense_1/bias") value(1) = bad;
                }
            });
            CHECK(load_error(poisoned).find("tensor 'dense_1/bias' holds") != std::string::npos);
            CHECK(load_error(poisoned).find("at flat index 1; xtnn refuses non-finite weights") != std::string::npos);
        }
    }
    SUBCASE("a check output the model does not reproduce") {
        auto wrong = edited(valid, [](auto&, auto& tensors) {
            for (auto& [name, value] : tensors) {
                if (name == "check/output") value(0, 0) += 0.25f;
            }
        });
        CHECK(load_error(wrong).find("does not reproduce its check output") != std::string::npos);
    }
    SUBCASE("a bad random state or step count") {
        auto bad_iterations = edited(valid, [](auto& metadata, auto&) { metadata_value(metadata, "optimizer_iterations") = "-3"; });
        CHECK(load_error(bad_iterations).find("optimizer_iterations must be a non-negative integer") != std::string::npos);
        auto bad_state = edited(valid, [](auto& metadata, auto&) { metadata_value(metadata, "random_state") = "/etc/passwd"; });
        CHECK_THROWS_WITH_AS(load_model_from_bytes(bad_state, "x", {.restore_random_state = true}),
                             doctest::Contains("model file 'x': random_state: Generator::set_state: expected"), IoError);
        const auto before = thread_generator().state();
        CHECK_NOTHROW(load_model_from_bytes(bad_state));  // the state is only read when asked for
        CHECK(thread_generator().state() == before);
    }
}

TEST_CASE("load_model and load_weights refuse paths that are not regular files, FIFOs without blocking") {
    TempDir dir;
    CHECK_THROWS_WITH_AS(load_model(dir.file("missing.xtnn")), doctest::Contains("cannot open"), IoError);
    CHECK_THROWS_WITH_AS(load_model(dir.path.string()), doctest::Contains("not a regular file (a folder)"), IoError);
    CHECK_THROWS_WITH_AS(load_model("/dev/zero"), doctest::Contains("not a regular file (a character device)"), IoError);
    // No process ever opens the FIFO for writing: a blocking open() would wait forever.
    REQUIRE(::mkfifo(dir.file("fifo.xtnn").c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(load_model(dir.file("fifo.xtnn")), doctest::Contains("not a regular file (a FIFO)"), IoError);
    Sequential model = small_model();
    CHECK_THROWS_WITH_AS(model.load_weights(dir.file("fifo.xtnn")), doctest::Contains("not a regular file (a FIFO)"), IoError);
}

TEST_CASE("save writes through symbolic links, refuses what is not a regular file, and takes names up to NAME_MAX") {
    TempDir dir;
    set_random_seed(4);
    Sequential model = small_model();
    fs::create_directory(dir.path / "real");
    model.save(dir.file("real/target.xtnn"));
    fs::create_symlink("real/target.xtnn", dir.path / "link.xtnn");
    fs::create_symlink("link.xtnn", dir.path / "link-to-link.xtnn");

    set_random_seed(5);
    Sequential other = small_model();
    other.save(dir.file("link-to-link.xtnn"));
    CHECK(fs::is_symlink(dir.path / "link.xtnn"));
    CHECK(fs::is_symlink(dir.path / "link-to-link.xtnn"));
    CHECK(same_weights(load_model(dir.file("real/target.xtnn")), other));
    CHECK(std::distance(fs::directory_iterator(dir.path / "real"), {}) == 1);  // no temporary file left

    fs::create_symlink("real/not-yet.xtnn", dir.path / "dangling.xtnn");
    model.save(dir.file("dangling.xtnn"));
    CHECK(fs::is_symlink(dir.path / "dangling.xtnn"));
    CHECK(same_weights(load_model(dir.file("real/not-yet.xtnn")), model));

    fs::create_symlink("loop-b.xtnn", dir.path / "loop-a.xtnn");
    fs::create_symlink("loop-a.xtnn", dir.path / "loop-b.xtnn");
    CHECK_THROWS_WITH_AS(model.save(dir.file("loop-a.xtnn")), doctest::Contains("symbolic links in a chain"), IoError);

    REQUIRE(::mkfifo(dir.file("fifo.xtnn").c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(model.save(dir.file("fifo.xtnn")), doctest::Contains("is not a regular file (a FIFO)"), IoError);
    CHECK(fs::is_fifo(dir.path / "fifo.xtnn"));
    CHECK_THROWS_WITH_AS(model.save(dir.file("real")), doctest::Contains("is not a regular file (a folder)"), IoError);
    CHECK_THROWS_WITH_AS(model.save(""), "cannot write '': the path is empty", IoError);
    fs::create_symlink("fifo.xtnn", dir.path / "link-to-fifo.xtnn");
    CHECK_THROWS_AS(model.save_weights(dir.file("link-to-fifo.xtnn")), IoError);
    CHECK(fs::is_fifo(dir.path / "fifo.xtnn"));
    // A device node of our own (the null device's numbers), where this process may make one.
    if (::mknod(dir.file("null-device").c_str(), S_IFCHR | 0600, ::makedev(1, 3)) == 0) {
        CHECK_THROWS_WITH_AS(model.save(dir.file("null-device")), doctest::Contains("(a character device)"), IoError);
        CHECK(fs::is_character_file(dir.path / "null-device"));
    }

    for (std::size_t length : {250, 255}) {
        const std::string name = std::string(length - 5, 'm') + ".xtnn";
        model.save(dir.file(name));
        CHECK(same_weights(load_model(dir.file(name)), model));
    }
}

TEST_CASE("non-finite weights are never saved: save fails and keeps the old file, ModelCheckpoint skips the epoch") {
    TempDir dir;
    set_random_seed(6);
    Sequential model = small_model();
    const Blobs data = blobs(32, 4);
    model.save(dir.file("good.xtnn"));
    model.save_weights(dir.file("good.weights"));
    const auto good = read_bytes(dir.file("good.xtnn"));
    const auto good_weights = read_bytes(dir.file("good.weights"));
    model.layer(0).weights()[0].mutable_value()(3, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH_AS(model.save(dir.file("good.xtnn")),
                         "save: model 'sequential' is not saved: its weight 'dense/kernel' holds nan at flat index 25; "
                         "the existing file, if any, is unchanged",
                         ValueError);
    CHECK_THROWS_AS(model.save_weights(dir.file("good.weights")), ValueError);
    CHECK(read_bytes(dir.file("good.xtnn")) == good);
    CHECK(read_bytes(dir.file("good.weights")) == good_weights);
    CHECK(dir.entries() == 2);

    // Training on a NaN weight makes every epoch's weights NaN: the checkpoint keeps the good file.
    auto checkpoint = std::make_shared<ModelCheckpoint>(dir.file("good.xtnn"), ModelCheckpointOptions{.monitor = "loss"});
    std::ostringstream log;
    model.fit(data.x, data.y, {.batch_size = 16, .epochs = 2, .verbose = 0, .callbacks = {checkpoint}, .output = &log});
    CHECK(read_bytes(dir.file("good.xtnn")) == good);
    CHECK(log.str().find("Epoch 2: not saving model to " + dir.file("good.xtnn") + ": its weight 'dense/kernel' holds nan") !=
          std::string::npos);
    CHECK_NOTHROW(load_model(dir.file("good.xtnn")));
}

TEST_CASE("ModelCheckpoint refuses absurd field widths when it is made") {
    for (const char* path : {"m-{epoch:>1000000000}.xtnn", "m-{loss:.999999f}.xtnn", "m-{epoch:0256d}.xtnn", "m-{epoch:{loss}}.xtnn"}) {
        CAPTURE(path);
        CHECK_THROWS_AS(std::make_shared<ModelCheckpoint>(path), ValueError);
    }
    CHECK_NOTHROW(std::make_shared<ModelCheckpoint>("m-{epoch:>255}-{{literal}}-{val_loss:.3f}.xtnn"));
}

TEST_CASE("thread counts: bitwise-equal runs for one count; within rounding of each other across counts") {
    const auto [train, test] = datasets::load_mnist(std::string(XTNN_SOURCE_DIR) + "/datasets/mnist-10k");
    const xt::xarray<float> x = xt::view(train.x, xt::range(0, 512));
    const xt::xarray<float> y = to_categorical(xt::view(train.y, xt::range(0, 512)), 10);
    const int initial_threads = ops::num_threads();
    auto run = [&](int threads) {
        ops::set_num_threads(threads);
        set_random_seed(42);
        Sequential model;
        model.add(Dense(64, "relu", {28, 28}));
        model.add(Flatten());
        model.add(Dense(10, "softmax"));
        model.compile("categorical_crossentropy", "adam", {"accuracy"});
        const History history = model.fit(x, y, {.batch_size = 128, .epochs = 2, .verbose = 0});
        return std::make_pair(history.history.at("loss"), model.predict(x));
    };
    const auto [loss_one, predictions_one] = run(1);
    const auto [loss_one_again, predictions_one_again] = run(1);
    const auto [loss_two, predictions_two] = run(2);
    ops::set_num_threads(initial_threads);
    CHECK(loss_one == loss_one_again);
    CHECK(bitwise_equal(predictions_one, predictions_one_again));
    for (std::size_t e = 0; e < loss_one.size(); ++e) CHECK(loss_two[e] == doctest::Approx(loss_one[e]).epsilon(1e-5));
    CHECK(xt::allclose(predictions_two, predictions_one, 1e-3, 1e-5));
    CHECK_THROWS_AS(ops::set_num_threads(0), ValueError);
    CHECK_THROWS_WITH_AS(ops::set_num_threads(100000), doctest::Contains("threads must be in [1, "), ValueError);
    CHECK(ops::num_threads() == initial_threads);
}

TEST_CASE("a file written by format version 1 still loads: tests/data/model-v1.xtnn") {
    // Written once by xtnn 0.1 (seed 2026, one SGD step with momentum); kept to catch format drift.
    Sequential model = load_model(std::string(XTNN_SOURCE_DIR) + "/tests/data/model-v1.xtnn");
    CHECK(model.name() == "golden");
    CHECK(model.optimizer()->config() == nlohmann::json{{"name", "sgd"}, {"learning_rate", 0.1}, {"momentum", 0.9},
                                                        {"nesterov", false}});
    CHECK(model.optimizer()->iterations() == 1);
    const xt::xarray<float> second_bias = {0x1.62f772p-6f, -0x1.62f77p-6f};
    CHECK(bitwise_equal(model.get_weights()[3], second_bias));
    const xt::xarray<float> x = {{0.5f, -1.0f, 2.0f}, {1.5f, 0.25f, -0.75f}};
    const xt::xarray<float> expected = {{0x1.e30986p-2f, 0x1.0e7b3ep-1f}, {0x1.07ac18p-2f, 0x1.7c29f4p-1f}};
    CHECK(xt::allclose(model.predict(x), expected, 1e-6, 1e-7));
}

TEST_CASE("the fuzzing seeds and every crasher found so far load or fail with an xtnn::Error") {
    std::size_t replayed = 0;
    for (const char* folder : {"/tests/fuzz/seeds/model", "/tests/fuzz/regressions/model"}) {
        for (const auto& entry : fs::directory_iterator(std::string(XTNN_SOURCE_DIR) + folder)) {
            if (entry.path().filename().string().front() == '.') continue;
            CAPTURE(entry.path().string());
            const auto bytes = read_bytes(entry.path().string());
            try {
                load_model_from_bytes(bytes, entry.path().string());
            } catch (const Error&) {
            }
            ++replayed;
        }
    }
    CHECK(replayed >= 7);
}

TEST_CASE("a saved CNN loads bit for bit, optimizer state included") {
    TempDir dir;
    set_random_seed(12);
    Sequential model;
    model.add(Reshape({6, 6, 1}, {6, 6}));
    model.add(Conv2D(Conv2DOptions{.filters = 3, .kernel_size = {3, 2}, .strides = {1, 2}, .padding = "same", .activation = "relu"}));
    model.add(MaxPooling2D(2));
    model.add(Flatten());
    model.add(Dense(2, "softmax"));
    model.compile("sparse_categorical_crossentropy", "adam", {"accuracy"});
    const xt::xarray<float> x = testing::uniform({8, 6, 6}, 3, 0.0, 1.0);
    const xt::xarray<float> y = {0, 1, 0, 1, 1, 0, 1, 0};
    model.fit(x, y, quiet(2));
    model.save(dir.file("cnn.xtnn"));
    Sequential restored = load_model(dir.file("cnn.xtnn"));
    CHECK(restored.to_json() == model.to_json());
    CHECK(same_weights(restored, model));
    CHECK(same_slots(*restored.optimizer(), *model.optimizer()));
    CHECK(bitwise_equal(restored.predict(x), model.predict(x)));
}

TEST_CASE("BatchNormalization's moving statistics and a frozen layer survive save and load, and training resumes exactly") {
    TempDir dir;
    const Blobs data = blobs(64, 7);
    auto make = [] {
        Sequential model;
        model.add(Dense(8, "linear", {5}));
        model.add(BatchNormalization());
        model.add(Activation("relu"));
        model.add(Dense(3, "softmax"));
        model.layer(0).trainable = false;
        model.compile("categorical_crossentropy", "adam");
        return model;
    };
    set_random_seed(13);
    Sequential straight = make();
    straight.fit(data.x, data.y, quiet(4));
    set_random_seed(13);
    Sequential half = make();
    half.fit(data.x, data.y, quiet(2));
    half.save(dir.file("half.xtnn"));
    Sequential resumed = load_model(dir.file("half.xtnn"), {.restore_random_state = true});
    CHECK_FALSE(resumed.layer(0).trainable);
    CHECK(resumed.layer(1).weight_names() == std::vector<std::string>{"gamma", "beta", "moving_mean", "moving_variance"});
    CHECK(same_weights(resumed, half));
    CHECK(bitwise_equal(resumed.predict(data.x), half.predict(data.x)));
    resumed.fit(data.x, data.y, {.batch_size = 16, .epochs = 4, .verbose = 0, .initial_epoch = 2});
    CHECK(same_weights(resumed, straight));
}
