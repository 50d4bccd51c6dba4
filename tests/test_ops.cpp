#include <doctest/doctest.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <limits>
#include <string>

#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>
#include <xtnn/xtnn.hpp>

#include "gemm_small.hpp"
#include "ops_sharded.hpp"
#include "test_helpers.hpp"

using namespace xtnn;
using testing::away_from;
using testing::uniform;

namespace {

using Inputs = std::vector<TensorD>;

void require_gradients(const char* what, const TensorFunction& f, const std::vector<xt::xarray<double>>& inputs,
                       GradientCheckOptions options = {}) {
    auto result = check_gradients(f, inputs, options);
    INFO(what << ": " << result.report);
    CHECK(result.passed);
    CHECK(result.entries_checked > 0);
}

// Smooth ops meet the stricter tolerance the error model allows (reliability.md, section 8).
const GradientCheckOptions strict{.eps = 1e-6, .atol = 1e-7, .rtol = 1e-5};

}  // namespace

TEST_CASE("gradient checks: broadcasting arithmetic") {
    for (const auto& shapes : std::vector<std::pair<Shape, Shape>>{
             {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3, 4}, {3, 1}}, {{1, 7}, {3, 1}}, {{2, 3, 4}, {3, 4}}}) {
        // Plain references, not structured bindings: clang 14 cannot capture those in INFO's lambda.
        const Shape& a_shape = shapes.first;
        const Shape& b_shape = shapes.second;
        const auto a = uniform(a_shape, 1);
        const auto b = away_from(uniform(b_shape, 2), 0.0, 0.1);
        INFO("shapes " << shape_to_string(a_shape) << " and " << shape_to_string(b_shape));
        require_gradients("add", [](const Inputs& in) { return ops::add(in[0], in[1]); }, {a, b}, strict);
        require_gradients("sub", [](const Inputs& in) { return ops::sub(in[0], in[1]); }, {a, b}, strict);
        require_gradients("mul", [](const Inputs& in) { return ops::mul(in[0], in[1]); }, {a, b}, strict);
        require_gradients("div", [](const Inputs& in) { return ops::div(in[0], in[1]); }, {a, b});
        CHECK(ops::add(TensorD::parameter(a), TensorD::parameter(b)).shape() ==
              ops::add(TensorD::parameter(b), TensorD::parameter(a)).shape());
    }
    require_gradients("scale", [](const Inputs& in) { return ops::scale(in[0], 2.5); }, {uniform({7}, 3)}, strict);
}

TEST_CASE("gradient checks: matmul with every transpose flag, batch 1 and 3") {
    for (std::size_t batch : {1u, 3u}) {
        const auto a = uniform({batch, 4}, 5);
        const auto b = uniform({4, 5}, 6);
        const xt::xarray<double> a_t = xt::transpose(a);
        const xt::xarray<double> b_t = xt::transpose(b);
        INFO("batch " << batch);
        require_gradients("A @ B", [](const Inputs& in) { return ops::matmul(in[0], in[1]); }, {a, b}, strict);
        require_gradients("A^T @ B", [](const Inputs& in) { return ops::matmul(in[0], in[1], true, false); },
                          {a_t, b}, strict);
        require_gradients("A @ B^T", [](const Inputs& in) { return ops::matmul(in[0], in[1], false, true); },
                          {a, b_t}, strict);
        require_gradients("A^T @ B^T", [](const Inputs& in) { return ops::matmul(in[0], in[1], true, true); },
                          {a_t, b_t}, strict);
        // All four spellings compute the same product.
        auto plain = ops::matmul(TensorD::constant(a), TensorD::constant(b)).value();
        auto flagged = ops::matmul(TensorD::constant(a_t), TensorD::constant(b_t), true, true).value();
        CHECK(xt::allclose(plain, flagged));
    }
}

namespace {

// y_k = x_k @ kernel by the sharded product on a team of xs.size() members, one thread each when
// xtnn has that many, else a solo team; with `backward`, also the gradients of
// sum_k sum(y_k * seeds_k), each member's pass on its thread.
struct ShardedProduct {
    std::vector<xt::xarray<double>> y, x_gradients;
    xt::xarray<double> kernel_gradient;
};

ShardedProduct run_sharded_product(const xt::xarray<double>& kernel, const std::vector<xt::xarray<double>>& xs,
                                   const std::vector<xt::xarray<double>>& seeds, bool backward) {
    std::vector<std::size_t> rows;
    for (const auto& x : xs) rows.push_back(x.shape()[0]);
    detail::Team team(rows);
    const TensorD w = backward ? TensorD::parameter(kernel) : TensorD::constant(kernel);
    ShardedProduct result{std::vector<xt::xarray<double>>(xs.size()), std::vector<xt::xarray<double>>(xs.size()), {}};
    detail::run_team(team, [&](std::size_t k) {
        const TensorD x = backward ? TensorD::parameter(xs[k]) : TensorD::constant(xs[k]);
        const TensorD y = detail::sharded_matmul(x, w, team, k);
        result.y[k] = y.value();
        if (!backward) return;
        ops::sum(ops::mul(y, TensorD::constant(seeds[k]))).backward();
        result.x_gradients[k] = x.grad();
    });
    if (backward) result.kernel_gradient = w.grad();
    return result;
}

xt::xarray<double> product(const xt::xarray<double>& a, const xt::xarray<double>& b, bool transpose_a = false,
                           bool transpose_b = false) {
    return ops::matmul(TensorD::constant(a), TensorD::constant(b), transpose_a, transpose_b).value();
}

bool nearly_equal(const xt::xarray<double>& a, const xt::xarray<double>& b) {
    return a.shape() == b.shape() && xt::allclose(a, b, 1e-12, 1e-14);
}

double weighted_total(const ShardedProduct& run, const std::vector<xt::xarray<double>>& seeds) {
    double total = 0;
    for (std::size_t k = 0; k < seeds.size(); ++k) total += xt::sum(run.y[k] * seeds[k])();
    return total;
}

// Whether every entry of `analytic` is within 1e-7 + 1e-5 |numeric| of the central difference of
// weighted_total when that entry of `values` moves by 1e-6 either way.
bool agrees_with_central_differences(const xt::xarray<double>& analytic, xt::xarray<double>& values,
                                     const std::function<double()>& total) {
    constexpr double eps = 1e-6;
    for (std::size_t i = 0; i < values.size(); ++i) {
        const double kept = values.flat(i);
        values.flat(i) = kept + eps;
        const double up = total();
        values.flat(i) = kept - eps;
        const double down = total();
        values.flat(i) = kept;
        const double numeric = (up - down) / (2 * eps);
        if (std::abs(analytic.flat(i) - numeric) > 1e-7 + 1e-5 * std::abs(numeric)) return false;
    }
    return true;
}

}  // namespace

TEST_CASE("sharded_matmul on a team: matmul's values and gradients, central differences, a solo team's bits") {
    struct Case {
        std::size_t in, out;
        std::vector<std::size_t> rows;
    };
    // Kernel rows that split unevenly, members of different row counts, and more members than
    // kernel rows (a member with none).
    for (const Case& c : std::vector<Case>{{37, 5, {4, 3}}, {37, 6, {3, 1, 4}}, {2, 4, {2, 3, 1}}}) {
        const testing::ThreadCount threads(int(c.rows.size()));
        INFO("kernel (" << c.in << ", " << c.out << "), " << c.rows.size() << " members");
        xt::xarray<double> kernel = uniform({c.in, c.out}, 11);
        std::vector<xt::xarray<double>> xs, seeds;
        for (std::size_t k = 0; k < c.rows.size(); ++k) {
            xs.push_back(uniform({c.rows[k], c.in}, 20 + k));
            seeds.push_back(uniform({c.rows[k], c.out}, 40 + k));
        }
        const ShardedProduct run = run_sharded_product(kernel, xs, seeds, true);
        xt::xarray<double> kernel_gradient = xt::zeros<double>({c.in, c.out});
        for (std::size_t k = 0; k < xs.size(); ++k) {
            CHECK(nearly_equal(run.y[k], product(xs[k], kernel)));
            CHECK(nearly_equal(run.x_gradients[k], product(seeds[k], kernel, false, true)));
            kernel_gradient += product(xs[k], seeds[k], true, false);
        }
        CHECK(nearly_equal(run.kernel_gradient, kernel_gradient));

        const auto total = [&] { return weighted_total(run_sharded_product(kernel, xs, seeds, false), seeds); };
        CHECK(agrees_with_central_differences(run.kernel_gradient, kernel, total));
        for (std::size_t k = 0; k < xs.size(); ++k) CHECK(agrees_with_central_differences(run.x_gradients[k], xs[k], total));
        // The comparison catches a gradient off by 0.1%.
        CHECK_FALSE(agrees_with_central_differences(run.kernel_gradient * 1.001, kernel, total));

        // Members that run one after the other on one thread compute the same bits.
        const testing::ThreadCount one_thread(1);
        const ShardedProduct solo = run_sharded_product(kernel, xs, seeds, true);
        CHECK(testing::bitwise_equal(solo.kernel_gradient, run.kernel_gradient));
        for (std::size_t k = 0; k < xs.size(); ++k) {
            CHECK(testing::bitwise_equal(solo.y[k], run.y[k]));
            CHECK(testing::bitwise_equal(solo.x_gradients[k], run.x_gradients[k]));
        }
    }
}

TEST_CASE("a team member that fails ends the others' waits; run_team reports its error") {
    const testing::ThreadCount threads(2);
    detail::Team team({2, 2});
    const TensorD kernel = TensorD::parameter(uniform({40, 3}, 1));
    const auto member = [&](std::size_t k) {
        if (k == 1) throw ValueError("member 1 failed before the product");
        detail::sharded_matmul(TensorD::constant(uniform({2, 40}, 2)), kernel, team, k);
    };
    CHECK_THROWS_WITH_AS(detail::run_team(team, member), "member 1 failed before the product", ValueError);
    CHECK_FALSE(team.solo());
}

TEST_CASE("team members that take different paths end with an error, not a wait for ever") {
    const testing::ThreadCount threads(2);
    const TensorD kernel = TensorD::parameter(uniform({40, 3}, 1));
    const TensorD other_kernel = TensorD::parameter(uniform({40, 3}, 2));
    const TensorD x = TensorD::constant(uniform({2, 40}, 3));
    {
        // Member 1 ends its task without the product that member 0 waits in.
        detail::Team team({2, 2});
        const auto only_first = [&](std::size_t k) {
            if (k == 0) detail::sharded_matmul(x, kernel, team, k);
        };
        const std::string message = testing::error_of<ValueError>([&] { detail::run_team(team, only_first); });
        CHECK(message.find("took different paths through the model") != std::string::npos);
        CHECK(message.find("ended its step while another waits") != std::string::npos);
    }
    {
        // The members meet in the products of two different kernels.
        detail::Team team({2, 2});
        const auto each_its_own = [&](std::size_t k) { detail::sharded_matmul(x, k == 0 ? kernel : other_kernel, team, k); };
        const std::string message = testing::error_of<ValueError>([&] { detail::run_team(team, each_its_own); });
        CHECK(message.find("they met at different layers") != std::string::npos);
    }
}

TEST_CASE("a one-row product (its own loop, skipping zero inputs) matches the same row in sgemm") {
    Generator g(14);
    xt::xarray<float> rows = xt::empty<float>({2, 300});
    for (float& v : rows) v = g.uniform() < 0.6 ? 0.0f : float(g.uniform()) - 0.5f;  // relu-like sparsity
    xt::xarray<float> kernel = xt::empty<float>({300, 40});
    for (float& v : kernel) v = float(g.uniform()) - 0.5f;
    const auto both = ops::matmul(Tensor::constant(rows), Tensor::constant(kernel)).value();
    for (std::size_t r = 0; r < 2; ++r) {
        xt::xarray<float> one = xt::view(rows, xt::range(r, r + 1), xt::all());
        const auto single = ops::matmul(Tensor::constant(one), Tensor::constant(kernel)).value();
        const xt::xarray<float> expected = xt::view(both, xt::range(r, r + 1), xt::all());
        CHECK(xt::allclose(single, expected, 1e-5, 1e-6));
    }
}

namespace {

// What xtnn's product kernel gives: each C[i][j] = fma(A[i][k-1], B[k-1][j], ... fma(A[i][0],
// B[0][j], 0)), plus what C held when a gradient adds to one: bits that do not depend on the SIMD
// width or the compiler.
xt::xarray<float> in_order(const xt::xarray<float>& a, const xt::xarray<float>& b) {
    const std::size_t m = a.shape()[0], k = a.shape()[1], n = b.shape()[1];
    xt::xarray<float> c = xt::zeros<float>({m, n});
    for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
            float sum = 0.0f;
            for (std::size_t l = 0; l < k; ++l) sum = std::fma(a(i, l), b(l, j), sum);
            c(i, j) = sum;
        }
    }
    return c;
}

xt::xarray<float> random_matrix(Generator& g, std::size_t rows, std::size_t columns) {
    xt::xarray<float> values = xt::empty<float>({rows, columns});
    for (float& v : values) v = float(g.uniform()) - 0.5f;
    return values;
}

}  // namespace

TEST_CASE("small float products (their own kernel): each value the in-order sum of fused multiply-adds") {
    Generator g(15);
    const auto random = [&](std::size_t rows, std::size_t columns) { return random_matrix(g, rows, columns); };
    // W1's first layer; rows and columns that leave a short last block and a padded last panel.
    for (const auto& shape : {std::array<std::size_t, 3>{32, 784, 32}, {13, 37, 40}, {7, 5, 16}, {20, 64, 56}}) {
        const std::size_t m = shape[0], k = shape[1], n = shape[2];
        INFO(m << " x " << k << " x " << n);
        const xt::xarray<float> a = random(m, k), b = random(k, n), dy = random(m, n), a2 = random(m, k);
        const xt::xarray<float> a_t = xt::transpose(a);
        CHECK(ops::matmul(Tensor::constant(a), Tensor::constant(b)).value() == in_order(a, b));
        CHECK(ops::matmul(Tensor::constant(a_t), Tensor::constant(b), true, false).value() == in_order(a, b));
        // The kernel's gradient A^T dY, written by the first product's backward and added to by the
        // second's (the weight used twice).
        Tensor weights = Tensor::parameter(b);
        const Tensor y = ops::add(ops::matmul(Tensor::constant(a), weights), ops::matmul(Tensor::constant(a2), weights));
        y.backward(dy);
        const xt::xarray<float> first = in_order(xt::transpose(a), dy), second = in_order(xt::transpose(a2), dy);
        CHECK(weights.grad() == first + second);
    }
}

TEST_CASE("the product kernel, with A and B each as they are or transposed, gives the in-order sums") {
    // ops::matmul hands it the products that detail::small_product_fits picks, which depend on the
    // CPU and on OpenBLAS's kernels: here it is called directly, on shapes that leave a short last
    // block of rows and a padded last panel of columns.
    Generator g(16);
    for (const auto& shape : {std::array<std::size_t, 3>{64, 37, 40}, {13, 300, 33}, {70, 784, 64}, {5, 7, 32}}) {
        const std::size_t m = shape[0], k = shape[1], n = shape[2];
        const xt::xarray<float> a = random_matrix(g, m, k), b = random_matrix(g, k, n), held = random_matrix(g, m, n);
        const xt::xarray<float> a_t = xt::transpose(a), b_t = xt::transpose(b);
        for (const bool transpose_a : {false, true}) {
            for (const bool transpose_b : {false, true}) {
                INFO(m << " x " << k << " x " << n << (transpose_a ? ", A^T" : "") << (transpose_b ? ", B^T" : ""));
                const float* a_data = transpose_a ? a_t.data() : a.data();
                const float* b_data = transpose_b ? b_t.data() : b.data();
                const std::size_t lda = transpose_a ? m : k, ldb = transpose_b ? k : n;
                xt::xarray<float> c = xt::empty<float>({m, n});
                detail::small_product(transpose_a, transpose_b, m, n, k, a_data, lda, b_data, ldb, false, c.data(), n);
                CHECK(c == in_order(a, b));
                c = held;
                detail::small_product(transpose_a, transpose_b, m, n, k, a_data, lda, b_data, ldb, true, c.data(), n);
                CHECK(c == xt::xarray<float>(held + in_order(a, b)));
            }
        }
    }
}

TEST_CASE("the product kernel over pieces of the inner dimension: one chain through them, in one call or one a piece") {
    // C = A^T B with A's and B's rows in pieces (the members' rows of a sharded kernel gradient):
    // each value the in-order chain through all pieces, from zero or from what C held.
    Generator g(17);
    for (const auto& shape : {std::array<std::size_t, 4>{392, 64, 64, 256}, {13, 5, 9, 40}, {30, 1, 17, 33}, {7, 3, 1, 32}}) {
        const std::size_t m = shape[0], k0 = shape[1], k1 = shape[2], n = shape[3];
        INFO(m << " x (" << k0 << " + " << k1 << ") x " << n);
        const xt::xarray<float> a0 = random_matrix(g, k0, m), a1 = random_matrix(g, k1, m), b0 = random_matrix(g, k0, n),
                                b1 = random_matrix(g, k1, n), held = random_matrix(g, m, n);
        const xt::xarray<float> a = xt::concatenate(xt::xtuple(a0, a1)), b = xt::concatenate(xt::xtuple(b0, b1));
        // A member without rows gives an empty piece.
        const detail::TransposedPiece<float> pieces[] = {
            {a0.data(), m, b0.data(), n, k0}, {a1.data(), m, b1.data(), n, 0}, {a1.data(), m, b1.data(), n, k1}};
        xt::xarray<float> c = xt::empty<float>({m, n});
        detail::small_product_transposed_pieces<float>(m, n, pieces, false, c.data(), n);
        const xt::xarray<float> chain = in_order(xt::transpose(a), b);
        CHECK(c == chain);
        xt::xarray<float> each = xt::empty<float>({m, n});
        detail::small_product_transposed_pieces<float>(m, n, std::span(pieces, 1), false, each.data(), n);
        for (std::size_t p = 1; p < 3; ++p) detail::small_product_transposed_pieces<float>(m, n, std::span(pieces + p, 1), true, each.data(), n);
        CHECK(each == c);
        // From what C held: the chain starts there, not added at the end.
        c = held;
        detail::small_product_transposed_pieces<float>(m, n, pieces, true, c.data(), n);
        xt::xarray<float> from_held = held;
        for (std::size_t i = 0; i < m; ++i) {
            for (std::size_t j = 0; j < n; ++j) {
                for (std::size_t l = 0; l < k0 + k1; ++l) from_held(i, j) = std::fma(a(l, i), b(l, j), from_held(i, j));
            }
        }
        CHECK(c == from_held);
    }
}

TEST_CASE("gradient checks: bias_add on rank 1, 2 and 3") {
    for (Shape shape : {Shape{7}, Shape{1, 7}, Shape{3, 7}, Shape{2, 3, 7}}) {
        INFO("shape " << shape_to_string(shape));
        require_gradients("bias_add", [](const Inputs& in) { return ops::bias_add(in[0], in[1]); },
                          {uniform(shape, 7), uniform({7}, 8)}, strict);
    }
}

TEST_CASE("gradient checks: bias_relu, and it equals relu(bias_add) exactly") {
    // Rows of 8, 16 and 32 take the loops made for their width; 7, 20 and 44 the general ones
    // (SIMD batches of the row, then the values left one by one).
    for (std::size_t width : {std::size_t(7), std::size_t(8), std::size_t(16), std::size_t(20), std::size_t(32), std::size_t(44)}) {
        for (Shape shape : {Shape{width}, Shape{3, width}, Shape{2, 3, width}}) {
            INFO("shape " << shape_to_string(shape));
            const xt::xarray<double> bias = uniform({width}, 12);
            // x + bias keeps away from relu's kink, where finite differences would straddle it.
            const xt::xarray<double> x = away_from(uniform(shape, 13, -2.0, 2.0)) - bias;
            require_gradients("bias_relu", [](const Inputs& in) { return ops::bias_relu(in[0], in[1]); }, {x, bias}, strict);
            // x feeding a second op: its gradient is added to, not written.
            require_gradients("bias_relu", [](const Inputs& in) {
                return ops::add(ops::sum(ops::bias_relu(in[0], in[1])), ops::sum(ops::mul(in[0], in[0])));
            }, {x, bias}, strict);
            require_gradients("bias_add", [](const Inputs& in) { return ops::bias_add(in[0], in[1]); }, {x, bias}, strict);

            const auto fused = ops::bias_relu(TensorD::constant(x), TensorD::constant(bias)).value();
            CHECK(fused == ops::relu(ops::bias_add(TensorD::constant(x), TensorD::constant(bias))).value());
            const auto fused_float = ops::bias_relu(Tensor::constant(xt::xarray<float>(x)), Tensor::constant(xt::xarray<float>(bias))).value();
            CHECK(fused_float == ops::relu(ops::bias_add(Tensor::constant(xt::xarray<float>(x)),
                                                         Tensor::constant(xt::xarray<float>(bias)))).value());

            // In float, the bits of the plain loops: dx = dy where the output is positive, db
            // its sum over the rows in row order.
            Tensor xf = Tensor::parameter(xt::xarray<float>(x)), bf = Tensor::parameter(xt::xarray<float>(bias));
            const xt::xarray<float> dy = xt::xarray<float>(uniform(shape, 14));
            const Tensor yf = ops::bias_relu(xf, bf);
            yf.backward(dy);
            xt::xarray<float> dx = xt::zeros<float>(shape), db = xt::zeros<float>({width});
            for (std::size_t i = 0; i < dy.size(); ++i) {
                const float g = yf.value().data()[i] > 0.0f ? dy.data()[i] : 0.0f;
                dx.data()[i] = g;
                db(i % width) += g;
            }
            CHECK(xf.grad() == dx);
            CHECK(bf.grad() == db);
        }
    }
    CHECK_THROWS_WITH_AS(ops::bias_relu(Tensor::constant(xt::zeros<float>({2, 3})), Tensor::constant(xt::zeros<float>({4}))),
                         doctest::Contains("bias_relu"), ShapeError);
}

TEST_CASE("add_relu: the bits of relu after add, gradients included; gradient checks") {
    for (Shape shape : {Shape{7}, Shape{3, 8}, Shape{2, 3, 16}}) {
        INFO("shape " << shape_to_string(shape));
        xt::xarray<float> a = uniform(shape, 91), b = uniform(shape, 92);
        a(0) = std::numeric_limits<float>::quiet_NaN();
        for (bool same_input : {false, true}) {
            auto run = [&](bool fused) {
                std::vector<Tensor> in{Tensor::parameter(a), Tensor::parameter(b)};
                const Tensor& second = same_input ? in[0] : in[1];
                Tensor y = fused ? ops::add_relu(in[0], second) : ops::relu(ops::add(in[0], second));
                const Tensor weights = Tensor::constant(xt::xarray<float>(uniform(shape, 93)));
                ops::add(ops::sum(ops::mul(y, weights)), ops::sum(ops::mul(in[1], in[1]))).backward();
                in.push_back(y);
                return in;
            };
            const auto fused = run(true), separate = run(false);
            CHECK(testing::bitwise_equal(fused[2].value(), separate[2].value()));
            CHECK(std::isnan(fused[2].value()(0)));
            for (std::size_t i = 0; i < 2; ++i) CHECK(testing::bitwise_equal(fused[i].grad(), separate[i].grad()));
        }
        // With one input a constant, the other alone takes the gradient.
        Tensor only = Tensor::parameter(b);
        ops::sum(ops::add_relu(Tensor::constant(a), only)).backward();
        const xt::xarray<float> sums = a + b;
        for (std::size_t i = 1; i < sums.size(); ++i) CHECK(only.grad().flat(i) == (sums.flat(i) <= 0.0f ? 0.0f : 1.0f));
        const auto x = away_from(uniform(shape, 94, -2.0, 2.0)), y = uniform(shape, 95, -0.01, 0.01);
        require_gradients("add_relu", [](const Inputs& in) { return ops::add_relu(in[0], in[1]); }, {x, y}, strict);
    }
    CHECK_THROWS_WITH_AS(ops::add_relu(Tensor::constant(xt::zeros<float>({2, 3})), Tensor::constant(xt::zeros<float>({3}))),
                         doctest::Contains("add_relu: the inputs must have one shape"), ShapeError);
}

TEST_CASE("bias gradient is the column sum, with the bias's shape") {
    Tensor x = Tensor::constant(xt::xarray<float>{{1, 2, 3}, {4, 5, 6}});
    Tensor b = Tensor::parameter(xt::xarray<float>{0, 0, 0});
    Tensor y = ops::bias_add(x, b);
    y.backward(xt::xarray<float>{{1, 2, 3}, {10, 20, 30}});
    REQUIRE(b.grad().shape() == b.shape());
    CHECK(b.grad() == xt::xarray<float>{11, 22, 33});
}

TEST_CASE("gradient checks: reductions") {
    const auto x = uniform({3, 7}, 9);
    require_gradients("sum", [](const Inputs& in) { return ops::sum(in[0]); }, {x}, strict);
    require_gradients("mean", [](const Inputs& in) { return ops::mean(in[0]); }, {x}, strict);
    for (std::size_t axis : {0u, 1u}) {
        for (bool keepdims : {false, true}) {
            INFO("axis " << axis << " keepdims " << keepdims);
            require_gradients("sum(axis)", [=](const Inputs& in) { return ops::sum(in[0], axis, keepdims); }, {x},
                              strict);
            require_gradients("mean(axis)", [=](const Inputs& in) { return ops::mean(in[0], axis, keepdims); }, {x},
                              strict);
        }
    }
    auto kept = ops::sum(TensorD::constant(x), 1, true);
    CHECK(kept.shape() == Shape{3, 1});
    CHECK(ops::mean(TensorD::constant(x), 0).shape() == Shape{7});
    CHECK_THROWS_AS(ops::sum(TensorD::constant(x), 2), ShapeError);
}

TEST_CASE("gradient checks: exp, log and the activations") {
    const auto x = uniform({3, 7}, 10, -2.0, 2.0);
    const auto kinked = away_from(x);
    require_gradients("exp", [](const Inputs& in) { return ops::exp(in[0]); }, {x}, strict);
    require_gradients("log", [](const Inputs& in) { return ops::log(in[0]); }, {uniform({3, 7}, 11, 0.1, 2.0)});
    require_gradients("sigmoid", [](const Inputs& in) { return ops::sigmoid(in[0]); }, {x}, strict);
    require_gradients("tanh", [](const Inputs& in) { return ops::tanh(in[0]); }, {x}, strict);
    require_gradients("relu", [](const Inputs& in) { return ops::relu(in[0]); }, {kinked});
    // x feeding a second op: relu's gradient is added to what is there, not written.
    require_gradients("relu", [](const Inputs& in) { return ops::add(ops::sum(ops::relu(in[0])), ops::sum(ops::mul(in[0], in[0]))); },
                      {kinked});
    require_gradients("elu", [](const Inputs& in) { return ops::elu(in[0], 1.0); }, {kinked});
    require_gradients("leaky_relu", [](const Inputs& in) { return ops::leaky_relu(in[0], 0.2); }, {kinked});
    require_gradients("softplus", [](const Inputs& in) { return ops::softplus(in[0]); }, {x}, strict);
    require_gradients("gelu", [](const Inputs& in) { return ops::gelu(in[0]); }, {x}, strict);
}

TEST_CASE("an element-wise op gives each element the same value and gradient wherever it sits") {
    // 37 values: whole SIMD batches and a partial one, on every instruction set. Each value computed
    // alone (a batch of 1, all padding) must equal the same value inside the long array.
    const xt::xarray<float> values = xt::cast<float>(uniform({37}, 12, -6.0, 6.0));
    const std::map<std::string, std::function<Tensor(const Tensor&)>> element_wise = {
        {"exp", [](const Tensor& t) { return ops::exp(t); }},
        {"log", [](const Tensor& t) { return ops::log(ops::exp(t)); }},
        {"sigmoid", [](const Tensor& t) { return ops::sigmoid(t); }},
        {"tanh", [](const Tensor& t) { return ops::tanh(t); }},
        {"elu", [](const Tensor& t) { return ops::elu(t, 0.5f); }},
        {"softplus", [](const Tensor& t) { return ops::softplus(t); }},
        {"gelu", [](const Tensor& t) { return ops::gelu(t); }},
    };
    for (const auto& entry : element_wise) {
        INFO(entry.first);
        const auto& op = entry.second;
        Tensor all = Tensor::parameter(values);
        Tensor all_out = op(all);
        all_out.backward(xt::ones<float>({37}));
        for (std::size_t i = 0; i < values.size(); ++i) {
            Tensor one = Tensor::parameter(xt::xarray<float>({values(i)}));
            Tensor one_out = op(one);
            one_out.backward(xt::ones<float>({1}));
            INFO("element " << i << " of 37, x = " << values(i));
            CHECK(std::bit_cast<std::uint32_t>(one_out.value()(0)) == std::bit_cast<std::uint32_t>(all_out.value()(i)));
            CHECK(std::bit_cast<std::uint32_t>(one.grad()(0)) == std::bit_cast<std::uint32_t>(all.grad()(i)));
        }
    }
}

TEST_CASE("broadcast_to: NumPy's repeats, gradients summed back, clear errors") {
    require_gradients("broadcast_to (2, 1, 3) -> (2, 4, 3)",
                      [](const Inputs& in) { return ops::broadcast_to(in[0], {2, 4, 3}); }, {uniform({2, 1, 3}, 14)}, strict);
    require_gradients("broadcast_to (3,) -> (2, 5, 3)", [](const Inputs& in) { return ops::broadcast_to(in[0], {2, 5, 3}); },
                      {uniform({3}, 15)}, strict);
    xt::xarray<double> column{1.0, 2.0};
    column.reshape({2, 1});
    const auto repeated = ops::broadcast_to(TensorD::constant(column), {2, 3}).value();
    CHECK(repeated == xt::xarray<double>{{1.0, 1.0, 1.0}, {2.0, 2.0, 2.0}});
    CHECK_THROWS_WITH_AS(ops::broadcast_to(TensorD::constant(column), {3, 3}),
                         doctest::Contains("broadcast_to: shapes (2, 1) and (3, 3) cannot be broadcast together (axis 0: 2 vs 3)"), ShapeError);
    CHECK_THROWS_WITH_AS(ops::broadcast_to(TensorD::constant(column), {2}), doctest::Contains("cannot broadcast shape (2, 1) to (2,)"),
                         ShapeError);
    CHECK_THROWS_WITH_AS(ops::broadcast_to(TensorD::constant(column), {1u << 20, 2, 1u << 20}),
                         doctest::Contains("elements, the most xtnn allocates"), ValueError);
}

TEST_CASE("gradient checks: reshape, flatten and transpose") {
    const auto x = uniform({2, 3, 4}, 12);
    require_gradients("reshape", [](const Inputs& in) { return ops::reshape(in[0], {4, -1}); }, {x}, strict);
    require_gradients("flatten", [](const Inputs& in) { return ops::flatten(in[0]); }, {x}, strict);
    require_gradients("transpose 2-D", [](const Inputs& in) { return ops::transpose(in[0]); },
                      {uniform({3, 7}, 13)}, strict);
    require_gradients("transpose (1, 2, 0)", [](const Inputs& in) { return ops::transpose(in[0], {1, 2, 0}); },
                      {x}, strict);
    CHECK(ops::flatten(TensorD::constant(x)).shape() == Shape{2, 12});
    CHECK(ops::reshape(TensorD::constant(x), {-1}).shape() == Shape{24});
    CHECK_THROWS_AS(ops::reshape(TensorD::constant(x), {5, -1}), ShapeError);
    CHECK_THROWS_AS(ops::reshape(TensorD::constant(x), {-1, -1}), ShapeError);
    CHECK_THROWS_AS(ops::transpose(TensorD::constant(x), {0, 0, 1}), ShapeError);
}

TEST_CASE("gradient checks: softmax and log_softmax, batch 1 and 3, rank 3") {
    for (Shape shape : {Shape{1, 7}, Shape{3, 7}, Shape{2, 3, 5}}) {
        INFO("shape " << shape_to_string(shape));
        const auto x = uniform(shape, 14, -3.0, 3.0);
        require_gradients("softmax", [](const Inputs& in) { return ops::softmax(in[0]); }, {x}, strict);
        require_gradients("log_softmax", [](const Inputs& in) { return ops::log_softmax(in[0]); }, {x}, strict);
    }
}

TEST_CASE("gradient checks: losses") {
    const auto logits = uniform({3, 7}, 15, -3.0, 3.0);
    xt::xarray<double> one_hot = xt::zeros<double>({3, 7});
    one_hot(0, 2) = one_hot(1, 6) = one_hot(2, 0) = 1.0;
    const auto soft = testing::distributions(3, 7, 16);
    const std::vector<std::int64_t> labels{2, 6, 0};

    require_gradients("softmax_cross_entropy one-hot",
                      [&](const Inputs& in) { return ops::softmax_cross_entropy(in[0], one_hot); }, {logits}, strict);
    require_gradients("softmax_cross_entropy soft",
                      [&](const Inputs& in) { return ops::softmax_cross_entropy(in[0], soft); }, {logits}, strict);
    require_gradients("sparse_softmax_cross_entropy",
                      [&](const Inputs& in) { return ops::sparse_softmax_cross_entropy<double>(in[0], labels); },
                      {logits}, strict);
    require_gradients("sparse_softmax_cross_entropy batch 1",
                      [&](const Inputs& in) {
                          return ops::sparse_softmax_cross_entropy<double>(in[0], std::span(labels).first(1));
                      },
                      {uniform({1, 7}, 17)}, strict);

    const auto probabilities = testing::distributions(3, 7, 18);
    require_gradients("categorical_crossentropy",
                      [&](const Inputs& in) { return ops::categorical_crossentropy(in[0], soft); }, {probabilities});
    const auto p = uniform({3, 7}, 19, 0.05, 0.95);
    const auto binary_target = xt::xarray<double>(xt::cast<double>(uniform({3, 7}, 20, 0.0, 1.0) > 0.5));
    require_gradients("binary_crossentropy",
                      [&](const Inputs& in) { return ops::binary_crossentropy(in[0], binary_target); }, {p});
    require_gradients("sigmoid_binary_crossentropy",
                      [&](const Inputs& in) { return ops::sigmoid_binary_crossentropy(in[0], binary_target); },
                      {logits}, strict);
    require_gradients("mse", [&](const Inputs& in) { return ops::mse(in[0], soft); }, {logits}, strict);
}

TEST_CASE("gradient check: dropout with a fixed mask") {
    const auto x = uniform({3, 7}, 21);
    require_gradients("dropout", [](const Inputs& in) {
        Generator generator(5);
        return ops::dropout(in[0], 0.3, true, generator);
    }, {x}, strict);
}

TEST_CASE("dropout is inverted, seeded, and the identity at inference") {
    Tensor x = Tensor::constant(xt::ones<float>({200, 50}));
    Generator g1(1), g2(1);
    auto a = ops::dropout(x, 0.25, true, g1).value();
    auto b = ops::dropout(x, 0.25, true, g2).value();
    CHECK(a == b);
    std::size_t zeros = 0;
    for (float v : a) {
        CHECK((v == 0.0f || v == doctest::Approx(1.0 / 0.75)));
        zeros += v == 0.0f;
    }
    CHECK(zeros == doctest::Approx(0.25 * 10000).epsilon(0.08));
    CHECK(ops::dropout(x, 0.25, false, g1).value() == x.value());
    CHECK_THROWS_AS(ops::dropout(x, 1.0, true, g1), ValueError);
    CHECK_THROWS_AS(ops::dropout(x, -0.1, true, g1), ValueError);
}

TEST_CASE("dropout draws a batch's mask however its rows are split") {
    const xt::xarray<float> x = xt::cast<float>(uniform({10, 7}, 8)) + 2.0f;
    Generator whole(9);
    const xt::xarray<float> full = ops::dropout(Tensor::constant(x), 0.4, true, whole).value();
    for (std::size_t split : {1, 3, 9}) {
        INFO("rows [0, " << split << ") and [" << split << ", 10)");
        Generator top_generator(9), bottom_generator(9);
        const xt::xarray<float> top = xt::view(x, xt::range(0, split)), bottom = xt::view(x, xt::range(split, 10));
        const auto top_kept = ops::dropout(Tensor::constant(top), 0.4, true, top_generator, 0).value();
        const auto bottom_kept = ops::dropout(Tensor::constant(bottom), 0.4, true, bottom_generator, split).value();
        CHECK(testing::bitwise_equal(xt::xarray<float>(xt::concatenate(xt::xtuple(top_kept, bottom_kept))), full));
        // Each draws one key, as the whole batch does.
        Generator after(9);
        after.next_u64();
        CHECK(top_generator.next_u64() == after.next_u64());
    }
    // Another key drops other elements.
    Generator other(10);
    CHECK_FALSE(testing::bitwise_equal(ops::dropout(Tensor::constant(x), 0.4, true, other).value(), full));
}

TEST_CASE("the book's facts: sigmoid, relu and softmax") {
    Tensor zero = Tensor::parameter(xt::xarray<float>{0.0f});
    CHECK(ops::sigmoid(zero).item() == 0.5f);
    xt::xarray<float> grid = xt::linspace<float>(-15.0f, 15.0f, 301);
    for (float s : ops::sigmoid(Tensor::constant(grid)).value()) {
        CHECK(s > 0.0f);
        CHECK(s < 1.0f);
    }

    auto relu_values = ops::relu(Tensor::constant(xt::xarray<float>{-3.0f, -0.5f, 0.0f, 0.5f, 3.0f})).value();
    CHECK(relu_values == xt::xarray<float>{0.0f, 0.0f, 0.0f, 0.5f, 3.0f});
    ops::sum(ops::relu(zero)).backward();
    CHECK(zero.grad()(0) == 0.0f);

    auto p = ops::softmax(Tensor::constant(xt::xarray<float>{1.0f, 2.0f, 5.0f})).value();
    CHECK(xt::sum(p)() == doctest::Approx(1.0));
    CHECK(p(2) == doctest::Approx(0.9362).epsilon(1e-4));
    CHECK(xt::argmax(p)() == 2);
}

TEST_CASE("softmax cross-entropy stays finite for logits of +-1e4") {
    Tensor logits = Tensor::parameter(xt::xarray<float>{{1e4f, 0.0f, -1e4f}, {-1e4f, -1e4f, 0.0f}});
    xt::xarray<float> target{{0.0f, 0.0f, 1.0f}, {1.0f, 0.0f, 0.0f}};
    Tensor loss = ops::softmax_cross_entropy(logits, target);
    loss.backward();
    CHECK(std::isfinite(loss.item()));
    CHECK(loss.item() == doctest::Approx(15000.0));
    for (float g : logits.grad()) CHECK(std::isfinite(g));

    Tensor equal = Tensor::parameter(xt::xarray<float>{{-1e4f, -1e4f}});
    Tensor sparse = ops::sparse_softmax_cross_entropy<float>(equal, std::vector<std::int64_t>{1});
    CHECK(sparse.item() == doctest::Approx(std::log(2.0)));

    Tensor probabilities = Tensor::parameter(xt::xarray<float>{{0.0f, 1.0f}});
    CHECK(std::isfinite(ops::categorical_crossentropy(probabilities, xt::xarray<float>{{1.0f, 0.0f}}).item()));
}

TEST_CASE("errors name the op and the shapes") {
    Tensor a = Tensor::constant(xt::zeros<float>({3, 4}));
    Tensor b = Tensor::constant(xt::zeros<float>({5, 6}));
    auto message_of = [](auto&& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    auto matmul_error = message_of([&] { ops::matmul(a, b); });
    CHECK(matmul_error.find("matmul") != std::string::npos);
    CHECK(matmul_error.find("(3, 4)") != std::string::npos);
    CHECK(matmul_error.find("(5, 6)") != std::string::npos);
    auto add_error = message_of([&] { ops::add(a, b); });
    CHECK(add_error.find("add") != std::string::npos);
    CHECK(add_error.find("(3, 4)") != std::string::npos);
    auto loss_error = message_of([&] { ops::softmax_cross_entropy(a, xt::xarray<float>(xt::zeros<float>({3, 5}))); });
    CHECK(loss_error.find("softmax_cross_entropy") != std::string::npos);
    CHECK(loss_error.find("(3, 5)") != std::string::npos);
    auto label_error = message_of([&] { ops::sparse_softmax_cross_entropy<float>(a, std::vector<std::int64_t>{0, 4, 1}); });
    CHECK(label_error.find("label 4 at row 1") != std::string::npos);
    CHECK_THROWS_AS(ops::bias_add(a, Tensor::constant(xt::zeros<float>({3}))), ShapeError);
}

TEST_CASE("a 784-32-10 MLP passes a random-direction gradient check in double") {
    Generator generator(1234);
    auto mlp_loss = [](const Inputs& in) {
        const std::vector<std::int64_t> labels{3, 7, 1, 0};
        auto hidden = ops::relu(ops::bias_add(ops::matmul(in[0], in[1]), in[2]));
        return ops::sparse_softmax_cross_entropy<double>(ops::bias_add(ops::matmul(hidden, in[3]), in[4]), labels);
    };
    for (std::uint64_t seed : {1u, 2u, 3u}) {
        std::vector<xt::xarray<double>> inputs{uniform({4, 784}, seed, 0.0, 1.0), uniform({784, 32}, seed + 10, -0.08, 0.08),
                                               uniform({32}, seed + 20, -0.1, 0.1), uniform({32, 10}, seed + 30, -0.4, 0.4),
                                               uniform({10}, seed + 40, -0.1, 0.1)};
        double error = directional_derivative_error(mlp_loss, inputs, generator);
        INFO("seed " << seed << " relative error " << error);
        CHECK(error <= 1e-6);
    }
}

TEST_CASE("float32 gradients of an MLP agree with float64 ones") {
    std::vector<xt::xarray<double>> inputs{uniform({5, 20}, 1), uniform({20, 8}, 2, -0.3, 0.3), uniform({8}, 3),
                                           uniform({8, 4}, 4, -0.5, 0.5)};
    const std::vector<std::int64_t> labels{0, 3, 2, 1, 3};
    auto run = [&]<class T>(T) {
        std::vector<BasicTensor<T>> p;
        for (const auto& v : inputs) p.push_back(BasicTensor<T>::parameter(xt::xarray<T>(xt::cast<T>(v))));
        auto hidden = ops::tanh(ops::bias_add(ops::matmul(p[0], p[1]), p[2]));
        ops::sparse_softmax_cross_entropy<T>(ops::matmul(hidden, p[3]), labels).backward();
        std::vector<xt::xarray<double>> grads;
        for (auto& t : p) grads.push_back(xt::cast<double>(t.grad()));
        return grads;
    };
    auto single = run(0.0f);
    auto dual = run(0.0);
    for (std::size_t i = 0; i < single.size(); ++i) {
        double diff = xt::sum(xt::square(single[i] - dual[i]))();
        double norm = xt::sum(xt::square(dual[i]))();
        CHECK(std::sqrt(diff / norm) <= 1e-5);
    }
}

namespace {

// Direct convolution by its definition, to check conv2d's forward values (not only its gradient).
xt::xarray<double> naive_conv2d(const xt::xarray<double>& x, const xt::xarray<double>& k, ops::Window2D strides,
                                ops::Padding padding) {
    const Shape out_shape = ops::conv_output_shape({x.shape()[1], x.shape()[2], x.shape()[3]}, k.shape()[3], {k.shape()[0], k.shape()[1]},
                                                   strides, padding, "test");
    const auto pad = [&](std::size_t in, std::size_t out, std::size_t window, std::size_t stride) {
        const std::ptrdiff_t total = std::max<std::ptrdiff_t>(std::ptrdiff_t((out - 1) * stride + window) - std::ptrdiff_t(in), 0);
        return padding == ops::Padding::same ? total / 2 : 0;
    };
    const auto top = pad(x.shape()[1], out_shape[0], k.shape()[0], strides.height);
    const auto left = pad(x.shape()[2], out_shape[1], k.shape()[1], strides.width);
    xt::xarray<double> y = xt::zeros<double>({x.shape()[0], out_shape[0], out_shape[1], out_shape[2]});
    for (std::size_t n = 0; n < y.shape()[0]; ++n)
        for (std::size_t oy = 0; oy < y.shape()[1]; ++oy)
            for (std::size_t ox = 0; ox < y.shape()[2]; ++ox)
                for (std::size_t f = 0; f < y.shape()[3]; ++f)
                    for (std::size_t ky = 0; ky < k.shape()[0]; ++ky)
                        for (std::size_t kx = 0; kx < k.shape()[1]; ++kx) {
                            const auto iy = std::ptrdiff_t(oy * strides.height + ky) - top;
                            const auto ix = std::ptrdiff_t(ox * strides.width + kx) - left;
                            if (iy < 0 || ix < 0 || iy >= std::ptrdiff_t(x.shape()[1]) || ix >= std::ptrdiff_t(x.shape()[2])) continue;
                            for (std::size_t c = 0; c < x.shape()[3]; ++c) y(n, oy, ox, f) += x(n, iy, ix, c) * k(ky, kx, c, f);
                        }
    return y;
}

// The gradients of sum(conv2d(x, k) * dy) (stride 1) by their definition: dx[n][iy][ix][c] and
// dk[ky][kx][c][f] sum x, k and dy over the window positions that pair them.
std::pair<xt::xarray<double>, xt::xarray<double>> naive_conv2d_gradients(const xt::xarray<double>& x, const xt::xarray<double>& k,
                                                                          const xt::xarray<double>& dy, ops::Padding padding) {
    const auto top = padding == ops::Padding::same ? std::ptrdiff_t(k.shape()[0] - 1) / 2 : 0;
    const auto left = padding == ops::Padding::same ? std::ptrdiff_t(k.shape()[1] - 1) / 2 : 0;
    xt::xarray<double> dx = xt::zeros<double>(x.shape()), dk = xt::zeros<double>(k.shape());
    for (std::size_t n = 0; n < dy.shape()[0]; ++n)
        for (std::size_t oy = 0; oy < dy.shape()[1]; ++oy)
            for (std::size_t ox = 0; ox < dy.shape()[2]; ++ox)
                for (std::size_t ky = 0; ky < k.shape()[0]; ++ky)
                    for (std::size_t kx = 0; kx < k.shape()[1]; ++kx) {
                        const auto iy = std::ptrdiff_t(oy + ky) - top, ix = std::ptrdiff_t(ox + kx) - left;
                        if (iy < 0 || ix < 0 || iy >= std::ptrdiff_t(x.shape()[1]) || ix >= std::ptrdiff_t(x.shape()[2])) continue;
                        for (std::size_t c = 0; c < x.shape()[3]; ++c)
                            for (std::size_t f = 0; f < k.shape()[3]; ++f) {
                                dx(n, iy, ix, c) += dy(n, oy, ox, f) * k(ky, kx, c, f);
                                dk(ky, kx, c, f) += dy(n, oy, ox, f) * x(n, iy, ix, c);
                            }
                    }
    return {dx, dk};
}

// Distinct values far apart (0.1 steps, shuffled), so finite differences never change a maximum.
xt::xarray<double> distinct_values(const std::vector<std::size_t>& shape, std::uint64_t seed) {
    xt::xarray<double> values = xt::empty<double>(shape);
    Generator generator(seed);
    const auto order = generator.permutation(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) values.data()[i] = 0.1 * double(order[i]) - 1.0;
    return values;
}

}  // namespace

TEST_CASE("conv2d: values match the definition; gradients for strides 1 and 2, both paddings, odd shapes") {
    // One channel takes the transposed-patch path of a first layer; three the general one.
    const std::vector<ops::Window2D> all_strides{{1, 1}, {2, 2}, {2, 1}, {1, 3}};
    for (std::size_t channels : {std::size_t(1), std::size_t(3)}) {
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            for (ops::Window2D strides : all_strides) {
                INFO("channels " << channels << ", padding " << ops::padding_name(padding) << ", strides "
                                 << strides.height << "x" << strides.width);
                const auto x = uniform({2, 5, 7, channels}, 11);
                const auto k = uniform({2, 3, channels, 4}, 12);
                const auto y = ops::conv2d(TensorD::constant(x), TensorD::constant(k), strides, padding).value();
                CHECK(xt::allclose(y, naive_conv2d(x, k, strides, padding), 1e-12, 1e-12));
                require_gradients("conv2d", [=](const Inputs& in) { return ops::conv2d(in[0], in[1], strides, padding); },
                                  {x, k}, strict);
            }
        }
    }
    CHECK(ops::conv_output_shape({5, 7, 3}, 4, {3, 3}, {2, 2}, ops::Padding::same, "t") == Shape{3, 4, 4});
    CHECK(ops::conv_output_shape({5, 7, 3}, 4, {3, 3}, {2, 2}, ops::Padding::valid, "t") == Shape{2, 3, 4});
    const auto x = uniform({2, 5, 7, 3}, 11);
    CHECK_THROWS_WITH_AS(ops::conv2d(TensorD::constant(x), TensorD::constant(uniform({3, 3, 2, 4}, 1))),
                         doctest::Contains("kernel must have shape (height, width, 3, filters)"), ShapeError);
    CHECK_THROWS_WITH_AS(ops::conv2d(TensorD::constant(uniform({1, 2, 2, 3}, 1)), TensorD::constant(uniform({2, 3, 3, 4}, 12))),
                         doctest::Contains("smaller than the window"), ShapeError);
    CHECK_THROWS_AS(ops::padding_from_name("full"), ValueError);
}

TEST_CASE("conv2d with few filters or channels (the direct kernel): values and gradients as by the definition") {
    // 4 to 32 channels and filters fill one to four SIMD registers of float or double on AVX2
    // and AVX-512; widths 23 and 30 leave every length of a row's last pixel block.
    for (std::size_t filters : {std::size_t(4), std::size_t(8), std::size_t(12), std::size_t(16), std::size_t(24), std::size_t(32)}) {
        for (std::size_t channels : {std::size_t(1), std::size_t(8), std::size_t(16)}) {
            for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
                for (std::size_t width : {std::size_t(23), std::size_t(30)}) {
                    INFO("filters " << filters << ", channels " << channels << ", padding " << ops::padding_name(padding)
                                    << ", width " << width);
                    const auto x = uniform({2, 6, width, channels}, 41);
                    const auto k = uniform({3, 2, channels, filters}, 42);
                    const auto expected = naive_conv2d(x, k, {1, 1}, padding);
                    CHECK(xt::allclose(ops::conv2d(TensorD::constant(x), TensorD::constant(k), {1, 1}, padding).value(),
                                       expected, 1e-12, 1e-12));
                    const xt::xarray<float> y = ops::conv2d(Tensor::constant(xt::xarray<float>(x)),
                                                            Tensor::constant(xt::xarray<float>(k)), {1, 1}, padding).value();
                    CHECK(xt::allclose(xt::xarray<double>(y), expected, 1e-5, 1e-5));
                }
            }
        }
    }
    // 16 float filters (two AVX2 registers) take blocks of 6 pixels, so rows of 14 outputs would
    // end in a block of 2: the blocks run on from one row into the next instead. Stretches of 6
    // outputs convolved on their own (one block, ending with its row) must give the same bits.
    {
        const xt::xarray<float> x = uniform({2, 5, 16, 16}, 45);
        const Tensor k = Tensor::constant(xt::xarray<float>(uniform({3, 3, 16, 16}, 46)));
        const xt::xarray<float> y = ops::conv2d(Tensor::constant(x), k, {1, 1}, ops::Padding::valid).value();
        for (std::size_t row = 0; row < 3; ++row) {
            for (std::size_t column : {std::size_t(0), std::size_t(6), std::size_t(8)}) {
                INFO("output row " << row << ", columns from " << column);
                const xt::xarray<float> patch = xt::view(x, xt::all(), xt::range(row, row + 3), xt::range(column, column + 8));
                const xt::xarray<float> y_patch = ops::conv2d(Tensor::constant(patch), k, {1, 1}, ops::Padding::valid).value();
                CHECK(testing::bitwise_equal(
                    y_patch, xt::xarray<float>(xt::view(y, xt::all(), xt::range(row, row + 1), xt::range(column, column + 6)))));
            }
        }
    }
    for (std::size_t channels : {std::size_t(1), std::size_t(8), std::size_t(12)}) {
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            INFO("channels " << channels << ", padding " << ops::padding_name(padding));
            // The input also feeds a second op, as a residual block's does: the direct input
            // gradient must add to what is there. A 3x2 kernel leaves a partial block of the
            // kernel gradient.
            require_gradients("conv2d", [=](const Inputs& in) {
                return ops::add(ops::sum(ops::conv2d(in[0], in[1], {1, 1}, padding)), ops::sum(ops::mul(in[0], in[0])));
            }, {uniform({2, 4, 5, channels}, 43), uniform({3, 2, channels, channels == 12 ? std::size_t(12) : std::size_t(8)}, 44)}, strict);
        }
    }
}

TEST_CASE("conv2d 3x3 with many filters (Winograd F(2x2, 3x3)): values and gradients as by the definition") {
    // 64 filters take Winograd in float and double with AVX2 and AVX-512 (too many for the direct
    // kernel), forward and for the kernel gradient; so does the input gradient of 32 channels.
    // Heights 5 and 7 make odd output sizes (a last tile half outside), widths 6 and 9 even and
    // odd ones.
    for (std::size_t channels : {std::size_t(16), std::size_t(32)}) {
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            for (const auto& image : {std::pair<std::size_t, std::size_t>{7, 6}, {6, 9}, {5, 8}}) {
                // Not a structured binding: INFO captures it in a lambda, which clang 14 cannot.
                const std::size_t height = image.first, width = image.second;
                INFO("channels " << channels << ", padding " << ops::padding_name(padding) << ", image " << height << "x" << width);
                const auto x = uniform({2, height, width, channels}, 61);
                const auto k = uniform({3, 3, channels, 64}, 62);
                const auto expected = naive_conv2d(x, k, {1, 1}, padding);
                const auto dy = uniform({2, expected.shape()[1], expected.shape()[2], 64}, 65);
                const auto expected_gradients = naive_conv2d_gradients(x, k, dy, padding);
                const xt::xarray<double>& expected_dx = expected_gradients.first;
                const xt::xarray<double>& expected_dk = expected_gradients.second;
                TensorD x_double = TensorD::parameter(x), k_double = TensorD::parameter(k);
                const TensorD y_double = ops::conv2d(x_double, k_double, {1, 1}, padding);
                y_double.backward(dy);
                CHECK(xt::allclose(y_double.value(), expected, 1e-12, 1e-12));
                CHECK(xt::allclose(x_double.grad(), expected_dx, 1e-12, 1e-12));
                CHECK(xt::allclose(k_double.grad(), expected_dk, 1e-12, 1e-12));
                Tensor x_float = Tensor::parameter(xt::xarray<float>(x)), k_float = Tensor::parameter(xt::xarray<float>(k));
                const Tensor y_float = ops::conv2d(x_float, k_float, {1, 1}, padding);
                y_float.backward(xt::xarray<float>(dy));
                CHECK(xt::allclose(xt::xarray<double>(y_float.value()), expected, 1e-5, 1e-4));
                CHECK(xt::allclose(xt::xarray<double>(x_float.grad()), expected_dx, 1e-5, 1e-4));
                CHECK(xt::allclose(xt::xarray<double>(k_float.grad()), expected_dk, 1e-5, 1e-4));
            }
        }
    }
    for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
        INFO("padding " << ops::padding_name(padding));
        // A second consumer of the input: the input gradient must add to what is there. 32 -> 16
        // in double: Winograd's input gradient with AVX2 and AVX-512, its forward pass and kernel
        // gradient with AVX2.
        require_gradients("conv2d", [=](const Inputs& in) {
            return ops::add(ops::sum(ops::conv2d(in[0], in[1], {1, 1}, padding)), ops::sum(ops::mul(in[0], in[0])));
        }, {uniform({1, 5, 6, 32}, 63), uniform({3, 3, 32, 16}, 64)}, strict);
    }
}

TEST_CASE("max and average pooling: values, gradients, ties and padding") {
    const auto x = distinct_values({2, 5, 6, 3}, 21);
    for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
        for (ops::Window2D strides : {ops::Window2D{2, 2}, ops::Window2D{1, 1}, ops::Window2D{2, 3}}) {
            INFO("padding " << ops::padding_name(padding) << ", strides " << strides.height << "x" << strides.width);
            require_gradients("max_pool2d", [=](const Inputs& in) { return ops::max_pool2d(in[0], {2, 3}, strides, padding); },
                              {x}, strict);
            require_gradients("avg_pool2d", [=](const Inputs& in) { return ops::avg_pool2d(in[0], {2, 3}, strides, padding); },
                              {x}, strict);
        }
    }
    // Windows that tile the image exactly take the backward pass that writes each window whole;
    // with the input feeding a second op too, its gradient is added to.
    const auto tiled = distinct_values({2, 4, 6, 3}, 22);
    require_gradients("max_pool2d", [](const Inputs& in) { return ops::max_pool2d(in[0], {2, 3}, {2, 3}); }, {tiled}, strict);
    require_gradients("max_pool2d",
                      [](const Inputs& in) { return ops::add(ops::sum(ops::max_pool2d(in[0], {2, 3}, {2, 3})), ops::sum(ops::mul(in[0], in[0]))); },
                      {tiled}, strict);
    const auto image_of = [](xt::xarray<double> values, std::size_t height, std::size_t width) {
        values.reshape({std::size_t(1), height, width, std::size_t(1)});
        return values;
    };
    // 1 x 3 x 3 x 1 image, 2x2 windows, "same" with stride 2: the last row and column are alone.
    const xt::xarray<double> image = image_of({1, 5, 2, 3, 4, 9, 7, 8, 6}, 3, 3);
    const auto pooled = ops::max_pool2d(TensorD::constant(image), {2, 2}, {2, 2}, ops::Padding::same).value();
    CHECK(pooled == image_of({5, 9, 8, 6}, 2, 2));
    const auto averaged = ops::avg_pool2d(TensorD::constant(image), {2, 2}, {2, 2}, ops::Padding::same).value();
    CHECK(averaged == image_of({13.0 / 4, 5.5, 7.5, 6}, 2, 2));

    TensorD ties = TensorD::parameter(image_of({2, 2, 1, 2}, 2, 2));
    ops::sum(ops::max_pool2d(ties, {2, 2}, {2, 2})).backward();
    CHECK(ties.grad() == image_of({1, 0, 0, 0}, 2, 2));  // the first of the equal maxima
}

TEST_CASE("max_pool2d in float over 8 or 16 channels (the SIMD loops) picks what the double loops pick") {
    for (std::size_t channels : {std::size_t(8), std::size_t(16)}) {
        INFO("channels " << channels);
        // Integers in a small range: many ties, resolved to the first tap in both; and NaNs.
        xt::xarray<double> x = xt::floor(uniform({2, 6, 7, channels}, 51, 0.0, 4.0));
        for (std::size_t i = 0; i < x.size(); i += 37) x.data()[i] = std::numeric_limits<double>::quiet_NaN();
        const auto seed = uniform({2, 3, 3, channels}, 52);
        TensorD reference = TensorD::parameter(x);
        const auto expected = ops::max_pool2d(reference, {2, 2}, {2, 2});
        expected.backward(seed);
        Tensor simd = Tensor::parameter(xt::xarray<float>(x));
        const auto pooled = ops::max_pool2d(simd, {2, 2}, {2, 2});
        pooled.backward(xt::xarray<float>(seed));
        std::size_t different_values = 0, different_gradients = 0;
        for (std::size_t i = 0; i < expected.size(); ++i) {
            const double got = pooled.value().data()[i], want = expected.value().data()[i];
            different_values += !(got == want || (std::isnan(got) && std::isnan(want)));
        }
        for (std::size_t i = 0; i < x.size(); ++i) different_gradients += simd.grad().data()[i] != float(reference.grad().data()[i]);
        CHECK(different_values == 0);
        CHECK(different_gradients == 0);
    }
}

TEST_CASE("conv2d over a batch larger than one patch chunk equals sample-by-sample results") {
    // 40x40x8 images with a 3x3 kernel make 0.9 MB of double patches per sample, 120x120x1 images
    // 1 MB: the batch of 3 is processed in more than one 2 MB chunk.
    // 8 filters take the direct kernel, whose kernel gradient also adds up chunk after chunk.
    for (const auto& image_and_filters : {std::pair{Shape{40, 40, 8}, 2}, std::pair{Shape{120, 120, 1}, 2}, std::pair{Shape{40, 40, 8}, 8}}) {
        // Not a structured binding: INFO captures it in a lambda, which clang 14 cannot.
        const Shape& image = image_and_filters.first;
        const int filters = image_and_filters.second;
        INFO("image " << shape_to_string(image) << ", filters " << filters);
        const auto x = uniform({3, image[0], image[1], image[2]}, 31);
        const auto k = uniform({3, 3, image[2], std::size_t(filters)}, 32);
        const auto weights = uniform({3, image[0], image[1], std::size_t(filters)}, 33);
        TensorD batch_x = TensorD::parameter(x), batch_k = TensorD::parameter(k);
        TensorD y = ops::conv2d(batch_x, batch_k, {1, 1}, ops::Padding::same);
        CHECK(xt::allclose(y.value(), naive_conv2d(x, k, {1, 1}, ops::Padding::same), 1e-12, 1e-12));
        ops::sum(ops::mul(y, TensorD::constant(weights))).backward();

        xt::xarray<double> kernel_grad = xt::zeros<double>(k.shape());
        for (std::size_t n = 0; n < 3; ++n) {
            TensorD one_x = TensorD::parameter(xt::xarray<double>(xt::view(x, xt::range(n, n + 1))));
            TensorD one_k = TensorD::parameter(k);
            const TensorD one_w = TensorD::constant(xt::xarray<double>(xt::view(weights, xt::range(n, n + 1))));
            ops::sum(ops::mul(ops::conv2d(one_x, one_k, {1, 1}, ops::Padding::same), one_w)).backward();
            CHECK(xt::allclose(one_x.grad(), xt::view(batch_x.grad(), xt::range(n, n + 1)), 1e-12, 1e-12));
            kernel_grad += one_k.grad();
        }
        CHECK(xt::allclose(batch_k.grad(), kernel_grad, 1e-10, 1e-12));
    }
}

TEST_CASE("conv2d over a batch of several kernel-gradient groups: values and gradients as by the definition, every path") {
    // 37 samples: two whole groups of 16 and a partial one, each summed on its own, then in order.
    // The kernel also convolves a second input, so its gradient adds onto what the first left.
    struct Case {
        Shape x, kernel;
        std::string path;
    };
    const std::vector<Case> cases{{{37, 5, 6, 4}, {3, 3, 4, 8}, "direct"},
                                  {{37, 5, 6, 16}, {3, 3, 16, 64}, "Winograd"},
                                  {{37, 5, 6, 3}, {3, 2, 3, 5}, "im2col"}};
    for (const Case& c : cases) {
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            INFO(c.path << ", padding " << ops::padding_name(padding));
            const auto x = uniform(c.x, 81), other = uniform(c.x, 82), k = uniform(c.kernel, 83);
            const auto expected = naive_conv2d(x, k, {1, 1}, padding);
            const auto dy = uniform(Shape(expected.shape().begin(), expected.shape().end()), 84);
            const auto dy_other = uniform(Shape(expected.shape().begin(), expected.shape().end()), 85);
            const auto expected_gradients = naive_conv2d_gradients(x, k, dy, padding);
            const auto expected_dk_other = naive_conv2d_gradients(other, k, dy_other, padding).second;
            TensorD x_double = TensorD::parameter(x), k_double = TensorD::parameter(k);
            const TensorD y = ops::conv2d(x_double, k_double, {1, 1}, padding);
            ops::add(ops::sum(ops::mul(y, TensorD::constant(dy))),
                     ops::sum(ops::mul(ops::conv2d(TensorD::constant(other), k_double, {1, 1}, padding), TensorD::constant(dy_other))))
                .backward();
            CHECK(xt::allclose(y.value(), expected, 1e-12, 1e-12));
            CHECK(xt::allclose(x_double.grad(), expected_gradients.first, 1e-12, 1e-12));
            CHECK(xt::allclose(k_double.grad(), expected_gradients.second + expected_dk_other, 1e-12, 1e-12));
        }
    }
}

namespace {

// An input and kernel for each of conv2d's paths.
struct ConvPath {
    Shape x, kernel;
    ops::Window2D strides;
    std::string path;
};

// The direct kernel, Winograd, im2col (12 filters: a row of channels that is not a whole number of
// SIMD registers), im2col on one channel, and im2col over two chunks of the batch (5 samples of
// 460 KB of float patches).
std::vector<ConvPath> conv_paths() {
    return {{{2, 6, 9, 8}, {3, 3, 8, 16}, {1, 1}, "direct"},
            {{2, 7, 6, 16}, {3, 3, 16, 64}, {1, 1}, "Winograd"},
            {{2, 6, 9, 3}, {3, 2, 3, 12}, {2, 1}, "im2col"},
            {{2, 6, 9, 1}, {3, 3, 1, 4}, {2, 2}, "im2col, one channel"},
            {{5, 40, 40, 8}, {3, 3, 8, 2}, {1, 1}, "im2col in chunks"}};
}

}  // namespace

TEST_CASE("conv2d_batch_norm_inference: the bits of batch_norm_inference after conv2d (and bias), on every path") {
    for (const ConvPath& c : conv_paths()) {
        const std::size_t filters = c.kernel[3];
        const Tensor x = Tensor::constant(xt::xarray<float>(uniform(c.x, 81))), kernel = Tensor::constant(xt::xarray<float>(uniform(c.kernel, 82)));
        const Tensor bias = Tensor::constant(xt::xarray<float>(uniform({filters}, 83)));
        const Tensor gamma = Tensor::constant(xt::xarray<float>(uniform({filters}, 84, 0.5, 2.0)));
        const Tensor beta = Tensor::constant(xt::xarray<float>(uniform({filters}, 85)));
        const xt::xarray<float> mean = uniform({filters}, 86), variance = uniform({filters}, 87, 0.1, 3.0);
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            for (bool with_bias : {false, true}) {
                for (bool relu : {false, true}) {
                    INFO(c.path << ", padding " << ops::padding_name(padding) << (with_bias ? ", bias" : "") << (relu ? ", relu" : ""));
                    const Tensor convolved = with_bias ? ops::conv2d_bias(x, kernel, bias, c.strides, padding)
                                                       : ops::conv2d(x, kernel, c.strides, padding);
                    const Tensor expected = relu ? ops::batch_norm_inference_relu(convolved, mean, variance, gamma, beta, 1e-3f)
                                                 : ops::batch_norm_inference(convolved, mean, variance, gamma, beta, 1e-3f);
                    const Tensor fused = ops::conv2d_batch_norm_inference(x, kernel, with_bias ? &bias : static_cast<const Tensor*>(nullptr), mean, variance,
                                                                          gamma, beta, 1e-3f, relu, c.strides, padding);
                    CHECK(testing::bitwise_equal(fused.value(), expected.value()));
                }
            }
        }
    }
    // It records no backward pass: an input that needs a gradient is refused while recording.
    const Tensor x = Tensor::constant(xt::xarray<float>(uniform({1, 5, 5, 2}, 88)));
    const Tensor kernel = Tensor::parameter(xt::xarray<float>(uniform({3, 3, 2, 8}, 89)));
    const Tensor ones = Tensor::constant(xt::ones<float>({8})), zeros = Tensor::constant(xt::zeros<float>({8}));
    const xt::xarray<float> mean = xt::zeros<float>({8}), variance = xt::ones<float>({8});
    const Tensor* no_bias = nullptr;
    CHECK_THROWS_WITH_AS(ops::conv2d_batch_norm_inference(x, kernel, no_bias, mean, variance, ones, zeros, 1e-3f, false),
                         doctest::Contains("conv2d_batch_norm_inference: records no backward pass"), ValueError);
    NoGradGuard no_grad;
    CHECK(ops::conv2d_batch_norm_inference(x, kernel, no_bias, mean, variance, ones, zeros, 1e-3f, false).shape() ==
          Shape{1, 3, 3, 8});
    CHECK_THROWS_WITH_AS(ops::conv2d_batch_norm_inference(x, kernel, no_bias, xt::xarray<float>(xt::zeros<float>({4})), variance,
                                                          ones, zeros, 1e-3f, false),
                         doctest::Contains("a per-channel parameter of shape (4,) does not fit a kernel of shape (3, 3, 2, 8); expected (8,)"),
                         ShapeError);
}

TEST_CASE("conv2d_bias and conv2d_bias_relu: the bits of bias_add and bias_relu after conv2d, gradients included") {
    for (const ConvPath& c : conv_paths()) {
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            for (bool relu : {false, true}) {
                const std::string activation = relu ? ", relu" : "";
                INFO(c.path << ", padding " << ops::padding_name(padding) << activation);
                const xt::xarray<float> x = uniform(c.x, 71), k = uniform(c.kernel, 72), b = uniform({c.kernel[3]}, 73);
                auto run = [&](bool fused) {
                    std::vector<Tensor> in{Tensor::parameter(x), Tensor::parameter(k), Tensor::parameter(b)};
                    Tensor y = fused ? (relu ? ops::conv2d_bias_relu(in[0], in[1], in[2], c.strides, padding)
                                             : ops::conv2d_bias(in[0], in[1], in[2], c.strides, padding))
                                     : (relu ? ops::bias_relu(ops::conv2d(in[0], in[1], c.strides, padding), in[2])
                                             : ops::bias_add(ops::conv2d(in[0], in[1], c.strides, padding), in[2]));
                    const Tensor weights = Tensor::constant(xt::xarray<float>(uniform(Shape(y.shape().begin(), y.shape().end()), 74)));
                    // x also feeds a second op: its gradient from the convolution is added.
                    ops::add(ops::sum(ops::mul(y, weights)), ops::sum(ops::mul(in[0], in[0]))).backward();
                    in.push_back(y);
                    return in;
                };
                const auto fused = run(true), separate = run(false);
                CHECK(testing::bitwise_equal(fused[3].value(), separate[3].value()));
                for (std::size_t i = 0; i < 3; ++i) CHECK(testing::bitwise_equal(fused[i].grad(), separate[i].grad()));
            }
        }
    }
    for (std::size_t channels : {std::size_t(1), std::size_t(3), std::size_t(8)}) {
        for (auto padding : {ops::Padding::valid, ops::Padding::same}) {
            INFO("channels " << channels << ", padding " << ops::padding_name(padding));
            const auto x = uniform({2, 4, 5, channels}, 75);
            // Small weights and biases of +-(1 to 2) keep x * k + b away from relu's kink, where
            // finite differences would straddle it.
            const auto k = xt::xarray<double>(0.02 * uniform({3, 2, channels, 8}, 76));
            const auto b = xt::xarray<double>(uniform({8}, 77, 1.0, 2.0) * xt::xarray<double>{1, -1, 1, -1, 1, -1, 1, -1});
            require_gradients("conv2d_bias", [=](const Inputs& in) {
                return ops::add(ops::sum(ops::conv2d_bias(in[0], in[1], in[2], {1, 1}, padding)), ops::sum(ops::mul(in[0], in[0])));
            }, {x, k, b}, strict);
            require_gradients("conv2d_bias_relu", [=](const Inputs& in) {
                return ops::conv2d_bias_relu(in[0], in[1], in[2], channels == 3 ? ops::Window2D{2, 1} : ops::Window2D{1, 1}, padding);
            }, {x, k, b}, strict);
        }
    }
    CHECK_THROWS_WITH_AS(ops::conv2d_bias(Tensor::constant(xt::zeros<float>({1, 4, 4, 2})), Tensor::constant(xt::zeros<float>({3, 3, 2, 4})),
                                          Tensor::constant(xt::zeros<float>({3}))),
                         doctest::Contains("conv2d_bias: the bias must have shape (4,)"), ShapeError);
}

TEST_CASE("NaN propagates through relu, bias_relu, max pooling and every activation, forward and backward") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    Tensor x = Tensor::parameter(xt::xarray<float>{{-1.0f, nan, 2.0f}});
    Tensor relu = ops::relu(x);
    CHECK(relu.value()(0, 0) == 0.0f);
    CHECK(std::isnan(relu.value()(0, 1)));
    CHECK(relu.value()(0, 2) == 2.0f);
    ops::sum(relu).backward();
    CHECK(x.grad()(0, 0) == 0.0f);
    CHECK(x.grad()(0, 1) == 1.0f);  // as in PyTorch: the NaN's gradient passes, so the loss shows it
    CHECK(x.grad()(0, 2) == 1.0f);

    Tensor bias = Tensor::parameter(xt::xarray<float>{0.0f, 0.0f, 0.0f});
    Tensor fused = ops::bias_relu(x, bias);
    CHECK(std::isnan(fused.value()(0, 1)));
    ops::sum(fused).backward();
    CHECK(bias.grad()(1) == 1.0f);
    CHECK(testing::bitwise_equal(fused.value(), ops::relu(ops::bias_add(x, bias)).value()));

    for (const auto& name : activation_names()) {
        INFO(name);
        CHECK(std::isnan(get_activation(name)(Tensor::constant(x.value())).value()(0, 1)));
    }

    // A NaN anywhere in a pooling window wins, as in PyTorch; the rest of the image is untouched.
    xt::xarray<float> image = xt::zeros<float>({1, 4, 4, 2});
    image(0, 1, 1, 0) = nan;
    image(0, 2, 2, 1) = 5.0f;
    Tensor pooled_input = Tensor::parameter(image);
    Tensor pooled = ops::max_pool2d(pooled_input, {2, 2}, {2, 2}, ops::Padding::valid);
    CHECK(std::isnan(pooled.value()(0, 0, 0, 0)));
    CHECK(pooled.value()(0, 1, 1, 1) == 5.0f);
    CHECK(pooled.value()(0, 1, 1, 0) == 0.0f);
    ops::sum(pooled).backward();
    CHECK(pooled_input.grad()(0, 1, 1, 0) == 1.0f);
}

TEST_CASE("gradient checks: batch_norm with batch statistics and with given statistics, rank 2 and 4") {
    // 3 channels take the loops over a run-time width, 8 and 16 those over a compile-time one.
    for (Shape shape : {Shape{5, 3}, Shape{2, 3, 4, 3}, Shape{5, 8}, Shape{2, 3, 2, 16}}) {
        INFO("shape " << shape_to_string(shape));
        const std::size_t channels = shape.back();
        const auto x = uniform(shape, 21, -2.0, 2.0);
        const auto gamma = uniform({channels}, 22, 0.5, 1.5), beta = uniform({channels}, 23);
        require_gradients("batch_norm",
                          [](const Inputs& in) {
                              xt::xarray<double> mean, variance;
                              return ops::batch_norm(in[0], in[1], in[2], 1e-3, mean, variance);
                          },
                          {x, gamma, beta}, strict);
        // x feeding a second op: batch_norm's dx is added to what is there, not written.
        require_gradients("batch_norm",
                          [](const Inputs& in) {
                              xt::xarray<double> mean, variance;
                              return ops::add(ops::sum(ops::mul(ops::batch_norm(in[0], in[1], in[2], 1e-3, mean, variance), in[0])),
                                              ops::sum(ops::mul(in[0], in[0])));
                          },
                          {x, gamma, beta}, strict);
        const auto moving_mean = uniform({channels}, 24), moving_variance = uniform({channels}, 25, 0.5, 2.0);
        require_gradients("batch_norm_inference",
                          [&](const Inputs& in) {
                              return ops::batch_norm_inference(in[0], moving_mean, moving_variance, in[1], in[2], 1e-3);
                          },
                          {x, gamma, beta}, strict);
    }
}

TEST_CASE("batch_norm_relu and batch_norm_inference_relu: the bits of relu after batch_norm, gradients included") {
    // 3 channels take the loops over a run-time width, 8 and 16 those over a compile-time one.
    for (Shape shape : {Shape{5, 3}, Shape{2, 3, 4, 3}, Shape{4, 5, 8}, Shape{2, 3, 2, 16}}) {
        INFO("shape " << shape_to_string(shape));
        const std::size_t channels = shape.back();
        const xt::xarray<float> x = uniform(shape, 81, -2.0, 2.0), gamma = uniform({channels}, 82, 0.5, 1.5),
                                beta = uniform({channels}, 83), moving_mean = uniform({channels}, 84),
                                moving_variance = uniform({channels}, 85, 0.5, 2.0);
        for (bool training : {true, false}) {
            INFO("training " << training);
            auto run = [&](bool fused) {
                std::vector<Tensor> in{Tensor::parameter(x), Tensor::parameter(gamma), Tensor::parameter(beta)};
                xt::xarray<float> mean, variance;
                Tensor y;
                if (training) {
                    y = fused ? ops::batch_norm_relu(in[0], in[1], in[2], 1e-3f, mean, variance)
                              : ops::relu(ops::batch_norm(in[0], in[1], in[2], 1e-3f, mean, variance));
                } else {
                    y = fused ? ops::batch_norm_inference_relu(in[0], moving_mean, moving_variance, in[1], in[2], 1e-3f)
                              : ops::relu(ops::batch_norm_inference(in[0], moving_mean, moving_variance, in[1], in[2], 1e-3f));
                }
                const Tensor weights = Tensor::constant(xt::xarray<float>(uniform(shape, 86)));
                // x also feeds a second op: batch_norm's dx is added to what is there.
                ops::add(ops::sum(ops::mul(y, weights)), ops::sum(ops::mul(in[0], in[0]))).backward();
                in.push_back(y);
                return std::pair{in, mean};
            };
            const auto fused = run(true), separate = run(false);
            CHECK(fused.first[3].op_name() == std::string(training ? "batch_norm_relu" : "batch_norm_inference_relu"));
            CHECK(testing::bitwise_equal(fused.first[3].value(), separate.first[3].value()));
            CHECK(xt::sum(xt::equal(fused.first[3].value(), 0.0f))() > 0);  // relu cut something
            for (std::size_t i = 0; i < 3; ++i) CHECK(testing::bitwise_equal(fused.first[i].grad(), separate.first[i].grad()));
            if (training) CHECK(testing::bitwise_equal(fused.second, separate.second));
        }
        // gamma * normalized stays within +-1 and beta is +-(1.2 to 2), away from relu's kink.
        const xt::xarray<double> signs = xt::where(xt::arange<double>(double(channels)) < double(channels) / 2, 1.0, -1.0);
        const xt::xarray<double> small_gamma = uniform({channels}, 87, 0.2, 0.4), far_beta = uniform({channels}, 88, 1.2, 2.0) * signs;
        const auto xd = uniform(shape, 89, -2.0, 2.0);
        require_gradients("batch_norm_relu",
                          [](const Inputs& in) {
                              xt::xarray<double> mean, variance;
                              return ops::batch_norm_relu(in[0], in[1], in[2], 1e-3, mean, variance);
                          },
                          {xd, small_gamma, far_beta}, strict);
        const xt::xarray<double> mean_d = xt::mean(xt::reshape_view(xd, {xd.size() / channels, channels}), {0}),
                                 variance_d = uniform({channels}, 90, 0.5, 2.0);
        require_gradients("batch_norm_inference_relu",
                          [&](const Inputs& in) {
                              return ops::batch_norm_inference_relu(in[0], mean_d, variance_d, in[1], in[2], 1e-3);
                          },
                          {xd, small_gamma, far_beta}, strict);
    }
}

TEST_CASE("batch_norm matches its definition; the statistics it reports are the batch's") {
    const auto x = uniform({6, 2}, 26, -3.0, 3.0);
    xt::xarray<double> mean, variance;
    const auto y = ops::batch_norm(TensorD::constant(x), TensorD::constant(xt::xarray<double>{2.0, 0.5}),
                                   TensorD::constant(xt::xarray<double>{0.1, -0.2}), 1e-3, mean, variance)
                       .value();
    for (std::size_t c = 0; c < 2; ++c) {
        double m = 0, v = 0;
        for (std::size_t r = 0; r < 6; ++r) m += x(r, c) / 6;
        for (std::size_t r = 0; r < 6; ++r) v += (x(r, c) - m) * (x(r, c) - m) / 6;  // biased, as Keras
        CHECK(mean(c) == doctest::Approx(m).epsilon(1e-14));
        CHECK(variance(c) == doctest::Approx(v).epsilon(1e-14));
        for (std::size_t r = 0; r < 6; ++r) {
            const double expected = (c == 0 ? 2.0 : 0.5) * (x(r, c) - m) / std::sqrt(v + 1e-3) + (c == 0 ? 0.1 : -0.2);
            CHECK(y(r, c) == doctest::Approx(expected).epsilon(1e-12));
        }
    }
    CHECK_THROWS_WITH_AS(ops::batch_norm_inference(Tensor::constant(xt::zeros<float>({2, 3})), xt::xarray<float>(xt::zeros<float>({4})),
                                                   xt::xarray<float>(xt::ones<float>({3})), Tensor::constant(xt::ones<float>({3})),
                                                   Tensor::constant(xt::zeros<float>({3})), 1e-3f),
                         doctest::Contains("batch_norm_inference: a per-channel parameter of shape (4,)"), ShapeError);
}

TEST_CASE("batch_norm over several groups of rows: values, statistics and gradients as by the definition") {
    // 10001 rows: sums over groups of 4096 rows, added in order.
    const std::size_t rows = 10001;
    const auto x = uniform({rows, 3}, 27, -3.0, 3.0), dy = uniform({rows, 3}, 28);
    const xt::xarray<double> gamma{2.0, 0.5, -1.0}, beta{0.1, -0.2, 0.3};
    xt::xarray<double> mean, variance;
    TensorD input = TensorD::parameter(x), g = TensorD::parameter(gamma), b = TensorD::parameter(beta);
    const TensorD y = ops::batch_norm(input, g, b, 1e-3, mean, variance);
    y.backward(dy);
    for (std::size_t c = 0; c < 3; ++c) {
        double m = 0, v = 0;
        for (std::size_t r = 0; r < rows; ++r) m += x(r, c);
        m /= double(rows);
        for (std::size_t r = 0; r < rows; ++r) v += (x(r, c) - m) * (x(r, c) - m);
        v /= double(rows);
        const double inverse_std = 1.0 / std::sqrt(v + 1e-3);
        CHECK(mean(c) == doctest::Approx(m).epsilon(1e-13));
        CHECK(variance(c) == doctest::Approx(v).epsilon(1e-13));
        double dgamma = 0, dbeta = 0;
        for (std::size_t r = 0; r < rows; ++r) {
            dgamma += dy(r, c) * (x(r, c) - m) * inverse_std;
            dbeta += dy(r, c);
        }
        CHECK(g.grad()(c) == doctest::Approx(dgamma).epsilon(1e-11));
        CHECK(b.grad()(c) == doctest::Approx(dbeta).epsilon(1e-11));
        std::size_t wrong = 0;
        for (std::size_t r = 0; r < rows; ++r) {
            const double normalized = (x(r, c) - m) * inverse_std;
            const double expected_y = gamma(c) * normalized + beta(c);
            const double expected_dx =
                gamma(c) * inverse_std * (dy(r, c) - dbeta / double(rows) - normalized * dgamma / double(rows));
            wrong += std::abs(y.value()(r, c) - expected_y) > 1e-12 || std::abs(input.grad()(r, c) - expected_dx) > 1e-11;
        }
        CHECK(wrong == 0);
    }
}

TEST_CASE("batch_norm in float over 16 channels far from zero: statistics, values and gradients near the definition") {
    // 16 channels take the loops over a compile-time width (float runs of rows summed in double);
    // 5003 rows make two groups of rows and a partial run.
    const std::size_t rows = 5003, channels = 16;
    const xt::xarray<float> x = xt::xarray<float>(uniform({rows, channels}, 29, -3.0, 3.0)) + 1000.0f;
    const xt::xarray<float> dy = uniform({rows, channels}, 30), gamma = uniform({channels}, 31, 0.5, 1.5),
                            beta = uniform({channels}, 32);
    for (bool relu : {false, true}) {
        INFO("relu " << relu);
        xt::xarray<float> mean, variance;
        Tensor input = Tensor::parameter(x), g = Tensor::parameter(gamma), b = Tensor::parameter(beta);
        const Tensor y = relu ? ops::batch_norm_relu(input, g, b, 1e-3f, mean, variance) : ops::batch_norm(input, g, b, 1e-3f, mean, variance);
        y.backward(dy);
        std::size_t wrong = 0;
        for (std::size_t c = 0; c < channels; ++c) {
            double m = 0, v = 0;
            for (std::size_t r = 0; r < rows; ++r) m += double(x(r, c));
            m /= double(rows);
            for (std::size_t r = 0; r < rows; ++r) v += (double(x(r, c)) - m) * (double(x(r, c)) - m);
            v /= double(rows);
            const double inverse_std = 1.0 / std::sqrt(v + 1e-3);
            CHECK(double(mean(c)) == doctest::Approx(m).epsilon(1e-7));
            CHECK(double(variance(c)) == doctest::Approx(v).epsilon(1e-6));
            std::vector<double> expected_y(rows), passed(rows);
            double dgamma = 0, dbeta = 0, dgamma_terms = 0, dbeta_terms = 0;
            for (std::size_t r = 0; r < rows; ++r) {
                const double normalized = (double(x(r, c)) - m) * inverse_std;
                expected_y[r] = double(gamma(c)) * normalized + double(beta(c));
                passed[r] = relu && expected_y[r] <= 0 ? 0.0 : double(dy(r, c));
                if (relu) expected_y[r] = std::max(0.0, expected_y[r]);
                dgamma += passed[r] * normalized;
                dbeta += passed[r];
                dgamma_terms += std::abs(passed[r] * normalized);
                dbeta_terms += std::abs(passed[r]);
            }
            // Within float rounding of the sums' terms (a row left out would be off by about 1).
            CHECK(std::abs(double(g.grad()(c)) - dgamma) <= 1e-6 * dgamma_terms);
            CHECK(std::abs(double(b.grad()(c)) - dbeta) <= 1e-6 * dbeta_terms);
            for (std::size_t r = 0; r < rows; ++r) {
                const double normalized = (double(x(r, c)) - m) * inverse_std;
                const double expected_dx =
                    double(gamma(c)) * inverse_std * (passed[r] - dbeta / double(rows) - normalized * dgamma / double(rows));
                // Near relu's kink the float value may fall on the other side than the double one.
                if (relu && std::abs(expected_y[r]) < 1e-3) continue;
                wrong += std::abs(double(y.value()(r, c)) - expected_y[r]) > 1e-4 || std::abs(double(input.grad()(r, c)) - expected_dx) > 1e-4;
            }
        }
        CHECK(wrong == 0);
    }
    // In double, a mean of 1e9 against a spread of about 2: E[x^2] - E[x]^2 unshifted would keep
    // no correct digit of the variance.
    const auto far = uniform({1000, 3}, 33, -3.0, 3.0) + 1e9;
    xt::xarray<double> mean, variance;
    ops::batch_norm(TensorD::constant(far), TensorD::constant(xt::xarray<double>(xt::ones<double>({3}))),
                    TensorD::constant(xt::xarray<double>(xt::zeros<double>({3}))), 1e-3, mean, variance);
    for (std::size_t c = 0; c < 3; ++c) {
        double m = 0, v = 0;
        for (std::size_t r = 0; r < 1000; ++r) m += far(r, c) / 1000.0;
        for (std::size_t r = 0; r < 1000; ++r) v += (far(r, c) - m) * (far(r, c) - m) / 1000.0;
        CHECK(variance(c) == doctest::Approx(v).epsilon(1e-6));
    }
}

TEST_CASE("gradient checks: layer_norm, maximum, minimum, concatenate") {
    for (Shape shape : {Shape{5, 4}, Shape{2, 3, 4}}) {
        INFO("shape " << shape_to_string(shape));
        const auto x = uniform(shape, 31, -2.0, 2.0);
        const auto gamma = uniform({4}, 32, 0.5, 1.5), beta = uniform({4}, 33);
        require_gradients("layer_norm", [](const Inputs& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-3); },
                          {x, gamma, beta}, strict);
    }
    // Away from ties, where the maximum has no derivative.
    const xt::xarray<double> a = uniform({3, 4}, 34);
    const xt::xarray<double> b = away_from(uniform({3, 4}, 35) - a) + a;
    require_gradients("maximum", [](const Inputs& in) { return ops::maximum(in[0], in[1]); }, {a, b}, strict);
    require_gradients("minimum", [](const Inputs& in) { return ops::minimum(in[0], in[1]); }, {a, b}, strict);
    for (std::size_t axis : {0, 1, 2}) {
        INFO("axis " << axis);
        Shape second{2, 3, 4};
        second[axis] = 5;
        require_gradients("concatenate", [axis](const Inputs& in) { return ops::concatenate<double>({in[0], in[1], in[0]}, axis); },
                          {uniform({2, 3, 4}, 36), uniform(second, 37)}, strict);
    }
}

TEST_CASE("layer_norm, maximum, minimum and concatenate match their definitions") {
    const auto x = uniform({3, 5}, 38, -3.0, 3.0);
    const auto y = ops::layer_norm(TensorD::constant(x), TensorD::constant(xt::xarray<double>(xt::ones<double>({5}) * 2.0)),
                                   TensorD::constant(xt::xarray<double>(xt::ones<double>({5}) * 0.5)), 1e-3)
                       .value();
    for (std::size_t r = 0; r < 3; ++r) {
        double m = 0, v = 0;
        for (std::size_t c = 0; c < 5; ++c) m += x(r, c) / 5;
        for (std::size_t c = 0; c < 5; ++c) v += (x(r, c) - m) * (x(r, c) - m) / 5;
        for (std::size_t c = 0; c < 5; ++c) CHECK(y(r, c) == doctest::Approx(2.0 * (x(r, c) - m) / std::sqrt(v + 1e-3) + 0.5).epsilon(1e-12));
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const auto largest = ops::maximum(Tensor::constant(xt::xarray<float>{{1, 5, nan, 2}}), Tensor::constant(xt::xarray<float>{{3, 4, 0, nan}})).value();
    CHECK(largest(0, 0) == 3.0f);
    CHECK(largest(0, 1) == 5.0f);
    CHECK(std::isnan(largest(0, 2)));
    CHECK(std::isnan(largest(0, 3)));
    const auto smallest = ops::minimum(Tensor::constant(xt::xarray<float>{{1, 5, nan, 2}}), Tensor::constant(xt::xarray<float>{{3, 4, 0, nan}})).value();
    CHECK(smallest(0, 0) == 1.0f);
    CHECK(smallest(0, 1) == 4.0f);
    CHECK(std::isnan(smallest(0, 2)));
    CHECK(std::isnan(smallest(0, 3)));
    CHECK_THROWS_WITH_AS(ops::minimum(Tensor::constant(xt::zeros<float>({2, 2})), Tensor::constant(xt::zeros<float>({2, 3}))),
                         doctest::Contains("minimum: the inputs must have one shape, got (2, 2) and (2, 3)"), ShapeError);
    xt::xarray<float> left = {{1, 2}, {3, 4}}, right = xt::zeros<float>({2, 1}), expected = {{1, 2, 5}, {3, 4, 6}};
    right(0, 0) = 5;
    right(1, 0) = 6;
    const auto joined = ops::concatenate<float>({Tensor::constant(left), Tensor::constant(right)}, 1).value();
    CHECK(joined == expected);
    CHECK_THROWS_WITH_AS(ops::concatenate<float>({Tensor::constant(xt::zeros<float>({2, 2})), Tensor::constant(xt::zeros<float>({3, 1}))}, 1),
                         doctest::Contains("concatenate: along axis 1 every other extent must agree; got (2, 2) and (3, 1)"), ShapeError);
    CHECK_THROWS_WITH_AS(ops::maximum(Tensor::constant(xt::zeros<float>({2, 2})), Tensor::constant(xt::zeros<float>({2, 3}))),
                         doctest::Contains("maximum: the inputs must have one shape, got (2, 2) and (2, 3)"), ShapeError);
}
