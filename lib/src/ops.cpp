#include "xtnn/ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include <xtensor/xbroadcast.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xtensor.hpp>

#include "gemm.hpp"
#include "xtnn/autodiff.hpp"

namespace xtnn::ops {

namespace {

template <class T>
using NodeT = Node<T>;

std::string describe(const char* op, const std::string& problem) { return std::string(op) + ": " + problem; }

template <class S1, class S2>
Shape broadcast_shape(const char* op, const S1& a, const S2& b) {
    std::size_t rank = std::max(a.size(), b.size());
    Shape result(rank);
    for (std::size_t i = 0; i < rank; ++i) {
        std::size_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        std::size_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (da != db && da != 1 && db != 1) {
            throw ShapeError(describe(op, "shapes " + shape_to_string(a) + " and " + shape_to_string(b) +
                                              " cannot be broadcast together (axis " + std::to_string(i) +
                                              ": " + std::to_string(da) + " vs " + std::to_string(db) + ")"));
        }
        result[i] = std::max(da, db);
        if (da == 0 || db == 0) result[i] = 0;
    }
    return result;
}

// Sums along `axis`, keeping it with extent 1. A plain loop: xtensor 0.24's immediate reducers
// crash or throw bad_alloc on some shapes, and its lazy ones are 12x slower.
template <class T>
xt::xarray<T> sum_keepdims(const xt::xarray<T>& x, std::size_t axis) {
    Shape shape(x.shape().begin(), x.shape().end());
    std::size_t outer = 1, inner = 1;
    for (std::size_t i = 0; i < axis; ++i) outer *= shape[i];
    for (std::size_t i = axis + 1; i < shape.size(); ++i) inner *= shape[i];
    const std::size_t extent = shape[axis];
    shape[axis] = 1;
    xt::xarray<T> result = xt::zeros<T>(shape);
    const T* in = x.data();
    T* out = result.data();
    for (std::size_t o = 0; o < outer; ++o) {
        for (std::size_t a = 0; a < extent; ++a) {
            const T* row = in + (o * extent + a) * inner;
            for (std::size_t i = 0; i < inner; ++i) out[o * inner + i] += row[i];
        }
    }
    return result;
}

// Sums a broadcast gradient back to the shape of the input it came from.
template <class T, class S>
xt::xarray<T> reduce_to_shape(const xt::xarray<T>& grad, const S& shape) {
    xt::xarray<T> reduced = grad;
    while (reduced.dimension() > shape.size()) {
        reduced = sum_keepdims(reduced, 0);
        Shape dropped(reduced.shape().begin() + 1, reduced.shape().end());
        reduced.reshape(dropped);
    }
    for (std::size_t axis = 0; axis < shape.size(); ++axis) {
        if (shape[axis] == 1 && reduced.shape()[axis] != 1) reduced = sum_keepdims(reduced, axis);
    }
    return reduced;
}

// A tensor of shape (..., C) seen as rows of C values.
struct Rows {
    std::size_t count;
    std::size_t width;
};

template <class T>
Rows as_rows(const char* op, const BasicTensor<T>& x) {
    if (x.dimension() == 0 || x.shape().back() == 0) {
        throw ShapeError(describe(op, "expected a tensor of shape (..., C) with C > 0, got shape " +
                                          shape_to_string(x.shape())));
    }
    return {x.size() / x.shape().back(), x.shape().back()};
}

template <class T>
void require_same_shape(const char* op, const BasicTensor<T>& x, const xt::xarray<T>& target,
                        const char* target_name) {
    if (x.shape() != target.shape()) {
        throw ShapeError(describe(op, std::string(target_name) + " has shape " + shape_to_string(target.shape()) +
                                          " but the prediction has shape " + shape_to_string(x.shape()) +
                                          "; they must match"));
    }
}

// An elementwise op y = f(x) whose derivative f'(x) is computed from x and y.
template <class T, class Forward, class Derivative>
BasicTensor<T> elementwise(const char* name, const BasicTensor<T>& x, Forward forward, Derivative derivative) {
    xt::xarray<T> y = forward(x.value());
    return make_op<T>(name, std::move(y), {x}, [derivative](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, out.grad * derivative(in.value, out.value));
    });
}

template <class T>
BasicTensor<T> scalar_result(const char* name, double value, const BasicTensor<T>& input,
                             typename NodeT<T>::BackwardFn backward) {
    return make_op<T>(name, xt::xarray<T>(static_cast<T>(value)), {input}, std::move(backward));
}

template <class T>
constexpr T crossentropy_epsilon = T(1e-7);

// A full reduction as a plain loop: xtensor 0.24's immediate full reduction crashes.
template <class T>
xt::xarray<T> total(const xt::xarray<T>& x) {
    T result = 0;
    for (T v : x) result += v;
    return xt::xarray<T>(result);
}

}  // namespace

template <class T>
BasicTensor<T> add(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    broadcast_shape("add", a.shape(), b.shape());
    xt::xarray<T> y = a.value() + b.value();
    return make_op<T>("add", std::move(y), {a, b}, [](NodeT<T>& out) {
        for (auto& in : out.inputs) {
            if (in->requires_grad) accumulate_grad(*in, reduce_to_shape(out.grad, in->value.shape()));
        }
    });
}

template <class T>
BasicTensor<T> sub(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    broadcast_shape("sub", a.shape(), b.shape());
    xt::xarray<T> y = a.value() - b.value();
    return make_op<T>("sub", std::move(y), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (lhs.requires_grad) accumulate_grad(lhs, reduce_to_shape(out.grad, lhs.value.shape()));
        if (rhs.requires_grad) accumulate_grad(rhs, reduce_to_shape<T>(-out.grad, rhs.value.shape()));
    });
}

template <class T>
BasicTensor<T> mul(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    broadcast_shape("mul", a.shape(), b.shape());
    xt::xarray<T> y = a.value() * b.value();
    return make_op<T>("mul", std::move(y), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (lhs.requires_grad) accumulate_grad(lhs, reduce_to_shape<T>(out.grad * rhs.value, lhs.value.shape()));
        if (rhs.requires_grad) accumulate_grad(rhs, reduce_to_shape<T>(out.grad * lhs.value, rhs.value.shape()));
    });
}

template <class T>
BasicTensor<T> div(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    broadcast_shape("div", a.shape(), b.shape());
    xt::xarray<T> y = a.value() / b.value();
    return make_op<T>("div", std::move(y), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (lhs.requires_grad) accumulate_grad(lhs, reduce_to_shape<T>(out.grad / rhs.value, lhs.value.shape()));
        if (rhs.requires_grad) {
            accumulate_grad(rhs, reduce_to_shape<T>(-out.grad * out.value / rhs.value, rhs.value.shape()));
        }
    });
}

template <class T>
BasicTensor<T> scale(const BasicTensor<T>& a, T factor) {
    return elementwise<T>("scale", a, [factor](const auto& x) { return x * factor; },
                          [factor](const auto&, const auto&) { return factor; });
}

template <class T>
BasicTensor<T> matmul(const BasicTensor<T>& a, const BasicTensor<T>& b, bool transpose_a, bool transpose_b) {
    if (a.dimension() != 2 || b.dimension() != 2) {
        throw ShapeError(describe("matmul", "expected two 2-D tensors, got shapes " + shape_to_string(a.shape()) +
                                                " and " + shape_to_string(b.shape())));
    }
    const std::size_t a_rows = a.shape()[0], a_cols = a.shape()[1];
    const std::size_t b_rows = b.shape()[0], b_cols = b.shape()[1];
    const std::size_t m = transpose_a ? a_cols : a_rows;
    const std::size_t k = transpose_a ? a_rows : a_cols;
    const std::size_t k_b = transpose_b ? b_cols : b_rows;
    const std::size_t n = transpose_b ? b_rows : b_cols;
    if (k != k_b) {
        throw ShapeError(describe("matmul", "inner dimensions differ: " + shape_to_string(a.shape()) +
                                                (transpose_a ? "^T" : "") + " @ " + shape_to_string(b.shape()) +
                                                (transpose_b ? "^T" : "") + " (" + std::to_string(k) + " vs " +
                                                std::to_string(k_b) + ")"));
    }
    const auto ld = [](std::size_t columns) { return std::max<std::size_t>(columns, 1); };
    // beta = 0 overwrites the output, so it need not be zeroed first (only an empty inner
    // dimension leaves it to be zeros).
    xt::xarray<T> y = k > 0 ? xt::xarray<T>(xt::empty<T>({m, n})) : xt::xarray<T>(xt::zeros<T>({m, n}));
    if (m > 0 && n > 0 && k > 0) {
        detail::gemm<T>(transpose_a, transpose_b, m, n, k, T(1), a.value().data(), ld(a_cols), b.value().data(),
                        ld(b_cols), T(0), y.data(), ld(n));
    }
    return make_op<T>("matmul", std::move(y), {a, b}, [=](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (m == 0 || n == 0 || k == 0) return;
        const T* dy = out.grad.data();
        // d op(A) = dY op(B)^T and d op(B) = op(A)^T dY, written straight into the stored layouts.
        if (lhs.requires_grad) {
            const auto [da, beta] = grad_destination(lhs);
            if (!transpose_a) {
                detail::gemm<T>(false, !transpose_b, m, k, n, T(1), dy, ld(n), rhs.value.data(), ld(b_cols), beta, da,
                                ld(a_cols));
            } else {
                detail::gemm<T>(transpose_b, true, k, m, n, T(1), rhs.value.data(), ld(b_cols), dy, ld(n), beta, da,
                                ld(a_cols));
            }
        }
        if (rhs.requires_grad) {
            const auto [db, beta] = grad_destination(rhs);
            if (!transpose_b) {
                detail::gemm<T>(!transpose_a, false, k, n, m, T(1), lhs.value.data(), ld(a_cols), dy, ld(n), beta, db,
                                ld(b_cols));
            } else {
                detail::gemm<T>(true, transpose_a, n, k, m, T(1), dy, ld(n), lhs.value.data(), ld(a_cols), beta, db,
                                ld(b_cols));
            }
        }
    });
}

namespace {

template <class T>
Rows bias_rows(const char* op, const BasicTensor<T>& x, const BasicTensor<T>& bias) {
    const Rows rows = as_rows(op, x);
    if (bias.dimension() != 1 || bias.shape()[0] != rows.width) {
        throw ShapeError(describe(op, "bias of shape " + shape_to_string(bias.shape()) + " does not fit input of shape " +
                                          shape_to_string(x.shape()) + "; expected (" + std::to_string(rows.width) + ",)"));
    }
    return rows;
}

// x + bias over the last axis, then relu when `with_relu`: bias_add and bias_relu.
template <bool with_relu, class T>
BasicTensor<T> biased(const char* name, const BasicTensor<T>& x, const BasicTensor<T>& bias) {
    const Rows rows = bias_rows(name, x, bias);
    xt::xarray<T> y = xt::empty<T>(x.shape());
    const T* in = x.value().data();
    const T* b = bias.value().data();
    T* out_values = y.data();
    for (std::size_t r = 0; r < rows.count; ++r) {
        for (std::size_t c = 0; c < rows.width; ++c) {
            const T z = in[r * rows.width + c] + b[c];
            out_values[r * rows.width + c] = with_relu && z <= T(0) ? T(0) : z;
        }
    }
    return make_op<T>(name, std::move(y), {x, bias}, [rows](NodeT<T>& out) {
        NodeT<T>& input = *out.inputs[0];
        NodeT<T>& b = *out.inputs[1];
        const T* y = out.value.data();
        const T* dy = out.grad.data();
        // relu's derivative from its output: y > 0 exactly where x + bias > 0; a NaN passes its
        // gradient on, as in PyTorch, so it reaches the loss instead of hiding in the weights.
        auto passed = [&](std::size_t i) { return with_relu && y[i] <= T(0) ? T(0) : dy[i]; };
        if (!with_relu && input.requires_grad) accumulate_grad(input, out.grad);
        // One pass for both gradients: with relu, each passed value goes to x and to the bias.
        T* dx = with_relu && input.requires_grad ? grad_buffer(input).data() : nullptr;
        T* db = b.requires_grad ? grad_buffer(b).data() : nullptr;
        if (!dx && !db) return;
        for (std::size_t r = 0; r < rows.count; ++r) {
            for (std::size_t c = 0; c < rows.width; ++c) {
                const std::size_t i = r * rows.width + c;
                const T g = passed(i);
                if (dx) dx[i] += g;
                if (db) db[c] += g;
            }
        }
    });
}

}  // namespace

template <class T>
BasicTensor<T> bias_add(const BasicTensor<T>& x, const BasicTensor<T>& bias) {
    return biased<false>("bias_add", x, bias);
}

template <class T>
BasicTensor<T> bias_relu(const BasicTensor<T>& x, const BasicTensor<T>& bias) {
    return biased<true>("bias_relu", x, bias);
}

template <class T>
BasicTensor<T> sum(const BasicTensor<T>& x) {
    xt::xarray<T> y = total(x.value());
    return make_op<T>("sum", std::move(y), {x}, [](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, xt::broadcast(out.grad, in.value.shape()));
    });
}

template <class T>
BasicTensor<T> mean(const BasicTensor<T>& x) {
    if (x.size() == 0) throw ShapeError(describe("mean", "the mean of an empty tensor is undefined"));
    const T count = static_cast<T>(x.size());
    xt::xarray<T> y = total(x.value()) / count;
    return make_op<T>("mean", std::move(y), {x}, [count](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, xt::broadcast(out.grad / count, in.value.shape()));
    });
}

namespace {

template <class T>
BasicTensor<T> reduce_axis(const char* name, const BasicTensor<T>& x, std::size_t axis, bool keepdims, T divisor) {
    if (axis >= x.dimension()) {
        throw ShapeError(describe(name, "axis " + std::to_string(axis) + " is out of range for shape " +
                                            shape_to_string(x.shape())));
    }
    xt::xarray<T> y = sum_keepdims(x.value(), axis) / divisor;
    Shape kept_shape(y.shape().begin(), y.shape().end());
    if (!keepdims) {
        Shape dropped = kept_shape;
        dropped.erase(dropped.begin() + static_cast<std::ptrdiff_t>(axis));
        y.reshape(dropped);
    }
    return make_op<T>(name, std::move(y), {x}, [kept_shape, divisor](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        xt::xarray<T> grad = out.grad / divisor;
        grad.reshape(kept_shape);
        accumulate_grad(in, xt::broadcast(grad, in.value.shape()));
    });
}

}  // namespace

template <class T>
BasicTensor<T> sum(const BasicTensor<T>& x, std::size_t axis, bool keepdims) {
    return reduce_axis<T>("sum", x, axis, keepdims, T(1));
}

template <class T>
BasicTensor<T> mean(const BasicTensor<T>& x, std::size_t axis, bool keepdims) {
    if (axis < x.dimension() && x.shape()[axis] == 0) {
        throw ShapeError(describe("mean", "axis " + std::to_string(axis) + " of shape " + shape_to_string(x.shape()) +
                                              " is empty"));
    }
    return reduce_axis<T>("mean", x, axis, keepdims, axis < x.dimension() ? static_cast<T>(x.shape()[axis]) : T(1));
}

template <class T>
BasicTensor<T> exp(const BasicTensor<T>& x) {
    return elementwise<T>("exp", x, [](const auto& v) { return xt::exp(v); },
                          [](const auto&, const auto& y) { return y; });
}

template <class T>
BasicTensor<T> log(const BasicTensor<T>& x) {
    return elementwise<T>("log", x, [](const auto& v) { return xt::log(v); },
                          [](const auto& v, const auto&) { return T(1) / v; });
}

template <class T>
BasicTensor<T> reshape(const BasicTensor<T>& x, const std::vector<std::ptrdiff_t>& shape) {
    Shape resolved(shape.size());
    std::size_t known = 1;
    std::ptrdiff_t inferred_axis = -1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (shape[i] == -1 && inferred_axis < 0) {
            inferred_axis = static_cast<std::ptrdiff_t>(i);
        } else if (shape[i] < 0) {
            throw ShapeError(describe("reshape", "invalid target extent " + std::to_string(shape[i]) +
                                                     " (only one -1 is allowed)"));
        } else {
            resolved[i] = static_cast<std::size_t>(shape[i]);
            known *= resolved[i];
        }
    }
    if (inferred_axis >= 0) {
        if (known == 0 || x.size() % known != 0) {
            throw ShapeError(describe("reshape", "cannot infer -1 to reshape " + std::to_string(x.size()) +
                                                     " elements of shape " + shape_to_string(x.shape())));
        }
        resolved[static_cast<std::size_t>(inferred_axis)] = x.size() / known;
        known = x.size();
    }
    if (known != x.size()) {
        throw ShapeError(describe("reshape", "cannot reshape shape " + shape_to_string(x.shape()) + " (" +
                                                 std::to_string(x.size()) + " elements) to " + shape_to_string(resolved)));
    }
    xt::xarray<T> y = x.value();
    y.reshape(resolved);
    return make_op<T>("reshape", std::move(y), {x}, [](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        xt::xarray<T> grad = out.grad;
        grad.reshape(in.value.shape());
        accumulate_grad(in, std::move(grad));
    });
}

template <class T>
BasicTensor<T> flatten(const BasicTensor<T>& x) {
    if (x.dimension() == 0) throw ShapeError(describe("flatten", "expected a batch axis, got a scalar"));
    return reshape(x, {static_cast<std::ptrdiff_t>(x.shape()[0]), -1});
}

template <class T>
BasicTensor<T> transpose(const BasicTensor<T>& x, std::vector<std::size_t> permutation) {
    const std::size_t rank = x.dimension();
    if (permutation.empty()) {
        for (std::size_t i = 0; i < rank; ++i) permutation.push_back(rank - 1 - i);
    }
    std::vector<bool> seen(rank, false);
    bool valid = permutation.size() == rank;
    for (std::size_t axis : permutation) {
        valid = valid && axis < rank && !seen[axis];
        if (axis < rank) seen[axis] = true;
    }
    if (!valid) {
        throw ShapeError(describe("transpose", "permutation " + shape_to_string(permutation) +
                                                   " is not a permutation of the axes of shape " +
                                                   shape_to_string(x.shape())));
    }
    std::vector<std::size_t> inverse(rank);
    for (std::size_t i = 0; i < rank; ++i) inverse[permutation[i]] = i;
    xt::xarray<T> y = xt::transpose(x.value(), permutation);
    return make_op<T>("transpose", std::move(y), {x}, [inverse](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, xt::transpose(out.grad, inverse));
    });
}

template <class T>
BasicTensor<T> sigmoid(const BasicTensor<T>& x) {
    return elementwise<T>("sigmoid", x, [](const auto& v) { return T(1) / (T(1) + xt::exp(-v)); },
                          [](const auto&, const auto& y) { return y * (T(1) - y); });
}

template <class T>
BasicTensor<T> relu(const BasicTensor<T>& x) {
    // Plain loops: relu follows every hidden layer, and xtensor's maximum/where expressions cost
    // several times a vectorized loop here.
    xt::xarray<T> y = xt::empty<T>(x.shape());
    const T* in = x.value().data();
    T* out = y.data();
    // NaN <= 0 is false: a NaN stays NaN (PyTorch's relu does the same) instead of becoming 0
    // while its gradient still reaches the weights.
    for (std::size_t i = 0; i < y.size(); ++i) out[i] = in[i] <= T(0) ? T(0) : in[i];
    return make_op<T>("relu", std::move(y), {x}, [](NodeT<T>& node) {
        NodeT<T>& input = *node.inputs[0];
        if (!input.requires_grad) return;
        const T* value = input.value.data();
        const T* dy = node.grad.data();
        T* dx = grad_buffer(input).data();
        for (std::size_t i = 0; i < input.value.size(); ++i) dx[i] += value[i] <= T(0) ? T(0) : dy[i];
    });
}

template <class T>
BasicTensor<T> tanh(const BasicTensor<T>& x) {
    return elementwise<T>("tanh", x, [](const auto& v) { return xt::tanh(v); },
                          [](const auto&, const auto& y) { return T(1) - y * y; });
}

template <class T>
BasicTensor<T> elu(const BasicTensor<T>& x, T alpha) {
    return elementwise<T>(
        "elu", x, [alpha](const auto& v) { return xt::where(v > T(0), v, alpha * (xt::exp(v) - T(1))); },
        [alpha](const auto& v, const auto& y) { return xt::where(v > T(0), T(1), y + alpha); });
}

template <class T>
BasicTensor<T> leaky_relu(const BasicTensor<T>& x, T negative_slope) {
    return elementwise<T>(
        "leaky_relu", x, [negative_slope](const auto& v) { return xt::where(v > T(0), v, negative_slope * v); },
        [negative_slope](const auto& v, const auto&) { return xt::where(v > T(0), T(1), negative_slope); });
}

template <class T>
BasicTensor<T> softplus(const BasicTensor<T>& x) {
    // max(x, 0) + log1p(exp(-|x|)) never overflows.
    return elementwise<T>(
        "softplus", x, [](const auto& v) { return xt::maximum(v, T(0)) + xt::log1p(xt::exp(-xt::abs(v))); },
        [](const auto& v, const auto&) { return T(1) / (T(1) + xt::exp(-v)); });
}

template <class T>
BasicTensor<T> gelu(const BasicTensor<T>& x) {
    static constexpr T inv_sqrt2 = T(1) / std::numbers::sqrt2_v<T>;
    static constexpr T inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<T> * inv_sqrt2;
    return elementwise<T>(
        "gelu", x, [](const auto& v) { return T(0.5) * v * (T(1) + xt::erf(v * inv_sqrt2)); },
        [](const auto& v, const auto&) {
            return T(0.5) * (T(1) + xt::erf(v * inv_sqrt2)) + v * xt::exp(T(-0.5) * v * v) * inv_sqrt_2pi;
        });
}

namespace {

// (max, log(sum(exp(row - max)))): log-sum-exp that cannot overflow.
template <class T>
std::pair<T, T> row_max_and_log_sum_exp(const T* row, std::size_t width) {
    T max = row[0];
    for (std::size_t c = 1; c < width; ++c) max = std::max(max, row[c]);
    T total = 0;
    for (std::size_t c = 0; c < width; ++c) total += std::exp(row[c] - max);
    return {max, std::log(total)};
}

}  // namespace

template <class T>
BasicTensor<T> softmax(const BasicTensor<T>& x) {
    const Rows rows = as_rows("softmax", x);
    xt::xarray<T> y = xt::empty<T>(x.shape());
    const T* in = x.value().data();
    T* out_values = y.data();
    for (std::size_t r = 0; r < rows.count; ++r) {
        const T* row = in + r * rows.width;
        T* result = out_values + r * rows.width;
        T max = row[0];
        for (std::size_t c = 1; c < rows.width; ++c) max = std::max(max, row[c]);
        T total = 0;
        for (std::size_t c = 0; c < rows.width; ++c) total += result[c] = std::exp(row[c] - max);
        for (std::size_t c = 0; c < rows.width; ++c) result[c] /= total;
    }
    return make_op<T>("softmax", std::move(y), {x}, [rows](NodeT<T>& out) {
        NodeT<T>& in_node = *out.inputs[0];
        if (!in_node.requires_grad) return;
        T* dx = grad_buffer(in_node).data();
        const T* p = out.value.data();
        const T* dy = out.grad.data();
        for (std::size_t r = 0; r < rows.count; ++r) {
            const std::size_t base = r * rows.width;
            T dot = 0;
            for (std::size_t c = 0; c < rows.width; ++c) dot += dy[base + c] * p[base + c];
            for (std::size_t c = 0; c < rows.width; ++c) dx[base + c] += p[base + c] * (dy[base + c] - dot);
        }
    });
}

template <class T>
BasicTensor<T> log_softmax(const BasicTensor<T>& x) {
    const Rows rows = as_rows("log_softmax", x);
    xt::xarray<T> y = xt::empty<T>(x.shape());
    const T* in = x.value().data();
    for (std::size_t r = 0; r < rows.count; ++r) {
        const T* row = in + r * rows.width;
        auto [max, log_sum] = row_max_and_log_sum_exp(row, rows.width);
        for (std::size_t c = 0; c < rows.width; ++c) y.data()[r * rows.width + c] = row[c] - max - log_sum;
    }
    return make_op<T>("log_softmax", std::move(y), {x}, [rows](NodeT<T>& out) {
        NodeT<T>& in_node = *out.inputs[0];
        if (!in_node.requires_grad) return;
        T* dx = grad_buffer(in_node).data();
        const T* log_p = out.value.data();
        const T* dy = out.grad.data();
        for (std::size_t r = 0; r < rows.count; ++r) {
            const std::size_t base = r * rows.width;
            T total = 0;
            for (std::size_t c = 0; c < rows.width; ++c) total += dy[base + c];
            for (std::size_t c = 0; c < rows.width; ++c) dx[base + c] += dy[base + c] - std::exp(log_p[base + c]) * total;
        }
    });
}

namespace {

// Shared by the dense and sparse forms: `target_at(r, c)` gives the target weight.
template <class T, class TargetAt>
BasicTensor<T> fused_softmax_cross_entropy(const char* name, const BasicTensor<T>& logits, Rows rows,
                                           TargetAt target_at) {
    auto probabilities = std::make_shared<xt::xarray<T>>(xt::empty<T>(logits.shape()));
    const T* z = logits.value().data();
    double loss = 0;
    for (std::size_t r = 0; r < rows.count; ++r) {
        const T* row = z + r * rows.width;
        auto [max, log_sum] = row_max_and_log_sum_exp(row, rows.width);
        for (std::size_t c = 0; c < rows.width; ++c) {
            const T log_p = row[c] - max - log_sum;
            probabilities->data()[r * rows.width + c] = std::exp(log_p);
            const T weight = target_at(r, c);
            if (weight != T(0)) loss -= static_cast<double>(weight * log_p);
        }
    }
    loss /= static_cast<double>(rows.count);
    return scalar_result<T>(name, loss, logits,
                            [rows, probabilities, target_at](NodeT<T>& out) {
                                NodeT<T>& in = *out.inputs[0];
                                if (!in.requires_grad) return;
                                const T scale_factor = out.grad.data()[0] / static_cast<T>(rows.count);
                                T* dz = grad_buffer(in).data();
                                const T* p = probabilities->data();
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

template <class T>
BasicTensor<T> dropout(const BasicTensor<T>& x, double rate, bool training, Generator& generator) {
    if (!(rate >= 0.0 && rate < 1.0)) {
        throw ValueError("dropout: rate must be in [0, 1), got " + std::to_string(rate));
    }
    if (!training || rate == 0.0) return x;
    const T kept_scale = static_cast<T>(1.0 / (1.0 - rate));
    auto mask = std::make_shared<xt::xarray<T>>(xt::empty<T>(x.shape()));
    for (T& m : *mask) m = generator.uniform() >= rate ? kept_scale : T(0);
    xt::xarray<T> y = x.value() * *mask;
    return make_op<T>("dropout", std::move(y), {x}, [mask](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, out.grad * *mask);
    });
}

#define XTNN_INSTANTIATE_OPS(T)                                                                               \
    template BasicTensor<T> add(const BasicTensor<T>&, const BasicTensor<T>&);                                \
    template BasicTensor<T> sub(const BasicTensor<T>&, const BasicTensor<T>&);                                \
    template BasicTensor<T> mul(const BasicTensor<T>&, const BasicTensor<T>&);                                \
    template BasicTensor<T> div(const BasicTensor<T>&, const BasicTensor<T>&);                                \
    template BasicTensor<T> scale(const BasicTensor<T>&, T);                                                  \
    template BasicTensor<T> matmul(const BasicTensor<T>&, const BasicTensor<T>&, bool, bool);                 \
    template BasicTensor<T> bias_add(const BasicTensor<T>&, const BasicTensor<T>&);                           \
    template BasicTensor<T> bias_relu(const BasicTensor<T>&, const BasicTensor<T>&);                          \
    template BasicTensor<T> sum(const BasicTensor<T>&);                                                       \
    template BasicTensor<T> sum(const BasicTensor<T>&, std::size_t, bool);                                    \
    template BasicTensor<T> mean(const BasicTensor<T>&);                                                      \
    template BasicTensor<T> mean(const BasicTensor<T>&, std::size_t, bool);                                   \
    template BasicTensor<T> exp(const BasicTensor<T>&);                                                       \
    template BasicTensor<T> log(const BasicTensor<T>&);                                                       \
    template BasicTensor<T> reshape(const BasicTensor<T>&, const std::vector<std::ptrdiff_t>&);               \
    template BasicTensor<T> flatten(const BasicTensor<T>&);                                                   \
    template BasicTensor<T> transpose(const BasicTensor<T>&, std::vector<std::size_t>);                       \
    template BasicTensor<T> sigmoid(const BasicTensor<T>&);                                                   \
    template BasicTensor<T> relu(const BasicTensor<T>&);                                                      \
    template BasicTensor<T> tanh(const BasicTensor<T>&);                                                      \
    template BasicTensor<T> elu(const BasicTensor<T>&, T);                                                    \
    template BasicTensor<T> leaky_relu(const BasicTensor<T>&, T);                                             \
    template BasicTensor<T> softplus(const BasicTensor<T>&);                                                  \
    template BasicTensor<T> gelu(const BasicTensor<T>&);                                                      \
    template BasicTensor<T> softmax(const BasicTensor<T>&);                                                   \
    template BasicTensor<T> log_softmax(const BasicTensor<T>&);                                               \
    template BasicTensor<T> softmax_cross_entropy(const BasicTensor<T>&, const xt::xarray<T>&);               \
    template BasicTensor<T> sparse_softmax_cross_entropy(const BasicTensor<T>&, std::span<const std::int64_t>); \
    template BasicTensor<T> categorical_crossentropy(const BasicTensor<T>&, const xt::xarray<T>&);            \
    template BasicTensor<T> binary_crossentropy(const BasicTensor<T>&, const xt::xarray<T>&);                 \
    template BasicTensor<T> sigmoid_binary_crossentropy(const BasicTensor<T>&, const xt::xarray<T>&);         \
    template BasicTensor<T> mse(const BasicTensor<T>&, const xt::xarray<T>&);                                 \
    template BasicTensor<T> dropout(const BasicTensor<T>&, double, bool, Generator&);

XTNN_INSTANTIATE_OPS(float)
XTNN_INSTANTIATE_OPS(double)

}  // namespace xtnn::ops
