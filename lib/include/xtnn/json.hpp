#pragma once
// Reading JSON that comes from outside (configs, model files) safely. nlohmann::json parses
// iteratively, but dump(), comparisons and copies recurse: a document nested 100,000 deep would
// overflow the stack there. So every JSON xtnn reads is depth-checked before any recursive walk,
// and every library exception becomes an xtnn::ValueError that names what was being read.

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace xtnn::json {

/// The deepest nesting accepted anywhere (a Keras config needs fewer than 10 levels).
inline constexpr std::size_t max_depth = 32;

/// Parses `text` with nesting deeper than max_depth and duplicate keys rejected while parsing;
/// a ValueError naming `what` otherwise.
nlohmann::json parse(std::string_view text, const std::string& what);

/// A ValueError naming `what` when `value` nests deeper than max_depth; walks without recursion.
void require_depth(const nlohmann::json& value, const std::string& what);

/// `value` as compact JSON, cut to about `limit` characters, for error messages. `value` must be
/// depth-checked (require_depth or parse).
std::string excerpt(const nlohmann::json& value, std::size_t limit = 80);

/// A whole number in [0, max] from `value`, or a ValueError naming `what`: fractions, negative
/// numbers and other types are refused, not rounded or wrapped.
std::size_t whole_number(const nlohmann::json& value, std::size_t max, const std::string& what);

}  // namespace xtnn::json
