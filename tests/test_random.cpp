#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <thread>

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

TEST_CASE("the engine gives std::mt19937_64's output") {
    for (std::uint64_t seed : {0ULL, 1ULL, 42ULL, 5489ULL, ~0ULL}) {
        Generator ours(seed);
        std::mt19937_64 standard(seed);
        for (int i = 0; i < 2000; ++i) REQUIRE(ours.next_u64() == standard());
    }
    // The value the C++ standard gives for the 10000th output of a default-seeded mt19937_64.
    Generator fixed(5489);
    std::uint64_t value = 0;
    for (int i = 0; i < 10000; ++i) value = fixed.next_u64();
    CHECK(value == 9981545732273789042ULL);
}

TEST_CASE("the state round-trips through xtnn's text form at every position") {
    for (int draws : {0, 1, 155, 311, 312, 313, 1000}) {
        Generator g(10);
        for (int i = 0; i < draws; ++i) g.next_u64();
        const auto saved = g.state();
        CHECK(saved.rfind("xtnn.mt19937_64 ", 0) == 0);
        Generator restored(0);
        restored.set_state(saved);
        CHECK(restored.state() == saved);
        for (int i = 0; i < 700; ++i) REQUIRE(restored.next_u64() == g.next_u64());
    }
}

namespace {

std::string standard_state(const std::mt19937_64& engine) {
    std::ostringstream text;
    text << engine;
    return text.str();
}

std::size_t word_count(const std::string& text) {
    std::istringstream in(text);
    std::size_t count = 0;
    for (std::string word; in >> word;) ++count;
    return count;
}

}  // namespace

TEST_CASE("states written by std::mt19937_64 with libstdc++ or libc++ read exactly") {
    // This build's standard library writes one of the two forms; the other is built from it.
    // After a multiple of 312 draws both libraries hold the same words in the same order:
    // libstdc++ adds the position (312), libc++ writes the words alone.
    for (int draws : {0, 1, 200, 312, 624, 1001}) {
        std::mt19937_64 standard(77);
        standard.discard(static_cast<unsigned long long>(draws));
        Generator restored(0);
        restored.set_state(standard_state(standard));
        std::mt19937_64 copy = standard;
        for (int i = 0; i < 700; ++i) REQUIRE(restored.next_u64() == copy());
    }
    for (int blocks : {1, 2, 5}) {
        std::mt19937_64 standard(78);
        standard.discard(312ULL * static_cast<unsigned long long>(blocks));
        const std::string native = standard_state(standard);
        std::string other;
        if (word_count(native) == 313) {
            CHECK(native.substr(native.rfind(' ') + 1) == "312");
            other = native.substr(0, native.rfind(' '));  // libc++'s form
        } else {
            REQUIRE(word_count(native) == 312);
            other = native + " 312";  // libstdc++'s form
        }
        Generator from_native(0), from_other(0);
        from_native.set_state(native);
        from_other.set_state(other);
        CHECK(from_native.state() == from_other.state());
        for (int i = 0; i < 700; ++i) REQUIRE(from_other.next_u64() == standard());
    }
}

TEST_CASE("malformed states are refused and leave the generator as it was") {
    Generator g(11);
    const auto before = g.state();
    auto ones = [](int count) {
        std::string text;
        for (int i = 0; i < count; ++i) text += i ? " 1" : "1";
        return text;
    };
    const std::string tag = "xtnn.mt19937_64 ";
    for (const std::string& bad : {std::string("not a state"), std::string(""), std::string("xtnn.mt19937_64"),
                                   tag + "313 " + ones(312), tag + "0 " + ones(311), tag + "0 " + ones(313),
                                   ones(312) + " 400", ones(311), ones(314), "-1 " + ones(311),
                                   ones(312) + " 18446744073709551616", ones(312) + " 1x", tag + ones(312)}) {
        CHECK_THROWS_AS(g.set_state(bad), ValueError);
    }
    std::string zeros = tag + "312";
    for (int i = 0; i < 312; ++i) zeros += " 0";
    CHECK_THROWS_WITH_AS(g.set_state(zeros), doctest::Contains("all zero"), ValueError);
    CHECK(g.state() == before);
}

TEST_CASE("each thread has its own generator, seeded 0 until it seeds it") {
    set_random_seed(5);
    const std::uint64_t main_first = Generator(5).next_u64();
    std::uint64_t other_first = 0, other_seeded = 0;
    std::thread other([&] {
        other_first = thread_generator().next_u64();
        set_random_seed(6);
        other_seeded = thread_generator().next_u64();
    });
    other.join();
    CHECK(other_first == Generator(0).next_u64());
    CHECK(other_seeded == Generator(6).next_u64());
    CHECK(thread_generator().next_u64() == main_first);  // untouched by the other thread's seeding
}
