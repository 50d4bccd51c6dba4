#include "xtnn/optimizers.hpp"

#include <cctype>
#include <cmath>
#include <array>
#include <functional>

#include <xsimd/xsimd.hpp>
#include <xtensor/xbuilder.hpp>

#include "xtnn/json.hpp"
#include "xtnn/registry.hpp"
#include "simd.hpp"

namespace xtnn {

std::size_t Optimizer::state_size() const {
    std::size_t total = 0;
    for (const auto& weight_slots : slots_) {
        for (const auto& slot : weight_slots) total += slot.size();
    }
    return total;
}

std::vector<xt::xarray<float>>& Optimizer::slots_for(std::size_t index, const Tensor& weight, std::size_t slot_count) {
    if (slots_.size() <= index) slots_.resize(index + 1);
    auto& weight_slots = slots_[index];
    if (weight_slots.size() != slot_count || (slot_count > 0 && weight_slots[0].shape() != weight.shape())) {
        weight_slots.assign(slot_count, xt::xarray<float>(xt::zeros<float>(weight.shape())));
    }
    return weight_slots;
}

void Optimizer::apply(std::vector<Tensor>& weights) {
    apply(weights, 1, [](std::size_t, const std::function<void(std::size_t)>& task) { task(0); });
}

void Optimizer::apply(std::vector<Tensor>& weights, std::size_t parts, const PartRunner& run) {
    begin_update();
    const std::size_t slot_count = slot_names().size();
    struct Update {
        float* w;
        const float* g;
        std::size_t size;
        std::vector<xt::xarray<float>>* slots;
    };
    // Slots are made first: making one may move the others.
    for (std::size_t i = 0; i < weights.size(); ++i) {
        if (slot_count > 0 && weights[i].has_grad()) slots_for(i, weights[i], slot_count);
    }
    std::vector<xt::xarray<float>> no_slots;
    std::vector<Update> updates;
    for (std::size_t i = 0; i < weights.size(); ++i) {
        Tensor& weight = weights[i];
        if (!weight.has_grad()) continue;
        auto* slots = slot_count > 0 ? &slots_[i] : &no_slots;
        updates.push_back({weight.mutable_value().data(), weight.grad().data(), weight.size(), slots});
    }
    run(parts, [&](std::size_t part) {
        for (const auto& u : updates) update(u.w, u.g, *u.slots, u.size * part / parts, u.size * (part + 1) / parts);
    });
    ++iterations_;
}

void Optimizer::apply_segments(std::vector<Tensor>& weights, const std::vector<const float*>& gradients,
                               const std::vector<Segment>& segments) {
    begin_update();
    const std::size_t slot_count = slot_names().size();
    for (std::size_t i = 0; i < weights.size(); ++i) {
        if (slot_count > 0 && gradients[i]) slots_for(i, weights[i], slot_count);
    }
    std::vector<xt::xarray<float>> no_slots;
    for (const Segment& segment : segments) {
        if (!gradients[segment.weight]) continue;
        auto& slots = slot_count > 0 ? slots_[segment.weight] : no_slots;
        update(weights[segment.weight].mutable_value().data(), gradients[segment.weight], slots, segment.begin, segment.end);
    }
    ++iterations_;
}

namespace {

void require_positive(const char* optimizer, const char* field, double value) {
    if (!(value > 0.0) || !std::isfinite(value)) {
        throw ValueError(std::string(optimizer) + ": " + field + " must be positive and finite, got " + std::to_string(value));
    }
}

void require_fraction(const char* optimizer, const char* field, double value) {
    if (!(value >= 0.0 && value < 1.0)) {
        throw ValueError(std::string(optimizer) + ": " + field + " must be in [0, 1), got " + std::to_string(value));
    }
}

// Runs step(j, Value{}) over [begin, end): Value is a SIMD register of floats for whole registers,
// then float for the tail. A step that spells out its fused multiply-adds gives an element the same
// bits either way, so they do not depend on where a part of an update begins (fit's threads and
// ranks split updates anywhere). Written out because std::sqrt's errno path keeps compilers from
// vectorizing such loops. The weights `w` are fetched for writing 64 lines ahead: when fit's
// threads share a step, the other core read this part of the weights in the step's products, and
// each line's write waits for that copy to be dropped; asked for early, the waits overlap (W2 on
// two threads, in an hour when the cores' exchanges were slow: 0.285-0.288 -> 0.260-0.262 s an
// epoch; unchanged in a fast hour and on one thread).
template <class Step>
void for_each_element(std::size_t begin, std::size_t end, float* w, Step&& step) {
    using Batch = xsimd::batch<float>;
    constexpr std::size_t ahead = 64 * 64 / sizeof(float);
    std::size_t j = begin;
    for (; j + Batch::size <= end; j += Batch::size) {
        // Only inside the array: a pointer further than one past its end is undefined behaviour.
        if (j + ahead < end) __builtin_prefetch(w + j + ahead, 1);
        step(j, Batch{});
    }
    for (; j < end; ++j) step(j, 0.0f);
}

template <class Value>
Value read(const float* source) {
    if constexpr (std::is_same_v<Value, float>) {
        return *source;
    } else {
        return Value::load_unaligned(source);
    }
}

template <class Value>
void write(float* destination, Value value) {
    if constexpr (std::is_same_v<Value, float>) {
        *destination = value;
    } else {
        value.store_unaligned(destination);
    }
}

class SgdOptimizer : public Optimizer {
public:
    explicit SgdOptimizer(SGD config) : config_(config) {
        require_positive("SGD", "learning_rate", config.learning_rate);
        require_fraction("SGD", "momentum", config.momentum);
    }
    std::string name() const override { return "SGD"; }
    std::vector<std::string> slot_names() const override {
        if (static_cast<float>(config_.momentum) == 0.0f) return {};
        return {"momentum"};
    }
    double learning_rate() const override { return config_.learning_rate; }
    void set_learning_rate(double lr) override { config_.learning_rate = lr; }
    nlohmann::json config() const override {
        return {{"name", "sgd"}, {"learning_rate", config_.learning_rate}, {"momentum", config_.momentum},
                {"nesterov", config_.nesterov}};
    }

    void update(float* w, const float* g, std::vector<xt::xarray<float>>& slots, std::size_t begin,
                std::size_t end) const override {
        const auto lr = static_cast<float>(config_.learning_rate);
        const auto momentum = static_cast<float>(config_.momentum);
        float* velocity = slots.empty() ? nullptr : slots[0].data();
        const bool nesterov = config_.nesterov;
        for_each_element(begin, end, w, [&](std::size_t j, auto kind) {
            using Value = decltype(kind);
            const auto step = Value(lr) * read<Value>(g + j);
            if (!velocity) {
                write(w + j, read<Value>(w + j) - step);
                return;
            }
            const auto change = Value(momentum) * read<Value>(velocity + j) - step;
            write(velocity + j, change);
            write(w + j, read<Value>(w + j) + (nesterov ? Value(momentum) * change - step : change));
        });
    }

private:
    SGD config_;
};

class AdamOptimizer : public Optimizer {
public:
    explicit AdamOptimizer(Adam config) : config_(config) {
        require_positive("Adam", "learning_rate", config.learning_rate);
        require_fraction("Adam", "beta_1", config.beta_1);
        require_fraction("Adam", "beta_2", config.beta_2);
        require_positive("Adam", "epsilon", config.epsilon);
    }
    std::string name() const override { return "Adam"; }
    std::vector<std::string> slot_names() const override { return {"momentum", "velocity"}; }
    double learning_rate() const override { return config_.learning_rate; }
    void set_learning_rate(double lr) override { config_.learning_rate = lr; }
    nlohmann::json config() const override {
        return {{"name", "adam"}, {"learning_rate", config_.learning_rate}, {"beta_1", config_.beta_1},
                {"beta_2", config_.beta_2}, {"epsilon", config_.epsilon}};
    }

    void begin_update() override {
        const double step = static_cast<double>(iterations_ + 1);
        rate_ = static_cast<float>(config_.learning_rate * std::sqrt(1.0 - std::pow(config_.beta_2, step)) /
                                   (1.0 - std::pow(config_.beta_1, step)));
    }

    void update(float* w, const float* g, std::vector<xt::xarray<float>>& slots, std::size_t begin,
                std::size_t end) const override {
        const auto one_minus_beta_1 = static_cast<float>(1.0 - config_.beta_1);
        const auto one_minus_beta_2 = static_cast<float>(1.0 - config_.beta_2);
        const auto epsilon = static_cast<float>(config_.epsilon);
        const float lr = rate_;
        float* m = slots[0].data();
        float* v = slots[1].data();
        for_each_element(begin, end, w, [&](std::size_t j, auto kind) {
            using Value = decltype(kind);
            using detail::fused_multiply_add, xsimd::sqrt;
            const auto gradient = read<Value>(g + j);
            const auto momentum = fused_multiply_add(gradient - read<Value>(m + j), Value(one_minus_beta_1), read<Value>(m + j));
            const auto velocity = fused_multiply_add(fused_multiply_add(gradient, gradient, -read<Value>(v + j)),
                                                     Value(one_minus_beta_2), read<Value>(v + j));
            write(m + j, momentum);
            write(v + j, velocity);
            write(w + j, read<Value>(w + j) - (Value(lr) * momentum) / (sqrt(velocity) + Value(epsilon)));
        });
    }

private:
    Adam config_;
    float rate_ = 0;  // the learning rate with the bias corrections of the coming step
};

class RmspropOptimizer : public Optimizer {
public:
    explicit RmspropOptimizer(RMSprop config) : config_(config) {
        require_positive("RMSprop", "learning_rate", config.learning_rate);
        require_fraction("RMSprop", "rho", config.rho);
        require_fraction("RMSprop", "momentum", config.momentum);
        require_positive("RMSprop", "epsilon", config.epsilon);
    }
    std::string name() const override { return "RMSprop"; }
    std::vector<std::string> slot_names() const override {
        if (static_cast<float>(config_.momentum) == 0.0f) return {"velocity"};
        return {"velocity", "momentum"};
    }
    double learning_rate() const override { return config_.learning_rate; }
    void set_learning_rate(double lr) override { config_.learning_rate = lr; }
    nlohmann::json config() const override {
        return {{"name", "rmsprop"}, {"learning_rate", config_.learning_rate}, {"rho", config_.rho},
                {"momentum", config_.momentum}, {"epsilon", config_.epsilon}};
    }

    void update(float* w, const float* g, std::vector<xt::xarray<float>>& slots, std::size_t begin,
                std::size_t end) const override {
        const auto lr = static_cast<float>(config_.learning_rate);
        const auto rho = static_cast<float>(config_.rho);
        const auto momentum = static_cast<float>(config_.momentum);
        const auto epsilon = static_cast<float>(config_.epsilon);
        float* average = slots[0].data();
        float* velocity = momentum > 0.0f ? slots[1].data() : nullptr;
        for_each_element(begin, end, w, [&](std::size_t j, auto kind) {
            using Value = decltype(kind);
            using detail::fused_multiply_add, xsimd::sqrt;
            const auto gradient = read<Value>(g + j);
            const auto mean_square =
                fused_multiply_add(Value(rho), read<Value>(average + j), Value(1.0f - rho) * gradient * gradient);
            write(average + j, mean_square);
            auto increment = Value(lr) * gradient / sqrt(mean_square + Value(epsilon));
            if (velocity) {
                increment = fused_multiply_add(Value(momentum), read<Value>(velocity + j), increment);
                write(velocity + j, increment);
            }
            write(w + j, read<Value>(w + j) - increment);
        });
    }

private:
    RMSprop config_;
};

template <class T>
T number(const nlohmann::json& config, const char* key, T fallback) {
    if (!config.contains(key)) return fallback;
    if (!config[key].is_number() && !config[key].is_boolean()) {
        throw ValueError(std::string("optimizer config: '") + key + "' must be a number, got " + json::excerpt(config[key]));
    }
    return config[key].get<T>();
}

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>(const nlohmann::json&)>;

const Registry<OptimizerFactory>& optimizers() {
    static const Registry<OptimizerFactory> registry(
        "optimizer",
        {
            {"sgd",
             [](const nlohmann::json& c) {
                 SGD d;
                 return std::make_unique<SgdOptimizer>(SGD{number(c, "learning_rate", d.learning_rate),
                                                           number(c, "momentum", d.momentum),
                                                           number(c, "nesterov", d.nesterov)});
             }},
            {"adam",
             [](const nlohmann::json& c) {
                 Adam d;
                 return std::make_unique<AdamOptimizer>(Adam{number(c, "learning_rate", d.learning_rate),
                                                             number(c, "beta_1", d.beta_1), number(c, "beta_2", d.beta_2),
                                                             number(c, "epsilon", d.epsilon)});
             }},
            {"rmsprop",
             [](const nlohmann::json& c) {
                 RMSprop d;
                 return std::make_unique<RmspropOptimizer>(RMSprop{number(c, "learning_rate", d.learning_rate),
                                                                   number(c, "rho", d.rho), number(c, "momentum", d.momentum),
                                                                   number(c, "epsilon", d.epsilon)});
             }},
        });
    return registry;
}

}  // namespace

std::unique_ptr<Optimizer> OptimizerSpec::make() const {
    return std::visit(
        [](const auto& spec) -> std::unique_ptr<Optimizer> {
            using Spec = std::decay_t<decltype(spec)>;
            if constexpr (std::is_same_v<Spec, std::string>) {
                std::string lower = spec;
                for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                return optimizers().get(lower)(nlohmann::json::object());
            } else if constexpr (std::is_same_v<Spec, std::shared_ptr<const nlohmann::json>>) {
                return make_optimizer(*spec);
            } else if constexpr (std::is_same_v<Spec, SGD>) {
                return std::make_unique<SgdOptimizer>(spec);
            } else if constexpr (std::is_same_v<Spec, Adam>) {
                return std::make_unique<AdamOptimizer>(spec);
            } else {
                return std::make_unique<RmspropOptimizer>(spec);
            }
        },
        spec_);
}

OptimizerSpec OptimizerSpec::from_config(const nlohmann::json& config) {
    make_optimizer(config);
    return OptimizerSpec(Spec(std::make_shared<const nlohmann::json>(config)));
}

std::unique_ptr<Optimizer> make_optimizer(const nlohmann::json& config) {
    json::require_depth(config, "optimizer config");
    if (!config.is_object() || !config.contains("name") || !config["name"].is_string()) {
        throw ValueError("optimizer config must be an object with a 'name', got " + json::excerpt(config));
    }
    try {
        return optimizers().get(config["name"].get<std::string>())(config);
    } catch (const nlohmann::json::exception& e) {
        throw ValueError(std::string("optimizer config: ") + e.what());
    }
}

std::vector<std::string> optimizer_names() { return optimizers().names(); }

}  // namespace xtnn
