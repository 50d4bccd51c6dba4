#pragma once
// Optimizers with Keras's update rules and defaults. Configure one as an aggregate
// (xtnn::SGD{.learning_rate = 0.01, .momentum = 0.9}) or by name ("sgd", "adam", "rmsprop").

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <xtensor/xarray.hpp>

#include "xtnn/tensor.hpp"

namespace xtnn {

struct SGD {
    double learning_rate = 0.01;
    double momentum = 0.0;
    bool nesterov = false;
};

struct Adam {
    double learning_rate = 0.001;
    double beta_1 = 0.9;
    double beta_2 = 0.999;
    double epsilon = 1e-7;
};

struct RMSprop {
    double learning_rate = 0.001;
    double rho = 0.9;
    double momentum = 0.0;
    double epsilon = 1e-7;
};

class Optimizer {
public:
    virtual ~Optimizer() = default;
    virtual std::string name() const = 0;
    /// Runs task(0), ..., task(parts - 1), possibly on several threads at once.
    using PartRunner = std::function<void(std::size_t parts, const std::function<void(std::size_t)>& task)>;

    /// One update of every weight from its gradient; weights whose gradient never arrived are
    /// left alone. State (momenta) is created on the first call.
    void apply(std::vector<Tensor>& weights);
    /// The same update with each weight's elements split into `parts` ranges, updated by the tasks
    /// `run` runs (fit runs them on its threads). Every element is updated as by apply(), so the
    /// result is the same bit for bit.
    void apply(std::vector<Tensor>& weights, std::size_t parts, const PartRunner& run);

    /// Elements [begin, end) of weight `weight`.
    struct Segment {
        std::size_t weight, begin, end;
    };
    /// One update of the given segments only, each from the gradient `gradients[weight]` points
    /// to (the whole weight's gradient); weights whose pointer is null are left alone. The ranks
    /// of a distributed fit split one update among themselves this way (each element's update is
    /// the one apply() makes). Slots are created whole for every weight that has a gradient.
    void apply_segments(std::vector<Tensor>& weights, const std::vector<const float*>& gradients,
                        const std::vector<Segment>& segments);

    virtual double learning_rate() const = 0;
    virtual void set_learning_rate(double learning_rate) = 0;
    /// Updates applied so far (Keras's `iterations`).
    std::int64_t iterations() const { return iterations_; }
    /// Number of values of state per weight set (momenta, ...), for summaries.
    std::size_t state_size() const;
    virtual nlohmann::json config() const = 0;

    /// The names of the state arrays kept per weight, in slot order (Keras's names).
    virtual std::vector<std::string> slot_names() const = 0;
    /// The slots (momenta, squared averages) by weight index, for saving and exact resume; a
    /// weight's slots are empty until its first update.
    std::vector<std::vector<xt::xarray<float>>>& slots() { return slots_; }
    const std::vector<std::vector<xt::xarray<float>>>& slots() const { return slots_; }
    void set_iterations(std::int64_t iterations) { iterations_ = iterations; }

protected:
    /// Computes what the coming update needs for every element (Adam's bias-corrected rate).
    virtual void begin_update() {}
    /// Updates elements [begin, end) of one weight `w` from its gradient `g` and its slots, in
    /// slot_names() order. Called for disjoint ranges at once, so it writes nothing else.
    virtual void update(float* w, const float* g, std::vector<xt::xarray<float>>& slots, std::size_t begin,
                        std::size_t end) const = 0;
    std::int64_t iterations_ = 0;

private:
    /// The `slot_count` state arrays of weight `index`, created zero on first use.
    std::vector<xt::xarray<float>>& slots_for(std::size_t index, const Tensor& weight, std::size_t slot_count);

    std::vector<std::vector<xt::xarray<float>>> slots_;
};

/// An optimizer given by name or by configuration, as compile() takes it.
class OptimizerSpec {
public:
    OptimizerSpec(const char* name) : spec_(std::string(name)) {}
    OptimizerSpec(std::string name) : spec_(std::move(name)) {}
    OptimizerSpec(SGD config) : spec_(config) {}
    OptimizerSpec(Adam config) : spec_(config) {}
    OptimizerSpec(RMSprop config) : spec_(config) {}
    /// From a config such as {"name": "sgd", "learning_rate": 0.05}; missing fields keep defaults.
    static OptimizerSpec from_config(const nlohmann::json& config);

    std::unique_ptr<Optimizer> make() const;

private:
    // The config is held by pointer so that this header needs only nlohmann::json's declaration.
    using Spec = std::variant<std::string, SGD, Adam, RMSprop, std::shared_ptr<const nlohmann::json>>;
    explicit OptimizerSpec(Spec spec) : spec_(std::move(spec)) {}
    Spec spec_;
};

/// An optimizer from its config as Optimizer::config() writes it ({"name": "adam", ...}).
std::unique_ptr<Optimizer> make_optimizer(const nlohmann::json& config);
std::vector<std::string> optimizer_names();

}  // namespace xtnn
