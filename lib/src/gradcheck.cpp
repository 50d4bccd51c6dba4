#include "xtnn/gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <xtensor/xbuilder.hpp>

#include "xtnn/autodiff.hpp"

namespace xtnn {

GradientCheckResult check_gradients(const TensorFunction& f, const std::vector<xt::xarray<double>>& inputs,
                                    const GradientCheckOptions& options) {
    auto as_parameters = [](const std::vector<xt::xarray<double>>& values) {
        std::vector<TensorD> parameters;
        for (const auto& value : values) parameters.push_back(TensorD::parameter(value));
        return parameters;
    };
    auto evaluate = [&](const std::vector<xt::xarray<double>>& values) {
        NoGradGuard no_grad;
        return xt::xarray<double>(f(as_parameters(values)).value());
    };

    const xt::xarray<double> output = evaluate(inputs);
    const std::size_t outputs = output.size();

    // analytic[i](o, e): d output[o] / d input_i[e], one backward pass per output element.
    std::vector<xt::xarray<double>> analytic;
    for (const auto& input : inputs) analytic.push_back(xt::zeros<double>({outputs, input.size()}));
    for (std::size_t o = 0; o < outputs; ++o) {
        auto parameters = as_parameters(inputs);
        TensorD y = f(parameters);
        xt::xarray<double> seed = xt::zeros<double>(y.shape());
        seed.data()[o] = 1.0;
        if (y.requires_grad()) y.backward(seed);
        for (std::size_t i = 0; i < inputs.size(); ++i) {
            if (!parameters[i].has_grad()) continue;
            const auto& grad = parameters[i].grad();
            for (std::size_t e = 0; e < grad.size(); ++e) analytic[i](o, e) = grad.data()[e];
        }
    }

    GradientCheckResult result;
    result.worst_excess = -1e300;
    auto perturbed = inputs;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        for (std::size_t e = 0; e < inputs[i].size(); ++e) {
            const double original = inputs[i].data()[e];
            perturbed[i].data()[e] = original + options.eps;
            const xt::xarray<double> plus = evaluate(perturbed);
            perturbed[i].data()[e] = original - options.eps;
            const xt::xarray<double> minus = evaluate(perturbed);
            perturbed[i].data()[e] = original;
            for (std::size_t o = 0; o < outputs; ++o) {
                const double numeric = (plus.data()[o] - minus.data()[o]) / (2 * options.eps);
                const double a = analytic[i](o, e);
                const double excess = std::abs(a - numeric) - (options.atol + options.rtol * std::abs(numeric));
                ++result.entries_checked;
                if (excess > result.worst_excess) {
                    result.worst_excess = excess;
                    std::ostringstream report;
                    report << "input " << i << " element " << e << ", output element " << o
                           << ": analytic " << a << ", numeric " << numeric;
                    result.report = report.str();
                }
                if (excess > 0 || std::isnan(a) || std::isnan(numeric)) result.passed = false;
            }
        }
    }
    return result;
}

double directional_derivative_error(const TensorFunction& f, const std::vector<xt::xarray<double>>& inputs,
                                    Generator& generator, double eps) {
    std::vector<xt::xarray<double>> direction;
    for (const auto& input : inputs) {
        xt::xarray<double> v = xt::empty<double>(input.shape());
        for (double& x : v) x = generator.normal();
        direction.push_back(std::move(v));
    }
    std::vector<TensorD> parameters;
    for (const auto& input : inputs) parameters.push_back(TensorD::parameter(input));
    f(parameters).backward();
    double analytic = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const auto& grad = parameters[i].grad();
        for (std::size_t e = 0; e < grad.size(); ++e) analytic += grad.data()[e] * direction[i].data()[e];
    }
    auto shifted = [&](double step) {
        NoGradGuard no_grad;
        std::vector<TensorD> moved;
        for (std::size_t i = 0; i < inputs.size(); ++i) {
            moved.push_back(TensorD::constant(inputs[i] + step * direction[i]));
        }
        return f(moved).item();
    };
    const double numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
    return std::abs(analytic - numeric) / std::max(std::abs(numeric), 1e-12);
}

}  // namespace xtnn
