#pragma once
// Ops whose work a team of slice threads (parallel.hpp) shares out by the weights instead of by the
// rows: each member owns a part of the weight and computes with it for every member's rows, so the
// weight and its gradient stay in one core's cache and only activations cross between cores.
// Private to lib/src.

#include <cstddef>

#include "parallel.hpp"
#include "xtnn/tensor.hpp"

namespace xtnn::detail {

/// Whether x (rows, in) @ kernel (in, out) on every member of `team` costs less sharded: the
/// members then exchange about total_rows * (in / 2 + out) values a step, against the in * out
/// each would read of the others' gradients and updated weights when every slice has the whole
/// kernel. The same answer on every member.
bool product_worth_sharding(const Team& team, std::size_t in, std::size_t out);

/// x @ kernel for member `member` of `team`, whose slice x is (team.rows(member), in): the same
/// values as ops::matmul up to the order of the sums. Member k multiplies rows [in * k / n,
/// in * (k + 1) / n) of the kernel with those columns of every member's x; each member adds the
/// partial products of its own rows. In the backward pass member k writes those rows of the
/// kernel's gradient (from every member's rows: the gradient is whole, in the kernel's own
/// holder, never in a slice's LeafGradients) and those columns of every member's input gradient.
/// Every member must call it, in the same order relative to the team's other ops.
template <class T>
BasicTensor<T> sharded_matmul(const BasicTensor<T>& x, const BasicTensor<T>& kernel, Team& team, std::size_t member);

}  // namespace xtnn::detail
