#pragma once
// What Dense and Conv2D share: a kernel, an optional bias and an activation applied last.

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "xtnn/layer.hpp"

namespace xtnn {

/// Set by an options struct with `activation`, `use_bias`, `kernel_initializer`,
/// `bias_initializer` and `input_shape`. The kernel and bias take the shapes weight_shapes() gives.
template <class Options>
class KernelLayer : public Layer {
public:
    /// relu after a bias runs fused with it (apply_kernel_and_bias), the rest as
    /// activation(kernel product + bias).
    Tensor call(const Tensor& x, bool training) override;
    /// Exposes the result before the activation, for losses that fuse it.
    SplitOutput call_split(const std::vector<Tensor>& inputs, bool training) override;

    const Options& options() const { return options_; }
    const Tensor& kernel() const { return kernel_; }
    const Tensor& bias() const { return bias_; }

protected:
    explicit KernelLayer(Options options);
    void build_weights(const Shape& input_shape, Generator& generator) override;
    /// The layer's product of x with the kernel, before bias and activation; checks x's shape.
    virtual Tensor apply_kernel(const Tensor& x) = 0;
    /// The product plus the bias, then relu when `relu`: bias_add or bias_relu of apply_kernel, or
    /// one op that adds them itself (Conv2D's).
    virtual Tensor apply_kernel_and_bias(const Tensor& x, bool relu);
    Tensor before_activation(const Tensor& x);
    /// Layer::config() with the activation, use_bias and the initializers.
    nlohmann::json kernel_config() const;

    Options options_;
    Tensor kernel_;
    Tensor bias_;
};

}  // namespace xtnn
