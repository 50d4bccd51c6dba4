#include "xtnn/activations.hpp"

#include "xtnn/ops.hpp"
#include "xtnn/registry.hpp"

namespace xtnn {

namespace {

const Registry<ActivationFn>& activations() {
    static const Registry<ActivationFn> registry(
        "activation", {
                          {"linear", [](const Tensor& x) { return x; }},
                          {"relu", [](const Tensor& x) { return ops::relu(x); }},
                          {"sigmoid", [](const Tensor& x) { return ops::sigmoid(x); }},
                          {"tanh", [](const Tensor& x) { return ops::tanh(x); }},
                          {"softmax", [](const Tensor& x) { return ops::softmax(x); }},
                          {"elu", [](const Tensor& x) { return ops::elu(x); }},
                          {"leaky_relu", [](const Tensor& x) { return ops::leaky_relu(x); }},
                          {"softplus", [](const Tensor& x) { return ops::softplus(x); }},
                          {"gelu", [](const Tensor& x) { return ops::gelu(x); }},
                      });
    return registry;
}

}  // namespace

const ActivationFn& get_activation(const std::string& name) { return activations().get(name); }

std::vector<std::string> activation_names() { return activations().names(); }

Tensor SplitOutput::activated() const { return get_activation(activation)(pre_activation); }

}  // namespace xtnn
