#pragma once
// The Sequential model: a stack of layers with Keras's add / compile / fit / evaluate / predict /
// summary, and its Keras-style JSON config.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>

#include "xtnn/callbacks.hpp"
#include "xtnn/data.hpp"
#include "xtnn/layers.hpp"
#include "xtnn/losses.hpp"
#include "xtnn/metrics.hpp"
#include "xtnn/optimizers.hpp"
#include "xtnn/random.hpp"

namespace xtnn {

/// Held-out samples for fit(): x as floats or as bytes (cast one batch at a time, as fit's x),
/// y as fit's y.
struct ValidationData {
    template <class X>
        requires(!std::same_as<std::remove_cvref_t<X>, xt::xarray<std::uint8_t>>)
    ValidationData(X&& values, xt::xarray<float> targets)
        : x(xt::xarray<float>(std::forward<X>(values))), y(std::move(targets)) {}
    ValidationData(xt::xarray<std::uint8_t> bytes, xt::xarray<float> targets) : x(std::move(bytes)), y(std::move(targets)) {}

    InputRows rows() const {
        return std::visit([](const auto& values) { return InputRows(values); }, x);
    }

    std::variant<xt::xarray<float>, xt::xarray<std::uint8_t>> x;
    xt::xarray<float> y;
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
};

struct EvaluateOptions {
    std::size_t batch_size = 32;
    int verbose = 0;
    std::ostream* output = nullptr;
};

struct FromConfigOptions {
    /// A config whose layers would create more weight values is rejected before anything is
    /// allocated (loaders pass what the file actually holds).
    std::optional<std::size_t> max_weight_elements = std::nullopt;
    /// Draws the initial weights; the calling thread's generator when null. A loader that
    /// overwrites them passes its own, so loading leaves the thread's random stream alone.
    Generator* generator = nullptr;
};

enum class SummaryStyle {
    box,    ///< Keras 3's table with box-drawing characters
    ascii,  ///< Keras 2's plain table, as in the book
};

class Sequential {
public:
    explicit Sequential(std::string name = "sequential");
    Sequential(Sequential&&) noexcept;
    Sequential& operator=(Sequential&&) noexcept;
    ~Sequential();

    /// Appends a layer; the first one must know its input shape (or call build()).
    template <class L>
        requires std::derived_from<std::decay_t<L>, Layer>
    void add(L&& layer) {
        add(std::unique_ptr<Layer>(std::make_unique<std::decay_t<L>>(std::forward<L>(layer))));
    }
    void add(std::unique_ptr<Layer> layer) { add(std::move(layer), thread_generator()); }
    /// A layer by name and Keras-style config: add("dense", {{"units", 32}, {"activation", "relu"}}).
    void add(const std::string& class_name, const nlohmann::json& config = nlohmann::json::object());

    /// Creates every layer's weights for inputs of `input_shape` (batch axis excluded), drawing
    /// initial values from `generator`.
    void build(const Shape& input_shape, Generator& generator = thread_generator());
    bool built() const;

    void compile(const std::string& loss, const OptimizerSpec& optimizer = "rmsprop",
                 const std::vector<std::string>& metrics = {});
    bool compiled() const { return loss_ != nullptr; }

    // fit, evaluate and predict take x as floats or as bytes (uint8 images as the files hold
    // them, see datasets::load_mnist_bytes), cast to float one batch at a time without scaling;
    // a model for bytes starts with Rescaling(1.0 / 255).

    History fit(const xt::xarray<float>& x, const xt::xarray<float>& y, const FitOptions& options = {}) {
        return fit_rows(x, y, options);
    }
    template <class Bytes>
        requires std::same_as<Bytes, xt::xarray<std::uint8_t>>
    History fit(const Bytes& x, const xt::xarray<float>& y, const FitOptions& options = {}) {
        return fit_rows(x, y, options);
    }
    /// The loss and each metric, averaged over all samples.
    std::map<std::string, double> evaluate(const xt::xarray<float>& x, const xt::xarray<float>& y,
                                           const EvaluateOptions& options = {}) {
        return evaluate_rows(x, y, options);
    }
    template <class Bytes>
        requires std::same_as<Bytes, xt::xarray<std::uint8_t>>
    std::map<std::string, double> evaluate(const Bytes& x, const xt::xarray<float>& y, const EvaluateOptions& options = {}) {
        return evaluate_rows(x, y, options);
    }
    /// Outputs for every sample, computed in batches with no graph recorded.
    xt::xarray<float> predict(const xt::xarray<float>& x, std::size_t batch_size = 32) { return predict_rows(x, batch_size); }
    template <class Bytes>
        requires std::same_as<Bytes, xt::xarray<std::uint8_t>>
    xt::xarray<float> predict(const Bytes& x, std::size_t batch_size = 32) {
        return predict_rows(x, batch_size);
    }
    /// One forward pass over a batch as tensors (for custom training loops).
    Tensor call(const Tensor& x, bool training = false);

    std::string summary_string(SummaryStyle style = SummaryStyle::box) const;
    void summary(SummaryStyle style = SummaryStyle::box, std::ostream& out = std::cout) const;

    nlohmann::json get_config() const;
    std::string to_json(int indent = -1) const;
    /// The model a config describes, built when it names an input shape. Every problem in the
    /// config is a ValueError naming the layer and field.
    static Sequential from_config(const nlohmann::json& config, const FromConfigOptions& options = {});
    static Sequential from_json(const std::string& text);

    const std::string& name() const { return name_; }
    std::size_t size() const { return layers_.size(); }
    Layer& layer(std::size_t index) const;
    Layer& layer(const std::string& name) const;
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

    /// Writes the whole model (config, weights, compile settings, optimizer state) to one file,
    /// atomically; xtnn::load_model() reads it back. The format is in docs/model-format.md.
    void save(const std::string& path);
    /// Writes only the weights, atomically, in the same format.
    void save_weights(const std::string& path) const;
    /// Replaces the weights with those of a file from save_weights() or save(); names and shapes
    /// must match this model. Nothing changes unless the whole file is valid.
    void load_weights(const std::string& path);

    Optimizer* optimizer() const { return optimizer_.get(); }
    const Loss* loss() const { return loss_.get(); }
    /// The metric names given to compile().
    const std::vector<std::string>& metric_names() const { return metric_names_; }
    /// Set by a callback to end fit() after the current batch.
    bool stop_training = false;

private:
    void add(std::unique_ptr<Layer> layer, Generator& generator);
    static Sequential from_checked_config(const nlohmann::json& config, const FromConfigOptions& options);
    Tensor forward_before_activation(const Tensor& x, bool training);
    void require_ready(const char* method) const;
    void check_inputs(const char* method, const InputRows& x) const;
    History fit_rows(const InputRows& x, const xt::xarray<float>& y, const FitOptions& options);
    std::map<std::string, double> evaluate_rows(const InputRows& x, const xt::xarray<float>& y,
                                                const EvaluateOptions& options);
    xt::xarray<float> predict_rows(const InputRows& x, std::size_t batch_size);
    std::map<std::string, double> run_evaluation(const InputRows& x, const xt::xarray<float>& targets,
                                                 std::size_t batch_size, Progbar* progress);

    std::string name_;
    std::vector<std::unique_ptr<Layer>> layers_;
    std::unique_ptr<Loss> loss_;
    std::unique_ptr<Optimizer> optimizer_;
    std::vector<std::unique_ptr<Metric>> metrics_;
    std::vector<std::string> metric_names_;
};

}  // namespace xtnn
