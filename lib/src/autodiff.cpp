#include "xtnn/autodiff.hpp"

#include "xtnn/array_pool.hpp"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <xtensor/xbuilder.hpp>

namespace xtnn {

namespace {
thread_local bool grad_mode_enabled = true;
thread_local LeafGradients* redirected_leaf_gradients = nullptr;
std::atomic<bool> anomaly_detection{false};
thread_local const std::string* calling_layer = nullptr;

template <class T>
std::optional<std::size_t> first_non_finite_in(const xt::xarray<T>& values) {
    if constexpr (std::is_same_v<T, float>) {
        return first_non_finite({values.data(), values.size()});
    } else {
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (!std::isfinite(values.data()[i])) return i;
        }
        return std::nullopt;
    }
}

template <class T>
std::string describe_value(T value) {
    return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
}

// "op 'matmul' in layer 'dense_1'", or without the layer when no layer call made it.
template <class T>
std::string describe_op(const Node<T>& node) {
    std::string text = std::string("op '") + node.op + "'";
    return node.layer.empty() ? text : text + " in layer '" + node.layer + "'";
}

// "input 1 (shape (784, 32), a leaf: a weight or given data)" or "... made by op 'relu' ...".
template <class T>
std::string describe_input(const Node<T>& input, std::size_t index) {
    const std::string origin = input.inputs.empty() && (std::string_view(input.op) == "leaf" || std::string_view(input.op) == "constant")
                                   ? std::string("a ") + input.op + ": a weight or given data"
                                   : "made by " + describe_op(input);
    return "input " + std::to_string(index) + " (shape " + shape_to_string(input.value.shape()) + ", " + origin + ")";
}

// The first NaN or infinity among what a new op was given by leaves and constants and what it
// computed. The ops' results are checked as they are made, so only those inputs can be new.
template <class T>
void check_forward(const Node<T>& node, const std::vector<BasicTensor<T>>& inputs) {
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        const Node<T>& input = *inputs[k].node();
        if (!input.inputs.empty()) continue;
        if (const auto at = first_non_finite_in(input.value)) {
            throw NumericError("anomaly: " + describe_op(node) + " was given " + describe_value(input.value.data()[*at]) +
                               " at flat index " + std::to_string(*at) + " of its " + describe_input(input, k));
        }
    }
    if (const auto at = first_non_finite_in(node.value)) {
        throw NumericError("anomaly: " + describe_op(node) + " computed " + describe_value(node.value.data()[*at]) +
                           " at flat index " + std::to_string(*at) + " of its output of shape " +
                           shape_to_string(node.value.shape()) + " from finite inputs");
    }
}

// The first NaN or infinity in the gradients a backward step left in its inputs' holders.
template <class T>
void check_backward(Node<T>& node) {
    for (std::size_t k = 0; k < node.inputs.size(); ++k) {
        Node<T>& input = *node.inputs[k];
        if (!input.requires_grad) continue;
        const Node<T>& holder = input.is_leaf() ? gradient_holder(input) : input;
        if (holder.has_grad) check_passed_gradient(node, k, holder.grad);
    }
}

}  // namespace

template <class T>
void check_passed_gradient(const Node<T>& node, std::size_t input, const xt::xarray<T>& gradient) {
    if (const auto at = first_non_finite_in(gradient)) {
        throw NumericError("anomaly: the backward pass of " + describe_op(node) + " gave " + describe_value(gradient.data()[*at]) +
                           " at flat index " + std::to_string(*at) + " of the gradient of its " +
                           describe_input(*node.inputs.at(input), input) + ", from a finite output gradient");
    }
}

void set_detect_anomaly(bool enabled) { anomaly_detection.store(enabled, std::memory_order_relaxed); }
bool anomaly_detection_enabled() { return anomaly_detection.load(std::memory_order_relaxed); }

DetectAnomalyGuard::DetectAnomalyGuard() : previous_(anomaly_detection_enabled()) { set_detect_anomaly(true); }
DetectAnomalyGuard::~DetectAnomalyGuard() { set_detect_anomaly(previous_); }

LayerScope::LayerScope(const std::string& layer) : previous_(calling_layer) { calling_layer = &layer; }
LayerScope::~LayerScope() { calling_layer = previous_; }

template <>
Node<float>& gradient_holder(Node<float>& node) {
    if (redirected_leaf_gradients) {
        if (Node<float>* holder = redirected_leaf_gradients->holder_of(node)) return *holder;
    }
    return node;
}

template <>
Node<double>& gradient_holder(Node<double>& node) {
    return node;
}

LeafGradients::LeafGradients(const std::vector<Tensor>& leaves) {
    for (const auto& leaf : leaves) {
        leaves_.push_back(leaf.node());
        holders_.push_back(std::make_unique<Node<float>>());
    }
}

void LeafGradients::clear() {
    for (auto& holder : holders_) holder->has_grad = false;
}

const xt::xarray<float>* LeafGradients::gradient(std::size_t i) const {
    return holders_.at(i)->has_grad ? &holders_[i]->grad : nullptr;
}

// A linear search: a model has tens of weights, and a step looks each up once or twice.
Node<float>* LeafGradients::holder_of(const Node<float>& leaf) {
    for (std::size_t i = 0; i < leaves_.size(); ++i) {
        if (leaves_[i].get() == &leaf) return holders_[i].get();
    }
    return nullptr;
}

LeafGradients::Redirect::Redirect(LeafGradients& gradients) : previous_(redirected_leaf_gradients) {
    redirected_leaf_gradients = &gradients;
}

LeafGradients::Redirect::~Redirect() { redirected_leaf_gradients = previous_; }

bool grad_enabled() { return grad_mode_enabled; }

NoGradGuard::NoGradGuard() : previous_(grad_mode_enabled) { grad_mode_enabled = false; }
NoGradGuard::~NoGradGuard() { grad_mode_enabled = previous_; }

template <class T>
BasicTensor<T> make_op(const char* name, xt::xarray<T> value, std::vector<BasicTensor<T>> inputs,
                       typename Node<T>::BackwardFn backward) {
    auto node = std::make_shared<Node<T>>(std::move(value));
    node->op = name;
    if (anomaly_detection_enabled()) {
        if (calling_layer) node->layer = *calling_layer;
        check_forward(*node, inputs);
    }
    bool any_input_needs_grad = false;
    for (const auto& input : inputs) any_input_needs_grad = any_input_needs_grad || input.requires_grad();
    if (any_input_needs_grad && grad_enabled()) {
        node->requires_grad = true;
        node->backward = std::move(backward);
        node->inputs.reserve(inputs.size());
        for (const auto& input : inputs) node->inputs.push_back(input.node());
    }
    return BasicTensor<T>(std::move(node));
}

template <class T>
Node<T>::~Node() {
    std::vector<std::shared_ptr<Node>> pending = std::move(inputs);
    while (!pending.empty()) {
        std::shared_ptr<Node> next = std::move(pending.back());
        pending.pop_back();
        if (next.use_count() == 1) {
            for (auto& input : next->inputs) pending.push_back(std::move(input));
            next->inputs.clear();
        }
    }
    detail::recycle(value);
    detail::recycle(grad);
}

template <class T>
BasicTensor<T>::BasicTensor() : node_(std::make_shared<Node<T>>()) {}

template <class T>
BasicTensor<T>::BasicTensor(std::shared_ptr<Node<T>> node) : node_(std::move(node)) {}

template <class T>
BasicTensor<T> BasicTensor<T>::parameter(xt::xarray<T> value) {
    auto node = std::make_shared<Node<T>>(std::move(value));
    node->requires_grad = true;
    return BasicTensor(std::move(node));
}

template <class T>
BasicTensor<T> BasicTensor<T>::constant(xt::xarray<T> value) {
    auto node = std::make_shared<Node<T>>(std::move(value));
    node->op = "constant";
    return BasicTensor(std::move(node));
}

template <class T>
T BasicTensor<T>::item() const {
    if (node_->value.size() != 1) {
        throw ShapeError("item(): expected a tensor with one element, got shape " +
                         shape_to_string(node_->value.shape()));
    }
    return node_->value.data()[0];
}

template <class T>
const xt::xarray<T>& BasicTensor<T>::grad() const {
    if (!node_->requires_grad) {
        throw ValueError(std::string("grad(): the tensor from op '") + node_->op +
                         "' does not require a gradient (make it with Tensor::parameter)");
    }
    return grad_buffer(*node_);
}

template <class T>
xt::xarray<T>& BasicTensor<T>::mutable_grad() {
    return const_cast<xt::xarray<T>&>(grad());
}

template <class T>
void BasicTensor<T>::zero_grad() {
    node_->has_grad = false;
}

template <class T>
void BasicTensor<T>::backward() const {
    if (node_->value.size() != 1) {
        throw ShapeError(std::string("backward(): op '") + node_->op +
                         "' gives a tensor of shape " + shape_to_string(node_->value.shape()) +
                         "; call backward(seed) with a gradient of that shape, or reduce to one element first");
    }
    backward(xt::ones<T>(node_->value.shape()));
}

namespace {

// Each backward pass has its own number, to mark the nodes it has reached without a set.
std::atomic<std::uint64_t> passes_started{0};

// The nodes with a backward function, each after every node computed from it (reverse
// topological order from the root). Leaves are left out and never marked: they have nothing to
// pass on, and a model's weights are leaves that threads running slices of one batch reach at
// once. Iterative, so deep graphs cannot overflow the stack.
template <class T>
std::vector<Node<T>*> reverse_topological_order(Node<T>* root) {
    if (root->is_leaf()) return {};
    const std::uint64_t pass = ++passes_started;
    std::vector<Node<T>*> post_order;
    std::vector<std::pair<Node<T>*, std::size_t>> stack{{root, 0}};
    root->last_pass = pass;
    while (!stack.empty()) {
        auto& [node, next_input] = stack.back();
        if (next_input < node->inputs.size()) {
            Node<T>* input = node->inputs[next_input++].get();
            if (input->requires_grad && !input->is_leaf() && input->last_pass != pass) {
                input->last_pass = pass;
                stack.emplace_back(input, 0);
            }
        } else {
            post_order.push_back(node);
            stack.pop_back();
        }
    }
    return {post_order.rbegin(), post_order.rend()};
}

}  // namespace

template <class T>
void BasicTensor<T>::backward(const xt::xarray<T>& seed) const {
    if (!node_->requires_grad) {
        throw ValueError(std::string("backward(): the tensor from op '") + node_->op +
                         "' does not depend on any parameter, so there is nothing to differentiate");
    }
    if (seed.shape() != node_->value.shape()) {
        throw ShapeError(std::string("backward(): seed of shape ") + shape_to_string(seed.shape()) +
                         " for op '" + node_->op + "' whose value has shape " +
                         shape_to_string(node_->value.shape()));
    }
    auto order = reverse_topological_order(node_.get());
    // Gradients of intermediate results belong to one pass; leaves accumulate across passes.
    for (Node<T>* node : order) {
        node->has_grad = false;
        detail::recycle(node->grad);
    }
    const bool check = anomaly_detection_enabled();
    if (check) {
        if (const auto at = first_non_finite_in(seed)) {
            throw NumericError("anomaly: backward(): the seed for " + describe_op(*node_) + " holds " +
                               describe_value(seed.data()[*at]) + " at flat index " + std::to_string(*at));
        }
    }
    accumulate_grad(*node_, seed);
    for (Node<T>* node : order) {
        if (!node->backward || !node->has_grad) continue;
        node->backward(*node);
        if (check) check_backward(*node);
    }
}

template <class T>
BasicTensor<T> BasicTensor<T>::detach() const {
    return constant(node_->value);
}

template struct Node<float>;
template struct Node<double>;
template class BasicTensor<float>;
template class BasicTensor<double>;
template void check_passed_gradient(const Node<float>&, std::size_t, const xt::xarray<float>&);
template void check_passed_gradient(const Node<double>&, std::size_t, const xt::xarray<double>&);
template BasicTensor<float> make_op(const char*, xt::xarray<float>, std::vector<BasicTensor<float>>,
                                    Node<float>::BackwardFn);
template BasicTensor<double> make_op(const char*, xt::xarray<double>, std::vector<BasicTensor<double>>,
                                     Node<double>::BackwardFn);

}  // namespace xtnn
