#pragma once
// Keras's core layers: Input, Dense, Dropout, Rescaling, Flatten, Activation, Reshape.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layer.hpp"
#include "xtnn/layers/kernel_layer.hpp"

namespace xtnn {

/// Where a functional graph starts: it holds the shape of one input (batch axis excluded) and
/// passes the batch on unchanged.
class InputLayer : public Layer {
public:
    explicit InputLayer(Shape shape, std::string name = "");

    std::string class_name() const override { return "InputLayer"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
    const Shape& shape() const { return shape_; }

private:
    Shape shape_;
};

/// A model input of `shape` (batch axis excluded), named `name` ("input_layer", "input_layer_1",
/// ... when empty, given by the Model): what Keras's `keras.Input(shape, name=...)` returns.
SymbolicTensor Input(Shape shape, std::string name = "");
/// The tensor an existing InputLayer gives (configs that name the input layer).
SymbolicTensor Input(std::shared_ptr<InputLayer> layer);

struct DenseOptions {
    std::size_t units = 0;
    std::string activation = "linear";
    bool use_bias = true;
    std::string kernel_initializer = "glorot_uniform";
    std::string bias_initializer = "zeros";
    Shape input_shape = {};
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
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    Tensor apply_kernel(const Tensor& x) override;
};

/// Inverted dropout while training, the identity otherwise. The mask comes from the seeded
/// generator of the calling thread (set_random_seed).
class Dropout : public Layer {
public:
    explicit Dropout(double rate, Shape input_shape = {});

    std::string class_name() const override { return "Dropout"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
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
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
    double scale() const { return scale_; }
    double offset() const { return offset_; }

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
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
};

/// An activation by name as a layer of its own.
class Activation : public Layer {
public:
    explicit Activation(std::string activation, Shape input_shape = {});

    std::string class_name() const override { return "Activation"; }
    const std::string& activation() const { return activation_; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    Tensor call(const Tensor& x, bool training) override;
    SplitOutput call_split(const std::vector<Tensor>& inputs, bool training) override;
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

private:
    std::string activation_;
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
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

private:
    std::vector<std::ptrdiff_t> target_shape_;
};

}  // namespace xtnn
