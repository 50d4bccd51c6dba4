#pragma once
// The model: a graph of layer calls from inputs to outputs with Keras's compile / fit / evaluate /
// predict / summary / save, written once for every architecture. Functional models are built from
// SymbolicTensors (xtnn::Input, layer calls); Sequential (xtnn/sequential.hpp) is a stack of
// layers over the same graph and training loop.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <xtensor/xarray.hpp>

#include "xtnn/callbacks.hpp"
#include "xtnn/data.hpp"
#include "xtnn/layer.hpp"
#include "xtnn/losses.hpp"
#include "xtnn/metrics.hpp"
#include "xtnn/optimizers.hpp"
#include "xtnn/random.hpp"

namespace xtnn {

namespace distributed {
class Session;
}

/// Held-out samples for fit(): x as floats or as bytes (cast one batch at a time, as fit's x),
/// y as fit's y; one array per model input and output, or a single one of each.
struct ValidationData {
    using Array = std::variant<xt::xarray<float>, xt::xarray<std::uint8_t>>;

    template <class X>
        requires(!std::same_as<std::remove_cvref_t<X>, xt::xarray<std::uint8_t>> &&
                 !std::same_as<std::remove_cvref_t<X>, std::vector<Array>>)
    ValidationData(X&& values, xt::xarray<float> targets) : x{Array(xt::xarray<float>(std::forward<X>(values)))}, y{std::move(targets)} {}
    ValidationData(xt::xarray<std::uint8_t> bytes, xt::xarray<float> targets) : x{Array(std::move(bytes))}, y{std::move(targets)} {}
    ValidationData(std::vector<Array> inputs, std::vector<xt::xarray<float>> targets)
        : x(std::move(inputs)), y(std::move(targets)) {}

    std::vector<InputRows> rows() const {
        std::vector<InputRows> result;
        for (const auto& array : x) result.push_back(std::visit([](const auto& values) { return InputRows(values); }, array));
        return result;
    }

    std::vector<Array> x;
    std::vector<xt::xarray<float>> y;
};

struct FitOptions {
    std::size_t batch_size = 32;
    int epochs = 1;
    /// 0 silent, 1 progress bar, 2 one line per epoch.
    int verbose = 1;
    /// Fraction of the samples held out for validation, drawn at random from the seeded
    /// generator (Keras takes the last samples instead).
    double validation_split = 0.0;
    std::optional<ValidationData> validation_data = std::nullopt;
    bool shuffle = true;
    int initial_epoch = 0;
    std::vector<std::shared_ptr<Callback>> callbacks = {};
    /// Where progress goes; std::cout when null.
    std::ostream* output = nullptr;
    /// The processes that train together (xtnn/distributed.hpp, `.distributed = session`):
    /// batch_size is then the global batch, of which every rank computes its share; the ranks'
    /// gradients are summed before each update. Progress and the callbacks that write files run
    /// on rank 0 only. One process trains as without it.
    std::optional<std::reference_wrapper<const distributed::Session>> distributed = std::nullopt;
};

struct EvaluateOptions {
    std::size_t batch_size = 32;
    int verbose = 0;
    std::ostream* output = nullptr;
    /// The processes that evaluate together: every rank evaluates its share of the samples
    /// (every rank must pass the same data) and gets the figures of all, summed in rank order;
    /// progress on rank 0 only. Without it every rank evaluates everything.
    std::optional<std::reference_wrapper<const distributed::Session>> distributed = std::nullopt;
};

struct FromConfigOptions {
    /// A config whose layers would create more weight values is rejected before anything is
    /// allocated (loaders pass what the file actually holds).
    std::optional<std::size_t> max_weight_elements = std::nullopt;
    /// Draws the initial weights; the calling thread's generator when null. A loader that
    /// overwrites them passes its own, so loading leaves the thread's random stream alone.
    Generator* generator = nullptr;
};

/// Arrays by model input or output name: {{"image", x_image}, {"extra", x_extra}}.
template <class Array>
class Named {
public:
    Named(std::initializer_list<std::pair<const std::string, Array>> entries) : entries_(entries) {}
    Named(std::map<std::string, Array> entries) : entries_(std::move(entries)) {}
    const std::map<std::string, Array>& entries() const { return entries_; }

private:
    std::map<std::string, Array> entries_;
};

/// compile()'s settings. Losses, metrics and loss weights are given once for every output, or
/// per output: as a list in output order, or by output name (the `_by_output` fields).
struct CompileOptions {
    /// One name for every output, or one per output.
    std::vector<std::string> loss = {};
    std::map<std::string, std::string> loss_by_output = {};
    OptimizerSpec optimizer = "rmsprop";
    /// Metrics reported for every output.
    std::vector<std::string> metrics = {};
    std::map<std::string, std::vector<std::string>> metrics_by_output = {};
    /// The loss minimised is the sum of each output's loss times its weight (1 by default).
    std::vector<double> loss_weights = {};
    std::map<std::string, double> loss_weights_by_output = {};
};

/// Which Keras writes a functional config: Keras 3 (nodes as {"args": [...], "kwargs": {}} with
/// "__keras_tensor__" references) or Keras 2 / tf.keras (nodes as [[layer, node, tensor, {}]]).
enum class ConfigForm { keras3, keras2 };

enum class SummaryStyle {
    box,    ///< Keras 3's table with box-drawing characters
    ascii,  ///< Keras 2's plain table, as in the book
};

class Model {
public:
    /// A functional model from `inputs` to `outputs`, as keras.Model(inputs, outputs). Every
    /// output must be computed from the inputs alone; errors name the layers and shapes.
    Model(const SymbolicTensor& input, const SymbolicTensor& output, std::string name = "functional");
    Model(const std::vector<SymbolicTensor>& inputs, const SymbolicTensor& output, std::string name = "functional");
    Model(const std::vector<SymbolicTensor>& inputs, const std::vector<SymbolicTensor>& outputs,
          std::string name = "functional");
    Model(Model&&) noexcept;
    Model& operator=(Model&&) noexcept;
    ~Model();

    const std::string& name() const { return name_; }
    /// True for a stack of layers (Sequential), whose config is Keras's Sequential form.
    bool is_sequential() const { return sequential_; }
    bool built() const;

    /// The layers in graph order; a functional model lists its InputLayers too, as Keras does.
    const std::vector<std::shared_ptr<Layer>>& layers() const { return layers_; }
    std::size_t size() const { return layers_.size(); }
    Layer& layer(std::size_t index) const;
    Layer& layer(const std::string& name) const;
    /// The graph's ends (Keras's model.inputs / model.outputs); empty while a Sequential is unbuilt.
    const std::vector<SymbolicTensor>& inputs() const { return inputs_; }
    const std::vector<SymbolicTensor>& outputs() const { return outputs_; }
    /// Every layer call from the inputs to the outputs, each after those it reads (InputLayers first).
    std::vector<std::shared_ptr<const LayerCall>> layer_calls() const;
    std::vector<std::string> input_names() const;
    std::vector<std::string> output_names() const;
    /// Per-sample shapes (batch axis excluded); input_shape() and output_shape() need exactly one.
    std::vector<Shape> input_shapes() const;
    std::vector<Shape> output_shapes() const;
    Shape input_shape() const;
    Shape output_shape() const;

    std::size_t count_params() const;
    std::size_t count_trainable_params() const;
    /// Every weight of every layer, trainable or not, in layer order (Keras's model.weights).
    std::vector<Tensor> weights() const;
    std::vector<Tensor> trainable_weights() const;
    /// Copies of all weight values, in layer order.
    std::vector<xt::xarray<float>> get_weights() const;
    /// Replaces all weight values; shapes must match get_weights().
    void set_weights(const std::vector<xt::xarray<float>>& values);
    /// "weight 'dense/kernel' holds nan at flat index 3" for the first NaN or infinity among
    /// the weights, nullopt when all are finite.
    std::optional<std::string> non_finite_weight() const;

    /// One loss for every output (Keras's compile(loss=..., optimizer=..., metrics=[...])).
    void compile(const std::string& loss, const OptimizerSpec& optimizer = "rmsprop",
                 const std::vector<std::string>& metrics = {});
    void compile(const CompileOptions& options);
    bool compiled() const { return optimizer_ != nullptr; }

    // fit, evaluate and predict take x as floats or as bytes (uint8 images as the files hold
    // them, see datasets::load_mnist_bytes), cast to float one batch at a time without scaling;
    // a model for bytes starts with Rescaling(1.0 / 255). A model of several inputs or outputs
    // takes lists: one array per input, one target array per output, in their order.

    History fit(const xt::xarray<float>& x, const xt::xarray<float>& y, const FitOptions& options = {}) {
        return fit_rows({InputRows(x)}, {y}, options);
    }
    template <class Bytes>
        requires std::same_as<Bytes, xt::xarray<std::uint8_t>>
    History fit(const Bytes& x, const xt::xarray<float>& y, const FitOptions& options = {}) {
        return fit_rows({InputRows(x)}, {y}, options);
    }
    History fit(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y, const FitOptions& options = {}) {
        return fit_rows(x, y, options);
    }
    /// The same with the arrays named by input and output name.
    History fit(const Named<InputRows>& x, const Named<xt::xarray<float>>& y, const FitOptions& options = {}) {
        return fit_rows(by_name("fit", x, input_names(), "input"), by_name("fit", y, output_names(), "output"), options);
    }
    /// The loss and each metric, averaged over all samples.
    std::map<std::string, double> evaluate(const xt::xarray<float>& x, const xt::xarray<float>& y,
                                           const EvaluateOptions& options = {}) {
        return evaluate_rows({InputRows(x)}, {y}, options);
    }
    template <class Bytes>
        requires std::same_as<Bytes, xt::xarray<std::uint8_t>>
    std::map<std::string, double> evaluate(const Bytes& x, const xt::xarray<float>& y, const EvaluateOptions& options = {}) {
        return evaluate_rows({InputRows(x)}, {y}, options);
    }
    std::map<std::string, double> evaluate(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y,
                                           const EvaluateOptions& options = {}) {
        return evaluate_rows(x, y, options);
    }
    std::map<std::string, double> evaluate(const Named<InputRows>& x, const Named<xt::xarray<float>>& y,
                                           const EvaluateOptions& options = {}) {
        return evaluate_rows(by_name("evaluate", x, input_names(), "input"), by_name("evaluate", y, output_names(), "output"),
                             options);
    }
    /// Outputs for every sample, computed in batches with no graph recorded; for a model of one
    /// input and one output.
    xt::xarray<float> predict(const xt::xarray<float>& x, std::size_t batch_size = 32) { return predict_one(InputRows(x), batch_size); }
    template <class Bytes>
        requires std::same_as<Bytes, xt::xarray<std::uint8_t>>
    xt::xarray<float> predict(const Bytes& x, std::size_t batch_size = 32) {
        return predict_one(InputRows(x), batch_size);
    }
    /// Every output for every sample, from one array per input.
    std::vector<xt::xarray<float>> predict(const std::vector<InputRows>& x, std::size_t batch_size = 32) const;
    /// The same by name: the inputs by input name, the outputs by output name.
    std::map<std::string, xt::xarray<float>> predict(const Named<InputRows>& x, std::size_t batch_size = 32) const;
    /// One forward pass over a batch as tensors (for custom training loops).
    Tensor call(const Tensor& x, bool training = false);
    std::vector<Tensor> call(const std::vector<Tensor>& inputs, bool training = false);

    std::string summary_string(SummaryStyle style = SummaryStyle::box) const;
    void summary(SummaryStyle style = SummaryStyle::box, std::ostream& out = std::cout) const;

    /// Keras's config: the Sequential form for a stack of layers, the functional form
    /// (layers with inbound_nodes, input_layers, output_layers) otherwise, as Keras 3 or
    /// Keras 2 writes it. from_config reads both.
    nlohmann::json get_config(ConfigForm form = ConfigForm::keras3) const;
    std::string to_json(int indent = -1, ConfigForm form = ConfigForm::keras3) const;
    /// The model a Sequential or functional config describes (Keras 2 and Keras 3 forms). Every
    /// problem in the config is a ValueError naming the layer and field.
    static Model from_config(const nlohmann::json& config, const FromConfigOptions& options = {});
    static Model from_json(const std::string& text);

    /// Writes the whole model (config, weights, compile settings, optimizer state) to one file,
    /// atomically; xtnn::load_model() reads it back. The format is in docs/model-format.md.
    void save(const std::string& path);
    /// Writes only the weights, atomically, in the same format.
    void save_weights(const std::string& path) const;
    /// Replaces the weights with those of a file from save_weights() or save(); names and shapes
    /// must match this model. Nothing changes unless the whole file is valid.
    void load_weights(const std::string& path);

    Optimizer* optimizer() const { return optimizer_.get(); }
    /// The loss of the first output (of the only one, usually).
    const Loss* loss() const;
    /// What compile() was given, as it is saved.
    const CompileOptions& compile_options() const { return compile_options_; }
    /// The metric names given to compile() for every output.
    const std::vector<std::string>& metric_names() const { return compile_options_.metrics; }
    /// Set by a callback to end fit() after the current batch.
    bool stop_training = false;

protected:
    /// An empty stack of layers (Sequential).
    explicit Model(std::string name);
    /// Connects `layers_` as a chain from an input of `input_shape`, building unbuilt layers
    /// from `generator`.
    void connect_stack(const Shape& input_shape, Generator& generator);
    /// Checks and adds a layer to a stack; names it when it has no name.
    void append_layer(std::shared_ptr<Layer> layer, Generator& generator);

private:
    struct Plan;
    struct Head;
    class Totals;
    struct BatchSlice;
    struct Peers;

    void set_graph(const std::vector<SymbolicTensor>& inputs, const std::vector<SymbolicTensor>& outputs);
    /// Each output's loss, weight and metrics from compile()'s settings, once the outputs are known.
    std::vector<std::unique_ptr<Head>> make_heads(const CompileOptions& options) const;
    /// Runs the plan; with `split`, each output stops before its activation (for the losses).
    /// `gathered`: the inputs come from gather_inputs(), scaled by the plan's input_scales.
    std::vector<SplitOutput> run(const std::vector<Tensor>& inputs, bool training, bool split, bool gathered = false) const;
    /// Rows [begin, end) of `order` of each input, as run() takes them with `gathered`.
    std::vector<Tensor> gather_inputs(const std::vector<InputRows>& x, const std::vector<std::size_t>& order,
                                      std::size_t begin, std::size_t end) const;
    /// The arrays of `named` in the order of `names`; a ValueError for a missing or unknown name.
    template <class Array>
    static std::vector<Array> by_name(const char* method, const Named<Array>& named,
                                      const std::vector<std::string>& names, const char* what);
    std::vector<Tensor> head_losses(const std::vector<SplitOutput>& outputs,
                                    const std::vector<xt::xarray<float>>& targets) const;
    /// The most rows predict and evaluate run through the model at once (see training.cpp).
    std::size_t inference_chunk_rows() const;
    /// One slice per xtnn thread when every layer can train on slices of a batch, else one.
    std::vector<BatchSlice> make_batch_slices(const std::vector<Tensor>& weights) const;
    /// One training step on rows [begin, end) of `order`: the forward and backward passes, in
    /// slices on xtnn's threads, the slices' gradients summed, and the optimizer's update. With
    /// `peers`, this rank computes its share of the rows and the gradients are summed over ranks.
    void train_step(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& targets,
                    const std::vector<std::size_t>& order, std::size_t begin, std::size_t end,
                    std::vector<BatchSlice>& slices, std::vector<Tensor>& weights, Totals& totals, Peers* peers);
    /// With Reduction::ring each rank keeps the optimizer's slots up to date on its own ranges
    /// only: copies every rank's ranges to all (at the end of every epoch, before the callbacks).
    void gather_optimizer_slots(Peers& peers, const std::vector<Tensor>& weights);
    /// The ranks' step figures added to `totals` in rank order, their gradients summed, and the
    /// optimizer's update, split among the ranks with Reduction::ring.
    void exchange_step(Peers& peers, std::size_t rows, std::vector<BatchSlice>& slices, std::size_t count,
                       std::vector<Tensor>& weights, Totals& totals);
    /// Before a distributed fit: every rank's checks passed and the ranks agree on the model and
    /// the settings, else the same error on every rank; then rank 0's weights, optimizer state
    /// and random state on every rank.
    void join_peers(const Peers& peers, const std::exception_ptr& local_error, const std::vector<InputRows>& x,
                    const FitOptions& options) const;
    void share_chief_state(const Peers& peers);
    void require_ready(const char* method) const;
    void check_inputs(const char* method, const std::vector<InputRows>& x) const;
    std::vector<xt::xarray<float>> prepare_targets(const char* method, const std::vector<InputRows>& x,
                                                   const std::vector<xt::xarray<float>>& y) const;
    History fit_rows(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y, const FitOptions& options);
    /// fit's checks of the model, the options and the data; returns the prepared targets.
    std::vector<xt::xarray<float>> check_fit(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y,
                                             const FitOptions& options);
    /// fit's epochs, on this process alone or as one of `peers`.
    History train(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& targets, const FitOptions& options,
                  Peers* peers);
    std::map<std::string, double> evaluate_rows(const std::vector<InputRows>& x, const std::vector<xt::xarray<float>>& y,
                                                const EvaluateOptions& options);
    xt::xarray<float> predict_one(const InputRows& x, std::size_t batch_size);
    /// The loss and metrics over all samples, or with `peers` over every rank's share of them.
    std::map<std::string, double> run_evaluation(const std::vector<InputRows>& x,
                                                 const std::vector<xt::xarray<float>>& targets, std::size_t batch_size,
                                                 Progbar* progress, const Peers* peers = nullptr);

    std::string name_;
    bool sequential_ = false;
    std::vector<std::shared_ptr<Layer>> layers_;
    std::vector<SymbolicTensor> inputs_;
    std::vector<SymbolicTensor> outputs_;
    std::shared_ptr<const Plan> plan_;
    std::vector<std::unique_ptr<Head>> heads_;
    std::unique_ptr<Optimizer> optimizer_;
    CompileOptions compile_options_;
};

template <class Array>
std::vector<Array> Model::by_name(const char* method, const Named<Array>& named, const std::vector<std::string>& names,
                                  const char* what) {
    std::vector<Array> ordered;
    for (const auto& name : names) {
        const auto found = named.entries().find(name);
        if (found == named.entries().end()) {
            throw ValueError(std::string(method) + ": no array given for " + what + " '" + name + "'");
        }
        ordered.push_back(found->second);
    }
    for (const auto& [name, array] : named.entries()) {
        if (std::find(names.begin(), names.end(), name) == names.end()) {
            std::string known;
            for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
            throw ValueError(std::string(method) + ": '" + name + "' is not an " + what + " of the model; its " + what +
                             "s are " + known);
        }
    }
    return ordered;
}

}  // namespace xtnn
