// compile: the loss, loss weight and metrics of every output (the model's heads) and the optimizer.

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model_internals.hpp"
#include "xtnn/losses.hpp"
#include "xtnn/metrics.hpp"
#include "xtnn/model.hpp"

namespace xtnn {

namespace {

// One value per output from a setting given for every output, as a list, or by output name.
template <class T>
std::vector<T> per_output(const std::string& what, const std::vector<std::string>& outputs, const std::vector<T>& list,
                          const std::map<std::string, T>& by_name, const T& fallback, bool list_may_be_one) {
    if (!list.empty() && !by_name.empty()) throw ValueError("compile: give " + what + " as a list or by output name, not both");
    std::vector<T> values(outputs.size(), fallback);
    if (!list.empty()) {
        if (list_may_be_one && list.size() == 1) return std::vector<T>(outputs.size(), list[0]);
        if (list.size() != outputs.size()) {
            throw ValueError(fmt::format("compile: {} {} given for a model of {} outputs ({})", list.size(), what,
                                         outputs.size(), fmt::join(outputs, ", ")));
        }
        return list;
    }
    for (const auto& [name, value] : by_name) {
        const auto found = std::find(outputs.begin(), outputs.end(), name);
        if (found == outputs.end()) {
            throw ValueError(fmt::format("compile: {} for '{}', which is not an output; the outputs are {}", what, name,
                                         fmt::join(outputs, ", ")));
        }
        values[std::size_t(found - outputs.begin())] = value;
    }
    return values;
}

}  // namespace

const Loss* Model::loss() const { return heads_.empty() ? nullptr : heads_[0]->loss.get(); }

void Model::compile(const std::string& loss, const OptimizerSpec& optimizer, const std::vector<std::string>& metrics) {
    compile(CompileOptions{.loss = {loss}, .optimizer = optimizer, .metrics = metrics});
}

void Model::compile(const CompileOptions& options) {
    if (options.loss.empty() && options.loss_by_output.empty()) throw ValueError("compile: no loss given");
    auto optimizer = options.optimizer.make();
    if (built()) {
        heads_ = make_heads(options);
    } else {
        // A Sequential built later (by its first fit, predict or build) resolves them then.
        if (!options.metrics.empty() || !options.metrics_by_output.empty()) {
            throw ValueError("compile: model '" + name_ + "' is not built, so metrics cannot be resolved; give the first "
                             "layer an input_shape or call build() first");
        }
        if (options.loss.size() != 1) throw ValueError("compile: model '" + name_ + "' is not built; give one loss");
        make_loss(options.loss[0]);
        heads_.clear();
    }
    optimizer_ = std::move(optimizer);
    compile_options_ = options;
}

std::vector<std::unique_ptr<Model::Head>> Model::make_heads(const CompileOptions& options) const {
    const auto outputs = output_names();
    const auto losses = per_output<std::string>("losses", outputs, options.loss, options.loss_by_output, "", true);
    const auto weights = per_output<double>("loss weights", outputs, options.loss_weights, options.loss_weights_by_output, 1.0, false);
    std::vector<std::vector<std::string>> metrics(outputs.size(), options.metrics);
    for (const auto& [name, list] : options.metrics_by_output) {
        const auto found = std::find(outputs.begin(), outputs.end(), name);
        if (found == outputs.end()) {
            throw ValueError(fmt::format("compile: metrics for '{}', which is not an output; the outputs are {}", name,
                                         fmt::join(outputs, ", ")));
        }
        auto& chosen = metrics[std::size_t(found - outputs.begin())];
        chosen.insert(chosen.end(), list.begin(), list.end());
    }
    const auto shapes = output_shapes();
    std::vector<std::unique_ptr<Head>> heads;
    for (std::size_t o = 0; o < outputs.size(); ++o) {
        if (losses[o].empty()) throw ValueError("compile: no loss for output '" + outputs[o] + "'");
        if (!std::isfinite(weights[o]) || weights[o] < 0) {
            throw ValueError(fmt::format("compile: the loss weight of output '{}' must be finite and not negative, got {}",
                                         outputs[o], weights[o]));
        }
        auto head = std::make_unique<Head>();
        head->output_name = outputs[o];
        head->loss = make_loss(losses[o]);
        head->weight = weights[o];
        for (const auto& name : metrics[o]) head->metrics.push_back(make_metric(name, *head->loss, shapes[o]));
        heads.push_back(std::move(head));
    }
    return heads;
}

}  // namespace xtnn
