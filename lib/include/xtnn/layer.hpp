#pragma once
// What every layer shares. A layer knows its hyper-parameters from construction, creates its
// weights in build() once the shapes of what it receives are known, and maps batches to a batch
// in call(). Shapes here exclude the batch axis, as Keras's input_shape does.
//
// Called on SymbolicTensors instead of data, a layer records the call in a graph, as Keras's
// functional API does: `auto y = Dense(10)(x);`. A layer object called twice shares its weights.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <xtensor/xarray.hpp>

#include "xtnn/activations.hpp"
#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

class Layer;
struct LayerCall;

/// A tensor of a functional graph: no data, a shape (batch axis excluded) and the layer call that
/// produces it (Keras's KerasTensor). Made by Input() and by calling layers on such tensors.
class SymbolicTensor {
public:
    explicit SymbolicTensor(std::shared_ptr<const LayerCall> producer) : producer_(std::move(producer)) {}

    const Shape& shape() const;
    /// The call that made this tensor, and its layer.
    const LayerCall& producer() const { return *producer_; }
    const std::shared_ptr<const LayerCall>& producer_handle() const { return producer_; }
    Layer& layer() const;
    /// The producing layer's name: what Keras calls an input or output by.
    const std::string& name() const;

    friend bool operator==(const SymbolicTensor& a, const SymbolicTensor& b) { return a.producer_ == b.producer_; }

private:
    std::shared_ptr<const LayerCall> producer_;
};

/// One call of a layer in a graph (Keras's Node): the layer, the tensors it was called on, and
/// the shape of what it gives. Layers here have one output each.
struct LayerCall {
    std::shared_ptr<Layer> layer;
    std::vector<SymbolicTensor> inputs;
    Shape output_shape;
    /// Creation order over the process: a graph's calls sorted by it are in topological order.
    std::uint64_t serial = 0;
};

class Layer : public std::enable_shared_from_this<Layer> {
public:
    virtual ~Layer() = default;

    /// "Dense", "Dropout", ...: the Keras class name used in configs and summaries.
    virtual std::string class_name() const = 0;
    const std::string& name() const { return name_; }
    void set_name(std::string name) { name_ = std::move(name); }

    /// The input shape given at construction (first layer of a model), if any.
    const std::optional<Shape>& declared_input_shape() const { return declared_input_shape_; }

    /// Creates the weights for inputs of `input_shape`, drawing initial values from `generator`.
    void build(const Shape& input_shape, Generator& generator = thread_generator());
    /// The same for any number of inputs (merging layers take several).
    void build_inputs(const std::vector<Shape>& input_shapes, Generator& generator = thread_generator());
    bool built() const { return input_shapes_.has_value(); }
    /// The shape of the layer's only input; a ValueError for a layer of several inputs.
    const Shape& input_shape() const;
    const std::vector<Shape>& input_shapes() const;

    /// The shape of the result for one input of `input_shape`; errors name the layer.
    virtual Shape output_shape(const Shape& input_shape) const = 0;
    /// The same for any number of inputs (Keras's compute_output_shape): layers of one input
    /// check the count and use output_shape().
    virtual Shape compute_output_shape(const std::vector<Shape>& input_shapes) const;

    /// Maps a batch (batch axis first) to a batch; `training` switches dropout and batch
    /// statistics on.
    virtual Tensor call(const Tensor& x, bool training) = 0;
    /// The same for any number of inputs: layers of one input check the count and use call().
    virtual Tensor call_inputs(const std::vector<Tensor>& inputs, bool training);
    /// The result split at the layer's final activation; the activated result when the layer
    /// has no activation of its own to expose. Models call it for their outputs.
    virtual SplitOutput call_split(const std::vector<Tensor>& inputs, bool training);
    /// Whether fit may run this layer's training call on slices of one batch on several threads at
    /// once (ops::set_num_threads): true when each sample's result depends on that sample alone
    /// and the call changes nothing in the layer. BatchNormalization's batch statistics say no, and
    /// so must a custom layer that keeps state between calls.
    virtual bool trains_on_batch_slices() const { return true; }

    /// Whether call_then_relu computes relu(call_inputs(...)) in fewer passes than the two ops: a
    /// Model then runs a relu Activation that alone reads this layer's output as part of this layer.
    virtual bool fuses_relu() const { return false; }
    /// relu(call_inputs(inputs, training)), with the same bits.
    virtual Tensor call_then_relu(const std::vector<Tensor>& inputs, bool training);

    /// Records a call of this layer in a functional graph and returns its result. A temporary
    /// (`Dense(10)(x)`) moves into the graph; a layer owned by a std::shared_ptr is shared, so
    /// calling it again reuses its weights (see xtnn::shared()).
    SymbolicTensor operator()(const SymbolicTensor& input) &&;
    SymbolicTensor operator()(const std::vector<SymbolicTensor>& inputs) &&;
    SymbolicTensor operator()(const SymbolicTensor& input) &;
    SymbolicTensor operator()(const std::vector<SymbolicTensor>& inputs) &;

    /// False freezes the layer, as Keras's `layer.trainable = False`: fit leaves its weights
    /// alone (no gradient is computed for them), the summary counts them as non-trainable, and a
    /// frozen BatchNormalization normalizes with its moving statistics.
    bool trainable = true;

    /// Every weight in Keras's order, the order they were created in (kernel, bias; gamma, beta,
    /// moving_mean, moving_variance); handles share the layer's storage.
    std::vector<Tensor> weights() const;
    std::vector<std::string> weight_names() const;
    /// For each of weights(): whether it was created trainable (true for a frozen layer's kernel,
    /// false for moving statistics). Keras saves the ones created trainable first.
    std::vector<bool> weights_created_trainable() const;
    /// The weights fit updates: those created trainable, none while the layer is frozen.
    std::vector<Tensor> trainable_weights() const;
    /// The rest: state such as moving statistics, and every weight of a frozen layer.
    std::vector<Tensor> non_trainable_weights() const;
    /// Makes exactly the trainable weights record gradients; fit calls it before training, so a
    /// `trainable` changed since the last fit takes effect.
    void prepare_gradients();
    /// The shapes of the weights build() creates for `input_shape`, in weights() order. Known
    /// before anything is allocated, so a loader can check a file's architecture first.
    virtual std::vector<Shape> weight_shapes(const Shape& /*input_shape*/) const { return {}; }
    std::size_t count_params() const;
    std::size_t count_trainable_params() const;

    /// Keras-style config: name, trainable, dtype and the layer's own hyper-parameters.
    virtual nlohmann::json config() const;

    /// This layer moved into shared ownership: how a temporary joins a graph.
    virtual std::shared_ptr<Layer> move_to_shared() && = 0;

protected:
    explicit Layer(std::optional<Shape> declared_input_shape = std::nullopt)
        : declared_input_shape_(std::move(declared_input_shape)) {}
    Layer(const Layer&) = default;
    Layer(Layer&&) = default;
    virtual void build_weights(const Shape& /*input_shape*/, Generator& /*generator*/) {}
    /// Throws a ShapeError naming the layer when `actual` (batch included) is not batch + expected.
    void check_input(const Tensor& x) const;
    /// Keras's add_weight: registers a weight under `name` and returns its handle. Weights that
    /// are not trainable (moving statistics) are saved and loaded but never trained.
    Tensor add_weight(std::string name, xt::xarray<float> value, bool trainable_weight = true);
    /// "Dense 'dense_1'" (just "Dense" before a model names it): how errors name this layer.
    std::string describe() const { return name_.empty() ? class_name() : class_name() + " '" + name_ + "'"; }

private:
    struct Weight {
        std::string name;
        Tensor tensor;
        bool trainable;
    };
    std::vector<Weight> weights_;
    std::string name_;
    std::optional<Shape> declared_input_shape_;
    std::optional<std::vector<Shape>> input_shapes_;
};

/// The usual move_to_shared() of a layer class `L`.
template <class L>
std::shared_ptr<Layer> move_layer_to_shared(L& layer) {
    return std::make_shared<L>(std::move(layer));
}

/// A layer to call more than once with shared weights, as Keras's `shared = Dense(64)`:
/// `auto encoder = xtnn::shared(Dense(64)); auto a = (*encoder)(x1); auto b = (*encoder)(x2);`.
template <class L>
    requires std::derived_from<std::decay_t<L>, Layer>
std::shared_ptr<std::decay_t<L>> shared(L&& layer) {
    return std::make_shared<std::decay_t<L>>(std::forward<L>(layer));
}

/// Records a call of `layer` on `inputs`, building the layer (from `generator`) when it is not
/// built yet; throws a ShapeError naming the layer when the shapes do not fit it.
SymbolicTensor call_layer(const std::shared_ptr<Layer>& layer, const std::vector<SymbolicTensor>& inputs,
                          Generator& generator = thread_generator());

/// The row of the whole batch at which the rows a layer is called with start: 0, except on a thread
/// that fit runs a slice of a batch on. Layers that draw random values per sample (Dropout) pass it
/// on, so that a batch draws the same values however many slices it is split into.
std::size_t batch_slice_first_row();

/// Sets batch_slice_first_row() on the calling thread for its lifetime.
class BatchSliceScope {
public:
    explicit BatchSliceScope(std::size_t first_row);
    ~BatchSliceScope();
    BatchSliceScope(const BatchSliceScope&) = delete;
    BatchSliceScope& operator=(const BatchSliceScope&) = delete;

private:
    std::size_t previous_;
};

/// The snake_case base of auto-generated layer names: "Dense" -> "dense".
std::string snake_case(const std::string& class_name);

}  // namespace xtnn
