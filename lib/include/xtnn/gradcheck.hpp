#pragma once
// Checks an op's backward pass against central finite differences, in double precision, the way
// torch.autograd.gradcheck does: the full Jacobian, |analytic - numeric| <= atol + rtol |numeric|
// for every entry. Use it for every new op.

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

struct GradientCheckOptions {
    double eps = 1e-6;
    double atol = 1e-5;
    double rtol = 1e-3;
};

struct GradientCheckResult {
    bool passed = true;
    std::size_t entries_checked = 0;
    double worst_excess = 0;  // max of |a - n| - (atol + rtol |n|); <= 0 when passed
    std::string report;       // the worst entry, for the failure message

    explicit operator bool() const { return passed; }
};

/// A function of the inputs (given as trainable parameters) whose gradients are checked.
using TensorFunction = std::function<TensorD(const std::vector<TensorD>&)>;

/// `f` maps the inputs to a tensor of any shape.
GradientCheckResult check_gradients(const TensorFunction& f, const std::vector<xt::xarray<double>>& inputs,
                                    const GradientCheckOptions& options = {});

/// One directional derivative of a scalar function, JAX-style: <v, grad f> against
/// (f(x + eps v) - f(x - eps v)) / 2 eps for a random normal direction v. Returns the relative error.
double directional_derivative_error(const TensorFunction& f, const std::vector<xt::xarray<double>>& inputs,
                                    Generator& generator, double eps = 1e-6);

}  // namespace xtnn
