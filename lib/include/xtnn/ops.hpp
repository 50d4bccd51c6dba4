#pragma once
// The differentiable operations. Each is defined, forward and backward, in one function of
// ops.cpp; all work for float (training) and double (gradient checks).
//
// Conventions: "last axis" ops (softmax, bias_add, the cross-entropies) treat a tensor of shape
// (..., C) as rows of C values; the losses return the mean over rows as a one-element tensor.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <xtensor/xarray.hpp>

#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn::ops {

// Elementwise arithmetic with NumPy broadcasting; gradients are summed back to each input's shape.
template <class T> BasicTensor<T> add(const BasicTensor<T>& a, const BasicTensor<T>& b);
/// relu(a + b) for a and b of one shape, in one pass and one buffer (the join of a residual block),
/// with the bits of relu(add(a, b)).
template <class T> BasicTensor<T> add_relu(const BasicTensor<T>& a, const BasicTensor<T>& b);
template <class T> BasicTensor<T> sub(const BasicTensor<T>& a, const BasicTensor<T>& b);
template <class T> BasicTensor<T> mul(const BasicTensor<T>& a, const BasicTensor<T>& b);
template <class T> BasicTensor<T> div(const BasicTensor<T>& a, const BasicTensor<T>& b);
template <class T> BasicTensor<T> scale(const BasicTensor<T>& a, T factor);

/// xtnn's threads: fit splits each batch into this many slices, run at once through the same
/// weights, and sums their gradients in a fixed order (docs/threads.md). By default one per core,
/// or OPENBLAS_NUM_THREADS; OpenBLAS itself runs single-threaded inside them. Results are
/// bit-for-bit reproducible for a fixed thread count; another count sums the gradients in
/// another order, so results differ in the last bits (docs/reproducibility.md). At least 1 and at
/// most 1024 or the number of cores, whichever is more.
void set_num_threads(int threads);
int num_threads();

/// op(a) @ op(b) for 2-D tensors, where op transposes when asked (a BLAS flag, no copy).
template <class T>
BasicTensor<T> matmul(const BasicTensor<T>& a, const BasicTensor<T>& b, bool transpose_a = false,
                      bool transpose_b = false);
/// x (..., n) + bias (n): the bias's gradient is the sum over all rows, with the bias's shape.
template <class T> BasicTensor<T> bias_add(const BasicTensor<T>& x, const BasicTensor<T>& bias);
/// relu(x + bias) in one pass and one buffer: what a Dense or Conv2D layer with relu computes.
template <class T> BasicTensor<T> bias_relu(const BasicTensor<T>& x, const BasicTensor<T>& bias);

// Reductions: over all elements (rank-0 result) or along one axis.
template <class T> BasicTensor<T> sum(const BasicTensor<T>& x);
template <class T> BasicTensor<T> sum(const BasicTensor<T>& x, std::size_t axis, bool keepdims = false);
template <class T> BasicTensor<T> mean(const BasicTensor<T>& x);
template <class T> BasicTensor<T> mean(const BasicTensor<T>& x, std::size_t axis, bool keepdims = false);

template <class T> BasicTensor<T> exp(const BasicTensor<T>& x);
/// Natural logarithm; inputs must be positive (a non-positive input gives -inf or NaN, as in NumPy).
template <class T> BasicTensor<T> log(const BasicTensor<T>& x);

/// The same elements in a new shape; one extent may be -1 (inferred).
template <class T> BasicTensor<T> reshape(const BasicTensor<T>& x, const std::vector<std::ptrdiff_t>& shape);
/// The tensor repeated along its extents of 1 (and new leading axes) to `shape`, as NumPy's
/// broadcast_to; the gradient sums back over the repeats.
template <class T> BasicTensor<T> broadcast_to(const BasicTensor<T>& x, const Shape& shape);
/// (N, d1, d2, ...) -> (N, d1 * d2 * ...).
template <class T> BasicTensor<T> flatten(const BasicTensor<T>& x);
/// Permutes the axes; with no permutation, reverses them (a matrix transpose for 2-D).
template <class T>
BasicTensor<T> transpose(const BasicTensor<T>& x, std::vector<std::size_t> permutation = {});

// Activations.
template <class T> BasicTensor<T> sigmoid(const BasicTensor<T>& x);
/// max(x, 0); its derivative at exactly 0 is taken as 0, as in PyTorch and TensorFlow.
template <class T> BasicTensor<T> relu(const BasicTensor<T>& x);
template <class T> BasicTensor<T> tanh(const BasicTensor<T>& x);
template <class T> BasicTensor<T> elu(const BasicTensor<T>& x, T alpha = T(1));
template <class T> BasicTensor<T> leaky_relu(const BasicTensor<T>& x, T negative_slope = T(0.2));
template <class T> BasicTensor<T> softplus(const BasicTensor<T>& x);
/// The exact (erf) GELU, Keras's default.
template <class T> BasicTensor<T> gelu(const BasicTensor<T>& x);
/// Along the last axis; rows sum to 1.
template <class T> BasicTensor<T> softmax(const BasicTensor<T>& x);
template <class T> BasicTensor<T> log_softmax(const BasicTensor<T>& x);

// Losses: mean over rows, one-element result.
/// Cross-entropy of softmax(logits) against target distributions (one-hot or soft), fused and
/// stable (log-sum-exp); the logits' gradient is (softmax * sum(target) - target) / rows.
template <class T>
BasicTensor<T> softmax_cross_entropy(const BasicTensor<T>& logits, const xt::xarray<T>& target);
/// The same with one class index per row.
template <class T>
BasicTensor<T> sparse_softmax_cross_entropy(const BasicTensor<T>& logits, std::span<const std::int64_t> labels);
/// Cross-entropy of probabilities (rows renormalised, clipped to [1e-7, 1 - 1e-7], as Keras does).
template <class T>
BasicTensor<T> categorical_crossentropy(const BasicTensor<T>& probabilities, const xt::xarray<T>& target);
/// Binary cross-entropy of probabilities, clipped to [1e-7, 1 - 1e-7], mean over all elements.
template <class T>
BasicTensor<T> binary_crossentropy(const BasicTensor<T>& probabilities, const xt::xarray<T>& target);
/// Binary cross-entropy of sigmoid(logits), fused and stable, mean over all elements.
template <class T>
BasicTensor<T> sigmoid_binary_crossentropy(const BasicTensor<T>& logits, const xt::xarray<T>& target);
/// Mean squared error over all elements.
template <class T> BasicTensor<T> mse(const BasicTensor<T>& prediction, const xt::xarray<T>& target);

/// Inverted dropout: while training, zeroes each element with probability `rate` and scales the
/// rest by 1 / (1 - rate); otherwise returns x unchanged. Each call draws one 64-bit key from
/// `generator`; an element's fate is a hash of that key and the element's index in the whole batch,
/// where x's first row is row `first_row`. So rows [r, s) of a batch, passed with first_row = r and
/// the same key, get exactly those rows of the batch's mask: a batch split into slices on several
/// threads drops what it drops in one piece.
template <class T>
BasicTensor<T> dropout(const BasicTensor<T>& x, double rate, bool training, Generator& generator,
                       std::size_t first_row = 0);

// Convolution and pooling on channels-last images (batch, height, width, channels), as Keras.

/// "valid": windows inside the image only; "same": ceil(size / stride) outputs, zero padding
/// split as TensorFlow does (the odd one after).
enum class Padding { valid, same };
Padding padding_from_name(const std::string& name);
std::string padding_name(Padding padding);

struct Window2D {
    std::size_t height = 1;
    std::size_t width = 1;
    bool operator==(const Window2D&) const = default;
};

/// The per-sample output shape of a window op on `input` (height, width, channels); `filters`
/// replaces the channels (0 keeps them).
Shape conv_output_shape(const Shape& input, std::size_t filters, Window2D window, Window2D strides, Padding padding,
                        const char* op);

/// x (N, H, W, C) correlated with kernel (kh, kw, C, F) -> (N, H', W', F), no bias.
template <class T>
BasicTensor<T> conv2d(const BasicTensor<T>& x, const BasicTensor<T>& kernel, Window2D strides = {},
                      Padding padding = Padding::valid);
/// conv2d plus bias (F) over the filters as one op, with the bits of bias_add(conv2d(...)): the bias
/// goes onto each sample's output while it is in cache, and dy reaches the convolution uncopied.
template <class T>
BasicTensor<T> conv2d_bias(const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>& bias,
                           Window2D strides = {}, Padding padding = Padding::valid);
/// relu(conv2d(x, kernel) + bias) as one op, with the bits of bias_relu(conv2d(...)).
template <class T>
BasicTensor<T> conv2d_bias_relu(const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>& bias,
                                Window2D strides = {}, Padding padding = Padding::valid);
/// batch_norm_inference(conv2d(x, kernel) (+ bias), mean, variance, gamma, beta, epsilon), then relu
/// with `relu`, each sample's output normalized while it is in cache, with the bits of the ops one
/// after the other: what a Model runs at inference for a Conv2D whose only reader is a
/// BatchNormalization. For inference only: it records no backward pass, and throws if an input
/// requires a gradient while gradients are enabled. `bias` may be null (Conv2D without bias).
template <class T>
BasicTensor<T> conv2d_batch_norm_inference(const BasicTensor<T>& x, const BasicTensor<T>& kernel, const BasicTensor<T>* bias,
                                           const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                                           const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon, bool relu,
                                           Window2D strides = {}, Padding padding = Padding::valid);
/// The maximum of each window, per channel. Of equal values the first in row-major window order
/// is taken and receives the gradient; padding never wins.
template <class T>
BasicTensor<T> max_pool2d(const BasicTensor<T>& x, Window2D pool, Window2D strides, Padding padding = Padding::valid);
/// The mean of each window, per channel, over the elements inside the image (padding excluded).
template <class T>
BasicTensor<T> avg_pool2d(const BasicTensor<T>& x, Window2D pool, Window2D strides, Padding padding = Padding::valid);

// Normalization over the last axis (ops_normalization.cpp).

/// Batch normalization with the batch's statistics, per channel over every other axis:
/// gamma * (x - mean) / sqrt(variance + epsilon) + beta, the variance biased (divided by the
/// number of values), as Keras. The batch's mean and variance are written to `batch_mean` and
/// `batch_variance` for the moving averages.
template <class T>
BasicTensor<T> batch_norm(const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon,
                          xt::xarray<T>& batch_mean, xt::xarray<T>& batch_variance);
/// The same with given statistics (the moving ones, at inference), which get no gradient.
template <class T>
BasicTensor<T> batch_norm_inference(const BasicTensor<T>& x, const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                                    const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon);
/// relu(batch_norm(...)) as one op (one pass forward, relu's mask applied as dy is read), with the
/// same bits: what a Model runs for a BatchNormalization whose only reader is a relu Activation.
template <class T>
BasicTensor<T> batch_norm_relu(const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon,
                               xt::xarray<T>& batch_mean, xt::xarray<T>& batch_variance);
/// relu(batch_norm_inference(...)) as one op, with the same bits.
template <class T>
BasicTensor<T> batch_norm_inference_relu(const BasicTensor<T>& x, const xt::xarray<T>& mean, const xt::xarray<T>& variance,
                                         const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon);
/// Layer normalization: each row (every axis but the last fixed) normalized by its own mean and
/// biased variance, then gamma * normalized + beta per feature.
template <class T>
BasicTensor<T> layer_norm(const BasicTensor<T>& x, const BasicTensor<T>& gamma, const BasicTensor<T>& beta, T epsilon);

// Merging (ops_merging.cpp).

/// The element-wise maximum of two tensors of one shape; the gradient goes to `a` where a >= b
/// or a is NaN, to `b` elsewhere, so a NaN propagates.
template <class T> BasicTensor<T> maximum(const BasicTensor<T>& a, const BasicTensor<T>& b);
/// The element-wise minimum, likewise: the gradient goes to `a` where a <= b or a is NaN.
template <class T> BasicTensor<T> minimum(const BasicTensor<T>& a, const BasicTensor<T>& b);
/// The tensors joined along `axis` (counted with the batch axis); every other extent must agree.
template <class T> BasicTensor<T> concatenate(const std::vector<BasicTensor<T>>& tensors, std::size_t axis);

}  // namespace xtnn::ops

namespace xtnn {

template <class T> BasicTensor<T> operator+(const BasicTensor<T>& a, const BasicTensor<T>& b) { return ops::add(a, b); }
template <class T> BasicTensor<T> operator-(const BasicTensor<T>& a, const BasicTensor<T>& b) { return ops::sub(a, b); }
template <class T> BasicTensor<T> operator*(const BasicTensor<T>& a, const BasicTensor<T>& b) { return ops::mul(a, b); }
template <class T> BasicTensor<T> operator/(const BasicTensor<T>& a, const BasicTensor<T>& b) { return ops::div(a, b); }

}  // namespace xtnn
