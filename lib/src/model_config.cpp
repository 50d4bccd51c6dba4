// Model configs in Keras's JSON forms: Sequential ({"class_name": "Sequential", "config":
// {"layers": [...]}}) and functional (layers with their inbound_nodes, input_layers,
// output_layers), read in both Keras 2's and Keras 3's forms; Sequential's own methods.

#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>

#include "model_internals.hpp"
#include "xtnn/json.hpp"
#include "xtnn/layers.hpp"
#include "xtnn/sequential.hpp"

namespace xtnn {

namespace {

// A layer called more often than this in one model is refused (a shared layer is called a few times).
constexpr std::size_t max_calls_per_layer = 256;

nlohmann::json batch_shape_json(const Shape& shape) {
    nlohmann::json dims = nlohmann::json::array({nullptr});
    for (auto extent : shape) dims.push_back(extent);
    return dims;
}

}  // namespace

nlohmann::json Model::get_config(ConfigForm form) const {
    if (sequential_) {
        nlohmann::json layers = nlohmann::json::array();
        for (const auto& layer : layers_) layers.push_back({{"class_name", layer->class_name()}, {"config", layer->config()}});
        nlohmann::json config = {{"name", name_}, {"layers", layers}};
        if (built()) config["build_input_shape"] = batch_shape_json(input_shape());
        return {{"class_name", "Sequential"}, {"config", config}};
    }
    const auto calls = layer_calls();
    const auto node_index = node_indices(calls);
    const bool keras2 = form == ConfigForm::keras2;
    auto history = [&](const SymbolicTensor& tensor) {
        return nlohmann::json::array({tensor.name(), node_index.at(&tensor.producer()), 0});
    };
    nlohmann::json layers = nlohmann::json::array();
    std::map<const Layer*, std::size_t> entry_of;
    for (const auto& call : calls) {
        const Layer& layer = *call->layer;
        if (!entry_of.count(&layer)) {
            entry_of[&layer] = layers.size();
            nlohmann::json entry = {{"class_name", layer.class_name()},
                                    {"config", layer.config()},
                                    {"name", layer.name()},
                                    {"inbound_nodes", nlohmann::json::array()}};
            if (keras2 && call->inputs.empty()) {
                entry["config"].erase("batch_shape");
                entry["config"]["batch_input_shape"] = batch_shape_json(call->output_shape);
            }
            if (!keras2) {
                entry["module"] = "keras.layers";
                entry["registered_name"] = nullptr;
            }
            if (!keras2 && !call->inputs.empty()) {
                nlohmann::json shapes = nlohmann::json::array();
                for (const auto& input : call->inputs) shapes.push_back(batch_shape_json(input.shape()));
                entry["build_config"] = {{"input_shape", call->inputs.size() == 1 ? shapes[0] : shapes}};
            }
            layers.push_back(entry);
        }
        if (call->inputs.empty()) continue;
        if (keras2) {
            nlohmann::json node = nlohmann::json::array();
            for (const auto& input : call->inputs) {
                auto reference = history(input);
                reference.push_back(nlohmann::json::object());
                node.push_back(reference);
            }
            layers[entry_of[&layer]]["inbound_nodes"].push_back(node);
            continue;
        }
        nlohmann::json tensors = nlohmann::json::array();
        for (const auto& input : call->inputs) {
            tensors.push_back({{"class_name", "__keras_tensor__"},
                               {"config", {{"shape", batch_shape_json(input.shape())}, {"dtype", "float32"},
                                           {"keras_history", history(input)}}}});
        }
        nlohmann::json args = nlohmann::json::array({call->inputs.size() == 1 ? tensors[0] : tensors});
        layers[entry_of[&layer]]["inbound_nodes"].push_back({{"args", args}, {"kwargs", nlohmann::json::object()}});
    }
    nlohmann::json input_layers = nlohmann::json::array(), output_layers = nlohmann::json::array();
    for (const auto& input : inputs_) input_layers.push_back(history(input));
    for (const auto& output : outputs_) output_layers.push_back(history(output));
    nlohmann::json config = {{"class_name", "Functional"},
                             {"config",
                              {{"name", name_}, {"trainable", true}, {"layers", layers}, {"input_layers", input_layers},
                               {"output_layers", output_layers}}}};
    if (!keras2) {
        // Keras 3 imports the class from this module: "keras.Functional" is not exported.
        config["module"] = "keras.src.models.functional";
        config["registered_name"] = "Functional";
    }
    return config;
}

std::string Model::to_json(int indent, ConfigForm form) const { return get_config(form).dump(indent); }

namespace {

std::size_t add_capped(std::size_t total, std::size_t elements) {
    return elements > std::numeric_limits<std::size_t>::max() - total ? std::numeric_limits<std::size_t>::max()
                                                                     : total + elements;
}

void require_weight_budget(std::size_t planned, const FromConfigOptions& options, const char* where) {
    if (options.max_weight_elements && planned > *options.max_weight_elements) {
        throw ValueError(fmt::format("{}: the layers would create {} weight values, more than the {} allowed", where, planned,
                                     *options.max_weight_elements));
    }
}

// The number of weight values a stack of layers would create, computed from shapes alone.
std::size_t planned_weight_elements(const std::vector<std::unique_ptr<Layer>>& layers, Shape shape) {
    std::size_t total = 0;
    for (const auto& layer : layers) {
        for (const auto& weight_shape : layer->weight_shapes(shape)) {
            total = add_capped(total, checked_element_count(weight_shape, layer->class_name() + " '" + layer->name() +
                                                                              "': weight shape"));
        }
        shape = layer->output_shape(shape);
    }
    return total;
}

std::string model_name(const nlohmann::json& config, const char* where, const char* fallback) {
    if (!config.contains("name")) return fallback;
    if (!config["name"].is_string()) {
        throw ValueError(std::string(where) + ": the model's 'name' must be a string, got " + json::excerpt(config["name"]));
    }
    return config["name"].get<std::string>();
}

Sequential sequential_from_config(const nlohmann::json& model_config, const FromConfigOptions& options) {
    const auto& config = model_config["config"];
    if (!config.contains("layers") || !config["layers"].is_array()) {
        throw ValueError("Sequential::from_config: config has no 'layers' list");
    }
    if (config["layers"].size() > max_model_layers) {
        throw ValueError("Sequential::from_config: " + std::to_string(config["layers"].size()) +
                         " layers exceed the limit of " + std::to_string(max_model_layers));
    }
    std::optional<Shape> input_shape;
    std::vector<std::unique_ptr<Layer>> layers;
    for (const auto& entry : config["layers"]) {
        if (!entry.is_object() || !entry.contains("class_name") || !entry["class_name"].is_string()) {
            throw ValueError("Sequential::from_config: each layer needs a 'class_name', got " + json::excerpt(entry));
        }
        const auto class_name = entry["class_name"].get<std::string>();
        const auto& layer_config = entry.contains("config") ? entry["config"] : nlohmann::json::object();
        if (class_name == "InputLayer") {
            // Keras 3 writes the input as a layer of its own; a stack keeps it on the first real layer.
            input_shape = input_shape_from_config(layer_config);
            continue;
        }
        layers.push_back(make_layer(class_name, layer_config));
    }
    if (!input_shape && !layers.empty()) input_shape = layers.front()->declared_input_shape();
    if (!input_shape && config.contains("build_input_shape")) {
        input_shape = input_shape_from_config({{"batch_input_shape", config["build_input_shape"]}});
    }
    if (input_shape) require_weight_budget(planned_weight_elements(layers, *input_shape), options, "Sequential::from_config");
    Generator& generator = options.generator ? *options.generator : thread_generator();
    Sequential model(model_name(config, "Sequential::from_config", "sequential"));
    for (auto& layer : layers) model.add(std::shared_ptr<Layer>(std::move(layer)), generator);
    if (!model.built() && model.size() > 0 && input_shape) model.build(*input_shape, generator);
    return model;
}

// A reference to a layer call's output: [layer name, node index, tensor index].
struct TensorReference {
    std::string layer;
    std::size_t node = 0;
};

TensorReference tensor_reference(const nlohmann::json& value, const std::string& where) {
    // Keras 3: {"class_name": "__keras_tensor__", "config": {"keras_history": [name, node, tensor]}}.
    const nlohmann::json* history = &value;
    if (value.is_object()) {
        if (!value.contains("config") || !value["config"].is_object() || !value["config"].contains("keras_history")) {
            throw ValueError(where + ": expected a tensor with 'keras_history', got " + json::excerpt(value));
        }
        history = &value["config"]["keras_history"];
    }
    // Keras 2: [name, node, tensor] or [name, node, tensor, kwargs].
    if (!history->is_array() || history->size() < 3 || history->size() > 4 || !(*history)[0].is_string()) {
        throw ValueError(where + ": expected [layer name, node index, tensor index], got " + json::excerpt(*history));
    }
    const std::size_t node = json::whole_number((*history)[1], max_calls_per_layer, where + ": node index");
    if (json::whole_number((*history)[2], 0, where + ": tensor index") != 0) {
        throw ValueError(where + ": tensor index must be 0 (layers here have one output)");
    }
    return {(*history)[0].get<std::string>(), node};
}

// The tensors one call reads, from a node of either Keras form.
std::vector<TensorReference> node_inputs(const nlohmann::json& node, const std::string& where) {
    std::vector<TensorReference> inputs;
    if (node.is_object()) {
        // Keras 3: {"args": [tensor or [tensors...]], "kwargs": {...}}
        if (!node.contains("args") || !node["args"].is_array() || node["args"].size() != 1) {
            throw ValueError(where + ": expected {\"args\": [tensors], \"kwargs\": {}}, got " + json::excerpt(node));
        }
        const auto& argument = node["args"][0];
        if (argument.is_array()) {
            for (const auto& tensor : argument) inputs.push_back(tensor_reference(tensor, where));
        } else {
            inputs.push_back(tensor_reference(argument, where));
        }
    } else if (node.is_array()) {
        // Keras 2: [[name, node, tensor, kwargs], ...]
        for (const auto& tensor : node) inputs.push_back(tensor_reference(tensor, where));
    } else {
        throw ValueError(where + ": a node must be an object or a list, got " + json::excerpt(node));
    }
    if (inputs.empty() || inputs.size() > max_model_layers) throw ValueError(where + ": a call reads 1 to " + std::to_string(max_model_layers) + " tensors");
    return inputs;
}

// input_layers / output_layers: a list of references, or Keras 3's single reference.
std::vector<TensorReference> end_references(const nlohmann::json& config, const char* key) {
    const std::string where = std::string("Model::from_config: '") + key + "'";
    if (!config.contains(key) || !config[key].is_array() || config[key].empty()) {
        throw ValueError(where + " must be a list of [layer name, node index, tensor index]");
    }
    const auto& value = config[key];
    if (value[0].is_string()) return {tensor_reference(value, where)};
    std::vector<TensorReference> references;
    for (const auto& entry : value) references.push_back(tensor_reference(entry, where));
    return references;
}

struct LayerEntry {
    std::string name;
    std::shared_ptr<Layer> layer;
    std::vector<std::vector<TensorReference>> nodes;
};

Model functional_from_config(const nlohmann::json& model_config, const FromConfigOptions& options) {
    const char* where = "Model::from_config";
    const auto& config = model_config["config"];
    if (!config.contains("layers") || !config["layers"].is_array()) throw ValueError(std::string(where) + ": config has no 'layers' list");
    if (config["layers"].size() > max_model_layers) {
        throw ValueError(fmt::format("{}: {} layers exceed the limit of {}", where, config["layers"].size(), max_model_layers));
    }
    std::vector<LayerEntry> entries;
    std::map<std::string, std::size_t> by_name;
    for (const auto& entry : config["layers"]) {
        if (!entry.is_object() || !entry.contains("class_name") || !entry["class_name"].is_string()) {
            throw ValueError(std::string(where) + ": each layer needs a 'class_name', got " + json::excerpt(entry));
        }
        const auto class_name = entry["class_name"].get<std::string>();
        nlohmann::json layer_config = entry.contains("config") ? entry["config"] : nlohmann::json::object();
        std::string name = entry.contains("name") && entry["name"].is_string() ? entry["name"].get<std::string>() : "";
        if (name.empty() && layer_config.is_object() && layer_config.contains("name") && layer_config["name"].is_string()) {
            name = layer_config["name"].get<std::string>();
        }
        if (name.empty()) throw ValueError(std::string(where) + ": a " + class_name + " layer has no name");
        if (layer_config.is_object()) layer_config["name"] = name;
        if (by_name.count(name)) throw ValueError(std::string(where) + ": two layers are named '" + name + "'");
        LayerEntry parsed{name, std::shared_ptr<Layer>(make_layer(class_name, layer_config)), {}};
        const std::string at = std::string(where) + ": layer '" + name + "'";
        if (entry.contains("inbound_nodes")) {
            const auto& nodes = entry["inbound_nodes"];
            if (!nodes.is_array() || nodes.size() > max_calls_per_layer) {
                throw ValueError(at + ": 'inbound_nodes' must be a list of at most " + std::to_string(max_calls_per_layer) + " calls");
            }
            for (const auto& node : nodes) parsed.nodes.push_back(node_inputs(node, at));
        }
        const bool is_input = dynamic_cast<InputLayer*>(parsed.layer.get()) != nullptr;
        if (is_input != parsed.nodes.empty()) {
            throw ValueError(at + (is_input ? ": an InputLayer is called on nothing" : ": the layer is never called (no inbound_nodes)"));
        }
        by_name[name] = entries.size();
        entries.push_back(std::move(parsed));
    }

    // Calls in an order where each comes after the calls it reads: a layer's calls are taken in
    // turn, whenever every tensor they read exists; what never becomes ready is a cycle or a
    // reference to something missing.
    struct Ready {
        std::size_t entry;
        std::size_t node;
    };
    std::vector<Ready> order;
    std::map<std::string, std::size_t> made;  // calls made so far, by layer name
    for (const auto& entry : entries) {
        if (entry.nodes.empty()) {
            made[entry.name] = 1;
            order.push_back({by_name[entry.name], 0});
        }
    }
    std::vector<std::size_t> next(entries.size(), 0);
    for (bool progress = true; progress;) {
        progress = false;
        for (std::size_t e = 0; e < entries.size(); ++e) {
            while (next[e] < entries[e].nodes.size()) {
                bool ready = true;
                for (const auto& input : entries[e].nodes[next[e]]) {
                    const auto found = made.find(input.layer);
                    ready = ready && found != made.end() && input.node < found->second;
                }
                if (!ready) break;
                order.push_back({e, next[e]++});
                ++made[entries[e].name];
                progress = true;
            }
        }
    }
    for (std::size_t e = 0; e < entries.size(); ++e) {
        if (next[e] < entries[e].nodes.size()) {
            std::string waits;
            for (const auto& input : entries[e].nodes[next[e]]) {
                if (!by_name.count(input.layer)) {
                    throw ValueError(fmt::format("{}: layer '{}' reads from '{}', which is not a layer of the model", where,
                                                 entries[e].name, input.layer));
                }
                waits += (waits.empty() ? "" : ", ") + fmt::format("'{}' call {}", input.layer, input.node);
            }
            throw ValueError(fmt::format("{}: call {} of layer '{}' waits for {}, which never comes: the graph has a cycle or "
                                         "refers to a call that does not exist",
                                         where, next[e], entries[e].name, waits));
        }
    }

    // Shapes first, so that the weights are counted before any is allocated.
    std::map<std::pair<std::string, std::size_t>, Shape> shapes;
    std::size_t planned = 0;
    std::set<std::size_t> counted;
    for (const auto& [e, node] : order) {
        const auto& entry = entries[e];
        if (entry.nodes.empty()) {
            shapes[{entry.name, 0}] = static_cast<InputLayer&>(*entry.layer).shape();
            continue;
        }
        std::vector<Shape> input_shapes;
        for (const auto& input : entry.nodes[node]) input_shapes.push_back(shapes.at({input.layer, input.node}));
        shapes[{entry.name, node}] = entry.layer->compute_output_shape(input_shapes);
        if (input_shapes.size() == 1 && counted.insert(e).second) {
            for (const auto& weight_shape : entry.layer->weight_shapes(input_shapes[0])) {
                planned = add_capped(planned, checked_element_count(weight_shape, "layer '" + entry.name + "': weight shape"));
            }
        }
    }
    require_weight_budget(planned, options, where);

    Generator& generator = options.generator ? *options.generator : thread_generator();
    std::map<std::pair<std::string, std::size_t>, SymbolicTensor> tensors;
    for (const auto& [e, node] : order) {
        const auto& entry = entries[e];
        if (entry.nodes.empty()) {
            tensors.emplace(std::pair{entry.name, std::size_t(0)}, Input(std::static_pointer_cast<InputLayer>(entry.layer)));
            continue;
        }
        std::vector<SymbolicTensor> inputs;
        for (const auto& input : entry.nodes[node]) inputs.push_back(tensors.at({input.layer, input.node}));
        tensors.emplace(std::pair{entry.name, node}, call_layer(entry.layer, inputs, generator));
    }
    auto ends = [&](const char* key) {
        std::vector<SymbolicTensor> result;
        for (const auto& reference : end_references(config, key)) {
            const auto found = tensors.find({reference.layer, reference.node});
            if (found == tensors.end()) {
                throw ValueError(fmt::format("{}: '{}' names call {} of '{}', which does not exist", where, key, reference.node,
                                             reference.layer));
            }
            result.push_back(found->second);
        }
        return result;
    };
    return Model(ends("input_layers"), ends("output_layers"), model_name(config, where, "functional"));
}

void require_model_config(const nlohmann::json& model_config, const char* where) {
    if (!model_config.is_object() || !model_config.contains("class_name") || !model_config["class_name"].is_string() ||
        !model_config.contains("config") || !model_config["config"].is_object()) {
        throw ValueError(std::string(where) + ": expected {\"class_name\": \"Sequential\" or \"Functional\", \"config\": {...}}, got " +
                         json::excerpt(model_config));
    }
}

template <class Read>
auto reading(const nlohmann::json& config, const char* where, Read read) {
    json::require_depth(config, where);
    try {
        require_model_config(config, where);
        return read();
    } catch (const nlohmann::json::exception& e) {
        throw ValueError(std::string(where) + ": " + e.what());
    }
}

}  // namespace

Model Model::from_config(const nlohmann::json& config, const FromConfigOptions& options) {
    return reading(config, "Model::from_config", [&]() -> Model {
        const auto class_name = config["class_name"].get<std::string>();
        if (class_name == "Sequential") return sequential_from_config(config, options);
        if (class_name == "Functional" || class_name == "Model") return functional_from_config(config, options);
        throw ValueError("Model::from_config: unknown model class '" + class_name + "'; known: Functional, Model, Sequential");
    });
}

Model Model::from_json(const std::string& text) { return from_config(json::parse(text, "Model::from_json")); }

Sequential::Sequential(std::string name) : Model(std::move(name)) {}

Sequential::Sequential(Model&& model) : Model(std::move(model)) {
    if (!is_sequential()) {
        throw ValueError("Sequential: model '" + name() + "' is functional, not a stack of layers; keep it as an xtnn::Model");
    }
}

void Sequential::add(const std::string& class_name, const nlohmann::json& config) {
    add(std::shared_ptr<Layer>(make_layer(class_name, config)));
}

void Sequential::add(const std::string& class_name) { add(class_name, nlohmann::json::object()); }

void Sequential::build(const Shape& input_shape, Generator& generator) {
    if (built() && this->input_shape() == input_shape) return;
    connect_stack(input_shape, generator);
}

Sequential Sequential::from_config(const nlohmann::json& config, const FromConfigOptions& options) {
    return reading(config, "Sequential::from_config", [&] {
        if (config["class_name"] != "Sequential") {
            throw ValueError("Sequential::from_config: expected {\"class_name\": \"Sequential\", \"config\": {...}}, got " +
                             json::excerpt(config));
        }
        return sequential_from_config(config, options);
    });
}

Sequential Sequential::from_json(const std::string& text) { return from_config(json::parse(text, "Sequential::from_json")); }

}  // namespace xtnn
