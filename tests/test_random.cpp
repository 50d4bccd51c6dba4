#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include <xtnn/xtnn.hpp>

using namespace xtnn;

TEST_CASE("the same seed gives the same stream, a different seed another") {
    Generator a(42), b(42), c(43);
    for (int i = 0; i < 100; ++i) {
        auto va = a.next_u64();
        CHECK(va == b.next_u64());
        CHECK(va != c.next_u64());
    }
}

TEST_CASE("uniform values stay in their ranges with the right moments") {
    Generator g(7);
    double total = 0, total_sq = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) {
        double u = g.uniform();
        REQUIRE(u >= 0.0);
        REQUIRE(u < 1.0);
        float s = g.uniform_symmetric(0.5f);
        REQUIRE(s >= -0.5f);
        REQUIRE(s < 0.5f);
        total += u;
        total_sq += u * u;
    }
    CHECK(total / n == doctest::Approx(0.5).epsilon(0.01));
    CHECK(total_sq / n - (total / n) * (total / n) == doctest::Approx(1.0 / 12).epsilon(0.02));
}

TEST_CASE("normal values have mean 0 and variance 1") {
    Generator g(8);
    double total = 0, total_sq = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
        double x = g.normal();
        REQUIRE(std::isfinite(x));
        total += x;
        total_sq += x * x;
    }
    CHECK(std::abs(total / n) < 0.01);
    CHECK(total_sq / n == doctest::Approx(1.0).epsilon(0.01));
}

TEST_CASE("below() is in range and permutation() is a permutation") {
    Generator g(9);
    std::vector<int> counts(7, 0);
    for (int i = 0; i < 70000; ++i) ++counts[g.below(7)];
    for (int c : counts) CHECK(c == doctest::Approx(10000).epsilon(0.05));
    auto order = g.permutation(1000);
    auto sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) REQUIRE(sorted[i] == i);
    CHECK(order != sorted);
    CHECK_THROWS_AS(g.below(0), ValueError);
}

TEST_CASE("the state round-trips through text") {
    Generator g(10);
    g.next_u64();
    auto saved = g.state();
    auto expected = g.next_u64();
    Generator restored(0);
    restored.set_state(saved);
    CHECK(restored.next_u64() == expected);
    CHECK_THROWS_AS(restored.set_state("not a state"), ValueError);
}
