#pragma once
// Weight initialisers by Keras name. Fan-in and fan-out follow Keras: for a Dense kernel of
// shape (in, out), fan_in = in and fan_out = out. Normal variants are truncated at two standard
// deviations, as Keras's are; every value comes from the seeded Generator.

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <xtensor/xarray.hpp>

#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn {

/// Values for a weight of `shape` from the initialiser called `name`: glorot_uniform,
/// glorot_normal, he_uniform, he_normal, lecun_uniform, lecun_normal, zeros, ones.
xt::xarray<float> initialize(const std::string& name, const Shape& shape, Generator& generator);

std::vector<std::string> initializer_names();

/// Throws a ValueError listing the known initialisers unless `name` is one.
void require_initializer(const std::string& name);

/// The initialiser as Keras 3 serializes it in a layer's config: {"module": "keras.initializers",
/// "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}.
nlohmann::json initializer_config(const std::string& name);

}  // namespace xtnn
