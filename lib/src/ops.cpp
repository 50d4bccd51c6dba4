// Arithmetic with broadcasting, matrix products, bias, reductions, shape changes and dropout.

#include "xtnn/ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>

#include "gemm.hpp"

#include "ops_internal.hpp"

namespace xtnn::ops {

using namespace internal;

namespace {

// The operations of the arithmetic ops, for broadcast_map and map_values.
constexpr auto plus = [](const auto& a, const auto& b) { return a + b; };
constexpr auto minus = [](const auto& a, const auto& b) { return a - b; };
constexpr auto times = [](const auto& a, const auto& b) { return a * b; };
constexpr auto divided = [](const auto& a, const auto& b) { return a / b; };

template <class T>
xt::xarray<T> negated(const xt::xarray<T>& x) {
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    map_values(y.data(), y.size(), [](const auto& v) { return -v; }, x.data());
    return y;
}

template <class T>
xt::xarray<T> divided_by(xt::xarray<T> x, T divisor) {
    map_values(x.data(), x.size(), [divisor](const auto& v) { return v / divisor; }, x.data());
    return x;
}

// x with its axes in the order `permutation` (a valid one).
template <class T>
xt::xarray<T> transposed(const xt::xarray<T>& x, const std::vector<std::size_t>& permutation) {
    std::vector<std::size_t> row_major_strides(x.dimension());
    std::size_t stride = 1;
    for (std::size_t axis = x.dimension(); axis-- > 0;) {
        row_major_strides[axis] = stride;
        stride *= x.shape()[axis];
    }
    Shape shape(permutation.size());
    std::vector<std::size_t> strides(permutation.size());
    for (std::size_t i = 0; i < permutation.size(); ++i) {
        shape[i] = x.shape()[permutation[i]];
        strides[i] = row_major_strides[permutation[i]];
    }
    xt::xarray<T> y = pooled_empty<T>(shape);
    const T* in = x.data();
    T* out = y.data();
    for_each_offset<1>(shape, {strides}, [&](std::size_t i, const auto& at) { out[i] = in[at[0]]; });
    return y;
}

}  // namespace

template <class T>
BasicTensor<T> add(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    return make_op<T>("add", broadcast_map("add", a.value(), b.value(), plus), {a, b}, [](NodeT<T>& out) {
        for (auto& in : out.inputs) {
            if (in->requires_grad) accumulate_grad(*in, reduce_to_shape(out.grad, in->value.shape()));
        }
    });
}

template <class T>
BasicTensor<T> add_relu(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    if (a.shape() != b.shape()) {
        throw ShapeError(describe("add_relu", "the inputs must have one shape, got " + shape_to_string(a.shape()) + " and " +
                                                  shape_to_string(b.shape())));
    }
    xt::xarray<T> y = pooled_empty<T>(a.shape());
    const T* first = a.value().data();
    const T* second = b.value().data();
    T* out = y.data();
    for (std::size_t i = 0; i < y.size(); ++i) {
        const T z = first[i] + second[i];
        out[i] = z <= T(0) ? T(0) : z;  // NaN <= 0 is false: a NaN stays NaN, as in relu
    }
    return make_op<T>("add_relu", std::move(y), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (!lhs.requires_grad && !rhs.requires_grad) return;
        xt::xarray<T> passed = pooled_empty<T>(out.value.shape());
        const T* y = out.value.data();
        const T* dy = out.grad.data();
        T* g = passed.data();
        for (std::size_t i = 0; i < passed.size(); ++i) g[i] = y[i] <= T(0) ? T(0) : dy[i];
        // The last input takes the buffer itself.
        if (lhs.requires_grad && rhs.requires_grad) accumulate_grad(lhs, std::as_const(passed));
        accumulate_grad(rhs.requires_grad ? rhs : lhs, std::move(passed));
    });
}

template <class T>
BasicTensor<T> sub(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    return make_op<T>("sub", broadcast_map("sub", a.value(), b.value(), minus), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (lhs.requires_grad) accumulate_grad(lhs, reduce_to_shape(out.grad, lhs.value.shape()));
        if (rhs.requires_grad) accumulate_grad(rhs, reduce_to_shape(negated(out.grad), rhs.value.shape()));
    });
}

template <class T>
BasicTensor<T> mul(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    return make_op<T>("mul", broadcast_map("mul", a.value(), b.value(), times), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (lhs.requires_grad) {
            accumulate_grad(lhs, reduce_to_shape(broadcast_map("mul", out.grad, rhs.value, times), lhs.value.shape()));
        }
        if (rhs.requires_grad) {
            accumulate_grad(rhs, reduce_to_shape(broadcast_map("mul", out.grad, lhs.value, times), rhs.value.shape()));
        }
    });
}

template <class T>
BasicTensor<T> div(const BasicTensor<T>& a, const BasicTensor<T>& b) {
    return make_op<T>("div", broadcast_map("div", a.value(), b.value(), divided), {a, b}, [](NodeT<T>& out) {
        NodeT<T>& lhs = *out.inputs[0];
        NodeT<T>& rhs = *out.inputs[1];
        if (lhs.requires_grad) {
            accumulate_grad(lhs, reduce_to_shape(broadcast_map("div", out.grad, rhs.value, divided), lhs.value.shape()));
        }
        if (rhs.requires_grad) {
            // -dy * y / b, in that order.
            const xt::xarray<T> scaled = broadcast_map("div", negated(out.grad), out.value, times);
            accumulate_grad(rhs, reduce_to_shape(broadcast_map("div", scaled, rhs.value, divided), rhs.value.shape()));
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
    xt::xarray<T> y = k > 0 ? pooled_empty<T>({m, n}) : pooled_zeros<T>({m, n});
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
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    add_bias<with_relu>(x.value().data(), bias.value().data(), y.data(), rows);
    return make_op<T>(name, std::move(y), {x, bias}, [rows](NodeT<T>& out) {
        NodeT<T>& input = *out.inputs[0];
        NodeT<T>& b = *out.inputs[1];
        if (!with_relu && input.requires_grad) accumulate_grad(input, out.grad);
        // With relu, each passed value goes to x and to the bias in one pass; a fresh x gradient
        // is written, not zero-filled and added to.
        T* dx = nullptr;
        BiasGradientTo to_dx = BiasGradientTo::none;
        if (with_relu && input.requires_grad) {
            const auto [destination, beta] = grad_destination(input);
            dx = destination;
            to_dx = beta == T(0) ? BiasGradientTo::write : BiasGradientTo::add;
        }
        T* db = b.requires_grad ? grad_buffer(b).data() : nullptr;
        bias_backward<with_relu>(out.value.data(), out.grad.data(), dx, to_dx, db, rows);
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
        if (in.requires_grad) accumulate_grad(in, broadcast_copy(out.grad, in.value.shape()));
    });
}

template <class T>
BasicTensor<T> mean(const BasicTensor<T>& x) {
    if (x.size() == 0) throw ShapeError(describe("mean", "the mean of an empty tensor is undefined"));
    const T count = static_cast<T>(x.size());
    xt::xarray<T> y = divided_by(total(x.value()), count);
    return make_op<T>("mean", std::move(y), {x}, [count](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, broadcast_copy(divided_by(out.grad, count), in.value.shape()));
    });
}

namespace {

template <class T>
BasicTensor<T> reduce_axis(const char* name, const BasicTensor<T>& x, std::size_t axis, bool keepdims, T divisor) {
    if (axis >= x.dimension()) {
        throw ShapeError(describe(name, "axis " + std::to_string(axis) + " is out of range for shape " +
                                            shape_to_string(x.shape())));
    }
    xt::xarray<T> y = divided_by(sum_keepdims(x.value(), axis), divisor);
    Shape kept_shape(y.shape().begin(), y.shape().end());
    if (!keepdims) {
        Shape dropped = kept_shape;
        dropped.erase(dropped.begin() + static_cast<std::ptrdiff_t>(axis));
        y.reshape(dropped);
    }
    return make_op<T>(name, std::move(y), {x}, [kept_shape, divisor](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        xt::xarray<T> grad = divided_by(out.grad, divisor);
        grad.reshape(kept_shape);
        accumulate_grad(in, broadcast_copy(grad, in.value.shape()));
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
    return elementwise<T>("exp", x, [](const auto& v) { return xsimd::exp(v); },
                          [](const auto&, const auto& y) { return y; });
}

template <class T>
BasicTensor<T> log(const BasicTensor<T>& x) {
    return elementwise<T>("log", x, [](const auto& v) { return xsimd::log(v); },
                          [](const auto& v, const auto&) { return T(1) / v; });
}

template <class T>
BasicTensor<T> broadcast_to(const BasicTensor<T>& x, const Shape& shape) {
    if (broadcast_shape("broadcast_to", x.shape(), shape) != shape) {
        throw ShapeError(describe("broadcast_to", "cannot broadcast shape " + shape_to_string(x.shape()) + " to " +
                                                      shape_to_string(shape) + "; only extents of 1 and missing leading axes repeat"));
    }
    checked_element_count(shape, "broadcast_to: the result of shape");
    xt::xarray<T> y = broadcast_copy(x.value(), shape);
    return make_op<T>("broadcast_to", std::move(y), {x}, [](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, reduce_to_shape(out.grad, in.value.shape()));
    });
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
    xt::xarray<T> y = transposed(x.value(), permutation);
    return make_op<T>("transpose", std::move(y), {x}, [inverse](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, transposed(out.grad, inverse));
    });
}


namespace {

// lowbias32 (C. Wellons): a bijection of 32-bit words in which every input bit moves about half of
// the output bits. An element's dropout draw is a function of the call's key and the element's
// place in the whole batch alone, so the slices of a batch, on whatever threads, draw the batch's
// mask, and the loop has no carried state (it vectorizes).
constexpr std::uint32_t mix32(std::uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

}  // namespace

template <class T>
BasicTensor<T> dropout(const BasicTensor<T>& x, double rate, bool training, Generator& generator, std::size_t first_row) {
    if (!(rate >= 0.0 && rate < 1.0)) {
        throw ValueError("dropout: rate must be in [0, 1), got " + std::to_string(rate));
    }
    if (!training || rate == 0.0) return x;
    const std::uint64_t key = generator.next_u64();
    const auto key_low = static_cast<std::uint32_t>(key), key_high = static_cast<std::uint32_t>(key >> 32);
    // A draw h, uniform on [0, 2^32), keeps its element when h / 2^32 >= rate.
    const double threshold = std::ceil(rate * 4294967296.0);
    const bool keep_none = threshold > 4294967295.0;
    const auto keep_from = static_cast<std::uint32_t>(keep_none ? 0.0 : threshold);
    const T kept_scale = static_cast<T>(1.0 / (1.0 - rate));
    const std::size_t n = x.size();
    const std::size_t row_size = x.dimension() == 0 || x.shape()[0] == 0 ? n : n / x.shape()[0];
    // Elements are numbered within the whole batch; max_tensor_elements keeps the numbers in 32 bits.
    const auto first = static_cast<std::uint32_t>(first_row * row_size);
    auto mask = std::make_shared<PooledArray<T>>(pooled_empty<T>(x.shape()));
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    const T* in = x.value().data();
    T* kept = mask->values.data();
    T* out = y.data();
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t draw = mix32(mix32(first + static_cast<std::uint32_t>(i) + key_low) ^ key_high);
        kept[i] = !keep_none && draw >= keep_from ? kept_scale : T(0);
        out[i] = in[i] * kept[i];
    }
    return make_op<T>("dropout", std::move(y), {x}, [mask](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (in.requires_grad) accumulate_grad(in, broadcast_map("dropout", out.grad, mask->values, times));
    });
}

#define XTNN_INSTANTIATE_OPS(T) \
    template BasicTensor<T> add(const BasicTensor<T>&, const BasicTensor<T>&);                  \
    template BasicTensor<T> add_relu(const BasicTensor<T>&, const BasicTensor<T>&);             \
    template BasicTensor<T> sub(const BasicTensor<T>&, const BasicTensor<T>&);                  \
    template BasicTensor<T> mul(const BasicTensor<T>&, const BasicTensor<T>&);                  \
    template BasicTensor<T> div(const BasicTensor<T>&, const BasicTensor<T>&);                  \
    template BasicTensor<T> scale(const BasicTensor<T>&, T);                                    \
    template BasicTensor<T> matmul(const BasicTensor<T>&, const BasicTensor<T>&, bool, bool);   \
    template BasicTensor<T> bias_add(const BasicTensor<T>&, const BasicTensor<T>&);             \
    template BasicTensor<T> bias_relu(const BasicTensor<T>&, const BasicTensor<T>&);            \
    template BasicTensor<T> sum(const BasicTensor<T>&);                                         \
    template BasicTensor<T> sum(const BasicTensor<T>&, std::size_t, bool);                      \
    template BasicTensor<T> mean(const BasicTensor<T>&);                                        \
    template BasicTensor<T> mean(const BasicTensor<T>&, std::size_t, bool);                     \
    template BasicTensor<T> exp(const BasicTensor<T>&);                                         \
    template BasicTensor<T> log(const BasicTensor<T>&);                                         \
    template BasicTensor<T> broadcast_to(const BasicTensor<T>&, const Shape&);                  \
    template BasicTensor<T> reshape(const BasicTensor<T>&, const std::vector<std::ptrdiff_t>&); \
    template BasicTensor<T> flatten(const BasicTensor<T>&);                                     \
    template BasicTensor<T> transpose(const BasicTensor<T>&, std::vector<std::size_t>);         \
    template BasicTensor<T> dropout(const BasicTensor<T>&, double, bool, Generator&, std::size_t);

XTNN_INSTANTIATE_OPS(float)
XTNN_INSTANTIATE_OPS(double)

}  // namespace xtnn::ops
