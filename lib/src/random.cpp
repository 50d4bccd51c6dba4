#include "xtnn/random.hpp"

#include <cmath>
#include <numbers>
#include <sstream>

#include "xtnn/error.hpp"

namespace xtnn {

double Generator::uniform() {
    return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

float Generator::uniform_symmetric(float limit) {
    auto k = static_cast<std::int32_t>(engine_() >> 40) - (std::int32_t{1} << 23);
    return (static_cast<float>(k) * 0x1.0p-23f) * limit;
}

double Generator::normal() {
    // 1 - uniform() lies in (0, 1], so the log is finite.
    double radius = std::sqrt(-2.0 * std::log(1.0 - uniform()));
    double angle = 2.0 * std::numbers::pi * uniform();
    return radius * std::cos(angle);
}

std::uint64_t Generator::below(std::uint64_t n) {
    if (n == 0) throw ValueError("Generator::below: n must be positive, got 0");
    // Reject the top partial block of 2^64 so every residue is equally likely.
    const std::uint64_t limit = std::uint64_t(0) - (std::uint64_t(0) - n) % n;
    for (;;) {
        std::uint64_t r = engine_();
        if (limit == 0 || r < limit) return r % n;
    }
}

std::vector<std::size_t> Generator::permutation(std::size_t n) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    for (std::size_t i = n; i > 1; --i) {
        std::size_t j = static_cast<std::size_t>(below(i));
        std::swap(order[i - 1], order[j]);
    }
    return order;
}

std::string Generator::state() const {
    std::ostringstream out;
    out << engine_;
    return out.str();
}

void Generator::set_state(const std::string& state) {
    std::istringstream in(state);
    std::mt19937_64 restored;
    in >> restored;
    if (in.fail()) throw ValueError("Generator::set_state: the text is not a saved mt19937_64 state");
    engine_ = restored;
}

Generator& global_generator() {
    static Generator generator(0);
    return generator;
}

void set_random_seed(std::uint64_t seed) { global_generator().seed(seed); }

}  // namespace xtnn
