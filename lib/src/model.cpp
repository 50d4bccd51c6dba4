#include "xtnn/model.hpp"

#include <algorithm>
#include <cmath>
#include <malloc.h>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "xtnn/activations.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/data.hpp"
#include "xtnn/json.hpp"
#include "xtnn/random.hpp"

namespace xtnn {

namespace {

constexpr std::size_t max_layers = 1024;

Shape sample_shape(const InputRows& x) {
    const Shape shape = x.shape();
    return Shape(shape.begin() + 1, shape.end());
}

// Every step allocates and frees buffers of the same sizes (batches, activations, gradients), many
// above glibc's 128 KiB mmap threshold: each would be mapped, page-faulted and unmapped again on
// every step (about 1 ms for a 784x256 gradient). With higher thresholds, freed blocks stay on the
// heap and the next step reuses them. Done once per process, on the first fit/evaluate/predict.
void keep_freed_buffers_on_heap() {
#ifdef __GLIBC__
    static const bool once = [] {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
        return true;
    }();
    (void)once;
#endif
}

// Batch arithmetic that cannot overflow, whatever batch_size a caller passes (SIZE_MAX included).
std::size_t batch_count(std::size_t samples, std::size_t batch_size) {
    return samples / batch_size + (samples % batch_size != 0 ? 1 : 0);
}

std::size_t batch_end(std::size_t begin, std::size_t batch_size, std::size_t samples) {
    return samples - begin <= batch_size ? samples : begin + batch_size;
}

std::vector<std::size_t> iota(std::size_t n) {
    std::vector<std::size_t> indices(n);
    for (std::size_t i = 0; i < n; ++i) indices[i] = i;
    return indices;
}

}  // namespace

Sequential::Sequential(std::string name) : name_(std::move(name)) {}
Sequential::Sequential(Sequential&&) noexcept = default;
Sequential& Sequential::operator=(Sequential&&) noexcept = default;
Sequential::~Sequential() = default;

void Sequential::add(std::unique_ptr<Layer> layer, Generator& generator) {
    if (!layer) throw ValueError("Sequential::add: null layer");
    if (layers_.size() >= max_layers) {
        throw ValueError("Sequential::add: a model has at most " + std::to_string(max_layers) + " layers");
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
    if (!layers_.empty() && layer->declared_input_shape() && built() &&
        *layer->declared_input_shape() != output_shape()) {
        throw ShapeError("Sequential::add: layer '" + layer->name() + "' declares input shape " +
                         batch_shape_to_string(*layer->declared_input_shape()) + " but the model's output is " +
                         batch_shape_to_string(output_shape()));
    }
    if (layers_.empty() && layer->declared_input_shape()) {
        layer->build(*layer->declared_input_shape(), generator);
    } else if (!layers_.empty() && built()) {
        layer->build(output_shape(), generator);
    }
    layers_.push_back(std::move(layer));
}

void Sequential::add(const std::string& class_name, const nlohmann::json& config) {
    add(make_layer(class_name, config));
}

void Sequential::build(const Shape& input_shape, Generator& generator) {
    if (layers_.empty()) throw ValueError("Sequential::build: model '" + name_ + "' has no layers");
    Shape shape = input_shape;
    for (auto& layer : layers_) {
        if (!layer->built()) {
            layer->build(shape, generator);
        } else if (layer->input_shape() != shape) {
            throw ShapeError("Sequential::build: layer '" + layer->name() + "' was built for input " +
                             batch_shape_to_string(layer->input_shape()) + ", got " + batch_shape_to_string(shape));
        }
        shape = layer->output_shape(shape);
    }
}

bool Sequential::built() const { return !layers_.empty() && layers_.back()->built() && layers_.front()->built(); }

Layer& Sequential::layer(std::size_t index) const {
    if (index >= layers_.size()) {
        throw ValueError("Sequential::layer: index " + std::to_string(index) + " out of range for " +
                         std::to_string(layers_.size()) + " layers");
    }
    return *layers_[index];
}

Layer& Sequential::layer(const std::string& name) const {
    for (const auto& layer : layers_) {
        if (layer->name() == name) return *layer;
    }
    throw ValueError("Sequential::layer: no layer named '" + name + "' in model '" + name_ + "'");
}

Shape Sequential::input_shape() const {
    if (!built()) throw ValueError("model '" + name_ + "' is not built: give the first layer an input_shape or call build()");
    return layers_.front()->input_shape();
}

Shape Sequential::output_shape() const {
    const Layer& last = *layers_.back();
    return last.output_shape(last.input_shape());
}

std::size_t Sequential::count_params() const {
    std::size_t total = 0;
    for (const auto& layer : layers_) total += layer->count_params();
    return total;
}

std::size_t Sequential::count_trainable_params() const {
    std::size_t total = 0;
    for (const auto& layer : layers_) total += layer->count_trainable_params();
    return total;
}

std::vector<Tensor> Sequential::trainable_weights() const {
    std::vector<Tensor> selected;
    for (const auto& layer : layers_) {
        for (auto& weight : layer->trainable_weights()) selected.push_back(weight);
    }
    return selected;
}

std::vector<Tensor> Sequential::weights() const {
    std::vector<Tensor> all;
    for (const auto& layer : layers_) {
        for (auto& weight : layer->weights()) all.push_back(weight);
    }
    return all;
}

std::vector<xt::xarray<float>> Sequential::get_weights() const {
    std::vector<xt::xarray<float>> values;
    for (const auto& weight : weights()) values.push_back(weight.value());
    return values;
}

void Sequential::set_weights(const std::vector<xt::xarray<float>>& values) {
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

std::optional<std::string> Sequential::non_finite_weight() const {
    for (const auto& layer : layers_) {
        const auto names = layer->weight_names();
        const auto weights = layer->weights();
        for (std::size_t w = 0; w < weights.size(); ++w) {
            const auto& values = weights[w].value();
            if (const auto index = first_non_finite({values.data(), values.size()})) {
                return fmt::format("weight '{}/{}' holds {} at flat index {}", layer->name(), names[w], values.data()[*index],
                                   *index);
            }
        }
    }
    return std::nullopt;
}

void Sequential::compile(const std::string& loss, const OptimizerSpec& optimizer, const std::vector<std::string>& metrics) {
    auto new_loss = make_loss(loss);
    auto new_optimizer = optimizer.make();
    std::vector<std::unique_ptr<Metric>> new_metrics;
    if (!metrics.empty()) {
        if (!built()) {
            throw ValueError("compile: model '" + name_ + "' is not built, so metrics cannot be resolved; give the first "
                             "layer an input_shape or call build() first");
        }
        for (const auto& name : metrics) new_metrics.push_back(make_metric(name, *new_loss, output_shape()));
    }
    loss_ = std::move(new_loss);
    optimizer_ = std::move(new_optimizer);
    metrics_ = std::move(new_metrics);
    metric_names_ = metrics;
}

void Sequential::require_ready(const char* method) const {
    if (layers_.empty()) throw ValueError(std::string(method) + ": model '" + name_ + "' has no layers");
    if (!compiled()) throw ValueError(std::string(method) + ": call compile() before " + method + "()");
}

void Sequential::check_inputs(const char* method, const InputRows& x) const {
    if (x.count() == 0) {
        throw ValueError(std::string(method) + ": no samples (x has shape " + shape_to_string(x.shape()) + ")");
    }
    const Shape expected = input_shape();
    if (sample_shape(x) != expected) {
        throw ShapeError(std::string(method) + ": model '" + name_ + "' expects input of shape " +
                         batch_shape_to_string(expected) + ", got x of shape " + shape_to_string(x.shape()));
    }
}

Tensor Sequential::forward_before_activation(const Tensor& x, bool training) {
    Tensor h = x;
    for (std::size_t i = 0; i + 1 < layers_.size(); ++i) h = layers_[i]->call(h, training);
    return layers_.back()->call_before_activation(h, training);
}

Tensor Sequential::call(const Tensor& x, bool training) {
    if (!built()) build(Shape(x.shape().begin() + 1, x.shape().end()));
    Tensor h = x;
    for (auto& layer : layers_) h = layer->call(h, training);
    return h;
}

std::map<std::string, double> Sequential::run_evaluation(const InputRows& x, const xt::xarray<float>& targets,
                                                          std::size_t batch_size, Progbar* progress) {
    NoGradGuard no_grad;
    const std::size_t n = x.count();
    const auto order = iota(n);
    const std::string activation = layers_.back()->output_activation();
    double loss_total = 0;
    std::vector<double> metric_totals(metrics_.size(), 0.0);
    std::map<std::string, double> logs;
    for (std::size_t begin = 0, step = 1; begin < n; begin = batch_end(begin, batch_size, n), ++step) {
        const std::size_t end = batch_end(begin, batch_size, n);
        Tensor pre = forward_before_activation(Tensor::constant(x.gather(order, begin, end)), false);
        const xt::xarray<float> batch_targets = gather_rows(targets, order, begin, end);
        loss_total += static_cast<double>(loss_->compute(pre, activation, batch_targets).item()) * double(end - begin);
        if (!metrics_.empty()) {
            const xt::xarray<float> predictions = get_activation(activation)(pre).value();
            for (std::size_t m = 0; m < metrics_.size(); ++m) metric_totals[m] += metrics_[m]->batch_total(predictions, batch_targets);
        }
        logs["loss"] = loss_total / double(end);
        for (std::size_t m = 0; m < metrics_.size(); ++m) logs[metrics_[m]->name()] = metric_totals[m] / double(end);
        if (progress) progress->update(step, logs, end == n);
    }
    return logs;
}

History Sequential::fit_rows(const InputRows& x, const xt::xarray<float>& y, const FitOptions& options) {
    keep_freed_buffers_on_heap();
    require_ready("fit");
    if (options.batch_size == 0) throw ValueError("fit: batch_size must be positive, got 0");
    if (options.epochs < 0) throw ValueError("fit: epochs must not be negative, got " + std::to_string(options.epochs));
    if (options.initial_epoch < 0 || options.initial_epoch > options.epochs) {
        throw ValueError("fit: initial_epoch must be in [0, epochs], got " + std::to_string(options.initial_epoch));
    }
    if (!(options.validation_split >= 0.0 && options.validation_split < 1.0)) {
        throw ValueError("fit: validation_split must be in [0, 1), got " + std::to_string(options.validation_split));
    }
    for (std::size_t i = 0; i < options.callbacks.size(); ++i) {
        if (!options.callbacks[i]) throw ValueError("fit: callback " + std::to_string(i) + " is null");
    }
    if (x.dimension() > 0 && !built()) build(sample_shape(x));
    check_inputs("fit", x);
    const std::size_t n = x.count();
    if (y.dimension() == 0 || y.shape()[0] != n) {
        throw ShapeError("fit: x has " + std::to_string(n) + " samples but y has shape " + shape_to_string(y.shape()));
    }
    const xt::xarray<float> targets = loss_->prepare_targets(y, output_shape());

    std::vector<std::size_t> train_indices = iota(n);
    // The validation samples: the caller's (they outlive fit) or rows held out here.
    std::optional<InputRows> validation_x;
    xt::xarray<float> held_out_x, validation_targets;
    if (options.validation_data) {
        const auto& data = *options.validation_data;
        const InputRows rows = data.rows();
        check_inputs("fit (validation_data)", rows);
        if (data.y.dimension() == 0 || data.y.shape()[0] != rows.count()) {
            throw ShapeError("fit: validation x has " + std::to_string(rows.count()) +
                             " samples but validation y has shape " + shape_to_string(data.y.shape()));
        }
        validation_x = rows;
        validation_targets = loss_->prepare_targets(data.y, output_shape());
    } else if (options.validation_split > 0.0) {
        IndexSplit split = random_split(n, options.validation_split);
        train_indices = std::move(split.train);
        const std::size_t held_out = split.validation.size();
        held_out_x = x.gather(split.validation, 0, held_out);
        validation_x = InputRows(held_out_x);
        validation_targets = gather_rows(targets, split.validation, 0, held_out);
    }

    std::ostream& out = options.output ? *options.output : std::cout;
    const bool dynamic = is_terminal(out);
    const std::string activation = layers_.back()->output_activation();
    const std::size_t train_count = train_indices.size();
    const std::size_t steps = batch_count(train_count, options.batch_size);
    // The optimizer sees every weight, so its slots keep their place when a layer is frozen or
    // thawed between fits; weights that record no gradient (frozen, moving statistics) are skipped.
    for (auto& layer : layers_) layer->prepare_gradients();
    std::vector<Tensor> all_weights = weights();

    History history;
    stop_training = false;
    for (const auto& callback : options.callbacks) {
        callback->model = this;
        callback->out = &out;
    }
    for (const auto& callback : options.callbacks) callback->on_train_begin({});

    for (int epoch = options.initial_epoch; epoch < options.epochs && !stop_training; ++epoch) {
        for (const auto& callback : options.callbacks) callback->on_epoch_begin(epoch, {});
        if (options.verbose >= 1 && options.epochs > 1) out << "Epoch " << epoch + 1 << "/" << options.epochs << "\n";
        std::vector<std::size_t> order = train_indices;
        if (options.shuffle) {
            const auto permutation = thread_generator().permutation(train_count);
            for (std::size_t i = 0; i < train_count; ++i) order[i] = train_indices[permutation[i]];
        }
        Progbar progress(steps, options.verbose, out, dynamic);
        double loss_total = 0;
        std::vector<double> metric_totals(metrics_.size(), 0.0);
        std::size_t seen = 0, steps_done = 0;
        Logs logs;
        for (std::size_t step = 0; step < steps && !stop_training; ++step) {
            for (const auto& callback : options.callbacks) callback->on_train_batch_begin(int(step), {});
            const std::size_t begin = step * options.batch_size;
            const std::size_t end = batch_end(begin, options.batch_size, train_count);
            const xt::xarray<float> batch_targets = gather_rows(targets, order, begin, end);
            Tensor pre = forward_before_activation(Tensor::constant(x.gather(order, begin, end)), true);
            Tensor loss = loss_->compute(pre, activation, batch_targets);
            for (auto& weight : all_weights) weight.zero_grad();
            loss.backward();
            optimizer_->apply(all_weights);

            const double batch_size = double(end - begin);
            loss_total += static_cast<double>(loss.item()) * batch_size;
            if (!metrics_.empty()) {
                NoGradGuard no_grad;
                const xt::xarray<float> predictions = get_activation(activation)(pre.detach()).value();
                for (std::size_t m = 0; m < metrics_.size(); ++m) {
                    metric_totals[m] += metrics_[m]->batch_total(predictions, batch_targets);
                }
            }
            seen += end - begin;
            steps_done = step + 1;
            logs["loss"] = loss_total / double(seen);
            for (std::size_t m = 0; m < metrics_.size(); ++m) logs[metrics_[m]->name()] = metric_totals[m] / double(seen);
            for (const auto& callback : options.callbacks) callback->on_train_batch_end(int(step), logs);
            progress.update(steps_done, logs);
        }
        if (validation_x) {
            for (const auto& [name, value] : run_evaluation(*validation_x, validation_targets, options.batch_size, nullptr)) {
                logs["val_" + name] = value;
            }
        }
        progress.update(steps_done, logs, true);
        history.epoch.push_back(epoch);
        for (const auto& [name, value] : logs) history.history[name].push_back(value);
        for (const auto& callback : options.callbacks) callback->on_epoch_end(epoch, logs);
    }
    for (const auto& callback : options.callbacks) callback->on_train_end({});
    return history;
}

std::map<std::string, double> Sequential::evaluate_rows(const InputRows& x, const xt::xarray<float>& y,
                                                        const EvaluateOptions& options) {
    keep_freed_buffers_on_heap();
    require_ready("evaluate");
    if (options.batch_size == 0) throw ValueError("evaluate: batch_size must be positive, got 0");
    check_inputs("evaluate", x);
    if (y.dimension() == 0 || y.shape()[0] != x.count()) {
        throw ShapeError("evaluate: x has " + std::to_string(x.count()) + " samples but y has shape " +
                         shape_to_string(y.shape()));
    }
    const xt::xarray<float> targets = loss_->prepare_targets(y, output_shape());
    std::ostream& out = options.output ? *options.output : std::cout;
    const std::size_t steps = batch_count(x.count(), options.batch_size);
    Progbar progress(steps, options.verbose, out, is_terminal(out));
    return run_evaluation(x, targets, options.batch_size, &progress);
}

xt::xarray<float> Sequential::predict_rows(const InputRows& x, std::size_t batch_size) {
    keep_freed_buffers_on_heap();
    if (batch_size == 0) throw ValueError("predict: batch_size must be positive, got 0");
    if (layers_.empty()) throw ValueError("predict: model '" + name_ + "' has no layers");
    if (x.dimension() > 0 && !built()) build(sample_shape(x));
    check_inputs("predict", x);
    NoGradGuard no_grad;
    const std::size_t n = x.count();
    const auto order = iota(n);
    Shape shape{n};
    const Shape per_sample = output_shape();
    shape.insert(shape.end(), per_sample.begin(), per_sample.end());
    checked_element_count(shape, "predict: the output for " + std::to_string(n) + " samples has shape");
    xt::xarray<float> result = xt::empty<float>(shape);
    const std::size_t row_size = result.size() / n;
    for (std::size_t begin = 0; begin < n; begin = batch_end(begin, batch_size, n)) {
        const std::size_t end = batch_end(begin, batch_size, n);
        Tensor out = call(Tensor::constant(x.gather(order, begin, end)), false);
        std::copy(out.value().begin(), out.value().end(), result.data() + begin * row_size);
    }
    return result;
}

nlohmann::json Sequential::get_config() const {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& layer : layers_) layers.push_back({{"class_name", layer->class_name()}, {"config", layer->config()}});
    nlohmann::json config = {{"name", name_}, {"layers", layers}};
    if (built()) {
        nlohmann::json batch_shape = nlohmann::json::array({nullptr});
        for (auto extent : input_shape()) batch_shape.push_back(extent);
        config["build_input_shape"] = batch_shape;
    }
    return {{"class_name", "Sequential"}, {"config", config}};
}

std::string Sequential::to_json(int indent) const { return get_config().dump(indent); }

namespace {

// The number of weight values the layers would create, computed from shapes alone.
std::size_t planned_weight_elements(const std::vector<std::unique_ptr<Layer>>& layers, Shape shape) {
    std::size_t total = 0;
    for (const auto& layer : layers) {
        for (const auto& weight_shape : layer->weight_shapes(shape)) {
            const std::size_t elements =
                checked_element_count(weight_shape, layer->class_name() + " '" + layer->name() + "': weight shape");
            total = elements > std::numeric_limits<std::size_t>::max() - total ? std::numeric_limits<std::size_t>::max()
                                                                             : total + elements;
        }
        shape = layer->output_shape(shape);
    }
    return total;
}

}  // namespace

Sequential Sequential::from_config(const nlohmann::json& model_config, const FromConfigOptions& options) {
    json::require_depth(model_config, "Sequential::from_config");
    try {
        return from_checked_config(model_config, options);
    } catch (const nlohmann::json::exception& e) {
        throw ValueError(std::string("Sequential::from_config: ") + e.what());
    }
}

Sequential Sequential::from_checked_config(const nlohmann::json& model_config, const FromConfigOptions& options) {
    if (!model_config.is_object() || !model_config.contains("class_name") || model_config["class_name"] != "Sequential" ||
        !model_config.contains("config") || !model_config["config"].is_object()) {
        throw ValueError("Sequential::from_config: expected {\"class_name\": \"Sequential\", \"config\": {...}}, got " +
                         json::excerpt(model_config));
    }
    const auto& config = model_config["config"];
    if (!config.contains("layers") || !config["layers"].is_array()) {
        throw ValueError("Sequential::from_config: config has no 'layers' list");
    }
    if (config["layers"].size() > max_layers) {
        throw ValueError("Sequential::from_config: " + std::to_string(config["layers"].size()) +
                         " layers exceed the limit of " + std::to_string(max_layers));
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
            // Keras 3 writes the input as a layer of its own; xtnn keeps it on the first real layer.
            input_shape = input_shape_from_config(layer_config);
            continue;
        }
        layers.push_back(make_layer(class_name, layer_config));
    }
    if (!input_shape && !layers.empty()) input_shape = layers.front()->declared_input_shape();
    if (!input_shape && config.contains("build_input_shape")) {
        input_shape = input_shape_from_config({{"batch_input_shape", config["build_input_shape"]}});
    }
    if (options.max_weight_elements && input_shape) {
        const std::size_t planned = planned_weight_elements(layers, *input_shape);
        if (planned > *options.max_weight_elements) {
            throw ValueError("Sequential::from_config: the layers would create " + std::to_string(planned) +
                             " weight values, more than the " + std::to_string(*options.max_weight_elements) + " allowed");
        }
    }
    Generator& generator = options.generator ? *options.generator : thread_generator();
    if (config.contains("name") && !config["name"].is_string()) {
        throw ValueError("Sequential::from_config: the model's 'name' must be a string, got " + json::excerpt(config["name"]));
    }
    Sequential model(config.contains("name") ? config["name"].get<std::string>() : "sequential");
    for (auto& layer : layers) model.add(std::move(layer), generator);
    if (!model.built() && !model.layers_.empty() && input_shape) model.build(*input_shape, generator);
    return model;
}

Sequential Sequential::from_json(const std::string& text) {
    return from_config(json::parse(text, "Sequential::from_json"));
}

}  // namespace xtnn
