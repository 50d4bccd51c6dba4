#pragma once
// Keras's convolution layers: Conv2D.

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layers/kernel_layer.hpp"
#include "xtnn/ops.hpp"

namespace xtnn {

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
    static std::unique_ptr<Layer> from_config(const nlohmann::json& config);
    std::shared_ptr<Layer> move_to_shared() && override { return move_layer_to_shared(*this); }
    /// batch_norm_inference(kernel and bias applied to x, the statistics and parameters given),
    /// then relu with `relu`, normalized as each sample's output is written: for
    /// BatchNormalization::call_after_convolution. Requires the activation "linear".
    Tensor convolve_then_normalize(const Tensor& x, const xt::xarray<float>& mean, const xt::xarray<float>& variance,
                                   const Tensor& gamma, const Tensor& beta, float epsilon, bool relu);

protected:
    Tensor apply_kernel(const Tensor& x) override;
    Tensor apply_kernel_and_bias(const Tensor& x, bool relu) override;

private:
    ops::Padding padding_;
};

}  // namespace xtnn
