#pragma once
// Metrics by Keras name. "accuracy" resolves to categorical, sparse or binary accuracy from the
// loss, as Keras does; values are means over samples.

#include <memory>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/losses.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

class Metric {
public:
    explicit Metric(std::string name) : name_(std::move(name)) {}
    virtual ~Metric() = default;
    /// The name shown in logs: what the user asked for ("accuracy").
    const std::string& name() const { return name_; }
    /// The metric summed over the batch's samples (the caller divides by the sample count).
    virtual double batch_total(const xt::xarray<float>& predictions, const xt::xarray<float>& targets) const = 0;

private:
    std::string name_;
};

/// accuracy (acc), categorical_accuracy, sparse_categorical_accuracy, binary_accuracy,
/// mae (mean_absolute_error), mse (mean_squared_error).
std::unique_ptr<Metric> make_metric(const std::string& name, const Loss& loss, const Shape& output_shape);
std::vector<std::string> metric_names();

}  // namespace xtnn
