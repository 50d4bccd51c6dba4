#pragma once
// Seeded randomness that gives the same numbers with every compiler and standard library.
// std::mt19937_64's raw output is fixed by the standard, but the std::*_distribution classes and
// std::shuffle are not, so every value here is derived from raw engine bits with exact
// arithmetic (or, for normals, double-precision Box-Muller rounded once to the result type).

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace xtnn {

class Generator {
public:
    explicit Generator(std::uint64_t seed = 0) : engine_(seed) {}

    void seed(std::uint64_t seed) { engine_.seed(seed); }
    std::uint64_t next_u64() { return engine_(); }

    /// Uniform in [0, 1) on a 2^-53 grid.
    double uniform();
    /// Uniform in [-limit, limit) on a 2^-23 grid, one rounding: exact across platforms.
    float uniform_symmetric(float limit);
    /// Standard normal (Box-Muller in double).
    double normal();
    /// Uniform integer in [0, n), unbiased (rejection sampling).
    std::uint64_t below(std::uint64_t n);
    /// A uniformly random permutation of 0..n-1 (Fisher-Yates).
    std::vector<std::size_t> permutation(std::size_t n);

    /// The engine's full state as text, to resume a run exactly.
    std::string state() const;
    void set_state(const std::string& state);

private:
    std::mt19937_64 engine_;
};

/// The generator behind weight initialisation, dropout masks, shuffling and validation splits.
Generator& global_generator();

/// Seeds global_generator(): the same seed gives the same weights, masks and batches.
void set_random_seed(std::uint64_t seed);

}  // namespace xtnn
