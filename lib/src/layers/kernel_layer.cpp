#include "xtnn/layers/kernel_layer.hpp"

#include "config_fields.hpp"
#include "xtnn/activations.hpp"
#include "xtnn/initializers.hpp"
#include "xtnn/layers/convolutional.hpp"
#include "xtnn/layers/core.hpp"

namespace xtnn {

template <class Options>
KernelLayer<Options>::KernelLayer(Options options)
    : Layer(config_fields::optional_shape(options.input_shape)), options_(std::move(options)) {
    get_activation(options_.activation);
    require_initializer(options_.kernel_initializer);
    require_initializer(options_.bias_initializer);
}

template <class Options>
void KernelLayer<Options>::build_weights(const Shape& input_shape, Generator& generator) {
    const auto shapes = weight_shapes(input_shape);
    kernel_ = add_weight("kernel", initialize(options_.kernel_initializer, shapes[0], generator));
    if (options_.use_bias) bias_ = add_weight("bias", initialize(options_.bias_initializer, shapes[1], generator));
}

template <class Options>
Tensor KernelLayer<Options>::apply_kernel_and_bias(const Tensor& x, bool relu) {
    return relu ? ops::bias_relu(apply_kernel(x), bias_) : ops::bias_add(apply_kernel(x), bias_);
}

template <class Options>
Tensor KernelLayer<Options>::before_activation(const Tensor& x) {
    return options_.use_bias ? apply_kernel_and_bias(x, false) : apply_kernel(x);
}

template <class Options>
SplitOutput KernelLayer<Options>::call_split(const std::vector<Tensor>& inputs, bool) {
    if (inputs.size() != 1) throw ValueError(describe() + " takes one input, got " + std::to_string(inputs.size()));
    return {before_activation(inputs[0]), options_.activation};
}

template <class Options>
Tensor KernelLayer<Options>::call(const Tensor& x, bool) {
    if (options_.use_bias && options_.activation == "relu") return apply_kernel_and_bias(x, true);
    return get_activation(options_.activation)(before_activation(x));
}

template <class Options>
nlohmann::json KernelLayer<Options>::kernel_config() const {
    nlohmann::json config = Layer::config();
    config["activation"] = options_.activation;
    config["use_bias"] = options_.use_bias;
    config["kernel_initializer"] = initializer_config(options_.kernel_initializer);
    config["bias_initializer"] = initializer_config(options_.bias_initializer);
    // Keras writes these even when unset; xtnn has none of them.
    for (const char* unset : {"kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint"}) config[unset] = nullptr;
    return config;
}

template class KernelLayer<DenseOptions>;
template class KernelLayer<Conv2DOptions>;

}  // namespace xtnn
