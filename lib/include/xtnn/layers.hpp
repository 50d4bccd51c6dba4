#pragma once
// Keras's core layers. A layer knows its hyper-parameters from construction, creates its weights
// in build(input_shape) once the shape of what it receives is known, and maps a batch to a batch
// in call(). Shapes here exclude the batch axis, as Keras's input_shape does.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "xtnn/ops.hpp"
#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

class Layer {
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
    bool built() const { return input_shape_.has_value(); }
    const Shape& input_shape() const;
    virtual Shape output_shape(const Shape& input_shape) const = 0;

    /// Maps a batch (batch axis first) to a batch; `training` switches dropout on.
    virtual Tensor call(const Tensor& x, bool training) = 0;
    /// The activation this layer applies last ("linear" when none), and the layer's result before
    /// it: losses fuse it (softmax with cross-entropy) for stability and speed.
    virtual std::string output_activation() const { return "linear"; }
    virtual Tensor call_before_activation(const Tensor& x, bool training) { return call(x, training); }

    /// False freezes the layer, as Keras's `layer.trainable = False`: fit leaves its weights
    /// alone (no gradient is computed for them), the summary counts them as non-trainable, and a
    /// frozen BatchNormalization normalizes with its moving statistics.
    bool trainable = true;

    /// Every weight in Keras's order, the order they were created in (kernel, bias; gamma, beta,
    /// moving_mean, moving_variance); handles share the layer's storage.
    std::vector<Tensor> weights() const;
    std::vector<std::string> weight_names() const;
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

protected:
    explicit Layer(std::optional<Shape> declared_input_shape = std::nullopt)
        : declared_input_shape_(std::move(declared_input_shape)) {}
    virtual void build_weights(const Shape& /*input_shape*/, Generator& /*generator*/) {}
    /// Throws a ShapeError naming the layer when `actual` (batch included) is not batch + expected.
    void check_input(const Tensor& x) const;
    /// Keras's add_weight: registers a weight under `name` and returns its handle. Weights that
    /// are not trainable (moving statistics) are saved and loaded but never trained.
    Tensor add_weight(std::string name, xt::xarray<float> value, bool trainable_weight = true);

private:
    struct Weight {
        std::string name;
        Tensor tensor;
        bool trainable;
    };
    std::vector<Weight> weights_;
    std::string name_;
    std::optional<Shape> declared_input_shape_;
    std::optional<Shape> input_shape_;
};

struct DenseOptions {
    std::size_t units = 0;
    std::string activation = "linear";
    bool use_bias = true;
    std::string kernel_initializer = "glorot_uniform";
    std::string bias_initializer = "zeros";
    Shape input_shape = {};
};

/// What Dense and Conv2D share: a kernel, an optional bias and an activation applied last, set
/// by an options struct with `activation`, `use_bias`, `kernel_initializer`, `bias_initializer`
/// and `input_shape`. The kernel and bias take the shapes weight_shapes() gives.
template <class Options>
class KernelLayer : public Layer {
public:
    /// relu after a bias runs as one fused op (one pass, one buffer), the rest as
    /// activation(call_before_activation(x)).
    Tensor call(const Tensor& x, bool training) override;
    Tensor call_before_activation(const Tensor& x, bool training) override;
    std::string output_activation() const override { return options_.activation; }

    const Options& options() const { return options_; }
    const Tensor& kernel() const { return kernel_; }
    const Tensor& bias() const { return bias_; }

protected:
    explicit KernelLayer(Options options);
    void build_weights(const Shape& input_shape, Generator& generator) override;
    /// The layer's product of x with the kernel, before bias and activation; checks x's shape.
    virtual Tensor apply_kernel(const Tensor& x) = 0;
    /// Layer::config() with the activation, use_bias and the initializers.
    nlohmann::json kernel_config() const;

    Options options_;
    Tensor kernel_;
    Tensor bias_;
};

/// activation(x @ kernel + bias) on the last axis; inputs of rank > 2 keep their middle axes.
class Dense : public KernelLayer<DenseOptions> {
public:
    Dense(std::size_t units, std::string activation = "linear", Shape input_shape = {});
    explicit Dense(DenseOptions options);

    std::string class_name() const override { return "Dense"; }
    Shape output_shape(const Shape& input_shape) const override;
    std::vector<Shape> weight_shapes(const Shape& input_shape) const override;
    nlohmann::json config() const override;

protected:
    Tensor apply_kernel(const Tensor& x) override;
};

/// Inverted dropout while training, the identity otherwise. The mask comes from the seeded
/// global generator (set_random_seed).
class Dropout : public Layer {
public:
    explicit Dropout(double rate, Shape input_shape = {});

    std::string class_name() const override { return "Dropout"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    double rate() const { return rate_; }

private:
    double rate_;
};

/// x * scale + offset, as Keras's Rescaling: Rescaling(1.0 / 255) first turns images fed as
/// bytes 0..255 into [0, 1] inside the model, so the data can stay as bytes.
class Rescaling : public Layer {
public:
    explicit Rescaling(double scale, double offset = 0.0, Shape input_shape = {});

    std::string class_name() const override { return "Rescaling"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;

private:
    double scale_;
    double offset_;
};

/// (batch, d1, d2, ...) -> (batch, d1 * d2 * ...).
class Flatten : public Layer {
public:
    explicit Flatten(Shape input_shape = {});

    std::string class_name() const override { return "Flatten"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
};

/// An activation by name as a layer of its own.
class Activation : public Layer {
public:
    explicit Activation(std::string activation, Shape input_shape = {});

    std::string class_name() const override { return "Activation"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override;
    std::string output_activation() const override { return activation_; }
    Tensor call_before_activation(const Tensor& x, bool) override { return x; }
    nlohmann::json config() const override;

private:
    std::string activation_;
};

struct Conv2DOptions {
    std::size_t filters = 0;
    ops::Window2D kernel_size = {3, 3};
    ops::Window2D strides = {1, 1};
    /// "valid" or "same"
    std::string padding = "valid";
    std::string activation = "linear";
    bool use_bias = true;
    std::string kernel_initializer = "glorot_uniform";
    std::string bias_initializer = "zeros";
    Shape input_shape = {};
};

/// activation(conv2d(x, kernel) + bias) on channels-last images (height, width, channels); the
/// kernel has shape (kernel height, kernel width, channels, filters), as in Keras.
class Conv2D : public KernelLayer<Conv2DOptions> {
public:
    Conv2D(std::size_t filters, std::size_t kernel_size, std::size_t strides = 1, std::string padding = "valid",
           std::string activation = "linear", Shape input_shape = {});
    explicit Conv2D(Conv2DOptions options);

    std::string class_name() const override { return "Conv2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    std::vector<Shape> weight_shapes(const Shape& input_shape) const override;
    nlohmann::json config() const override;

protected:
    Tensor apply_kernel(const Tensor& x) override;

private:
    ops::Padding padding_;
};

struct Pooling2DOptions {
    ops::Window2D pool_size = {2, 2};
    /// Defaults to pool_size, as in Keras.
    std::optional<ops::Window2D> strides = std::nullopt;
    std::string padding = "valid";
    Shape input_shape = {};
};

/// Max or average over windows of each channel (MaxPooling2D, AveragePooling2D).
class Pooling2D : public Layer {
public:
    enum class Kind { max, average };
    Pooling2D(Kind kind, Pooling2DOptions options);

    std::string class_name() const override { return kind_ == Kind::max ? "MaxPooling2D" : "AveragePooling2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;

private:
    Kind kind_;
    Pooling2DOptions options_;
    ops::Window2D strides_;
    ops::Padding padding_;
};

class MaxPooling2D : public Pooling2D {
public:
    explicit MaxPooling2D(std::size_t pool_size = 2) : MaxPooling2D(Pooling2DOptions{.pool_size = {pool_size, pool_size}}) {}
    explicit MaxPooling2D(Pooling2DOptions options) : Pooling2D(Kind::max, std::move(options)) {}
};

class AveragePooling2D : public Pooling2D {
public:
    explicit AveragePooling2D(std::size_t pool_size = 2)
        : AveragePooling2D(Pooling2DOptions{.pool_size = {pool_size, pool_size}}) {}
    explicit AveragePooling2D(Pooling2DOptions options) : Pooling2D(Kind::average, std::move(options)) {}
};

/// (batch, height, width, channels) -> (batch, channels): the mean over each channel's image.
class GlobalAveragePooling2D : public Layer {
public:
    explicit GlobalAveragePooling2D(Shape input_shape = {});

    std::string class_name() const override { return "GlobalAveragePooling2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
};

/// The maximum of each channel over height and width: (N, H, W, C) -> (N, C), as Keras's
/// GlobalMaxPooling2D (the first maximum gets the gradient; a NaN wins).
class GlobalMaxPooling2D : public Layer {
public:
    explicit GlobalMaxPooling2D(Shape input_shape = {});

    std::string class_name() const override { return "GlobalMaxPooling2D"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
};

/// The same values in a new per-sample shape: Reshape({28, 28, 1}) turns grayscale images into
/// one-channel images. One extent may be -1 (inferred).
class Reshape : public Layer {
public:
    explicit Reshape(std::vector<std::ptrdiff_t> target_shape, Shape input_shape = {});

    std::string class_name() const override { return "Reshape"; }
    Shape output_shape(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;

private:
    std::vector<std::ptrdiff_t> target_shape_;
};

struct BatchNormalizationOptions {
    double momentum = 0.99;
    double epsilon = 1e-3;
    /// Learn a shift (beta) and a scale (gamma) after normalizing.
    bool center = true;
    bool scale = true;
    std::string beta_initializer = "zeros";
    std::string gamma_initializer = "ones";
    std::string moving_mean_initializer = "zeros";
    std::string moving_variance_initializer = "ones";
    Shape input_shape = {};
};

/// Keras's BatchNormalization over the last axis (channels-last). While training it normalizes
/// with the batch's mean and (biased) variance and moves its moving statistics toward them:
/// moving = moving * momentum + batch * (1 - momentum). At inference, and whenever the layer is
/// frozen (trainable = false, as in Keras 3), it normalizes with the moving statistics.
/// Weights: gamma, beta (trainable), moving_mean, moving_variance (not trainable).
class BatchNormalization : public Layer {
public:
    explicit BatchNormalization(BatchNormalizationOptions options = {});

    std::string class_name() const override { return "BatchNormalization"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    std::vector<Shape> weight_shapes(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    const BatchNormalizationOptions& options() const { return options_; }

protected:
    void build_weights(const Shape& input_shape, Generator& generator) override;

private:
    BatchNormalizationOptions options_;
    Tensor gamma_, beta_;
    Tensor moving_mean_, moving_variance_;
};

/// A layer from its class name ("Dense" or "dense") and Keras-style config.
std::unique_ptr<Layer> make_layer(const std::string& class_name, const nlohmann::json& config);
std::vector<std::string> layer_names();

/// The input shape a layer config declares (batch_input_shape, batch_shape or input_shape).
std::optional<Shape> input_shape_from_config(const nlohmann::json& config);

/// The snake_case base of auto-generated layer names: "Dense" -> "dense".
std::string snake_case(const std::string& class_name);

}  // namespace xtnn
