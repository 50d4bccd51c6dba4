#pragma once
// Small fixtures shared by the test files.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include "xtnn/error.hpp"
#include "xtnn/io.hpp"
#include "xtnn/model.hpp"
#include "xtnn/random.hpp"

namespace xtnn::testing {

/// Uniform values in [low, high), reproducible from `seed`.
inline xt::xarray<double> uniform(const std::vector<std::size_t>& shape, std::uint64_t seed, double low = -1.0,
                                  double high = 1.0) {
    Generator generator(seed);
    xt::xarray<double> values = xt::empty<double>(shape);
    for (double& v : values) v = low + (high - low) * generator.uniform();
    return values;
}

/// Moves every value at least `gap` away from `kink`, so finite differences never straddle it.
inline xt::xarray<double> away_from(xt::xarray<double> values, double kink = 0.0, double gap = 0.02) {
    for (double& v : values) {
        if (std::abs(v - kink) < gap) v = v >= kink ? kink + gap + (v - kink) : kink - gap + (v - kink);
    }
    return values;
}

/// Rows of a probability distribution (positive, summing to 1).
inline xt::xarray<double> distributions(std::size_t rows, std::size_t columns, std::uint64_t seed) {
    xt::xarray<double> values = uniform({rows, columns}, seed, 0.1, 1.0);
    for (std::size_t r = 0; r < rows; ++r) {
        double total = 0;
        for (std::size_t c = 0; c < columns; ++c) total += values(r, c);
        for (std::size_t c = 0; c < columns; ++c) values(r, c) /= total;
    }
    return values;
}

/// The book's chapter-3 network, uncompiled: Dense(32, relu) on 28x28, Dropout(0.1),
/// Dense(32, relu), Dropout(0.1), Flatten, Dense(10, softmax).
inline Sequential book_model() {
    Sequential model;
    model.add(Dense(32, "relu", {28, 28}));
    model.add(Dropout(0.1));
    model.add(Dense(32, "relu"));
    model.add(Dropout(0.1));
    model.add(Flatten());
    model.add(Dense(10, "softmax"));
    return model;
}

/// xtnn's thread count for a scope.
class ThreadCount {
public:
    explicit ThreadCount(int threads) : previous_(ops::num_threads()) { ops::set_num_threads(threads); }
    ~ThreadCount() { ops::set_num_threads(previous_); }
    ThreadCount(const ThreadCount&) = delete;
    ThreadCount& operator=(const ThreadCount&) = delete;

private:
    int previous_;
};

/// Same shape and the same bits in every element.
template <class T>
bool bitwise_equal(const xt::xarray<T>& a, const xt::xarray<T>& b) {
    return a.shape() == b.shape() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/// The message of the `E` that `action` throws, or "(no error)".
template <class E = Error, class Action>
std::string error_of(Action&& action) {
    try {
        action();
    } catch (const E& e) {
        return e.what();
    }
    return "(no error)";
}

/// A fresh folder, removed with everything in it at the end of the test.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "xtnn-test-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("TempDir: mkdtemp failed for " + pattern);
        path = pattern;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return (path / name).string(); }
    std::size_t entries() const {
        return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(path), {}));
    }
    /// Writes `bytes` to the file `name` in the folder and returns its path.
    std::string write(const std::string& name, const std::vector<std::uint8_t>& bytes) const {
        std::ofstream(path / name, std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
        return file(name);
    }
};

inline std::vector<std::uint8_t> read_bytes(const std::string& path) { return io::read_file(path); }

inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

}  // namespace xtnn::testing
