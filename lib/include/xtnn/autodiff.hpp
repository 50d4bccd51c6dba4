#pragma once
// How an op joins the graph. An op computes its value, then calls make_op with its inputs and
// a backward function; make_op records the node only when some input needs a gradient and
// gradients are enabled, so inference builds no graph at all.

#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/tensor.hpp"

namespace xtnn {

/// False inside a NoGradGuard scope (on this thread).
bool grad_enabled();

/// Disables graph recording on this thread for its lifetime (torch.no_grad()).
class NoGradGuard {
public:
    NoGradGuard();
    ~NoGradGuard();
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool previous_;
};

/// The result of an op named `name`. `backward(out)` reads out.grad and adds each input's
/// share with accumulate_grad / grad_buffer; it is kept only if some input requires a gradient.
template <class T>
BasicTensor<T> make_op(const char* name, xt::xarray<T> value, std::vector<BasicTensor<T>> inputs,
                       typename Node<T>::BackwardFn backward);

/// The node's gradient buffer, zero-filled with the value's shape on first use; for kernels that
/// accumulate in place (gemm with beta = 1).
template <class T>
xt::xarray<T>& grad_buffer(Node<T>& node) {
    if (!node.has_grad) {
        node.grad = xt::zeros<T>(node.value.shape());
        node.has_grad = true;
    }
    return node.grad;
}

/// The node's gradient for a kernel that can overwrite or accumulate (gemm's beta): the first
/// contribution overwrites a fresh buffer, unzeroed (beta 0), later ones add to it (beta 1).
/// Saves zero-filling and re-reading each weight gradient on every step.
template <class T>
std::pair<T*, T> grad_destination(Node<T>& node) {
    if (!node.has_grad) {
        node.grad = xt::empty<T>(node.value.shape());
        node.has_grad = true;
        return {node.grad.data(), T(0)};
    }
    return {node.grad.data(), T(1)};
}

/// Adds `contribution` (an array or an xtensor expression of the value's shape) to the gradient.
template <class T, class E>
void accumulate_grad(Node<T>& node, E&& contribution) {
    if (!node.has_grad) {
        node.grad = std::forward<E>(contribution);
        node.has_grad = true;
        if (node.grad.shape() != node.value.shape()) {
            throw ShapeError(std::string("autodiff: gradient for op '") + node.op + "' has shape " +
                             shape_to_string(node.grad.shape()) + ", expected the value's shape " +
                             shape_to_string(node.value.shape()));
        }
    } else {
        node.grad += std::forward<E>(contribution);
    }
}

}  // namespace xtnn
