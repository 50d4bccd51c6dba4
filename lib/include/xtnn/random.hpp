#pragma once
// Seeded randomness that gives the same numbers with every compiler and standard library.
// The engine is MT19937-64, written here so that its saved state has one form everywhere (the
// standard libraries write std::mt19937_64's state in different forms); its output is the one the
// standard fixes for std::mt19937_64. The std::*_distribution classes and std::shuffle are not
// fixed by the standard, so every value is derived from raw engine bits with exact arithmetic
// (or, for normals, double-precision Box-Muller rounded once to the result type).
//
// Each thread has its own generator (thread_generator()), so threads that seed and train at the
// same time neither race nor disturb each other; docs/threads.md says what else is thread-safe.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xtnn {

class Generator {
public:
    explicit Generator(std::uint64_t seed = 0) { this->seed(seed); }

    /// The state std::mt19937_64(seed) starts in.
    void seed(std::uint64_t seed);
    /// The next output of MT19937-64: the values std::mt19937_64 gives for the same seed.
    std::uint64_t next_u64();

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

    /// The full state as text, to resume a run exactly: "xtnn.mt19937_64 P W0 ... W311" in
    /// decimal, P the position of the next word to temper (0..312), W the 312 state words.
    std::string state() const;
    /// Restores a state from state(), or from the text std::mt19937_64 writes with libstdc++
    /// (313 numbers) or libc++ (312 numbers): both convert exactly.
    void set_state(const std::string& state);

    static constexpr std::size_t state_words = 312;

private:
    void twist();

    std::array<std::uint64_t, state_words> words_{};
    std::size_t position_ = state_words;
};

/// The calling thread's generator, behind weight initialisation, dropout masks, shuffling and
/// validation splits. Every thread's starts as if seeded with 0.
Generator& thread_generator();

/// Seeds the calling thread's generator: the same seed gives the same weights, masks and batches.
void set_random_seed(std::uint64_t seed);

}  // namespace xtnn
