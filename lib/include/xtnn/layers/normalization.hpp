#pragma once
// Keras's normalization layers: BatchNormalization, LayerNormalization (last axis).

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layer.hpp"

namespace xtnn {

class Conv2D;

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
    bool fuses_relu() const override { return true; }
    Tensor call_then_relu(const std::vector<Tensor>& inputs, bool training) override;
    /// No: its statistics are the whole batch's, and training updates the moving ones.
    bool trains_on_batch_slices() const override { return false; }
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
    const BatchNormalizationOptions& options() const { return options_; }
    /// The inference call on the output of `convolution`'s kernel (and bias), computed in the
    /// convolution's epilogue (ops::conv2d_batch_norm_inference), then relu with `relu`: what a
    /// Model runs at inference, with no graph recorded, for a Conv2D whose only reader is this layer.
    Tensor call_after_convolution(const Tensor& x, Conv2D& convolution, bool relu) const;

protected:
    void build_weights(const Shape& input_shape, Generator& generator) override;

private:
    /// The call, then relu with `relu` (in the same op).
    Tensor normalize(const Tensor& x, bool training, bool relu);

    BatchNormalizationOptions options_;
    Tensor gamma_, beta_;
    Tensor moving_mean_, moving_variance_;
};

struct LayerNormalizationOptions {
    double epsilon = 1e-3;
    bool center = true;
    bool scale = true;
    std::string beta_initializer = "zeros";
    std::string gamma_initializer = "ones";
    Shape input_shape = {};
};

/// Keras's LayerNormalization over the last axis: each sample's features are normalized by their
/// own mean and (biased) variance, then scaled by gamma and shifted by beta; the same in training
/// and inference. Weights: gamma, beta.
class LayerNormalization : public Layer {
public:
    explicit LayerNormalization(LayerNormalizationOptions options = {});

    std::string class_name() const override { return "LayerNormalization"; }
    Shape output_shape(const Shape& input_shape) const override { return input_shape; }
    std::vector<Shape> weight_shapes(const Shape& input_shape) const override;
    Tensor call(const Tensor& x, bool training) override;
    nlohmann::json config() const override;
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }

protected:
    void build_weights(const Shape& input_shape, Generator& generator) override;

private:
    LayerNormalizationOptions options_;
    Tensor gamma_, beta_;
};

}  // namespace xtnn
