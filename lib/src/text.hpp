#pragma once
// Text helpers the progress bar and the summary table share.

#include <cstddef>
#include <string>

namespace xtnn::internal {

/// `text` written `count` times: a bar or a rule of a multi-byte glyph, which std::string's
/// (count, char) constructor cannot repeat.
inline std::string repeat(const std::string& text, std::size_t count) {
    std::string result;
    result.reserve(text.size() * count);
    for (std::size_t i = 0; i < count; ++i) result += text;
    return result;
}

}  // namespace xtnn::internal
