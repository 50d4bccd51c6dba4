// Normalization ops over the last axis (channels-last): batch normalization with the batch's own
// statistics while training, and with given (moving) statistics at inference; layer
// normalization with each row's own statistics. Per-channel sums over the rows are accumulated in
// double (the parameter gradients' after short float runs of rows), so their error does not grow
// with the batch. The passes over the rows are spread over the threads, the sums by fixed groups
// of rows, so the bits do not depend on the thread count. The library builds with
// -ffp-contract=off, so the multiply-adds meant to be fused are written as std::fma, and the g++
// and clang builds agree bit for bit.

#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>

#include "xtnn/autodiff.hpp"
#include "xtnn/ops.hpp"
#include "ops_internal.hpp"
#include "parallel.hpp"

namespace xtnn::ops {

using internal::per_channel;
using internal::with_row_width;

namespace {

struct Channels {
    std::size_t rows;
    std::size_t width;
};

// Rows a group of the per-channel sums adds up from zero; the groups' sums are then added in
// order, so the threads can take whole groups and the bits stay those of one thread.
constexpr std::size_t rows_per_sum_group = 4096;

// Rows whose terms a per-channel sum adds in T before adding them to its double total: a short
// float chain keeps the error small while the double conversions happen once per run.
constexpr std::size_t rows_per_run = 8;

// Values a thread's share of a pass holds at least: some tens of microseconds of work, against a
// few to hand it over.
constexpr std::size_t min_values_per_task = std::size_t(1) << 16;

// Runs pass(first, last) over the rows [0, rows) of `width` values, cut over the threads.
template <class Pass>
void over_rows(std::size_t rows, std::size_t width, Pass&& pass) {
    detail::run_ranges(rows, std::max<std::size_t>(1, min_values_per_task / std::max<std::size_t>(1, width)), pass);
}

// `Count` per-channel sums over the rows: add_rows(first, last, sums) adds the terms of rows
// [first, last) onto sums[k][c], for each group of rows_per_sum_group rows, the threads taking
// whole groups; the groups' sums are added in group order.
template <std::size_t Count, class Width, class AddRows>
auto sum_over_rows(std::size_t rows, Width width, AddRows&& add_rows) {
    using Sums = std::array<decltype(per_channel(width, 0.0)), Count>;
    const auto zeros = [&] {
        Sums sums;
        for (auto& sum : sums) sum = per_channel(width, 0.0);
        return sums;
    };
    const std::size_t groups = std::max<std::size_t>(1, (rows + rows_per_sum_group - 1) / rows_per_sum_group);
    std::vector<Sums> group_sums(groups, zeros());
    const std::size_t min_groups_per_task =
        std::max<std::size_t>(1, min_values_per_task / (rows_per_sum_group * std::max<std::size_t>(1, width)));
    detail::run_ranges(groups, min_groups_per_task, [&](std::size_t first_group, std::size_t last_group) {
        for (std::size_t group = first_group; group < last_group; ++group) {
            add_rows(group * rows_per_sum_group, std::min(rows, (group + 1) * rows_per_sum_group), group_sums[group]);
        }
    });
    Sums total = group_sums[0];
    for (std::size_t group = 1; group < groups; ++group) {
        for (std::size_t k = 0; k < Count; ++k) {
            for (std::size_t c = 0; c < width; ++c) total[k][c] += group_sums[group][k][c];
        }
    }
    return total;
}

// The first `width` values of `values` (a vector or a 1-D array) as per_channel's local row.
template <class Values, class Width>
auto copy_of(const Values& values, Width width) {
    auto local = per_channel(width, typename Values::value_type(0));
    std::copy_n(values.begin(), std::size_t(width), local.begin());
    return local;
}

template <class T>
Channels channels_of(const char* op, const BasicTensor<T>& x, std::initializer_list<const xt::xarray<T>*> per_channel) {
    if (x.dimension() < 2 || x.size() == 0) {
        throw ShapeError(std::string(op) + ": expected a non-empty input of shape (batch, ..., channels), got " +
                         shape_to_string(x.shape()));
    }
    const Channels channels{x.size() / x.shape().back(), x.shape().back()};
    for (const auto* values : per_channel) {
        if (values->dimension() != 1 || values->shape()[0] != channels.width) {
            throw ShapeError(std::string(op) + ": a per-channel parameter of shape " + shape_to_string(values->shape()) +
                             " does not fit input of shape " + shape_to_string(x.shape()) + "; expected (" +
                             std::to_string(channels.width) + ",)");
        }
    }
    return channels;
}

// relu(z) as the relu op computes it: NaN <= 0 is false, so a NaN stays NaN.
template <bool Relu, class T>
T relu_if(T z) {
    return Relu && z <= T(0) ? T(0) : z;
}

// The gradient relu passes back from its output y: none where y <= 0 (exactly where its input was).
template <bool Relu, class T>
T relu_gradient(T y, T dy) {
    return Relu && y <= T(0) ? T(0) : dy;
}

// Row `r` of dy as a backward pass reads it: dy itself, or with `Relu` relu's mask applied in
// `row` (per_channel storage) first, in SIMD registers where the width allows: inside the loops'
// float-to-double sums the select kept g++ from vectorizing them, and a row written one value at a
// time and read back whole stalls on store forwarding.
template <bool Relu, class T, class Width, class Row>
const T* passed_row(const T* y, const T* dy, std::size_t r, Width width, Row& row) {
    if constexpr (!Relu) {
        return dy + r * width;
    } else if constexpr (internal::whole_batches<T, Width>()) {
        using Batch = xsimd::batch<T>;
        for (std::size_t c = 0; c < Width::value; c += Batch::size) {
            const std::size_t i = r * width + c;
            xsimd::select(Batch::load_unaligned(y + i) <= Batch(T(0)), Batch(T(0)), Batch::load_unaligned(dy + i))
                .store_unaligned(row.data() + c);
        }
        return row.data();
    } else {
        for (std::size_t c = 0; c < width; ++c) row[c] = relu_gradient<true>(y[r * width + c], dy[r * width + c]);
        return row.data();
    }
}

// What both ops keep for their backward pass, y = gamma * normalized + beta with
// normalized = (x - centre) * inverse_std per channel.
template <class T>
struct Normalization {
    Channels channels;
    std::vector<T> centre, inverse_std;

    T normalized(const T* x, std::size_t i, std::size_t c) const { return (x[i] - centre[c]) * inverse_std[c]; }

    // Adds dgamma and dbeta to gamma's and beta's gradients (inputs 1 and 2 of `node`) and
    // returns them as per-channel sums, which batch_norm's dx needs too. With `Relu`, the node's
    // output went through relu and dy is passed only where that output is positive. Each run of
    // rows_per_run rows is summed in T with explicit FMAs (vectorized over the channels, the same
    // in every build), the runs' sums in double.
    template <bool Relu>
    std::pair<std::vector<double>, std::vector<double>> parameter_grads(Node<T>& node) const {
        const T* x = node.inputs[0]->value.data();
        const T* dy = node.grad.data();
        const T* y = node.value.data();
        std::vector<double> dgamma(channels.width), dbeta(channels.width);
        with_row_width(channels.width, [&](auto width) {
            const auto centres = copy_of(centre, width), inverse_stds = copy_of(inverse_std, width);
            const auto sums = sum_over_rows<2>(channels.rows, width, [&](std::size_t first, std::size_t last, auto& group) {
                auto row = per_channel(width, T(0));
                for (std::size_t run = first; run < last; run += rows_per_run) {
                    auto gamma_run = per_channel(width, T(0)), beta_run = per_channel(width, T(0));
                    for (std::size_t r = run; r < std::min(last, run + rows_per_run); ++r) {
                        const T* passed = passed_row<Relu>(y, dy, r, width, row);
                        for (std::size_t c = 0; c < width; ++c) {
                            const T normalized = (x[r * width + c] - centres[c]) * inverse_stds[c];
                            gamma_run[c] = std::fma(passed[c], normalized, gamma_run[c]);
                            beta_run[c] += passed[c];
                        }
                    }
                    for (std::size_t c = 0; c < width; ++c) {
                        group[0][c] += double(gamma_run[c]);
                        group[1][c] += double(beta_run[c]);
                    }
                }
            });
            std::copy_n(sums[0].begin(), std::size_t(width), dgamma.begin());
            std::copy_n(sums[1].begin(), std::size_t(width), dbeta.begin());
        });
        for (auto [input, sums] : {std::pair{node.inputs[1].get(), &dgamma}, std::pair{node.inputs[2].get(), &dbeta}}) {
            if (!input->requires_grad) continue;
            T* grad = grad_buffer(*input).data();
            for (std::size_t c = 0; c < channels.width; ++c) grad[c] += T((*sums)[c]);
        }
        return {std::move(dgamma), std::move(dbeta)};
    }
};

}  // namespace

namespace {

// batch_norm, then relu with `Relu`: one pass forward, and backward the relu's mask applied as dy
// is read, with the bits of relu(batch_norm(...)).
template <bool Relu, class T>
BasicTensor<T> normalize_batch(const char* op, const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta,
                               T epsilon, xt::xarray<T>& batch_mean, xt::xarray<T>& batch_variance) {
    const Channels channels = channels_of(op, x, {&gamma.value(), &beta.value()});
    const T* in = x.value().data();
    batch_mean = xt::empty<T>({channels.width});
    batch_variance = xt::empty<T>({channels.width});
    Normalization<T> kept{channels, std::vector<T>(channels.width), std::vector<T>(channels.width)};
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    T* out = y.data();
    with_row_width(channels.width, [&](auto width) {
        // One pass: sums of d = x - shift and of d * d in double, shifted by the first row so that
        // the variance formula E[d^2] - E[d]^2 does not cancel away its digits when the mean is far
        // from zero relative to the spread.
        auto shift = per_channel(width, 0.0);
        for (std::size_t c = 0; c < width; ++c) shift[c] = double(in[c]);
        const auto sums = sum_over_rows<2>(channels.rows, width, [&](std::size_t first, std::size_t last, auto& group) {
            auto shifted = group[0], squares = group[1];
            for (std::size_t r = first; r < last; ++r) {
                for (std::size_t c = 0; c < width; ++c) {
                    const double d = double(in[r * width + c]) - shift[c];
                    shifted[c] += d;
                    squares[c] += d * d;
                }
            }
            group = {shifted, squares};
        });
        for (std::size_t c = 0; c < width; ++c) {
            const double mean_shifted = sums[0][c] / double(channels.rows);
            const double variance = std::max(0.0, sums[1][c] / double(channels.rows) - mean_shifted * mean_shifted);
            batch_mean(c) = kept.centre[c] = T(shift[c] + mean_shifted);
            batch_variance(c) = T(variance);
            kept.inverse_std[c] = T(1.0 / std::sqrt(variance + double(epsilon)));
        }
        const auto g = copy_of(gamma.value(), width), b = copy_of(beta.value(), width);
        const auto centres = copy_of(kept.centre, width), inverse_stds = copy_of(kept.inverse_std, width);
        over_rows(channels.rows, width, [&](std::size_t first, std::size_t last) {
            for (std::size_t r = first; r < last; ++r) {
                for (std::size_t c = 0; c < width; ++c) {
                    const std::size_t i = r * width + c;
                    out[i] = relu_if<Relu>(T(g[c] * ((in[i] - centres[c]) * inverse_stds[c]) + b[c]));
                }
            }
        });
    });
    return make_op<T>(op, std::move(y), {x, gamma, beta}, [kept](Node<T>& node) {
        // Named pairs, not structured bindings: the lambda below uses them (clang 14 cannot).
        const auto parameter_sums = kept.template parameter_grads<Relu>(node);
        const std::vector<double>& dgamma = parameter_sums.first;
        const std::vector<double>& dbeta = parameter_sums.second;
        Node<T>& input = *node.inputs[0];
        if (!input.requires_grad) return;
        // dx = gamma / std * (dy - mean(dy) - normalized * mean(dy * normalized)), per channel.
        const T* value = input.value.data();
        const T* dy = node.grad.data();
        const T* y = node.value.data();
        const T* g = node.inputs[1]->value.data();
        // A fresh gradient is written, not zero-filled and added to.
        const std::pair<T*, T> destination = grad_destination(input);
        T* const dx = destination.first;
        const bool fresh = destination.second == T(0);
        const Channels channels = kept.channels;
        const double n = double(channels.rows);
        with_row_width(channels.width, [&](auto width) {
            // dx = a * dy + (b * normalized + d) per channel, with a = gamma / std, b = -a *
            // mean(dy * normalized) and d = -a * mean(dy), the means from the double sums.
            auto a = per_channel(width, T(0)), b = per_channel(width, T(0)), d = per_channel(width, T(0));
            for (std::size_t c = 0; c < width; ++c) {
                const double scale = double(g[c]) * double(kept.inverse_std[c]);
                a[c] = T(scale);
                b[c] = T(-scale * (dgamma[c] / n));
                d[c] = T(-scale * (dbeta[c] / n));
            }
            const auto centres = copy_of(kept.centre, width), inverse_stds = copy_of(kept.inverse_std, width);
            over_rows(channels.rows, width, [&](std::size_t first, std::size_t last) {
                auto row = per_channel(width, T(0));
                for (std::size_t r = first; r < last; ++r) {
                    const T* passed = passed_row<Relu>(y, dy, r, width, row);
                    T* dx_row = dx + r * width;
                    for (std::size_t c = 0; c < width; ++c) {
                        const T normalized = (value[r * width + c] - centres[c]) * inverse_stds[c];
                        const T gradient = std::fma(a[c], passed[c], std::fma(b[c], normalized, d[c]));
                        dx_row[c] = fresh ? gradient : dx_row[c] + gradient;
                    }
                }
            });
        });
    });
}

// batch_norm_inference, then relu with `Relu`, as normalize_batch.
template <bool Relu, class T>
BasicTensor<T> normalize_with(const char* op, const BasicTensor<T>& x, const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                              const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon) {
    const Channels channels = channels_of(op, x, {&mean, &variance, &gamma.value(), &beta.value()});
    const internal::GivenNormalization<T> given(mean, variance, gamma.value(), beta.value(), epsilon);
    const Normalization<T> kept{channels, given.centre, given.inverse_std};
    const std::vector<T>& scale = given.scale;
    const T* in = x.value().data();
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    T* out = y.data();
    over_rows(channels.rows, channels.width, [&](std::size_t first, std::size_t last) {
        const std::size_t at = first * channels.width;
        internal::add_bias_then_normalize<Relu>(in + at, static_cast<const T*>(nullptr), given, out + at,
                                               internal::Rows{last - first, channels.width});
    });
    return make_op<T>(op, std::move(y), {x, gamma, beta}, [kept, scale](Node<T>& node) {
        kept.template parameter_grads<Relu>(node);
        Node<T>& input = *node.inputs[0];
        if (!input.requires_grad) return;
        const T* dy = node.grad.data();
        const T* y = node.value.data();
        T* dx = grad_buffer(input).data();
        const Channels channels = kept.channels;
        with_row_width(channels.width, [&](auto width) {
            const auto scales = copy_of(scale, width);
            over_rows(channels.rows, width, [&](std::size_t first, std::size_t last) {
                auto row = per_channel(width, T(0));
                for (std::size_t r = first; r < last; ++r) {
                    const T* passed = passed_row<Relu>(y, dy, r, width, row);
                    for (std::size_t c = 0; c < width; ++c) dx[r * width + c] += passed[c] * scales[c];
                }
            });
        });
    });
}

}  // namespace

template <class T>
BasicTensor<T> batch_norm(const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon,
                          xt::xarray<T>& batch_mean, xt::xarray<T>& batch_variance) {
    return normalize_batch<false>("batch_norm", x, gamma, beta, epsilon, batch_mean, batch_variance);
}

template <class T>
BasicTensor<T> batch_norm_relu(const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon,
                               xt::xarray<T>& batch_mean, xt::xarray<T>& batch_variance) {
    return normalize_batch<true>("batch_norm_relu", x, gamma, beta, epsilon, batch_mean, batch_variance);
}

template <class T>
BasicTensor<T> batch_norm_inference(const BasicTensor<T>& x, const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                                    const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon) {
    return normalize_with<false>("batch_norm_inference", x, mean, variance, gamma, beta, epsilon);
}

template <class T>
BasicTensor<T> batch_norm_inference_relu(const BasicTensor<T>& x, const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                                         const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon) {
    return normalize_with<true>("batch_norm_inference_relu", x, mean, variance, gamma, beta, epsilon);
}

template <class T>
BasicTensor<T> layer_norm(const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon) {
    const Channels features = channels_of("layer_norm", x, {&gamma.value(), &beta.value()});
    const std::size_t width = features.width;
    const T* in = x.value().data();
    // Per row: the mean and 1 / sqrt(variance + epsilon) of its features.
    std::vector<T> row_mean(features.rows), row_inverse_std(features.rows);
    for (std::size_t r = 0; r < features.rows; ++r) {
        const T* row = in + r * width;
        double mean = 0.0, variance = 0.0;
        for (std::size_t c = 0; c < width; ++c) mean += double(row[c]);
        mean /= double(width);
        for (std::size_t c = 0; c < width; ++c) variance += (double(row[c]) - mean) * (double(row[c]) - mean);
        row_mean[r] = T(mean);
        row_inverse_std[r] = T(1.0 / std::sqrt(variance / double(width) + double(epsilon)));
    }
    const T* g = gamma.value().data();
    const T* b = beta.value().data();
    xt::xarray<T> y = pooled_empty<T>(x.shape());
    T* out = y.data();
    for (std::size_t r = 0; r < features.rows; ++r) {
        for (std::size_t c = 0; c < width; ++c) {
            const std::size_t i = r * width + c;
            out[i] = g[c] * ((in[i] - row_mean[r]) * row_inverse_std[r]) + b[c];
        }
    }
    return make_op<T>("layer_norm", std::move(y), {x, gamma, beta}, [rows = features.rows, width, row_mean, row_inverse_std](Node<T>& node) {
        const T* value = node.inputs[0]->value.data();
        const T* dy = node.grad.data();
        const T* g = node.inputs[1]->value.data();
        auto normalized = [&](std::size_t r, std::size_t c) { return (value[r * width + c] - row_mean[r]) * row_inverse_std[r]; };
        std::vector<double> dgamma(width, 0.0), dbeta(width, 0.0);
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t c = 0; c < width; ++c) {
                dgamma[c] += double(dy[r * width + c]) * double(normalized(r, c));
                dbeta[c] += double(dy[r * width + c]);
            }
        }
        for (auto [input, sums] : {std::pair{node.inputs[1].get(), &dgamma}, std::pair{node.inputs[2].get(), &dbeta}}) {
            if (!input->requires_grad) continue;
            T* grad = grad_buffer(*input).data();
            for (std::size_t c = 0; c < width; ++c) grad[c] += T((*sums)[c]);
        }
        Node<T>& input = *node.inputs[0];
        if (!input.requires_grad) return;
        // With dn = dy * gamma: dx = inverse_std * (dn - mean(dn) - normalized * mean(dn * normalized)), per row.
        T* dx = grad_buffer(input).data();
        for (std::size_t r = 0; r < rows; ++r) {
            double mean_dn = 0.0, mean_dn_n = 0.0;
            for (std::size_t c = 0; c < width; ++c) {
                const double dn = double(dy[r * width + c]) * double(g[c]);
                mean_dn += dn;
                mean_dn_n += dn * double(normalized(r, c));
            }
            mean_dn /= double(width);
            mean_dn_n /= double(width);
            for (std::size_t c = 0; c < width; ++c) {
                const double dn = double(dy[r * width + c]) * double(g[c]);
                dx[r * width + c] += T(double(row_inverse_std[r]) * (dn - mean_dn - double(normalized(r, c)) * mean_dn_n));
            }
        }
    });
}

#define XTNN_INSTANTIATE_NORMALIZATION_OPS(T)                                                                        \
    template BasicTensor<T> batch_norm(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, T,        \
                                       xt::xarray<T>&, xt::xarray<T>&);                                              \
    template BasicTensor<T> batch_norm_relu(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, T,   \
                                            xt::xarray<T>&, xt::xarray<T>&);                                         \
    template BasicTensor<T> batch_norm_inference(const BasicTensor<T>&, const xt::xarray<T>&, const xt::xarray<T>&,   \
                                                 const BasicTensor<T>&, const BasicTensor<T>&, T);                   \
    template BasicTensor<T> batch_norm_inference_relu(const BasicTensor<T>&, const xt::xarray<T>&, const xt::xarray<T>&, \
                                                      const BasicTensor<T>&, const BasicTensor<T>&, T);              \
    template BasicTensor<T> layer_norm(const BasicTensor<T>&, const BasicTensor<T>&, const BasicTensor<T>&, T);

XTNN_INSTANTIATE_NORMALIZATION_OPS(float)
XTNN_INSTANTIATE_NORMALIZATION_OPS(double)

}  // namespace xtnn::ops
