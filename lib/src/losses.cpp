#include "xtnn/losses.hpp"

#include <cmath>
#include <functional>

#include <xtensor/xview.hpp>

#include "xtnn/activations.hpp"
#include "xtnn/ops.hpp"
#include "xtnn/registry.hpp"

namespace xtnn {

namespace {

void require_matching_targets(const std::string& loss, const xt::xarray<float>& y, const Shape& output_shape) {
    const bool matches = y.dimension() == output_shape.size() + 1 &&
                         std::equal(output_shape.begin(), output_shape.end(), y.shape().begin() + 1);
    if (!matches) {
        throw ShapeError(loss + ": targets of shape " + shape_to_string(y.shape()) + " do not match the model's output " +
                         batch_shape_to_string(output_shape) +
                         (output_shape.size() == 1 && y.dimension() == 1
                              ? " (class labels need sparse_categorical_crossentropy, or to_categorical)"
                              : ""));
    }
}

class CategoricalCrossentropy : public Loss {
public:
    std::string name() const override { return "categorical_crossentropy"; }
    xt::xarray<float> prepare_targets(const xt::xarray<float>& y, const Shape& output_shape) const override {
        require_matching_targets(name(), y, output_shape);
        return y;
    }
    Tensor compute(const SplitOutput& output, const xt::xarray<float>& targets) const override {
        const auto& [pre_activation, activation] = output;
        if (activation == "softmax") return ops::softmax_cross_entropy(pre_activation, targets);
        return ops::categorical_crossentropy(get_activation(activation)(pre_activation), targets);
    }
    std::string accuracy_metric(const Shape&) const override { return "categorical_accuracy"; }
};

class SparseCategoricalCrossentropy : public Loss {
public:
    std::string name() const override { return "sparse_categorical_crossentropy"; }
    xt::xarray<float> prepare_targets(const xt::xarray<float>& y, const Shape& output_shape) const override {
        const std::size_t classes = output_shape.back();
        const bool labels_shape = y.dimension() == 1 || (y.dimension() == 2 && y.shape()[1] == 1);
        if (!labels_shape || output_shape.size() != 1) {
            throw ShapeError(name() + ": expected one class label per sample, shape (N,) or (N, 1), for the output " +
                             batch_shape_to_string(output_shape) + "; got targets of shape " + shape_to_string(y.shape()));
        }
        xt::xarray<float> labels = y;
        labels.reshape({y.shape()[0]});
        for (std::size_t i = 0; i < labels.size(); ++i) {
            const float label = labels(i);
            if (!(label >= 0.0f && label < static_cast<float>(classes)) || label != std::floor(label)) {
                throw ValueError(name() + ": label " + std::to_string(label) + " of sample " + std::to_string(i) +
                                 " is not a class index in [0, " + std::to_string(classes - 1) + "]");
            }
        }
        return labels;
    }
    Tensor compute(const SplitOutput& output, const xt::xarray<float>& targets) const override {
        const auto& [pre_activation, activation] = output;
        std::vector<std::int64_t> labels(targets.size());
        for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>(targets(i));
        if (activation == "softmax") return ops::sparse_softmax_cross_entropy<float>(pre_activation, labels);
        xt::xarray<float> one_hot = xt::zeros<float>(pre_activation.shape());
        for (std::size_t i = 0; i < labels.size(); ++i) one_hot(i, static_cast<std::size_t>(labels[i])) = 1.0f;
        return ops::categorical_crossentropy(get_activation(activation)(pre_activation), one_hot);
    }
    std::string accuracy_metric(const Shape&) const override { return "sparse_categorical_accuracy"; }
};

class BinaryCrossentropy : public Loss {
public:
    std::string name() const override { return "binary_crossentropy"; }
    xt::xarray<float> prepare_targets(const xt::xarray<float>& y, const Shape& output_shape) const override {
        xt::xarray<float> targets = y;
        if (output_shape == Shape{1} && y.dimension() == 1) targets.reshape({y.shape()[0], 1});
        require_matching_targets(name(), targets, output_shape);
        for (float v : targets) {
            if (!(v >= 0.0f && v <= 1.0f)) {
                throw ValueError(name() + ": targets must lie in [0, 1], found " + std::to_string(v));
            }
        }
        return targets;
    }
    Tensor compute(const SplitOutput& output, const xt::xarray<float>& targets) const override {
        const auto& [pre_activation, activation] = output;
        if (activation == "sigmoid") return ops::sigmoid_binary_crossentropy(pre_activation, targets);
        return ops::binary_crossentropy(get_activation(activation)(pre_activation), targets);
    }
    std::string accuracy_metric(const Shape&) const override { return "binary_accuracy"; }
};

class MeanSquaredError : public Loss {
public:
    std::string name() const override { return "mse"; }
    xt::xarray<float> prepare_targets(const xt::xarray<float>& y, const Shape& output_shape) const override {
        xt::xarray<float> targets = y;
        if (output_shape == Shape{1} && y.dimension() == 1) targets.reshape({y.shape()[0], 1});
        require_matching_targets(name(), targets, output_shape);
        return targets;
    }
    Tensor compute(const SplitOutput& output, const xt::xarray<float>& targets) const override {
        const auto& [pre_activation, activation] = output;
        return ops::mse(get_activation(activation)(pre_activation), targets);
    }
    std::string accuracy_metric(const Shape& output_shape) const override {
        return output_shape.back() == 1 ? "binary_accuracy" : "categorical_accuracy";
    }
};

using LossFactory = std::function<std::unique_ptr<Loss>()>;

const Registry<LossFactory>& losses() {
    static const Registry<LossFactory> registry(
        "loss", {
                    {"categorical_crossentropy", [] { return std::make_unique<CategoricalCrossentropy>(); }},
                    {"sparse_categorical_crossentropy", [] { return std::make_unique<SparseCategoricalCrossentropy>(); }},
                    {"binary_crossentropy", [] { return std::make_unique<BinaryCrossentropy>(); }},
                    {"mse", [] { return std::make_unique<MeanSquaredError>(); }},
                    {"mean_squared_error", [] { return std::make_unique<MeanSquaredError>(); }},
                });
    return registry;
}

}  // namespace

std::unique_ptr<Loss> make_loss(const std::string& name) { return losses().get(name)(); }

std::vector<std::string> loss_names() { return losses().names(); }

}  // namespace xtnn
