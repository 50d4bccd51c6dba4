#pragma once
// How an op joins the graph. An op computes its value, then calls make_op with its inputs and
// a backward function; make_op records the node only when some input needs a gradient and
// gradients are enabled, so inference builds no graph at all.

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnoalias.hpp>

#include "xtnn/array_pool.hpp"
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

/// Anomaly detection, to find where a NaN or an infinity first appears (PyTorch's
/// torch.autograd.set_detect_anomaly, TensorFlow's tf.debugging.enable_check_numerics). While it
/// is on, every op checks the value it computes and the leaves and constants it is given (weights,
/// data), and every backward step the gradients it passes to its inputs; the first NaN or infinity
/// throws NumericError naming the op, the layer whose call made it, the shape and the element
/// (fit adds the epoch and the batch). Off by default: it reads every value and gradient once
/// more. Process-wide, so that fit's threads check too.
void set_detect_anomaly(bool enabled);
bool anomaly_detection_enabled();

/// Anomaly detection on for its lifetime, then as it was (torch.autograd.detect_anomaly()).
class DetectAnomalyGuard {
public:
    DetectAnomalyGuard();
    ~DetectAnomalyGuard();
    DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
    DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

private:
    bool previous_;
};

/// What anomaly detection checks after every backward step, for an op whose backward pass writes
/// a gradient where that check does not look (the sharded product's whole-batch kernel gradient,
/// past the thread's LeafGradients): throws NumericError when `gradient`, that of input `input`
/// of `node`, holds a NaN or an infinity.
template <class T>
void check_passed_gradient(const Node<T>& node, std::size_t input, const xt::xarray<T>& gradient);

/// Names the layer whose call makes the ops of this thread for its lifetime, for anomaly
/// detection's messages (Model sets it around each layer call).
class LayerScope {
public:
    explicit LayerScope(const std::string& layer);
    ~LayerScope();
    LayerScope(const LayerScope&) = delete;
    LayerScope& operator=(const LayerScope&) = delete;

private:
    const std::string* previous_;
};

/// The result of an op named `name`. `backward(out)` reads out.grad and adds each input's
/// share with accumulate_grad / grad_buffer; it is kept only if some input requires a gradient.
template <class T>
BasicTensor<T> make_op(const char* name, xt::xarray<T> value, std::vector<BasicTensor<T>> inputs,
                       typename Node<T>::BackwardFn backward);

/// The node that holds `node`'s gradient: `node` itself, except for a leaf while a LeafGradients
/// redirects the calling thread (then that object's holder for the leaf).
template <class T>
Node<T>& gradient_holder(Node<T>& node);

/// The node's gradient buffer, zero-filled with the value's shape on first use; for kernels that
/// accumulate in place (gemm with beta = 1).
template <class T>
xt::xarray<T>& grad_buffer(Node<T>& node) {
    Node<T>& holder = node.is_leaf() ? gradient_holder(node) : node;
    if (!holder.has_grad) {
        if (holder.grad.shape() == node.value.shape()) {
            std::fill(holder.grad.begin(), holder.grad.end(), T(0));
        } else {
            holder.grad = pooled_zeros<T>(node.value.shape());
        }
        holder.has_grad = true;
    }
    return holder.grad;
}

/// The node's gradient for a kernel that can overwrite or accumulate (gemm's beta): the first
/// contribution overwrites a buffer left as it is (beta 0), later ones add to it (beta 1).
/// Saves zero-filling and re-reading each weight gradient on every step.
template <class T>
std::pair<T*, T> grad_destination(Node<T>& node) {
    Node<T>& holder = node.is_leaf() ? gradient_holder(node) : node;
    if (!holder.has_grad) {
        if (holder.grad.shape() != node.value.shape()) holder.grad = pooled_empty<T>(node.value.shape());
        holder.has_grad = true;
        return {holder.grad.data(), T(0)};
    }
    return {holder.grad.data(), T(1)};
}

/// Adds `contribution` (an array or an xtensor expression of the value's shape) to the gradient.
template <class T, class E>
void accumulate_grad(Node<T>& node, E&& contribution) {
    Node<T>& holder = node.is_leaf() ? gradient_holder(node) : node;
    if (!holder.has_grad) {
        if constexpr (std::is_same_v<std::remove_cvref_t<E>, xt::xarray<T>> && std::is_rvalue_reference_v<E&&>) {
            detail::recycle(holder.grad);
            holder.grad = std::move(contribution);
        } else {
            const auto& shape = contribution.shape();
            if (!std::equal(shape.begin(), shape.end(), holder.grad.shape().begin(), holder.grad.shape().end())) {
                detail::recycle(holder.grad);
                holder.grad = pooled_empty<T>(shape);
            }
            xt::noalias(holder.grad) = std::forward<E>(contribution);
        }
        holder.has_grad = true;
        if (holder.grad.shape() != node.value.shape()) {
            throw ShapeError(std::string("autodiff: gradient for op '") + node.op + "' has shape " +
                             shape_to_string(holder.grad.shape()) + ", expected the value's shape " +
                             shape_to_string(node.value.shape()));
        }
    } else {
        holder.grad += std::forward<E>(contribution);
    }
}

/// Gradient holders of its own for a set of leaves (a model's weights). While a Redirect of it is
/// alive, backward passes on that thread add the leaves' gradients here instead of to the leaves:
/// threads that run slices of one batch through the same weights at once then do not race, and
/// their gradients are summed afterwards in an order the caller fixes.
class LeafGradients {
public:
    explicit LeafGradients(const std::vector<Tensor>& leaves);
    /// Forgets the gradients held; their buffers stay for the next pass.
    void clear();
    /// The gradient held for leaves[i], or nullptr when no pass reached that leaf.
    const xt::xarray<float>* gradient(std::size_t i) const;

    class Redirect {
    public:
        explicit Redirect(LeafGradients& gradients);
        ~Redirect();
        Redirect(const Redirect&) = delete;
        Redirect& operator=(const Redirect&) = delete;

    private:
        LeafGradients* previous_;
    };

private:
    template <class T>
    friend Node<T>& gradient_holder(Node<T>& node);
    Node<float>* holder_of(const Node<float>& leaf);

    std::vector<std::shared_ptr<Node<float>>> leaves_;
    std::vector<std::unique_ptr<Node<float>>> holders_;
};

}  // namespace xtnn
