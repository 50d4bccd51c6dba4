#pragma once
// Activations by name, as Keras spells them: "relu", "sigmoid", "softmax", ...

#include <functional>
#include <string>
#include <vector>

#include "xtnn/tensor.hpp"

namespace xtnn {

using ActivationFn = std::function<Tensor(const Tensor&)>;

/// The activation called `name`; an unknown name throws a ValueError listing the known ones.
const ActivationFn& get_activation(const std::string& name);

/// Every name get_activation knows, sorted.
std::vector<std::string> activation_names();

/// A layer's result split at its final activation, so that a loss can fuse softmax or sigmoid
/// with cross-entropy (numerically stable, one pass) instead of differentiating through it.
struct SplitOutput {
    Tensor pre_activation;
    /// "linear" when the layer applies none.
    std::string activation = "linear";
    /// activation(pre_activation).
    Tensor activated() const;
};

}  // namespace xtnn
