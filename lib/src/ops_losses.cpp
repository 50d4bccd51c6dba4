// The losses as ops, the softmax and sigmoid cross-entropies fused with their activation.

#include "xtnn/ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>

#include "ops_internal.hpp"

namespace xtnn::ops {

using namespace internal;

namespace {

// Shared by the dense and sparse forms: `target_at(r, c)` gives the target weight.
template <class T, class TargetAt>
BasicTensor<T> fused_softmax_cross_entropy(const char* name, const BasicTensor<T>& logits, Rows rows,
                                           TargetAt target_at) {
    auto probabilities = std::make_shared<PooledArray<T>>(pooled_empty<T>(logits.shape()));
    const T* z = logits.value().data();
    T* p = probabilities->values.data();
    double loss = 0;
    row_exps(z, rows, p, [&](std::size_t r, T max, T sum) {
        const T log_sum = std::log(sum);
        for (std::size_t c = 0; c < rows.width; ++c) {
            const std::size_t i = r * rows.width + c;
            p[i] /= sum;
            const T weight = target_at(r, c);
            if (weight != T(0)) loss -= static_cast<double>(weight * (z[i] - max - log_sum));
        }
    });
    loss /= static_cast<double>(rows.count);
    return scalar_result<T>(name, loss, logits,
                            [rows, probabilities, target_at](NodeT<T>& out) {
                                NodeT<T>& in = *out.inputs[0];
                                if (!in.requires_grad) return;
                                const T scale_factor = out.grad.data()[0] / static_cast<T>(rows.count);
                                T* dz = grad_buffer(in).data();
                                const T* p = probabilities->values.data();
                                for (std::size_t r = 0; r < rows.count; ++r) {
                                    T target_sum = 0;
                                    for (std::size_t c = 0; c < rows.width; ++c) target_sum += target_at(r, c);
                                    for (std::size_t c = 0; c < rows.width; ++c) {
                                        const std::size_t i = r * rows.width + c;
                                        dz[i] += scale_factor * (p[i] * target_sum - target_at(r, c));
                                    }
                                }
                            });
}

}  // namespace

template <class T>
BasicTensor<T> softmax_cross_entropy(const BasicTensor<T>& logits, const xt::xarray<T>& target) {
    const Rows rows = as_rows("softmax_cross_entropy", logits);
    require_same_shape("softmax_cross_entropy", logits, target, "target");
    auto shared_target = std::make_shared<xt::xarray<T>>(target);
    const std::size_t width = rows.width;
    auto target_at = [shared_target, width](std::size_t r, std::size_t c) {
        return shared_target->data()[r * width + c];
    };
    return fused_softmax_cross_entropy<T>("softmax_cross_entropy", logits, rows, target_at);
}

template <class T>
BasicTensor<T> sparse_softmax_cross_entropy(const BasicTensor<T>& logits, std::span<const std::int64_t> labels) {
    const Rows rows = as_rows("sparse_softmax_cross_entropy", logits);
    if (labels.size() != rows.count) {
        throw ShapeError(describe("sparse_softmax_cross_entropy",
                                  std::to_string(labels.size()) + " labels for logits of shape " +
                                      shape_to_string(logits.shape()) + ", expected " + std::to_string(rows.count)));
    }
    auto shared_labels = std::make_shared<std::vector<std::int64_t>>(labels.begin(), labels.end());
    for (std::size_t r = 0; r < rows.count; ++r) {
        const std::int64_t label = labels[r];
        if (label < 0 || static_cast<std::size_t>(label) >= rows.width) {
            throw ValueError(describe("sparse_softmax_cross_entropy",
                                      "label " + std::to_string(label) + " at row " + std::to_string(r) +
                                          " is out of range for " + std::to_string(rows.width) + " classes [0, " +
                                          std::to_string(rows.width - 1) + "]"));
        }
    }
    auto target_at = [shared_labels](std::size_t r, std::size_t c) {
        return static_cast<std::size_t>((*shared_labels)[r]) == c ? T(1) : T(0);
    };
    return fused_softmax_cross_entropy<T>("sparse_softmax_cross_entropy", logits, rows, target_at);
}

template <class T>
BasicTensor<T> categorical_crossentropy(const BasicTensor<T>& probabilities, const xt::xarray<T>& target) {
    const Rows rows = as_rows("categorical_crossentropy", probabilities);
    require_same_shape("categorical_crossentropy", probabilities, target, "target");
    constexpr T eps = crossentropy_epsilon<T>;
    const T* p = probabilities.value().data();
    const T* y = target.data();
    double loss = 0;
    for (std::size_t r = 0; r < rows.count; ++r) {
        T total = 0;
        for (std::size_t c = 0; c < rows.width; ++c) total += p[r * rows.width + c];
        total = std::max(total, std::numeric_limits<T>::min());
        for (std::size_t c = 0; c < rows.width; ++c) {
            const std::size_t i = r * rows.width + c;
            if (y[i] != T(0)) loss -= static_cast<double>(y[i] * std::log(std::clamp(p[i] / total, eps, T(1) - eps)));
        }
    }
    loss /= static_cast<double>(rows.count);
    return scalar_result<T>("categorical_crossentropy", loss, probabilities, [rows, target](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        const T scale_factor = out.grad.data()[0] / static_cast<T>(rows.count);
        const T* p = in.value.data();
        const T* y = target.data();
        T* dp = grad_buffer(in).data();
        std::vector<T> dq(rows.width);
        for (std::size_t r = 0; r < rows.count; ++r) {
            const std::size_t base = r * rows.width;
            T total = 0;
            for (std::size_t c = 0; c < rows.width; ++c) total += p[base + c];
            total = std::max(total, std::numeric_limits<T>::min());
            // L = -sum y log(clip(q)), q = p / sum(p): dL/dp_j = (dq_j - sum_c dq_c q_c) / sum(p).
            T weighted = 0;
            for (std::size_t c = 0; c < rows.width; ++c) {
                const T q = p[base + c] / total;
                dq[c] = (q > eps && q < T(1) - eps) ? -y[base + c] / q : T(0);
                weighted += dq[c] * q;
            }
            for (std::size_t c = 0; c < rows.width; ++c) dp[base + c] += scale_factor * (dq[c] - weighted) / total;
        }
    });
}

template <class T>
BasicTensor<T> binary_crossentropy(const BasicTensor<T>& probabilities, const xt::xarray<T>& target) {
    require_same_shape("binary_crossentropy", probabilities, target, "target");
    if (probabilities.size() == 0) throw ShapeError("binary_crossentropy: empty prediction");
    constexpr T eps = crossentropy_epsilon<T>;
    const T* p = probabilities.value().data();
    const T* y = target.data();
    const std::size_t n = probabilities.size();
    double loss = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const T clipped = std::clamp(p[i], eps, T(1) - eps);
        loss -= static_cast<double>(y[i] * std::log(clipped) + (T(1) - y[i]) * std::log(T(1) - clipped));
    }
    loss /= static_cast<double>(n);
    return scalar_result<T>("binary_crossentropy", loss, probabilities, [n, target](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        const T scale_factor = out.grad.data()[0] / static_cast<T>(n);
        const T* p = in.value.data();
        const T* y = target.data();
        T* dp = grad_buffer(in).data();
        for (std::size_t i = 0; i < n; ++i) {
            if (p[i] > eps && p[i] < T(1) - eps) dp[i] += scale_factor * ((T(1) - y[i]) / (T(1) - p[i]) - y[i] / p[i]);
        }
    });
}

template <class T>
BasicTensor<T> sigmoid_binary_crossentropy(const BasicTensor<T>& logits, const xt::xarray<T>& target) {
    require_same_shape("sigmoid_binary_crossentropy", logits, target, "target");
    if (logits.size() == 0) throw ShapeError("sigmoid_binary_crossentropy: empty prediction");
    const T* z = logits.value().data();
    const T* y = target.data();
    const std::size_t n = logits.size();
    double loss = 0;
    for (std::size_t i = 0; i < n; ++i) {
        loss += static_cast<double>(std::max(z[i], T(0)) - z[i] * y[i] + std::log1p(std::exp(-std::abs(z[i]))));
    }
    loss /= static_cast<double>(n);
    return scalar_result<T>("sigmoid_binary_crossentropy", loss, logits, [n, target](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        const T scale_factor = out.grad.data()[0] / static_cast<T>(n);
        const T* z = in.value.data();
        const T* y = target.data();
        T* dz = grad_buffer(in).data();
        for (std::size_t i = 0; i < n; ++i) dz[i] += scale_factor * (T(1) / (T(1) + std::exp(-z[i])) - y[i]);
    });
}

template <class T>
BasicTensor<T> mse(const BasicTensor<T>& prediction, const xt::xarray<T>& target) {
    require_same_shape("mse", prediction, target, "target");
    if (prediction.size() == 0) throw ShapeError("mse: empty prediction");
    const T* p = prediction.value().data();
    const T* y = target.data();
    const std::size_t n = prediction.size();
    double loss = 0;
    for (std::size_t i = 0; i < n; ++i) loss += static_cast<double>((p[i] - y[i]) * (p[i] - y[i]));
    loss /= static_cast<double>(n);
    return scalar_result<T>("mse", loss, prediction, [n, target](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        const T scale_factor = T(2) * out.grad.data()[0] / static_cast<T>(n);
        const T* p = in.value.data();
        const T* y = target.data();
        T* dp = grad_buffer(in).data();
        for (std::size_t i = 0; i < n; ++i) dp[i] += scale_factor * (p[i] - y[i]);
    });
}

#define XTNN_INSTANTIATE_LOSS_OPS(T) \
    template BasicTensor<T> softmax_cross_entropy(const BasicTensor<T>&, const xt::xarray<T>&);                 \
    template BasicTensor<T> sparse_softmax_cross_entropy(const BasicTensor<T>&, std::span<const std::int64_t>); \
    template BasicTensor<T> categorical_crossentropy(const BasicTensor<T>&, const xt::xarray<T>&);              \
    template BasicTensor<T> binary_crossentropy(const BasicTensor<T>&, const xt::xarray<T>&);                   \
    template BasicTensor<T> sigmoid_binary_crossentropy(const BasicTensor<T>&, const xt::xarray<T>&);           \
    template BasicTensor<T> mse(const BasicTensor<T>&, const xt::xarray<T>&);

XTNN_INSTANTIATE_LOSS_OPS(float)
XTNN_INSTANTIATE_LOSS_OPS(double)

}  // namespace xtnn::ops
