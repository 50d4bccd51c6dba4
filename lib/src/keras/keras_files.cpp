#include "keras/keras_files.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "keras/compile_settings.hpp"
#include "keras/fail.hpp"
#include "keras/hdf5.hpp"
#include "keras/zip.hpp"
#include "xtnn/layers/core.hpp"
#include "xtnn/safetensors.hpp"

namespace xtnn::keras {

namespace {

constexpr const char* config_entry = "config.json";
constexpr const char* metadata_entry = "metadata.json";
constexpr const char* weights_entry = "model.weights.h5";
constexpr std::uint64_t max_json_bytes = std::uint64_t(64) << 20;
constexpr std::uint64_t weights_file_bytes_per_element = 8 * 4;
constexpr std::uint64_t weights_file_overhead = std::uint64_t(16) << 20;
// The Keras version whose format archive_bytes follows (metadata.json's "keras_version").
constexpr const char* keras_format_version = "3.3.3";


std::string join(const std::vector<std::string>& names, std::size_t limit = 12) {
    std::string text;
    for (std::size_t i = 0; i < names.size() && i < limit; ++i) text += (i ? ", " : "") + names[i];
    if (names.size() > limit) text += fmt::format(", ... ({} in all)", names.size());
    return text.empty() ? "none" : text;
}

std::string describe(const Layer& layer) { return fmt::format("layer '{}' ({})", layer.name(), layer.class_name()); }

// Indices into layer.weights() in the order Keras saves them: created trainable first.
std::vector<std::size_t> keras_weight_order(const Layer& layer) {
    const auto trainable = layer.weights_created_trainable();
    std::vector<std::size_t> order;
    for (bool pass : {true, false}) {
        for (std::size_t i = 0; i < trainable.size(); ++i) {
            if (trainable[i] == pass) order.push_back(i);
        }
    }
    return order;
}

Shape shape_of(const Tensor& weight) { return Shape(weight.shape().begin(), weight.shape().end()); }

// `owner` names what the values belong to in errors ("layer 'dense' (Dense)").
xt::xarray<float> read_weight(const hdf5::Reader& file, const std::string& path, const Shape& shape, const std::string& owner) {
    std::vector<float> values;
    try {
        values = file.read_floats(path, shape);
    } catch (const IoError& e) {
        throw IoError(std::string(e.what()) + ", for " + owner);
    }
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (!std::isfinite(values[i])) {
            fail(file.what(), fmt::format("dataset '{}' of {} holds {} at flat index {}; xtnn refuses non-finite weights", path,
                                          owner, values[i], i));
        }
    }
    xt::xarray<float> array = xt::empty<float>(shape);
    std::copy(values.begin(), values.end(), array.begin());
    return array;
}

// The values of every weight in Model::weights() order, from each layer's values.
std::vector<xt::xarray<float>> in_model_order(const Model& model, std::map<const Layer*, std::vector<xt::xarray<float>>>& by_layer) {
    std::vector<xt::xarray<float>> values;
    for (const auto& layer : model.layers()) {
        auto& own = by_layer[layer.get()];
        for (auto& value : own) values.push_back(std::move(value));
    }
    return values;
}

// Keras 3's layout: layers/<path>/vars/<i>.
std::vector<xt::xarray<float>> read_keras3_weights(const Model& model, const hdf5::Reader& file) {
    const auto layers = saving_order(model);
    const auto paths = layer_paths(layers);
    std::map<const Layer*, std::vector<xt::xarray<float>>> by_layer;
    std::set<std::string> known_paths(paths.begin(), paths.end());
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const Layer& layer = *layers[i];
        const auto weights = layer.weights();
        const std::string vars = paths[i] + "/vars";
        const auto stored = file.has_group(vars) ? file.members(vars) : std::vector<std::string>{};
        if (stored.size() != weights.size()) {
            if (weights.size() > 0 && !file.has_group(vars)) {
                std::vector<std::string> present = file.has_group("layers") ? file.members("layers") : std::vector<std::string>{};
                fail(file.what(), fmt::format("no weights for {} at '{}'; the file has weights for: {}", describe(layer), vars,
                                              join(present)));
            }
            fail(file.what(), fmt::format("'{}' holds {} variables but {} has {} ({})", vars, stored.size(), describe(layer),
                                          weights.size(), join(layer.weight_names())));
        }
        auto& values = by_layer[&layer];
        values.resize(weights.size());
        const auto order = keras_weight_order(layer);
        for (std::size_t k = 0; k < order.size(); ++k) {
            const std::string path = vars + "/" + std::to_string(k);
            values[order[k]] = read_weight(file, path, shape_of(weights[order[k]]), describe(layer));
        }
    }
    if (file.has_group("layers")) {
        for (const auto& member : file.members("layers")) {
            const std::string path = "layers/" + member;
            if (!known_paths.count(path) && file.has_group(path + "/vars") && !file.members(path + "/vars").empty()) {
                fail(file.what(), fmt::format("'{}' holds weights but the model has no layer saved there; its layers are "
                                              "saved at: {}",
                                              path, join(paths)));
            }
        }
    }
    return in_model_order(model, by_layer);
}

// "conv2d_3/kernel:0" -> "kernel".
std::string legacy_weight_base(const std::string& name) {
    std::string base = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
    return base.substr(0, base.find(':'));
}

// Keras 2's layout: the group `root` lists layer_names; each layer's group lists weight_names,
// the paths of its datasets below the group.
std::vector<xt::xarray<float>> read_keras2_weights(const Model& model, const hdf5::Reader& file, const std::string& root) {
    const auto layer_names = file.string_list_attribute(root, "layer_names");
    if (!layer_names) fail(file.what(), "no 'layer_names' attribute: not a Keras weights file");
    const auto version = file.string_attribute(root, "keras_version");
    if (version && version->rfind("1.", 0) == 0) {
        fail(file.what(), "written by Keras " + *version + "; xtnn reads the files of Keras 2 and later");
    }
    // Keras converts the convolution kernels the Theano backend saved (flipped) when it loads
    // them; xtnn does not.
    const auto backend = file.string_attribute(root, "backend");
    const auto& layers = model.layers();
    if (backend && *backend == "theano" &&
        std::any_of(layers.begin(), layers.end(), [](const auto& layer) { return layer->class_name() == "Conv2D"; })) {
        fail(file.what(), "its convolution kernels were saved by the Theano backend, which stores them flipped; xtnn reads the "
                          "kernels of the TensorFlow, JAX and PyTorch backends");
    }
    std::set<std::string> in_file(layer_names->begin(), layer_names->end());
    std::set<std::string> in_model;
    std::map<const Layer*, std::vector<xt::xarray<float>>> by_layer;
    auto group_of = [&](const std::string& name) { return root.empty() ? name : root + "/" + name; };
    auto stored_names = [&](const std::string& name) {
        const auto names = file.string_list_attribute(group_of(name), "weight_names");
        if (!names) fail(file.what(), "layer '" + name + "' has no 'weight_names' attribute");
        return *names;
    };
    for (const auto& layer_pointer : model.layers()) {
        const Layer& layer = *layer_pointer;
        in_model.insert(layer.name());
        const auto weights = layer.weights();
        if (weights.empty()) continue;
        if (!in_file.count(layer.name())) {
            fail(file.what(), fmt::format("no weights for {}; the file has layers: {}", describe(layer), join(*layer_names)));
        }
        const auto names = stored_names(layer.name());
        if (names.size() != weights.size()) {
            fail(file.what(), fmt::format("layer '{}' holds {} weights ({}) but {} has {} ({})", layer.name(), names.size(),
                                          join(names), describe(layer), weights.size(), join(layer.weight_names())));
        }
        // Keras 2 names weights as xtnn does ("kernel", "moving_mean"); by name when all match,
        // else in Keras's order.
        const auto own_names = layer.weight_names();
        std::vector<std::size_t> target = keras_weight_order(layer);
        std::vector<std::size_t> by_name;
        for (const auto& name : names) {
            const auto found = std::find(own_names.begin(), own_names.end(), legacy_weight_base(name));
            if (found != own_names.end()) by_name.push_back(static_cast<std::size_t>(found - own_names.begin()));
        }
        if (std::set<std::size_t>(by_name.begin(), by_name.end()).size() == weights.size()) target = by_name;
        auto& values = by_layer[&layer];
        values.resize(weights.size());
        for (std::size_t k = 0; k < names.size(); ++k) {
            values[target[k]] = read_weight(file, group_of(layer.name()) + "/" + names[k], shape_of(weights[target[k]]),
                                            describe(layer));
        }
    }
    for (const auto& name : *layer_names) {
        if (!in_model.count(name) && !stored_names(name).empty()) {
            fail(file.what(), fmt::format("the file holds weights for layer '{}', which the model does not have", name));
        }
    }
    return in_model_order(model, by_layer);
}

// ---- the optimizer's state in Keras 3's layout ----
//
// optimizer/vars holds the step count (int64), the learning rate, then the slots of each of
// model.trainable_variables in turn: Adam's momentum and velocity (Adam.build), SGD's momentum
// when it has one (SGD.build); xtnn's Adam and SGD keep the same slots and update them by the
// same formulas. RMSprop lists its slots in another order, so its state is neither read nor
// written.

std::optional<std::size_t> keras_slots_per_weight(const Optimizer& optimizer) {
    if (optimizer.name() == "Adam" || optimizer.name() == "SGD") return optimizer.slot_names().size();
    return std::nullopt;
}

// Indices into model.weights() of Keras's model.trainable_variables, in its order.
std::vector<std::size_t> keras_trainable_indices(const Model& model) {
    std::map<const void*, std::size_t> index_of;
    const auto all = model.weights();
    for (std::size_t i = 0; i < all.size(); ++i) index_of[all[i].node().get()] = i;
    std::vector<std::size_t> indices;
    for (const auto& layer : saving_order(model)) {
        if (!layer->trainable) continue;
        const auto weights = layer->weights();
        const auto created_trainable = layer->weights_created_trainable();
        for (std::size_t k : keras_weight_order(*layer)) {
            if (created_trainable[k]) indices.push_back(index_of.at(weights[k].node().get()));
        }
    }
    return indices;
}

// Restores the optimizer's step count and slots. Keras skips a state whose count of variables
// differs from its optimizer's (an optimizer saved before its first step holds only two), and
// so does this.
void restore_optimizer_state(Model& model, const hdf5::Reader& file) {
    if (!model.compiled() || !file.has_group("optimizer/vars")) return;
    Optimizer& optimizer = *model.optimizer();
    const auto per_weight = keras_slots_per_weight(optimizer);
    if (!per_weight) return;
    const auto trainable = keras_trainable_indices(model);
    if (file.members("optimizer/vars").size() != 2 + *per_weight * trainable.size()) return;
    const std::int64_t iterations = file.read_integer("optimizer/vars/0");
    if (iterations < 0) fail(file.what(), fmt::format("the optimizer's step count is {}", iterations));
    const auto weights = model.weights();
    std::vector<std::vector<xt::xarray<float>>> slots(weights.size());
    const auto slot_names = optimizer.slot_names();
    for (std::size_t t = 0; t < trainable.size(); ++t) {
        const std::size_t index = trainable[t];
        for (std::size_t s = 0; s < *per_weight; ++s) {
            const std::string path = "optimizer/vars/" + std::to_string(2 + t * *per_weight + s);
            slots[index].push_back(read_weight(file, path, shape_of(weights[index]),
                                               fmt::format("{}'s {} of trainable weight {}", optimizer.name(), slot_names[s], t)));
        }
    }
    optimizer.slots() = std::move(slots);
    optimizer.set_iterations(iterations);
}

void write_optimizer_state(const Model& model, hdf5::Writer& file) {
    file.create_group("optimizer/vars");
    if (!model.compiled()) return;
    const Optimizer& optimizer = *model.optimizer();
    const auto per_weight = keras_slots_per_weight(optimizer);
    if (!per_weight) return;
    file.write_integer("optimizer/vars/0", optimizer.iterations());
    const float learning_rate = static_cast<float>(optimizer.learning_rate());
    file.write_floats("optimizer/vars/1", {}, std::span<const float>(&learning_rate, 1));
    const auto weights = model.weights();
    const auto trainable = keras_trainable_indices(model);
    for (std::size_t t = 0; t < trainable.size(); ++t) {
        const std::size_t index = trainable[t];
        const auto* slots = index < optimizer.slots().size() ? &optimizer.slots()[index] : nullptr;
        for (std::size_t s = 0; s < *per_weight; ++s) {
            // A weight not updated yet has no slots: Keras's are zeros then.
            const xt::xarray<float> value = slots && s < slots->size() ? (*slots)[s] : xt::xarray<float>(xt::zeros<float>(shape_of(weights[index])));
            file.write_floats("optimizer/vars/" + std::to_string(2 + t * *per_weight + s), shape_of(weights[index]),
                              std::span<const float>(value.data(), value.size()));
        }
    }
}

// The most a weights file may hold for `model`: its weights (float64 at most), the optimizer's
// slots (two a weight for Adam) and HDF5's own structures.
std::uint64_t weights_entry_cap(const Model& model) {
    return weights_file_overhead + weights_file_bytes_per_element * model.count_params();
}

Model model_from_config(const nlohmann::json& config, std::size_t max_weight_elements, const std::string& what) {
    // The initial weights are overwritten by the file's: a private generator draws them, so
    // loading leaves the thread's random stream alone.
    Generator discarded_initial_weights;
    try {
        return Model::from_config(config, {.max_weight_elements = max_weight_elements, .generator = &discarded_initial_weights});
    } catch (const IoError&) {
        throw;
    } catch (const Error& e) {
        fail(what, std::string("model config: ") + e.what());
    }
}

nlohmann::json parse_json(std::span<const std::uint8_t> bytes, const std::string& what) {
    return safetensors::parse_json(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), what);
}

// ---- writing ----

// The model's config as Keras 3's serialize_keras_object gives it (module, registered_name and,
// for a Sequential, its InputLayer and build_config).
nlohmann::json keras3_model_config(const Model& model) {
    nlohmann::json config = model.get_config(ConfigForm::keras3);
    if (!model.is_sequential()) return config;
    config["module"] = "keras";
    config["registered_name"] = nullptr;
    auto& body = config["config"];
    const nlohmann::json input = InputLayer(model.input_shape(), "input_layer").config();
    nlohmann::json layers = nlohmann::json::array();
    layers.push_back({{"module", "keras.layers"}, {"class_name", "InputLayer"}, {"config", input}, {"registered_name", nullptr}});
    for (auto layer : body["layers"]) {
        layer["module"] = "keras.layers";
        layer["registered_name"] = nullptr;
        layers.push_back(std::move(layer));
    }
    body["layers"] = std::move(layers);
    body["trainable"] = true;
    body["dtype"] = "float32";
    config["build_config"] = {{"input_shape", input["batch_shape"]}};
    return config;
}

std::string date_saved() {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm local{};
    localtime_r(&now, &local);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d@%H:%M:%S", &local);
    return text;
}

std::span<const std::uint8_t> as_bytes(const std::string& text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

void require_savable(const Model& model, const char* method) {
    if (!model.built()) throw ValueError(fmt::format("{}: model '{}' is not built", method, model.name()));
    if (const auto problem = model.non_finite_weight()) {
        throw ValueError(fmt::format("{}: model '{}' is not saved: its {}; the existing file, if any, is unchanged", method,
                                     model.name(), *problem));
    }
}

}  // namespace

std::vector<std::shared_ptr<Layer>> saving_order(const Model& model) {
    std::vector<std::shared_ptr<Layer>> order;
    if (model.is_sequential()) {
        for (const auto& layer : model.layers()) {
            if (layer->class_name() != "InputLayer") order.push_back(layer);
        }
        return order;
    }
    // Keras's map_graph: a depth-first walk back from each output numbers the layers as it meets
    // them; a call's depth is the longest path from it to an output; layers go by decreasing
    // depth (a shared layer at its deepest call), ties by their number.
    std::map<const LayerCall*, std::size_t> depth;
    std::map<const Layer*, long> first_seen;
    std::vector<const LayerCall*> finished_order;
    std::set<const LayerCall*> finished;
    const auto& inputs = model.inputs();
    auto is_model_input = [&](const LayerCall* call) {
        return std::any_of(inputs.begin(), inputs.end(), [&](const SymbolicTensor& t) { return &t.producer() == call; });
    };
    std::vector<std::pair<const LayerCall*, std::size_t>> stack;
    for (const auto& output : model.outputs()) {
        stack.push_back({&output.producer(), 0});
        while (!stack.empty()) {
            auto& [call, next_input] = stack.back();
            if (next_input == 0) {
                if (finished.count(call)) {
                    stack.pop_back();
                    continue;
                }
                first_seen.emplace(call->layer.get(), static_cast<long>(first_seen.size()));
            }
            if (!is_model_input(call) && next_input < call->inputs.size()) {
                const LayerCall* parent = &call->inputs[next_input++].producer();
                stack.push_back({parent, 0});
                continue;
            }
            if (finished.insert(call).second) finished_order.push_back(call);
            stack.pop_back();
        }
    }
    std::map<const Layer*, std::size_t> layer_depth;
    for (auto it = finished_order.rbegin(); it != finished_order.rend(); ++it) {
        const LayerCall* call = *it;
        std::size_t d = std::max(depth[call], layer_depth[call->layer.get()]);
        layer_depth[call->layer.get()] = d;
        depth[call] = d;
        if (is_model_input(call)) continue;
        for (const auto& input : call->inputs) depth[&input.producer()] = std::max(depth[&input.producer()], d + 1);
    }
    for (const auto& input : inputs) {
        const Layer* layer = &input.layer();
        if (!layer_depth.count(layer)) {
            // Keras numbers an input that no output needs -1.
            layer_depth[layer] = 0;
            first_seen[layer] = -1;
        }
    }
    for (const auto& layer : model.layers()) {
        if (layer_depth.count(layer.get())) order.push_back(layer);
    }
    std::stable_sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
        const auto da = layer_depth.at(a.get()), db = layer_depth.at(b.get());
        if (da != db) return da > db;
        return first_seen.at(a.get()) < first_seen.at(b.get());
    });
    return order;
}

std::vector<std::string> layer_paths(const std::vector<std::shared_ptr<Layer>>& layers) {
    std::map<std::string, std::size_t> used;
    std::vector<std::string> paths;
    for (const auto& layer : layers) {
        const std::string base = snake_case(layer->class_name());
        const auto found = used.find(base);
        if (found == used.end()) {
            used[base] = 0;
            paths.push_back("layers/" + base);
        } else {
            paths.push_back(fmt::format("layers/{}_{}", base, ++found->second));
        }
    }
    return paths;
}

Model load_archive(std::span<const std::uint8_t> bytes, const std::string& what, const LoadOptions& options) {
    const zip::Reader archive(bytes, what);
    if (!archive.contains(config_entry)) fail(what, "the archive has no config.json: not a Keras model file");
    if (!archive.contains(weights_entry)) {
        fail(what, archive.contains("model.weights.npz")
                       ? "its weights are in model.weights.npz; xtnn reads Keras's default model.weights.h5"
                       : "the archive has no model.weights.h5");
    }
    const nlohmann::json config = parse_json(archive.read(config_entry, max_json_bytes), what + " config.json");
    if (archive.contains(metadata_entry)) parse_json(archive.read(metadata_entry, max_json_bytes), what + " metadata.json");
    std::uint64_t weights_size = 0;
    for (const auto& entry : archive.entries()) {
        if (entry.name == weights_entry) weights_size = entry.size;
    }
    Model model = model_from_config(config, static_cast<std::size_t>(weights_size / 2), what);
    if (!model.built()) fail(what, "config.json gives no input shape, so the weights cannot be placed");
    const auto weights_bytes = archive.read(weights_entry, weights_entry_cap(model));
    const hdf5::Reader weights(weights_bytes, what + " model.weights.h5");
    model.set_weights(read_keras3_weights(model, weights));
    if (options.compile && config.contains("compile_config") && config["compile_config"].is_object()) {
        compile_from_keras(model, config["compile_config"], "optimizer", what);
        restore_optimizer_state(model, weights);
    }
    return model;
}

Model load_legacy_h5(std::span<const std::uint8_t> bytes, const std::string& what, const LoadOptions& options) {
    const hdf5::Reader file(bytes, what);
    const auto model_config = file.string_attribute("", "model_config");
    if (!model_config) {
        if (file.string_list_attribute("", "layer_names")) {
            fail(what, "holds only weights (Keras's save_weights): build the model and call load_weights()");
        }
        if (file.has_group("layers")) fail(what, "holds only weights (Keras 3's .weights.h5): build the model and call load_weights()");
        fail(what, "an HDF5 file without the 'model_config' attribute of a Keras model file");
    }
    if (model_config->size() > max_json_bytes) fail(what, fmt::format("model_config is {} bytes", model_config->size()));
    const nlohmann::json config = parse_json(as_bytes(*model_config), what + " model_config");
    Model model = model_from_config(config, bytes.size() / 2, what);
    if (!model.built()) fail(what, "model_config gives no input shape, so the weights cannot be placed");
    if (!file.has_group("model_weights")) fail(what, "no 'model_weights' group");
    model.set_weights(read_keras2_weights(model, file, "model_weights"));
    if (options.compile) {
        if (const auto training = file.string_attribute("", "training_config")) {
            if (training->size() > max_json_bytes) fail(what, fmt::format("training_config is {} bytes", training->size()));
            compile_from_keras(model, parse_json(as_bytes(*training), what + " training_config"), "optimizer_config", what);
        }
    }
    return model;
}

void load_weights(Model& model, std::span<const std::uint8_t> bytes, const std::string& what) {
    if (zip::has_signature(bytes)) {
        const zip::Reader archive(bytes, what);
        const auto weights_bytes =
            archive.read(weights_entry, weights_entry_cap(model));
        const hdf5::Reader file(weights_bytes, what + " model.weights.h5");
        model.set_weights(read_keras3_weights(model, file));
        return;
    }
    const hdf5::Reader file(bytes, what);
    if (file.has_group("model_weights")) {
        model.set_weights(read_keras2_weights(model, file, "model_weights"));
    } else if (file.string_list_attribute("", "layer_names")) {
        model.set_weights(read_keras2_weights(model, file, ""));
    } else {
        model.set_weights(read_keras3_weights(model, file));
    }
}

std::vector<std::uint8_t> weights_h5_bytes(const Model& model) {
    require_savable(model, "save_weights");
    hdf5::Writer file;
    const auto layers = saving_order(model);
    const auto paths = layer_paths(layers);
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const auto weights = layers[i]->weights();
        file.create_group(paths[i] + "/vars");
        const auto order = keras_weight_order(*layers[i]);
        for (std::size_t k = 0; k < order.size(); ++k) {
            const xt::xarray<float> value = weights[order[k]].value();
            file.write_floats(fmt::format("{}/vars/{}", paths[i], k), shape_of(weights[order[k]]),
                              std::span<const float>(value.data(), value.size()));
        }
    }
    // The model's own variables: none.
    file.create_group("vars");
    write_optimizer_state(model, file);
    return file.finish();
}

std::vector<std::uint8_t> archive_bytes(Model& model) {
    require_savable(model, "save");
    nlohmann::json config = keras3_model_config(model);
    if (model.compiled()) config["compile_config"] = keras3_compile_config(model);
    const std::string config_text = config.dump();
    const std::string metadata_text =
        nlohmann::json{{"keras_version", keras_format_version}, {"date_saved", date_saved()}, {"saved_by", "xtnn"}}.dump();
    const auto weights = weights_h5_bytes(model);
    return zip::write({{metadata_entry, as_bytes(metadata_text)}, {config_entry, as_bytes(config_text)}, {weights_entry, weights}});
}

}  // namespace xtnn::keras
