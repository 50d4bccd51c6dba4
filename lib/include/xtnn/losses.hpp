#pragma once
// Losses by Keras name. A loss receives a model output split at its final activation
// (SplitOutput), so softmax + categorical cross-entropy (and sigmoid + binary cross-entropy) run
// as one fused, numerically stable op.

#include <memory>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/activations.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

class Loss {
public:
    virtual ~Loss() = default;
    virtual std::string name() const = 0;

    /// Checks targets for a model whose output (batch excluded) has `output_shape`, and returns
    /// them in the shape compute() expects. Errors name the loss and both shapes.
    virtual xt::xarray<float> prepare_targets(const xt::xarray<float>& y, const Shape& output_shape) const = 0;

    /// The mean loss of a batch of `output`.
    virtual Tensor compute(const SplitOutput& output, const xt::xarray<float>& targets) const = 0;

    /// Which accuracy "accuracy" means with this loss, as Keras resolves it.
    virtual std::string accuracy_metric(const Shape& output_shape) const = 0;
};

/// categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, mse
/// (also mean_squared_error); an unknown name lists the known ones.
std::unique_ptr<Loss> make_loss(const std::string& name);
std::vector<std::string> loss_names();

}  // namespace xtnn
