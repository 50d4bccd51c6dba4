#include "xtnn/random.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numbers>
#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "xtnn/error.hpp"

namespace xtnn {

namespace {

// MT19937-64's parameters, as the C++ standard gives them for std::mt19937_64.
constexpr std::size_t shift_words = 156;
constexpr std::uint64_t twist_matrix = 0xB5026F5AA96619E9ULL;
constexpr std::uint64_t upper_bits = ~std::uint64_t(0) << 31;
constexpr std::uint64_t lower_bits = ~upper_bits;
constexpr std::uint64_t seed_multiplier = 6364136223846793005ULL;
constexpr std::string_view state_tag = "xtnn.mt19937_64";

std::uint64_t twisted(std::uint64_t word, std::uint64_t next, std::uint64_t shifted) {
    const std::uint64_t y = (word & upper_bits) | (next & lower_bits);
    return shifted ^ (y >> 1) ^ ((y & 1) ? twist_matrix : 0);
}

// The decimal numbers of `text`, separated by whitespace; nullopt if anything else is there.
std::optional<std::vector<std::uint64_t>> decimal_words(std::string_view text) {
    std::vector<std::uint64_t> words;
    std::size_t at = 0;
    while (true) {
        while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\t')) ++at;
        if (at == text.size()) return words;
        if (words.size() > Generator::state_words + 1) return std::nullopt;
        std::uint64_t word = 0;
        const auto [end, error] = std::from_chars(text.data() + at, text.data() + text.size(), word);
        if (error != std::errc() || (end != text.data() + text.size() && *end != ' ' && *end != '\n' && *end != '\t')) {
            return std::nullopt;
        }
        words.push_back(word);
        at = static_cast<std::size_t>(end - text.data());
    }
}

}  // namespace

void Generator::seed(std::uint64_t seed) {
    words_[0] = seed;
    for (std::size_t i = 1; i < state_words; ++i) {
        words_[i] = seed_multiplier * (words_[i - 1] ^ (words_[i - 1] >> 62)) + i;
    }
    position_ = state_words;
}

void Generator::twist() {
    std::size_t k = 0;
    for (; k < state_words - shift_words; ++k) words_[k] = twisted(words_[k], words_[k + 1], words_[k + shift_words]);
    for (; k < state_words - 1; ++k) {
        words_[k] = twisted(words_[k], words_[k + 1], words_[k + shift_words - state_words]);
    }
    words_[k] = twisted(words_[k], words_[0], words_[shift_words - 1]);
    position_ = 0;
}

std::uint64_t Generator::next_u64() {
    if (position_ >= state_words) twist();
    std::uint64_t z = words_[position_++];
    z ^= (z >> 29) & 0x5555555555555555ULL;
    z ^= (z << 17) & 0x71D67FFFEDA60000ULL;
    z ^= (z << 37) & 0xFFF7EEE000000000ULL;
    return z ^ (z >> 43);
}

double Generator::uniform() {
    return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

float Generator::uniform_symmetric(float limit) {
    auto k = static_cast<std::int32_t>(next_u64() >> 40) - (std::int32_t{1} << 23);
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
        std::uint64_t r = next_u64();
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
    std::string text = fmt::format("{} {}", state_tag, position_);
    for (auto word : words_) text += fmt::format(" {}", word);
    return text;
}

void Generator::set_state(const std::string& state) {
    std::string_view text = state;
    const bool tagged = text.starts_with(state_tag);
    if (tagged) text.remove_prefix(state_tag.size());
    const auto words = decimal_words(text);
    const std::size_t count = words ? words->size() : 0;
    // xtnn's form and libstdc++'s hold the words and then the position; libc++'s holds the words
    // oldest first, which is the state at position 312 (the next draw twists them all).
    std::array<std::uint64_t, state_words> restored{};
    std::size_t position = state_words;
    if (tagged && count == state_words + 1) {
        position = static_cast<std::size_t>(words->front());
        std::copy(words->begin() + 1, words->end(), restored.begin());
    } else if (!tagged && count == state_words + 1) {
        position = static_cast<std::size_t>(words->back());
        std::copy(words->begin(), words->end() - 1, restored.begin());
    } else if (!tagged && count == state_words) {
        std::copy(words->begin(), words->end(), restored.begin());
    } else {
        throw ValueError(fmt::format("Generator::set_state: expected '{} P' and {} words, or a std::mt19937_64 state of {} "
                                     "or {} decimal numbers; got {} with {} numbers",
                                     state_tag, state_words, state_words, state_words + 1,
                                     words ? "a text" : "a text that is not all decimal numbers", count));
    }
    if (position > state_words) {
        throw ValueError(fmt::format("Generator::set_state: the position must be in [0, {}], got {}", state_words, position));
    }
    if (std::all_of(restored.begin(), restored.end(), [](std::uint64_t w) { return w == 0; })) {
        throw ValueError("Generator::set_state: a state of all zero words never leaves zero");
    }
    words_ = restored;
    position_ = position;
}

Generator& thread_generator() {
    thread_local Generator generator(0);
    return generator;
}

void set_random_seed(std::uint64_t seed) { thread_generator().seed(seed); }

}  // namespace xtnn
