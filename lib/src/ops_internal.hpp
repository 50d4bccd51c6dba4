#pragma once
// What the op sources share: shape checks, broadcasting, the elementwise-op builder. Private to
// lib/src.

#include <algorithm>
#include <cmath>
#include <array>
#include <string>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"
#include "simd.hpp"

namespace xtnn::ops::internal {

template <class T>
using NodeT = Node<T>;

// Calls f(width) with the row width as a compile-time constant for the widths of small layers
// (a conv's 8 to 64 filters, a Dense layer's 32 to 128 units), else as a plain size_t.
template <class F>
void with_row_width(std::size_t width, F&& f) {
    switch (width) {
    case 8: return f(std::integral_constant<std::size_t, 8>{});
    case 16: return f(std::integral_constant<std::size_t, 16>{});
    case 32: return f(std::integral_constant<std::size_t, 32>{});
    case 64: return f(std::integral_constant<std::size_t, 64>{});
    case 128: return f(std::integral_constant<std::size_t, 128>{});
    default: return f(width);
    }
}

// Whether a row of `Width` (from with_row_width) is a whole number of SIMD batches of T.
template <class T, class Width>
constexpr bool whole_batches() {
    if constexpr (std::is_same_v<Width, std::size_t>) {
        return false;
    } else {
        return Width::value % xsimd::batch<T>::size == 0;
    }
}

// Per-channel values of a row of `width` (from with_row_width), all `initial`: a std::array for a
// compile-time width, which the compiler keeps in registers across the rows, else a std::vector.
template <class V, class Width>
auto per_channel(Width width, V initial) {
    if constexpr (std::is_same_v<Width, std::size_t>) {
        return std::vector<V>(width, initial);
    } else {
        std::array<V, Width::value> values;
        values.fill(initial);
        return values;
    }
}

inline std::string describe(const char* op, const std::string& problem) { return std::string(op) + ": " + problem; }

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

// Strides, in elements, that read an array of shape `from` as if it had the broadcast shape `to`:
// 0 along the axes `from` repeats (extent 1, or missing on the left).
template <class S>
std::vector<std::size_t> broadcast_strides(const S& from, const Shape& to) {
    std::vector<std::size_t> strides(to.size(), 0);
    std::size_t stride = 1;
    for (std::size_t k = 0; k < from.size(); ++k) {
        const std::size_t extent = from[from.size() - 1 - k];
        if (extent != 1) strides[to.size() - 1 - k] = stride;
        stride *= extent;
    }
    return strides;
}

// Calls visit(i, offsets) for every element i of `shape` in row-major order, where offsets[k] is
// where input k holds that element when read with strides[k].
template <std::size_t N, class Visit>
void for_each_offset(const Shape& shape, const std::array<std::vector<std::size_t>, N>& strides, Visit visit) {
    std::size_t count = 1;
    for (std::size_t extent : shape) count *= extent;
    std::array<std::size_t, N> offsets{};
    std::vector<std::size_t> index(shape.size(), 0);
    for (std::size_t i = 0; i < count; ++i) {
        visit(i, offsets);
        for (std::size_t axis = shape.size(); axis-- > 0;) {
            for (std::size_t k = 0; k < N; ++k) offsets[k] += strides[k][axis];
            if (++index[axis] < shape[axis]) break;
            for (std::size_t k = 0; k < N; ++k) offsets[k] -= strides[k][axis] * shape[axis];
            index[axis] = 0;
        }
    }
}

// `x` repeated to the broadcast shape `shape` (which the caller has checked).
template <class T, class S>
xt::xarray<T> broadcast_copy(const xt::xarray<T>& x, const S& shape) {
    const Shape target(shape.begin(), shape.end());
    xt::xarray<T> y = pooled_empty<T>(target);
    const T* in = x.data();
    T* out = y.data();
    for_each_offset<1>(target, {broadcast_strides(x.shape(), target)},
                       [&](std::size_t i, const auto& at) { out[i] = in[at[0]]; });
    return y;
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
    xt::xarray<T> result = pooled_zeros<T>(shape);
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

// out = in + bias over rows of `rows.width` (in place when out == in), then relu when
// `with_relu`: bias_add's and bias_relu's pass, and conv2d's epilogue with a bias.
template <bool with_relu, class T>
void add_bias(const T* in, const T* bias, T* out, Rows rows) {
    // Captured by value: SIMD stores may alias anything, so values behind references would be
    // reloaded from the closure on every iteration.
    with_row_width(rows.width, [=](auto width) {
        if constexpr (whole_batches<T, decltype(width)>()) {
            using Batch = xsimd::batch<T>;
            constexpr std::size_t vectors = decltype(width)::value / Batch::size;
            Batch bias_values[vectors];
            for (std::size_t v = 0; v < vectors; ++v) bias_values[v] = Batch::load_unaligned(bias + v * Batch::size);
            for (std::size_t r = 0; r < rows.count; ++r) {
                for (std::size_t v = 0; v < vectors; ++v) {
                    const std::size_t i = r * width + v * Batch::size;
                    Batch z = Batch::load_unaligned(in + i) + bias_values[v];
                    if constexpr (with_relu) z = xsimd::select(z <= Batch(T(0)), Batch(T(0)), z);
                    z.store_unaligned(out + i);
                }
            }
        } else {
            // Any other width: the row's whole SIMD batches, then its last values one by one.
            using Batch = xsimd::batch<T>;
            const std::size_t vectorized = width / Batch::size * Batch::size;
            for (std::size_t r = 0; r < rows.count; ++r) {
                const std::size_t row = r * width;
                for (std::size_t c = 0; c < vectorized; c += Batch::size) {
                    Batch z = Batch::load_unaligned(in + row + c) + Batch::load_unaligned(bias + c);
                    if constexpr (with_relu) z = xsimd::select(z <= Batch(T(0)), Batch(T(0)), z);
                    z.store_unaligned(out + row + c);
                }
                for (std::size_t c = vectorized; c < width; ++c) {
                    const T z = in[row + c] + bias[c];
                    out[row + c] = with_relu && z <= T(0) ? T(0) : z;
                }
            }
        }
    });
}

// Batch normalization with given statistics, per channel: y = (x - centre) * scale + shift, with
// scale = gamma / sqrt(variance + epsilon). batch_norm_inference's formula, which
// conv2d_batch_norm_inference applies to a convolution's output as it is written.
template <class T>
struct GivenNormalization {
    std::vector<T> centre, inverse_std, scale, shift;

    GivenNormalization(const xt::xarray<T>& mean, const xt::xarray<T>& variance, const xt::xarray<T>& gamma,
                       const xt::xarray<T>& beta, T epsilon) {
        for (std::size_t c = 0; c < mean.size(); ++c) {
            centre.push_back(mean(c));
            inverse_std.push_back(T(1.0 / std::sqrt(double(variance(c)) + double(epsilon))));
            scale.push_back(gamma(c) * inverse_std.back());
            shift.push_back(beta(c));
        }
    }
};

// out = relu_if((in (+ bias) - centre) * scale + shift) over rows of the channels, in place when
// out == in: the bits of add_bias, then batch_norm_inference (and relu), in one pass.
template <bool with_relu, class T>
void add_bias_then_normalize(const T* in, const T* bias, const GivenNormalization<T>& given, T* out, Rows rows) {
    const T* centre = given.centre.data();
    const T* scale = given.scale.data();
    const T* shift = given.shift.data();
    with_row_width(rows.width, [=](auto width) {
        using Batch = xsimd::batch<T>;
        const std::size_t vectorized = whole_batches<T, decltype(width)>() ? std::size_t(width) : width / Batch::size * Batch::size;
        for (std::size_t r = 0; r < rows.count; ++r) {
            const std::size_t row = r * width;
            for (std::size_t c = 0; c < vectorized; c += Batch::size) {
                Batch z = Batch::load_unaligned(in + row + c);
                if (bias) z = z + Batch::load_unaligned(bias + c);
                z = detail::fused_multiply_add(z - Batch::load_unaligned(centre + c), Batch::load_unaligned(scale + c),
                                               Batch::load_unaligned(shift + c));
                if constexpr (with_relu) z = xsimd::select(z <= Batch(T(0)), Batch(T(0)), z);
                z.store_unaligned(out + row + c);
            }
            for (std::size_t c = vectorized; c < width; ++c) {
                T z = in[row + c];
                if (bias) z = z + bias[c];
                z = std::fma(z - centre[c], scale[c], shift[c]);
                out[row + c] = with_relu && z <= T(0) ? T(0) : z;
            }
        }
    });
}

// What bias_backward does with the gradient it passes on to the biased input.
enum class BiasGradientTo { none, write, add };

// The backward pass of add_bias<with_relu> (output y, its gradient dy): the passed gradient g (dy,
// with relu 0 where y <= 0; a NaN passes, as in PyTorch, so it reaches the loss instead of hiding
// in the weights) is written to or added to dx as `to_dx` says, and summed into db unless db is
// null. One loop per case, chosen at compile time, so that each vectorizes with nothing to test per
// element; db's sums add up row after row in registers (added in place, each row would wait for
// the previous row's stores).
template <bool with_relu, class T>
void bias_backward(const T* y, const T* dy, T* dx, BiasGradientTo to_dx, T* db, Rows rows) {
    auto pass = [=](auto write_dx, auto add_dx, auto add_db) {
        constexpr bool writes = decltype(write_dx)::value, adds = decltype(add_dx)::value, sums = decltype(add_db)::value;
        with_row_width(rows.width, [=](auto width) {
            if constexpr (whole_batches<T, decltype(width)>()) {
                using Batch = xsimd::batch<T>;
                constexpr std::size_t vectors = decltype(width)::value / Batch::size;
                Batch db_sums[vectors];
                for (std::size_t v = 0; v < vectors; ++v) db_sums[v] = sums ? Batch::load_unaligned(db + v * Batch::size) : Batch(T(0));
                for (std::size_t r = 0; r < rows.count; ++r) {
                    for (std::size_t v = 0; v < vectors; ++v) {
                        const std::size_t i = r * width + v * Batch::size;
                        Batch g = Batch::load_unaligned(dy + i);
                        if constexpr (with_relu) g = xsimd::select(Batch::load_unaligned(y + i) <= Batch(T(0)), Batch(T(0)), g);
                        if constexpr (writes) g.store_unaligned(dx + i);
                        if constexpr (adds) (Batch::load_unaligned(dx + i) + g).store_unaligned(dx + i);
                        if constexpr (sums) db_sums[v] += g;
                    }
                }
                if constexpr (sums) {
                    for (std::size_t v = 0; v < vectors; ++v) db_sums[v].store_unaligned(db + v * Batch::size);
                }
            } else {
                // Any other width: the row's whole SIMD batches, then its last values one by one.
                // Too many sums for registers: they wait between rows in a buffer of their own
                // (each is independent of the others, so the adds do not wait on each other).
                using Batch = xsimd::batch<T>;
                const std::size_t vectorized = width / Batch::size * Batch::size;
                std::vector<T> db_sums(sums ? std::size_t(width) : 0);
                T* sum = db_sums.data();
                if constexpr (sums) std::copy_n(db, std::size_t(width), sum);
                for (std::size_t r = 0; r < rows.count; ++r) {
                    const std::size_t row = r * width;
                    for (std::size_t c = 0; c < vectorized; c += Batch::size) {
                        Batch g = Batch::load_unaligned(dy + row + c);
                        if constexpr (with_relu) g = xsimd::select(Batch::load_unaligned(y + row + c) <= Batch(T(0)), Batch(T(0)), g);
                        if constexpr (writes) g.store_unaligned(dx + row + c);
                        if constexpr (adds) (Batch::load_unaligned(dx + row + c) + g).store_unaligned(dx + row + c);
                        if constexpr (sums) (Batch::load_unaligned(sum + c) + g).store_unaligned(sum + c);
                    }
                    for (std::size_t c = vectorized; c < width; ++c) {
                        const T g = with_relu && y[row + c] <= T(0) ? T(0) : dy[row + c];
                        if constexpr (writes) dx[row + c] = g;
                        if constexpr (adds) dx[row + c] += g;
                        if constexpr (sums) sum[c] += g;
                    }
                }
                if constexpr (sums) std::copy_n(sum, std::size_t(width), db);
            }
        });
    };
    using yes = std::true_type;
    using no = std::false_type;
    const bool writes = dx && to_dx == BiasGradientTo::write, adds = dx && to_dx == BiasGradientTo::add;
    if (db) {
        writes ? pass(yes{}, no{}, yes{}) : adds ? pass(no{}, yes{}, yes{}) : pass(no{}, no{}, yes{});
    } else if (writes) {
        pass(yes{}, no{}, no{});
    } else if (adds) {
        pass(no{}, yes{}, no{});
    }
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

// out[i] = f(in[i]...) for `f` written once for xsimd batches (xsimd::exp, where, ...). The last
// partial batch is padded rather than computed one value at a time with the standard library's
// functions: an element's value does not depend on where it sits in the array, and xsimd's
// functions and the standard library's never meet in one result. Compiles in a fraction of the time of the same function as an xtensor expression.
template <class T, class F, class... Inputs>
void map_values(T* out, std::size_t n, F f, const Inputs*... in) {
    using Batch = xsimd::batch<T>;
    constexpr std::size_t width = Batch::size;
    std::size_t i = 0;
    for (; i + width <= n; i += width) f(Batch::load_unaligned(in + i)...).store_unaligned(out + i);
    if (i == n) return;
    auto padded_tail = [i, n](const T* values) {
        std::array<T, width> lanes{};
        std::copy(values + i, values + n, lanes.begin());
        return Batch::load_unaligned(lanes.data());
    };
    std::array<T, width> result;
    f(padded_tail(in)...).store_unaligned(result.data());
    std::copy(result.begin(), result.begin() + (n - i), out + i);
}

// xt::where for the functions given to map_values: batches or single values for either branch.
template <class T, class A, class X, class Y>
xsimd::batch<T, A> where(const xsimd::batch_bool<T, A>& condition, const X& if_true, const Y& if_false) {
    return xsimd::select(condition, xsimd::batch<T, A>(if_true), xsimd::batch<T, A>(if_false));
}

// An elementwise op y = f(x) whose derivative f'(x) is computed from x and y. `forward` and
// `derivative` take xsimd batches (see map_values).
template <class T, class Forward, class Derivative>
BasicTensor<T> elementwise(const char* name, const BasicTensor<T>& x, Forward forward, Derivative derivative) {
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    map_values(y.data(), y.size(), forward, x.value().data());
    return make_op<T>(name, std::move(y), {x}, [derivative](NodeT<T>& out) {
        NodeT<T>& in = *out.inputs[0];
        if (!in.requires_grad) return;
        xt::xarray<T> contribution = pooled_empty<T>(in.value.shape());
        map_values(
            contribution.data(), contribution.size(),
            [&derivative](const auto& grad, const auto& v, const auto& y) { return grad * derivative(v, y); },
            out.grad.data(), in.value.data(), out.value.data());
        accumulate_grad(in, std::move(contribution));
    });
}

// f(a, b) with numpy broadcasting, for f of one operation (+, -, *, /) so that the order in which
// the elements are computed cannot change a value. `f` takes batches or single values.
template <class T, class F>
xt::xarray<T> broadcast_map(const char* op, const xt::xarray<T>& a, const xt::xarray<T>& b, F f) {
    if (a.shape() == b.shape()) {
        xt::xarray<T> y = pooled_empty<T>(a.shape());
        map_values(y.data(), y.size(), f, a.data(), b.data());
        return y;
    }
    const Shape shape = broadcast_shape(op, a.shape(), b.shape());
    xt::xarray<T> y = pooled_empty<T>(shape);
    const T* lhs = a.data();
    const T* rhs = b.data();
    T* out = y.data();
    for_each_offset<2>(shape, {broadcast_strides(a.shape(), shape), broadcast_strides(b.shape(), shape)},
                       [&](std::size_t i, const auto& at) { out[i] = f(lhs[at[0]], rhs[at[1]]); });
    return y;
}

template <class T>
BasicTensor<T> scalar_result(const char* name, double value, const BasicTensor<T>& input,
                             typename NodeT<T>::BackwardFn backward) {
    xt::xarray<T> scalar = pooled_empty<T>(Shape{});
    scalar() = static_cast<T>(value);
    return make_op<T>(name, std::move(scalar), {input}, std::move(backward));
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


// Each row's exps shifted by its largest value, exps[i] = exp(z[i] - max), then
// row_done(r, max, sum) with the sum of row r's exps (added in column order): softmax's and
// log-softmax's first pass, which cannot overflow. The exps of a block of rows are one SIMD pass
// (map_values), so rows as short as ten classes vectorize too; the block's maxes and sums stay on
// the stack.
template <class T, class RowDone>
void row_exps(const T* z, Rows rows, T* exps, RowDone&& row_done) {
    constexpr std::size_t block = 64;
    std::array<T, block> maxes;
    for (std::size_t first = 0; first < rows.count; first += block) {
        const std::size_t count = std::min(block, rows.count - first);
        const T* block_z = z + first * rows.width;
        T* block_exps = exps + first * rows.width;
        for (std::size_t r = 0; r < count; ++r) {
            const T* row = block_z + r * rows.width;
            T max = row[0];
            for (std::size_t c = 1; c < rows.width; ++c) max = std::max(max, row[c]);
            for (std::size_t c = 0; c < rows.width; ++c) block_exps[r * rows.width + c] = row[c] - max;
            maxes[r] = max;
        }
        map_values(block_exps, count * rows.width, [](const auto& v) { return xsimd::exp(v); }, block_exps);
        for (std::size_t r = 0; r < count; ++r) {
            T sum = 0;
            for (std::size_t c = 0; c < rows.width; ++c) sum += block_exps[r * rows.width + c];
            row_done(first + r, maxes[r], sum);
        }
    }
}

}  // namespace xtnn::ops::internal
