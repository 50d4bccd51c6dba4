#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <thread>

#include <xtnn/xtnn.hpp>

#include "test_helpers.hpp"

using namespace xtnn;

namespace {

// y = x^2 with a backward pass that is off by `error` (relative): the checker must notice 1%.
TensorD square_with_backward_error(const TensorD& x, double error) {
    xt::xarray<double> y = x.value() * x.value();
    return make_op<double>("square", std::move(y), {x}, [error](Node<double>& out) {
        Node<double>& in = *out.inputs[0];
        accumulate_grad(in, out.grad * 2.0 * in.value * (1.0 + error));
    });
}

// y = x with a backward pass that hands its input 0 / 0 at element 1.
Tensor identity_with_nan_gradient(const Tensor& x) {
    return make_op<float>("broken_identity", x.value(), {x}, [](Node<float>& out) {
        xt::xarray<float> gradient = out.grad;
        const float zero = gradient.data()[0] * 0.0f;
        gradient.data()[1] = zero / zero;
        accumulate_grad(*out.inputs[0], std::move(gradient));
    });
}

}  // namespace

TEST_CASE("the gradient checker accepts a correct backward and rejects one that is 1% wrong") {
    const auto x = testing::uniform({3, 7}, 11, 0.5, 2.0);
    auto correct = check_gradients([](const auto& in) { return square_with_backward_error(in[0], 0.0); }, {x});
    CHECK_MESSAGE(correct.passed, correct.report);
    CHECK(correct.entries_checked == 21 * 21);

    auto wrong = check_gradients([](const auto& in) { return square_with_backward_error(in[0], 0.01); }, {x});
    CHECK_FALSE(wrong.passed);
    CHECK(wrong.worst_excess > 0);
    CHECK(wrong.report.find("analytic") != std::string::npos);
}

TEST_CASE("gradients accumulate on fan-out: y = x*x + x") {
    Tensor x = Tensor::parameter(xt::xarray<float>{-1.5f, 0.0f, 2.0f});
    Tensor y = ops::sum(x * x + x);
    y.backward();
    CHECK(x.grad()(0) == doctest::Approx(-2.0));
    CHECK(x.grad()(1) == doctest::Approx(1.0));
    CHECK(x.grad()(2) == doctest::Approx(5.0));
}

TEST_CASE("a parameter used by two branches gets the sum of both gradients") {
    Tensor w = Tensor::parameter(xt::xarray<float>{{1.0f, 2.0f}, {3.0f, 4.0f}});
    Tensor a = Tensor::constant(xt::xarray<float>{{1.0f, 0.0f}});
    Tensor b = Tensor::constant(xt::xarray<float>{{0.0f, 1.0f}});
    ops::sum(ops::matmul(a, w) + ops::matmul(b, w)).backward();
    xt::xarray<float> expected{{1.0f, 1.0f}, {1.0f, 1.0f}};
    CHECK(w.grad() == expected);
}

TEST_CASE("leaf gradients accumulate across backward passes until zero_grad") {
    Tensor x = Tensor::parameter(xt::xarray<float>{1.0f, 2.0f});
    Tensor y = ops::sum(x * x);
    y.backward();
    y.backward();
    CHECK(x.grad()(1) == doctest::Approx(8.0));
    x.zero_grad();
    y.backward();
    CHECK(x.grad()(1) == doctest::Approx(4.0));
}

TEST_CASE("LeafGradients keeps the gradients of a thread's passes apart from the leaves'") {
    Tensor w = Tensor::parameter(xt::xarray<float>{1.0f, -2.0f, 3.0f});
    auto square_sum = [&] { return ops::sum(ops::mul(w, w)); };
    LeafGradients held({w});
    CHECK(held.gradient(0) == nullptr);
    {
        LeafGradients::Redirect redirect(held);
        square_sum().backward();
        square_sum().backward();
    }
    CHECK_FALSE(w.has_grad());
    REQUIRE(held.gradient(0) != nullptr);
    CHECK(*held.gradient(0) == xt::xarray<float>{4.0f, -8.0f, 12.0f});
    square_sum().backward();
    CHECK(w.grad() == xt::xarray<float>{2.0f, -4.0f, 6.0f});
    held.clear();
    CHECK(held.gradient(0) == nullptr);

    // Two threads, each with holders of its own, differentiate through the same leaf at once.
    LeafGradients first({w}), second({w});
    auto run = [&](LeafGradients& gradients, float factor) {
        LeafGradients::Redirect redirect(gradients);
        for (int pass = 0; pass < 50; ++pass) ops::sum(ops::scale(ops::mul(w, w), factor)).backward();
    };
    std::thread a([&] { run(first, 1.0f); });
    std::thread b([&] { run(second, 2.0f); });
    a.join();
    b.join();
    CHECK(*first.gradient(0) == xt::xarray<float>{100.0f, -200.0f, 300.0f});
    CHECK(*second.gradient(0) == xt::xarray<float>{200.0f, -400.0f, 600.0f});
    CHECK(w.grad() == xt::xarray<float>{2.0f, -4.0f, 6.0f});
}

TEST_CASE("two backward passes over the same graph give bitwise-equal gradients") {
    const auto xv = testing::uniform({5, 7}, 3);
    const auto wv = testing::uniform({7, 4}, 4);
    Tensor x = Tensor::constant(xt::xarray<float>(xv));
    Tensor w = Tensor::parameter(xt::xarray<float>(wv));
    Tensor loss = ops::mean(ops::tanh(ops::matmul(x, w)));
    loss.backward();
    xt::xarray<float> first = w.grad();
    w.zero_grad();
    loss.backward();
    REQUIRE(first.shape() == w.grad().shape());
    CHECK(std::memcmp(first.data(), w.grad().data(), first.size() * sizeof(float)) == 0);
}

TEST_CASE("nothing is recorded when no input needs a gradient") {
    Tensor w = Tensor::parameter(xt::ones<float>({1, 1}));
    Tensor x = Tensor::constant(xt::xarray<float>(2.0f * xt::ones<float>({1, 1})));

    Tensor constant_only = ops::relu(ops::matmul(x, x));
    CHECK_FALSE(constant_only.requires_grad());
    CHECK(constant_only.node()->inputs.empty());

    {
        NoGradGuard no_grad;
        Tensor inference = ops::matmul(x, w);
        CHECK_FALSE(inference.requires_grad());
        CHECK(inference.node()->inputs.empty());
        CHECK_FALSE(inference.node()->backward);
    }
    Tensor training = ops::matmul(x, w);
    CHECK(training.requires_grad());
    CHECK(training.node()->inputs.size() == 2);
}

TEST_CASE("backward needs a scalar or a seed of the output's shape") {
    Tensor w = Tensor::parameter(xt::xarray<float>{1.0f, 2.0f});
    Tensor y = w * w;
    CHECK_THROWS_AS(y.backward(), ShapeError);
    CHECK_THROWS_AS(y.backward(xt::xarray<float>{1.0f}), ShapeError);
    y.backward(xt::xarray<float>{1.0f, 1.0f});
    CHECK(w.grad()(1) == doctest::Approx(4.0));
    Tensor c = Tensor::constant(xt::xarray<float>{1.0f});
    CHECK_THROWS_AS(c.backward(), ValueError);
    CHECK_THROWS_AS(c.grad(), ValueError);
}

TEST_CASE("a deep chain does not overflow the stack") {
    Tensor x = Tensor::parameter(xt::xarray<float>{1.0f});
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = ops::scale(y, 1.0f);
    ops::sum(y).backward();
    CHECK(x.grad()(0) == 1.0f);
}

TEST_CASE("a dead tensor's buffer goes to the thread's pool and serves the next array of its size") {
    const Tensor w = Tensor::parameter(xt::xarray<float>{{0.5f, -1.0f, 2.0f}, {1.5f, 0.25f, -0.75f}});
    const float* freed = nullptr;
    {
        const NoGradGuard no_graph;
        const Tensor y = ops::relu(w);
        freed = y.value().data();
    }
    // Without the pool, malloc would hand the freed block to this array of the same size.
    const xt::xarray<float> from_malloc = xt::empty<float>({6});
    // The last buffer of 6 floats freed on this thread serves the next array of 6, in any shape.
    const xt::xarray<float> reused = pooled_empty<float>({3, 2});
    CHECK(from_malloc.data() != freed);
    CHECK(reused.data() == freed);
    CHECK(reused.shape() == xt::xarray<float>::shape_type{3, 2});
    CHECK(reused.strides() == xt::xarray<float>::strides_type{2, 1});
    // A fresh shape gets a fresh buffer of its own.
    const xt::xarray<float> zeros = pooled_zeros<float>({7});
    CHECK(zeros.size() == 7);
    CHECK(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("the pool keeps what its thread asked for, within its bounds, and leaves the rest to the system") {
    xt::xarray<float> asked = pooled_empty<float>({4, 4});
    detail::recycle(asked);
    CHECK(asked.size() == 0);  // its buffer now belongs to the pool
    xt::xarray<float> again = pooled_empty<float>({16});
    xt::xarray<float> made_elsewhere = xt::ones<float>({16});
    detail::recycle(again);
    detail::recycle(made_elsewhere);
    CHECK(again.size() == 0);
    CHECK(made_elsewhere.size() == 16);  // one request of 16 elements was open, and `again` answered it
    xt::xarray<float> never_asked = xt::ones<float>({12345});
    detail::recycle(never_asked);
    CHECK(never_asked.size() == 12345);
    xt::xarray<float> huge = pooled_empty<float>({std::size_t(17) << 20});  // 68 MB: above the 64 MB a buffer may have
    const float* huge_data = huge.data();
    detail::recycle(huge);
    CHECK(huge.data() == huge_data);  // not kept: the array still owns it
    CHECK(huge.size() == std::size_t(17) << 20);
    // Far more buffers than slots: the pool takes each in turn instead of refusing the newest.
    std::vector<xt::xarray<float>> many;
    for (std::size_t count = 1; count <= 600; ++count) many.push_back(pooled_empty<float>({count}));
    std::size_t refused = 0;
    for (auto& array : many) {
        detail::recycle(array);
        if (array.size() != 0) ++refused;
    }
    CHECK(refused == 0);
    xt::xarray<float> newest = pooled_empty<float>({600});
    CHECK(newest.size() == 600);
}

TEST_CASE("graphs built on one thread and freed on another, and threads that exit with full pools") {
    std::vector<Tensor> made;
    std::thread maker([&] {
        const Tensor w = Tensor::parameter(xt::xarray<float>{1.0f, 2.0f, 3.0f});
        for (int i = 0; i < 20; ++i) {
            const Tensor y = ops::mul(w, w);
            ops::sum(y).backward();
            made.push_back(y);
        }
        made.push_back(w);
    });
    maker.join();  // its pool was destroyed with it; the graphs it made are still alive here
    CHECK(made.front().value() == xt::xarray<float>{1.0f, 4.0f, 9.0f});
    made.clear();  // freed on this thread: into this thread's pool
    const xt::xarray<float> next = pooled_empty<float>({3});
    CHECK(next.size() == 3);
}

TEST_CASE("anomaly detection names the op that first computes or is given a NaN or an infinity") {
    const Tensor x = Tensor::parameter(xt::xarray<float>{1.0f, 0.0f, 2.0f});
    REQUIRE_FALSE(anomaly_detection_enabled());
    CHECK(ops::log(x).value()(1) == -std::numeric_limits<float>::infinity());  // off: it flows on, as in NumPy
    {
        DetectAnomalyGuard anomaly;
        CHECK(testing::error_of<NumericError>([&] { ops::log(x); }) ==
              "anomaly: op 'log' computed -inf at flat index 1 of its output of shape (3,) from finite inputs");
        const Tensor data = Tensor::constant(xt::xarray<float>{{1.0f, 2.0f}, {std::numeric_limits<float>::quiet_NaN(), 3.0f}});
        CHECK(testing::error_of<NumericError>([&] { ops::relu(data); }) ==
              "anomaly: op 'relu' was given nan at flat index 2 of its input 0 (shape (2, 2), a constant: a weight or given data)");
        CHECK(std::isfinite(ops::exp(x).value()(2)));
    }
    CHECK_FALSE(anomaly_detection_enabled());
}

TEST_CASE("anomaly detection names the backward step that first makes a gradient non-finite") {
    // log's gradient 1 / x overflows at the smallest denormal while log itself stays finite.
    const TensorD tiny = TensorD::parameter(xt::xarray<double>{1.0, std::numeric_limits<double>::denorm_min()});
    const TensorD total = ops::sum(ops::log(tiny));
    CHECK(std::isfinite(total.item()));
    DetectAnomalyGuard anomaly;
    CHECK(testing::error_of<NumericError>([&] { total.backward(); }) ==
          "anomaly: the backward pass of op 'log' gave inf at flat index 1 of the gradient of its input 0 (shape (2,), "
          "a leaf: a weight or given data), from a finite output gradient");
    const Tensor x = Tensor::parameter(xt::xarray<float>{1.0f, 2.0f, 3.0f});
    const Tensor y = ops::sum(ops::exp(identity_with_nan_gradient(x)));
    CHECK(testing::error_of<NumericError>([&] { y.backward(); }) ==
          "anomaly: the backward pass of op 'broken_identity' gave nan at flat index 1 of the gradient of its input 0 "
          "(shape (3,), a leaf: a weight or given data), from a finite output gradient");
    CHECK(testing::error_of<NumericError>([&] { ops::exp(x).backward(xt::xarray<float>{1.0f, std::numeric_limits<float>::infinity(), 0.0f}); }) ==
          "anomaly: backward(): the seed for op 'exp' holds inf at flat index 1");
}
