#include "xtnn/initializers.hpp"

#include <cmath>
#include <functional>

#include <nlohmann/json.hpp>
#include <xtensor/xbuilder.hpp>

#include "xtnn/registry.hpp"

namespace xtnn {

// The values come from Generator's draws (random.cpp, built without fused multiply-adds so that
// every compiler gives the same bits); keep arithmetic that a compiler could fuse out of this file.

namespace {

struct Fans {
    double in;
    double out;
};

Fans fans_of(const Shape& shape) {
    if (shape.empty()) return {1, 1};
    if (shape.size() == 1) return {double(shape[0]), double(shape[0])};
    // Convolution kernels (..., in, out): the leading extents are the receptive field.
    double receptive_field = 1;
    for (std::size_t i = 0; i + 2 < shape.size(); ++i) receptive_field *= double(shape[i]);
    return {double(shape[shape.size() - 2]) * receptive_field, double(shape.back()) * receptive_field};
}

xt::xarray<float> uniform_with_limit(const Shape& shape, double limit, Generator& generator) {
    xt::xarray<float> values = xt::empty<float>(shape);
    const float bound = static_cast<float>(limit);
    for (float& v : values) v = generator.uniform_symmetric(bound);
    return values;
}

// Keras's truncated normal: resample beyond two standard deviations; the 0.8796... corrects the
// variance lost by truncation.
xt::xarray<float> truncated_normal(const Shape& shape, double variance, Generator& generator) {
    const double stddev = std::sqrt(variance) / 0.87962566103423978;
    xt::xarray<float> values = xt::empty<float>(shape);
    for (float& v : values) {
        double z;
        do {
            z = generator.normal();
        } while (std::abs(z) > 2.0);
        v = static_cast<float>(z * stddev);
    }
    return values;
}

using Initializer = std::function<xt::xarray<float>(const Shape&, Generator&)>;

const Registry<Initializer>& initializers() {
    static const Registry<Initializer> registry(
        "initializer",
        {
            {"zeros", [](const Shape& s, Generator&) { return xt::xarray<float>(xt::zeros<float>(s)); }},
            {"ones", [](const Shape& s, Generator&) { return xt::xarray<float>(xt::ones<float>(s)); }},
            {"glorot_uniform",
             [](const Shape& s, Generator& g) {
                 Fans f = fans_of(s);
                 return uniform_with_limit(s, std::sqrt(6.0 / (f.in + f.out)), g);
             }},
            {"glorot_normal",
             [](const Shape& s, Generator& g) {
                 Fans f = fans_of(s);
                 return truncated_normal(s, 2.0 / (f.in + f.out), g);
             }},
            {"he_uniform",
             [](const Shape& s, Generator& g) { return uniform_with_limit(s, std::sqrt(6.0 / fans_of(s).in), g); }},
            {"he_normal", [](const Shape& s, Generator& g) { return truncated_normal(s, 2.0 / fans_of(s).in, g); }},
            {"lecun_uniform",
             [](const Shape& s, Generator& g) { return uniform_with_limit(s, std::sqrt(3.0 / fans_of(s).in), g); }},
            {"lecun_normal", [](const Shape& s, Generator& g) { return truncated_normal(s, 1.0 / fans_of(s).in, g); }},
        });
    return registry;
}

}  // namespace

xt::xarray<float> initialize(const std::string& name, const Shape& shape, Generator& generator) {
    return initializers().get(name)(shape, generator);
}

std::vector<std::string> initializer_names() { return initializers().names(); }

void require_initializer(const std::string& name) { initializers().get(name); }

nlohmann::json initializer_config(const std::string& name) {
    require_initializer(name);
    std::string class_name;
    bool word_start = true;
    for (char c : name) {
        if (c == '_') {
            word_start = true;
            continue;
        }
        class_name += word_start ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
        word_start = false;
    }
    const bool random = name != "zeros" && name != "ones";
    return {{"module", "keras.initializers"},
            {"class_name", class_name},
            {"config", random ? nlohmann::json{{"seed", nullptr}} : nlohmann::json::object()},
            {"registered_name", nullptr}};
}

}  // namespace xtnn
