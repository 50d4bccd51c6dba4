#include "xtnn/saving.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <zlib.h>

#include "keras/hdf5.hpp"
#include "keras/keras_files.hpp"
#include "keras/zip.hpp"
#include "xtnn/io.hpp"
#include "xtnn/json.hpp"
#include "xtnn/random.hpp"
#include "xtnn/safetensors.hpp"

namespace xtnn {

namespace {

constexpr const char* model_format = "xtnn.model";
constexpr const char* weights_format = "xtnn.weights";
// Every xtnn file's header starts with these bytes ("format" is written first): the magic that
// tells an xtnn file from anything else before any parsing.
constexpr std::string_view header_start = R"({"__metadata__":{"format":"xtnn.)";
constexpr const char* optimizer_prefix = "optimizer/";
constexpr const char* check_input_name = "check/input";
constexpr const char* check_output_name = "check/output";

// "check/input" for a model's only input, "check/input/1" for its second of several.
std::string check_name(const char* base, std::size_t index, std::size_t count) {
    return count == 1 ? std::string(base) : std::string(base) + "/" + std::to_string(index);
}
constexpr std::uint64_t check_input_seed = 0x78746e6e;  // "xtnn"
constexpr std::size_t max_check_samples = 16;

[[noreturn]] void fail(const std::string& what, const std::string& problem) { throw IoError(what + ": " + problem); }

std::string hex_bytes(std::span<const std::uint8_t> bytes, std::size_t count) {
    std::string text;
    for (std::size_t i = 0; i < std::min(count, bytes.size()); ++i) text += fmt::format("{}{:02x}", i ? " " : "", bytes[i]);
    return text;
}

std::string looks_like(std::span<const std::uint8_t> bytes) {
    auto starts = [&](std::string_view signature) {
        return bytes.size() >= signature.size() && std::memcmp(bytes.data(), signature.data(), signature.size()) == 0;
    };
    if (starts("\x89PNG")) return " (looks like a PNG image)";
    if (starts("\x1f\x8b")) return " (looks gzip-compressed)";
    if (bytes.size() >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5) return " (looks like a Python pickle)";
    if (bytes.size() > 9 && bytes[8] == '{') return " (a safetensors file not written by xtnn)";
    return "";
}

// The magic check, before anything else is read.
void check_start(std::span<const std::uint8_t> bytes, const std::string& what) {
    if (bytes.size() < 8) {
        fail(what, fmt::format("truncated: {} bytes, an xtnn model file starts with an 8-byte header length", bytes.size()));
    }
    const std::size_t available = std::min(bytes.size() - 8, header_start.size());
    if (std::memcmp(bytes.data() + 8, header_start.data(), available) != 0) {
        fail(what, fmt::format("not an xtnn model file: its header should start with '{}', the file starts with {}{}",
                               header_start, hex_bytes(bytes, 16), looks_like(bytes)));
    }
    if (available < header_start.size()) fail(what, fmt::format("truncated: {} bytes", bytes.size()));
}

// CRC-32 of everything in the file but the checksum itself, in a canonical form: the metadata
// and tensor table as sorted JSON, then the data. Any change to the config, a shape or a data
// byte changes it.
std::string checksum(const safetensors::ParsedFile& file) {
    nlohmann::json metadata(file.metadata);
    metadata.erase("checksum");
    nlohmann::json table = nlohmann::json::array();
    for (const auto& tensor : file.tensors) {
        table.push_back({tensor.name, tensor.dtype, std::vector<std::size_t>(tensor.shape.begin(), tensor.shape.end()),
                         tensor.begin, tensor.end});
    }
    const std::string canonical = nlohmann::json{{"metadata", metadata}, {"tensors", table}}.dump();
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(canonical.data()), canonical.size());
    crc = crc32_z(crc, file.data.data(), file.data.size());
    return fmt::format("crc32:{:08x}", static_cast<std::uint32_t>(crc));
}

const std::string& metadata_field(const safetensors::ParsedFile& file, const std::string& key, const std::string& what) {
    const auto found = file.metadata.find(key);
    if (found == file.metadata.end()) fail(what, "the metadata has no '" + key + "'");
    return found->second;
}

// Parses and verifies the container: magic, layout, format, version, checksum.
safetensors::ParsedFile open_container(std::span<const std::uint8_t> bytes, const std::string& what) {
    check_start(bytes, what);
    safetensors::ParsedFile file = safetensors::parse(bytes, what);
    const std::string& format = metadata_field(file, "format", what);
    if (format != model_format && format != weights_format) {
        fail(what, fmt::format("unknown format '{}'; expected '{}' or '{}'", format, model_format, weights_format));
    }
    const std::string& version = metadata_field(file, "format_version", what);
    if (version != std::to_string(model_format_version)) {
        fail(what, fmt::format("unsupported format_version '{}'; this build of xtnn reads version {}", version,
                               model_format_version));
    }
    const std::string& stored = metadata_field(file, "checksum", what);
    const std::string actual = checksum(file);
    if (stored != actual) {
        fail(what, fmt::format("checksum mismatch: the file says {}, its contents give {}; the file is corrupted", stored,
                               actual));
    }
    return file;
}

std::string weight_key(const Layer& layer, const std::string& weight_name) { return layer.name() + "/" + weight_name; }

std::string optimizer_key(const std::string& weight, const std::string& slot) { return optimizer_prefix + weight + "/" + slot; }

xt::xarray<float> read_finite(const safetensors::ParsedFile& file, const safetensors::TensorInfo& tensor,
                              const std::string& what) {
    xt::xarray<float> values = file.to_float(tensor, what);
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (!std::isfinite(values.data()[i])) {
            fail(what, fmt::format("tensor '{}' holds {} at flat index {}; xtnn refuses non-finite weights", tensor.name,
                                   values.data()[i], i));
        }
    }
    return values;
}

xt::xarray<float> read_tensor(const safetensors::ParsedFile& file, const std::string& name, const Shape& expected,
                              const std::string& what, const std::string& role) {
    const auto* tensor = file.find(name);
    if (!tensor) fail(what, fmt::format("missing tensor '{}' ({}, shape {})", name, role, shape_to_string(expected)));
    if (tensor->shape != expected) {
        fail(what, fmt::format("tensor '{}' has shape {} but {} needs {}", name, shape_to_string(tensor->shape), role,
                               shape_to_string(expected)));
    }
    return read_finite(file, *tensor, what);
}

// The model's weights from the file, in Model::weights() order; `used` collects the names.
std::vector<xt::xarray<float>> read_weights(const Model& model, const safetensors::ParsedFile& file,
                                            const std::string& what, std::set<std::string>& used) {
    std::vector<xt::xarray<float>> values;
    for (std::size_t l = 0; l < model.size(); ++l) {
        const Layer& layer = model.layer(l);
        const auto names = layer.weight_names();
        const auto weights = layer.weights();
        for (std::size_t w = 0; w < weights.size(); ++w) {
            const std::string key = weight_key(layer, names[w]);
            const Shape shape(weights[w].shape().begin(), weights[w].shape().end());
            values.push_back(read_tensor(file, key, shape, what, "layer '" + layer.name() + "'"));
            used.insert(key);
        }
    }
    return values;
}

void reject_unused(const safetensors::ParsedFile& file, const std::set<std::string>& used, const std::string& what) {
    for (const auto& tensor : file.tensors) {
        if (!used.count(tensor.name)) fail(what, "unexpected tensor '" + tensor.name + "': the model has no such weight");
    }
}

std::vector<std::string> weight_keys(const Model& model) {
    std::vector<std::string> keys;
    for (std::size_t l = 0; l < model.size(); ++l) {
        for (const auto& name : model.layer(l).weight_names()) keys.push_back(weight_key(model.layer(l), name));
    }
    return keys;
}

std::vector<std::pair<std::string, xt::xarray<float>>> weight_tensors(const Model& model) {
    std::vector<std::pair<std::string, xt::xarray<float>>> tensors;
    const auto keys = weight_keys(model);
    const auto values = model.get_weights();
    for (std::size_t i = 0; i < keys.size(); ++i) tensors.emplace_back(keys[i], values[i]);
    return tensors;
}

// Serializes with the checksum of the finished file: the checksum covers the header without
// itself, so it is computed on a first serialization and written into the second.
std::vector<std::uint8_t> serialize_with_checksum(std::vector<std::pair<std::string, std::string>> metadata,
                                                  const std::vector<std::pair<std::string, xt::xarray<float>>>& tensors) {
    metadata.emplace_back("checksum", "crc32:00000000");
    const auto draft = safetensors::serialize(metadata, tensors);
    metadata.back().second = checksum(safetensors::parse(draft, "model file"));
    return safetensors::serialize(metadata, tensors);
}

// A file must load again, and load_model refuses NaN and infinity: such a model is not written,
// so a save (or a checkpoint) never replaces a good file with one that cannot be read.
void require_finite_weights(const Model& model, const char* method, bool with_optimizer_state) {
    if (const auto problem = model.non_finite_weight()) {
        throw ValueError(fmt::format("{}: model '{}' is not saved: its {}; the existing file, if any, is unchanged", method,
                                     model.name(), *problem));
    }
    if (!with_optimizer_state || !model.compiled()) return;
    const auto keys = weight_keys(model);
    const auto& slots = model.optimizer()->slots();
    const auto slot_names = model.optimizer()->slot_names();
    for (std::size_t i = 0; i < std::min(keys.size(), slots.size()); ++i) {
        for (std::size_t s = 0; s < slots[i].size() && s < slot_names.size(); ++s) {
            if (const auto index = first_non_finite({slots[i][s].data(), slots[i][s].size()})) {
                throw ValueError(fmt::format("{}: model '{}' is not saved: the optimizer's {} for '{}' holds {} at flat index "
                                             "{}; the existing file, if any, is unchanged",
                                             method, model.name(), slot_names[s], keys[i], slots[i][s].data()[*index], *index));
            }
        }
    }
}

xt::xarray<float> check_input(const Shape& input_shape, std::size_t index) {
    Shape shape{1};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    xt::xarray<float> input = xt::empty<float>(shape);
    Generator generator(check_input_seed + index);
    for (auto& value : input) value = static_cast<float>(generator.uniform());
    return input;
}

std::int64_t parse_iterations(const std::string& text, const std::string& what) {
    if (text.empty() || text.size() > 18 || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        fail(what, "optimizer_iterations must be a non-negative integer, got '" + text.substr(0, 40) + "'");
    }
    return std::stoll(text);
}

// Recompiles `model` as saved and restores the optimizer's slots and step count.
void restore_training(Model& model, const safetensors::ParsedFile& file, const std::string& what,
                      std::set<std::string>& used) {
    const auto config = safetensors::parse_json(metadata_field(file, "training_config", what), what + " training_config");
    if (!config.is_object() || !config.contains("loss") || !config.contains("optimizer") || !config.contains("metrics")) {
        fail(what, "training_config must hold 'loss', 'metrics' and 'optimizer'");
    }
    auto names = [&](const nlohmann::json& value, const char* field) {
        std::vector<std::string> result;
        if (value.is_string()) return std::vector<std::string>{value.get<std::string>()};
        if (!value.is_array()) fail(what, std::string("training_config ") + field + " must be a list of names, got " + json::excerpt(value));
        for (const auto& name : value) {
            if (!name.is_string()) fail(what, std::string("training_config ") + field + " must be names, got " + json::excerpt(name));
            result.push_back(name.get<std::string>());
        }
        return result;
    };
    CompileOptions compile{.loss = names(config["loss"], "loss"),
                           .optimizer = OptimizerSpec::from_config(config["optimizer"]),
                           .metrics = names(config["metrics"], "metrics")};
    auto number = [&](const nlohmann::json& value, const char* field) {
        if (!value.is_number()) fail(what, std::string("training_config ") + field + " must hold numbers, got " + json::excerpt(value));
        return value.get<double>();
    };
    // The per-output fields are objects keyed by output name; compile() checks the names.
    auto each_output = [&](const char* field, auto read) {
        if (!config.contains(field)) return;
        if (!config[field].is_object()) fail(what, std::string("training_config ") + field + " must be an object");
        for (const auto& [output, value] : config[field].items()) read(output, value);
    };
    each_output("loss_by_output", [&](const std::string& output, const nlohmann::json& value) {
        if (!value.is_string()) fail(what, "training_config loss_by_output must hold names, got " + json::excerpt(value));
        compile.loss_by_output[output] = value.get<std::string>();
    });
    each_output("metrics_by_output", [&](const std::string& output, const nlohmann::json& value) {
        compile.metrics_by_output[output] = names(value, "metrics_by_output");
    });
    each_output("loss_weights_by_output", [&](const std::string& output, const nlohmann::json& value) {
        compile.loss_weights_by_output[output] = number(value, "loss_weights_by_output");
    });
    if (config.contains("loss_weights")) {
        if (!config["loss_weights"].is_array()) fail(what, "training_config loss_weights must be a list of numbers");
        for (const auto& weight : config["loss_weights"]) compile.loss_weights.push_back(number(weight, "loss_weights"));
    }
    model.compile(compile);

    Optimizer& optimizer = *model.optimizer();
    const auto slot_names = optimizer.slot_names();
    const auto keys = weight_keys(model);
    const auto weights = model.weights();
    std::vector<std::vector<xt::xarray<float>>> slots(weights.size());
    for (std::size_t i = 0; i < weights.size(); ++i) {
        std::size_t present = 0;
        for (const auto& slot : slot_names) present += file.find(optimizer_key(keys[i], slot)) ? 1 : 0;
        if (present == 0) continue;  // this weight was never updated
        const Shape shape(weights[i].shape().begin(), weights[i].shape().end());
        for (const auto& slot : slot_names) {
            const std::string key = optimizer_key(keys[i], slot);
            slots[i].push_back(read_tensor(file, key, shape, what, optimizer.name() + "'s " + slot + " for '" + keys[i] + "'"));
            used.insert(key);
        }
    }
    optimizer.slots() = std::move(slots);
    optimizer.set_iterations(parse_iterations(metadata_field(file, "optimizer_iterations", what), what));
}

void verify_check_output(Model& model, const safetensors::ParsedFile& file, const std::string& what,
                         std::set<std::string>& used) {
    const auto input_shapes = model.input_shapes();
    const auto output_shapes = model.output_shapes();
    const std::string first_input = check_name(check_input_name, 0, input_shapes.size());
    const auto* input_info = file.find(first_input);
    if (!input_info) fail(what, "missing tensor '" + first_input + "'");
    const std::size_t samples = input_info->shape.empty() ? 0 : input_info->shape[0];
    if (samples == 0 || samples > max_check_samples) {
        fail(what, fmt::format("tensor '{}' must hold 1 to {} samples, has shape {}", first_input, max_check_samples,
                               shape_to_string(input_info->shape)));
    }
    auto with_samples = [&](const Shape& per_sample) {
        Shape shape{samples};
        shape.insert(shape.end(), per_sample.begin(), per_sample.end());
        return shape;
    };
    std::vector<xt::xarray<float>> inputs;
    for (std::size_t i = 0; i < input_shapes.size(); ++i) {
        const auto name = check_name(check_input_name, i, input_shapes.size());
        inputs.push_back(read_tensor(file, name, with_samples(input_shapes[i]), what, "the model's input"));
        used.insert(name);
    }
    std::vector<InputRows> rows(inputs.begin(), inputs.end());
    const auto actual = model.predict(rows);
    for (std::size_t o = 0; o < output_shapes.size(); ++o) {
        const auto name = check_name(check_output_name, o, output_shapes.size());
        const auto expected = read_tensor(file, name, with_samples(output_shapes[o]), what, "the model's output");
        used.insert(name);
        // BLAS kernels differ between CPUs, so another machine may differ in the last bits; a wrong
        // architecture or weight differs by far more.
        for (std::size_t i = 0; i < expected.size(); ++i) {
            const float a = actual[o].data()[i], e = expected.data()[i];
            if (!(std::abs(a - e) <= 1e-5f + 1e-4f * std::abs(e))) {
                fail(what, fmt::format("the model does not reproduce its check output {}: element {} is {}, the file says {}",
                                       name, i, a, e));
            }
        }
    }
}

}  // namespace

std::vector<std::uint8_t> model_to_bytes(Model& model) {
    if (!model.built()) {
        throw ValueError("save: model '" + model.name() + "' is not built; give the first layer an input_shape or call build()");
    }
    require_finite_weights(model, "save", true);
    std::vector<std::pair<std::string, std::string>> metadata = {
        {"format", model_format},
        {"format_version", std::to_string(model_format_version)},
        {"model_config", model.to_json()},
    };
    auto tensors = weight_tensors(model);
    if (model.compiled()) {
        const Optimizer& optimizer = *model.optimizer();
        const CompileOptions& compile = model.compile_options();
        // compile()'s settings as given; one loss for every output is written as a name.
        nlohmann::json training = {{"loss", compile.loss.size() == 1 ? nlohmann::json(compile.loss[0]) : nlohmann::json(compile.loss)},
                                   {"metrics", compile.metrics},
                                   {"optimizer", optimizer.config()}};
        if (!compile.loss_by_output.empty()) training["loss_by_output"] = compile.loss_by_output;
        if (!compile.metrics_by_output.empty()) training["metrics_by_output"] = compile.metrics_by_output;
        if (!compile.loss_weights.empty()) training["loss_weights"] = compile.loss_weights;
        if (!compile.loss_weights_by_output.empty()) training["loss_weights_by_output"] = compile.loss_weights_by_output;
        metadata.emplace_back("training_config", training.dump());
        metadata.emplace_back("optimizer_iterations", std::to_string(optimizer.iterations()));
        const auto keys = weight_keys(model);
        const auto slot_names = optimizer.slot_names();
        for (std::size_t i = 0; i < std::min(keys.size(), optimizer.slots().size()); ++i) {
            const auto& slots = optimizer.slots()[i];
            for (std::size_t s = 0; s < slots.size() && s < slot_names.size(); ++s) {
                tensors.emplace_back(optimizer_key(keys[i], slot_names[s]), slots[s]);
            }
        }
    }
    metadata.emplace_back("random_state", thread_generator().state());
    const auto input_shapes = model.input_shapes();
    std::vector<xt::xarray<float>> inputs;
    for (std::size_t i = 0; i < input_shapes.size(); ++i) {
        inputs.push_back(check_input(input_shapes[i], i));
        tensors.emplace_back(check_name(check_input_name, i, input_shapes.size()), inputs.back());
    }
    const auto outputs = model.predict(std::vector<InputRows>(inputs.begin(), inputs.end()));
    for (std::size_t o = 0; o < outputs.size(); ++o) {
        tensors.emplace_back(check_name(check_output_name, o, outputs.size()), outputs[o]);
    }
    return serialize_with_checksum(std::move(metadata), tensors);
}

Model load_model_from_bytes(std::span<const std::uint8_t> bytes, const std::string& name, const LoadOptions& options) {
    const std::string what = "model file '" + name + "'";
    if (zip::has_signature(bytes)) return keras::load_archive(bytes, what, options);
    if (hdf5::has_signature(bytes)) return keras::load_legacy_h5(bytes, what, options);
    const safetensors::ParsedFile file = open_container(bytes, what);
    if (metadata_field(file, "format", what) != model_format) {
        fail(what, "holds only weights (written by save_weights); load them into a model with load_weights()");
    }
    std::size_t stored_weights = 0;
    for (const auto& tensor : file.tensors) {
        if (tensor.name.rfind(optimizer_prefix, 0) != 0 && tensor.name.rfind("check/", 0) != 0) {
            stored_weights += (tensor.end - tensor.begin) / 4;
        }
    }
    // The saved state is read before anything else is built, so a bad one fails the load early.
    std::optional<Generator> saved_generator;
    if (options.restore_random_state) {
        saved_generator.emplace();
        try {
            saved_generator->set_state(metadata_field(file, "random_state", what));
        } catch (const ValueError& e) {
            fail(what, std::string("random_state: ") + e.what());
        }
    }
    // The initial weights the layers draw are overwritten by the file's: a private generator
    // draws them, so loading leaves the thread's random stream alone.
    Generator discarded_initial_weights;
    std::optional<Model> loaded;
    try {
        loaded.emplace(Model::from_config(
            safetensors::parse_json(metadata_field(file, "model_config", what), what + " model_config"),
            {.max_weight_elements = stored_weights, .generator = &discarded_initial_weights}));
    } catch (const IoError&) {
        throw;
    } catch (const Error& e) {
        fail(what, std::string("model_config: ") + e.what());
    }
    Model& model = *loaded;
    if (!model.built()) fail(what, "model_config gives no input shape, so the weights cannot be placed");
    std::set<std::string> used;
    model.set_weights(read_weights(model, file, what, used));
    if (file.metadata.count("training_config")) restore_training(model, file, what, used);
    verify_check_output(model, file, what, used);
    reject_unused(file, used, what);
    if (saved_generator) thread_generator() = *saved_generator;
    return std::move(model);
}

Model load_model(const std::string& path, const LoadOptions& options) {
    const auto bytes = io::read_file(path, "model file");
    return load_model_from_bytes(bytes, path, options);
}

std::vector<std::uint8_t> reseal_model_file(std::span<const std::uint8_t> bytes) {
    const safetensors::ParsedFile file = safetensors::parse(bytes, "model file");
    std::vector<std::pair<std::string, std::string>> metadata;
    for (const char* first : {"format", "format_version"}) {
        if (file.metadata.count(first)) metadata.emplace_back(first, file.metadata.at(first));
    }
    for (const auto& [key, value] : file.metadata) {
        if (key != "format" && key != "format_version" && key != "checksum") metadata.emplace_back(key, value);
    }
    std::vector<std::pair<std::string, xt::xarray<float>>> tensors;
    for (const auto& tensor : file.tensors) tensors.emplace_back(tensor.name, file.to_float(tensor, "model file"));
    return serialize_with_checksum(std::move(metadata), tensors);
}

std::vector<std::uint8_t> model_to_keras_bytes(Model& model) { return keras::archive_bytes(model); }

namespace {

bool ends_with(const std::string& text, std::string_view suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void Model::save(const std::string& path) {
    if (ends_with(path, ".keras")) {
        io::write_file_atomically(path, keras::archive_bytes(*this));
        return;
    }
    if (ends_with(path, ".h5")) {
        throw ValueError("save: '" + path + "': xtnn reads Keras 2's .h5 model files but writes Keras 3's .keras (or .xtnn); "
                         "for weights alone, save_weights to a name ending in .weights.h5");
    }
    io::write_file_atomically(path, model_to_bytes(*this));
}

void Model::save_weights(const std::string& path) const {
    if (!built()) throw ValueError("save_weights: model '" + name_ + "' is not built");
    if (ends_with(path, ".weights.h5")) {
        io::write_file_atomically(path, keras::weights_h5_bytes(*this));
        return;
    }
    if (ends_with(path, ".h5")) {
        throw ValueError("save_weights: '" + path + "': Keras's weights files are named *.weights.h5 (or use .xtnn)");
    }
    require_finite_weights(*this, "save_weights", false);
    const std::vector<std::pair<std::string, std::string>> metadata = {
        {"format", weights_format}, {"format_version", std::to_string(model_format_version)}};
    io::write_file_atomically(path, serialize_with_checksum(metadata, weight_tensors(*this)));
}

void Model::load_weights(const std::string& path) {
    if (!built()) throw ValueError("load_weights: model '" + name_ + "' is not built, so its weight shapes are unknown");
    const std::string what = "weights file '" + path + "'";
    const auto bytes = io::read_file(path, "weights file");
    if (zip::has_signature(bytes) || hdf5::has_signature(bytes)) {
        keras::load_weights(*this, bytes, what);
        return;
    }
    const safetensors::ParsedFile file = open_container(bytes, what);
    std::set<std::string> used;
    auto values = read_weights(*this, file, what, used);
    // A full model file also carries optimizer state and its check sample; only weights matter here.
    for (const auto& tensor : file.tensors) {
        if (tensor.name.rfind(optimizer_prefix, 0) == 0 || tensor.name.rfind("check/", 0) == 0) used.insert(tensor.name);
    }
    reject_unused(file, used, what);
    set_weights(values);
}

}  // namespace xtnn
