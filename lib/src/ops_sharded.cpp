#include "ops_sharded.hpp"

#include <algorithm>
#include <span>
#include <string>
#include <utility>

#include "gemm.hpp"
#include "ops_internal.hpp"

namespace xtnn::detail {

namespace {

using ops::internal::describe;
using ops::internal::NodeT;

// The entries of Team::Slot the sharded product uses; each is written before a barrier and read by
// the others until the next, and no two phases use the same entry, so a member that runs ahead
// into the next phase never overwrites what a slower one still reads.
enum Reads { forward_x, forward_partial, backward_dy, backward_x };
enum Writes { input_gradient, kernel_gradient };

struct KernelRows {
    std::size_t first;
    std::size_t last;
};

// The kernel's own gradient buffer and the beta that writes into it, past any LeafGradients
// redirect: the sharded product's kernel gradient is the whole batch's.
template <class T>
std::pair<T*, bool> own_gradient(NodeT<T>& leaf) {
    if (leaf.has_grad) return {leaf.grad.data(), true};
    if (leaf.grad.shape() != leaf.value.shape()) leaf.grad = pooled_empty<T>(leaf.value.shape());
    leaf.has_grad = true;
    return {leaf.grad.data(), false};
}

// The sharded product's arithmetic, whichever members run it: every call a member makes on its
// own rows is the one a member of a solo team makes, so both give the same bits.
template <class T>
struct ShardedProduct {
    std::size_t in, out, members;

    KernelRows kernel_rows(std::size_t part) const { return {in * part / members, in * (part + 1) / members}; }

    // Rows (rows, out) = x[:, part's kernel rows] @ those rows of w; zeros when the part has none.
    void partial(std::size_t part, std::size_t rows, const T* x, const T* w, T* block) const {
        const auto [first, last] = kernel_rows(part);
        if (last == first) {
            std::fill(block, block + rows * out, T(0));
        } else if (rows > 0) {
            gemm<T>(false, false, rows, out, last - first, T(1), x + first, in, w + first * out, out, T(0), block, out);
        }
    }

    // A member's rows in the backward pass: its inputs and its output gradient.
    struct MemberRows {
        const T* x;
        const T* dy;
        std::size_t rows;
    };

    // The part's kernel rows of dw = the sum of x^T dy over `members` in order, continued from dw's
    // values when `add`. It is one product over the batch, cut into the members' rows: computed
    // in one call or in one call a member, each continuing from the last, it has the same bits.
    void kernel_gradient(std::size_t part, std::span<const MemberRows> members, std::size_t total_rows, bool add, T* dw) const {
        const auto [first, last] = kernel_rows(part);
        xt::svector<TransposedPiece<T>, 8> pieces;
        for (const auto& member : members) pieces.push_back({member.x + first, in, member.dy, out, member.rows});
        gemm_transposed_pieces<T>(last - first, out, std::span<const TransposedPiece<T>>(pieces.data(), pieces.size()),
                                  total_rows, add, dw + first * out, out);
    }

    // The part's columns of dx (rows, in), plus dy @ those kernel rows^T.
    void input_gradient(std::size_t part, std::size_t rows, const T* dy, const T* w, bool add, T* dx) const {
        const auto [first, last] = kernel_rows(part);
        if (last == first || rows == 0) return;
        gemm<T>(false, true, rows, last - first, out, T(1), dy, out, w + first * out, out, add ? T(1) : T(0), dx + first, in);
    }
};

}  // namespace

bool product_worth_sharding(const Team& team, std::size_t in, std::size_t out) {
    return team.size() > 1 && team.total_rows() > 0 && in >= 16 * team.size() &&
           team.total_rows() * (in / 2 + out) < in * out;
}

template <class T>
BasicTensor<T> sharded_matmul(const BasicTensor<T>& x, const BasicTensor<T>& kernel, Team& team, std::size_t member) {
    const std::size_t rows = team.rows(member);
    if (x.dimension() != 2 || kernel.dimension() != 2 || x.shape()[0] != rows || x.shape()[1] != kernel.shape()[0]) {
        throw ShapeError(describe("sharded_matmul", "expected x of shape (" + std::to_string(rows) + ", " +
                                                        std::to_string(kernel.shape()[0]) + ") for kernel " +
                                                        shape_to_string(kernel.shape()) + ", got " +
                                                        shape_to_string(x.shape())));
    }
    const ShardedProduct<T> product{kernel.shape()[0], kernel.shape()[1], team.size()};
    const std::size_t out = product.out, count = rows * out;
    const T* w = kernel.value().data();
    const void* kernel_site = kernel.node().get();
    xt::xarray<T> y = pooled_empty<T>({rows, out});
    T* sum = y.data();
    if (team.solo()) {
        // Every part's partial product of this member's rows, added in part order.
        product.partial(0, rows, x.value().data(), w, sum);
        xt::xarray<T> addend = pooled_empty<T>({rows, out});
        for (std::size_t part = 1; part < product.members; ++part) {
            product.partial(part, rows, x.value().data(), w, addend.data());
            for (std::size_t i = 0; i < count; ++i) sum[i] += addend.data()[i];
        }
        detail::recycle(addend);
    } else {
        // This member's part for every member's rows, in batch order; then this member's rows of
        // every part, added in part order.
        team.slot(member).reads[forward_x] = x.value().data();
        team.arrive_and_wait(member, kernel_site);
        T* partial = static_cast<T*>(team_scratch(team.total_rows() * out * sizeof(T)));
        for (std::size_t j = 0; j < product.members; ++j) {
            product.partial(member, team.rows(j), static_cast<const T*>(team.slot(j).reads[forward_x]), w,
                            partial + team.first_row(j) * out);
        }
        team.slot(member).reads[forward_partial] = partial;
        team.arrive_and_wait(member, kernel_site);
        const std::size_t offset = team.first_row(member) * out;
        const T* first = static_cast<const T*>(team.slot(0).reads[forward_partial]) + offset;
        std::copy(first, first + count, sum);
        for (std::size_t j = 1; j < product.members; ++j) {
            const T* addend = static_cast<const T*>(team.slot(j).reads[forward_partial]) + offset;
            for (std::size_t i = 0; i < count; ++i) sum[i] += addend[i];
        }
    }

    // The closure holds the shape, not the ShardedProduct: g++ warns (-Wsubobject-linkage) about a
    // closure of this template holding a type of the anonymous namespace once a unity batch
    // includes this file.
    return make_op<T>("sharded_matmul", std::move(y), {x, kernel}, [&team, member, in = product.in, out](NodeT<T>& node) {
        const ShardedProduct<T> product{in, out, team.size()};
        NodeT<T>& input = *node.inputs[0];
        NodeT<T>& weights = *node.inputs[1];
        const void* kernel_site = &weights;
        const T* w = weights.value.data();
        const std::size_t rows = team.rows(member);
        if (team.solo()) {
            if (weights.requires_grad) {
                const auto [dw, add] = own_gradient(weights);
                const typename ShardedProduct<T>::MemberRows own[] = {{input.value.data(), node.grad.data(), rows}};
                for (std::size_t part = 0; part < product.members; ++part) {
                    product.kernel_gradient(part, own, team.total_rows(), add, dw);
                }
                if (anomaly_detection_enabled()) check_passed_gradient(node, 1, weights.grad);
            }
            if (input.requires_grad) {
                const auto [dx, beta] = grad_destination(input);
                for (std::size_t part = 0; part < product.members; ++part) {
                    product.input_gradient(part, rows, node.grad.data(), w, beta != T(0), dx);
                }
            }
            return;
        }
        Team::Slot& mine = team.slot(member);
        mine.reads[backward_dy] = node.grad.data();
        mine.reads[backward_x] = input.value.data();
        if (input.requires_grad) {
            const auto [dx, beta] = grad_destination(input);
            mine.writes[input_gradient] = dx;
            mine.accumulate[input_gradient] = beta != T(0);
        }
        if (member == 0 && weights.requires_grad) {
            const auto [dw, add] = own_gradient(weights);
            mine.writes[kernel_gradient] = dw;
            mine.accumulate[kernel_gradient] = add;
        }
        team.arrive_and_wait(member, kernel_site);
        // This member's kernel rows of the gradient, from every member's rows in member order; its
        // columns of every member's input gradient.
        if (weights.requires_grad) {
            xt::svector<typename ShardedProduct<T>::MemberRows, 8> members;
            for (std::size_t j = 0; j < product.members; ++j) {
                members.push_back({static_cast<const T*>(team.slot(j).reads[backward_x]),
                                   static_cast<const T*>(team.slot(j).reads[backward_dy]), team.rows(j)});
            }
            product.kernel_gradient(member, std::span(members.data(), members.size()), team.total_rows(),
                                    team.slot(0).accumulate[kernel_gradient], static_cast<T*>(team.slot(0).writes[kernel_gradient]));
        }
        if (input.requires_grad) {
            for (std::size_t j = 0; j < product.members; ++j) {
                product.input_gradient(member, team.rows(j), static_cast<const T*>(team.slot(j).reads[backward_dy]), w,
                                       team.slot(j).accumulate[input_gradient], static_cast<T*>(team.slot(j).writes[input_gradient]));
            }
        }
        team.arrive_and_wait(member, kernel_site);
        // Every member has written its rows of the kernel gradient by now.
        if (member == 0 && weights.requires_grad && anomaly_detection_enabled()) check_passed_gradient(node, 1, weights.grad);
    });
}

template BasicTensor<float> sharded_matmul(const BasicTensor<float>&, const BasicTensor<float>&, Team&, std::size_t);
template BasicTensor<double> sharded_matmul(const BasicTensor<double>&, const BasicTensor<double>&, Team&, std::size_t);

}  // namespace xtnn::detail
