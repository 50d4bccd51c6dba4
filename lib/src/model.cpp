// The model's graph: checking and ordering the calls from inputs to outputs, the plan that runs
// them, and what the model knows of its layers and weights. Training is in training.cpp, configs
// in model_config.cpp.

#include "xtnn/model.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "model_internals.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/layers/convolutional.hpp"
#include "xtnn/layers/core.hpp"
#include "xtnn/layers/normalization.hpp"

namespace xtnn {

namespace {

bool is_input_call(const LayerCall& call) { return call.inputs.empty(); }

// The layer's name, or its class while it has none yet.
std::string label(const Layer& layer) { return layer.name().empty() ? layer.class_name() : layer.name(); }

// "'pixels'", or "an unnamed Input of shape (None, 2)".
std::string input_label(const SymbolicTensor& input) {
    return input.name().empty() ? "an unnamed Input of shape " + batch_shape_to_string(input.shape()) : "'" + input.name() + "'";
}

std::string names_of(const std::vector<SymbolicTensor>& tensors) {
    std::string text;
    for (const auto& tensor : tensors) text += (text.empty() ? "" : ", ") + input_label(tensor);
    return text;
}

}  // namespace

Model::Model(std::string name) : name_(std::move(name)), sequential_(true) {}

Model::Model(const SymbolicTensor& input, const SymbolicTensor& output, std::string name)
    : Model(std::vector<SymbolicTensor>{input}, std::vector<SymbolicTensor>{output}, std::move(name)) {}

Model::Model(const std::vector<SymbolicTensor>& inputs, const SymbolicTensor& output, std::string name)
    : Model(inputs, std::vector<SymbolicTensor>{output}, std::move(name)) {}

Model::Model(const std::vector<SymbolicTensor>& inputs, const std::vector<SymbolicTensor>& outputs, std::string name)
    : name_(std::move(name)) {
    set_graph(inputs, outputs);
}

Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

std::vector<std::size_t> Model::Plan::reader_counts() const {
    std::vector<std::size_t> readers(slot_count, 0);
    for (const auto& step : steps) {
        for (auto slot : step.inputs) ++readers[slot];
    }
    return readers;
}

std::vector<std::optional<std::size_t>> Model::Plan::producer_steps() const {
    std::vector<std::optional<std::size_t>> producer(slot_count);
    for (std::size_t i = 0; i < steps.size(); ++i) producer[steps[i].output] = i;
    return producer;
}

void Model::Plan::fold_relu_activations() {
    const std::vector<std::size_t> readers = reader_counts();
    std::vector<std::optional<std::size_t>> producer = producer_steps();
    std::vector<bool> folded(steps.size(), false);
    for (std::size_t i = 0; i < steps.size(); ++i) {
        const auto* activation = dynamic_cast<const Activation*>(steps[i].layer);
        if (!activation || activation->activation() != "relu" || steps[i].inputs.size() != 1) continue;
        const std::size_t input = steps[i].inputs[0];
        if (!producer[input] || readers[input] != 1 || is_output[input] || is_output[steps[i].output]) continue;
        Step& source = steps[*producer[input]];
        if (!source.layer->fuses_relu() || source.then_relu) continue;
        source.then_relu = true;
        source.output = steps[i].output;
        producer[source.output] = *producer[input];
        folded[i] = true;
    }
    std::vector<Step> kept;
    for (std::size_t i = 0; i < steps.size(); ++i) {
        if (!folded[i]) kept.push_back(std::move(steps[i]));
    }
    steps = std::move(kept);
}

void Model::Plan::fold_batch_norm_into_convolutions() {
    const std::vector<std::size_t> readers = reader_counts();
    const std::vector<std::optional<std::size_t>> producer = producer_steps();
    for (std::size_t i = 0; i < steps.size(); ++i) {
        if (!dynamic_cast<const BatchNormalization*>(steps[i].layer) || steps[i].inputs.size() != 1) continue;
        const std::size_t input = steps[i].inputs[0];
        if (!producer[input] || readers[input] != 1 || is_output[input] || is_output[steps[i].output]) continue;
        Step& source = steps[*producer[input]];
        const auto* convolution = dynamic_cast<const Conv2D*>(source.layer);
        if (!convolution || convolution->options().activation != "linear" || source.then_relu || source.inputs.size() != 1) {
            continue;
        }
        source.normalized_by = i;
        steps[i].done_by_convolution = true;
    }
}

void Model::Plan::fold_input_rescaling() {
    const std::vector<std::size_t> readers = reader_counts();
    input_scales.assign(input_slots.size(), 1.0f);
    for (auto& step : steps) {
        const auto* rescaling = dynamic_cast<const Rescaling*>(step.layer);
        if (!rescaling || rescaling->offset() != 0.0 || step.inputs.size() != 1 || step.then_relu) continue;
        const auto input = std::find(input_slots.begin(), input_slots.end(), step.inputs[0]);
        if (input == input_slots.end() || readers[*input] != 1 || is_output[*input] || is_output[step.output]) continue;
        step.done_by_gather = true;
        input_scales[std::size_t(input - input_slots.begin())] = static_cast<float>(rescaling->scale());
    }
}

void Model::set_graph(const std::vector<SymbolicTensor>& inputs, const std::vector<SymbolicTensor>& outputs) {
    const std::string where = "Model '" + name_ + "'";
    if (inputs.empty() || outputs.empty()) throw ValueError(where + ": needs at least one input and one output");
    std::set<const LayerCall*> input_calls;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!is_input_call(inputs[i].producer())) {
            throw ValueError(where + ": input " + std::to_string(i) + " is the output of layer '" + label(inputs[i].layer()) +
                             "', not an Input(); a model's inputs are made with xtnn::Input");
        }
        if (!input_calls.insert(&inputs[i].producer()).second) {
            throw ValueError(where + ": input " + input_label(inputs[i]) + " is given twice");
        }
    }
    // Every call the outputs depend on, found from the outputs backwards.
    std::map<const LayerCall*, std::shared_ptr<const LayerCall>> reached;
    std::vector<std::pair<std::shared_ptr<const LayerCall>, std::size_t>> pending;
    for (std::size_t o = 0; o < outputs.size(); ++o) pending.push_back({outputs[o].producer_handle(), o});
    std::set<const LayerCall*> used_inputs;
    while (!pending.empty()) {
        auto [call, output] = pending.back();
        pending.pop_back();
        if (!reached.emplace(call.get(), call).second) continue;
        if (reached.size() > 64 * max_model_layers) throw ValueError(where + ": the graph has more than " + std::to_string(64 * max_model_layers) + " layer calls");
        if (is_input_call(*call)) {
            if (!input_calls.count(call.get())) {
                std::string layer_name = call->layer->name().empty() ? "an unnamed Input" : "'" + call->layer->name() + "'";
                throw ValueError(where + ": output " + std::to_string(output) + " ('" + label(outputs[output].layer()) +
                                 "') depends on input " + layer_name + " of shape " + batch_shape_to_string(call->output_shape) +
                                 ", which is not among the model's inputs (" + names_of(inputs) +
                                 "): the graph is disconnected");
            }
            used_inputs.insert(call.get());
        }
        for (const auto& input : call->inputs) pending.push_back({input.producer_handle(), output});
    }
    for (const auto& input : inputs) {
        if (!used_inputs.count(&input.producer())) {
            throw ValueError(where + ": input " + input_label(input) + " is not used by any output");
        }
    }
    // Model inputs first, in their order; then the calls in creation order, which is topological
    // (a call is made after the tensors it reads).
    std::vector<std::shared_ptr<const LayerCall>> calls;
    for (const auto& input : inputs) calls.push_back(input.producer_handle());
    std::vector<std::shared_ptr<const LayerCall>> rest;
    for (const auto& [raw, call] : reached) {
        if (!is_input_call(*call)) rest.push_back(call);
    }
    std::sort(rest.begin(), rest.end(), [](const auto& a, const auto& b) { return a->serial < b->serial; });
    calls.insert(calls.end(), rest.begin(), rest.end());

    // The layers, each once, in the order of their first call; unnamed ones get Keras's names.
    std::vector<std::shared_ptr<Layer>> layers;
    std::set<const Layer*> seen;
    for (const auto& call : calls) {
        if (seen.insert(call->layer.get()).second) layers.push_back(call->layer);
    }
    if (layers.size() > max_model_layers + inputs.size()) {
        throw ValueError(where + ": a model has at most " + std::to_string(max_model_layers) + " layers");
    }
    std::set<std::string> taken;
    for (const auto& layer : layers) {
        if (layer->name().empty()) continue;
        if (!taken.insert(layer->name()).second) {
            throw ValueError(where + ": two different layers are named '" + layer->name() + "'; layer names must be unique");
        }
    }
    for (const auto& layer : layers) {
        if (!layer->name().empty()) continue;
        const std::string base = dynamic_cast<const InputLayer*>(layer.get()) ? "input_layer" : snake_case(layer->class_name());
        std::string candidate = base;
        for (int suffix = 1; taken.count(candidate); ++suffix) candidate = base + "_" + std::to_string(suffix);
        layer->set_name(candidate);
        taken.insert(candidate);
    }

    auto plan = std::make_shared<Plan>();
    plan->calls = calls;
    plan->slot_count = calls.size();
    std::map<const LayerCall*, std::size_t> slot_of;
    for (std::size_t i = 0; i < calls.size(); ++i) slot_of[calls[i].get()] = i;
    for (const auto& input : inputs) plan->input_slots.push_back(slot_of.at(&input.producer()));
    for (std::size_t i = inputs.size(); i < calls.size(); ++i) {
        Plan::Step& step = plan->steps.emplace_back();
        step.layer = calls[i]->layer.get();
        step.output = i;
        for (const auto& input : calls[i]->inputs) step.inputs.push_back(slot_of.at(&input.producer()));
    }
    for (const auto& output : outputs) plan->output_slots.push_back(slot_of.at(&output.producer()));
    plan->is_output.assign(calls.size(), false);
    for (auto slot : plan->output_slots) plan->is_output[slot] = true;
    plan->fold_relu_activations();
    plan->fold_input_rescaling();
    plan->fold_batch_norm_into_convolutions();
    std::vector<std::size_t> last_reader(calls.size(), 0);
    plan->read.assign(calls.size(), false);
    for (std::size_t i = 0; i < plan->steps.size(); ++i) {
        for (auto slot : plan->steps[i].inputs) {
            plan->read[slot] = true;
            last_reader[slot] = i;
        }
    }
    // A value is released after the last step that reads it, unless it is an output.
    for (std::size_t slot = 0; slot < calls.size(); ++slot) {
        if (plan->read[slot] && !plan->is_output[slot]) plan->steps[last_reader[slot]].release.push_back(slot);
    }

    layers_.clear();
    for (const auto& layer : layers) {
        if (!(sequential_ && dynamic_cast<const InputLayer*>(layer.get()))) layers_.push_back(layer);
    }
    inputs_ = inputs;
    outputs_ = outputs;
    plan_ = std::move(plan);
    if (compiled()) heads_ = make_heads(compile_options_);
}

std::vector<SplitOutput> Model::run(const std::vector<Tensor>& inputs, bool training, bool split, bool gathered) const {
    const Plan& plan = *plan_;
    std::vector<std::optional<Tensor>> slots(plan.slot_count);
    for (std::size_t i = 0; i < inputs.size(); ++i) slots[plan.input_slots[i]] = inputs[i];
    // What a split output's layer exposes before its activation, by slot.
    std::vector<std::optional<SplitOutput>> split_outputs(split ? plan.slot_count : 0);
    std::vector<Tensor> arguments;
    const bool inference = !training && !grad_enabled();
    for (const auto& step : plan.steps) {
        if (inference && step.done_by_convolution) {
            // The Conv2D step before it wrote this step's output, and never its input.
            for (auto slot : step.release) slots[slot].reset();
            continue;
        }
        arguments.clear();
        for (auto slot : step.inputs) arguments.push_back(*slots[slot]);
        std::optional<LayerScope> scope;
        if (anomaly_detection_enabled()) scope.emplace(step.layer->name());
        if (inference && step.normalized_by) {
            const Plan::Step& normalization = plan.steps[*step.normalized_by];
            slots[normalization.output] = static_cast<const BatchNormalization&>(*normalization.layer)
                                              .call_after_convolution(arguments[0], static_cast<Conv2D&>(*step.layer),
                                                                      normalization.then_relu);
        } else if (gathered && step.done_by_gather) {
            slots[step.output] = arguments[0];
        } else if (split && plan.is_output[step.output]) {
            SplitOutput result = step.layer->call_split(arguments, training);
            // An output that other layers read too is passed on activated.
            if (plan.read[step.output]) slots[step.output] = result.activated();
            split_outputs[step.output] = std::move(result);
        } else if (step.then_relu) {
            slots[step.output] = step.layer->call_then_relu(arguments, training);
        } else {
            slots[step.output] = step.layer->call_inputs(arguments, training);
        }
        for (auto slot : step.release) slots[slot].reset();
    }
    std::vector<SplitOutput> results;
    for (auto slot : plan.output_slots) {
        results.push_back(split && split_outputs[slot] ? *split_outputs[slot] : SplitOutput{*slots[slot], "linear"});
    }
    return results;
}

bool Model::built() const { return plan_ != nullptr; }

std::vector<std::shared_ptr<const LayerCall>> Model::layer_calls() const {
    return plan_ ? plan_->calls : std::vector<std::shared_ptr<const LayerCall>>{};
}

Layer& Model::layer(std::size_t index) const {
    if (index >= layers_.size()) {
        throw ValueError("Model::layer: index " + std::to_string(index) + " out of range for " +
                         std::to_string(layers_.size()) + " layers");
    }
    return *layers_[index];
}

Layer& Model::layer(const std::string& name) const {
    for (const auto& layer : layers_) {
        if (layer->name() == name) return *layer;
    }
    throw ValueError("Model::layer: no layer named '" + name + "' in model '" + name_ + "'");
}

namespace {

std::vector<std::string> names(const std::vector<SymbolicTensor>& tensors) {
    std::vector<std::string> result;
    for (const auto& tensor : tensors) result.push_back(tensor.name());
    return result;
}

std::vector<Shape> shapes(const std::vector<SymbolicTensor>& tensors) {
    std::vector<Shape> result;
    for (const auto& tensor : tensors) result.push_back(tensor.shape());
    return result;
}

}  // namespace

std::vector<std::string> Model::input_names() const { return names(inputs_); }
std::vector<std::string> Model::output_names() const { return names(outputs_); }

std::vector<Shape> Model::input_shapes() const {
    if (!built()) throw ValueError("model '" + name_ + "' is not built: give the first layer an input_shape or call build()");
    return shapes(inputs_);
}

std::vector<Shape> Model::output_shapes() const {
    if (!built()) throw ValueError("model '" + name_ + "' is not built: give the first layer an input_shape or call build()");
    return shapes(outputs_);
}

Shape Model::input_shape() const {
    const auto all = input_shapes();
    if (all.size() != 1) throw ValueError("model '" + name_ + "' has " + std::to_string(all.size()) + " inputs; use input_shapes()");
    return all[0];
}

Shape Model::output_shape() const {
    const auto all = output_shapes();
    if (all.size() != 1) {
        throw ValueError("model '" + name_ + "' has " + std::to_string(all.size()) + " outputs; use output_shapes()");
    }
    return all[0];
}

std::size_t Model::count_params() const {
    std::size_t total = 0;
    for (const auto& layer : layers_) total += layer->count_params();
    return total;
}

std::size_t Model::count_trainable_params() const {
    std::size_t total = 0;
    for (const auto& layer : layers_) total += layer->count_trainable_params();
    return total;
}

std::vector<Tensor> Model::trainable_weights() const {
    std::vector<Tensor> selected;
    for (const auto& layer : layers_) {
        for (auto& weight : layer->trainable_weights()) selected.push_back(weight);
    }
    return selected;
}

std::vector<Tensor> Model::weights() const {
    std::vector<Tensor> all;
    for (const auto& layer : layers_) {
        for (auto& weight : layer->weights()) all.push_back(weight);
    }
    return all;
}

std::vector<xt::xarray<float>> Model::get_weights() const {
    std::vector<xt::xarray<float>> values;
    for (const auto& weight : weights()) values.push_back(weight.value());
    return values;
}

void Model::set_weights(const std::vector<xt::xarray<float>>& values) {
    auto all = weights();
    if (values.size() != all.size()) {
        throw ValueError("set_weights: model '" + name_ + "' has " + std::to_string(all.size()) + " weights, got " +
                         std::to_string(values.size()));
    }
    for (std::size_t i = 0; i < all.size(); ++i) {
        if (values[i].shape() != all[i].shape()) {
            throw ShapeError("set_weights: weight " + std::to_string(i) + " has shape " + shape_to_string(all[i].shape()) +
                             ", got " + shape_to_string(values[i].shape()));
        }
    }
    for (std::size_t i = 0; i < all.size(); ++i) std::copy(values[i].begin(), values[i].end(), all[i].mutable_value().begin());
}

std::optional<std::string> Model::non_finite_weight() const {
    for (const auto& layer : layers_) {
        const auto weights = layer->weights();
        for (std::size_t w = 0; w < weights.size(); ++w) {
            const auto& values = weights[w].value();
            if (const auto index = first_non_finite({values.data(), values.size()})) {
                return fmt::format("weight '{}/{}' holds {} at flat index {}", layer->name(), layer->weight_names()[w],
                                   values.data()[*index], *index);
            }
        }
    }
    return std::nullopt;
}

void Model::append_layer(std::shared_ptr<Layer> layer, Generator& generator) {
    if (!layer) throw ValueError("Sequential::add: null layer");
    if (!sequential_) throw ValueError("add: model '" + name_ + "' is functional; add() is for a Sequential stack");
    if (layers_.size() >= max_model_layers) {
        throw ValueError("Sequential::add: a model has at most " + std::to_string(max_model_layers) + " layers");
    }
    std::set<std::string> taken;
    for (const auto& existing : layers_) taken.insert(existing->name());
    if (layer->name().empty()) {
        const std::string base = snake_case(layer->class_name());
        std::string candidate = base;
        for (int suffix = 1; taken.count(candidate); ++suffix) candidate = base + "_" + std::to_string(suffix);
        layer->set_name(candidate);
    } else if (taken.count(layer->name())) {
        throw ValueError("Sequential::add: a layer named '" + layer->name() + "' is already in model '" + name_ +
                         "'; layer names must be unique");
    }
    for (const auto& existing : layers_) {
        if (existing == layer) throw ValueError("Sequential::add: layer '" + layer->name() + "' is already in the stack");
    }
    if (built()) {
        if (layer->declared_input_shape() && *layer->declared_input_shape() != output_shape()) {
            throw ShapeError("Sequential::add: layer '" + layer->name() + "' declares input shape " +
                             batch_shape_to_string(*layer->declared_input_shape()) + " but the model's output is " +
                             batch_shape_to_string(output_shape()));
        }
        const SymbolicTensor output = call_layer(layer, outputs_, generator);
        layers_.push_back(layer);
        set_graph(inputs_, {output});
        return;
    }
    layers_.push_back(layer);
    if (layers_.size() == 1 && layer->declared_input_shape()) {
        try {
            connect_stack(*layer->declared_input_shape(), generator);
        } catch (...) {
            layers_.pop_back();
            throw;
        }
    }
}

void Model::connect_stack(const Shape& input_shape, Generator& generator) {
    if (layers_.empty()) throw ValueError("Sequential::build: model '" + name_ + "' has no layers");
    const SymbolicTensor input = Input(input_shape);
    SymbolicTensor x = input;
    for (const auto& layer : layers_) x = call_layer(layer, {x}, generator);
    set_graph({input}, {x});
}

}  // namespace xtnn
